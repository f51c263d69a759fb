//! The customer's side: restoring a backup with their key, and checking one without.
//!
//! [`restore`] fails closed and leaves nothing behind: it decrypts into a temporary
//! file in the target's directory and renames it into place only after every check
//! passed (manifest signature, header against manifest, every segment's tag, the last
//! segment's flag, the object's SHA-256 and size, the snapshot's own SHA-256
//! trailer). On any failure the temporary file is removed. Before reading the
//! object, both check that the signed manifest is the backup asked for
//! ([`Expected`]: its id, cluster and, when the customer has it from the log, its
//! digest), so an older backup put under a newer one's name is refused.
//!
//! [`verify`] needs no key: it checks the manifest (and its signature when a key is
//! given), the object's size and SHA-256, and that the header agrees with the
//! manifest. It cannot tell whether the ciphertext opens; only the key holder can.

use crate::format::{sealed_len, DataKey, FormatError, Header, Opener, MAX_HEADER_LEN};
use crate::manifest::{Manifest, ManifestError, VerifiedManifest};
use crate::snapshot::{SnapshotCheck, SnapshotError};
use crate::store::{BackupStore, StoreError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use palisade_kms::{KeyId, KmsClient};
use palisade_policy::keys::PublicKey;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the backup object is corrupt or was tampered with: {0}")]
    Format(#[from] FormatError),
    #[error("the object does not match its manifest: {0}")]
    Mismatch(String),
    #[error("the customer's KMS plugin did not unwrap the data key (another key-encryption key, or the plugin is unavailable): {0}")]
    Unwrap(String),
    #[error("the decrypted snapshot is not a valid etcd snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("this is not the backup asked for: {0}; an older or another backup may have been put in its place; restore the backup by the manifest the log recorded")]
    NotAskedFor(String),
}

/// Which backup the customer asked for, checked against the *signed* manifest
/// before anything is read from the object: the store's names are not trusted (an
/// insider can copy an older backup's manifest and object under a newer name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The backup id asked for (e.g. from the manifest's file name).
    pub backup_id: Option<String>,
    /// The cluster it belongs to.
    pub cluster: Option<String>,
    /// The manifest's SHA-256 as the cluster's log recorded it (the `etcd.backup`
    /// output's `manifest_sha256`).
    pub manifest_sha256: Option<palisade_core::Sha256Digest>,
}

impl Expected {
    /// The backup id a stored manifest's file name says (`<id>.manifest.json`).
    pub fn id_from_manifest_name(path: &Path) -> Option<String> {
        path.file_name()?
            .to_str()?
            .strip_suffix(crate::store::MANIFEST_SUFFIX)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    }

    /// Refuses a manifest that is not the one asked for.
    pub fn check(
        &self,
        m: &Manifest,
        digest: &palisade_core::Sha256Digest,
    ) -> Result<(), RestoreError> {
        let refuse = |what: String| Err(RestoreError::NotAskedFor(what));
        if let Some(want) = &self.manifest_sha256 {
            if want != digest {
                return refuse(format!(
                    "the manifest's SHA-256 is {digest}, the log recorded {want}"
                ));
            }
        }
        if let Some(want) = &self.backup_id {
            if *want != m.backup_id {
                return refuse(format!(
                    "asked for backup {want:?}, the signed manifest is backup {:?}",
                    m.backup_id.chars().take(80).collect::<String>()
                ));
            }
        }
        if let Some(want) = &self.cluster {
            if *want != m.cluster {
                return refuse(format!(
                    "asked for cluster {want:?}, the signed manifest is of cluster {:?}",
                    m.cluster.chars().take(80).collect::<String>()
                ));
            }
        }
        // The object is read by the name the signed manifest gives, and it must be
        // that backup's own object name, not another's.
        let own = crate::take::object_name(&m.cluster, &m.backup_id);
        if m.object != own {
            return refuse(format!(
                "the signed manifest names the object {:?}, backup {:?} is stored as {own:?}",
                m.object.chars().take(200).collect::<String>(),
                m.backup_id.chars().take(80).collect::<String>()
            ));
        }
        Ok(())
    }
}

fn mismatch(what: impl Into<String>) -> RestoreError {
    RestoreError::Mismatch(what.into())
}

/// What a successful restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub snapshot_bytes: u64,
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The trusted key that signed the manifest, if keys were given.
    pub signer: Option<String>,
    pub manifest_sha256: String,
}

/// Checks that the header (parsed from the object) is the one the manifest describes.
fn header_matches(m: &Manifest, h: &Header, header_len: usize) -> Result<(), RestoreError> {
    let wrapped = STANDARD
        .decode(&m.wrapped_key)
        .map_err(|_| mismatch("the manifest's wrapped_key is not base64"))?;
    if h.backup_id != m.backup_id {
        return Err(mismatch(format!(
            "the object is backup {:?}, the manifest describes {:?}",
            h.backup_id, m.backup_id
        )));
    }
    if h.key_id != m.key_id || h.wrapped_key != wrapped {
        return Err(mismatch(
            "key_id or wrapped key differ between header and manifest",
        ));
    }
    if h.segment_size != m.segment_size || header_len as u64 != m.header_bytes {
        return Err(mismatch("segment size or header length differ"));
    }
    if m.format_version != crate::format::VERSION {
        return Err(mismatch(format!("format version {}", m.format_version)));
    }
    let expected = sealed_len(m.header_bytes, m.segment_size, m.snapshot_bytes);
    if expected != m.object_bytes {
        return Err(mismatch(format!(
            "the manifest's sizes are inconsistent ({} bytes of snapshot make a {expected}-byte object, it says {})",
            m.snapshot_bytes, m.object_bytes
        )));
    }
    Ok(())
}

/// Splits the start of an object into its header and the first body bytes.
#[derive(Default)]
struct HeaderSplitter {
    head: Vec<u8>,
}

enum Fed {
    NeedMore,
    /// The header, its exact bytes, and the body bytes that came with it.
    Header(Header, Vec<u8>, Vec<u8>),
}

impl HeaderSplitter {
    fn feed(&mut self, chunk: &[u8]) -> Result<Fed, FormatError> {
        self.head.extend_from_slice(chunk);
        match Header::parse(&self.head) {
            Ok((h, n)) => {
                let rest = self.head.split_off(n);
                Ok(Fed::Header(h, std::mem::take(&mut self.head), rest))
            }
            Err(FormatError::ShortHeader) if self.head.len() < MAX_HEADER_LEN => Ok(Fed::NeedMore),
            Err(e) => Err(e),
        }
    }
}

fn check_totals(m: &Manifest, sha: &str, size: u64) -> Result<(), RestoreError> {
    if size != m.object_bytes {
        return Err(mismatch(format!(
            "the object is {size} bytes, the manifest says {}",
            m.object_bytes
        )));
    }
    if sha != m.object_sha256 {
        return Err(mismatch("the object's SHA-256 differs from the manifest's"));
    }
    Ok(())
}

/// Checks a backup without decrypting it, and that it is the one `expected` names.
pub async fn verify(
    manifest_bytes: &[u8],
    trusted: &[PublicKey],
    expected: &Expected,
    store: &BackupStore,
) -> Result<Verified, RestoreError> {
    let (manifest, signer, digest) = if trusted.is_empty() {
        let m = Manifest::unverified(manifest_bytes)
            .ok_or_else(|| ManifestError::Payload("not a backup manifest envelope".to_string()))?;
        (m, None, palisade_core::Sha256Digest::of(manifest_bytes))
    } else {
        let VerifiedManifest {
            manifest,
            digest,
            signer,
        } = Manifest::verify(manifest_bytes, trusted)?;
        (manifest, Some(signer), digest)
    };
    expected.check(&manifest, &digest)?;
    let size = store.size(&manifest.object).await?;
    if size != manifest.object_bytes {
        return Err(mismatch(format!(
            "the object is {size} bytes, the manifest says {}",
            manifest.object_bytes
        )));
    }
    let mut stream = store.stream(&manifest.object).await?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut splitter = Some(HeaderSplitter::default());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        total += chunk.len() as u64;
        if let Some(s) = splitter.as_mut() {
            if let Fed::Header(h, bytes, _) = s.feed(&chunk)? {
                header_matches(&manifest, &h, bytes.len())?;
                splitter = None;
            }
        }
    }
    if splitter.is_some() {
        return Err(FormatError::ShortHeader.into());
    }
    let (sha, size) = (hex::encode(hasher.finalize()), total);
    check_totals(&manifest, &sha, size)?;
    Ok(Verified {
        manifest,
        signer,
        manifest_sha256: digest.hex(),
    })
}

/// Restores a backup to `out` (which must not exist), reporting decrypted bytes to
/// `progress`. The signed manifest must be the one `expected` names.
pub async fn restore(
    manifest_bytes: &[u8],
    trusted: &[PublicKey],
    expected: &Expected,
    store: &BackupStore,
    kms: &mut KmsClient,
    out: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Restored, RestoreError> {
    let out_err = |reason: String| RestoreError::Output {
        path: out.to_path_buf(),
        reason,
    };
    if trusted.is_empty() {
        return Err(ManifestError::Signature.into());
    }
    let verified = Manifest::verify(manifest_bytes, trusted)?;
    expected.check(&verified.manifest, &verified.digest)?;
    let manifest = verified.manifest;
    if out.exists() {
        return Err(out_err("already exists; restore never overwrites".into()));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Dropped (and so deleted) on every early return below.
    let mut tmp = tempfile::Builder::new()
        .prefix(".palisade-restore-")
        .tempfile_in(&dir)
        .map_err(|e| {
            out_err(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?;
    let mut stream = store.stream(&manifest.object).await?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut splitter = HeaderSplitter::default();
    let mut opener: Option<Opener> = None;
    let mut check = SnapshotCheck::new();
    let mut plain = Vec::with_capacity(2 * manifest.segment_size as usize);
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        total += chunk.len() as u64;
        if total > manifest.object_bytes {
            return Err(mismatch(format!(
                "the object is longer than the {} bytes its manifest says",
                manifest.object_bytes
            )));
        }
        match opener.as_mut() {
            Some(o) => o.push(&chunk, &mut plain)?,
            None => {
                if let Fed::Header(h, bytes, rest) = splitter.feed(&chunk)? {
                    header_matches(&manifest, &h, bytes.len())?;
                    let key = unwrap_key(kms, &h).await?;
                    let mut o = Opener::new(&key, &h, &bytes);
                    o.push(&rest, &mut plain)?;
                    opener = Some(o);
                }
            }
        }
        if !plain.is_empty() {
            check.update(&plain);
            written += plain.len() as u64;
            tmp.write_all(&plain).map_err(|e| out_err(e.to_string()))?;
            plain.clear();
            progress(written);
        }
    }
    let opener = opener.ok_or(FormatError::ShortHeader)?;
    opener.finish(&mut plain)?;
    check.update(&plain);
    written += plain.len() as u64;
    tmp.write_all(&plain).map_err(|e| out_err(e.to_string()))?;
    progress(written);
    check_totals(&manifest, &hex::encode(hasher.finalize()), total)?;
    let snapshot_bytes = check.finish()?;
    if snapshot_bytes != manifest.snapshot_bytes {
        return Err(mismatch(format!(
            "the snapshot is {snapshot_bytes} bytes, the manifest says {}",
            manifest.snapshot_bytes
        )));
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| out_err(e.to_string()))?;
    // Never replaces a file that appeared meanwhile.
    tmp.persist_noclobber(out)
        .map_err(|e| out_err(e.error.to_string()))?;
    Ok(Restored {
        manifest,
        path: out.to_path_buf(),
        snapshot_bytes,
    })
}

async fn unwrap_key(kms: &mut KmsClient, h: &Header) -> Result<DataKey, RestoreError> {
    let key_id = KeyId::new(h.key_id.clone()).map_err(|e| RestoreError::Unwrap(e.to_string()))?;
    let plain = kms
        .decrypt(&h.wrapped_key, &key_id)
        .await
        .map_err(|e| RestoreError::Unwrap(e.to_string()))?;
    DataKey::from_unwrapped(&plain)
        .ok_or_else(|| RestoreError::Unwrap("the unwrapped key is not 32 bytes".into()))
}
