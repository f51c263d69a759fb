//! Key and certificate rotation on a live `palisade up` stack, with no refused action.
//!
//! Certificates: every Palisade TLS server and client reads its certificate and key
//! again when the files change (`palisade pki issue --force`), at the next
//! connection, with no restart.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::palisade;
use harness::{require_tool, Stack};
use palisade_agent::dispatch::ResultOutcome;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The SHA-256 of the leaf certificate the server on `port` presents (openssl).
fn presented(stack: &Stack, port: u16, role: &str, name: &str) -> String {
    let pki = stack.dir.join("pki");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -CAfile {ca} -cert {crt} -key {key} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            ca = pki.join("ca.crt").display(),
            crt = pki.join(format!("{role}-{name}.crt")).display(),
            key = pki.join(format!("{role}-{name}.key")).display(),
        ))
        .stderr(Stdio::null())
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SHA-256 fingerprint of a certificate file, as openssl prints it.
fn fingerprint(path: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renewed_on_disk_are_presented_without_a_restart() {
    require_tool("openssl", "apt-get install openssl");
    let stack = Stack::start();
    let pki = stack.dir.join("pki");
    let agent_port = stack.base + 3;
    // The gateway's client certificate, as a client of the agent (and of the log).
    let agent_before = presented(&stack, agent_port, "gateway", "gateway");
    assert_eq!(
        agent_before,
        fingerprint(&pki.join("agent-demo-0.crt")),
        "the agent presents its certificate"
    );
    let executed = stack.execute("etcd.status", &[]).await.expect("before");
    assert_eq!(executed.result.outcome, ResultOutcome::Succeeded);

    // Renew the agent's, the gateway's and the log's certificates in place.
    for (kind, name) in [("agent", "demo-0"), ("gateway", "gateway"), ("log", "log")] {
        let out = palisade()
            .args([
                "pki", "issue", "--force", "--kind", kind, "--name", name, "--dir",
            ])
            .arg(&pki)
            .output()
            .expect("pki issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let renewed = fingerprint(&pki.join("agent-demo-0.crt"));
    assert_ne!(renewed, agent_before);

    // Within a few seconds the running agent presents the new certificate...
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = presented(&stack, agent_port, "gateway", "gateway");
        if now == renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent still presents {now}, not the renewed {renewed}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log_now = presented(&stack, stack.base + 1, "gateway", "gateway");
    assert_eq!(log_now, fingerprint(&pki.join("log-log.crt")));

    // ...and actions go on through the gateway, which presents its renewed client
    // certificate to the agent and the log: nothing is refused, nothing restarted.
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, body) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            "INC-88",
            "checking etcd after renewing the certificates",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    let executed = stack.execute("etcd.status", &[]).await.expect("after");
    assert_eq!(executed.result.outcome, ResultOutcome::Succeeded);
}
