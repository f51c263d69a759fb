//! `palisade log serve`: the log service.
//!
//! One process serves every log of an installation: one per cluster of the inventory
//! (origin `<base_origin>/<cluster-id>`, created on first use) and the governance log
//! (`<base_origin>/governance`). Routes:
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /logs/<log>/append[?wait=stored][&consistency_from=N]` | the gateway's certificate; an agent's, only for the log of the cluster listing its instance (never governance) | append one entry (≤ 65,535 bytes); answers once it is under a stored, witnessed checkpoint (with `wait=stored`: under the stored commit point, before the witnesses answer), with its index, a tlog-proof, and if asked a consistency proof from size N |
//! | `GET /logs/<log>/checkpoint`, `GET /logs/<log>/tile/…` | the cluster's tenant (bearer token) or a Palisade component certificate | tlog-tiles read API |
//! | `GET /healthz` | anyone | liveness |
//!
//! A tenant never reads another tenant's log: a cluster that does not exist and a
//! cluster of another tenant get the same 404, so a tenant cannot even learn which
//! cluster names exist.
//!
//! The inventory is read again when its file changes (checked every
//! [`INVENTORY_CHECK`], and at once, at most every second, when a request names a log
//! it does not know): a new cluster's log starts, with its heartbeat, without a
//! restart. A cluster removed from the inventory can no longer be appended to or
//! read; its sequencer stops at the next restart. An inventory that does not load
//! leaves the one in force unchanged.

use crate::config::{LogConfig, StorageConfig, GOVERNANCE};
use crate::https::{serve, Peer};
use crate::log_keys::LogKeys;
use crate::sequencer::{
    self, AppendError, AppendOptions, BatchConfig, LogWriter, Wait, WitnessSet,
};
use crate::store::{S3Location, TileStore};
use crate::witness_client::WitnessClient;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use palisade_core::id::TenantId;
use palisade_core::inventory::Inventory;
use palisade_pki::{ClientAuth, Role};
use palisade_tlog::note::SignerKey;
use palisade_tlog::tile::{TilePath, MAX_ENTRY_LEN};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum LogServiceError {
    #[error("cannot read the log key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("witness {name}: {reason}")]
    Witness { name: String, reason: String },
    #[error("sequencer lease: {0}")]
    Lease(String),
}

/// The running log service.
pub struct LogService {
    config: LogConfig,
    keys: LogKeys,
    storage: TileStore,
    clusters: std::sync::RwLock<Arc<Clusters>>,
    /// When the inventory file was last looked at for a request naming an unknown log.
    looked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Held by one inventory refresh at a time, so that an older read never replaces
    /// a newer one.
    refreshing: tokio::sync::Mutex<()>,
    readers: HashMap<[u8; 32], TenantId>,
    witness_http: Option<reqwest::Client>,
    /// `None` once [`LogService::close`] ran: no sequencer starts after that.
    logs: Mutex<Option<HashMap<String, LogWriter>>>,
    /// The logs being started, each behind its own lock.
    starting: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// How often the inventory file is checked for changes.
pub const INVENTORY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The inventory's clusters as the service uses them: by id, each with its tenant and
/// the instances whose agents may append to its log.
struct Clusters {
    by_id: HashMap<String, (TenantId, std::collections::HashSet<String>)>,
    /// The SHA-256 of the file's bytes as read.
    stamp: [u8; 32],
}

impl Clusters {
    fn read(path: &std::path::Path) -> Result<Clusters, LogServiceError> {
        let (text, stamp) = Clusters::read_text(path)?;
        Clusters::parse(&text, path, stamp)
    }

    /// The inventory at `path` unless its bytes hash to `known` (the file did not
    /// change, whatever its modification time says): the file is read once.
    fn read_if_changed(
        path: &std::path::Path,
        known: [u8; 32],
    ) -> Result<Option<Clusters>, LogServiceError> {
        let (text, stamp) = Clusters::read_text(path)?;
        if stamp == known {
            return Ok(None);
        }
        Clusters::parse(&text, path, stamp).map(Some)
    }

    /// The file's text and the SHA-256 of its bytes.
    fn read_text(path: &std::path::Path) -> Result<(String, [u8; 32]), LogServiceError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LogServiceError::Inventory(format!("{}: cannot read the file: {e}", path.display()))
        })?;
        let stamp = Sha256::digest(text.as_bytes()).into();
        Ok((text, stamp))
    }

    fn parse(
        text: &str,
        path: &std::path::Path,
        stamp: [u8; 32],
    ) -> Result<Clusters, LogServiceError> {
        let base = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let inventory: Inventory =
            palisade_core::config::parse_with(text, path, &base, &|name| std::env::var_os(name))
                .map_err(|e| LogServiceError::Inventory(e.to_string()))?;
        if inventory
            .clusters
            .iter()
            .any(|c| c.id.as_str() == GOVERNANCE)
        {
            return Err(LogServiceError::Inventory(format!(
                "a cluster may not be named {GOVERNANCE:?}: that is the governance log"
            )));
        }
        let by_id = inventory
            .clusters
            .into_iter()
            .map(|c| {
                let instances = c.instances.iter().map(|i| i.id.to_string()).collect();
                (c.id.to_string(), (c.tenant, instances))
            })
            .collect();
        Ok(Clusters { by_id, stamp })
    }
}

fn stopping(log: &str) -> LogServiceError {
    LogServiceError::Storage(format!("log {log}: the service is stopping"))
}

/// Why a request for a log's data is refused.
#[derive(Debug)]
enum Refused {
    NoCredentials,
    NotFound(String),
    Forbidden(&'static str),
    Bad(String),
    Unavailable(String),
    /// The entry is in the log at this index, but the witness quorum was not met.
    Unwitnessed(u64, String),
}

/// On a `503` for an append whose entry is in the log without the witness quorum: its
/// index, so that the caller neither appends it again nor treats it as lost.
pub const LOGGED_INDEX_HEADER: &str = "palisade-log-index";

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Refused::NoCredentials => (
                StatusCode::UNAUTHORIZED,
                "send a tenant bearer token or a Palisade client certificate".to_string(),
            ),
            Refused::NotFound(what) => (StatusCode::NOT_FOUND, what),
            Refused::Forbidden(what) => (StatusCode::FORBIDDEN, what.to_string()),
            Refused::Bad(what) => (StatusCode::BAD_REQUEST, what),
            Refused::Unavailable(what) => (StatusCode::SERVICE_UNAVAILABLE, what),
            Refused::Unwitnessed(index, what) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [
                        (
                            header::CONTENT_TYPE,
                            "text/plain; charset=utf-8".to_string(),
                        ),
                        (
                            header::HeaderName::from_static(LOGGED_INDEX_HEADER),
                            index.to_string(),
                        ),
                    ],
                    format!("{what}\n"),
                )
                    .into_response()
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response()
    }
}

/// The answer to an acknowledged append.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct AppendResponse {
    pub index: u64,
    /// A C2SP tlog-proof (text): the inclusion proof and the checkpoint.
    pub proof: String,
    /// Asked for with `consistency_from` (and not larger than the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<AppendConsistency>,
}

/// A consistency proof from `from_size` to the append's checkpoint.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AppendConsistency {
    pub from_size: u64,
    /// Standard base64 hashes, RFC 6962 order.
    pub hashes: Vec<String>,
}

/// The storage prefix of a log.
pub fn log_prefix(log: &str) -> String {
    if log == GOVERNANCE {
        GOVERNANCE.to_string()
    } else {
        format!("clusters/{log}")
    }
}

impl LogService {
    pub async fn open(config: LogConfig) -> Result<Arc<Self>, LogServiceError> {
        Self::open_fenced(config, None).await
    }

    /// Like [`LogService::open`]; with `fence`, storage is written only while that
    /// sequencer term holds ([`crate::store::TileStore::fenced`]).
    pub async fn open_fenced(
        config: LogConfig,
        fence: Option<palisade_state::lease::LeaderFence>,
    ) -> Result<Arc<Self>, LogServiceError> {
        let key = read_log_key(&config.key_file, &config.base_origin)?;
        let next = match &config.next_key_file {
            Some(path) => Some(read_log_key(path, &config.base_origin)?),
            None => None,
        };
        let keys = LogKeys::new(key, next).map_err(|reason| LogServiceError::Key {
            path: config
                .next_key_file
                .as_ref()
                .unwrap_or(&config.key_file)
                .display()
                .to_string(),
            reason,
        })?;
        let clusters = Clusters::read(&config.inventory)?;
        let storage = match fence {
            Some(f) => open_storage(&config.storage)?.fenced(f),
            None => open_storage(&config.storage)?,
        };
        let readers = config
            .readers
            .iter()
            .filter_map(|r| {
                let mut h = [0u8; 32];
                hex_decode(&r.token_sha256, &mut h).then(|| (h, r.tenant.clone()))
            })
            .collect();
        let witness_http = if config.witnesses.is_empty() {
            None
        } else {
            let tls = palisade_pki::client_config(
                &config.tls.ca,
                &config.tls.cert,
                &config.tls.key,
                &[Role::Witness],
            )
            .map_err(|e| LogServiceError::Tls(e.to_string()))?;
            Some(WitnessClient::http_client(tls).map_err(|e| LogServiceError::Tls(e.to_string()))?)
        };
        Ok(Arc::new(Self {
            config,
            keys,
            storage,
            clusters: std::sync::RwLock::new(Arc::new(clusters)),
            looked: std::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            readers,
            witness_http,
            logs: Mutex::new(Some(HashMap::new())),
            starting: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The origin of a log.
    pub fn origin(&self, log: &str) -> String {
        format!("{}/{log}", self.config.base_origin)
    }

    fn exists(&self, log: &str) -> bool {
        log == GOVERNANCE || self.clusters().by_id.contains_key(log)
    }

    fn clusters(&self) -> Arc<Clusters> {
        self.clusters
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The clusters of the inventory in force.
    pub fn cluster_ids(&self) -> Vec<String> {
        self.clusters().by_id.keys().cloned().collect()
    }

    /// Reads the inventory again if its file changed, and starts the logs of the
    /// clusters it adds (returned). A file that does not load changes nothing.
    pub async fn refresh_inventory(&self) -> Result<Vec<String>, LogServiceError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let path = self.config.inventory.clone();
        let old = self.clusters();
        let known = old.stamp;
        let read = tokio::task::spawn_blocking(move || Clusters::read_if_changed(&path, known))
            .await
            .map_err(|e| LogServiceError::Inventory(e.to_string()))??;
        let Some(new) = read else {
            return Ok(Vec::new());
        };
        let mut added: Vec<String> = new
            .by_id
            .keys()
            .filter(|id| !old.by_id.contains_key(*id))
            .cloned()
            .collect();
        added.sort();
        let removed = old
            .by_id
            .keys()
            .filter(|id| !new.by_id.contains_key(*id))
            .count();
        if let Ok(mut c) = self.clusters.write() {
            *c = Arc::new(new);
        }
        if !added.is_empty() || removed > 0 {
            tracing::info!(added = added.len(), removed, "inventory read again");
        }
        // Each added log starts on its own: one that cannot (too few witnesses apply
        // to it) starts on its first request, and says why then.
        for id in &added {
            if let Err(e) = self.log(id).await {
                tracing::warn!(log = %id, error = %e, "the log of an added cluster did not start");
            }
        }
        Ok(added)
    }

    /// For a request refused as naming no log it may use: the inventory is read again
    /// if it changed, at most once a second. (Done for every such refusal, whether or
    /// not the log exists for someone else, so that timing tells a tenant nothing.)
    async fn refresh_for_unknown(&self) {
        {
            let Ok(mut looked) = self.looked.lock() else {
                return;
            };
            if looked.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return;
            }
            *looked = Some(std::time::Instant::now());
        }
        if let Err(e) = self.refresh_inventory().await {
            tracing::warn!(error = %e, "the inventory could not be read again; the one in force stays");
        }
    }

    /// Stops every sequencer, waiting at most `timeout` for what is queued to be
    /// answered and the last cosigned checkpoints to be stored: before the sequencer
    /// lease is given up, so that no write of this process lands after another's.
    pub async fn close(&self, timeout: std::time::Duration) {
        let writers = self.logs.lock().await.take().unwrap_or_default();
        let writers: Vec<LogWriter> = writers.into_values().collect();
        let all = futures::future::join_all(writers.into_iter().map(LogWriter::close));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("some logs were still writing when the service stopped");
        }
    }

    /// The writer of a log whose sequencer is running.
    async fn running(&self, log: &str) -> Option<LogWriter> {
        self.logs.lock().await.as_ref()?.get(log).cloned()
    }

    /// The writer of a log, starting its sequencer on first use.
    pub async fn log(&self, log: &str) -> Result<LogWriter, LogServiceError> {
        if let Some(w) = self.present(log).await? {
            return Ok(w);
        }
        // One start per log at a time, without holding the map: requests for other
        // logs go on while this one reads its storage.
        let gate = {
            let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            starting
                .entry(log.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(())))
                .clone()
        };
        let one_at_a_time = gate.lock().await;
        let result = match self.present(log).await {
            Ok(Some(w)) => Ok(w),
            Err(e) => Err(e),
            Ok(None) => match self.start_log(log).await {
                Ok(writer) => {
                    let mut guard = self.logs.lock().await;
                    if let Some(logs) = guard.as_mut() {
                        logs.insert(log.to_string(), writer.clone());
                        Ok(writer)
                    } else {
                        drop(guard);
                        writer.close().await;
                        Err(stopping(log))
                    }
                }
                Err(e) => Err(e),
            },
        };
        drop(one_at_a_time);
        if let Ok(mut starting) = self.starting.lock() {
            starting.remove(log);
        }
        result
    }

    /// The writer of a log already started; an error once the service is stopping.
    async fn present(&self, log: &str) -> Result<Option<LogWriter>, LogServiceError> {
        match self.logs.lock().await.as_ref() {
            Some(logs) => Ok(logs.get(log).cloned()),
            None => Err(stopping(log)),
        }
    }

    /// Starts the sequencer of `log`.
    async fn start_log(&self, log: &str) -> Result<LogWriter, LogServiceError> {
        let mut clients = Vec::new();
        for w in self.config.witnesses.iter().filter(|w| w.applies_to(log)) {
            let key = w.verifier().map_err(|reason| LogServiceError::Witness {
                name: w.name.clone(),
                reason,
            })?;
            let http = self
                .witness_http
                .clone()
                .ok_or_else(|| LogServiceError::Tls("no witness client".into()))?;
            clients.push(WitnessClient::new(&w.name, &w.url, key, http).required(w.required));
        }
        if clients.len() < self.config.witness_quorum {
            return Err(LogServiceError::Witness {
                name: log.to_string(),
                reason: format!(
                    "only {} witnesses apply to this log but witness_quorum is {}",
                    clients.len(),
                    self.config.witness_quorum
                ),
            });
        }
        let batch = BatchConfig {
            max_entries: self.config.batch.max_entries,
            max_delay: self.config.batch.max_delay(),
            publish_interval: self.config.batch.publish_interval(),
            max_checkpoint_interval: std::time::Duration::from_secs(
                self.config.checkpoint.max_interval_secs,
            ),
        };
        let witnesses = WitnessSet {
            clients,
            quorum: self.config.witness_quorum,
        };
        sequencer::start(
            &self.origin(log),
            self.keys.clone(),
            self.storage.at(&log_prefix(log)),
            batch,
            witnesses,
        )
        .await
        .map_err(|e| LogServiceError::Storage(e.to_string()))
    }

    fn tenant_of(&self, headers: &HeaderMap) -> Option<&TenantId> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.readers.get(&digest)
    }

    /// Read access: Palisade components by certificate; tenants by token, to their
    /// own clusters and to the governance log.
    fn authorize_read(&self, peer: &Peer, headers: &HeaderMap, log: &str) -> Result<(), Refused> {
        let not_found =
            || Refused::NotFound(format!("no log {log:?} readable with these credentials"));
        if peer.is(&[Role::Gateway, Role::Agent, Role::Log, Role::Witness]) {
            return if self.exists(log) {
                Ok(())
            } else {
                Err(not_found())
            };
        }
        let tenant = match self.tenant_of(headers) {
            Some(t) => t,
            None if headers.contains_key(header::AUTHORIZATION) => {
                return Err(Refused::Forbidden("unknown token"))
            }
            None => return Err(Refused::NoCredentials),
        };
        if log == GOVERNANCE {
            return Ok(());
        }
        match self.clusters().by_id.get(log) {
            Some((owner, _)) if owner == tenant => Ok(()),
            _ => Err(not_found()),
        }
    }

    /// Write access: the gateway appends to every log; an agent only to the log of
    /// the cluster that lists its instance (its certificate's name), and never to the
    /// governance log, so that one instance's key cannot write into another tenant's
    /// history or forge a policy or release record.
    fn authorize_append(&self, peer: &Peer, log: &str) -> Result<(), Refused> {
        match &peer.identity {
            Some((Role::Gateway, _)) if self.exists(log) => Ok(()),
            Some((Role::Gateway, _)) => Err(Refused::NotFound(format!("no log {log:?}"))),
            Some((Role::Agent, _)) if log == GOVERNANCE => Err(Refused::Forbidden(
                "only the gateway appends to the governance log",
            )),
            Some((Role::Agent, name)) => {
                let own = self
                    .clusters()
                    .by_id
                    .get(log)
                    .is_some_and(|(_, instances)| instances.contains(name.as_str()));
                if own {
                    Ok(())
                } else {
                    Err(Refused::Forbidden(
                        "an agent certificate appends only to the log of the cluster that lists its instance",
                    ))
                }
            }
            _ => Err(Refused::Forbidden(
                "appending needs a gateway or agent certificate",
            )),
        }
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/logs/{log}/append",
                post(append).layer(DefaultBodyLimit::max(MAX_ENTRY_LEN)),
            )
            .route("/logs/{log}/checkpoint", get(checkpoint))
            .route("/logs/{log}/tile/{*rest}", get(tile))
            .with_state(self.clone())
    }
}

/// [`options_of`] for callers outside the server (the fuzz targets): the options of
/// an append's query string, or why they are refused.
pub fn append_options(query: Option<&str>) -> Result<AppendOptions, String> {
    options_of(query).map_err(|r| format!("{r:?}"))
}

/// The query of an append: `wait=witnessed` (the default) or `wait=stored`, and
/// `consistency_from=<size>`, each at most once.
fn options_of(query: Option<&str>) -> Result<AppendOptions, Refused> {
    let mut options = AppendOptions::default();
    let (mut wait, mut from) = (false, false);
    let bad = |what: String| {
        Refused::Bad(format!(
            "{what}: an append takes wait=witnessed (the default) or wait=stored, and consistency_from=<size>"
        ))
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let shown = || format!("{:?}", pair.chars().take(64).collect::<String>());
        match pair.split_once('=') {
            Some(("wait", value)) if !wait => {
                wait = true;
                options.wait = match value {
                    "witnessed" => Wait::Witnessed,
                    "stored" => Wait::Stored,
                    _ => return Err(bad(format!("unknown {}", shown()))),
                };
            }
            Some(("consistency_from", value)) if !from => {
                from = true;
                options.consistency_from = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("{} is not a size", shown())))?,
                );
            }
            _ => return Err(bad(format!("unknown or repeated {}", shown()))),
        }
    }
    Ok(options)
}

async fn append(
    State(svc): State<Arc<LogService>>,
    Extension(peer): Extension<Peer>,
    Path(log): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<AppendResponse>, Refused> {
    // A new cluster, or a new instance of one, is found without waiting for the
    // next check of the inventory.
    if let Err(Refused::NotFound(_) | Refused::Forbidden(_)) = svc.authorize_append(&peer, &log) {
        svc.refresh_for_unknown().await;
    }
    svc.authorize_append(&peer, &log)?;
    let options = options_of(query.as_deref())?;
    let writer = svc
        .log(&log)
        .await
        .map_err(|e| Refused::Unavailable(e.to_string()))?;
    match writer.append_with(body, options).await {
        Ok(r) => Ok(Json(AppendResponse {
            index: r.index,
            proof: String::from_utf8_lossy(&r.proof).into_owned(),
            consistency: r.consistency.map(|(from_size, hashes)| AppendConsistency {
                from_size,
                hashes: hashes.iter().map(|h| h.to_base64()).collect(),
            }),
        })),
        Err(e @ (AppendError::Empty | AppendError::TooLarge(_))) => {
            Err(Refused::Bad(e.to_string()))
        }
        Err(e @ AppendError::Unwitnessed { index, .. }) => {
            Err(Refused::Unwitnessed(index, e.to_string()))
        }
        Err(e) => Err(Refused::Unavailable(e.to_string())),
    }
}

async fn checkpoint(
    State(svc): State<Arc<LogService>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(log): Path<String>,
) -> Result<Response, Refused> {
    if let Err(Refused::NotFound(_)) = svc.authorize_read(&peer, &headers, &log) {
        svc.refresh_for_unknown().await;
    }
    svc.authorize_read(&peer, &headers, &log)?;
    // Creates the log on first use, so a new cluster's log reads as size 0.
    let writer = svc
        .log(&log)
        .await
        .map_err(|e| Refused::Unavailable(e.to_string()))?;
    // The checkpoint the sequencer published, not the stored object: with witnesses,
    // the cosigned checkpoint is stored while its batch is acknowledged, so the stored
    // object can be one batch behind.
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        writer.published().note,
    )
        .into_response())
}

async fn tile(
    State(svc): State<Arc<LogService>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((log, rest)): Path<(String, String)>,
) -> Result<Response, Refused> {
    if let Err(Refused::NotFound(_)) = svc.authorize_read(&peer, &headers, &log) {
        svc.refresh_for_unknown().await;
    }
    svc.authorize_read(&peer, &headers, &log)?;
    let rel = format!("tile/{rest}");
    let parsed = TilePath::parse(&rel).map_err(|e| Refused::Bad(e.to_string()))?;
    let cache = if parsed.tile().is_full() {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=60"
    };
    let found = |bytes: Bytes| {
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CACHE_CONTROL, cache),
            ],
            bytes,
        )
            .into_response()
    };
    // What the log's journal holds but storage does not have yet; then storage, which
    // is what a bucket served as static files shows too.
    let writer = svc.running(&log).await;
    if let Some(bytes) = writer.as_ref().and_then(|w| w.unwritten(&parsed)) {
        return Ok(found(bytes));
    }
    let store = svc.storage.at(&log_prefix(&log));
    let unavailable = |e: crate::store::StoreError| Refused::Unavailable(e.to_string());
    if let Some(bytes) = store.read(&rel).await.map_err(unavailable)? {
        return Ok(found(bytes));
    }
    // Storage holds partial tiles only at the sizes it published; a narrower one is
    // the start of a wider one: the log's current one, or the full tile.
    if let Some(bytes) = writer.as_ref().and_then(|w| w.unpublished(&parsed)) {
        return Ok(found(bytes));
    }
    let want = parsed.tile();
    if !want.is_full() {
        let (bundle, full) = match parsed {
            TilePath::Hashes(id) => (false, id.full()),
            TilePath::Entries(id) => (true, id.full()),
        };
        let full_path = if bundle {
            full.entries_path()
        } else {
            full.path()
        };
        if let Some(bytes) = store.read(&full_path).await.map_err(unavailable)? {
            if let Some(cut) = crate::sequencer::cut(bundle, want, full, &bytes) {
                return Ok(found(cut));
            }
        }
    }
    Err(Refused::NotFound(format!("{rel} does not exist")))
}

/// The log's signing key at `path`, which must be private and named `base_origin`.
fn read_log_key(path: &std::path::Path, base_origin: &str) -> Result<SignerKey, LogServiceError> {
    check_private(path)?;
    let failed = |reason: String| LogServiceError::Key {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let key = SignerKey::parse(text.trim()).map_err(|e| failed(e.to_string()))?;
    if key.name() != base_origin {
        return Err(failed(format!(
            "the key is named {:?}; it must be named after base_origin {base_origin:?}",
            key.name()
        )));
    }
    Ok(key)
}

/// A private key readable by anyone but its owner is refused, as the CA and witness
/// keys are.
fn check_private(path: &std::path::Path) -> Result<(), LogServiceError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| LogServiceError::Key {
        path: path.display().to_string(),
        reason,
    };
    let mode = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "it is readable by others (mode {:o}); run chmod 600 on it",
            mode & 0o777
        )));
    }
    Ok(())
}

fn hex_decode(text: &str, out: &mut [u8; 32]) -> bool {
    if text.len() != 64 {
        return false;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        match text
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(b) => *slot = b,
            None => return false,
        }
    }
    true
}

/// Opens the configured storage.
pub fn open_storage(config: &StorageConfig) -> Result<TileStore, LogServiceError> {
    match config {
        StorageConfig::Local { dir } => {
            TileStore::local(dir).map_err(|e| LogServiceError::Storage(e.to_string()))
        }
        StorageConfig::S3 {
            bucket,
            region,
            endpoint,
            credentials_file,
        } => {
            let credentials = palisade_aws::AwsCredentials::file_or_chain(
                credentials_file.as_deref(),
                Some(region),
            )
            .map_err(LogServiceError::Storage)?;
            TileStore::s3(&S3Location {
                bucket: bucket.clone(),
                region: region.clone(),
                endpoint: endpoint.clone(),
                credentials,
            })
            .map_err(|e| LogServiceError::Storage(e.to_string()))
        }
    }
}

/// Runs the log service until `shutdown` resolves. The listener is bound only after
/// the key, inventory, storage and TLS have all loaded.
pub async fn run(
    config: LogConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LogServiceError> {
    let tls = palisade_pki::server_config(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        ClientAuth::Optional,
    )
    .map_err(|e| LogServiceError::Tls(e.to_string()))?;
    let listen = config.listen.clone();
    // With a `[leader]` table, sequence only while holding the lease: recovery and
    // appends must never run in two processes on one storage.
    let lease = match &config.leader {
        Some(l) => Some(acquire_lease(l, &listen).await?),
        None => None,
    };
    let metrics = match &config.metrics_listen {
        Some(m) => Some(
            crate::metrics::serve_service_metrics(m)
                .await
                .map_err(|reason| LogServiceError::Listen {
                    addr: m.clone(),
                    reason,
                })?
                .1,
        ),
        None => None,
    };
    let svc = LogService::open_fenced(config, lease.as_ref().map(|g| g.fence())).await?;
    // The governance log and every cluster's log exist from the start.
    svc.log(GOVERNANCE).await?;
    let mut clusters = svc.cluster_ids();
    clusters.sort();
    for c in &clusters {
        svc.log(c).await?;
    }
    // Clusters added to the inventory later get their logs without a restart.
    let watcher = {
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INVENTORY_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = svc.refresh_inventory().await {
                    tracing::warn!(error = %e, "the inventory could not be read again; the one in force stays");
                }
            }
        })
    };
    let listener =
        tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| LogServiceError::Listen {
                addr: listen.clone(),
                reason: e.to_string(),
            })?;
    println!(
        "log listening on https://{listen} ({} logs)",
        clusters.len() + 1
    );
    let lease_lost = {
        let lost = async {
            match &lease {
                Some(guard) => guard.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        let mut lease_lost = false;
        let stop = async {
            tokio::select! {
                _ = shutdown => {}
                _ = &mut lost => lease_lost = true,
            }
        };
        serve(listener, tls, svc.router(), stop)
            .await
            .map_err(|e| LogServiceError::Listen {
                addr: listen,
                reason: e.to_string(),
            })?;
        lease_lost
    };
    watcher.abort();
    svc.close(std::time::Duration::from_secs(10)).await;
    if let Some(t) = metrics {
        t.abort();
    }
    if lease_lost {
        // Another process may be sequencing now: stop, and let a supervisor restart
        // this one as a standby.
        return Err(LogServiceError::Lease(
            "the sequencer lease was lost; stopped serving".into(),
        ));
    }
    if let Some(guard) = lease {
        let _ = guard.release().await;
    }
    Ok(())
}

/// Waits for the sequencer lease (printing that it stands by meanwhile).
async fn acquire_lease(
    l: &crate::config::LeaderSettings,
    listen: &str,
) -> Result<palisade_state::lease::LeaderGuard, LogServiceError> {
    let err = |e: palisade_state::StateError| LogServiceError::Lease(e.to_string());
    let store = palisade_state::EtcdStore::connect(&l.endpoints, &l.prefix, l.tls.as_ref())
        .await
        .map_err(err)?;
    let holder = format!("{listen}/pid-{}", std::process::id());
    let ttl = std::time::Duration::from_secs(l.ttl_secs);
    if let Some(g) = palisade_state::lease::Leadership::acquire(&store, LEASE_NAME, &holder, ttl)
        .await
        .map_err(err)?
    {
        println!("log holds the sequencer lease");
        return Ok(g);
    }
    println!("log standing by: another process holds the sequencer lease");
    let g = palisade_state::lease::Leadership::wait(&store, LEASE_NAME, &holder, ttl)
        .await
        .map_err(err)?;
    println!("log holds the sequencer lease");
    Ok(g)
}

/// The etcd lease that makes one log process the sequencer.
pub const LEASE_NAME: &str = "log-sequencer";
