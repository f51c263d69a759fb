//! The sequencer's contract, checked on a local directory and on an S3-compatible
//! bucket (moto) by the very same suite:
//!
//! - every acknowledged append carries a tlog-proof that verifies against the log key;
//! - indexes are handed out 0..n without gaps or duplicates, in order per caller,
//!   however many callers append at once and whatever the batch size;
//! - storage holds exactly the tlog-tiles layout of the current size (plus stale
//!   partial tiles of earlier sizes, which tlog-tiles allows and which must be
//!   prefixes of the current tile), with entry bundles holding the appended entries;
//! - a reopened log continues where it stopped;
//! - a log whose right edge or checkpoint is corrupted at rest refuses to open and
//!   changes nothing;
//! - entries are 1..=65,535 bytes.
//!
//! The S3 tests start `moto` (PyPI `moto[server]`) on a loopback port; without it they
//! fail, they never skip.

mod support;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use palisade_tlog::checkpoint::{Checkpoint, LogPolicy};
use palisade_tlog::hash::{leaf_hash, node_hash, Hash};
use palisade_tlog::note::{KeyType, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tile::{parse_bundle, tiles_for_size, TileId, TilePath, TILE_WIDTH};
use palisade_tlog::tree::Frontier;
use palisade_tlog_service::journal::{self, Record, JOURNAL};
use palisade_tlog_service::sequencer::{
    self, AppendError, BatchConfig, LogWriter, OpenError, Receipt, WitnessSet,
};
use palisade_tlog_service::store::TileStore;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Moto;

const WIDTH: u64 = TILE_WIDTH as u64;

// ---------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------

/// One storage back end: the [`TileStore`] under test, and the same storage opened
/// directly with `object_store` so that the test can list what is really there.
struct Backend {
    store: TileStore,
    objects: Arc<dyn ObjectStore>,
    /// The local directory, listed with `std::fs` so that no file can hide.
    dir: Option<tempfile::TempDir>,
    _moto: Option<Moto>,
}

impl Backend {
    fn local() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TileStore::local(dir.path()).expect("open a local tile store");
        let objects = object_store::local::LocalFileSystem::new_with_prefix(dir.path())
            .expect("list the local directory");
        Backend {
            store,
            objects: Arc::new(objects),
            dir: Some(dir),
            _moto: None,
        }
    }

    async fn s3() -> Backend {
        let moto = Moto::start();
        let bucket = "palisade-tiles";
        moto.create_bucket(bucket).await;
        Backend {
            store: moto.tile_store(bucket),
            objects: moto.objects(bucket),
            dir: None,
            _moto: Some(moto),
        }
    }

    /// A fresh log under `prefix`, with its own key.
    fn log(&self, prefix: &str) -> TestLog {
        let origin = format!("palisade.test/{prefix}");
        TestLog {
            store: self.store.at(prefix),
            objects: self.objects.clone(),
            on_disk: self.dir.as_ref().map(|d| d.path().join(prefix)),
            prefix: prefix.to_string(),
            key: SignerKey::generate(&origin, KeyType::Ed25519).expect("log key"),
            origin,
        }
    }
}

/// A log under test: where it is stored, its origin and its key.
struct TestLog {
    store: TileStore,
    objects: Arc<dyn ObjectStore>,
    /// For a local log, its directory.
    on_disk: Option<PathBuf>,
    prefix: String,
    origin: String,
    key: SignerKey,
}

impl TestLog {
    async fn start(&self, batch: BatchConfig) -> Result<LogWriter, OpenError> {
        sequencer::start(
            &self.origin,
            self.key.clone(),
            self.store.clone(),
            batch,
            WitnessSet::default(),
        )
        .await
    }

    async fn open(&self, batch: BatchConfig) -> LogWriter {
        self.start(batch)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.origin))
    }

    fn policy(&self) -> LogPolicy {
        LogPolicy::new(&self.origin, self.key.verifier()).expect("policy")
    }

    async fn read(&self, rel: &str) -> Option<Bytes> {
        self.store
            .read(rel)
            .await
            .unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    async fn write(&self, rel: &str, data: impl Into<Bytes>) {
        self.store
            .write(rel, data.into())
            .await
            .unwrap_or_else(|e| panic!("write {rel}: {e}"));
    }

    /// Every object under the log's prefix, relative to it: for a local log every
    /// file in its directory, for S3 every key.
    async fn keys(&self) -> BTreeSet<String> {
        if let Some(root) = &self.on_disk {
            let mut keys = BTreeSet::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                for e in std::fs::read_dir(&dir).expect("read the log directory") {
                    let path = e.expect("directory entry").path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else {
                        let rel = path.strip_prefix(root).expect("below the root");
                        keys.insert(rel.to_string_lossy().into_owned());
                    }
                }
            }
            return keys;
        }
        let prefix = ObjectPath::from(self.prefix.as_str());
        let mut listing = self.objects.list(Some(&prefix));
        let mut keys = BTreeSet::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.expect("list objects");
            let key = meta.location.to_string();
            let rel = key
                .strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or_else(|| panic!("listed {key} outside {}", self.prefix));
            keys.insert(rel.to_string());
        }
        keys
    }

    /// Every object and its bytes.
    async fn snapshot(&self) -> BTreeMap<String, Bytes> {
        let mut out = BTreeMap::new();
        for key in self.keys().await {
            let data = self.read(&key).await.expect("listed object exists");
            out.insert(key, data);
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Entries, appends and checks
// ---------------------------------------------------------------------------------

/// The entry with logical id `id`: unique, of varying length.
fn entry(id: u64) -> Bytes {
    let mut text = format!("entry {id} ");
    text.extend(std::iter::repeat_n('x', (id % 61) as usize));
    Bytes::from(text)
}

fn batch(max_entries: usize) -> BatchConfig {
    BatchConfig {
        max_entries,
        max_delay: Duration::from_millis(2),
        ..BatchConfig::default()
    }
}

/// Appends the entries `ids` from `callers` concurrent tasks (each appending its share
/// one after the other) and returns `(id, receipt)` for all of them. Each caller's
/// indexes must increase: an append that returned is ordered before the next one.
async fn append_concurrently(
    writer: &LogWriter,
    ids: std::ops::Range<u64>,
    callers: u64,
) -> Vec<(u64, Receipt)> {
    let start = ids.start;
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let writer = writer.clone();
        let mine: Vec<u64> = ids
            .clone()
            .filter(|id| (id - start) % callers == caller)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(mine.len());
            let mut last: Option<u64> = None;
            for id in mine {
                let receipt = writer
                    .append(entry(id))
                    .await
                    .unwrap_or_else(|e| panic!("append of entry {id}: {e}"));
                if let Some(prev) = last {
                    assert!(
                        receipt.index > prev,
                        "caller {caller} got index {} after {prev}",
                        receipt.index
                    );
                }
                last = Some(receipt.index);
                out.push((id, receipt));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("append task"));
    }
    all
}

/// Every receipt's tlog-proof verifies for its entry under the log's key, at the
/// receipt's index. Spread over two threads: this is most of the CPU of the suite.
fn verify_receipts(log: &TestLog, receipts: &[(u64, Receipt)]) {
    let policy = log.policy();
    let half = receipts.len().div_ceil(2).max(1);
    std::thread::scope(|s| {
        for chunk in receipts.chunks(half) {
            let policy = &policy;
            s.spawn(move || {
                for (id, receipt) in chunk {
                    let proof = TlogProof::parse(&receipt.proof)
                        .unwrap_or_else(|e| panic!("receipt of entry {id}: {e}"));
                    assert_eq!(proof.index(), receipt.index, "proof index of entry {id}");
                    let verified = proof
                        .verify(&entry(*id), policy)
                        .unwrap_or_else(|e| panic!("proof of entry {id}: {e}"));
                    assert!(verified.checkpoint().size() > receipt.index);
                }
            });
        }
    });
}

/// Records the receipts' indexes into `log_ids` (index → entry id), checking that
/// they are exactly the next `receipts.len()` indexes.
fn record_indexes(log_ids: &mut Vec<u64>, receipts: &[(u64, Receipt)]) {
    let old = log_ids.len() as u64;
    let mut by_index: BTreeMap<u64, u64> = BTreeMap::new();
    for (id, r) in receipts {
        if let Some(other) = by_index.insert(r.index, *id) {
            panic!("index {} was given to entries {other} and {id}", r.index);
        }
    }
    let got: Vec<u64> = by_index.keys().copied().collect();
    let want: Vec<u64> = (old..old + receipts.len() as u64).collect();
    assert!(
        got == want,
        "indexes are not exactly {old}..{}: first differences {:?}",
        old + receipts.len() as u64,
        got.iter()
            .zip(&want)
            .filter(|(g, w)| g != w)
            .take(5)
            .collect::<Vec<_>>()
    );
    log_ids.extend(by_index.values());
}

/// Root of the perfect tree over `hashes` (a power of two of them).
fn perfect_root(hashes: &[Hash]) -> Hash {
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    level[0]
}

/// The stored hashes at each tile level (tree level 8·L) for the entries `ids`.
fn tile_level_hashes(ids: &[u64]) -> Vec<Vec<Hash>> {
    let mut levels = vec![ids
        .iter()
        .map(|id| leaf_hash(&entry(*id)))
        .collect::<Vec<_>>()];
    loop {
        let below = levels.last().expect("level 0");
        let up: Vec<Hash> = below
            .chunks_exact(WIDTH as usize)
            .map(perfect_root)
            .collect();
        if up.is_empty() {
            return levels;
        }
        levels.push(up);
    }
}

fn hashes_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// What storage must hold for a log whose entries are `ids` (in index order):
/// a checkpoint over exactly them; every tile of `tiles_for_size` with the right
/// length and hashes; every entry bundle with exactly the entries; and nothing else
/// but stale partial tiles or bundles of earlier sizes, which must be prefixes of
/// the current ones.
async fn check_storage(log: &TestLog, ids: &[u64]) {
    let size = ids.len() as u64;
    let cp_bytes = log.read("checkpoint").await.expect("checkpoint exists");
    let verified = log
        .policy()
        .verify(&cp_bytes)
        .unwrap_or_else(|e| panic!("stored checkpoint: {e}"));
    let checkpoint = verified.checkpoint();
    assert_eq!(checkpoint.size(), size, "checkpoint size");
    let mut frontier = Frontier::new();
    for id in ids {
        frontier.append(leaf_hash(&entry(*id))).expect("append");
    }
    assert_eq!(
        *checkpoint.root(),
        frontier.root(),
        "checkpoint root vs the entries appended"
    );

    let levels = tile_level_hashes(ids);
    let expected_tile = |tile: &TileId| -> Vec<u8> {
        let row = &levels[usize::from(tile.level())];
        let first = (tile.index() * WIDTH) as usize;
        hashes_bytes(&row[first..first + usize::from(tile.width())])
    };
    let expected_entries = |tile: &TileId| -> Vec<Bytes> {
        let first = tile.index() * WIDTH;
        (first..first + u64::from(tile.width()))
            .map(|i| entry(ids[i as usize]))
            .collect()
    };

    // The journal is not part of the layout (and is checked by the journal tests).
    let mut required = BTreeSet::from(["checkpoint".to_string(), JOURNAL.to_string()]);
    for tile in tiles_for_size(size) {
        let data = log
            .read(&tile.path())
            .await
            .unwrap_or_else(|| panic!("tile {} (size {size}) is missing", tile.path()));
        assert_eq!(data.len(), tile.byte_len(), "length of {}", tile.path());
        assert!(
            data[..] == expected_tile(&tile)[..],
            "tile {} does not hold the expected hashes",
            tile.path()
        );
        required.insert(tile.path());
        if tile.level() == 0 {
            let bundle = log.read(&tile.entries_path()).await.unwrap_or_else(|| {
                panic!("bundle {} (size {size}) is missing", tile.entries_path())
            });
            let parsed = parse_bundle(&bundle)
                .unwrap_or_else(|e| panic!("bundle {}: {e}", tile.entries_path()));
            let want = expected_entries(&tile);
            assert_eq!(
                parsed.len(),
                want.len(),
                "entries in {}",
                tile.entries_path()
            );
            for (i, (got, want)) in parsed.iter().zip(&want).enumerate() {
                assert!(
                    got == want,
                    "{} entry {i} is {:?}, want {:?}",
                    tile.entries_path(),
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(want)
                );
            }
            required.insert(tile.entries_path());
        }
    }

    let mut problems = Vec::new();
    for key in log.keys().await {
        if required.contains(&key) {
            continue;
        }
        let Ok(path) = TilePath::parse(&key) else {
            problems.push(format!("{key}: not a tlog-tiles path"));
            continue;
        };
        let stale = path.tile();
        let level = match path {
            TilePath::Hashes(t) => t.level(),
            TilePath::Entries(_) => 0,
        };
        let current = TileId::in_tree(level, stale.index(), size);
        let Some(current) = current.filter(|c| !stale.is_full() && c.width() > stale.width())
        else {
            problems.push(format!(
                "{key}: neither a tile of size {size} nor a partial tile of an earlier size"
            ));
            continue;
        };
        let data = log.read(&key).await.expect("listed object exists");
        let prefix_ok = match path {
            TilePath::Hashes(t) => data[..] == expected_tile(&current)[..t.byte_len()],
            TilePath::Entries(t) => parse_bundle(&data).is_ok_and(|got| {
                got.len() == usize::from(t.width())
                    && got
                        .iter()
                        .zip(expected_entries(&current))
                        .all(|(g, w)| *g == &w[..])
            }),
        };
        if !prefix_ok {
            problems.push(format!(
                "{key}: stale partial that is not a prefix of {}",
                current.path()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "storage of a log of size {size}:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// The suite, run on both back ends
// ---------------------------------------------------------------------------------

/// Grows one log through 1, 255, 256, 257, 1000, 70,000 and 80,000 entries (tile
/// boundaries of levels 0, 1 and 2), reopening it between steps with a different
/// batch size and a different number of concurrent callers; the last step's batches
/// span several tiles and entry bundles each.
async fn growth_suite(backend: &Backend) {
    let log = backend.log("clusters/growth");
    // (target size, max entries per batch, concurrent callers)
    let steps: [(u64, usize, u64); 7] = [
        (1, 1, 1),
        (255, 16, 8),
        (256, 256, 1),
        (257, 1, 1),
        (1000, 64, 32),
        (70_000, 256, 256),
        (80_000, sequencer::MAX_BATCH_ENTRIES, 3000),
    ];
    let mut log_ids: Vec<u64> = Vec::new();
    for (target, max_entries, callers) in steps {
        let started = Instant::now();
        // Batches larger than a tile linger, so that the callers' entries gather into
        // batches spanning tiles however the machine schedules them.
        let config = if max_entries > usize::from(TILE_WIDTH) {
            BatchConfig {
                max_entries,
                max_delay: Duration::from_millis(500),
                ..BatchConfig::default()
            }
        } else {
            batch(max_entries)
        };
        let writer = log.open(config).await;
        let size = log_ids.len() as u64;
        assert_eq!(writer.published().size, size, "reopened size");
        let receipts = append_concurrently(&writer, size..target, callers).await;
        drop(writer);
        let appended = started.elapsed();
        if max_entries > usize::from(TILE_WIDTH) {
            assert_batches_spanned_tiles(&receipts);
        }
        record_indexes(&mut log_ids, &receipts);
        verify_receipts(&log, &receipts);
        check_storage(&log, &log_ids).await;
        eprintln!(
            "{}: size {target} (batches ≤ {max_entries}, {callers} callers): appended in {appended:?}, checked in {:?}",
            backend.store.describe(),
            started.elapsed() - appended
        );
    }
}

/// At least one batch (the entries acknowledged under one checkpoint) held more than
/// a tile's worth of entries, across at least two level-0 tiles.
fn assert_batches_spanned_tiles(receipts: &[(u64, Receipt)]) {
    let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (_, r) in receipts {
        let proof = TlogProof::parse(&r.proof).expect("receipt proof");
        let size = Checkpoint::parse(proof.checkpoint().text())
            .expect("checkpoint")
            .size();
        batches.entry(size).or_default().push(r.index);
    }
    let width = u64::from(TILE_WIDTH);
    let spanning = batches
        .values()
        .filter(|indexes| {
            let tiles: BTreeSet<u64> = indexes.iter().map(|i| i / width).collect();
            indexes.len() > usize::from(TILE_WIDTH) && tiles.len() >= 2
        })
        .count();
    assert!(
        spanning > 0,
        "no batch spanned two tiles: {} batches, largest {}",
        batches.len(),
        batches.values().map(Vec::len).max().unwrap_or(0)
    );
}

/// A log that was stopped opens at the same size and continues with the next index.
async fn reopen_suite(backend: &Backend) {
    let log = backend.log("clusters/reopen");
    let writer = log.open(BatchConfig::default()).await;
    assert_eq!(writer.published().size, 0, "a new log is empty");
    let first = append_concurrently(&writer, 0..10, 1).await;
    drop(writer);
    let mut log_ids = Vec::new();
    record_indexes(&mut log_ids, &first);

    let writer = log.open(BatchConfig::default()).await;
    let published = writer.published();
    assert_eq!(published.size, 10, "size after reopening");
    let opened = log
        .policy()
        .verify(&published.note)
        .expect("published checkpoint verifies");
    assert_eq!(opened.checkpoint().size(), 10);
    let next = writer.append(entry(10)).await.expect("append after reopen");
    assert_eq!(next.index, 10, "the first append after reopening");
    let more = append_concurrently(&writer, 11..20, 3).await;
    drop(writer);
    let mut second = vec![(10, next)];
    second.extend(more);
    record_indexes(&mut log_ids, &second);
    verify_receipts(&log, &first);
    verify_receipts(&log, &second);

    let writer = log.open(BatchConfig::default()).await;
    assert_eq!(writer.published().size, 20, "size after the second reopen");
    drop(writer);
    check_storage(&log, &log_ids).await;
}

/// Empty and oversized entries are refused before they reach the log; the largest
/// allowed entry is logged intact.
async fn entry_limits_suite(backend: &Backend) {
    let log = backend.log("clusters/limits");
    let writer = log.open(BatchConfig::default()).await;
    assert!(
        matches!(writer.append(Bytes::new()).await, Err(AppendError::Empty)),
        "an empty entry must be refused with AppendError::Empty"
    );
    let too_large = Bytes::from(vec![b'a'; 65_536]);
    match writer.append(too_large).await {
        Err(AppendError::TooLarge(65_536)) => {}
        other => panic!("a 65,536-byte entry must be refused with TooLarge(65536), got {other:?}"),
    }
    assert_eq!(
        writer.published().size,
        0,
        "refused entries must not be logged"
    );

    let largest = Bytes::from(vec![b'z'; 65_535]);
    let receipt = writer
        .append(largest.clone())
        .await
        .expect("65,535 bytes is allowed");
    assert_eq!(receipt.index, 0);
    TlogProof::parse(&receipt.proof)
        .expect("proof parses")
        .verify(&largest, &log.policy())
        .expect("proof of the largest entry verifies");
    drop(writer);
    let bundle = log
        .read("tile/entries/000.p/1")
        .await
        .expect("bundle exists");
    let parsed = parse_bundle(&bundle).expect("bundle parses");
    assert_eq!(parsed.len(), 1);
    assert!(
        parsed[0] == &largest[..],
        "the stored entry is the one appended"
    );
}

/// A way to damage a stored log of 300 entries, and what the refusal must say.
struct Damage {
    what: &'static str,
    object: &'static str,
    expect: &'static str,
    how: Mutation,
}

enum Mutation {
    FlipByte,
    Truncate(usize),
    TruncateBy(usize),
    Delete,
    SignWithAnotherKey,
}

const DAMAGES: [Damage; 9] = [
    Damage {
        what: "a flipped byte in the right-edge level-0 tile",
        object: "tile/0/001.p/44",
        expect: "stored tiles do not match the checkpoint of size 300",
        how: Mutation::FlipByte,
    },
    Damage {
        what: "a flipped byte in the right-edge level-1 tile",
        object: "tile/1/000.p/1",
        expect: "stored tiles do not match the checkpoint of size 300",
        how: Mutation::FlipByte,
    },
    Damage {
        what: "a flipped byte in the partial entry bundle",
        object: "tile/entries/001.p/44",
        expect: "entry bundle tile/entries/001.p/44",
        how: Mutation::FlipByte,
    },
    Damage {
        what: "a checkpoint truncated to half",
        object: "checkpoint",
        expect: "stored checkpoint",
        how: Mutation::Truncate(2),
    },
    Damage {
        what: "a checkpoint missing its last byte",
        object: "checkpoint",
        expect: "stored checkpoint",
        how: Mutation::TruncateBy(1),
    },
    Damage {
        what: "a checkpoint signed by another key",
        object: "checkpoint",
        expect: "not signed by this log's key",
        how: Mutation::SignWithAnotherKey,
    },
    Damage {
        what: "a missing right-edge tile",
        object: "tile/0/001.p/44",
        expect: "tile/0/001.p/44 covered by the checkpoint of size 300 is missing",
        how: Mutation::Delete,
    },
    Damage {
        what: "a right-edge tile one hash short",
        object: "tile/0/001.p/44",
        expect: "tile/0/001.p/44 has 1376 bytes, want 1408",
        how: Mutation::TruncateBy(32),
    },
    Damage {
        what: "a deleted checkpoint beside existing tiles",
        object: "checkpoint",
        expect: "no checkpoint",
        how: Mutation::Delete,
    },
];

/// Builds a log of 300 entries under `prefix`, damages it, and checks that opening it
/// fails with a message naming the problem and leaves every object byte-identical.
async fn damaged_log_refuses_to_open(backend: &Backend, prefix: &str, damage: &Damage) {
    let log = backend.log(prefix);
    let writer = log.open(batch(64)).await;
    let receipts = append_concurrently(&writer, 0..300, 16).await;
    drop(writer);
    let mut ids = Vec::new();
    record_indexes(&mut ids, &receipts);
    let before = log.snapshot().await;
    assert!(
        before.contains_key(damage.object),
        "{}: {} not in {:?}",
        damage.what,
        damage.object,
        before.keys().collect::<Vec<_>>()
    );

    let original = log.read(damage.object).await.expect("object exists");
    match damage.how {
        Mutation::FlipByte => {
            let mut data = original.to_vec();
            let at = data.len() / 2;
            data[at] ^= 0x20;
            log.write(damage.object, data).await;
        }
        Mutation::Truncate(divisor) => {
            log.write(damage.object, original.slice(..original.len() / divisor))
                .await;
        }
        Mutation::TruncateBy(n) => {
            log.write(damage.object, original.slice(..original.len() - n))
                .await;
        }
        Mutation::Delete => {
            backend
                .objects
                .delete(&ObjectPath::from(format!(
                    "{}/{}",
                    log.prefix, damage.object
                )))
                .await
                .expect("delete");
        }
        Mutation::SignWithAnotherKey => {
            let note = palisade_tlog::note::Note::parse(&original).expect("checkpoint note");
            let checkpoint = Checkpoint::parse(note.text()).expect("checkpoint");
            let other = SignerKey::generate(&log.origin, KeyType::Ed25519).expect("key");
            let forged = checkpoint.sign(&other).expect("sign");
            log.write(damage.object, forged.to_bytes()).await;
        }
    }
    let damaged = log.snapshot().await;

    let err = match log.start(BatchConfig::default()).await {
        Ok(w) => panic!(
            "{}: the log opened at size {} instead of refusing",
            damage.what,
            w.published().size
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(damage.expect) && err.contains(&log.origin),
        "{}: the refusal should name the log and say {:?}; it says: {err}",
        damage.what,
        damage.expect
    );
    let after = log.snapshot().await;
    assert!(
        after == damaged,
        "{}: a refused open changed storage: {:?}",
        damage.what,
        after
            .iter()
            .filter(|(k, v)| damaged.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(damaged.keys().filter(|k| !after.contains_key(*k)))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------
// Local directory
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn appends_across_tile_boundaries_verify_and_store_exact_tiles() {
    growth_suite(&Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reopened_log_continues_at_its_size_with_the_next_indexes() {
    reopen_suite(&Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_and_oversized_entries_are_refused_and_65535_bytes_accepted() {
    entry_limits_suite(&Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_byte_in_right_edge_tile_refuses_to_open() {
    let backend = Backend::local();
    damaged_log_refuses_to_open(&backend, "l0", &DAMAGES[0]).await;
    damaged_log_refuses_to_open(&backend, "l1", &DAMAGES[1]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_byte_in_partial_entry_bundle_refuses_to_open() {
    damaged_log_refuses_to_open(&Backend::local(), "bundle", &DAMAGES[2]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_checkpoint_refuses_to_open() {
    let backend = Backend::local();
    damaged_log_refuses_to_open(&backend, "half", &DAMAGES[3]).await;
    damaged_log_refuses_to_open(&backend, "short", &DAMAGES[4]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_signed_by_another_key_refuses_to_open() {
    damaged_log_refuses_to_open(&Backend::local(), "forged", &DAMAGES[5]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_short_right_edge_tile_refuses_to_open() {
    let backend = Backend::local();
    damaged_log_refuses_to_open(&backend, "missing", &DAMAGES[6]).await;
    damaged_log_refuses_to_open(&backend, "short", &DAMAGES[7]).await;
}

/// The log key rotates with one origin: signed by both keys, then by the new one
/// alone. A log that skips the overlap refuses to open, and says what to do.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_key_rotates_through_an_overlap_signed_by_both_keys() {
    use palisade_tlog_service::log_keys::LogKeys;
    let backend = Backend::local();
    let log = backend.log("clusters/rotate");
    let writer = log.open(BatchConfig::default()).await;
    append_concurrently(&writer, 0..3, 1).await;
    writer.close().await;
    let old = log.key.clone();
    let new = SignerKey::generate(old.name(), KeyType::Ed25519).expect("key");
    let policy_of = |k: &SignerKey| LogPolicy::new(&log.origin, k.verifier()).expect("policy");

    // Skipping the overlap: the stored checkpoint does not open with the new key.
    let skipped = sequencer::start(
        &log.origin,
        new.clone(),
        log.store.clone(),
        BatchConfig::default(),
        WitnessSet::default(),
    )
    .await;
    match skipped {
        Err(e) => assert!(e.to_string().contains("next_key_file"), "{e}"),
        Ok(_) => panic!("a log opened a checkpoint signed by a key it does not hold"),
    }

    // 1. Both keys: the stored checkpoint is signed again at once; new ones by both.
    let both = LogKeys::new(old.clone(), Some(new.clone())).expect("keys");
    let writer = sequencer::start(
        &log.origin,
        both,
        log.store.clone(),
        BatchConfig::default(),
        WitnessSet::default(),
    )
    .await
    .expect("open with both keys");
    let stored = log.read("checkpoint").await.expect("stored checkpoint");
    policy_of(&new)
        .verify(&stored)
        .expect("the stored checkpoint is signed by the new key right after the start");
    let receipt = writer.append(entry(3)).await.expect("append");
    for k in [&old, &new] {
        TlogProof::parse(&receipt.proof)
            .expect("proof")
            .verify(&entry(3), &policy_of(k))
            .expect("a verifier of either key accepts");
    }
    writer.close().await;

    // 3. The new key alone: the log opens, and the old key vouches for nothing new.
    let writer = sequencer::start(
        &log.origin,
        new.clone(),
        log.store.clone(),
        BatchConfig::default(),
        WitnessSet::default(),
    )
    .await
    .expect("open with the new key");
    assert_eq!(writer.published().size, 4);
    let receipt = writer.append(entry(4)).await.expect("append");
    let proof = TlogProof::parse(&receipt.proof).expect("proof");
    proof
        .verify(&entry(4), &policy_of(&new))
        .expect("the new key verifies");
    assert!(
        proof.verify(&entry(4), &policy_of(&old)).is_err(),
        "a checkpoint signed after the rotation verified with the retired key"
    );
    writer.close().await;
}

/// Without its checkpoint a log has lost its commit point, not its entries: starting a
/// new, empty log there would overwrite the old tiles and sign checkpoints that
/// contradict the ones already published (a fork).
#[tokio::test(flavor = "multi_thread")]
async fn log_with_tiles_but_no_checkpoint_refuses_to_open() {
    damaged_log_refuses_to_open(&Backend::local(), "headless", &DAMAGES[8]).await;
}

// ---------------------------------------------------------------------------------
// S3 (moto)
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn s3_appends_across_tile_boundaries_verify_and_store_exact_tiles() {
    growth_suite(&Backend::s3().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_reopened_log_continues_at_its_size_with_the_next_indexes() {
    reopen_suite(&Backend::s3().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_empty_and_oversized_entries_are_refused_and_65535_bytes_accepted() {
    entry_limits_suite(&Backend::s3().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_corruption_at_rest_refuses_to_open_and_changes_nothing() {
    let backend = Backend::s3().await;
    for (i, damage) in DAMAGES.iter().enumerate() {
        damaged_log_refuses_to_open(&backend, &format!("damage-{i}"), damage).await;
    }
}

/// `close` waits until the sequencer has stopped: it answers what another handle
/// queued before, and ends only once every handle is gone.
#[tokio::test(flavor = "multi_thread")]
async fn close_answers_what_was_queued_and_waits_for_every_handle() {
    let backend = Backend::local();
    let log = backend.log("clusters/close");
    let writer = log.open(BatchConfig::default()).await;
    let other = writer.clone();
    let queued = other.submit(entry(0)).await.expect("queued");
    let closing = tokio::spawn(writer.close());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !closing.is_finished(),
        "closed while another handle could append"
    );
    let more = other
        .append(entry(1))
        .await
        .expect("append after close began");
    assert_eq!(more.index, 1);
    drop(other);
    tokio::time::timeout(std::time::Duration::from_secs(10), closing)
        .await
        .expect("close returns once every handle is gone")
        .expect("close task");
    assert_eq!(
        queued.await.expect("the queued append is answered").index,
        0
    );
    let reopened = log.open(BatchConfig::default()).await;
    assert_eq!(reopened.published().size, 2);
}

// ---------------------------------------------------------------------------------
// The journal (local storage with a publish interval)
// ---------------------------------------------------------------------------------

/// Batches of up to 16, kept in the journal and never published while the test runs
/// (only when the log closes).
fn journaled() -> BatchConfig {
    BatchConfig {
        max_entries: 16,
        max_delay: Duration::from_millis(2),
        publish_interval: Duration::from_secs(3600),
        ..BatchConfig::default()
    }
}

/// Runs `f` in a runtime of its own, then drops that runtime: every task of it stops
/// where it is, as in a crash. Nothing is closed or published.
fn crashing<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let out = rt.block_on(f);
            // Tasks are dropped at their next await; blocking calls already running
            // (a file being written) finish first, so the test sees a settled directory.
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
            out
        })
        .join()
        .expect("the crashing runtime's thread")
    })
}

/// With a journal, a batch is acknowledged once its record is synced, before any of
/// its tiles is in storage. A log that crashes then opens again at the size it
/// acknowledged and writes out what it replayed, serves what storage does not have
/// yet from memory (narrower widths cut from wider ones), and storage holds exactly
/// the tlog-tiles layout once it publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_journal_acknowledged_entries_survive_a_crash_before_storage_has_them() {
    let backend = Backend::local();
    let log = backend.log("clusters/journal");
    let (first, stored) = crashing(async {
        let writer = log.open(journaled()).await;
        let receipts = append_concurrently(&writer, 0..300, 8).await;
        (receipts, log.snapshot().await)
    });
    // Storage has nothing of them: the new log's empty checkpoint and the journal.
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        vec!["checkpoint".to_string(), JOURNAL.to_string()]
    );
    let empty = log
        .policy()
        .verify(&stored["checkpoint"])
        .expect("checkpoint");
    assert_eq!(empty.checkpoint().size(), 0);
    let mut ids = Vec::new();
    record_indexes(&mut ids, &first);
    verify_receipts(&log, &first);

    let writer = log.open(journaled()).await;
    assert_eq!(writer.published().size, 300, "reopened from the journal");
    let next = writer
        .append(entry(300))
        .await
        .expect("append after reopening");
    assert_eq!(next.index, 300);
    record_indexes(&mut ids, &[(300, next)]);
    // On opening, storage got what the journal held: the checkpoint of size 300 and
    // the full tile 0.
    let stored = log.read("checkpoint").await.expect("checkpoint");
    let stored = log.policy().verify(&stored).expect("stored checkpoint");
    assert_eq!(stored.checkpoint().size(), 300);
    let full = TileId::new(0, 0, TILE_WIDTH).expect("id").path();
    assert_eq!(log.read(&full).await.map(|t| t.len()), Some(256 * 32));
    // Tiles from memory: the partial tile 1 (45 hashes) of the entry appended since,
    // and a narrower width of it, which is its start.
    let partial = writer
        .unpublished(&TilePath::Hashes(TileId::new(0, 1, 45).expect("id")))
        .expect("the partial tile, from memory");
    let narrower = writer
        .unpublished(&TilePath::Hashes(TileId::new(0, 1, 10).expect("id")))
        .expect("a narrower width");
    assert_eq!(narrower[..], partial[..10 * 32]);
    let bundle = writer
        .unpublished(&TilePath::Entries(TileId::new(0, 1, 3).expect("id")))
        .expect("a narrower bundle");
    let three: Vec<Bytes> = (256..259).map(|i| entry(ids[i])).collect();
    assert_eq!(parse_bundle(&bundle).expect("bundle"), three);
    assert!(writer
        .unpublished(&TilePath::Hashes(TileId::new(0, 1, 46).expect("id")))
        .is_none());

    writer.close().await;
    check_storage(&log, &ids).await;
    assert_eq!(
        log.read(JOURNAL).await.map(|j| j.len()),
        Some(0),
        "the journal is emptied once storage has everything"
    );
    let reopened = log.open(journaled()).await;
    assert_eq!(reopened.published().size, 301);
}

/// A journal that does not agree with storage or with its own checkpoints is refused,
/// and nothing is changed: a record that skips entries, one whose entries do not
/// recompute its checkpoint, one signed by another key, and a damaged record with
/// more after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_does_not_match_refuses_to_open() {
    let backend = Backend::local();
    let log = backend.log("clusters/journal-damage");
    crashing(async {
        let writer = log.open(journaled()).await;
        append_concurrently(&writer, 0..20, 1).await;
    });
    let good = log.read(JOURNAL).await.expect("journal");
    let (records, _) = journal::decode_all(&good).expect("decode");
    assert!(records.len() >= 2, "one record per batch");
    let encode = |records: &[Record]| -> Bytes {
        Bytes::from(
            records
                .iter()
                .flat_map(journal::encode)
                .collect::<Vec<u8>>(),
        )
    };
    let other_key = SignerKey::generate(&log.origin, KeyType::Ed25519).expect("key");
    let last = records.last().expect("a record").clone();
    let cases: Vec<(&str, Bytes, &str)> = vec![
        (
            "skips the first record",
            encode(&records[1..]),
            "do not follow the stored checkpoint of size 0",
        ),
        (
            "changes an entry",
            encode(&{
                let mut r = records.clone();
                r[0].entries[0] = Bytes::from_static(b"rewritten history");
                r
            }),
            "do not recompute the root",
        ),
        (
            "signs the last checkpoint with another key",
            encode(&{
                let mut r = records.clone();
                let text = palisade_tlog::note::Note::parse(&last.note)
                    .expect("note")
                    .text()
                    .to_string();
                let forged = Checkpoint::parse(&text)
                    .expect("checkpoint")
                    .sign(&other_key)
                    .expect("sign");
                if let Some(l) = r.last_mut() {
                    l.note = Bytes::from(forged.to_bytes());
                }
                r
            }),
            "not signed by this log's key",
        ),
        (
            "is damaged in its first record",
            {
                let mut bytes = good.to_vec();
                bytes[20] ^= 1;
                Bytes::from(bytes)
            },
            "is damaged",
        ),
    ];
    for (what, journal_bytes, want) in cases {
        log.write(JOURNAL, journal_bytes.clone()).await;
        let before = log.snapshot().await;
        let e = match log.start(journaled()).await {
            Err(e) => e.to_string(),
            Ok(w) => panic!(
                "a journal that {what} opened, at size {}",
                w.published().size
            ),
        };
        assert!(e.contains(want), "a journal that {what}: {e}");
        assert_eq!(log.snapshot().await, before, "{what}: storage changed");
    }
    // The good journal still opens, at the size it acknowledged.
    log.write(JOURNAL, good).await;
    let writer = log.open(journaled()).await;
    assert_eq!(writer.published().size, 20);
}

/// A journal left by a run with a publish interval is replayed by a run without one:
/// its records were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_is_replayed_even_when_the_log_now_runs_without_one() {
    let backend = Backend::local();
    let log = backend.log("clusters/journal-off");
    let acknowledged = crashing(async {
        let writer = log.open(journaled()).await;
        append_concurrently(&writer, 0..40, 4).await
    });
    let mut ids = Vec::new();
    record_indexes(&mut ids, &acknowledged);
    let writer = log.open(BatchConfig::default()).await;
    assert_eq!(writer.published().size, 40);
    let next = writer.append(entry(40)).await.expect("append");
    assert_eq!(next.index, 40);
    record_indexes(&mut ids, &[(40, next)]);
    writer.close().await;
    check_storage(&log, &ids).await;
}

// ---------------------------------------------------------------------------------
// Witnesses across a restart
// ---------------------------------------------------------------------------------

/// A tlog-witness that keeps its state in memory and records every request's old and
/// new size and the status it answered.
struct RecordingWitness {
    key: SignerKey,
    log_key: palisade_tlog::note::VerifierKey,
    state: std::sync::Mutex<Option<palisade_tlog::witness::WitnessState>>,
    answers: std::sync::Mutex<Vec<(u64, u64, u16)>>,
}

impl RecordingWitness {
    /// A recording witness for `log`, served on a loopback port: it, its key, its URL.
    async fn serve(log: &TestLog) -> (Arc<RecordingWitness>, SignerKey, String) {
        let key = SignerKey::generate("witness.test/recording", KeyType::Cosignature)
            .expect("witness key");
        let witness = Arc::new(RecordingWitness {
            key: key.clone(),
            log_key: log.key.verifier(),
            state: std::sync::Mutex::new(None),
            answers: std::sync::Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route(
                "/add-checkpoint",
                axum::routing::post(recording_witness_add),
            )
            .with_state(witness.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (witness, key, url)
    }
}

async fn recording_witness_add(
    axum::extract::State(w): axum::extract::State<Arc<RecordingWitness>>,
    body: Bytes,
) -> (axum::http::StatusCode, String) {
    use palisade_tlog::witness::{add_checkpoint, AddCheckpointRequest};
    let Ok(req) = AddCheckpointRequest::parse(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, String::new());
    };
    let mut state = w.state.lock().expect("state");
    let answer = add_checkpoint(
        &req,
        Some(std::slice::from_ref(&w.log_key)),
        *state,
        &w.key,
        // The witness's clock, as a real one cosigns.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let (status, text) = match answer {
        Ok(cosigned) => {
            *state = Some(cosigned.state);
            (200, cosigned.response_body())
        }
        Err(refusal) => (
            refusal.status(),
            refusal.body().map(|(_, b)| b).unwrap_or_default(),
        ),
    };
    w.answers
        .lock()
        .expect("answers")
        .push((req.old_size(), req.checkpoint().size(), status));
    (
        axum::http::StatusCode::from_u16(status).expect("status"),
        text,
    )
}

/// An idle log is cosigned again every `max_checkpoint_interval`: the same tree, with
/// fresh cosignature timestamps, stored and published; so a log that stopped
/// checkpointing (frozen, or withheld) shows its age to whoever checks it.
///
/// With a journal, a refresh of the tree storage already holds rewrites only the
/// public checkpoint (without fsync); the same reader sees the same freshness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_log_is_cosigned_again_every_interval() {
    idle_log_is_cosigned_again(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_journaled_log_is_cosigned_again_every_interval() {
    idle_log_is_cosigned_again(Duration::from_millis(200)).await;
}

async fn idle_log_is_cosigned_again(publish_interval: Duration) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = Backend::local();
    let log = backend.log("clusters/idle");
    let (witness, witness_key, url) = RecordingWitness::serve(&log).await;
    // Refreshes every second, cosigned by the recording witness.
    let start = || {
        sequencer::start(
            &log.origin,
            log.key.clone(),
            log.store.clone(),
            BatchConfig {
                max_checkpoint_interval: Duration::from_secs(1),
                publish_interval,
                ..BatchConfig::default()
            },
            WitnessSet {
                clients: vec![palisade_tlog_service::witness_client::WitnessClient::new(
                    "recording",
                    &url,
                    witness_key.verifier(),
                    reqwest::Client::new(),
                )],
                quorum: 1,
            },
        )
    };
    let writer = start().await.expect("open");
    let policy = LogPolicy::new(&log.origin, log.key.verifier())
        .and_then(|p| p.with_witnesses(vec![witness_key.verifier()], 1))
        .expect("policy");
    let cosigned_at = |note: &[u8]| {
        policy
            .verify(note)
            .expect("a witnessed checkpoint")
            .cosignatures()[0]
            .timestamp()
    };
    writer.append(entry(0)).await.expect("append");
    let first = writer.published();
    let first_at = cosigned_at(&first.note);
    // No append for 3.5 s.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let later = writer.published();
    assert_eq!(later.size, 1, "nothing was appended");
    let later_at = cosigned_at(&later.note);
    assert!(
        later_at >= first_at + 2,
        "cosigned at {first_at}, and still only at {later_at} after 3.5 idle seconds"
    );
    // The same tree each time (old size = new size = 1), every request cosigned.
    let answers = witness.answers.lock().expect("answers").clone();
    let refreshes = answers
        .iter()
        .filter(|&&(old, new, _)| old == 1 && new == 1)
        .count();
    assert!(refreshes >= 2, "{answers:?}");
    assert!(
        answers.iter().all(|&(_, _, status)| status == 200),
        "{answers:?}"
    );
    // And storage holds the fresh one: a reader sees the log's age.
    let stored = log
        .store
        .read("checkpoint")
        .await
        .expect("read")
        .expect("stored");
    assert!(cosigned_at(&stored) >= first_at + 2);
    // The commit point holds the same tree.
    let commit = log
        .store
        .read(sequencer::COMMIT_CHECKPOINT)
        .await
        .expect("read")
        .expect("stored");
    let tree = |note: &[u8]| {
        let text = String::from_utf8_lossy(note).into_owned();
        text.lines().take(3).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(tree(&commit), tree(&stored));
    if !publish_interval.is_zero() {
        // Refreshes left the durable commit point alone.
        assert!(
            cosigned_at(&commit) < cosigned_at(&stored),
            "the commit point was rewritten by a refresh"
        );
    }
    writer.close().await;
    if publish_interval.is_zero() {
        return;
    }
    // A power loss right after a refresh may leave the public checkpoint empty: the
    // log starts again from its commit point and publishes a cosigned checkpoint.
    log.store
        .write("checkpoint", Bytes::new())
        .await
        .expect("damage the checkpoint");
    let writer = start()
        .await
        .expect("a damaged public checkpoint does not stop the log");
    assert_eq!(writer.published().size, 1);
    let mut repaired = None;
    for _ in 0..50 {
        if let Some(b) = log.store.read("checkpoint").await.expect("read") {
            if !b.is_empty() {
                repaired = Some(b);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repaired = repaired.expect("the public checkpoint is written again");
    assert_eq!(tree(&repaired), tree(&commit));
    assert!(cosigned_at(&repaired) >= cosigned_at(&stored));
    writer.close().await;
}

/// A restarted log sends each witness the size it last cosigned (learned from the
/// cosigned checkpoint in storage), not 0: the witness never sees what looks like a
/// rollback and answers every request with a cosignature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_log_sends_the_witness_its_true_last_size() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = Backend::local();
    let log = backend.log("clusters/witnessed");
    let (witness, witness_key, url) = RecordingWitness::serve(&log).await;
    let witnesses = || WitnessSet {
        clients: vec![palisade_tlog_service::witness_client::WitnessClient::new(
            "recording",
            &url,
            witness_key.verifier(),
            reqwest::Client::new(),
        )],
        quorum: 1,
    };
    let start = |set: WitnessSet| {
        sequencer::start(
            &log.origin,
            log.key.clone(),
            log.store.clone(),
            BatchConfig::default(),
            set,
        )
    };

    let writer = start(witnesses()).await.expect("open");
    for i in 0..5 {
        writer.append(entry(i)).await.expect("append");
    }
    writer.close().await;
    let before_restart = witness.answers.lock().expect("answers").len();

    let writer = start(witnesses()).await.expect("reopen");
    for i in 5..8 {
        writer
            .append(entry(i))
            .await
            .expect("append after the restart");
    }
    writer.close().await;

    let answers = witness.answers.lock().expect("answers").clone();
    assert!(
        answers.len() > before_restart,
        "the restarted log asked the witness"
    );
    assert!(
        answers.iter().all(|&(_, _, status)| status == 200),
        "the witness refused a request: (old, new, status) = {answers:?}"
    );
    let after = answers
        .get(before_restart)
        .expect("a request after the restart");
    assert_eq!(
        after.0, 5,
        "the first request after the restart starts from size 5: {answers:?}"
    );
}
