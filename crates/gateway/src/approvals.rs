//! Customer approval at the gateway ([`palisade_policy::customer_approval`]).
//!
//! An action the tenant's statement in force says needs approval is not dispatched:
//! the gateway logs an `approval_request` event (the intent's fields and when the
//! request lapses), keeps the request, and answers 202 `awaiting_approval`. The
//! tenant lists pending requests and posts approvers' signed decisions (with a
//! reader token); each decision is checked (an approver of the policy in force, this
//! request, within its validity) and logged as an `approval` event. A denial ends the
//! request. Once a threshold of approvals holds, the gateway logs the intent (with
//! the request's event id and a reference to it) and dispatches with the request and
//! the approvals attached; the agent checks them again, against the policy it
//! enforces, and spends the approval. Nothing here can make an agent run an action
//! without the approvals: the gateway only carries them.

use crate::ops::{ApprovalStatus, OpStatus, Operation};
use crate::pipeline::Gateway;
use crate::problem::Problem;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_core::event::{
    ApprovalDecision, ApprovalEvent, ApprovalRef, ApprovalRequestEvent, Event, SignedEnvelope,
};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, Sha256Digest, TenantId};
use palisade_policy::customer_approval::{
    count_approvals, ApprovalPolicy, CustomerApproval, Decision, RequestRef,
};
use palisade_policy::dsse::Envelope;
use palisade_policy::tenant::TenantTrust;
use palisade_protocol::client::Request;
use palisade_protocol::dispatch::ApprovalBundle;
use palisade_state::Namespace;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const REQUESTS: Namespace = Namespace::new("gateway_approval_requests");

/// A request for approval, as the gateway keeps it until it is decided or lapses.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    request: Request,
    agent_url: String,
    index: u64,
    /// The `approval_request` log entry, exactly as logged.
    entry: Vec<u8>,
    digest: Sha256Digest,
    expires_at: Timestamp,
    threshold: u32,
    approvals: Vec<Envelope>,
    approved_by: Vec<String>,
    /// The approvers' key ids, in the order they approved.
    approver_ids: Vec<String>,
    denied_by: Option<String>,
    /// How the notification to the tenant's webhook went, if it has one.
    #[serde(default)]
    notified: Option<String>,
    /// When a gateway claimed the approved request to dispatch it (once).
    #[serde(default)]
    dispatching_since: Option<Timestamp>,
}

impl Pending {
    fn status(&self) -> ApprovalStatus {
        ApprovalStatus {
            request_index: self.index,
            expires_at: self.expires_at,
            threshold: self.threshold,
            approved_by: self.approved_by.clone(),
            denied_by: self.denied_by.clone(),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::new(503, "state unavailable", e.to_string())
}

impl Gateway {
    /// The approval policy of the tenant statement in force for `cluster`, and its
    /// `seq` (the statement was checked under the tenant's key when it was recorded).
    pub(crate) fn approval_policy(&self, cluster: &ClusterId) -> Option<(ApprovalPolicy, u64)> {
        let env = self.dispatcher().tenant_trust(cluster.as_str())?;
        let (trust, _) = TenantTrust::decode(&env).ok()?;
        trust.approval.map(|a| (a, trust.seq))
    }

    /// Logs the request for `request` and keeps it; the operation waits for the
    /// customer's approval.
    pub(crate) async fn request_approval(
        self: &Arc<Self>,
        mut operation: Operation,
        request: Request,
        agent_url: String,
        policy: &ApprovalPolicy,
        seq: u64,
        now: Timestamp,
    ) -> Result<Operation, Problem> {
        let ttl = i64::try_from(policy.request_ttl_secs).unwrap_or(i64::MAX);
        let expires_at = Timestamp::from_unix_seconds(now.unix_seconds().saturating_add(ttl));
        let event_id = EventId::parse(&operation.id)
            .map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
        let event = Event::ApprovalRequest(Box::new(ApprovalRequestEvent {
            event_id,
            time: now,
            tenant: request.tenant.clone(),
            cluster: request.cluster.clone(),
            instance: Some(request.instance.clone()),
            actor: request.actor.clone(),
            action: request.action.clone(),
            parameters: request.parameters.clone(),
            justification: request.justification.clone(),
            policy: request.policy.clone(),
            statement_seq: seq,
            expires_at,
        }));
        let entry = event
            .to_log_entry()
            .map_err(|e| Problem::new(422, "request too large", e.to_string()))?;
        let index = match self
            .dispatcher()
            .append(request.cluster.as_str(), &entry)
            .await
        {
            Ok(r) => r.index,
            Err(palisade_protocol::client::CallError::Unwitnessed { index, .. }) => index,
            Err(e) => {
                return Err(Problem::new(
                    503,
                    "log unavailable",
                    format!("the request could not be logged, so nobody can approve it: {e}"),
                ))
            }
        };
        let pending = Pending {
            request,
            agent_url,
            index,
            digest: Sha256Digest::of(&entry),
            entry,
            expires_at,
            threshold: policy.threshold,
            approvals: Vec::new(),
            approved_by: Vec::new(),
            approver_ids: Vec::new(),
            denied_by: None,
            notified: None,
            dispatching_since: None,
        };
        operation.status = OpStatus::AwaitingApproval;
        operation.approval = Some(pending.status());
        self.save_pending(&operation.id, &pending).await?;
        self.ops.save(&operation).await.map_err(unavailable)?;
        tracing::info!(operation = %operation.id, index, "request logged; awaiting customer approval");
        let r = &pending.request;
        self.notify(
            r.cluster.clone(),
            operation.id.clone(),
            json!({
                "schema": "palisade.dev/approval-notification/v1",
                "tenant": r.tenant.as_str(),
                "cluster": r.cluster.as_str(),
                "request": operation.id,
                "request_index": index,
                "request_digest": pending.digest.to_string(),
                "action": r.action.as_str(),
                "instance": r.instance.as_str(),
                "parameters": r.parameters,
                "ticket": r.justification.ticket,
                "reason": r.justification.reason,
                "operator": r.actor.id.to_string(),
                "expires_at": expires_at.to_string(),
                "threshold": policy.threshold,
            }),
        );
        Ok(operation)
    }

    async fn save_pending(&self, id: &str, p: &Pending) -> Result<(), Problem> {
        let bytes = serde_json::to_vec(p)
            .map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
        self.ops
            .store()
            .put(REQUESTS, id, bytes)
            .await
            .map_err(unavailable)
    }

    async fn pending(&self, id: &str) -> Result<Option<Pending>, Problem> {
        match self
            .ops
            .store()
            .get(REQUESTS, id)
            .await
            .map_err(unavailable)?
        {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Problem::new(500, "internal error", format!("stored request: {e}"))),
        }
    }

    /// `GET /v1/tenants/{tenant}/clusters/{cluster}/approvals`: the requests waiting
    /// for a decision, each with its log entry (what an approver signs the digest of).
    pub async fn approval_requests(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        let all = self
            .ops
            .store()
            .list(REQUESTS, "", 10_000)
            .await
            .map_err(unavailable)?;
        let now = Timestamp::now();
        let mut out = Vec::new();
        for (id, bytes) in all {
            let Ok(p) = serde_json::from_slice::<Pending>(&bytes) else {
                continue;
            };
            if p.request.cluster != cid {
                continue;
            }
            let state = if p.denied_by.is_some() {
                "denied"
            } else if p.approved_by.len() >= usize::try_from(p.threshold).unwrap_or(usize::MAX) {
                "approved"
            } else if now.unix_seconds() > p.expires_at.unix_seconds() {
                "expired"
            } else {
                "pending"
            };
            out.push(json!({
                "id": id,
                "state": state,
                "index": p.index,
                "digest": p.digest.to_string(),
                "entry": STANDARD.encode(&p.entry),
                "action": p.request.action.as_str(),
                "instance": p.request.instance.as_str(),
                "parameters": p.request.parameters,
                "ticket": p.request.justification.ticket,
                "reason": p.request.justification.reason,
                "operator": p.request.actor.id.to_string(),
                "expires_at": p.expires_at.to_string(),
                "threshold": p.threshold,
                "approved_by": p.approved_by,
                "denied_by": p.denied_by,
                "notified": p.notified,
            }));
        }
        Ok(Value::Array(out))
    }

    /// `POST /v1/tenants/{tenant}/clusters/{cluster}/approvals`: one approver's
    /// signed decision. Logged; a denial ends the request; the threshold dispatches.
    pub async fn decide(
        self: &Arc<Self>,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
        body: &[u8],
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        let bad = |detail: String| Problem::new(400, "invalid approval", detail);
        let env: Envelope = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the body is not a DSSE envelope: {e}")))?;
        let decided = CustomerApproval::decode(&env).map_err(bad)?;
        if &decided.tenant != reader || decided.cluster != cid {
            return Err(bad(format!(
                "the approval is for {}/{}, not {reader}/{cid}",
                decided.tenant, decided.cluster
            )));
        }
        let id = decided.request.to_string();
        let Some(pending) = self.pending(&id).await? else {
            return Err(Problem::new(
                404,
                "no such request",
                format!("no request {id} awaits approval on {cid}"),
            ));
        };
        if pending.request.cluster != cid {
            return Err(Problem::new(
                404,
                "no such request",
                format!("no request {id} on {cid}"),
            ));
        }
        let conflict = |detail: String| Problem::new(409, "request decided", detail);
        if let Some(by) = &pending.denied_by {
            return Err(conflict(format!("request {id} was denied by {by}")));
        }
        let now = Timestamp::now();
        if now.unix_seconds() > pending.expires_at.unix_seconds() {
            self.end_request(
                &id,
                OpStatus::Expired,
                "the request expired before it was approved",
            )
            .await;
            return Err(conflict(format!(
                "request {id} expired at {}",
                pending.expires_at
            )));
        }
        let Some((policy, _)) = self.approval_policy(&cid) else {
            return Err(conflict(
                "the tenant's statement in force requires no approval any more".into(),
            ));
        };
        let keys = policy.approver_keys().map_err(bad)?;
        let opened = CustomerApproval::open(&env, &keys)
            .map_err(|e| Problem::new(403, "not an approver", e))?;
        let reference = RequestRef {
            tenant: &pending.request.tenant,
            cluster: &pending.request.cluster,
            request: &decided.request,
            request_index: pending.index,
            request_digest: &pending.digest,
        };
        if decided.request_index != pending.index || decided.request_digest != pending.digest {
            return Err(bad(format!(
                "the decision names index {} and digest {}; request {id} is at index {} with digest {}",
                decided.request_index, decided.request_digest, pending.index, pending.digest
            )));
        }
        if decided.decision == Decision::Approve {
            let single = ApprovalPolicy {
                threshold: 1,
                ..policy.clone()
            };
            count_approvals(&single, reference, std::slice::from_ref(&env), now, 30)
                .map_err(bad)?;
            if pending.approver_ids.contains(&opened.approver.key_id()) {
                return Err(conflict(format!(
                    "{} already approved request {id}",
                    opened.approver.name
                )));
            }
        }
        // Logged before it counts: the customer sees every decision.
        let event = Event::Approval(ApprovalEvent {
            event_id: EventId::random()
                .map_err(|e| Problem::new(500, "internal error", format!("random: {e}")))?,
            time: now,
            tenant: reader.clone(),
            cluster: cid.clone(),
            request: decided.request.clone(),
            decision: match decided.decision {
                Decision::Approve => ApprovalDecision::Approve,
                Decision::Deny => ApprovalDecision::Deny,
            },
            approver: opened.approver.key_id(),
            statement: SignedEnvelope::from(&env),
        });
        let entry = event
            .to_log_entry()
            .map_err(|e| bad(format!("the decision is too large to log: {e}")))?;
        let index = match self.dispatcher().append(cid.as_str(), &entry).await {
            Ok(r) => r.index,
            Err(palisade_protocol::client::CallError::Unwitnessed { index, .. }) => index,
            Err(e) => {
                return Err(Problem::new(
                    503,
                    "log unavailable",
                    format!("the decision could not be logged, so it does not count: {e}"),
                ))
            }
        };
        // Counted with a compare-and-swap on the request, so that two decisions at once
        // (or replicas) never overwrite each other: a denial is never lost.
        let mut tries = 0;
        let pending = loop {
            tries += 1;
            let current = self
                .ops
                .store()
                .get(REQUESTS, &id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    Problem::new(404, "no such request", format!("request {id} is gone"))
                })?;
            let mut p: Pending = serde_json::from_slice(&current)
                .map_err(|e| Problem::new(500, "internal error", format!("stored request: {e}")))?;
            if let Some(by) = &p.denied_by {
                return Err(conflict(format!(
                    "request {id} was denied by {by}; this decision is logged at index {index} but changes nothing"
                )));
            }
            if p.dispatching_since.is_some() {
                return Err(conflict(format!(
                    "request {id} was already approved and is being carried out; this decision is logged at index {index}"
                )));
            }
            match decided.decision {
                Decision::Deny => p.denied_by = Some(opened.approver.name.clone()),
                Decision::Approve => {
                    if p.approver_ids.contains(&opened.approver.key_id()) {
                        return Err(conflict(format!(
                            "{} already approved request {id}",
                            opened.approver.name
                        )));
                    }
                    p.approvals.push(env.clone());
                    p.approved_by.push(opened.approver.name.clone());
                    p.approver_ids.push(opened.approver.key_id());
                }
            }
            let bytes = serde_json::to_vec(&p)
                .map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
            if self
                .ops
                .store()
                .compare_and_swap(REQUESTS, &id, Some(current), Some(bytes))
                .await
                .map_err(unavailable)?
            {
                break p;
            }
            if tries >= 16 {
                return Err(Problem::new(
                    503,
                    "busy",
                    format!("request {id} kept changing; send the decision again"),
                ));
            }
        };
        if decided.decision == Decision::Deny {
            let why = format!(
                "denied by {}{}",
                opened.approver.name,
                decided
                    .reason
                    .as_deref()
                    .map(|r| format!(": {}", palisade_core::sanitize::escape(r, 200)))
                    .unwrap_or_default()
            );
            self.end_request(&id, OpStatus::Denied, &why).await;
            tracing::info!(operation = %id, index, "request denied by the customer");
            return Ok(
                json!({"request": id, "decision": "deny", "index": index, "state": "denied"}),
            );
        }
        let reached = count_approvals(&policy, reference, &pending.approvals, now, 30).is_ok();
        if let Ok(Some(mut op)) = self.ops.get(&id).await {
            op.approval = Some(pending.status());
            let _ = self.ops.save(&op).await;
        }
        tracing::info!(operation = %id, index, reached, "customer approval recorded");
        if !reached {
            return Ok(
                json!({"request": id, "decision": "approve", "index": index, "state": "pending",
                "approved_by": pending.approved_by, "threshold": pending.threshold}),
            );
        }
        let op = self.dispatch_approved(&id).await?;
        Ok(
            json!({"request": id, "decision": "approve", "index": index, "state": "approved",
            "operation": op}),
        )
    }

    /// The reconciler's pass over requests: one past its expiry ends (`expired`, its
    /// operation too); records of ended requests are dropped a week after expiry.
    /// Returns how many expired now.
    pub async fn expire_requests(self: &Arc<Self>, now: Timestamp) -> usize {
        let all = match self.ops.store().list(REQUESTS, "", 10_000).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the requests awaiting approval");
                return 0;
            }
        };
        let mut expired = 0;
        for (id, bytes) in all {
            let Ok(p) = serde_json::from_slice::<Pending>(&bytes) else {
                continue;
            };
            if now.unix_seconds() <= p.expires_at.unix_seconds() {
                // Approved, but the gateway that took the last approval stopped before
                // it dispatched: dispatch now (once: only an operation still awaiting
                // approval is dispatched).
                let approved =
                    p.approved_by.len() >= usize::try_from(p.threshold).unwrap_or(usize::MAX);
                // A claim older than a minute whose operation never started is one
                // a stopped gateway left.
                let unclaimed = p
                    .dispatching_since
                    .is_none_or(|t| now.unix_seconds() > t.unix_seconds() + 60);
                if approved && unclaimed && p.denied_by.is_none() {
                    if let Ok(Some(op)) = self.ops.get(&id).await {
                        if op.status == OpStatus::AwaitingApproval && !self.is_inflight(&id) {
                            tracing::info!(operation = %id, "dispatching an approved request left behind");
                            if let Err(e) = self.dispatch_approved(&id).await {
                                tracing::warn!(operation = %id, error = %e.detail, "cannot dispatch the approved request yet");
                            }
                        }
                    }
                }
                continue;
            }
            if now.unix_seconds() > p.expires_at.unix_seconds() + 7 * 86_400 {
                let _ = self.ops.store().delete(REQUESTS, &id).await;
                continue;
            }
            if p.denied_by.is_none() {
                if let Ok(Some(op)) = self.ops.get(&id).await {
                    if op.status == OpStatus::AwaitingApproval {
                        self.end_request(
                            &id,
                            OpStatus::Expired,
                            &format!(
                                "the request expired at {} without the customer's approval",
                                p.expires_at
                            ),
                        )
                        .await;
                        tracing::info!(operation = %id, "request expired without approval");
                        expired += 1;
                    }
                }
            }
        }
        expired
    }

    /// Records how the webhook notification of request `id` went.
    pub(crate) async fn note_delivery(&self, id: &str, note: String) {
        match self.pending(id).await {
            Ok(Some(mut p)) => {
                p.notified = Some(note);
                if let Err(e) = self.save_pending(id, &p).await {
                    tracing::warn!(request = %id, error = %e.detail, "cannot record the webhook delivery");
                }
            }
            // Decided (and dispatched) meanwhile: nothing to note.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(request = %id, error = %e.detail, "cannot record the webhook delivery")
            }
        }
    }

    /// Ends a request that will not run, and its operation.
    async fn end_request(&self, id: &str, status: OpStatus, why: &str) {
        if let Ok(Some(mut op)) = self.ops.get(id).await {
            if op.status == OpStatus::AwaitingApproval {
                op.status = status;
                op.error = Some(why.to_string());
                op.finished_at = Some(Timestamp::now());
                if let Ok(Some(p)) = self.pending(id).await {
                    op.approval = Some(p.status());
                }
                if let Err(e) = self.ops.save(&op).await {
                    tracing::warn!(operation = %id, error = %e, "cannot record the request's end");
                }
            }
        }
    }

    /// The threshold holds: log the intent (the request's id, a reference to it) and
    /// dispatch with the approvals; the operation runs as any other from here.
    async fn dispatch_approved(self: &Arc<Self>, id: &str) -> Result<Operation, Problem> {
        let Some(mut operation) = self.ops.get(id).await.map_err(unavailable)? else {
            return Err(Problem::new(404, "no such operation", id.to_string()));
        };
        if operation.status != OpStatus::AwaitingApproval {
            return Ok(operation);
        }
        let now = Timestamp::now();
        // Claimed in the state first, so that two gateways (or the reconciler and the
        // last approval) never both dispatch it.
        let current = self
            .ops
            .store()
            .get(REQUESTS, id)
            .await
            .map_err(unavailable)?;
        // The claim is made on what the state holds now, not on the caller's copy: a
        // denial recorded meanwhile stops it.
        let Some(mut claimed) = current
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Pending>(b).ok())
        else {
            return Ok(operation);
        };
        let fresh_claim = claimed
            .dispatching_since
            .is_some_and(|t| now.unix_seconds() <= t.unix_seconds() + 60);
        let approved =
            claimed.approved_by.len() >= usize::try_from(claimed.threshold).unwrap_or(usize::MAX);
        if fresh_claim || claimed.denied_by.is_some() || !approved {
            return Ok(operation);
        }
        // The request's place in the log, which the agent checks (fetched before the
        // claim: a log that cannot answer leaves the request unclaimed).
        let request_proof = {
            let cluster = claimed.request.cluster.clone();
            let policy = self
                .config()
                .log
                .policy_for(&cluster)
                .map_err(|e| Problem::new(500, "internal error", e))?;
            self.dispatcher()
                .proofs(cluster.as_str(), &policy, claimed.index, claimed.index + 1)
                .await
                .map_err(|e| {
                    Problem::new(
                        503,
                        "log unavailable",
                        format!("the request's proof cannot be read from the log yet: {e}"),
                    )
                })?
                .0
        };
        claimed.dispatching_since = Some(now);
        let bytes = serde_json::to_vec(&claimed)
            .map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
        if !self
            .ops
            .store()
            .compare_and_swap(REQUESTS, id, current, Some(bytes))
            .await
            .map_err(unavailable)?
        {
            return Ok(operation);
        }
        // Dispatched with the approvals the state holds.
        let pending = claimed;
        let event_id =
            EventId::parse(id).map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
        let mut prepared = palisade_protocol::client::prepare_as(
            &pending.request,
            event_id.clone(),
            Duration::from_secs(self.config().dispatch_ttl_secs),
            now,
        )
        .map_err(|e| Problem::new(500, "internal error", e))?;
        prepared.intent.approval = Some(ApprovalRef {
            request: event_id,
            request_index: pending.index,
            request_digest: pending.digest,
            approvers: pending.approver_ids.clone(),
        });
        prepared.approval = Some(ApprovalBundle {
            request: STANDARD.encode(&pending.entry),
            proof: request_proof,
            approvals: pending.approvals.clone(),
        });
        operation.status = OpStatus::Running;
        operation.error = None;
        operation.approval = Some(pending.status());
        let checked = crate::pipeline::Checked::new(pending.request, pending.agent_url);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gw = self.clone();
        let started = operation.clone();
        let request = id.to_string();
        tokio::spawn(async move {
            let done = gw.dispatch(operation, checked, prepared).await;
            // Dispatched: the request no longer waits. Dropped only now, so that a
            // gateway stopped before the operation's first save leaves the request
            // (and its approvals) to be sent again, never an orphaned operation.
            if let Err(e) = gw.ops.store().delete(REQUESTS, &request).await {
                tracing::warn!(operation = %request, error = %e, "cannot drop the approved request");
            }
            let _ = tx.send(done);
        });
        match tokio::time::timeout(Duration::from_secs(self.config().wait_secs), rx).await {
            Ok(Ok(done)) => Ok(done),
            _ => Ok(self.ops.get(id).await.ok().flatten().unwrap_or(started)),
        }
    }
}
