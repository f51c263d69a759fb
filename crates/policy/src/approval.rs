//! Multi-party approval: proposals, reviewers' approvals, and the counting rule.
//!
//! A change (a policy or a component release) is first *proposed*: staged under
//! `R/proposals/<id>/` with an [`ApprovalStatement`] naming exactly what is approved
//! (target, SHA-256, version, author, proposal id). Each reviewer *approves* by
//! signing that statement in a DSSE envelope. The rule Palisade adds on top of TUF
//! (which has no notion of an author) is [`count_approvals`]: only distinct, current
//! reviewers count, each key once, and **never the author**.
//!
//! The author is proven, not claimed: the proposer signs the statement with their own
//! key (a reviewer's or a registered proposer's, [`author_keys`]), under another DSSE
//! payload type than approvals so that one can never stand for the other. The
//! statement's `author` and `author_key_id` are that key's trusted name and id, and
//! [`check_authorship`] is re-run wherever approvals are counted.

use crate::dsse::Envelope;
use crate::keys::{PublicKey, SigningKey};
use crate::tuf::{RepoDir, RepoState, TrustConfig, TrustError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tough::schema::{Signature, Targets};

pub const APPROVAL_PAYLOAD_TYPE: &str = "application/vnd.palisade.approval.v1+json";
pub const APPROVAL_TYPE: &str = "https://palisade.dev/approval/v1";
/// DSSE payload type of the author's signature over a statement.
pub const PROPOSAL_PAYLOAD_TYPE: &str = "application/vnd.palisade.proposal.v1+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Policy,
    Release,
}

/// What a reviewer signs: the change, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalStatement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub kind: ChangeKind,
    pub proposal: String,
    /// The TUF target name the change publishes.
    pub target: String,
    /// Hex SHA-256 of the target file's bytes.
    pub sha256: String,
    /// Policy version (decimal) or component version.
    pub version: String,
    /// For a policy: `Policy::digest()` (`sha256:…` over its canonical JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The trusted name of the key that signed the proposal.
    pub author: String,
    /// The id of that key (always present in statements made by `propose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_key_id: Option<String>,
    /// Release only: the release is approved as a rollback from this version, the
    /// one downgrade it allows ([`crate::rollback`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_from: Option<String>,
}

/// A staged change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub statement: ApprovalStatement,
    /// The author's DSSE signature over `statement` ([`PROPOSAL_PAYLOAD_TYPE`]).
    pub author_signature: Envelope,
    pub created: String,
    /// File name of the payload inside the proposal directory.
    pub file: String,
    /// Policy only: the `policy` role metadata that reviewers also sign (TUF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_role: Option<Targets>,
    /// Release only: the DSSE test attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Envelope>,
}

/// One reviewer's approval as stored in the proposal directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub envelope: Envelope,
    /// Policy only: the reviewer's TUF signature over the staged `policy` role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_signature: Option<Signature>,
}

/// A proposal loaded from disk.
#[derive(Debug, Clone)]
pub struct StagedProposal {
    pub id: String,
    pub dir: PathBuf,
    pub proposal: Proposal,
    pub payload: Vec<u8>,
}

fn check_id(id: &str) -> Result<(), TrustError> {
    let ok = !id.is_empty()
        && id.len() <= 80
        && !id.starts_with(['-', '.'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TrustError::NoProposal(id.chars().take(80).collect()))
    }
}

/// The keys that may author a change: every reviewer's and every registered
/// proposer's.
pub fn author_keys(trust: &TrustConfig) -> Vec<PublicKey> {
    trust
        .reviewers
        .iter()
        .chain(&trust.proposers)
        .cloned()
        .collect()
}

/// The author a proposal signed with `key` records: the trusted name and id of that
/// key. A key that is neither a reviewer's nor a registered proposer's cannot propose.
pub fn author_of(trust: &TrustConfig, key: &SigningKey) -> Result<(String, String), TrustError> {
    let key_id = key.key_id();
    author_keys(trust)
        .into_iter()
        .find(|k| k.key_id() == key_id)
        .map(|k| (k.name, key_id.clone()))
        .ok_or_else(|| TrustError::NotAnAuthor {
            key_id,
            name: key.public().name.clone(),
            allowed: author_keys(trust)
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Checks that `signature` is the author's own signature over exactly `expected`:
/// by the key `expected.author_key_id` names, which must be among `authors` under the
/// name `expected.author`.
pub fn check_authorship(
    expected: &ApprovalStatement,
    signature: Option<&Envelope>,
    authors: &[PublicKey],
) -> Result<(), TrustError> {
    let unproven = |reason: String| TrustError::AuthorUnproven {
        author: expected.author.clone(),
        reason,
    };
    let key_id = expected
        .author_key_id
        .as_deref()
        .ok_or_else(|| unproven("the statement names no author key".into()))?;
    let key = authors
        .iter()
        .find(|k| k.key_id() == key_id)
        .ok_or_else(|| unproven(format!("key {key_id} is not a reviewer's or proposer's")))?;
    if key.name != expected.author {
        return Err(unproven(format!(
            "key {key_id} belongs to {}, not to {}",
            key.name, expected.author
        )));
    }
    let signature =
        signature.ok_or_else(|| unproven("the author's signature is missing".into()))?;
    let signed = signature
        .payload_bytes(PROPOSAL_PAYLOAD_TYPE)
        .map_err(|e| unproven(e.to_string()))?;
    if serde_json::from_slice::<ApprovalStatement>(&signed)
        .ok()
        .as_ref()
        != Some(expected)
    {
        return Err(unproven(
            "the author signed another statement than this one".into(),
        ));
    }
    if !signature
        .verified_by(std::slice::from_ref(key))
        .contains(key_id)
    {
        return Err(unproven(format!(
            "the signature does not verify under key {key_id}"
        )));
    }
    Ok(())
}

/// A fresh proposal id: `<kind>-<version>-<8 hex>`.
pub fn new_proposal_id(kind: ChangeKind, version: &str, sha256: &str) -> String {
    let now = jiff::Timestamp::now();
    let salt =
        crate::tuf::sha256_hex(format!("{sha256}|{version}|{}", now.as_nanosecond()).as_bytes());
    let kind_name = match kind {
        ChangeKind::Policy => "policy",
        ChangeKind::Release => "release",
    };
    let version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("{kind_name}-{version}-{}", salt.get(..8).unwrap_or("0"))
}

/// Writes a new proposal directory for `statement` (whose `proposal` is the id),
/// signed by `author` (whose key the statement must name).
pub fn stage(
    repo: &RepoDir,
    statement: ApprovalStatement,
    author: &SigningKey,
    file: &str,
    payload: &[u8],
    staged_role: Option<Targets>,
    attestation: Option<Envelope>,
) -> Result<StagedProposal, TrustError> {
    let now = jiff::Timestamp::now();
    let id = statement.proposal.clone();
    check_id(&id)?;
    if file.contains(['/', '\\']) || file.starts_with('.') || file.is_empty() {
        return Err(TrustError::Invalid(format!(
            "file name {file:?} must be a plain name"
        )));
    }
    let dir = repo.proposals().join(&id);
    std::fs::create_dir_all(dir.join("approvals")).map_err(|e| TrustError::io(&dir, e))?;
    if statement.author_key_id.as_deref() != Some(author.key_id().as_str()) {
        return Err(TrustError::Invalid(format!(
            "the statement names author key {:?}, but it is signed with {}",
            statement.author_key_id,
            author.key_id()
        )));
    }
    let author_signature = Envelope::sign(
        PROPOSAL_PAYLOAD_TYPE,
        &crate::tuf::canonical(&statement)?,
        author,
    );
    let proposal = Proposal {
        statement,
        author_signature,
        created: now.to_string(),
        file: file.to_string(),
        staged_role,
        attestation,
    };
    crate::tuf::write_atomic(&dir.join(file), payload)?;
    crate::tuf::write_atomic(
        &dir.join("proposal.json"),
        &crate::tuf::to_file_bytes(&proposal)?,
    )?;
    Ok(StagedProposal {
        id,
        dir,
        proposal,
        payload: payload.to_vec(),
    })
}

/// Loads proposal `id` of `repo`, checking that its payload still has the staged
/// digest.
pub fn load(repo: &RepoDir, id: &str) -> Result<StagedProposal, TrustError> {
    check_id(id)?;
    let dir = repo.proposals().join(id);
    let pj = dir.join("proposal.json");
    if !pj.exists() {
        return Err(TrustError::NoProposal(id.to_string()));
    }
    let proposal: Proposal = crate::tuf::read_json(&pj)?;
    if proposal.statement.proposal != id || proposal.file.contains(['/', '\\']) {
        return Err(TrustError::StaleProposal {
            proposal: id.into(),
            reason: "proposal.json does not describe this proposal".into(),
        });
    }
    let payload_path = dir.join(&proposal.file);
    let payload = std::fs::read(&payload_path).map_err(|e| TrustError::io(&payload_path, e))?;
    let found = crate::tuf::sha256_hex(&payload);
    if found != proposal.statement.sha256 {
        return Err(TrustError::StaleProposal {
            proposal: id.into(),
            reason: format!(
                "its file changed after it was proposed (sha256:{found}, proposed sha256:{})",
                proposal.statement.sha256
            ),
        });
    }
    Ok(StagedProposal {
        id: id.to_string(),
        dir,
        proposal,
        payload,
    })
}

/// The approvals stored with a proposal (unverified; [`count_approvals`] decides).
pub fn stored_approvals(p: &StagedProposal) -> Result<Vec<Approval>, TrustError> {
    let dir = p.dir.join("approvals");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrustError::io(&dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        out.push(crate::tuf::read_json(&path)?);
    }
    Ok(out)
}

/// Outcome of an approval.
#[derive(Debug, Clone)]
pub struct Approved {
    pub reviewer: String,
    pub key_id: String,
    pub path: PathBuf,
}

/// Adds `key`'s approval to proposal `id`. Refuses the author's key, a key that is
/// not a current reviewer, and a second approval by the same key.
///
/// The reviewers and authors are read from the repository's own `root.json`, as the
/// host serves it: reviewers approve through [`crate::review`] instead, which checks
/// the proposal against their pinned root.
pub fn approve(repo: &RepoDir, id: &str, key: &SigningKey) -> Result<Approved, TrustError> {
    let staged = load(repo, id)?;
    let state = RepoState::read(repo)?;
    let trust = state.trust()?;
    let st = &staged.proposal.statement;
    // A reviewer approves only a change whose author is proven.
    check_authorship(
        st,
        Some(&staged.proposal.author_signature),
        &author_keys(&trust),
    )?;
    sign_approval(&staged, &trust, key)
}

/// Signs `staged` as reviewer `key` of `trust`, whose authorship the caller has
/// checked against `trust`. Refuses the author's key, a key that is not a reviewer of
/// `trust`, and a second approval by the same key.
pub fn sign_approval(
    staged: &StagedProposal,
    trust: &TrustConfig,
    key: &SigningKey,
) -> Result<Approved, TrustError> {
    let id = staged.id.as_str();
    let st = &staged.proposal.statement;
    let key_id = key.key_id();
    let reviewer = trust
        .reviewers
        .iter()
        .find(|r| r.key_id() == key_id)
        .ok_or_else(|| TrustError::NotAReviewer {
            key_id: key_id.clone(),
            name: key.public().name.clone(),
            reviewers: trust.reviewer_names(),
        })?;
    if st.author_key_id.as_deref() == Some(key_id.as_str()) || reviewer.name == st.author {
        return Err(TrustError::AuthorCannotApprove {
            author: st.author.clone(),
        });
    }
    let path = staged.dir.join("approvals").join(format!("{key_id}.json"));
    if path.exists() {
        return Err(TrustError::AlreadyApproved {
            name: reviewer.name.clone(),
            proposal: id.to_string(),
        });
    }
    let body = crate::tuf::canonical(st)?;
    let envelope = Envelope::sign(APPROVAL_PAYLOAD_TYPE, &body, key);
    let role_signature = match &staged.proposal.staged_role {
        Some(role) => Some(crate::tuf::tuf_signature(role, key)?),
        None => None,
    };
    let approval = Approval {
        envelope,
        role_signature,
    };
    crate::tuf::write_atomic(&path, &crate::tuf::to_file_bytes(&approval)?)?;
    Ok(Approved {
        reviewer: reviewer.name.clone(),
        key_id,
        path,
    })
}

/// Palisade's approval rule. Returns the distinct reviewers whose valid signature
/// over exactly `expected` counts, or why there are not `threshold` of them.
///
/// Not counted: envelopes over another statement, signatures by keys that are not
/// in `reviewers` (e.g. a removed reviewer), the author's key (by key id or name),
/// and any repeat of a key already counted.
pub fn count_approvals(
    expected: &ApprovalStatement,
    envelopes: &[Envelope],
    reviewers: &[PublicKey],
    threshold: u64,
) -> Result<Vec<PublicKey>, TrustError> {
    let mut counted: BTreeMap<String, PublicKey> = BTreeMap::new();
    let mut ignored = Vec::new();
    for env in envelopes {
        let statement = env
            .payload_bytes(APPROVAL_PAYLOAD_TYPE)
            .ok()
            .and_then(|b| serde_json::from_slice::<ApprovalStatement>(&b).ok());
        if statement.as_ref() != Some(expected) {
            ignored.push("an approval of a different statement".to_string());
            continue;
        }
        let by = env.verified_by(reviewers);
        if by.is_empty() {
            ignored.push("an approval not signed by any current reviewer".to_string());
        }
        for id in by {
            let Some(key) = reviewers.iter().find(|r| r.key_id() == id) else {
                continue;
            };
            if expected.author_key_id.as_deref() == Some(id.as_str()) || key.name == expected.author
            {
                ignored.push(format!("{} is the author", key.name));
            } else if let std::collections::btree_map::Entry::Vacant(slot) = counted.entry(id) {
                slot.insert(key.clone());
            } else {
                ignored.push(format!(
                    "{} approved more than once (counted once)",
                    key.name
                ));
            }
        }
    }
    if (counted.len() as u64) < threshold {
        ignored.dedup();
        return Err(TrustError::NotEnoughApprovals {
            counted: counted.len(),
            required: threshold,
            ignored,
        });
    }
    let mut out: Vec<PublicKey> = counted.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A simple line diff (longest common subsequence), `-`/`+`/` ` prefixed.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Inputs are policy files (hundreds of lines): O(n·m) is fine, but bound it.
    if a.len().saturating_mul(b.len()) > 25_000_000 {
        return format!(
            "(files too large to diff: {} and {} lines)\n",
            a.len(),
            b.len()
        );
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

/// Reads a proposal's payload path (for showing the diff).
pub fn payload_path(p: &StagedProposal) -> PathBuf {
    p.dir.join(&p.proposal.file)
}
