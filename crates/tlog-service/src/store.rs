//! Where a log's tiles, entry bundles and checkpoint live.
//!
//! The layout under a log's prefix is exactly C2SP tlog-tiles (`checkpoint`,
//! `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), so a directory or bucket can be
//! served by any static file server. Storage goes through the `object_store` crate:
//! a local directory (with fsync on every write, so that a write that returned is on
//! disk, but for a checkpoint that only refreshes cosignatures) or any S3-compatible
//! bucket.
//!
//! Every write is a whole-object put, which both back ends make atomic: a reader sees
//! the old object or the new one, never a torn one.

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open storage {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("cannot read {path} from storage: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path} to storage: {reason}")]
    Write { path: String, reason: String },
}

/// Object storage rooted at one prefix.
#[derive(Clone)]
pub struct TileStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
    /// The directory, for local storage.
    local_root: Option<std::path::PathBuf>,
    /// With a sequencer lease: what keeps a log process that lost it from writing.
    fence: Option<Arc<Fence>>,
}

/// How a log process that lost its sequencer lease is kept from writing:
/// - every write first checks that the lease's term still holds (a process paused
///   past its lease finds its deadline passed when it resumes, and writes nothing);
/// - where the storage supports conditional writes (S3), a checkpoint is written only
///   if the object is still the one this process read or wrote last (`If-Match`, or
///   `If-None-Match` when it did not exist): a late write from a paused process that
///   passed the first check before pausing is refused by the storage itself once
///   another process has written a checkpoint.
struct Fence {
    term: palisade_state::lease::LeaderFence,
    conditional: bool,
    /// The version (ETag) of each checkpoint object as last read or written here;
    /// `None` when it did not exist.
    seen: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

/// Puts `data` at `path` atomically without creating a file: it is written into a
/// spare file beside it (`.<name>.spare`), which then trades places with `path`
/// (`renameat2` with `RENAME_EXCHANGE`), the previous content becoming the spare. No
/// inode is created or freed per write: on ext4 without a journal, creating one scans
/// every inode freed in the last minutes, which at thousands of idle logs' refreshes
/// is most of the cost. Where exchange is not supported, or `path` does not exist
/// yet, a plain rename.
///
/// The spare is overwritten in place, not truncated first: truncating frees its
/// blocks and makes ext4 allocate new ones when the file is closed (its
/// "replace by truncate" safeguard), which costs more than the write. A refreshed
/// checkpoint is as long as the one before it, so the same blocks are rewritten;
/// only a shorter one shortens the file, after the write. Without that safeguard a
/// crash can leave the swap on disk but not the new bytes, so the public file is
/// then the spare's previous content: [`TileStore::write`] deletes the spare when it
/// replaces the object durably, so that the spare only ever holds an earlier
/// refresh of what is published (for a checkpoint, the same tree).
fn exchange_into(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let spare = spare_of(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&spare)?;
    file.write_all(data)?;
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if file.metadata()?.len() > len {
        file.set_len(len)?;
    }
    drop(file);
    let exchanged = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &spare,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::EXCHANGE,
    );
    match exchanged {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            std::fs::rename(&spare, path)
        }
        Err(e) => Err(e.into()),
    }
}

/// The spare file [`exchange_into`] swaps with `path`.
fn spare_of(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.spare"))
}

/// Object names written only through the fence's conditional write.
fn is_checkpoint(rel: &str) -> bool {
    rel == "checkpoint" || rel == crate::sequencer::COMMIT_CHECKPOINT
}

/// How to reach an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Location {
    pub bucket: String,
    pub region: String,
    /// e.g. `http://127.0.0.1:9000` for a local S3-compatible server.
    pub endpoint: Option<String>,
    /// Fixed keys, or the standard AWS chain ([`palisade_aws`]).
    pub credentials: palisade_aws::AwsCredentials,
}

impl TileStore {
    /// A local directory, created if missing; every write is fsynced.
    pub fn local(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            url: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| open_err(e.to_string()))?
            .with_fsync(true);
        Ok(Self {
            inner: Arc::new(fs),
            prefix: String::new(),
            describe: dir.display().to_string(),
            local_root: Some(dir.to_path_buf()),
            fence: None,
        })
    }

    /// An S3-compatible bucket.
    pub fn s3(loc: &S3Location) -> Result<Self, StoreError> {
        palisade_pki::install_default_provider();
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(&loc.region);
        if let Some(ep) = &loc.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        b = b.with_credentials(loc.credentials.for_object_store());
        // Conditional puts (If-Match / If-None-Match) fence a paused sequencer's late
        // checkpoint write; only used for checkpoints, and only under a lease.
        b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        let s3 = b.build().map_err(|e| StoreError::Open {
            url: format!("s3://{}", loc.bucket),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(s3),
            prefix: String::new(),
            describe: format!("s3://{}", loc.bucket),
            local_root: None,
            fence: None,
        })
    }

    /// The same storage, rooted at `prefix` below the current root.
    pub fn at(&self, prefix: &str) -> Self {
        let prefix = join(&self.prefix, prefix);
        Self {
            inner: self.inner.clone(),
            describe: format!("{}/{}", self.describe.trim_end_matches('/'), prefix),
            prefix,
            local_root: self.local_root.clone(),
            fence: self.fence.clone(),
        }
    }

    /// The same storage, written only while `term` holds (see [`Fence`]).
    pub fn fenced(mut self, term: palisade_state::lease::LeaderFence) -> Self {
        self.fence = Some(Arc::new(Fence {
            term,
            conditional: self.local_root.is_none(),
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }));
        self
    }

    /// Where `rel` is on the local file system, if this storage is a local directory.
    pub fn local_path(&self, rel: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(root.join(join(&self.prefix, rel)))
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn path(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(join(&self.prefix, rel))
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn read(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        let err = |reason: String| StoreError::Read {
            path: join(&self.describe, rel),
            reason,
        };
        let path = self.path(rel);
        // The first read of a checkpoint (recovery) sets the version the next write
        // must replace; from then on only this process's own writes move it, so a
        // later read of another process's checkpoint never licenses overwriting it.
        let remember = |version: Option<String>| {
            if let Some(f) = self.fence.as_ref().filter(|_| is_checkpoint(rel)) {
                if let Ok(mut seen) = f.seen.lock() {
                    seen.entry(path.to_string()).or_insert(version);
                }
            }
        };
        match self.inner.get(&path).await {
            Ok(r) => {
                let version = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(|e| err(e.to_string()))?;
                remember(version);
                Ok(Some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => {
                remember(None);
                Ok(None)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Whether any object exists below `rel_prefix` (e.g. `tile`).
    pub async fn any_below(&self, rel_prefix: &str) -> Result<bool, StoreError> {
        use futures::StreamExt;
        let prefix = self.path(rel_prefix);
        match self.inner.list(Some(&prefix)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(StoreError::Read {
                path: join(&self.describe, rel_prefix),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes a whole object atomically, without waiting for a local directory to
    /// put it on disk: after a crash the object may be its previous version. For a
    /// checkpoint that only refreshes the cosignatures of the tree the stored one
    /// already has (its loss costs nothing a restart does not redo). Under a lease,
    /// and in a bucket, the same as [`TileStore::write`].
    pub async fn write_unsynced(&self, rel: &str, data: Bytes) -> Result<(), StoreError> {
        match (self.local_path(rel), &self.fence) {
            (Some(path), None) => tokio::task::spawn_blocking(move || exchange_into(&path, &data))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| StoreError::Write {
                    path: join(&self.describe, rel),
                    reason: e.to_string(),
                }),
            _ => self.write(rel, data).await,
        }
    }

    /// Writes a whole object, durably and atomically; under a lease, only while it
    /// holds ([`Fence`]).
    pub async fn write(&self, rel: &str, data: Bytes) -> Result<(), StoreError> {
        let err = |reason: String| StoreError::Write {
            path: join(&self.describe, rel),
            reason,
        };
        let path = self.path(rel);
        // Under a lease: nothing once the term is over; checkpoints conditionally.
        let conditional = match &self.fence {
            None => None,
            Some(f) if !f.term.holds() => {
                return Err(err(format!(
                    "fenced: this log process no longer holds the sequencer lease (term {}); nothing was written",
                    f.term.revision()
                )))
            }
            Some(f) => Some(f).filter(|f| f.conditional && is_checkpoint(rel)),
        };
        let Some(fence) = conditional else {
            self.inner
                .put(&path, PutPayload::from_bytes(data))
                .await
                .map_err(|e| err(e.to_string()))?;
            // A spare left by unsynced refreshes holds an older object: gone, so that
            // a crash during the next refresh cannot publish it (see exchange_into).
            if let Some(local) = self.local_path(rel).filter(|_| is_checkpoint(rel)) {
                match tokio::fs::remove_file(spare_of(&local)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err(format!("cannot remove the spare file: {e}"))),
                }
            }
            return Ok(());
        };
        let key = path.to_string();
        let known = fence.seen.lock().ok().and_then(|s| s.get(&key).cloned());
        let mode = match known {
            Some(Some(e_tag)) => object_store::PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(e_tag),
                version: None,
            }),
            Some(None) => object_store::PutMode::Create,
            // Never read here: read it first, so the next write is conditional.
            None => object_store::PutMode::Overwrite,
        };
        match self
            .inner
            .put_opts(&path, PutPayload::from_bytes(data), mode.into())
            .await
        {
            Ok(done) => {
                if let Ok(mut seen) = fence.seen.lock() {
                    seen.insert(key, done.e_tag);
                }
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Err(err(format!(
                "fenced: another log process wrote {rel} since this one last read it (term {} is over); nothing was written",
                fence.term.revision()
            ))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

impl TileStore {
    /// Writes several objects at once (each as [`TileStore::write`]); the first error,
    /// if any, once all are done.
    pub async fn write_all(&self, writes: Vec<(String, Bytes)>) -> Result<(), StoreError> {
        futures::future::join_all(
            writes
                .into_iter()
                .map(|(path, data)| async move { self.write(&path, data).await }),
        )
        .await
        .into_iter()
        .collect()
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{}/{}", a.trim_end_matches('/'), b.trim_start_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsynced write replaces the object whole, and trades places with a spare
    /// instead of creating a file: the same two inodes however many writes.
    #[tokio::test]
    async fn unsynced_writes_swap_two_files() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TileStore::local(dir.path())
            .expect("store")
            .at("clusters/c1");
        store
            .write("checkpoint", Bytes::from_static(b"first"))
            .await
            .expect("write");
        let path = store.local_path("checkpoint").expect("local");
        let mut inodes = std::collections::BTreeSet::new();
        // The spare is rewritten in place: a shorter text over a longer one leaves
        // nothing of the longer one behind.
        for text in ["second", "third", "a much longer fourth", "fifth", "sixth!"] {
            store
                .write_unsynced("checkpoint", Bytes::from(text))
                .await
                .expect("write");
            assert_eq!(
                store
                    .read("checkpoint")
                    .await
                    .expect("read")
                    .expect("object"),
                text
            );
            inodes.insert(std::fs::metadata(&path).expect("meta").ino());
        }
        assert_eq!(inodes.len(), 2, "a file was created per write: {inodes:?}");
        let spare = path.with_file_name(".checkpoint.spare");
        assert_eq!(std::fs::read(&spare).expect("spare"), b"fifth");
        // A durable write replaces the object and deletes the spare, which held an
        // older object; the next refresh starts a new one.
        store
            .write("checkpoint", Bytes::from_static(b"durable"))
            .await
            .expect("write");
        assert!(!spare.exists(), "the spare outlived a durable write");
        store
            .write_unsynced("checkpoint", Bytes::from_static(b"refreshed"))
            .await
            .expect("write");
        assert_eq!(std::fs::read(&spare).expect("spare"), b"durable");
        assert_eq!(
            store.read("checkpoint").await.expect("read").as_deref(),
            Some(&b"refreshed"[..])
        );
    }

    #[tokio::test]
    async fn local_store_round_trips_under_a_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TileStore::local(dir.path())
            .expect("open")
            .at("clusters/demo");
        assert_eq!(store.read("checkpoint").await.expect("read"), None);
        store
            .write("tile/0/000.p/3", Bytes::from_static(b"abc"))
            .await
            .expect("write");
        store
            .write("checkpoint", Bytes::from_static(b"one"))
            .await
            .expect("write");
        store
            .write("checkpoint", Bytes::from_static(b"two"))
            .await
            .expect("overwrite");
        assert_eq!(
            store.read("checkpoint").await.expect("read").as_deref(),
            Some(&b"two"[..])
        );
        let on_disk =
            std::fs::read(dir.path().join("clusters/demo/tile/0/000.p/3")).expect("plain file");
        assert_eq!(on_disk, b"abc");
    }
}
