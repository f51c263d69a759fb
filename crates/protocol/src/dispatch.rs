//! The dispatch protocol between gateway and agent (formats in docs/formats.md).
//!
//! A [`Dispatch`] is what the gateway asks one agent to do. Its canonical JSON is
//! signed by the gateway key in a DSSE envelope (payload type
//! [`DISPATCH_PAYLOAD_TYPE`]), and its SHA-256 (the *dispatch digest*) is written into
//! the intent event **before** the dispatch is sent, so the log names the exact
//! request. The [`DispatchRequest`] sent to `POST /v1/dispatch` carries the envelope,
//! the intent event's log entry bytes, a C2SP tlog-proof that the entry is in a
//! witnessed checkpoint, and, when the agent has seen an older checkpoint, a
//! consistency proof from that size.
//!
//! The agent answers with an [`AgentResult`] signed by the agent key (payload type
//! [`RESULT_PAYLOAD_TYPE`]), or a [`Refusal`] (HTTP 4xx, `application/problem+json`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use palisade_core::canonical::{from_canonical_slice, to_canonical_vec, CanonicalError};
use palisade_core::event::{
    AgentAttestation, EnforcedTrust, IntentEvent, Outcome, ParamValue, PolicyRef,
    RefusalAttestation, ResultEvent,
};
use palisade_core::time::Timestamp;
use palisade_core::{
    ActionName, ClusterId, EventId, InstanceId, OperatorId, Sha256Digest, TenantId,
};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DISPATCH_SCHEMA: &str = "palisade.dev/dispatch/v1";
pub const RESULT_SCHEMA: &str = "palisade.dev/agent-result/v1";
pub const DISPATCH_PAYLOAD_TYPE: &str = "application/vnd.palisade.dispatch+json";
pub const RESULT_PAYLOAD_TYPE: &str = "application/vnd.palisade.agent-result+json";
pub const REFUSAL_SCHEMA: &str = "palisade.dev/agent-refusal/v1";
pub const REFUSAL_PAYLOAD_TYPE: &str = "application/vnd.palisade.agent-refusal+json";
/// The only route that executes anything.
pub const DISPATCH_PATH: &str = "/v1/dispatch";
/// Liveness and the agent's view (policy, newest checkpoint size).
pub const HEALTH_PATH: &str = "/healthz";
/// The signed result of a dispatch the agent accepted, by its intent's event id
/// (`/v1/results/<event id>`): how a gateway that lost the answer learns it.
pub const RESULTS_PATH: &str = "/v1/results/{event_id}";
/// How long the agent keeps the result of an ended dispatch for [`RESULTS_PATH`].
pub const RESULTS_KEPT_SECS: u64 = 7 * 24 * 3600;

/// The answer of [`RESULTS_PATH`] while the action is still running (HTTP 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub status: String,
    pub event_id: EventId,
    pub started_at: Timestamp,
}
/// Largest request body the agent reads.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// One request to one agent. Every field is covered by the gateway's signature and,
/// through the dispatch digest, by the intent event in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatch {
    pub schema: String,
    /// 128 random bits (32 hex digits); an agent executes a nonce at most once.
    pub nonce: EventId,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    /// The instance whose agent must execute it.
    pub instance: InstanceId,
    /// The intent event this dispatch carries out.
    pub event_id: EventId,
    /// The operator, as the log names them (a stable pseudonym).
    pub actor: OperatorId,
    pub action: ActionName,
    pub parameters: BTreeMap<String, ParamValue>,
    pub policy: PolicyRef,
}

impl Dispatch {
    /// The exact signed bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        to_canonical_vec(self)
    }

    /// Parses signed bytes; only the canonical spelling of the known schema.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let d: Dispatch = from_canonical_slice(bytes).map_err(|e| e.to_string())?;
        if d.schema != DISPATCH_SCHEMA {
            return Err(format!("schema is not {DISPATCH_SCHEMA:?}"));
        }
        if d.to_bytes().map_err(|e| e.to_string())? != bytes {
            return Err("not the canonical encoding".into());
        }
        Ok(d)
    }

    /// SHA-256 of [`Dispatch::to_bytes`]: what the intent event names.
    pub fn digest(&self) -> Result<Sha256Digest, CanonicalError> {
        Ok(Sha256Digest::of(&self.to_bytes()?))
    }

    /// Signs it with the gateway key.
    pub fn sign(&self, key: &SigningKey) -> Result<Envelope, CanonicalError> {
        Ok(Envelope::sign(
            DISPATCH_PAYLOAD_TYPE,
            &self.to_bytes()?,
            key,
        ))
    }
}

/// A consistency proof from the checkpoint size the agent last saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    pub from_size: u64,
    /// Base64 hashes, RFC 6962 order.
    pub hashes: Vec<String>,
}

/// The body of `POST /v1/dispatch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRequest {
    /// The DSSE envelope of the signed [`Dispatch`].
    pub dispatch: Envelope,
    /// Base64 of the intent event's exact log entry bytes.
    pub event: String,
    /// C2SP tlog-proof text for that entry (index, inclusion proof, cosigned checkpoint).
    pub proof: String,
    /// Needed when the agent has seen a smaller checkpoint than the proof's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// The tenant's newest witness statement (signed by the tenant's key): required
    /// by an agent configured with a tenant key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_trust: Option<Envelope>,
    /// The customer's approval, for an action the tenant's policy says needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalBundle>,
}

/// What proves the customer approved: the request as logged, and the approvers'
/// signed approvals of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBundle {
    /// Base64 of the `approval_request` event's exact log entry bytes.
    pub request: String,
    /// C2SP tlog-proof of that entry: where it is in the cluster's log, under a
    /// checkpoint signed by the log and cosigned by the witnesses the agent requires.
    pub proof: String,
    /// DSSE envelopes (`application/vnd.palisade.customer-approval+json`).
    pub approvals: Vec<Envelope>,
}

impl DispatchRequest {
    pub fn event_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        BASE64.decode(&self.event)
    }

    pub fn encode_event(bytes: &[u8]) -> String {
        BASE64.encode(bytes)
    }
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
    /// What a result event carries of this result signed in `envelope`.
    pub fn attestation(&self, envelope: &Envelope) -> Option<AgentAttestation> {
        let signature = envelope.signatures.first()?;
        Some(AgentAttestation {
            output_schema: self.output_schema.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            log_size_seen: self.log_size_seen,
            log_root_seen: self.log_root_seen.clone(),
            error: self.error.clone(),
            trust: self.trust.clone().map(Box::new),
            keyid: signature.keyid.clone(),
            sig: signature.sig.clone(),
        })
    }

    /// The agent's signed statement rebuilt from a logged result and its intent,
    /// and checked against `agent_keys`. `Err` says why it cannot be rebuilt (a
    /// result the gateway wrote alone, an output too large to log) or does not
    /// verify (a result the agent did not sign).
    pub fn verify_logged(
        intent: &IntentEvent,
        result: &ResultEvent,
        agent_keys: &[PublicKey],
    ) -> Result<AgentResult, String> {
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
        let envelope = rebuilt_envelope(RESULT_PAYLOAD_TYPE, &rebuilt, &a.keyid, &a.sig)?;
        AgentResult::verify(&envelope, agent_keys)
            .map_err(|e| format!("the agent's signature does not verify ({e}): the agent did not sign this outcome, output or intent"))
    }

    pub fn sign(&self, key: &SigningKey) -> Result<Envelope, CanonicalError> {
        Ok(Envelope::sign(
            RESULT_PAYLOAD_TYPE,
            &to_canonical_vec(self)?,
            key,
        ))
    }

    /// Opens a signed result: a signature by one of `agent_keys`, the result schema.
    pub fn verify(envelope: &Envelope, agent_keys: &[PublicKey]) -> Result<AgentResult, String> {
        let r: AgentResult = open_signed(envelope, RESULT_PAYLOAD_TYPE, agent_keys, "result")?;
        if r.schema != RESULT_SCHEMA {
            return Err(format!("result schema is not {RESULT_SCHEMA:?}"));
        }
        Ok(r)
    }
}

/// The payload of `envelope` (of `payload_type`), signed by one of `agent_keys`, as
/// canonical JSON of a `T` (`what` names it in errors).
fn open_signed<T: serde::de::DeserializeOwned>(
    envelope: &Envelope,
    payload_type: &str,
    agent_keys: &[PublicKey],
    what: &str,
) -> Result<T, String> {
    let bytes = envelope
        .payload_bytes(payload_type)
        .map_err(|e| e.to_string())?;
    if envelope.verified_by(agent_keys).is_empty() {
        return Err(format!("the {what} is not signed by a trusted agent key"));
    }
    from_canonical_slice(&bytes).map_err(|e| e.to_string())
}

/// The envelope an agent signed, rebuilt from its payload and the signature the log
/// kept of it.
fn rebuilt_envelope(
    payload_type: &str,
    payload: &impl Serialize,
    keyid: &str,
    sig: &str,
) -> Result<Envelope, String> {
    let payload = to_canonical_vec(payload).map_err(|e| e.to_string())?;
    Ok(Envelope {
        payload: BASE64.encode(&payload),
        payload_type: payload_type.into(),
        signatures: vec![palisade_policy::dsse::EnvelopeSignature {
            keyid: keyid.to_string(),
            sig: sig.to_string(),
        }],
    })
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

/// A refusal, sent as `application/problem+json` (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: RefusalCode,
    /// With `stale_view`: the checkpoint size the agent has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_size: Option<u64>,
    /// The agent's signed [`AgentRefusal`] (a DSSE envelope), so that the refusal
    /// logged in the customer's log is the agent's word, not the gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Box<Envelope>>,
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
    pub fn sign(&self, key: &SigningKey) -> Result<Envelope, CanonicalError> {
        Ok(Envelope::sign(
            REFUSAL_PAYLOAD_TYPE,
            &to_canonical_vec(self)?,
            key,
        ))
    }

    /// Opens a signed refusal: a signature by one of `agent_keys`, the schema.
    pub fn verify(envelope: &Envelope, agent_keys: &[PublicKey]) -> Result<AgentRefusal, String> {
        let r: AgentRefusal = open_signed(envelope, REFUSAL_PAYLOAD_TYPE, agent_keys, "refusal")?;
        if r.schema != REFUSAL_SCHEMA {
            return Err(format!("refusal schema is not {REFUSAL_SCHEMA:?}"));
        }
        Ok(r)
    }

    /// The agent's signed refusal rebuilt from a logged `refused_by_agent` result
    /// and its intent, and checked against `agent_keys`.
    pub fn verify_logged(
        intent: &IntentEvent,
        result: &ResultEvent,
        agent_keys: &[PublicKey],
    ) -> Result<AgentRefusal, String> {
        let a = result
            .agent_refusal
            .as_ref()
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
        let envelope = rebuilt_envelope(REFUSAL_PAYLOAD_TYPE, &rebuilt, &a.keyid, &a.sig)?;
        AgentRefusal::verify(&envelope, agent_keys).map_err(|e| {
            format!("the agent's signature does not verify ({e}): the agent did not sign this refusal for this intent")
        })
    }
}

impl Refusal {
    pub fn new(code: RefusalCode, detail: impl Into<String>) -> Self {
        let name = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut detail: String = detail.into();
        if detail.len() > 512 {
            let mut cut = 512;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Self {
            type_: format!("urn:palisade:agent:refused:{name}"),
            title: "dispatch refused".into(),
            status: code.http_status(),
            detail,
            code,
            known_size: None,
            signed: None,
        }
    }

    /// What a result event carries of this refusal's signature, if it is signed.
    pub fn attestation(&self) -> Option<RefusalAttestation> {
        let env = self.signed.as_ref()?;
        let signature = env.signatures.first()?;
        let bytes = env.payload_bytes(REFUSAL_PAYLOAD_TYPE).ok()?;
        let r: AgentRefusal = from_canonical_slice(&bytes).ok()?;
        Some(RefusalAttestation {
            code: serde_json::to_value(r.code).ok()?.as_str()?.to_string(),
            detail: r.detail,
            at: r.at,
            log_size_seen: r.log_size_seen,
            trust: r.trust,
            keyid: signature.keyid.clone(),
            sig: signature.sig.clone(),
        })
    }

    pub fn stale(known_size: u64, detail: impl Into<String>) -> Self {
        let mut r = Self::new(RefusalCode::StaleView, detail);
        r.known_size = Some(known_size);
        r
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.type_.rsplit(':').next().unwrap_or("refused");
        write!(f, "{name}: {}", self.detail)
    }
}

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub cluster: ClusterId,
    pub instance: InstanceId,
    pub policy_version: u64,
    pub policy_digest: String,
    pub log_size_seen: u64,
    /// When the trust metadata the policy was verified with expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_expires_at: Option<Timestamp>,
    /// Why the policy repository did not verify at the last try: set, the agent
    /// runs no action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_unverified: Option<String>,
    /// Whether the etcd member this agent supervises is running and healthy
    /// (absent when it supervises none): the gateway sends cluster actions to an
    /// instance whose member is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_running: Option<bool>,
}
