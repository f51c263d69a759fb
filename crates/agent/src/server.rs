//! The agent process: its two routes, and how a dispatch flows through them.
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /v1/dispatch` | gateway certificate (TLS handshake) | accept ([`crate::accept`]), execute ([`crate::handlers`]), answer with the signed result |
//! | `GET /healthz` | gateway certificate | liveness, policy version and digest, newest checkpoint size |
//!
//! There is no other route, and none may be added: no shell, exec, file, log
//! streaming, port-forward or "run this binary" (tests/claims/c1_c2_agent_surface.rs
//! fails if this router grows).

use crate::accept::{Acceptor, AcceptorConfig, PolicySource};
use crate::config::{AgentConfig, TrustFiles};
use crate::dispatch::{
    AgentResult, DispatchRequest, Health, Refusal, RefusalCode, ResultOutcome, DISPATCH_PATH,
    HEALTH_PATH, MAX_REQUEST_BYTES, RESULT_SCHEMA,
};
use crate::etcd::Etcd;
use crate::handlers::Services;
use crate::kube::KubeClient;
use crate::supervisor::Supervisor;
use crate::view::AgentState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use palisade_core::time::Timestamp;
use palisade_pki::{ClientAuth, Role};
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_policy::tuf::RepoDir;
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

/// The policy as the agent verifies it itself: the TUF chain from its own root,
/// approvals, no rollback below what its datastore accepted.
pub struct TufPolicy {
    pub trust: TrustFiles,
}

impl TufPolicy {
    /// Verifies the published policy; the answer keeps who wrote and approved it.
    pub async fn load_verified(
        &self,
    ) -> Result<palisade_policy::trusted_policy::VerifiedPolicy, String> {
        let root = std::fs::read(&self.trust.root)
            .map_err(|e| format!("trusted root {}: {e}", self.trust.root.display()))?;
        let repo = RepoDir::new(&self.trust.repo);
        palisade_policy::trusted_policy::verify_policy(&repo, &root, &self.trust.datastore)
            .await
            .map_err(|e| {
                format!(
                    "the policy in {} does not verify: {e}",
                    self.trust.repo.display()
                )
            })
    }
}

#[async_trait::async_trait]
impl PolicySource for TufPolicy {
    async fn load(&self) -> Result<palisade_policy::Policy, String> {
        self.load_verified().await.map(|v| v.policy)
    }
}

/// A running agent.
pub struct Agent {
    acceptor: Acceptor,
    services: Services,
    key: SigningKey,
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
        let services = Services {
            backups,
            etcd: Etcd::new(&cfg.etcd).map_err(|e| AgentError::Setup(e.to_string()))?,
            kube,
            supervisor,
            certs: cfg.certs.clone(),
            disks: cfg.disks.clone(),
            max_output_bytes: cfg.max_output_bytes,
        };
        Ok(Arc::new(Agent {
            acceptor,
            services,
            key,
        }))
    }

    /// The agent's only routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(DISPATCH_PATH, post(dispatch))
            .route(HEALTH_PATH, get(health))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(self.clone())
    }

    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// Stops supervised components.
    pub async fn shutdown(&self) {
        if let Some(s) = &self.services.supervisor {
            s.shutdown().await;
        }
    }

    /// Accepts, executes and signs: the whole path of one dispatch.
    pub async fn handle(
        &self,
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
            schema: RESULT_SCHEMA.into(),
            dispatch_digest: accepted.dispatch_digest,
            event_id: accepted.event.event_id.clone(),
            cluster: accepted.dispatch.cluster.clone(),
            instance: accepted.dispatch.instance.clone(),
            action: accepted.dispatch.action.clone(),
            outcome,
            output_schema: accepted.action.output_schema().to_string(),
            output,
            output_digest,
            error,
            started_at,
            finished_at,
            log_size_seen: accepted.log_size,
        };
        result.sign(&self.key).map_err(|e| {
            tracing::error!(error = %e, "the action ran but its result could not be signed");
            Refusal::new(
                RefusalCode::Unavailable,
                format!("the action ran, but its result could not be signed: {e}"),
            )
        })
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::FORBIDDEN);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

async fn dispatch(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let req: DispatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let r = Refusal::new(RefusalCode::Malformed, format!("request body: {e}"));
            tracing::warn!(code = "malformed", "dispatch refused");
            return r.into_response();
        }
    };
    match agent.handle(&req).await {
        Ok(envelope) => Json(envelope).into_response(),
        Err(r) => {
            tracing::warn!(refusal = %r, "dispatch refused");
            r.into_response()
        }
    }
}

async fn health(State(agent): State<Arc<Agent>>) -> Response {
    let policy = agent.acceptor.policy().await;
    let c = agent.acceptor.config();
    match agent.acceptor.log_size_seen().await {
        Ok(size) => Json(Health {
            status: "ok".into(),
            cluster: c.cluster.clone(),
            instance: c.instance.clone(),
            policy_version: policy.version(),
            policy_digest: policy.digest().to_string(),
            log_size_seen: size,
        })
        .into_response(),
        Err(e) => Refusal::new(RefusalCode::Unavailable, e).into_response(),
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
        let state = agent.acceptor().state().clone();
        let grace = cfg.clock_skew_secs + 60;
        tokio::spawn(async move {
            loop {
                if let Err(e) = state.prune_nonces(Timestamp::now(), grace).await {
                    tracing::warn!(error = %e, "pruning the replay cache failed");
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        })
    };
    ready(addr);
    let served = palisade_tlog_service::https::serve(listener, tls, agent.router(), shutdown).await;
    pruner.abort();
    agent.shutdown().await;
    served.map_err(|e| AgentError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}
