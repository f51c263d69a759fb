//! Proof verification, RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).
//!
//! These need no stored hashes and accept any `u64` sizes: they are what clients,
//! agents and witnesses run on proofs from elsewhere.

use crate::hash::{node_hash, Hash};

/// Longest proof accepted. A tree of at most 2^64 leaves has depth 64, and a
/// consistency proof adds at most one hash for the old root's subtree; anything
/// longer is malformed, and the bound caps the work an input can cause.
pub const MAX_PROOF_LEN: usize = 65;

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The old tree is larger than the new one.
    #[error("old size {old} is larger than new size {new}")]
    OldLargerThanNew { old: u64, new: u64 },
    /// A proof was given where none is needed (old size 0 or equal sizes).
    #[error("proof from size {old} to size {new} must be empty, got {len} hashes")]
    NotEmpty { old: u64, new: u64, len: usize },
    /// The proof has too few or too many hashes for these sizes.
    #[error("proof has the wrong number of hashes ({len}) for these tree sizes")]
    WrongLength { len: usize },
    /// The proof does not lead to the expected root(s).
    #[error("proof does not match the root hash")]
    RootMismatch,
}

/// RFC 9162 §2.1.3.2: is `leaf` (a leaf *hash*) at `index` in the tree of `size`
/// leaves with root `root`?
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength { len: proof.len() });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength { len: proof.len() });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            // Skip the levels where this node is the last one and has no sibling.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength { len: proof.len() });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: does the tree of `new` leaves with root `new_root` extend the
/// tree of `old` leaves with root `old_root`?
///
/// Two cases need no hashing and must come with an empty proof: `old == new`
/// (the roots must then be equal) and `old == 0` (every tree extends the empty tree,
/// so `old_root` is not looked at), as tlog-witness specifies.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OldLargerThanNew { old, new });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(ProofError::NotEmpty {
                old,
                new,
                len: proof.len(),
            });
        }
        if old == new && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    if proof.is_empty() || proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength { len: proof.len() });
    }

    // Step 2: when the old tree is a complete subtree its root is not in the proof.
    let seed;
    let (first, rest) = if old.is_power_of_two() {
        seed = *old_root;
        (&seed, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(ProofError::WrongLength { len: 0 }),
        }
    };

    let mut f = old - 1;
    let mut s = new - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength { len: proof.len() });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength { len: proof.len() });
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}
