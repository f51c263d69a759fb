//! Palisade's embedded state.
//!
//! Processes keep small amounts of durable state: the agent's replay cache and its
//! view of the log, the gateway's operations and idempotency keys, the witness's last
//! checkpoint per origin. [`StateStore`] is the one interface they use; [`RedbStore`]
//! implements it on a single [redb](https://docs.rs/redb) file (an embedded,
//! crash-safe, pure-Rust B-tree with ACID transactions — chosen over SQLite to keep
//! the build free of C code, and over sled for its stable on-disk format). The trait
//! is narrow on purpose so that a store shared by several gateway replicas (etcd; not
//! built yet) can implement the same operations.
//!
//! Every write is durable when its future resolves (redb commits with fsync).
//! Conditional writes ([`StateStore::insert_new`], [`StateStore::compare_and_swap`])
//! are atomic, which is what a replay cache or a lease needs.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod redb_store;
pub use redb_store::RedbStore;

/// A named group of keys (one redb table, or one etcd key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Namespace(&'static str);

impl Namespace {
    /// Namespaces are fixed in code: lower-case letters, digits and `_`.
    pub const fn new(name: &'static str) -> Self {
        let b = name.as_bytes();
        assert!(!b.is_empty(), "namespace name must not be empty");
        let mut i = 0;
        while i < b.len() {
            assert!(
                b[i].is_ascii_lowercase() || b[i].is_ascii_digit() || b[i] == b'_',
                "namespace names are lower-case letters, digits and _"
            );
            i += 1;
        }
        Self(name)
    }

    pub fn name(&self) -> &'static str {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("state {op} in namespace {ns} failed: {reason}")]
    Backend {
        op: &'static str,
        ns: &'static str,
        reason: String,
    },
    #[error("state key {key:?} is invalid: {reason}")]
    BadKey { key: String, reason: &'static str },
}

/// The largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

pub(crate) fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() {
        return Err(StateError::BadKey {
            key: String::new(),
            reason: "empty",
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::BadKey {
            key: key.chars().take(64).collect(),
            reason: "longer than 512 bytes",
        });
    }
    Ok(())
}

/// A durable key-value store with atomic conditional writes.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StateError>;

    /// Writes `value`, replacing any previous one.
    async fn put(&self, ns: Namespace, key: &str, value: Vec<u8>) -> Result<(), StateError>;

    /// Writes `value` only if `key` is absent; returns whether it wrote.
    async fn insert_new(
        &self,
        ns: Namespace,
        key: &str,
        value: Vec<u8>,
    ) -> Result<bool, StateError>;

    /// Replaces the value only if the current one equals `expected` (`None`: absent).
    /// `new = None` deletes. Returns whether it wrote.
    async fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError>;

    /// Removes `key`; returns whether it existed.
    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StateError>;

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    async fn list(
        &self,
        ns: Namespace,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError>;
}

/// Opens the default embedded store at `path` (created if missing).
pub fn open_embedded(path: &Path) -> Result<Arc<dyn StateStore>, StateError> {
    Ok(Arc::new(RedbStore::open(path)?))
}
