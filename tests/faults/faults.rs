//! The fault suite: real processes (`palisade up`: witness, log, gateway, KMS plugin,
//! agent and the etcd it supervises) under a bounded concurrent load of operator
//! actions, while one fault is injected — SIGKILL of the log, the witness, the agent
//! or the gateway; SIGSTOP of the witness or etcd; the log's storage full — and then
//! the invariants that must hold whatever crashed:
//!
//! 1. nothing ran without its intent in the log (the agent accepts only proven
//!    intents; every id it accepted is an intent in the customer's log);
//! 2. every intent the agent accepted has exactly one result in the customer's log
//!    within 30 s of the fault ending, and no intent ever has two;
//! 3. nothing was dispatched twice (the agent accepted each event once);
//! 4. no orphan process (one etcd for the instance, none left after the stack stops);
//! 5. the operator's outcome and the customer's are the same word.
//!
//! `palisade up` restarts a child that exits (after 1 s), so a SIGKILL is followed by
//! a restart, as a process supervisor would do in production.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::processes_mentioning;
use harness::Stack;
use palisade_agent::dispatch::AgentStatement;
use palisade_core::event::Event;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICKET: &str = "INC-4242";
const REASON: &str = "fault suite: checking what survives a crash";
/// What the issue promises: a result within this long after the fault ended.
const RESULT_BOUND: Duration = Duration::from_secs(30);

/// The operator's side of the load: every answer the gateway gave.
#[derive(Debug, Clone)]
struct Sent {
    action: &'static str,
    answer: Result<(u16, serde_json::Value), String>,
}

/// An HTTPS client for the gateway that reports failures instead of panicking (the
/// gateway may be down while a fault lasts).
fn client(stack: &Stack) -> reqwest::Client {
    let roots = palisade_pki::load_roots(&stack.dir.join("pki/ca.crt")).expect("roots");
    let tls = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn run_action(
    http: &reqwest::Client,
    gateway: &str,
    token: &str,
    action: &'static str,
) -> Sent {
    let mut body = serde_json::json!({"arguments": {}, "ticket": TICKET, "reason": REASON});
    if action.starts_with("etcd.status") || action == "component.status" {
        body["instance"] = "demo-0".into();
    }
    let answer = async {
        let resp = http
            .post(format!("{gateway}/v1/clusters/demo/actions/{action}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }
    .await;
    Sent { action, answer }
}

/// `workers` operators' worth of read actions, one every `pace`, for `length`.
fn start_load(
    stack: &Stack,
    token: &str,
    workers: usize,
    pace: Duration,
    length: Duration,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    let http = client(stack);
    let gateway = stack.gateway().url;
    let token = token.to_string();
    tokio::spawn(async move {
        let until = Instant::now() + length;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (http, gateway, token) = (http.clone(), gateway.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let actions = [
                    "etcd.status",
                    "etcd.members",
                    "etcd.alarms",
                    "component.status",
                ];
                let mut sent = Vec::new();
                let mut i = w;
                while Instant::now() < until {
                    sent.push(
                        run_action(&http, &gateway, &token, actions[i % actions.len()]).await,
                    );
                    i += 1;
                    tokio::time::sleep(pace).await;
                }
                sent
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("load worker"));
        }
        all
    })
}

/// The pids of the stack's processes whose command line holds `needle`.
fn pids_of(dir: &Path, needle: &str) -> Vec<i32> {
    processes_mentioning(dir)
        .into_iter()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split(':').next().and_then(|p| p.parse().ok()))
        .collect()
}

/// The pid of the stack's process whose command line holds `needle` (e.g.
/// `"agent serve"`); panics if there is not exactly one.
fn pid_of(dir: &Path, needle: &str) -> i32 {
    let found = pids_of(dir, needle);
    assert_eq!(found.len(), 1, "processes for {needle:?}: {found:?}");
    found[0]
}

fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Waits until the stack's process for `needle` runs again under a new pid.
async fn wait_restarted(dir: &Path, needle: &str, old: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = pids_of(dir, needle);
        if pids.len() == 1 && pids[0] != old {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} was not started again: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The etcd processes of the instance (their command line names its data dir).
fn etcd_processes(dir: &Path) -> Vec<String> {
    let data = dir.join("agent").to_string_lossy().to_string();
    processes_mentioning(dir)
        .into_iter()
        .filter(|l| l.contains("--data-dir") && l.contains(&data))
        .collect()
}

/// Every entry of the demo cluster's log, decoded.
async fn log_events(stack: &Stack) -> Result<Vec<(u64, Event)>, String> {
    let source = stack.dispatcher.source("demo").map_err(|e| e.to_string())?;
    let entries = std::sync::Mutex::new(Vec::new());
    palisade_tlog_service::audit::find_entry_where(&source, &stack.log_policy, 0, |e| {
        if let Ok(mut v) = entries.lock() {
            v.push(e.to_vec());
        }
        false
    })
    .await
    .map_err(|e| e.to_string())?;
    let entries = entries.into_inner().map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| Event::from_log_entry(&e).ok().map(|ev| (i as u64, ev)))
        .collect())
}

/// The event ids the agent accepted, with how often (from its own log lines).
fn accepted_by_agent(stack: &mut Stack) -> BTreeMap<String, usize> {
    let mut accepted = BTreeMap::new();
    for line in stack.agent_output() {
        if !line.contains("dispatch accepted") {
            continue;
        }
        if let Some(id) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("event="))
        {
            *accepted.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    accepted
}

/// The invariants, polled until they hold or `RESULT_BOUND` after `fault_ended`.
async fn check_invariants(stack: &mut Stack, token: &str, sent: &[Sent], fault_ended: Instant) {
    let http = client(stack);
    let gateway = stack.gateway().url;
    let deadline = fault_ended + RESULT_BOUND;
    let mut last_problem;
    loop {
        last_problem = match invariants_now(stack, &http, &gateway, token, sent).await {
            Ok(summary) => {
                eprintln!("fault suite: invariants hold: {summary}");
                break;
            }
            Err(problem) => problem,
        };
        assert!(
            Instant::now() < deadline,
            "within {RESULT_BOUND:?} of the fault's end: {last_problem}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 4. No orphan: exactly one etcd for the instance.
    let etcds = etcd_processes(&stack.dir);
    assert_eq!(etcds.len(), 1, "etcd processes of the instance: {etcds:#?}");
}

async fn invariants_now(
    stack: &mut Stack,
    http: &reqwest::Client,
    gateway: &str,
    token: &str,
    sent: &[Sent],
) -> Result<String, String> {
    let events = log_events(stack).await?;
    let mut intents = BTreeSet::new();
    let mut intent_events = BTreeMap::new();
    let mut results: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (index, event) in &events {
        match event {
            Event::Intent(i) => {
                intents.insert(i.event_id.to_string());
                intent_events.insert(i.event_id.to_string(), (**i).clone());
            }
            Event::Result(r) => {
                results
                    .entry(r.intent.to_string())
                    .or_default()
                    .push((*index, r.outcome.as_str().to_string()));
                // What only the agent can say, the agent signed, reconciled or not.
                let agents_word = matches!(r.outcome.as_str(), "succeeded" | "failed");
                if let (true, Some(intent)) = (agents_word, intent_events.get(r.intent.as_str())) {
                    if let Err(e) = palisade_agent::dispatch::AgentResult::verify_logged(
                        intent,
                        r,
                        &stack.agent_keys,
                    ) {
                        panic!("result {index} ({}): {e}", r.outcome.as_str());
                    }
                }
            }
            _ => {}
        }
    }
    let accepted = accepted_by_agent(stack);
    // 1. Nothing ran without its intent in the log.
    for id in accepted.keys() {
        if !intents.contains(id) {
            return Err(format!(
                "the agent accepted {id}, which is no intent in the log"
            ));
        }
    }
    // 3. Nothing was dispatched twice.
    if let Some((id, n)) = accepted.iter().find(|(_, n)| **n > 1) {
        panic!("the agent accepted {id} {n} times");
    }
    // 2. At most one result per intent, ever; exactly one for each accepted one.
    if let Some((id, r)) = results.iter().find(|(_, r)| r.len() > 1) {
        panic!("intent {id} has {} results in the log: {r:?}", r.len());
    }
    let missing: Vec<&String> = accepted
        .keys()
        .filter(|id| !results.contains_key(*id))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} accepted intents have no result yet: {missing:?}",
            missing.len()
        ));
    }
    // 5. The operator's outcome is the customer's.
    let mut compared = 0;
    for s in sent {
        let Ok((_, op)) = &s.answer else { continue };
        let Some(id) = op["id"].as_str() else {
            continue;
        };
        let resp = http
            .get(format!("{gateway}/v1/operations/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("GET operation {id}: {e}"))?;
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let op: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        let logged = results.get(id).and_then(|r| r.first());
        match (op["outcome"].as_str(), logged) {
            (Some(theirs), Some((_, ours))) if theirs != ours => {
                panic!(
                    "operation {id} ({}): operator sees {theirs}, customer {ours}",
                    s.action
                )
            }
            (Some(_), Some(_)) => compared += 1,
            // Accepted by the agent, so it must end for the operator too.
            (None, _) if accepted.contains_key(id) => {
                return Err(format!(
                    "operation {id} is still {} for its operator",
                    op["status"]
                ))
            }
            _ => {}
        }
    }
    Ok(format!(
        "{} intents, {} results, {} accepted by the agent, {compared} operator/customer outcomes compared, {} requests sent",
        intents.len(),
        results.values().map(Vec::len).sum::<usize>(),
        accepted.len(),
        sent.len()
    ))
}

/// One fault under load: `inject` runs `at` into a load of `length`; it returns
/// when the fault ended.
async fn under_load<F, Fut>(stack: &mut Stack, length: Duration, at: Duration, inject: F)
where
    F: FnOnce(Arc<std::path::PathBuf>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let token = stack.gateway().dev_token(&stack.operator()).await;
    let load = start_load(stack, &token, 3, Duration::from_millis(250), length);
    tokio::time::sleep(at).await;
    inject(Arc::new(stack.dir.clone())).await;
    let fault_ended = Instant::now();
    let sent = load.await.expect("load");
    let dispatched = sent
        .iter()
        .filter(|s| matches!(&s.answer, Ok((200, _))))
        .count();
    eprintln!(
        "fault suite: {} requests, {dispatched} answered 200",
        sent.len()
    );
    assert!(dispatched > 0, "the load got nothing through: {sent:#?}");
    check_invariants(stack, &token, &sent, fault_ended).await;
}

/// A fresh stack under load; after 2 s the process whose command line holds
/// `needle(dir)` is killed (and started again by `up`).
async fn killed_under_load(needle: fn(&Path) -> String) {
    let mut stack = Stack::start();
    under_load(
        &mut stack,
        Duration::from_secs(8),
        Duration::from_secs(2),
        |dir| async move {
            let needle = needle(&dir);
            kill_and_wait(dir, &needle).await;
        },
    )
    .await;
}

async fn kill_and_wait(dir: Arc<std::path::PathBuf>, needle: &str) {
    let pid = pid_of(&dir, needle);
    signal(pid, "KILL");
    wait_restarted(&dir, needle, pid).await;
}

/// The tenant's own witness, which the agent requires and the log waits for: while
/// it is down, appends fail closed (nothing is dispatched), and once it is back every
/// accepted action still ends with exactly one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_witness_killed_under_load() {
    killed_under_load(|dir| format!("{}/tenant-demo/witness/witness.toml", dir.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_killed_under_load() {
    killed_under_load(|_| "log serve".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_killed_under_load() {
    killed_under_load(|dir| format!("{}/witness/witness.toml", dir.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_under_load() {
    killed_under_load(|_| "gateway serve".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_under_load_leaves_no_orphan_etcd() {
    let mut stack = Stack::start();
    under_load(
        &mut stack,
        Duration::from_secs(8),
        Duration::from_secs(2),
        |dir| async move {
            kill_and_wait(dir.clone(), "agent serve").await;
            // The restarted agent stopped the etcd the killed one left, and started its
            // own from the verified release: one etcd, a child of the new agent.
            let agent = pid_of(&dir, "agent serve");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let etcds = etcd_processes(&dir);
                let parents: Vec<Option<i32>> = etcds.iter().map(|l| parent_of(l)).collect();
                if parents == [Some(agent)] {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd processes (parents {parents:?}, agent {agent}): {etcds:#?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    stack.etcd.wait_healthy();
    // And the agent supervises it: running, not in backoff behind an orphan.
    let token = stack.gateway().dev_token(&stack.operator()).await;
    let status = run_action(
        &client(&stack),
        &stack.gateway().url,
        &token,
        "component.status",
    )
    .await;
    let (code, op) = status.answer.expect("component.status");
    assert_eq!(code, 200, "{op}");
    assert!(op["output"].to_string().contains("\"running\""), "{op}");
}

/// The parent pid of the process a `processes_mentioning` line describes.
fn parent_of(line: &str) -> Option<i32> {
    let pid = line.split(':').next()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_and_etcd_stopped_under_load() {
    let mut stack = Stack::start();
    under_load(
        &mut stack,
        Duration::from_secs(10),
        Duration::from_secs(1),
        |dir| async move {
            let witness = pid_of(&dir, &format!("{}/witness/witness.toml", dir.display()));
            signal(witness, "STOP");
            tokio::time::sleep(Duration::from_secs(3)).await;
            signal(witness, "CONT");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let etcd = etcd_processes(&dir);
            assert_eq!(etcd.len(), 1, "{etcd:?}");
            let pid: i32 = etcd[0]
                .split(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("pid");
            signal(pid, "STOP");
            tokio::time::sleep(Duration::from_secs(3)).await;
            signal(pid, "CONT");
        },
    )
    .await;
}

/// The log's storage (tiles, bundles, journal) on a small filesystem of its own
/// (a tmpfs mounted in a private mount namespace for `palisade up` and its
/// children), filled up while the load runs, then freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_storage_full_under_load() {
    harness::require_tool("unshare", "apt-get install util-linux");
    let mut stack = Stack::start_wrapped(
        |dir, _| std::fs::create_dir_all(dir.join("log/tiles")).expect("the tiles' mount point"),
        |dir| {
            vec![
                "unshare".into(),
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                "sh".into(),
                "-c".into(),
                r#"mount -t tmpfs -o size=16m palisade-log-storage "$0" && exec "$@""#.into(),
                dir.join("log/tiles").display().to_string(),
            ]
        },
    );
    let up = stack.up.as_ref().expect("up").child.id();
    // The log's view of its storage: through the namespace `palisade up` runs in.
    let tiles = Path::new(&format!("/proc/{up}/root")).join(
        stack
            .dir
            .join("log/tiles")
            .strip_prefix("/")
            .expect("absolute"),
    );
    assert!(
        tiles.join("clusters").exists() || tiles.read_dir().is_ok(),
        "{}",
        tiles.display()
    );
    under_load(
        &mut stack,
        Duration::from_secs(9),
        Duration::from_secs(2),
        |_| async move {
            use std::io::Write as _;
            let filler = tiles.join("filler");
            let mut f = std::fs::File::create(&filler).expect("filler");
            let block = vec![0u8; 64 * 1024];
            let full = loop {
                match f.write_all(&block) {
                    Ok(()) => {}
                    Err(e) => break e,
                }
            };
            assert_eq!(full.raw_os_error(), Some(28), "filling stopped with {full}");
            let _ = f.sync_all();
            tokio::time::sleep(Duration::from_secs(4)).await;
            drop(f);
            std::fs::remove_file(&filler).expect("free the log's storage");
        },
    )
    .await;
}

/// Starts `etcd.backup` through the stack's gateway and returns once the agent
/// accepted it.
async fn backup_accepted(stack: &mut Stack, token: &str) -> tokio::task::JoinHandle<Sent> {
    let gateway = stack.gateway().url;
    backup_accepted_via(stack, &gateway, token).await
}

/// Starts `etcd.backup` through the gateway at `gateway` and returns once the agent
/// accepted it.
async fn backup_accepted_via(
    stack: &mut Stack,
    gateway: &str,
    token: &str,
) -> tokio::task::JoinHandle<Sent> {
    let http = client(stack);
    let gateway = gateway.to_string();
    let token = token.to_string();
    let backup =
        tokio::spawn(async move { run_action(&http, &gateway, &token, "etcd.backup").await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack
        .agent_output()
        .iter()
        .any(|l| l.contains("dispatch accepted") && l.contains("action=etcd.backup"))
    {
        assert!(
            Instant::now() < deadline,
            "the agent never accepted the backup"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    backup
}

/// The result logged for the intent of operation `id`.
async fn result_of(stack: &Stack, id: &str) -> Option<palisade_core::event::ResultEvent> {
    log_events(stack)
        .await
        .ok()?
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::Result(r) if r.intent.as_str() == id => Some(r),
            _ => None,
        })
}

/// The operation's id: from the answer, or (when the gateway died before answering)
/// from the agent's log line.
fn backup_operation(stack: &mut Stack, sent: &Sent) -> String {
    if let Ok((_, op)) = &sent.answer {
        if let Some(id) = op["id"].as_str() {
            return id.to_string();
        }
    }
    stack
        .agent_output()
        .iter()
        .filter(|l| l.contains("dispatch accepted") && l.contains("action=etcd.backup"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("event="))
                .map(str::to_string)
        })
        .expect("the backup's event id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_mid_backup_logs_it_interrupted_and_leaves_no_partial_object() {
    let mut stack = Stack::start();
    stack.etcd.fill(40);
    let token = stack.gateway().dev_token(&stack.operator()).await;
    let backup = backup_accepted(&mut stack, &token).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill_and_wait(Arc::new(stack.dir.clone()), "agent serve").await;
    let fault_ended = Instant::now();
    let sent = backup.await.expect("backup request");
    let id = backup_operation(&mut stack, &sent);
    check_invariants(&mut stack, &token, std::slice::from_ref(&sent), fault_ended).await;
    let result = result_of(&stack, &id).await.expect("the backup's result");
    assert_eq!(result.outcome.as_str(), "failed", "{result:?}");
    assert!(
        result
            .detail
            .as_deref()
            .unwrap_or_default()
            .starts_with("interrupted:"),
        "{result:?}"
    );
    assert!(result.reconciled, "{result:?}");
    // The staging file of the cut-short upload was removed by the restarted agent.
    let partial: Vec<_> = std::fs::read_dir(stack.dir.join("backups/demo"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains('#'))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        partial.is_empty(),
        "partial backup objects left: {partial:?}"
    );
    stack.etcd.wait_healthy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_mid_backup_does_not_stop_the_backup_and_its_result_is_reconciled() {
    let mut stack = Stack::start();
    stack.etcd.fill(40);
    let token = stack.gateway().dev_token(&stack.operator()).await;
    let backup = backup_accepted(&mut stack, &token).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill_and_wait(Arc::new(stack.dir.clone()), "gateway serve").await;
    let fault_ended = Instant::now();
    let sent = backup.await.expect("backup request");
    assert!(
        sent.answer.is_err(),
        "the gateway answered although it was killed: {sent:?}"
    );
    let id = backup_operation(&mut stack, &sent);
    let sent = Sent {
        action: "etcd.backup",
        answer: Ok((202, serde_json::json!({ "id": id }))),
    };
    check_invariants(&mut stack, &token, std::slice::from_ref(&sent), fault_ended).await;
    let result = result_of(&stack, &id).await.expect("the backup's result");
    assert_eq!(result.outcome.as_str(), "succeeded", "{result:?}");
    assert!(result.reconciled, "{result:?}");
    let backup_id = result
        .output
        .as_ref()
        .and_then(|o| o["backup_id"].as_str())
        .map(str::to_string);
    let backup_id = backup_id.expect("the output names the backup");
    // It is a backup like any other: listed.
    let http = client(&stack);
    let listed = run_action(&http, &stack.gateway().url, &token, "etcd.backups").await;
    let (status, op) = listed.answer.expect("etcd.backups");
    assert_eq!(status, 200, "{op}");
    assert!(op["output"].to_string().contains(&backup_id), "{op}");
    // Nothing is left for the reconciler, and the metric says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http
            .get(format!("{}/metrics", stack.gateway().url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics");
        if metrics.contains("palisade_gateway_unresolved_operations 0") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two gateway replicas sharing their state in etcd: the one driving a backup is
/// killed; the other replica takes the operation over once the owner's lease ran out,
/// asks the agent and logs its signed result, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_finishes_what_a_killed_gateway_replica_was_driving() {
    let mut stack = Stack::start();
    let etcd = harness::StateEtcd::start();
    let shared = |t: String| etcd.gateway_config(&t, "/palisade-faults");
    let (mut replica_a, gw_a) = harness::second_gateway(&stack, "replica-a", shared);
    let (_replica_b, gw_b) = harness::second_gateway(&stack, "replica-b", shared);
    stack.etcd.fill(40);
    let token = gw_a.dev_token(&stack.operator()).await;
    let backup = backup_accepted_via(&mut stack, &gw_a.url, &token).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    replica_a.signal("KILL");
    replica_a.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    let sent = backup.await.expect("backup request");
    assert!(
        sent.answer.is_err(),
        "replica A answered although it was killed: {sent:?}"
    );
    let id = backup_operation(&mut stack, &sent);
    // The lease is 20 s: replica B takes over after it, within the 30 s bound plus
    // the lease.
    let deadline = killed + Duration::from_secs(50);
    let result = loop {
        if let Some(r) = result_of(&stack, &id).await {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no result for {id} 50 s after replica A was killed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(result.outcome.as_str(), "succeeded", "{result:?}");
    assert!(result.reconciled, "{result:?}");
    // Replica B's operation record says the same, and the log has one result.
    let token_b = gw_b.dev_token(&stack.operator()).await;
    let (status, op) = gw_b
        .call("GET", &format!("/v1/operations/{id}"), Some(&token_b), None)
        .await;
    assert_eq!(status, 200, "{op}");
    assert_eq!(op["outcome"], "succeeded", "{op}");
    let results = log_events(&stack)
        .await
        .expect("log")
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::Result(r) if r.intent.as_str() == id))
        .count();
    assert_eq!(results, 1);
}
