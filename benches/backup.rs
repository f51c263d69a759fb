//! Encrypted etcd backups (docs/performance.md records the figures):
//!
//! ```sh
//! cargo build --release -p palisade                     # the stack runs the release binary
//! cargo bench -p palisade-benches --bench backup             # speed, then memory
//! cargo bench -p palisade-benches --bench backup -- speed    # or: memory
//! ```
//!
//! Both parts start a real stack with `palisade up` (witness, log, the agent
//! supervising etcd, its KMS plugin with the development key, the local backup store
//! `<dir>/backups`) in a temporary directory, from the release binary next to this
//! benchmark (or `$PALISADE_BIN`). `up` is started once to write its files, stopped,
//! and etcd's arguments are extended with `--quota-backend-bytes 8589934592` (room
//! for a large database) and `--snapshot-count 100` (so that etcd's write-ahead log
//! is purged while filling, which keeps the disk use to about one database); then `up`
//! is started again. etcd is filled with 1 MiB values by a few concurrent writers
//! (etcd-client, in-process) until its database reaches the size asked for.
//!
//! - **speed**: `etcd.backup` dispatched to the agent process as the gateway does it
//!   (`palisade_agent::client::Dispatcher`: the intent appended and witnessed, then
//!   `POST /v1/dispatch` over mTLS; the agent streams the snapshot, checks it,
//!   encrypts it with a data key wrapped by the KMS plugin, uploads it to the local
//!   store with fsync and writes the signed manifest), side by side with
//!   `etcdctl snapshot save` on the same etcd, one after the other, alternating, after
//!   one untimed run of each. Median, min and max of each, and the ratio of the
//!   medians (target: ≤ 1.25).
//! - **memory**: the agent process's resident memory (`VmRSS` from `/proc`, sampled
//!   every 10 ms, and `VmHWM`) while it backs up a database of about 1 GiB, reported
//!   as peak minus idle (the agent after start, before any backup; target: ≤ 64
//!   MiB). One `etcdctl snapshot save` of the same
//!   database is timed as well.
//!
//! Every backup object and snapshot file is deleted once measured, and the whole
//! temporary directory (etcd's data included) when the benchmark ends.
//!
//! Knobs (environment): `BACKUP_BENCH_MIB` (database size in MiB; default 96 for
//! speed, 1024 for memory), `BACKUP_BENCH_RUNS` (timed runs of each in the speed part,
//! default 5), `BACKUP_BENCH_WRITERS` (concurrent writers filling etcd, default 4).
#![forbid(unsafe_code)]

#[path = "support/mod.rs"]
mod support;
use support::{child_pid, free_port_block, memory, mib, palisade_bin, Proc};

use palisade_agent::client::{prepare, Dispatcher, Request};
use palisade_agent::dispatch::ResultOutcome;
use palisade_core::event::{Actor, GrantRef, Justification};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, ClusterId, InstanceId, OperatorId, TenantId};
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_policy::Policy;
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::note::VerifierKey;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
/// The size of each value written to fill etcd (its request limit is 1.5 MiB).
const VALUE_BYTES: usize = 1024 * 1024;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running `palisade up` whose etcd has room for a large database.
struct Stack {
    dir: PathBuf,
    base: u16,
    up: Proc,
    /// Last, so that the directory (etcd's data included) goes after the processes.
    _tmp: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        let bin = palisade_bin();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        std::fs::create_dir_all(&dir).expect("dir");
        let base = free_port_block(8);
        let up_cmd = || support::up_command(&bin, &dir, base);
        let mut up = Proc::spawn(up_cmd(), Duration::from_secs(15));
        up.wait_for("ready", Duration::from_secs(120));
        up.terminate();

        let config = dir.join("agent/agent.toml");
        let text = std::fs::read_to_string(&config).expect("agent.toml");
        assert!(
            text.matches("args = [").count() == 1 && text.contains("name = \"etcd\""),
            "up's agent.toml supervises etcd (is etcd installed?): {text}"
        );
        let text = text.replace(
            "args = [",
            "args = [\"--quota-backend-bytes\", \"8589934592\", \"--snapshot-count\", \"100\", ",
        );
        std::fs::write(&config, text).expect("agent.toml");

        let mut up = Proc::spawn(up_cmd(), Duration::from_secs(15));
        up.wait_for("ready", Duration::from_secs(120));
        Self {
            _tmp: tmp,
            dir,
            base,
            up,
        }
    }

    fn etcd_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 4)
    }

    fn agent_pid(&self) -> u32 {
        child_pid(self.up.child.id(), "agent serve").expect("the agent process")
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_string()
    }

    /// Removes every stored backup (objects and manifests): they are measured, not kept.
    fn clear_backups(&self) {
        let store = self.dir.join("backups/demo");
        if let Ok(entries) = std::fs::read_dir(&store) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Dispatches actions to the stack's agent the way the gateway does.
struct Agent {
    dispatcher: Dispatcher,
    policy: Policy,
    log_policy: LogPolicy,
    agent_keys: Vec<PublicKey>,
    url: String,
}

impl Agent {
    async fn new(stack: &Stack) -> Self {
        let dir = &stack.dir;
        let dispatcher = Dispatcher::new(
            &dir.join("pki/ca.crt"),
            &dir.join("pki/gateway-gateway.crt"),
            &dir.join("pki/gateway-gateway.key"),
            SigningKey::read(&dir.join("gateway/keys/gateway.key")).expect("gateway key"),
            &format!("https://127.0.0.1:{}", stack.base + 1),
        )
        .expect("dispatcher");
        let root = std::fs::read(dir.join("trust/root.json")).expect("root");
        let policy = palisade_policy::trusted_policy::verify_policy(
            &palisade_policy::tuf::RepoDir::new(dir.join("trust/repo")),
            &root,
            &dir.join("bench-datastore"),
        )
        .await
        .expect("the published policy verifies")
        .policy;
        let key = |rel: &str| VerifierKey::parse(&stack.read(rel)).expect("key");
        let log_policy = LogPolicy::new(
            "palisade.local/log/demo",
            key("log/keys/palisade.local_log.pub"),
        )
        .expect("log policy")
        .with_witnesses(vec![key("witness/keys/palisade.local_witness.pub")], 1)
        .expect("witnesses");
        let agent_keys =
            vec![PublicKey::read(&dir.join("agent/keys/agent.pub")).expect("agent pub")];
        Self {
            dispatcher,
            policy,
            log_policy,
            agent_keys,
            url: format!("https://127.0.0.1:{}", stack.base + 3),
        }
    }

    /// `etcd.backup`, logged and dispatched; its output.
    async fn backup(&self) -> serde_json::Value {
        let validated = self
            .policy
            .validate_args("etcd.backup", &[])
            .expect("etcd.backup is in the shipped policy");
        let request = Request {
            tenant: TenantId::parse("demo").expect("tenant"),
            cluster: ClusterId::parse("demo").expect("cluster"),
            instance: InstanceId::parse("demo-0").expect("instance"),
            actor: Actor {
                service: None,
                authn: None,
                id: OperatorId::parse("op-bench").expect("op"),
                groups: vec![],
                grant: Some(GrantRef {
                    schedule: "demo".into(),
                    role: "operator".into(),
                    ends_at: Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3600),
                }),
            },
            action: ActionName::parse("etcd.backup").expect("action"),
            parameters: validated.params().clone(),
            justification: Justification {
                ticket: "BENCH-1".into(),
                reason: "backup benchmark run, measured and deleted".into(),
            },
            policy: self.policy.reference(),
        };
        let p = prepare(&request, Duration::from_secs(60), Timestamp::now()).expect("prepare");
        let done = self
            .dispatcher
            .execute(&self.url, &p, &self.log_policy, &self.agent_keys)
            .await
            .expect("dispatch etcd.backup");
        assert_eq!(
            done.result.outcome,
            ResultOutcome::Succeeded,
            "etcd.backup: {:?}",
            done.result.error
        );
        done.result.output.expect("etcd.backup output")
    }
}

/// `etcdctl snapshot save` to a file in the stack's directory; the time and size.
fn etcdctl_snapshot(stack: &Stack) -> (Duration, u64) {
    let out = stack.dir.join("etcdctl-snapshot.db");
    let t0 = Instant::now();
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &stack.etcd_endpoint(), "snapshot", "save"])
        .arg(&out)
        .output()
        .expect("etcdctl (apt-get install etcd-client)");
    let took = t0.elapsed();
    assert!(
        o.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    std::fs::remove_file(&out).expect("remove the etcdctl snapshot");
    (took, size)
}

/// etcd's database size in bytes.
async fn db_size(client: &mut etcd_client::Client) -> u64 {
    let s = client.status().await.expect("etcd status");
    u64::try_from(s.db_size()).unwrap_or(0)
}

/// A value of pseudo-random bytes (xorshift), different for every key, so that
/// nothing along the way could shrink it.
fn value(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(VALUE_BYTES);
    while v.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(VALUE_BYTES);
    v
}

/// Writes 1 MiB values until etcd's database holds at least `target` bytes.
async fn fill(stack: &Stack, target: u64, next_key: &Arc<AtomicU64>) {
    let writers = env_u64("BACKUP_BENCH_WRITERS").unwrap_or(4).max(1);
    let endpoint = stack.etcd_endpoint();
    let mut client = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .expect("etcd client");
    let t0 = Instant::now();
    let start = db_size(&mut client).await;
    let mut written = 0u64;
    loop {
        let size = db_size(&mut client).await;
        println!(
            "  etcd database {:>6.0} MiB of {} MiB ({:.0} s, {} MiB written)",
            size as f64 / MIB as f64,
            target / MIB,
            t0.elapsed().as_secs_f64(),
            written / MIB
        );
        if size >= target {
            break;
        }
        // At most 64 MiB between progress lines.
        let values = (target - size).div_ceil(VALUE_BYTES as u64).min(64);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut kv = client.kv_client();
            let next = next_key.clone();
            let share = values / writers + u64::from(w < values % writers);
            tasks.push(tokio::spawn(async move {
                for _ in 0..share {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    kv.put(format!("/registry/bench/{k:08}"), value(k), None)
                        .await
                        .expect("etcd put");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        written += values * VALUE_BYTES as u64;
        stack.up.drain();
    }
    let end = db_size(&mut client).await;
    println!(
        "  filled from {:.0} to {:.0} MiB in {:.1} s",
        start as f64 / MIB as f64,
        end as f64 / MIB as f64,
        t0.elapsed().as_secs_f64()
    );
}

fn stats(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    let ms = |x: &Duration| x.as_secs_f64() * 1e3;
    let median = if d.len() % 2 == 1 {
        ms(&d[d.len() / 2])
    } else {
        (ms(&d[d.len() / 2 - 1]) + ms(&d[d.len() / 2])) / 2.0
    };
    (median, d.first().map_or(0.0, ms), d.last().map_or(0.0, ms))
}

fn row(what: &str, d: Vec<Duration>, bytes: u64) -> f64 {
    let n = d.len();
    let (median, min, max) = stats(d);
    println!(
        "| {what:<56} | {n:>2} | {median:>8.0} | {min:>8.0} | {max:>8.0} | {:>7.1} |",
        bytes as f64 / MIB as f64 / (median / 1e3)
    );
    median
}

fn ms_to_duration(v: &serde_json::Value) -> Duration {
    Duration::from_millis(v["took_ms"].as_u64().unwrap_or(0))
}

async fn speed(stack: &Stack, agent: &Agent, next_key: &Arc<AtomicU64>) {
    let target = env_u64("BACKUP_BENCH_MIB").unwrap_or(96) * MIB;
    let runs = env_u64("BACKUP_BENCH_RUNS").unwrap_or(5).max(1) as usize;
    println!("speed: filling etcd to {} MiB", target / MIB);
    fill(stack, target, next_key).await;

    // One untimed run of each: caches warm, connections made.
    let warm = agent.backup().await;
    stack.clear_backups();
    let (_, snapshot_bytes) = etcdctl_snapshot(stack);
    println!(
        "  snapshot {:.1} MiB, backup object {:.1} MiB",
        snapshot_bytes as f64 / MIB as f64,
        warm["object_bytes"].as_u64().unwrap_or(0) as f64 / MIB as f64
    );

    let mut through_agent = Vec::with_capacity(runs);
    let mut handler = Vec::with_capacity(runs);
    let mut etcdctl = Vec::with_capacity(runs);
    for i in 0..runs {
        if i % 2 == 1 {
            etcdctl.push(etcdctl_snapshot(stack).0);
        }
        let t0 = Instant::now();
        let out = agent.backup().await;
        through_agent.push(t0.elapsed());
        handler.push(ms_to_duration(&out));
        stack.clear_backups();
        if i % 2 == 0 {
            etcdctl.push(etcdctl_snapshot(stack).0);
        }
        stack.up.drain();
    }

    println!();
    println!(
        "speed: {runs} runs each, alternating, on a {:.1} MiB snapshot (load average {})",
        snapshot_bytes as f64 / MIB as f64,
        load_average()
    );
    println!();
    println!(
        "| {:<56} | {:>2} | {:>8} | {:>8} | {:>8} | {:>7} |",
        "what (ms)", "n", "median", "min", "max", "MiB/s"
    );
    println!(
        "|{}|----|----------|----------|----------|---------|",
        "-".repeat(58)
    );
    let a = row(
        "etcd.backup through the agent (log, dispatch, result)",
        through_agent,
        snapshot_bytes,
    );
    row(
        "  of which the agent's handler (took_ms)",
        handler,
        snapshot_bytes,
    );
    let e = row("etcdctl snapshot save (a process)", etcdctl, snapshot_bytes);
    println!();
    println!(
        "etcd.backup / etcdctl (medians): {:.2} (target ≤ 1.25: {})",
        a / e,
        if a / e <= 1.25 { "met" } else { "missed" }
    );
}

/// The agent's memory once started, before any backup: `VmRSS` and `VmHWM`, KiB.
struct Idle {
    rss: u64,
    hwm: u64,
}

async fn memory_part(stack: &Stack, agent: &Agent, next_key: &Arc<AtomicU64>, idle: &Idle) {
    let target = env_u64("BACKUP_BENCH_MIB").unwrap_or(1024) * MIB;
    println!("memory: filling etcd to {} MiB", target / MIB);
    fill(stack, target, next_key).await;
    let pid = stack.agent_pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, hwm_before) = memory(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(memory(pid).0);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, samples)
        })
    };
    let t0 = Instant::now();
    let out = agent.backup().await;
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (sampled_peak, samples) = sampler.join().expect("sampler");
    let (after, hwm_after) = memory(pid);
    stack.clear_backups();
    // VmHWM also covers the agent's start (and any earlier backup): counted, so
    // that the figure is an upper bound even if a peak fell between two samples.
    let peak = hwm_after.max(sampled_peak);
    let snapshot = out["snapshot_bytes"].as_u64().unwrap_or(0);
    let (etcdctl_took, _) = etcdctl_snapshot(stack);

    println!();
    println!(
        "memory: one etcd.backup of a {:.0} MiB snapshot (load average {})",
        snapshot as f64 / MIB as f64,
        load_average()
    );
    println!(
        "  agent (pid {pid}): idle after start (no backup yet) RSS {:.1} MiB, VmHWM {:.1} MiB; \
         before this backup RSS {:.1} MiB, VmHWM {:.1} MiB",
        mib(idle.rss),
        mib(idle.hwm),
        mib(before),
        mib(hwm_before)
    );
    println!(
        "  during the backup: RSS peak {:.1} MiB ({samples} samples every 10 ms); after: VmHWM {:.1} MiB, RSS {:.1} MiB",
        mib(sampled_peak),
        mib(hwm_after),
        mib(after)
    );
    let above = mib(peak.saturating_sub(idle.rss));
    println!(
        "  peak (max of sampled RSS and VmHWM) above idle: {above:.1} MiB (target ≤ 64 MiB: {})",
        if above <= 64.0 { "met" } else { "missed" }
    );
    println!(
        "  time: etcd.backup through the agent {:.1} s (handler {:.1} s), etcdctl snapshot save {:.1} s",
        took.as_secs_f64(),
        ms_to_duration(&out).as_secs_f64(),
        etcdctl_took.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |name: &str| {
        let named: Vec<&String> = args
            .iter()
            .filter(|a| *a == "speed" || *a == "memory")
            .collect();
        named.is_empty() || named.iter().any(|a| *a == name)
    };
    let t = Instant::now();
    let stack = Stack::start();
    println!(
        "stack started in {:.0} s; {} cores, load average {}",
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let agent = Agent::new(&stack).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, hwm) = memory(stack.agent_pid());
    let idle = Idle { rss, hwm };
    let next_key = Arc::new(AtomicU64::new(0));
    if wanted("speed") {
        speed(&stack, &agent, &next_key).await;
        println!();
    }
    if wanted("memory") {
        memory_part(&stack, &agent, &next_key, &idle).await;
    }
}
