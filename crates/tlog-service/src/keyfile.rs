//! Signed-note key files: `<name>.key` holds the private key text
//! (`PRIVATE+KEY+<name>+<hexid>+<base64>`, mode 0600) and `<name>.pub` the verifier
//! key text (`<name>+<hexid>+<base64>`). Used for log keys and witness keys.

use palisade_tlog::note::{KeyType, SignerKey, VerifierKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0}")]
    Key(String),
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read the key file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// The file stem for a key name: origins contain `/`, which becomes `_`.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Generates a key pair and writes both files into `dir` (created if missing).
/// Without `force` each file is created with `create_new`, so an existing key (even
/// one that appeared a moment ago) is never overwritten; if the private key exists,
/// nothing at all is written.
pub fn write_key_pair(
    name: &str,
    key_type: KeyType,
    dir: &Path,
    force: bool,
) -> Result<(PathBuf, PathBuf, VerifierKey), KeyFileError> {
    let key = SignerKey::generate(name, key_type).map_err(|e| KeyFileError::Key(e.to_string()))?;
    let stem = file_stem(name);
    let private = dir.join(format!("{stem}.key"));
    let public = dir.join(format!("{stem}.pub"));
    if !force {
        if let Some(p) = [&private, &public].into_iter().find(|p| p.exists()) {
            return Err(KeyFileError::Exists { path: p.clone() });
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| KeyFileError::Write {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_file(
        &private,
        &format!("{}\n", key.to_private_text()),
        0o600,
        force,
    )?;
    let verifier = key.verifier();
    write_file(&public, &format!("{verifier}\n"), 0o644, force)?;
    Ok((private, public, verifier))
}

fn write_file(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| KeyFileError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            err(e)
        }
    })?;
    // An existing file keeps its old mode on open; narrow it before the key goes in.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(err)
}

/// Reads a private key file.
pub fn read_signer(path: &Path) -> Result<SignerKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    SignerKey::parse(text.trim()).map_err(|e| KeyFileError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses verifier key text, or reads it from a file when written `@path`.
pub fn verifier_arg(arg: &str) -> Result<VerifierKey, KeyFileError> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| KeyFileError::Read {
            path: PathBuf::from(path),
            reason: e.to_string(),
        })?,
        None => arg.to_string(),
    };
    VerifierKey::parse(text.trim())
        .map_err(|e| KeyFileError::Key(format!("verifier key {:?}: {e}", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_pair_files_modes_and_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public, verifier) =
            write_key_pair("palisade.example/log", KeyType::Ed25519, dir.path(), false)
                .expect("write");
        assert_eq!(
            private.file_name().and_then(|n| n.to_str()),
            Some("palisade.example_log.key")
        );
        let mode = std::fs::metadata(&private)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&private).expect("read");
        assert!(
            text.starts_with("PRIVATE+KEY+palisade.example/log+"),
            "{text}"
        );
        assert_eq!(read_signer(&private).expect("parse").verifier(), verifier);
        assert_eq!(
            verifier_arg(&format!("@{}", public.display())).expect("pub"),
            verifier
        );
        let before = std::fs::read(&private).expect("read");
        assert!(matches!(
            write_key_pair("palisade.example/log", KeyType::Ed25519, dir.path(), false),
            Err(KeyFileError::Exists { .. })
        ));
        assert_eq!(
            std::fs::read(&private).expect("read"),
            before,
            "refusal changed the key"
        );
    }
}
