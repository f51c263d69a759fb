//! Claims C6 and C7 as the customer reads them: the access log shows every operator
//! request, its outcome and its output.
//!
//! Each test attacks the gateway `palisade up` runs through its HTTPS API, and reads
//! what the customer reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::{GatewayClient, Stack};
use serde_json::Value;
use sha2::Digest as _;
use std::time::Duration;

const TICKET: &str = "INC-5150";
const REASON: &str = "checking etcd after an alert";

/// The events of `tenant`'s `cluster`, native and as k8s-audit lines.
async fn customer_view(
    gw: &GatewayClient,
    tenant: &str,
    cluster: &str,
    token: &str,
) -> (Vec<Value>, Vec<Value>) {
    let path = format!("/v1/tenants/{tenant}/clusters/{cluster}/events");
    let (status, page) = gw.call("GET", &path, Some(token), None).await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    let (status, lines) = gw
        .call(
            "GET",
            &format!("{path}?format=k8s-audit"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{lines}");
    // One line of JSON lines is itself a JSON document: the client decoded it.
    let audit = match lines {
        Value::String(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        one => vec![one],
    };
    (events, audit)
}

/// The tenant reads the output of an `etcd.status` itself, in both formats, and the
/// customer's verifier checks it against the digest the agent signed: a result whose
/// output was altered makes `palisade audit verify` fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_reads_the_output_and_the_verifier_checks_it() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, done) = gw
        .run(&token, "demo", "etcd.status", None, &[], TICKET, REASON)
        .await;
    assert_eq!(status, 200, "{done}");
    let (events, audit) = customer_view(&gw, "demo", "demo", &stack.tenant_token()).await;
    let result = events.iter().find(|e| e["kind"] == "result").unwrap();
    assert_eq!(result["output"], done["output"], "{result}");
    assert!(result["output"].is_object(), "{result}");
    let canonical = palisade_core::canonical::to_canonical_vec(&result["output"]).unwrap();
    assert_eq!(
        result["output_digest"],
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&canonical))),
        "{result}"
    );
    let line = audit
        .iter()
        .find(|a| a["annotations"]["palisade.dev/kind"] == "result")
        .unwrap();
    assert_eq!(
        line["annotations"]["palisade.dev/output"],
        String::from_utf8(canonical).unwrap(),
        "{line}"
    );

    let audit_verify = || {
        let d = stack.dir.display().to_string();
        let mut cmd = common::palisade();
        cmd.args(["audit", "verify", "--url"])
            .arg(format!("https://127.0.0.1:{}/logs/demo", stack.base + 1))
            .args(["--token", &format!("@{d}/tenant-demo.token")])
            .args(["--ca", &format!("{d}/pki/ca.crt")])
            .args(["--origin", "palisade.local/log/demo"])
            .args([
                "--log-key",
                &format!("@{d}/log/keys/palisade.local_log.pub"),
            ])
            .args([
                "--witness-key",
                &format!("@{d}/witness/keys/palisade.local_witness.pub"),
                "--quorum",
                "1",
            ]);
        cmd.output().expect("run palisade audit")
    };
    let ok = audit_verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // A result whose output is not the one its digest names (whoever wrote it).
    let mut forged = result.clone();
    forged["event_id"] = Value::String("ffffffffffffffffffffffffffffffff".into());
    forged["output"]["forged"] = Value::Bool(true);
    let entry = palisade_core::canonical::to_canonical_vec(&forged).unwrap();
    let appended = stack
        .dispatcher
        .append("demo", &entry)
        .await
        .expect("append");
    // Verified once the log's storage covers it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = audit_verify();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            assert!(
                err.contains(&format!("entry {}", appended.index))
                    && err.contains("does not match its digest"),
                "{err}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit verify accepts a result whose output does not match its digest"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
