//! Access events: what is written to a cluster's log (schema in docs/formats.md).
//!
//! Every operator request leaves events in the log of the cluster it targets:
//! - an [`IntentEvent`] *before* anything is dispatched (the agent refuses to act on a
//!   dispatch whose intent is not already in the log);
//! - a [`ResultEvent`] with the agent's signed outcome, referencing the intent;
//! - a [`RefusalEvent`] when the gateway turns a request down, so that attempts are
//!   visible too.
//!
//! Events are encoded with [`crate::canonical`] and are at most [`MAX_EVENT_BYTES`].
//! The schema is documented in docs/formats.md; `schema` names its version.

use crate::canonical::{from_canonical_slice, to_canonical_vec, CanonicalError};
use crate::digest::Sha256Digest;
use crate::id::{ActionName, ClusterId, EventId, InstanceId, OperatorId, TenantId};
use crate::refusal::{LoggedAction, RefusalReason};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema identifier carried by every event.
pub const EVENT_SCHEMA: &str = "palisade.dev/event/v1";

/// Upper bound of one encoded event: the largest entry a tlog-tiles entry bundle can
/// hold (its length prefix is a big-endian u16).
pub const MAX_EVENT_BYTES: usize = 65_535;

/// Largest output a result event carries itself (canonical JSON); a larger one is
/// logged by its digest only. Leaves room in [`MAX_EVENT_BYTES`] for the other fields.
pub const MAX_LOGGED_OUTPUT_BYTES: usize = 60 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    #[error("event is {0} bytes encoded; the limit is {MAX_EVENT_BYTES}")]
    TooLarge(usize),
    #[error("event schema {0:?} is not {EVENT_SCHEMA:?}")]
    Schema(String),
}

/// A typed action parameter value, as the policy validator produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// Who acted. `id` is a stable pseudonym, per tenant, unless the provider configured
/// names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub id: OperatorId,
    /// The caller's groups as per-tenant keyed digests (`grp-…`), never their names.
    pub groups: Vec<String>,
    /// The on-call grant that authorized the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRef>,
    /// How the operator authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<Authn>,
    /// Set when the actor is automation (a gateway `[[service]]`, such as the
    /// scheduler that takes backups), not a person: the service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// How a caller proved who they are: which issuer's token, or which certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Authn {
    /// A token (OIDC, or the development issuer's) from the issuer `issuer`.
    Oidc { issuer: String },
    /// A client certificate; `sha256` is its DER encoding's SHA-256, lower-case hex.
    Certificate { sha256: String },
}

/// The on-call grant used: which schedule, which role, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRef {
    /// The schedule as a per-tenant keyed digest (`sched-…`), never its name.
    pub schedule: String,
    pub role: String,
    pub ends_at: Timestamp,
}

/// Why the operator acted: a ticket id and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Justification {
    pub ticket: String,
    pub reason: String,
}

/// The approved policy bundle a request was validated against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    pub version: u64,
    pub digest: Sha256Digest,
}

/// Written before dispatch; the agent checks that it is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    pub actor: Actor,
    pub action: ActionName,
    pub parameters: BTreeMap<String, ParamValue>,
    pub justification: Justification,
    pub policy: PolicyRef,
    /// Digest of the dispatch the gateway will send for this intent.
    pub dispatch_digest: Sha256Digest,
    /// The customer's approval this intent runs under, when the tenant's policy
    /// requires one for the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
}

/// Which approved request an intent carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRef {
    /// The `approval_request` event: its id, its index in the cluster's log and the
    /// SHA-256 of its log entry.
    pub request: EventId,
    pub request_index: u64,
    pub request_digest: Sha256Digest,
    /// The key ids of the approvers whose approvals the gateway attached.
    pub approvers: Vec<String>,
}

/// An operator's request for an action that needs the customer's approval: the
/// intent's fields, and when the request lapses. Logged before anything is sent;
/// approvers sign its log index and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequestEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    pub actor: Actor,
    pub action: ActionName,
    pub parameters: BTreeMap<String, ParamValue>,
    pub justification: Justification,
    pub policy: PolicyRef,
    /// The `seq` of the tenant statement whose approval policy applied.
    pub statement_seq: u64,
    /// No approval makes the request run after this.
    pub expires_at: Timestamp,
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalDecision {
    Approve,
    Deny,
}

/// An approver's decision on a request, recorded as they signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    /// The request decided on.
    pub request: EventId,
    pub decision: ApprovalDecision,
    /// The approver's key id (lower-case hex, as in their DSSE signature).
    pub approver: String,
    /// The signed approval (`application/vnd.palisade.customer-approval+json`).
    pub statement: SignedEnvelope,
}

/// How an intent ended: one vocabulary for the operator (the operation's `outcome`)
/// and the customer (the result event's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The agent ran the action and it succeeded; the agent signed the result.
    Succeeded,
    /// The agent ran the action and it failed, or stopped in it (the detail says
    /// which); the agent signed the result.
    Failed,
    /// The agent refused the dispatch: nothing ran.
    RefusedByAgent,
    /// The gateway sent nothing to the agent (the intent could not be witnessed,
    /// the proofs could not be fetched, no connection could be made): nothing ran.
    NotDispatched,
    /// The dispatch was sent and the agent never told how it ended, though asked
    /// until the gateway's deadline: it may or may not have run.
    OutcomeUnknown,
}

impl Outcome {
    /// The name used in logs, metrics and the operator's answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RefusedByAgent => "refused_by_agent",
            Outcome::NotDispatched => "not_dispatched",
            Outcome::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// The outcome of an intent, appended after the agent answered (or did not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub cluster: ClusterId,
    pub intent: EventId,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_digest: Option<Sha256Digest>,
    /// The output itself, as the agent reduced it to the action's output schema (no
    /// customer content by design), when its canonical JSON is at most
    /// [`MAX_LOGGED_OUTPUT_BYTES`]; its SHA-256 is `output_digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// A short reason for failure or refusal; never action output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The gateway lost the agent's first answer (a broken connection, a gateway
    /// restart) and learnt the outcome by asking the agent again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
    /// The agent's signature over this result, with what it signed that the result
    /// and its intent do not already say; present on every result the agent gave
    /// (`succeeded`, `failed`), absent on those the gateway writes alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentAttestation>,
    /// On `refused_by_agent`: the agent's signature over its refusal, with what it
    /// signed beyond the result and its intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_refusal: Option<Box<RefusalAttestation>>,
}

/// What the customer needs, beside a `refused_by_agent` result and its intent, to
/// rebuild the agent's signed refusal (`palisade.dev/agent-refusal/v1`) and check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalAttestation {
    /// The refusal code (`not_in_log`, `tenant_trust`, …).
    pub code: String,
    /// The agent's reason exactly as signed.
    pub detail: String,
    pub at: Timestamp,
    pub log_size_seen: u64,
    pub trust: EnforcedTrust,
    pub keyid: String,
    pub sig: String,
}

/// What the customer needs, beside a result event and its intent, to rebuild the
/// agent's signed statement about it (`palisade.dev/agent-result/v1`, a DSSE
/// envelope) and check the agent's signature: so that no gateway can log an outcome
/// or an output the agent did not sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAttestation {
    pub output_schema: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The size of the newest checkpoint the agent had accepted.
    pub log_size_seen: u64,
    /// The root hash (base64) of the checkpoint that proved the dispatch: the view
    /// the agent acted on, which must be a tree of the customer's own log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_root_seen: Option<String>,
    /// The agent's error text exactly as signed (the result's `detail` is escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trust the agent enforced (absent in results of agents without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Box<EnforcedTrust>>,
    /// The DSSE signature: its key id hint and base64 signature.
    pub keyid: String,
    pub sig: String,
}

/// The trust an agent enforced when it signed a result or a refusal: the log's
/// witnesses and quorum it required, and the tenant's own witnesses, from the newest
/// statement signed by the tenant's key it had seen. Signed with the result, so the
/// customer sees exactly which witnesses guarded each action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcedTrust {
    /// The log's witnesses (C2SP verifier keys) the agent accepts cosignatures from.
    pub witnesses: Vec<String>,
    /// How many of them must cosign.
    pub quorum: u32,
    /// The tenant's statement the agent enforced; absent when the agent was not
    /// configured with a tenant key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantTrustRef>,
}

/// Which tenant statement an agent enforced, and what it required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantTrustRef {
    pub seq: u64,
    /// SHA-256 of the statement's payload (the canonical JSON the tenant signed).
    pub statement: Sha256Digest,
    /// The tenant's witnesses (C2SP verifier keys), of which `quorum` must cosign.
    pub witnesses: Vec<String>,
    pub quorum: u32,
}

/// A DSSE envelope as it is logged (the JSON of the DSSE specification).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

/// A statement signed by a tenant's key about its cluster (which witnesses it
/// requires), recorded in the cluster's log so that it is visible and ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantTrustEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    /// The statement as the tenant signed it (`palisade.dev/tenant-trust/v1`).
    pub statement: SignedEnvelope,
}

/// An instance agent's public key, recorded by the gateway when it starts (retried
/// until it is in the log): the keys whose signatures the customer's results carry are in the
/// customer's log, and a key that changes is visible there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKeyEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub cluster: ClusterId,
    pub instance: InstanceId,
    /// The Ed25519 public key: standard base64 of its 32 bytes.
    pub key: String,
    /// Its key id (lower-case hex), as the `keyid` of the agent's DSSE signatures.
    pub keyid: String,
}

/// Which gateway step turned a request down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalStage {
    Authenticate,
    Authorize,
    Validate,
    RateLimit,
}

/// A request the gateway refused, logged so that attempts are visible too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalEvent {
    pub event_id: EventId,
    pub time: Timestamp,
    pub cluster: ClusterId,
    /// Absent when the caller could not be authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<OperatorId>,
    /// How the caller authenticated; absent when they could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn: Option<Authn>,
    /// The action requested: a valid action name, or `unknown-action`.
    pub action: LoggedAction,
    /// SHA-256 of the action as sent, when it was not a valid name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_digest: Option<Sha256Digest>,
    pub stage: RefusalStage,
    /// A fixed code: never the caller's name, groups or schedule, never their text.
    pub reason: RefusalReason,
    /// The HTTP status the caller was answered (in a summary: the last one counted).
    pub status: u16,
    /// In a summary ([`RefusalReason::RefusalsNotLogged`]): how many refusals of this
    /// operator on this cluster were counted instead of logged one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_logged: Option<NotLogged>,
}

/// Refusals counted instead of logged one by one, and the budget that was exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotLogged {
    pub count: u64,
    /// The first and the last refusal counted.
    pub from: Timestamp,
    pub to: Timestamp,
    /// The budget: at most `max` refusals logged one by one per `per_secs`.
    pub max: u32,
    pub per_secs: u64,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Intent(Box<IntentEvent>),
    Result(ResultEvent),
    Refusal(RefusalEvent),
    TenantTrust(TenantTrustEvent),
    AgentKey(AgentKeyEvent),
    ApprovalRequest(Box<ApprovalRequestEvent>),
    Approval(ApprovalEvent),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    schema: String,
    #[serde(flatten)]
    event: Event,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    schema: &'static str,
    #[serde(flatten)]
    event: &'a Event,
}

impl Event {
    pub fn event_id(&self) -> &EventId {
        match self {
            Event::Intent(e) => &e.event_id,
            Event::Result(e) => &e.event_id,
            Event::Refusal(e) => &e.event_id,
            Event::TenantTrust(e) => &e.event_id,
            Event::AgentKey(e) => &e.event_id,
            Event::ApprovalRequest(e) => &e.event_id,
            Event::Approval(e) => &e.event_id,
        }
    }

    pub fn cluster(&self) -> &ClusterId {
        match self {
            Event::Intent(e) => &e.cluster,
            Event::Result(e) => &e.cluster,
            Event::Refusal(e) => &e.cluster,
            Event::TenantTrust(e) => &e.cluster,
            Event::AgentKey(e) => &e.cluster,
            Event::ApprovalRequest(e) => &e.cluster,
            Event::Approval(e) => &e.cluster,
        }
    }

    /// The exact bytes appended to the log.
    pub fn to_log_entry(&self) -> Result<Vec<u8>, EventError> {
        let bytes = to_canonical_vec(&EnvelopeRef {
            schema: EVENT_SCHEMA,
            event: self,
        })?;
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// Parses a log entry; only canonical bytes of the known schema are accepted.
    pub fn from_log_entry(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        let env: Envelope = from_canonical_slice(bytes)?;
        if env.schema != EVENT_SCHEMA {
            return Err(EventError::Schema(env.schema.chars().take(80).collect()));
        }
        // One spelling per event: `"instance":null` and the like decode to the same
        // value as an absent field, so re-encode and insist on the same bytes.
        if env.event.to_log_entry()? != bytes {
            return Err(EventError::Canonical(CanonicalError::NotCanonical));
        }
        Ok(env.event)
    }

    /// The digest that identifies this entry in dispatches and results.
    pub fn digest(&self) -> Result<Sha256Digest, EventError> {
        Ok(Sha256Digest::of(&self.to_log_entry()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Event {
        let mut parameters = BTreeMap::new();
        parameters.insert("node".to_string(), ParamValue::Str("worker-1".into()));
        parameters.insert("keep_last".to_string(), ParamValue::Int(3));
        Event::Intent(Box::new(IntentEvent {
            event_id: EventId::parse("0123456789abcdef0123456789abcdef").expect("id"),
            time: Timestamp::from_unix_seconds(1_764_000_000),
            tenant: TenantId::parse("demo").expect("tenant"),
            cluster: ClusterId::parse("demo").expect("cluster"),
            instance: Some(InstanceId::parse("demo-0").expect("instance")),
            actor: Actor {
                service: None,
                authn: None,
                id: OperatorId::parse("op-7f3a").expect("op"),
                groups: vec!["sre".into()],
                grant: Some(GrantRef {
                    schedule: "primary".into(),
                    role: "operator".into(),
                    ends_at: Timestamp::from_unix_seconds(1_764_028_800),
                }),
            },
            action: ActionName::parse("kube.cordon").expect("action"),
            parameters,
            justification: Justification {
                ticket: "INC-42".into(),
                reason: "disk pressure".into(),
            },
            policy: PolicyRef {
                version: 3,
                digest: Sha256Digest::of(b"policy"),
            },
            dispatch_digest: Sha256Digest::of(b"dispatch"),
            approval: None,
        }))
    }

    #[test]
    fn round_trips_through_canonical_bytes() {
        let e = intent();
        let bytes = e.to_log_entry().expect("encode");
        let text = std::str::from_utf8(&bytes).expect("utf8");
        assert!(
            text.starts_with(r#"{"action":"kube.cordon","actor":{"grant":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""kind":"intent""#)
                && text.contains(r#""schema":"palisade.dev/event/v1""#)
        );
        assert_eq!(Event::from_log_entry(&bytes).expect("decode"), e);
        assert_eq!(e.digest().expect("digest"), Sha256Digest::of(&bytes));
    }

    #[test]
    fn refuses_non_canonical_unknown_and_oversize() {
        let bytes = intent().to_log_entry().expect("encode");
        let mut spaced = b" ".to_vec();
        spaced.extend_from_slice(&bytes);
        assert!(Event::from_log_entry(&spaced).is_err());
        let text = String::from_utf8(bytes).expect("utf8");
        let wrong_schema = text.replace("palisade.dev/event/v1", "palisade.dev/event/v9");
        assert!(matches!(
            Event::from_log_entry(wrong_schema.as_bytes()),
            Err(EventError::Schema(_))
        ));
        let extra = text.replacen("{\"action\"", "{\"a\":1,\"action\"", 1);
        assert!(
            Event::from_log_entry(extra.as_bytes()).is_err(),
            "unknown field accepted"
        );
        let mut no_instance = intent();
        if let Event::Intent(i) = &mut no_instance {
            i.instance = None;
        }
        let plain = String::from_utf8(no_instance.to_log_entry().expect("encode")).expect("utf8");
        let null_spelling = plain.replacen(
            "\"justification\"",
            "\"instance\":null,\"justification\"",
            1,
        );
        assert_ne!(null_spelling, plain);
        assert!(Event::from_log_entry(plain.as_bytes()).is_ok());
        assert!(
            Event::from_log_entry(null_spelling.as_bytes()).is_err(),
            "second spelling accepted"
        );

        let mut big = intent();
        if let Event::Intent(i) = &mut big {
            i.justification.reason = "x".repeat(MAX_EVENT_BYTES);
        }
        assert!(matches!(big.to_log_entry(), Err(EventError::TooLarge(_))));
    }
}
