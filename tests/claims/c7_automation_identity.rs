//! Claim C7 for automation: scheduled backups run through the same gateway pipeline
//! as any operator (authenticated, authorized, rate-limited, logged first), under a
//! service identity of their own, and the customer sees them as automation.
//!
//! `palisade up` configures the gateway's `[[service]] scheduler`, which pins the
//! demo's `operator-scheduler` certificate and may run `etcd.backup` only; its
//! credentials are in `scheduler/credentials.json` (what
//! deploy/systemd/palisade-backup@.service uses).

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::palisade;
use harness::Stack;
use serde_json::Value;

/// `palisade op --credentials FILE ARGS… -o json`: (success, stdout as JSON or text).
fn op(credentials: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = palisade()
        .arg("op")
        .arg("--credentials")
        .arg(credentials)
        .args(args)
        .output()
        .expect("palisade op");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const REASON: &str = "scheduled daily backup by palisade-backup@demo.timer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_runs_as_the_scheduler_and_the_customer_sees_automation() {
    let stack = Stack::start();
    let scheduler = stack.dir.join("scheduler/credentials.json");

    let (ok, said) = op(&scheduler, &["whoami", "-o", "json"]);
    assert!(ok, "{said}");
    let me: Value = serde_json::from_str(&said).expect("json");
    assert_eq!(me["operator"], "service/scheduler", "{me}");
    assert_eq!(me["via"], "service", "{me}");

    let (ok, said) = op(
        &scheduler,
        &[
            "run",
            "etcd.backup",
            "--cluster",
            "demo",
            "--ticket",
            "SCHED-1",
            "--reason",
            REASON,
            "-o",
            "json",
        ],
    );
    assert!(ok, "the scheduled backup failed: {said}");
    let operation: Value = serde_json::from_str(&said).expect("json");
    assert_eq!(operation["status"], "succeeded", "{operation}");

    // Anything else is refused, and the refusal is logged like any other.
    let (ok, said) = op(
        &scheduler,
        &[
            "run",
            "etcd.status",
            "--cluster",
            "demo",
            "--instance",
            "demo-0",
            "--ticket",
            "SCHED-1",
            "--reason",
            REASON,
        ],
    );
    assert!(!ok, "the scheduler ran an action it is not allowed: {said}");
    assert!(said.contains("may run only etcd.backup"), "{said}");

    // The customer's view: the backup's intent names the scheduler as automation.
    let gw = stack.gateway();
    let token = stack.tenant_token();
    let (status, events) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    let intents: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"]["kind"] == "intent" && e["event"]["action"] == "etcd.backup")
        .collect();
    assert_eq!(intents.len(), 1, "{events}");
    assert_eq!(intents[0]["event"]["actor"]["service"], "scheduler");
    let (status, audit) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events?format=k8s-audit",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let lines = match &audit {
        Value::String(text) => text.clone(),
        one => one.to_string(),
    };
    assert!(
        lines.contains("\"palisade.dev/automation\":\"scheduler\""),
        "{lines}"
    );
    // Human operators' actions carry no such mark.
    let human = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"]["kind"] == "intent")
        .filter(|e| e["event"]["actor"]["service"].is_null())
        .count();
    let (status, _) = stack
        .etcd_status_via_gateway("checking etcd after the scheduled backup")
        .await;
    assert!(status == 200 || status == 202, "{status}");
    let (_, events) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events",
            Some(&token),
            None,
        )
        .await;
    let after = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"]["kind"] == "intent")
        .filter(|e| e["event"]["actor"]["service"].is_null())
        .count();
    assert_eq!(after, human + 1, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pinned_certificate_is_the_scheduler() {
    let stack = Stack::start();
    // Another certificate with the same name from the same CA (what whoever holds
    // the operator CA could mint): an ordinary operator called "scheduler", on no
    // rota, with no grant.
    let pki = tempfile::tempdir().expect("tempdir");
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(stack.dir.join("pki").join(f), pki.path().join(f)).expect("copy");
    }
    let out = palisade()
        .args([
            "pki",
            "issue",
            "--kind",
            "operator",
            "--name",
            "scheduler",
            "--dir",
        ])
        .arg(pki.path())
        .output()
        .expect("pki issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = pki.path().join("credentials.json");
    let out = palisade()
        .arg("op")
        .arg("--credentials")
        .arg(&creds)
        .args([
            "login",
            "--gateway",
            &format!("https://127.0.0.1:{}", stack.base),
        ])
        .arg("--ca")
        .arg(stack.dir.join("pki/ca.crt"))
        .arg("--cert")
        .arg(pki.path().join("operator-scheduler.crt"))
        .arg("--key")
        .arg(pki.path().join("operator-scheduler.key"))
        .output()
        .expect("login");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("logged in as scheduler "), "{said}");
    let (ok, said) = op(
        &creds,
        &[
            "run",
            "etcd.backup",
            "--cluster",
            "demo",
            "--ticket",
            "SCHED-1",
            "--reason",
            REASON,
        ],
    );
    assert!(!ok, "an unpinned certificate ran as the scheduler: {said}");
    assert!(said.contains("not on call"), "{said}");
}
