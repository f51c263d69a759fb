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
    AgentAttestation, IntentEvent, ParamValue, PolicyRef, RefusalAttestation, ResultEvent,
};
use palisade_core::time::Timestamp;
use palisade_core::{
    ActionName, ClusterId, EventId, InstanceId, OperatorId, Sha256Digest, TenantId,
};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use palisade_core::statement::{
    AgentRefusal, AgentResult, RefusalCode, ResultOutcome, REFUSAL_PAYLOAD_TYPE, REFUSAL_SCHEMA,
    RESULT_PAYLOAD_TYPE, RESULT_SCHEMA,
};

pub const DISPATCH_SCHEMA: &str = "palisade.dev/dispatch/v1";
pub const DISPATCH_PAYLOAD_TYPE: &str = "application/vnd.palisade.dispatch+json";
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

/// Signing and opening the statements an agent signs (its results and refusals,
/// [`palisade_core::statement`]) as DSSE envelopes with the keys Palisade's policy
/// reads.
pub trait AgentStatement: Sized {
    /// Signs the statement's canonical JSON with the agent key.
    fn sign(&self, key: &SigningKey) -> Result<Envelope, CanonicalError>;
    /// Opens a signed statement: a signature by one of `agent_keys`, the schema.
    fn verify(envelope: &Envelope, agent_keys: &[PublicKey]) -> Result<Self, String>;
    /// The statement rebuilt from a logged result and its intent, and checked
    /// against `agent_keys` (the customer's check, [`palisade_audit::agent`]).
    fn verify_logged(
        intent: &IntentEvent,
        result: &ResultEvent,
        agent_keys: &[PublicKey],
    ) -> Result<Self, String>;
}

impl AgentStatement for AgentResult {
    fn sign(&self, key: &SigningKey) -> Result<Envelope, CanonicalError> {
        Ok(Envelope::sign(
            RESULT_PAYLOAD_TYPE,
            &to_canonical_vec(self)?,
            key,
        ))
    }

    fn verify(envelope: &Envelope, agent_keys: &[PublicKey]) -> Result<AgentResult, String> {
        let r: AgentResult = open_signed(envelope, RESULT_PAYLOAD_TYPE, agent_keys, "result")?;
        if r.schema != RESULT_SCHEMA {
            return Err(format!("result schema is not {RESULT_SCHEMA:?}"));
        }
        Ok(r)
    }

    fn verify_logged(
        intent: &IntentEvent,
        result: &ResultEvent,
        agent_keys: &[PublicKey],
    ) -> Result<AgentResult, String> {
        palisade_audit::agent::verify_result(intent, result, &raw_keys(agent_keys))
    }
}

impl AgentStatement for AgentRefusal {
    fn sign(&self, key: &SigningKey) -> Result<Envelope, CanonicalError> {
        Ok(Envelope::sign(
            REFUSAL_PAYLOAD_TYPE,
            &to_canonical_vec(self)?,
            key,
        ))
    }

    fn verify(envelope: &Envelope, agent_keys: &[PublicKey]) -> Result<AgentRefusal, String> {
        let r: AgentRefusal = open_signed(envelope, REFUSAL_PAYLOAD_TYPE, agent_keys, "refusal")?;
        if r.schema != REFUSAL_SCHEMA {
            return Err(format!("refusal schema is not {REFUSAL_SCHEMA:?}"));
        }
        Ok(r)
    }

    fn verify_logged(
        intent: &IntentEvent,
        result: &ResultEvent,
        agent_keys: &[PublicKey],
    ) -> Result<AgentRefusal, String> {
        palisade_audit::agent::verify_refusal(intent, result, &raw_keys(agent_keys))
    }
}

/// What a result event carries of `result` signed in `envelope`.
pub fn result_attestation(result: &AgentResult, envelope: &Envelope) -> Option<AgentAttestation> {
    let s = envelope.signatures.first()?;
    Some(result.attestation_with(&s.keyid, &s.sig))
}

/// The raw Ed25519 keys among `keys`.
pub fn raw_keys(keys: &[PublicKey]) -> Vec<palisade_audit::agent::AgentKey> {
    keys.iter()
        .filter_map(|k| k.raw().and_then(|r| <[u8; 32]>::try_from(r).ok()))
        .collect()
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
