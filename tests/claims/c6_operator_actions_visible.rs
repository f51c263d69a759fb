//! Claim C6: operators reach a cluster's Kubernetes API only through the
//! administrative API, and the customer sees every such action — in the
//! Kubernetes audit log of their own cluster (the agent impersonates
//! `palisade:operator:<pseudonym>` and names the log entry) and in their Palisade
//! access log, which no other tenant can read.
//!
//! The whole chain runs for real: gateway, log and witness, agent, and a recording
//! HTTPS server standing in for kube-apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;
#[path = "../agent/kube_support/mod.rs"]
mod kube_support;

use harness::{second_gateway, Stack};
use kube_support::{ApiServer, Pki};
use palisade_tlog::proof::TlogProof;
use serde_json::Value;

const TICKET: &str = "INC-900";
const REASON: &str = "node worker-1 has a failing disk";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_actions_impersonate_the_operator_and_name_the_log_entry() {
    let pki = Pki::new();
    let api = ApiServer::start(&pki, &[("worker-1", false), ("worker-2", true)]).await;
    let mut stack = Stack::start();
    // The agent reaches "kube-apiserver" with its own token.
    let agent_toml = stack.dir.join("agent/agent.toml");
    let mut text = std::fs::read_to_string(&agent_toml).unwrap();
    text.push_str(&format!(
        "\n[kube]\nurl = \"{}\"\nca = \"{}\"\ntoken_file = \"{}\"\n",
        api.url(),
        pki.ca.display(),
        pki.token_file.display()
    ));
    std::fs::write(&agent_toml, text).unwrap();
    stack.restart();

    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (_, who) = gw.call("GET", "/v1/whoami", Some(&token), None).await;
    let pseudonym = who["pseudonyms"]["demo"].as_str().unwrap().to_string();
    assert_ne!(pseudonym, stack.operator());

    let (status, cordon) = gw
        .run(
            &token,
            "demo",
            "kube.cordon",
            None,
            &[("node", "worker-1")],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{cordon}");
    assert_eq!(cordon["status"], "succeeded", "{cordon}");
    assert_eq!(cordon["output"]["changed"], Value::Bool(true), "{cordon}");
    assert_eq!(api.unschedulable("worker-1"), Some(true));
    let (status, uncordon) = gw
        .run(
            &token,
            "demo",
            "kube.uncordon",
            None,
            &[("node", "worker-2")],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{uncordon}");
    let (status, nodes) = gw
        .run(&token, "demo", "kube.nodes", None, &[], TICKET, REASON)
        .await;
    assert_eq!(status, 200, "{nodes}");
    let out = nodes["output"].to_string();
    for leak in kube_support::LEAKS {
        assert!(!out.contains(leak), "{leak} left the agent: {out}");
    }

    // Every request the apiserver saw carries the operator's pseudonym and the
    // entry in the customer's log that authorized it.
    let requests = api.requests();
    assert!(requests.len() >= 5, "{requests:?}");
    let by_op = [(&cordon, "worker-1"), (&uncordon, "worker-2")];
    for (op, node) in by_op {
        let index = op["intent_index"].as_u64().unwrap();
        let entry = format!("palisade.local/log/demo#{index}");
        let matching: Vec<_> = requests
            .iter()
            .filter(|r| r.path == format!("/api/v1/nodes/{node}"))
            .collect();
        assert!(matching.iter().any(|r| r.method == "PATCH"), "{matching:?}");
        for r in matching {
            assert_eq!(
                r.header("impersonate-user"),
                Some(format!("palisade:operator:{pseudonym}").as_str())
            );
            assert_eq!(
                r.header("impersonate-extra-palisade.dev%2flog-entry"),
                Some(entry.as_str())
            );
            assert_eq!(
                r.header("impersonate-extra-palisade.dev%2fevent-id"),
                op["event_id"].as_str()
            );
        }
        // ... and that entry is the intent the customer reads.
        let (status, page) = gw
            .call(
                "GET",
                &format!("/v1/tenants/demo/clusters/demo/events?from={index}&limit=1"),
                Some(&stack.tenant_token()),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let event = &page["events"][0]["event"];
        assert_eq!(event["kind"], "intent", "{event}");
        assert_eq!(event["action"], op["action"]);
        assert_eq!(event["actor"]["id"], Value::String(pseudonym.clone()));
        assert_eq!(event["parameters"]["node"], node);
        assert_eq!(event["event_id"], op["event_id"]);
    }
    // Nothing but nodes was ever requested.
    for r in &requests {
        assert!(
            r.path.starts_with("/api/v1/nodes"),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_served_with_proofs_and_as_kubernetes_audit_events() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, done) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            None,
            &[],
            TICKET,
            "checking etcd status",
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let (status, refused) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            None,
            &[],
            "no-ticket",
            "checking etcd status",
        )
        .await;
    assert_eq!(status, 422, "{refused}");

    let (status, page) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    // First the agent's key the gateway recorded and the tenant's witness statement
    // `palisade up` registered (in either order).
    assert_eq!(
        events.len(),
        5,
        "key, statement, intent, result, refusal: {page}"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    let mut first = kinds[..2].to_vec();
    first.sort_unstable();
    assert_eq!(first, ["agent_key", "tenant_trust"]);
    assert_eq!(kinds[2..], ["intent", "result", "refusal"]);
    // Each proof verifies offline against the log's key and witness quorum.
    let policy = harness::log_policy(&stack.dir);
    for e in events {
        let entry = palisade_core::canonical::to_canonical_vec(&e["event"]).unwrap();
        let proof = TlogProof::parse(e["proof"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(proof.index(), e["index"].as_u64().unwrap());
        proof.verify(&entry, &policy).expect("the proof verifies");
        // Operators appear under their pseudonym, never their name.
        let actor = match e["event"]["kind"].as_str() {
            Some("intent") => e["event"]["actor"]["id"].clone(),
            Some("refusal") => e["event"]["actor"].clone(),
            _ => Value::Null,
        };
        if let Some(a) = actor.as_str() {
            assert!(a.starts_with("op-") && a != stack.operator(), "{a}");
        }
    }

    // Paging edges: past the end is empty (no overflow), a page too large is refused.
    let (status, end) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events?from=18446744073709551615",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{end}");
    assert_eq!(end["events"].as_array().map(Vec::len), Some(0), "{end}");
    let (status, _) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events?limit=101",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, bad) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events?from=-1",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        bad["title"], "bad request",
        "problem+json, not plain text: {bad}"
    );

    // The same events as audit.k8s.io/v1 lines.
    let (status, lines) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events?format=k8s-audit",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let text = lines.as_str().expect("JSON lines");
    let audit: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(audit.len(), 5);
    assert!(
        audit[..2]
            .iter()
            .any(|a| a["user"]["username"] == "palisade:tenant:demo"),
        "the statement is the tenant's"
    );
    let audit = &audit[2..];
    for a in audit {
        assert_eq!(a["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(a["kind"], "Event");
        assert!(a["annotations"]["palisade.dev/tlog-proof"]
            .as_str()
            .is_some());
    }
    assert_eq!(audit[0]["stage"], "RequestReceived");
    assert_eq!(audit[1]["stage"], "ResponseComplete");
    assert_eq!(
        audit[0]["auditID"], audit[1]["auditID"],
        "intent and result are one request"
    );
    assert!(audit[0]["user"]["username"]
        .as_str()
        .unwrap()
        .starts_with("palisade:operator:op-"));
    assert_eq!(audit[1]["responseStatus"]["code"], 200);
    // The result names the same request as its intent, as a ResponseComplete does.
    for field in ["requestURI", "objectRef"] {
        assert!(audit[0][field].is_string() || audit[0][field].is_object());
        assert_eq!(audit[1][field], audit[0][field], "{field}");
    }
    assert_eq!(audit[2]["responseStatus"]["code"], 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_reads_another_tenants_access_log() {
    // Two tenants, each with a cluster; the log serves both.
    let stack = Stack::start_with(|dir, base| {
        std::fs::write(
            dir.join("inventory.toml"),
            format!(
                "[[tenant]]\nid = \"demo\"\n\n[[tenant]]\nid = \"other\"\n\n\
                 [[cluster]]\nid = \"demo\"\ntenant = \"demo\"\n\n[[cluster.instance]]\nid = \"demo-0\"\nagent_url = \"https://127.0.0.1:{}\"\n\n\
                 [[cluster]]\nid = \"other\"\ntenant = \"other\"\n\n[[cluster.instance]]\nid = \"other-0\"\nagent_url = \"https://127.0.0.1:9\"\n",
                base + 3
            ),
        )
        .unwrap();
    });
    let other_token = "other-tenant-token-0123456789";
    let other_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        other_token.as_bytes(),
    ));
    let (_gw2, gw) = second_gateway(&stack, "two-tenants", |t| {
        format!("{t}\n[[reader]]\ntenant = \"other\"\ntoken_sha256 = \"{other_sha}\"\n")
    });
    let demo_token = stack.tenant_token();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, done) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            None,
            &[],
            TICKET,
            "checking etcd status",
        )
        .await;
    assert_eq!(status, 200, "{done}");

    let read = |tenant: &str, cluster: &str, token: &str| {
        let gw = &gw;
        let path = format!("/v1/tenants/{tenant}/clusters/{cluster}/events");
        let token = token.to_string();
        async move { gw.call("GET", &path, Some(&token), None).await }
    };
    // Each tenant reads its own.
    let (s, own) = read("demo", "demo", &demo_token).await;
    assert_eq!(s, 200, "{own}");
    assert!(!own["events"].as_array().unwrap().is_empty());
    let (s, own) = read("other", "other", other_token).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(own["events"].as_array().map(Vec::len), Some(0));
    // And nothing of the other's, however it asks.
    for (tenant, cluster, tok) in [
        ("demo", "demo", other_token),
        ("other", "demo", other_token),
        ("demo", "other", demo_token.as_str()),
        ("other", "other", demo_token.as_str()),
    ] {
        let (s, problem) = read(tenant, cluster, tok).await;
        assert_eq!(s, 404, "{tenant}/{cluster}: {problem}");
    }
    // A cluster that does not exist looks the same as another tenant's.
    let (s, missing) = read("other", "nosuch", other_token).await;
    let (_, foreign) = read("other", "demo", other_token).await;
    assert_eq!(s, 404);
    assert_eq!(missing["title"], foreign["title"]);
    // An unknown token, and none: the same 401.
    let (s, _) = read("demo", "demo", "guess").await;
    assert_eq!(s, 401);
    let (s, _) = gw
        .call("GET", "/v1/tenants/demo/clusters/demo/events", None, None)
        .await;
    assert_eq!(s, 401);
}
