//! The statements an agent signs: what it did ([`AgentResult`]) and why it refused
//! ([`AgentRefusal`]). Each is signed as canonical JSON in a DSSE envelope, and the
//! result event in the customer's log keeps what is needed to rebuild it
//! ([`AgentResult::from_logged`], [`AgentRefusal::from_logged`]), so that any reader
//! of the log can check the agent's signature over exactly what was logged.

use crate::event::{
    AgentAttestation, EnforcedTrust, IntentEvent, Outcome, RefusalAttestation, ResultEvent,
};
use crate::time::Timestamp;
use crate::{ActionName, ClusterId, EventId, InstanceId, Sha256Digest};
use serde::{Deserialize, Serialize};

/// The agent's result: its schema and DSSE payload type.
pub const RESULT_SCHEMA: &str = "palisade.dev/agent-result/v1";
pub const RESULT_PAYLOAD_TYPE: &str = "application/vnd.palisade.agent-result+json";
/// The agent's refusal: its schema and DSSE payload type.
pub const REFUSAL_SCHEMA: &str = "palisade.dev/agent-refusal/v1";
pub const REFUSAL_PAYLOAD_TYPE: &str = "application/vnd.palisade.agent-refusal+json";

/// The message a DSSE signature covers (pre-authentication encoding, DSSE v1).
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultOutcome {
    Succeeded,
    Failed,
}
/// What the agent did, signed by the agent key; the gateway logs its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentResult {
    pub schema: String,
    pub dispatch_digest: Sha256Digest,
    pub event_id: EventId,
    pub cluster: ClusterId,
    pub instance: InstanceId,
    pub action: ActionName,
    pub outcome: ResultOutcome,
    /// The output schema the output was reduced to.
    pub output_schema: String,
    /// The typed output (present when succeeded), at most the configured size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// SHA-256 of the output's canonical JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_digest: Option<Sha256Digest>,
    /// Why it failed: a short message, never action output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The size of the newest checkpoint the agent has accepted.
    pub log_size_seen: u64,
    /// The root hash (base64) of the checkpoint that proved this dispatch: with its
    /// size, the view of the log the agent acted on, which the customer checks is a
    /// tree of their own log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_root_seen: Option<String>,
    /// The witnesses (the log's and the tenant's) the agent required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<EnforcedTrust>,
}
impl AgentResult {
    /// What a result event carries of this result, signed with `keyid` and `sig`.
    pub fn attestation_with(&self, keyid: &str, sig: &str) -> AgentAttestation {
        AgentAttestation {
            output_schema: self.output_schema.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            log_size_seen: self.log_size_seen,
            log_root_seen: self.log_root_seen.clone(),
            error: self.error.clone(),
            trust: self.trust.clone().map(Box::new),
            keyid: keyid.to_string(),
            sig: sig.to_string(),
        }
    }

    /// The agent's signed statement rebuilt from a logged result and its intent,
    /// with the signature the log kept of it. `Err` says why it cannot be rebuilt (a
    /// result the gateway wrote alone, an output too large to log).
    pub fn from_logged<'a>(
        intent: &IntentEvent,
        result: &'a ResultEvent,
    ) -> Result<(AgentResult, &'a AgentAttestation), String> {
        let a = result
            .agent
            .as_ref()
            .ok_or("it carries no agent signature: the gateway wrote it alone")?;
        let outcome = match result.outcome {
            Outcome::Succeeded => ResultOutcome::Succeeded,
            Outcome::Failed => ResultOutcome::Failed,
            other => {
                return Err(format!(
                    "an agent never signs the outcome {}",
                    other.as_str()
                ))
            }
        };
        if result.output_digest.is_some() && result.output.is_none() {
            return Err(
                "its output was too large to log, so the agent's signature cannot be checked"
                    .into(),
            );
        }
        let rebuilt = AgentResult {
            schema: RESULT_SCHEMA.into(),
            dispatch_digest: intent.dispatch_digest,
            event_id: intent.event_id.clone(),
            cluster: intent.cluster.clone(),
            instance: intent
                .instance
                .clone()
                .ok_or("its intent names no instance")?,
            action: intent.action.clone(),
            outcome,
            output_schema: a.output_schema.clone(),
            output: result.output.clone(),
            output_digest: result.output_digest,
            error: a.error.clone(),
            started_at: a.started_at,
            finished_at: a.finished_at,
            log_size_seen: a.log_size_seen,
            log_root_seen: a.log_root_seen.clone(),
            trust: a.trust.as_deref().cloned(),
        };
        Ok((rebuilt, a))
    }
}

/// Why the agent refused a dispatch. Nothing ran and nothing was recorded, except
/// that a dispatch refused after its nonce was committed stays spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    Malformed,
    BadSignature,
    WrongTarget,
    Expired,
    NotYetValid,
    TtlTooLong,
    Replayed,
    PolicyMismatch,
    UnknownAction,
    InvalidParameters,
    EventMismatch,
    NotInLog,
    /// The proof's checkpoint is older than the agent's view, or the consistency
    /// proof starts from another size: retry with a newer checkpoint and a
    /// consistency proof from `known_size`.
    StaleView,
    /// The checkpoint is not consistent with what the agent saw: a forked or
    /// rewritten log.
    Inconsistent,
    /// The checkpoint's witness cosignatures are older than the agent accepts: a
    /// frozen or withheld view of the log.
    StaleCheckpoint,
    /// The agent requires its tenant's witness statement, and the dispatch carried
    /// none, one not signed by the tenant's key, or one older than it enforces.
    TenantTrust,
    /// The agent's policy repository cannot be verified now (its metadata expired or
    /// cannot be read): the components it verified before keep running, but no
    /// action runs until fresh metadata verifies.
    TrustMetadata,
    /// The tenant's policy requires the customer's approval for this action, and the
    /// dispatch carried no valid approval of this exact request: too few approvers,
    /// another request's, expired, denied, or already used.
    NotApproved,
    Unavailable,
}
impl RefusalCode {
    /// Every code, e.g. to export each one's count from zero.
    pub const ALL: [RefusalCode; 19] = [
        RefusalCode::Malformed,
        RefusalCode::BadSignature,
        RefusalCode::WrongTarget,
        RefusalCode::Expired,
        RefusalCode::NotYetValid,
        RefusalCode::TtlTooLong,
        RefusalCode::Replayed,
        RefusalCode::PolicyMismatch,
        RefusalCode::UnknownAction,
        RefusalCode::InvalidParameters,
        RefusalCode::EventMismatch,
        RefusalCode::NotInLog,
        RefusalCode::StaleView,
        RefusalCode::Inconsistent,
        RefusalCode::StaleCheckpoint,
        RefusalCode::TenantTrust,
        RefusalCode::TrustMetadata,
        RefusalCode::NotApproved,
        RefusalCode::Unavailable,
    ];

    pub fn http_status(self) -> u16 {
        match self {
            RefusalCode::Malformed => 400,
            RefusalCode::StaleView | RefusalCode::Replayed => 409,
            RefusalCode::Unavailable => 503,
            _ => 403,
        }
    }
}
/// A refusal as the agent signs it: nothing ran, for this reason, under this trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRefusal {
    pub schema: String,
    pub cluster: ClusterId,
    pub instance: InstanceId,
    /// The digest of the dispatch refused, when its envelope could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_digest: Option<Sha256Digest>,
    pub code: RefusalCode,
    pub detail: String,
    pub at: Timestamp,
    /// The size of the newest checkpoint the agent had accepted.
    pub log_size_seen: u64,
    pub trust: EnforcedTrust,
}
impl AgentRefusal {
    /// The agent's signed refusal rebuilt from a logged `refused_by_agent` result and
    /// its intent, with the signature the log kept of it.
    pub fn from_logged<'a>(
        intent: &IntentEvent,
        result: &'a ResultEvent,
    ) -> Result<(AgentRefusal, &'a RefusalAttestation), String> {
        let a = result
            .agent_refusal
            .as_deref()
            .ok_or("it carries no agent signature: the gateway wrote it alone")?;
        let code: RefusalCode = serde_json::from_value(serde_json::Value::String(a.code.clone()))
            .map_err(|_| format!("unknown refusal code {:?}", a.code))?;
        let rebuilt = AgentRefusal {
            schema: REFUSAL_SCHEMA.into(),
            cluster: intent.cluster.clone(),
            instance: intent
                .instance
                .clone()
                .ok_or("its intent names no instance")?,
            dispatch_digest: Some(intent.dispatch_digest),
            code,
            detail: a.detail.clone(),
            at: a.at,
            log_size_seen: a.log_size_seen,
            trust: a.trust.clone(),
        };
        Ok((rebuilt, a))
    }
}
