//! The durable result path: every intent the gateway logs ends with exactly one
//! result in the cluster's log, whatever stops in between (the log, the agent, the
//! gateway itself).
//!
//! Before an intent is appended, an *unresolved* record is written beside the
//! operation; it is deleted only once the intent's result is in the log (or, when the
//! intent itself never reached the log, once that is certain). Each record has an
//! owner, the gateway process driving the operation, and a lease the owner renews
//! while it works. When the owner stops (a crash, a restart) or hands the record over
//! (the log did not take the result), the reconciler of a gateway whose lease it is
//! resolves it, every [`TICK`]:
//!
//! - where the intent is not known to be logged, it is looked for in the log; if it
//!   is not there once the dispatch has expired, nothing was ever dispatched and the
//!   operation ends `refused` with nothing to log;
//! - where the outcome is unknown, the agent is asked by event id
//!   (`GET /v1/results/<event id>`): its signed result is logged, marked
//!   `reconciled`; a dispatch it never accepted and that has expired is
//!   `not_dispatched`; an agent that cannot say is asked again until
//!   [`crate::config::GatewayConfig::result_deadline_secs`] after the dispatch
//!   expired, then the result is `outcome_unknown`;
//! - a known result is appended, unless the log already holds a result for the
//!   intent after it (an append whose answer was lost): exactly one result per intent.

use crate::ops::{OpStatus, Operation};
use crate::pipeline::Gateway;
use palisade_core::event::{Event, Outcome, ResultEvent};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, Sha256Digest};
use palisade_protocol::client::{CallError, Lookup};
use palisade_state::{Namespace, StateError, StateStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const UNRESOLVED: Namespace = Namespace::new("gateway_unresolved");

/// How often the reconciler looks at unresolved operations.
pub const TICK: Duration = Duration::from_secs(2);
/// How long an owner's claim on an unresolved operation lasts without renewal.
const LEASE_SECS: i64 = 20;
/// A dispatch the agent never accepted is final this long after it expired (the
/// agent tolerates this much clock skew).
const EXPIRY_MARGIN_SECS: i64 = 120;

/// An operation whose intent may be in the log without its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unresolved {
    /// The operation's id: the intent's event id.
    pub operation: EventId,
    pub cluster: ClusterId,
    pub agent_url: String,
    pub dispatch_digest: Sha256Digest,
    /// When the dispatch expires: after it, an agent that has not accepted it never will.
    pub expires_at: Timestamp,
    /// A log size at or below the intent's index, known before it was appended.
    pub scan_from: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_index: Option<u64>,
    /// The result, once known: what is (or will be) appended after the intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultEvent>,
    /// Set by the live owner that knows it never sent the dispatch (the intent's
    /// append failed): the dispatch, signed only in that process's memory, can never
    /// reach the agent, so the agent is not asked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_sent: bool,
    /// The gateway process driving it, and until when.
    pub owner: String,
    pub lease_until: Timestamp,
}

fn corrupt(key: &str, e: serde_json::Error) -> StateError {
    StateError::Backend {
        op: "decode",
        ns: "gateway_unresolved",
        reason: format!("unresolved operation {key}: {e}"),
    }
}

/// The unresolved records, in the gateway's state.
#[derive(Clone)]
pub struct Pending {
    store: Arc<dyn StateStore>,
}

impl Pending {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    pub async fn save(&self, u: &Unresolved) -> Result<(), StateError> {
        let key = u.operation.to_string();
        let bytes = serde_json::to_vec(u).map_err(|e| corrupt(&key, e))?;
        self.store.put(UNRESOLVED, &key, bytes).await
    }

    pub async fn resolved(&self, operation: &str) -> Result<(), StateError> {
        self.store.delete(UNRESOLVED, operation).await.map(|_| ())
    }

    /// Every unresolved record, with its stored bytes (for compare-and-swap).
    pub async fn all(&self) -> Result<Vec<(Unresolved, Vec<u8>)>, StateError> {
        let mut out = Vec::new();
        for (key, value) in self.store.list(UNRESOLVED, "", 100_000).await? {
            let u: Unresolved = serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
            out.push((u, value));
        }
        Ok(out)
    }

    /// Replaces `old` (the bytes read) by `new`; false if someone else changed it.
    pub async fn swap(&self, old: Vec<u8>, new: &Unresolved) -> Result<bool, StateError> {
        let key = new.operation.to_string();
        let bytes = serde_json::to_vec(new).map_err(|e| corrupt(&key, e))?;
        self.store
            .compare_and_swap(UNRESOLVED, &key, Some(old), Some(bytes))
            .await
    }
}

/// A result's log entry: gateway-written words are escaped, and an output too large
/// to log leaves its digest alone.
pub fn result_entry(result: &ResultEvent) -> Option<Vec<u8>> {
    match Event::Result(result.clone()).to_log_entry() {
        Ok(entry) => Some(entry),
        Err(_) if result.output.is_some() => {
            let mut r = result.clone();
            r.output = None;
            Event::Result(r).to_log_entry().ok()
        }
        Err(_) => None,
    }
}

/// The result event for `intent`, from what the agent signed or the gateway knows.
#[allow(clippy::too_many_arguments)]
pub fn result_event(
    cluster: &ClusterId,
    intent: &EventId,
    outcome: Outcome,
    output_digest: Option<Sha256Digest>,
    output: Option<&serde_json::Value>,
    detail: Option<&str>,
    reconciled: bool,
    agent: Option<palisade_core::event::AgentAttestation>,
) -> ResultEvent {
    ResultEvent {
        event_id: EventId::random().unwrap_or_else(|_| intent.clone()),
        time: Timestamp::now(),
        cluster: cluster.clone(),
        intent: intent.clone(),
        outcome,
        output_digest,
        // The customer reads the output itself (it carries no customer content: the
        // agent reduced it to the output schema) and checks it against the digest
        // the agent signed.
        output: output_digest.and(palisade_core::output::loggable(output)),
        // The agent's or the log's words: escaped, so that no line can be forged.
        detail: detail.map(|d| palisade_core::sanitize::escape(d, 512)),
        reconciled,
        agent,
        agent_refusal: None,
    }
}

/// Where a resolution stands after one attempt.
enum Step {
    /// Done: the record can go.
    Resolved,
    /// Not yet: keep the record (with these changes) and try again later.
    Later(Box<Unresolved>),
}

impl Gateway {
    /// The reconciler: resolves, every [`TICK`], the unresolved operations no live
    /// gateway process is driving; also reloads the tenants' statements (another
    /// replica may have recorded one) and records the agent keys until all are in
    /// the logs. Runs until the gateway stops.
    pub async fn reconcile_forever(self: Arc<Self>) {
        let mut keys_recorded = false;
        loop {
            self.reconcile_once().await;
            self.load_tenant_trust().await;
            self.expire_requests(Timestamp::now()).await;
            if !keys_recorded {
                keys_recorded = self.enrol_agent_keys().await;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// One pass of the reconciler; returns how many operations it resolved.
    pub async fn reconcile_once(&self) -> usize {
        let records = match self.pending.all().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the unresolved operations");
                return 0;
            }
        };
        let now = Timestamp::now();
        let mut resolved = 0;
        let queued = records.len();
        for (record, bytes) in records {
            let mine = record.owner == self.process_id;
            let id = record.operation.to_string();
            if mine && self.is_inflight(&id) {
                // Driven by a live request of this process: only the lease is kept.
                if record.lease_until.unix_seconds() - now.unix_seconds() < LEASE_SECS / 2 {
                    let mut renewed = record.clone();
                    renewed.lease_until = lease_from(now);
                    if let Err(e) = self.pending.swap(bytes, &renewed).await {
                        tracing::warn!(operation = %id, error = %e, "cannot renew a lease");
                    }
                }
                continue;
            }
            // Another process's record: taken over once its lease ran out (at once
            // where the state is this process's alone: no one else can hold it).
            let owner_gone = self.exclusive_state || record.lease_until <= now;
            if !mine && !owner_gone {
                continue;
            }
            let mut claimed = record.clone();
            claimed.owner = self.process_id.clone();
            claimed.lease_until = lease_from(now);
            match self.pending.swap(bytes, &claimed).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(operation = %id, error = %e, "cannot claim an unresolved operation");
                    continue;
                }
            }
            if !self.begin_inflight(&id) {
                continue;
            }
            let step = self.resolve(claimed.clone(), now).await;
            self.end_inflight(&id);
            match step {
                Step::Resolved => {
                    resolved += 1;
                    if let Err(e) = self.pending.resolved(&id).await {
                        tracing::warn!(operation = %id, error = %e, "cannot drop a resolved record");
                    }
                }
                Step::Later(next) => {
                    let mut next = *next;
                    next.owner = self.process_id.clone();
                    // Handed back at once to whoever comes next (this process's next tick).
                    next.lease_until = now;
                    let old = match serde_json::to_vec(&claimed) {
                        Ok(b) => b,
                        Err(_) => continue,
                    };
                    if let Err(e) = self.pending.swap(old, &next).await {
                        tracing::warn!(operation = %id, error = %e, "cannot update an unresolved operation");
                    }
                }
            }
        }
        self.metrics.unresolved(queued.saturating_sub(resolved));
        resolved
    }

    /// One attempt to resolve `u`.
    async fn resolve(&self, mut u: Unresolved, now: Timestamp) -> Step {
        let expired = now.unix_seconds() > u.expires_at.unix_seconds() + EXPIRY_MARGIN_SECS;
        let policy = match self.config().log.policy_for(&u.cluster) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(cluster = %u.cluster, error = %e, "no log trust for an unresolved operation");
                return Step::Later(Box::new(u));
            }
        };
        let source = match self.dispatcher().source(u.cluster.as_str()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the log cannot be read");
                return Step::Later(Box::new(u));
            }
        };
        // The intent, if its index was never recorded.
        if u.intent_index.is_none() {
            let id = u.operation.to_string();
            let found = palisade_tlog_service::audit::find_entry_where(
                &source,
                &policy,
                u.scan_from,
                |entry| is_event(entry, &id, EventKind::Intent),
            )
            .await;
            match found {
                Ok(Some(index)) => u.intent_index = Some(index),
                Ok(None) if expired || (u.not_sent && now > u.expires_at) => {
                    // Never logged, so never dispatched (an agent needs the proof).
                    self.end_operation(&u, OpStatus::Refused, Some(Outcome::NotDispatched), None, None,
                        Some("the gateway stopped before the intent was logged; nothing was dispatched".into()))
                        .await;
                    return Step::Resolved;
                }
                Ok(None) => return Step::Later(Box::new(u)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for an intent in the log");
                    return Step::Later(Box::new(u));
                }
            }
        }
        let Some(intent_index) = u.intent_index else {
            return Step::Later(Box::new(u));
        };
        // Logged, and never sent: nothing ran.
        if u.result.is_none() && u.not_sent {
            u.result = Some(result_event(
                &u.cluster,
                &u.operation,
                Outcome::NotDispatched,
                None,
                None,
                Some("the gateway lost the log's answer to the intent's append, so it sent nothing; the intent was found in the log afterwards"),
                true,
                None,
            ));
        }
        // The outcome, if unknown: the agent is asked.
        if u.result.is_none() {
            let keys = self.agent_keys_for_url(&u.agent_url);
            let deadline = u.expires_at.unix_seconds()
                + i64::try_from(self.config().result_deadline_secs).unwrap_or(i64::MAX);
            let answer = self
                .dispatcher()
                .result_of(&u.agent_url, &u.operation, &u.dispatch_digest, &keys)
                .await;
            let (outcome, digest, output, detail, attestation) = match answer {
                Ok(Lookup::Done(done)) => {
                    let (result, envelope) = *done;
                    let outcome = match result.outcome {
                        palisade_protocol::dispatch::ResultOutcome::Succeeded => Outcome::Succeeded,
                        palisade_protocol::dispatch::ResultOutcome::Failed => Outcome::Failed,
                    };
                    let attestation = palisade_protocol::dispatch::result_attestation(&result, &envelope);
                    (outcome, result.output_digest, result.output, result.error, attestation)
                }
                Ok(Lookup::Running) => return Step::Later(Box::new(u)),
                Ok(Lookup::NeverAccepted) if expired => (
                    Outcome::NotDispatched,
                    None,
                    None,
                    Some("the agent never accepted the dispatch, which has expired: nothing ran".to_string()),
                    None,
                ),
                Ok(Lookup::NeverAccepted) => return Step::Later(Box::new(u)),
                Err(e) if now.unix_seconds() > deadline => (
                    Outcome::OutcomeUnknown,
                    None,
                    None,
                    Some(format!("the agent did not say how the dispatch ended before the gateway's deadline: {e}")),
                    None,
                ),
                Err(e) => {
                    tracing::info!(operation = %u.operation, error = %short(&e), "the agent cannot say yet how a dispatch ended");
                    return Step::Later(Box::new(u));
                }
            };
            u.result = Some(result_event(
                &u.cluster,
                &u.operation,
                outcome,
                digest,
                output.as_ref(),
                detail.as_deref(),
                true,
                attestation,
            ));
        }
        let Some(result) = u.result.clone() else {
            return Step::Later(Box::new(u));
        };
        // Exactly once: a result already in the log after the intent is not appended again.
        let id = u.operation.to_string();
        let index = match palisade_tlog_service::audit::find_entry_where(
            &source,
            &policy,
            intent_index + 1,
            |entry| is_event(entry, &id, EventKind::ResultOf),
        )
        .await
        {
            Ok(Some(index)) => index,
            Ok(None) => match self.append_result(&u.cluster, &result).await {
                Some(index) => index,
                None => return Step::Later(Box::new(u)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for a result in the log");
                return Step::Later(Box::new(u));
            }
        };
        let status = status_of(result.outcome);
        self.end_operation(
            &u,
            status,
            Some(result.outcome),
            Some(index),
            result.output.clone(),
            result.detail.clone(),
        )
        .await;
        Step::Resolved
    }

    /// Appends a result once; its index, or `None` if the log did not take it.
    pub(crate) async fn append_result(
        &self,
        cluster: &ClusterId,
        result: &ResultEvent,
    ) -> Option<u64> {
        let entry = result_entry(result)?;
        match self.dispatcher().append(cluster.as_str(), &entry).await {
            Ok(r) => Some(r.index),
            // In the log, witnessed with a later batch: not appended again.
            Err(CallError::Unwitnessed { index, reason }) => {
                tracing::warn!(index, %reason, "the result is logged but not yet witnessed");
                Some(index)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the result could not be logged yet; it is kept and appended again");
                None
            }
        }
    }

    /// Records how a reconciled operation ended, for its operator.
    async fn end_operation(
        &self,
        u: &Unresolved,
        status: OpStatus,
        outcome: Option<Outcome>,
        result_index: Option<u64>,
        output: Option<serde_json::Value>,
        detail: Option<String>,
    ) {
        let id = u.operation.to_string();
        let op = match self.ops.get(&id).await {
            Ok(Some(op)) => op,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(operation = %id, error = %e, "cannot read a reconciled operation");
                return;
            }
        };
        let op = Operation {
            status,
            outcome: outcome.or(op.outcome),
            intent_index: u.intent_index.or(op.intent_index),
            result_index: result_index.or(op.result_index),
            output: op.output.clone().or(output),
            // The result's words replace the notes of the wait ("asking the agent",
            // "not in the log yet").
            error: detail,
            finished_at: op.finished_at.or(Some(Timestamp::now())),
            ..op
        };
        if let Err(e) = self.ops.save(&op).await {
            tracing::warn!(operation = %id, error = %e, "cannot record a reconciled operation");
        }
    }
}

/// What the operator's status is for an outcome.
pub fn status_of(outcome: Outcome) -> OpStatus {
    match outcome {
        Outcome::Succeeded => OpStatus::Succeeded,
        Outcome::NotDispatched => OpStatus::Refused,
        Outcome::Failed | Outcome::RefusedByAgent | Outcome::OutcomeUnknown => OpStatus::Failed,
    }
}

fn lease_from(now: Timestamp) -> Timestamp {
    Timestamp::from_unix_seconds(now.unix_seconds() + LEASE_SECS)
}

fn short(e: &CallError) -> String {
    e.to_string().chars().take(200).collect()
}

#[derive(Clone, Copy)]
enum EventKind {
    /// The intent whose event id is the given one.
    Intent,
    /// A result of the intent whose event id is the given one.
    ResultOf,
}

/// Whether a log entry is the intent `id`, or a result of it. A cheap byte search
/// first: most entries are neither.
fn is_event(entry: &[u8], id: &str, kind: EventKind) -> bool {
    let needle = match kind {
        EventKind::Intent => format!("\"event_id\":\"{id}\""),
        EventKind::ResultOf => format!("\"intent\":\"{id}\""),
    };
    if !entry.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return false;
    }
    match (Event::from_log_entry(entry), kind) {
        (Ok(Event::Intent(i)), EventKind::Intent) => i.event_id.as_str() == id,
        (Ok(Event::Result(r)), EventKind::ResultOf) => r.intent.as_str() == id,
        _ => false,
    }
}
