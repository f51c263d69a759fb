//! The request pipeline: the only path from an operator to a control plane, in the
//! order DESIGN.md gives, failing closed at each step ([`Gateway::run`]).
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

use crate::config::GatewayConfig;
use crate::ops::{Idem, OpStatus, Operation, Ops};
use crate::problem::Problem;
use palisade_agent::client::{prepare, CallError, Dispatcher, Request};
use palisade_agent::dispatch::ResultOutcome;
use palisade_core::event::{
    Actor, Event, GrantRef, Outcome, RefusalEvent, RefusalStage, ResultEvent,
};
use palisade_core::inventory::{Cluster, Inventory};
use palisade_core::refusal::{LoggedAction, RefusalReason};
use palisade_core::time::Timestamp;
use palisade_core::{
    ActionName, ClusterId, EventId, InstanceId, OperatorId, Sha256Digest, TenantId,
};
use palisade_pki::CertName;
use palisade_policy::keys::PublicKey;
use palisade_policy::Policy;
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

pub struct Gateway {
    pub(crate) inventory: Inventory,
    policy: RwLock<Arc<Policy>>,
    pub(crate) auth: crate::auth::Authenticators,
    pub(crate) oncall: crate::oncall::OnCall,
    pub(crate) ops: Ops,
    dispatcher: Dispatcher,
    agent_keys: HashMap<InstanceId, PublicKey>,
    pseudonym_key: Vec<u8>,
    config: GatewayConfig,
    pub(crate) metrics: crate::metrics::Metrics,
    unauthenticated: AttemptCounter,
    pub(crate) refusals: crate::refusals::RefusalThrottle,
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
        policy: Policy,
        auth: crate::auth::Authenticators,
        oncall: crate::oncall::OnCall,
        ops: Ops,
        dispatcher: Dispatcher,
        agent_keys: HashMap<InstanceId, PublicKey>,
        pseudonym_key: Vec<u8>,
    ) -> Self {
        Self {
            refusals: crate::refusals::RefusalThrottle::new(config.refusal_log),
            inventory,
            policy: RwLock::new(Arc::new(policy)),
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
        self.policy.read().await.clone()
    }

    pub(crate) async fn set_policy(&self, p: Policy) {
        *self.policy.write().await = Arc::new(p);
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
        self.auth.authenticate(cred, now).await
    }

    /// The grants `op` holds now, on `cluster` if given.
    pub fn grants(
        &self,
        op: &Operator,
        cluster: Option<&ClusterId>,
        now: Timestamp,
    ) -> Vec<ActiveGrant> {
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
        body: RunBody,
        idempotency_key: Option<&str>,
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
        let policy = self.policy().await;
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
                cluster.instances.first().ok_or_else(|| {
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
            created_at: now,
            finished_at: None,
            event_id: id.clone(),
            intent_index: None,
            result_index: None,
            output: None,
            error: None,
        };
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
    async fn dispatch(
        &self,
        mut operation: Operation,
        checked: Checked,
        prepared: palisade_agent::client::Prepared,
    ) -> Operation {
        let started = std::time::Instant::now();
        let cluster = checked.request.cluster.clone();
        let policy = match self.config.log.policy_for(&cluster) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .finish(
                        operation,
                        OpStatus::Refused,
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
            .into_iter()
            .collect();
        // 5. Log first: nothing is dispatched unless this succeeds. The operation is
        // recorded meanwhile (it is polled by its id), and nothing is dispatched
        // unless that succeeds too.
        let (created, logged) = tokio::join!(
            self.ops.save(&operation),
            self.dispatcher
                .log_intent_for(&prepared, &checked.agent_url)
        );
        let (entry, appended) = match (logged, created) {
            (Ok(logged), Ok(())) => logged,
            (Ok((_, appended)), Err(e)) => {
                self.metrics
                    .dispatched("state_unavailable", started.elapsed());
                let detail = format!(
                    "not dispatched: the gateway could not record the operation (state unavailable: {e})"
                );
                return self
                    .not_dispatched(operation, appended.index, &prepared, detail)
                    .await;
            }
            // In the log without its witnesses: not dispatched either.
            (Err(CallError::Unwitnessed { index, reason }), _) => {
                self.metrics
                    .dispatched("log_unavailable", started.elapsed());
                let detail = format!(
                    "the log could not record the intent with its witnesses, so nothing was dispatched: the intent is at index {index}: {reason}"
                );
                return self
                    .not_dispatched(operation, index, &prepared, detail)
                    .await;
            }
            (Err(e), _) => {
                self.metrics
                    .dispatched("log_unavailable", started.elapsed());
                return self
                    .finish(
                        operation,
                        OpStatus::Refused,
                        None,
                        Some(format!(
                            "the log could not record the intent, so nothing was dispatched: {e}"
                        )),
                    )
                    .await;
            }
        };
        operation.intent_index = Some(appended.index);
        // 6. Dispatch with the proofs. The operation's progress (the intent's index) is
        // saved meanwhile: the intent is already in the log, so nothing waits on it.
        let (saved, outcome) = tokio::join!(
            self.ops.save(&operation),
            self.dispatcher.dispatch_logged(
                &checked.agent_url,
                &prepared,
                &entry,
                &appended,
                &policy,
                &keys,
            )
        );
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot record the operation's progress");
        }
        let (result_outcome, detail, output_digest) = match outcome {
            Ok(done) => {
                let o = match done.result.outcome {
                    ResultOutcome::Succeeded => Outcome::Succeeded,
                    ResultOutcome::Failed => Outcome::Failed,
                };
                operation.output = done.result.output.clone();
                operation.error = done.result.error.clone();
                (o, done.result.error.clone(), done.result.output_digest)
            }
            // The intent is logged: whatever went wrong is recorded as its result.
            Err(e @ (CallError::Log(_) | CallError::Setup(_) | CallError::Unwitnessed { .. })) => {
                (Outcome::Failed, Some(format!("not dispatched: {e}")), None)
            }
            Err(CallError::Refused(r)) => (Outcome::Refused, Some(r.to_string()), None),
            Err(e @ CallError::NotSent(_)) => (Outcome::Failed, Some(e.to_string()), None),
            Err(e @ CallError::Unreachable { .. }) => {
                (Outcome::Unreachable, Some(e.to_string()), None)
            }
            Err(CallError::BadAnswer(e)) => (
                Outcome::Failed,
                Some(format!("the agent's answer was not valid: {e}")),
                None,
            ),
        };
        let status = if result_outcome == Outcome::Succeeded {
            OpStatus::Succeeded
        } else {
            OpStatus::Failed
        };
        // 7. Record the result in the same log.
        let result_index = self
            .log_result(
                &cluster,
                &prepared,
                result_outcome,
                output_digest,
                operation.output.as_ref(),
                detail.as_deref(),
            )
            .await;
        self.metrics.dispatched(
            match result_outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Failed => "failed",
                Outcome::Refused => "agent_refused",
                Outcome::Unreachable => "agent_unreachable",
            },
            started.elapsed(),
        );
        self.finish(operation, status, result_index, detail).await
    }

    /// Ends an operation whose intent is in the log at `index` but on which nothing
    /// was dispatched: the log says why after the intent.
    async fn not_dispatched(
        &self,
        mut operation: Operation,
        index: u64,
        prepared: &palisade_agent::client::Prepared,
        detail: String,
    ) -> Operation {
        operation.intent_index = Some(index);
        let result_index = self
            .log_result(
                &prepared.dispatch.cluster,
                prepared,
                Outcome::Failed,
                None,
                None,
                Some(&detail),
            )
            .await;
        self.finish(operation, OpStatus::Refused, result_index, Some(detail))
            .await
    }

    /// Appends the result of an intent to its cluster's log (three tries); its index.
    async fn log_result(
        &self,
        cluster: &ClusterId,
        prepared: &palisade_agent::client::Prepared,
        outcome: Outcome,
        output_digest: Option<Sha256Digest>,
        output: Option<&serde_json::Value>,
        detail: Option<&str>,
    ) -> Option<u64> {
        let mut result = ResultEvent {
            event_id: EventId::random().unwrap_or_else(|_| prepared.intent.event_id.clone()),
            time: Timestamp::now(),
            cluster: cluster.clone(),
            intent: prepared.intent.event_id.clone(),
            outcome,
            output_digest,
            // The customer reads the output itself (it carries no customer content:
            // the agent reduced it to the output schema) and checks it against the
            // digest the agent signed.
            output: output_digest.and(palisade_core::output::loggable(output)),
            // The agent's or the log's words: escaped, so that no line can be forged.
            detail: detail.map(|d| palisade_core::sanitize::escape(d, 512)),
        };
        let entry = match Event::Result(result.clone()).to_log_entry() {
            Ok(entry) => entry,
            // Too large with its output: the digest alone is logged.
            Err(_) if result.output.is_some() => {
                result.output = None;
                Event::Result(result).to_log_entry().ok()?
            }
            Err(_) => return None,
        };
        // Answered once witnessed, like the intent: when the operator has the answer,
        // the customer can already read the result with its proof.
        for attempt in 0..3 {
            match self.dispatcher.append(cluster.as_str(), &entry).await {
                Ok(r) => return Some(r.index),
                // In the log, witnessed with a later batch: not appended again.
                Err(CallError::Unwitnessed { index, reason }) => {
                    tracing::warn!(index, %reason, "the result is logged but not yet witnessed");
                    return Some(index);
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "the result could not be logged yet");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        None
    }

    async fn finish(
        &self,
        mut operation: Operation,
        status: OpStatus,
        result_index: Option<u64>,
        error: Option<String>,
    ) -> Operation {
        operation.status = status;
        operation.result_index = result_index;
        if error.is_some() {
            operation.error = error;
        }
        if result_index.is_none() && operation.intent_index.is_some() {
            let note = "the result could not be appended to the log";
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
