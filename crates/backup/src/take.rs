//! Taking a backup: snapshot bytes in, an encrypted object and a signed manifest out.
//!
//! The order matters for claim C5 and for "a failed backup is never listed as good":
//! 1. a fresh data key is generated and wrapped by the customer's KEK through the
//!    KMS plugin (if the plugin refuses, nothing is written);
//! 2. the snapshot is checked (trailing SHA-256), sealed segment by segment, and
//!    uploaded part by part as it streams: memory is bounded by a few parts, and
//!    neither the plaintext nor the data key is ever written anywhere;
//! 3. any failure (etcd stream, snapshot check, storage) aborts the multipart upload,
//!    so no object appears;
//! 4. only after the object is complete is the manifest signed and written; listing
//!    only counts objects with a valid manifest.

use crate::format::{DataKey, Header, Sealer, DEFAULT_SEGMENT_SIZE};
use crate::manifest::{LogRef, Manifest, MANIFEST_SCHEMA};
use crate::snapshot::SnapshotCheck;
use crate::store::{BackupStore, Upload, MANIFEST_SUFFIX, OBJECT_SUFFIX};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use palisade_core::time::Timestamp;
use palisade_core::Sha256Digest;
use palisade_kms::KmsClient;
use palisade_policy::keys::SigningKey;
use sha2::{Digest, Sha256};

/// Who and what the backup is of (goes into the manifest).
#[derive(Debug, Clone)]
pub struct BackupSubject {
    pub tenant: String,
    pub cluster: String,
    pub instance: String,
    pub member_id: String,
    pub etcd_revision: i64,
    pub requested_by: LogRef,
}

/// A backup that was stored completely.
#[derive(Debug, Clone)]
pub struct Taken {
    pub manifest: Manifest,
    /// SHA-256 of the stored manifest bytes.
    pub manifest_digest: Sha256Digest,
    pub manifest_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("no randomness for the data key: {0}")]
    Random(String),
    #[error("the KMS plugin did not wrap the data key: {0}")]
    Wrap(String),
    #[error("the etcd snapshot stream failed: {0}")]
    Source(String),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

/// A new backup id: sortable by time, unique by its random suffix.
pub fn new_backup_id(now: Timestamp) -> Result<String, TakeError> {
    let t = now.as_offset_date_time();
    let mut r = [0u8; 4];
    getrandom::getrandom(&mut r).map_err(|e| TakeError::Random(e.to_string()))?;
    Ok(format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        hex::encode(r)
    ))
}

pub fn object_name(cluster: &str, backup_id: &str) -> String {
    format!("{cluster}/{backup_id}{OBJECT_SUFFIX}")
}

pub fn manifest_name(cluster: &str, backup_id: &str) -> String {
    format!("{cluster}/{backup_id}{MANIFEST_SUFFIX}")
}

/// Bytes gathered before they are handed to the upload (one segment's worth).
const FLUSH_BYTES: usize = DEFAULT_SEGMENT_SIZE as usize;

struct Counting {
    upload: Upload,
    hasher: Sha256,
    written: u64,
}

impl Counting {
    async fn write(&mut self, buf: &mut Vec<u8>) -> Result<(), TakeError> {
        if buf.is_empty() {
            return Ok(());
        }
        let bytes = Bytes::from(std::mem::take(buf));
        self.hasher.update(&bytes);
        self.written += bytes.len() as u64;
        self.upload.write(bytes).await?;
        Ok(())
    }
}

/// Streams `snapshot` into an encrypted object and writes its signed manifest.
pub async fn take<S>(
    store: &BackupStore,
    kms: &mut KmsClient,
    signer: &SigningKey,
    subject: BackupSubject,
    part_size: usize,
    snapshot: S,
) -> Result<Taken, TakeError>
where
    S: Stream<Item = Result<Bytes, String>> + Unpin,
{
    let created_at = Timestamp::now();
    let backup_id = new_backup_id(created_at)?;
    let key = DataKey::generate().map_err(|e| TakeError::Random(e.to_string()))?;
    let (wrapped, key_id) = kms
        .encrypt(key.expose())
        .await
        .map_err(|e| TakeError::Wrap(e.to_string()))?;
    let header = Header::new(&backup_id, key_id.as_str(), wrapped)?;
    let object = object_name(&subject.cluster, &backup_id);
    let upload = store.upload(&object, part_size).await?;
    let mut sink = Counting {
        upload,
        hasher: Sha256::new(),
        written: 0,
    };
    let sealed = seal_into(&key, &header, snapshot, &mut sink).await;
    drop(key);
    let (snapshot_bytes, segments, header_bytes) = match sealed {
        Ok(v) => v,
        Err(e) => {
            if let Err(abort) = sink.upload.abort().await {
                tracing::warn!(object, error = %abort, "could not abort the failed upload");
            }
            return Err(e);
        }
    };
    let object_bytes = sink.written;
    let object_sha256 = hex::encode(sink.hasher.clone().finalize());
    sink.upload.finish().await?;

    let manifest = Manifest {
        schema: MANIFEST_SCHEMA.to_string(),
        backup_id: backup_id.clone(),
        format_version: crate::format::VERSION,
        tenant: subject.tenant,
        cluster: subject.cluster.clone(),
        instance: subject.instance,
        member_id: subject.member_id,
        etcd_revision: subject.etcd_revision,
        created_at,
        object: object.clone(),
        snapshot_bytes,
        object_bytes,
        header_bytes,
        segment_size: header.segment_size,
        segments,
        object_sha256,
        key_id: header.key_id.clone(),
        wrapped_key: STANDARD.encode(&header.wrapped_key),
        requested_by: subject.requested_by,
    };
    let signed = manifest.sign(signer)?;
    let digest = Sha256Digest::of(&signed);
    let name = manifest_name(&subject.cluster, &backup_id);
    if let Err(e) = store.put(&name, signed).await {
        // Without its manifest the object is an orphan nobody can use: remove it.
        if let Err(d) = store.delete(&object).await {
            tracing::warn!(object, error = %d, "could not remove an object whose manifest failed");
        }
        return Err(e.into());
    }
    Ok(Taken {
        manifest,
        manifest_digest: digest,
        manifest_name: name,
    })
}

async fn seal_into<S>(
    key: &DataKey,
    header: &Header,
    mut snapshot: S,
    sink: &mut Counting,
) -> Result<(u64, u64, u64), TakeError>
where
    S: Stream<Item = Result<Bytes, String>> + Unpin,
{
    let (mut sealer, mut buf) = Sealer::new(key, header)?;
    let header_len = buf.len() as u64;
    let mut check = SnapshotCheck::new();
    while let Some(chunk) = snapshot.next().await {
        let chunk = chunk.map_err(TakeError::Source)?;
        check.update(&chunk);
        sealer.push(&chunk, &mut buf)?;
        if buf.len() >= FLUSH_BYTES {
            sink.write(&mut buf).await?;
        }
    }
    // The trailer must match before the last segment is sealed: a snapshot that
    // does not check out never becomes a complete object.
    let snapshot_bytes = check.finish()?;
    let segments = sealer.finish(&mut buf)?;
    sink.write(&mut buf).await?;
    Ok((snapshot_bytes, segments, header_len))
}
