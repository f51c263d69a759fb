//! Reading stored hashes out of tiles fetched from untrusted storage, authenticated
//! against a trusted tree size and root (the design of Go's `tlog.TileHashReader`).
//!
//! Every fetched tile is checked before any hash from it is returned: the rightmost
//! (partial) tile of each level must recompute the trusted root, and every full tile
//! must hash to its entry in the tile one level up. So a hash this reader returns is
//! proven to be in the tree the root commits to.

use std::collections::HashMap;

use super::{TileId, MAX_TILE_LEVEL, TILE_HEIGHT, TILE_WIDTH};
use crate::hash::{empty_root, node_hash, Hash, HASH_SIZE};
use crate::tree::{
    split_stored_hash_index, stored_hash_count, subtree_indexes, HashReader, MAX_TREE_SIZE,
};

/// Fetches tile contents from wherever a log publishes them.
pub trait TileFetcher {
    type Error;

    /// Returns the contents of each tile, in order, each exactly `tile.byte_len()`
    /// bytes. A fetcher may serve a partial tile from the full tile of the same
    /// index, truncated, once the partial one is gone (tlog-tiles allows deleting it).
    fn fetch_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, Self::Error>;

    /// Called with tiles that passed authentication, e.g. to cache them. Tiles are
    /// untrusted until then.
    fn authenticated(&self, _tiles: &[TileId], _data: &[Vec<u8>]) {}
}

/// Why hashes could not be read from tiles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileReadError<E> {
    #[error("fetching tiles failed: {0}")]
    Fetch(#[source] E),
    #[error("fetcher returned {got} tiles for {want} requested")]
    WrongCount { want: usize, got: usize },
    #[error("tile {} has {got} bytes, want {}", tile.path(), tile.byte_len())]
    WrongLength { tile: TileId, got: usize },
    #[error("tile {} does not match the trusted tree (tree size {size})", tile.path())]
    Inconsistent { tile: TileId, size: u64 },
    #[error("tiles do not recompute the trusted root of the tree of size {size}")]
    RootMismatch { size: u64 },
    #[error("stored hash {index} is not in a tree of size {size}")]
    NotInTree { index: u64, size: u64 },
    #[error("tree size {size} exceeds the supported maximum {MAX_TREE_SIZE}")]
    TooLarge { size: u64 },
}

/// A [`HashReader`] over the tiles of the tree of `size` leaves with root `root`.
pub struct TileHashReader<'a, F: ?Sized> {
    size: u64,
    root: Hash,
    fetcher: &'a F,
}

impl<'a, F: TileFetcher + ?Sized> TileHashReader<'a, F> {
    /// `size` and `root` must come from a verified checkpoint.
    pub fn new(size: u64, root: Hash, fetcher: &'a F) -> TileHashReader<'a, F> {
        TileHashReader {
            size,
            root,
            fetcher,
        }
    }
}

/// Where a stored hash lives: the tile, and the run of tile entries it is the root of.
struct Location {
    tile: TileId,
    start: usize,
    count: usize,
}

/// Locates the stored hash `index` in the tiles of a tree of `size` leaves. The
/// hash of the complete subtree (level, n) is the root over `2^(level mod 8)`
/// consecutive hashes of the tile at level `level / 8`.
fn locate(index: u64, size: u64) -> Option<Location> {
    let (level, n) = split_stored_hash_index(index);
    let tile_level = level / TILE_HEIGHT;
    let within = level % TILE_HEIGHT;
    let first = n << within;
    let width = u64::from(TILE_WIDTH);
    let tile = TileId::in_tree(tile_level, first / width, size)?;
    let start = (first % width) as usize;
    let count = 1usize << within;
    (start + count <= usize::from(tile.width())).then_some(Location { tile, start, count })
}

/// The tile one level up that holds this full tile's root, and the entry it is at.
fn parent(tile: TileId, size: u64) -> Option<(TileId, usize)> {
    if tile.level() >= MAX_TILE_LEVEL {
        return None;
    }
    let width = u64::from(TILE_WIDTH);
    let up = TileId::in_tree(tile.level() + 1, tile.index() / width, size)?;
    let entry = (tile.index() % width) as usize;
    (entry < usize::from(up.width())).then_some((up, entry))
}

/// Root of the run of `count` (a power of two) consecutive hashes of tile contents
/// `data`, starting at entry `start`; `None` if the tile does not hold them.
pub fn run_root(data: &[u8], start: usize, count: usize) -> Option<Hash> {
    let bytes = data.get(start * HASH_SIZE..(start + count) * HASH_SIZE)?;
    let mut level: Vec<Hash> = bytes
        .chunks_exact(HASH_SIZE)
        .filter_map(Hash::from_slice)
        .collect();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .filter_map(|pair| match pair {
                [left, right] => Some(node_hash(left, right)),
                _ => None,
            })
            .collect();
    }
    level.first().copied()
}

/// The tiles to fetch, each once, in the order first asked for.
#[derive(Default)]
struct Plan {
    tiles: Vec<TileId>,
    position: HashMap<TileId, usize>,
}

impl Plan {
    fn add(&mut self, tile: TileId) {
        if !self.position.contains_key(&tile) {
            self.position.insert(tile, self.tiles.len());
            self.tiles.push(tile);
        }
    }

    fn contains(&self, tile: &TileId) -> bool {
        self.position.contains_key(tile)
    }

    fn data<'d>(&self, tile: &TileId, data: &'d [Vec<u8>]) -> &'d [u8] {
        self.position
            .get(tile)
            .and_then(|&i| data.get(i))
            .map_or(&[][..], Vec::as_slice)
    }
}

impl<F: TileFetcher + ?Sized> HashReader for TileHashReader<'_, F> {
    type Error = TileReadError<F::Error>;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error> {
        let size = self.size;
        if size > MAX_TREE_SIZE {
            return Err(TileReadError::TooLarge { size });
        }
        let mut plan = Plan::default();

        // The tiles holding the root's complete subtrees: the partial tile of each
        // level. Recomputing the trusted root from them authenticates them.
        let mut root_indexes = Vec::new();
        subtree_indexes(0, size, &mut root_indexes);
        let mut root_parts = Vec::with_capacity(root_indexes.len());
        for &index in &root_indexes {
            let loc = locate(index, size).ok_or(TileReadError::NotInTree { index, size })?;
            plan.add(loc.tile);
            root_parts.push(loc);
        }
        let authenticated_by_root = plan.tiles.len();

        // The tiles holding the requested hashes, each with the chain of full tiles
        // above it up to one already planned (at worst the partial tile on top).
        let limit = stored_hash_count(size);
        let mut wanted = Vec::with_capacity(indexes.len());
        for &index in indexes {
            if index >= limit {
                return Err(TileReadError::NotInTree { index, size });
            }
            let loc = locate(index, size).ok_or(TileReadError::NotInTree { index, size })?;
            let mut tile = loc.tile;
            while !plan.contains(&tile) {
                plan.add(tile);
                match parent(tile, size) {
                    Some((up, _)) => tile = up,
                    None => return Err(TileReadError::Inconsistent { tile, size }),
                }
            }
            wanted.push(loc);
        }

        let data = self
            .fetcher
            .fetch_tiles(&plan.tiles)
            .map_err(TileReadError::Fetch)?;
        if data.len() != plan.tiles.len() {
            return Err(TileReadError::WrongCount {
                want: plan.tiles.len(),
                got: data.len(),
            });
        }
        for (tile, bytes) in plan.tiles.iter().zip(&data) {
            if bytes.len() != tile.byte_len() {
                return Err(TileReadError::WrongLength {
                    tile: *tile,
                    got: bytes.len(),
                });
            }
        }
        let hash_at = |loc: &Location| {
            run_root(plan.data(&loc.tile, &data), loc.start, loc.count).ok_or(
                TileReadError::Inconsistent {
                    tile: loc.tile,
                    size,
                },
            )
        };

        // Authenticate the partial tiles against the trusted root...
        let parts = root_parts
            .iter()
            .map(hash_at)
            .collect::<Result<Vec<_>, _>>()?;
        let computed = match parts.split_last() {
            Some((last, init)) => init.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
            None => empty_root(),
        };
        if computed != self.root {
            return Err(TileReadError::RootMismatch { size });
        }
        // ...then every full tile against its entry in the tile above.
        for tile in plan.tiles.iter().skip(authenticated_by_root) {
            let expected = parent(*tile, size)
                .and_then(|(up, entry)| run_root(plan.data(&up, &data), entry, 1));
            let actual = run_root(plan.data(tile, &data), 0, usize::from(TILE_WIDTH));
            if expected.is_none() || expected != actual {
                return Err(TileReadError::Inconsistent { tile: *tile, size });
            }
        }
        self.fetcher.authenticated(&plan.tiles, &data);

        wanted.iter().map(hash_at).collect()
    }
}
