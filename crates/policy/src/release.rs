//! Trusted releases (claim C8): component artifacts with a pipeline signature, a
//! DSSE-signed in-toto test-result attestation `PASSED` for their digest, and M-of-N
//! reviewer approvals (never the author's).
//!
//! Targets live in the delegated role `components` (paths `components/*/*/*`, signed by
//! the pipeline key) as `components/<component>/<version>/<file>`, with custom data
//! `{attestation, approvals, approvers, author, author_key_id, proposal}` and, for a
//! release approved as a rollback, `rollback_from` ([`crate::rollback`]).

use crate::approval::{self, ApprovalStatement, ChangeKind, APPROVAL_TYPE};
use crate::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::keys::{PublicKey, SigningKey};
use crate::rollback::ReleaseVersion;
use crate::trusted_policy::Publication;
use crate::tuf::{
    self, Commit, Lifetimes, OnlineKeys, RepoDir, RepoState, TrustError, COMPONENTS_ROLE,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const TEST_RESULT_PREDICATE: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// in-toto test-result predicate v0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub result: TestOutcome,
    #[serde(default)]
    pub configuration: Vec<Value>,
    #[serde(default)]
    pub url: String,
    #[serde(rename = "passedTests", default)]
    pub passed_tests: Vec<String>,
    #[serde(rename = "warnedTests", default)]
    pub warned_tests: Vec<String>,
    #[serde(rename = "failedTests", default)]
    pub failed_tests: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestOutcome {
    #[serde(rename = "PASSED")]
    Passed,
    #[serde(rename = "WARNED")]
    Warned,
    #[serde(rename = "FAILED")]
    Failed,
}

impl FromStr for TestOutcome {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PASSED" => Ok(Self::Passed),
            "WARNED" => Ok(Self::Warned),
            "FAILED" => Ok(Self::Failed),
            other => Err(TrustError::Invalid(format!(
                "test result {:?} must be PASSED, WARNED or FAILED",
                other.chars().take(20).collect::<String>()
            ))),
        }
    }
}

/// Writes a DSSE-signed in-toto test-result attestation for `artifact`.
pub fn attest(
    name: &str,
    artifact: &[u8],
    result: TestResult,
    key: &SigningKey,
) -> Result<Envelope, TrustError> {
    let mut digest = BTreeMap::new();
    digest.insert("sha256".to_string(), tuf::sha256_hex(artifact));
    let statement = Statement {
        type_: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: name.to_string(),
            digest,
        }],
        predicate_type: TEST_RESULT_PREDICATE.into(),
        predicate: serde_json::to_value(result)
            .map_err(|e| TrustError::Invalid(format!("cannot encode the predicate: {e}")))?,
    };
    let body = serde_json::to_vec(&statement)
        .map_err(|e| TrustError::Invalid(format!("cannot encode the statement: {e}")))?;
    Ok(Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &body, key))
}

/// Checks a test attestation, in this order: signed by a trusted CI key; an in-toto
/// v1 test-result statement; a subject with this artifact's SHA-256; result PASSED.
pub fn check_attestation(
    env: &Envelope,
    artifact_sha256: &str,
    trusted: &[PublicKey],
) -> Result<TestResult, TrustError> {
    let malformed = |m: String| TrustError::AttestationMalformed(m);
    let body = env
        .payload_bytes(IN_TOTO_PAYLOAD_TYPE)
        .map_err(|e| malformed(e.to_string()))?;
    if env.verified_by(trusted).is_empty() {
        return Err(TrustError::AttestationUntrusted {
            trusted: if trusted.is_empty() {
                "none configured: add --ci-key or the repository's ci_keys".into()
            } else {
                trusted
                    .iter()
                    .map(|k| format!("{} {}", k.name, k.key_id()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    let st: Statement = serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
    if st.type_ != STATEMENT_TYPE {
        return Err(malformed(format!("_type is {:?}", st.type_)));
    }
    if st.predicate_type != TEST_RESULT_PREDICATE {
        return Err(malformed(format!(
            "predicateType is {:?}",
            st.predicate_type
        )));
    }
    if !st
        .subject
        .iter()
        .any(|s| s.digest.get("sha256").map(String::as_str) == Some(artifact_sha256))
    {
        return Err(TrustError::AttestationSubject {
            attested: st
                .subject
                .iter()
                .filter_map(|s| s.digest.get("sha256").cloned())
                .collect::<Vec<_>>()
                .join(","),
            artifact: artifact_sha256.into(),
        });
    }
    let result: TestResult =
        serde_json::from_value(st.predicate).map_err(|e| malformed(e.to_string()))?;
    if result.result != TestOutcome::Passed {
        return Err(TrustError::AttestationNotPassed {
            result: format!("{:?}", result.result).to_uppercase(),
        });
    }
    Ok(result)
}

fn check_segment(what: &str, s: &str) -> Result<(), TrustError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TrustError::Invalid(format!(
            "{what} {:?} must be 1-128 characters of [A-Za-z0-9._+-], not starting with '.' or '-'",
            s.chars().take(80).collect::<String>()
        )))
    }
}

pub fn release_target(component: &str, version: &str, file: &str) -> Result<String, TrustError> {
    check_segment("component", component)?;
    check_segment("version", version)?;
    check_segment("file name", file)?;
    Ok(format!("components/{component}/{version}/{file}"))
}

fn ci_keys(trust: &tuf::TrustConfig, extra: &[PublicKey]) -> Vec<PublicKey> {
    let mut keys = trust.ci_keys.clone();
    keys.extend(extra.iter().cloned());
    keys
}

/// Stages a release signed by `author` (a reviewer's or registered proposer's key);
/// the attestation must already check out.
#[allow(clippy::too_many_arguments)]
pub fn propose_release(
    repo: &RepoDir,
    author: &SigningKey,
    component: &str,
    version: &str,
    file: &str,
    artifact: &[u8],
    attestation: Envelope,
    extra_ci_keys: &[PublicKey],
) -> Result<String, TrustError> {
    propose_release_marked(
        repo,
        author,
        component,
        version,
        file,
        artifact,
        attestation,
        extra_ci_keys,
        None,
    )
}

/// Stages a release like [`propose_release`], marked, when `rollback_from` names a
/// (higher) version, as a rollback from it: once approved and published, the agent
/// may replace `rollback_from` by this lower `version` ([`crate::rollback`]). The
/// mark is part of what the author signs and the reviewers approve.
#[allow(clippy::too_many_arguments)]
pub fn propose_release_marked(
    repo: &RepoDir,
    author: &SigningKey,
    component: &str,
    version: &str,
    file: &str,
    artifact: &[u8],
    attestation: Envelope,
    extra_ci_keys: &[PublicKey],
    rollback_from: Option<&str>,
) -> Result<String, TrustError> {
    if let Some(rollback_from) = rollback_from {
        check_segment("rollback-from version", rollback_from)?;
        let to = ReleaseVersion::parse(version).map_err(|e| TrustError::Invalid(e.to_string()))?;
        let from =
            ReleaseVersion::parse(rollback_from).map_err(|e| TrustError::Invalid(e.to_string()))?;
        if to >= from {
            return Err(TrustError::Invalid(format!(
                "a rollback goes to a lower version: {version} is not lower than {rollback_from}"
            )));
        }
    }
    let target = release_target(component, version, file)?;
    let state = RepoState::read(repo)?;
    let trust = state.trust()?;
    let (author_name, author_key_id) = approval::author_of(&trust, author)?;
    let sha256 = tuf::sha256_hex(artifact);
    check_attestation(&attestation, &sha256, &ci_keys(&trust, extra_ci_keys))?;
    let statement = ApprovalStatement {
        type_: APPROVAL_TYPE.into(),
        kind: ChangeKind::Release,
        proposal: approval::new_proposal_id(ChangeKind::Release, version, &sha256),
        target,
        sha256,
        version: version.into(),
        digest: None,
        author: author_name,
        author_key_id: Some(author_key_id),
        rollback_from: rollback_from.map(str::to_string),
    };
    Ok(approval::stage(
        repo,
        statement,
        author,
        file,
        artifact,
        None,
        Some(attestation),
    )?
    .id)
}

/// Publishes release proposal `id` (threshold of distinct, current, non-author
/// reviewers; attestation re-checked) into the `components` role (pipeline key).
pub fn publish_release(
    repo: &RepoDir,
    keys: &OnlineKeys,
    id: &str,
    extra_ci_keys: &[PublicKey],
    life: &Lifetimes,
) -> Result<Publication, TrustError> {
    let staged = approval::load(repo, id)?;
    let state = RepoState::read(repo)?;
    let trust = state.trust()?;
    let st = staged.proposal.statement.clone();
    let attestation = staged
        .proposal
        .attestation
        .clone()
        .ok_or(TrustError::AttestationMissing)?;
    check_attestation(&attestation, &st.sha256, &ci_keys(&trust, extra_ci_keys))?;
    let author_signature = staged.proposal.author_signature.clone();
    approval::check_authorship(&st, Some(&author_signature), &approval::author_keys(&trust))?;
    let envelopes: Vec<Envelope> = approval::stored_approvals(&staged)?
        .into_iter()
        .map(|a| a.envelope)
        .collect();
    let approvers = approval::count_approvals(&st, &envelopes, &trust.reviewers, trust.threshold)?;
    let counted: Vec<Envelope> = envelopes
        .into_iter()
        .filter(|e| !e.verified_by(&approvers).is_empty())
        .collect();
    let names: Vec<String> = approvers.iter().map(|k| k.name.clone()).collect();
    let mut custom = HashMap::new();
    custom.insert("attestation".to_string(), json!(attestation));
    custom.insert("approvals".to_string(), json!(counted));
    custom.insert("approvers".to_string(), json!(names));
    custom.insert("author".to_string(), json!(st.author));
    if let Some(a) = &st.author_key_id {
        custom.insert("author_key_id".to_string(), json!(a));
    }
    custom.insert("author_signature".to_string(), json!(author_signature));
    custom.insert("proposal".to_string(), json!(st.proposal));
    if let Some(from) = &st.rollback_from {
        custom.insert("rollback_from".to_string(), json!(from));
    }
    let mut role = state
        .delegated
        .get(COMPONENTS_ROLE)
        .map(|r| r.signed.clone())
        .unwrap_or_else(|| tuf::new_delegated_targets(1, life));
    role.version = role.version.checked_add(1).unwrap_or(role.version);
    role.expires = tuf::expiry(life.delegated);
    role.targets.insert(
        tuf::target_name(&st.target)?,
        tuf::target_for(&staged.payload, custom),
    );
    let signed = tuf::signed_by(role, &[&keys.pipeline])?;
    tuf::commit(
        repo,
        &state,
        &keys.online,
        Commit {
            targets: None,
            delegated: vec![(COMPONENTS_ROLE.to_string(), signed)],
            files: vec![(st.target.clone(), staged.payload.clone())],
        },
        life,
    )?;
    Ok(Publication {
        kind: ChangeKind::Release,
        target: st.target,
        sha256: st.sha256,
        version: st.version,
        digest: None,
        author: st.author,
        approvers: names,
        proposal: st.proposal,
        published_at: jiff::Timestamp::now().to_string(),
    })
}

/// The target release `component` `version` is published as in the verified
/// `components` role (delegated to the pipeline key the root pins) (the first one under `components/<component>/<version>/`, the
/// same one `verify_release` checks).
fn find_release<'a>(
    loaded: &'a tough::Repository,
    component: &str,
    version: &str,
) -> Result<(&'a tough::TargetName, &'a tough::schema::Target), TrustError> {
    let prefix = format!("components/{component}/{version}/");
    let no_release = || TrustError::NoRelease {
        component: component.into(),
        version: version.into(),
    };
    let role = tuf::pinned_components(loaded)?.ok_or_else(no_release)?;
    role.signed
        .targets
        .iter()
        .find(|(n, _)| n.raw().starts_with(&prefix))
        .ok_or_else(no_release)
}

/// The target name (`components/<component>/<version>/<file>`) of release
/// `component` `version`, read from the TUF-verified `components` role: it tells a
/// caller which file under the repository's `targets/` to hand to [`verify_release`].
/// The file part must be a plain file name (no `/`, no leading `.`), so the name can
/// be joined to a directory safely. Finding a name verifies nothing about the bytes.
pub async fn release_target_name(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
    component: &str,
    version: &str,
) -> Result<String, TrustError> {
    check_segment("component", component)?;
    check_segment("version", version)?;
    let loaded = tuf::load(repo, root, datastore).await?;
    let (name, _) = find_release(&loaded, component, version)?;
    let prefix = format!("components/{component}/{version}/");
    let file = name.raw().strip_prefix(&prefix).unwrap_or_default();
    check_segment("file name", file).map_err(|e| TrustError::BadCustom {
        target: name.raw().into(),
        reason: e.to_string(),
    })?;
    Ok(name.raw().to_string())
}

/// A release that passed every check: the agent may start it.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    pub component: String,
    pub version: String,
    pub target: String,
    pub sha256: String,
    pub author: String,
    pub approvers: Vec<String>,
    pub proposal: String,
    pub test_result: TestResult,
    /// The one version this release may replace although it is lower (approved as a
    /// rollback from it), if it was published as a rollback.
    pub rollback_from: Option<String>,
}

/// Verifies `artifact` as release `component` `version`, in this order: the TUF
/// chain from `root` with the `components` role (pipeline signature), the artifact's
/// SHA-256 against the signed target, the test attestation (trusted CI key from the
/// repository's `ci_keys` or `extra_ci_keys`, subject digest, PASSED), the author's
/// signature, and the approval threshold (distinct, current, non-author reviewers).
pub async fn verify_release(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
    component: &str,
    version: &str,
    artifact: &[u8],
    extra_ci_keys: &[PublicKey],
) -> Result<VerifiedRelease, TrustError> {
    let measured = Measured {
        sha256: tuf::sha256_hex(artifact),
        length: artifact.len() as u64,
    };
    verify_measured_release(
        repo,
        root,
        datastore,
        component,
        version,
        &measured,
        extra_ci_keys,
    )
    .await
}

/// An artifact's SHA-256 (lower-case hex) and length, measured by the caller while
/// streaming it (a component binary of hundreds of MiB is never held in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub sha256: String,
    pub length: u64,
}

/// [`verify_release`] for an artifact the caller measured: the same checks, with
/// `measured` standing for the artifact's bytes.
pub async fn verify_measured_release(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
    component: &str,
    version: &str,
    measured: &Measured,
    extra_ci_keys: &[PublicKey],
) -> Result<VerifiedRelease, TrustError> {
    check_segment("component", component)?;
    check_segment("version", version)?;
    let loaded = tuf::load(repo, root, datastore).await?;
    let trust = tuf::verified_trust(&loaded)?;
    let (name, target) = find_release(&loaded, component, version)?;
    let expected_sha = hex::encode(target.hashes.sha256.as_ref());
    if measured.sha256 != expected_sha || measured.length != target.length {
        return Err(TrustError::ArtifactDigest {
            expected: expected_sha,
            found: measured.sha256.clone(),
        });
    }
    verify_signed_release(&trust, name, target, component, version, extra_ci_keys)
}

/// Every release the verified `components` role lists, each checked as
/// [`verify_release`] checks it except for the artifact's bytes (which are not read):
/// the signed digest stands for them. One TUF load for all. This is what the
/// governance log records: each release that was published with its approvals.
/// A release that does not verify is returned as an error beside its target name.
pub async fn published_releases(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
) -> Result<Vec<Result<VerifiedRelease, (String, TrustError)>>, TrustError> {
    let loaded = tuf::load(repo, root, datastore).await?;
    let trust = tuf::verified_trust(&loaded)?;
    let Some(role) = tuf::pinned_components(&loaded)? else {
        return Ok(Vec::new());
    };
    let mut names: Vec<_> = role.signed.targets.iter().collect();
    names.sort_by(|a, b| a.0.raw().cmp(b.0.raw()));
    Ok(names
        .into_iter()
        .map(|(name, target)| {
            let parts: Vec<&str> = name.raw().split('/').collect();
            let bad = || TrustError::BadCustom {
                target: name.raw().into(),
                reason: "not components/<component>/<version>/<file>".into(),
            };
            let checked = match parts[..] {
                ["components", component, version, _] => check_segment("component", component)
                    .and_then(|()| check_segment("version", version))
                    .and_then(|()| {
                        verify_signed_release(&trust, name, target, component, version, &[])
                    }),
                _ => Err(bad()),
            };
            checked.map_err(|e| (name.raw().to_string(), e))
        })
        .collect())
}

/// The checks of a release that need only its signed metadata: attestation, author's
/// signature, approvals. The target's signed SHA-256 is the artifact's (the caller
/// has compared the bytes, or records only what was published).
fn verify_signed_release(
    trust: &tuf::TrustConfig,
    name: &tough::TargetName,
    target: &tough::schema::Target,
    component: &str,
    version: &str,
    extra_ci_keys: &[PublicKey],
) -> Result<VerifiedRelease, TrustError> {
    let found = hex::encode(target.hashes.sha256.as_ref());
    let bad = |reason: &str| TrustError::BadCustom {
        target: name.raw().into(),
        reason: reason.into(),
    };
    let attestation: Envelope = target
        .custom
        .get("attestation")
        .cloned()
        .map(serde_json::from_value)
        .ok_or(TrustError::AttestationMissing)?
        .map_err(|e| TrustError::AttestationMalformed(e.to_string()))?;
    let test_result = check_attestation(&attestation, &found, &ci_keys(trust, extra_ci_keys))?;
    let approvals: Vec<Envelope> = target
        .custom
        .get("approvals")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(&format!("approvals: {e}")))?
        .unwrap_or_default();
    let custom_str = |k: &str| {
        target
            .custom
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let author = custom_str("author").ok_or_else(|| bad("no `author`"))?;
    let proposal = custom_str("proposal").ok_or_else(|| bad("no `proposal`"))?;
    let expected = ApprovalStatement {
        type_: APPROVAL_TYPE.into(),
        kind: ChangeKind::Release,
        proposal: proposal.clone(),
        target: name.raw().into(),
        sha256: found.clone(),
        version: version.into(),
        digest: None,
        author: author.clone(),
        author_key_id: custom_str("author_key_id"),
        // Covered by the author's signature and the approvals below: a mark the
        // reviewers did not approve makes the release fail to verify.
        rollback_from: match target.custom.get("rollback_from") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("`rollback_from` is not a string")),
        },
    };
    let author_signature: Option<Envelope> = target
        .custom
        .get("author_signature")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(&format!("author_signature: {e}")))?;
    approval::check_authorship(
        &expected,
        author_signature.as_ref(),
        &approval::author_keys(trust),
    )?;
    let approvers =
        approval::count_approvals(&expected, &approvals, &trust.reviewers, trust.threshold)?;
    Ok(VerifiedRelease {
        rollback_from: expected.rollback_from.clone(),
        component: component.into(),
        version: version.into(),
        target: name.raw().into(),
        sha256: found,
        author,
        approvers: approvers.into_iter().map(|k| k.name).collect(),
        proposal,
        test_result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::tuf::TrustConfig;

    #[test]
    fn release_target_name_names_the_published_file_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let people = tmp.path().join("people");
        for n in ["alice", "bob", "ci"] {
            keys::generate(n, &people, false).expect("key");
        }
        let pk = |n: &str| PublicKey::read(&people.join(format!("{n}.pub"))).expect("pub");
        let sk = |n: &str| SigningKey::read(&people.join(format!("{n}.key"))).expect("key");
        let repo = RepoDir::new(tmp.path().join("repo"));
        let keys_dir = tmp.path().join("keys");
        let trust = TrustConfig {
            threshold: 1,
            reviewers: vec![pk("alice"), pk("bob")],
            ci_keys: vec![pk("ci")],
            proposers: vec![],
        };
        tuf::init(&repo, &keys_dir, &trust, &Lifetimes::default()).expect("init");
        let artifact = b"a component build";
        let result = TestResult {
            result: TestOutcome::Passed,
            configuration: vec![],
            url: String::new(),
            passed_tests: vec![],
            warned_tests: vec![],
            failed_tests: vec![],
        };
        let env = attest("etcd", artifact, result, &sk("ci")).expect("attest");
        let id = propose_release(
            &repo,
            &sk("alice"),
            "etcd",
            "3.5.17",
            "etcd-bin",
            artifact,
            env,
            &[],
        )
        .expect("propose");
        approval::approve(&repo, &id, &sk("bob")).expect("approve");
        let online = OnlineKeys::load(&keys_dir).expect("online keys");
        publish_release(&repo, &online, &id, &[], &Lifetimes::default()).expect("publish");
        let root = std::fs::read(repo.metadata().join("root.json")).expect("root");
        let datastore = tmp.path().join("datastore");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let name = rt
            .block_on(release_target_name(
                &repo, &root, &datastore, "etcd", "3.5.17",
            ))
            .expect("name");
        assert_eq!(name, "components/etcd/3.5.17/etcd-bin");
        assert!(matches!(
            rt.block_on(release_target_name(
                &repo, &root, &datastore, "etcd", "3.5.18"
            )),
            Err(TrustError::NoRelease { .. })
        ));
        assert!(matches!(
            rt.block_on(release_target_name(
                &repo, &root, &datastore, "etcd", "../x"
            )),
            Err(TrustError::Invalid(_))
        ));
    }
}
