//! Claim C4: changes to the administrative API's allowlist (the action policy)
//! always need multi-party review and approval — M-of-N distinct, current reviewers,
//! never the author — and gateway and agent load nothing else.
//!
//! Each test builds a real TUF repository with `palisade_policy`, then attacks it
//! the way a dishonest author or a compromised repository host would, and asserts
//! the precise reason for the refusal.

use palisade_policy::approval::{self, ApprovalStatement};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{self, PublicKey, SigningKey};
use palisade_policy::review;
use palisade_policy::root::RootChange;
use palisade_policy::trusted_policy::{self, PolicyRelease};
use palisade_policy::tuf::{
    self, Lifetimes, OnlineKeys, RepoDir, RepoState, TrustConfig, TrustError,
};
use std::path::{Path, PathBuf};
use tough::schema::Signed;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    repo: RepoDir,
    keys: PathBuf,
    root: Vec<u8>,
}

impl Fixture {
    /// Reviewers alice, bob, carol (and dave, not yet a reviewer); threshold 2.
    fn new() -> Self {
        Self::with_proposers(&[])
    }

    /// As [`Fixture::new`], plus proposer keys (in `proposers/`, apart from the
    /// reviewers' keys) registered under `proposers`' names.
    fn with_proposers(proposers: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let reviewers_dir = dir.join("reviewers");
        for name in ["alice", "bob", "carol", "dave"] {
            keys::generate(name, &reviewers_dir, false).expect("reviewer key");
        }
        let reviewers = ["alice", "bob", "carol"]
            .iter()
            .map(|n| PublicKey::read(&reviewers_dir.join(format!("{n}.pub"))).expect("pub"))
            .collect();
        let repo = RepoDir::new(dir.join("repo"));
        let keys = dir.join("keys");
        let trust = TrustConfig {
            threshold: 2,
            reviewers,
            ci_keys: vec![],
            proposers: proposers
                .iter()
                .map(|n| {
                    let k = keys::generate(n, &dir.join("proposers"), false).expect("key");
                    PublicKey::read(&k.public).expect("proposer pub")
                })
                .collect(),
        };
        tuf::init(&repo, &keys, &trust, &Lifetimes::default()).expect("init");
        let root = std::fs::read(repo.metadata().join("root.json")).expect("root.json");
        Self {
            _tmp: tmp,
            dir,
            repo,
            keys,
            root,
        }
    }

    fn key(&self, name: &str) -> SigningKey {
        SigningKey::read(&self.dir.join("reviewers").join(format!("{name}.key"))).expect("key")
    }

    fn proposer_key(&self, name: &str) -> SigningKey {
        SigningKey::read(&self.dir.join("proposers").join(format!("{name}.key"))).expect("key")
    }

    fn propose_signed(&self, key: &SigningKey, version: u64) -> Result<String, TrustError> {
        trusted_policy::propose_policy(
            &self.repo,
            key,
            &policy_yaml(version),
            &Lifetimes::default(),
        )
        .map(|p| p.id)
    }

    /// Rewrites proposal `id`'s `proposal.json` with `edit`.
    fn edit_proposal(&self, id: &str, edit: impl FnOnce(&mut approval::Proposal)) {
        let staged = approval::load(&self.repo, id).expect("proposal");
        let mut proposal = staged.proposal;
        edit(&mut proposal);
        std::fs::write(
            staged.dir.join("proposal.json"),
            serde_json::to_vec_pretty(&proposal).expect("json"),
        )
        .expect("write proposal.json");
    }

    /// Rewrites proposal `id`'s `proposal.json` with `edit`, without loading it
    /// first (its file may no longer match).
    fn edit_proposal_unchecked(&self, id: &str, edit: impl FnOnce(&mut approval::Proposal)) {
        let path = self.repo.proposals().join(id).join("proposal.json");
        let mut proposal: approval::Proposal =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("proposal.json");
        edit(&mut proposal);
        std::fs::write(&path, serde_json::to_vec_pretty(&proposal).expect("json"))
            .expect("write proposal.json");
    }

    fn root_key(&self) -> SigningKey {
        SigningKey::read(&self.keys.join("root.key")).expect("root key")
    }

    fn update_root(
        &self,
        signers: &[SigningKey],
        change: RootChange,
    ) -> Result<palisade_policy::root::RootUpdated, TrustError> {
        palisade_policy::root::update_root(
            &self.repo,
            signers,
            &self.online(),
            change,
            &Lifetimes::default(),
        )
    }

    fn online(&self) -> OnlineKeys {
        OnlineKeys::load(&self.keys).expect("online keys")
    }

    fn propose(&self, author: &str, version: u64) -> String {
        trusted_policy::propose_policy(
            &self.repo,
            &self.key(author),
            &policy_yaml(version),
            &Lifetimes::default(),
        )
        .expect("propose")
        .id
    }

    fn approve(&self, id: &str, who: &str) {
        approval::approve(&self.repo, id, &self.key(who)).expect("approve");
    }

    fn publish(&self, id: &str) -> Result<trusted_policy::Publication, TrustError> {
        trusted_policy::publish_policy(&self.repo, &self.online(), id, &Lifetimes::default())
    }

    /// Proposed by alice, approved by bob and carol, published.
    fn published(&self, version: u64) {
        let id = self.propose("alice", version);
        self.approve(&id, "bob");
        self.approve(&id, "carol");
        self.publish(&id).expect("publish");
    }

    fn datastore(&self, name: &str) -> PathBuf {
        self.dir.join("datastores").join(name)
    }

    fn verify(&self, datastore: &str) -> Result<trusted_policy::VerifiedPolicy, TrustError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(trusted_policy::verify_policy(
            &self.repo,
            &self.root,
            &self.datastore(datastore),
        ))
    }

    /// Publishes a forged policy straight through the TUF writer, bypassing
    /// Palisade's rule: `signers` sign both the DSSE approval and the policy role.
    fn forge(&self, id: &str, signers: &[&str], dsse_signers: &[&str]) {
        let state = RepoState::read(&self.repo).expect("state");
        let trust = state.trust().expect("trust");
        let keys = |names: &[&str]| names.iter().map(|n| self.key(n)).collect::<Vec<_>>();
        self.forge_delegated(
            id,
            &trust.reviewers,
            trust.threshold,
            &keys(signers),
            &keys(dsse_signers),
        );
    }

    /// As [`Fixture::forge`], with the online key also delegating the `policy` role
    /// to `delegate_to` with `threshold` (what a holder of the online key can sign).
    fn forge_delegated(
        &self,
        id: &str,
        delegate_to: &[PublicKey],
        threshold: u64,
        signers: &[SigningKey],
        dsse_signers: &[SigningKey],
    ) {
        let staged = approval::load(&self.repo, id).expect("proposal");
        let st: ApprovalStatement = staged.proposal.statement.clone();
        let role = staged.proposal.staged_role.clone().expect("policy role");
        let body = serde_json::to_vec(&st).expect("statement");
        let approvals: Vec<Envelope> = dsse_signers
            .iter()
            .map(|k| Envelope::sign(approval::APPROVAL_PAYLOAD_TYPE, &canonical(&st, &body), k))
            .collect();
        let signatures = signers
            .iter()
            .map(|k| tuf::tuf_signature(&role, k).expect("sig"))
            .collect();
        let state = RepoState::read(&self.repo).expect("state");
        trusted_policy::publish_signed_policy(
            &self.repo,
            &state,
            &self.online(),
            delegate_to,
            threshold,
            PolicyRelease {
                statement: st,
                role: Signed {
                    signed: role,
                    signatures,
                },
                bytes: staged.payload,
                author_signature: Some(staged.proposal.author_signature),
                approvals,
            },
            &Lifetimes::default(),
        )
        .expect("forged publish");
    }
}

/// The approval statement's canonical bytes, as `approve` signs them.
fn canonical(st: &ApprovalStatement, _json: &[u8]) -> Vec<u8> {
    let value = serde_json::to_value(st).expect("value");
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    serde::Serialize::serialize(&value, &mut ser).expect("canonical");
    out
}

fn policy_yaml(version: u64) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/default.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/policy/default.yaml");
    text.replacen("  version: 1\n", &format!("  version: {version}\n"), 1)
        .into_bytes()
}

#[test]
fn policy_with_threshold_of_distinct_non_author_approvals_verifies() {
    let f = Fixture::new();
    f.published(2);
    let v = f.verify("gateway").expect("verify");
    assert_eq!(v.version, 2);
    assert_eq!(v.author, "alice");
    assert_eq!(v.approvers, vec!["bob".to_string(), "carol".to_string()]);
    assert_eq!(v.digest, v.policy.digest().to_string());
}

#[test]
fn policy_with_m_minus_one_approvals_is_not_published() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    f.approve(&id, "bob");
    match f.publish(&id) {
        Err(TrustError::NotEnoughApprovals {
            counted: 1,
            required: 2,
            ..
        }) => {}
        other => panic!("expected NotEnoughApprovals 1/2, got {other:?}"),
    }
    assert!(matches!(f.verify("gw"), Err(TrustError::NoPolicy)));
}

#[test]
fn policy_author_cannot_approve_own_change() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    match approval::approve(&f.repo, &id, &f.key("alice")) {
        Err(TrustError::AuthorCannotApprove { author }) => assert_eq!(author, "alice"),
        other => panic!("expected AuthorCannotApprove, got {other:?}"),
    }
}

#[test]
fn author_signature_in_a_forged_repository_is_not_counted_at_verify() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    // The author and one reviewer sign: enough for TUF's threshold of 2 keys...
    f.forge(&id, &["alice", "bob"], &["alice", "bob"]);
    // ...but not for Palisade's rule, which never counts the author.
    match f.verify("gw") {
        Err(TrustError::NotEnoughApprovals {
            counted: 1,
            required: 2,
            ignored,
        }) => {
            assert!(
                ignored.iter().any(|r| r == "alice is the author"),
                "{ignored:?}"
            )
        }
        other => panic!("expected NotEnoughApprovals, got {other:?}"),
    }
}

#[test]
fn duplicate_approvals_by_one_key_count_once() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    f.approve(&id, "bob");
    match approval::approve(&f.repo, &id, &f.key("bob")) {
        Err(TrustError::AlreadyApproved { name, .. }) => assert_eq!(name, "bob"),
        other => panic!("expected AlreadyApproved, got {other:?}"),
    }
    // A copy of bob's approval under another file name still counts once.
    let dir = f.repo.proposals().join(&id).join("approvals");
    let bob = f.key("bob").key_id();
    std::fs::copy(dir.join(format!("{bob}.json")), dir.join("copy.json")).expect("copy");
    assert!(matches!(
        f.publish(&id),
        Err(TrustError::NotEnoughApprovals {
            counted: 1,
            required: 2,
            ..
        })
    ));
    // Forged: TUF threshold met by bob and carol, but the DSSE approvals are bob twice.
    f.forge(&id, &["bob", "carol"], &["bob", "bob"]);
    match f.verify("gw") {
        Err(TrustError::NotEnoughApprovals {
            counted: 1,
            required: 2,
            ignored,
        }) => {
            assert!(
                ignored
                    .iter()
                    .any(|r| r.contains("bob approved more than once")),
                "{ignored:?}"
            )
        }
        other => panic!("expected NotEnoughApprovals, got {other:?}"),
    }
}

#[test]
fn removed_reviewer_key_is_not_counted() {
    let f = Fixture::new();
    f.published(2);
    f.verify("gw").expect("before rotation");
    // carol leaves, dave joins; threshold stays 2.
    let pubkey =
        |n: &str| PublicKey::read(&f.dir.join("reviewers").join(format!("{n}.pub"))).expect("pub");
    f.update_root(
        &[f.root_key()],
        RootChange {
            reviewers: Some((vec![pubkey("alice"), pubkey("bob"), pubkey("dave")], 2)),
            ..RootChange::default()
        },
    )
    .expect("rotate");
    // The published policy was approved by bob and carol: carol no longer counts, so
    // the `policy` role's threshold fails in TUF itself.
    match f.verify("gw") {
        Err(TrustError::Signature { detail }) => assert!(
            detail.contains("Signature threshold of 2 not met")
                && detail.contains("(1 valid signatures)"),
            "{detail}"
        ),
        other => panic!("expected a signature-threshold refusal, got {other:?}"),
    }
    // And carol cannot approve anything any more.
    let id = f.propose("alice", 3);
    assert!(matches!(
        approval::approve(&f.repo, &id, &f.key("carol")),
        Err(TrustError::NotAReviewer { .. })
    ));
    // bob and dave re-approve: verifies again.
    f.approve(&id, "bob");
    f.approve(&id, "dave");
    f.publish(&id).expect("publish v3");
    let v = f.verify("gw").expect("after re-approval");
    assert_eq!(v.approvers, vec!["bob".to_string(), "dave".to_string()]);
}

#[test]
fn expired_metadata_is_refused() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    f.approve(&id, "bob");
    f.approve(&id, "carol");
    let life = Lifetimes {
        timestamp: jiff::SignedDuration::from_hours(-1),
        ..Lifetimes::default()
    };
    trusted_policy::publish_policy(&f.repo, &f.online(), &id, &life).expect("publish");
    match f.verify("gw") {
        Err(TrustError::Expired { detail }) => assert!(detail.contains("timestamp"), "{detail}"),
        other => panic!("expected Expired, got {other:?}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

#[test]
fn rollback_to_an_older_policy_is_refused() {
    let f = Fixture::new();
    f.published(2);
    let old = f.dir.join("old-repo");
    copy_dir(&f.repo.root, &old);
    f.published(3);
    assert_eq!(f.verify("agent").expect("v3").version, 3);
    // The host serves the older (validly signed) repository again.
    std::fs::remove_dir_all(&f.repo.root).expect("rm");
    copy_dir(&old, &f.repo.root);
    match f.verify("agent") {
        Err(TrustError::Rollback { detail }) => assert!(
            detail.contains("timestamp") || detail.contains("snapshot"),
            "{detail}"
        ),
        Err(TrustError::PolicyRollback {
            seen: 3,
            offered: 2,
        }) => {}
        other => panic!("expected a rollback refusal, got {other:?}"),
    }
    // A fresh datastore (a new machine) has no memory: that is what the persistent
    // datastore is for.
    assert_eq!(f.verify("fresh").expect("fresh datastore").version, 2);
}

#[test]
fn tampered_policy_file_is_refused() {
    let f = Fixture::new();
    f.published(2);
    let path = f.repo.target_path(tuf::POLICY_TARGET);
    let mut bytes = std::fs::read(&path).expect("policy");
    bytes.extend_from_slice(b"# widened\n");
    std::fs::write(&path, &bytes).expect("tamper");
    match f.verify("gw") {
        Err(TrustError::TargetDigest { detail, .. }) => assert!(!detail.is_empty()),
        other => panic!("expected TargetDigest, got {other:?}"),
    }
}

#[test]
fn swapped_delegation_is_refused() {
    let f = Fixture::new();
    f.published(2);
    // The host replaces the reviewers' keys in the delegation with its own and signs
    // a new policy role with them, without the online targets key.
    let attacker = f.dir.join("attacker");
    let k1 = SigningKey::read(
        &keys::generate("mallory", &attacker, false)
            .expect("k")
            .private,
    )
    .expect("k");
    let k2 = SigningKey::read(
        &keys::generate("trent", &attacker, false)
            .expect("k")
            .private,
    )
    .expect("k");
    let md = f.repo.metadata();
    let mut targets: Signed<tough::schema::Targets> =
        serde_json::from_slice(&std::fs::read(md.join("targets.json")).expect("targets"))
            .expect("json");
    let d = targets.signed.delegations.as_mut().expect("delegations");
    for role in d.roles.iter_mut().filter(|r| r.name == "policy") {
        role.keyids = vec![
            keys::key_id_decoded(&k1.key_id()),
            keys::key_id_decoded(&k2.key_id()),
        ];
    }
    d.keys
        .insert(keys::key_id_decoded(&k1.key_id()), k1.public().key.clone());
    d.keys
        .insert(keys::key_id_decoded(&k2.key_id()), k2.public().key.clone());
    std::fs::write(
        md.join("targets.json"),
        serde_json::to_vec_pretty(&targets).expect("json"),
    )
    .expect("write");
    let mut policy: Signed<tough::schema::Targets> =
        serde_json::from_slice(&std::fs::read(md.join("policy.json")).expect("policy"))
            .expect("json");
    policy.signatures = vec![
        tuf::tuf_signature(&policy.signed, &k1).expect("sig"),
        tuf::tuf_signature(&policy.signed, &k2).expect("sig"),
    ];
    std::fs::write(
        md.join("policy.json"),
        serde_json::to_vec_pretty(&policy).expect("json"),
    )
    .expect("write");
    match f.verify("gw") {
        Err(TrustError::Signature { detail }) => {
            assert!(detail.contains("targets.json"), "{detail}")
        }
        other => panic!("expected Signature refusal, got {other:?}"),
    }
}

/// A key pair outside the repository's trust (an attacker's, or a new root key),
/// generated on first use.
fn outsider(f: &Fixture, name: &str) -> SigningKey {
    let dir = f.dir.join("outsiders");
    let path = dir.join(format!("{name}.key"));
    if !path.exists() {
        keys::generate(name, &dir, false).expect("key");
    }
    SigningKey::read(&path).expect("key")
}

#[test]
fn the_online_key_cannot_delegate_the_policy_to_other_keys() {
    let f = Fixture::new();
    f.published(2);
    // The holder of the online targets key delegates `policy` to two keys of theirs,
    // signs alice's next proposal with them and publishes it with their approvals.
    let (mallory, trent) = (outsider(&f, "mallory"), outsider(&f, "trent"));
    let id = f.propose("alice", 3);
    f.forge_delegated(
        &id,
        &[mallory.public().clone(), trent.public().clone()],
        2,
        &[outsider(&f, "mallory"), outsider(&f, "trent")],
        &[mallory, trent],
    );
    match f.verify("gw") {
        Err(TrustError::DelegationMismatch { role, detail }) => {
            assert_eq!(role, "policy");
            assert!(
                detail.contains("keys not in the root's reviewers"),
                "{detail}"
            );
        }
        other => panic!("expected DelegationMismatch, got {other:?}"),
    }
}

#[test]
fn the_online_key_cannot_lower_the_threshold() {
    let f = Fixture::new();
    f.published(2);
    // Same reviewers, threshold 1: bob alone "approves".
    let id = f.propose("alice", 3);
    let reviewers: Vec<PublicKey> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| f.key(n).public().clone())
        .collect();
    f.forge_delegated(&id, &reviewers, 1, &[f.key("bob")], &[f.key("bob")]);
    match f.verify("gw") {
        Err(TrustError::DelegationMismatch { detail, .. }) => {
            assert!(detail.contains("threshold 1, the root says 2"), "{detail}")
        }
        other => panic!("expected DelegationMismatch, got {other:?}"),
    }
}

fn pubkey(f: &Fixture, name: &str) -> PublicKey {
    PublicKey::read(&f.dir.join("reviewers").join(format!("{name}.pub"))).expect("pub")
}

fn add_dave() -> impl Fn(&Fixture) -> RootChange {
    |f| RootChange {
        reviewers: Some((
            ["alice", "bob", "carol", "dave"]
                .iter()
                .map(|n| pubkey(f, n))
                .collect(),
            2,
        )),
        ..RootChange::default()
    }
}

/// Writes `signed` as root N+1 (numbered file and root.json).
fn write_root(f: &Fixture, signed: &Signed<tough::schema::Root>) {
    let bytes = serde_json::to_vec_pretty(signed).expect("json");
    let md = f.repo.metadata();
    std::fs::write(
        md.join(format!("{}.root.json", signed.signed.version)),
        &bytes,
    )
    .expect("write");
    std::fs::write(md.join("root.json"), &bytes).expect("write");
}

/// The newest root with its version raised by one, unsigned.
fn next_root(f: &Fixture) -> tough::schema::Root {
    let mut root = RepoState::read(&f.repo).expect("state").root.signed;
    root.version = std::num::NonZeroU64::new(root.version.get() + 1).expect("version");
    root
}

/// Root version N+1 with `edit` applied, signed by `signers` only, written as the
/// repository's newest root (what a host without the root keys can produce).
fn forge_root(f: &Fixture, signers: &[&SigningKey], edit: impl FnOnce(&mut tough::schema::Root)) {
    let mut root = next_root(f);
    edit(&mut root);
    write_root(
        f,
        &Signed {
            signatures: signers
                .iter()
                .map(|k| tuf::tuf_signature(&root, k).expect("sig"))
                .collect(),
            signed: root,
        },
    );
}

fn add_reviewer_to_root(root: &mut tough::schema::Root, key: &PublicKey) {
    let trust = root
        ._extra
        .get_mut(tuf::ROOT_TRUST_FIELD)
        .expect("trust field");
    trust["reviewers"]
        .as_array_mut()
        .expect("reviewers")
        .push(serde_json::to_value(key).expect("key"));
}

#[test]
fn reviewers_change_only_by_a_root_update_signed_by_the_old_root() {
    let f = Fixture::new();
    f.published(2);
    let before = std::fs::read(f.repo.metadata().join("root.json")).expect("root");
    // Neither the online key, nor a reviewer's, nor no key at all can sign it.
    for signers in [vec![f.online().online], vec![f.key("alice")], vec![]] {
        match f.update_root(&signers, add_dave()(&f)) {
            Err(TrustError::RootThreshold {
                version: 1,
                required: 1,
                given: 0,
                strangers,
            }) => assert_eq!(strangers.len(), signers.len()),
            other => panic!("expected RootThreshold, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read(f.repo.metadata().join("root.json")).expect("root"),
        before,
        "a refused root update wrote nothing"
    );
    assert!(!f.repo.metadata().join("2.root.json").exists());

    // A root written by the host with the online key is refused by the verifier.
    let mallory = outsider(&f, "mallory");
    let online = f.online().online;
    forge_root(&f, &[&online], |root| {
        add_reviewer_to_root(root, mallory.public())
    });
    match f.verify("fresh") {
        Err(TrustError::Signature { detail }) => assert!(detail.contains("root"), "{detail}"),
        other => panic!("expected a root signature refusal, got {other:?}"),
    }
    std::fs::write(f.repo.metadata().join("root.json"), &before).expect("restore");
    std::fs::remove_file(f.repo.metadata().join("2.root.json")).expect("rm");

    // The root key signs it: dave becomes a reviewer, the policy still verifies,
    // and dave's approval now counts.
    let done = f
        .update_root(&[f.root_key()], add_dave()(&f))
        .expect("root update");
    assert_eq!(done.version, 2);
    assert_eq!(f.verify("gw").expect("after update").version, 2);
    let id = f.propose("alice", 3);
    f.approve(&id, "dave");
    f.approve(&id, "carol");
    f.publish(&id).expect("publish");
    let v = f.verify("gw").expect("dave counted");
    assert_eq!(v.approvers, vec!["carol".to_string(), "dave".to_string()]);
}

#[test]
fn root_keys_rotate_to_two_of_three_and_then_one_key_is_not_enough() {
    let f = Fixture::new();
    f.published(2);
    f.verify("gw").expect("v2");
    let new = |n: &str| outsider(&f, n);
    // The old root key signs, and each new key signs the root it belongs to.
    f.update_root(
        &[f.root_key()],
        RootChange {
            root_keys: Some((vec![new("r1"), new("r2"), new("r3")], 2)),
            ..RootChange::default()
        },
    )
    .expect("root keys rotated");
    f.verify("gw").expect("the verifier follows the new root");

    // One new key is below the threshold; the old root key no longer counts.
    for (signers, given, strangers) in [
        (vec![new("r1")], 1, 0),
        (vec![f.root_key()], 0, 1),
        (vec![new("r1"), new("r1")], 1, 0),
    ] {
        match f.update_root(&signers, add_dave()(&f)) {
            Err(TrustError::RootThreshold {
                version: 2,
                required: 2,
                given: g,
                strangers: s,
            }) => assert_eq!((g, s.len()), (given, strangers)),
            other => panic!("expected RootThreshold, got {other:?}"),
        }
    }
    // A root signed by one of the three is refused by the verifier.
    let dave = pubkey(&f, "dave");
    forge_root(&f, &[&new("r1")], |root| add_reviewer_to_root(root, &dave));
    match f.verify("gw") {
        Err(TrustError::Signature { detail }) => assert!(detail.contains("root"), "{detail}"),
        other => panic!("expected a root signature refusal, got {other:?}"),
    }
    std::fs::remove_file(f.repo.metadata().join("3.root.json")).expect("rm");
    std::fs::copy(
        f.repo.metadata().join("2.root.json"),
        f.repo.metadata().join("root.json"),
    )
    .expect("restore");

    // Two of the three sign: accepted, from the datastore that saw root 2 and from a
    // fresh one that starts at root 1.
    let done = f
        .update_root(&[new("r1"), new("r3")], add_dave()(&f))
        .expect("2 of 3");
    assert_eq!((done.version, done.root_threshold), (3, 2));
    assert_eq!(done.trust.reviewers.len(), 4);
    f.verify("gw").expect("walks 2 -> 3");
    f.verify("fresh").expect("walks 1 -> 2 -> 3");
}

#[test]
fn the_verifier_checks_every_root_signature_itself() {
    let f = Fixture::new();
    f.published(2);
    let dave = pubkey(&f, "dave");
    let md = f.repo.metadata();
    let undo = |v: u64| {
        std::fs::remove_file(md.join(format!("{v}.root.json"))).expect("rm");
        std::fs::copy(
            md.join(format!("{}.root.json", v - 1)),
            md.join("root.json"),
        )
        .expect("restore");
    };
    // A root signed by the root key, with the trust field edited after signing.
    let mut root = next_root(&f);
    let sig = tuf::tuf_signature(&root, &f.root_key()).expect("sig");
    add_reviewer_to_root(&mut root, &dave);
    write_root(
        &f,
        &Signed {
            signed: root,
            signatures: vec![sig],
        },
    );
    match f.verify("fresh-1") {
        Err(TrustError::Signature { detail }) => assert!(detail.contains("root"), "{detail}"),
        other => panic!("an edited trust field was accepted: {other:?}"),
    }
    undo(2);

    // New root keys r1..r3 (2 of 3) in a root signed by the old root key only: the
    // new root must also be signed by a threshold of its own keys.
    let new = |n: &str| outsider(&f, n);
    let mut root = next_root(&f);
    let ids: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| {
            let k = new(n);
            root.keys
                .insert(keys::key_id_decoded(&k.key_id()), k.public().key.clone());
            keys::key_id_decoded(&k.key_id())
        })
        .collect();
    let role = root
        .roles
        .get_mut(&tough::schema::RoleType::Root)
        .expect("root role");
    role.keyids = ids;
    role.threshold = std::num::NonZeroU64::new(2).expect("2");
    let sig = tuf::tuf_signature(&root, &f.root_key()).expect("sig");
    write_root(
        &f,
        &Signed {
            signed: root,
            signatures: vec![sig],
        },
    );
    match f.verify("fresh-2") {
        Err(TrustError::Signature { detail }) => assert!(detail.contains("root"), "{detail}"),
        other => panic!("a root not signed by its own keys was accepted: {other:?}"),
    }
    undo(2);

    // Properly rotated to 2 of 3; then a root signed twice by r1 counts r1 once.
    f.update_root(
        &[f.root_key()],
        RootChange {
            root_keys: Some((vec![new("r1"), new("r2"), new("r3")], 2)),
            ..RootChange::default()
        },
    )
    .expect("rotated");
    let mut root = next_root(&f);
    add_reviewer_to_root(&mut root, &dave);
    let sig = tuf::tuf_signature(&root, &new("r1")).expect("sig");
    write_root(
        &f,
        &Signed {
            signed: root,
            signatures: vec![sig.clone(), sig],
        },
    );
    match f.verify("fresh-3") {
        Err(TrustError::Signature { detail }) => assert!(detail.contains("root"), "{detail}"),
        other => panic!("one key signing twice met a threshold of 2: {other:?}"),
    }
}

#[test]
fn a_withheld_root_update_does_not_bring_a_removed_reviewer_back() {
    let f = Fixture::new();
    f.published(2);
    let root_1 = std::fs::read(f.repo.metadata().join("1.root.json")).expect("root 1");
    // carol is removed (her key is compromised); dave joins. The gateway sees it.
    f.update_root(
        &[f.root_key()],
        RootChange {
            reviewers: Some((
                vec![pubkey(&f, "alice"), pubkey(&f, "bob"), pubkey(&f, "dave")],
                2,
            )),
            ..RootChange::default()
        },
    )
    .expect("root update");
    let id = f.propose("alice", 3);
    f.approve(&id, "bob");
    f.approve(&id, "dave");
    f.publish(&id).expect("publish v3");
    assert_eq!(f.verify("gw").expect("v3").version, 3);

    // The host withholds root 2 and, with the online key, delegates the policy to
    // root 1's reviewers again, so that carol's key counts.
    let md = f.repo.metadata();
    std::fs::remove_file(md.join("2.root.json")).expect("withhold root 2");
    std::fs::write(md.join("root.json"), &root_1).expect("root.json = root 1");
    let id = f.propose("alice", 4);
    let old: Vec<PublicKey> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| pubkey(&f, n))
        .collect();
    f.forge_delegated(
        &id,
        &old,
        2,
        &[f.key("bob"), f.key("carol")],
        &[f.key("bob"), f.key("carol")],
    );
    // The gateway's datastore holds root 2: it starts there, not at the pinned root 1.
    match f.verify("gw") {
        Err(TrustError::DelegationMismatch { detail, .. }) => {
            assert!(
                detail.contains("keys not in the root's reviewers"),
                "{detail}"
            )
        }
        other => panic!("a withheld root update was rolled back: {other:?}"),
    }
}

#[test]
fn proposal_must_raise_the_version_and_lint() {
    let f = Fixture::new();
    f.published(2);
    match trusted_policy::propose_policy(
        &f.repo,
        &f.key("alice"),
        &policy_yaml(2),
        &Lifetimes::default(),
    ) {
        Err(TrustError::VersionNotNewer {
            proposed: 2,
            published: 2,
        }) => {}
        other => panic!("expected VersionNotNewer, got {other:?}"),
    }
    assert!(matches!(
        trusted_policy::propose_policy(
            &f.repo,
            &f.key("alice"),
            b"apiVersion: nope\n",
            &Lifetimes::default()
        ),
        Err(TrustError::PolicyLint(_))
    ));
}

// ---- The author is proven by a signature, not claimed ----

#[test]
fn a_key_that_is_neither_reviewer_nor_proposer_cannot_propose() {
    let f = Fixture::new();
    // dave has a key pair but is not in the repository's trust configuration.
    match f.propose_signed(&f.key("dave"), 2) {
        Err(TrustError::NotAnAuthor { name, allowed, .. }) => {
            assert_eq!(name, "dave");
            assert_eq!(allowed, "alice, bob, carol");
        }
        other => panic!("expected NotAnAuthor, got {other:?}"),
    }
}

#[test]
fn the_author_recorded_is_the_signing_keys_trusted_name() {
    let f = Fixture::new();
    let id = f.propose("bob", 2);
    let staged = approval::load(&f.repo, &id).expect("proposal");
    assert_eq!(staged.proposal.statement.author, "bob");
    assert_eq!(
        staged.proposal.statement.author_key_id.as_deref(),
        Some(f.key("bob").key_id().as_str())
    );
    // bob authored it, so bob cannot approve it; alice and carol can.
    assert!(matches!(
        approval::approve(&f.repo, &id, &f.key("bob")),
        Err(TrustError::AuthorCannotApprove { .. })
    ));
    f.approve(&id, "alice");
    f.approve(&id, "carol");
    f.publish(&id).expect("publish");
    let v = f.verify("gw").expect("verify");
    assert_eq!(v.author, "bob");
    assert_eq!(v.approvers, vec!["alice".to_string(), "carol".to_string()]);
}

/// alice proposes, then edits the proposal to name bob as its author so that her own
/// approval would count. Her signature no longer covers the statement.
#[test]
fn an_author_who_renames_the_proposal_to_someone_else_is_refused() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    let bob_id = f.key("bob").key_id();
    f.edit_proposal(&id, |p| {
        p.statement.author = "bob".into();
        p.statement.author_key_id = Some(bob_id.clone());
    });
    for who in ["alice", "carol"] {
        match approval::approve(&f.repo, &id, &f.key(who)) {
            Err(TrustError::AuthorUnproven { author, reason }) => {
                assert_eq!(author, "bob");
                assert!(reason.contains("another statement"), "{who}: {reason}");
            }
            other => panic!("{who}: expected AuthorUnproven, got {other:?}"),
        }
    }
    // Re-signing the edited statement with her own key does not help: the key the
    // statement names is bob's.
    let alice = f.key("alice");
    f.edit_proposal(&id, |p| {
        let body = canonical(&p.statement, &[]);
        p.author_signature = Envelope::sign(approval::PROPOSAL_PAYLOAD_TYPE, &body, &alice);
    });
    match approval::approve(&f.repo, &id, &f.key("carol")) {
        Err(TrustError::AuthorUnproven { reason, .. }) => assert!(
            reason.contains(&format!("does not verify under key {bob_id}")),
            "{reason}"
        ),
        other => panic!("expected AuthorUnproven, got {other:?}"),
    }
    assert!(matches!(
        f.publish(&id),
        Err(TrustError::AuthorUnproven { .. })
    ));
}

#[test]
fn a_statement_naming_a_key_under_another_name_is_refused() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    // The statement keeps alice's key id but claims the name "mallory".
    f.edit_proposal(&id, |p| p.statement.author = "mallory".into());
    match approval::approve(&f.repo, &id, &f.key("bob")) {
        Err(TrustError::AuthorUnproven { reason, .. }) => {
            assert!(
                reason.contains("belongs to alice, not to mallory"),
                "{reason}"
            )
        }
        other => panic!("expected AuthorUnproven, got {other:?}"),
    }
}

#[test]
fn a_published_policy_without_the_authors_signature_does_not_verify() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    // A repository host publishes with valid reviewer approvals but drops the
    // author's signature...
    f.edit_proposal(&id, |p| {
        p.author_signature = Envelope::sign("application/x-nothing", b"{}", &f.key("alice"))
    });
    f.forge(&id, &["bob", "carol"], &["bob", "carol"]);
    match f.verify("gw") {
        Err(TrustError::AuthorUnproven { reason, .. }) => {
            assert!(reason.contains("payloadType"), "{reason}")
        }
        other => panic!("expected AuthorUnproven, got {other:?}"),
    }
}

#[test]
fn the_authors_own_signature_never_counts_as_an_approval() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    let staged = approval::load(&f.repo, &id).expect("proposal");
    let st = staged.proposal.statement.clone();
    let reviewers: Vec<PublicKey> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| f.key(n).public().clone())
        .collect();
    // bob's approval plus the author's proposal signature: one approval, not two.
    let bob = Envelope::sign(
        approval::APPROVAL_PAYLOAD_TYPE,
        &canonical(&st, &[]),
        &f.key("bob"),
    );
    match approval::count_approvals(
        &st,
        &[bob, staged.proposal.author_signature.clone()],
        &reviewers,
        2,
    ) {
        Err(TrustError::NotEnoughApprovals { counted: 1, .. }) => {}
        other => panic!("expected one approval counted, got {other:?}"),
    }
}

/// alice proposes with a proposer key registered under her name, apart from her
/// reviewer key: her reviewer key is still the author's (same name) and never counts.
#[test]
fn an_author_with_a_separate_proposer_key_cannot_approve_with_her_reviewer_key() {
    let f = Fixture::with_proposers(&["alice"]);
    let id = f
        .propose_signed(&f.proposer_key("alice"), 2)
        .expect("propose");
    assert!(matches!(
        approval::approve(&f.repo, &id, &f.key("alice")),
        Err(TrustError::AuthorCannotApprove { .. })
    ));
    // Forged straight into the repository, her reviewer approval is not counted.
    f.forge(&id, &["alice", "bob"], &["alice", "bob"]);
    match f.verify("gw") {
        Err(TrustError::NotEnoughApprovals {
            counted: 1,
            ignored,
            ..
        }) => assert!(
            ignored.iter().any(|r| r == "alice is the author"),
            "{ignored:?}"
        ),
        other => panic!("expected NotEnoughApprovals, got {other:?}"),
    }
}

#[test]
fn a_registered_proposer_who_is_not_a_reviewer_can_propose_but_not_approve() {
    let f = Fixture::with_proposers(&["erin"]);
    let id = f
        .propose_signed(&f.proposer_key("erin"), 2)
        .expect("propose");
    assert!(matches!(
        approval::approve(&f.repo, &id, &f.proposer_key("erin")),
        Err(TrustError::NotAReviewer { .. })
    ));
    f.approve(&id, "alice");
    f.approve(&id, "bob");
    f.publish(&id).expect("publish");
    assert_eq!(f.verify("gw").expect("verify").author, "erin");
}

/// The counting rule excludes the author by key id even when the name differs, and by
/// name even when the key id differs.
#[test]
fn count_approvals_excludes_the_author_by_key_id_or_by_name() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    let st = approval::load(&f.repo, &id)
        .expect("proposal")
        .proposal
        .statement;
    let reviewers: Vec<PublicKey> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| f.key(n).public().clone())
        .collect();
    let sign = |st: &ApprovalStatement, who: &str| {
        Envelope::sign(
            approval::APPROVAL_PAYLOAD_TYPE,
            &canonical(st, &[]),
            &f.key(who),
        )
    };
    // Key id of bob, name of someone else: bob is the author by key id.
    let by_key = ApprovalStatement {
        author: "someone".into(),
        author_key_id: Some(f.key("bob").key_id()),
        ..st.clone()
    };
    // Name bob, key id of no reviewer: bob is the author by name.
    let by_name = ApprovalStatement {
        author: "bob".into(),
        author_key_id: Some("00".repeat(32)),
        ..st.clone()
    };
    for expected in [by_key, by_name] {
        let envelopes = vec![sign(&expected, "bob"), sign(&expected, "carol")];
        match approval::count_approvals(&expected, &envelopes, &reviewers, 2) {
            Err(TrustError::NotEnoughApprovals {
                counted: 1,
                ignored,
                ..
            }) => assert!(
                ignored.iter().any(|r| r == "bob is the author"),
                "{ignored:?}"
            ),
            other => panic!("{expected:?}: expected bob not counted, got {other:?}"),
        }
    }
}

#[test]
fn malformed_proposal_ids_are_refused_before_any_path_is_built() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    let real = f.repo.proposals().join(&id).join("proposal.json");
    let long = "a".repeat(81);
    let bad_ids = ["", "../x", ".x", "-x", "a/b", "a\\b", long.as_str()];
    // Each id leads to a proposal.json that exists, so only the id check refuses it
    // (without the check, `load` would read it and answer StaleProposal instead).
    for bad in bad_ids {
        let dir = f.repo.proposals().join(bad);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::copy(&real, dir.join("proposal.json")).expect("copy proposal.json");
    }
    let traversal = format!("../proposals/{id}");
    for bad in bad_ids.into_iter().chain([traversal.as_str()]) {
        match approval::approve(&f.repo, bad, &f.key("bob")) {
            Err(TrustError::NoProposal(_)) => {}
            other => panic!("{bad:?}: expected NoProposal, got {other:?}"),
        }
        assert!(
            matches!(approval::load(&f.repo, bad), Err(TrustError::NoProposal(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_proposal_json_describing_another_proposal_is_refused() {
    let f = Fixture::new();
    let id = f.propose("alice", 2);
    f.edit_proposal(&id, |p| p.statement.proposal = "policy-2-other".into());
    assert!(matches!(
        approval::load(&f.repo, &id),
        Err(TrustError::StaleProposal { .. })
    ));
    let id = f.propose("alice", 3);
    f.edit_proposal(&id, |p| p.file = "../policy.yaml".into());
    assert!(matches!(
        approval::load(&f.repo, &id),
        Err(TrustError::StaleProposal { .. })
    ));
}

// ---------------------------------------------------------------------------------
// What a reviewer approves is checked from the root the reviewer holds, not from the
// files the repository host serves (`palisade policy approve` = `review::review` then
// `review::approve`).

impl Fixture {
    /// A reviewer's check of proposal `id` from the pinned root, with their own datastore.
    fn review(&self, id: &str) -> Result<review::Review, TrustError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(review::review(
                &self.repo,
                &self.root,
                &self.datastore("reviewer"),
                id,
            ))
    }
}

/// The inner reason of a `ReviewRefused` about `want_what`; checks the message.
fn refused_because(r: Result<review::Review, TrustError>, want_what: &str) -> TrustError {
    let err = match r {
        Err(e) => e,
        Ok(r) => panic!("expected ReviewRefused({want_what}), the review passed: {r:?}"),
    };
    let shown = err.to_string();
    match err {
        TrustError::ReviewRefused { what, source } => {
            assert_eq!(what, want_what, "{shown}");
            assert!(shown.starts_with("do not approve: "), "{shown}");
            *source
        }
        other => panic!("expected ReviewRefused({want_what}), got {other:?}"),
    }
}

#[test]
fn reviewer_sees_the_diff_against_the_verified_published_policy_and_approves_it() {
    let f = Fixture::new();
    f.published(2);
    let id = f.propose("alice", 3);
    let r = f.review(&id).expect("review");
    assert_eq!(r.published.as_ref().map(|(v, _)| *v), Some(2));
    let diff = r.diff();
    assert!(diff.contains("-   version: 2"), "{diff}");
    assert!(diff.contains("+   version: 3"), "{diff}");
    review::approve(&r, &f.key("bob")).expect("bob");
    review::approve(&f.review(&id).expect("review"), &f.key("carol")).expect("carol");
    f.publish(&id).expect("publish");
    assert_eq!(f.verify("gateway").expect("verify").version, 3);
}

/// The host swaps the published policy file the diff would be made against (so that
/// a harmful change looks like a no-op): the reviewer's check refuses.
#[test]
fn approve_refuses_when_the_host_swaps_the_published_policy_it_diffs_against() {
    let f = Fixture::new();
    f.published(2);
    let id = f.propose("alice", 3);
    // What the host serves as "published": the same length, one byte changed.
    let mut fake = policy_yaml(2);
    let at = fake.iter().position(|b| *b == b'#').expect("a comment");
    fake[at + 1] = b'~';
    std::fs::write(f.repo.target_path(tuf::POLICY_TARGET), fake).expect("swap");
    match refused_because(f.review(&id), "the published policy") {
        TrustError::TargetDigest { .. } | TrustError::Signature { .. } => {}
        other => panic!("expected a digest refusal, got {other:?}"),
    }
}

/// The host swaps the proposal's bytes and the digest beside them: the author never
/// signed that digest, so the reviewer's check refuses.
#[test]
fn approve_refuses_proposal_bytes_the_author_did_not_sign() {
    let f = Fixture::new();
    f.published(2);
    let id = f.propose("alice", 3);
    let evil = String::from_utf8(policy_yaml(3))
        .expect("utf8")
        .replace("# ", "#  ");
    let staged = approval::load(&f.repo, &id).expect("proposal");
    std::fs::write(staged.dir.join("policy.yaml"), &evil).expect("swap bytes");
    f.edit_proposal_unchecked(&id, |p| {
        p.statement.sha256 = tuf::sha256_hex(evil.as_bytes())
    });
    match refused_because(f.review(&id), "the proposal") {
        TrustError::AuthorUnproven { author, .. } => assert_eq!(author, "alice"),
        other => panic!("expected AuthorUnproven, got {other:?}"),
    }
}

/// The host leaves bytes and statement alone but swaps the staged `policy` role the
/// reviewer also signs (for TUF) for one listing other bytes: refused.
#[test]
fn approve_refuses_a_staged_role_that_lists_other_bytes() {
    let f = Fixture::new();
    f.published(2);
    let id = f.propose("alice", 3);
    let other = f.propose("alice", 4);
    let other_role = approval::load(&f.repo, &other)
        .expect("other")
        .proposal
        .staged_role;
    f.edit_proposal(&id, |p| p.staged_role = other_role);
    match refused_because(f.review(&id), "the proposal") {
        TrustError::StaleProposal { reason, .. } => {
            assert!(reason.contains("does not list exactly"), "{reason}")
        }
        other => panic!("expected StaleProposal, got {other:?}"),
    }
}

/// The host shows a root of its own making: edited in place (a proposer added), or as
/// a new version signed with the online key. Authorship and reviewers come from the
/// pinned root, so mallory's proposal is refused either way.
#[test]
fn approve_refuses_authorship_from_a_root_the_host_swapped() {
    let f = Fixture::new();
    f.published(2);
    let mallory = outsider(&f, "mallory");
    let add_mallory = |root: &mut tough::schema::Root| {
        root._extra
            .get_mut(tuf::ROOT_TRUST_FIELD)
            .expect("trust field")["proposers"] =
            serde_json::json!([serde_json::to_value(mallory.public()).expect("key")]);
    };

    // In place: metadata/root.json edited, its signatures left as they were.
    let path = f.repo.metadata().join("root.json");
    let mut served: Signed<tough::schema::Root> =
        serde_json::from_slice(&std::fs::read(&path).expect("root")).expect("root json");
    add_mallory(&mut served.signed);
    std::fs::write(&path, serde_json::to_vec_pretty(&served).expect("json")).expect("write");
    let id = f
        .propose_signed(&mallory, 3)
        .expect("the host's root lets mallory propose");
    match refused_because(f.review(&id), "the proposal") {
        TrustError::AuthorUnproven { author, .. } => assert_eq!(author, "mallory"),
        other => panic!("expected AuthorUnproven, got {other:?}"),
    }

    // A new root version, signed with the online key only.
    std::fs::write(&path, &f.root).expect("restore root.json");
    forge_root(&f, &[&f.online().online], add_mallory);
    let id = f.propose_signed(&mallory, 3).expect("propose");
    match refused_because(f.review(&id), "the repository") {
        TrustError::Signature { .. } => {}
        other => panic!("expected a signature refusal, got {other:?}"),
    }
}
