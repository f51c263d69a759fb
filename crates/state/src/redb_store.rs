//! [`StateStore`] on one redb file.

use crate::{check_key, Namespace, StateError, StateStore};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

/// redb-backed store. A point read runs on the caller's task: it never waits for a
/// commit's fsync (readers see the last committed version), at most for the writer
/// copying a commit's pages into the file, and reading one small value is a lookup
/// in redb's cache or one read from the page cache, cheaper than handing it to
/// another thread and back. A panic inside redb is still an error, not an unwinding
/// caller. Listings run on tokio's blocking pool. Writes go to one writer
/// thread, which commits the writes waiting together in one transaction (group
/// commit): concurrent writers share one fsync instead of queueing for one each.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// Most writes committed together.
const MAX_GROUP: usize = 256;

/// Told to a write once its transaction's commit is decided: `Ok` when committed.
type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A write run in the shared transaction (or told why there is none): whether it
/// failed, and what to tell its caller once the commit is decided.
type Run = Box<dyn FnOnce(Result<&redb::WriteTransaction, String>) -> (bool, Done) + Send>;

/// One write waiting for the writer thread.
struct Job {
    durable: bool,
    run: Run,
}

/// The writer thread and its queue. Dropped with the last store: the queue closes
/// and the thread is joined, so the file is closed when the store is gone.
struct Writer {
    queue: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: takes the first waiting write and every one queued behind it
/// (up to [`MAX_GROUP`]) and commits them together ([`commit_group`]). A panic while
/// doing so (in redb or in a write) abandons only that group: its callers are told the
/// writer failed (their answers are dropped unsent), and the thread goes on with the
/// next writes, as a panicking blocking task used to fail only its own write.
fn write_loop(db: Arc<Database>, queue: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let group = std::panic::AssertUnwindSafe(|| commit_group(&db, jobs));
        if std::panic::catch_unwind(group).is_err() {
            tracing::error!("a state write panicked; the writes committed with it were abandoned");
        }
    }
}

/// Runs `jobs` in order in one transaction, commits once and answers each. The commit
/// is durable if any of them is. A write that fails abandons the whole transaction:
/// none of the group is written, and each is told.
fn commit_group(db: &Database, jobs: Vec<Job>) {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            let reason = e.to_string();
            for job in jobs {
                let (_, done) = (job.run)(Err(reason.clone()));
                done(Err(reason.clone()));
            }
            return;
        }
    };
    if !jobs.iter().any(|j| j.durable) {
        // Persisted by the next durable commit (redb keeps the order).
        txn.set_durability(redb::Durability::None);
    }
    let mut failed = false;
    let mut done = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (bad, d) = (job.run)(Ok(&txn));
        failed |= bad;
        done.push(d);
    }
    let outcome = if failed {
        let _ = txn.abort();
        Err("another write committed with this one failed; neither was written".to_string())
    } else {
        txn.commit().map_err(|e| e.to_string())
    };
    for d in done {
        d(outcome.clone());
    }
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
        let db = Arc::new(Database::create(path).map_err(|e| StateError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
        let (queue, jobs) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn({
                let db = db.clone();
                move || write_loop(db, jobs)
            })
            .map_err(|e| StateError::Open {
                path: path.to_path_buf(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            db,
            writer: Arc::new(Writer {
                queue: Some(queue),
                thread: Some(thread),
            }),
        })
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

    /// Runs `f` on the table in a write transaction (shared with the writes waiting
    /// with it) and answers once that transaction is committed.
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
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, String>>();
        let run = move |txn: Result<&redb::WriteTransaction, String>| {
            let out = txn.and_then(|txn| {
                let mut t = txn.open_table(table(ns)).map_err(|e| e.to_string())?;
                f(&mut t).map_err(|e| e.to_string())
            });
            let failed = out.is_err();
            let done: Done = Box::new(move |commit| {
                let _ = tx.send(out.and_then(|v| commit.map(|()| v)));
            });
            (failed, done)
        };
        let stopped = || backend(op, ns)("the state writer failed or has stopped".into());
        self.writer
            .queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(Job {
                durable: ns.durable(),
                run: Box::new(run),
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(backend(op, ns))
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        let read = || {
            let txn = self.db.begin_read().map_err(|e| e.to_string())?;
            let t = match txn.open_table(table(ns)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let v = t.get(key).map_err(|e| e.to_string())?;
            Ok(v.map(|v| v.value().to_vec()))
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
            .unwrap_or_else(|_| Err("the read panicked".to_owned()))
            .map_err(backend("get", ns))
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

    /// Writes from many tasks at once are committed in shared transactions: each
    /// compare-and-swap still sees the one before it (no increment is lost), every
    /// insert is answered by its own outcome, and all of it survives closing and
    /// reopening at once (the writer thread has let go of the file).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_commits_and_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let s = RedbStore::open(&path).expect("open");
        let mut tasks = Vec::new();
        for i in 0..32u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                // Every task inserts its key twice: only the first is new.
                let key = format!("k/{i:02}");
                let first = s.insert_new(NS, &key, vec![1]).await.expect("insert");
                let again = s.insert_new(NS, &key, vec![2]).await.expect("insert");
                // And increments one shared counter, retrying lost swaps.
                loop {
                    let cur = s.get(NS, "counter").await.expect("get");
                    let n = cur
                        .as_deref()
                        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
                    let next = (n + 1).to_be_bytes().to_vec();
                    if s.compare_and_swap(NS, "counter", cur, Some(next))
                        .await
                        .expect("cas")
                    {
                        break;
                    }
                }
                (first, again)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), (true, false));
        }
        drop(s);
        let s = RedbStore::open(&path).expect("reopen right after the last store is dropped");
        assert_eq!(
            s.get(NS, "counter").await.expect("get"),
            Some(32u32.to_be_bytes().to_vec())
        );
        let keys = s.list(NS, "k/", 100).await.expect("list");
        assert_eq!(keys.len(), 32);
        assert!(keys.iter().all(|(_, v)| v == &vec![1]));
    }

    /// A write that panics on the writer thread fails its caller with an error, and
    /// the writes after it are committed as before.
    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RedbStore::open(&dir.path().join("state.redb")).expect("open");
        s.put(NS, "before", b"1".to_vec()).await.expect("put");
        let err = s
            .write("boom", NS, |_| -> Result<(), redb::StorageError> {
                panic!("a write that panics")
            })
            .await
            .expect_err("the panicking write fails");
        assert!(err.to_string().contains("writer failed"), "{err}");
        s.put(NS, "after", b"2".to_vec()).await.expect("put after");
        assert_eq!(s.get(NS, "before").await.expect("get"), Some(b"1".to_vec()));
        assert_eq!(s.get(NS, "after").await.expect("get"), Some(b"2".to_vec()));
    }
}
