//! Writing key and certificate files so that a crash or a refusal never leaves a
//! half-written or half-replaced pair behind.
//!
//! Each file is first *staged*: written to a temporary file in the same directory,
//! created with its final mode (so a key is never readable by others, not even for an
//! instant), and fsynced. Then all files of a pair are *committed*: without `force` by
//! `link(2)`, which fails if the destination exists (so a file that appeared since the
//! check is still never overwritten) and rolls back the files already committed; with
//! `force` by `rename(2)`, which replaces atomically. Finally the directory is fsynced.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of private key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
pub(crate) const CERT_MODE: u32 = 0o644;
/// Mode of a PKI directory this crate creates: it holds private keys.
const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Whether anything (even a dangling symlink) is at `path`.
pub(crate) fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

/// Refuses, changing nothing, if any of `paths` exists and `force` is not set.
pub(crate) fn refuse_existing(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if exists(path)? {
            return Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// A file written and fsynced under a temporary name, not yet in place.
/// Dropping it uncommitted removes the temporary file.
pub(crate) struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

/// Writes `contents` to a temporary file beside `dest`, with `mode`, and fsyncs it.
pub(crate) fn stage(dest: &Path, contents: &[u8], mode: u32) -> Result<Staged> {
    let dir = parent(dest);
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    crate::random::fill(&mut suffix)?;
    let tmp = dir.join(format!(".{file_name}.{}.tmp", hex(&suffix)));

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    // From here on the temporary file is ours to clean up.
    let staged = Staged {
        tmp,
        dest: dest.to_path_buf(),
        committed: false,
    };
    // The umask may have narrowed `mode` (a 0644 certificate under umask 077); set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| Error::io("set permissions of", &staged.tmp, e))?;
    file.write_all(contents)
        .map_err(|e| Error::io("write", &staged.tmp, e))?;
    file.sync_all()
        .map_err(|e| Error::io("sync", &staged.tmp, e))?;
    Ok(staged)
}

impl Staged {
    fn commit(&mut self, force: bool) -> Result<()> {
        if force {
            fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io("replace", &self.dest, e))?;
        } else {
            fs::hard_link(&self.tmp, &self.dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        path: self.dest.clone(),
                    }
                } else {
                    Error::io("create", &self.dest, e)
                }
            })?;
            // The destination is in place; the extra name is only clutter now.
            let _ = fs::remove_file(&self.tmp);
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover `.*.tmp` file is harmless and never read.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Puts every staged file in place, in order, then fsyncs their directory.
///
/// Without `force`, if one cannot be put in place the ones already committed are
/// removed again (they did not exist before, or `link` would have failed), so the
/// directory is as it was.
pub(crate) fn commit_all(mut files: Vec<Staged>, force: bool) -> Result<()> {
    let mut done: Vec<PathBuf> = Vec::with_capacity(files.len());
    for file in &mut files {
        if let Err(e) = file.commit(force) {
            if !force {
                for path in &done {
                    let _ = fs::remove_file(path);
                }
            }
            return Err(e);
        }
        done.push(file.dest.clone());
    }
    if let Some(first) = done.first() {
        sync_dir(parent(first))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_get_exact_modes_and_no_clobber_rolls_back(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("a.key");
        let b = dir.path().join("b.crt");
        fs::write(&b, b"already here")?;

        let staged = vec![stage(&a, b"key", KEY_MODE)?, stage(&b, b"cert", CERT_MODE)?];
        let err = commit_all(staged, false).err();
        assert!(matches!(err, Some(Error::AlreadyExists { path }) if path == b));
        assert!(!a.exists(), "the first file must be rolled back");
        assert_eq!(fs::read(&b)?, b"already here");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);

        let staged = vec![stage(&a, b"key", KEY_MODE)?, stage(&b, b"cert", CERT_MODE)?];
        commit_all(staged, true)?;
        assert_eq!(fs::metadata(&a)?.permissions().mode() & 0o777, KEY_MODE);
        assert_eq!(fs::metadata(&b)?.permissions().mode() & 0o777, CERT_MODE);
        assert_eq!(fs::read(&b)?, b"cert");
        assert_eq!(fs::read_dir(dir.path())?.count(), 2);
        Ok(())
    }
}
