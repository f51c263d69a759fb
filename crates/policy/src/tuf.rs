//! Palisade's TUF repository: layout, creation, signing, and verified loading.
//!
//! Layout of a repository directory `R` (TUF 1.0, `consistent_snapshot: false`):
//! ```text
//! R/metadata/N.root.json, root.json      root (offline root keys, threshold): the keys of
//!                                         every role, and in field `x-palisade-trust` the
//!                                         reviewers, threshold, CI keys and proposers
//! R/metadata/targets.json                 top-level targets (online key): policy approval
//!                                         records, delegations
//! R/metadata/policy.json                  delegated role `policy` (paths policy/*):
//!                                         threshold M over the reviewers' keys
//! R/metadata/components.json              delegated role `components` (paths components/*/*/*):
//!                                         the pipeline key
//! R/metadata/snapshot.json, timestamp.json  (online key)
//! R/targets/...                           target files
//! R/proposals/<id>/                       staged changes and their approvals (not TUF)
//! ```
//! Writing is done here with tough's schema types and Palisade's own signing, because
//! reviewers sign the `policy` role at *approve* time, one by one, and the publisher
//! never holds their keys. Reading always goes through `tough::RepositoryLoader` with
//! a persistent datastore (TUF §5: root chain, threshold, expiry, rollback).

use crate::keys::{key_id_decoded, KeyError, PublicKey, SigningKey};
use jiff::{SignedDuration, Timestamp as JiffTimestamp};
use olpc_cjson::CanonicalFormatter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{
    DelegatedRole, Delegations, Hashes, Metafile, PathPattern, PathSet, Role, RoleKeys, RoleType,
    Root, Signature, Signed, Snapshot, Target, Targets, Timestamp,
};
use tough::{ExpirationEnforcement, FilesystemTransport, IntoVec, RepositoryLoader, TargetName};

pub const SPEC_VERSION: &str = "1.0.0";
/// The field of the root role's signed metadata that holds the [`TrustConfig`]
/// (reviewers, threshold, CI keys, proposers). It is signed by the root keys, so only a
/// root update signed by a threshold of the old root can change who approves; the
/// online key that signs targets, snapshot and timestamp cannot. TUF clients keep
/// unrecognised fields and verify signatures over them (TUF 1.0 §4.2).
pub const ROOT_TRUST_FIELD: &str = "x-palisade-trust";
/// The field of the root role's signed metadata that pins the `components`
/// delegation ([`ComponentsPin`]): the pipeline key(s) and threshold. Like
/// [`ROOT_TRUST_FIELD`], only a root update can change it, so the online key that signs
/// the top-level targets cannot delegate `components` to a key of its own.
pub const ROOT_COMPONENTS_FIELD: &str = "x-palisade-components";
pub const POLICY_ROLE: &str = "policy";
pub const COMPONENTS_ROLE: &str = "components";
pub const POLICY_TARGET: &str = "policy/policy.yaml";

/// Everything that can make Palisade refuse to trust a policy or a release.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("TUF metadata has expired ({detail}); the repository owner must re-sign it before anything in it can be trusted")]
    Expired { detail: String },
    #[error("rollback refused: {detail}")]
    Rollback { detail: String },
    #[error("TUF signature check failed: {detail}")]
    Signature { detail: String },
    #[error("target {target} does not match the digest its signed metadata records: {detail}")]
    TargetDigest { target: String, detail: String },
    #[error("the TUF repository at {location} cannot be loaded: {detail}")]
    Tuf { location: String, detail: String },
    #[error("no policy has been published in this repository yet: run `palisade policy propose`, `approve` and `publish` first")]
    NoPolicy,
    #[error("policy rollback refused: this datastore has already accepted policy version {seen}, the repository offers version {offered}")]
    PolicyRollback { seen: u64, offered: u64 },
    #[error("not enough approvals: {counted} distinct current non-author reviewer(s) approved, {required} required{}", if ignored.is_empty() { String::new() } else { format!(" (not counted: {})", ignored.join("; ")) })]
    NotEnoughApprovals {
        counted: usize,
        required: u64,
        ignored: Vec<String>,
    },
    #[error("the author's own key ({author}) cannot approve their change")]
    AuthorCannotApprove { author: String },
    #[error("key {key_id} ({name}) cannot propose a change: it is neither a reviewer's nor a registered proposer's (they are: {allowed})")]
    NotAnAuthor {
        key_id: String,
        name: String,
        allowed: String,
    },
    #[error("the author {author:?} of this change is not proven: {reason}")]
    AuthorUnproven { author: String, reason: String },
    #[error("key {key_id} ({name}) is not a current reviewer; current reviewers: {reviewers}")]
    NotAReviewer {
        key_id: String,
        name: String,
        reviewers: String,
    },
    #[error("reviewer {name} has already approved proposal {proposal}; a key counts once")]
    AlreadyApproved { name: String, proposal: String },
    #[error("the `{role}` delegation in the targets metadata does not match the reviewers the root role signs: {detail}; only a root update signed by a threshold of the root keys may change them (`palisade policy update-root`); if a root update was interrupted, `palisade policy refresh` re-signs the delegation to match the root")]
    DelegationMismatch { role: String, detail: String },
    #[error("the root role carries no reviewer set (field `x-palisade-trust`): {0}")]
    NoRootTrust(String),
    #[error("a root update must be signed by at least {required} key(s) of the current root (version {version}) and by no other key; {given} of its keys given{}", if strangers.is_empty() { String::new() } else { format!(", and keys that are not: {}", strangers.join(", ")) })]
    RootThreshold {
        version: u64,
        required: u64,
        given: usize,
        strangers: Vec<String>,
    },
    #[error("the custom data of target {target} is malformed: {reason}")]
    BadCustom { target: String, reason: String },
    #[error("the policy does not lint:\n{0}")]
    PolicyLint(String),
    #[error("policy version {proposed} must be greater than the published version {published}")]
    VersionNotNewer { proposed: u64, published: u64 },
    #[error("the published policy's {what} ({found}) differs from what the approvals and metadata record ({expected})")]
    PolicyMismatch {
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("proposal {0:?} not found; list them under <repo>/proposals/")]
    NoProposal(String),
    #[error("proposal {proposal} is stale: {reason}; propose the change again")]
    StaleProposal { proposal: String, reason: String },
    #[error("no release {component} {version} in the repository")]
    NoRelease { component: String, version: String },
    #[error("artifact digest mismatch: the signed release records sha256:{expected}, the artifact is sha256:{found}")]
    ArtifactDigest { expected: String, found: String },
    #[error("the release has no test attestation")]
    AttestationMissing,
    #[error("the test attestation is not signed by a trusted CI key (trusted: {trusted})")]
    AttestationUntrusted { trusted: String },
    #[error("the test attestation says {result}, not PASSED")]
    AttestationNotPassed { result: String },
    #[error(
        "the test attestation is for sha256:{attested}, not for this artifact (sha256:{artifact})"
    )]
    AttestationSubject { attested: String, artifact: String },
    #[error("the test attestation is malformed: {0}")]
    AttestationMalformed(String),
    #[error("do not approve: {what} does not verify from your trusted root ({source}); the repository host may be showing you files that were never signed or published")]
    ReviewRefused {
        what: &'static str,
        source: Box<TrustError>,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TrustError {
    /// Whether this error says the repository cannot be verified now (its metadata
    /// expired, was rolled back, does not verify, or cannot be read), as opposed to a
    /// repository that verifies and says no (a release not listed, an artifact that
    /// differs, too few approvals). Only the first kind lets a verifier keep what it
    /// verified before: it says nothing new about that.
    pub fn repository_unverifiable(&self) -> bool {
        matches!(
            self,
            Self::Expired { .. }
                | Self::Rollback { .. }
                | Self::Signature { .. }
                | Self::Tuf { .. }
                | Self::Io { .. }
                | Self::DelegationMismatch { .. }
                | Self::NoRootTrust(_)
        )
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Classifies tough's errors into the reasons Palisade reports.
    pub(crate) fn from_tough(location: &str, e: tough::error::Error) -> Self {
        use tough::error::Error as E;
        let detail = e.to_string();
        match e {
            E::ExpiredMetadata { .. } => Self::Expired { detail },
            E::OlderMetadata { .. }
            | E::OlderSnapshotInTimestamp { .. }
            | E::SnapshotRoleRollback { .. }
            | E::SystemTimeSteppedBackward { .. } => Self::Rollback { detail },
            E::VerifyMetadata { .. }
            | E::VerifyRoleMetadata { .. }
            | E::VerifyTrustedMetadata { .. } => Self::Signature { detail },
            // A metadata file whose hash differs from what snapshot/timestamp signed
            // was changed without the online key: a signature failure in effect.
            E::HashMismatch { context, .. } if context.ends_with(".json") => Self::Signature {
                detail: format!(
                    "{context} was modified after it was signed (its hash differs from the signed snapshot/timestamp): {detail}"
                ),
            },
            E::HashMismatch { context, .. } => Self::TargetDigest {
                target: context,
                detail,
            },
            // A file fetched through the transport that differs from the hash or
            // length its signed parent records.
            E::Transport { .. }
                if detail.contains("Hash mismatch") || detail.contains("specified by") =>
            {
                if detail.contains(".json") && !detail.contains("/targets/") {
                    Self::Signature {
                        detail: format!(
                            "metadata was modified after it was signed (it differs from what the signed snapshot/timestamp records): {detail}"
                        ),
                    }
                } else {
                    Self::TargetDigest {
                        target: location.to_string(),
                        detail,
                    }
                }
            }
            _ => Self::Tuf {
                location: location.to_string(),
                detail,
            },
        }
    }
}

/// How long each role's metadata stays valid after it is signed.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub root: SignedDuration,
    pub targets: SignedDuration,
    pub delegated: SignedDuration,
    pub snapshot: SignedDuration,
    pub timestamp: SignedDuration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        let days = |d: i64| SignedDuration::from_hours(24 * d);
        Self {
            root: days(365),
            targets: days(90),
            delegated: days(365),
            snapshot: days(30),
            timestamp: days(7),
        }
    }
}

/// `now + d`, in whole seconds: the TUF spec's `expires` format is
/// `YYYY-MM-DDTHH:MM:SSZ`, and python-tuf rejects fractional seconds.
pub(crate) fn expiry(d: SignedDuration) -> JiffTimestamp {
    let t = JiffTimestamp::now()
        .checked_add(d)
        .unwrap_or(JiffTimestamp::MAX);
    JiffTimestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The repository's trust configuration (target `palisade/trust.json`, signed via
/// the top-level targets role).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrustConfig {
    pub threshold: u64,
    pub reviewers: Vec<PublicKey>,
    #[serde(default)]
    pub ci_keys: Vec<PublicKey>,
    /// Keys that may propose changes without being reviewers (reviewers may always
    /// propose). A proposal is signed by its author's key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proposers: Vec<PublicKey>,
}

impl TrustConfig {
    pub fn reviewer_names(&self) -> String {
        self.reviewers
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Who signs the `components` role, as the root pins it (field
/// [`ROOT_COMPONENTS_FIELD`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentsPin {
    pub threshold: u64,
    pub keys: Vec<PublicKey>,
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct RepoDir {
    pub root: PathBuf,
}

impl RepoDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn metadata(&self) -> PathBuf {
        self.root.join("metadata")
    }
    pub fn targets(&self) -> PathBuf {
        self.root.join("targets")
    }
    pub fn proposals(&self) -> PathBuf {
        self.root.join("proposals")
    }
    pub fn target_path(&self, name: &str) -> PathBuf {
        self.targets().join(name)
    }
}

/// The keys kept apart from reviewers: root (offline), online (targets, snapshot,
/// timestamp), pipeline (the `components` role). Files `<keys>/{root,online,pipeline}.key`.
#[derive(Debug)]
pub struct OnlineKeys {
    pub online: SigningKey,
    pub pipeline: SigningKey,
}

impl OnlineKeys {
    pub fn load(keys_dir: &Path) -> Result<Self, TrustError> {
        Ok(Self {
            online: SigningKey::read(&keys_dir.join("online.key"))?,
            pipeline: SigningKey::read(&keys_dir.join("pipeline.key"))?,
        })
    }
}

// ---------------------------------------------------------------------------------
// Signing and writing

pub(crate) fn canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, TrustError> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, CanonicalFormatter::new());
    value
        .serialize(&mut ser)
        .map_err(|e| TrustError::Invalid(format!("cannot encode metadata canonically: {e}")))?;
    Ok(buf)
}

/// A TUF signature by `key` over the canonical JSON of `role`.
pub fn tuf_signature<T: Serialize>(role: &T, key: &SigningKey) -> Result<Signature, TrustError> {
    let msg = canonical(role)?;
    Ok(Signature {
        keyid: key_id_decoded(&key.key_id()),
        sig: Decoded::from(key.sign(&msg)),
    })
}

pub(crate) fn signed_by<T: Serialize>(
    role: T,
    keys: &[&SigningKey],
) -> Result<Signed<T>, TrustError> {
    let mut signatures = Vec::new();
    for k in keys {
        signatures.push(tuf_signature(&role, k)?);
    }
    Ok(Signed {
        signed: role,
        signatures,
    })
}

pub(crate) fn to_file_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, TrustError> {
    let mut v = serde_json::to_vec_pretty(value)
        .map_err(|e| TrustError::Invalid(format!("cannot encode metadata: {e}")))?;
    v.push(b'\n');
    Ok(v)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrustError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| TrustError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| TrustError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TrustError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrustError::io(path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrustError> {
    let bytes = std::fs::read(path).map_err(|e| TrustError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrustError::Tuf {
        location: path.display().to_string(),
        detail: e.to_string(),
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn target_for(bytes: &[u8], custom: HashMap<String, serde_json::Value>) -> Target {
    Target {
        length: bytes.len() as u64,
        hashes: Hashes {
            sha256: Decoded::from(Sha256::digest(bytes).to_vec()),
            _extra: HashMap::new(),
        },
        custom,
        _extra: HashMap::new(),
    }
}

pub(crate) fn target_name(name: &str) -> Result<TargetName, TrustError> {
    TargetName::new(name).map_err(|e| TrustError::Invalid(format!("target name {name:?}: {e}")))
}

fn nz(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

fn metafile(version: NonZeroU64, bytes: &[u8]) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: Decoded::from(Sha256::digest(bytes).to_vec()),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    }
}

/// The publisher's view of the repository (its own files, trusted locally).
#[derive(Debug, Clone)]
pub struct RepoState {
    /// The newest root (`metadata/root.json`).
    pub root: Signed<Root>,
    pub targets: Signed<Targets>,
    /// The files' exact bytes: re-serialising would change them (map order), and
    /// snapshot.json pins their hashes.
    pub targets_bytes: Vec<u8>,
    pub delegated_bytes: BTreeMap<String, Vec<u8>>,
    pub snapshot: Signed<Snapshot>,
    pub timestamp: Signed<Timestamp>,
    pub delegated: BTreeMap<String, Signed<Targets>>,
}

impl RepoState {
    pub fn read(repo: &RepoDir) -> Result<Self, TrustError> {
        let md = repo.metadata();
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| TrustError::io(&p, e));
        let parse = |p: PathBuf, b: &[u8]| {
            serde_json::from_slice::<Signed<Targets>>(b).map_err(|e| TrustError::Tuf {
                location: p.display().to_string(),
                detail: e.to_string(),
            })
        };
        let targets_bytes = read(md.join("targets.json"))?;
        let targets = parse(md.join("targets.json"), &targets_bytes)?;
        let mut delegated = BTreeMap::new();
        let mut delegated_bytes = BTreeMap::new();
        if let Some(d) = &targets.signed.delegations {
            for role in &d.roles {
                let path = md.join(format!("{}.json", role.name));
                let bytes = read(path.clone())?;
                delegated.insert(role.name.clone(), parse(path, &bytes)?);
                delegated_bytes.insert(role.name.clone(), bytes);
            }
        }
        Ok(Self {
            root: read_json(&md.join("root.json"))?,
            targets,
            targets_bytes,
            delegated_bytes,
            snapshot: read_json(&md.join("snapshot.json"))?,
            timestamp: read_json(&md.join("timestamp.json"))?,
            delegated,
        })
    }

    /// The trust configuration the newest root signs.
    pub fn trust(&self) -> Result<TrustConfig, TrustError> {
        root_trust(&self.root.signed)
    }

    pub fn delegation(&self, role: &str) -> Option<&DelegatedRole> {
        self.targets
            .signed
            .delegations
            .as_ref()
            .and_then(|d| d.roles.iter().find(|r| r.name == role))
    }
}

/// What a commit changes: a new top-level targets role (signed here with the online
/// key), and delegated roles already signed by their own keys, by role name.
#[derive(Default)]
pub struct Commit {
    pub targets: Option<Targets>,
    pub delegated: Vec<(String, Signed<Targets>)>,
    /// Target files to write before any metadata: (target name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Applies a commit: writes target files, delegated roles, targets, then a new
/// snapshot and timestamp (online key). Clients start from timestamp.json, which is
/// written last, so a half-written commit is never visible as a consistent whole.
pub fn commit(
    repo: &RepoDir,
    state: &RepoState,
    online: &SigningKey,
    change: Commit,
    life: &Lifetimes,
) -> Result<(), TrustError> {
    let md = repo.metadata();
    for (name, bytes) in &change.files {
        write_atomic(&repo.target_path(name), bytes)?;
    }
    let mut delegated: BTreeMap<String, (NonZeroU64, Vec<u8>)> = BTreeMap::new();
    for (name, role) in &state.delegated {
        let bytes = match state.delegated_bytes.get(name) {
            Some(b) => b.clone(),
            None => to_file_bytes(role)?,
        };
        delegated.insert(name.clone(), (role.signed.version, bytes));
    }
    for (name, role) in &change.delegated {
        let bytes = to_file_bytes(role)?;
        write_atomic(&md.join(format!("{name}.json")), &bytes)?;
        delegated.insert(name.clone(), (role.signed.version, bytes));
    }
    let (targets_version, targets_bytes, names) = match change.targets {
        Some(t) => {
            let signed = signed_by(t, &[online])?;
            let bytes = to_file_bytes(&signed)?;
            write_atomic(&md.join("targets.json"), &bytes)?;
            (
                signed.signed.version,
                bytes,
                delegation_names(&signed.signed),
            )
        }
        None => (
            state.targets.signed.version,
            state.targets_bytes.clone(),
            delegation_names(&state.targets.signed),
        ),
    };
    let mut snapshot = Snapshot::new(
        SPEC_VERSION.to_string(),
        nz(state.snapshot.signed.version.get() + 1),
        expiry(life.snapshot),
    );
    snapshot.meta.insert(
        "targets.json".into(),
        metafile(targets_version, &targets_bytes),
    );
    for name in names {
        if let Some((v, bytes)) = delegated.get(&name) {
            snapshot
                .meta
                .insert(format!("{name}.json"), metafile(*v, bytes));
        }
    }
    let snapshot = signed_by(snapshot, &[online])?;
    let snapshot_bytes = to_file_bytes(&snapshot)?;
    write_atomic(&md.join("snapshot.json"), &snapshot_bytes)?;
    let mut timestamp = Timestamp::new(
        SPEC_VERSION.to_string(),
        nz(state.timestamp.signed.version.get() + 1),
        expiry(life.timestamp),
    );
    timestamp.meta.insert(
        "snapshot.json".into(),
        metafile(snapshot.signed.version, &snapshot_bytes),
    );
    let timestamp = signed_by(timestamp, &[online])?;
    write_atomic(&md.join("timestamp.json"), &to_file_bytes(&timestamp)?)
}

fn delegation_names(t: &Targets) -> Vec<String> {
    t.delegations
        .as_ref()
        .map(|d| d.roles.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

fn delegated_role(
    name: &str,
    keys: &[&PublicKey],
    threshold: u64,
    pattern: &str,
) -> Result<DelegatedRole, TrustError> {
    Ok(DelegatedRole {
        name: name.to_string(),
        keyids: keys.iter().map(|k| key_id_decoded(&k.key_id())).collect(),
        threshold: nz(threshold),
        paths: PathSet::Paths(vec![PathPattern::new(pattern)
            .map_err(|e| TrustError::Invalid(format!("path pattern {pattern}: {e}")))?]),
        terminating: true,
        targets: None,
    })
}

/// Sets (or replaces) a delegation in `targets`, with its keys.
pub(crate) fn set_delegation(
    targets: &mut Targets,
    name: &str,
    keys: &[&PublicKey],
    threshold: u64,
    pattern: &str,
) -> Result<(), TrustError> {
    let role = delegated_role(name, keys, threshold, pattern)?;
    let d = targets.delegations.get_or_insert_with(Delegations::new);
    if let Some(existing) = d.roles.iter_mut().find(|r| r.name == name) {
        *existing = role;
    } else {
        d.roles.push(role);
    }
    for k in keys {
        d.keys.insert(key_id_decoded(&k.key_id()), k.key.clone());
    }
    // Keep only keys some role still uses.
    let used: Vec<Decoded<Hex>> = d.roles.iter().flat_map(|r| r.keyids.clone()).collect();
    d.keys.retain(|id, _| used.contains(id));
    Ok(())
}

/// A new version of the top-level targets role, to be re-signed by the online key.
pub(crate) fn next_targets(state: &RepoState, life: &Lifetimes) -> Targets {
    let mut t = state.targets.signed.clone();
    t.version = nz(t.version.get() + 1);
    t.expires = expiry(life.targets);
    for r in t.delegations.iter_mut().flat_map(|d| d.roles.iter_mut()) {
        r.targets = None;
    }
    t
}

/// An empty delegated targets role, to be signed by its own keys.
pub(crate) fn new_delegated_targets(version: u64, life: &Lifetimes) -> Targets {
    Targets::new(
        SPEC_VERSION.to_string(),
        nz(version),
        expiry(life.delegated),
    )
}

// ---------------------------------------------------------------------------------
// Creating a repository

/// Refuses a trust configuration that cannot work or that mixes roles: a threshold
/// outside 1..=reviewers, a key listed twice, a reviewer using one of `forbidden` (the
/// root, online and pipeline keys).
pub(crate) fn check_trust(trust: &TrustConfig, forbidden: &[String]) -> Result<(), TrustError> {
    if trust.threshold == 0 || trust.threshold as usize > trust.reviewers.len() {
        return Err(TrustError::Invalid(format!(
            "threshold {} is impossible with {} reviewer(s); it must be between 1 and the number of reviewers",
            trust.threshold,
            trust.reviewers.len()
        )));
    }
    for (what, keys) in [
        ("reviewer", &trust.reviewers),
        ("CI", &trust.ci_keys),
        ("proposer", &trust.proposers),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for k in keys {
            if !seen.insert(k.key_id()) {
                return Err(TrustError::Invalid(format!(
                    "{what} key {} ({}) is listed twice; each needs their own key",
                    k.key_id(),
                    k.name
                )));
            }
            if forbidden.contains(&k.key_id()) {
                return Err(TrustError::Invalid(format!(
                    "{what} key {} uses a root, online or pipeline key; those keys must be separate",
                    k.name
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn trust_value(trust: &TrustConfig) -> Result<serde_json::Value, TrustError> {
    serde_json::to_value(trust)
        .map_err(|e| TrustError::Invalid(format!("cannot encode the trust configuration: {e}")))
}

/// What `init` produced.
#[derive(Debug)]
pub struct InitReport {
    pub root_json: PathBuf,
    pub keys_dir: PathBuf,
    pub root_key_id: String,
    pub online_key_id: String,
    pub pipeline_key_id: String,
}

/// Creates a new repository: root (root key), targets/snapshot/timestamp (online
/// key), the `components` role (pipeline key) and `palisade/trust.json` with the
/// reviewers, threshold and CI keys. The `policy` delegation (threshold over the
/// reviewers) is written with the first published policy, because TUF needs the
/// delegated role's metadata signed by a threshold of reviewers to exist.
pub fn init(
    repo: &RepoDir,
    keys_dir: &Path,
    trust: &TrustConfig,
    life: &Lifetimes,
) -> Result<InitReport, TrustError> {
    check_trust(trust, &[])?;
    if repo.metadata().join("root.json").exists() {
        return Err(TrustError::Invalid(format!(
            "{} already holds a TUF repository",
            repo.root.display()
        )));
    }
    for k in ["root", "online", "pipeline"] {
        crate::keys::generate(k, keys_dir, false)?;
    }
    let root_key = SigningKey::read(&keys_dir.join("root.key"))?;
    let online = OnlineKeys::load(keys_dir)?;
    check_trust(
        trust,
        &[
            root_key.key_id(),
            online.online.key_id(),
            online.pipeline.key_id(),
        ],
    )?;

    let mut root = Root {
        spec_version: SPEC_VERSION.to_string(),
        consistent_snapshot: false,
        version: NonZeroU64::MIN,
        expires: expiry(life.root),
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::from([
            (ROOT_TRUST_FIELD.to_string(), trust_value(trust)?),
            (
                ROOT_COMPONENTS_FIELD.to_string(),
                serde_json::to_value(ComponentsPin {
                    threshold: 1,
                    keys: vec![online.pipeline.public().clone()],
                })
                .map_err(|e| TrustError::Invalid(format!("cannot encode the pipeline key: {e}")))?,
            ),
        ]),
    };
    let rk = |k: &SigningKey| RoleKeys {
        keyids: vec![key_id_decoded(&k.key_id())],
        threshold: NonZeroU64::MIN,
        _extra: HashMap::new(),
    };
    for k in [&root_key, &online.online] {
        root.keys
            .insert(key_id_decoded(&k.key_id()), k.public().key.clone());
    }
    root.roles.insert(RoleType::Root, rk(&root_key));
    for role in [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
        root.roles.insert(role, rk(&online.online));
    }
    let root = signed_by(root, &[&root_key])?;
    let root_bytes = to_file_bytes(&root)?;
    let md = repo.metadata();
    write_atomic(&md.join("1.root.json"), &root_bytes)?;
    write_atomic(&md.join("root.json"), &root_bytes)?;

    let mut targets = Targets::new(
        SPEC_VERSION.to_string(),
        NonZeroU64::MIN,
        expiry(life.targets),
    );
    set_delegation(
        &mut targets,
        COMPONENTS_ROLE,
        &[online.pipeline.public()],
        1,
        "components/*/*/*",
    )?;
    let components = new_delegated_targets(1, life);
    let components = signed_by(components, &[&online.pipeline])?;

    // Snapshot and timestamp are written by commit() as "previous + 1" (so 2 here:
    // version 1 is never published, which TUF allows).
    let state = RepoState {
        root,
        targets: signed_by(targets.clone(), &[])?,
        targets_bytes: Vec::new(),
        delegated_bytes: BTreeMap::new(),
        snapshot: Signed {
            signed: Snapshot::new(SPEC_VERSION.into(), NonZeroU64::MIN, expiry(life.snapshot)),
            signatures: vec![],
        },
        timestamp: Signed {
            signed: Timestamp::new(SPEC_VERSION.into(), NonZeroU64::MIN, expiry(life.timestamp)),
            signatures: vec![],
        },
        delegated: BTreeMap::new(),
    };
    commit(
        repo,
        &state,
        &online.online,
        Commit {
            targets: Some(targets),
            delegated: vec![(COMPONENTS_ROLE.to_string(), components)],
            files: vec![],
        },
        life,
    )?;
    Ok(InitReport {
        root_json: md.join("root.json"),
        keys_dir: keys_dir.to_path_buf(),
        root_key_id: root_key.key_id(),
        online_key_id: online.online.key_id(),
        pipeline_key_id: online.pipeline.key_id(),
    })
}

// ---------------------------------------------------------------------------------
// Loading (the verifying side)

/// Loads and verifies the repository at `repo` with tough: root chain from the
/// trusted `root` bytes (through the datastore's cached root only when it chains from
/// `root`, [`crate::root_chain`]), thresholds, expiry, and rollback against `datastore`.
pub async fn load(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
) -> Result<tough::Repository, TrustError> {
    let location = repo.root.display().to_string();
    let dir_url = |p: PathBuf| {
        let abs = std::path::absolute(&p).map_err(|e| TrustError::io(&p, e))?;
        url::Url::from_directory_path(&abs).map_err(|()| {
            TrustError::Invalid(format!(
                "{} cannot be expressed as a file URL",
                abs.display()
            ))
        })
    };
    std::fs::create_dir_all(datastore).map_err(|e| TrustError::io(datastore, e))?;
    // Every root, the datastore's cached one included, chains from the pinned root.
    let start = crate::root_chain::trusted_start(repo, root, datastore)?;
    let loaded = RepositoryLoader::new(&start, dir_url(repo.metadata())?, dir_url(repo.targets())?)
        .transport(FilesystemTransport)
        .datastore(datastore)
        .expiration_enforcement(ExpirationEnforcement::Safe)
        .load()
        .await
        .map_err(|e| TrustError::from_tough(&location, e))?;
    crate::root_chain::remember(repo, datastore, &start, loaded.root().signed.version.get())?;
    Ok(loaded)
}

/// The earliest `expires` of the metadata `repo` was verified with (root, timestamp,
/// snapshot, targets and every delegated role loaded): after it, that verification
/// says nothing and must be made again from fresh metadata.
pub fn earliest_expiry(repo: &tough::Repository) -> JiffTimestamp {
    let mut earliest = repo
        .root()
        .signed
        .expires
        .min(repo.timestamp().signed.expires)
        .min(repo.snapshot().signed.expires)
        .min(repo.targets().signed.expires);
    if let Some(delegations) = &repo.targets().signed.delegations {
        for role in &delegations.roles {
            if let Some(t) = &role.targets {
                earliest = earliest.min(t.signed.expires);
            }
        }
    }
    earliest
}

/// Reads a target through tough (length and SHA-256 checked against the signed
/// metadata).
pub async fn read_target(repo: &tough::Repository, name: &str) -> Result<Vec<u8>, TrustError> {
    let tn = target_name(name)?;
    let stream = repo
        .read_target(&tn)
        .await
        .map_err(|e| TrustError::from_tough(name, e))?
        .ok_or_else(|| TrustError::Tuf {
            location: name.to_string(),
            detail: "target not listed in the signed metadata".into(),
        })?;
    stream
        .into_vec()
        .await
        .map_err(|e| match TrustError::from_tough(name, e) {
            TrustError::Tuf { detail, .. } => TrustError::TargetDigest {
                target: name.to_string(),
                detail,
            },
            other => other,
        })
}

/// The target entry (with custom data) a delegated role lists for `name`.
pub fn delegated_target<'a>(
    repo: &'a tough::Repository,
    role: &str,
    name: &str,
) -> Option<&'a Target> {
    let tn = TargetName::new(name).ok()?;
    top_level_role(repo, role)
        .ok()??
        .targets
        .as_ref()?
        .signed
        .targets
        .get(&tn)
}

/// The delegated role `role` as the top-level targets role delegates it. tough's
/// `delegated_role` searches nested delegations too, depth first: a role of that name
/// delegated *inside* another top-level role (signed by whoever that role names)
/// would be found before the pinned one. Palisade's roles are top-level only, and a
/// name delegated twice is refused.
pub fn top_level_role<'a>(
    repo: &'a tough::Repository,
    role: &str,
) -> Result<Option<&'a DelegatedRole>, TrustError> {
    let Some(d) = repo.targets().signed.delegations.as_ref() else {
        return Ok(None);
    };
    let mut found = d.roles.iter().filter(|r| r.name == role);
    let first = found.next();
    if found.next().is_some() {
        return Err(TrustError::DelegationMismatch {
            role: role.to_string(),
            detail: "the targets metadata delegates it more than once".into(),
        });
    }
    Ok(first)
}

/// The delegation for `role`, as the verified top-level targets metadata states it,
/// with each key named from `trust` (or by its key id when unnamed).
pub fn delegation_keys(
    repo: &tough::Repository,
    role: &str,
    trust: &TrustConfig,
) -> Option<(Vec<PublicKey>, u64)> {
    let d = repo.targets().signed.delegations.as_ref()?;
    let r = d.roles.iter().find(|r| r.name == role)?;
    let keys = r
        .keyids
        .iter()
        .filter_map(|id| {
            let key = d.keys.get(id)?;
            let hex_id = hex::encode(id.as_ref());
            let name = trust
                .reviewers
                .iter()
                .find(|p| p.key_id() == hex_id)
                .map_or_else(|| hex_id.chars().take(12).collect(), |p| p.name.clone());
            Some(PublicKey {
                name,
                key: key.clone(),
            })
        })
        .collect();
    Some((keys, r.threshold.get()))
}

/// The trust configuration in a root role's field [`ROOT_TRUST_FIELD`].
pub fn root_trust(root: &Root) -> Result<TrustConfig, TrustError> {
    let value = root.
        _extra
        .get(ROOT_TRUST_FIELD)
        .ok_or_else(|| TrustError::NoRootTrust(format!("root version {} has no such field; a repository made before the reviewers were kept in root must be initialised again", root.version)))?;
    serde_json::from_value(value.clone())
        .map_err(|e| TrustError::NoRootTrust(format!("root version {}: {e}", root.version)))
}

/// The trust configuration of the root that tough verified (chain from the trusted
/// root, thresholds of old and new root keys, expiry).
pub fn verified_trust(repo: &tough::Repository) -> Result<TrustConfig, TrustError> {
    root_trust(&repo.root().signed)
}

/// The reviewers and threshold of delegated role `role`, as the verified targets
/// metadata states them — refused unless they are exactly the reviewers and threshold
/// of the verified root. The targets role is signed by the online key; without this
/// check its holder could delegate `role` to keys of their own.
pub fn reviewer_delegation(
    repo: &tough::Repository,
    role: &str,
    trust: &TrustConfig,
) -> Result<Option<(Vec<PublicKey>, u64)>, TrustError> {
    let Some((keys, threshold)) = delegation_keys(repo, role, trust) else {
        return Ok(None);
    };
    let mismatch = |detail: String| TrustError::DelegationMismatch {
        role: role.to_string(),
        detail,
    };
    if threshold != trust.threshold {
        return Err(mismatch(format!(
            "threshold {threshold}, the root says {}",
            trust.threshold
        )));
    }
    let delegated: std::collections::BTreeSet<String> =
        keys.iter().map(PublicKey::key_id).collect();
    let reviewers: std::collections::BTreeSet<String> =
        trust.reviewers.iter().map(PublicKey::key_id).collect();
    if delegated != reviewers {
        let extra: Vec<&String> = delegated.difference(&reviewers).collect();
        let missing: Vec<&String> = reviewers.difference(&delegated).collect();
        return Err(mismatch(format!(
            "keys not in the root's reviewers: {extra:?}; reviewers missing from the delegation: {missing:?}"
        )));
    }
    Ok(Some((keys, threshold)))
}

/// The pipeline key(s) and threshold the root pins for the `components` role.
pub fn root_components(root: &Root) -> Result<ComponentsPin, TrustError> {
    let value = root._extra.get(ROOT_COMPONENTS_FIELD).ok_or_else(|| {
        TrustError::NoRootTrust(format!(
            "root version {} pins no pipeline key for the `components` role (field `{ROOT_COMPONENTS_FIELD}`); a repository made before the pipeline key was kept in root must be initialised again",
            root.version
        ))
    })?;
    serde_json::from_value(value.clone())
        .map_err(|e| TrustError::NoRootTrust(format!("root version {}: {e}", root.version)))
}

/// The verified `components` role, refused unless the top-level targets metadata
/// delegates it to exactly the key(s) and threshold the verified root pins. The
/// targets role is signed by the online key; without this check its holder could
/// delegate `components` to a key of their own and list any release, a withdrawn one
/// included. `None`: nothing is delegated as `components` (no release exists).
pub fn pinned_components(repo: &tough::Repository) -> Result<Option<&Signed<Targets>>, TrustError> {
    let Some(role) = top_level_role(repo, COMPONENTS_ROLE)? else {
        return Ok(None);
    };
    let pin = root_components(&repo.root().signed)?;
    let mismatch = |detail: String| TrustError::DelegationMismatch {
        role: COMPONENTS_ROLE.to_string(),
        detail,
    };
    if role.threshold.get() != pin.threshold {
        return Err(mismatch(format!(
            "threshold {}, the root pins {}",
            role.threshold, pin.threshold
        )));
    }
    let unnamed = TrustConfig {
        threshold: 0,
        reviewers: vec![],
        ci_keys: vec![],
        proposers: vec![],
    };
    let delegated: std::collections::BTreeSet<String> =
        delegation_keys(repo, COMPONENTS_ROLE, &unnamed)
            .map(|(keys, _)| keys.iter().map(PublicKey::key_id).collect())
            .unwrap_or_default();
    let pinned: std::collections::BTreeSet<String> =
        pin.keys.iter().map(PublicKey::key_id).collect();
    if delegated != pinned || role.keyids.len() != pinned.len() {
        return Err(mismatch(format!(
            "keys {:?}, the root pins the pipeline key(s) {:?}",
            delegated, pinned
        )));
    }
    Ok(role.targets.as_ref())
}

/// Serialises the signed part of a role the way TUF signs it (for reviewers).
pub fn role_signing_bytes<T: Role + Serialize>(role: &T) -> Result<Vec<u8>, TrustError> {
    canonical(role)
}
