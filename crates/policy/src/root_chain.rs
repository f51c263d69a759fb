//! The chain of root roles from the pinned root (TUF 1.0 §5.3).
//!
//! A verifier trusts one root: the *pinned* root it was installed with. A newer root
//! is trusted only when every step from the pinned root to it is signed as TUF's
//! "update the root role" requires: root N+1 by a threshold of root N's root keys and
//! by a threshold of its own, with version exactly N+1. That holds for the root a
//! datastore caches as well: the datastore is a file on the instance, and a root
//! planted there (say, self-signed with an attacker's keys) must not become the
//! anchor of the next load.
//!
//! The intermediate roots of a walk come from the datastore's own copies
//! (`<datastore>/palisade-roots/N.root.json`, written after each successful load)
//! and then from the repository (`metadata/N.root.json`). Where they come from does
//! not matter: each one is checked by signature. A missing one makes the cached root
//! unusable, which is refused rather than silently replaced by the pinned root.

use crate::tuf::{RepoDir, TrustError};
use std::path::{Path, PathBuf};
use tough::schema::{Root, Signed};

/// The directory under a datastore holding the roots this verifier has walked.
const CHAIN_DIR: &str = "palisade-roots";

fn parse(bytes: &[u8], what: &str) -> Result<Signed<Root>, TrustError> {
    serde_json::from_slice::<Signed<Root>>(bytes).map_err(|e| TrustError::Tuf {
        location: what.to_string(),
        detail: format!("not a root role: {e}"),
    })
}

fn chain_file(datastore: &Path, version: u64) -> PathBuf {
    datastore
        .join(CHAIN_DIR)
        .join(format!("{version}.root.json"))
}

/// Reads root `version` from the datastore's copies, else from the repository.
fn intermediate(repo: &RepoDir, datastore: &Path, version: u64) -> Result<Vec<u8>, TrustError> {
    let candidates = [
        chain_file(datastore, version),
        repo.metadata().join(format!("{version}.root.json")),
    ];
    for path in &candidates {
        match std::fs::read(path) {
            Ok(b) => return Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(TrustError::io(path, e)),
        }
    }
    Err(TrustError::Signature {
        detail: format!(
            "root version {version} is in neither {} nor the repository, so the datastore's cached root cannot be checked against the pinned root; restore it, or remove {} to start again from the pinned root",
            datastore.join(CHAIN_DIR).display(),
            datastore.join("root.json").display()
        ),
    })
}

/// Checks one step of the chain: `next` is version `prev + 1`, signed by a threshold
/// of `prev`'s root keys and by a threshold of its own.
fn check_step(prev: &Signed<Root>, next: &Signed<Root>, origin: &str) -> Result<(), TrustError> {
    let want = prev.signed.version.get().saturating_add(1);
    let found = next.signed.version.get();
    if found != want {
        return Err(TrustError::Signature {
            detail: format!("{origin} holds root version {found} where version {want} belongs"),
        });
    }
    prev.signed
        .verify_role(next)
        .map_err(|e| TrustError::Signature {
            detail: format!(
                "root version {found} ({origin}) is not signed by a threshold of root version {}'s keys, so it does not chain from the pinned root: {e}",
                prev.signed.version
            ),
        })?;
    next.signed
        .verify_role(next)
        .map_err(|e| TrustError::Signature {
            detail: format!(
                "root version {found} ({origin}) is not signed by a threshold of its own root keys: {e}"
            ),
        })
}

/// The root to start a load from: the pinned root, or the newer root the datastore
/// caches once it is proven to chain from the pinned one. Without the cached root, a
/// repository host that withholds `N.root.json` would walk every verifier back to
/// the pinned root, and with it to reviewers and CI keys a root update removed.
pub(crate) fn trusted_start(
    repo: &RepoDir,
    pinned: &[u8],
    datastore: &Path,
) -> Result<Vec<u8>, TrustError> {
    let pinned_root = parse(pinned, "the trusted root")?;
    let path = datastore.join("root.json");
    let cached = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pinned.to_vec()),
        Err(e) => return Err(TrustError::io(&path, e)),
    };
    let cached_root = parse(&cached, &path.display().to_string())?;
    let target = cached_root.signed.version.get();
    if target <= pinned_root.signed.version.get() {
        return Ok(pinned.to_vec());
    }
    let mut current = pinned_root;
    while current.signed.version.get() < target {
        let version = current.signed.version.get().saturating_add(1);
        let (next, origin) = if version == target {
            (cached_root.clone(), path.display().to_string())
        } else {
            let bytes = intermediate(repo, datastore, version)?;
            (
                parse(&bytes, &format!("root version {version}"))?,
                format!("intermediate root version {version}"),
            )
        };
        check_step(&current, &next, &origin)?;
        current = next;
    }
    Ok(cached)
}

/// After a successful load up to root version `newest`, started from `start` (a
/// root already trusted): keeps a copy of every root from `start + 1` to `newest`,
/// each checked as a step of the chain, so that a later walk from the pinned root does
/// not depend on the repository still serving them.
pub(crate) fn remember(
    repo: &RepoDir,
    datastore: &Path,
    start: &[u8],
    newest: u64,
) -> Result<(), TrustError> {
    let mut current = parse(start, "the start root")?;
    while current.signed.version.get() < newest {
        let version = current.signed.version.get().saturating_add(1);
        let src = repo.metadata().join(format!("{version}.root.json"));
        let bytes = match std::fs::read(&src) {
            Ok(b) => b,
            // Nothing more to keep: the load succeeded without it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TrustError::io(&src, e)),
        };
        let next = parse(&bytes, &src.display().to_string())?;
        check_step(&current, &next, &src.display().to_string())?;
        // Overwritten even when present: a copy planted there earlier is replaced by
        // the one that just verified.
        crate::tuf::write_atomic(&chain_file(datastore, version), &bytes)?;
        current = next;
    }
    Ok(())
}
