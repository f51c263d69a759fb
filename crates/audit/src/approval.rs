//! What a tenant's approver signs to approve or deny an operator's request, built
//! for the console, which signs it in the browser with a key that never leaves the
//! browser's key store (WebCrypto, Ed25519). The gateway and the agent check it as
//! any approval (`palisade_policy::customer_approval`): the payload's canonical JSON,
//! its DSSE encoding, the approver's TUF key id.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_core::canonical::value_to_canonical_vec;
use palisade_core::statement::pae;
use palisade_core::Sha256Digest;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The approval payload's schema and DSSE payload type.
pub const APPROVAL_SCHEMA: &str = "palisade.dev/customer-approval/v1";
pub const APPROVAL_PAYLOAD_TYPE: &str = "application/vnd.palisade.customer-approval+json";

/// One approver's decision on one request, as the page fills it in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub tenant: String,
    pub cluster: String,
    pub request: String,
    pub request_index: u64,
    pub request_digest: String,
    /// `approve` or `deny`.
    pub decision: String,
    pub issued_at: String,
    pub expires_at: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The bytes the approver signs: the payload, and its DSSE encoding.
#[derive(Debug, Serialize)]
pub struct ToSign {
    pub payload_type: &'static str,
    /// The payload (canonical JSON), base64.
    pub payload: String,
    /// The message the signature covers (DSSE PAE), base64.
    pub pae: String,
}

/// The payload for `d`, checked for shape: a decision the gateway would refuse for
/// its form is refused here first.
pub fn to_sign(d: &Decision) -> Result<ToSign, String> {
    if d.decision != "approve" && d.decision != "deny" {
        return Err(format!(
            "a decision is approve or deny, not {:?}",
            d.decision
        ));
    }
    let mut v = json!({
        "schema": APPROVAL_SCHEMA,
        "tenant": d.tenant,
        "cluster": d.cluster,
        "request": d.request,
        "request_index": d.request_index,
        "request_digest": d.request_digest,
        "decision": d.decision,
        "issued_at": d.issued_at,
        "expires_at": d.expires_at,
    });
    if let Some(r) = d.reason.as_deref().filter(|r| !r.is_empty()) {
        v["reason"] = json!(r);
    }
    let body = value_to_canonical_vec(&v).map_err(|e| e.to_string())?;
    Ok(ToSign {
        payload_type: APPROVAL_PAYLOAD_TYPE,
        payload: STANDARD.encode(&body),
        pae: STANDARD.encode(pae(APPROVAL_PAYLOAD_TYPE, &body)),
    })
}

/// The TUF key id of a raw Ed25519 public key: the `keyid` of its DSSE signatures
/// (hex SHA-256 of the canonical JSON of the key object).
pub fn key_id(raw: &[u8]) -> Result<String, String> {
    if raw.len() != 32 {
        return Err(format!(
            "an Ed25519 public key is 32 bytes, not {}",
            raw.len()
        ));
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let key = json!({"keytype": "ed25519", "keyval": {"public": hex}, "scheme": "ed25519"});
    let bytes = value_to_canonical_vec(&key).map_err(|e| e.to_string())?;
    Ok(Sha256Digest::of(&bytes)
        .to_string()
        .trim_start_matches("sha256:")
        .to_string())
}
