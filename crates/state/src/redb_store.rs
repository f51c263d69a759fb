//! [`StateStore`] on one redb file.

use crate::{check_key, Namespace, StateError, StateStore};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

/// redb-backed store. Operations run on tokio's blocking pool because a commit waits
/// for fsync.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

fn table(ns: Namespace) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(ns.name())
}

fn backend(op: &'static str, ns: Namespace) -> impl Fn(String) -> StateError {
    move |reason| StateError::Backend {
        op,
        ns: ns.name(),
        reason,
    }
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StateError::Open {
                path: path.to_path_buf(),
                reason: format!("cannot create {}: {e}", parent.display()),
            })?;
        }
        let db = Database::create(path).map_err(|e| StateError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        ns: Namespace,
        f: impl FnOnce(&Database) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| backend(op, ns)(e.to_string()))?
            .map_err(backend(op, ns))
    }

    /// Runs `f` on the table in one write transaction and commits.
    async fn write<T: Send + 'static>(
        &self,
        op: &'static str,
        ns: Namespace,
        f: impl FnOnce(
                &mut redb::Table<'_, &'static str, &'static [u8]>,
            ) -> Result<T, redb::StorageError>
            + Send
            + 'static,
    ) -> Result<T, StateError> {
        self.blocking(op, ns, move |db| {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            if !ns.durable() {
                // Persisted by the next durable commit (redb keeps the order).
                txn.set_durability(redb::Durability::None);
            }
            let out = {
                let mut t = txn.open_table(table(ns)).map_err(|e| e.to_string())?;
                f(&mut t).map_err(|e| e.to_string())?
            };
            txn.commit().map_err(|e| e.to_string())?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        let key = key.to_string();
        self.blocking("get", ns, move |db| {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let t = match txn.open_table(table(ns)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let v = t.get(key.as_str()).map_err(|e| e.to_string())?;
            Ok(v.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put(&self, ns: Namespace, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        check_key(key)?;
        let key = key.to_string();
        self.write("put", ns, move |t| {
            t.insert(key.as_str(), value.as_slice()).map(|_| ())
        })
        .await
    }

    async fn insert_new(
        &self,
        ns: Namespace,
        key: &str,
        value: Vec<u8>,
    ) -> Result<bool, StateError> {
        check_key(key)?;
        let key = key.to_string();
        self.write("insert_new", ns, move |t| {
            if t.get(key.as_str())?.is_some() {
                return Ok(false);
            }
            t.insert(key.as_str(), value.as_slice())?;
            Ok(true)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError> {
        check_key(key)?;
        let key = key.to_string();
        self.write("compare_and_swap", ns, move |t| {
            let current = t.get(key.as_str())?.map(|v| v.value().to_vec());
            if current != expected {
                return Ok(false);
            }
            match new {
                Some(v) => {
                    t.insert(key.as_str(), v.as_slice())?;
                }
                None => {
                    t.remove(key.as_str())?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StateError> {
        check_key(key)?;
        let key = key.to_string();
        self.write("delete", ns, move |t| Ok(t.remove(key.as_str())?.is_some()))
            .await
    }

    async fn list(
        &self,
        ns: Namespace,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let prefix = prefix.to_string();
        self.blocking("list", ns, move |db| {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let t = match txn.open_table(table(ns)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.to_string()),
            };
            let mut out = Vec::new();
            for item in t.range(prefix.as_str()..).map_err(|e| e.to_string())? {
                let (k, v) = item.map_err(|e| e.to_string())?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) || out.len() >= limit {
                    break;
                }
                out.push((k.to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: Namespace = Namespace::new("test");
    const OTHER: Namespace = Namespace::new("other");

    #[tokio::test]
    async fn conditional_writes_are_atomic_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).expect("open");
            assert_eq!(s.get(NS, "a").await.expect("get"), None);
            assert!(s
                .insert_new(NS, "nonce/1", b"x".to_vec())
                .await
                .expect("insert"));
            assert!(!s
                .insert_new(NS, "nonce/1", b"y".to_vec())
                .await
                .expect("insert again"));
            assert!(!s
                .compare_and_swap(NS, "lease", Some(b"z".to_vec()), Some(b"1".to_vec()))
                .await
                .expect("cas"));
            assert!(s
                .compare_and_swap(NS, "lease", None, Some(b"1".to_vec()))
                .await
                .expect("cas"));
            assert!(s
                .compare_and_swap(NS, "lease", Some(b"1".to_vec()), Some(b"2".to_vec()))
                .await
                .expect("cas"));
            s.put(NS, "nonce/2", b"w".to_vec()).await.expect("put");
            s.put(OTHER, "nonce/3", b"v".to_vec()).await.expect("put");
        }
        let s = RedbStore::open(&path).expect("reopen");
        assert_eq!(
            s.get(NS, "nonce/1").await.expect("get"),
            Some(b"x".to_vec())
        );
        assert_eq!(s.get(NS, "lease").await.expect("get"), Some(b"2".to_vec()));
        let listed = s.list(NS, "nonce/", 10).await.expect("list");
        assert_eq!(
            listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["nonce/1", "nonce/2"]
        );
        assert_eq!(s.list(NS, "nonce/", 1).await.expect("list").len(), 1);
        assert!(s.delete(NS, "nonce/1").await.expect("delete"));
        assert!(!s.delete(NS, "nonce/1").await.expect("delete"));
        assert!(s
            .compare_and_swap(NS, "lease", Some(b"2".to_vec()), None)
            .await
            .expect("cas delete"));
        assert_eq!(s.get(NS, "lease").await.expect("get"), None);
    }

    /// A relaxed write is read back at once, and the next durable write persists it.
    /// The store is never closed (a clean close commits durably by itself): what a
    /// crash would leave is the file as it is, copied and opened afresh.
    #[tokio::test]
    async fn relaxed_writes_are_persisted_by_the_next_durable_one() {
        const COUNTERS: Namespace = Namespace::relaxed("counters");
        assert!(!COUNTERS.durable() && NS.durable());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let s = RedbStore::open(&path).expect("open");
        // A durable write first, so that the tables exist on disk.
        s.put(NS, "first", b"f".to_vec()).await.expect("put");
        for n in 1..=3u8 {
            let current = s.get(COUNTERS, "op/a").await.expect("get");
            assert_eq!(current.as_deref().map(|c| c[0]), (n > 1).then_some(n - 1));
            assert!(s
                .compare_and_swap(COUNTERS, "op/a", current, Some(vec![n]))
                .await
                .expect("cas"));
        }
        s.put(NS, "operation", b"o".to_vec()).await.expect("put");
        let crashed = dir.path().join("crashed.redb");
        std::fs::copy(&path, &crashed).expect("copy the file");
        std::mem::forget(s);
        let s = RedbStore::open(&crashed).expect("open the copy");
        assert_eq!(s.get(COUNTERS, "op/a").await.expect("get"), Some(vec![3]));
        assert_eq!(
            s.get(NS, "operation").await.expect("get"),
            Some(b"o".to_vec())
        );
    }

    #[tokio::test]
    async fn bad_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RedbStore::open(&dir.path().join("s.redb")).expect("open");
        assert!(matches!(
            s.put(NS, "", vec![]).await,
            Err(StateError::BadKey { .. })
        ));
        assert!(matches!(
            s.get(NS, &"k".repeat(513)).await,
            Err(StateError::BadKey { .. })
        ));
    }

    #[tokio::test]
    async fn unopenable_path_is_a_clear_error() {
        let err = RedbStore::open(Path::new("/proc/palisade/state.redb"))
            .err()
            .expect("error");
        assert!(
            err.to_string().contains("/proc/palisade/state.redb"),
            "{err}"
        );
    }
}
