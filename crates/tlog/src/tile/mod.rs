//! C2SP tlog-tiles v0.1.0: the tree served as static tiles of 256 hashes.
//!
//! A tile at level `L` with index `N` holds the hashes of the complete subtrees of
//! height `8·L` numbered `256·N ..`; a full tile holds 256 of them, the rightmost
//! tile of a level is partial while the tree grows. Entry bundles hold the leaf data
//! matching the level-0 tiles.

mod bundle;
mod path;
mod reader;

pub use bundle::{encode_bundle, parse_bundle, BundleError, MAX_ENTRY_LEN};
pub use path::{PathError, PathProblem, TilePath};
pub use reader::{run_root, TileFetcher, TileHashReader, TileReadError};

use crate::hash::HASH_SIZE;
use crate::tree::{stored_hash_index, HashReader, TreeError, MAX_TREE_SIZE};

/// Tile height: each tile spans 8 tree levels.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile, and entries in a full bundle.
pub const TILE_WIDTH: u16 = 256;
/// Bytes in a full tile.
pub const FULL_TILE_BYTES: usize = TILE_WIDTH as usize * HASH_SIZE;
/// Highest tile level the spec allows in a path.
pub const MAX_TILE_LEVEL: u8 = 63;

/// A tile of hashes (`tile/<L>/<N>[.p/<W>]`), or with [`TilePath::Entries`] the entry
/// bundle of the same index and width. Width is 1..=256; 256 means full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    level: u8,
    index: u64,
    width: u16,
}

/// A tile's level or width is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("tile level {level} is above the maximum {MAX_TILE_LEVEL}")]
    Level { level: u8 },
    #[error("tile width {width} is not between 1 and 256")]
    Width { width: u16 },
}

impl TileId {
    /// A tile of `width` hashes (256 = full).
    pub fn new(level: u8, index: u64, width: u16) -> Result<TileId, TileError> {
        if level > MAX_TILE_LEVEL {
            return Err(TileError::Level { level });
        }
        if width == 0 || width > TILE_WIDTH {
            return Err(TileError::Width { width });
        }
        Ok(TileId {
            level,
            index,
            width,
        })
    }

    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of hashes (or entries) in the tile.
    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The same tile coordinates at full width.
    pub fn full(&self) -> TileId {
        TileId {
            width: TILE_WIDTH,
            ..*self
        }
    }

    /// Expected size of the tile's contents in bytes.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * HASH_SIZE
    }

    /// `tile/<L>/<N>[.p/<W>]`, relative to the log prefix.
    pub fn path(&self) -> String {
        TilePath::Hashes(*self).to_string()
    }

    /// `tile/entries/<N>[.p/<W>]` for the bundle of the same index and width.
    pub fn entries_path(&self) -> String {
        TilePath::Entries(*self).to_string()
    }

    /// The tile with these coordinates in a tree of `size` leaves: full, or partial
    /// with `floor(size / 256^L) mod 256` hashes when it is the rightmost. `None` if
    /// the tree has no hashes for it yet.
    pub fn in_tree(level: u8, index: u64, size: u64) -> Option<TileId> {
        let available = level_hashes(level, size);
        let start = index.checked_mul(u64::from(TILE_WIDTH))?;
        let width = available.checked_sub(start)?.min(u64::from(TILE_WIDTH));
        // `width` is at most 256, so the conversion cannot fail.
        TileId::new(level, index, u16::try_from(width).ok()?).ok()
    }
}

/// Leaves under one hash of a tile at `level`: 256^level, if it fits in a u64.
fn leaves_per_hash(level: u8) -> Option<u64> {
    1u64.checked_shl(u32::from(level) * u32::from(TILE_HEIGHT))
}

/// Number of complete subtrees of height `8·level` in a tree of `size` leaves: the
/// hashes a tree of that size has at tile level `level`.
pub fn level_hashes(level: u8, size: u64) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

/// Every tile of a tree of `size` leaves, full and partial, level by level. Partial
/// tiles only exist where `floor(size / 256^L) mod 256` is not zero.
pub fn tiles_for_size(size: u64) -> impl Iterator<Item = TileId> {
    (0..=MAX_TILE_LEVEL)
        .take_while(move |&level| level_hashes(level, size) > 0)
        .flat_map(move |level| {
            let count = level_hashes(level, size).div_ceil(u64::from(TILE_WIDTH));
            (0..count).filter_map(move |index| TileId::in_tree(level, index, size))
        })
}

/// The tiles to publish when the tree grows from `old` to `new` leaves: every tile
/// that became full, and the new partial tile of each level that changed.
pub fn new_tiles(old: u64, new: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=MAX_TILE_LEVEL {
        let (old_n, new_n) = (level_hashes(level, old), level_hashes(level, new));
        if new_n == 0 {
            break;
        }
        if old_n >= new_n {
            continue;
        }
        let first = old_n / u64::from(TILE_WIDTH);
        let last = (new_n - 1) / u64::from(TILE_WIDTH);
        out.extend((first..=last).filter_map(|index| TileId::in_tree(level, index, new)));
    }
    out
}

/// The contents of `tile` (concatenated hashes) from a log's stored hashes.
pub fn tile_contents<R: HashReader + ?Sized>(
    tile: TileId,
    reader: &R,
) -> Result<Vec<u8>, TreeError<R::Error>> {
    // Leaves under the tile's last hash; beyond MAX_TREE_SIZE no stored index exists.
    let leaves = tile
        .index
        .checked_mul(u64::from(TILE_WIDTH))
        .and_then(|first| first.checked_add(u64::from(tile.width)))
        .and_then(|end| end.checked_mul(leaves_per_hash(tile.level)?))
        .unwrap_or(u64::MAX);
    if leaves > MAX_TREE_SIZE {
        return Err(TreeError::TooLarge { size: leaves });
    }
    // From here the level is at most 7, so 8·level fits a stored-hash level.
    let level = tile.level * TILE_HEIGHT;
    let first = tile.index * u64::from(TILE_WIDTH);
    let indexes: Vec<u64> = (first..first + u64::from(tile.width))
        .map(|n| stored_hash_index(level, n))
        .collect();
    let hashes = reader.read_hashes(&indexes).map_err(TreeError::Read)?;
    if hashes.len() != indexes.len() {
        return Err(TreeError::ShortRead {
            want: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes.iter().flat_map(|h| h.0).collect())
}

#[cfg(test)]
mod tests;
