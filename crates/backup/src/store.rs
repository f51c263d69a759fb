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
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
/// `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A file holding `<access key id>:<secret access key>`; without it, the usual
    /// AWS environment variables are used.
    pub credentials_file: Option<PathBuf>,
}

/// The backup store.
#[derive(Clone)]
pub struct BackupStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
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
                })
            }
            StoreUrl::S3 { bucket, prefix } => {
                // object_store's HTTP client uses rustls without a built-in provider:
                // Palisade's own (ring) is installed if the process has none yet.
                if rustls::crypto::CryptoProvider::get_default().is_none() {
                    let _ = Arc::unwrap_or_clone(palisade_pki::crypto_provider()).install_default();
                }
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
                if let Some(f) = &s3.credentials_file {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| open_err(format!("credentials file {}: {e}", f.display())))?;
                    let (id, secret) = text.trim().split_once(':').ok_or_else(|| {
                        open_err(format!(
                            "credentials file {} does not hold <access key id>:<secret>",
                            f.display()
                        ))
                    })?;
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                let s3 = b.build().map_err(|e| open_err(e.to_string()))?;
                Ok(Self {
                    inner: Arc::new(s3),
                    prefix: prefix.clone(),
                    url: describe,
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
            writer: WriteMultipart::new_with_chunk_size(up, part_size),
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

    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io("delete", name)(e)),
        }
    }
}

/// An object being uploaded; nothing is visible under its name until [`Upload::finish`].
pub struct Upload {
    writer: WriteMultipart,
    name: String,
}

/// Parts in flight at once: bounds the memory an upload holds.
const MAX_PARTS_IN_FLIGHT: usize = 2;

impl Upload {
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.writer
            .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
            .await
            .map_err(io("upload", &self.name))?;
        self.writer.put(bytes);
        Ok(())
    }

    pub async fn finish(self) -> Result<(), StoreError> {
        let name = self.name;
        self.writer
            .finish()
            .await
            .map(|_| ())
            .map_err(io("upload", &name))
    }

    /// Gives up: the parts stored so far are discarded.
    pub async fn abort(self) -> Result<(), StoreError> {
        let name = self.name;
        self.writer.abort().await.map_err(io("abort", &name))
    }
}
