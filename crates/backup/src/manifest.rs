//! The backup manifest: what a backup is, signed by the agent that took it
//! (docs/formats.md, "Backup manifest").
//!
//! Stored next to the object as a DSSE envelope (payload type
//! [`MANIFEST_PAYLOAD_TYPE`]) over the manifest's canonical JSON. The manifest's
//! digest, which the action's output carries and so the cluster's log records, is the
//! SHA-256 of the stored envelope bytes.

use palisade_core::time::Timestamp;
use palisade_core::Sha256Digest;
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

pub const MANIFEST_SCHEMA: &str = "palisade.dev/backup-manifest/v1";
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.palisade.backup-manifest+json";
/// Manifests are small; anything larger is not one.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// The intent event that asked for the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRef {
    pub origin: String,
    pub index: u64,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub backup_id: String,
    pub format_version: u16,
    pub tenant: String,
    pub cluster: String,
    pub instance: String,
    /// The etcd member the snapshot came from (hex, as etcdctl prints it).
    pub member_id: String,
    /// The etcd revision at the time of the snapshot.
    pub etcd_revision: i64,
    pub created_at: Timestamp,
    /// The object's name below the store's root.
    pub object: String,
    /// Bytes of the snapshot (database and its 32-byte SHA-256 trailer).
    pub snapshot_bytes: u64,
    /// Bytes of the stored object (header and sealed segments).
    pub object_bytes: u64,
    pub header_bytes: u64,
    pub segment_size: u32,
    pub segments: u64,
    /// SHA-256 of the whole stored object, hex.
    pub object_sha256: String,
    /// The KMS key that wrapped the data key.
    pub key_id: String,
    /// The wrapped data key, base64 (the same bytes as in the object's header).
    pub wrapped_key: String,
    pub requested_by: LogRef,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not a DSSE envelope: {0}")]
    Envelope(String),
    #[error("the manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("the manifest is not signed by a trusted agent key")]
    Signature,
    #[error("the manifest payload is invalid: {0}")]
    Payload(String),
    #[error("the manifest schema is {0:?}, expected {MANIFEST_SCHEMA:?}")]
    Schema(String),
}

/// A manifest whose signature verified under a trusted key.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    /// SHA-256 of the stored envelope bytes.
    pub digest: Sha256Digest,
    /// The trusted key that signed it.
    pub signer: String,
}

impl Manifest {
    /// The stored form: a DSSE envelope signed by the agent key, as JSON.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, ManifestError> {
        let body = palisade_core::canonical::to_canonical_vec(self)
            .map_err(|e| ManifestError::Payload(e.to_string()))?;
        let env = Envelope::sign(MANIFEST_PAYLOAD_TYPE, &body, key);
        let mut out =
            serde_json::to_vec(&env).map_err(|e| ManifestError::Envelope(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Opens a stored manifest: a valid signature by one of `trusted`, the right
    /// payload type and schema.
    pub fn verify(bytes: &[u8], trusted: &[PublicKey]) -> Result<VerifiedManifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Envelope(e.to_string()))?;
        let body = env
            .payload_bytes(MANIFEST_PAYLOAD_TYPE)
            .map_err(|e| ManifestError::Envelope(e.to_string()))?;
        let signer = env
            .verified_by(trusted)
            .into_iter()
            .next()
            .ok_or(ManifestError::Signature)?;
        let manifest: Manifest = palisade_core::canonical::from_canonical_slice(&body)
            .map_err(|e| ManifestError::Payload(e.to_string()))?;
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(ManifestError::Schema(
                manifest.schema.chars().take(100).collect(),
            ));
        }
        Ok(VerifiedManifest {
            manifest,
            digest: Sha256Digest::of(bytes),
            signer,
        })
    }

    /// Reads the payload without checking any signature (for listing what is there
    /// even when it does not verify; never to act on).
    pub fn unverified(bytes: &[u8]) -> Option<Manifest> {
        let env: Envelope = serde_json::from_slice(bytes).ok()?;
        let body = env.payload_bytes(MANIFEST_PAYLOAD_TYPE).ok()?;
        serde_json::from_slice(&body).ok()
    }
}
