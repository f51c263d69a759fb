//! The ciphertext format of the AES-GCM backends (PKCS#11 and file):
//! `version (0x01) ‖ IV (12 bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)`, with the
//! key_id as additional authenticated data, so that a ciphertext presented under
//! another key_id fails authentication instead of decrypting.

/// The only format version so far.
pub const VERSION: u8 = 1;
pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = 1 + IV_LEN + TAG_LEN;

/// A parsed sealed value; borrowing, no copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    pub iv: &'a [u8; IV_LEN],
    /// Ciphertext followed by the tag.
    pub ct_and_tag: &'a [u8],
}

/// Why bytes are not a sealed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("ciphertext is too short to hold a version, an IV and a tag")]
    TooShort,
    #[error("unknown ciphertext format version {0}")]
    UnknownVersion(u8),
}

impl<'a> Sealed<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        let (version, rest) = bytes.split_first().ok_or(EnvelopeError::TooShort)?;
        if *version != VERSION {
            return Err(EnvelopeError::UnknownVersion(*version));
        }
        if rest.len() < IV_LEN + TAG_LEN {
            return Err(EnvelopeError::TooShort);
        }
        let (iv, ct_and_tag) = rest.split_at(IV_LEN);
        let iv: &[u8; IV_LEN] = iv.try_into().map_err(|_| EnvelopeError::TooShort)?;
        Ok(Self { iv, ct_and_tag })
    }
}

/// Builds `version ‖ iv ‖ ct_and_tag`.
pub fn assemble(iv: &[u8; IV_LEN], ct_and_tag: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + IV_LEN + ct_and_tag.len());
    out.push(VERSION);
    out.extend_from_slice(iv);
    out.extend_from_slice(ct_and_tag);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_short_and_unknown() {
        assert_eq!(Sealed::parse(&[]), Err(EnvelopeError::TooShort));
        assert_eq!(
            Sealed::parse(&[2; 40]),
            Err(EnvelopeError::UnknownVersion(2))
        );
        assert_eq!(Sealed::parse(&[1; 28]), Err(EnvelopeError::TooShort));
        let iv = [7u8; IV_LEN];
        let blob = assemble(&iv, &[9u8; TAG_LEN + 3]);
        let s = Sealed::parse(&blob).unwrap();
        assert_eq!(s.iv, &iv);
        assert_eq!(s.ct_and_tag.len(), TAG_LEN + 3);
    }
}
