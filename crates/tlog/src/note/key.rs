//! signed-note keys: key ids, the `name+hexid+base64` verifier key text and the
//! `PRIVATE+KEY+name+hexid+base64` signer key text, Ed25519 (type 0x01) and the
//! tlog-cosignature v1 timestamped Ed25519 cosignature (type 0x04).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature algorithms Palisade speaks (signed-note §"Signature types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// 0x01: Ed25519 over the note text. Logs sign checkpoints with it.
    Ed25519,
    /// 0x04: tlog-cosignature v1, Ed25519 over `cosignature/v1\ntime <t>\n` and the
    /// note text, with the time in the signature. Witnesses sign with it.
    Cosignature,
}

impl KeyType {
    /// The signature type byte that goes into key ids and key text.
    pub fn byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => 0x01,
            KeyType::Cosignature => 0x04,
        }
    }

    fn from_byte(byte: u8) -> Option<KeyType> {
        match byte {
            0x01 => Some(KeyType::Ed25519),
            0x04 => Some(KeyType::Cosignature),
            _ => None,
        }
    }
}

/// Why a key could not be built or parsed. Messages never contain private key
/// material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key name {name:?} is empty or contains a space, '+' or a control character")]
    BadName { name: String },
    #[error("key text is not name+hexid+base64 ({reason})")]
    Format { reason: &'static str },
    #[error("key {name} has id {got:08x}, but its key material gives {want:08x}")]
    WrongKeyId { name: String, got: u32, want: u32 },
    #[error("key {name} has signature type 0x{byte:02x}, which is not supported")]
    UnsupportedType { name: String, byte: u8 },
    #[error("key {name} is not a usable Ed25519 public key")]
    BadPublicKey { name: String },
    #[error("the operating system's random number generator failed: {reason}")]
    Random { reason: String },
}

/// signed-note §Format: non-empty, no Unicode spaces, no '+'. Control characters
/// cannot appear in a note either, so they are refused here too.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// signed-note §Signatures: `SHA-256(name || 0x0A || type || public key)[:4]`, big-endian.
pub fn key_id(name: &str, key_type: KeyType, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([key_type.byte()]);
    h.update(public_key);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A public key that verifies note signatures, as configured by whoever trusts it.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_type: KeyType,
    key: VerifyingKey,
    id: u32,
}

impl VerifierKey {
    /// Builds a verifier from its parts; the key id is computed.
    pub fn new(
        name: &str,
        key_type: KeyType,
        public_key: &[u8; 32],
    ) -> Result<VerifierKey, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName {
                name: name.to_owned(),
            });
        }
        let key = VerifyingKey::from_bytes(public_key)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or_else(|| KeyError::BadPublicKey {
                name: name.to_owned(),
            })?;
        Ok(VerifierKey {
            name: name.to_owned(),
            key_type,
            key,
            id: key_id(name, key_type, public_key),
        })
    }

    /// Parses `<name>+<8 lowercase hex digits>+<base64(type || public key)>`.
    pub fn parse(text: &str) -> Result<VerifierKey, KeyError> {
        let (name, rest) = text.split_once('+').ok_or(KeyError::Format {
            reason: "missing '+'",
        })?;
        let (id, material) = rest.split_once('+').ok_or(KeyError::Format {
            reason: "missing '+'",
        })?;
        let id = parse_key_id(id)?;
        let (key_type, public) = decode_material(name, material)?;
        let key = VerifierKey::new(name, key_type, &public)?;
        if key.id != id {
            return Err(KeyError::WrongKeyId {
                name: name.to_owned(),
                got: id,
                want: key.id,
            });
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Checks `sig` (without its key id) over the note `text`. For a cosignature
    /// key, returns the signed timestamp.
    pub(crate) fn verify(&self, text: &str, sig: &[u8]) -> Verdict {
        match self.key_type {
            KeyType::Ed25519 => match <[u8; 64]>::try_from(sig) {
                Ok(bytes) => self.check(text.as_bytes(), &bytes, None),
                Err(_) => Verdict::Bad,
            },
            KeyType::Cosignature => {
                let Some((time, bytes)) = sig.split_first_chunk::<8>() else {
                    return Verdict::Bad;
                };
                let Ok(bytes) = <[u8; 64]>::try_from(bytes) else {
                    return Verdict::Bad;
                };
                let time = u64::from_be_bytes(*time);
                // tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1.
                if time > i64::MAX as u64 {
                    return Verdict::Bad;
                }
                self.check(&cosigned_message(time, text), &bytes, Some(time))
            }
        }
    }

    fn check(&self, msg: &[u8], sig: &[u8; 64], time: Option<u64>) -> Verdict {
        // Strict verification: no malleable or small-order signatures.
        match self.key.verify_strict(msg, &Signature::from_bytes(sig)) {
            Ok(()) => Verdict::Good { timestamp: time },
            Err(_) => Verdict::Bad,
        }
    }
}

/// Outcome of checking one signature with a known key.
pub(crate) enum Verdict {
    Good { timestamp: Option<u64> },
    Bad,
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut material = vec![self.key_type.byte()];
        material.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64.encode(material)
        )
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// A private key that signs notes. Its `Debug` hides the key; its text form is
/// only produced on request by [`SignerKey::to_private_text`].
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key_type: KeyType,
    key: SigningKey,
    id: u32,
}

impl SignerKey {
    /// A new random key from the operating system's generator.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate(name: &str, key_type: KeyType) -> Result<SignerKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random {
            reason: e.to_string(),
        })?;
        let key = SignerKey::from_seed(name, key_type, &seed);
        seed.fill(0);
        key
    }

    /// The key with this 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(
        name: &str,
        key_type: KeyType,
        seed: &[u8; 32],
    ) -> Result<SignerKey, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::BadName {
                name: name.to_owned(),
            });
        }
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, key_type, key.verifying_key().as_bytes());
        Ok(SignerKey {
            name: name.to_owned(),
            key_type,
            key,
            id,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hexid>+<base64(type || seed)>`.
    pub fn parse(text: &str) -> Result<SignerKey, KeyError> {
        let rest = text.strip_prefix("PRIVATE+KEY+").ok_or(KeyError::Format {
            reason: "missing PRIVATE+KEY+ prefix",
        })?;
        let (name, rest) = rest.split_once('+').ok_or(KeyError::Format {
            reason: "missing '+'",
        })?;
        let (id, material) = rest.split_once('+').ok_or(KeyError::Format {
            reason: "missing '+'",
        })?;
        let id = parse_key_id(id)?;
        let (key_type, mut seed) = decode_material(name, material)?;
        let key = SignerKey::from_seed(name, key_type, &seed);
        seed.fill(0);
        let key = key?;
        if key.id != id {
            return Err(KeyError::WrongKeyId {
                name: name.to_owned(),
                got: id,
                want: key.id,
            });
        }
        Ok(key)
    }

    /// The private key text. Handle like a password.
    pub fn to_private_text(&self) -> String {
        let mut material = vec![self.key_type.byte()];
        material.extend_from_slice(self.key.as_bytes());
        let text = format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64.encode(&material)
        );
        material.fill(0);
        text
    }

    /// The matching public key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_type: self.key_type,
            key: self.key.verifying_key(),
            id: self.id,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// Raw Ed25519 signature over `msg`.
    pub(crate) fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignerKey({}+{:08x}, private key redacted)",
            self.name, self.id
        )
    }
}

/// tlog-cosignature §"Ed25519 signed message".
pub(crate) fn cosigned_message(time: u64, text: &str) -> Vec<u8> {
    format!("cosignature/v1\ntime {time}\n{text}").into_bytes()
}

fn parse_key_id(hex: &str) -> Result<u32, KeyError> {
    let canonical = hex.len() == 8
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return Err(KeyError::Format {
            reason: "key id is not 8 lowercase hex digits",
        });
    }
    u32::from_str_radix(hex, 16).map_err(|_| KeyError::Format {
        reason: "key id is not hex",
    })
}

/// `base64(type || 32 bytes)`, for either a public key or a seed.
fn decode_material(name: &str, material: &str) -> Result<(KeyType, [u8; 32]), KeyError> {
    let bytes = BASE64.decode(material).map_err(|_| KeyError::Format {
        reason: "key material is not base64",
    })?;
    let (&byte, key) = bytes.split_first().ok_or(KeyError::Format {
        reason: "key material is empty",
    })?;
    let key_type = KeyType::from_byte(byte).ok_or_else(|| KeyError::UnsupportedType {
        name: name.to_owned(),
        byte,
    })?;
    let key = <[u8; 32]>::try_from(key).map_err(|_| KeyError::Format {
        reason: "key is not 32 bytes",
    })?;
    Ok((key_type, key))
}
