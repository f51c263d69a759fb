//! The right edge of the tree, kept in memory by a sequencer.
//!
//! A tree of `size` leaves is a row of complete subtrees, one per set bit of `size`,
//! largest first. Keeping only their roots (at most 64 hashes) is enough to append
//! leaves, produce the hashes to store, and compute the root — no reads needed.

use super::index::{subtree_indexes, MAX_TREE_SIZE};
use super::prove::TreeError;
use super::HashReader;
use crate::hash::{empty_root, node_hash, Hash};

/// The tree already holds [`MAX_TREE_SIZE`] leaves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tree of size {size} is full")]
pub struct TreeFull {
    pub size: u64,
}

/// Roots of the complete subtrees that make up a tree, left to right.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    roots: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a stored tree of `size` leaves from its stored hashes.
    pub fn from_stored<R: HashReader + ?Sized>(
        size: u64,
        reader: &R,
    ) -> Result<Frontier, TreeError<R::Error>> {
        if size > MAX_TREE_SIZE {
            return Err(TreeError::TooLarge { size });
        }
        let mut indexes = Vec::new();
        subtree_indexes(0, size, &mut indexes);
        if indexes.is_empty() {
            return Ok(Frontier::new());
        }
        let roots = reader.read_hashes(&indexes).map_err(TreeError::Read)?;
        if roots.len() != indexes.len() {
            return Err(TreeError::ShortRead {
                want: indexes.len(),
                got: roots.len(),
            });
        }
        Ok(Frontier { size, roots })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// RFC 6962 root of the whole tree.
    pub fn root(&self) -> Hash {
        match self.roots.split_last() {
            None => empty_root(),
            Some((last, init)) => init.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
        }
    }

    /// Appends a leaf *hash* and returns the hashes to store for it, exactly as
    /// [`stored_hashes_for_leaf`](super::stored_hashes_for_leaf) would.
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<Hash>, TreeFull> {
        if self.size >= MAX_TREE_SIZE {
            return Err(TreeFull { size: self.size });
        }
        // Each trailing one bit of the old size is a complete subtree of the same
        // height as the one being built, so the new leaf merges with it.
        let mut stored = vec![leaf];
        let mut h = leaf;
        for _ in 0..self.size.trailing_ones() {
            match self.roots.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break,
            }
            stored.push(h);
        }
        self.roots.push(h);
        self.size += 1;
        Ok(stored)
    }

    /// The subtree roots, largest first.
    pub fn roots(&self) -> &[Hash] {
        &self.roots
    }
}
