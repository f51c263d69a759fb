//! Log benchmarks (docs/performance.md records the figures):
//!
//! ```sh
//! cargo bench -p palisade-benches --bench log              # all, default sizes
//! cargo bench -p palisade-benches --bench log -- memory    # one of: throughput latency proofs memory
//! ```
//!
//! - throughput: durable appends of 1 KiB entries to a local directory (fsync on),
//!   many appenders in flight so that batches fill;
//! - latency: open-loop appends at a fixed rate (default 1,000/s), time from append to
//!   acknowledgement (the entry is under a stored checkpoint), p50/p99;
//! - proofs: inclusion proofs generated from the tiles of a stored log, per second;
//! - memory: resident memory of the process after 1M and 10M appended entries (small
//!   entries, to keep the disk use reasonable), to show it does not grow with the log.
//!
//! Each runs the real sequencer on a fresh directory under `$TMPDIR` (point it at the
//! disk to measure), fsync on every write, no witnesses (a witness adds its round trip
//! to every batch), batching as `BatchConfig::default()` (up to 1,024 entries, 5 ms).
//!
//! Knobs (environment): `BENCH_ENTRIES` (throughput: default 200,000; proofs: the
//! log's size, default 1,000,000), `BENCH_IN_FLIGHT` (appends in flight, default
//! 4,096), `BENCH_BATCH` (entries per batch), `BENCH_PUBLISH_MS` (the journal's publish
//! interval; default 0: tiles and checkpoint written by every batch), `BENCH_RATE`
//! (latency: appends/s, default 1,000), `BENCH_SECONDS` (latency: default 10),
//! `BENCH_PROOFS` (default 20,000), `BENCH_MEMORY_SMALL` and `BENCH_MEMORY_LARGE`
//! (default 1,000,000 and 10,000,000 entries).
#![forbid(unsafe_code)]

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use palisade_tlog::note::{KeyType, SignerKey};
use palisade_tlog::tile::TileHashReader;
use palisade_tlog::tree::inclusion_proof;
use palisade_tlog_service::fetch::{MemoryTiles, StoreFetcher};
use palisade_tlog_service::sequencer::{self, BatchConfig, LogWriter, WitnessSet};
use palisade_tlog_service::store::TileStore;
use std::time::{Duration, Instant};

const ORIGIN: &str = "bench.example/log";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn new_log(dir: &std::path::Path) -> (LogWriter, TileStore) {
    let key = SignerKey::generate(ORIGIN, KeyType::Ed25519).expect("key");
    let store = TileStore::local(dir).expect("store");
    let batch = BatchConfig {
        max_entries: env_u64("BENCH_BATCH", BatchConfig::default().max_entries as u64) as usize,
        publish_interval: std::time::Duration::from_millis(env_u64("BENCH_PUBLISH_MS", 0)),
        ..BatchConfig::default()
    };
    let w = sequencer::start(ORIGIN, key, store.clone(), batch, WitnessSet::default())
        .await
        .expect("start");
    (w, store)
}

/// Appends `n` entries of `len` bytes with up to `in_flight` outstanding; returns the elapsed time.
async fn fill(w: &LogWriter, n: u64, len: usize, in_flight: usize) -> Duration {
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        if pending.len() >= in_flight {
            let done: Option<Result<(), sequencer::AppendError>> = pending.next().await;
            done.expect("some").expect("append");
        }
        let mut entry = vec![b'x'; len];
        entry[..8].copy_from_slice(&i.to_be_bytes());
        let w = w.clone();
        pending.push(async move { w.append(Bytes::from(entry)).await.map(|_| ()) });
    }
    while let Some(r) = pending.next().await {
        r.expect("append");
    }
    start.elapsed()
}

async fn throughput() {
    let n = env_u64("BENCH_ENTRIES", 200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, _) = new_log(dir.path()).await;
    let took = fill(&w, n, 1024, env_u64("BENCH_IN_FLIGHT", 4096) as usize).await;
    println!(
        "throughput: {n} durable appends of 1 KiB in {:.2} s = {:.0} entries/s (target >= 20000; Tessera POSIX reports ~10000)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

async fn latency() {
    let rate = env_u64("BENCH_RATE", 1000);
    let secs = env_u64("BENCH_SECONDS", 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, _) = new_log(dir.path()).await;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = rate * secs;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            w.append(Bytes::from(vec![b'y'; 1024]))
                .await
                .expect("append");
            t0.elapsed()
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.expect("join"));
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "latency at {rate}/s for {secs} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 50 ms)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

async fn proofs() {
    let n = env_u64("BENCH_ENTRIES", 1_000_000);
    let count = env_u64("BENCH_PROOFS", 20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, store) = new_log(dir.path()).await;
    fill(&w, n, 64, 4096).await;
    let published = w.published();
    let note = palisade_tlog::note::Note::parse(&published.note).expect("note");
    let cp = palisade_tlog::checkpoint::Checkpoint::parse(note.text()).expect("checkpoint");
    let memory = MemoryTiles::new();
    let fetcher = StoreFetcher::new(&store, &memory);
    let reader = TileHashReader::new(cp.size(), *cp.root(), &fetcher);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    tokio::task::block_in_place(|| {
        for _ in 0..count {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            inclusion_proof(x % cp.size(), cp.size(), &reader).expect("proof");
        }
    });
    let took = start.elapsed();
    println!(
        "proofs: {count} inclusion proofs from the tiles of a {n}-entry log in {:.2} s = {:.0} proofs/s (full tiles cached after first read)",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn memory() {
    let small = env_u64("BENCH_MEMORY_SMALL", 1_000_000);
    let large = env_u64("BENCH_MEMORY_LARGE", 10_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (w, _) = new_log(dir.path()).await;
    let before = rss_kib();
    let t1 = fill(&w, small, 32, 4096).await;
    let at_small = rss_kib();
    let t2 = fill(&w, large - small, 32, 4096).await;
    let at_large = rss_kib();
    println!(
        "memory: RSS {before} KiB at start, {at_small} KiB after {small} entries ({:.0} s), {at_large} KiB after {large} entries ({:.0} s)",
        t1.as_secs_f64(),
        t2.as_secs_f64()
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if run("throughput") {
            throughput().await;
        }
        if run("latency") {
            latency().await;
        }
        if run("proofs") {
            proofs().await;
        }
        if run("memory") {
            memory().await;
        }
    });
}
