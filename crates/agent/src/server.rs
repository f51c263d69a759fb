//! The agent process: its three routes, and how a dispatch flows through them.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /v1/dispatch` | gateway certificate (TLS handshake) | accept ([`crate::accept`]), execute ([`crate::handlers`]), answer with the signed result |
//! | `GET /v1/results/<event id>` | gateway certificate | the signed result of a dispatch it accepted (202 while it runs, 404 if never accepted) |
//! | `GET /healthz` | gateway certificate | liveness, policy version and digest, newest checkpoint size |
//!
//! There is no other route, and none may be added: no shell, exec, file, log
//! streaming, port-forward or "run this binary" (tests/claims/c1_c2_agent_surface.rs
//! fails if this router grows).
//!
//! An accepted dispatch runs to its end whatever happens to the connection that
//! brought it: its outcome is recorded as running before it starts and replaced by
//! the signed result when it ends, so a gateway that lost the answer asks again by
//! event id. A dispatch the agent itself stopped in (it was killed or restarted) is
//! given a signed `failed` result at the next start, saying it was interrupted.
//!
//! Start-up fails closed, before the port is bound: reading the agent's signing key
//! and the gateway public keys, the log trust (log key, witness keys, quorum), the
//! state file, verifying the action policy from the TUF repository with the agent's
//! own root and datastore, checking that the stored view of the log still verifies,
//! the Kubernetes client if configured, and verifying and starting every supervised
//! component. Every 10 minutes the agent re-verifies the policy and prunes the replay
//! cache (a nonce is dropped once its dispatch expired more than `clock_skew_secs` +
//! 60 s ago, when it would be refused as `expired` anyway) and the results kept for
//! `GET /v1/results/<event id>` (7 days).

use crate::accept::{Acceptor, AcceptorConfig};
use crate::config::AgentConfig;
use crate::dispatch::{
    AgentResult, DispatchRequest, Health, Refusal, RefusalCode, ResultOutcome, Running,
    DISPATCH_PATH, HEALTH_PATH, MAX_REQUEST_BYTES, RESULTS_KEPT_SECS, RESULTS_PATH, RESULT_SCHEMA,
};
use crate::etcd::Etcd;
use crate::handlers::Services;
use crate::kube::KubeClient;
use crate::supervisor::Supervisor;
use crate::view::{AgentState, StoredOutcome};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use palisade_core::time::Timestamp;
use palisade_pki::{ClientAuth, Role};
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_protocol::dispatch::AgentStatement;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

fn setup(what: &str) -> impl FnOnce(String) -> AgentError + '_ {
    move |e| AgentError::Setup(format!("{what}: {e}"))
}

pub use palisade_protocol::trust::{expiry, warn_if_expiring, TufPolicy, EXPIRY_WARNING_SECS};

/// A running agent.
pub struct Agent {
    acceptor: Acceptor,
    services: Services,
    key: SigningKey,
    metrics: crate::metrics::Metrics,
}

impl Agent {
    /// Builds everything from the configuration; fails (closed) if the policy, the
    /// log trust, the keys or a supervised component's release do not verify.
    pub async fn start(cfg: &AgentConfig) -> Result<Arc<Agent>, AgentError> {
        let key =
            SigningKey::read(&cfg.signing_key).map_err(|e| AgentError::Setup(e.to_string()))?;
        let mut gateway_keys = Vec::new();
        for p in &cfg.gateway_keys {
            gateway_keys.push(PublicKey::read(p).map_err(|e| AgentError::Setup(e.to_string()))?);
        }
        let log = cfg.log.policy().map_err(setup("log trust"))?;
        let store = palisade_state::open_embedded(&cfg.state)
            .map_err(|e| AgentError::Setup(format!("state {}: {e}", cfg.state.display())))?;
        let acceptor = Acceptor::new(
            AcceptorConfig {
                tenant: cfg.tenant.clone(),
                cluster: cfg.cluster.clone(),
                instance: cfg.instance.clone(),
                gateway_keys,
                log,
                max_ttl: Duration::from_secs(cfg.max_dispatch_ttl_secs),
                clock_skew: Duration::from_secs(cfg.clock_skew_secs),
                max_cosignature_age: Duration::from_secs(cfg.log.max_cosignature_age_secs),
                retired_log_keys: cfg.log.retired().map_err(setup("log trust"))?,
                tenant_key: match &cfg.tenant_key {
                    Some(p) => Some(
                        PublicKey::read(p)
                            .map_err(|e| AgentError::Setup(format!("tenant_key: {e}")))?,
                    ),
                    None => None,
                },
            },
            Box::new(TufPolicy {
                trust: cfg.trust.clone(),
            }),
            AgentState::new(store),
        )
        .await
        .map_err(AgentError::Setup)?;
        // A stored view that no longer verifies (another log key, a corrupt file) is
        // a reason not to start, not something to paper over.
        acceptor.log_size_seen().await.map_err(setup("log view"))?;
        let kube = match &cfg.kube {
            Some(k) => {
                Some(KubeClient::new(k).map_err(|e| AgentError::Setup(format!("kube: {e}")))?)
            }
            None => None,
        };
        let supervisor = match (&cfg.work_dir, cfg.components.is_empty()) {
            (Some(dir), false) => Some(
                Supervisor::start(cfg.components.clone(), cfg.trust.clone(), dir.clone())
                    .await
                    .map_err(|e| AgentError::Setup(format!("supervisor: {e}")))?,
            ),
            _ => None,
        };
        let backups = match &cfg.backup {
            Some(b) => {
                // A second handle on the agent key: manifests are signed with the
                // same key as results.
                let signer = SigningKey::read(&cfg.signing_key)
                    .map_err(|e| AgentError::Setup(e.to_string()))?;
                Some(
                    crate::backup::Backups::new(
                        b,
                        signer,
                        cfg.tenant.as_str(),
                        cfg.cluster.as_str(),
                        cfg.instance.as_str(),
                    )
                    .map_err(|e| AgentError::Setup(e.to_string()))?,
                )
            }
            None => None,
        };
        if let Some(b) = &backups {
            // A backup the previous run was killed in left its staging file.
            match b.remove_incomplete().await {
                Ok(removed) => {
                    for name in removed {
                        tracing::warn!(object = %name, "removed an incomplete backup object left by an interrupted backup");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for incomplete backup objects"),
            }
        }
        let etcd = Etcd::new(&cfg.etcd).map_err(|e| AgentError::Setup(e.to_string()))?;
        // For etcd.member-remove: since when each member has been unhealthy.
        // Only a member of a cluster of several (it has peers) can have another
        // removed; a lone member's agent probes nothing.
        if !cfg.etcd.peers.is_empty() {
            etcd.spawn_member_tracker();
        }
        let services = Services {
            backups,
            etcd,
            kube,
            supervisor,
            certs: cfg.certs.clone(),
            disks: cfg.disks.clone(),
            max_output_bytes: cfg.max_output_bytes,
            restorer: match (
                cfg.components.iter().find(|c| c.name == "etcd"),
                cfg.tools.iter().find(|t| t.name == "etcdctl"),
                &cfg.work_dir,
            ) {
                (Some(etcd), Some(tool), Some(work_dir)) if etcd.data_dir.is_some() => {
                    Some(crate::restore::Restorer {
                        etcd: etcd.clone(),
                        etcdctl_version: tool.version.clone(),
                        work_dir: work_dir.clone(),
                    })
                }
                _ => None,
            },
            metrics_urls: cfg
                .components
                .iter()
                .filter_map(|c| Some((c.name.clone(), c.metrics_url.clone()?)))
                .collect(),
        };
        let agent = Agent {
            acceptor,
            services,
            key,
            metrics: crate::metrics::Metrics::default(),
        };
        agent.close_interrupted().await?;
        Ok(Arc::new(agent))
    }

    /// Signs a `failed` result for every dispatch a previous run of the agent
    /// accepted and did not finish: the gateway that asks learns that it was
    /// interrupted (and may have partly run), never that it is still running.
    async fn close_interrupted(&self) -> Result<(), AgentError> {
        let state = self.acceptor.state();
        let running = state
            .outcomes_running()
            .await
            .map_err(|e| AgentError::Setup(format!("outcomes: {e}")))?;
        for (event_id, mut interrupted) in running {
            interrupted.finished_at = Timestamp::now();
            let envelope = interrupted
                .sign(&self.key)
                .map_err(|e| AgentError::Setup(format!("signing an interrupted result: {e}")))?;
            state
                .outcome_done(&event_id, interrupted.finished_at, &envelope)
                .await
                .map_err(|e| AgentError::Setup(format!("outcomes: {e}")))?;
            tracing::warn!(event = %event_id, "a dispatch was interrupted by the agent's stop; its result says so");
        }
        Ok(())
    }

    /// The agent's only routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(DISPATCH_PATH, post(dispatch))
            .route(RESULTS_PATH, get(result_of))
            .route(HEALTH_PATH, get(health))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(self.clone())
    }

    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// The metrics as of now (the gauges are read at each scrape).
    pub async fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.trust
            .set(&self.acceptor.loaded_policy().await, Timestamp::now());
        if let Ok(size) = self.acceptor.log_size_seen().await {
            m.view_size(size);
        }
        if let Some(sup) = &self.services.supervisor {
            if let Ok(all) = sup.status(None).await {
                for c in all.components {
                    let up = matches!(c.state, crate::supervisor::ComponentState::Running);
                    m.component(&c.name, up, c.restarts);
                }
            }
        }
        m.encode()
    }

    /// Stops supervised components.
    pub async fn shutdown(&self) {
        if let Some(s) = &self.services.supervisor {
            s.shutdown().await;
        }
    }

    /// Accepts, executes and signs: the whole path of one dispatch. Once accepted,
    /// the action runs in a task of its own, so that it ends (and its result is
    /// stored) even if the caller goes away.
    pub async fn handle(
        self: &Arc<Self>,
        req: &DispatchRequest,
    ) -> Result<palisade_policy::dsse::Envelope, Refusal> {
        let accepted = self.acceptor.accept(req, Timestamp::now()).await?;
        tracing::info!(
            event = %accepted.event.event_id,
            action = %accepted.dispatch.action,
            actor = %accepted.dispatch.actor,
            log_index = accepted.log_index,
            "dispatch accepted"
        );
        let started_at = Timestamp::now();
        let event_id = accepted.event.event_id.to_string();
        let interrupted = AgentResult {
            schema: RESULT_SCHEMA.into(),
            dispatch_digest: accepted.dispatch_digest,
            event_id: accepted.event.event_id.clone(),
            cluster: accepted.dispatch.cluster.clone(),
            instance: accepted.dispatch.instance.clone(),
            action: accepted.dispatch.action.clone(),
            outcome: ResultOutcome::Failed,
            output_schema: accepted.action.output_schema().to_string(),
            output: None,
            output_digest: None,
            error: Some(INTERRUPTED.into()),
            started_at,
            finished_at: started_at,
            log_size_seen: accepted.log_size,
            log_root_seen: Some(accepted.log_root.to_base64()),
            trust: Some(accepted.trust.clone()),
        };
        // Nothing runs unless a gateway can later learn how it ended.
        self.acceptor
            .state()
            .outcome_running(&event_id, started_at, &interrupted)
            .await
            .map_err(|e| {
                Refusal::new(
                    RefusalCode::Unavailable,
                    format!("nothing ran: the agent cannot record the dispatch's outcome: {e}"),
                )
            })?;
        let agent = self.clone();
        let run = tokio::spawn(async move { agent.run_accepted(accepted, interrupted).await });
        match run.await {
            Ok(r) => r,
            Err(e) => Err(Refusal::new(
                RefusalCode::Unavailable,
                format!("the action stopped abnormally ({e}); its outcome is recorded as interrupted at the next start"),
            )),
        }
    }

    /// Signs a refusal of `req`: the customer's log then holds the agent's word
    /// that nothing ran, and why, not only the gateway's.
    async fn signed(&self, mut r: Refusal, req: &DispatchRequest) -> Refusal {
        let dispatch_digest = req
            .dispatch
            .payload_bytes(crate::dispatch::DISPATCH_PAYLOAD_TYPE)
            .ok()
            .map(|p| palisade_core::Sha256Digest::of(&p));
        let c = self.acceptor.config();
        let statement = crate::dispatch::AgentRefusal {
            schema: crate::dispatch::REFUSAL_SCHEMA.into(),
            cluster: c.cluster.clone(),
            instance: c.instance.clone(),
            dispatch_digest,
            code: r.code,
            detail: r.detail.clone(),
            at: Timestamp::now(),
            log_size_seen: self.acceptor.view_size().await,
            trust: self.acceptor.trust_now().await,
        };
        match statement.sign(&self.key) {
            Ok(env) => r.signed = Some(Box::new(env)),
            Err(e) => tracing::error!(error = %e, "a refusal could not be signed"),
        }
        r
    }

    /// Runs an accepted dispatch, signs its result and stores it.
    async fn run_accepted(
        &self,
        accepted: crate::accept::Accepted,
        template: AgentResult,
    ) -> Result<palisade_policy::dsse::Envelope, Refusal> {
        let outcome = self.services.execute(&accepted).await;
        let finished_at = Timestamp::now();
        let (outcome, output, output_digest, error) = match outcome {
            Ok(o) => (
                ResultOutcome::Succeeded,
                Some(o.value),
                Some(o.digest),
                None,
            ),
            Err(e) => {
                tracing::warn!(event = %accepted.event.event_id, error = %e, "action failed");
                (
                    ResultOutcome::Failed,
                    None,
                    None,
                    Some(e.chars().take(512).collect()),
                )
            }
        };
        let result = AgentResult {
            outcome,
            output,
            output_digest,
            error,
            finished_at,
            ..template
        };
        let envelope = result.sign(&self.key).map_err(|e| {
            tracing::error!(error = %e, "the action ran but its result could not be signed");
            Refusal::new(
                RefusalCode::Unavailable,
                format!("the action ran, but its result could not be signed: {e}"),
            )
        })?;
        self.metrics.executed(result.outcome);
        if result.outcome == ResultOutcome::Succeeded
            && result.action.to_string() == crate::handlers::BACKUP_ACTION
        {
            self.metrics.backup_at(finished_at);
        }
        let event_id = result.event_id.to_string();
        if let Err(e) = self
            .acceptor
            .state()
            .outcome_done(&event_id, finished_at, &envelope)
            .await
        {
            // The answer still goes back; only a later question by event id would
            // find the action recorded as running (and, after a restart, interrupted).
            tracing::error!(event = %event_id, error = %e, "cannot store the dispatch's result");
        }
        Ok(envelope)
    }

    /// What is known of the dispatch of `event_id`.
    pub async fn outcome(&self, event_id: &str) -> Result<Option<StoredOutcome>, String> {
        self.acceptor
            .state()
            .outcome(event_id)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The error of a result signed for a dispatch the agent stopped in.
pub const INTERRUPTED: &str =
    "interrupted: the agent stopped while the action ran; it may have partly run";

/// A refusal as the agent answers it: its status and the problem JSON.
fn refused(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
    let body = serde_json::to_vec(&r).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

async fn dispatch(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let req: DispatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let r = Refusal::new(RefusalCode::Malformed, format!("request body: {e}"));
            tracing::warn!(code = "malformed", "dispatch refused");
            agent.metrics.refused(r.code);
            return refused(r);
        }
    };
    match agent.handle(&req).await {
        Ok(envelope) => Json(envelope).into_response(),
        Err(r) => {
            tracing::warn!(refusal = %r, "dispatch refused");
            agent.metrics.refused(r.code);
            refused(agent.signed(r, &req).await)
        }
    }
}

async fn result_of(State(agent): State<Arc<Agent>>, Path(event_id): Path<String>) -> Response {
    // An event id is 32 hex digits; anything else was never accepted.
    let Ok(id) = palisade_core::EventId::parse(&event_id) else {
        return refused(Refusal::new(RefusalCode::Malformed, "not an event id"));
    };
    match agent.outcome(&event_id).await {
        Ok(Some(StoredOutcome::Done { envelope, .. })) => Json(envelope).into_response(),
        Ok(Some(StoredOutcome::Running { started_at, .. })) => (
            StatusCode::ACCEPTED,
            Json(Running {
                status: "running".into(),
                event_id: id,
                started_at,
            }),
        )
            .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::json!({
                "type": "urn:palisade:agent:unknown-dispatch",
                "title": "unknown dispatch",
                "status": 404,
                "detail": "this agent never accepted a dispatch for this event",
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => refused(Refusal::new(RefusalCode::Unavailable, e)),
    }
}

async fn health(State(agent): State<Arc<Agent>>) -> Response {
    let held = agent.acceptor.loaded_policy().await;
    let policy = held.policy.clone();
    let c = agent.acceptor.config();
    let etcd_running = match &agent.services.supervisor {
        Some(sup) => sup.status(Some("etcd")).await.ok().and_then(|s| {
            s.components
                .first()
                .map(|e| e.state == crate::supervisor::ComponentState::Running)
        }),
        None => None,
    };
    match agent.acceptor.log_size_seen().await {
        Ok(size) => Json(Health {
            etcd_running,
            status: "ok".into(),
            cluster: c.cluster.clone(),
            instance: c.instance.clone(),
            policy_version: policy.version(),
            policy_digest: policy.digest().to_string(),
            log_size_seen: size,
            trust_expires_at: Some(held.expires),
            trust_unverified: held.unverified,
        })
        .into_response(),
        Err(e) => refused(Refusal::new(RefusalCode::Unavailable, e)),
    }
}

/// Serves the agent on `cfg.listen` until `shutdown` resolves. `ready` is called with
/// the bound address once it accepts connections.
pub async fn run(
    cfg: &AgentConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), AgentError> {
    let tls = palisade_pki::server_config(
        &cfg.tls.ca,
        &cfg.tls.cert,
        &cfg.tls.key,
        ClientAuth::Required(vec![Role::Gateway]),
    )
    .map_err(|e| AgentError::Setup(format!("TLS: {e}")))?;
    let agent = Agent::start(cfg).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| AgentError::Listen {
            addr: cfg.listen.clone(),
            reason: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| AgentError::Listen {
        addr: cfg.listen.clone(),
        reason: e.to_string(),
    })?;
    let pruner = {
        let agent = agent.clone();
        let state = agent.acceptor().state().clone();
        let grace = cfg.clock_skew_secs + 60;
        tokio::spawn(async move {
            loop {
                // Fresh metadata (a `policy refresh`) is picked up, and an expiry
                // coming is said, without waiting for a dispatch.
                match agent.acceptor().reload_policy().await {
                    Ok(held) => warn_if_expiring(&held, Timestamp::now()),
                    Err(e) => tracing::error!(error = %e, "the policy cannot be verified"),
                }
                if let Err(e) = state.prune_nonces(Timestamp::now(), grace).await {
                    tracing::warn!(error = %e, "pruning the replay cache failed");
                }
                if let Err(e) = state
                    .prune_outcomes(Timestamp::now(), RESULTS_KEPT_SECS)
                    .await
                {
                    tracing::warn!(error = %e, "pruning the kept results failed");
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        })
    };
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = match &cfg.metrics_listen {
        Some(m) => {
            let a = agent.clone();
            let render: Arc<dyn Fn() -> futures::future::BoxFuture<'static, String> + Send + Sync> =
                Arc::new(move || {
                    let a = a.clone();
                    Box::pin(async move { a.render_metrics().await })
                });
            let (bound, task) = crate::metrics::serve_loopback(m, render, async {
                let _ = metrics_stopped.await;
            })
            .await
            .map_err(AgentError::Setup)?;
            tracing::info!(%bound, "metrics served");
            Some(task)
        }
        None => None,
    };
    if agent.services.backups.is_some() {
        // The newest backup in the store, for the backup-overdue alert.
        let agent = agent.clone();
        tokio::spawn(async move {
            let Some(b) = &agent.services.backups else {
                return;
            };
            match b.list().await {
                Ok(listing) => {
                    if let Some(newest) = listing.backups.first() {
                        agent.metrics.backup_at(newest.created_at);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the backups at start"),
            }
        });
    }
    ready(addr);
    let served = palisade_tlog_service::https::serve(listener, tls, agent.router(), shutdown).await;
    let _ = stop_metrics.send(());
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    pruner.abort();
    agent.shutdown().await;
    served.map_err(|e| AgentError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}
