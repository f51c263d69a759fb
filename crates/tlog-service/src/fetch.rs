//! Reading tiles for proofs: recent tiles from memory, older ones from storage.
//!
//! The tree algorithms in `palisade-tlog` are synchronous (they ask a reader for a
//! list of hashes); storage is asynchronous. [`StoreFetcher`] bridges the two by
//! blocking the current worker thread on the storage read (`block_in_place`), which
//! tokio allows on its multi-threaded runtime. Tiles the caller already holds in memory
//! (the sequencer's right edge) are served without any read.

use crate::store::TileStore;
use bytes::Bytes;
use palisade_tlog::tile::{TileFetcher, TileId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Tiles held in memory, by id.
pub type MemoryTiles = HashMap<TileId, Bytes>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("tile {0} is not in storage")]
    Missing(String),
    #[error("{0}")]
    Store(String),
    #[error("reading tiles needs tokio's multi-threaded runtime")]
    NoRuntime,
}

pub struct StoreFetcher<'a> {
    store: &'a TileStore,
    memory: &'a MemoryTiles,
    /// Full tiles never change, so once read they can be kept for this fetcher's life.
    cache: Mutex<HashMap<TileId, Bytes>>,
}

impl<'a> StoreFetcher<'a> {
    pub fn new(store: &'a TileStore, memory: &'a MemoryTiles) -> Self {
        Self {
            store,
            memory,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl TileFetcher for StoreFetcher<'_> {
    type Error = FetchError;

    fn fetch_tiles(&self, tiles: &[TileId]) -> Result<Vec<Vec<u8>>, FetchError> {
        let mut out = Vec::with_capacity(tiles.len());
        let mut to_read = Vec::new();
        for (i, t) in tiles.iter().enumerate() {
            let cached = self.cache.lock().ok().and_then(|c| c.get(t).cloned());
            match self.memory.get(t).cloned().or(cached) {
                Some(b) => out.push(Some(b.to_vec())),
                None => {
                    out.push(None);
                    to_read.push((i, *t));
                }
            }
        }
        if !to_read.is_empty() {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| FetchError::NoRuntime)?;
            if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
                return Err(FetchError::NoRuntime);
            }
            let store = self.store;
            let read = tokio::task::block_in_place(|| {
                handle.block_on(futures::future::join_all(
                    to_read
                        .iter()
                        .map(|(_, t)| async move { (t, store.read(&t.path()).await) }),
                ))
            });
            for ((i, t), (_, result)) in to_read.iter().zip(read) {
                let bytes = result
                    .map_err(|e| FetchError::Store(e.to_string()))?
                    .ok_or_else(|| FetchError::Missing(t.path()))?;
                if t.is_full() {
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(*t, bytes.clone());
                    }
                }
                if let Some(slot) = out.get_mut(*i) {
                    *slot = Some(bytes.to_vec());
                }
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }
}
