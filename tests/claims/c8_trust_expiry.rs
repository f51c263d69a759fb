//! Claim C8 without a time bomb: expired or unverifiable trust metadata never stops
//! the customer's control plane. The components verified before keep running and
//! restart from their verified, kept artifacts; only new actions are refused, each
//! refusal saying why, until fresh metadata verifies.
//!
//! The stack is `palisade up`; its repository's timestamp is re-signed with a
//! lifetime of a few seconds, left to lapse, and the whole stack (agent and gateway
//! included) restarted on the expired metadata.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::palisade;
use harness::Stack;
use palisade_agent::dispatch::{RefusalCode, ResultOutcome};
use std::time::Duration;

/// `palisade policy refresh` of the stack's repository, with its online keys.
fn refresh(stack: &Stack, lifetime_secs: Option<u64>) {
    let repo = stack.dir.join("trust/repo");
    let mut cmd = palisade();
    cmd.args(["policy", "refresh", "--repo"]).arg(&repo);
    if let Some(s) = lifetime_secs {
        cmd.args(["--timestamp-lifetime-secs", &s.to_string()]);
    }
    let out = cmd.output().expect("palisade policy refresh");
    assert!(
        out.status.success(),
        "policy refresh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pid of the supervised etcd (its pidfile in the agent's work directory).
fn etcd_pid(stack: &Stack) -> String {
    let found = walk(&stack.dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "etcd.pid"))
        .unwrap_or_else(|| panic!("no etcd.pid under {}", stack.dir.display()));
    std::fs::read_to_string(found)
        .expect("pidfile")
        .trim()
        .to_string()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_expiry_a_restarted_agent_brings_etcd_back_and_refuses_actions_until_refreshed() {
    let mut stack = Stack::start();
    stack.etcd.put("/before", "expiry");
    // The agent verified the repository at its start; now its timestamp is re-signed
    // to lapse in two seconds, and nobody refreshes it.
    refresh(&stack, Some(2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = palisade()
        .args(["policy", "verify", "--repo"])
        .arg(stack.dir.join("trust/repo"))
        .arg("--root")
        .arg(stack.dir.join("trust/root.json"))
        .arg("--datastore")
        .arg(stack.tmp.path().join("reviewer-datastore"))
        .output()
        .expect("policy verify");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("expired"),
        "the repository should no longer verify: {said}"
    );

    // The whole stack restarts on expired metadata: the agent starts etcd again
    // from the release it verified and kept (Stack::restart waits for etcd health).
    let before = etcd_pid(&stack);
    stack.restart();
    assert_ne!(etcd_pid(&stack), before, "etcd was not started again");
    assert!(stack.etcd.healthy(), "etcd is not back after the restart");
    let said = stack.agent_output().join("\n");
    assert!(
        said.contains("starting the release this agent verified before"),
        "the agent does not say it ran the kept release: {said}"
    );

    // A new action is refused by the agent, saying why ...
    let p = stack.prepare("etcd.status", &[]);
    let req = stack.logged_request(&p).await;
    let r = stack.refused(&req).await;
    assert_eq!(r.code, RefusalCode::TrustMetadata, "{r}");
    assert!(
        r.detail.contains("expired") && r.detail.contains("palisade policy refresh"),
        "the refusal does not say why or what to do: {r}"
    );
    let health = stack
        .dispatcher
        .health(&stack.agent_url)
        .await
        .expect("health");
    assert!(
        health
            .trust_unverified
            .as_deref()
            .is_some_and(|w| w.contains("expired")),
        "{health:?}"
    );
    // ... and by the gateway, before anything is dispatched.
    let (status, body) = stack
        .etcd_status_via_gateway("checking etcd after the repository expired")
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string()
            .contains("trust metadata cannot be verified"),
        "{body}"
    );

    // Fresh metadata: the same instance acts again, with no restart.
    refresh(&stack, None);
    let executed = stack
        .execute("etcd.status", &[])
        .await
        .expect("an action after the refresh");
    assert_eq!(executed.result.outcome, ResultOutcome::Succeeded);
    let (status, body) = stack
        .etcd_status_via_gateway("checking etcd after the refresh")
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_check_says_what_an_agent_does_on_expired_metadata() {
    let stack = Stack::start();
    refresh(&stack, Some(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let check = |config: &std::path::Path| {
        let out = palisade()
            .args(["agent", "check", "--config"])
            .arg(config)
            .output()
            .expect("agent check");
        assert!(
            !out.status.success(),
            "agent check passed on expired metadata"
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // The demo agent verified the repository before: it would keep its components
    // and take no action.
    let config = stack.dir.join("agent/agent.toml");
    let said = check(&config);
    assert!(
        said.contains("expired") && said.contains("accept no action"),
        "{said}"
    );
    // An agent that never verified anything has nothing to fall back on: it would
    // not start, and nothing is run from a repository that does not verify.
    let text = std::fs::read_to_string(&config).expect("agent.toml");
    assert!(text.contains("datastore = \"tuf-datastore\""), "{text}");
    let fresh = config.with_file_name("agent-fresh.toml");
    std::fs::write(
        &fresh,
        text.replace(
            "datastore = \"tuf-datastore\"",
            "datastore = \"fresh-datastore\"",
        ),
    )
    .expect("write");
    let said = check(&fresh);
    assert!(
        said.contains("expired") && !said.contains("accept no action"),
        "{said}"
    );
}
