//! The gateway pipeline end to end (docs/performance.md records the figures):
//!
//! ```sh
//! cargo build --release -p palisade                      # the stack runs the release binary
//! cargo bench -p palisade-benches --bench gateway              # latency, then throughput
//! cargo bench -p palisade-benches --bench gateway -- latency   # or: throughput
//! ```
//!
//! Both start a real stack with `palisade up` (witness, log, agent supervising etcd,
//! gateway) in a temporary directory, from the release binary next to this benchmark
//! (or `$PALISADE_BIN`).
//!
//! - **latency**: `etcd.status` one after another, through (a) the agent: log append
//!   (waiting for the witnessed checkpoint) and dispatch, in-process with
//!   `palisade_agent::client::Dispatcher`, as the gateway does it; (b) the whole
//!   gateway: HTTPS `POST /v1/clusters/demo/actions/etcd.status` with an operator
//!   token (authenticate, on-call check, rate limit, validation, log, dispatch, log
//!   the result); (c) `palisade op run etcd.status` as a process; against the
//!   baselines (d) `etcdctl endpoint status` as a process and (e) an in-process
//!   etcd-client status call, on the same etcd. p50/p99 each. Also the gateway's
//!   resident memory idle and after this run.
//! - **throughput**: `etcd.status` over many clusters (one agent process each, all
//!   reading the one etcd `up` runs), many operators, a fixed number of requests in
//!   flight for a fixed time; actions/s, latency under load, the gateway's memory
//!   while loaded; then every cluster's log is read back through the customer
//!   access-log API and each action's intent and result, and each logged refusal,
//!   are found there.
//!
//! The shipped policy limits `etcd.status` to 60 per minute per operator, so the
//! load is spread over many operators, each on call through its own `always`
//! schedule (a rota file written before the stack starts) and holding a development
//! token; the policy is not changed.
//!
//! Knobs (environment): `GATEWAY_BENCH_N` (latency samples per path, default 200),
//! `GATEWAY_BENCH_OP_RUNS` (`palisade op run` processes, default 50, at most 55),
//! `GATEWAY_BENCH_CLUSTERS` (default 100), `GATEWAY_BENCH_SECONDS` (default 15),
//! `GATEWAY_BENCH_IN_FLIGHT` (default 128), `GATEWAY_BENCH_OPERATORS` (default 250;
//! the gateway reads at most 256 schedules). At most 58 requests per operator are
//! sent (the policy allows 60 a minute), so a run stops early at 14,500 requests:
//! 15 s at up to ~970/s. `GATEWAY_BENCH_LOG_PUBLISH_MS` sets the logs'
//! `batch.publish_interval_ms` (default: the log's own). `GATEWAY_BENCH_TENANT_WITNESS=0`
//! drops the tenant's witness (no tenant key on the agents, the log does not ask it).
//! `GATEWAY_BENCH_IDLE_SECONDS` (default 10): the quiet window before the load over
//! which each process's idle CPU is measured, to tell it from the actions' cost.
#![forbid(unsafe_code)]

#[path = "support/mod.rs"]
mod support;
use support::{child_pid, free_port_block, memory, mib, palisade_bin, Proc};

use palisade_agent::client::{prepare, Dispatcher, Request};
use palisade_core::event::{Actor, GrantRef, Justification};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, ClusterId, InstanceId, OperatorId, TenantId};
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::note::VerifierKey;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn row(what: &str, mut d: Vec<Duration>) {
    if d.is_empty() {
        println!(
            "| {what:<58} | {:>5} | {:>8} | {:>8} | {:>8} |",
            0, "-", "-", "-"
        );
        return;
    }
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    println!(
        "| {what:<58} | {:>5} | {:>8.2} | {:>8.2} | {:>8.2} |",
        d.len(),
        ms(percentile(&d, 0.50)),
        ms(percentile(&d, 0.99)),
        ms(*d.last().expect("some")),
    );
}

/// (busy, total, iowait) jiffies of all CPUs, from `/proc/stat`.
/// How fast this disk makes small appends durable, one after another: 4 KiB appended
/// to a file in `$TMPDIR`, then `fdatasync`, for `window`. Returns (syncs per second,
/// this process's CPU per sync in µs). Every action waits on several such syncs (the
/// log's journal, each witness's state, the agent's nonce).
fn fsync_rate(window: Duration) -> (f64, f64) {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = std::fs::File::create(dir.path().join("appends")).expect("file");
    let block = [0x5au8; 4096];
    let ticks0 = cpu_ticks(std::process::id());
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < window {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_ticks(std::process::id()).saturating_sub(ticks0) as f64 / ticks_per_second();
    (n as f64 / secs, 1e6 * cpu / n.max(1) as f64)
}

/// CPU of one HTTPS request and its answer, both ends together: `n` GETs of the
/// gateway's `/healthz` one after another over a kept connection (hyper and rustls
/// on both sides, as between Palisade's processes). Returns µs per exchange.
async fn exchange_cost(http: &reqwest::Client, gw: &str, gw_pid: u32, n: usize) -> f64 {
    let pids = [gw_pid, std::process::id()];
    let ticks = || pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let url = format!("{gw}/healthz");
    let before = ticks();
    for _ in 0..n {
        let r = http.get(&url).send().await.expect("healthz");
        assert!(r.status().is_success(), "healthz: {}", r.status());
        r.bytes().await.expect("healthz body");
    }
    1e6 * ticks().saturating_sub(before) as f64 / ticks_per_second() / n as f64
}

/// µs of one Ed25519 signature and one strict verification of a checkpoint-sized
/// message, in-process (the operations an action's signers and verifiers repeat).
fn ed25519_costs(n: u32) -> (f64, f64) {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key();
    let msg = [b'x'; 120];
    let t = Instant::now();
    let mut sig = key.sign(&msg);
    for _ in 1..n {
        sig = key.sign(std::hint::black_box(&msg));
    }
    let sign = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        public
            .verify_strict(std::hint::black_box(&msg), &sig)
            .expect("verify");
    }
    (sign, t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// "name value unit, …" for each component of the throughput run.
fn by_component(
    components: &[(&str, Vec<u32>)],
    values: impl Iterator<Item = f64>,
    digits: usize,
    unit: &str,
) -> String {
    components
        .iter()
        .zip(values)
        .map(|((name, _), v)| format!("{name} {v:.digits$}{unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cpu_times() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0);
    let iowait = v.get(4).copied().unwrap_or(0);
    (total - idle - iowait, total, iowait)
}

/// CPU time a process has used so far (user + system, all its threads), in clock
/// ticks (`/proc/<pid>/stat` fields 14 and 15); 0 if it is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name start at field 3 (state).
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        rest.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Clock ticks per second for [`cpu_ticks`] (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A running `palisade up`, extended to `clusters` clusters (one agent process each)
/// and `operators` extra operators on call.
struct Stack {
    dir: PathBuf,
    base: u16,
    up: Proc,
    agents: Vec<Proc>,
    clusters: Vec<String>,
    operators: Vec<String>,
    /// Last, so that the directory goes after the processes stopped.
    _tmp: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Signal every agent first, so that they stop together.
        for a in &self.agents {
            let _ = Command::new("kill")
                .args(["-TERM", &a.child.id().to_string()])
                .status();
        }
        self.up.terminate();
        // Agents still serving after that are not waited for one by one.
        std::thread::sleep(Duration::from_secs(2));
        for a in &mut self.agents {
            if let Ok(None) = a.child.try_wait() {
                let _ = a.child.kill();
                let _ = a.child.wait();
            }
        }
    }
}

const AGENT_PORT_OFFSET: u16 = 10;

impl Stack {
    fn start(clusters: usize, operators: usize) -> Self {
        let bin = palisade_bin();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        std::fs::create_dir_all(&dir).expect("dir");
        let base = free_port_block(AGENT_PORT_OFFSET + clusters as u16 + 1);
        let agent_port = |i: usize| {
            if i == 0 {
                base + 3
            } else {
                base + AGENT_PORT_OFFSET + i as u16
            }
        };
        let names: Vec<String> = (0..clusters)
            .map(|i| {
                if i == 0 {
                    "demo".to_string()
                } else {
                    format!("c{i:03}")
                }
            })
            .collect();
        // The inventory before `up` (which keeps it, and writes a witness.toml that
        // covers every cluster's log).
        let mut inv = String::from("[[tenant]]\nid = \"demo\"\ndisplay_name = \"Demo tenant\"\n");
        for (i, c) in names.iter().enumerate() {
            inv.push_str(&format!(
                "\n[[cluster]]\nid = \"{c}\"\ntenant = \"demo\"\n\n[[cluster.instance]]\nid = \"{c}-0\"\nagent_url = \"https://127.0.0.1:{}\"\n",
                agent_port(i)
            ));
        }
        std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");

        // First start writes every file; stop, extend, start again.
        let up_cmd = || support::up_command(&bin, &dir, base);
        let mut up = Proc::spawn(up_cmd(), Duration::from_secs(10));
        up.wait_for("ready", Duration::from_secs(120));
        up.terminate();

        // An experiment knob: the logs' publish interval (default: the log's own).
        if let Ok(ms) = std::env::var("GATEWAY_BENCH_LOG_PUBLISH_MS") {
            let path = dir.join("log/log.toml");
            let text = std::fs::read_to_string(&path).expect("log.toml");
            let text = text.replacen(
                "[storage]",
                &format!("[batch]\npublish_interval_ms = {ms}\n\n[storage]"),
                1,
            );
            std::fs::write(&path, text).expect("log.toml");
        }

        let ops: Vec<String> = (0..operators).map(|i| format!("bench-{i:04}")).collect();
        let gdir = dir.join("gateway");
        let mut rotas = vec!["\"rota.yaml\"".to_string()];
        let mut extra = String::new();
        for (f, chunk) in ops.chunks(200).enumerate() {
            let mut text = String::from("apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n");
            for op in chunk {
                text.push_str(&format!(
                    "  - name: {op}\n    timeZone: UTC\n    rotation: always\n    participants: [\"{op}\"]\n"
                ));
                extra.push_str(&format!(
                    "\n[[grant]]\nschedule = \"{op}\"\nroles = [\"operator\"]\nclusters = [\"*\"]\n"
                ));
            }
            let name = format!("rota-bench-{f}.yaml");
            std::fs::write(gdir.join(&name), text).expect("rota");
            rotas.push(format!("\"{name}\""));
        }
        let agent_pub = dir.join("agent/keys/agent.pub");
        for c in names.iter().skip(1) {
            extra.push_str(&format!(
                "\n[[agent]]\ninstance = \"{c}-0\"\nkey = \"{}\"\n",
                agent_pub.display()
            ));
        }
        let config = gdir.join("gateway.toml");
        let text = std::fs::read_to_string(&config).expect("gateway.toml");
        let text = text.replace(
            "rotas = [\"rota.yaml\"]",
            &format!("rotas = [{}]", rotas.join(", ")),
        );
        std::fs::write(&config, format!("{text}{extra}")).expect("gateway.toml");

        // One agent per extra cluster, configured like up's (without the etcd it
        // supervises: they all read up's etcd).
        let template = std::fs::read_to_string(dir.join("agent/agent.toml")).expect("agent.toml");
        let template = match template.find("[[component]]") {
            Some(at) => template[..at].to_string(),
            None => template,
        };
        // Without up's metrics listener: one port cannot serve a hundred agents.
        let template: String = template
            .lines()
            .filter(|l| !l.starts_with("metrics_listen"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut agent_cfgs = Vec::new();
        for (i, c) in names.iter().enumerate().skip(1) {
            let adir = dir.join("agents").join(c);
            std::fs::create_dir_all(&adir).expect("agent dir");
            let text = template
                .replace(
                    &format!("listen = \"127.0.0.1:{}\"", base + 3),
                    &format!("listen = \"127.0.0.1:{}\"", agent_port(i)),
                )
                .replace("cluster = \"demo\"", &format!("cluster = \"{c}\""))
                .replace("instance = \"demo-0\"", &format!("instance = \"{c}-0\""))
                .replace(
                    "origin = \"palisade.local/log/demo\"",
                    &format!("origin = \"palisade.local/log/{c}\""),
                )
                .replace(
                    "signing_key = \"keys/agent.key\"",
                    &format!(
                        "signing_key = \"{}\"",
                        dir.join("agent/keys/agent.key").display()
                    ),
                );
            let cfg = adir.join("agent.toml");
            std::fs::write(&cfg, text).expect("agent config");
            agent_cfgs.push(cfg);
        }

        // The tenant's witness, which every cluster's agent requires (as `up`'s
        // does), or none (`GATEWAY_BENCH_TENANT_WITNESS=0`): no tenant key on the
        // agents, and the log does not ask that witness.
        let tenant_witness = std::env::var("GATEWAY_BENCH_TENANT_WITNESS").as_deref() != Ok("0");
        if !tenant_witness {
            for path in std::iter::once(dir.join("agent/agent.toml")).chain(agent_cfgs.clone()) {
                let text = std::fs::read_to_string(&path).expect("agent.toml");
                let text: String = text
                    .lines()
                    .filter(|l| !l.starts_with("tenant_key"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&path, text).expect("agent.toml");
            }
            let path = dir.join("log/log.toml");
            let text = std::fs::read_to_string(&path).expect("log.toml");
            let at = text
                .find("# The demo tenant's own witness")
                .expect("the tenant witness in log.toml");
            std::fs::write(&path, &text[..at]).expect("log.toml");
        }

        let mut up = Proc::spawn(up_cmd(), Duration::from_secs(10));
        up.wait_for("ready", Duration::from_secs(120));
        if tenant_witness {
            register_statements(&dir, base, &names[1..]);
        }
        let mut agents = Vec::new();
        for cfg in &agent_cfgs {
            let mut cmd = Command::new(&bin);
            cmd.args([
                "agent",
                "serve",
                "--config",
                &cfg.display().to_string(),
                "--exit-with-parent",
            ]);
            agents.push(Proc::spawn(cmd, Duration::from_secs(10)));
        }
        for a in &mut agents {
            a.wait_for("listening on", Duration::from_secs(60));
        }
        Self {
            _tmp: tmp,
            dir,
            base,
            up,
            agents,
            clusters: names,
            operators: ops,
        }
    }

    fn gateway_pid(&self) -> u32 {
        child_pid(self.up.child.id(), "gateway serve").expect("the gateway process")
    }

    fn etcd_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 4)
    }

    fn gateway_http(&self) -> reqwest::Client {
        let roots = palisade_pki::load_roots(&self.dir.join("pki/ca.crt")).expect("roots");
        let tls = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client")
    }

    fn gateway_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.base)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_string()
    }
}

/// Has the gateway record the demo tenant's witness statement for every extra
/// cluster (`up` registers the demo cluster's), as the tenant would: with
/// `palisade customer register-witness` and the tenant's key.
fn register_statements(dir: &std::path::Path, base: u16, clusters: &[String]) {
    use palisade_core::inventory::demo_tenant;
    for c in clusters {
        let out = Command::new(palisade_bin())
            .args(["customer", "register-witness", "--gateway"])
            .arg(format!("https://127.0.0.1:{base}"))
            .arg("--ca")
            .arg(dir.join("pki/ca.crt"))
            .arg("--token")
            .arg(format!("@{}", dir.join("tenant-demo.token").display()))
            .args(["--tenant", "demo", "--cluster", c, "--key"])
            .arg(dir.join(demo_tenant::KEY))
            .arg("--witness-key")
            .arg(format!(
                "@{}",
                dir.join(demo_tenant::WITNESS_PUBLIC_KEY).display()
            ))
            .output()
            .expect("palisade customer register-witness");
        assert!(
            out.status.success(),
            "statement for {c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn dev_token(http: &reqwest::Client, gw: &str, operator: &str) -> String {
    let resp = http
        .post(format!("{gw}/v1/dev/login"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "operator": operator }).to_string())
        .send()
        .await
        .expect("dev login");
    let v: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    v["token"].as_str().expect("token").to_string()
}

/// What one `POST .../actions/etcd.status` came to.
struct RunOutcome {
    took: Duration,
    http: u16,
    /// The operation (intent event) id, when the request got that far.
    op_id: Option<String>,
    op_status: Option<String>,
    /// The operation's error or the problem's detail, when it did not succeed.
    detail: Option<String>,
    /// A refusal the gateway logged (its index in the cluster's log).
    refusal_logged: bool,
}

async fn run_status(http: &reqwest::Client, gw: &str, token: &str, cluster: &str) -> RunOutcome {
    let t0 = Instant::now();
    let resp = http
        .post(format!("{gw}/v1/clusters/{cluster}/actions/etcd.status"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"arguments":{},"ticket":"BENCH-1","reason":"benchmark run"}"#)
        .send()
        .await;
    let (http_status, body) = match resp {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
        }
        Err(_) => (0, Vec::new()),
    };
    let took = t0.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let is_op = v.get("status").is_some_and(|s| s.is_string());
    RunOutcome {
        took,
        http: http_status,
        op_id: is_op.then(|| v["id"].as_str().unwrap_or_default().to_string()),
        op_status: is_op.then(|| v["status"].as_str().unwrap_or_default().to_string()),
        detail: v
            .get("error")
            .or_else(|| v.get("detail"))
            .and_then(|d| d.as_str())
            .map(|d| d.chars().take(400).collect()),
        refusal_logged: !is_op && v.get("log_index").is_some_and(|i| i.is_u64()),
    }
}

fn print_header() {
    println!(
        "| {:<58} | {:>5} | {:>8} | {:>8} | {:>8} |",
        "etcd.status path (ms)", "n", "p50", "p99", "max"
    );
    println!(
        "|{}|-------|----------|----------|----------|",
        "-".repeat(60)
    );
}

async fn latency() {
    let n = env_u64("GATEWAY_BENCH_N", 200) as usize;
    // The up operator's own budget: 60 etcd.status a minute.
    let op_runs = env_u64("GATEWAY_BENCH_OP_RUNS", 50).min(55) as usize;
    // 60 etcd.status per minute per operator: 50 each, on fresh operators.
    let stack = Stack::start(1, n.div_ceil(50) + 1);
    let gw = stack.gateway_url();
    let gw_pid = stack.gateway_pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, _) = memory(gw_pid);
    let http = stack.gateway_http();
    let mut tokens = Vec::new();
    for op in &stack.operators {
        tokens.push(dev_token(&http, &gw, op).await);
    }

    // (b) The whole gateway over HTTPS (after a few warm-up requests).
    for _ in 0..3 {
        let o = run_status(&http, &gw, &tokens[n / 50], "demo").await;
        assert_eq!(
            o.op_status.as_deref(),
            Some("succeeded"),
            "warm-up: HTTP {}",
            o.http
        );
    }
    let mut gateway = Vec::with_capacity(n);
    for i in 0..n {
        let o = run_status(&http, &gw, &tokens[i / 50], "demo").await;
        assert_eq!(o.op_status.as_deref(), Some("succeeded"), "HTTP {}", o.http);
        gateway.push(o.took);
    }

    // (c) `palisade op run` as a process (the up operator's own credentials).
    let bin = palisade_bin();
    let creds = stack.dir.join("op/credentials.json");
    let mut op_run = Vec::with_capacity(op_runs);
    for _ in 0..op_runs {
        let t0 = Instant::now();
        let ok = Command::new(&bin)
            .args(["op", "--credentials", &creds.display().to_string()])
            .args([
                "run",
                "etcd.status",
                "--cluster",
                "demo",
                "--ticket",
                "DEMO-1",
            ])
            .args(["--reason", "benchmark run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("palisade op run")
            .success();
        op_run.push(t0.elapsed());
        assert!(ok, "palisade op run failed");
    }

    // (a) The agent alone: log append with the witness, then dispatch.
    let dir = &stack.dir;
    let dispatcher = Dispatcher::new(
        &dir.join("pki/ca.crt"),
        &dir.join("pki/gateway-gateway.crt"),
        &dir.join("pki/gateway-gateway.key"),
        SigningKey::read(&dir.join("gateway/keys/gateway.key")).expect("gateway key"),
        &format!("https://127.0.0.1:{}", stack.base + 1),
    )
    .expect("dispatcher");
    // The tenant's statement, as the gateway sends it (when the agent requires one).
    if let Ok(bytes) =
        std::fs::read(dir.join(palisade_core::inventory::demo_tenant::TRUST_STATEMENT))
    {
        dispatcher.set_tenant_trust("demo", serde_json::from_slice(&bytes).expect("statement"));
    }
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
    let agent_keys = vec![PublicKey::read(&dir.join("agent/keys/agent.pub")).expect("agent pub")];
    let agent_url = format!("https://127.0.0.1:{}", stack.base + 3);
    let validated = policy.validate_args("etcd.status", &[]).expect("valid");
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
        action: ActionName::parse("etcd.status").expect("action"),
        parameters: validated.params().clone(),
        justification: Justification {
            ticket: "BENCH-1".into(),
            reason: "benchmark run".into(),
        },
        policy: policy.reference(),
    };
    let mut agent = Vec::with_capacity(n);
    let mut log_only = Vec::with_capacity(n);
    for i in 0..n + 3 {
        let p = prepare(&request, Duration::from_secs(60), Timestamp::now()).expect("prepare");
        let t0 = Instant::now();
        // As the gateway does: the append also proves consistency with the agent's
        // last size, so the dispatch fetches nothing from the log.
        let (entry, appended) = dispatcher
            .log_intent_for(&p, &agent_url)
            .await
            .expect("log");
        let logged = t0.elapsed();
        dispatcher
            .dispatch_logged(&agent_url, &p, &entry, &appended, &log_policy, &agent_keys)
            .await
            .expect("dispatch");
        if i >= 3 {
            agent.push(t0.elapsed());
            log_only.push(logged);
        }
    }

    // The fallback of (a), when the append brought no consistency proof (another
    // gateway moved the agent's view past it): the proofs fetched from the log's tiles
    // (inclusion against the current checkpoint, consistency from the agent's view).
    let size = dispatcher
        .health(&agent_url)
        .await
        .expect("agent health")
        .log_size_seen;
    let mut proofs = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        dispatcher
            .proofs("demo", &log_policy, size - 1, size - 2)
            .await
            .expect("proofs");
        proofs.push(t0.elapsed());
    }

    // (d) etcdctl as a process, (e) etcd-client in-process: the same etcd.
    let endpoint = stack.etcd_endpoint();
    let mut etcdctl = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "endpoint", "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("etcdctl (apt-get install etcd-client)")
            .success();
        etcdctl.push(t0.elapsed());
        assert!(ok, "etcdctl endpoint status failed");
    }
    let mut client = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .expect("etcd client");
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        client.status().await.expect("status");
        direct.push(t0.elapsed());
    }
    let (after_rss, hwm) = memory(gw_pid);

    println!("etcd.status, one after another, {n} samples per path (warm-up excluded)");
    println!();
    print_header();
    row("(a) agent: log append + witness, then dispatch", agent);
    row("    of which: log append until witnessed", log_only);
    row("    fallback: Dispatcher::proofs (fetch, verify)", proofs);
    row("(b) gateway: HTTPS POST .../actions/etcd.status", gateway);
    row("(c) `palisade op run etcd.status` (a process)", op_run);
    row(
        "(d) baseline: `etcdctl endpoint status` (a process)",
        etcdctl,
    );
    row("(e) baseline: etcd-client status() in-process", direct);
    println!();
    println!(
        "gateway memory: idle {:.1} MiB RSS; after this run {:.1} MiB RSS, peak (VmHWM) {:.1} MiB",
        mib(idle_rss),
        mib(after_rss),
        mib(hwm)
    );
}

async fn throughput() {
    let clusters = env_u64("GATEWAY_BENCH_CLUSTERS", 100) as usize;
    let secs = env_u64("GATEWAY_BENCH_SECONDS", 15);
    let in_flight = env_u64("GATEWAY_BENCH_IN_FLIGHT", 128) as usize;
    let operators = env_u64("GATEWAY_BENCH_OPERATORS", 250) as usize;
    let t = Instant::now();
    let stack = Stack::start(clusters, operators);
    println!(
        "stack with {clusters} clusters ({} agent processes) and {operators} operators started in {:.0} s",
        stack.agents.len() + 1,
        t.elapsed().as_secs_f64()
    );
    let gw = stack.gateway_url();
    let gw_pid = stack.gateway_pid();
    let up_pid = stack.up.child.id();
    let mut agent_pids: Vec<u32> = stack.agents.iter().map(|a| a.child.id()).collect();
    agent_pids.extend(child_pid(up_pid, "agent serve"));
    let http = stack.gateway_http();
    let mut tokens = Vec::new();
    for op in &stack.operators {
        tokens.push(dev_token(&http, &gw, op).await);
    }
    let tokens = Arc::new(tokens);
    let (idle_rss, _) = memory(gw_pid);

    // Warm-up: one action per cluster, so that every agent has seen its log.
    let mut warm_ids = Vec::new();
    for (i, c) in stack.clusters.iter().enumerate() {
        let o = run_status(&http, &gw, &tokens[i % tokens.len()], c).await;
        assert_eq!(
            o.op_status.as_deref(),
            Some("succeeded"),
            "warm-up on {c}: HTTP {}",
            o.http
        );
        warm_ids.push((c.clone(), o.op_id.expect("id")));
    }
    // The warm-up used one request of each of the first operators' budgets.
    let warm = stack.clusters.len() as u64;
    let (warm_rss, _) = memory(gw_pid);

    // Memory while loaded, sampled.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (rss, _) = memory(gw_pid);
                peak = peak.max(rss);
                samples.push(rss);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (peak, samples)
        })
    };

    // CPU per component: which processes the load costs what.
    let mut components: Vec<(&str, Vec<u32>)> = vec![
        ("gateway", vec![gw_pid]),
        ("log", child_pid(up_pid, "log serve").into_iter().collect()),
        (
            "witness",
            child_pid(up_pid, "state/witness/witness.toml")
                .into_iter()
                .collect(),
        ),
        (
            "tenant witness",
            child_pid(up_pid, "tenant-demo/witness/witness.toml")
                .into_iter()
                .collect(),
        ),
        ("agents", agent_pids.clone()),
        (
            "etcd",
            child_pid(up_pid, "agent serve")
                .and_then(|a| child_pid(a, "etcd"))
                .into_iter()
                .collect(),
        ),
        ("load generator (this process)", vec![std::process::id()]),
    ];
    components.retain(|(_, pids)| !pids.is_empty());
    // Clock ticks each component used since `before` (a reading of `ticks_now()`).
    let ticks_now = || -> Vec<u64> {
        components
            .iter()
            .map(|(_, pids)| pids.iter().map(|p| cpu_ticks(*p)).sum())
            .collect()
    };
    let ticks_since = |before: &[u64]| -> Vec<u64> {
        ticks_now()
            .iter()
            .zip(before)
            .map(|(n, b)| n.saturating_sub(*b))
            .collect()
    };
    // What each process costs with nothing to do (timers, heartbeats, health checks),
    // over a quiet window before the load: the part of the CPU per action below that
    // does not grow with the actions.
    let idle_window = Duration::from_secs(env_u64("GATEWAY_BENCH_IDLE_SECONDS", 10));
    let idle_before = ticks_now();
    tokio::time::sleep(idle_window).await;
    let idle_ticks = ticks_since(&idle_before);
    let ticks_before = ticks_now();
    let cpu_before = cpu_times();
    let next = Arc::new(AtomicU64::new(warm));
    let budget = 58 * operators;
    let clusters_list = Arc::new(stack.clusters.clone());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (http, gw, tokens, next, cl) = (
            http.clone(),
            gw.clone(),
            tokens.clone(),
            next.clone(),
            clusters_list.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                // Stay within 58 requests per operator (the policy allows 60 a minute).
                if k >= budget {
                    break;
                }
                let op = k % tokens.len();
                let cluster = &cl[(k + k / tokens.len()) % cl.len()];
                let o = run_status(&http, &gw, &tokens[op], cluster).await;
                out.push((cluster.clone(), o));
            }
            out
        }));
    }
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.expect("worker"));
    }
    let elapsed = start.elapsed();
    let cpu_after = cpu_times();
    let ticks_used = ticks_since(&ticks_before);
    stop.store(true, Ordering::Relaxed);
    let (peak_rss, samples) = sampler.await.expect("sampler");
    let (after_rss, hwm) = memory(gw_pid);
    let agents_rss: u64 = agent_pids.iter().map(|p| memory(*p).0).sum();

    let succeeded: Vec<&(String, RunOutcome)> = outcomes
        .iter()
        .filter(|(_, o)| o.op_status.as_deref() == Some("succeeded"))
        .collect();
    let with_op = outcomes.iter().filter(|(_, o)| o.op_id.is_some()).count();
    let refused_logged = outcomes.iter().filter(|(_, o)| o.refusal_logged).count();
    let other: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| o.op_status.as_deref() != Some("succeeded"))
        .map(|(c, o)| {
            // One line per kind of failure, whichever cluster it hit.
            format!(
                "{}/{}: {}",
                o.http,
                o.op_status.as_deref().unwrap_or("-"),
                o.detail
                    .as_deref()
                    .unwrap_or("")
                    .replace(&format!("/logs/{c}/"), "/logs/<cluster>/")
            )
        })
        .collect();
    let mut lat: Vec<Duration> = succeeded.iter().map(|(_, o)| o.took).collect();
    lat.sort();
    println!();
    println!(
        "throughput: {} etcd.status requests over {} clusters, {in_flight} in flight, {} operators, {:.1} s",
        outcomes.len(),
        stack.clusters.len(),
        tokens.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "  succeeded {} = {:.0} actions/s (target >= 1000); not succeeded {} {:?}",
        succeeded.len(),
        succeeded.len() as f64 / elapsed.as_secs_f64(),
        other.len(),
        {
            let mut kinds: Vec<String> = other
                .iter()
                .take(2000)
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            kinds.sort();
            kinds
        }
    );
    if !lat.is_empty() {
        println!(
            "  latency under load: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().expect("some").as_secs_f64() * 1e3
        );
    }
    let mean_rss = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    println!(
        "  gateway memory: idle {:.1} MiB, after warm-up {:.1} MiB, under load mean {:.1} / peak {:.1} MiB RSS, after {:.1} MiB, VmHWM {:.1} MiB",
        mib(idle_rss),
        mib(warm_rss),
        mean_rss / 1024.0,
        mib(peak_rss),
        mib(after_rss),
        mib(hwm)
    );
    let (busy, total) = (
        cpu_after.0.saturating_sub(cpu_before.0),
        cpu_after.1.saturating_sub(cpu_before.1),
    );
    println!(
        "  machine during the load: CPU {:.0}% busy, {:.0}% waiting for I/O (of {} cores)",
        100.0 * busy as f64 / total.max(1) as f64,
        100.0 * cpu_after.2.saturating_sub(cpu_before.2) as f64 / total.max(1) as f64,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Every request sent during the load costs CPU, succeeded or not.
    let per_action = |t: u64| 1e3 * t as f64 / ticks_per_second() / outcomes.len().max(1) as f64;
    let total_ms: f64 = ticks_used.iter().map(|t| per_action(*t)).sum();
    println!(
        "  CPU per action: {} = {total_ms:.2} ms; at that cost {} cores run at most {:.0} actions/s",
        by_component(&components, ticks_used.iter().map(|t| per_action(*t)), 2, " ms"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::thread::available_parallelism().map_or(0, |n| n.get()) as f64 * 1e3 / total_ms.max(1e-9)
    );
    let idle_share = |t: u64| 100.0 * t as f64 / ticks_per_second() / idle_window.as_secs_f64();
    println!(
        "  idle, before the load ({} s): {} (% of one core)",
        idle_window.as_secs(),
        by_component(
            &components,
            idle_ticks.iter().map(|t| idle_share(*t)),
            1,
            ""
        ),
    );
    // The same costs, less what each process used idle over as long a window.
    let above_idle: Vec<f64> = ticks_used
        .iter()
        .zip(&idle_ticks)
        .map(|(used, idle)| {
            let idle = *idle as f64 * elapsed.as_secs_f64() / idle_window.as_secs_f64();
            (1e3 * (*used as f64 - idle) / ticks_per_second() / outcomes.len().max(1) as f64)
                .max(0.0)
        })
        .collect();
    println!(
        "  CPU per action above idle: {} = {:.2} ms",
        by_component(&components, above_idle.iter().copied(), 2, " ms"),
        above_idle.iter().sum::<f64>()
    );
    // The unit costs an action repeats, on this machine with the stack idle.
    let (syncs, sync_cpu) = fsync_rate(Duration::from_secs(3));
    let exchange = exchange_cost(&http, &gw, gw_pid, 2000).await;
    let (sign, verify) = ed25519_costs(2000);
    println!(
        "  unit costs, idle: one HTTPS exchange {exchange:.0} µs of CPU (both ends); Ed25519 sign {sign:.0} µs, verify {verify:.0} µs; \
         this disk {syncs:.0} durable 4 KiB appends/s one after another (fdatasync), {sync_cpu:.0} µs of CPU each"
    );
    println!(
        "  {} agent processes: {:.0} MiB RSS together ({:.1} MiB each)",
        agent_pids.len(),
        mib(agents_rss),
        mib(agents_rss) / agent_pids.len().max(1) as f64
    );

    // Every action's intent and result, and every logged refusal, in the logs.
    let t = Instant::now();
    let tenant_token = stack.read("tenant-demo.token");
    let mut intents = HashSet::new();
    let mut results = HashSet::new();
    let mut refusals = 0usize;
    let mut statements = 0usize;
    let mut agent_keys = 0usize;
    let mut entries = 0usize;
    let cl = stack.clusters.clone();
    let reads = futures::stream::iter(cl.into_iter().map(|c| {
        let (http, gw, token) = (http.clone(), gw.clone(), tenant_token.clone());
        async move {
            let mut events = Vec::new();
            let mut from = 0u64;
            loop {
                let resp = http
                    .get(format!(
                        "{gw}/v1/tenants/demo/clusters/{c}/events?from={from}&limit=100"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("access log");
                assert!(
                    resp.status().is_success(),
                    "access log of {c}: {}",
                    resp.status()
                );
                let page: serde_json::Value =
                    serde_json::from_slice(&resp.bytes().await.expect("page")).expect("json");
                for e in page["events"].as_array().cloned().unwrap_or_default() {
                    events.push(e["event"].clone());
                }
                match page["next"].as_u64() {
                    Some(n) => from = n,
                    None => break,
                }
            }
            events
        }
    }));
    use futures::StreamExt;
    let all: Vec<Vec<serde_json::Value>> = reads.buffer_unordered(8).collect().await;
    for events in all {
        for e in events {
            entries += 1;
            match e["kind"].as_str() {
                Some("intent") => {
                    intents.insert(e["event_id"].as_str().unwrap_or_default().to_string());
                }
                Some("result") => {
                    results.insert(e["intent"].as_str().unwrap_or_default().to_string());
                }
                Some("refusal") => refusals += 1,
                Some("tenant_trust") => statements += 1,
                Some("agent_key") => agent_keys += 1,
                _ => {}
            }
        }
    }
    let ids = succeeded
        .iter()
        .filter_map(|(_, o)| o.op_id.clone())
        .chain(warm_ids.iter().map(|(_, id)| id.clone()));
    let (mut no_intent, mut no_result, mut checked) = (0, 0, 0);
    for id in ids {
        checked += 1;
        no_intent += usize::from(!intents.contains(&id));
        no_result += usize::from(!results.contains(&id));
    }
    let expected = 2 * (with_op + warm_ids.len()) + refused_logged + statements + agent_keys;
    println!(
        "  log check through the customer access-log API ({:.0} s): {entries} entries in {} logs, expected {expected} \
         (2 x {} operations + {refused_logged} logged refusals + {statements} tenant statements + {agent_keys} agent keys); {checked} succeeded actions checked: \
         {no_intent} without intent, {no_result} without result; {refusals} refusal events",
        t.elapsed().as_secs_f64(),
        stack.clusters.len(),
        with_op + warm_ids.len(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    if want("latency") {
        latency().await;
    }
    if want("throughput") {
        throughput().await;
    }
}
