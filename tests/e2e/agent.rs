//! The agent end to end: `palisade up` (witness, log, agent verifying the approved
//! policy from its TUF repository) and a real etcd; each action goes the gateway's
//! way — intent logged and witnessed first, then a signed dispatch with its proofs —
//! and comes back as a result signed by the agent key.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::Stack;
use palisade_agent::dispatch::ResultOutcome;
use palisade_core::event::Event;
use serde_json::Value;
use std::time::Duration;

fn output(stack_result: &palisade_agent::client::Executed) -> &Value {
    assert_eq!(
        stack_result.result.outcome,
        ResultOutcome::Succeeded,
        "{:?}",
        stack_result.result.error
    );
    stack_result.result.output.as_ref().expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_etcd_action_runs_through_a_logged_dispatch() {
    let stack = Stack::start();
    // A value only kube-apiserver should ever see: no action may return it.
    stack
        .etcd
        .put("/registry/secrets/default/db", "hunter2-customer-secret");

    let status = stack
        .execute("etcd.status", &[])
        .await
        .expect("etcd.status");
    let out = output(&status);
    assert!(
        out["version"].as_str().is_some_and(|v| v.starts_with('3')),
        "{out}"
    );
    assert!(out["db_size"].as_i64().is_some_and(|s| s > 0), "{out}");
    assert_eq!(out["is_leader"], Value::Bool(true), "{out}");
    assert_eq!(
        status.result.output_schema,
        "palisade.dev/output/etcd-status/v1"
    );

    let members = stack
        .execute("etcd.members", &[])
        .await
        .expect("etcd.members");
    let out = output(&members);
    assert_eq!(out["members"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(out["members"][0]["name"], "demo-0");

    let health = stack
        .execute("etcd.health", &[])
        .await
        .expect("etcd.health");
    assert_eq!(output(&health)["healthy"], Value::Bool(true));

    let alarms = stack
        .execute("etcd.alarms", &[])
        .await
        .expect("etcd.alarms");
    assert_eq!(output(&alarms)["alarms"], Value::Array(vec![]));

    let disarm = stack
        .execute("etcd.alarm-disarm", &[])
        .await
        .expect("etcd.alarm-disarm");
    assert_eq!(output(&disarm)["disarmed"], Value::Array(vec![]));

    let defrag = stack
        .execute("etcd.defragment", &[])
        .await
        .expect("etcd.defragment");
    assert!(output(&defrag)["db_size_after"]
        .as_i64()
        .is_some_and(|s| s > 0));

    let resources = stack
        .execute("instance.resources", &[])
        .await
        .expect("instance.resources");
    let out = output(&resources);
    assert!(
        out["memory_total_bytes"].as_u64().is_some_and(|m| m > 0),
        "{out}"
    );
    assert_eq!(out["disks"].as_array().map(Vec::len), Some(1), "{out}");

    let certs = stack
        .execute("certs.expiry", &[])
        .await
        .expect("certs.expiry");
    let out = output(&certs);
    let names: Vec<&str> = out["certs"]
        .as_array()
        .expect("certs")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["agent-serving", "palisade-ca"]);
    assert!(
        out["certs"][0]["days_left"]
            .as_i64()
            .is_some_and(|d| d > 300),
        "{out}"
    );
    assert!(
        !out.to_string().contains("BEGIN"),
        "certificate content leaked: {out}"
    );

    // C2: nothing any action returned holds the stored value.
    for r in [
        &status, &members, &health, &alarms, &disarm, &defrag, &resources, &certs,
    ] {
        let text = serde_json::to_string(&r.result).expect("json");
        assert!(
            !text.contains("hunter2"),
            "customer data in {}: {text}",
            r.result.action
        );
    }

    // Every intent is in the customer's log, with the digest of what was executed.
    let tiles = stack.dir.join("log/tiles/clusters/demo");
    assert!(tiles.join("checkpoint").is_file());
    let mut indexes: Vec<u64> = [&status, &members, &health, &alarms, &disarm, &defrag]
        .iter()
        .map(|e| e.intent_index)
        .collect();
    indexes.dedup();
    assert_eq!(indexes.len(), 6, "each intent has its own entry");
    assert!(status.result.log_size_seen > status.intent_index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_names_the_dispatch_and_the_agent_keeps_its_view() {
    let stack = Stack::start();
    assert_eq!(
        stack.seen().await,
        0,
        "a fresh agent has seen no checkpoint"
    );
    let first = stack.execute("etcd.status", &[]).await.expect("first");
    let seen1 = stack.seen().await;
    assert_eq!(seen1, first.result.log_size_seen);
    assert!(seen1 > first.intent_index);
    let second = stack.execute("etcd.members", &[]).await.expect("second");
    assert!(second.result.log_size_seen > seen1, "the view advances");
    assert_eq!(second.result.cluster.as_str(), "demo");
    assert_eq!(second.result.instance.as_str(), "demo-0");
    assert!(second.result.output_digest.is_some());

    // The log entry is the intent, byte for byte as the gateway built it.
    let p = stack.prepare("etcd.health", &[]);
    let req = stack.logged_request(&p).await;
    let entry = req.event_bytes().expect("event");
    match Event::from_log_entry(&entry).expect("event") {
        Event::Intent(i) => assert_eq!(i.dispatch_digest, p.dispatch.digest().expect("digest")),
        other => panic!("not an intent: {other:?}"),
    }
    let r = stack.send(&req).await.expect("executed");
    assert_eq!(r.dispatch_digest, p.dispatch.digest().expect("digest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_reported_and_restarted_only_through_dispatches() {
    let stack = Stack::start();
    // etcd answers its health check before the supervisor's next probe marks it
    // running: ask until it does.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = stack
            .execute("component.status", &[("component", "etcd")])
            .await
            .expect("component.status");
        let starting = output(&status)["components"][0]["state"] == "starting";
        if !starting || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let out = output(&status);
    let etcd = &out["components"][0];
    assert_eq!(etcd["name"], "etcd", "{out}");
    assert_eq!(etcd["state"], "running", "{out}");
    let digest = etcd["artifact_sha256"]
        .as_str()
        .expect("digest")
        .to_string();
    let installed = std::fs::read(harness::etcd_binary_path()).expect("etcd binary");
    assert_eq!(digest, palisade_policy::tuf::sha256_hex(&installed));
    assert!(
        !out.to_string().contains("--data-dir"),
        "arguments leaked: {out}"
    );

    let restart = stack
        .execute(
            "component.restart",
            &[("component", "etcd"), ("wait_healthy", "true")],
        )
        .await
        .expect("component.restart");
    assert_eq!(output(&restart)["healthy"], Value::Bool(true));
    let after = stack.execute("etcd.health", &[]).await.expect("health");
    assert_eq!(output(&after)["healthy"], Value::Bool(true));

    // A version that is not an approved release is refused by the supervisor
    // (the policy's pattern accepts it; the TUF repository does not have it).
    let upgrade = stack
        .execute(
            "component.upgrade",
            &[("component", "etcd"), ("version", "3.4.99")],
        )
        .await
        .expect("dispatched");
    assert_eq!(upgrade.result.outcome, ResultOutcome::Failed);
    let err = upgrade.result.error.clone().unwrap_or_default();
    assert!(err.contains("3.4.99"), "{err}");
    assert!(stack.etcd.healthy(), "the running etcd was left alone");
}
