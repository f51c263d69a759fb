//! Customer approval of sensitive actions, enforced on the instance.
//!
//! The tenant's statement (signed by the tenant's key, [`crate::tenant`]) may carry
//! an [`ApprovalPolicy`]: which actions need approval (by name, by risk class, or
//! all), who approves (Ed25519 keys), how many of them (M of N), how long an approval
//! stays valid and how long a request waits. Only a newer statement signed by the
//! tenant's key changes it.
//!
//! An operator's request for such an action is logged as an `approval_request`
//! event; each approver signs a [`CustomerApproval`] — a DSSE envelope over canonical
//! JSON naming the request's event id, its log index and the SHA-256 of its log
//! entry — so that an approval binds exactly that action, those parameters, that
//! instance and that expiry. [`count_approvals`] is the rule the agent applies before
//! it runs anything: only the policy's approvers, each once, deciding `approve`, for
//! this request, within their validity, at least the threshold.

use crate::dsse::Envelope;
use crate::keys::{PublicKey, SigningKey};
use crate::model::Risk;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_core::canonical::{from_canonical_slice, to_canonical_vec};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, Sha256Digest, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub const APPROVAL_SCHEMA: &str = "palisade.dev/customer-approval/v1";
pub const APPROVAL_PAYLOAD_TYPE: &str = "application/vnd.palisade.customer-approval+json";
/// How long an approval stays valid by default: 8 hours.
pub const DEFAULT_APPROVAL_TTL_SECS: u64 = 8 * 3600;
/// How long a request waits for its approvals by default: 24 hours.
pub const DEFAULT_REQUEST_TTL_SECS: u64 = 24 * 3600;
/// Most approvers one policy may name.
pub const MAX_APPROVERS: usize = 32;

/// One approver: a name for people, and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub name: String,
    /// Standard base64 of the 32-byte Ed25519 public key.
    pub key: String,
}

impl Approver {
    pub fn of(key: &PublicKey) -> Result<Self, String> {
        let raw = key
            .raw()
            .ok_or_else(|| format!("approver {}: not an Ed25519 key", key.name))?;
        Ok(Self {
            name: key.name.clone(),
            key: STANDARD.encode(raw),
        })
    }

    pub fn public_key(&self) -> Result<PublicKey, String> {
        let raw = STANDARD
            .decode(&self.key)
            .map_err(|e| format!("approver {}: key is not base64: {e}", self.name))?;
        if raw.len() != 32 {
            return Err(format!(
                "approver {}: an Ed25519 key is 32 bytes, not {}",
                self.name,
                raw.len()
            ));
        }
        Ok(PublicKey::from_raw(&self.name, &raw))
    }
}

/// What the tenant requires before an action runs on its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Every action needs approval.
    pub all: bool,
    /// Risk classes whose actions need approval.
    pub risks: Vec<Risk>,
    /// Actions that need approval, by name.
    pub actions: Vec<String>,
    pub approvers: Vec<Approver>,
    /// How many distinct approvers must approve (1 ≤ threshold ≤ approvers).
    pub threshold: u32,
    /// How long an approval stays valid after it is signed.
    pub approval_ttl_secs: u64,
    /// How long a request waits for its approvals.
    pub request_ttl_secs: u64,
}

impl ApprovalPolicy {
    /// Whether `action` (of `risk`) needs approval.
    pub fn requires(&self, action: &str, risk: Risk) -> bool {
        self.all || self.risks.contains(&risk) || self.actions.iter().any(|a| a == action)
    }

    /// The approvers' keys, after checking the policy is coherent.
    pub fn approver_keys(&self) -> Result<Vec<PublicKey>, String> {
        if self.approvers.is_empty() || self.approvers.len() > MAX_APPROVERS {
            return Err(format!(
                "an approval policy names 1 to {MAX_APPROVERS} approvers, not {}",
                self.approvers.len()
            ));
        }
        let keys = self
            .approvers
            .iter()
            .map(Approver::public_key)
            .collect::<Result<Vec<_>, _>>()?;
        let distinct: BTreeSet<String> = keys.iter().map(PublicKey::key_id).collect();
        if distinct.len() != keys.len() {
            return Err("an approver's key is listed twice".into());
        }
        let threshold = usize::try_from(self.threshold).unwrap_or(usize::MAX);
        if threshold == 0 || threshold > keys.len() {
            return Err(format!(
                "threshold {} is not between 1 and the {} approvers",
                self.threshold,
                keys.len()
            ));
        }
        if !self.all && self.risks.is_empty() && self.actions.is_empty() {
            return Err(
                "the policy names no action, risk class or `all`: nothing would need approval"
                    .into(),
            );
        }
        for (what, secs) in [
            ("approval_ttl_secs", self.approval_ttl_secs),
            ("request_ttl_secs", self.request_ttl_secs),
        ] {
            if !(60..=30 * 86_400).contains(&secs) {
                return Err(format!(
                    "{what} {secs} is not between 60 and 2592000 (30 days)"
                ));
            }
        }
        Ok(keys)
    }
}

/// An approver's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// The payload an approver signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerApproval {
    pub schema: String,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    /// The request: its event id, its index in the cluster's log and the SHA-256 of
    /// its log entry (which holds the action, parameters, instance and expiry).
    pub request: EventId,
    pub request_index: u64,
    pub request_digest: Sha256Digest,
    pub decision: Decision,
    pub issued_at: Timestamp,
    /// The approval is not used after this (at most the policy's `approval_ttl_secs`
    /// after `issued_at`).
    pub expires_at: Timestamp,
    /// Why, in the approver's words (a denial's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The request an approval is checked against.
#[derive(Debug, Clone, Copy)]
pub struct RequestRef<'a> {
    pub tenant: &'a TenantId,
    pub cluster: &'a ClusterId,
    pub request: &'a EventId,
    pub request_index: u64,
    pub request_digest: &'a Sha256Digest,
}

/// An approval whose signature verified under one of the policy's approvers.
#[derive(Debug, Clone)]
pub struct OpenedApproval {
    pub approval: CustomerApproval,
    pub approver: PublicKey,
}

impl CustomerApproval {
    pub fn sign(&self, key: &SigningKey) -> Result<Envelope, String> {
        let body = to_canonical_vec(self).map_err(|e| e.to_string())?;
        Ok(Envelope::sign(APPROVAL_PAYLOAD_TYPE, &body, key))
    }

    /// Signs with a key held elsewhere (a PKCS#11 token) whose public half is `key`.
    pub fn sign_external<E: std::fmt::Display>(
        &self,
        key: &PublicKey,
        sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Envelope, String> {
        let body = to_canonical_vec(self).map_err(|e| e.to_string())?;
        Envelope::sign_external(APPROVAL_PAYLOAD_TYPE, &body, key, sign)
    }

    /// Decodes without checking a signature (for display and routing).
    pub fn decode(env: &Envelope) -> Result<Self, String> {
        let body = env
            .payload_bytes(APPROVAL_PAYLOAD_TYPE)
            .map_err(|e| e.to_string())?;
        let a: CustomerApproval =
            from_canonical_slice(&body).map_err(|e| format!("not a customer approval: {e}"))?;
        if a.schema != APPROVAL_SCHEMA {
            return Err(format!("schema is not {APPROVAL_SCHEMA:?}"));
        }
        Ok(a)
    }

    /// Opens an approval signed by one of `approvers` (exactly one of them).
    /// One signature, by the approver its `keyid` names, checked once: an envelope
    /// with more signatures costs nothing to refuse.
    pub fn open(env: &Envelope, approvers: &[PublicKey]) -> Result<OpenedApproval, String> {
        let [signature] = env.signatures.as_slice() else {
            return Err(format!(
                "an approval carries one signature, not {}",
                env.signatures.len()
            ));
        };
        let approval = Self::decode(env)?;
        let approver = approvers
            .iter()
            .find(|k| k.key_id() == signature.keyid)
            .ok_or("not signed by an approver the tenant's policy names")?;
        if env.verified_by(std::slice::from_ref(approver)).is_empty() {
            return Err(format!(
                "the signature by {} does not verify",
                approver.name
            ));
        }
        Ok(OpenedApproval {
            approval,
            approver: approver.clone(),
        })
    }
}

/// The approvers (names) whose approvals count for `request` at `now`, at least the
/// policy's threshold of distinct ones; otherwise why not, naming each approval that
/// did not count.
pub fn count_approvals(
    policy: &ApprovalPolicy,
    request: RequestRef<'_>,
    approvals: &[Envelope],
    now: Timestamp,
    skew_secs: i64,
) -> Result<Vec<String>, String> {
    let keys = policy.approver_keys()?;
    if approvals.len() > keys.len() {
        return Err(format!(
            "{} approvals for {} approvers: at most one each",
            approvals.len(),
            keys.len()
        ));
    }
    let mut counted: BTreeSet<String> = BTreeSet::new();
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for (i, env) in approvals.iter().enumerate() {
        let opened = match CustomerApproval::open(env, &keys) {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("approval {i}: {e}"));
                continue;
            }
        };
        let a = &opened.approval;
        let why = if a.decision != Decision::Approve {
            Some("it is a denial".to_string())
        } else if &a.tenant != request.tenant || &a.cluster != request.cluster {
            Some(format!("it is for {}/{}", a.tenant, a.cluster))
        } else if &a.request != request.request
            || a.request_index != request.request_index
            || &a.request_digest != request.request_digest
        {
            Some(format!(
                "it approves request {} (index {}), not {} (index {})",
                a.request, a.request_index, request.request, request.request_index
            ))
        } else if a.issued_at.unix_seconds() > now.unix_seconds() + skew_secs {
            Some(format!("it is issued in the future ({})", a.issued_at))
        } else if a.expires_at.unix_seconds() < a.issued_at.unix_seconds()
            || a.expires_at.unix_seconds() - a.issued_at.unix_seconds()
                > i64::try_from(policy.approval_ttl_secs).unwrap_or(i64::MAX)
        {
            Some(format!(
                "it is valid for longer than the policy's {} s",
                policy.approval_ttl_secs
            ))
        } else if now.unix_seconds() > a.expires_at.unix_seconds() + skew_secs {
            Some(format!("it expired at {}", a.expires_at))
        } else if !counted.insert(opened.approver.key_id()) {
            Some(format!(
                "approver {} is already counted",
                opened.approver.name
            ))
        } else {
            None
        };
        match why {
            Some(w) => problems.push(format!("approval {i} by {}: {w}", opened.approver.name)),
            None => names.push(opened.approver.name.clone()),
        }
    }
    let need = usize::try_from(policy.threshold).unwrap_or(usize::MAX);
    if names.len() >= need {
        return Ok(names);
    }
    let mut detail = format!("{} of the {need} customer approvals required", names.len());
    if !problems.is_empty() {
        detail.push_str(": ");
        detail.push_str(&problems.join("; "));
    }
    Err(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys {
        _dir: tempfile::TempDir,
        alice: SigningKey,
        bob: SigningKey,
        mallory: SigningKey,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = |n: &str| {
            let f = crate::keys::generate(n, dir.path(), false).expect("key");
            SigningKey::read(&f.private).expect("read")
        };
        Keys {
            alice: k("alice"),
            bob: k("bob"),
            mallory: k("mallory"),
            _dir: dir,
        }
    }

    fn policy(k: &Keys, threshold: u32) -> ApprovalPolicy {
        ApprovalPolicy {
            all: false,
            risks: vec![Risk::Disruptive],
            actions: vec!["kube.cordon".into()],
            approvers: vec![
                Approver::of(k.alice.public()).expect("a"),
                Approver::of(k.bob.public()).expect("b"),
            ],
            threshold,
            approval_ttl_secs: DEFAULT_APPROVAL_TTL_SECS,
            request_ttl_secs: DEFAULT_REQUEST_TTL_SECS,
        }
    }

    struct Req {
        tenant: TenantId,
        cluster: ClusterId,
        id: EventId,
        digest: Sha256Digest,
    }

    fn req() -> Req {
        Req {
            tenant: TenantId::parse("acme").expect("t"),
            cluster: ClusterId::parse("prod").expect("c"),
            id: EventId::parse("0123456789abcdef0123456789abcdef").expect("id"),
            digest: Sha256Digest::of(b"the request entry"),
        }
    }

    fn r(q: &Req) -> RequestRef<'_> {
        RequestRef {
            tenant: &q.tenant,
            cluster: &q.cluster,
            request: &q.id,
            request_index: 7,
            request_digest: &q.digest,
        }
    }

    fn approval(q: &Req, decision: Decision, now: i64, ttl: i64) -> CustomerApproval {
        CustomerApproval {
            schema: APPROVAL_SCHEMA.into(),
            tenant: q.tenant.clone(),
            cluster: q.cluster.clone(),
            request: q.id.clone(),
            request_index: 7,
            request_digest: q.digest,
            decision,
            issued_at: Timestamp::from_unix_seconds(now),
            expires_at: Timestamp::from_unix_seconds(now + ttl),
            reason: None,
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn what_needs_approval() {
        let k = keys();
        let p = policy(&k, 1);
        assert!(p.requires("etcd.defragment", Risk::Disruptive));
        assert!(p.requires("kube.cordon", Risk::Mutate));
        assert!(!p.requires("etcd.status", Risk::Read));
        let all = ApprovalPolicy { all: true, ..p };
        assert!(all.requires("etcd.status", Risk::Read));
    }

    #[test]
    fn threshold_distinct_approvers_binding_and_validity() {
        let k = keys();
        let q = req();
        let now = Timestamp::from_unix_seconds(NOW);
        let p1 = policy(&k, 1);
        let p2 = policy(&k, 2);
        let a = approval(&q, Decision::Approve, NOW, 3600);
        let by_alice = a.sign(&k.alice).expect("sign");
        let by_bob = a.sign(&k.bob).expect("sign");
        assert_eq!(
            count_approvals(&p1, r(&q), std::slice::from_ref(&by_alice), now, 30)
                .expect("one of one"),
            vec!["alice"]
        );
        // M-1 approvals; the same approver twice.
        let e = count_approvals(&p2, r(&q), std::slice::from_ref(&by_alice), now, 30)
            .expect_err("one of two");
        assert!(e.contains("1 of the 2"), "{e}");
        let e = count_approvals(&p2, r(&q), &[by_alice.clone(), by_alice.clone()], now, 30)
            .expect_err("alice twice");
        assert!(e.contains("already counted"), "{e}");
        assert_eq!(
            count_approvals(&p2, r(&q), &[by_alice.clone(), by_bob], now, 30)
                .expect("two of two")
                .len(),
            2
        );
        // Someone the policy does not name (the provider's key).
        let e = count_approvals(&p1, r(&q), &[a.sign(&k.mallory).expect("sign")], now, 30)
            .expect_err("mallory");
        assert!(e.contains("not signed by an approver"), "{e}");
        // Another request, another cluster, another entry.
        for changed in [
            CustomerApproval {
                request_index: 8,
                ..a.clone()
            },
            CustomerApproval {
                cluster: ClusterId::parse("staging").expect("c"),
                ..a.clone()
            },
            CustomerApproval {
                request_digest: Sha256Digest::of(b"other parameters"),
                ..a.clone()
            },
        ] {
            let e = count_approvals(&p1, r(&q), &[changed.sign(&k.alice).expect("s")], now, 30)
                .expect_err("other request");
            assert!(
                e.contains("approves request") || e.contains("it is for"),
                "{e}"
            );
        }
        // Expired, too long, a denial, issued in the future.
        let late = Timestamp::from_unix_seconds(NOW + 3600 + 31);
        assert!(
            count_approvals(&p1, r(&q), std::slice::from_ref(&by_alice), late, 30)
                .expect_err("expired")
                .contains("expired")
        );
        let long = approval(&q, Decision::Approve, NOW, 9 * 3600);
        assert!(
            count_approvals(&p1, r(&q), &[long.sign(&k.alice).expect("s")], now, 30)
                .expect_err("too long")
                .contains("longer")
        );
        let deny = approval(&q, Decision::Deny, NOW, 3600);
        assert!(
            count_approvals(&p1, r(&q), &[deny.sign(&k.alice).expect("s")], now, 30)
                .expect_err("denial")
                .contains("denial")
        );
        let future = approval(&q, Decision::Approve, NOW + 600, 3600);
        assert!(
            count_approvals(&p1, r(&q), &[future.sign(&k.alice).expect("s")], now, 30)
                .expect_err("future")
                .contains("future")
        );
        // A changed payload under a genuine signature.
        let mut forged = by_alice.clone();
        let mut more = a.clone();
        more.request_index = 8;
        forged.payload = STANDARD.encode(to_canonical_vec(&more).expect("json"));
        assert!(count_approvals(&p1, r(&q), &[forged], now, 30).is_err());
    }

    #[test]
    fn extra_signatures_and_extra_approvals_are_refused_before_any_is_checked() {
        let k = keys();
        let q = req();
        let now = Timestamp::from_unix_seconds(NOW);
        let a = approval(&q, Decision::Approve, NOW, 3600);
        let mut twice = a.sign(&k.alice).expect("sign");
        twice.signatures.push(twice.signatures[0].clone());
        let e = count_approvals(&policy(&k, 1), r(&q), &[twice], now, 30).expect_err("two");
        assert!(e.contains("one signature"), "{e}");
        let one = a.sign(&k.alice).expect("sign");
        let e = count_approvals(
            &policy(&k, 1),
            r(&q),
            &[one.clone(), one.clone(), one],
            now,
            30,
        )
        .expect_err("three for two approvers");
        assert!(e.contains("at most one each"), "{e}");
    }

    #[test]
    fn incoherent_policies_are_refused() {
        let k = keys();
        assert!(policy(&k, 0).approver_keys().is_err());
        assert!(policy(&k, 3).approver_keys().is_err());
        let mut p = policy(&k, 1);
        p.approvers.push(p.approvers[0].clone());
        assert!(p.approver_keys().expect_err("twice").contains("twice"));
        let mut p = policy(&k, 1);
        p.risks.clear();
        p.actions.clear();
        assert!(p.approver_keys().is_err());
        let mut p = policy(&k, 1);
        p.approval_ttl_secs = 0;
        assert!(p.approver_keys().is_err());
    }
}
