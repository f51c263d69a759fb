//! Computing what a log stores and serves from its stored hashes: the hashes to
//! store on append, tree roots, and RFC 9162 §2.1.3.1 / §2.1.4.1 proofs.
//!
//! Every function first plans which stored hashes it needs, reads them in one call
//! (a tile-backed reader fetches each tile once), then folds them.

use std::ops::Range;

use super::index::{stored_hash_index, subtree_indexes, MAX_TREE_SIZE};
use super::HashReader;
use crate::hash::{empty_root, leaf_hash, node_hash, Hash};

/// Why a root or proof could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError<E> {
    /// Inclusion asked for a leaf the tree does not have.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// Consistency asked from a larger tree to a smaller one.
    #[error("no consistency proof from size {old} to the smaller size {new}")]
    OldLargerThanNew { old: u64, new: u64 },
    /// A size beyond [`MAX_TREE_SIZE`].
    #[error("tree size {size} exceeds the supported maximum {MAX_TREE_SIZE}")]
    TooLarge { size: u64 },
    /// The reader broke its contract of one hash per index.
    #[error("hash reader returned {got} hashes for {want} indexes")]
    ShortRead { want: usize, got: usize },
    /// The reader failed.
    #[error("reading stored hashes failed: {0}")]
    Read(#[source] E),
}

fn check_size<E>(size: u64) -> Result<(), TreeError<E>> {
    if size > MAX_TREE_SIZE {
        return Err(TreeError::TooLarge { size });
    }
    Ok(())
}

/// Hashes to append to the store when adding leaf number `n` with contents `data`:
/// its leaf hash, then the root of each complete subtree it closes, in order.
/// They go at stored indexes `stored_hash_count(n)..stored_hash_count(n + 1)`.
pub fn stored_hashes_for_record<R: HashReader + ?Sized>(
    n: u64,
    data: &[u8],
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    stored_hashes_for_leaf(n, leaf_hash(data), reader)
}

/// [`stored_hashes_for_record`] for an already hashed leaf.
pub fn stored_hashes_for_leaf<R: HashReader + ?Sized>(
    n: u64,
    leaf: Hash,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_size(n.saturating_add(1))?;
    // Leaf n closes one subtree per trailing one bit of n; at level i the left
    // sibling is the complete subtree just before it.
    let closes = n.trailing_ones() as u8;
    let siblings: Vec<u64> = (0..closes)
        .map(|level| stored_hash_index(level, (n >> level) - 1))
        .collect();
    let siblings = read(reader, &siblings)?;
    let mut out = Vec::with_capacity(siblings.len() + 1);
    let mut h = leaf;
    out.push(h);
    for left in &siblings {
        h = node_hash(left, &h);
        out.push(h);
    }
    Ok(out)
}

/// RFC 6962 §2.1 root hash of the first `size` leaves.
pub fn tree_hash<R: HashReader + ?Sized>(
    size: u64,
    reader: &R,
) -> Result<Hash, TreeError<R::Error>> {
    check_size(size)?;
    if size == 0 {
        return Ok(empty_root());
    }
    let hashes = read_ranges(reader, std::slice::from_ref(&(0..size)))?;
    Ok(hashes.into_iter().next().unwrap_or_else(empty_root))
}

/// RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of `size` leaves,
/// ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_size(size)?;
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0..size, &mut ranges);
    read_ranges(reader, &ranges)
}

/// RFC 9162 §2.1.4.1 consistency proof from the tree of `old` leaves to the tree of
/// `new` leaves. Empty when `old == new`, and when `old == 0` as tlog-witness
/// requires (every tree extends the empty one).
pub fn consistency_proof<R: HashReader + ?Sized>(
    old: u64,
    new: u64,
    reader: &R,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    check_size(new)?;
    if old > new {
        return Err(TreeError::OldLargerThanNew { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    consistency_ranges(old, 0..new, true, &mut ranges);
    read_ranges(reader, &ranges)
}

/// Largest power of two strictly below `n` (n ≥ 2): RFC 6962's split point `k`.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// RFC 9162 §2.1.3.1 `PATH(m, D[lo:hi])`, as the leaf ranges whose roots form it.
fn inclusion_ranges(m: u64, node: Range<u64>, out: &mut Vec<Range<u64>>) {
    if node.end - node.start <= 1 {
        return;
    }
    let mid = node.start + split(node.end - node.start);
    if m < mid {
        inclusion_ranges(m, node.start..mid, out);
        out.push(mid..node.end);
    } else {
        inclusion_ranges(m, mid..node.end, out);
        out.push(node.start..mid);
    }
}

/// RFC 9162 §2.1.4.1 `SUBPROOF(m, D[lo:hi], b)` with `m` an absolute leaf count.
fn consistency_ranges(m: u64, node: Range<u64>, whole: bool, out: &mut Vec<Range<u64>>) {
    if m == node.end {
        if !whole {
            out.push(node);
        }
        return;
    }
    let mid = node.start + split(node.end - node.start);
    if m <= mid {
        consistency_ranges(m, node.start..mid, whole, out);
        out.push(mid..node.end);
    } else {
        consistency_ranges(m, mid..node.end, false, out);
        out.push(node.start..mid);
    }
}

/// Reads the stored hashes under each range in one call and folds each range's
/// complete subtrees, right to left, into the range's RFC 6962 root.
fn read_ranges<R: HashReader + ?Sized>(
    reader: &R,
    ranges: &[Range<u64>],
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    let mut indexes = Vec::new();
    let mut counts = Vec::with_capacity(ranges.len());
    for range in ranges {
        let before = indexes.len();
        subtree_indexes(range.start, range.end, &mut indexes);
        counts.push(indexes.len() - before);
    }
    let hashes = read(reader, &indexes)?;
    let mut rest = hashes.as_slice();
    let mut out = Vec::with_capacity(ranges.len());
    for count in counts {
        let (mine, tail) = rest.split_at(count.min(rest.len()));
        rest = tail;
        if let Some((last, init)) = mine.split_last() {
            out.push(init.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)));
        }
    }
    Ok(out)
}

fn read<R: HashReader + ?Sized>(
    reader: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = reader.read_hashes(indexes).map_err(TreeError::Read)?;
    if hashes.len() != indexes.len() {
        return Err(TreeError::ShortRead {
            want: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}
