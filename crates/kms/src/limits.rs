//! Requests from the socket become bounded, typed values here, before any backend
//! sees them (the bounds are kube-apiserver's own, from the Kubernetes KMS v2 API). A request
//! that does not fit is an `InvalidArgument`, never a panic.

use crate::kek::{KeyId, KeyIdError};
use crate::pb;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The largest plaintext Encrypt accepts. kube-apiserver sends 32-byte seeds and
/// backups wrap 32-byte keys; the bound is what keeps every backend's ciphertext within
/// the 1024 bytes the apiserver (and our Decrypt) accept: larger plaintexts would give
/// ciphertexts nobody could ever decrypt.
pub const MAX_PLAINTEXT: usize = 512;
/// The largest ciphertext Encrypt may return and Decrypt accepts.
pub const MAX_CIPHERTEXT: usize = 1024;
/// The largest total size of annotation keys and values.
pub const MAX_ANNOTATIONS: usize = 32 * 1024;
/// The longest request uid kept (kube sends UUIDs).
pub const MAX_UID: usize = 128;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("plaintext is empty")]
    EmptyPlaintext,
    #[error("plaintext is {0} bytes; at most {MAX_PLAINTEXT} are accepted")]
    PlaintextTooLong(usize),
    #[error("ciphertext is empty")]
    EmptyCiphertext,
    #[error("ciphertext is {0} bytes; at most {MAX_CIPHERTEXT} are accepted")]
    CiphertextTooLong(usize),
    #[error("key_id: {0}")]
    KeyId(#[from] KeyIdError),
    #[error("annotation key {0:?} is not a fully qualified domain name")]
    AnnotationKey(String),
    #[error("annotations are {0} bytes; at most {MAX_ANNOTATIONS} are accepted")]
    AnnotationsTooLarge(usize),
    #[error("uid is longer than {MAX_UID} bytes or not printable ASCII")]
    Uid,
}

/// A request identifier safe to log (printable ASCII, bounded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uid(String);

impl Uid {
    pub fn parse(s: String) -> Result<Self, LimitError> {
        if s.len() > MAX_UID || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LimitError::Uid);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A checked Encrypt request.
pub struct EncryptInput {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub uid: Uid,
}

/// A checked Decrypt request.
pub struct DecryptInput {
    pub ciphertext: Vec<u8>,
    pub key_id: KeyId,
    pub uid: Uid,
}

pub fn encrypt_input(req: pb::EncryptRequest) -> Result<EncryptInput, LimitError> {
    let plaintext = Zeroizing::new(req.plaintext);
    if plaintext.is_empty() {
        return Err(LimitError::EmptyPlaintext);
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(LimitError::PlaintextTooLong(plaintext.len()));
    }
    Ok(EncryptInput {
        plaintext,
        uid: Uid::parse(req.uid)?,
    })
}

pub fn decrypt_input(req: pb::DecryptRequest) -> Result<DecryptInput, LimitError> {
    check_ciphertext(&req.ciphertext)?;
    check_annotations(&req.annotations)?;
    Ok(DecryptInput {
        ciphertext: req.ciphertext,
        key_id: KeyId::new(req.key_id)?,
        uid: Uid::parse(req.uid)?,
    })
}

pub fn check_ciphertext(ct: &[u8]) -> Result<(), LimitError> {
    if ct.is_empty() {
        return Err(LimitError::EmptyCiphertext);
    }
    if ct.len() > MAX_CIPHERTEXT {
        return Err(LimitError::CiphertextTooLong(ct.len()));
    }
    Ok(())
}

/// Annotation keys must be fully qualified domain names; keys and values together at
/// most 32 KiB (what kube-apiserver checks on EncryptResponse).
pub fn check_annotations(annotations: &HashMap<String, Vec<u8>>) -> Result<(), LimitError> {
    let mut total = 0usize;
    for (k, v) in annotations {
        if !is_fqdn(k) {
            return Err(LimitError::AnnotationKey(k.chars().take(64).collect()));
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > MAX_ANNOTATIONS {
        return Err(LimitError::AnnotationsTooLarge(total));
    }
    Ok(())
}

/// A fully qualified domain name as Kubernetes' `IsFullyQualifiedDomainName` has it:
/// at least two DNS-1123 labels, at most 253 characters.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2 && labels.iter().all(|l| is_dns1123_label(l))
}

fn is_dns1123_label(l: &str) -> bool {
    let b = l.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn() {
        assert!(is_fqdn("version.encryption.remote.io"));
        assert!(is_fqdn("a.b"));
        assert!(!is_fqdn("localhost"));
        assert!(!is_fqdn("Upper.case"));
        assert!(!is_fqdn("-a.b"));
        assert!(!is_fqdn("a..b"));
        assert!(!is_fqdn(""));
        assert!(!is_fqdn(&format!("{}.io", "a".repeat(64))));
    }

    #[test]
    fn encrypt_bounds() {
        let req = |n: usize| pb::EncryptRequest {
            plaintext: vec![1; n],
            uid: "u".into(),
        };
        assert!(encrypt_input(req(32)).is_ok());
        assert!(encrypt_input(req(MAX_PLAINTEXT)).is_ok());
        assert_eq!(
            encrypt_input(req(MAX_PLAINTEXT + 1)).err(),
            Some(LimitError::PlaintextTooLong(MAX_PLAINTEXT + 1))
        );
        assert_eq!(
            encrypt_input(req(0)).err(),
            Some(LimitError::EmptyPlaintext)
        );
    }

    #[test]
    fn decrypt_bounds() {
        let req = |ct: usize, key_id: &str| pb::DecryptRequest {
            ciphertext: vec![1; ct],
            uid: String::new(),
            key_id: key_id.into(),
            annotations: HashMap::new(),
        };
        assert!(decrypt_input(req(1024, "k")).is_ok());
        assert_eq!(
            decrypt_input(req(1025, "k")).err(),
            Some(LimitError::CiphertextTooLong(1025))
        );
        assert_eq!(
            decrypt_input(req(0, "k")).err(),
            Some(LimitError::EmptyCiphertext)
        );
        assert!(matches!(
            decrypt_input(req(10, "")),
            Err(LimitError::KeyId(_))
        ));
        assert!(matches!(
            decrypt_input(req(10, &"k".repeat(1025))),
            Err(LimitError::KeyId(_))
        ));
        let mut r = req(10, "k");
        r.annotations.insert("not-fqdn".into(), vec![]);
        assert!(matches!(
            decrypt_input(r),
            Err(LimitError::AnnotationKey(_))
        ));
        let mut r = req(10, "k");
        r.annotations
            .insert("a.example.com".into(), vec![0; MAX_ANNOTATIONS]);
        assert!(matches!(
            decrypt_input(r),
            Err(LimitError::AnnotationsTooLarge(_))
        ));
    }
}
