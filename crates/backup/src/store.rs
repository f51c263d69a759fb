//! Where backups live: a local directory (every write fsynced) or an S3-compatible
//! bucket, through the `object_store` crate.
//!
//! Layout below the store's root: `<cluster>/<backup-id>.pbk` (the encrypted object)
//! and `<cluster>/<backup-id>.manifest.json` (its signed manifest). Objects are
//! written with a multipart upload that is completed only once every part is stored,
//! and aborted on any failure, so a failed backup leaves no object behind (S3 keeps
//! no unreferenced parts; the local store removes its staging file).

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut, RetryConfig,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinError;
use tokio::task::JoinSet;

pub const OBJECT_SUFFIX: &str = ".pbk";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid backup store {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot open backup store {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("backup store {op} {path}: {reason}")]
    Io {
        op: &'static str,
        path: String,
        reason: String,
    },
    #[error("{path} does not exist in the backup store")]
    NotFound { path: String },
}

/// Where the store is, as a URL: `file:///dir`, a plain path, or
/// `s3://bucket[/prefix]`. A configuration file holds it as that string; a relative
/// plain path is resolved by whoever reads the file (the agent's loader resolves it
/// against the file's directory).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum StoreUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::Url {
            url: s.chars().take(200).collect(),
            reason: reason.into(),
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("a file:// URL needs an absolute path (file:///dir)"));
            }
            return Ok(StoreUrl::Local(PathBuf::from(rest)));
        }
        if s.contains("://") {
            return Err(bad("only file://, s3:// or a directory path"));
        }
        if s.is_empty() {
            return Err(bad("empty"));
        }
        Ok(StoreUrl::Local(PathBuf::from(s)))
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, StoreError> {
        s.parse()
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Local(p) => write!(f, "file://{}", p.display()),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// How to reach an S3-compatible service (ignored for local stores).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub region: Option<String>,
    /// e.g. `http://127.0.0.1:9000` for a local S3-compatible server.
    pub endpoint: Option<String>,
    /// A file holding `<access key id>:<secret access key>`; without it, the
    /// standard AWS credential chain ([`palisade_aws`]).
    pub credentials_file: Option<PathBuf>,
}

/// The backup store.
#[derive(Clone)]
pub struct BackupStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    /// The directory of a local store (where staging files of uploads live).
    local_dir: Option<PathBuf>,
}

impl std::fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

fn fs_err(op: &'static str, path: &str, e: std::io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_string(),
        reason: e.to_string(),
    }
}

fn io<'a>(op: &'static str, path: &'a str) -> impl FnOnce(object_store::Error) -> StoreError + 'a {
    move |e| match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            path: path.to_string(),
        },
        e => StoreError::Io {
            op,
            path: path.to_string(),
            reason: e.to_string(),
        },
    }
}

impl BackupStore {
    pub fn open(url: &StoreUrl, s3: &S3Options) -> Result<Self, StoreError> {
        let describe = url.to_string();
        let open_err = |reason: String| StoreError::Open {
            url: describe.clone(),
            reason,
        };
        match url {
            StoreUrl::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| open_err(e.to_string()))?
                    .with_fsync(true);
                Ok(Self {
                    inner: Arc::new(fs),
                    prefix: String::new(),
                    url: describe,
                    local_dir: Some(dir.clone()),
                })
            }
            StoreUrl::S3 { bucket, prefix } => {
                // object_store's HTTP client uses rustls without a built-in provider.
                palisade_pki::install_default_provider();
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    // A backup that cannot reach its store fails within a minute and
                    // says so, rather than retrying for the default three.
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                        ..RetryConfig::default()
                    });
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                if let Some(ep) = &s3.endpoint {
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(ep.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let credentials = palisade_aws::AwsCredentials::file_or_chain(
                    s3.credentials_file.as_deref(),
                    s3.region.as_deref(),
                )
                .map_err(open_err)?;
                b = b.with_credentials(credentials.for_object_store());
                let s3 = b.build().map_err(|e| open_err(e.to_string()))?;
                Ok(Self {
                    inner: Arc::new(s3),
                    prefix: prefix.clone(),
                    url: describe,
                    local_dir: None,
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Starts a multipart upload of `name` in parts of `part_size` bytes.
    pub async fn upload(&self, name: &str, part_size: usize) -> Result<Upload, StoreError> {
        let up = self
            .inner
            .put_multipart(&self.path(name))
            .await
            .map_err(io("upload", name))?;
        Ok(Upload {
            upload: Some(up),
            parts: JoinSet::new(),
            buffer: PutPayloadMut::new(),
            part_size: part_size.max(1),
            name: name.to_string(),
        })
    }

    /// Writes a small object in one atomic put.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(io("write", name))
    }

    /// Reads a small object, refusing more than `max` bytes.
    pub async fn read_small(&self, name: &str, max: usize) -> Result<Vec<u8>, StoreError> {
        let r = self
            .inner
            .get(&self.path(name))
            .await
            .map_err(io("read", name))?;
        if r.meta.size > max as u64 {
            return Err(StoreError::Io {
                op: "read",
                path: name.to_string(),
                reason: format!("{} bytes, more than the {max} expected", r.meta.size),
            });
        }
        Ok(r.bytes().await.map_err(io("read", name))?.to_vec())
    }

    /// The object's size.
    pub async fn size(&self, name: &str) -> Result<u64, StoreError> {
        self.inner
            .head(&self.path(name))
            .await
            .map(|m| m.size)
            .map_err(io("stat", name))
    }

    /// The object's bytes, as a stream of chunks.
    pub async fn stream(
        &self,
        name: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let r = self
            .inner
            .get(&self.path(name))
            .await
            .map_err(io("read", name))?;
        let owned = name.to_string();
        Ok(r.into_stream()
            .map_err(move |e| StoreError::Io {
                op: "read",
                path: owned.clone(),
                reason: e.to_string(),
            })
            .boxed())
    }

    /// Names (relative to the root) and sizes of the objects below `dir`.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let base = self.path(dir);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<_> = self
            .inner
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(io("list", dir))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.to_string();
                full.strip_prefix(&strip)
                    .map(|n| (n.to_string(), m.size))
                    .or(Some((full, m.size)))
            })
            .collect())
    }

    /// Removes what uploads cut short by a process kill left in a local store: its
    /// staging files (`<name>#<n>`, never listed as objects), below `dir`. Returns
    /// their names. Call it when no upload runs (at start). An S3 store keeps the
    /// parts of such an upload invisible and unbilled only until the bucket's
    /// `AbortIncompleteMultipartUpload` lifecycle rule removes them
    /// (docs/operations.md).
    pub async fn remove_incomplete(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let Some(root) = self.local_dir.clone() else {
            return Ok(Vec::new());
        };
        let base = root.join(dir);
        let dir_name = dir.to_string();
        tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            let entries = match std::fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
                Err(e) => return Err(fs_err("list", &dir_name, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| fs_err("list", &dir_name, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let staging = name
                    .rsplit_once('#')
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if staging && entry.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(entry.path()).map_err(|e| fs_err("delete", &name, e))?;
                    removed.push(format!("{dir_name}/{name}"));
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| StoreError::Io {
            op: "list",
            path: dir.to_string(),
            reason: e.to_string(),
        })?
    }

    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io("delete", name)(e)),
        }
    }
}

/// An object being uploaded; nothing is visible under its name until [`Upload::finish`].
///
/// Parts are uploaded in the background, at most [`MAX_PARTS_IN_FLIGHT`] at a time.
/// Whatever ends the upload without completing it aborts it (object_store's
/// `MultipartUpload::abort`), so that S3 keeps no orphan parts and the local store no
/// staging file: a failed part, a failed completion, [`Upload::abort`], and dropping
/// the upload unfinished (the backup's future cancelled, e.g. by the handler's
/// timeout). The error returned is always the one that ended the upload; an abort
/// that fails too is logged.
pub struct Upload {
    /// `None` once completed or aborted.
    upload: Option<Box<dyn MultipartUpload>>,
    parts: JoinSet<object_store::Result<()>>,
    buffer: PutPayloadMut,
    part_size: usize,
    name: String,
}

/// Parts in flight at once: bounds the memory an upload holds.
const MAX_PARTS_IN_FLIGHT: usize = 2;

fn joined(r: Option<Result<object_store::Result<()>, JoinError>>) -> object_store::Result<()> {
    match r {
        None => Ok(()),
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(object_store::Error::Generic {
            store: "backup upload",
            source: Box::new(e),
        }),
    }
}

impl Upload {
    /// Adds bytes to the object; a part is sent whenever `part_size` bytes are
    /// gathered. Waits while too many parts are in flight.
    pub async fn write(&mut self, mut bytes: Bytes) -> Result<(), StoreError> {
        while !bytes.is_empty() {
            let room = self.part_size.saturating_sub(self.buffer.content_length());
            if bytes.len() < room {
                self.buffer.push(bytes);
                break;
            }
            self.buffer.push(bytes.split_to(room));
            self.send_part()?;
        }
        while self.parts.len() >= MAX_PARTS_IN_FLIGHT {
            if let Err(e) = joined(self.parts.join_next().await) {
                return Err(self.fail("upload", e).await);
            }
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<(), StoreError> {
        let part = std::mem::take(&mut self.buffer);
        let upload = self.upload.as_mut().ok_or_else(|| StoreError::Io {
            op: "upload",
            path: self.name.clone(),
            reason: "the upload has already ended".into(),
        })?;
        self.parts.spawn(upload.put_part(part.into()));
        Ok(())
    }

    /// Sends the last part, waits for every part and completes the upload: only
    /// now does the object appear.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        if self.buffer.content_length() > 0 {
            self.send_part()?;
        }
        while !self.parts.is_empty() {
            if let Err(e) = joined(self.parts.join_next().await) {
                return Err(self.fail("upload", e).await);
            }
        }
        let Some(mut upload) = self.upload.take() else {
            return Ok(());
        };
        match upload.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.upload = Some(upload);
                Err(self.fail("complete", e).await)
            }
        }
    }

    /// Gives up: the parts stored so far are discarded.
    pub async fn abort(mut self) -> Result<(), StoreError> {
        self.parts.shutdown().await;
        match self.upload.take() {
            Some(mut upload) => upload.abort().await.map_err(io("abort", &self.name)),
            None => Ok(()),
        }
    }

    /// Ends the upload after `e`: stops the parts in flight, aborts, and returns `e`.
    async fn fail(&mut self, op: &'static str, e: object_store::Error) -> StoreError {
        self.parts.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            if let Err(a) = upload.abort().await {
                tracing::warn!(
                    object = %self.name,
                    error = %a,
                    "could not abort the failed upload; an S3 bucket keeps its parts until a lifecycle rule removes them"
                );
            }
        }
        io(op, &self.name)(e)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        // Dropping the JoinSet stops the parts in flight.
        self.parts.abort_all();
        let name = std::mem::take(&mut self.name);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(object = %name, error = %e, "could not abort an unfinished upload");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(object = %name, "an unfinished upload was dropped outside a runtime and not aborted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, ObjectMeta, PutMultipartOptions,
        PutOptions, PutResult, UploadPart,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the store should get wrong.
    #[derive(Debug, Default, Clone, Copy)]
    struct Faults {
        /// This part (0-based) fails, as when the endpoint dies mid-upload.
        part: Option<usize>,
        complete: bool,
        abort: bool,
    }

    #[derive(Debug, Default)]
    struct Seen {
        aborts: AtomicUsize,
    }

    /// An in-memory object store whose multipart uploads fail as told.
    #[derive(Debug)]
    struct Faulty {
        inner: InMemory,
        faults: Faults,
        seen: Arc<Seen>,
    }

    impl std::fmt::Display for Faulty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Faulty")
        }
    }

    fn died(what: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "Faulty",
            source: format!("the endpoint died ({what})").into(),
        }
    }

    #[async_trait]
    impl ObjectStore for Faulty {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            Ok(Box::new(FaultyUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                next: 0,
                faults: self.faults,
                seen: self.seen.clone(),
            }))
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[derive(Debug)]
    struct FaultyUpload {
        inner: Box<dyn MultipartUpload>,
        next: usize,
        faults: Faults,
        seen: Arc<Seen>,
    }

    #[async_trait]
    impl MultipartUpload for FaultyUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            let n = self.next;
            self.next += 1;
            if self.faults.part == Some(n) {
                return Box::pin(async move { Err(died(&format!("part {n}"))) });
            }
            self.inner.put_part(data)
        }

        async fn complete(&mut self) -> object_store::Result<PutResult> {
            if self.faults.complete {
                return Err(died("complete"));
            }
            self.inner.complete().await
        }

        async fn abort(&mut self) -> object_store::Result<()> {
            self.seen.aborts.fetch_add(1, Ordering::SeqCst);
            if self.faults.abort {
                return Err(object_store::Error::Generic {
                    store: "Faulty",
                    source: "abort refused".into(),
                });
            }
            self.inner.abort().await
        }
    }

    fn faulty(faults: Faults) -> (BackupStore, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let store = BackupStore {
            inner: Arc::new(Faulty {
                inner: InMemory::new(),
                faults,
                seen: seen.clone(),
            }),
            prefix: String::new(),
            url: "memory://faulty".into(),
            local_dir: None,
        };
        (store, seen)
    }

    const NAME: &str = "demo/20260101T000000Z-0a1b2c3d.pbk";
    const PART: usize = 4096;

    /// Uploads ten parts' worth in uneven writes, as a backup does.
    async fn upload(store: &BackupStore) -> Result<(), StoreError> {
        let mut up = store.upload(NAME, PART).await?;
        for i in 0..25u8 {
            up.write(Bytes::from(vec![i; 1700])).await?;
        }
        up.finish().await
    }

    fn ended_by(r: Result<(), StoreError>, op: &str, what: &str) {
        match r {
            Err(StoreError::Io {
                op: got,
                path,
                reason,
            }) => {
                assert_eq!(got, op, "{reason}");
                assert_eq!(path, NAME);
                assert!(reason.contains(what), "reported {reason:?}");
            }
            other => panic!("expected the {op} failure, got {other:?}"),
        }
    }

    async fn nothing_stored(store: &BackupStore) {
        assert!(store.list("demo").await.unwrap().is_empty());
        assert!(matches!(
            store.size(NAME).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_completed_upload_is_visible_and_never_aborted() {
        let (store, seen) = faulty(Faults::default());
        upload(&store).await.unwrap();
        assert_eq!(store.size(NAME).await.unwrap(), 25 * 1700);
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_part_failing_mid_upload_aborts_the_upload_and_reports_the_failure() {
        let (store, seen) = faulty(Faults {
            part: Some(3),
            ..Faults::default()
        });
        ended_by(upload(&store).await, "upload", "the endpoint died (part 3)");
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 1, "no orphan parts");
        nothing_stored(&store).await;
    }

    #[tokio::test]
    async fn the_last_part_failing_aborts_the_upload() {
        let (store, seen) = faulty(Faults {
            // 42,500 bytes in 4,096-byte parts: part 10 is the short last one.
            part: Some(10),
            ..Faults::default()
        });
        ended_by(
            upload(&store).await,
            "upload",
            "the endpoint died (part 10)",
        );
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 1);
        nothing_stored(&store).await;
    }

    #[tokio::test]
    async fn a_failed_completion_aborts_the_upload() {
        let (store, seen) = faulty(Faults {
            complete: true,
            ..Faults::default()
        });
        ended_by(
            upload(&store).await,
            "complete",
            "the endpoint died (complete)",
        );
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 1);
        nothing_stored(&store).await;
    }

    #[tokio::test]
    async fn when_the_abort_fails_too_the_original_failure_is_reported() {
        let (store, seen) = faulty(Faults {
            part: Some(1),
            abort: true,
            ..Faults::default()
        });
        ended_by(upload(&store).await, "upload", "the endpoint died (part 1)");
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_upload_given_up_by_its_caller_is_aborted() {
        let (store, seen) = faulty(Faults::default());
        let mut up = store.upload(NAME, PART).await.unwrap();
        up.write(Bytes::from(vec![1; 3 * PART])).await.unwrap();
        up.abort().await.unwrap();
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 1);
        nothing_stored(&store).await;
    }

    #[tokio::test]
    async fn an_upload_dropped_unfinished_is_aborted() {
        // As when the backup's future is cancelled (the handler's timeout).
        let (store, seen) = faulty(Faults::default());
        let mut up = store.upload(NAME, PART).await.unwrap();
        up.write(Bytes::from(vec![1; 3 * PART])).await.unwrap();
        drop(up);
        // The abort runs on the runtime: let it.
        for _ in 0..1000 {
            if seen.aborts.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(seen.aborts.load(Ordering::SeqCst), 1);
        nothing_stored(&store).await;
    }
}
