//! RFC 6962 §2.1 Merkle tree hashing (SHA-256 with domain-separation prefixes).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Size in bytes of every hash in the tree.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 Merkle tree hash: a leaf hash, an interior node hash or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_SIZE]);

/// A hash given as text could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not canonical standard base64 (RFC 4648 §4, padded).
    #[error("hash {value:?} is not valid base64")]
    Base64 { value: String },
    /// Not a string of lowercase or uppercase hex digits.
    #[error("hash {value:?} is not valid hex")]
    Hex { value: String },
    /// Decoded to the wrong number of bytes.
    #[error("hash {value:?} decodes to {len} bytes, want 32")]
    Length { value: String, len: usize },
}

impl Hash {
    /// Standard padded base64, as in checkpoints and proofs.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses standard padded base64 of exactly 32 bytes. Non-canonical encodings
    /// (bad padding, non-zero trailing bits) are rejected so a hash has one text form.
    pub fn from_base64(value: &str) -> Result<Hash, HashError> {
        let bytes = BASE64.decode(value).map_err(|_| HashError::Base64 {
            value: value.to_owned(),
        })?;
        Self::from_slice(&bytes).ok_or_else(|| HashError::Length {
            value: value.to_owned(),
            len: bytes.len(),
        })
    }

    /// Lowercase hex, for logs and test vectors.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(2 * HASH_SIZE);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses 64 hex digits.
    pub fn from_hex(value: &str) -> Result<Hash, HashError> {
        let err = || HashError::Hex {
            value: value.to_owned(),
        };
        if !value.is_ascii() || value.len() % 2 != 0 {
            return Err(err());
        }
        let bytes = (0..value.len())
            .step_by(2)
            .map(|i| {
                value
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(err)
            })
            .collect::<Result<Vec<u8>, HashError>>()?;
        Self::from_slice(&bytes).ok_or_else(|| HashError::Length {
            value: value.to_owned(),
            len: bytes.len(),
        })
    }

    /// Copies a 32-byte slice; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; HASH_SIZE]>::try_from(bytes).ok().map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// RFC 6962 §2.1: `MTH({d}) = SHA-256(0x00 || d)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// RFC 6962 §2.1: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// RFC 6962 §2.1: the root of the empty tree is `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn base64_round_trip_and_strictness() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64()).unwrap(), h);
        assert_eq!(Hash::from_hex(&h.to_hex()).unwrap(), h);
        // Missing padding, wrong length, non-canonical trailing bits.
        let text = h.to_base64();
        assert!(Hash::from_base64(text.trim_end_matches('=')).is_err());
        assert!(matches!(
            Hash::from_base64("AAAA"),
            Err(HashError::Length { len: 3, .. })
        ));
        // The 43rd character of an all-zero hash carries two padding bits; 'B' sets
        // one, a non-canonical encoding of the same bytes.
        let zero = Hash([0; 32]).to_base64();
        let non_canonical = format!("{}B=", &zero[..42]);
        assert!(matches!(
            Hash::from_base64(&non_canonical),
            Err(HashError::Base64 { .. })
        ));
        assert!(Hash::from_hex("zz").is_err());
        assert!(Hash::from_hex("é").is_err());
    }

    #[test]
    fn debug_is_hex() {
        assert_eq!(
            format!("{:?}", Hash([0xab; 32])),
            format!("Hash({})", "ab".repeat(32))
        );
    }
}
