//! The development key: AES-256-GCM with a key read from a local file.
//!
//! **Never for production**: the key sits on the plugin's disk, where anyone with root
//! on the host (an operator) can read it, which defeats claim C5. The plugin refuses
//! it unless `--allow-insecure-dev-key` is given, logs a loud warning at start, and
//! marks its key_id with the prefix `insecure-dev:` so that it is visible in every
//! EncryptedObject in etcd.

use crate::envelope::{self, Sealed, IV_LEN};
use crate::kek::{check_key_id, Backend, Kek, KekError, KeyId};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The key_id prefix that marks a development key.
pub const KEY_ID_PREFIX: &str = "insecure-dev:";

/// Why a file key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileKeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`", path = .path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the key file {0} does not hold 64 hex characters (a 256-bit key)")]
    Format(PathBuf),
    #[error("cannot write the key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no operating-system randomness")]
    Random,
    #[error(transparent)]
    KeyId(#[from] crate::kek::KeyIdError),
}

/// A development KEK held in memory, loaded from a 0600 file.
pub struct FileKek {
    key_id: KeyId,
    cipher: Aes256Gcm,
}

impl FileKek {
    /// Loads the key; the file must be mode 0600 (or stricter) and hold 64 hex digits.
    pub fn load(path: &Path) -> Result<Self, FileKeyError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| FileKeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FileKeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut_slice())
            .map_err(|_| FileKeyError::Format(path.to_path_buf()))?;
        Self::from_key(&key)
    }

    fn from_key(key: &[u8; 32]) -> Result<Self, FileKeyError> {
        // The id is a domain-separated hash of the key: different keys get different
        // ids, and the id reveals nothing usable about the key.
        let mut h = Sha256::new();
        h.update(b"palisade-kms file key id\0");
        h.update(key);
        let digest = h.finalize();
        let short = hex::encode(digest.get(..16).unwrap_or_default());
        let key_id = KeyId::new(format!("{KEY_ID_PREFIX}file:{short}"))?;
        Ok(Self {
            key_id,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)),
        })
    }

    /// Writes a fresh random key to `path` (mode 0600, never replacing a file).
    pub fn generate(path: &Path) -> Result<KeyId, FileKeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(key.as_mut_slice()).map_err(|_| FileKeyError::Random)?;
        let write_err = |source| FileKeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_slice())));
        f.write_all(text.as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        Ok(Self::from_key(&key)?.key_id)
    }
}

#[async_trait]
impl Kek for FileKek {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    fn backend(&self) -> Backend {
        Backend::File
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut iv = [0u8; IV_LEN];
        getrandom::getrandom(&mut iv)
            .map_err(|_| KekError::Unavailable("no operating-system randomness".into()))?;
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: plaintext,
                    aad: self.key_id.as_str().as_bytes(),
                },
            )
            .map_err(|_| KekError::Invalid("plaintext too long for AES-GCM".into()))?;
        Ok(envelope::assemble(&iv, &ct))
    }

    async fn decrypt(&self, key_id: &KeyId, ciphertext: &[u8]) -> Result<Vec<u8>, KekError> {
        check_key_id(&self.key_id, key_id)?;
        let sealed = Sealed::parse(ciphertext).map_err(|_| KekError::Undecryptable)?;
        self.cipher
            .decrypt(
                Nonce::from_slice(sealed.iv),
                Payload {
                    msg: sealed.ct_and_tag,
                    aad: self.key_id.as_str().as_bytes(),
                },
            )
            .map_err(|_| KekError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let id = FileKek::generate(&path).unwrap();
        assert!(id.as_str().starts_with(KEY_ID_PREFIX));
        let k = FileKek::load(&path).unwrap();
        assert_eq!(k.key_id(), &id);
        let ct = k.encrypt(b"seed").await.unwrap();
        assert_eq!(ct.len(), 4 + envelope::OVERHEAD);
        assert_eq!(k.decrypt(&id, &ct).await.unwrap(), b"seed");
        let mut bad = ct.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        assert_eq!(k.decrypt(&id, &bad).await, Err(KekError::Undecryptable));
        let other = KeyId::new("insecure-dev:file:other").unwrap();
        assert!(matches!(
            k.decrypt(&other, &ct).await,
            Err(KekError::Invalid(_))
        ));
        assert!(
            FileKek::generate(&path).is_err(),
            "never replaces a key file"
        );
    }

    #[test]
    fn refuses_group_readable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        FileKek::generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            FileKek::load(&path),
            Err(FileKeyError::Permissions { .. })
        ));
    }
}
