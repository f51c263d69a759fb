//! The request pipeline: the only path from an operator to a control plane, in the
//! order docs/architecture.md gives, failing closed at each step ([`Gateway::run`]).
//!
//! 1. **Authenticate**: an OIDC token (or the development issuer's, when enabled), or
//!    an operator certificate.
//! 2. **Authorize**: a *current* on-call shift in a schedule that grants, on this
//!    cluster, the role the action requires. The grant ends with the shift.
//! 3. **Rate limit**: the action's per-operator limit from the policy.
//! 4. **Validate**: the action exists in the verified policy; its parameters and the
//!    justification pass the policy's validator.
//! 5. **Log first**: the intent is appended to the cluster's log and witnessed.
//! 6. **Dispatch** to the instance's agent with the proofs.
//! 7. **Record the result**: the agent's signed outcome is appended to the same log.
//!
//! Every refusal at steps 1–4 is itself appended to the cluster's log (when the
//! cluster exists), so attempts are visible to the customer too. There is no other
//! path: no role, flag or setting skips a step.
//!
//! Details of the order: authentication comes before the body, the
//! `Idempotency-Key` header and the cluster are even read, so an unauthenticated
//! caller gets the same 401 whatever the cluster (its attempt is logged in the
//! background, at most [`UNAUTHENTICATED_LOGGED_PER_MINUTE`] per source address and
//! minute). An unknown cluster is a 404 that nothing logs: it has no log. At step 2,
//! of the grants carrying the action's role the one whose shift ends last is used;
//! its `ends_at` is logged with the intent. At step 4 a cluster action goes to the
//! first instance whose agent's health answer shows its etcd member running and its
//! trust verified (the first instance if none does). The problem document of a
//! logged refusal carries its `log_index`; a refusal the log did not take still
//! stands, and its detail says so. Steps 5–7 run in a task of their own, so an
//! operator who hangs up does not stop the result from being logged.

use crate::config::GatewayConfig;
use crate::ops::{Idem, OpStatus, Operation, Ops};
use crate::problem::Problem;
use palisade_core::event::{Actor, Event, GrantRef, Outcome, RefusalEvent, RefusalStage};
use palisade_core::inventory::{Cluster, Instance, Inventory};
use palisade_core::refusal::{LoggedAction, RefusalReason};
use palisade_core::time::Timestamp;
use palisade_core::{
    ActionName, ClusterId, EventId, InstanceId, OperatorId, Sha256Digest, TenantId,
};
use palisade_pki::CertName;
use palisade_policy::keys::PublicKey;
use palisade_policy::Policy;
use palisade_protocol::client::{prepare, CallError, Dispatcher, Request};
use palisade_protocol::dispatch::ResultOutcome;
use palisade_protocol::trust::LoadedPolicy;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

/// How the caller presented themselves.
#[derive(Debug, Clone)]
pub enum Credential {
    Bearer(String),
    /// An `operator` certificate: its name, and the chain the peer sent (its own
    /// first), checked against `operator_ca`.
    Certificate(
        CertName,
        Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
    ),
    None,
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    pub name: String,
    pub groups: Vec<String>,
    /// `oidc`, `dev` or `certificate`.
    pub via: &'static str,
    /// The issuer or certificate, recorded in every event of this caller.
    pub authn: palisade_core::event::Authn,
    /// Set for an automation identity (`[[service]]`): its name.
    pub service: Option<String>,
}

/// A grant an operator holds right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveGrant {
    pub schedule: String,
    pub roles: Vec<String>,
    pub clusters: Vec<String>,
    pub ends_at: Timestamp,
}

/// The body of `POST /v1/clusters/{cluster}/actions/{action}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// Required for instance actions; cluster actions go to the first instance.
    #[serde(default)]
    pub instance: Option<String>,
    /// The action's parameters (a JSON object; validated from its raw bytes, so a
    /// duplicated key is an error).
    #[serde(default)]
    pub parameters: Option<Box<serde_json::value::RawValue>>,
    /// Or the parameters as `name: "text"` pairs, typed by the policy (what
    /// `palisade op run --param k=v` sends). Not both.
    #[serde(default)]
    pub arguments: Option<std::collections::BTreeMap<String, String>>,
    pub ticket: String,
    pub reason: String,
}

/// How many unauthenticated attempts per source address and minute are logged.
pub const UNAUTHENTICATED_LOGGED_PER_MINUTE: u32 = 30;

/// Per-address counters of unauthenticated attempts (this replica only).
#[derive(Default)]
pub(crate) struct AttemptCounter {
    inner: std::sync::Mutex<HashMap<std::net::IpAddr, (i64, u32)>>,
}

impl AttemptCounter {
    fn allow(&self, ip: std::net::IpAddr, now: Timestamp) -> bool {
        let minute = now.unix_seconds() / 60;
        let Ok(mut m) = self.inner.lock() else {
            return false;
        };
        if m.len() > 100_000 {
            m.retain(|_, (w, _)| *w == minute);
        }
        let entry = m.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= UNAUTHENTICATED_LOGGED_PER_MINUTE
    }
}

/// How long an agent's health answer chooses the instance of cluster actions.
const HEALTH_REUSE: Duration = Duration::from_secs(2);

pub struct Gateway {
    pub(crate) inventory: Inventory,
    policy: RwLock<LoadedPolicy>,
    pub(crate) auth: crate::auth::Authenticators,
    pub(crate) oncall: crate::oncall::OnCall,
    pub(crate) ops: Ops,
    dispatcher: Dispatcher,
    pub(crate) agent_keys: HashMap<InstanceId, Vec<PublicKey>>,
    pseudonym_key: Vec<u8>,
    config: GatewayConfig,
    pub(crate) metrics: crate::metrics::Metrics,
    unauthenticated: AttemptCounter,
    pub(crate) refusals: crate::refusals::RefusalThrottle,
    /// Operations whose intent may be logged without their result.
    pub(crate) pending: crate::results::Pending,
    /// This process, as the owner of the unresolved records it drives.
    pub(crate) process_id: String,
    /// The operations this process is driving now.
    inflight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Each agent's last health answer (when, whether its etcd ran), for choosing
    /// the instance of a cluster action.
    instance_health: std::sync::Mutex<HashMap<String, (std::time::Instant, bool)>>,
    /// Whether the state is this process's alone (an embedded file): then a record
    /// another owner left is taken over at once.
    pub(crate) exclusive_state: bool,
    /// The console's one-time login codes and the sessions they opened.
    pub(crate) console: crate::console::Sessions,
}

fn metric_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::RefusedByAgent => "agent_refused",
        Outcome::NotDispatched => "not_dispatched",
        Outcome::OutcomeUnknown => "outcome_unknown",
    }
}

/// A refusal: the detailed answer for the caller, and what the log may say of it.
pub(crate) type Refused = (Problem, RefusalStage, RefusalReason);

fn refusal_problem(
    status: u16,
    stage: RefusalStage,
    reason: RefusalReason,
    detail: String,
) -> Refused {
    (
        Problem::new(status, stage_title(stage), detail),
        stage,
        reason,
    )
}

fn stage_title(stage: RefusalStage) -> &'static str {
    match stage {
        RefusalStage::Authenticate => "not authenticated",
        RefusalStage::Authorize => "not authorized",
        RefusalStage::Validate => "invalid request",
        RefusalStage::RateLimit => "rate limit reached",
    }
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: GatewayConfig,
        inventory: Inventory,
        policy: LoadedPolicy,
        auth: crate::auth::Authenticators,
        oncall: crate::oncall::OnCall,
        ops: Ops,
        pending: crate::results::Pending,
        exclusive_state: bool,
        dispatcher: Dispatcher,
        agent_keys: HashMap<InstanceId, Vec<PublicKey>>,
        pseudonym_key: Vec<u8>,
    ) -> Self {
        Self {
            pending,
            exclusive_state,
            process_id: EventId::random()
                .map(|e| e.to_string())
                .unwrap_or_else(|_| format!("pid-{}", std::process::id())),
            inflight: std::sync::Mutex::new(std::collections::HashSet::new()),
            instance_health: std::sync::Mutex::new(HashMap::new()),
            console: crate::console::Sessions::default(),
            refusals: crate::refusals::RefusalThrottle::new(config.refusal_log),
            inventory,
            policy: RwLock::new(policy),
            auth,
            oncall,
            ops,
            dispatcher,
            agent_keys,
            pseudonym_key,
            config,
            metrics: crate::metrics::Metrics::default(),
            unauthenticated: AttemptCounter::default(),
        }
    }

    pub async fn policy(&self) -> Arc<Policy> {
        self.policy.read().await.policy.clone()
    }

    /// The policy held, when its verification lapses, and whether the repository
    /// failed to verify at the last try.
    pub async fn loaded_policy(&self) -> LoadedPolicy {
        self.policy.read().await.clone()
    }

    pub(crate) async fn set_policy(&self, p: LoadedPolicy) {
        *self.policy.write().await = p;
    }

    /// The policy to validate a request with: verified, and not lapsed. A policy
    /// whose repository cannot be verified now (metadata expired, unreadable) is
    /// verified again here once, and refuses the request if it still cannot be.
    async fn current_policy(&self, now: Timestamp) -> Result<Arc<Policy>, Refused> {
        let held = self.loaded_policy().await;
        if held.holds(now) {
            return Ok(held.policy);
        }
        let source = palisade_protocol::trust::TufPolicy {
            trust: self.config.trust.clone(),
        };
        let why = match palisade_protocol::trust::PolicySource::load(&source).await {
            Ok(fresh) if fresh.unverified.is_none() => {
                tracing::info!(
                    version = fresh.policy.version(),
                    "the policy repository verifies again; actions are accepted"
                );
                let policy = fresh.policy.clone();
                self.set_policy(fresh).await;
                return Ok(policy);
            }
            Ok(kept) => kept.unverified.unwrap_or_default(),
            Err(e) => e,
        };
        Err(refusal_problem(
            503,
            RefusalStage::Validate,
            RefusalReason::TrustMetadata,
            format!(
                "no new action is accepted while the policy's trust metadata cannot be verified ({why}); the control planes keep running. The repository's owner runs `palisade policy refresh`"
            ),
        ))
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The name `tenant`'s log shows for an operator: a stable pseudonym of that
    /// tenant ([`crate::redact`]), never the name, so that no customer reads an
    /// operator's name and no two customers can link one operator.
    pub fn pseudonym(&self, tenant: &TenantId, operator: &str) -> OperatorId {
        crate::redact::operator(&self.pseudonym_key, tenant, operator)
    }

    /// A group or schedule name as `tenant`'s log shows it: a keyed digest.
    fn redacted(&self, tenant: &TenantId, kind: crate::redact::Kind, name: &str) -> String {
        crate::redact::keyed(&self.pseudonym_key, tenant, kind, name)
    }

    /// Step 1.
    pub async fn authenticate(
        &self,
        cred: &Credential,
        now: Timestamp,
    ) -> Result<Operator, Problem> {
        let op = self.auth.authenticate(cred, now).await?;
        // A certificate a `[[service]]` pins is that service, whatever its name says.
        if let palisade_core::event::Authn::Certificate { sha256 } = &op.authn {
            if let Some(svc) = self.service_pinning(sha256) {
                return Ok(Operator {
                    name: svc.operator_name(),
                    groups: Vec::new(),
                    via: "service",
                    authn: op.authn,
                    service: Some(svc.name.clone()),
                });
            }
        }
        Ok(op)
    }

    fn service_pinning(&self, sha256: &str) -> Option<&crate::config::ServiceIdentity> {
        self.config
            .services
            .iter()
            .find(|s| s.certificates.iter().any(|c| c == sha256))
    }

    fn service(&self, op: &Operator) -> Option<&crate::config::ServiceIdentity> {
        let name = op.service.as_deref()?;
        self.config.services.iter().find(|s| s.name == name)
    }

    /// The grants `op` holds now, on `cluster` if given.
    pub fn grants(
        &self,
        op: &Operator,
        cluster: Option<&ClusterId>,
        now: Timestamp,
    ) -> Vec<ActiveGrant> {
        // A service holds a standing grant (it is on no rota); renewed at every call.
        if op.service.is_some() {
            let Some(svc) = self.service(op) else {
                return Vec::new();
            };
            let covers = |c: &ClusterId| svc.clusters.iter().any(|x| x == "*" || x == c.as_str());
            if cluster.is_some_and(|c| !covers(c)) {
                return Vec::new();
            }
            return vec![ActiveGrant {
                schedule: svc.operator_name(),
                roles: vec![svc.role.clone()],
                clusters: svc.clusters.clone(),
                ends_at: Timestamp::from_unix_seconds(now.unix_seconds() + 3600),
            }];
        }
        self.oncall.grants(&op.name, cluster, now)
    }

    fn cluster(&self, id: &str) -> Result<(&Cluster, ClusterId), Problem> {
        let unknown = || {
            Problem::new(
                404,
                "unknown cluster",
                format!("no cluster {id:?} in the inventory"),
            )
        };
        let cid = ClusterId::parse(id).map_err(|_| unknown())?;
        let c = self.inventory.cluster(&cid).ok_or_else(unknown)?;
        Ok((c, cid))
    }

    /// Appends a refusal to the cluster's log; the refusal stands whether or not
    /// that works, and the answer says if it could not be logged.
    pub(crate) async fn log_refusal(
        &self,
        cluster: &Cluster,
        actor: Option<&Operator>,
        action: &str,
        (mut problem, stage, reason): Refused,
    ) -> Problem {
        self.metrics.refused(stage);
        match self
            .append_refusal(cluster, actor, action, stage, reason, problem.status)
            .await
        {
            Ok(index) => problem.log_index = Some(index),
            Err(e) => {
                tracing::warn!(error = %e, "a refusal could not be logged");
                problem
                    .detail
                    .push_str(" (this refusal could not be logged: the log is unavailable)");
            }
        }
        problem
    }

    /// The refusal event itself: a fixed reason code, the status answered, the
    /// action only as a valid name (else `unknown-action` and a digest), the actor
    /// only as the tenant's pseudonym ([`palisade_core::refusal`]).
    async fn append_refusal(
        &self,
        cluster: &Cluster,
        actor: Option<&Operator>,
        action: &str,
        stage: RefusalStage,
        reason: RefusalReason,
        status: u16,
    ) -> Result<u64, CallError> {
        // A well-formed name the policy lacks is still text the caller chose.
        let policy = self.policy().await;
        let (action, action_digest) =
            LoggedAction::of_known(action, |n| policy.action_named(n).is_some());
        let event = Event::Refusal(RefusalEvent {
            event_id: EventId::random().map_err(|e| CallError::Setup(e.to_string()))?,
            time: Timestamp::now(),
            cluster: cluster.id.clone(),
            actor: actor.map(|a| self.pseudonym(&cluster.tenant, &a.name)),
            authn: actor.map(|a| a.authn.clone()),
            action,
            action_digest,
            stage,
            reason,
            status,
            not_logged: None,
        });
        let entry = event
            .to_log_entry()
            .map_err(|e| CallError::Setup(e.to_string()))?;
        match self.dispatcher.append(cluster.id.as_str(), &entry).await {
            Ok(r) => Ok(r.index),
            // In the log either way; one without the witness quorum yet is witnessed
            // with a later batch.
            Err(CallError::Unwitnessed { index, .. }) => Ok(index),
            Err(e) => Err(e),
        }
    }

    /// The pipeline (module documentation). Returns the operation, finished or still
    /// running after the configured wait.
    pub async fn run(
        self: &Arc<Self>,
        cred: &Credential,
        source: std::net::IpAddr,
        cluster: &str,
        action: &str,
        body: &[u8],
        idempotency_key: Result<Option<String>, Problem>,
    ) -> Result<Operation, Problem> {
        let now = Timestamp::now();
        // 1. Authenticate, before the cluster is even looked up: whoever cannot
        // authenticate gets the same answer, at the same speed, whatever the cluster,
        // so that cluster ids cannot be enumerated without credentials.
        let op = match self.authenticate(cred, now).await {
            Ok(op) => op,
            Err(p) => {
                self.metrics.refused(RefusalStage::Authenticate);
                self.log_unauthenticated(source, cluster, action, p.status, now);
                return Err(p);
            }
        };
        // The request itself is read only from an authenticated caller.
        let body: RunBody = serde_json::from_slice(body)
            .map_err(|e| Problem::new(400, "bad request", format!("request body: {e}")))?;
        let idempotency_key = idempotency_key?;
        let idempotency_key = idempotency_key.as_deref();
        // Which log refusals go to. An unknown cluster has no log (and no customer).
        let (cluster, cluster_id) = self.cluster(cluster)?;
        match self
            .authorize_validate(&op, cluster, &cluster_id, action, &body, now)
            .await
        {
            Ok(checked) => {
                self.execute(op, cluster, checked, body, idempotency_key, now)
                    .await
            }
            Err(refused) => Err(self
                .log_or_count_refusal(cluster, &op, action, refused, now)
                .await),
        }
    }

    /// Logs an unauthenticated attempt on `cluster` if it exists, in the background
    /// (the answer must not depend on it), and at a bounded rate per address: anyone
    /// can fail to authenticate, and nobody may grow a tenant's log at will.
    fn log_unauthenticated(
        self: &Arc<Self>,
        source: std::net::IpAddr,
        cluster: &str,
        action: &str,
        status: u16,
        now: Timestamp,
    ) {
        // Counted whether or not the cluster exists, so that which attempts reach a
        // log tells nothing about which clusters exist.
        if !self.unauthenticated.allow(source, now) {
            tracing::info!(
                "unauthenticated attempt not logged: more than {UNAUTHENTICATED_LOGGED_PER_MINUTE} from this address this minute"
            );
            return;
        }
        let Ok((cluster, _)) = self.cluster(cluster) else {
            return;
        };
        let gw = self.clone();
        let cluster = cluster.clone();
        let action = action.to_string();
        tokio::spawn(async move {
            if let Err(e) = gw
                .append_refusal(
                    &cluster,
                    None,
                    &action,
                    RefusalStage::Authenticate,
                    RefusalReason::NotAuthenticated,
                    status,
                )
                .await
            {
                tracing::warn!(error = %e, "an unauthenticated attempt could not be logged");
            }
        });
    }

    /// Steps 2–4.
    async fn authorize_validate(
        &self,
        op: &Operator,
        cluster: &Cluster,
        cluster_id: &ClusterId,
        action: &str,
        body: &RunBody,
        now: Timestamp,
    ) -> Result<Checked, Refused> {
        // 2. Authorize: a current shift granting a role on this cluster...
        let grants = self.grants(op, Some(cluster_id), now);
        if grants.is_empty() && self.oncall.stale_feed_grants_on(cluster_id, now) {
            return Err(refusal_problem(
                403,
                RefusalStage::Authorize,
                RefusalReason::OncallFeedStale,
                crate::oncall::FEED_STALE.to_string(),
            ));
        }
        if grants.is_empty() {
            let next = self
                .oncall
                .next_shift(&op.name, now)
                .map(|(schedule, start)| format!("; your next shift ({schedule}) starts {start}"))
                .unwrap_or_else(|| "; you have no upcoming shift".into());
            return Err(refusal_problem(
                403,
                RefusalStage::Authorize,
                RefusalReason::NotOnCall,
                format!("{} is not on call for cluster {cluster_id}{next}", op.name),
            ));
        }
        let policy = self.current_policy(now).await?;
        let Some(spec) = policy.action_named(action) else {
            return Err(refusal_problem(
                404,
                RefusalStage::Validate,
                RefusalReason::UnknownAction,
                format!(
                    "no action {:?} in the approved policy (version {})",
                    action.chars().take(64).collect::<String>(),
                    policy.version()
                ),
            ));
        };
        // A service runs only the actions its `[[service]]` lists.
        if let Some(svc) = self.service(op) {
            if !svc.actions.iter().any(|a| a == action) {
                return Err(refusal_problem(
                    403,
                    RefusalStage::Authorize,
                    RefusalReason::RoleInsufficient,
                    format!(
                        "service {} may run only {}",
                        svc.name,
                        svc.actions.join(", ")
                    ),
                ));
            }
        }
        // ...and the role this action requires, from a shift that is still running.
        let Some(grant) = grants
            .iter()
            .filter(|g| g.roles.iter().any(|r| r == &spec.role))
            .max_by_key(|g| g.ends_at)
        else {
            return Err(refusal_problem(
                403,
                RefusalStage::Authorize,
                RefusalReason::RoleInsufficient,
                format!(
                    "{} needs role {:?} on cluster {cluster_id}; your current shift grants {}",
                    action,
                    spec.role,
                    grants
                        .iter()
                        .flat_map(|g| g.roles.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        // 3. Rate limit (per operator and action).
        let allowed = self
            .ops
            .take(
                &op.name,
                action,
                spec.rate_limit.max,
                spec.rate_limit.per.as_secs(),
                now,
            )
            .await
            .map_err(|e| {
                refusal_problem(
                    503,
                    RefusalStage::RateLimit,
                    RefusalReason::RateLimitUnavailable,
                    format!("rate-limit state unavailable: {e}"),
                )
            })?;
        if !allowed {
            return Err(refusal_problem(
                429,
                RefusalStage::RateLimit,
                RefusalReason::RateLimited,
                format!(
                    "{action} is limited to {} per {}s per operator",
                    spec.rate_limit.max,
                    spec.rate_limit.per.as_secs()
                ),
            ));
        }
        // 4. Validate: parameters and justification, with the policy's own checks.
        let validated = match (&body.parameters, &body.arguments) {
            (Some(_), Some(_)) => {
                return Err(refusal_problem(
                    422,
                    RefusalStage::Validate,
                    RefusalReason::InvalidParameters,
                    "send parameters or arguments, not both".into(),
                ))
            }
            (None, Some(args)) => {
                let pairs: Vec<(String, String)> =
                    args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                policy.validate_args(action, &pairs)
            }
            (params, None) => {
                let raw = params.as_ref().map_or("{}", |r| r.get());
                policy.validate(action, raw.as_bytes())
            }
        }
        .map_err(|e| {
            refusal_problem(
                422,
                RefusalStage::Validate,
                RefusalReason::InvalidParameters,
                e.to_string(),
            )
        })?;
        let justification = policy
            .check_justification(action, &body.ticket, &body.reason)
            .map_err(|e| {
                refusal_problem(
                    422,
                    RefusalStage::Validate,
                    RefusalReason::InvalidJustification,
                    e.to_string(),
                )
            })?;
        // An action on what the customer owns runs only with their approval: with no
        // approvers in the tenant's statement, it cannot run at all.
        if palisade_policy::catalogue::needs_customer_approval(validated.handler())
            && self.approval_policy(cluster_id).is_none()
        {
            return Err(refusal_problem(
                403,
                RefusalStage::Authorize,
                RefusalReason::NoApprovers,
                format!(
                    "{action} changes what the customer owns: it runs only with the \
                     customer's approval, and tenant {}'s statement in force names no approvers",
                    cluster.tenant
                ),
            ));
        }
        let instance = match (&body.instance, validated.target()) {
            (Some(i), _) => cluster
                .instances
                .iter()
                .find(|x| x.id.as_str() == i)
                .ok_or_else(|| {
                    refusal_problem(
                        404,
                        RefusalStage::Validate,
                        RefusalReason::UnknownInstance,
                        format!(
                            "cluster {cluster_id} has no instance {:?}",
                            i.chars().take(64).collect::<String>()
                        ),
                    )
                })?,
            // A cluster of one instance needs no choice.
            (None, palisade_policy::Target::Instance) if cluster.instances.len() == 1 => {
                &cluster.instances[0]
            }
            (None, palisade_policy::Target::Instance) => {
                return Err(refusal_problem(
                    422,
                    RefusalStage::Validate,
                    RefusalReason::InstanceRequired,
                    format!(
                        "{action} acts on one instance: name it (instances: {})",
                        cluster
                            .instances
                            .iter()
                            .map(|i| i.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
            (None, palisade_policy::Target::Cluster) => {
                self.healthy_instance(cluster).await.ok_or_else(|| {
                    refusal_problem(
                        404,
                        RefusalStage::Validate,
                        RefusalReason::NoInstance,
                        format!("cluster {cluster_id} has no instances"),
                    )
                })?
            }
        };
        Ok(Checked {
            request: Request {
                tenant: cluster.tenant.clone(),
                cluster: cluster_id.clone(),
                instance: instance.id.clone(),
                actor: Actor {
                    service: op.service.clone(),
                    authn: Some(op.authn.clone()),
                    id: self.pseudonym(&cluster.tenant, &op.name),
                    groups: op
                        .groups
                        .iter()
                        .map(|g| self.redacted(&cluster.tenant, crate::redact::Kind::Group, g))
                        .collect(),
                    grant: Some(GrantRef {
                        schedule: self.redacted(
                            &cluster.tenant,
                            crate::redact::Kind::Schedule,
                            &grant.schedule,
                        ),
                        role: spec.role.clone(),
                        ends_at: grant.ends_at,
                    }),
                },
                action: ActionName::parse(action).map_err(|e| {
                    refusal_problem(
                        422,
                        RefusalStage::Validate,
                        RefusalReason::UnknownAction,
                        e.to_string(),
                    )
                })?,
                parameters: validated.params().clone(),
                justification,
                policy: validated.policy().clone(),
            },
            agent_url: instance.agent_url.clone(),
        })
    }

    /// The instance a cluster action goes to: of a cluster of several, the first
    /// whose agent answers its health check within two seconds with its etcd member
    /// running (all asked at once; an answer is reused for [`HEALTH_REUSE`]); the
    /// first instance when none does, so that the dispatch fails with that agent's
    /// own error.
    async fn healthy_instance<'c>(&self, cluster: &'c Cluster) -> Option<&'c Instance> {
        if cluster.instances.len() < 2 {
            return cluster.instances.first();
        }
        let known = |url: &str| {
            self.instance_health
                .lock()
                .ok()
                .and_then(|m| m.get(url).copied())
                .filter(|(at, _)| at.elapsed() < HEALTH_REUSE)
                .map(|(_, ok)| ok)
        };
        let asks = cluster.instances.iter().map(|i| async move {
            if let Some(ok) = known(&i.agent_url) {
                return ok;
            }
            let health = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.dispatcher.health(&i.agent_url),
            )
            .await;
            let ok = matches!(health, Ok(Ok(h)) if h.etcd_running != Some(false) && h.trust_unverified.is_none());
            if let Ok(mut m) = self.instance_health.lock() {
                m.insert(i.agent_url.clone(), (std::time::Instant::now(), ok));
            }
            ok
        });
        let healthy = futures::future::join_all(asks).await;
        cluster
            .instances
            .iter()
            .zip(healthy)
            .find_map(|(i, ok)| ok.then_some(i))
            .or_else(|| cluster.instances.first())
    }

    /// Steps 5–7, as an operation.
    async fn execute(
        self: &Arc<Self>,
        op: Operator,
        cluster: &Cluster,
        checked: Checked,
        body: RunBody,
        idempotency_key: Option<&str>,
        now: Timestamp,
    ) -> Result<Operation, Problem> {
        let prepared = prepare(
            &checked.request,
            Duration::from_secs(self.config.dispatch_ttl_secs),
            now,
        )
        .map_err(|e| Problem::new(500, "internal error", e))?;
        let id = prepared.intent.event_id.to_string();
        let parameters = serde_json::to_value(&checked.request.parameters).unwrap_or_default();
        if let Some(key) = idempotency_key {
            let digest = Sha256Digest::of(
                format!(
                    "{}\0{}\0{}\0{}\0{}\0{}",
                    cluster.id,
                    checked.request.instance,
                    checked.request.action,
                    parameters,
                    body.ticket,
                    body.reason
                )
                .as_bytes(),
            )
            .to_string();
            match self.ops.idempotency(&op.name, key, &digest, &id).await {
                Ok(Idem::New) => {}
                Ok(Idem::Same(existing)) => {
                    return match self.ops.get(&existing).await {
                        Ok(Some(o)) => Ok(o),
                        _ => Err(Problem::new(
                            409,
                            "request in progress",
                            format!(
                                "idempotency key {key:?} is being used by operation {existing}"
                            ),
                        )),
                    }
                }
                Ok(Idem::Conflict) => {
                    return Err(Problem::new(
                        422,
                        "idempotency key reused",
                        format!("idempotency key {key:?} was used for a different request"),
                    ))
                }
                Err(e) => return Err(Problem::new(503, "state unavailable", e.to_string())),
            }
        }
        let operation = Operation {
            id: id.clone(),
            operator: op.name.clone(),
            cluster: cluster.id.to_string(),
            instance: checked.request.instance.to_string(),
            action: checked.request.action.to_string(),
            parameters,
            ticket: body.ticket.clone(),
            status: OpStatus::Running,
            outcome: None,
            created_at: now,
            finished_at: None,
            event_id: id.clone(),
            intent_index: None,
            result_index: None,
            output: None,
            error: None,
            approval: None,
        };
        // An action the tenant's statement in force reserves for approval is logged
        // as a request and waits for the customer ([`crate::approvals`]).
        if let Some((approval, seq)) = self.approval_policy(&cluster.id) {
            let needed = self
                .policy()
                .await
                .action(&checked.request.action)
                .is_some_and(|a| {
                    palisade_policy::catalogue::needs_customer_approval(&a.handler)
                        || approval.requires(checked.request.action.as_str(), a.risk)
                });
            if needed {
                return self
                    .request_approval(
                        operation,
                        checked.request,
                        checked.agent_url,
                        &approval,
                        seq,
                        now,
                    )
                    .await;
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gw = self.clone();
        let started = operation.clone();
        tokio::spawn(async move {
            let done = gw.dispatch(operation, checked, prepared).await;
            let _ = tx.send(done);
        });
        match tokio::time::timeout(Duration::from_secs(self.config.wait_secs), rx).await {
            Ok(Ok(done)) => Ok(done),
            // Still running: what the state has (or, if its first save has not landed
            // yet, what was started).
            _ => match self.ops.get(&id).await {
                Ok(op) => Ok(op.unwrap_or(started)),
                Err(e) => Err(Problem::new(503, "state unavailable", e.to_string())),
            },
        }
    }

    /// Log the intent, dispatch, log the result; keeps the operation record current.
    /// An unresolved record ([`crate::results`]) is saved before the intent is
    /// appended and dropped once its result is in the log: whatever stops this task,
    /// the reconciler finishes the operation.
    pub(crate) async fn dispatch(
        &self,
        mut operation: Operation,
        checked: Checked,
        prepared: palisade_protocol::client::Prepared,
    ) -> Operation {
        let started = std::time::Instant::now();
        let cluster = checked.request.cluster.clone();
        let policy = match self.config.log.policy_for(&cluster) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .finish(
                        operation,
                        Outcome::NotDispatched,
                        None,
                        Some(format!("log trust: {e}")),
                    )
                    .await
            }
        };
        let keys: Vec<PublicKey> = self
            .agent_keys
            .get(&checked.request.instance)
            .cloned()
            .unwrap_or_default();
        let dispatch_digest = match prepared.dispatch.digest() {
            Ok(d) => d,
            Err(e) => {
                return self
                    .finish(operation, Outcome::NotDispatched, None, Some(e.to_string()))
                    .await
            }
        };
        let mut unresolved = crate::results::Unresolved {
            operation: prepared.intent.event_id.clone(),
            cluster: cluster.clone(),
            agent_url: checked.agent_url.clone(),
            dispatch_digest,
            expires_at: prepared.dispatch.expires_at,
            scan_from: self.dispatcher.known_size(&checked.agent_url).unwrap_or(0),
            intent_index: None,
            result: None,
            not_sent: false,
            owner: self.process_id.clone(),
            lease_until: Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 20),
        };
        let id = operation.id.clone();
        self.begin_inflight(&id);
        let done = self
            .drive(
                &mut operation,
                &mut unresolved,
                &checked,
                &prepared,
                &policy,
                &keys,
                started,
            )
            .await;
        self.end_inflight(&id);
        done
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        operation: &mut Operation,
        unresolved: &mut crate::results::Unresolved,
        checked: &Checked,
        prepared: &palisade_protocol::client::Prepared,
        policy: &palisade_tlog::checkpoint::LogPolicy,
        keys: &[PublicKey],
        started: std::time::Instant,
    ) -> Operation {
        // Recorded before the intent is appended: nothing may reach the log that the
        // gateway could forget.
        let (created, pending) =
            tokio::join!(self.ops.save(operation), self.pending.save(unresolved));
        if let Err(e) = created.and(pending) {
            self.metrics
                .dispatched("state_unavailable", started.elapsed());
            return self
                .finish(
                    operation.clone(),
                    Outcome::NotDispatched,
                    None,
                    Some(format!(
                        "nothing was logged or dispatched: the gateway could not record the operation (state unavailable: {e})"
                    )),
                )
                .await;
        }
        // 5. Log first: nothing is dispatched unless this succeeds.
        let logged = self
            .dispatcher
            .log_intent_for(prepared, &checked.agent_url)
            .await;
        let (entry, appended) = match logged {
            Ok(logged) => logged,
            // In the log without its witnesses: not dispatched.
            Err(CallError::Unwitnessed { index, reason }) => {
                self.metrics
                    .dispatched("log_unavailable", started.elapsed());
                unresolved.intent_index = Some(index);
                operation.intent_index = Some(index);
                let detail = format!(
                    "the log could not record the intent with its witnesses, so nothing was dispatched: the intent is at index {index}: {reason}"
                );
                return self
                    .conclude(
                        operation.clone(),
                        unresolved,
                        Outcome::NotDispatched,
                        None,
                        Some(detail),
                        None,
                        None,
                    )
                    .await;
            }
            Err(e) => {
                self.metrics
                    .dispatched("log_unavailable", started.elapsed());
                // Nothing was sent. The append may still have landed (its answer was
                // lost): the reconciler looks for the intent and, if it is there, logs
                // that nothing was dispatched on it.
                let ended = self
                    .finish(
                        operation.clone(),
                        Outcome::NotDispatched,
                        None,
                        Some(format!(
                            "the log could not record the intent, so nothing was dispatched: {e}"
                        )),
                    )
                    .await;
                // Handed over once the operation is recorded as ended.
                unresolved.not_sent = true;
                unresolved.lease_until = Timestamp::now();
                if let Err(e) = self.pending.save(unresolved).await {
                    tracing::warn!(error = %e, "cannot hand an unanswered intent append to the reconciler");
                }
                return ended;
            }
        };
        operation.intent_index = Some(appended.index);
        unresolved.intent_index = Some(appended.index);
        // 6. Dispatch with the proofs. The operation's progress (the intent's index) is
        // saved meanwhile: the intent is already in the log, so nothing waits on it.
        let (saved, pending, outcome) = tokio::join!(
            self.ops.save(operation),
            self.pending.save(unresolved),
            self.dispatcher.dispatch_logged(
                &checked.agent_url,
                prepared,
                &entry,
                &appended,
                policy,
                keys,
            )
        );
        if let Err(e) = saved.and(pending) {
            tracing::warn!(error = %e, "cannot record the operation's progress");
        }
        let mut attestation = None;
        let mut refusal = None;
        let (result_outcome, detail, output_digest) = match outcome {
            Ok(done) => {
                let o = match done.result.outcome {
                    ResultOutcome::Succeeded => Outcome::Succeeded,
                    ResultOutcome::Failed => Outcome::Failed,
                };
                operation.output = done.result.output.clone();
                attestation =
                    palisade_protocol::dispatch::result_attestation(&done.result, &done.envelope);
                (o, done.result.error.clone(), done.result.output_digest)
            }
            // Nothing reached the agent.
            Err(
                e @ (CallError::Log(_)
                | CallError::Setup(_)
                | CallError::Unwitnessed { .. }
                | CallError::NotSent(_)
                | CallError::Unreachable { .. }),
            ) => (
                Outcome::NotDispatched,
                Some(format!("not dispatched: {e}")),
                None,
            ),
            Err(CallError::Refused(r)) => {
                refusal = r.attestation().map(Box::new);
                (Outcome::RefusedByAgent, Some(r.to_string()), None)
            }
            // Sent, and no valid answer: the agent may have run it. The reconciler
            // asks the agent by event id and logs what it says.
            Err(e @ (CallError::NoAnswer { .. } | CallError::BadAnswer(_))) => {
                self.metrics
                    .dispatched("outcome_unknown", started.elapsed());
                operation.error = Some(format!(
                    "{e}; the gateway is asking the agent how the action ended"
                ));
                if let Err(e) = self.ops.save(operation).await {
                    tracing::warn!(error = %e, "cannot record the operation's progress");
                }
                return operation.clone();
            }
        };
        // 7. Record the result in the same log.
        self.metrics
            .dispatched(metric_name(result_outcome), started.elapsed());
        self.conclude(
            operation.clone(),
            unresolved,
            result_outcome,
            output_digest,
            detail,
            attestation,
            refusal,
        )
        .await
    }

    /// Logs the result of an operation whose outcome is known, and ends it. A result
    /// the log does not take now is kept (in the unresolved record) and appended by
    /// the reconciler; the operation ends meanwhile, without its result index.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        operation: Operation,
        unresolved: &mut crate::results::Unresolved,
        outcome: Outcome,
        output_digest: Option<Sha256Digest>,
        detail: Option<String>,
        agent: Option<palisade_core::event::AgentAttestation>,
        refusal: Option<Box<palisade_core::event::RefusalAttestation>>,
    ) -> Operation {
        let mut result = crate::results::result_event(
            &unresolved.cluster,
            &unresolved.operation,
            outcome,
            output_digest,
            operation.output.as_ref(),
            detail.as_deref(),
            false,
            agent,
        );
        result.agent_refusal = refusal;
        match self.append_result(&unresolved.cluster, &result).await {
            Some(index) => {
                let id = operation.id.clone();
                let (_, ended) = tokio::join!(
                    async {
                        if let Err(e) = self.pending.resolved(&id).await {
                            tracing::warn!(error = %e, "cannot drop a resolved record");
                        }
                    },
                    self.finish(operation, outcome, Some(index), detail)
                );
                ended
            }
            None => {
                let id = operation.id.clone();
                let ended = self.finish(operation, outcome, None, detail).await;
                // Handed to the reconciler once the operation is recorded as ended
                // (it then records the result's index). Were this write lost, the
                // reconciler would still ask the agent and learn the same outcome.
                unresolved.result = Some(result);
                unresolved.lease_until = Timestamp::now();
                if let Err(e) = self.pending.save(unresolved).await {
                    tracing::error!(error = %e, operation = %id, "cannot keep a result the log did not take");
                }
                ended
            }
        }
    }

    async fn finish(
        &self,
        mut operation: Operation,
        outcome: Outcome,
        result_index: Option<u64>,
        error: Option<String>,
    ) -> Operation {
        operation.status = crate::results::status_of(outcome);
        operation.outcome = Some(outcome);
        if outcome == Outcome::NotDispatched {
            // Nothing reached the instance: the provider's side failed, and that must
            // not use up the operator's rate limit.
            if let Err(e) = self
                .ops
                .give_back(&operation.operator, &operation.action, operation.created_at)
                .await
            {
                tracing::warn!(error = %e, "cannot give a rate-limit admission back");
            }
        }
        operation.result_index = result_index;
        if error.is_some() {
            operation.error = error;
        }
        if result_index.is_none() && operation.intent_index.is_some() {
            let note = "the result is not in the log yet: the gateway keeps appending it";
            operation.error = Some(match operation.error.take() {
                Some(e) => format!("{e}; {note}"),
                None => note.to_string(),
            });
        }
        operation.finished_at = Some(Timestamp::now());
        if let Err(e) = self.ops.save(&operation).await {
            tracing::error!(error = %e, operation = %operation.id, "cannot record the operation's end");
        }
        operation
    }

    pub(crate) fn is_inflight(&self, id: &str) -> bool {
        self.inflight.lock().map(|s| s.contains(id)).unwrap_or(true)
    }

    /// Marks `id` as driven by this process; false if it already is.
    pub(crate) fn begin_inflight(&self, id: &str) -> bool {
        self.inflight
            .lock()
            .map(|mut s| s.insert(id.to_string()))
            .unwrap_or(false)
    }

    pub(crate) fn end_inflight(&self, id: &str) {
        if let Ok(mut s) = self.inflight.lock() {
            s.remove(id);
        }
    }

    /// The key of the agent at `url`, as the inventory and configuration name it.
    pub(crate) fn agent_keys_for_url(&self, url: &str) -> Vec<PublicKey> {
        self.inventory
            .clusters
            .iter()
            .flat_map(|c| c.instances.iter())
            .find(|i| i.agent_url == url)
            .and_then(|i| self.agent_keys.get(&i.id).cloned())
            .unwrap_or_default()
    }

    /// Whether the policy, the log and the state answer (for `/readyz`).
    pub async fn ready(&self) -> Result<(), String> {
        let cluster = self
            .inventory
            .clusters
            .first()
            .ok_or("the inventory has no cluster")?;
        let policy = self.config.log.policy_for(&cluster.id)?;
        let _ = policy;
        self.ops
            .get("readyz-probe")
            .await
            .map_err(|e| format!("state: {e}"))?;
        Ok(())
    }
}

/// What steps 2–4 established.
pub(crate) struct Checked {
    request: Request,
    agent_url: String,
}

impl Checked {
    pub(crate) fn new(request: Request, agent_url: String) -> Self {
        Self { request, agent_url }
    }
}
