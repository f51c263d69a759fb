//! The action policy as a trusted, multi-party-approved TUF target (claim C4).
//!
//! propose → approve (each reviewer) → publish → verify. Publishing signs the
//! delegated `policy` role with the approving reviewers' signatures collected at
//! approve time, so TUF itself enforces the threshold; verification then re-checks
//! Palisade's own rule on the DSSE approvals (distinct, current, non-author).

use crate::approval::{self, ApprovalStatement, ChangeKind, StagedProposal, APPROVAL_TYPE};
use crate::dsse::Envelope;
use crate::keys::{PublicKey, SigningKey};
use crate::tuf::{
    self, Commit, Lifetimes, OnlineKeys, RepoDir, RepoState, TrustError, POLICY_ROLE, POLICY_TARGET,
};
use crate::Policy;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use tough::schema::Signed;

/// A lint-clean policy: version and digest from the policy parser.
fn lint(bytes: &[u8]) -> Result<Policy, TrustError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| TrustError::PolicyLint("the policy file is not UTF-8".into()))?;
    Policy::parse_yaml(text).map_err(|errors| {
        TrustError::PolicyLint(
            errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// Approvals record published beside the policy (top-level target
/// `palisade/approvals/policy-v<version>.json`): the DSSE approvals that counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub statement: ApprovalStatement,
    /// The author's signature over `statement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_signature: Option<Envelope>,
    pub approvals: Vec<Envelope>,
}

pub fn approvals_target(version: u64) -> String {
    format!("palisade/approvals/policy-v{version}.json")
}

/// The currently published policy on the publisher's side: (version, bytes).
fn published(repo: &RepoDir, state: &RepoState) -> Result<Option<(u64, Vec<u8>)>, TrustError> {
    let Some(role) = state.delegated.get(POLICY_ROLE) else {
        return Ok(None);
    };
    let Some(target) = role
        .signed
        .targets
        .iter()
        .find(|(n, _)| n.raw() == POLICY_TARGET)
        .map(|(_, t)| t)
    else {
        return Ok(None);
    };
    let version = target
        .custom
        .get("version")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let path = repo.target_path(POLICY_TARGET);
    let bytes = std::fs::read(&path).map_err(|e| TrustError::io(&path, e))?;
    Ok(Some((version, bytes)))
}

/// What `propose` staged.
#[derive(Debug)]
pub struct Proposed {
    pub id: String,
    pub version: u64,
    pub digest: String,
    /// The author's trusted name (of the key that signed the proposal).
    pub author: String,
    pub published_version: Option<u64>,
    pub diff: String,
}

/// Stages a policy change signed by `author` (a reviewer's or registered proposer's
/// key). The policy must lint and its version must be greater than the published one.
pub fn propose_policy(
    repo: &RepoDir,
    author: &SigningKey,
    bytes: &[u8],
    life: &Lifetimes,
) -> Result<Proposed, TrustError> {
    let policy = lint(bytes)?;
    let state = RepoState::read(repo)?;
    let trust = state.trust()?;
    let (author_name, author_key_id) = approval::author_of(&trust, author)?;
    let current = published(repo, &state)?;
    if let Some((published_version, _)) = &current {
        if policy.version() <= *published_version {
            return Err(TrustError::VersionNotNewer {
                proposed: policy.version(),
                published: *published_version,
            });
        }
    }
    let sha256 = tuf::sha256_hex(bytes);
    let id = approval::new_proposal_id(ChangeKind::Policy, &policy.version().to_string(), &sha256);
    let statement = ApprovalStatement {
        type_: APPROVAL_TYPE.into(),
        kind: ChangeKind::Policy,
        proposal: id,
        target: POLICY_TARGET.into(),
        sha256,
        version: policy.version().to_string(),
        digest: Some(policy.digest().to_string()),
        author: author_name,
        author_key_id: Some(author_key_id),
        rollback_from: None,
    };
    let role_version = state
        .delegated
        .get(POLICY_ROLE)
        .map_or(1, |r| r.signed.version.get() + 1);
    let mut role = tuf::new_delegated_targets(role_version, life);
    role.targets.insert(
        tuf::target_name(POLICY_TARGET)?,
        tuf::target_for(bytes, policy_custom(&statement)),
    );
    let staged = approval::stage(
        repo,
        statement,
        author,
        "policy.yaml",
        bytes,
        Some(role),
        None,
    )?;
    let old = current
        .as_ref()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    Ok(Proposed {
        id: staged.id,
        author: staged.proposal.statement.author.clone(),
        version: policy.version(),
        digest: policy.digest().to_string(),
        published_version: current.map(|(v, _)| v),
        diff: approval::line_diff(&old, &String::from_utf8_lossy(bytes)),
    })
}

pub(crate) fn policy_custom(st: &ApprovalStatement) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    m.insert(
        "version".into(),
        json!(st.version.parse::<u64>().unwrap_or(0)),
    );
    m.insert("author".into(), json!(st.author));
    if let Some(id) = &st.author_key_id {
        m.insert("author_key_id".into(), json!(id));
    }
    m.insert("digest".into(), json!(st.digest));
    m.insert("proposal".into(), json!(st.proposal));
    m
}

/// A diff against the published policy as the repository's files show it, unverified
/// (the author's view at propose time); reviewers see [`crate::review::Review::diff`].
pub fn proposal_diff(repo: &RepoDir, staged: &StagedProposal) -> Result<String, TrustError> {
    let state = RepoState::read(repo)?;
    let old = published(repo, &state)?
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(approval::line_diff(
        &old,
        &String::from_utf8_lossy(&staged.payload),
    ))
}

/// A publication, as appended to the governance log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    pub kind: ChangeKind,
    pub target: String,
    pub sha256: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub author: String,
    pub approvers: Vec<String>,
    pub proposal: String,
    pub published_at: String,
}

impl Publication {
    /// Canonical JSON bytes: the governance log entry.
    pub fn log_entry(&self) -> Result<Vec<u8>, TrustError> {
        tuf::canonical(self)
    }
}

/// Publishes proposal `id` if it has a threshold of distinct, current, non-author
/// reviewer approvals.
pub fn publish_policy(
    repo: &RepoDir,
    keys: &OnlineKeys,
    id: &str,
    life: &Lifetimes,
) -> Result<Publication, TrustError> {
    let staged = approval::load(repo, id)?;
    let state = RepoState::read(repo)?;
    let trust = state.trust()?;
    let st = staged.proposal.statement.clone();
    let role = staged
        .proposal
        .staged_role
        .clone()
        .ok_or_else(|| TrustError::StaleProposal {
            proposal: id.into(),
            reason: "it is not a policy proposal".into(),
        })?;
    let version: u64 = st.version.parse().unwrap_or(0);
    if let Some((published_version, _)) = published(repo, &state)? {
        if version <= published_version {
            return Err(TrustError::VersionNotNewer {
                proposed: version,
                published: published_version,
            });
        }
    }
    let current_role_version = state
        .delegated
        .get(POLICY_ROLE)
        .map_or(0, |r| r.signed.version.get());
    if role.version.get() <= current_role_version {
        return Err(TrustError::StaleProposal {
            proposal: id.into(),
            reason: format!(
                "another policy was published since (policy role version {current_role_version})"
            ),
        });
    }
    let author_signature = staged.proposal.author_signature.clone();
    approval::check_authorship(&st, Some(&author_signature), &approval::author_keys(&trust))?;
    let stored = approval::stored_approvals(&staged)?;
    let envelopes: Vec<Envelope> = stored.iter().map(|a| a.envelope.clone()).collect();
    let approvers = approval::count_approvals(&st, &envelopes, &trust.reviewers, trust.threshold)?;
    // The TUF signatures of exactly the reviewers who counted.
    let msg = tuf::role_signing_bytes(&role)?;
    let mut signatures = Vec::new();
    let mut counted_envelopes = Vec::new();
    for a in &stored {
        let by = a.envelope.verified_by(&approvers);
        let Some(sig) = &a.role_signature else {
            continue;
        };
        let signer = approvers.iter().find(|k| {
            hex::encode(sig.keyid.as_ref()) == k.key_id() && k.verify(&msg, sig.sig.as_ref())
        });
        if let Some(k) = signer {
            if by.contains(&k.key_id())
                && !signatures
                    .iter()
                    .any(|s: &tough::schema::Signature| s.keyid == sig.keyid)
            {
                signatures.push(sig.clone());
                counted_envelopes.push(a.envelope.clone());
            }
        }
    }
    if (signatures.len() as u64) < trust.threshold {
        return Err(TrustError::NotEnoughApprovals {
            counted: signatures.len(),
            required: trust.threshold,
            ignored: vec!["approvals without a valid signature over the staged policy role".into()],
        });
    }
    publish_signed_policy(
        repo,
        &state,
        keys,
        &trust.reviewers,
        trust.threshold,
        PolicyRelease {
            statement: st.clone(),
            role: Signed {
                signed: role,
                signatures,
            },
            bytes: staged.payload.clone(),
            author_signature: Some(author_signature),
            approvals: counted_envelopes,
        },
        life,
    )?;
    Ok(Publication {
        kind: ChangeKind::Policy,
        target: st.target,
        sha256: st.sha256,
        version: st.version,
        digest: st.digest,
        author: st.author,
        approvers: approvers.iter().map(|k| k.name.clone()).collect(),
        proposal: st.proposal,
        published_at: jiff::Timestamp::now().to_string(),
    })
}

/// A policy role ready to be written.
pub struct PolicyRelease {
    pub statement: ApprovalStatement,
    pub role: Signed<tough::schema::Targets>,
    pub bytes: Vec<u8>,
    pub author_signature: Option<Envelope>,
    pub approvals: Vec<Envelope>,
}

/// Writes a signed policy role, the policy file and its approvals record, and the
/// `policy` delegation (threshold over `reviewers`), signed with the online key.
///
/// This is the TUF-level writer: it does **not** apply Palisade's approval rule
/// ([`publish_policy`] does, before calling it). Tests use it to build forged
/// repositories that verification must refuse.
pub fn publish_signed_policy(
    repo: &RepoDir,
    state: &RepoState,
    keys: &OnlineKeys,
    reviewers: &[PublicKey],
    threshold: u64,
    release: PolicyRelease,
    life: &Lifetimes,
) -> Result<(), TrustError> {
    let version: u64 = release.statement.version.parse().unwrap_or(0);
    let mut targets = tuf::next_targets(state, life);
    let refs: Vec<&PublicKey> = reviewers.iter().collect();
    tuf::set_delegation(&mut targets, POLICY_ROLE, &refs, threshold, "policy/*")?;
    let record = ApprovalRecord {
        statement: release.statement.clone(),
        author_signature: release.author_signature,
        approvals: release.approvals,
    };
    let record_bytes = tuf::to_file_bytes(&record)?;
    let mut custom = HashMap::new();
    custom.insert("version".into(), json!(version));
    targets.targets.insert(
        tuf::target_name(&approvals_target(version))?,
        tuf::target_for(&record_bytes, custom),
    );
    tuf::commit(
        repo,
        state,
        &keys.online,
        Commit {
            targets: Some(targets),
            delegated: vec![(POLICY_ROLE.to_string(), release.role)],
            files: vec![
                (POLICY_TARGET.to_string(), release.bytes),
                (approvals_target(version), record_bytes),
            ],
        },
        life,
    )
}

/// A policy that passed every check: what the gateway and the agent load.
#[derive(Debug, Clone)]
pub struct VerifiedPolicy {
    pub bytes: Vec<u8>,
    pub policy: Policy,
    pub version: u64,
    /// `Policy::digest()`: `sha256:` over the canonical JSON.
    pub digest: String,
    /// Hex SHA-256 of the file bytes (the TUF target hash).
    pub sha256: String,
    pub author: String,
    pub approvers: Vec<String>,
    /// The proposal it was approved as.
    pub proposal: String,
    /// When the metadata this verification rested on expires ([`tuf::earliest_expiry`]).
    pub expires: jiff::Timestamp,
}

/// The last policy that verified, kept in the verifier's datastore
/// (`palisade-verified-policy.json`, written only by [`verify_policy`]) so that a
/// verifier whose repository cannot be verified later (its metadata expired, it is
/// unreachable) still knows what it verified, and when that verification lapsed.
#[derive(Serialize, Deserialize)]
struct CachedPolicy {
    version: u64,
    sha256: String,
    author: String,
    approvers: Vec<String>,
    proposal: String,
    expires: jiff::Timestamp,
    /// The policy file's bytes, base64.
    policy: String,
}

const CACHED_POLICY: &str = "palisade-verified-policy.json";

fn remember_policy(datastore: &Path, v: &VerifiedPolicy) -> Result<(), TrustError> {
    use base64::Engine as _;
    let path = datastore.join(CACHED_POLICY);
    let cached = CachedPolicy {
        version: v.version,
        sha256: v.sha256.clone(),
        author: v.author.clone(),
        approvers: v.approvers.clone(),
        proposal: v.proposal.clone(),
        expires: v.expires,
        policy: base64::engine::general_purpose::STANDARD.encode(&v.bytes),
    };
    let bytes = tuf::to_file_bytes(&cached)?;
    if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
        return Ok(());
    }
    tuf::write_atomic(&path, &bytes)
}

/// The policy [`verify_policy`] last accepted with this datastore, checked again
/// (digest of its bytes, lint, version), or `None` if it never accepted one. Its
/// `expires` tells whether that verification still holds.
pub fn last_verified_policy(datastore: &Path) -> Result<Option<VerifiedPolicy>, TrustError> {
    use base64::Engine as _;
    let path = datastore.join(CACHED_POLICY);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrustError::io(&path, e)),
    };
    let corrupt = |detail: String| TrustError::Tuf {
        location: path.display().to_string(),
        detail: format!("corrupt datastore file: {detail}"),
    };
    let c: CachedPolicy = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let policy_bytes = base64::engine::general_purpose::STANDARD
        .decode(&c.policy)
        .map_err(|e| corrupt(e.to_string()))?;
    let sha256 = tuf::sha256_hex(&policy_bytes);
    if sha256 != c.sha256 {
        return Err(corrupt(format!(
            "the kept policy's bytes hash to {sha256}, not the recorded {}",
            c.sha256
        )));
    }
    let policy = lint(&policy_bytes)?;
    if policy.version() != c.version {
        return Err(corrupt(format!(
            "the kept policy is version {}, not the recorded {}",
            policy.version(),
            c.version
        )));
    }
    Ok(Some(VerifiedPolicy {
        digest: policy.digest().to_string(),
        bytes: policy_bytes,
        policy,
        version: c.version,
        sha256,
        author: c.author,
        approvers: c.approvers,
        proposal: c.proposal,
        expires: c.expires,
    }))
}

#[derive(Serialize, Deserialize)]
struct SeenPolicy {
    version: u64,
}

/// Verifies the published policy, in this order: the TUF chain from the trusted
/// `root` (signatures, thresholds, expiry, rollback against `datastore`), the
/// `policy` delegation's threshold (by tough), the file's digest, the author's
/// signature, Palisade's approval rule re-checked on the DSSE approvals against the
/// delegation's keys,
/// the policy's own version/digest, and no rollback below the version this
/// datastore has already accepted.
pub async fn verify_policy(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
) -> Result<VerifiedPolicy, TrustError> {
    let loaded = tuf::load(repo, root, datastore).await?;
    let trust = tuf::verified_trust(&loaded)?;
    let (reviewers, threshold) =
        tuf::reviewer_delegation(&loaded, POLICY_ROLE, &trust)?.ok_or(TrustError::NoPolicy)?;
    let target = tuf::delegated_target(&loaded, POLICY_ROLE, POLICY_TARGET)
        .ok_or(TrustError::NoPolicy)?
        .clone();
    let bad = |reason: &str| TrustError::BadCustom {
        target: POLICY_TARGET.into(),
        reason: reason.into(),
    };
    let version = target
        .custom
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no integer `version`"))?;
    let author = target
        .custom
        .get("author")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no `author`"))?
        .to_string();
    let custom_str = |k: &str| {
        target
            .custom
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let bytes = tuf::read_target(&loaded, POLICY_TARGET).await?;
    let sha256 = tuf::sha256_hex(&bytes);
    let expected = ApprovalStatement {
        type_: APPROVAL_TYPE.into(),
        kind: ChangeKind::Policy,
        proposal: custom_str("proposal").ok_or_else(|| bad("no `proposal`"))?,
        target: POLICY_TARGET.into(),
        sha256: sha256.clone(),
        version: version.to_string(),
        digest: custom_str("digest"),
        author: author.clone(),
        author_key_id: custom_str("author_key_id"),
        rollback_from: None,
    };
    let record_bytes = tuf::read_target(&loaded, &approvals_target(version)).await?;
    let record: ApprovalRecord =
        serde_json::from_slice(&record_bytes).map_err(|e| TrustError::BadCustom {
            target: approvals_target(version),
            reason: e.to_string(),
        })?;
    approval::check_authorship(
        &expected,
        record.author_signature.as_ref(),
        &approval::author_keys(&trust),
    )?;
    let approvers = approval::count_approvals(&expected, &record.approvals, &reviewers, threshold)?;
    let policy = lint(&bytes)?;
    if policy.version() != version {
        return Err(TrustError::PolicyMismatch {
            what: "version",
            expected: version.to_string(),
            found: policy.version().to_string(),
        });
    }
    let digest = policy.digest().to_string();
    if Some(&digest) != expected.digest.as_ref() {
        return Err(TrustError::PolicyMismatch {
            what: "digest",
            expected: expected.digest.unwrap_or_default(),
            found: digest,
        });
    }
    check_not_older(datastore, version)?;
    let verified = VerifiedPolicy {
        bytes,
        policy,
        version,
        digest,
        sha256,
        author,
        approvers: approvers.into_iter().map(|k| k.name).collect(),
        proposal: expected.proposal,
        expires: tuf::earliest_expiry(&loaded),
    };
    remember_policy(datastore, &verified)?;
    Ok(verified)
}

/// Palisade's own rollback floor, kept beside tough's datastore.
fn check_not_older(datastore: &Path, version: u64) -> Result<(), TrustError> {
    let path = datastore.join("palisade-policy.json");
    let seen = match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice::<SeenPolicy>(&b)
                .map_err(|e| TrustError::Tuf {
                    location: path.display().to_string(),
                    detail: format!("corrupt datastore file: {e}"),
                })?
                .version
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(TrustError::io(&path, e)),
    };
    if version < seen {
        return Err(TrustError::PolicyRollback {
            seen,
            offered: version,
        });
    }
    if version > seen {
        tuf::write_atomic(&path, &tuf::to_file_bytes(&SeenPolicy { version })?)?;
    }
    Ok(())
}

/// Re-signs snapshot and timestamp (online key) so that the repository does not
/// expire; run it periodically (timestamp lifetime: 7 days by default).
pub fn refresh(repo: &RepoDir, keys: &OnlineKeys, life: &Lifetimes) -> Result<(), TrustError> {
    refresh_with(repo, keys, life, false).map(|_| ())
}

/// Re-signs the `components` role with the pipeline key in `keys` (a new version and
/// a fresh expiry, the same releases), and with it targets, snapshot and timestamp:
/// after a pipeline key rotation, and before the role's own expiry. Returns the new
/// version of the role; refused when no release was ever published.
pub fn resign_components(
    repo: &RepoDir,
    keys: &OnlineKeys,
    life: &Lifetimes,
) -> Result<u64, TrustError> {
    refresh_with(repo, keys, life, true)?.ok_or_else(|| {
        TrustError::Invalid(
            "the repository has no `components` role yet: no release was published".into(),
        )
    })
}

/// [`refresh`], re-signing the `components` role too (if there is one) when asked.
pub(crate) fn refresh_with(
    repo: &RepoDir,
    keys: &OnlineKeys,
    life: &Lifetimes,
    resign_components: bool,
) -> Result<Option<u64>, TrustError> {
    let state = RepoState::read(repo)?;
    let mut targets = tuf::next_targets(&state, life);
    // The `policy` delegation follows the root's reviewers (which verifiers enforce):
    // this also completes a root update that was interrupted before its targets commit.
    if state.delegation(POLICY_ROLE).is_some() {
        let trust = crate::root::verified_current_root(repo, &state)?;
        let refs: Vec<&PublicKey> = trust.reviewers.iter().collect();
        tuf::set_delegation(
            &mut targets,
            POLICY_ROLE,
            &refs,
            trust.threshold,
            "policy/*",
        )?;
    }
    // So does the `components` delegation, to the pipeline key(s) the root pins.
    if state.delegation(tuf::COMPONENTS_ROLE).is_some() {
        crate::root::verified_current_root(repo, &state)?;
        let pin = tuf::root_components(&state.root.signed)?;
        let refs: Vec<&PublicKey> = pin.keys.iter().collect();
        tuf::set_delegation(
            &mut targets,
            tuf::COMPONENTS_ROLE,
            &refs,
            pin.threshold,
            "components/*/*/*",
        )?;
    }
    let mut delegated = vec![];
    let mut resigned = None;
    if resign_components {
        if let Some(current) = state.delegated.get(tuf::COMPONENTS_ROLE) {
            let mut role = current.signed.clone();
            role.version = role.version.checked_add(1).unwrap_or(role.version);
            role.expires = tuf::expiry(life.delegated);
            resigned = Some(role.version.get());
            delegated.push((
                tuf::COMPONENTS_ROLE.to_string(),
                tuf::signed_by(role, &[&keys.pipeline])?,
            ));
        }
    }
    tuf::commit(
        repo,
        &state,
        &keys.online,
        Commit {
            targets: Some(targets),
            delegated,
            files: vec![],
        },
        life,
    )?;
    Ok(resigned)
}
