//! What a tenant states about its cluster with its own key: which witnesses it runs
//! (C2SP tlog-witness, cosignature keys) and how many of them must cosign every
//! checkpoint an agent of that cluster acts on, in addition to the provider's quorum.
//!
//! A statement is a DSSE envelope (`application/vnd.palisade.tenant-trust+json`)
//! over canonical JSON, signed by the tenant's Ed25519 key, and recorded in the
//! cluster's log (a `tenant_trust` event) so the customer sees it and its order.
//! Agents pin the tenant's public key from their configuration, so only the tenant can
//! make a statement they accept; `seq` only moves forward, so an older statement
//! (a witness the tenant retired) is refused once a newer one was seen.

use crate::customer_approval::ApprovalPolicy;
use crate::dsse::{Envelope, EnvelopeSignature};
use crate::keys::{PublicKey, SigningKey};
use palisade_core::canonical::{from_canonical_slice, to_canonical_vec};
use palisade_core::event::{self, SignedEnvelope, TenantTrustRef};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, Sha256Digest, TenantId};
use palisade_tlog::note::{KeyType, VerifierKey};
use serde::{Deserialize, Serialize};

pub const TENANT_TRUST_SCHEMA: &str = "palisade.dev/tenant-trust/v1";
pub const TENANT_TRUST_PAYLOAD_TYPE: &str = "application/vnd.palisade.tenant-trust+json";
/// Most witnesses one statement may list.
pub const MAX_TENANT_WITNESSES: usize = 16;

/// The tenant's witness statement (the signed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantTrust {
    pub schema: String,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    /// Orders the tenant's statements for one cluster: each must be greater than the
    /// one before; agents refuse a lower one once they saw a higher one.
    pub seq: u64,
    pub issued_at: Timestamp,
    /// The tenant's witnesses: C2SP cosignature verifier keys.
    pub witnesses: Vec<String>,
    /// How many of them must cosign (1 ≤ quorum ≤ number of distinct keys).
    pub quorum: u32,
    /// Which actions need the customer's approval, and whose
    /// ([`crate::customer_approval`]). Absent: none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
}

/// A statement whose signature verified under the tenant's key.
#[derive(Debug, Clone)]
pub struct OpenedTrust {
    pub trust: TenantTrust,
    /// SHA-256 of the signed payload.
    pub digest: Sha256Digest,
    pub keys: Vec<VerifierKey>,
}

impl TenantTrust {
    /// Parses the witness keys and checks the quorum.
    pub fn witness_keys(&self) -> Result<Vec<VerifierKey>, String> {
        if self.schema != TENANT_TRUST_SCHEMA {
            return Err(format!("schema is not {TENANT_TRUST_SCHEMA:?}"));
        }
        if self.witnesses.is_empty() || self.witnesses.len() > MAX_TENANT_WITNESSES {
            return Err(format!(
                "a statement lists 1 to {MAX_TENANT_WITNESSES} witnesses, not {}",
                self.witnesses.len()
            ));
        }
        let mut keys = Vec::with_capacity(self.witnesses.len());
        for (i, w) in self.witnesses.iter().enumerate() {
            let k = VerifierKey::parse(w).map_err(|e| format!("witnesses[{i}]: {e}"))?;
            if k.key_type() != KeyType::Cosignature {
                return Err(format!(
                    "witnesses[{i}]: must be a cosignature (type 0x04) verifier key"
                ));
            }
            keys.push(k);
        }
        let mut distinct: Vec<[u8; 32]> = keys.iter().map(VerifierKey::public_key).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let quorum = usize::try_from(self.quorum).unwrap_or(usize::MAX);
        if quorum == 0 || quorum > distinct.len() {
            return Err(format!(
                "quorum {} is not between 1 and the {} distinct witnesses listed",
                self.quorum,
                distinct.len()
            ));
        }
        if let Some(a) = &self.approval {
            a.approver_keys().map_err(|e| format!("approval: {e}"))?;
        }
        Ok(keys)
    }

    /// Signs the statement with the tenant's key, after checking it.
    pub fn sign(&self, key: &SigningKey) -> Result<Envelope, String> {
        self.witness_keys()?;
        let body = to_canonical_vec(self).map_err(|e| e.to_string())?;
        Ok(Envelope::sign(TENANT_TRUST_PAYLOAD_TYPE, &body, key))
    }

    /// Opens a signed statement: signed by `tenant_key`, canonical, well-formed.
    pub fn open(env: &Envelope, tenant_key: &PublicKey) -> Result<OpenedTrust, String> {
        let body = env
            .payload_bytes(TENANT_TRUST_PAYLOAD_TYPE)
            .map_err(|e| e.to_string())?;
        if env.verified_by(std::slice::from_ref(tenant_key)).is_empty() {
            return Err("the statement is not signed by the tenant's key".into());
        }
        let trust: TenantTrust = from_canonical_slice(&body)
            .map_err(|e| format!("the statement is not a tenant trust statement: {e}"))?;
        let keys = trust.witness_keys()?;
        Ok(OpenedTrust {
            trust,
            digest: Sha256Digest::of(&body),
            keys,
        })
    }

    /// Decodes a statement without checking any signature (for display).
    pub fn decode(env: &Envelope) -> Result<(TenantTrust, Sha256Digest), String> {
        let body = env
            .payload_bytes(TENANT_TRUST_PAYLOAD_TYPE)
            .map_err(|e| e.to_string())?;
        let trust: TenantTrust = from_canonical_slice(&body).map_err(|e| e.to_string())?;
        Ok((trust, Sha256Digest::of(&body)))
    }
}

impl OpenedTrust {
    /// What an agent that enforces this statement says it enforced.
    pub fn reference(&self) -> TenantTrustRef {
        TenantTrustRef {
            seq: self.trust.seq,
            statement: self.digest,
            witnesses: self.trust.witnesses.clone(),
            quorum: self.trust.quorum,
        }
    }
}

impl From<&Envelope> for SignedEnvelope {
    fn from(e: &Envelope) -> Self {
        SignedEnvelope {
            payload: e.payload.clone(),
            payload_type: e.payload_type.clone(),
            signatures: e
                .signatures
                .iter()
                .map(|s| event::EnvelopeSignature {
                    keyid: s.keyid.clone(),
                    sig: s.sig.clone(),
                })
                .collect(),
        }
    }
}

impl From<&SignedEnvelope> for Envelope {
    fn from(e: &SignedEnvelope) -> Self {
        Envelope {
            payload: e.payload.clone(),
            payload_type: e.payload_type.clone(),
            signatures: e
                .signatures
                .iter()
                .map(|s| EnvelopeSignature {
                    keyid: s.keyid.clone(),
                    sig: s.sig.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_tlog::note::SignerKey;

    fn statement(witnesses: Vec<String>, quorum: u32) -> TenantTrust {
        TenantTrust {
            schema: TENANT_TRUST_SCHEMA.into(),
            tenant: TenantId::parse("acme").expect("tenant"),
            cluster: ClusterId::parse("prod").expect("cluster"),
            seq: 1,
            issued_at: Timestamp::from_unix_seconds(1_800_000_000),
            witnesses,
            quorum,
            approval: None,
        }
    }

    #[test]
    fn only_the_tenant_key_opens_a_statement_and_changes_are_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenant = crate::keys::generate("acme", dir.path(), false).expect("key");
        let tenant = SigningKey::read(&tenant.private).expect("read");
        let other = crate::keys::generate("mallory", &dir.path().join("m"), false).expect("key");
        let other = SigningKey::read(&other.private).expect("read");
        let w = SignerKey::generate("witness.acme.example", KeyType::Cosignature).expect("w");
        let s = statement(vec![w.verifier().to_string()], 1);
        let env = s.sign(&tenant).expect("sign");
        let opened = TenantTrust::open(&env, tenant.public()).expect("open");
        assert_eq!(opened.trust, s);
        assert_eq!(opened.keys, vec![w.verifier()]);
        assert_eq!(opened.reference().seq, 1);
        // Another key's signature, a changed payload and a round trip through the log.
        let forged = s.sign(&other).expect("sign");
        assert!(TenantTrust::open(&forged, tenant.public())
            .expect_err("refused")
            .contains("not signed by the tenant"));
        let mut changed = env.clone();
        let mut loosened = s.clone();
        loosened.quorum = 1;
        loosened.witnesses = vec![SignerKey::generate("x", KeyType::Cosignature)
            .expect("x")
            .verifier()
            .to_string()];
        changed.payload = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            to_canonical_vec(&loosened).expect("json"),
        );
        assert!(TenantTrust::open(&changed, tenant.public()).is_err());
        let logged = SignedEnvelope::from(&env);
        assert_eq!(Envelope::from(&logged), env);
    }

    #[test]
    fn bad_witness_lists_and_quorums_are_refused() {
        let w = SignerKey::generate("w.example", KeyType::Cosignature).expect("w");
        let ed = SignerKey::generate("log.example", KeyType::Ed25519).expect("ed");
        assert!(statement(vec![], 1).witness_keys().is_err());
        assert!(statement(vec![w.verifier().to_string()], 0)
            .witness_keys()
            .expect_err("refused")
            .contains("quorum 0"));
        assert!(
            statement(vec![w.verifier().to_string(), w.verifier().to_string()], 2)
                .witness_keys()
                .expect_err("refused")
                .contains("1 distinct")
        );
        assert!(statement(vec![ed.verifier().to_string()], 1)
            .witness_keys()
            .expect_err("refused")
            .contains("cosignature"));
        assert!(statement(vec!["not a key".into()], 1)
            .witness_keys()
            .is_err());
    }
}
