//! The entries a verified checkpoint covers, read from their bundles.

use palisade_tlog::checkpoint::VerifiedCheckpoint;
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::tile::{parse_bundle, TileId};
use palisade_tlog::tree::{Frontier, MAX_TREE_SIZE};

/// Entries per bundle (tlog-tiles).
const WIDTH: u64 = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("a log of {size} entries is larger than a tree can be")]
    TooLarge { size: u64 },
    #[error("{got} entry bundle(s) for a log of {size} entries, which needs {want}")]
    BundleCount { want: usize, got: usize, size: u64 },
    #[error("entry bundle {path} is not a bundle: {reason}")]
    BadBundle { path: String, reason: String },
    #[error("entry bundle {path} holds {got} entries; the log of {size} needs {want} from it")]
    BundleWidth {
        path: String,
        want: usize,
        got: usize,
        size: u64,
    },
    #[error("the entries hash to root {computed}, but the checkpoint of size {size} says {checkpoint}: an entry was changed, added or removed")]
    RootMismatch {
        size: u64,
        computed: String,
        checkpoint: String,
    },
}

/// One entry bundle a reader must fetch: its path under the log's URL, and the
/// full tile's path to try when a partial one is gone (tlog-tiles allows either).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleRef {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The entry bundles that hold the entries of a log of `size`, in order.
pub fn bundles_for(size: u64) -> Result<Vec<BundleRef>, LogError> {
    if size > MAX_TREE_SIZE {
        return Err(LogError::TooLarge { size });
    }
    Ok((0..size.div_ceil(WIDTH))
        .filter_map(|n| TileId::in_tree(0, n, size))
        .map(|id| BundleRef {
            path: id.entries_path(),
            fallback: (!id.is_full()).then(|| id.full().entries_path()),
        })
        .collect())
}

/// The entries of the log `checkpoint` covers, from `bundles` (in the order
/// [`bundles_for`] names them), each hashed into the tree again: the root must be
/// the checkpoint's, so every entry returned is proven to be at its index. Also
/// returns the tree's root at every size from 0 to the checkpoint's, which an
/// agent's reported view must be one of.
pub fn entries<'a>(
    checkpoint: &VerifiedCheckpoint,
    bundles: &'a [Vec<u8>],
) -> Result<(Vec<&'a [u8]>, Vec<Hash>), LogError> {
    let size = checkpoint.checkpoint().size();
    let refs = bundles_for(size)?;
    if refs.len() != bundles.len() {
        return Err(LogError::BundleCount {
            want: refs.len(),
            got: bundles.len(),
            size,
        });
    }
    let mut frontier = Frontier::new();
    let mut roots = vec![frontier.root()];
    let mut out = Vec::new();
    for (n, (r, data)) in refs.iter().zip(bundles).enumerate() {
        let parsed = parse_bundle(data).map_err(|e| LogError::BadBundle {
            path: r.path.clone(),
            reason: e.to_string(),
        })?;
        let index = n as u64 * WIDTH;
        let want = usize::try_from((size - index).min(WIDTH)).unwrap_or(usize::MAX);
        if parsed.len() < want {
            return Err(LogError::BundleWidth {
                path: r.path.clone(),
                want,
                got: parsed.len(),
                size,
            });
        }
        for e in parsed.into_iter().take(want) {
            frontier
                .append(leaf_hash(e))
                .map_err(|_| LogError::TooLarge { size })?;
            roots.push(frontier.root());
            out.push(e);
        }
    }
    let computed = frontier.root();
    if computed != *checkpoint.checkpoint().root() {
        return Err(LogError::RootMismatch {
            size,
            computed: computed.to_base64(),
            checkpoint: checkpoint.checkpoint().root().to_base64(),
        });
    }
    Ok((out, roots))
}
