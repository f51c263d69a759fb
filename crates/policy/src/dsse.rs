//! DSSE envelopes (secure-systems-lab/dsse, protocol v1).
//!
//! The signed bytes are the pre-authentication encoding
//! `"DSSEv1" SP len(type) SP type SP len(body) SP body` (decimal lengths). A
//! signature's `keyid` is only a hint: verification tries every trusted key, and a
//! threshold counts **distinct trusted keys**, however many signatures one key made.

use crate::keys::{PublicKey, SigningKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    #[error("DSSE payload is not valid base64")]
    PayloadEncoding,
    #[error("DSSE payloadType is {found:?}, expected {expected:?}")]
    PayloadType { found: String, expected: String },
}

/// Pre-authentication encoding, DSSE v1.
pub use palisade_core::statement::pae;

impl Envelope {
    /// A new envelope signed by `key`.
    pub fn sign(payload_type: &str, body: &[u8], key: &SigningKey) -> Self {
        let mut env = Self {
            payload: STANDARD.encode(body),
            payload_type: payload_type.to_string(),
            signatures: Vec::new(),
        };
        env.add_signature(body, key);
        env
    }

    /// A new envelope signed outside this process (a key in a PKCS#11 token) by the
    /// private half of `key`: `sign` gets the PAE bytes and returns the signature,
    /// which is checked against `key` before it is used.
    pub fn sign_external<E: std::fmt::Display>(
        payload_type: &str,
        body: &[u8],
        key: &PublicKey,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Self, String> {
        let msg = pae(payload_type, body);
        let sig = sign(&msg).map_err(|e| e.to_string())?;
        if !key.verify(&msg, &sig) {
            return Err(format!(
                "the signature made for key {} does not verify with it",
                key.key_id()
            ));
        }
        Ok(Self {
            payload: STANDARD.encode(body),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: key.key_id(),
                sig: STANDARD.encode(sig),
            }],
        })
    }

    fn add_signature(&mut self, body: &[u8], key: &SigningKey) {
        let sig = key.sign(&pae(&self.payload_type, body));
        self.signatures.push(EnvelopeSignature {
            keyid: key.key_id(),
            sig: STANDARD.encode(sig),
        });
    }

    /// The payload bytes, after checking the payload type.
    pub fn payload_bytes(&self, expected_type: &str) -> Result<Vec<u8>, DsseError> {
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType {
                found: self.payload_type.chars().take(100).collect(),
                expected: expected_type.to_string(),
            });
        }
        STANDARD
            .decode(&self.payload)
            .map_err(|_| DsseError::PayloadEncoding)
    }

    /// Key ids (of `trusted`) with at least one valid signature; each counts once.
    pub fn verified_by(&self, trusted: &[PublicKey]) -> BTreeSet<String> {
        let mut ok = BTreeSet::new();
        let Ok(body) = STANDARD.decode(&self.payload) else {
            return ok;
        };
        let msg = pae(&self.payload_type, &body);
        for s in &self.signatures {
            let Ok(sig) = STANDARD.decode(&s.sig) else {
                continue;
            };
            for key in trusted {
                if key.verify(&msg, &sig) {
                    ok.insert(key.key_id());
                }
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
