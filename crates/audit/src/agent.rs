//! The agent's signatures over what the log records of its results and refusals:
//! the statement is rebuilt from the logged result and its intent
//! ([`palisade_core::statement`]) and its Ed25519 signature checked over the DSSE
//! encoding of exactly those bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use palisade_core::canonical::to_canonical_vec;
use palisade_core::event::{IntentEvent, ResultEvent};
use palisade_core::statement::{
    pae, AgentRefusal, AgentResult, REFUSAL_PAYLOAD_TYPE, RESULT_PAYLOAD_TYPE,
};

/// An agent's Ed25519 public key, as the log's `agent_key` events record it.
pub type AgentKey = [u8; 32];

/// The agent's signed result rebuilt from a logged result and its intent, checked
/// against `keys`. `Err` says why it cannot be rebuilt (a result the gateway wrote
/// alone, an output too large to log) or does not verify (the agent did not sign it).
pub fn verify_result(
    intent: &IntentEvent,
    result: &ResultEvent,
    keys: &[AgentKey],
) -> Result<AgentResult, String> {
    let (rebuilt, a) = AgentResult::from_logged(intent, result)?;
    signed_by(RESULT_PAYLOAD_TYPE, &rebuilt, &a.sig, keys, "result").map_err(|e| {
        format!("the agent's signature does not verify ({e}): the agent did not sign this outcome, output or intent")
    })?;
    Ok(rebuilt)
}

/// The agent's signed refusal rebuilt from a logged `refused_by_agent` result and
/// its intent, checked against `keys`.
pub fn verify_refusal(
    intent: &IntentEvent,
    result: &ResultEvent,
    keys: &[AgentKey],
) -> Result<AgentRefusal, String> {
    let (rebuilt, a) = AgentRefusal::from_logged(intent, result)?;
    signed_by(REFUSAL_PAYLOAD_TYPE, &rebuilt, &a.sig, keys, "refusal").map_err(|e| {
        format!("the agent's signature does not verify ({e}): the agent did not sign this refusal for this intent")
    })?;
    Ok(rebuilt)
}

/// Whether `sig` (base64) is one of `keys`' signatures over `statement`'s
/// canonical JSON as a DSSE payload of `payload_type`.
fn signed_by(
    payload_type: &str,
    statement: &impl serde::Serialize,
    sig: &str,
    keys: &[AgentKey],
    what: &str,
) -> Result<(), String> {
    let body = to_canonical_vec(statement).map_err(|e| e.to_string())?;
    let msg = pae(payload_type, &body);
    let not_signed = || format!("the {what} is not signed by a trusted agent key");
    let sig = STANDARD.decode(sig).map_err(|_| not_signed())?;
    let sig = Signature::from_slice(&sig).map_err(|_| not_signed())?;
    let verified = keys
        .iter()
        .any(|k| VerifyingKey::from_bytes(k).is_ok_and(|vk| vk.verify_strict(&msg, &sig).is_ok()));
    if verified {
        Ok(())
    } else {
        Err(not_signed())
    }
}

/// The payload of a logged DSSE statement (a tenant's witness statement, say) of
/// `payload_type`, if one of its signatures verifies under `key`.
pub fn statement_signed_by(
    env: &palisade_core::event::SignedEnvelope,
    payload_type: &str,
    key: &AgentKey,
) -> Result<Vec<u8>, String> {
    if env.payload_type != payload_type {
        return Err(format!("its payload type is not {payload_type}"));
    }
    let body = STANDARD
        .decode(&env.payload)
        .map_err(|_| "its payload is not base64".to_string())?;
    let msg = pae(payload_type, &body);
    let vk =
        VerifyingKey::from_bytes(key).map_err(|_| "the key is not an Ed25519 key".to_string())?;
    let verified = env.signatures.iter().any(|s| {
        STANDARD
            .decode(&s.sig)
            .ok()
            .and_then(|sig| Signature::from_slice(&sig).ok())
            .is_some_and(|sig| vk.verify_strict(&msg, &sig).is_ok())
    });
    if verified {
        Ok(body)
    } else {
        Err("it is not signed by your tenant key".into())
    }
}

/// The public key an `agent_key` event records, if it is well formed (32 bytes).
pub fn logged_key(k: &palisade_core::event::AgentKeyEvent) -> Option<AgentKey> {
    let raw = STANDARD.decode(&k.key).ok()?;
    <[u8; 32]>::try_from(raw.as_slice()).ok()
}

/// The agent keys a log records, by instance.
#[derive(Debug, Default)]
pub struct Enrolled(std::collections::HashMap<String, Vec<AgentKey>>);

impl Enrolled {
    /// Every well-formed key the `agent_key` events among `events` record (a result
    /// may precede its agent's key in the log, so all are read first).
    pub fn from_events<'a, E: 'a>(
        events: impl IntoIterator<Item = &'a Result<palisade_core::event::Event, E>>,
    ) -> Enrolled {
        let mut keys = Enrolled::default();
        for event in events {
            if let Ok(palisade_core::event::Event::AgentKey(k)) = event {
                if let Some(key) = logged_key(k) {
                    keys.0.entry(k.instance.to_string()).or_default().push(key);
                }
            }
        }
        keys
    }

    pub fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// The keys a result of `intent` may be signed with: `given` and those the log
    /// records for the intent's instance.
    pub fn for_intent(&self, given: &[AgentKey], intent: Option<&IntentEvent>) -> Vec<AgentKey> {
        let mut keys = given.to_vec();
        if let Some(i) = intent.and_then(|i| i.instance.as_ref()) {
            keys.extend(self.0.get(i.as_str()).into_iter().flatten().copied());
        }
        keys
    }
}
