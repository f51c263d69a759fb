//! How the gateway and the agents hold the action policy and the log's trust: the
//! policy verified from the TUF repository (and kept, marked unverified, when the
//! repository cannot be verified now), the settings naming the repository and the
//! log's keys, and the gauges both expose.

use palisade_core::time::Timestamp;
use palisade_policy::tuf::RepoDir;
use palisade_tlog::note::{KeyType, VerifierKey};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the agent's verified policy comes from, so that it can be re-verified.
#[async_trait::async_trait]
pub trait PolicySource: Send + Sync {
    /// Verifies the currently published policy (TUF chain, approvals, no rollback).
    /// When the repository cannot be verified now but a policy was verified before,
    /// that one comes back with [`LoadedPolicy::unverified`] saying why.
    async fn load(&self) -> Result<LoadedPolicy, String>;
}

/// A policy as the agent holds it.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: Arc<palisade_policy::Policy>,
    /// When its verification lapses: the earliest expiry of the metadata it rested on.
    pub expires: Timestamp,
    /// Why the repository could not be verified at the last try, when this is the
    /// policy verified before; `None` when it verified just now.
    pub unverified: Option<String>,
}

impl LoadedPolicy {
    /// Whether actions may run on it at `now`: it verified at the last try, and that
    /// verification has not lapsed.
    pub fn holds(&self, now: Timestamp) -> bool {
        self.unverified.is_none() && now < self.expires
    }

    /// A policy that verified just now, valid until `expires`.
    pub fn verified(policy: palisade_policy::Policy, expires: Timestamp) -> Self {
        Self {
            policy: Arc::new(policy),
            expires,
            unverified: None,
        }
    }
}

/// The policy as the agent verifies it itself: the TUF chain from its own root,
/// approvals, no rollback below what its datastore accepted.
pub struct TufPolicy {
    pub trust: TrustFiles,
}

impl TufPolicy {
    /// Verifies the published policy; the answer keeps who wrote and approved it.
    pub async fn load_verified(
        &self,
    ) -> Result<palisade_policy::trusted_policy::VerifiedPolicy, String> {
        self.verify().await.map_err(|e| self.does_not_verify(&e))
    }

    async fn verify(
        &self,
    ) -> Result<palisade_policy::trusted_policy::VerifiedPolicy, palisade_policy::tuf::TrustError>
    {
        let root = std::fs::read(&self.trust.root).map_err(|e| {
            palisade_policy::tuf::TrustError::Invalid(format!(
                "trusted root {}: {e}",
                self.trust.root.display()
            ))
        })?;
        let repo = RepoDir::new(&self.trust.repo);
        palisade_policy::trusted_policy::verify_policy(&repo, &root, &self.trust.datastore).await
    }

    fn does_not_verify(&self, e: &palisade_policy::tuf::TrustError) -> String {
        format!(
            "the policy in {} does not verify: {e}",
            self.trust.repo.display()
        )
    }
}

/// How long before the trust metadata expires a verifier starts warning.
pub const EXPIRY_WARNING_SECS: i64 = 48 * 3600;

/// Logs an error when the policy repository did not verify or its metadata expired,
/// and a warning from [`EXPIRY_WARNING_SECS`] before it expires.
pub fn warn_if_expiring(held: &LoadedPolicy, now: Timestamp) {
    let left = held.expires.unix_seconds() - now.unix_seconds();
    if let Some(why) = &held.unverified {
        tracing::error!(reason = %why, "the policy repository cannot be verified: components keep running, no new action is accepted");
    } else if left <= 0 {
        tracing::error!(expires = %held.expires, "the policy repository's trust metadata has expired: no new action is accepted until `palisade policy refresh` re-signs it");
    } else if left < EXPIRY_WARNING_SECS {
        tracing::warn!(
            expires = %held.expires,
            hours_left = left / 3600,
            "the policy repository's trust metadata expires soon: run `palisade policy refresh` (deploy/systemd/palisade-policy-refresh.timer runs it daily)"
        );
    }
}

/// A TUF expiry as the agent's timestamps count time.
pub fn expiry(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_unix_seconds(t.as_second())
}

#[async_trait::async_trait]
impl PolicySource for TufPolicy {
    /// The policy that verifies now; or, when the repository cannot be verified (its
    /// metadata expired, it is unreadable, it was rolled back), the policy verified
    /// before, marked unverified: the instance keeps running, and takes no action.
    async fn load(&self) -> Result<LoadedPolicy, String> {
        match self.verify().await {
            Ok(v) => Ok(LoadedPolicy::verified(v.policy, expiry(v.expires))),
            Err(e) if e.repository_unverifiable() => {
                let why = self.does_not_verify(&e);
                match palisade_policy::trusted_policy::last_verified_policy(&self.trust.datastore) {
                    Ok(Some(v)) => Ok(LoadedPolicy {
                        policy: Arc::new(v.policy),
                        expires: expiry(v.expires),
                        unverified: Some(why),
                    }),
                    Ok(None) => Err(why),
                    Err(kept) => Err(format!("{why}; and the policy verified before: {kept}")),
                }
            }
            Err(e) => Err(self.does_not_verify(&e)),
        }
    }
}

/// What makes a checkpoint trustworthy for this cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogTrust {
    /// `<base-origin>/<cluster-id>`.
    pub origin: String,
    /// The log's verifier key (`<name>+<hexid>+<base64>`).
    pub key: String,
    /// Log keys retired by a key rotation: the checkpoint this agent stored before
    /// the rotation still opens with them (so that its view of the log survives);
    /// a checkpoint from the network must be signed by `key`.
    #[serde(default)]
    pub retired_keys: Vec<String>,
    /// Witness verifier keys (cosignature type).
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// How many of them must have cosigned a checkpoint.
    #[serde(default)]
    pub witness_quorum: usize,
    /// How old (in seconds) the quorum's cosignatures of a checkpoint may be.
    #[serde(default = "default_max_cosignature_age")]
    pub max_cosignature_age_secs: u64,
}

fn default_max_cosignature_age() -> u64 {
    300
}

impl LogTrust {
    /// The checkpoint policy these settings describe.
    pub fn policy(&self) -> Result<palisade_tlog::checkpoint::LogPolicy, String> {
        let key = VerifierKey::parse(&self.key).map_err(|e| format!("log.key: {e}"))?;
        let mut witnesses = Vec::new();
        for (i, w) in self.witnesses.iter().enumerate() {
            let k = VerifierKey::parse(w).map_err(|e| format!("log.witnesses[{i}]: {e}"))?;
            if k.key_type() != KeyType::Cosignature {
                return Err(format!(
                    "log.witnesses[{i}]: must be a cosignature (type 0x04) verifier key"
                ));
            }
            witnesses.push(k);
        }
        palisade_tlog::checkpoint::LogPolicy::new(&self.origin, key)
            .and_then(|p| p.with_witnesses(witnesses, self.witness_quorum))
            .map_err(|e| format!("log: {e}"))
    }

    /// The keys of `retired_keys` (Ed25519 verifier keys, none of them `key`).
    pub fn retired(&self) -> Result<Vec<VerifierKey>, String> {
        let mut out = Vec::new();
        for (i, text) in self.retired_keys.iter().enumerate() {
            let k = VerifierKey::parse(text).map_err(|e| format!("log.retired_keys[{i}]: {e}"))?;
            if k.key_type() != KeyType::Ed25519 {
                return Err(format!(
                    "log.retired_keys[{i}]: must be an Ed25519 (type 0x01) verifier key"
                ));
            }
            if text.trim() == self.key.trim() {
                return Err(format!("log.retired_keys[{i}]: is the log's key itself"));
            }
            out.push(k);
        }
        Ok(out)
    }
}

/// The TUF repository the policy and releases come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFiles {
    /// The repository directory (`metadata/`, `targets/`).
    pub repo: PathBuf,
    /// The trusted root metadata this agent was installed with.
    pub root: PathBuf,
    /// The agent's own TUF datastore (rollback and freeze protection).
    pub datastore: PathBuf,
}

/// `palisade_trust_expires_in_seconds` and `palisade_trust_unverified`: the same two
/// gauges on every verifier of the policy repository (agent and gateway).
#[derive(Clone, Default)]
pub struct TrustGauges {
    expires_in: Gauge,
    unverified: Gauge,
}

impl TrustGauges {
    /// Registers both gauges, without a prefix, in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let g = Self::default();
        registry.register(
            "palisade_trust_expires_in_seconds",
            "Seconds until the trust metadata the policy was verified with expires (negative: expired; new actions are refused)",
            g.expires_in.clone(),
        );
        registry.register(
            "palisade_trust_unverified",
            "1 while the policy repository did not verify at the last try (components keep running, new actions are refused)",
            g.unverified.clone(),
        );
        g
    }

    pub fn set(&self, held: &LoadedPolicy, now: Timestamp) {
        self.expires_in
            .set(held.expires.unix_seconds() - now.unix_seconds());
        self.unverified.set(i64::from(held.unverified.is_some()));
    }
}
