//! The agent's cost of verifying one dispatch (docs/performance.md records the
//! figures):
//!
//! ```sh
//! cargo bench -p palisade-benches --bench agent
//! ```
//!
//! Everything is in-process and real: a cluster log built in memory with
//! `palisade_tlog` (a prefilled tree, one new intent per dispatch, each checkpoint
//! signed by the log key and cosigned by a witness key), gateway keys from
//! `palisade_policy::keys::generate`, the shipped default policy
//! (deploy/policy/default.yaml), and the agent's replay cache and view in a redb file
//! (under `$TMPDIR`, fsync on every commit, as the agent runs).
//!
//! Each dispatch is what a gateway sends in steady state: an `etcd.status` intent one
//! entry past the agent's view, its inclusion proof in a witnessed checkpoint, and a
//! consistency proof from the size the agent saw before. The requests are built
//! first; only [`Acceptor::accept`] is timed, one dispatch after another. Then the
//! main costs are timed apart on the same requests.
//!
//! Knobs: `AGENT_BENCH_N` (dispatches, default 2,000), `AGENT_BENCH_LOG_SIZE` (entries
//! already in the log, default 100,000).
//!
//! `cargo bench -p palisade-benches --bench agent -- memory` measures instead an idle
//! agent's resident memory, as processes: `palisade up` (release build) and its
//! agent, which supervises etcd; then two agents of the same configuration without
//! components (as an instance whose etcd another agent supervises), one started as
//! `palisade agent serve` and one from the instance binary `palisade-agent`
//! (`cargo build --profile agent -p palisade --bin palisade-agent`, or
//! `PALISADE_AGENT_BIN`). Each is read from `/proc/<pid>/smaps_rollup`
//! `AGENT_BENCH_SETTLE_SECS` (default 10) after it is ready: resident in all,
//! anonymous (what the agent allocated), and the rest (mapped code and data of the
//! binary and libraries: clean pages shared with the page cache).
#![forbid(unsafe_code)]

#[path = "support/mod.rs"]
mod support;

use palisade_agent::accept::{Acceptor, AcceptorConfig, LoadedPolicy, PolicySource};
use palisade_agent::client::{prepare, Request};
use palisade_agent::dispatch::{Consistency, Dispatch, DispatchRequest, DISPATCH_PAYLOAD_TYPE};
use palisade_agent::view::AgentState;
use palisade_core::event::{Actor, Event, GrantRef, Justification};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, ClusterId, InstanceId, OperatorId, TenantId};
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_policy::Policy;
use palisade_tlog::checkpoint::{Checkpoint, LogPolicy};
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::note::{KeyType, Note, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tree::{consistency_proof, verify_consistency, Frontier};
use std::time::{Duration, Instant};

const ORIGIN: &str = "palisade.local/log/demo";
const DEFAULT_POLICY: &str = include_str!("../deploy/policy/default.yaml");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The shipped policy, as the agent would hold it after verifying the TUF repository.
struct ShippedPolicy;

#[async_trait::async_trait]
impl PolicySource for ShippedPolicy {
    async fn load(&self) -> Result<LoadedPolicy, String> {
        let policy = Policy::parse_yaml(DEFAULT_POLICY).map_err(|e| format!("{e:?}"))?;
        // Valid for as long as the benchmark runs.
        let expires = Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 86_400);
        Ok(LoadedPolicy::verified(policy, expires))
    }
}

/// A cluster log in memory: the tree's right edge plus every stored hash, so that
/// proofs can be produced for any size reached so far.
struct MemoryLog {
    frontier: Frontier,
    stored: Vec<Hash>,
    log_key: SignerKey,
    witness_key: SignerKey,
}

impl MemoryLog {
    fn append(&mut self, entry: &[u8]) -> u64 {
        let index = self.frontier.size();
        let new = self.frontier.append(leaf_hash(entry)).expect("append");
        self.stored.extend(new);
        index
    }

    fn witnessed_note(&self) -> Note {
        let cp = Checkpoint::new(ORIGIN, self.frontier.size(), self.frontier.root())
            .expect("checkpoint");
        let mut note = cp.sign(&self.log_key).expect("sign");
        let ts = u64::try_from(Timestamp::now().unix_seconds()).expect("time");
        note.cosign(&self.witness_key, ts).expect("cosign");
        note
    }
}

fn stats(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let pct = |p: f64| d[((d.len() as f64 * p) as usize).min(d.len() - 1)];
    let mean = d.iter().map(|x| us(*x)).sum::<f64>() / d.len() as f64;
    println!(
        "| {name:<48} | {:>6} | {:>9.1} | {:>9.1} | {:>9.1} | {:>9.1} |",
        d.len(),
        mean,
        us(pct(0.50)),
        us(pct(0.99)),
        us(*d.last().expect("some")),
    );
}

/// The instance binary: `PALISADE_AGENT_BIN`, or `target/agent/palisade-agent`.
fn instance_agent_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_AGENT_BIN") {
        return p.into();
    }
    let release = support::palisade_bin();
    let bin = release
        .parent()
        .and_then(std::path::Path::parent)
        .map(|t| t.join("agent/palisade-agent"))
        .expect("target dir");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --profile agent -p palisade --bin palisade-agent` (same CARGO_TARGET_DIR) or set PALISADE_AGENT_BIN",
        bin.display()
    );
    bin
}

fn idle_memory() {
    use std::process::Command;
    use support::{free_port_block, mib, Proc};
    let settle = Duration::from_secs(env_u64("AGENT_BENCH_SETTLE_SECS", 10));
    let bin = support::palisade_bin();
    let instance_bin = instance_agent_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let base = free_port_block(palisade_core::ports::up_ports(1));
    let mut up = Proc::spawn(
        support::up_command(&bin, &dir, base),
        Duration::from_secs(15),
    );
    up.wait_for("ready", Duration::from_secs(180));

    // Two more agents of demo-0's configuration, without its components, each on
    // ports and files of its own.
    let config = std::fs::read_to_string(dir.join("agent/agent.toml")).expect("agent.toml");
    let config = &config[..config.find("[[component]]").unwrap_or(config.len())];
    let listen = format!("127.0.0.1:{}", base + 3);
    let metrics = format!("127.0.0.1:{}", base + 7);
    let mut extra = Vec::new();
    for (label, program, prefix) in [
        (
            "palisade agent serve, no components",
            &bin,
            vec!["agent", "serve"],
        ),
        (
            "palisade-agent serve, no components",
            &instance_bin,
            vec!["serve"],
        ),
    ] {
        let own = tmp.path().join(format!("agent-{}", extra.len()));
        std::fs::create_dir_all(&own).expect("dir");
        let port = free_port_block(2);
        let text = config
            .replace(&listen, &format!("127.0.0.1:{port}"))
            .replace(&metrics, &format!("127.0.0.1:{}", port + 1))
            .replace(
                "state = \"state.redb\"",
                &format!("state = \"{}/state.redb\"", own.display()),
            )
            .replace(
                "work_dir = \"work\"",
                &format!("work_dir = \"{}/work\"", own.display()),
            )
            .replace(
                "datastore = \"tuf-datastore\"",
                &format!("datastore = \"{}/tuf\"", own.display()),
            )
            .replace(
                "signing_key = \"keys/",
                &format!("signing_key = \"{}/agent/keys/", dir.display()),
            );
        let path = own.join("agent.toml");
        std::fs::write(&path, text).expect("agent.toml");
        let mut cmd = Command::new(program);
        cmd.args(&prefix).args([
            "--config",
            &path.display().to_string(),
            "--exit-with-parent",
        ]);
        let mut p = Proc::spawn(cmd, Duration::from_secs(10));
        p.wait_for("listening on", Duration::from_secs(60));
        extra.push((label, p));
    }
    std::thread::sleep(settle);
    up.drain();
    let up_agent = support::child_pid(up.child.id(), "agent serve").expect("up's agent");
    println!(
        "idle agent, resident memory {} s after start (MiB)",
        settle.as_secs()
    );
    println!(
        "{:<44} {:>9} {:>10} {:>10}",
        "agent", "resident", "anonymous", "mapped"
    );
    let mut rows = vec![("palisade agent serve, supervising etcd", up_agent)];
    rows.extend(extra.iter().map(|(l, p)| (*l, p.child.id())));
    for (label, pid) in rows {
        let (rss, anon) = support::resident(pid);
        println!(
            "{label:<44} {:>9.1} {:>10.1} {:>10.1}",
            mib(rss),
            mib(anon),
            mib(rss.saturating_sub(anon))
        );
    }
    for (_, mut p) in extra {
        p.terminate();
    }
    up.terminate();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "memory") {
        return tokio::task::block_in_place(idle_memory);
    }
    let n = env_u64("AGENT_BENCH_N", 2_000);
    let prefill = env_u64("AGENT_BENCH_LOG_SIZE", 100_000);
    let tmp = tempfile::tempdir().expect("tempdir");

    // Keys: the gateway's (as `palisade up` makes them), the log's and a witness's.
    let gw = palisade_policy::keys::generate("gateway", &tmp.path().join("keys"), false)
        .expect("gateway key");
    let gateway_key = SigningKey::read(&gw.private).expect("read gateway key");
    let gateway_pub = PublicKey::read(&gw.public).expect("read gateway pub");
    let log_key = SignerKey::generate("palisade.local/log", KeyType::Ed25519).expect("log key");
    let witness_key =
        SignerKey::generate("palisade.local/witness", KeyType::Cosignature).expect("witness");
    let log_policy = LogPolicy::new(ORIGIN, log_key.verifier())
        .expect("log policy")
        .with_witnesses(vec![witness_key.verifier()], 1)
        .expect("witnesses");
    let policy = Policy::parse_yaml(DEFAULT_POLICY).expect("default policy");

    let config = AcceptorConfig {
        tenant: TenantId::parse("demo").expect("tenant"),
        cluster: ClusterId::parse("demo").expect("cluster"),
        instance: InstanceId::parse("demo-0").expect("instance"),
        gateway_keys: vec![gateway_pub.clone()],
        log: log_policy.clone(),
        max_ttl: Duration::from_secs(600),
        clock_skew: Duration::from_secs(30),
        max_cosignature_age: Duration::from_secs(300),
        tenant_key: None,
        retired_log_keys: Vec::new(),
    };
    let state_path = tmp.path().join("agent-state.redb");
    let state = AgentState::new(palisade_state::open_embedded(&state_path).expect("redb"));
    let acceptor = Acceptor::new(config, Box::new(ShippedPolicy), state)
        .await
        .expect("acceptor");

    // The log, prefilled with other clusters' worth of entries.
    let mut log = MemoryLog {
        frontier: Frontier::new(),
        stored: Vec::new(),
        log_key,
        witness_key,
    };
    let t = Instant::now();
    for i in 0..prefill {
        log.append(format!("earlier entry {i}").as_bytes());
    }
    let validated = policy.validate_args("etcd.status", &[]).expect("validates");
    let request = Request {
        tenant: TenantId::parse("demo").expect("tenant"),
        cluster: ClusterId::parse("demo").expect("cluster"),
        instance: InstanceId::parse("demo-0").expect("instance"),
        actor: Actor {
            service: None,
            authn: None,
            id: OperatorId::parse("op-7f3a5c2e9b1d4a60").expect("op"),
            groups: vec!["sre".into()],
            grant: Some(GrantRef {
                schedule: "primary".into(),
                role: "operator".into(),
                ends_at: Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3600),
            }),
        },
        action: ActionName::parse("etcd.status").expect("action"),
        parameters: validated.params().clone(),
        justification: Justification {
            ticket: "INC-1234".into(),
            reason: "benchmark of the agent's acceptance".into(),
        },
        policy: policy.reference(),
    };

    // The dispatches, each one intent past the previous checkpoint.
    let mut requests = Vec::with_capacity(n as usize);
    let mut seen = 0u64;
    for _ in 0..n {
        let p = prepare(&request, Duration::from_secs(600), Timestamp::now()).expect("prepare");
        let entry = Event::Intent(Box::new(p.intent.clone()))
            .to_log_entry()
            .expect("entry");
        let index = log.append(&entry);
        let note = log.witnessed_note();
        let size = log.frontier.size();
        let proof = TlogProof::produce(index, note, None, log.stored.as_slice()).expect("proof");
        let consistency = (seen > 0).then(|| Consistency {
            from_size: seen,
            hashes: consistency_proof(seen, size, log.stored.as_slice())
                .expect("consistency")
                .iter()
                .map(Hash::to_base64)
                .collect(),
        });
        requests.push(DispatchRequest {
            dispatch: p.dispatch.sign(&gateway_key).expect("sign"),
            event: DispatchRequest::encode_event(&entry),
            proof: String::from_utf8(proof.to_bytes()).expect("utf8"),
            consistency,
            tenant_trust: None,
            approval: None,
        });
        seen = size;
    }
    println!(
        "agent acceptance: {n} etcd.status dispatches into a log of {prefill} entries (set up in {:.1} s); state {}",
        t.elapsed().as_secs_f64(),
        state_path.display()
    );
    println!();
    println!("| measurement (µs per dispatch)                    |      n |      mean |       p50 |       p99 |       max |");
    println!("|--------------------------------------------------|--------|-----------|-----------|-----------|-----------|");

    // The whole rule, as the agent's server calls it.
    let mut whole = Vec::with_capacity(requests.len());
    for r in &requests {
        let t0 = Instant::now();
        let accepted = acceptor.accept(r, Timestamp::now()).await;
        whole.push(t0.elapsed());
        if let Err(e) = accepted {
            panic!("an honest dispatch was refused: {e}");
        }
    }
    stats("Acceptor::accept (all 10 steps)", whole);

    // The main costs, apart, on the same requests.
    let mut sig = Vec::new();
    let mut decode = Vec::new();
    let mut proof_t = Vec::new();
    let mut stored_cp = Vec::new();
    let mut cons_t = Vec::new();
    let keys = [gateway_pub];
    let mut prev: Option<(u64, Hash)> = None;
    for r in &requests {
        let t0 = Instant::now();
        let ok = !r.dispatch.verified_by(&keys).is_empty();
        sig.push(t0.elapsed());
        assert!(ok);

        let t0 = Instant::now();
        let payload = r
            .dispatch
            .payload_bytes(DISPATCH_PAYLOAD_TYPE)
            .expect("payload");
        let d = Dispatch::from_bytes(&payload).expect("dispatch");
        let params = serde_json::to_vec(&d.parameters).expect("params");
        policy
            .validate(d.action.as_str(), &params)
            .expect("validates");
        let entry = r.event_bytes().expect("event");
        let _ = Event::from_log_entry(&entry).expect("event decodes");
        decode.push(t0.elapsed());

        let t0 = Instant::now();
        let proof = TlogProof::parse(r.proof.as_bytes()).expect("parse");
        let verified = proof.verify(&entry, &log_policy).expect("verify");
        proof_t.push(t0.elapsed());

        let note = verified.note().to_bytes();
        let t0 = Instant::now();
        let _ = log_policy.verify(&note).expect("stored checkpoint");
        stored_cp.push(t0.elapsed());

        let new = verified.checkpoint();
        if let (Some((old_size, old_root)), Some(c)) = (&prev, &r.consistency) {
            let t0 = Instant::now();
            let hashes: Vec<Hash> = c
                .hashes
                .iter()
                .map(|h| Hash::from_base64(h).expect("hash"))
                .collect();
            verify_consistency(*old_size, new.size(), old_root, new.root(), &hashes)
                .expect("consistent");
            cons_t.push(t0.elapsed());
        }
        prev = Some((new.size(), *new.root()));
    }
    stats("1 gateway signature (DSSE, Ed25519)", sig);
    stats("5-7 decode dispatch + policy validation + event", decode);
    stats("8 inclusion proof + log sig + witness cosig", proof_t);
    stats("9 re-verify the stored checkpoint (done twice)", stored_cp);
    stats("9 consistency proof from the previous size", cons_t);

    // Steps 4 and 10 against a fresh redb file: the replay-cache read, then spending
    // the nonce and advancing the view (two commits, each fsynced).
    let fresh = AgentState::new(
        palisade_state::open_embedded(&tmp.path().join("state-only.redb")).expect("redb"),
    );
    let mut state_t = Vec::new();
    let mut prev_note: Option<Vec<u8>> = None;
    for r in &requests {
        let payload = r
            .dispatch
            .payload_bytes(DISPATCH_PAYLOAD_TYPE)
            .expect("payload");
        let d = Dispatch::from_bytes(&payload).expect("dispatch");
        let note = TlogProof::parse(r.proof.as_bytes())
            .expect("parse")
            .checkpoint()
            .to_bytes();
        let t0 = Instant::now();
        assert!(!fresh.nonce_seen(d.nonce.as_str()).await.expect("read"));
        let old = fresh.checkpoint().await.expect("view");
        assert!(fresh
            .spend_nonce(d.nonce.as_str(), d.expires_at)
            .await
            .expect("spend"));
        assert!(fresh.advance(old, note.clone()).await.expect("advance"));
        state_t.push(t0.elapsed());
        prev_note = Some(note);
    }
    drop(prev_note);
    stats("4+10 state: nonce read, spend + advance (redb)", state_t);
}
