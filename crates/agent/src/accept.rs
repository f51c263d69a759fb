//! The acceptance of a dispatch: the whole rule, in order, in one function
//! ([`Acceptor::accept`]). A dispatch runs only if every check holds; the first that
//! fails refuses it with a reason, and nothing is recorded except at the very end,
//! where the agent's view of the log advances and the nonce is spent.
//!
//! Before this function runs, TLS has already required a CA-signed client
//! certificate of the gateway role (anyone else fails the handshake).
//!
//! 1. **Signature**: the DSSE envelope verifies under a trusted gateway key, and its
//!    payload is the canonical encoding of a dispatch of the known schema.
//! 2. **Target**: the dispatch names this agent's tenant, cluster and instance.
//! 3. **Time**: issued no later than now + skew, not expired (now ≤ expires_at +
//!    skew), and valid for no longer than the configured maximum TTL.
//! 4. **Nonce**: never executed before (the replay cache survives restarts).
//! 5. **Policy**: the dispatch's policy digest is the digest of the bundle this agent
//!    verified itself from the TUF repository (re-verified once on mismatch, in case
//!    a newer approved policy was published).
//! 6. **Parameters**: the action exists in that policy and its parameters pass the
//!    same validator the gateway uses; the validated, canonical parameters are
//!    exactly the dispatched ones.
//! 7. **Event**: the entry is an intent event whose dispatch digest is this
//!    dispatch's SHA-256 and whose fields (event id, tenant, cluster, instance,
//!    actor, action, parameters, policy) are the dispatch's.
//! 8. **Log**: the entry is included in a checkpoint signed by the cluster log's key
//!    and cosigned by the configured witness quorum — and, on an agent configured
//!    with a tenant key, by the quorum of the tenant's own witnesses named in the
//!    newest statement signed by that key (carried by the dispatch, never older than
//!    one this agent accepted before) — each of those cosignatures made
//!    within the last `max_cosignature_age` (C2SP cosignatures carry their time; the
//!    log has its checkpoint cosigned again at least every minute, idle or not), so
//!    a frozen or long-withheld view cannot be fed to the agent.
//!
//!    8b. **Customer approval**: when the tenant's statement in force reserves this
//!    action for approval (by name or by its risk), the dispatch carries the request
//!    as logged (its entry hashes to the digest the intent names, proven in the
//!    cluster's log, for exactly this action, parameters and instance, not expired)
//!    and approvals of it by at least the threshold of distinct approvers of that
//!    statement, each within its validity; and the request was not spent before.
//! 9. **View**: that checkpoint is consistent with the newest checkpoint this agent
//!    accepted before (same root at the same size; a valid consistency proof from the
//!    older size), so a forked, rewritten or rolled-back log is refused.
//! 10. **Commit**: advance the view and the tenant statement (with no commit of
//!     their own on redb), then spend the approved request, if any, and the nonce,
//!     whose commit makes them durable; under one lock. A dispatch that ran always
//!     has its view stored.
//!
//! Because the nonce is spent only at step 10, a refused dispatch can be sent again
//! unchanged (with fresher proofs after `stale_view`); an accepted one never runs
//! twice. A failure to read or write the agent's state at any step is `unavailable`.

use crate::dispatch::{Dispatch, DispatchRequest, Refusal, RefusalCode, DISPATCH_PAYLOAD_TYPE};
use crate::view::AgentState;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use palisade_core::event::{EnforcedTrust, Event, IntentEvent};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, InstanceId, TenantId};
use palisade_policy::customer_approval::{count_approvals, ApprovalPolicy, RequestRef};
use palisade_policy::keys::PublicKey;
use palisade_policy::tenant::{OpenedTrust, TenantTrust};
use palisade_policy::ValidatedAction;
use palisade_tlog::checkpoint::WitnessGroup;
use palisade_tlog::checkpoint::{Checkpoint, LogPolicy};
use palisade_tlog::hash::Hash;
use palisade_tlog::note::VerifierKey;
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tree::verify_consistency;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};

pub use palisade_protocol::trust::{LoadedPolicy, PolicySource};

/// What the agent trusts and who it is.
pub struct AcceptorConfig {
    pub tenant: TenantId,
    pub cluster: ClusterId,
    pub instance: InstanceId,
    pub gateway_keys: Vec<PublicKey>,
    pub log: LogPolicy,
    pub max_ttl: Duration,
    pub clock_skew: Duration,
    /// How old the quorum's cosignatures of a checkpoint may be.
    pub max_cosignature_age: Duration,
    /// The tenant's key: with it, dispatches need the tenant's witness statement.
    pub tenant_key: Option<PublicKey>,
    /// Log keys retired by a rotation, with which the stored view still opens.
    pub retired_log_keys: Vec<VerifierKey>,
}

/// The most signatures a dispatch envelope may carry.
const MAX_DISPATCH_SIGNATURES: usize = 4;

/// A dispatch that passed every check; only [`Acceptor::accept`] makes one.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub dispatch: Dispatch,
    pub dispatch_digest: palisade_core::Sha256Digest,
    pub action: ValidatedAction,
    pub event: IntentEvent,
    /// The intent event's index in the cluster's log.
    pub log_index: u64,
    /// The size of the checkpoint that proved it (now the agent's view).
    pub log_size: u64,
    /// That checkpoint's root hash.
    pub log_root: palisade_tlog::hash::Hash,
    pub log_origin: String,
    /// The witnesses this dispatch's checkpoint had to satisfy.
    pub trust: EnforcedTrust,
}

/// A tenant statement in force: opened, and the checkpoint policy it makes.
#[derive(Clone)]
struct InForce {
    env: palisade_policy::dsse::Envelope,
    opened: OpenedTrust,
    policy: LogPolicy,
}

pub struct Acceptor {
    config: AcceptorConfig,
    policy: RwLock<LoadedPolicy>,
    source: Box<dyn PolicySource>,
    state: AgentState,
    /// Serialises steps 9 and 10 (verification before it is lock-free), and holds
    /// the stored view as last verified (its note bytes and checkpoint), so that an
    /// unchanged view is not verified again for every dispatch.
    commit: Mutex<Option<(Vec<u8>, Checkpoint)>>,
    /// The newest tenant statement accepted, as stored.
    tenant: RwLock<Option<palisade_core::event::TenantTrustRef>>,
    /// The statement opened last, so that its signature is checked once.
    opened: std::sync::Mutex<Option<InForce>>,
    /// The log's witnesses as the results name them.
    provider_witnesses: Vec<String>,
}

fn refuse(code: RefusalCode, detail: impl Into<String>) -> Refusal {
    Refusal::new(code, detail)
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    refuse(
        RefusalCode::Unavailable,
        format!("agent state unavailable: {e}"),
    )
}

impl Acceptor {
    /// Loads (verifies) the policy once; an agent without a verified policy does not
    /// start.
    pub async fn new(
        config: AcceptorConfig,
        source: Box<dyn PolicySource>,
        state: AgentState,
    ) -> Result<Self, String> {
        let policy = source.load().await?;
        if let Some(why) = &policy.unverified {
            tracing::warn!(
                reason = %why,
                "the policy repository cannot be verified; starting with the policy verified before, and refusing every action until fresh metadata verifies"
            );
        }
        let tenant = match state.tenant_trust().await.map_err(|e| e.to_string())? {
            None => None,
            Some(bytes) => {
                let key = config.tenant_key.as_ref().ok_or(
                    "the state holds a tenant statement but tenant_key is not configured: \
                     an agent that enforced its tenant's witnesses does not stop doing so",
                )?;
                let env: palisade_policy::dsse::Envelope = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("stored tenant statement: {e}"))?;
                let opened = TenantTrust::open(&env, key)
                    .map_err(|e| format!("stored tenant statement: {e}"))?;
                Some(opened.reference())
            }
        };
        let provider_witnesses = config
            .log
            .witnesses()
            .iter()
            .map(ToString::to_string)
            .collect();
        Ok(Self {
            config,
            policy: RwLock::new(policy),
            source,
            state,
            commit: Mutex::new(None),
            tenant: RwLock::new(tenant),
            opened: std::sync::Mutex::new(None),
            provider_witnesses,
        })
    }

    pub async fn policy(&self) -> Arc<palisade_policy::Policy> {
        self.policy.read().await.policy.clone()
    }

    /// The policy held, until when its verification holds, and whether the
    /// repository failed to verify at the last try.
    pub async fn loaded_policy(&self) -> LoadedPolicy {
        self.policy.read().await.clone()
    }

    /// Verifies the repository again and keeps what it says.
    pub async fn reload_policy(&self) -> Result<LoadedPolicy, String> {
        let fresh = self.source.load().await?;
        let mut held = self.policy.write().await;
        if fresh.unverified.is_none() && held.unverified.is_some() {
            tracing::info!(
                version = fresh.policy.version(),
                "the policy repository verifies again; actions are accepted"
            );
        }
        *held = fresh.clone();
        Ok(fresh)
    }

    pub fn config(&self) -> &AcceptorConfig {
        &self.config
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// The size of the newest checkpoint accepted (0 if none).
    pub async fn log_size_seen(&self) -> Result<u64, String> {
        match self.state.checkpoint().await.map_err(|e| e.to_string())? {
            None => Ok(0),
            Some(note) => Ok(self
                .config
                .log
                .verify_stored(&note, &self.config.retired_log_keys)
                .map_err(|e| format!("stored checkpoint no longer verifies: {e}"))?
                .size()),
        }
    }

    /// The trust this agent enforces now (for a refusal it signs): the log's
    /// witnesses and quorum, and the tenant statement in force.
    pub async fn trust_now(&self) -> EnforcedTrust {
        self.enforced(self.tenant.read().await.clone())
    }

    /// The log's witnesses and quorum, with `tenant`'s statement.
    fn enforced(&self, tenant: Option<palisade_core::event::TenantTrustRef>) -> EnforcedTrust {
        EnforcedTrust {
            witnesses: self.provider_witnesses.clone(),
            quorum: u32::try_from(self.config.log.quorum()).unwrap_or(u32::MAX),
            tenant,
        }
    }

    /// The size of the newest checkpoint accepted, read without verifying it again
    /// (it was verified before it was stored, and again at start); 0 if none or
    /// unreadable. For what the agent signs beside a refusal.
    pub async fn view_size(&self) -> u64 {
        let Ok(Some(bytes)) = self.state.checkpoint().await else {
            return 0;
        };
        palisade_tlog::note::Note::parse(&bytes)
            .ok()
            .and_then(|n| Checkpoint::parse(n.text()).ok())
            .map_or(0, |c| c.size())
    }

    /// The acceptance rule (module documentation).
    pub async fn accept(&self, req: &DispatchRequest, now: Timestamp) -> Result<Accepted, Refusal> {
        // 1. Signature. A gateway signs once (twice during a key rotation at most):
        // an envelope with many signatures is refused before any is checked.
        if req.dispatch.signatures.len() > MAX_DISPATCH_SIGNATURES {
            return Err(refuse(
                RefusalCode::Malformed,
                format!(
                    "the dispatch carries {} signatures; at most {MAX_DISPATCH_SIGNATURES}",
                    req.dispatch.signatures.len()
                ),
            ));
        }
        let payload = req
            .dispatch
            .payload_bytes(DISPATCH_PAYLOAD_TYPE)
            .map_err(|e| refuse(RefusalCode::Malformed, e.to_string()))?;
        if req
            .dispatch
            .verified_by(&self.config.gateway_keys)
            .is_empty()
        {
            return Err(refuse(
                RefusalCode::BadSignature,
                "the dispatch is not signed by a trusted gateway key",
            ));
        }
        let dispatch = Dispatch::from_bytes(&payload)
            .map_err(|e| refuse(RefusalCode::Malformed, format!("dispatch: {e}")))?;
        let dispatch_digest = palisade_core::Sha256Digest::of(&payload);

        // 2. Target.
        let c = &self.config;
        if dispatch.tenant != c.tenant
            || dispatch.cluster != c.cluster
            || dispatch.instance != c.instance
        {
            return Err(refuse(
                RefusalCode::WrongTarget,
                format!(
                    "dispatch is for {}/{}/{}, this agent is {}/{}/{}",
                    dispatch.tenant,
                    dispatch.cluster,
                    dispatch.instance,
                    c.tenant,
                    c.cluster,
                    c.instance
                ),
            ));
        }

        // 3. Time.
        let skew = i64::try_from(c.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let max_ttl = i64::try_from(c.max_ttl.as_secs()).unwrap_or(i64::MAX);
        let (issued, expires, now_s) = (
            dispatch.issued_at.unix_seconds(),
            dispatch.expires_at.unix_seconds(),
            now.unix_seconds(),
        );
        if expires < issued || expires - issued > max_ttl {
            return Err(refuse(
                RefusalCode::TtlTooLong,
                format!(
                    "dispatch is valid for {}s; at most {max_ttl}s is accepted",
                    expires - issued
                ),
            ));
        }
        if issued > now_s + skew {
            return Err(refuse(
                RefusalCode::NotYetValid,
                format!(
                    "dispatch issued at {} is in the future (now {now})",
                    dispatch.issued_at
                ),
            ));
        }
        if now_s > expires + skew {
            return Err(refuse(
                RefusalCode::Expired,
                format!("dispatch expired at {} (now {now})", dispatch.expires_at),
            ));
        }

        // 4. Nonce.
        if self
            .state
            .nonce_seen(dispatch.nonce.as_str())
            .await
            .map_err(unavailable)?
        {
            return Err(refuse(
                RefusalCode::Replayed,
                format!("nonce {} was already executed", dispatch.nonce),
            ));
        }

        // 5. Policy.
        let policy = self.policy_for(&dispatch, now).await?;

        // 6. Parameters.
        let params_json = serde_json::to_vec(&dispatch.parameters)
            .map_err(|e| refuse(RefusalCode::Malformed, e.to_string()))?;
        let action = policy
            .validate(dispatch.action.as_str(), &params_json)
            .map_err(|e| {
                let code = match e {
                    palisade_policy::ValidationError::UnknownAction { .. } => {
                        RefusalCode::UnknownAction
                    }
                    _ => RefusalCode::InvalidParameters,
                };
                refuse(code, e.to_string())
            })?;
        if action.params() != &dispatch.parameters {
            return Err(refuse(
                RefusalCode::InvalidParameters,
                "parameters are not in their canonical form",
            ));
        }

        // 7. Event.
        let entry = req
            .event_bytes()
            .map_err(|e| refuse(RefusalCode::Malformed, format!("event: {e}")))?;
        let event = match Event::from_log_entry(&entry) {
            Ok(Event::Intent(e)) => *e,
            Ok(_) => {
                return Err(refuse(
                    RefusalCode::EventMismatch,
                    "the event is not an intent",
                ))
            }
            Err(e) => return Err(refuse(RefusalCode::EventMismatch, format!("event: {e}"))),
        };
        check_event_matches(&event, &dispatch, &dispatch_digest)?;

        // 8. Log: inclusion in a checkpoint signed by the log, cosigned by the quorum
        // (and by the tenant's witnesses, if this agent has a tenant key).
        let in_force = self.tenant_trust(req).await?;
        let log_policy = in_force.as_ref().map_or(&c.log, |t| &t.policy);
        let proof = TlogProof::parse(req.proof.as_bytes())
            .map_err(|e| refuse(RefusalCode::NotInLog, format!("proof: {e}")))?;
        let verified = proof
            .verify(&entry, log_policy)
            .map_err(|e| refuse(RefusalCode::NotInLog, e.to_string()))?;
        check_fresh(&verified, log_policy, c, now)?;
        // 8b. The customer's approval, when the tenant's statement in force requires
        // it for this action.
        // Some handlers change what the customer owns: those always need it.
        let always = palisade_policy::catalogue::needs_customer_approval(action.handler());
        let approval = match in_force.as_ref().and_then(|t| {
            let seq = t.opened.trust.seq;
            t.opened.trust.approval.as_ref().map(|a| (a, seq))
        }) {
            Some((policy, seq))
                if always || policy.requires(action.name().as_str(), action.risk()) =>
            {
                Some(
                    self.check_approval(policy, seq, req, &event, log_policy, now)
                        .await?,
                )
            }
            None if always => {
                return Err(refuse(
                    RefusalCode::NotApproved,
                    format!(
                        "{} changes what the customer owns: it runs only with the \
                         customer's approval, and the tenant's statement in force names no approvers",
                        action.name()
                    ),
                ))
            }
            _ => None,
        };
        let trust = self.enforced(in_force.as_ref().map(|t| t.opened.reference()));
        let new = verified.checkpoint().clone();
        let new_note = verified.note().to_bytes();

        // 9 and 10, under the lock.
        let mut verified_view = self.commit.lock().await;
        let old_note = self.state.checkpoint().await.map_err(unavailable)?;
        let old = match &old_note {
            None => None,
            Some(bytes) => match verified_view.as_ref() {
                Some((seen, old)) if seen == bytes => Some(old.clone()),
                _ => {
                    let old = c
                        .log
                        .verify_stored(bytes, &c.retired_log_keys)
                        .map_err(|e| {
                            unavailable(format!("stored checkpoint does not verify: {e}"))
                        })?;
                    *verified_view = Some((bytes.clone(), old.clone()));
                    Some(old)
                }
            },
        };
        if let Some(old) = &old {
            check_consistent(old, &new, req)?;
        }
        // The view moves first, without a commit of its own: the nonce's commit makes
        // both durable, in that order, so a dispatch that ran always has its view
        // stored. A view moved for a dispatch then refused as replayed is still a
        // checkpoint proven consistent with the one before.
        if old.as_ref().is_none_or(|o| o.size() < new.size()) {
            if !self
                .state
                .advance(old_note, new_note.clone())
                .await
                .map_err(unavailable)?
            {
                return Err(unavailable(
                    "the view changed underneath (two agents on one state file?)",
                ));
            }
            *verified_view = Some((new_note, new.clone()));
        }
        if let Some(t) = &in_force {
            self.record_tenant_trust(t).await?;
        }
        // An approval is used once: the request's digest is spent like a nonce (and
        // forgotten once the request has expired, when it is refused anyway).
        if let Some((spent, until)) = &approval {
            if !self
                .state
                .spend_nonce(spent, *until)
                .await
                .map_err(unavailable)?
            {
                return Err(refuse(
                    RefusalCode::NotApproved,
                    "this request's approval was already used",
                ));
            }
        }
        if !self
            .state
            .spend_nonce(dispatch.nonce.as_str(), dispatch.expires_at)
            .await
            .map_err(unavailable)?
        {
            return Err(refuse(
                RefusalCode::Replayed,
                format!("nonce {} was already executed", dispatch.nonce),
            ));
        }
        Ok(Accepted {
            dispatch,
            dispatch_digest,
            action,
            event,
            log_index: proof.index(),
            log_size: new.size(),
            log_root: *new.root(),
            log_origin: new.origin().to_string(),
            trust,
        })
    }

    /// Step 8b: the approval the dispatch carries, checked against the tenant's
    /// approval policy (statement `seq`): the request as logged describes exactly
    /// this dispatch and has not expired, the intent names it, and a threshold of
    /// distinct approvers the policy names approved it, each within their validity.
    /// Returns the key under which the approval is spent, and until when.
    async fn check_approval(
        &self,
        policy: &ApprovalPolicy,
        seq: u64,
        req: &DispatchRequest,
        intent: &IntentEvent,
        log_policy: &LogPolicy,
        now: Timestamp,
    ) -> Result<(String, Timestamp), Refusal> {
        let no = |detail: String| refuse(RefusalCode::NotApproved, detail);
        let (Some(bundle), Some(reference)) = (&req.approval, &intent.approval) else {
            return Err(no(format!(
                "{} needs the customer's approval (tenant statement seq {seq}), and none is attached",
                intent.action
            )));
        };
        let entry = BASE64
            .decode(&bundle.request)
            .map_err(|e| no(format!("the approval request is not base64: {e}")))?;
        let digest = palisade_core::Sha256Digest::of(&entry);
        if digest != reference.request_digest {
            return Err(no(format!(
                "the request attached ({digest}) is not the one the intent names ({})",
                reference.request_digest
            )));
        }
        let request = match Event::from_log_entry(&entry) {
            Ok(Event::ApprovalRequest(r)) => *r,
            _ => return Err(no("the request attached is not an approval request".into())),
        };
        // In the customer's log, at the index the approvals name.
        let proof = TlogProof::parse(bundle.proof.as_bytes())
            .map_err(|e| no(format!("the request's proof: {e}")))?;
        if proof.index() != reference.request_index {
            return Err(no(format!(
                "the request's proof is for index {}, the intent names index {}",
                proof.index(),
                reference.request_index
            )));
        }
        proof
            .verify(&entry, log_policy)
            .map_err(|e| no(format!("the request is not in the cluster's log: {e}")))?;
        if request.event_id != reference.request
            || request.tenant != intent.tenant
            || request.cluster != intent.cluster
            || request.instance != intent.instance
            || request.action != intent.action
            || request.parameters != intent.parameters
            || request.policy != intent.policy
        {
            return Err(no(format!(
                "request {} is for {} {:?} on {}/{}, not this action",
                request.event_id,
                request.action,
                request.parameters,
                request.cluster,
                request
                    .instance
                    .as_ref()
                    .map_or("-".into(), |i| i.to_string())
            )));
        }
        let skew = i64::try_from(self.config.clock_skew.as_secs()).unwrap_or(i64::MAX);
        if now.unix_seconds() > request.expires_at.unix_seconds() + skew {
            return Err(no(format!(
                "request {} expired at {}",
                request.event_id, request.expires_at
            )));
        }
        count_approvals(
            policy,
            RequestRef {
                tenant: &request.tenant,
                cluster: &request.cluster,
                request: &request.event_id,
                request_index: reference.request_index,
                request_digest: &digest,
            },
            &bundle.approvals,
            now,
            skew,
        )
        .map_err(no)?;
        let spent = format!("approval-{digest}");
        if self.state.nonce_seen(&spent).await.map_err(unavailable)? {
            return Err(no(format!(
                "the approval of request {} was already used",
                request.event_id
            )));
        }
        Ok((spent, request.expires_at))
    }

    /// Step 8's tenant part: the statement the dispatch carries, opened with the
    /// tenant's key, for this cluster, and not older than the one in force.
    async fn tenant_trust(&self, req: &DispatchRequest) -> Result<Option<InForce>, Refusal> {
        let c = &self.config;
        let Some(key) = &c.tenant_key else {
            return Ok(None);
        };
        let env = req.tenant_trust.as_ref().ok_or_else(|| {
            refuse(
                RefusalCode::TenantTrust,
                "this agent requires its tenant's witness statement and the dispatch carries none: \
                 the tenant registers its witness with `palisade customer register-witness`",
            )
        })?;
        let cached = self
            .opened
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .filter(|t| &t.env == env);
        let in_force = match cached {
            Some(t) => t,
            None => {
                let opened = TenantTrust::open(env, key).map_err(|e| {
                    refuse(
                        RefusalCode::TenantTrust,
                        format!("the tenant's witness statement is refused: {e}"),
                    )
                })?;
                if opened.trust.tenant != c.tenant || opened.trust.cluster != c.cluster {
                    return Err(refuse(
                        RefusalCode::TenantTrust,
                        format!(
                            "the tenant's statement is for {}/{}, this agent is {}/{}",
                            opened.trust.tenant, opened.trust.cluster, c.tenant, c.cluster
                        ),
                    ));
                }
                let policy = c
                    .log
                    .clone()
                    .with_group(WitnessGroup {
                        name: format!("tenant {}'s witnesses", c.tenant),
                        keys: opened.keys.clone(),
                        quorum: usize::try_from(opened.trust.quorum).unwrap_or(usize::MAX),
                    })
                    .map_err(|e| {
                        refuse(
                            RefusalCode::TenantTrust,
                            format!("the tenant's witness statement is refused: {e}"),
                        )
                    })?;
                let t = InForce {
                    env: env.clone(),
                    opened,
                    policy,
                };
                if let Ok(mut g) = self.opened.lock() {
                    *g = Some(t.clone());
                }
                t
            }
        };
        if let Some(current) = self.tenant.read().await.as_ref() {
            let (s, seq) = (&in_force.opened, current.seq);
            if !not_older(s, current) {
                return Err(refuse(
                    RefusalCode::TenantTrust,
                    format!(
                        "the tenant's statement {} (seq {}) is not the newest this agent enforces (seq {seq}): \
                         an older statement cannot loosen what the tenant requires",
                        s.digest, s.trust.seq
                    ),
                ));
            }
        }
        Ok(Some(in_force))
    }

    /// Step 10, tenant part (under the commit lock): a newer statement becomes the
    /// one in force, stored without a commit of its own (the nonce's commits it).
    async fn record_tenant_trust(&self, t: &InForce) -> Result<(), Refusal> {
        let mut current = self.tenant.write().await;
        if let Some(c) = current.as_ref() {
            if !not_older(&t.opened, c) {
                return Err(refuse(
                    RefusalCode::TenantTrust,
                    "a newer tenant statement was accepted meanwhile",
                ));
            }
        }
        if current.as_ref().is_none_or(|c| t.opened.trust.seq > c.seq) {
            let bytes = serde_json::to_vec(&t.env).map_err(unavailable)?;
            self.state
                .set_tenant_trust(bytes)
                .await
                .map_err(unavailable)?;
            *current = Some(t.opened.reference());
            tracing::info!(seq = t.opened.trust.seq, statement = %t.opened.digest, "tenant witness statement in force");
        }
        Ok(())
    }

    /// Step 5: the verified policy, re-verified once if the dispatch names another,
    /// or if its verification lapsed (its metadata expired, or the repository did
    /// not verify at the last try): no action runs on a policy whose repository
    /// cannot be verified now.
    async fn policy_for(
        &self,
        dispatch: &Dispatch,
        now: Timestamp,
    ) -> Result<Arc<palisade_policy::Policy>, Refusal> {
        let mut held = self.loaded_policy().await;
        if !held.holds(now) {
            held = self.reload_policy().await.map_err(|e| {
                refuse(
                    RefusalCode::TrustMetadata,
                    format!("the policy repository cannot be verified: {e}"),
                )
            })?;
            if let Some(why) = &held.unverified {
                return Err(refuse(
                    RefusalCode::TrustMetadata,
                    format!(
                        "this instance's trust metadata cannot be verified now ({why}); its components keep running from the releases verified before, but no action runs until fresh metadata verifies (the repository's owner runs `palisade policy refresh`)"
                    ),
                ));
            }
        }
        let current = held.policy;
        if current.digest() == dispatch.policy.digest {
            return Ok(current);
        }
        let mismatch = |have: &palisade_policy::Policy| {
            refuse(
                RefusalCode::PolicyMismatch,
                format!(
                    "dispatch names policy {} (version {}); this agent verified {} (version {})",
                    dispatch.policy.digest,
                    dispatch.policy.version,
                    have.digest(),
                    have.version()
                ),
            )
        };
        // Only a newer approved policy can change the answer.
        if dispatch.policy.version <= current.version() {
            return Err(mismatch(&current));
        }
        match self.reload_policy().await {
            Ok(fresh) if fresh.unverified.is_some() => Err(refuse(
                RefusalCode::TrustMetadata,
                format!(
                    "dispatch names policy version {}, and the repository cannot be verified now: {}",
                    dispatch.policy.version,
                    fresh.unverified.unwrap_or_default()
                ),
            )),
            Ok(fresh) => {
                if fresh.policy.digest() == dispatch.policy.digest {
                    Ok(fresh.policy)
                } else {
                    Err(mismatch(&fresh.policy))
                }
            }
            Err(e) => Err(refuse(
                RefusalCode::PolicyMismatch,
                format!(
                    "dispatch names an unknown policy and re-verifying the repository failed: {e}"
                ),
            )),
        }
    }
}

/// Whether `s` may be in force after `current`: a higher seq, or the same statement.
fn not_older(s: &OpenedTrust, current: &palisade_core::event::TenantTrustRef) -> bool {
    s.trust.seq > current.seq || (s.trust.seq == current.seq && s.digest == current.statement)
}

/// Step 7: the intent event describes exactly this dispatch.
fn check_event_matches(
    event: &IntentEvent,
    d: &Dispatch,
    digest: &palisade_core::Sha256Digest,
) -> Result<(), Refusal> {
    let differs = |what: &str| {
        Err(refuse(
            RefusalCode::EventMismatch,
            format!("the logged intent differs from the dispatch in its {what}"),
        ))
    };
    if &event.dispatch_digest != digest {
        return differs("dispatch digest");
    }
    if event.event_id != d.event_id {
        return differs("event id");
    }
    if event.tenant != d.tenant || event.cluster != d.cluster {
        return differs("cluster");
    }
    if event.instance.as_ref() != Some(&d.instance) {
        return differs("instance");
    }
    if event.actor.id != d.actor {
        return differs("actor");
    }
    if event.action != d.action {
        return differs("action");
    }
    if event.parameters != d.parameters {
        return differs("parameters");
    }
    if event.policy != d.policy {
        return differs("policy");
    }
    Ok(())
}

/// Step 9: `new` is consistent with `old`, the newest checkpoint accepted before.
fn check_consistent(
    old: &Checkpoint,
    new: &Checkpoint,
    req: &DispatchRequest,
) -> Result<(), Refusal> {
    let inconsistent = |detail: String| Err(refuse(RefusalCode::Inconsistent, detail));
    if new.size() < old.size() {
        return Err(Refusal::stale(
            old.size(),
            format!(
                "the proof's checkpoint has size {}, older than the size {} this agent has seen; \
                 prove inclusion in a newer checkpoint",
                new.size(),
                old.size()
            ),
        ));
    }
    if new.size() == old.size() {
        if new.root() != old.root() {
            return inconsistent(format!(
                "two different roots for size {}: the log forked",
                new.size()
            ));
        }
        return Ok(());
    }
    let Some(cons) = &req.consistency else {
        return Err(Refusal::stale(
            old.size(),
            format!("a consistency proof from size {} is needed", old.size()),
        ));
    };
    if cons.from_size != old.size() {
        return Err(Refusal::stale(
            old.size(),
            format!(
                "the consistency proof starts at size {}, this agent has seen size {}",
                cons.from_size,
                old.size()
            ),
        ));
    }
    let mut hashes = Vec::with_capacity(cons.hashes.len());
    for h in &cons.hashes {
        match Hash::from_base64(h) {
            Ok(h) => hashes.push(h),
            Err(_) => {
                return Err(refuse(
                    RefusalCode::Malformed,
                    "consistency proof: bad hash",
                ))
            }
        }
    }
    match verify_consistency(old.size(), new.size(), old.root(), new.root(), &hashes) {
        Ok(()) => Ok(()),
        Err(e) => inconsistent(format!(
            "checkpoint {} is not consistent with size {} seen before: {e}",
            new.size(),
            old.size()
        )),
    }
}

/// Step 8, freshness: at least the quorum of distinct witnesses cosigned the
/// checkpoint within `max_cosignature_age` of `now` (and not beyond the clock skew
/// in the future).
fn check_fresh(
    verified: &palisade_tlog::checkpoint::VerifiedCheckpoint,
    policy: &LogPolicy,
    c: &AcceptorConfig,
    now: Timestamp,
) -> Result<(), Refusal> {
    let now = now.unix_seconds();
    let max_age = i64::try_from(c.max_cosignature_age.as_secs()).unwrap_or(i64::MAX);
    let skew = i64::try_from(c.clock_skew.as_secs()).unwrap_or(i64::MAX);
    let groups = std::iter::once(("the log's witnesses", policy.witnesses(), policy.quorum()))
        .chain(
            policy
                .groups()
                .iter()
                .map(|g| (g.name.as_str(), g.keys.as_slice(), g.quorum)),
        );
    for (name, keys, quorum) in groups {
        if quorum == 0 {
            continue;
        }
        let mut fresh: Vec<[u8; 32]> = Vec::new();
        let mut newest: Option<i64> = None;
        for cosig in verified
            .cosignatures()
            .iter()
            .filter(|s| keys.contains(s.witness()))
        {
            let at = i64::try_from(cosig.timestamp()).unwrap_or(i64::MAX);
            newest = Some(newest.map_or(at, |n: i64| n.max(at)));
            if at >= now.saturating_sub(max_age) && at <= now.saturating_add(skew) {
                fresh.push(cosig.witness().public_key());
            }
        }
        fresh.sort_unstable();
        fresh.dedup();
        if fresh.len() >= quorum {
            continue;
        }
        let age = newest.map_or_else(
            || "no cosignature".to_string(),
            |n| format!("the newest cosignature is {} s old", now.saturating_sub(n)),
        );
        return Err(refuse(
            RefusalCode::StaleCheckpoint,
            format!(
                "only {} of the {quorum} required cosignatures of {name} were made within the last {max_age} s ({age}): a frozen or withheld view of the log is refused",
                fresh.len()
            ),
        ));
    }
    Ok(())
}
