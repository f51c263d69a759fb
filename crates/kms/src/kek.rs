//! The key-encryption key: one trait for every backend, and the key identifier that
//! kube-apiserver stores next to every wrapped seed.

use async_trait::async_trait;
use std::fmt;

/// The most bytes a key_id may have (kube-apiserver rejects longer ones).
pub const MAX_KEY_ID_LEN: usize = 1024;

/// Which kind of backend holds a key; also the `backend` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Pkcs11,
    Aws,
    File,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Pkcs11 => "pkcs11",
            Backend::Aws => "aws",
            Backend::File => "file",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key identifier as kube-apiserver sees it: non-empty, at most 1024 bytes, printable
/// ASCII without spaces. It names one key (and its version) forever: a different key
/// always gets a different id, because every backend derives it from the key's unique
/// identity (HSM object id, KMS key ARN, hash of a file key's identity).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

/// Why a string is not a key_id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    #[error("key_id is empty")]
    Empty,
    #[error("key_id is {0} bytes long; at most {MAX_KEY_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("key_id contains a character other than printable ASCII")]
    BadCharacter,
}

impl KeyId {
    pub fn new(value: impl Into<String>) -> Result<Self, KeyIdError> {
        let value = value.into();
        if value.is_empty() {
            return Err(KeyIdError::Empty);
        }
        if value.len() > MAX_KEY_ID_LEN {
            return Err(KeyIdError::TooLong(value.len()));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyIdError::BadCharacter);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A backend failure. Messages are short and never contain plaintext, ciphertext, PINs
/// or key material: they end up in `healthz`, logs and gRPC statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The backend cannot be reached or used now (token missing, wrong PIN, endpoint
    /// down); health turns not-ok and the next call tries again.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The ciphertext is not one this key produced, or it was altered.
    #[error("ciphertext cannot be decrypted with this key")]
    Undecryptable,
    /// The key exists but must not be used (e.g. it is extractable).
    #[error("key refused: {0}")]
    Refused(String),
    /// The input is outside what the backend accepts.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// A key-encryption key. Implementations never expose key material; `encrypt` and
/// `decrypt` are the only ways to use the key.
#[async_trait]
pub trait Kek: Send + Sync + 'static {
    /// The identifier of this key and version; stable for the life of the key.
    fn key_id(&self) -> &KeyId;

    /// The kind of backend, for metrics and logs.
    fn backend(&self) -> Backend;

    /// Wraps `plaintext` (a DEK seed or a backup data key).
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KekError>;

    /// Unwraps a ciphertext that `encrypt` of the key named `key_id` produced.
    /// A `key_id` other than this key's own is refused, never tried.
    async fn decrypt(&self, key_id: &KeyId, ciphertext: &[u8]) -> Result<Vec<u8>, KekError>;

    /// Checks that the backend works now: by default, a round trip of a fresh random
    /// probe through `encrypt` and `decrypt`.
    async fn health(&self) -> Result<(), KekError> {
        let mut probe = [0u8; 32];
        getrandom::getrandom(&mut probe)
            .map_err(|_| KekError::Unavailable("no operating-system randomness".into()))?;
        let ct = self.encrypt(&probe).await?;
        let back = self.decrypt(self.key_id(), &ct).await?;
        if back.as_slice() != probe.as_slice() {
            return Err(KekError::Unavailable(
                "round trip returned different bytes".into(),
            ));
        }
        Ok(())
    }
}

/// Refuses a key_id that is not `own`.
pub(crate) fn check_key_id(own: &KeyId, asked: &KeyId) -> Result<(), KekError> {
    if own == asked {
        Ok(())
    } else {
        Err(KekError::Invalid(format!(
            "key_id {asked} is not this key ({own})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_bounds() {
        assert_eq!(KeyId::new(""), Err(KeyIdError::Empty));
        assert!(KeyId::new("a".repeat(1024)).is_ok());
        assert_eq!(KeyId::new("a".repeat(1025)), Err(KeyIdError::TooLong(1025)));
        assert_eq!(KeyId::new("a b"), Err(KeyIdError::BadCharacter));
        assert_eq!(KeyId::new("a\nb"), Err(KeyIdError::BadCharacter));
    }
}
