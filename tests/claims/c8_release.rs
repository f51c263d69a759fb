//! Claim C8: a control-plane instance runs only tested software deployed by the
//! trusted pipeline. `verify_release` (what the agent calls before starting any
//! component) accepts an artifact only with the pipeline's TUF signature, a PASSED
//! in-toto test attestation for its exact digest by a trusted CI key, and M-of-N
//! non-author approvals. Each refusal's reason is asserted.

use palisade_policy::approval;
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{self, PublicKey, SigningKey};
use palisade_policy::release::{self, TestOutcome, TestResult, VerifiedRelease};
use palisade_policy::root;
use palisade_policy::tuf::{self, Lifetimes, OnlineKeys, RepoDir, TrustConfig, TrustError};
use std::path::PathBuf;

const ETCD: &[u8] = b"etcd binary v3.5.17 (pretend)";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    repo: RepoDir,
    keys: PathBuf,
    root: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let people = dir.join("people");
        for name in ["alice", "bob", "carol", "ci", "rogue-ci"] {
            keys::generate(name, &people, false).expect("key");
        }
        let pk = |n: &str| PublicKey::read(&people.join(format!("{n}.pub"))).expect("pub");
        let trust = TrustConfig {
            threshold: 2,
            reviewers: vec![pk("alice"), pk("bob"), pk("carol")],
            ci_keys: vec![pk("ci")],
            proposers: vec![],
        };
        let repo = RepoDir::new(dir.join("repo"));
        let keys = dir.join("keys");
        tuf::init(&repo, &keys, &trust, &Lifetimes::default()).expect("init");
        let root = std::fs::read(repo.metadata().join("root.json")).expect("root");
        Self {
            _tmp: tmp,
            dir,
            repo,
            keys,
            root,
        }
    }

    fn key(&self, n: &str) -> SigningKey {
        SigningKey::read(&self.dir.join("people").join(format!("{n}.key"))).expect("key")
    }

    fn attest(&self, artifact: &[u8], outcome: TestOutcome, by: &str) -> Envelope {
        let result = TestResult {
            result: outcome,
            configuration: vec![],
            url: "https://ci.example/run/1".into(),
            passed_tests: vec!["e2e".into()],
            warned_tests: vec![],
            failed_tests: if outcome == TestOutcome::Failed {
                vec!["e2e".into()]
            } else {
                vec![]
            },
        };
        release::attest("etcd", artifact, result, &self.key(by)).expect("attest")
    }

    /// alice proposes, bob and carol approve, the pipeline publishes.
    fn release(
        &self,
        version: &str,
        artifact: &[u8],
        attestation: Envelope,
    ) -> Result<(), TrustError> {
        let id = release::propose_release(
            &self.repo,
            &self.key("alice"),
            "etcd",
            version,
            "etcd",
            artifact,
            attestation,
            &[],
        )?;
        for who in ["bob", "carol"] {
            approval::approve(&self.repo, &id, &self.key(who))?;
        }
        release::publish_release(
            &self.repo,
            &OnlineKeys::load(&self.keys).expect("keys"),
            &id,
            &[],
            &Lifetimes::default(),
        )?;
        Ok(())
    }

    fn verify(&self, version: &str, artifact: &[u8]) -> Result<VerifiedRelease, TrustError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt")
            .block_on(release::verify_release(
                &self.repo,
                &self.root,
                &self.dir.join("agent-datastore"),
                "etcd",
                version,
                artifact,
                &[],
            ))
    }
}

#[test]
fn tested_approved_pipeline_signed_release_verifies() {
    let f = Fixture::new();
    f.release("3.5.17", ETCD, f.attest(ETCD, TestOutcome::Passed, "ci"))
        .expect("release");
    let v = f.verify("3.5.17", ETCD).expect("verify");
    assert_eq!(v.target, "components/etcd/3.5.17/etcd");
    assert_eq!(v.author, "alice");
    assert_eq!(v.approvers, vec!["bob".to_string(), "carol".to_string()]);
    assert_eq!(v.test_result.result, TestOutcome::Passed);
}

#[test]
fn unsigned_artifact_is_refused() {
    let f = Fixture::new();
    // Dropped into the repository's targets directory, never signed by the pipeline.
    let path = f.repo.target_path("components/etcd/3.5.17/etcd");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, ETCD).expect("write");
    match f.verify("3.5.17", ETCD) {
        Err(TrustError::NoRelease { component, version }) => {
            assert_eq!((component.as_str(), version.as_str()), ("etcd", "3.5.17"))
        }
        other => panic!("expected NoRelease, got {other:?}"),
    }
}

#[test]
fn failed_test_attestation_is_refused() {
    let f = Fixture::new();
    match f.release("3.5.17", ETCD, f.attest(ETCD, TestOutcome::Failed, "ci")) {
        Err(TrustError::AttestationNotPassed { result }) => assert_eq!(result, "FAILED"),
        other => panic!("expected AttestationNotPassed at propose, got {other:?}"),
    }
}

#[test]
fn attestation_for_another_digest_is_refused() {
    let f = Fixture::new();
    match f.release(
        "3.5.17",
        ETCD,
        f.attest(b"some other build", TestOutcome::Passed, "ci"),
    ) {
        Err(TrustError::AttestationSubject { artifact, .. }) => {
            assert_eq!(artifact, tuf::sha256_hex(ETCD))
        }
        other => panic!("expected AttestationSubject, got {other:?}"),
    }
}

#[test]
fn attestation_by_an_untrusted_key_is_refused() {
    let f = Fixture::new();
    match f.release(
        "3.5.17",
        ETCD,
        f.attest(ETCD, TestOutcome::Passed, "rogue-ci"),
    ) {
        Err(TrustError::AttestationUntrusted { trusted }) => {
            assert!(trusted.contains("ci "), "{trusted}")
        }
        other => panic!("expected AttestationUntrusted, got {other:?}"),
    }
}

#[test]
fn artifact_changed_after_approval_is_refused() {
    let f = Fixture::new();
    let id = release::propose_release(
        &f.repo,
        &f.key("alice"),
        "etcd",
        "3.5.17",
        "etcd",
        ETCD,
        f.attest(ETCD, TestOutcome::Passed, "ci"),
        &[],
    )
    .expect("propose");
    approval::approve(&f.repo, &id, &f.key("bob")).expect("bob");
    approval::approve(&f.repo, &id, &f.key("carol")).expect("carol");
    // Swapped in the proposal after the reviewers looked at it: publish refuses.
    let staged = f.repo.proposals().join(&id).join("etcd");
    std::fs::write(&staged, b"backdoored etcd").expect("swap");
    assert!(matches!(
        release::publish_release(
            &f.repo,
            &OnlineKeys::load(&f.keys).expect("k"),
            &id,
            &[],
            &Lifetimes::default()
        ),
        Err(TrustError::StaleProposal { .. })
    ));
    std::fs::write(&staged, ETCD).expect("restore");
    release::publish_release(
        &f.repo,
        &OnlineKeys::load(&f.keys).expect("k"),
        &id,
        &[],
        &Lifetimes::default(),
    )
    .expect("publish");
    // The agent is handed different bytes than were approved.
    match f.verify("3.5.17", b"backdoored etcd") {
        Err(TrustError::ArtifactDigest { expected, found }) => {
            assert_eq!(expected, tuf::sha256_hex(ETCD));
            assert_eq!(found, tuf::sha256_hex(b"backdoored etcd"));
        }
        other => panic!("expected ArtifactDigest, got {other:?}"),
    }
}

#[test]
fn release_needs_non_author_approvals() {
    let f = Fixture::new();
    let id = release::propose_release(
        &f.repo,
        &f.key("alice"),
        "etcd",
        "3.5.17",
        "etcd",
        ETCD,
        f.attest(ETCD, TestOutcome::Passed, "ci"),
        &[],
    )
    .expect("propose");
    assert!(matches!(
        approval::approve(&f.repo, &id, &f.key("alice")),
        Err(TrustError::AuthorCannotApprove { .. })
    ));
    approval::approve(&f.repo, &id, &f.key("bob")).expect("bob");
    assert!(matches!(
        release::publish_release(
            &f.repo,
            &OnlineKeys::load(&f.keys).expect("k"),
            &id,
            &[],
            &Lifetimes::default()
        ),
        Err(TrustError::NotEnoughApprovals {
            counted: 1,
            required: 2,
            ..
        })
    ));
}

/// Re-signs the `components` role with the real pipeline key, swapping in another
/// attestation: a pipeline that publishes what CI did not pass.
fn republish_with_attestation(f: &Fixture, env: &Envelope) {
    republish_with_custom(f, "attestation", serde_json::to_value(env).expect("json"));
}

#[test]
fn pipeline_signed_release_with_bad_attestation_is_refused_at_verify() {
    let f = Fixture::new();
    f.release("3.5.17", ETCD, f.attest(ETCD, TestOutcome::Passed, "ci"))
        .expect("release");
    f.verify("3.5.17", ETCD).expect("good release verifies");

    republish_with_attestation(&f, &f.attest(ETCD, TestOutcome::Failed, "ci"));
    match f.verify("3.5.17", ETCD) {
        Err(TrustError::AttestationNotPassed { result }) => assert_eq!(result, "FAILED"),
        other => panic!("expected AttestationNotPassed, got {other:?}"),
    }

    republish_with_attestation(&f, &f.attest(b"another build", TestOutcome::Passed, "ci"));
    match f.verify("3.5.17", ETCD) {
        Err(TrustError::AttestationSubject { attested, artifact }) => {
            assert_eq!(attested, tuf::sha256_hex(b"another build"));
            assert_eq!(artifact, tuf::sha256_hex(ETCD));
        }
        other => panic!("expected AttestationSubject, got {other:?}"),
    }

    republish_with_attestation(&f, &f.attest(ETCD, TestOutcome::Passed, "rogue-ci"));
    assert!(matches!(
        f.verify("3.5.17", ETCD),
        Err(TrustError::AttestationUntrusted { .. })
    ));
}

/// The release's author is the key that signed the proposal: a reviewer who proposes
/// and then renames the author to someone else (so that her own approval would count)
/// is refused at approve and at publish.
#[test]
fn release_author_renamed_after_proposing_is_refused() {
    let f = Fixture::new();
    let id = release::propose_release(
        &f.repo,
        &f.key("alice"),
        "etcd",
        "3.5.17",
        "etcd",
        ETCD,
        f.attest(ETCD, TestOutcome::Passed, "ci"),
        &[],
    )
    .expect("propose");
    let path = f.repo.proposals().join(&id).join("proposal.json");
    let mut proposal: approval::Proposal =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("proposal.json");
    proposal.statement.author = "bob".into();
    proposal.statement.author_key_id = Some(f.key("bob").key_id());
    std::fs::write(&path, serde_json::to_vec(&proposal).expect("json")).expect("write");
    match approval::approve(&f.repo, &id, &f.key("alice")) {
        Err(TrustError::AuthorUnproven { author, .. }) => assert_eq!(author, "bob"),
        other => panic!("expected AuthorUnproven, got {other:?}"),
    }
    assert!(matches!(
        release::publish_release(
            &f.repo,
            &OnlineKeys::load(&f.keys).expect("k"),
            &id,
            &[],
            &Lifetimes::default()
        ),
        Err(TrustError::AuthorUnproven { .. })
    ));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// Root version N+1 signed with the repository's own root key (a genuine rotation).
fn rotate_root(f: &Fixture) {
    let root_key = SigningKey::read(&f.keys.join("root.key")).expect("root key");
    root::update_root(
        &f.repo,
        &[root_key],
        &OnlineKeys::load(&f.keys).expect("keys"),
        root::RootChange::default(),
        &Lifetimes::default(),
    )
    .expect("root update");
}

/// Someone who can write the instance's files and host the repository plants a
/// root of their own (version 2, signed only by their keys) as the datastore's
/// cached root, beside a repository entirely theirs: the agent starts from its pinned
/// root, finds that the cached root does not chain from it, and refuses.
#[test]
fn self_signed_root_planted_in_the_datastore_is_refused() {
    const EVIL: &[u8] = b"etcd with a backdoor";
    let f = Fixture::new();
    f.release("3.5.17", ETCD, f.attest(ETCD, TestOutcome::Passed, "ci"))
        .expect("release");
    f.verify("3.5.17", ETCD).expect("genuine release verifies");

    // The attacker's own repository: their root key, reviewers, CI and pipeline.
    let evil = Fixture::new();
    rotate_root(&evil);
    evil.release("3.5.17", EVIL, evil.attest(EVIL, TestOutcome::Passed, "ci"))
        .expect("attacker's release");
    std::fs::remove_dir_all(&f.repo.root).expect("rm repo");
    copy_dir(&evil.repo.root, &f.repo.root);
    let datastore = f.dir.join("agent-datastore");
    std::fs::remove_dir_all(&datastore).expect("rm datastore");
    std::fs::create_dir_all(&datastore).expect("mkdir");
    std::fs::copy(
        evil.repo.metadata().join("root.json"),
        datastore.join("root.json"),
    )
    .expect("plant root");

    match f.verify("3.5.17", EVIL) {
        Err(TrustError::Signature { detail }) => {
            assert!(
                detail.contains("does not chain from the pinned root"),
                "{detail}"
            )
        }
        other => panic!("expected a refusal of the planted root, got {other:?}"),
    }
}

/// Genuine rotations still load: the datastore's cached root (version 3) chains from
/// the pinned root (version 1) through version 2, which the verifier kept, even once
/// the repository stops serving the numbered roots.
#[test]
fn genuinely_rotated_root_still_loads_from_the_datastore() {
    let f = Fixture::new();
    f.release("3.5.17", ETCD, f.attest(ETCD, TestOutcome::Passed, "ci"))
        .expect("release");
    f.verify("3.5.17", ETCD).expect("verifies at root 1");
    rotate_root(&f);
    f.verify("3.5.17", ETCD).expect("verifies at root 2");
    rotate_root(&f);
    f.verify("3.5.17", ETCD).expect("verifies at root 3");
    for v in [2, 3] {
        std::fs::remove_file(f.repo.metadata().join(format!("{v}.root.json"))).expect("rm");
    }
    let v = f
        .verify("3.5.17", ETCD)
        .expect("cached root 3 chains from root 1");
    assert_eq!(v.approvers, vec!["bob".to_string(), "carol".to_string()]);
}

/// The pipeline withdraws a release: it re-signs the `components` role without it.
fn withdraw(f: &Fixture, target: &str) {
    resign_components(f, |role| {
        role.targets.retain(|name, _| name.raw() != target)
    });
}

/// The holder of the online key (which signs the top-level targets role) delegates
/// `components` to a key of their own and re-lists a release the pipeline withdrew,
/// with its genuine attestation and approvals. The root pins the pipeline key, so
/// the agent's verification refuses the delegation, and the release stays withdrawn.
#[test]
fn online_key_cannot_redelegate_components_to_relist_a_withdrawn_release() {
    let f = Fixture::new();
    f.release("3.5.17", ETCD, f.attest(ETCD, TestOutcome::Passed, "ci"))
        .expect("release");
    f.verify("3.5.17", ETCD)
        .expect("published release verifies");
    let target = "components/etcd/3.5.17/etcd";
    let listed = tuf::RepoState::read(&f.repo)
        .expect("state")
        .delegated
        .get(tuf::COMPONENTS_ROLE)
        .expect("components")
        .signed
        .clone();

    withdraw(&f, target);
    assert!(matches!(
        f.verify("3.5.17", ETCD),
        Err(TrustError::NoRelease { .. })
    ));

    // The insider: online key, plus a key of their own for the new delegation.
    let rogue = f.key("rogue-ci");
    let state = tuf::RepoState::read(&f.repo).expect("state");
    let mut targets = state.targets.signed.clone();
    targets.version = targets.version.checked_add(1).expect("version");
    let d = targets.delegations.as_mut().expect("delegations");
    let rogue_id = keys::key_id_decoded(&rogue.key_id());
    d.keys.insert(rogue_id.clone(), rogue.public().key.clone());
    for r in d
        .roles
        .iter_mut()
        .filter(|r| r.name == tuf::COMPONENTS_ROLE)
    {
        r.keyids = vec![rogue_id.clone()];
        r.targets = None;
    }
    let mut role = listed;
    role.version = state.delegated[tuf::COMPONENTS_ROLE]
        .signed
        .version
        .checked_add(1)
        .expect("version");
    let sig = tuf::tuf_signature(&role, &rogue).expect("sig");
    tuf::commit(
        &f.repo,
        &state,
        &OnlineKeys::load(&f.keys).expect("keys").online,
        tuf::Commit {
            targets: Some(targets),
            delegated: vec![(
                tuf::COMPONENTS_ROLE.to_string(),
                tough::schema::Signed {
                    signed: role,
                    signatures: vec![sig],
                },
            )],
            files: vec![],
        },
        &Lifetimes::default(),
    )
    .expect("the insider's commit");

    match f.verify("3.5.17", ETCD) {
        Err(TrustError::DelegationMismatch { role, detail }) => {
            assert_eq!(role, tuf::COMPONENTS_ROLE);
            assert!(detail.contains("the root pins"), "{detail}");
        }
        other => panic!("expected DelegationMismatch, got {other:?}"),
    }
    let all = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(release::published_releases(
            &f.repo,
            &f.root,
            &f.dir.join("agent-datastore"),
        ));
    assert!(
        matches!(all, Err(TrustError::DelegationMismatch { .. })),
        "{all:?}"
    );
}

/// The rollback mark is approved like the release itself: a pipeline that adds
/// `rollback_from` to an approved release (its own key re-signing the role) makes the
/// release fail to verify; a release proposed with the mark and approved carries it.
#[test]
fn rollback_mark_needs_the_reviewers_approval() {
    let f = Fixture::new();
    let id = release::propose_release_marked(
        &f.repo,
        &f.key("alice"),
        "etcd",
        "3.5.16",
        "etcd",
        ETCD,
        f.attest(ETCD, TestOutcome::Passed, "ci"),
        &[],
        Some("3.5.17"),
    )
    .expect("propose");
    for who in ["bob", "carol"] {
        approval::approve(&f.repo, &id, &f.key(who)).expect("approve");
    }
    release::publish_release(
        &f.repo,
        &OnlineKeys::load(&f.keys).expect("keys"),
        &id,
        &[],
        &Lifetimes::default(),
    )
    .expect("publish");
    let v = f.verify("3.5.16", ETCD).expect("verify");
    assert_eq!(v.rollback_from.as_deref(), Some("3.5.17"));

    // A "rollback" to a higher or equal version is not one.
    for (to, from) in [("3.5.18", "3.5.17"), ("3.5.17", "3.5.17")] {
        assert!(matches!(
            release::propose_release_marked(
                &f.repo,
                &f.key("alice"),
                "etcd",
                to,
                "etcd",
                ETCD,
                f.attest(ETCD, TestOutcome::Passed, "ci"),
                &[],
                Some(from),
            ),
            Err(TrustError::Invalid(_))
        ));
    }

    // The pipeline alone re-marks the release from another version: refused.
    let g = Fixture::new();
    g.release("3.5.16", ETCD, g.attest(ETCD, TestOutcome::Passed, "ci"))
        .expect("release");
    assert_eq!(
        g.verify("3.5.16", ETCD).expect("verify").rollback_from,
        None
    );
    republish_with_custom(&g, "rollback_from", serde_json::json!("3.5.17"));
    assert!(
        matches!(
            g.verify("3.5.16", ETCD),
            Err(TrustError::AuthorUnproven { .. } | TrustError::NotEnoughApprovals { .. })
        ),
        "a rollback mark nobody approved was accepted"
    );
}

/// Re-signs the `components` role with the real pipeline key after setting one custom
/// field on every target.
fn republish_with_custom(f: &Fixture, key: &str, value: serde_json::Value) {
    resign_components(f, |role| {
        for t in role.targets.values_mut() {
            t.custom.insert(key.into(), value.clone());
        }
    });
}

/// Re-signs the `components` role with the real pipeline key after `edit`, and
/// commits it with the online keys: what a pipeline that goes rogue can do.
fn resign_components(f: &Fixture, edit: impl FnOnce(&mut tough::schema::Targets)) {
    let state = tuf::RepoState::read(&f.repo).expect("state");
    let mut role = state
        .delegated
        .get(tuf::COMPONENTS_ROLE)
        .expect("components role")
        .signed
        .clone();
    edit(&mut role);
    role.version = role.version.checked_add(1).expect("version");
    let pipeline = SigningKey::read(&f.keys.join("pipeline.key")).expect("pipeline key");
    let sig = tuf::tuf_signature(&role, &pipeline).expect("sig");
    tuf::commit(
        &f.repo,
        &state,
        &OnlineKeys::load(&f.keys).expect("keys").online,
        tuf::Commit {
            targets: None,
            delegated: vec![(
                tuf::COMPONENTS_ROLE.to_string(),
                tough::schema::Signed {
                    signed: role,
                    signatures: vec![sig],
                },
            )],
            files: vec![],
        },
        &Lifetimes::default(),
    )
    .expect("commit");
}
