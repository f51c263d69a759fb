//! Stored-hash indexing: the position of the hash of the complete subtree
//! `(level, n)` — leaves `n·2^level .. (n+1)·2^level` — in append order.

/// Largest tree size the stored-hash functions accept. Stored-hash indexes are about
/// twice the tree size, so this keeps every index computation inside `u64`.
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// Number of hashes stored for the first `leaves` leaves: each leaf `k` stores its own
/// hash plus one per complete subtree it closes (`trailing_ones(k)`), which sums to
/// `2·leaves − popcount(leaves)`.
///
/// Like every function here it is exact for trees up to [`MAX_TREE_SIZE`]; outside
/// that domain the arithmetic wraps instead of panicking, and callers that take sizes
/// from input check them against the bound first.
pub(crate) fn hashes_before_leaf(leaves: u64) -> u64 {
    leaves
        .wrapping_mul(2)
        .wrapping_sub(u64::from(leaves.count_ones()))
}

/// Index of the stored hash for the subtree at `level` (0 = leaves) numbered `n`
/// within that level. That hash is stored while appending the subtree's last leaf,
/// `level` positions after the leaf's own hash.
///
/// Exact while `(n + 1) << level` is at most [`MAX_TREE_SIZE`].
pub fn stored_hash_index(level: u8, n: u64) -> u64 {
    let last_leaf = n
        .wrapping_add(1)
        .checked_shl(u32::from(level))
        .unwrap_or(0)
        .wrapping_sub(1);
    hashes_before_leaf(last_leaf).wrapping_add(u64::from(level))
}

/// Inverse of [`stored_hash_index`]: the `(level, n)` stored at `index`.
/// Exact for indexes below `stored_hash_count(MAX_TREE_SIZE)`.
pub fn split_stored_hash_index(index: u64) -> (u8, u64) {
    // Leaf `m`'s hashes start at 2m − popcount(m) ≥ 2m − 64, so the leaf that
    // stored `index` is at most 32 steps past index/2.
    let mut leaf = index / 2;
    for _ in 0..64 {
        if hashes_before_leaf(leaf + 1) > index {
            break;
        }
        leaf += 1;
    }
    // The offset within a leaf's block is its number of trailing ones, at most 63.
    let level = index.wrapping_sub(hashes_before_leaf(leaf)).min(63) as u8;
    (level, leaf >> level)
}

/// Number of stored hashes for a tree of `size` leaves: the next free index.
pub fn stored_hash_count(size: u64) -> u64 {
    hashes_before_leaf(size)
}

/// Splits `lo..hi` into the complete subtrees that cover it, left to right, as
/// stored-hash indexes. Each subtree is the largest one aligned at its start that
/// still fits, which is the RFC 6962 shape whenever `lo..hi` is a node of the tree
/// or a range that a proof asks for.
pub(crate) fn subtree_indexes(mut lo: u64, hi: u64, out: &mut Vec<u64>) {
    while lo < hi {
        let fit = 63 - (hi - lo).leading_zeros();
        let align = if lo == 0 { 63 } else { lo.trailing_zeros() };
        let level = fit.min(align);
        out.push(stored_hash_index(level as u8, lo >> level));
        lo += 1 << level;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_append_order() {
        // Leaves 0,1 then node(0..2), leaf 2, leaf 3, node(2..4), node(0..4), leaf 4...
        let order = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (i, &(level, n)) in order.iter().enumerate() {
            assert_eq!(stored_hash_index(level, n), i as u64);
            assert_eq!(split_stored_hash_index(i as u64), (level, n));
        }
    }

    #[test]
    fn split_inverts_index_everywhere() {
        for index in 0..20_000u64 {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index);
        }
        for level in 0..40u8 {
            for n in [0u64, 1, 2, 1000, (1 << 20) + 3] {
                let index = stored_hash_index(level, n);
                assert_eq!(split_stored_hash_index(index), (level, n));
            }
        }
        let big = stored_hash_count(MAX_TREE_SIZE) - 1;
        assert_eq!(stored_hash_index(62, 0), big);
        assert_eq!(split_stored_hash_index(big), (62, 0));
    }

    #[test]
    fn counts() {
        assert_eq!(stored_hash_count(0), 0);
        assert_eq!(stored_hash_count(1), 1);
        assert_eq!(stored_hash_count(2), 3);
        assert_eq!(stored_hash_count(3), 4);
        assert_eq!(stored_hash_count(4), 7);
    }
}
