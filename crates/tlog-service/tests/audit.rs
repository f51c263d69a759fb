//! The customer's verifier against real logs written by the sequencer: every object a
//! checkpoint covers is checked, damage and deletions are named, forks and rollbacks
//! against the customer's saved state are caught, and offline proofs round-trip.
//!
//! The damage, deletion, fork and rollback suites run on a local directory and on an
//! S3-compatible bucket (moto) with the same test bodies (the `s3_` tests). On S3 the
//! sequencer writes to the bucket through `TileStore::s3`, damage is done through
//! `object_store`, and the verifier reads the bucket the way a customer reads a static
//! mirror: plain, unsigned HTTP GETs (`Source::url`) of a bucket whose policy lets
//! anyone read its objects. The S3 tests start moto (PyPI `moto[server]`) on a
//! loopback port; without it they fail, they never skip.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use palisade_tlog::checkpoint::{Checkpoint, LogPolicy};
use palisade_tlog::hash::{empty_root, leaf_hash, Hash};
use palisade_tlog::note::{KeyType, Note, SignerKey};
use palisade_tlog::tile::tiles_for_size;
use palisade_tlog_service::audit::{
    check_proof, produce_proof, verify, AuditError, AuditReport, ProofSubject, Source, TrustedState,
};
use palisade_tlog_service::sequencer::{self, BatchConfig, LogWriter, WitnessSet};
use palisade_tlog_service::store::TileStore;
use support::Moto;

const ORIGIN: &str = "palisade.test/clusters/c1";

fn entry(i: u64) -> Bytes {
    // Varying lengths, so bundle offsets differ from entry to entry.
    Bytes::from(format!("event {i} {}", "x".repeat((i % 37) as usize)))
}

fn forked_entry(i: u64) -> Bytes {
    Bytes::from(format!("rewritten event {i}"))
}

async fn open_log(dir: &Path, key: &SignerKey) -> LogWriter {
    sequencer::start(
        ORIGIN,
        key.clone(),
        TileStore::local(dir).unwrap(),
        BatchConfig::default(),
        WitnessSet::default(),
    )
    .await
    .unwrap()
}

/// Appends entries `from..to` (made by `make`), concurrently in chunks, and checks
/// that each landed at its own index.
async fn append(log: &LogWriter, from: u64, to: u64, make: fn(u64) -> Bytes) {
    let mut next = from;
    while next < to {
        let end = (next + 100).min(to);
        // Submitted one after another (so in order), acknowledged together.
        let mut acks = Vec::new();
        for i in next..end {
            acks.push(log.submit(make(i)).await.unwrap());
        }
        let receipts = futures::future::join_all(acks).await;
        for (i, r) in (next..end).zip(receipts) {
            assert_eq!(r.unwrap().index, i, "entries must land in order");
        }
        next = end;
    }
    assert_eq!(log.published().size, to);
}

fn policy(key: &SignerKey) -> LogPolicy {
    LogPolicy::new(ORIGIN, key.verifier()).unwrap()
}

fn log_key() -> SignerKey {
    SignerKey::generate(ORIGIN, KeyType::Ed25519).unwrap()
}

async fn verify_dir(
    dir: &Path,
    policy: &LogPolicy,
    previous: Option<&TrustedState>,
) -> Result<AuditReport, AuditError> {
    verify(&Source::dir(dir).unwrap(), policy, previous, |_, _| {}).await
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every object the checkpoint of `size` commits to.
fn covered_objects(size: u64) -> BTreeSet<String> {
    let mut out = BTreeSet::from(["checkpoint".to_owned()]);
    for tile in tiles_for_size(size) {
        out.insert(tile.path());
        if tile.level() == 0 {
            out.insert(tile.entries_path());
        }
    }
    out
}

fn flip(path: &Path, at: usize) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut changed = original.clone();
    changed[at] ^= 0x01;
    std::fs::write(path, changed).unwrap();
    original
}

// ---------------------------------------------------------------------------------
// Backends: a local directory, or a moto bucket read over plain HTTP.

/// Where the suites' logs live. Each log has its own directory (local) or prefix
/// (S3); the customer's state files always live in a local scratch directory.
struct AuditBackend {
    tmp: tempfile::TempDir,
    s3: Option<Bucket>,
}

struct Bucket {
    moto: Moto,
    name: String,
    store: TileStore,
    objects: Arc<dyn ObjectStore>,
}

impl AuditBackend {
    fn local() -> AuditBackend {
        AuditBackend {
            tmp: tempfile::tempdir().unwrap(),
            s3: None,
        }
    }

    /// A moto bucket that anyone may read, like a public static mirror.
    async fn s3() -> AuditBackend {
        let moto = Moto::start();
        let name = "palisade-logs".to_owned();
        moto.create_bucket(&name).await;
        moto.allow_public_reads(&name).await;
        AuditBackend {
            tmp: tempfile::tempdir().unwrap(),
            s3: Some(Bucket {
                store: moto.tile_store(&name),
                objects: moto.objects(&name),
                name,
                moto,
            }),
        }
    }

    /// A local directory for the customer's own files (state files).
    fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    /// The log named `name`: directory `<tmp>/logs/<name>`, or prefix `<name>/` of the
    /// bucket.
    fn log(&self, name: &str) -> AuditLog {
        match &self.s3 {
            None => AuditLog::Dir(self.tmp.path().join("logs").join(name)),
            Some(bucket) => AuditLog::Bucket {
                store: bucket.store.at(name),
                objects: bucket.objects.clone(),
                prefix: name.to_owned(),
                url: format!("{}/{}/{name}", bucket.moto.endpoint, bucket.name),
            },
        }
    }
}

/// One log's storage, with the reads and the damage the suites need: through
/// `std::fs` on a directory, through `object_store` on a bucket.
enum AuditLog {
    Dir(PathBuf),
    Bucket {
        /// Where the sequencer writes.
        store: TileStore,
        /// The same bucket, to list and change objects.
        objects: Arc<dyn ObjectStore>,
        prefix: String,
        /// Where the customer reads: `http://127.0.0.1:<port>/<bucket>/<prefix>`.
        url: String,
    },
}

impl AuditLog {
    /// The sequencer writing this log.
    async fn open(&self, key: &SignerKey) -> LogWriter {
        let store = match self {
            AuditLog::Dir(dir) => TileStore::local(dir).unwrap(),
            AuditLog::Bucket { store, .. } => store.clone(),
        };
        sequencer::start(
            ORIGIN,
            key.clone(),
            store,
            BatchConfig::default(),
            WitnessSet::default(),
        )
        .await
        .unwrap()
    }

    /// The log as the customer's verifier reads it.
    fn source(&self) -> Source {
        match self {
            AuditLog::Dir(dir) => Source::dir(dir).unwrap(),
            AuditLog::Bucket { url, .. } => Source::url(url, None, None).unwrap(),
        }
    }

    async fn verify(
        &self,
        policy: &LogPolicy,
        previous: Option<&TrustedState>,
    ) -> Result<AuditReport, AuditError> {
        verify(&self.source(), policy, previous, |_, _| {}).await
    }

    fn path(prefix: &str, rel: &str) -> ObjectPath {
        ObjectPath::from(format!("{prefix}/{rel}"))
    }

    /// Every object of the log, relative to its directory or prefix, sorted. On S3
    /// only the objects under the log's prefix.
    async fn list(&self) -> Vec<String> {
        match self {
            AuditLog::Dir(dir) => files_under(dir),
            AuditLog::Bucket {
                objects, prefix, ..
            } => {
                let mut listing = objects.list(Some(&ObjectPath::from(prefix.as_str())));
                let mut out = Vec::new();
                while let Some(meta) = listing.next().await {
                    let key = meta.unwrap().location.to_string();
                    let rel = key
                        .strip_prefix(&format!("{prefix}/"))
                        .unwrap_or_else(|| panic!("listed {key} outside {prefix}/"));
                    out.push(rel.to_owned());
                }
                out.sort();
                out
            }
        }
    }

    /// The bytes of object `rel`, which must exist.
    async fn read(&self, rel: &str) -> Vec<u8> {
        match self {
            AuditLog::Dir(dir) => std::fs::read(dir.join(rel)).unwrap(),
            AuditLog::Bucket {
                objects, prefix, ..
            } => {
                let got = objects.get(&Self::path(prefix, rel)).await;
                let got = got.unwrap_or_else(|e| panic!("read {rel}: {e}"));
                got.bytes().await.unwrap().to_vec()
            }
        }
    }

    async fn write(&self, rel: &str, data: Vec<u8>) {
        match self {
            AuditLog::Dir(dir) => {
                let path = dir.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, data).unwrap();
            }
            AuditLog::Bucket {
                objects, prefix, ..
            } => {
                objects
                    .put(&Self::path(prefix, rel), PutPayload::from(data))
                    .await
                    .unwrap_or_else(|e| panic!("write {rel}: {e}"));
            }
        }
    }

    async fn delete(&self, rel: &str) {
        match self {
            AuditLog::Dir(dir) => std::fs::remove_file(dir.join(rel)).unwrap(),
            AuditLog::Bucket {
                objects, prefix, ..
            } => objects
                .delete(&Self::path(prefix, rel))
                .await
                .unwrap_or_else(|e| panic!("delete {rel}: {e}")),
        }
    }

    /// Flips the lowest bit of byte `at` of `rel`; returns the original bytes.
    async fn flip(&self, rel: &str, at: usize) -> Vec<u8> {
        let original = self.read(rel).await;
        let mut changed = original.clone();
        changed[at] ^= 0x01;
        self.write(rel, changed).await;
        original
    }

    /// Copies every object of this log to `to` (a snapshot of the log as it is now).
    async fn copy_to(&self, to: &AuditLog) {
        for rel in self.list().await {
            match (self, to) {
                (
                    AuditLog::Bucket {
                        objects, prefix, ..
                    },
                    AuditLog::Bucket {
                        prefix: to_prefix, ..
                    },
                ) => objects
                    .copy(&Self::path(prefix, &rel), &Self::path(to_prefix, &rel))
                    .await
                    .unwrap_or_else(|e| panic!("copy {rel}: {e}")),
                _ => to.write(&rel, self.read(&rel).await).await,
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The suites, each run on both backends.

async fn tile_boundaries_suite(b: &AuditBackend) {
    let key = log_key();
    let stored = b.log("log");
    let log = stored.open(&key).await;
    let policy = policy(&key);

    let mut from = 0;
    for size in [0u64, 1, 255, 256, 257, 511, 512, 700] {
        append(&log, from, size, entry).await;
        from = size;
        let mut calls = Vec::new();
        let report = verify(&stored.source(), &policy, None, |done, total| {
            calls.push((done, total))
        })
        .await
        .unwrap_or_else(|e| panic!("size {size}: {e}"));
        assert_eq!(report.size, size);
        assert_eq!(report.entries_checked, size);
        assert_eq!(report.origin, ORIGIN);
        assert_eq!(report.tiles_checked, tiles_for_size(size).count() as u64);
        assert_eq!(report.bundles_checked, size.div_ceil(256));
        let mut tree = palisade_tlog::tree::Frontier::new();
        for i in 0..size {
            tree.append(leaf_hash(&entry(i))).unwrap();
        }
        assert_eq!(report.root, tree.root());
        assert_eq!(report.state.size, size);
        assert_eq!(report.state.root, tree.root());
        assert!(report.cosignatures.is_empty());
        assert_eq!(calls.last().copied(), (size > 0).then_some((size, size)));
        assert!(calls.windows(2).all(|w| w[0].0 < w[1].0));
    }
    let empty = b.log("empty");
    let _empty_log = empty.open(&key).await;
    let report = empty.verify(&policy, None).await.unwrap();
    assert_eq!((report.size, report.root), (0, empty_root()));
}

async fn flipped_byte_suite(b: &AuditBackend) {
    let key = log_key();
    let stored = b.log("log");
    let log = stored.open(&key).await;
    append(&log, 0, 700, entry).await;
    drop(log);
    let policy = policy(&key);
    stored.verify(&policy, None).await.unwrap();

    let covered = covered_objects(700);
    let on_disk = stored.list().await;
    for object in &covered {
        assert!(on_disk.contains(object), "{object} was not written");
    }
    let mut flips = 0;
    for rel in &on_disk {
        if !covered.contains(rel) {
            // Partial tiles and bundles of earlier sizes: outside what the checkpoint
            // commits to (see the module docs of `audit`).
            assert!(rel.contains(".p/"), "unexpected object {rel}");
            continue;
        }
        let len = stored.read(rel).await.len();
        let positions: Vec<usize> = if rel == "checkpoint" {
            (0..len).collect()
        } else {
            vec![0, 1, len / 2, len - 1]
        };
        for at in positions {
            let original = stored.flip(rel, at).await;
            let err = stored
                .verify(&policy, None)
                .await
                .err()
                .unwrap_or_else(|| panic!("flipping byte {at} of {rel} went unnoticed"));
            assert!(
                err.to_string().contains(rel.as_str()),
                "flipping byte {at} of {rel}: the error does not name it: {err}"
            );
            stored.write(rel, original).await;
            flips += 1;
        }
    }
    assert!(flips > covered.len() * 4);
    stored.verify(&policy, None).await.unwrap();
}

async fn missing_object_suite(b: &AuditBackend) {
    let key = log_key();
    let stored = b.log("log");
    let log = stored.open(&key).await;
    append(&log, 0, 700, entry).await;
    drop(log);
    let policy = policy(&key);
    for rel in [
        "tile/0/001",
        "tile/0/002.p/188",
        "tile/1/000.p/2",
        "tile/entries/000",
        "tile/entries/002.p/188",
    ] {
        let original = stored.read(rel).await;
        stored.delete(rel).await;
        let err = stored.verify(&policy, None).await.unwrap_err();
        assert!(
            matches!(&err, AuditError::Missing { object, .. } if object == rel),
            "{rel}: {err}"
        );
        assert!(err.to_string().contains("missing"), "{err}");
        stored.write(rel, original).await;
    }
    stored.delete("checkpoint").await;
    let err = stored.verify(&policy, None).await.unwrap_err();
    assert!(matches!(err, AuditError::NoCheckpoint { .. }), "{err}");
}

async fn deleted_partial_tile_suite(b: &AuditBackend) {
    // tlog-tiles lets a log delete a partial tile once the full one exists; a
    // verifier holding an older checkpoint must still work.
    let key = log_key();
    let stored = b.log("log");
    let log = stored.open(&key).await;
    append(&log, 0, 200, entry).await;
    let old_checkpoint = stored.read("checkpoint").await;
    append(&log, 200, 300, entry).await;
    drop(log);
    stored.write("checkpoint", old_checkpoint).await;
    stored.delete("tile/0/000.p/200").await;
    stored.delete("tile/entries/000.p/200").await;
    let report = stored.verify(&policy(&key), None).await.unwrap();
    assert_eq!(report.size, 200);
}

async fn fork_and_rollback_suite(b: &AuditBackend) {
    let (log_a, log_fork, log_snapshot) = (b.log("a"), b.log("fork"), b.log("snapshot"));
    let state_path = b.scratch().join("c1.state.json");
    let key = log_key();
    let policy = policy(&key);

    // First run at size 300: trust on first use.
    let log = log_a.open(&key).await;
    append(&log, 0, 300, entry).await;
    assert_eq!(TrustedState::load(&state_path).unwrap(), None);
    let first = log_a.verify(&policy, None).await.unwrap();
    first.state.save(&state_path).unwrap();
    let at_300 = TrustedState::load(&state_path).unwrap().unwrap();
    assert_eq!(at_300, first.state);
    log_a.copy_to(&log_snapshot).await;

    // The log grows; the next run proves it only appended.
    append(&log, 300, 700, entry).await;
    drop(log);
    let second = log_a.verify(&policy, Some(&at_300)).await.unwrap();
    assert_eq!(second.consistent_with.as_ref(), Some(&at_300));
    assert_eq!(second.size, 700);
    second.state.save(&state_path).unwrap();
    let at_700 = TrustedState::load(&state_path).unwrap().unwrap();
    // Same size again is fine too.
    log_a.verify(&policy, Some(&at_700)).await.unwrap();

    // A second history signed by the same key: entries 0..150 agree, then differ.
    let fork = log_fork.open(&key).await;
    append(&fork, 0, 150, entry).await;
    append(&fork, 150, 400, forked_entry).await;
    drop(fork);
    // On its own the forked log is a perfectly valid log...
    log_fork.verify(&policy, None).await.unwrap();
    // ...but not one that extends what the customer verified before.
    let err = log_fork.verify(&policy, Some(&at_300)).await.unwrap_err();
    assert!(
        matches!(err, AuditError::Fork { trusted: 300, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("fork: the log rewrote history"));
    let err = log_fork.verify(&policy, Some(&at_700)).await.unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::RolledBack {
                trusted: 700,
                size: 400,
                ..
            }
        ),
        "{err}"
    );

    // A fork at exactly the trusted size.
    let same_size = TrustedState {
        size: 400,
        ..at_300.clone()
    };
    let err = log_fork
        .verify(&policy, Some(&same_size))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuditError::Fork { trusted: 400, .. }),
        "{err}"
    );

    // The log served from an old snapshot: rolled back.
    let err = log_snapshot
        .verify(&policy, Some(&at_700))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");

    // A state file for another log is refused.
    let other = TrustedState {
        origin: "palisade.test/clusters/other".into(),
        ..at_300
    };
    let err = log_a.verify(&policy, Some(&other)).await.unwrap_err();
    assert!(matches!(err, AuditError::StateOrigin { .. }), "{err}");
}

// ---------------------------------------------------------------------------------
// On a local directory.

#[tokio::test(flavor = "multi_thread")]
async fn verifies_a_log_at_every_tile_boundary() {
    tile_boundaries_suite(&AuditBackend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_any_object_the_checkpoint_covers_is_named() {
    flipped_byte_suite(&AuditBackend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_tile_or_bundle_is_named() {
    let backend = AuditBackend::local();
    missing_object_suite(&backend).await;
    let err = Source::dir(&backend.scratch().join("no-such-dir"))
        .err()
        .unwrap();
    assert!(matches!(err, AuditError::NotADirectory { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_partial_tile_is_read_from_its_full_successor() {
    deleted_partial_tile_suite(&AuditBackend::local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_file_proves_growth_and_catches_fork_and_rollback() {
    fork_and_rollback_suite(&AuditBackend::local()).await;
}

// ---------------------------------------------------------------------------------
// On S3 (moto), read over plain HTTP like a static mirror.

#[tokio::test(flavor = "multi_thread")]
async fn s3_verifies_a_log_at_every_tile_boundary() {
    tile_boundaries_suite(&AuditBackend::s3().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_a_flipped_byte_in_any_object_the_checkpoint_covers_is_named() {
    flipped_byte_suite(&AuditBackend::s3().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_a_missing_tile_or_bundle_is_named() {
    let backend = AuditBackend::s3().await;
    missing_object_suite(&backend).await;
    // A prefix that holds no log: nothing to serve.
    let err = backend
        .log("no-such-log")
        .verify(&policy(&log_key()), None)
        .await;
    assert!(
        matches!(err, Err(AuditError::NoCheckpoint { .. })),
        "{:?}",
        err.map(|r| r.size)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_a_deleted_partial_tile_is_read_from_its_full_successor() {
    deleted_partial_tile_suite(&AuditBackend::s3().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_state_file_proves_growth_and_catches_fork_and_rollback() {
    fork_and_rollback_suite(&AuditBackend::s3().await).await;
}

#[test]
fn state_file_is_written_atomically_and_read_strictly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.json");
    let state = TrustedState {
        origin: ORIGIN.into(),
        size: 42,
        root: leaf_hash(b"x"),
    };
    state.save(&path).unwrap();
    state.save(&path).unwrap();
    assert_eq!(TrustedState::load(&path).unwrap(), Some(state));
    assert_eq!(files_under(tmp.path()), vec!["state.json".to_owned()]);

    for bad in [
        "not json",
        r#"{"format":"palisade-audit-state/v9","origin":"o","size":1,"root":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#,
        r#"{"format":"palisade-audit-state/v1","origin":"o","size":1,"root":"short"}"#,
        r#"{"format":"palisade-audit-state/v1","origin":"o","size":1,"root":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","extra":1}"#,
    ] {
        std::fs::write(&path, bad).unwrap();
        let err = TrustedState::load(&path).unwrap_err();
        assert!(
            matches!(&err, AuditError::State { path: p, .. } if *p == path),
            "{err}"
        );
    }
}

/// Adds a witness cosignature to the checkpoint stored in `dir`.
fn cosign_stored_checkpoint(dir: &Path, witness: &SignerKey, timestamp: u64) {
    let path = dir.join("checkpoint");
    let mut note = Note::parse(&std::fs::read(&path).unwrap()).unwrap();
    let checkpoint = Checkpoint::parse(note.text()).unwrap();
    note.add_signature(checkpoint.cosign(witness, timestamp).unwrap())
        .unwrap();
    std::fs::write(path, note.to_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn witnesses_and_keys_are_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let key = log_key();
    let log = open_log(tmp.path(), &key).await;
    append(&log, 0, 20, entry).await;
    drop(log);
    let witness = SignerKey::generate("witness.test/w1", KeyType::Cosignature).unwrap();
    let with_witness = policy(&key)
        .with_witnesses(vec![witness.verifier()], 1)
        .unwrap();

    // Not cosigned: refused.
    let err = verify_dir(tmp.path(), &with_witness, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuditError::Checkpoint { .. }) && err.to_string().contains("witness"),
        "{err}"
    );

    // Cosigned: accepted, and the cosignature is reported.
    cosign_stored_checkpoint(tmp.path(), &witness, 1_750_000_000);
    let report = verify_dir(tmp.path(), &with_witness, None).await.unwrap();
    assert_eq!(report.cosignatures.len(), 1);
    assert_eq!(report.cosignatures[0].name, "witness.test/w1");
    assert_eq!(report.cosignatures[0].timestamp, 1_750_000_000);

    // Another log key, or another origin: refused.
    let err = verify_dir(tmp.path(), &policy(&log_key()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    let other_origin = LogPolicy::new("palisade.test/clusters/c2", key.verifier()).unwrap();
    let err = verify_dir(tmp.path(), &other_origin, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("clusters/c2"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn proofs_round_trip_and_tampering_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let key = log_key();
    let log = open_log(tmp.path(), &key).await;
    append(&log, 0, 700, entry).await;
    drop(log);
    let policy = policy(&key);
    let source = Source::dir(tmp.path()).unwrap();

    for index in [0u64, 1, 255, 256, 511, 512, 699] {
        let produced = produce_proof(&source, &policy, index).await.unwrap();
        assert_eq!(produced.entry, entry(index));
        assert_eq!(produced.checkpoint.checkpoint().size(), 700);
        let file = produced.proof.to_bytes();
        let checked = check_proof(&file, ProofSubject::Entry(&entry(index)), &policy).unwrap();
        assert_eq!(checked.index, index);
        assert_eq!(checked.checkpoint.checkpoint().size(), 700);
        check_proof(
            &file,
            ProofSubject::LeafHash(leaf_hash(&entry(index))),
            &policy,
        )
        .unwrap();

        // Another entry, a changed index, a changed proof hash, another key.
        let err = check_proof(&file, ProofSubject::Entry(&entry(index + 1)), &policy).unwrap_err();
        assert!(err.to_string().contains("not included"), "{err}");
        let text = String::from_utf8(file.clone()).unwrap();
        let moved = text.replacen(
            &format!("index {index}\n"),
            &format!("index {}\n", index + 1),
            1,
        );
        assert!(check_proof(
            moved.as_bytes(),
            ProofSubject::Entry(&entry(index)),
            &policy
        )
        .is_err());
        let first_hash = text.lines().nth(2).unwrap();
        let forged = text.replacen(first_hash, &Hash([7; 32]).to_base64(), 1);
        assert!(check_proof(
            forged.as_bytes(),
            ProofSubject::Entry(&entry(index)),
            &policy
        )
        .is_err());
        assert!(check_proof(
            &file,
            ProofSubject::Entry(&entry(index)),
            &LogPolicy::new(ORIGIN, log_key().verifier()).unwrap()
        )
        .is_err());
    }
    let err = produce_proof(&source, &policy, 700).await.unwrap_err();
    assert!(matches!(err, AuditError::IndexOutOfRange { .. }), "{err}");

    // Every byte of a proof file matters.
    let file = produce_proof(&source, &policy, 300)
        .await
        .unwrap()
        .proof
        .to_bytes();
    for at in 0..file.len() {
        let mut tampered = file.clone();
        tampered[at] ^= 0x01;
        assert!(
            check_proof(&tampered, ProofSubject::Entry(&entry(300)), &policy).is_err(),
            "flipping byte {at} of the proof file went unnoticed"
        );
    }

    // A tile that does not match the checkpoint cannot be turned into a proof.
    let tile = tmp.path().join("tile/0/001");
    flip(&tile, 40);
    let err = produce_proof(&source, &policy, 300).await.unwrap_err();
    assert!(matches!(err, AuditError::ProofTiles { .. }), "{err}");
}

// ---------------------------------------------------------------------------------
// Over HTTPS, with a private CA and a bearer token.

mod https_source {
    use super::*;
    use axum::extract::Path as UrlPath;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use palisade_pki::{CertName, ClientAuth, Role};

    const TOKEN: &str = "tenant-c1-secret";

    /// Serves `dir` at `https://127.0.0.1:<port>/logs/c1/…` to holders of [`TOKEN`].
    async fn serve(dir: PathBuf, pki: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
        palisade_pki::init_ca(pki, false).unwrap();
        let name = CertName::new("log").unwrap();
        let issued = palisade_pki::issue(pki, Role::Log, &name, &[], 30, false).unwrap();
        let tls = palisade_pki::server_config(
            &pki.join("ca.crt"),
            &issued.cert,
            &issued.key,
            ClientAuth::Optional,
        )
        .unwrap();
        let router = axum::Router::new().route(
            "/logs/c1/{*rest}",
            get(move |UrlPath(rest): UrlPath<String>, headers: HeaderMap| {
                let dir = dir.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if auth != Some(&format!("Bearer {TOKEN}")) {
                        return (StatusCode::FORBIDDEN, Vec::new());
                    }
                    if rest.split('/').any(|part| part == "..") {
                        return (StatusCode::BAD_REQUEST, Vec::new());
                    }
                    match tokio::fs::read(dir.join(rest)).await {
                        Ok(body) => (StatusCode::OK, body),
                        Err(_) => (StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(palisade_tlog_service::https::serve(
            listener,
            tls,
            router,
            async move {
                let _ = stopped.await;
            },
        ));
        (format!("https://127.0.0.1:{port}/logs/c1/"), stop)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn verifies_and_proves_over_https_with_a_private_ca_and_token() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, pki) = (tmp.path().join("log"), tmp.path().join("pki"));
        let key = log_key();
        let log = open_log(&dir, &key).await;
        append(&log, 0, 300, entry).await;
        drop(log);
        let policy = policy(&key);
        let (url, _stop) = serve(dir.clone(), &pki).await;
        let ca = pki.join("ca.crt");

        let source = Source::url(&url, Some(TOKEN), Some(&ca)).unwrap();
        let report = verify(&source, &policy, None, |_, _| {}).await.unwrap();
        assert_eq!(report.size, 300);
        assert_eq!(report.tiles_checked, tiles_for_size(300).count() as u64);
        let produced = produce_proof(&source, &policy, 299).await.unwrap();
        assert_eq!(produced.entry, entry(299));

        // Damage is named the same way as on disk.
        let original = flip(&dir.join("tile/entries/000"), 100);
        let err = verify(&source, &policy, None, |_, _| {}).await.unwrap_err();
        assert!(err.to_string().contains("tile/entries/000"), "{err}");
        std::fs::write(dir.join("tile/entries/000"), original).unwrap();

        // A wrong token is refused by the server, and said so.
        let wrong = Source::url(&url, Some("guess"), Some(&ca)).unwrap();
        let err = verify(&wrong, &policy, None, |_, _| {}).await.unwrap_err();
        assert!(
            matches!(err, AuditError::Refused { status: 403, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--token"));

        // A server that does not chain to the given CA is not trusted.
        let other_pki = tmp.path().join("other-pki");
        palisade_pki::init_ca(&other_pki, false).unwrap();
        let untrusted = Source::url(&url, Some(TOKEN), Some(&other_pki.join("ca.crt"))).unwrap();
        let err = verify(&untrusted, &policy, None, |_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Read { .. }), "{err}");
    }

    #[test]
    fn only_https_urls_are_accepted_except_on_loopback() {
        for bad in [
            "http://log.example/logs/c1",
            "ftp://log.example/logs/c1",
            "https://user:pw@log.example/logs/c1",
            "https://log.example/logs/c1?x=1",
            "not a url",
        ] {
            let err = Source::url(bad, None, None).err().unwrap();
            assert!(matches!(err, AuditError::BadUrl { .. }), "{bad}: {err}");
        }
        for good in [
            "https://log.example/logs/c1",
            "http://127.0.0.1:8080/logs/c1",
            "http://[::1]:8080/logs/c1",
            "http://localhost/logs/c1/",
        ] {
            assert!(Source::url(good, None, None).is_ok(), "{good}");
        }
        assert!(matches!(
            Source::url("https://log.example/", Some("a\nb"), None),
            Err(AuditError::BadToken)
        ));
    }
}

/// An entry that names the event schema must be a valid event in its one canonical
/// form: a result spelled another way (which the event decoder refuses, so none of
/// its checks would run) is reported, while records of another kind (the governance
/// log's) pass untouched.
#[test]
fn an_event_in_another_spelling_is_refused_not_skipped() {
    use palisade_tlog_service::audit::check_entry;
    let result = br#"{"cluster":"demo","event_id":"0123456789abcdef0123456789abcdef","intent":"fedcba9876543210fedcba9876543210","kind":"result","outcome":"not_dispatched","schema":"palisade.dev/event/v1","time":"2026-12-07T00:00:00Z"}"#;
    check_entry(0, result).expect("a canonical result");
    let mut spaced = b" ".to_vec();
    spaced.extend_from_slice(result);
    assert!(matches!(
        check_entry(1, &spaced),
        Err(AuditError::NotAnEvent { index: 1, .. })
    ));
    let unknown = String::from_utf8(result.to_vec()).unwrap().replacen(
        "{\"cluster\"",
        "{\"a\":1,\"cluster\"",
        1,
    );
    assert!(matches!(
        check_entry(2, unknown.as_bytes()),
        Err(AuditError::NotAnEvent { index: 2, .. })
    ));
    check_entry(3, br#"{"kind":"policy-enforced","version":3}"#).expect("another record");
    check_entry(4, b"not json at all").expect("opaque bytes");
}
