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
//! - fleet (only when named: `-- fleet`): one log service and one witness as
//!   processes (`palisade log serve`, `palisade witness serve`, release build), with
//!   an inventory of 1,000 and then 10,000 clusters (`FLEET_LOGS`, default
//!   `1000,10000`), heartbeats every `FLEET_HEARTBEAT_SECS` (default 60, the
//!   production default). For each size: the time until every log's first checkpoint
//!   is cosigned, resident memory per log (above a service with no cluster), the CPU
//!   of both processes over `FLEET_WINDOW_SECS` (default 120) of idle heartbeats, as a
//!   share of one core and per cosigned checkpoint; then appends to a few logs through
//!   the API, and 100 clusters added to the inventory while the service runs, timed
//!   until their logs answer.
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

#[path = "support/mod.rs"]
mod support;

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

/// `utime + stime` of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The number the witness's `/metrics` (plain HTTP at `addr`) reports for
/// `palisade_witness_cosignatures_total`, summed over origins.
fn cosigned_total(addr: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n");
    let mut body = String::new();
    let _ = tcp.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("palisade_witness_cosignatures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn fleet() {
    use std::process::Command;
    use support::{free_port_block, mib, palisade_bin, Proc};
    let sizes: Vec<usize> = std::env::var("FLEET_LOGS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let heartbeat = env_u64("FLEET_HEARTBEAT_SECS", 60);
    let window = Duration::from_secs(env_u64("FLEET_WINDOW_SECS", 120));
    let bin = palisade_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("up");
    // `palisade up` once, for a CA, certificates and keys as a deployment has them.
    let base = free_port_block(palisade_core::ports::up_ports(1));
    let mut up = Proc::spawn(
        support::up_command(&bin, &dir, base),
        Duration::from_secs(15),
    );
    up.wait_for("ready", Duration::from_secs(180));
    up.terminate();
    let log_key = std::fs::read_to_string(dir.join("log/keys/palisade.local_log.pub"))
        .expect("log public key");
    let pki = dir.join("pki");
    let ports = free_port_block(4);
    let (log_addr, witness_addr, witness_metrics) = (
        format!("127.0.0.1:{ports}"),
        format!("127.0.0.1:{}", ports + 1),
        format!("127.0.0.1:{}", ports + 2),
    );
    let token = "fleet-reader-token";
    let token_sha = palisade_policy::tuf::sha256_hex(token.as_bytes());
    let fleet_dir = tmp.path().join("fleet");
    let inventory = |n: usize, from: usize| {
        let mut text = String::from("[[tenant]]\nid = \"demo\"\n");
        for i in from..from + n {
            text.push_str(&format!(
                "\n[[cluster]]\nid = \"c{i:05}\"\ntenant = \"demo\"\n"
            ));
        }
        text
    };
    println!(
        "fleet: one log service, one witness, heartbeat every {heartbeat} s, window {} s",
        window.as_secs()
    );
    println!(
        "{:>7} {:>10} {:>10} {:>8} {:>10} {:>10} {:>13} {:>13}",
        "logs",
        "start (s)",
        "RSS (MiB)",
        "KiB/log",
        "log CPU %",
        "witness %",
        "log µs/ckpt",
        "witness µs/ckpt"
    );
    let mut baseline_rss = None;
    for n in std::iter::once(0).chain(sizes.iter().copied()) {
        let _ = std::fs::remove_dir_all(&fleet_dir);
        std::fs::create_dir_all(fleet_dir.join("tiles")).expect("dir");
        std::fs::write(fleet_dir.join("inventory.toml"), inventory(n, 0)).expect("inventory");
        let tls = format!(
            "[tls]\nca = \"{ca}\"\ncert = \"{pki}/log-log.crt\"\nkey = \"{pki}/log-log.key\"\n",
            ca = pki.join("ca.crt").display(),
            pki = pki.display()
        );
        std::fs::write(
            fleet_dir.join("log.toml"),
            format!(
                "listen = \"{log_addr}\"\nbase_origin = \"palisade.local/log\"\n\
                 key_file = \"{key}\"\ninventory = \"inventory.toml\"\nwitness_quorum = 1\n\n\
                 [checkpoint]\nmax_interval_secs = {heartbeat}\n\n[storage]\nkind = \"local\"\ndir = \"tiles\"\n\n{tls}\n\
                 [[reader]]\ntenant = \"demo\"\ntoken_sha256 = \"{token_sha}\"\n\n\
                 [[witness]]\nname = \"palisade.local/witness\"\nurl = \"https://{witness_addr}\"\nkey = \"{wkey}\"\n",
                key = dir.join("log/keys/palisade.local_log.key").display(),
                wkey = std::fs::read_to_string(dir.join("witness/keys/palisade.local_witness.pub"))
                    .expect("witness public key")
                    .trim(),
            ),
        )
        .expect("log.toml");
        std::fs::write(
            fleet_dir.join("witness.toml"),
            format!(
                "listen = \"{witness_addr}\"\nkey_file = \"{key}\"\nstate_file = \"witness.redb\"\n\
                 metrics_listen = \"{witness_metrics}\"\n\n\
                 [tls]\nca = \"{ca}\"\ncert = \"{pki}/witness-witness.crt\"\nkey = \"{pki}/witness-witness.key\"\n\n\
                 [[log]]\norigin_prefix = \"palisade.local/log/\"\nkey = \"{log_key}\"\n",
                key = dir.join("witness/keys/palisade.local_witness.key").display(),
                ca = pki.join("ca.crt").display(),
                pki = pki.display(),
                log_key = log_key.trim(),
            ),
        )
        .expect("witness.toml");
        let serve = |what: &str| {
            let mut cmd = Command::new(&bin);
            cmd.current_dir(&fleet_dir).args([
                what,
                "serve",
                "--config",
                &fleet_dir.join(format!("{what}.toml")).display().to_string(),
                "--exit-with-parent",
            ]);
            cmd
        };
        let mut witness = Proc::spawn(serve("witness"), Duration::from_secs(10));
        witness.wait_for("witness serving", Duration::from_secs(30));
        let metrics_url = witness_metrics.clone();
        let started = Instant::now();
        let mut log = Proc::spawn(serve("log"), Duration::from_secs(20));
        log.wait_for("log listening", Duration::from_secs(600));
        // Every log (and the governance log) is cosigned once at start.
        while cosigned_total(&metrics_url) < n as u64 + 1 {
            log.drain();
            witness.drain();
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "the logs' first checkpoints were not all cosigned"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let start_secs = started.elapsed().as_secs_f64();
        let (log_pid, witness_pid) = (log.child.id(), witness.child.id());
        let (c0, l0, w0) = (
            cosigned_total(&metrics_url),
            cpu_secs(log_pid),
            cpu_secs(witness_pid),
        );
        let t0 = Instant::now();
        while t0.elapsed() < window {
            log.drain();
            witness.drain();
            std::thread::sleep(Duration::from_millis(500));
        }
        let secs = t0.elapsed().as_secs_f64();
        let (c1, l1, w1) = (
            cosigned_total(&metrics_url),
            cpu_secs(log_pid),
            cpu_secs(witness_pid),
        );
        let rss = support::memory(log_pid).0;
        let per_log = match baseline_rss {
            None => {
                baseline_rss = Some(rss);
                0.0
            }
            Some(b) => rss.saturating_sub(b) as f64 / n as f64,
        };
        let checkpoints = c1.saturating_sub(c0).max(1);
        if n == 0 {
            // The governance log alone: the baseline of memory.
            println!("{:>7} {:>10.1} {:>10.1}", n, start_secs, mib(rss));
            log.terminate();
            witness.terminate();
            continue;
        }
        println!(
            "{:>7} {:>10.1} {:>10.1} {:>8.1} {:>10.2} {:>10.2} {:>13.0} {:>13.0}",
            n,
            start_secs,
            mib(rss),
            per_log,
            100.0 * (l1 - l0) / secs,
            100.0 * (w1 - w0) / secs,
            1e6 * (l1 - l0) / checkpoints as f64,
            1e6 * (w1 - w0) / checkpoints as f64,
        );
        if n > 0 && n == *sizes.last().expect("sizes") {
            grow(
                &fleet_dir,
                &log_addr,
                &pki,
                token,
                n,
                &inventory(n + 100, 0),
            );
        }
        log.terminate();
        witness.terminate();
    }
}

/// Appends to a few logs through the API, then adds 100 clusters to the inventory
/// of the running service and times until the last one's log answers its tenant.
fn grow(
    fleet_dir: &std::path::Path,
    log_addr: &str,
    pki: &std::path::Path,
    token: &str,
    n: usize,
    bigger: &str,
) {
    let tls = palisade_pki::client_config(
        &pki.join("ca.crt"),
        &pki.join("gateway-gateway.crt"),
        &pki.join("gateway-gateway.key"),
        &[palisade_pki::Role::Log],
    )
    .expect("gateway TLS");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .expect("client");
        let started = Instant::now();
        for i in [0, n / 2, n - 1] {
            let resp = client
                .post(format!("https://{log_addr}/logs/c{i:05}/append"))
                .body(format!("entry for c{i:05}"))
                .send()
                .await
                .expect("append");
            assert!(resp.status().is_success(), "append: {}", resp.status());
        }
        println!(
            "3 appends to logs among {n}, each until witnessed: {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        std::fs::write(fleet_dir.join("inventory.toml"), bigger).expect("inventory");
        let started = Instant::now();
        let last = format!("https://{log_addr}/logs/c{:05}/checkpoint", n + 99);
        loop {
            let resp = client.get(&last).bearer_auth(token).send().await;
            if resp.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the added clusters' logs did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "100 clusters added to the inventory of the running service: the last one's log answered after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if which.iter().any(|w| w == "fleet") {
        return fleet();
    }
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
