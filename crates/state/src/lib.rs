//! Palisade's state.
//!
//! Processes keep small amounts of durable state: the agent's replay cache and its
//! view of the log, the gateway's operations and idempotency keys, the witness's last
//! checkpoint per origin. [`StateStore`] is the one interface they use, with two
//! implementations:
//!
//! - [`RedbStore`], one [redb](https://docs.rs/redb) file, for a single machine: an
//!   embedded, crash-safe, pure-Rust B-tree with ACID transactions — chosen over
//!   SQLite to keep the build free of C code, and over sled for its stable on-disk
//!   format.
//! - [`EtcdStore`], for gateways that run as stateless replicas sharing operations,
//!   idempotency keys, rate-limit counters, inventory and sequencer leases. Conditional
//!   writes are single etcd transactions, so replicas racing on one key see exactly one
//!   winner.
//!
//! [`Leadership`] builds a leader lease on etcd (one holder per name at a time, e.g. one
//! sequencer per log), and [`StateBackend`] is the `[state]` table a process config
//! embeds to choose a store.
//!
//! Every write is durable when its future resolves (redb commits with fsync; etcd
//! answers after a quorum has it in its log), except in a [`Namespace::relaxed`]
//! namespace on redb, whose writes become durable with the next durable one. Conditional writes
//! ([`StateStore::insert_new`], [`StateStore::compare_and_swap`]) are atomic, which is
//! what a replay cache or a lease needs.
//!
//! What this crate does not do: it does not encrypt or authenticate values (etcd
//! access is guarded by its TLS client certificates and the store's prefix), and a
//! [`LeaderGuard`] is a lease, not a fence — see [`lease`] for what that means.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod etcd_store;
pub mod lease;
mod redb_store;
pub use etcd_store::{EtcdStore, EtcdTls};
pub use lease::{LeaderGuard, Leadership};
pub use redb_store::RedbStore;

/// A named group of keys (one redb table, or one etcd key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Namespace(&'static str, bool);

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
        Self(name, true)
    }

    /// A namespace whose writes on one machine (redb) are made durable by the next
    /// durable write to the store rather than by their own fsync: a crash can undo the
    /// last ones written since. For counters whose loss in a crash is harmless, and
    /// whose use is usually followed by a durable write (the gateway's rate-limit
    /// counter precedes the operation's record). etcd makes every write durable
    /// regardless.
    pub const fn relaxed(name: &'static str) -> Self {
        Self(Self::new(name).0, false)
    }

    pub fn name(&self) -> &'static str {
        self.0
    }

    /// Whether each write is durable on its own ([`Namespace::relaxed`]).
    pub fn durable(&self) -> bool {
        self.1
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
    /// The `[state]` settings cannot work (bad prefix, endpoint, TLS combination).
    #[error("the state configuration is invalid: {0}")]
    Config(String),
    #[error("cannot read the etcd TLS file {path}: {reason}")]
    TlsFile { path: PathBuf, reason: String },
    /// etcd could not be reached when connecting.
    #[error(
        "cannot reach etcd at {endpoints}: {reason}; check that etcd is running there \
         and that the [state] endpoints and tls files are right"
    )]
    Connect { endpoints: String, reason: String },
    /// etcd did not answer (down, partitioned, no quorum, timed out). The operation
    /// may or may not have been applied; retrying a conditional write is safe.
    #[error("etcd is unavailable for state {op} in namespace {ns}: {reason}")]
    Unavailable {
        op: &'static str,
        ns: &'static str,
        reason: String,
    },
    /// A leader lease could not be taken, kept or released.
    #[error("leadership {name:?}: {reason}")]
    Lease { name: String, reason: String },
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

/// Which store a process uses: the `[state]` table of its config.
///
/// ```toml
/// [state]
/// kind = "redb"
/// path = "/var/lib/palisade/state.redb"
/// ```
///
/// ```toml
/// [state]
/// kind = "etcd"
/// endpoints = ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]
/// prefix = "/palisade"
/// [state.tls]
/// ca = "/etc/palisade/etcd/ca.pem"
/// cert = "/etc/palisade/etcd/client.pem"
/// key = "/etc/palisade/etcd/client-key.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StateBackend {
    /// One redb file on this machine.
    Redb { path: PathBuf },
    /// A shared etcd cluster. `prefix` (e.g. `/palisade`) scopes every key, so one etcd
    /// can hold several deployments as long as no prefix is a path-prefix of another.
    /// `tls` is required for `https://` endpoints and refused for `http://` ones.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        #[serde(default)]
        tls: Option<EtcdTls>,
    },
}

impl StateBackend {
    /// Opens the configured store; for etcd this connects and checks that it answers.
    pub async fn open(&self) -> Result<Arc<dyn StateStore>, StateError> {
        match self {
            StateBackend::Redb { path } => {
                let owned = path.clone();
                // redb's open reads and may repair the file: keep it off the runtime.
                let store = tokio::task::spawn_blocking(move || RedbStore::open(&owned))
                    .await
                    .map_err(|e| StateError::Open {
                        path: path.clone(),
                        reason: e.to_string(),
                    })??;
                Ok(Arc::new(store))
            }
            StateBackend::Etcd {
                endpoints,
                prefix,
                tls,
            } => Ok(Arc::new(
                EtcdStore::connect(endpoints, prefix, tls.as_ref()).await?,
            )),
        }
    }
}
