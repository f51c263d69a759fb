//! `cargo bench -p palisade-benches --bench console`: the customer's console with a
//! cluster log of 10,000 entries (`CONSOLE_BENCH_ENTRIES`) in headless Chromium.
//!
//! The log is made here: an agent key, then intents each followed by its result,
//! signed by that agent over exactly what is logged, the agent's view of the log in
//! each, and a checkpoint signed by a log key and cosigned by two witnesses. The
//! console's own page and WebAssembly (the gateway's embedded assets) are served
//! with the log's checkpoint and entry bundles on loopback, and the page is opened
//! as the customer's login link opens it. Measured: the time to fetch, to verify
//! every entry in the browser, and to draw the timeline; how long a filter and a
//! scroll to the middle take; how many rows the page holds (the list is
//! virtualised); the page's JavaScript heap. Beside it, the same verification in
//! native code (`palisade_audit::console::verify`), as the baseline.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium`, `chromium-driver`).

#[path = "../tests/e2e/webdriver.rs"]
mod webdriver;

use axum::extract::Path as UrlPath;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use palisade_core::canonical::to_canonical_vec;
use palisade_core::event::Event;
use palisade_core::statement::{pae, AgentResult, RESULT_PAYLOAD_TYPE};
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::leaf_hash;
use palisade_tlog::note::{KeyType, SignerKey};
use palisade_tlog::tile::encode_bundle;
use palisade_tlog::tree::Frontier;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const ORIGIN: &str = "palisade.local/log/bench";

struct Log {
    checkpoint: String,
    bundles: HashMap<String, Vec<u8>>,
    trust: Value,
}

/// A log of `n` entries: an agent key, then intent/result pairs.
fn make_log(n: u64) -> Log {
    let agent = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let log_key = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[1u8; 32]).expect("log key");
    let witnesses = [
        SignerKey::from_seed("palisade.local/witness", KeyType::Cosignature, &[2u8; 32])
            .expect("witness"),
        SignerKey::from_seed("tenant.example/witness", KeyType::Cosignature, &[3u8; 32])
            .expect("witness"),
    ];
    let time = |i: u64| {
        let s = 1_780_000_000 + i;
        palisade_core::time::Timestamp::from_unix_seconds(s as i64).to_string()
    };
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut frontier = Frontier::new();
    let mut push = |bytes: Vec<u8>, entries: &mut Vec<Vec<u8>>| {
        frontier.append(leaf_hash(&bytes)).expect("append");
        entries.push(bytes);
        frontier.root()
    };
    let key_event = json!({"schema": "palisade.dev/event/v1", "kind": "agent_key",
        "event_id": format!("{:032x}", 0), "time": time(0), "cluster": "bench", "instance": "bench-0",
        "key": STANDARD.encode(agent.verifying_key().to_bytes()), "keyid": "bench-agent"});
    push(entry(&key_event), &mut entries);
    let mut i = 1;
    while i < n {
        let intent_id = format!("{:032x}", i);
        let intent = json!({"schema": "palisade.dev/event/v1", "kind": "intent",
            "event_id": intent_id, "time": time(i), "tenant": "bench", "cluster": "bench",
            "instance": "bench-0", "action": if i % 3 == 0 { "etcd.defragment" } else { "etcd.status" },
            "actor": {"id": format!("op-{:016x}", i % 40), "groups": []},
            "parameters": {}, "justification": {"ticket": format!("INC-{}", i / 2), "reason": "routine check"},
            "policy": {"version": 1, "digest": format!("sha256:{}", "0".repeat(64))},
            "dispatch_digest": format!("sha256:{:064x}", i)});
        let intent_bytes = entry(&intent);
        let seen_root = push(intent_bytes.clone(), &mut entries);
        let seen_size = i + 1;
        i += 1;
        if i >= n {
            break;
        }
        let mut result = json!({"schema": "palisade.dev/event/v1", "kind": "result",
            "event_id": format!("{:032x}", i), "time": time(i), "cluster": "bench",
            "intent": intent_id, "outcome": if i % 10 == 0 { "failed" } else { "succeeded" },
            "agent": {"output_schema": "palisade.dev/output/etcd-status/v1",
                "started_at": time(i), "finished_at": time(i), "log_size_seen": seen_size,
                "log_root_seen": seen_root.to_base64(), "keyid": "bench-agent", "sig": ""}});
        // The agent signs exactly what the log keeps of its result.
        let (Ok(Event::Intent(ie)), Ok(Event::Result(re))) = (
            Event::from_log_entry(&intent_bytes),
            Event::from_log_entry(&entry(&result)),
        ) else {
            panic!("the bench's events do not decode");
        };
        let (statement, _) = AgentResult::from_logged(&ie, &re).expect("rebuild");
        let msg = pae(
            RESULT_PAYLOAD_TYPE,
            &to_canonical_vec(&statement).expect("canonical"),
        );
        result["agent"]["sig"] = json!(STANDARD.encode(agent.sign(&msg).to_bytes()));
        push(entry(&result), &mut entries);
        i += 1;
    }
    let size = entries.len() as u64;
    let checkpoint = Checkpoint::new(ORIGIN, size, frontier.root()).expect("checkpoint");
    let mut note = checkpoint.sign(&log_key).expect("sign");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for w in &witnesses {
        note.add_signature(checkpoint.cosign(w, now).expect("cosign"))
            .expect("cosignature");
    }
    let mut bundles = HashMap::new();
    for (b, chunk) in entries.chunks(256).enumerate() {
        let id = palisade_tlog::tile::TileId::in_tree(0, b as u64, size).expect("tile");
        bundles.insert(id.entries_path(), encode_bundle(chunk).expect("bundle"));
    }
    let trust = json!({"origin": ORIGIN, "log_keys": [log_key.verifier().to_string()],
        "witnesses": witnesses.iter().map(|w| w.verifier().to_string()).collect::<Vec<_>>()});
    Log {
        checkpoint: String::from_utf8(note.to_bytes()).expect("note text"),
        bundles,
        trust,
    }
}

fn entry(event: &Value) -> Vec<u8> {
    Event::from_log_entry(event.to_string().as_bytes())
        .and_then(|e| e.to_log_entry())
        .unwrap_or_else(|e| panic!("not an event: {e}: {event}"))
}

fn main() {
    let n: u64 = std::env::var("CONSOLE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let t = Instant::now();
    let log = Arc::new(make_log(n));
    println!(
        "a log of {n} entries ({} bundles) made in {:.1} s",
        log.bundles.len(),
        t.elapsed().as_secs_f64()
    );

    // The baseline: the same verification natively.
    let input = palisade_audit::console::Input {
        trust: serde_json::from_value(log.trust.clone()).expect("trust"),
        checkpoint: log.checkpoint.clone(),
        bundles: palisade_audit::log::bundles_for(n)
            .expect("bundles")
            .iter()
            .map(|b| STANDARD.encode(&log.bundles[&b.path]))
            .collect(),
        previous: None,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64,
        max_age: Some(300),
    };
    let t = Instant::now();
    let report = palisade_audit::console::verify(&input);
    let native_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!(report.signatures_checked as u64, (n - 1) / 2);

    // The page and the log, served on loopback.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = log.clone();
    let app = axum::Router::new()
        .route("/console/", get(palisade_gateway::console::asset))
        .route("/console/{file}", get(palisade_gateway::console::asset))
        .route(
            "/v1/console/session",
            axum::routing::post(|| async {
                axum::Json(
                    json!({"token": "pcs_bench", "tenant": "bench", "expires_in_secs": 3600}),
                )
            }),
        )
        .route(
            "/v1/tenants/bench/clusters/bench/approvals",
            get(|| async { axum::Json(json!([])) }),
        )
        .route(
            "/v1/tenants/bench/clusters/bench/log/{*object}",
            get(move |UrlPath(object): UrlPath<String>| {
                let log = served.clone();
                async move {
                    if object == "checkpoint" {
                        return log.checkpoint.clone().into_response();
                    }
                    match log.bundles.get(&object) {
                        Some(b) => b.clone().into_response(),
                        None => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        );
    rt.spawn(async move { axum::serve(listener, app).await });

    let browser = webdriver::Browser::start();
    let link = format!(
        "http://127.0.0.1:{port}/console/#code=bench&tenant=bench&cluster=bench&trust={}",
        URL_SAFE_NO_PAD.encode(log.trust.to_string())
    );
    let t = Instant::now();
    browser.open(&link);
    let outcome = browser.verification();
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(outcome, "ok", "{}", browser.text("#banner"));
    let ms = |k: &str| {
        browser
            .script(&format!("return Number(document.body.dataset.{k})"))
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let (fetch, verify, render) = (ms("fetchMs"), ms("verifyMs"), ms("renderMs"));
    let rows = browser.script("return document.querySelectorAll('#list .row').length");
    let filter = browser.script(
        "const t = performance.now(); const f = document.getElementById('f-text'); \
         f.value = 'INC-4242'; f.dispatchEvent(new Event('input')); \
         const ms = performance.now() - t; f.value = ''; f.dispatchEvent(new Event('input')); return ms;",
    );
    let scroll = browser.script_async(
        "const done = arguments[0]; const l = document.getElementById('list'); \
         const t = performance.now(); l.scrollTop = l.scrollHeight / 2; \
         requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));",
    );
    let heap =
        browser.script("return performance.memory ? performance.memory.usedJSHeapSize : null");
    println!("console with {n} entries in headless Chromium:");
    println!("  page opened to timeline drawn: {wall_ms:.0} ms (WebDriver's view)");
    println!("  fetch checkpoint and bundles:  {fetch:.0} ms");
    println!(
        "  verify in the browser (wasm):  {verify:.0} ms   (native, same code: {native_ms:.0} ms)"
    );
    println!("  draw the timeline:             {render:.0} ms");
    println!(
        "  filter by text:                {:.1} ms",
        filter.as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  scroll to the middle:          {:.1} ms (two frames)",
        scroll.as_f64().unwrap_or(f64::NAN)
    );
    println!("  rows in the page:              {rows} (of {n})");
    if let Some(h) = heap.as_f64() {
        println!("  JavaScript heap:               {:.1} MiB", h / 1048576.0);
    }
}
