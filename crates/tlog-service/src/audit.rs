//! The customer's verifier (`palisade audit`): reads a cluster's whole log and
//! checks every object of it, so that a log that lost, changed, reordered or forked
//! anything is caught by the customer rather than trusted.
//!
//! A log is read from a [`Source`]: a directory holding the log's prefix, or its HTTPS
//! read API. The layout under both is exactly C2SP tlog-tiles v0.1.0 (`checkpoint`,
//! `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`).
//!
//! [`verify`] runs, in this order:
//! 1. the checkpoint must meet the customer's [`LogPolicy`]: the log's signature, the
//!    expected origin, and a quorum of distinct witness cosignatures;
//! 2. every entry bundle the checkpoint covers is read in order, each entry is hashed
//!    (RFC 6962) into a [`Frontier`], and every hash tile the checkpoint covers —
//!    every level, full and partial — must hold exactly the hashes the entries
//!    produce. So a changed byte in any tile, bundle or in the checkpoint is reported
//!    with the name of the object;
//!    An entry that is a Palisade result event carrying its output must carry the
//!    output whose digest it logs (the agent signed the digest; the customer reads
//!    the output), else the log is reported as altered at that index;
//! 3. the entries must recompute the checkpoint's root;
//! 4. against the [`TrustedState`] of a previous run: the log may not have shrunk
//!    ("rolled back"), and its first `old size` entries must still have the old root
//!    (otherwise the log signed two views of history: a fork).
//!
//! Memory stays bounded whatever the size of the log: one bundle at a time (plus a
//! few prefetched), the tile being filled at each level, and the frontier.
//!
//! What this does not check: partial tiles and bundles left behind from *earlier*
//! sizes (`…/N.p/W` below the current width). They are outside what the checkpoint
//! commits to, tlog-tiles lets a log delete them at any time, and every client
//! authenticates them against its own checkpoint anyway. Extension lines of the
//! checkpoint are not interpreted.
//!
//! [`produce_proof`] and [`check_proof`] make and check C2SP tlog-proof files: an
//! offline, self-contained proof that one entry is in the log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use palisade_tlog::checkpoint::{CheckpointError, LogPolicy, VerifiedCheckpoint};
use palisade_tlog::hash::{empty_root, leaf_hash, Hash, HASH_SIZE};
use palisade_tlog::note::{VerifierKey, MAX_NOTE_LEN};
use palisade_tlog::proof::{TlogProof, TlogProofError};
use palisade_tlog::tile::{
    parse_bundle, BundleError, TileFetcher, TileHashReader, TileId, FULL_TILE_BYTES, MAX_ENTRY_LEN,
    TILE_HEIGHT, TILE_WIDTH,
};
use palisade_tlog::tree::{Frontier, MAX_TREE_SIZE};
use serde::{Deserialize, Serialize};

use crate::store::TileStore;

const WIDTH: u64 = TILE_WIDTH as u64;
/// Largest possible entry bundle: 256 entries of the largest size, each with its prefix.
const MAX_BUNDLE_BYTES: usize = TILE_WIDTH as usize * (2 + MAX_ENTRY_LEN);
/// Bundles (with their level-0 tiles) read ahead of the one being hashed; bounds
/// memory while hiding the latency of an HTTPS read API.
const PREFETCH: usize = 8;

/// Why a log, a proof or a state file did not verify, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{dir} is not a directory; --dir must name the log's directory, the one holding `checkpoint`")]
    NotADirectory { dir: PathBuf },
    #[error("cannot open {location}: {reason}")]
    Open { location: String, reason: String },
    #[error("log URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the bearer token is empty or not usable in an HTTP header (control characters or non-ASCII text)")]
    BadToken,
    #[error("cannot read {object} from {location}: {reason}")]
    Read {
        object: String,
        location: String,
        reason: String,
    },
    #[error(
        "{location} refused to serve {object} (HTTP {status}): check the --token for this log"
    )]
    Refused {
        object: String,
        location: String,
        status: u16,
    },
    #[error("{object} is larger than {limit} bytes, more than any valid log object of its kind")]
    TooLarge { object: String, limit: usize },
    #[error("there is no checkpoint at {location}/checkpoint: is this the log's directory or URL (the one that serves `checkpoint` and `tile/…`)?")]
    NoCheckpoint { location: String },
    #[error("the checkpoint {location}/checkpoint is not acceptable: {reason}")]
    Checkpoint {
        location: String,
        reason: CheckpointError,
    },
    #[error("the checkpoint claims {size} entries, more than any log can hold ({MAX_TREE_SIZE})")]
    SizeTooLarge { size: u64 },
    #[error("{object} is missing from {location}, but the checkpoint of size {size} covers it")]
    Missing {
        object: String,
        location: String,
        size: u64,
    },
    #[error("tile {object} is {got} bytes; the checkpoint of size {size} needs {want} ({} hashes)", want / HASH_SIZE)]
    TileLength {
        object: String,
        want: usize,
        got: usize,
        size: u64,
    },
    #[error("entry bundle {object} is malformed: {reason}")]
    BadBundle { object: String, reason: BundleError },
    #[error(
        "entry bundle {object} holds {got} entries; the checkpoint of size {size} needs {want}"
    )]
    BundleWidth {
        object: String,
        want: usize,
        got: usize,
        size: u64,
    },
    #[error("{0}")]
    TileMismatch(Box<TileMismatch>),
    /// The entries, read whole (the check the console also runs).
    #[error(transparent)]
    Entries(#[from] palisade_audit::log::LogError),
    #[error("the log's {size} entries have root {computed}, but its checkpoint says {checkpoint}: the tiles and bundles are not the ones the log signed")]
    RootMismatch {
        size: u64,
        computed: String,
        checkpoint: String,
    },
    #[error("log {origin} rolled back: it now has {size} entries, fewer than the {trusted} verified before")]
    RolledBack {
        origin: String,
        trusted: u64,
        size: u64,
    },
    #[error("fork: the log rewrote history. Its first {trusted} entries now have root {now}, but root {before} was verified for them before; the log {origin} has signed two different histories (keep both checkpoints as evidence)")]
    Fork {
        origin: String,
        trusted: u64,
        before: String,
        now: String,
    },
    #[error("the trusted state is for log {state:?}, but this log is {log:?}: keep one state file per log")]
    StateOrigin { state: String, log: String },
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("entry {index} is not in the log: the checkpoint covers {size} entries (0 to {})", size.saturating_sub(1))]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("cannot build the inclusion proof from the log's tiles: {reason}")]
    ProofTiles { reason: String },
    #[error("entry {index} as read from {object} is not the one the log's tree proves: {reason}")]
    EntryNotProven {
        index: u64,
        object: String,
        reason: TlogProofError,
    },
    #[error("proof file: {0}")]
    Proof(TlogProofError),
    #[error("reading tiles for a proof needs tokio's multi-threaded runtime")]
    NeedsMultiThreadRuntime,
    #[error("entry {index} claims the Palisade event schema but is not a valid event in its one canonical form ({reason}): no check could be made of it")]
    NotAnEvent { index: u64, reason: String },
    #[error("entry {index} is a result whose logged output does not match its digest: {reason}")]
    OutputMismatch {
        index: u64,
        reason: palisade_core::output::OutputError,
    },
}

/// Checks what an entry says about itself: a result event's output against the
/// output digest it logs. Entries that are not Palisade events (the governance log's
/// records) have nothing to check here; but an entry that names the event schema and
/// does not decode as one (another spelling, an unknown field) is refused, so that no
/// result escapes its checks by being written in another form.
pub fn check_entry(index: u64, entry: &[u8]) -> Result<(), AuditError> {
    match palisade_core::event::Event::from_log_entry(entry) {
        Ok(palisade_core::event::Event::Result(r)) => r
            .check_output()
            .map_err(|reason| AuditError::OutputMismatch { index, reason }),
        Ok(_) => Ok(()),
        Err(e) => {
            let claims_schema = serde_json::from_slice::<serde_json::Value>(entry)
                .ok()
                .and_then(|v| v.get("schema").and_then(|s| s.as_str()).map(str::to_owned))
                .is_some_and(|s| s == palisade_core::event::EVENT_SCHEMA);
            if claims_schema {
                Err(AuditError::NotAnEvent {
                    index,
                    reason: e.to_string(),
                })
            } else {
                Ok(())
            }
        }
    }
}

/// A tile whose bytes differ from the hashes its entries produce.
#[derive(Debug, thiserror::Error)]
#[error("tile {object} does not match the log's entries: its hash #{position} ({covers}) is {stored}, but the entries hash to {computed}; {blame}")]
pub struct TileMismatch {
    pub object: String,
    pub position: usize,
    /// The entries under the hash.
    pub covers: String,
    /// Which object is to blame, as far as the verifier can tell.
    pub blame: String,
    pub stored: String,
    pub computed: String,
}

// ---------------------------------------------------------------------------------
// Where a log is read from.

/// Where the verifier reads a log: its storage prefix as a directory, or its HTTPS
/// read API. Nothing read is trusted until checked.
pub struct Source {
    inner: Inner,
    location: String,
}

enum Inner {
    Dir(TileStore),
    Http(Http),
}

struct Http {
    base: String,
    client: reqwest::Client,
    authorization: Option<reqwest::header::HeaderValue>,
}

impl Source {
    /// The log in directory `dir` (the one that holds `checkpoint` and `tile/`).
    pub fn dir(dir: &Path) -> Result<Source, AuditError> {
        // Checked first: opening a TileStore creates a missing directory, and a
        // mistyped path should say so rather than look like an empty log.
        if !dir.is_dir() {
            return Err(AuditError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        let store = TileStore::local(dir).map_err(|e| AuditError::Open {
            location: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Source {
            inner: Inner::Dir(store),
            location: dir.display().to_string(),
        })
    }

    /// The log served at `base` (`base/checkpoint`, `base/tile/…`), e.g.
    /// `https://log.example/logs/c1`. `token` is sent as `Authorization: Bearer`.
    /// With `ca`, the server must chain to exactly the certificates in that PEM file
    /// (a private CA); without it, to the system's trust store.
    ///
    /// Plain `http://` is accepted only for loopback hosts (tests, an SSH tunnel):
    /// the entries and the token are the customer's to keep private.
    pub fn url(base: &str, token: Option<&str>, ca: Option<&Path>) -> Result<Source, AuditError> {
        let bad = |reason: &str| AuditError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("it must not carry a ?query or #fragment"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("credentials go in --token, not in the URL"));
        }
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(parsed.host_str().unwrap_or_default()) => {}
            "http" => {
                return Err(bad(
                    "use https:// (plain http is only accepted for loopback hosts)",
                ))
            }
            other => return Err(bad(&format!("scheme {other:?} is not https"))),
        }
        let authorization = token
            .map(|t| {
                if t.trim().is_empty() {
                    return Err(AuditError::BadToken);
                }
                let mut value =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                        .map_err(|_| AuditError::BadToken)?;
                value.set_sensitive(true);
                Ok::<_, AuditError>(value)
            })
            .transpose()?;
        let open = |reason: String| AuditError::Open {
            location: base.to_owned(),
            reason,
        };
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            // A redirect may not downgrade an https log to plain http.
            .https_only(parsed.scheme() == "https");
        let builder = match ca {
            Some(ca) => {
                let roots = palisade_pki::load_roots(ca).map_err(|e| open(e.to_string()))?;
                let tls =
                    rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| open(e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                builder.tls_backend_preconfigured(tls)
            }
            None => {
                // reqwest then verifies with the platform's trust store, using the
                // process-wide rustls provider: make it Palisade's (ring) unless
                // one is installed already.
                palisade_pki::install_default_provider();
                builder
            }
        };
        let client = builder.build().map_err(|e| open(error_chain(&e)))?;
        let base = base.trim_end_matches('/').to_owned();
        Ok(Source {
            location: base.clone(),
            inner: Inner::Http(Http {
                base,
                client,
                authorization,
            }),
        })
    }

    /// The log served at `base` over HTTPS with a prepared TLS configuration, e.g.
    /// one presenting a Palisade component certificate (gateway, agent).
    pub fn https_with(base: &str, tls: rustls::ClientConfig) -> Result<Source, AuditError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .https_only(true)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| AuditError::Open {
                location: base.to_owned(),
                reason: error_chain(&e),
            })?;
        Self::https_client(base, client)
    }

    /// As [`Source::https_with`], with a client the caller already has (its
    /// connections are reused: no new TLS handshake per source). The client must be
    /// https-only and trust exactly the log's CA.
    pub fn https_client(base: &str, client: reqwest::Client) -> Result<Source, AuditError> {
        let bad = |reason: String| AuditError::BadUrl {
            url: base.to_owned(),
            reason,
        };
        let parsed = reqwest::Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad("the scheme must be https".into()));
        }
        let base = base.trim_end_matches('/').to_owned();
        Ok(Source {
            location: base.clone(),
            inner: Inner::Http(Http {
                base,
                client,
                authorization: None,
            }),
        })
    }

    /// The directory or base URL, for messages (never the token).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Reads the object at `rel` (relative to the log's prefix); `None` if it does not
    /// exist. Objects above `limit` bytes are refused.
    pub async fn read(&self, rel: &str, limit: usize) -> Result<Option<Bytes>, AuditError> {
        let data = match &self.inner {
            Inner::Dir(store) => store.read(rel).await.map_err(|e| AuditError::Read {
                object: rel.to_owned(),
                location: self.location.clone(),
                reason: e.to_string(),
            })?,
            Inner::Http(http) => http.get(rel, limit, &self.location).await?,
        };
        match data {
            Some(d) if d.len() > limit => Err(AuditError::TooLarge {
                object: rel.to_owned(),
                limit,
            }),
            other => Ok(other),
        }
    }

    /// Fetches and verifies the checkpoint (step 1).
    async fn checkpoint(&self, policy: &LogPolicy) -> Result<VerifiedCheckpoint, AuditError> {
        let bytes = self
            .read("checkpoint", MAX_NOTE_LEN)
            .await?
            .ok_or_else(|| AuditError::NoCheckpoint {
                location: self.location.clone(),
            })?;
        let verified = policy
            .verify(&bytes)
            .map_err(|reason| AuditError::Checkpoint {
                location: self.location.clone(),
                reason,
            })?;
        let size = verified.checkpoint().size();
        if size > MAX_TREE_SIZE {
            return Err(AuditError::SizeTooLarge { size });
        }
        Ok(verified)
    }

    /// The contents of hash tile `id` of the tree of `size` leaves, exactly
    /// `id.byte_len()` bytes. A partial tile that is gone is read from the full tile
    /// of the same index, as tlog-tiles allows.
    async fn tile(&self, id: TileId, size: u64) -> Result<Bytes, AuditError> {
        let (object, data) = match self.read(&id.path(), FULL_TILE_BYTES).await? {
            Some(data) => (id.path(), data),
            None if !id.is_full() => match self.read(&id.full().path(), FULL_TILE_BYTES).await? {
                Some(full) if full.len() == FULL_TILE_BYTES => {
                    return Ok(full.slice(..id.byte_len()));
                }
                Some(full) => (id.full().path(), full),
                None => return Err(self.missing(id.path(), size)),
            },
            None => return Err(self.missing(id.path(), size)),
        };
        let want = if object == id.path() {
            id.byte_len()
        } else {
            FULL_TILE_BYTES
        };
        if data.len() != want {
            return Err(AuditError::TileLength {
                object,
                want,
                got: data.len(),
                size,
            });
        }
        Ok(data)
    }

    /// The entry bundle of `id` (level 0), as bytes, with the path it was read from
    /// and whether that is the full bundle standing in for a deleted partial one.
    async fn bundle(&self, id: TileId, size: u64) -> Result<Bundle, AuditError> {
        if let Some(data) = self.read(&id.entries_path(), MAX_BUNDLE_BYTES).await? {
            return Ok(Bundle {
                id,
                object: id.entries_path(),
                data,
                from_full: false,
            });
        }
        if !id.is_full() {
            let full = id.full().entries_path();
            if let Some(data) = self.read(&full, MAX_BUNDLE_BYTES).await? {
                return Ok(Bundle {
                    id,
                    object: full,
                    data,
                    from_full: true,
                });
            }
        }
        Err(self.missing(id.entries_path(), size))
    }

    fn missing(&self, object: String, size: u64) -> AuditError {
        AuditError::Missing {
            object,
            location: self.location.clone(),
            size,
        }
    }
}

impl Http {
    async fn get(
        &self,
        rel: &str,
        limit: usize,
        location: &str,
    ) -> Result<Option<Bytes>, AuditError> {
        let read_err = |reason: String| AuditError::Read {
            object: rel.to_owned(),
            location: location.to_owned(),
            reason,
        };
        let mut request = self.client.get(format!("{}/{rel}", self.base));
        if let Some(auth) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| read_err(error_chain(&e)))?;
        let status = response.status();
        match status.as_u16() {
            200 => {}
            404 | 410 => return Ok(None),
            401 | 403 => {
                return Err(AuditError::Refused {
                    object: rel.to_owned(),
                    location: location.to_owned(),
                    status: status.as_u16(),
                })
            }
            _ => {
                let body = response.text().await.unwrap_or_default();
                let body: String = body.trim().chars().take(200).collect();
                return Err(read_err(format!("the server answered {status}: {body}")));
            }
        }
        let too_large = || AuditError::TooLarge {
            object: rel.to_owned(),
            limit,
        };
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| read_err(error_chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(body)))
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error with its causes: reqwest's own message is only the outermost one.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

// ---------------------------------------------------------------------------------
// What the customer trusts between runs.

/// What a previous verification established: the log `origin` had `size` entries with
/// root `root`. Kept by the customer, so that the next run can prove the log only
/// grew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedState {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Marks the state file's format, so a future change is detected, not misread.
const STATE_FORMAT: &str = "palisade-audit-state/v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    origin: String,
    size: u64,
    /// Base64, as in checkpoints.
    root: String,
}

impl TrustedState {
    /// Reads a state file; `None` if there is none yet (the first run).
    pub fn load(path: &Path) -> Result<Option<TrustedState>, AuditError> {
        let bad = |reason: String| AuditError::State {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(format!("cannot read it: {e}"))),
        };
        let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "it is not a state file written by palisade audit: {e}"
            ))
        })?;
        if file.format != STATE_FORMAT {
            return Err(bad(format!(
                "format {:?} is not {STATE_FORMAT:?}",
                file.format
            )));
        }
        let root = Hash::from_base64(&file.root).map_err(|e| bad(e.to_string()))?;
        Ok(Some(TrustedState {
            origin: file.origin,
            size: file.size,
            root,
        }))
    }

    /// Writes the state file atomically: a temporary file beside it is written and
    /// synced, then renamed over it, then the directory is synced. A crash leaves
    /// the old state or the new one, never a torn file.
    pub fn save(&self, path: &Path) -> Result<(), AuditError> {
        use std::io::Write as _;
        let bad = |reason: String| AuditError::State {
            path: path.to_path_buf(),
            reason,
        };
        let file = StateFile {
            format: STATE_FORMAT.to_owned(),
            origin: self.origin.clone(),
            size: self.size,
            root: self.root.to_base64(),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| bad(e.to_string()))?;
        json.push(b'\n');
        let name = path
            .file_name()
            .ok_or_else(|| bad("it names no file".to_owned()))?
            .to_string_lossy();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(bad(format!("cannot write it: {e}")));
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| bad(format!("cannot sync its directory: {e}")))
    }
}

// ---------------------------------------------------------------------------------
// Verifying the whole log.

/// A witness cosignature the checkpoint carried, from a key the policy trusts.
#[derive(Debug, Clone)]
pub struct WitnessCosignature {
    pub name: String,
    pub key: VerifierKey,
    /// When the witness cosigned (POSIX seconds).
    pub timestamp: u64,
}

/// Every entry of the log at `source`, as its current checkpoint (verified against
/// `policy`) covers them, with that checkpoint. The entries are read from their
/// bundles in order and hashed into the tree again: the root must be the
/// checkpoint's, so each entry returned is proven to be in the log at its index.
/// (All entries are held in memory: for very large logs, verify with [`verify`].)
pub async fn read_entries(
    source: &Source,
    policy: &LogPolicy,
) -> Result<(VerifiedCheckpoint, Vec<Bytes>), AuditError> {
    let verified = source.checkpoint(policy).await?;
    let size = verified.checkpoint().size();
    let mut bundles = Vec::new();
    for n in 0..size.div_ceil(WIDTH) {
        let id = TileId::in_tree(0, n, size).ok_or(AuditError::IndexOutOfRange {
            index: n * WIDTH,
            size,
        })?;
        bundles.push(source.bundle(id, size).await?.data.to_vec());
    }
    let (entries, _) = palisade_audit::log::entries(&verified, &bundles)?;
    let entries = entries.into_iter().map(Bytes::copy_from_slice).collect();
    Ok((verified, entries))
}

/// A state file is for one log: refuse another's.
fn check_state_origin(
    previous: Option<&TrustedState>,
    policy: &LogPolicy,
) -> Result<(), AuditError> {
    match previous {
        Some(prev) if prev.origin != policy.origin() => Err(AuditError::StateOrigin {
            state: prev.origin.clone(),
            log: policy.origin().to_owned(),
        }),
        _ => Ok(()),
    }
}

/// A log smaller than what was verified before was rolled back.
fn check_not_rolled_back(prev: &TrustedState, size: u64) -> Result<(), AuditError> {
    if prev.size > size {
        return Err(AuditError::RolledBack {
            origin: prev.origin.clone(),
            trusted: prev.size,
            size,
        });
    }
    Ok(())
}

/// The valid cosignatures of a verified checkpoint, as reports show them.
fn witness_cosignatures(verified: &VerifiedCheckpoint) -> Vec<WitnessCosignature> {
    verified
        .cosignatures()
        .iter()
        .map(|c| WitnessCosignature {
            name: c.witness().name().to_owned(),
            key: c.witness().clone(),
            timestamp: c.timestamp(),
        })
        .collect()
}

/// The runtime the synchronous tree code blocks on while it reads tiles
/// ([`SourceFetcher`]): only a multi-threaded one can.
fn multi_thread_handle() -> Result<tokio::runtime::Handle, AuditError> {
    tokio::runtime::Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        .ok_or(AuditError::NeedsMultiThreadRuntime)
}

/// What one look at a log found ([`watch_step`]).
#[derive(Debug, Clone)]
pub struct Watched {
    /// The log as it is now: trust it from here on.
    pub state: TrustedState,
    pub cosignatures: Vec<WitnessCosignature>,
}

/// One look at a log for `palisade audit watch`: its current checkpoint (signed by
/// the log, cosigned by the quorum) is consistent with `previous`: not smaller (a
/// rollback), not another root at the same size, and, when it grew, the consistency
/// proof computed from its tiles (authenticated against the new root) verifies. It
/// reads only the checkpoint and the tiles that proof needs, not every entry.
pub async fn watch_step(
    source: &Source,
    policy: &LogPolicy,
    previous: Option<&TrustedState>,
) -> Result<Watched, AuditError> {
    check_state_origin(previous, policy)?;
    let verified = source.checkpoint(policy).await?;
    let checkpoint = verified.checkpoint();
    let (size, root) = (checkpoint.size(), *checkpoint.root());
    if let Some(prev) = previous {
        check_not_rolled_back(prev, size)?;
        let fork = || AuditError::Fork {
            origin: prev.origin.clone(),
            trusted: prev.size,
            before: prev.root.to_base64(),
            now: root.to_base64(),
        };
        if prev.size == size {
            if prev.root != root {
                return Err(fork());
            }
        } else if prev.size > 0 {
            let handle = multi_thread_handle()?;
            let fetcher = SourceFetcher {
                source,
                size,
                handle,
            };
            let reader = TileHashReader::new(size, root, &fetcher);
            let proof =
                palisade_tlog::tree::consistency_proof(prev.size, size, &reader).map_err(|e| {
                    AuditError::ProofTiles {
                        reason: e.to_string(),
                    }
                })?;
            palisade_tlog::tree::verify_consistency(prev.size, size, &prev.root, &root, &proof)
                .map_err(|_| fork())?;
        }
    }
    Ok(Watched {
        state: TrustedState {
            origin: policy.origin().to_owned(),
            size,
            root,
        },
        cosignatures: witness_cosignatures(&verified),
    })
}

/// How many distinct witnesses cosigned within `max_age_secs` of `now` (POSIX
/// seconds), not in the future beyond a minute of clock skew.
pub fn fresh_witnesses(cosignatures: &[WitnessCosignature], now: i64, max_age_secs: u64) -> usize {
    let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
    let mut fresh: Vec<[u8; 32]> = cosignatures
        .iter()
        .filter(|c| {
            let at = i64::try_from(c.timestamp).unwrap_or(i64::MAX);
            at >= now.saturating_sub(max_age) && at <= now.saturating_add(60)
        })
        .map(|c| c.key.public_key())
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    fresh.len()
}

/// What a successful [`verify`] established.
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Entries read and hashed: all of them.
    pub entries_checked: u64,
    /// Hash tiles compared, every level, full and partial.
    pub tiles_checked: u64,
    /// Entry bundles read.
    pub bundles_checked: u64,
    pub cosignatures: Vec<WitnessCosignature>,
    /// The previous state this log was proven consistent with.
    pub consistent_with: Option<TrustedState>,
    /// What to trust from now on.
    pub state: TrustedState,
}

/// Verifies the whole log at `source` against `policy` and, if given, against the
/// state of a previous run. `progress(done, total)` is called after each bundle with
/// the number of entries checked so far. See the module docs for the checks.
pub async fn verify<P: FnMut(u64, u64)>(
    source: &Source,
    policy: &LogPolicy,
    previous: Option<&TrustedState>,
    mut progress: P,
) -> Result<AuditReport, AuditError> {
    check_state_origin(previous, policy)?;

    // 1. The checkpoint.
    let verified = source.checkpoint(policy).await?;
    let checkpoint = verified.checkpoint();
    let size = checkpoint.size();
    if let Some(prev) = previous {
        check_not_rolled_back(prev, size)?;
    }

    // 2. Every bundle and tile, in order, read a few bundles ahead.
    let mut rebuild = Rebuild::new(size, previous.map(|p| p.size));
    let mut segments = futures::stream::iter(0..size.div_ceil(WIDTH))
        .map(|n| read_segment(source, n, size))
        .buffered(PREFETCH);
    while let Some(segment) = segments.next().await {
        rebuild.add(&segment?, source).await?;
        progress(rebuild.frontier.size(), size);
    }
    rebuild.finish(source).await?;

    // 3. The root.
    let computed = rebuild.frontier.root();
    if computed != *checkpoint.root() {
        return Err(AuditError::RootMismatch {
            size,
            computed: computed.to_base64(),
            checkpoint: checkpoint.root().to_base64(),
        });
    }

    // 4. Consistency with what was verified before. Checked last, once the log is
    // known to be exactly what its key signed: a mismatch is then a fork, not damage.
    if let Some(prev) = previous {
        let then = rebuild.root_at_mark.unwrap_or(computed);
        if then != prev.root {
            return Err(AuditError::Fork {
                origin: prev.origin.clone(),
                trusted: prev.size,
                before: prev.root.to_base64(),
                now: then.to_base64(),
            });
        }
    }

    let state = TrustedState {
        origin: checkpoint.origin().to_owned(),
        size,
        root: computed,
    };
    Ok(AuditReport {
        origin: state.origin.clone(),
        size,
        root: computed,
        entries_checked: rebuild.frontier.size(),
        tiles_checked: rebuild.tiles_checked,
        bundles_checked: rebuild.bundles_checked,
        cosignatures: witness_cosignatures(&verified),
        consistent_with: previous.cloned(),
        state,
    })
}

/// One entry bundle as read, not yet checked.
struct Bundle {
    /// The bundle's coordinates in the tree being verified.
    id: TileId,
    /// The path read (the full bundle when it stands in for a deleted partial one).
    object: String,
    data: Bytes,
    from_full: bool,
}

/// One entry bundle and the level-0 tile of the same index.
struct Segment {
    bundle: Bundle,
    tile: Bytes,
}

async fn read_segment(source: &Source, n: u64, size: u64) -> Result<Segment, AuditError> {
    // n < ceil(size / 256), so the tile exists.
    let id =
        TileId::in_tree(0, n, size).ok_or_else(|| source.missing(format!("tile/0/{n}"), size))?;
    let (bundle, tile) =
        futures::future::try_join(source.bundle(id, size), source.tile(id, size)).await?;
    Ok(Segment { bundle, tile })
}

/// The tree rebuilt from the entries, with the tile being filled at each level.
struct Rebuild {
    size: u64,
    frontier: Frontier,
    /// Hashes of the current tile of level L (tree level 8·L) not yet compared.
    rows: Vec<Vec<Hash>>,
    /// The previously trusted size, whose root is recorded on the way.
    mark: Option<u64>,
    root_at_mark: Option<Hash>,
    tiles_checked: u64,
    bundles_checked: u64,
    spare: Vec<Hash>,
}

impl Rebuild {
    fn new(size: u64, mark: Option<u64>) -> Rebuild {
        Rebuild {
            size,
            frontier: Frontier::new(),
            rows: Vec::new(),
            mark,
            root_at_mark: (mark == Some(0)).then(empty_root),
            tiles_checked: 0,
            bundles_checked: 0,
            spare: Vec::new(),
        }
    }

    /// Hashes the entries of one bundle into the tree, comparing every tile they
    /// complete; the level-0 tile of the last, partial bundle is compared at once.
    async fn add(&mut self, segment: &Segment, source: &Source) -> Result<(), AuditError> {
        let bundle = &segment.bundle;
        let want = usize::from(bundle.id.width());
        let entries = parse_bundle(&bundle.data).map_err(|reason| AuditError::BadBundle {
            object: bundle.object.clone(),
            reason,
        })?;
        let expected_count = if bundle.from_full {
            usize::from(TILE_WIDTH)
        } else {
            want
        };
        if entries.len() != expected_count {
            return Err(AuditError::BundleWidth {
                object: bundle.object.clone(),
                want: expected_count,
                got: entries.len(),
                size: self.size,
            });
        }
        self.bundles_checked += 1;
        for entry in entries.iter().take(want) {
            let n = self.frontier.size();
            check_entry(n, entry)?;
            let stored = self
                .frontier
                .append(leaf_hash(entry))
                .map_err(|e| AuditError::SizeTooLarge { size: e.size })?;
            if Some(self.frontier.size()) == self.mark {
                self.root_at_mark = Some(self.frontier.root());
            }
            // stored[k] is the hash at tree level k completed by leaf n; a tile of
            // level L holds tree level 8·L.
            for (level, hash) in stored.iter().step_by(usize::from(TILE_HEIGHT)).enumerate() {
                let level = u8::try_from(level).unwrap_or(u8::MAX);
                let row = self.row(level);
                row.push(*hash);
                if row.len() == usize::from(TILE_WIDTH) {
                    let index = (n >> (u32::from(level) * u32::from(TILE_HEIGHT))) / WIDTH;
                    let id = TileId::new(level, index, TILE_WIDTH)
                        .map_err(|_| AuditError::SizeTooLarge { size: self.size })?;
                    if level == 0 {
                        self.compare(id, &segment.tile)?;
                    } else {
                        let data = source.tile(id, self.size).await?;
                        self.compare(id, &data)?;
                    }
                }
            }
        }
        if !bundle.id.is_full() {
            self.compare(bundle.id, &segment.tile)?;
        }
        Ok(())
    }

    /// Compares the partial tiles above level 0 once every entry is in.
    async fn finish(&mut self, source: &Source) -> Result<(), AuditError> {
        for level in 1..self.rows.len() {
            let level = u8::try_from(level).unwrap_or(u8::MAX);
            let index = (self.size >> (u32::from(level) * u32::from(TILE_HEIGHT))) / WIDTH;
            let width = self.rows.get(usize::from(level)).map_or(0, Vec::len);
            if width == 0 {
                continue;
            }
            let width = u16::try_from(width).unwrap_or(TILE_WIDTH);
            let id = TileId::new(level, index, width)
                .map_err(|_| AuditError::SizeTooLarge { size: self.size })?;
            let data = source.tile(id, self.size).await?;
            self.compare(id, &data)?;
        }
        Ok(())
    }

    /// The hashes gathered so far for the current tile of `level`.
    fn row(&mut self, level: u8) -> &mut Vec<Hash> {
        let level = usize::from(level);
        if self.rows.len() <= level {
            self.rows.resize_with(level + 1, Vec::new);
        }
        match self.rows.get_mut(level) {
            Some(row) => row,
            // Unreachable after the resize; keeps indexing out of the input path.
            None => &mut self.spare,
        }
    }

    /// Checks that tile `id` as read holds exactly the hashes computed for it, then
    /// forgets them.
    fn compare(&mut self, id: TileId, data: &[u8]) -> Result<(), AuditError> {
        let computed = std::mem::take(self.row(id.level()));
        let mut stored = data.chunks_exact(HASH_SIZE);
        for (position, want) in computed.iter().enumerate() {
            let got = stored.next().and_then(Hash::from_slice);
            if got.as_ref() != Some(want) {
                return Err(self.mismatch(id, position, got, want));
            }
        }
        if computed.len() != usize::from(id.width()) || stored.next().is_some() {
            return Err(AuditError::TileLength {
                object: id.path(),
                want: computed.len() * HASH_SIZE,
                got: data.len(),
                size: self.size,
            });
        }
        self.tiles_checked += 1;
        Ok(())
    }

    fn mismatch(
        &self,
        id: TileId,
        position: usize,
        stored: Option<Hash>,
        computed: &Hash,
    ) -> AuditError {
        let shift = u32::from(id.level()) * u32::from(TILE_HEIGHT);
        let hash_index = id
            .index()
            .saturating_mul(WIDTH)
            .saturating_add(position as u64);
        let first = hash_index.checked_shl(shift).unwrap_or(u64::MAX);
        let end = (hash_index.saturating_add(1))
            .checked_shl(shift)
            .unwrap_or(u64::MAX);
        let covers = if id.level() == 0 {
            format!("entry {first}")
        } else {
            format!("entries {first} to {}", end.saturating_sub(1))
        };
        // At level 0 either the tile or the bundle was changed; above it, the tiles
        // below already matched the entries, so this tile is the one.
        let blame = if id.level() == 0 {
            let bundle = TileId::in_tree(0, id.index(), self.size)
                .map(|b| b.entries_path())
                .unwrap_or_default();
            format!("the tile or the entry bundle {bundle} was altered")
        } else {
            "the tile was altered (the entries and the tiles below it agree)".to_owned()
        };
        AuditError::TileMismatch(Box::new(TileMismatch {
            object: id.path(),
            position,
            covers,
            blame,
            stored: stored.map_or_else(|| "missing".to_owned(), |h| h.to_base64()),
            computed: computed.to_base64(),
        }))
    }
}

// ---------------------------------------------------------------------------------
// Offline proofs.

/// A proof file for one entry, with the entry it proves.
#[derive(Debug, Clone)]
pub struct ProducedProof {
    pub proof: TlogProof,
    /// The entry, read from its bundle and proven by `proof`.
    pub entry: Bytes,
    pub checkpoint: VerifiedCheckpoint,
}

/// Builds a C2SP tlog-proof for entry `index` against the log's current checkpoint,
/// once the checkpoint meets `policy`. The tiles the proof is built from are
/// authenticated against the checkpoint's root, and the entry read from its bundle
/// must verify with the proof before it is returned. Needs tokio's multi-threaded
/// runtime (the tree code reads tiles synchronously).
pub async fn produce_proof(
    source: &Source,
    policy: &LogPolicy,
    index: u64,
) -> Result<ProducedProof, AuditError> {
    Ok(produce_proofs(source, policy, index, None).await?.0)
}

/// [`produce_proof`], plus a consistency proof from the tree of `from` leaves to the
/// same checkpoint (what an agent that saw size `from` needs to accept it).
pub async fn produce_proofs(
    source: &Source,
    policy: &LogPolicy,
    index: u64,
    from: Option<u64>,
) -> Result<(ProducedProof, Vec<Hash>), AuditError> {
    let verified = source.checkpoint(policy).await?;
    let size = verified.checkpoint().size();
    if index >= size {
        return Err(AuditError::IndexOutOfRange { index, size });
    }
    let handle = multi_thread_handle()?;
    let fetcher = SourceFetcher {
        source,
        size,
        handle,
    };
    let reader = TileHashReader::new(size, *verified.checkpoint().root(), &fetcher);
    let proof = TlogProof::produce(index, verified.note().clone(), None, &reader).map_err(|e| {
        AuditError::ProofTiles {
            reason: e.to_string(),
        }
    })?;
    let consistency = match from {
        Some(old) if old > size => {
            return Err(AuditError::ProofTiles {
                reason: format!(
                    "the log's checkpoint has size {size}, smaller than the size {old} seen before"
                ),
            })
        }
        Some(old) => palisade_tlog::tree::consistency_proof(old, size, &reader).map_err(|e| {
            AuditError::ProofTiles {
                reason: e.to_string(),
            }
        })?,
        None => Vec::new(),
    };

    let id = TileId::in_tree(0, index / WIDTH, size)
        .ok_or(AuditError::IndexOutOfRange { index, size })?;
    let bundle = source.bundle(id, size).await?;
    let entries = parse_bundle(&bundle.data).map_err(|reason| AuditError::BadBundle {
        object: bundle.object.clone(),
        reason,
    })?;
    let position = (index % WIDTH) as usize;
    let entry = entries
        .get(position)
        .ok_or_else(|| AuditError::BundleWidth {
            object: bundle.object.clone(),
            want: usize::from(id.width()),
            got: entries.len(),
            size,
        })?;
    let checkpoint = proof
        .verify(entry, policy)
        .map_err(|reason| AuditError::EntryNotProven {
            index,
            object: bundle.object.clone(),
            reason,
        })?;
    Ok((
        ProducedProof {
            entry: Bytes::copy_from_slice(entry),
            proof,
            checkpoint,
        },
        consistency,
    ))
}

/// The index of the first entry at or after `from` for which `matches` holds, in the
/// log as its current checkpoint (verified against `policy`) covers it; `None` if no
/// entry up to that size does. The entries are read from their bundles without
/// inclusion proofs: this answers a writer that needs to know whether an append it
/// lost the answer to landed, before it appends again.
pub async fn find_entry_where(
    source: &Source,
    policy: &LogPolicy,
    from: u64,
    matches: impl Fn(&[u8]) -> bool,
) -> Result<Option<u64>, AuditError> {
    let size = source.checkpoint(policy).await?.checkpoint().size();
    let mut index = from - from % WIDTH;
    while index < size {
        let id = TileId::in_tree(0, index / WIDTH, size)
            .ok_or(AuditError::IndexOutOfRange { index, size })?;
        let bundle = source.bundle(id, size).await?;
        let entries = parse_bundle(&bundle.data).map_err(|reason| AuditError::BadBundle {
            object: bundle.object.clone(),
            reason,
        })?;
        for (i, e) in entries.iter().enumerate() {
            let at = index + i as u64;
            if at >= from && at < size && matches(e) {
                return Ok(Some(at));
            }
        }
        index += WIDTH;
    }
    Ok(None)
}

/// Reads tiles for the synchronous tree code, blocking this worker thread on the
/// asynchronous source (tokio's `block_in_place`).
struct SourceFetcher<'a> {
    source: &'a Source,
    size: u64,
    handle: tokio::runtime::Handle,
}

impl TileFetcher for SourceFetcher<'_> {
    type Error = AuditError;

    fn fetch_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, AuditError> {
        let reads = tiles.iter().map(|t| self.source.tile(*t, self.size));
        let data = tokio::task::block_in_place(|| {
            self.handle.block_on(futures::future::try_join_all(reads))
        })?;
        Ok(data.into_iter().map(|d| d.to_vec()).collect())
    }
}

/// What a proof file is checked against: the entry itself, or only its RFC 6962
/// leaf hash.
#[derive(Debug, Clone, Copy)]
pub enum ProofSubject<'a> {
    Entry(&'a [u8]),
    LeafHash(Hash),
}

/// A proof file that verified.
#[derive(Debug, Clone)]
pub struct CheckedProof {
    pub index: u64,
    pub checkpoint: VerifiedCheckpoint,
}

/// Checks a tlog-proof file offline: its checkpoint must meet `policy` and its
/// inclusion proof must place `subject` at the index the file names.
pub fn check_proof(
    file: &[u8],
    subject: ProofSubject<'_>,
    policy: &LogPolicy,
) -> Result<CheckedProof, AuditError> {
    let proof = TlogProof::parse(file).map_err(AuditError::Proof)?;
    if let ProofSubject::Entry(entry) = subject {
        check_entry(proof.index(), entry)?;
    }
    let checkpoint = match subject {
        ProofSubject::Entry(entry) => proof.verify(entry, policy),
        ProofSubject::LeafHash(leaf) => proof.verify_leaf_hash(&leaf, policy),
    }
    .map_err(AuditError::Proof)?;
    Ok(CheckedProof {
        index: proof.index(),
        checkpoint,
    })
}
