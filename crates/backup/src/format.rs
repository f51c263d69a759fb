//! The encrypted backup object, byte for byte (docs/formats.md, "Encrypted backup
//! object"): a header, then the snapshot cut into fixed-size segments, each sealed
//! with AES-256-GCM under the STREAM construction (Hoang, Reyhanitabar, Rogaway,
//! Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
//! 2015) as the `aead` crate implements it (`StreamBE32`): the nonce of segment `i`
//! is `nonce_prefix[7] ‖ BE32(i) ‖ last_flag[1]`.
//!
//! What this gives, and why:
//! - a segment moved to another position does not open (the counter is in the nonce);
//! - a cut at a segment boundary is detected (the new last segment was sealed with
//!   `last_flag = 0`), and so is data appended after the real last segment (it was
//!   sealed with `last_flag = 1`, so it does not open as an inner segment);
//! - the header is bound to every segment: each segment's associated data is the
//!   SHA-256 of the header bytes, so a header swapped from another backup, or any
//!   edited header field, makes every segment fail.
//!
//! Both directions work on bounded memory: [`Sealer`] and [`Opener`] hold at most one
//! segment plus the bytes pushed in one call.

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::KeyInit;
use aes_gcm::{Aes256Gcm, Key};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The first eight bytes of every backup object.
pub const MAGIC: [u8; 8] = *b"PALISBK\0";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// AES-256-GCM under STREAM with a 32-bit big-endian counter and a last-segment byte.
pub const ALG_AES256GCM_STREAM_BE32: u8 = 1;
/// Plaintext bytes per segment (the last segment may be shorter).
pub const DEFAULT_SEGMENT_SIZE: u32 = 1024 * 1024;
pub const MIN_SEGMENT_SIZE: u32 = 4096;
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// The AES-GCM tag that ends every sealed segment.
pub const TAG_LEN: usize = 16;
pub const NONCE_PREFIX_LEN: usize = 7;
pub const MAX_BACKUP_ID_LEN: usize = 64;
pub const MAX_KEY_ID_LEN: usize = 1024;
pub const MAX_WRAPPED_KEY_LEN: usize = 4096;
/// The largest header a valid object can start with.
pub const MAX_HEADER_LEN: usize = 8
    + 2
    + 1
    + 1
    + 4
    + NONCE_PREFIX_LEN
    + 1
    + MAX_BACKUP_ID_LEN
    + 2
    + MAX_KEY_ID_LEN
    + 2
    + MAX_WRAPPED_KEY_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a Palisade backup object (wrong magic bytes)")]
    Magic,
    #[error("backup format version {0} is not supported (this build reads version {VERSION})")]
    Version(u16),
    #[error("unknown encryption algorithm {0}")]
    Algorithm(u8),
    #[error("header field {field} is invalid: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("the object ends inside its header")]
    ShortHeader,
    #[error("segment {index} does not authenticate: the object was altered, reordered, or encrypted under another key")]
    Segment { index: u64 },
    #[error("the last segment ({index}) does not authenticate: the object was truncated, extended, or altered")]
    Last { index: u64 },
    #[error("the object ends before its first segment")]
    NoSegment,
    #[error("too many segments for one stream")]
    TooLong,
}

/// A fresh 256-bit data key; zeroed when dropped, never written anywhere unwrapped.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(k.as_mut())?;
        Ok(Self(k))
    }

    /// A key unwrapped by the KMS plugin; it must be exactly 32 bytes.
    pub fn from_unwrapped(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// The key bytes, only to hand them to the KMS plugin for wrapping.
    pub fn expose(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_ref()))
    }
}

/// The object's header: everything needed, with the customer's KMS, to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub segment_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub backup_id: String,
    /// The KMS key that wrapped the data key.
    pub key_id: String,
    /// The data key, encrypted by the customer's KEK.
    pub wrapped_key: Vec<u8>,
}

fn field(field: &'static str, reason: impl Into<String>) -> FormatError {
    FormatError::Field {
        field,
        reason: reason.into(),
    }
}

impl Header {
    /// A header with a fresh random nonce prefix.
    pub fn new(backup_id: &str, key_id: &str, wrapped_key: Vec<u8>) -> Result<Self, FormatError> {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        getrandom::getrandom(&mut nonce_prefix)
            .map_err(|e| field("nonce_prefix", e.to_string()))?;
        let h = Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            nonce_prefix,
            backup_id: backup_id.to_string(),
            key_id: key_id.to_string(),
            wrapped_key,
        };
        h.check()?;
        Ok(h)
    }

    fn check(&self) -> Result<(), FormatError> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(field(
                "segment_size",
                format!(
                    "{} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                    self.segment_size
                ),
            ));
        }
        let id_ok = !self.backup_id.is_empty()
            && self.backup_id.len() <= MAX_BACKUP_ID_LEN
            && self
                .backup_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !id_ok {
            return Err(field("backup_id", "1-64 ASCII letters, digits or '-'"));
        }
        if self.key_id.is_empty() || self.key_id.len() > MAX_KEY_ID_LEN {
            return Err(field("key_id", format!("1..={MAX_KEY_ID_LEN} bytes")));
        }
        if self.wrapped_key.is_empty() || self.wrapped_key.len() > MAX_WRAPPED_KEY_LEN {
            return Err(field(
                "wrapped_key",
                format!("1..={MAX_WRAPPED_KEY_LEN} bytes"),
            ));
        }
        Ok(())
    }

    /// The header's bytes (docs/formats.md).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.check()?;
        let mut out = Vec::with_capacity(64 + self.key_id.len() + self.wrapped_key.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.push(ALG_AES256GCM_STREAM_BE32);
        out.push(0);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        // Lengths were checked above, so the casts cannot truncate.
        out.push(self.backup_id.len() as u8);
        out.extend_from_slice(self.backup_id.as_bytes());
        out.extend_from_slice(&(self.key_id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&(self.wrapped_key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped_key);
        Ok(out)
    }

    /// Parses the header at the start of `bytes`; returns it and its length.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), FormatError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(FormatError::Magic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        let alg = r.u8()?;
        if alg != ALG_AES256GCM_STREAM_BE32 {
            return Err(FormatError::Algorithm(alg));
        }
        if r.u8()? != 0 {
            return Err(field("flags", "reserved byte is not zero"));
        }
        let segment_size = u32::from_be_bytes(arr(r.take(4)?)?);
        let nonce_prefix = arr(r.take(NONCE_PREFIX_LEN)?)?;
        let n = usize::from(r.u8()?);
        let backup_id =
            String::from_utf8(r.take(n)?.to_vec()).map_err(|_| field("backup_id", "not UTF-8"))?;
        let n = usize::from(r.u16()?);
        let key_id =
            String::from_utf8(r.take(n)?.to_vec()).map_err(|_| field("key_id", "not UTF-8"))?;
        let n = usize::from(r.u16()?);
        let wrapped_key = r.take(n)?.to_vec();
        let h = Header {
            segment_size,
            nonce_prefix,
            backup_id,
            key_id,
            wrapped_key,
        };
        h.check()?;
        Ok((h, r.at))
    }
}

fn arr<const N: usize>(s: &[u8]) -> Result<[u8; N], FormatError> {
    s.try_into().map_err(|_| FormatError::ShortHeader)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).ok_or(FormatError::ShortHeader)?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or(FormatError::ShortHeader)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(arr::<1>(self.take(1)?)?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(arr(self.take(2)?)?))
    }
}

/// The associated data of every segment: SHA-256 of the header bytes.
fn header_aad(header_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(header_bytes).into()
}

/// Encrypts a stream of plaintext into segments.
pub struct Sealer {
    enc: EncryptorBE32<Aes256Gcm>,
    aad: [u8; 32],
    segment_size: usize,
    pending: Vec<u8>,
    segments: u64,
}

impl Sealer {
    /// Starts a stream; returns the sealer and the header bytes that begin the object.
    pub fn new(key: &DataKey, header: &Header) -> Result<(Self, Vec<u8>), FormatError> {
        let header_bytes = header.encode()?;
        let segment_size = header.segment_size as usize;
        let enc = EncryptorBE32::from_aead(key.cipher(), (&header.nonce_prefix).into());
        Ok((
            Self {
                enc,
                aad: header_aad(&header_bytes),
                segment_size,
                pending: Vec::with_capacity(segment_size + TAG_LEN),
                segments: 0,
            },
            header_bytes,
        ))
    }

    /// Adds plaintext; appends every segment that is now complete (and known not to
    /// be the last) to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.pending.extend_from_slice(data);
        // Strictly more than one segment: the one that fills up exactly might be the
        // last, which only `finish` knows.
        while self.pending.len() > self.segment_size {
            let rest = self.pending.split_off(self.segment_size);
            let mut seg = std::mem::replace(&mut self.pending, rest);
            self.pending.reserve(self.segment_size + TAG_LEN);
            self.enc
                .encrypt_next_in_place(&self.aad, &mut seg)
                .map_err(|_| FormatError::TooLong)?;
            self.segments += 1;
            out.extend_from_slice(&seg);
        }
        Ok(())
    }

    /// Seals the last segment (possibly empty) into `out`; returns the segment count.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<u64, FormatError> {
        let mut seg = std::mem::take(&mut self.pending);
        self.enc
            .encrypt_last_in_place(&self.aad, &mut seg)
            .map_err(|_| FormatError::TooLong)?;
        out.extend_from_slice(&seg);
        Ok(self.segments + 1)
    }
}

/// Decrypts the segments that follow a header.
pub struct Opener {
    dec: DecryptorBE32<Aes256Gcm>,
    aad: [u8; 32],
    sealed_size: usize,
    pending: Vec<u8>,
    segments: u64,
}

impl Opener {
    /// `header_bytes` are the exact bytes the header was parsed from.
    pub fn new(key: &DataKey, header: &Header, header_bytes: &[u8]) -> Self {
        let sealed_size = header.segment_size as usize + TAG_LEN;
        Self {
            dec: DecryptorBE32::from_aead(key.cipher(), (&header.nonce_prefix).into()),
            aad: header_aad(header_bytes),
            sealed_size,
            pending: Vec::with_capacity(sealed_size),
            segments: 0,
        }
    }

    /// Adds ciphertext; appends the plaintext of every inner segment that opens to
    /// `out`, and fails at the first that does not.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.pending.extend_from_slice(data);
        while self.pending.len() > self.sealed_size {
            let rest = self.pending.split_off(self.sealed_size);
            let mut seg = std::mem::replace(&mut self.pending, rest);
            self.pending.reserve(self.sealed_size);
            self.dec
                .decrypt_next_in_place(&self.aad, &mut seg)
                .map_err(|_| FormatError::Segment {
                    index: self.segments,
                })?;
            self.segments += 1;
            out.extend_from_slice(&seg);
        }
        Ok(())
    }

    /// Opens the last segment; returns the segment count.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<u64, FormatError> {
        let mut seg = std::mem::take(&mut self.pending);
        if seg.len() < TAG_LEN {
            return Err(if self.segments == 0 && seg.is_empty() {
                FormatError::NoSegment
            } else {
                FormatError::Last {
                    index: self.segments,
                }
            });
        }
        self.dec
            .decrypt_last_in_place(&self.aad, &mut seg)
            .map_err(|_| FormatError::Last {
                index: self.segments,
            })?;
        out.extend_from_slice(&seg);
        Ok(self.segments + 1)
    }
}

/// The size of the sealed object for a plaintext of `plaintext_len` bytes.
pub fn sealed_len(header_len: u64, segment_size: u32, plaintext_len: u64) -> u64 {
    let s = u64::from(segment_size);
    let segments = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(s)
    };
    header_len + plaintext_len + segments * TAG_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let mut h = Header::new("20250101T000000Z-0a1b2c3d", "key-1", vec![7; 40]).unwrap();
        h.segment_size = MIN_SEGMENT_SIZE;
        h
    }

    fn seal(key: &DataKey, h: &Header, data: &[u8], chunk: usize) -> Vec<u8> {
        let (mut s, mut out) = Sealer::new(key, h).unwrap();
        for c in data.chunks(chunk.max(1)) {
            s.push(c, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out
    }

    fn open(key: &DataKey, object: &[u8], chunk: usize) -> Result<Vec<u8>, FormatError> {
        let (h, n) = Header::parse(object)?;
        let mut o = Opener::new(key, &h, &object[..n]);
        let mut out = Vec::new();
        for c in object[n..].chunks(chunk.max(1)) {
            o.push(c, &mut out)?;
        }
        o.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_boundary() {
        let key = DataKey::generate().unwrap();
        let h = header();
        let s = MIN_SEGMENT_SIZE as usize;
        for len in [0, 1, s - 1, s, s + 1, 2 * s, 3 * s + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for chunk in [1000, s, 7 * s] {
                let obj = seal(&key, &h, &data, chunk);
                let hl = h.encode().unwrap().len() as u64;
                assert_eq!(obj.len() as u64, sealed_len(hl, h.segment_size, len as u64));
                assert_eq!(open(&key, &obj, 333).unwrap(), data, "len {len}");
            }
        }
    }

    #[test]
    fn detects_truncation_extension_reordering_flips_and_wrong_keys() {
        let key = DataKey::generate().unwrap();
        let h = header();
        let s = MIN_SEGMENT_SIZE as usize;
        let data: Vec<u8> = (0..3 * s + 100).map(|i| (i % 13) as u8).collect();
        let obj = seal(&key, &h, &data, 4096);
        let hl = h.encode().unwrap().len();
        let sealed = s + TAG_LEN;
        // Cut at a segment boundary.
        assert!(matches!(
            open(&key, &obj[..hl + 2 * sealed], 500),
            Err(FormatError::Last { index: 1 })
        ));
        // Cut inside a segment.
        assert!(open(&key, &obj[..obj.len() - 1], 500).is_err());
        // Appended data.
        let mut longer = obj.clone();
        longer.extend_from_slice(&[0u8; 40]);
        assert!(open(&key, &longer, 500).is_err());
        // A whole copy of the last segment appended.
        let mut again = obj.clone();
        again.extend_from_slice(&obj[hl + 3 * sealed..]);
        assert!(open(&key, &again, 500).is_err());
        // Two segments swapped.
        let mut swapped = obj.clone();
        let (a, b) = (hl, hl + sealed);
        let first = obj[a..b].to_vec();
        swapped.copy_within(b..b + sealed, a);
        swapped[b..b + sealed].copy_from_slice(&first);
        assert!(matches!(
            open(&key, &swapped, 500),
            Err(FormatError::Segment { index: 0 })
        ));
        // Any flipped byte, header or body.
        for at in [9, 20, hl - 1, hl, hl + sealed + 5, obj.len() - 1] {
            let mut bad = obj.clone();
            bad[at] ^= 0x01;
            assert!(open(&key, &bad, 500).is_err(), "flip at {at}");
        }
        // Another key.
        let other = DataKey::generate().unwrap();
        assert!(open(&other, &obj, 500).is_err());
        // Nothing after the header.
        assert!(matches!(
            open(&key, &obj[..hl], 500),
            Err(FormatError::NoSegment)
        ));
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = header();
        let b = h.encode().unwrap();
        assert_eq!(Header::parse(&b).unwrap(), (h, b.len()));
        assert_eq!(
            Header::parse(&b[..b.len() - 1]),
            Err(FormatError::ShortHeader)
        );
        let mut m = b.clone();
        m[0] = b'X';
        assert_eq!(Header::parse(&m), Err(FormatError::Magic));
        let mut v = b.clone();
        v[9] = 2;
        assert_eq!(Header::parse(&v), Err(FormatError::Version(2)));
        const { assert!(MAX_HEADER_LEN < 6 * 1024) };
    }
}
