//! The RFC 6962 Merkle tree over the log: where its hashes are stored, how roots and
//! proofs are computed from them, and how proofs are verified.
//!
//! Storage follows the layout of Go's `golang.org/x/mod/sumdb/tlog`: every hash of
//! every complete subtree gets one *stored-hash index*, assigned in the order the
//! hashes become known while appending. Appending leaf `n` stores its leaf hash and
//! then the roots of the subtrees that leaf completes, so the store only ever grows
//! at its end, and any root or proof is a function of O(log n) stored hashes.

mod frontier;
mod index;
mod prove;
mod verify;

pub use frontier::{Frontier, TreeFull};
pub(crate) use index::subtree_indexes;
pub use index::{split_stored_hash_index, stored_hash_count, stored_hash_index, MAX_TREE_SIZE};
pub use prove::{
    consistency_proof, inclusion_proof, stored_hashes_for_leaf, stored_hashes_for_record,
    tree_hash, TreeError,
};
pub use verify::{verify_consistency, verify_inclusion, ProofError, MAX_PROOF_LEN};

use crate::hash::Hash;

/// Reads hashes from wherever a log stores them, by stored-hash index.
pub trait HashReader {
    /// Why a read failed (I/O, missing data, a tile that failed authentication, ...).
    type Error;

    /// Returns exactly one hash per index, in the order asked. Indexes need not be
    /// sorted and may repeat.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error>;
}

/// A stored hash is missing from an in-memory store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored hash {index} is not in the store (it holds {len})")]
pub struct MissingHash {
    pub index: u64,
    pub len: u64,
}

/// An in-memory store: the slice position is the stored-hash index.
impl HashReader for [Hash] {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or(MissingHash {
                        index,
                        len: self.len() as u64,
                    })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    type Error = MissingHash;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        self.as_slice().read_hashes(indexes)
    }
}

impl<R: HashReader + ?Sized> HashReader for &R {
    type Error = R::Error;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, R::Error> {
        (**self).read_hashes(indexes)
    }
}

#[cfg(test)]
mod tests;
