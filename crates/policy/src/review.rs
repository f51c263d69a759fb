//! What a reviewer approves: checked from the reviewer's own pinned root, never from
//! what the repository host shows.
//!
//! The repository's files are served by a host the reviewers do not control. Before a
//! reviewer signs, [`review`]:
//! 1. loads the repository through TUF from the root the reviewer holds (the pinned
//!    root, chained to the newest by signatures), and takes the reviewers, proposers
//!    and threshold from that verified root, not from `metadata/root.json` as served;
//! 2. checks the proposal's bytes against the digest its author signed (the statement
//!    names the SHA-256, and the author's signature covers the statement), and that
//!    the author is a reviewer or proposer of the verified root;
//! 3. for a policy, checks that the staged `policy` role (which the reviewer also
//!    signs, for TUF) lists exactly those bytes, and takes the published policy the
//!    diff is shown against from TUF-verified metadata (`verify_policy`), not from
//!    `targets/policy/policy.yaml` as served.
//!
//! [`approve`] then signs exactly what was reviewed: it does not read the proposal
//! again, so the host cannot swap it between the diff and the signature.

use crate::approval::{self, Approved, ChangeKind, StagedProposal};
use crate::keys::SigningKey;
use crate::trusted_policy;
use crate::tuf::{self, RepoDir, TrustConfig, TrustError, POLICY_TARGET};
use std::path::Path;

/// A proposal checked against the reviewer's pinned root, ready to be approved.
#[derive(Debug, Clone)]
pub struct Review {
    pub staged: StagedProposal,
    /// The trust configuration of the root verified from the pinned root.
    pub trust: TrustConfig,
    /// Policy only: the published policy as verified through TUF (version, bytes);
    /// `None` when none is published yet.
    pub published: Option<(u64, Vec<u8>)>,
}

impl Review {
    /// The diff a reviewer reads: the verified published policy against the proposal.
    pub fn diff(&self) -> String {
        let old = self
            .published
            .as_ref()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        approval::line_diff(&old, &String::from_utf8_lossy(&self.staged.payload))
    }
}

fn unverified(what: &'static str, e: TrustError) -> TrustError {
    TrustError::ReviewRefused {
        what,
        source: Box::new(e),
    }
}

/// Checks proposal `id` of `repo` as a reviewer must before approving (module docs).
/// `root` is the root the reviewer trusts; `datastore` is the reviewer's own TUF
/// datastore (rollback protection across reviews).
pub async fn review(
    repo: &RepoDir,
    root: &[u8],
    datastore: &Path,
    id: &str,
) -> Result<Review, TrustError> {
    let loaded = tuf::load(repo, root, datastore)
        .await
        .map_err(|e| unverified("the repository", e))?;
    let trust = tuf::verified_trust(&loaded)?;
    // The payload's SHA-256 is the statement's (checked by `load`), and the statement
    // is the one the author signed, with a key of the verified root.
    let staged = approval::load(repo, id)?;
    approval::check_authorship(
        &staged.proposal.statement,
        Some(&staged.proposal.author_signature),
        &approval::author_keys(&trust),
    )
    .map_err(|e| unverified("the proposal", e))?;
    let published = match staged.proposal.statement.kind {
        ChangeKind::Release => None,
        ChangeKind::Policy => {
            check_staged_role(&staged).map_err(|e| unverified("the proposal", e))?;
            match trusted_policy::verify_policy(repo, root, datastore).await {
                Ok(p) => Some((p.version, p.bytes)),
                Err(TrustError::NoPolicy) => None,
                Err(e) => return Err(unverified("the published policy", e)),
            }
        }
    };
    Ok(Review {
        staged,
        trust,
        published,
    })
}

/// The staged `policy` role must list exactly the proposed file, with the custom data
/// the statement implies: the reviewer's TUF signature over it then covers the same
/// bytes as their approval.
fn check_staged_role(staged: &StagedProposal) -> Result<(), TrustError> {
    let stale = |reason: String| TrustError::StaleProposal {
        proposal: staged.id.clone(),
        reason,
    };
    let role = staged
        .proposal
        .staged_role
        .as_ref()
        .ok_or_else(|| stale("a policy proposal without a staged policy role".into()))?;
    let st = &staged.proposal.statement;
    if st.target != POLICY_TARGET {
        return Err(stale(format!("it names target {:?}", st.target)));
    }
    let expected = tuf::target_for(&staged.payload, trusted_policy::policy_custom(st));
    let name = tuf::target_name(POLICY_TARGET)?;
    if role.targets.len() != 1 || role.targets.get(&name) != Some(&expected) {
        return Err(stale(
            "its staged policy role does not list exactly the proposed file (digest, length and the author's statement)".into(),
        ));
    }
    if role
        .delegations
        .as_ref()
        .is_some_and(|d| !d.roles.is_empty() || !d.keys.is_empty())
    {
        return Err(stale("its staged policy role delegates further".into()));
    }
    Ok(())
}

/// Adds `key`'s approval to the reviewed proposal: a signature over exactly the
/// reviewed statement (and, for a policy, the reviewed staged role).
pub fn approve(review: &Review, key: &SigningKey) -> Result<Approved, TrustError> {
    approval::sign_approval(&review.staged, &review.trust, key)
}
