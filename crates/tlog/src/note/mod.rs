//! C2SP signed-note v1.0.0: text signed by one or more keys.
//!
//! ```text
//! <text, ending in a newline>
//! <blank line>
//! — <key name> <base64(key id || signature)>
//! ...
//! ```
//!
//! [`Note::parse`] only checks the format; the text means nothing until
//! [`Note::open`] has verified it against trusted keys, which is why the verified
//! form, [`OpenedNote`], can only be obtained from it.

mod key;

pub use key::{is_valid_key_name, key_id, KeyError, KeyType, SignerKey, VerifierKey};

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use key::{cosigned_message, Verdict};

/// Largest note accepted, to bound parsing work.
pub const MAX_NOTE_LEN: usize = 1 << 20;
/// Most signature lines accepted. The spec requires at least 16.
pub const MAX_SIGNATURES: usize = 100;

const SIGNATURE_PREFIX: &str = "— ";

/// Why a note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is {len} bytes, more than the {MAX_NOTE_LEN} accepted")]
    TooLarge { len: usize },
    #[error("note is not valid UTF-8")]
    NotUtf8,
    #[error("note has control character U+{code:04X} at byte {offset} (only newline is allowed)")]
    ControlCharacter { code: u32, offset: usize },
    #[error("note text must be non-empty and end with a newline")]
    BadText,
    #[error("note has no blank line before its signatures")]
    MissingBlankLine,
    #[error("note has no signature lines")]
    NoSignatures,
    #[error("note has {count} signatures, more than the {MAX_SIGNATURES} accepted")]
    TooManySignatures { count: usize },
    #[error("malformed signature line {line:?}")]
    BadSignatureLine { line: String },
    #[error("signature by {name}+{key_id:08x} does not verify")]
    BadSignature { name: String, key_id: u32 },
    #[error("no signature from a trusted key (signed by: {names})")]
    NoTrustedSignature { names: String },
    #[error("two trusted keys share the name {name} and id {key_id:08x}")]
    AmbiguousKey { name: String, key_id: u32 },
    #[error("key {name} is a {key_type:?} key and cannot make this signature")]
    WrongKeyType { name: String, key_type: KeyType },
}

/// One signature line: who signed (name and key id) and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes after the key id (for a cosignature: time ‖ Ed25519 sig).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Parses `— <name> <base64>` with or without its final newline.
    pub fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let bad = || NoteError::BadSignatureLine {
            line: line.chars().take(200).collect(),
        };
        let body = line.strip_suffix('\n').unwrap_or(line);
        let body = body.strip_prefix(SIGNATURE_PREFIX).ok_or_else(bad)?;
        let (name, b64) = body.split_once(' ').ok_or_else(bad)?;
        if !is_valid_key_name(name) {
            return Err(bad());
        }
        let bytes = BASE64.decode(b64).map_err(|_| bad())?;
        let (id, signature) = bytes.split_first_chunk::<4>().ok_or_else(bad)?;
        if signature.is_empty() {
            return Err(bad());
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes(*id),
            signature: signature.to_vec(),
        })
    }

    /// The signature line, ending in a newline.
    pub fn to_line(&self) -> String {
        let mut line = String::new();
        self.push_line(&mut line);
        line
    }

    /// Appends the signature line to `out`.
    fn push_line(&self, out: &mut String) {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        out.push_str(SIGNATURE_PREFIX);
        out.push_str(&self.name);
        out.push(' ');
        BASE64.encode_string(&bytes, out);
        out.push('\n');
    }
}

/// A note as parsed: its text and signature lines, none of them verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note. The text must end in a newline and hold no control
    /// characters other than newline.
    pub fn new(text: impl Into<String>) -> Result<Note, NoteError> {
        let text = text.into();
        check_characters(&text)?;
        if !text.ends_with('\n') {
            return Err(NoteError::BadText);
        }
        Ok(Note {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note. The text ends at the last blank line.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge { len: bytes.len() });
        }
        let all = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_characters(all)?;
        // The text keeps its final newline; the blank line after it is the separator.
        let (text, block) = all.rsplit_once("\n\n").ok_or(NoteError::MissingBlankLine)?;
        let text = format!("{text}\n");
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let lines = block
            .strip_suffix('\n')
            .ok_or_else(|| NoteError::BadSignatureLine {
                line: block
                    .rsplit('\n')
                    .next()
                    .unwrap_or(block)
                    .chars()
                    .take(200)
                    .collect(),
            })?;
        let count = lines.split('\n').count();
        if count > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures { count });
        }
        let signatures = lines
            .split('\n')
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Note { text, signatures })
    }

    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line, replacing any earlier one from the same key.
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: self.signatures.len() + 1,
            });
        }
        self.signatures
            .retain(|s| (s.name.as_str(), s.key_id) != (signature.name.as_str(), signature.key_id));
        self.signatures.push(signature);
        Ok(())
    }

    /// Signs the text with an Ed25519 (type 0x01) key and adds the signature.
    pub fn sign(&mut self, key: &SignerKey) -> Result<(), NoteError> {
        let signature = sign_text(&self.text, key)?;
        self.add_signature(signature)
    }

    /// Cosigns the text with a tlog-cosignature (type 0x04) key at `timestamp`
    /// (POSIX seconds) and adds the signature.
    pub fn cosign(&mut self, key: &SignerKey, timestamp: u64) -> Result<(), NoteError> {
        let signature = cosign_text(&self.text, key, timestamp)?;
        self.add_signature(signature)
    }

    /// The signed note as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.render().into_bytes()
    }

    /// The note's text, a blank line, and its signature lines, in one allocation.
    fn render(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 128 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for sig in &self.signatures {
            sig.push_line(&mut out);
        }
        out
    }

    /// Verifies the note against trusted keys (signed-note §Signatures):
    /// signatures from unknown keys are ignored; a signature from a known key that
    /// does not verify rejects the whole note; at least one must verify.
    pub fn open(self, trusted: &[VerifierKey]) -> Result<OpenedNote, NoteError> {
        let mut verified: Vec<VerifiedSignature> = Vec::new();
        for sig in &self.signatures {
            let mut matching = trusted
                .iter()
                .filter(|k| k.name() == sig.name && k.key_id() == sig.key_id);
            let Some(key) = matching.next() else {
                continue;
            };
            // The same key configured twice is harmless; two different keys with
            // one name and id cannot be told apart.
            if matching.any(|other| other != key) {
                return Err(NoteError::AmbiguousKey {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            let Verdict::Good { timestamp } = key.verify(&self.text, &sig.signature) else {
                return Err(NoteError::BadSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            };
            // Every line from a known key is checked, but a key counts once.
            if !verified.iter().any(|v| v.key == *key) {
                verified.push(VerifiedSignature {
                    key: key.clone(),
                    timestamp,
                });
            }
        }
        if verified.is_empty() {
            let names: Vec<&str> = self.signatures.iter().map(|s| s.name.as_str()).collect();
            return Err(NoteError::NoTrustedSignature {
                names: names.join(", "),
            });
        }
        Ok(OpenedNote {
            note: self,
            verified,
        })
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Parses and opens a signed note in one step.
pub fn open(bytes: &[u8], trusted: &[VerifierKey]) -> Result<OpenedNote, NoteError> {
    Note::parse(bytes)?.open(trusted)
}

/// Signs `text` with an Ed25519 (type 0x01) key.
pub fn sign_text(text: &str, key: &SignerKey) -> Result<NoteSignature, NoteError> {
    require_type(key, KeyType::Ed25519)?;
    check_text(text)?;
    Ok(NoteSignature {
        name: key.name().to_owned(),
        key_id: key.key_id(),
        signature: key.sign_bytes(text.as_bytes()).to_vec(),
    })
}

/// tlog-cosignature v1: signs `cosignature/v1\ntime <t>\n` + `text` with a type
/// 0x04 key; the signature is `u64 big-endian t || Ed25519 signature`.
pub fn cosign_text(
    text: &str,
    key: &SignerKey,
    timestamp: u64,
) -> Result<NoteSignature, NoteError> {
    require_type(key, KeyType::Cosignature)?;
    check_text(text)?;
    let mut signature = timestamp.to_be_bytes().to_vec();
    signature.extend_from_slice(&key.sign_bytes(&cosigned_message(timestamp, text)));
    Ok(NoteSignature {
        name: key.name().to_owned(),
        key_id: key.key_id(),
        signature,
    })
}

/// A note with at least one signature verified by a trusted key.
#[derive(Debug, Clone)]
pub struct OpenedNote {
    note: Note,
    verified: Vec<VerifiedSignature>,
}

impl OpenedNote {
    /// The verified text.
    pub fn text(&self) -> &str {
        &self.note.text
    }

    /// The trusted keys that signed, each once, in note order.
    pub fn verified(&self) -> &[VerifiedSignature] {
        &self.verified
    }

    /// The whole note, including signatures from unknown keys.
    pub fn note(&self) -> &Note {
        &self.note
    }
}

/// A signature that verified with a trusted key.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    key: VerifierKey,
    timestamp: Option<u64>,
}

impl VerifiedSignature {
    pub fn key(&self) -> &VerifierKey {
        &self.key
    }

    /// The cosignature time (POSIX seconds) for type 0x04 keys.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }
}

fn require_type(key: &SignerKey, want: KeyType) -> Result<(), NoteError> {
    if key.key_type() != want {
        return Err(NoteError::WrongKeyType {
            name: key.name().to_owned(),
            key_type: key.key_type(),
        });
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), NoteError> {
    check_characters(text)?;
    if !text.ends_with('\n') {
        return Err(NoteError::BadText);
    }
    Ok(())
}

/// signed-note §Format: no ASCII control characters other than newline.
fn check_characters(s: &str) -> Result<(), NoteError> {
    match s.char_indices().find(|&(_, c)| c < ' ' && c != '\n') {
        Some((offset, c)) => Err(NoteError::ControlCharacter {
            code: u32::from(c),
            offset,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
