//! The witness service: C2SP tlog-witness v1.0.0 `POST /add-checkpoint` over mutual TLS
//! (`palisade witness serve`).
//!
//! A witness remembers, for every log it witnesses, the last checkpoint it cosigned,
//! and cosigns a new one only if the log signed it and it is consistent with that
//! one. A log that shows two parties two different histories therefore cannot get
//! both cosigned by the same honest witness (docs/threat-model.md, C7).
//!
//! The request pipeline, top to bottom in [`add_checkpoint_handler`] and
//! [`Witness::add_checkpoint`]:
//!
//! 1. **Caller**: the TLS handshake admits only certificates of the Palisade CA with a
//!    calling role; the route then requires the `log` role. Anyone else gets 403 with
//!    a text body saying why ([`LogCaller`]).
//! 2. **Body**: at most [`MAX_BODY_BYTES`] (413 beyond), parsed into an
//!    [`AddCheckpointRequest`] (400 when malformed).
//! 3. **Decision, atomically and durably**: under the origin's lock, read the stored
//!    [`WitnessState`], let [`palisade_tlog::witness::add_checkpoint`] decide, then
//!    `compare_and_swap` the new state (expected = the bytes just read). The state
//!    store commits with fsync before the swap returns, so the cosignature never
//!    leaves before the state that forbids a conflicting one is on disk. A lost swap
//!    (someone else changed the state) is answered 409 with the size now stored. A
//!    request for the tree already stored (a log refreshing its cosignatures) writes
//!    nothing: the state is the witness's own redb file, so what was read under the
//!    lock is what is stored.
//!    The decision runs in its own task, so a client hanging up cannot cut it short.
//! 4. **Answer**: 200 with the cosignature line, or the spec's status for the
//!    [`Refusal`] (409 carries the stored size as `text/x.tlog.size`).
//!
//! Stored state: namespace [`STATE_NAMESPACE`], key = origin, value = 8-byte
//! big-endian size ‖ 32-byte root hash.
//!
//! What this does not protect against: a log that several witnesses never hear from
//! (that is the verifier's quorum policy), or an attacker who can write the state
//! file (they can roll the witness back; keep it on a disk only the witness uses).

use crate::https::{self, Peer};
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use palisade_core::config::{check_listen, FieldError, ProcessConfig};
use palisade_pki::{ClientAuth, Role};
use palisade_state::{Namespace, RedbStore, StateError, StateStore};
use palisade_tlog::hash::Hash;
use palisade_tlog::note::{KeyError, KeyType, SignerKey, VerifierKey};
use palisade_tlog::witness::{add_checkpoint, AddCheckpointRequest, Refusal, WitnessState};
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Largest `add-checkpoint` body accepted (a checkpoint, 63 proof lines and the
/// log's signatures fit in a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Where the witness keeps its per-origin state.
pub const STATE_NAMESPACE: Namespace = Namespace::new("witness");

/// Bytes of one stored state: size (u64, big-endian) ‖ root hash.
const STATE_LEN: usize = 8 + 32;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

fn default_listen() -> String {
    "127.0.0.1:7402".to_owned()
}

/// The witness's configuration file (`palisade witness serve --config F`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Address to serve HTTPS on; default `127.0.0.1:7402`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The witness's cosignature private key (`PRIVATE+KEY+…`, type 0x04), as written
    /// by `palisade witness keygen`. Secret: `PALISADE_WITNESS_KEY_FILE` overrides it.
    pub key_file: PathBuf,
    /// The redb file holding the last cosigned checkpoint of every log.
    pub state_file: PathBuf,
    pub tls: TlsFiles,
    /// The logs this witness cosigns for.
    #[serde(rename = "log")]
    pub logs: Vec<WitnessedLogConfig>,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this loopback
    /// address; none by default.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

pub use crate::config::TlsFiles;

/// One `[[log]]` entry: a log's origin (or a prefix of origins) and the verifier key
/// of its checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessedLogConfig {
    /// The log's origin: the first line of its checkpoints.
    #[serde(default)]
    pub origin: Option<String>,
    /// Instead of `origin`: every origin that starts with this prefix and is signed
    /// by `key`. For a log service whose logs come and go with the inventory
    /// (`<base_origin>/`): a new cluster's log is witnessed without a restart. Each
    /// origin still has its own state and consistency; an exact `origin` entry wins.
    #[serde(default)]
    pub origin_prefix: Option<String>,
    /// The log's Ed25519 verifier key text (`<name>+<hex id>+<base64>`). Its name
    /// need not equal the origin.
    pub key: String,
}

/// The witnessed logs, checked: distinct origins and prefixes, each with an Ed25519
/// key.
#[derive(Debug, Clone)]
pub struct WitnessedLogs {
    exact: Vec<(String, VerifierKey)>,
    prefixes: Vec<(String, VerifierKey)>,
}

impl WitnessedLogs {
    /// Checks a list of `(origin, key)`; errors name the offending `log[i]` field.
    pub fn new(logs: Vec<(String, VerifierKey)>) -> Result<WitnessedLogs, FieldError> {
        let marked = logs.into_iter().map(|(o, k)| (false, o, k)).collect();
        WitnessedLogs::checked(marked)
    }

    /// Checks `(is a prefix, origin or prefix, key)` entries.
    fn checked(logs: Vec<(bool, String, VerifierKey)>) -> Result<WitnessedLogs, FieldError> {
        if logs.is_empty() {
            return Err(FieldError::new(
                "log",
                "at least one [[log]] (origin and key) is needed: a witness with no logs cosigns nothing",
            ));
        }
        let mut seen = HashMap::new();
        for (i, (prefix, origin, key)) in logs.iter().enumerate() {
            check_origin(i, origin)?;
            if *prefix && !origin.ends_with('/') {
                return Err(FieldError::new(
                    format!("log[{i}].origin_prefix"),
                    format!("{origin:?} must end with '/': a prefix names the logs below one path"),
                ));
            }
            if key.key_type() != KeyType::Ed25519 {
                return Err(FieldError::new(
                    format!("log[{i}].key"),
                    format!(
                        "key {} is a {:?} key; a log signs checkpoints with an Ed25519 (type 0x01) key",
                        key.name(),
                        key.key_type()
                    ),
                ));
            }
            if let Some(first) = seen.insert((*prefix, origin.as_str()), i) {
                let field = if *prefix { "origin_prefix" } else { "origin" };
                return Err(FieldError::new(
                    format!("log[{i}].{field}"),
                    format!("{origin:?} is already listed as log[{first}]"),
                ));
            }
        }
        let (prefixes, exact): (Vec<_>, Vec<_>) = logs.into_iter().partition(|(p, _, _)| *p);
        let strip =
            |v: Vec<(bool, String, VerifierKey)>| v.into_iter().map(|(_, o, k)| (o, k)).collect();
        Ok(WitnessedLogs {
            exact: strip(exact),
            prefixes: strip(prefixes),
        })
    }

    /// Parses the `[[log]]` entries of a configuration.
    pub fn from_config(logs: &[WitnessedLogConfig]) -> Result<WitnessedLogs, FieldError> {
        let parsed = logs
            .iter()
            .enumerate()
            .map(|(i, log)| {
                let (prefix, origin) = match (&log.origin, &log.origin_prefix) {
                    (Some(o), None) => (false, o.clone()),
                    (None, Some(p)) => (true, p.clone()),
                    _ => {
                        return Err(FieldError::new(
                            format!("log[{i}]"),
                            "give exactly one of origin and origin_prefix",
                        ))
                    }
                };
                VerifierKey::parse(log.key.trim())
                    .map(|key| (prefix, origin, key))
                    .map_err(|e| FieldError::new(format!("log[{i}].key"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        WitnessedLogs::checked(parsed)
    }

    /// The exact origins listed.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().map(|(o, _)| o.as_str())
    }
}

/// An origin is the first line of a checkpoint (tlog-checkpoint) and a state key.
fn check_origin(i: usize, origin: &str) -> Result<(), FieldError> {
    let field = || format!("log[{i}].origin");
    if origin.is_empty() {
        return Err(FieldError::new(field(), "must not be empty"));
    }
    if origin.chars().any(char::is_control) {
        return Err(FieldError::new(
            field(),
            format!("{origin:?} contains a control character"),
        ));
    }
    if origin.len() > palisade_state::MAX_KEY_BYTES {
        return Err(FieldError::new(
            field(),
            format!(
                "is {} bytes; at most {} are supported",
                origin.len(),
                palisade_state::MAX_KEY_BYTES
            ),
        ));
    }
    Ok(())
}

impl ProcessConfig for WitnessConfig {
    const PROCESS: &'static str = "witness";

    fn validate(&self) -> Result<(), FieldError> {
        check_listen("listen", &self.listen)?;
        crate::metrics::check_metrics_listen(self.metrics_listen.as_deref())?;
        WitnessedLogs::from_config(&self.logs)?;
        Ok(())
    }

    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        vec![
            ("key_file", &mut self.key_file),
            ("state_file", &mut self.state_file),
            ("tls.ca", &mut self.tls.ca),
            ("tls.cert", &mut self.tls.cert),
            ("tls.key", &mut self.tls.key),
        ]
    }

    fn secret_fields() -> &'static [&'static str] {
        &["key_file", "tls.key"]
    }
}

/// Why the witness could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("cannot read the witness key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to use the witness key {path}: its mode is {mode:04o}, so other users can \
         read it; run `chmod 600 {path}`"
    )]
    KeyReadableByOthers { path: PathBuf, mode: u32 },
    #[error("the witness key {path} is not a signed-note private key: {reason}")]
    BadKey { path: PathBuf, reason: KeyError },
    #[error(
        "the witness key {name} is a {key_type:?} key; a witness signs with a cosignature \
         (type 0x04) key: create one with `palisade witness keygen`"
    )]
    NotACosignatureKey { name: String, key_type: KeyType },
    #[error("configuration field `{}`: {}", .0.field, .0.problem)]
    Config(FieldError),
    #[error("witness state: {0}")]
    State(#[from] StateError),
    #[error("stored witness state for {origin:?} is {len} bytes, not {STATE_LEN}: the state file is damaged")]
    CorruptState { origin: String, len: usize },
    #[error("witness TLS configuration: {0}")]
    Tls(#[from] palisade_pki::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serving HTTPS failed: {0}")]
    Serve(std::io::Error),
}

/// One witnessed log: its keys, and the lock that serialises its check-and-persist.
/// How many locks serialise the decisions of the origins (by a hash of the origin):
/// one origin's requests are decided one after the other, a bounded set of locks
/// however many origins a prefix admits.
const ORIGIN_LOCKS: usize = 256;

/// The witness: its cosignature key, the logs it witnesses and its durable state.
pub struct Witness {
    key: SignerKey,
    /// Exact origins and their keys.
    logs: HashMap<String, Vec<VerifierKey>>,
    /// Origin prefixes and their keys, longest first.
    prefixes: Vec<(String, Vec<VerifierKey>)>,
    locks: Box<[tokio::sync::Mutex<()>]>,
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("key", &self.key)
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .field(
                "prefixes",
                &self.prefixes.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The outcome of one `add-checkpoint`, ready to become an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the cosignature line(s).
    Cosigned(String),
    Refused(Refusal),
    /// 500: the state could not be read or written; nothing was cosigned.
    Failed(String),
}

impl Witness {
    /// A witness signing with `key` (a cosignature key) for `logs`, keeping its state
    /// in `store`.
    pub fn new(
        key: SignerKey,
        logs: WitnessedLogs,
        store: Arc<dyn StateStore>,
    ) -> Result<Witness, WitnessError> {
        if key.key_type() != KeyType::Cosignature {
            return Err(WitnessError::NotACosignatureKey {
                name: key.name().to_owned(),
                key_type: key.key_type(),
            });
        }
        let mut prefixes: Vec<(String, Vec<VerifierKey>)> = logs
            .prefixes
            .into_iter()
            .map(|(p, k)| (p, vec![k]))
            .collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(Witness {
            key,
            logs: logs.exact.into_iter().map(|(o, k)| (o, vec![k])).collect(),
            prefixes,
            locks: (0..ORIGIN_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            store,
        })
    }

    /// The keys that sign `origin`'s checkpoints: its own entry, else the longest
    /// prefix it starts with.
    fn keys_of(&self, origin: &str) -> Option<&[VerifierKey]> {
        if let Some(keys) = self.logs.get(origin) {
            return Some(keys);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| origin.starts_with(p.as_str()) && origin.len() > p.len())
            .map(|(_, k)| k.as_slice())
    }

    /// The lock under which `origin`'s requests are decided.
    fn lock_of(&self, origin: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::Hasher;
        // Fixed keys: the same origin always maps to the same lock.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(origin.as_bytes());
        &self.locks[(h.finish() as usize) % self.locks.len()]
    }

    /// The key that verifies this witness's cosignatures.
    pub fn verifier(&self) -> VerifierKey {
        self.key.verifier()
    }

    /// The last checkpoint cosigned for `origin`, if any.
    pub async fn stored(&self, origin: &str) -> Result<Option<WitnessState>, WitnessError> {
        let bytes = self.store.get(STATE_NAMESPACE, origin).await?;
        bytes.map(|b| decode_state(origin, &b)).transpose()
    }

    /// tlog-witness `add-checkpoint` for a parsed request: decide and persist
    /// atomically (see the module documentation), then answer.
    pub async fn add_checkpoint(&self, request: &AddCheckpointRequest) -> Answer {
        let origin = request.origin();
        let Some(keys) = self.keys_of(origin) else {
            return refuse(
                request,
                None,
                Refusal::UnknownOrigin {
                    origin: origin.to_owned(),
                },
            );
        };
        // Held across read → decide → swap, so that two requests for one log are
        // decided one after the other.
        let _guard = self.lock_of(origin).lock().await;
        let previous = match self.store.get(STATE_NAMESPACE, origin).await {
            Ok(bytes) => bytes,
            Err(e) => return failed(request, format!("cannot read the witness state: {e}")),
        };
        let stored = match previous
            .as_deref()
            .map(|b| decode_state(origin, b))
            .transpose()
        {
            Ok(stored) => stored,
            Err(e) => return failed(request, e.to_string()),
        };
        let cosigned = match unix_now()
            .and_then(|now| add_checkpoint(request, Some(keys), stored, &self.key, now))
        {
            Ok(cosigned) => cosigned,
            Err(refusal) => return refuse(request, stored, refusal),
        };
        // The same tree as stored (a log refreshing its cosignatures): nothing new to
        // remember, so nothing is written. This witness's state is its own redb file,
        // under this origin's lock, so what was read is still what is stored.
        let swapped = if stored == Some(cosigned.state) {
            Ok(true)
        } else {
            self.store
                .compare_and_swap(
                    STATE_NAMESPACE,
                    origin,
                    previous,
                    Some(encode_state(&cosigned.state)),
                )
                .await
        };
        match swapped {
            Ok(true) => {
                // A log that did not grow is only refreshing its cosignatures (every
                // minute per log when idle): not worth a line each.
                if stored.is_some_and(|s| s.size == cosigned.state.size) {
                    tracing::debug!(
                        origin,
                        size = cosigned.state.size,
                        outcome = "cosigned",
                        "add-checkpoint"
                    );
                } else {
                    tracing::info!(
                        origin,
                        old = request.old_size(),
                        new = cosigned.state.size,
                        stored = ?stored.map(|s| s.size),
                        outcome = "cosigned",
                        "add-checkpoint"
                    );
                }
                crate::metrics::METRICS.cosigned(origin);
                Answer::Cosigned(cosigned.response_body())
            }
            Ok(false) => {
                // Someone else wrote first: report what is stored now, as a stale
                // old size would be.
                let now_stored = match self.stored(origin).await {
                    Ok(s) => s,
                    Err(e) => return failed(request, e.to_string()),
                };
                let refusal = Refusal::StaleOldSize {
                    old: request.old_size(),
                    stored: now_stored.map_or(0, |s| s.size),
                };
                refuse(request, now_stored, refusal)
            }
            Err(e) => failed(request, format!("cannot store the witness state: {e}")),
        }
    }
}

fn refuse(
    request: &AddCheckpointRequest,
    stored: Option<WitnessState>,
    refusal: Refusal,
) -> Answer {
    let (origin, old, new) = (
        request.origin(),
        request.old_size(),
        request.checkpoint().size(),
    );
    let (stored, status) = (stored.map(|s| s.size), refusal.status());
    crate::metrics::METRICS.refused(match &refusal {
        Refusal::Malformed(_) => "malformed",
        Refusal::UnknownOrigin { .. } => "unknown-origin",
        Refusal::BadSignature { .. } => "bad-signature",
        Refusal::OldSizeAboveNew { .. } => "old-size-above-new",
        Refusal::StaleOldSize { .. } => "stale-old-size",
        Refusal::RootConflict { .. } => "root-conflict",
        Refusal::BadProof { .. } => "bad-proof",
        Refusal::Misconfigured { .. } => "misconfigured",
    });
    // A stale old size is routine (a log that does not know what this witness holds
    // retries with the size in the answer); every other refusal is worth a look.
    if matches!(refusal, Refusal::StaleOldSize { .. }) {
        tracing::info!(origin, old, new, ?stored, outcome = "refused", status, reason = %refusal, "add-checkpoint");
    } else {
        tracing::warn!(origin, old, new, ?stored, outcome = "refused", status, reason = %refusal, "add-checkpoint");
    }
    Answer::Refused(refusal)
}

fn failed(request: &AddCheckpointRequest, reason: String) -> Answer {
    tracing::error!(
        origin = request.origin(),
        old = request.old_size(),
        new = request.checkpoint().size(),
        outcome = "failed",
        %reason,
        "add-checkpoint"
    );
    crate::metrics::METRICS.refused("failed");
    Answer::Failed(reason)
}

fn unix_now() -> Result<u64, Refusal> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| Refusal::Misconfigured {
            reason: "the system clock is before 1970".to_owned(),
        })
}

fn encode_state(state: &WitnessState) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STATE_LEN);
    bytes.extend_from_slice(&state.size.to_be_bytes());
    bytes.extend_from_slice(&state.root.0);
    bytes
}

fn decode_state(origin: &str, bytes: &[u8]) -> Result<WitnessState, WitnessError> {
    let corrupt = || WitnessError::CorruptState {
        origin: origin.to_owned(),
        len: bytes.len(),
    };
    let (size, root) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let root = Hash::from_slice(root).ok_or_else(corrupt)?;
    Ok(WitnessState {
        size: u64::from_be_bytes(*size),
        root,
    })
}

/// The witness's HTTP API: `POST /add-checkpoint` (log callers only) and
/// `GET /healthz`. Serve it with [`https::serve`], which supplies the [`Peer`].
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint_handler))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(witness)
}

/// A caller holding a `log` certificate. Anyone else is refused with 403 before the
/// body is read.
#[derive(Debug, Clone)]
pub struct LogCaller(pub Peer);

impl<S: Send + Sync> FromRequestParts<S> for LogCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let peer = parts.extensions.get::<Peer>().cloned();
        match peer {
            Some(peer) if peer.is(&[Role::Log]) => Ok(LogCaller(peer)),
            Some(peer) => {
                let who = match &peer.identity {
                    Some((role, name)) => {
                        format!("a {role} certificate (name {})", name.as_str())
                    }
                    None => "no client certificate".to_owned(),
                };
                tracing::warn!(peer = %peer.addr, caller = %who, outcome = "forbidden", "add-checkpoint");
                Err(text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "add-checkpoint is only for logs: present a certificate with role log \
                         (this caller presented {who})\n"
                    ),
                ))
            }
            None => Err(text(
                StatusCode::FORBIDDEN,
                "add-checkpoint is only for logs: the caller's certificate is unknown\n".to_owned(),
            )),
        }
    }
}

async fn add_checkpoint_handler(
    State(witness): State<Arc<Witness>>,
    LogCaller(peer): LogCaller,
    body: Bytes,
) -> Response {
    let request = match AddCheckpointRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(peer = %peer.addr, outcome = "malformed", reason = %e, "add-checkpoint");
            return refusal_response(&Refusal::Malformed(e));
        }
    };
    // In its own task: once begun, a decision runs to its end even if the caller
    // hangs up, so the state write and the lock are never abandoned half-way.
    let decided = tokio::spawn(async move { witness.add_checkpoint(&request).await }).await;
    match decided {
        Ok(Answer::Cosigned(lines)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_PLAIN)], lines).into_response()
        }
        Ok(Answer::Refused(refusal)) => refusal_response(&refusal),
        Ok(Answer::Failed(reason)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the witness cannot decide now: {reason}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the witness cannot decide now: {e}\n"),
        ),
    }
}

/// The tlog-witness answer to a refusal: its status, and its body (the stored size
/// for 409; otherwise the reason as text).
fn refusal_response(refusal: &Refusal) -> Response {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match refusal.body() {
        Some((content_type, body)) => {
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => text(status, format!("{refusal}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT_PLAIN)], body).into_response()
}

/// Reads the witness's cosignature key, refusing one that others can read.
pub fn load_key(path: &std::path::Path) -> Result<SignerKey, WitnessError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| WitnessError::ReadKey {
                path: path.to_path_buf(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(WitnessError::KeyReadableByOthers {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| WitnessError::ReadKey {
        path: path.to_path_buf(),
        source,
    })?;
    let key = SignerKey::parse(text.trim()).map_err(|reason| WitnessError::BadKey {
        path: path.to_path_buf(),
        reason,
    })?;
    if key.key_type() != KeyType::Cosignature {
        return Err(WitnessError::NotACosignatureKey {
            name: key.name().to_owned(),
            key_type: key.key_type(),
        });
    }
    Ok(key)
}

/// The witness's TLS server configuration: its own certificate, and clients must
/// hold a Palisade certificate of a calling role.
///
/// The handshake admits every calling role, not only `log`, so that a gateway or an
/// operator that dials the witness by mistake gets a 403 saying what is wrong rather
/// than an opaque handshake failure; [`LogCaller`] then admits only logs.
pub fn tls_config(tls: &TlsFiles) -> Result<rustls::ServerConfig, WitnessError> {
    let callers = Role::ALL.into_iter().filter(|r| r.calls()).collect();
    Ok(palisade_pki::server_config(
        &tls.ca,
        &tls.cert,
        &tls.key,
        ClientAuth::Required(callers),
    )?)
}

/// A witness with everything loaded and its port bound, not yet serving.
pub struct BoundWitness {
    listener: TcpListener,
    tls: rustls::ServerConfig,
    witness: Arc<Witness>,
    addr: SocketAddr,
    /// The `metrics_listen` listener, stopped when serving ends.
    metrics: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for BoundWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundWitness")
            .field("addr", &self.addr)
            .field("witness", &self.witness)
            .finish_non_exhaustive()
    }
}

impl BoundWitness {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn witness(&self) -> &Arc<Witness> {
        &self.witness
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), WitnessError> {
        tracing::info!(
            addr = %self.addr,
            logs = self.witness.logs.len(),
            prefixes = self.witness.prefixes.len(),
            "witness serving"
        );
        let served = https::serve(self.listener, self.tls, router(self.witness), shutdown)
            .await
            .map_err(WitnessError::Serve);
        if let Some(t) = self.metrics {
            t.abort();
        }
        served
    }
}

/// Loads the key, the state and the TLS configuration, and only then binds the
/// listener: `palisade up` takes an accepting port to mean "ready".
pub async fn bind(config: WitnessConfig) -> Result<BoundWitness, WitnessError> {
    let key = load_key(&config.key_file)?;
    let logs = WitnessedLogs::from_config(&config.logs).map_err(WitnessError::Config)?;
    let state_file = config.state_file.clone();
    let store = tokio::task::spawn_blocking(move || RedbStore::open(&state_file))
        .await
        .map_err(|e| {
            WitnessError::State(StateError::Open {
                path: config.state_file.clone(),
                reason: e.to_string(),
            })
        })??;
    let witness = Witness::new(key, logs, Arc::new(store))?;
    // Read every log's state once, so a damaged state file stops the start.
    for origin in witness.logs.keys() {
        witness.stored(origin).await?;
    }
    let tls = tls_config(&config.tls)?;
    let metrics = match &config.metrics_listen {
        Some(m) => Some(
            crate::metrics::serve_service_metrics(m)
                .await
                .map_err(|e| WitnessError::Bind {
                    addr: m.clone(),
                    source: std::io::Error::other(e),
                })?
                .1,
        ),
        None => None,
    };
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| WitnessError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| WitnessError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    Ok(BoundWitness {
        listener,
        tls,
        witness: Arc::new(witness),
        addr,
        metrics,
    })
}

/// Runs the witness of `config` until `shutdown` resolves.
pub async fn run(
    config: WitnessConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WitnessError> {
    bind(config).await?.serve(shutdown).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use palisade_core::config::parse_with;
    use std::path::Path;

    fn parse(text: &str) -> Result<WitnessConfig, palisade_core::config::ConfigError> {
        parse_with(
            text,
            Path::new("/etc/w/witness.toml"),
            Path::new("/etc/w"),
            &|_| None,
        )
    }

    fn log_key(name: &str, key_type: KeyType) -> String {
        SignerKey::generate(name, key_type)
            .unwrap()
            .verifier()
            .to_string()
    }

    fn config_text(logs: &[(&str, String)]) -> String {
        let mut text = "key_file = \"witness.key\"\nstate_file = \"state.redb\"\n\
                        [tls]\nca = \"ca.crt\"\ncert = \"w.crt\"\nkey = \"w.key\"\n"
            .to_owned();
        for (origin, key) in logs {
            text.push_str(&format!(
                "[[log]]\norigin = \"{origin}\"\nkey = \"{key}\"\n"
            ));
        }
        text
    }

    #[test]
    fn valid_config_has_defaults_and_resolved_paths() {
        let c = parse(&config_text(&[
            (
                "example.com/log",
                log_key("example.com/log", KeyType::Ed25519),
            ),
            (
                "example.com/other",
                log_key("some-other-name", KeyType::Ed25519),
            ),
        ]))
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7402");
        assert_eq!(c.key_file, PathBuf::from("/etc/w/witness.key"));
        assert_eq!(c.tls.key, PathBuf::from("/etc/w/w.key"));
        assert_eq!(c.logs.len(), 2);
    }

    #[test]
    fn config_errors_name_the_log_field() {
        let good = log_key("a", KeyType::Ed25519);
        let err = parse(&config_text(&[
            ("a", good.clone()),
            ("b", "nonsense".into()),
        ]))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("log[1].key"), "{err}");

        let cosig = log_key("b", KeyType::Cosignature);
        let err = parse(&config_text(&[("a", good.clone()), ("b", cosig)])).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("log[1].key"), "{err}");
        assert!(err.problem.contains("Ed25519"), "{err}");

        let err = parse(&config_text(&[("a", good.clone()), ("a", good)])).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("log[1].origin"), "{err}");

        let err = parse(&config_text(&[])).unwrap_err();
        assert!(err.to_string().contains("log"), "{err}");
    }

    #[test]
    fn secret_paths_can_come_from_the_environment() {
        let text = config_text(&[("a", log_key("a", KeyType::Ed25519))]);
        let c: WitnessConfig =
            parse_with(
                &text,
                Path::new("w.toml"),
                Path::new("/b"),
                &|name| match name {
                    "PALISADE_WITNESS_KEY_FILE" => Some("/run/secrets/wk".into()),
                    "PALISADE_WITNESS_TLS_KEY" => Some("/run/secrets/tk".into()),
                    _ => None,
                },
            )
            .unwrap();
        assert_eq!(c.key_file, PathBuf::from("/run/secrets/wk"));
        assert_eq!(c.tls.key, PathBuf::from("/run/secrets/tk"));
    }

    /// A store in which another writer always gets in between the witness's read
    /// and its compare-and-swap.
    struct RacingStore {
        values: std::sync::Mutex<HashMap<String, Vec<u8>>>,
        competitor: Vec<u8>,
    }

    #[async_trait::async_trait]
    impl StateStore for RacingStore {
        async fn get(&self, _: Namespace, key: &str) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self.values.lock().unwrap().get(key).cloned())
        }
        async fn put(&self, _: Namespace, key: &str, value: Vec<u8>) -> Result<(), StateError> {
            self.values.lock().unwrap().insert(key.to_owned(), value);
            Ok(())
        }
        async fn insert_new(&self, _: Namespace, _: &str, _: Vec<u8>) -> Result<bool, StateError> {
            unimplemented!()
        }
        async fn compare_and_swap(
            &self,
            _: Namespace,
            key: &str,
            expected: Option<Vec<u8>>,
            new: Option<Vec<u8>>,
        ) -> Result<bool, StateError> {
            let mut values = self.values.lock().unwrap();
            values.insert(key.to_owned(), self.competitor.clone());
            if values.get(key) != expected.as_ref() {
                return Ok(false);
            }
            match new {
                Some(v) => values.insert(key.to_owned(), v),
                None => values.remove(key),
            };
            Ok(true)
        }
        async fn delete(&self, _: Namespace, _: &str) -> Result<bool, StateError> {
            unimplemented!()
        }
        async fn list(
            &self,
            _: Namespace,
            _: &str,
            _: usize,
        ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
            unimplemented!()
        }
    }

    #[tokio::test]
    async fn lost_compare_and_swap_is_409_with_the_size_now_stored() {
        use palisade_tlog::checkpoint::Checkpoint;
        use palisade_tlog::hash::leaf_hash;
        use palisade_tlog::tree::Frontier;

        let origin = "example.com/log";
        let log_key = SignerKey::generate(origin, KeyType::Ed25519).unwrap();
        let witness_key = SignerKey::generate("w", KeyType::Cosignature).unwrap();
        let mut frontier = Frontier::new();
        for i in 0..3u8 {
            frontier.append(leaf_hash(&[i])).unwrap();
        }
        let signed = Checkpoint::new(origin, 3, frontier.root())
            .unwrap()
            .sign(&log_key)
            .unwrap();
        let request = AddCheckpointRequest::new(0, Vec::new(), signed).unwrap();
        let competitor = WitnessState {
            size: 7,
            root: Hash([1; 32]),
        };
        let store = Arc::new(RacingStore {
            values: Default::default(),
            competitor: encode_state(&competitor),
        });
        let logs = WitnessedLogs::new(vec![(origin.to_owned(), log_key.verifier())]).unwrap();
        let witness = Witness::new(witness_key, logs, store).unwrap();
        match witness.add_checkpoint(&request).await {
            Answer::Refused(refusal) => {
                assert_eq!(refusal.status(), 409);
                assert_eq!(refusal.body().unwrap().1, "7\n");
            }
            other => panic!("expected a 409, got {other:?}"),
        }
        assert_eq!(witness.stored(origin).await.unwrap(), Some(competitor));
    }

    /// A prefix entry admits every origin under it, each with its own state; an exact
    /// entry wins over it; the prefix itself and origins outside it are unknown.
    #[tokio::test]
    async fn an_origin_prefix_witnesses_every_log_under_it_each_on_its_own() {
        use palisade_tlog::checkpoint::Checkpoint;
        use palisade_tlog::hash::leaf_hash;

        let service_key = SignerKey::generate("example.com/log", KeyType::Ed25519).unwrap();
        let other_key = SignerKey::generate("example.com/log", KeyType::Ed25519).unwrap();
        let witness_key = SignerKey::generate("w", KeyType::Cosignature).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
        let cfg =
            |origin: Option<&str>, prefix: Option<&str>, key: &SignerKey| WitnessedLogConfig {
                origin: origin.map(str::to_owned),
                origin_prefix: prefix.map(str::to_owned),
                key: key.verifier().to_string(),
            };
        let logs = WitnessedLogs::from_config(&[
            cfg(None, Some("example.com/log/"), &service_key),
            cfg(Some("example.com/log/pinned"), None, &other_key),
        ])
        .unwrap();
        let witness = Witness::new(witness_key, logs, store).unwrap();
        // A checkpoint of `size` leaves, sent as extending the witness's `old` size.
        let request_from = |old: u64, origin: &str, size: u8, key: &SignerKey| {
            let mut frontier = palisade_tlog::tree::Frontier::new();
            for i in 0..size {
                frontier.append(leaf_hash(&[i])).unwrap();
            }
            let signed = Checkpoint::new(origin, u64::from(size), frontier.root())
                .unwrap()
                .sign(key)
                .unwrap();
            AddCheckpointRequest::new(old, Vec::new(), signed).unwrap()
        };
        let request = |origin: &str, size: u8, key: &SignerKey| request_from(0, origin, size, key);
        for (origin, size) in [("example.com/log/a", 2), ("example.com/log/b", 5)] {
            let answer = witness
                .add_checkpoint(&request(origin, size, &service_key))
                .await;
            assert!(
                matches!(answer, Answer::Cosigned(_)),
                "{origin}: {answer:?}"
            );
            assert_eq!(
                witness.stored(origin).await.unwrap().map(|s| s.size),
                Some(u64::from(size))
            );
        }
        // The same tree again (a refresh): cosigned, the state unchanged.
        let again = request_from(2, "example.com/log/a", 2, &service_key);
        let answer = witness.add_checkpoint(&again).await;
        assert!(matches!(answer, Answer::Cosigned(_)), "{answer:?}");
        assert_eq!(
            witness
                .stored("example.com/log/a")
                .await
                .unwrap()
                .map(|s| s.size),
            Some(2)
        );
        // The exact entry's key, not the prefix's, signs the pinned log.
        let wrong = witness
            .add_checkpoint(&request("example.com/log/pinned", 1, &service_key))
            .await;
        assert!(matches!(wrong, Answer::Refused(_)), "{wrong:?}");
        let right = witness
            .add_checkpoint(&request("example.com/log/pinned", 1, &other_key))
            .await;
        assert!(matches!(right, Answer::Cosigned(_)), "{right:?}");
        for origin in ["example.com/log/", "example.com/other/a", "example.com/lo"] {
            match witness
                .add_checkpoint(&request(origin, 1, &service_key))
                .await
            {
                Answer::Refused(r) => assert_eq!(r.status(), 404, "{origin}"),
                other => panic!("{origin}: {other:?}"),
            }
        }
        // One of origin and origin_prefix, exactly.
        for bad in [
            cfg(None, None, &service_key),
            cfg(
                Some("example.com/log/x"),
                Some("example.com/log/"),
                &service_key,
            ),
        ] {
            let err = WitnessedLogs::from_config(&[bad]).unwrap_err();
            assert_eq!(err.field, "log[0]", "{err:?}");
        }
        // A prefix names the logs below a path: `example.com/log` would also admit
        // `example.com/logX/…`.
        let err = WitnessedLogs::from_config(&[cfg(None, Some("example.com/log"), &service_key)])
            .unwrap_err();
        assert_eq!(err.field, "log[0].origin_prefix", "{err:?}");
    }

    #[test]
    fn state_round_trips_and_damage_is_detected() {
        let state = WitnessState {
            size: 0x0102_0304_0506_0708,
            root: Hash([7; 32]),
        };
        let bytes = encode_state(&state);
        assert_eq!(bytes.len(), STATE_LEN);
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_state("o", &bytes).unwrap(), state);
        assert!(matches!(
            decode_state("o", &bytes[..39]),
            Err(WitnessError::CorruptState { len: 39, .. })
        ));
    }
}
