//! Root updates: the only way to change who approves (TUF 1.0 §5.3 "update the root
//! role").
//!
//! The reviewers, the threshold, the CI keys and the proposers live in the root role
//! (field [`ROOT_TRUST_FIELD`]). A change writes root version N+1, signed by a
//! threshold of root N's keys *and* of its own keys, as every TUF client checks it
//! when it walks from the root it trusts to the newest. Then the `policy`
//! delegation in the targets role is re-signed (online key) to match, because the
//! verifier refuses a delegation that differs from the root's reviewers.

use crate::keys::{key_id_decoded, PublicKey, SigningKey};
use crate::tuf::{
    self, Lifetimes, OnlineKeys, RepoDir, RepoState, TrustConfig, TrustError, ROOT_TRUST_FIELD,
};
use std::collections::BTreeSet;
use std::num::NonZeroU64;
use tough::schema::{RoleKeys, RoleType};

/// What a root update changes; `None` keeps the current value.
#[derive(Debug, Default)]
pub struct RootChange {
    /// New reviewers and threshold.
    pub reviewers: Option<(Vec<PublicKey>, u64)>,
    pub ci_keys: Option<Vec<PublicKey>>,
    pub proposers: Option<Vec<PublicKey>>,
    /// New root keys and their threshold. Their private halves are needed: the new
    /// root must be signed by a threshold of its own keys too.
    pub root_keys: Option<(Vec<SigningKey>, u64)>,
    /// A new online key (targets, snapshot, timestamp): the `online` keys given to
    /// [`update_root`] must then hold its private half, and the new targets, snapshot
    /// and timestamp are signed with it right away.
    pub online_key: Option<PublicKey>,
    /// A new pipeline key for the `components` role: the `online` keys given to
    /// [`update_root`] must then hold its private half as `pipeline`; the root pins
    /// it alone, and the role is re-signed with it right away (the same releases).
    pub pipeline_key: Option<PublicKey>,
}

/// The trust configuration of the repository's newest root, after checking that
/// `metadata/root.json` is the same file as `metadata/<version>.root.json` and is
/// signed by a threshold of its own root keys. The publisher's side reads this file
/// without TUF's chain walk; a host that edits it (say, to add a CI key) without the
/// root keys is refused here rather than having its edit signed by the next update.
pub fn verified_current_root(repo: &RepoDir, state: &RepoState) -> Result<TrustConfig, TrustError> {
    let md = repo.metadata();
    let version = state.root.signed.version.get();
    let numbered = md.join(format!("{version}.root.json"));
    let a = std::fs::read(md.join("root.json"))
        .map_err(|e| TrustError::io(&md.join("root.json"), e))?;
    let b = std::fs::read(&numbered).map_err(|e| TrustError::io(&numbered, e))?;
    if a != b {
        return Err(TrustError::Signature {
            detail: format!(
                "metadata/root.json differs from {}: the repository's root was edited",
                numbered.display()
            ),
        });
    }
    state
        .root
        .signed
        .verify_role(&state.root)
        .map_err(|e| TrustError::Signature {
            detail: format!("metadata/root.json (version {version}) is not signed by a threshold of its root keys: {e}"),
        })?;
    state.trust()
}

/// Keeps in `root.keys` only the keys some role still uses.
fn drop_unused_keys(root: &mut tough::schema::Root) {
    let used: BTreeSet<String> = root
        .roles
        .values()
        .flat_map(|r| r.keyids.iter().map(|id| hex::encode(id.as_ref())))
        .collect();
    root.keys
        .retain(|id, _| used.contains(&hex::encode(id.as_ref())));
}

/// Checks a new `what` key (online or pipeline): its private half is `given`, and it
/// is neither a root key nor `other` (the other of the two). Returns its key id.
fn check_new_key(
    what: &str,
    new: &PublicKey,
    given: &SigningKey,
    other: &SigningKey,
    is_root_key: &dyn Fn(&str) -> bool,
) -> Result<String, TrustError> {
    let id = new.key_id();
    if id != given.key_id() {
        return Err(TrustError::Invalid(format!(
            "the new {what} key's private half must be the {what} key given"
        )));
    }
    if is_root_key(&id) || id == other.key_id() {
        let other_name = if what == "online" {
            "pipeline"
        } else {
            "online"
        };
        return Err(TrustError::Invalid(format!(
            "the {what} key must not be a root key or the {other_name} key"
        )));
    }
    Ok(id)
}

/// What [`update_root`] wrote.
#[derive(Debug)]
pub struct RootUpdated {
    pub version: u64,
    pub trust: TrustConfig,
    pub root_key_ids: Vec<String>,
    pub root_threshold: u64,
}

/// Writes root version N+1 with `change`, signed by `signers` (keys of root N, at
/// least its threshold of them, plus the new root keys if they change), then re-signs
/// the `policy` delegation to match the new reviewers. Nothing is written unless the
/// current root verifies and the signatures suffice. The two writes are not atomic:
/// if the second fails, verifiers refuse the policy (`DelegationMismatch`) until
/// `palisade policy refresh` (online key) re-signs the delegation.
pub fn update_root(
    repo: &RepoDir,
    signers: &[SigningKey],
    online: &OnlineKeys,
    change: RootChange,
    life: &Lifetimes,
) -> Result<RootUpdated, TrustError> {
    let state = RepoState::read(repo)?;
    let old = &state.root.signed;
    let old_role = old
        .roles
        .get(&RoleType::Root)
        .ok_or_else(|| TrustError::Tuf {
            location: "root.json".into(),
            detail: "the root role lists no root keys".into(),
        })?;
    let old_ids: BTreeSet<String> = old_role
        .keyids
        .iter()
        .map(|id| hex::encode(id.as_ref()))
        .collect();
    let new_root_ids: BTreeSet<String> = change
        .root_keys
        .as_ref()
        .map(|(keys, _)| keys.iter().map(SigningKey::key_id).collect())
        .unwrap_or_default();

    // Signatures of the old root: distinct keys, each a key of root N.
    let mut counted = BTreeSet::new();
    let mut strangers = Vec::new();
    for k in signers {
        let id = k.key_id();
        if old_ids.contains(&id) {
            counted.insert(id);
        } else if !new_root_ids.contains(&id) {
            strangers.push(id);
        }
    }
    if (counted.len() as u64) < old_role.threshold.get() || !strangers.is_empty() {
        return Err(TrustError::RootThreshold {
            version: old.version.get(),
            required: old_role.threshold.get(),
            given: counted.len(),
            strangers,
        });
    }

    let mut trust = verified_current_root(repo, &state)?;
    if let Some((reviewers, threshold)) = change.reviewers {
        trust.reviewers = reviewers;
        trust.threshold = threshold;
    }
    if let Some(ci) = change.ci_keys {
        trust.ci_keys = ci;
    }
    if let Some(p) = change.proposers {
        trust.proposers = p;
    }
    let mut forbidden: Vec<String> = old_ids.iter().cloned().collect();
    forbidden.extend(new_root_ids.iter().cloned());
    forbidden.push(online.online.key_id());
    forbidden.push(online.pipeline.key_id());
    tuf::check_trust(&trust, &forbidden)?;

    let mut root = old.clone();
    root.version = NonZeroU64::new(old.version.get() + 1).unwrap_or(NonZeroU64::MIN);
    root.expires = tuf::expiry(life.root);
    root._extra
        .insert(ROOT_TRUST_FIELD.to_string(), tuf::trust_value(&trust)?);
    let mut sign_with: Vec<&SigningKey> = Vec::new();
    let mut signed_ids = BTreeSet::new();
    for k in signers {
        if signed_ids.insert(k.key_id()) {
            sign_with.push(k);
        }
    }
    if let Some((keys, threshold)) = &change.root_keys {
        let distinct: BTreeSet<String> = keys.iter().map(SigningKey::key_id).collect();
        if *threshold == 0 || *threshold as usize > distinct.len() {
            return Err(TrustError::Invalid(format!(
                "root threshold {threshold} is impossible with {} distinct root key(s)",
                distinct.len()
            )));
        }
        if distinct.contains(&online.online.key_id())
            || distinct.contains(&online.pipeline.key_id())
        {
            return Err(TrustError::Invalid(
                "a root key must not be the online or pipeline key".into(),
            ));
        }
        for k in keys {
            root.keys
                .insert(key_id_decoded(&k.key_id()), k.public().key.clone());
            if signed_ids.insert(k.key_id()) {
                sign_with.push(k);
            }
        }
        root.roles.insert(
            RoleType::Root,
            RoleKeys {
                keyids: distinct.iter().map(|id| key_id_decoded(id)).collect(),
                threshold: NonZeroU64::new(*threshold).unwrap_or(NonZeroU64::MIN),
                _extra: old_role._extra.clone(),
            },
        );
        drop_unused_keys(&mut root);
    }
    let is_root_key = |id: &str| old_ids.contains(id) || new_root_ids.contains(id);
    if let Some(new_online) = &change.online_key {
        let id = check_new_key(
            "online",
            new_online,
            &online.online,
            &online.pipeline,
            &is_root_key,
        )?;
        root.keys
            .insert(key_id_decoded(&id), new_online.key.clone());
        for role in [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
            if let Some(r) = root.roles.get_mut(&role) {
                r.keyids = vec![key_id_decoded(&id)];
                r.threshold = NonZeroU64::MIN;
            }
        }
        drop_unused_keys(&mut root);
    }
    if let Some(new_pipeline) = &change.pipeline_key {
        check_new_key(
            "pipeline",
            new_pipeline,
            &online.pipeline,
            &online.online,
            &is_root_key,
        )?;
        let pin = tuf::ComponentsPin {
            threshold: 1,
            keys: vec![new_pipeline.clone()],
        };
        root._extra.insert(
            tuf::ROOT_COMPONENTS_FIELD.to_string(),
            serde_json::to_value(&pin)
                .map_err(|e| TrustError::Invalid(format!("cannot encode the pipeline key: {e}")))?,
        );
    }
    let root_role = root
        .roles
        .get(&RoleType::Root)
        .cloned()
        .unwrap_or(old_role.clone());
    let signed = tuf::signed_by(root, &sign_with)?;
    let bytes = tuf::to_file_bytes(&signed)?;
    let md = repo.metadata();
    let version = signed.signed.version.get();
    // N+1.root.json (what verifiers walk to) first, then root.json (what the
    // publishing commands start from).
    tuf::write_atomic(&md.join(format!("{version}.root.json")), &bytes)?;
    tuf::write_atomic(&md.join("root.json"), &bytes)?;

    // The delegation follows the root's reviewers: what `refresh` does (a new
    // targets version either way, so that clients re-read the delegations). A new
    // pipeline key re-signs the `components` role in the same commit, so that no
    // consistent snapshot pairs the new pin with the old key's signature.
    crate::trusted_policy::refresh_with(repo, online, life, change.pipeline_key.is_some())?;
    Ok(RootUpdated {
        version,
        trust,
        root_key_ids: root_role
            .keyids
            .iter()
            .map(|id| hex::encode(id.as_ref()))
            .collect(),
        root_threshold: root_role.threshold.get(),
    })
}
