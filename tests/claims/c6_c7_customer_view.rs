//! Claims C6 and C7 as the customer reads them: the access log shows every operator
//! request, its outcome and its output, and nothing else — no operator name, e-mail,
//! group or schedule name, no pseudonym that links one operator across tenants, and no
//! text an attacker chose that could forge a line. And nobody without credentials can
//! tell which clusters exist.
//!
//! Each test attacks the gateway `palisade up` runs (or a second gateway on the same
//! stack serving two tenants) through its HTTPS API, and reads what the customer reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::{second_gateway, GatewayClient, Stack};
use palisade_core::time::Timestamp;
use serde_json::Value;
use sha2::Digest as _;
use std::time::Duration;

const TICKET: &str = "INC-5150";
const REASON: &str = "checking etcd after an alert";
const OFF_CALL: &str = "jane.doe@example.com";
const GROUP: &str = "payments-secret-oncall";

/// Characters that change how a line reads without being seen (control, bidi,
/// zero-width): none may reach what the customer reads.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// Every string in `v`, keys included.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

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

/// Two tenants, `demo` (the stack's) and `other`, on a second gateway that serves both.
fn two_tenants() -> (Stack, common::Running, GatewayClient, String) {
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
    let other_token = "other-tenant-token-0123456789".to_string();
    let other_sha = hex::encode(sha2::Sha256::digest(other_token.as_bytes()));
    let (running, gw) = second_gateway(&stack, "two-tenants", |t| {
        format!("{t}\n[[reader]]\ntenant = \"other\"\ntoken_sha256 = \"{other_sha}\"\n")
    });
    (stack, running, gw, other_token)
}

/// An off-call operator with an e-mail for a name is refused on two tenants' clusters:
/// each customer reads a refusal with a fixed reason code and a pseudonym of its own,
/// never the name; an on-call operator's groups and schedule are not in the log
/// either. The operator still reads the detailed reason in their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_never_reads_an_operators_name_groups_or_schedule() {
    let (stack, _gw2, gw, other_token) = two_tenants();
    let jane = gw.dev_token(OFF_CALL).await;
    let mut refusal_actors = Vec::new();
    for (tenant, cluster, token) in [
        ("demo", "demo", stack.tenant_token()),
        ("other", "other", other_token.clone()),
    ] {
        let (status, problem) = gw
            .run(&jane, cluster, "etcd.status", None, &[], TICKET, REASON)
            .await;
        assert_eq!(status, 403, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("not on call"),
            "the operator is told why: {problem}"
        );
        let (events, audit) = customer_view(&gw, tenant, cluster, &token).await;
        let refusal = events
            .iter()
            .find(|e| e["kind"] == "refusal")
            .unwrap_or_else(|| panic!("no refusal in {tenant}'s log: {events:?}"));
        assert_eq!(refusal["reason"], "not-on-call", "{refusal}");
        assert_eq!(refusal["status"], 403, "{refusal}");
        let actor = refusal["actor"].as_str().unwrap().to_string();
        assert!(actor.starts_with("op-"), "{refusal}");
        refusal_actors.push(actor);
        let line = audit
            .iter()
            .find(|a| a["annotations"]["palisade.dev/kind"] == "refusal")
            .unwrap();
        assert_eq!(line["responseStatus"]["message"], "not-on-call", "{line}");
        let text = format!("{events:?}{audit:?}").to_lowercase();
        for secret in ["jane", "example.com"] {
            assert!(!text.contains(secret), "{tenant} reads {secret:?}: {text}");
        }
    }
    assert_ne!(
        refusal_actors[0], refusal_actors[1],
        "one operator, two tenants: the pseudonyms must not link them"
    );

    // An on-call operator whose token carries a group: the intent names neither the
    // group nor the schedule, and the tenant's pseudonym is the one whoami reports.
    let key = palisade_authn::DevIssuer::load(&stack.dir.join("gateway/keys/dev-issuer.key"))
        .expect("dev key");
    let token = key
        .issue(
            &format!("{}/dev", gw.url),
            palisade_gateway::auth::DEV_AUDIENCE,
            &stack.operator(),
            &[GROUP.to_string()],
            600,
            Timestamp::now().unix_seconds(),
        )
        .expect("token");
    let (status, done) = gw
        .run(&token, "demo", "etcd.status", None, &[], TICKET, REASON)
        .await;
    assert_eq!(status, 200, "{done}");
    let (events, audit) = customer_view(&gw, "demo", "demo", &stack.tenant_token()).await;
    let intent = events.iter().find(|e| e["kind"] == "intent").unwrap();
    let (_, who) = gw.call("GET", "/v1/whoami", Some(&token), None).await;
    assert_eq!(intent["actor"]["id"], who["pseudonyms"]["demo"], "{who}");
    assert_ne!(
        who["pseudonyms"]["demo"], who["pseudonyms"]["other"],
        "{who}"
    );
    let schedule = intent["actor"]["grant"]["schedule"].as_str().unwrap();
    assert!(schedule.starts_with("sched-"), "{intent}");
    let text = format!("{events:?}{audit:?}");
    assert!(
        !text.contains(GROUP),
        "the group reached the customer: {text}"
    );
    // (The operator's name may be a common word, like the machine's user: compare.)
    assert_ne!(intent["actor"]["id"], stack.operator().as_str(), "{intent}");
}

/// A path carrying a newline, an escape sequence and a right-to-left override (a
/// forged "succeeded" line) is refused; the log and the audit line hold the action
/// only as `unknown-action` with the digest of what was sent, no such character
/// anywhere, and the status code the caller was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_bidi_characters_never_reach_the_customer() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    // `etcd.status\n{"outcome":"succeeded"} \x1b[2K \u{202e}dedeeccus`
    let encoded = "etcd.status%0A%7B%22outcome%22%3A%22succeeded%22%7D%1B%5B2K%E2%80%AEdedeeccus";
    let sent = "etcd.status\n{\"outcome\":\"succeeded\"}\u{1b}[2K\u{202e}dedeeccus";
    let (status, problem) = gw
        .call(
            "POST",
            &format!("/v1/clusters/demo/actions/{encoded}"),
            Some(&token),
            Some(serde_json::json!({"instance": "demo-0", "ticket": TICKET, "reason": REASON})),
        )
        .await;
    assert_eq!(status, 404, "{problem}");
    let index = problem["log_index"]
        .as_u64()
        .expect("the refusal is logged");
    let (events, audit) = customer_view(&gw, "demo", "demo", &stack.tenant_token()).await;
    let mut all = Vec::new();
    strings(&Value::Array(events.clone()), &mut all);
    strings(&Value::Array(audit.clone()), &mut all);
    for s in &all {
        assert!(
            !s.chars().any(is_unsafe),
            "unsafe characters reached the customer: {s:?}"
        );
    }
    let refusal = &events[usize::try_from(index).unwrap()];
    assert_eq!(refusal["kind"], "refusal", "{refusal}");
    assert_eq!(refusal["action"], "unknown-action", "{refusal}");
    assert_eq!(
        refusal["action_digest"],
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(sent.as_bytes()))
        ),
        "{refusal}"
    );
    let line = &audit[usize::try_from(index).unwrap()];
    assert_eq!(
        line["responseStatus"]["code"], 404,
        "the status answered: {line}"
    );
    assert_eq!(
        line["requestURI"], "/palisade/v1/clusters/demo/actions/unknown-action",
        "{line}"
    );
}

/// Without credentials, a cluster that exists and one that does not get the same
/// answer on every route; the attempt on the real one is still in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_cannot_be_enumerated_without_credentials() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let body = serde_json::json!({"instance": "demo-0", "ticket": TICKET, "reason": REASON});
    for token in [None, Some("not-a-jwt")] {
        let mut answers = Vec::new();
        for cluster in ["demo", "nosuch", "Not_A_Valid_Id"] {
            let run = gw
                .call(
                    "POST",
                    &format!("/v1/clusters/{cluster}/actions/etcd.status"),
                    token,
                    Some(body.clone()),
                )
                .await;
            let list = gw
                .call(
                    "GET",
                    &format!("/v1/clusters/{cluster}/actions"),
                    token,
                    None,
                )
                .await;
            let events = gw
                .call(
                    "GET",
                    &format!("/v1/tenants/demo/clusters/{cluster}/events"),
                    token,
                    None,
                )
                .await;
            assert_eq!(run.0, 401, "{cluster}: {}", run.1);
            assert_eq!(events.0, 401, "{cluster}: {}", events.1);
            answers.push((run, list, events));
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "the answers differ by cluster ({token:?}): {answers:?}"
        );
    }
    // The attempts on the cluster that exists are in its log (written in the
    // background, so that the answer does not wait for it).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (events, _) = customer_view(&gw, "demo", "demo", &stack.tenant_token()).await;
        let logged = events
            .iter()
            .filter(|e| e["kind"] == "refusal" && e["stage"] == "authenticate")
            .count();
        if logged == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{logged} unauthenticated attempts logged, not 2: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
        audit_command(&stack, "verify")
            .args(["--quorum", "1"])
            .output()
            .expect("run palisade audit")
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

/// `palisade audit events` of the demo log through the log's read API (not the
/// gateway), in `format`.
fn audit_events(stack: &Stack, format: &str) -> std::process::Output {
    audit_events_with(stack, format, &[])
}

fn audit_events_with(stack: &Stack, format: &str, extra: &[&str]) -> std::process::Output {
    audit_command(stack, "events")
        .args(["-o", format])
        .args(extra)
        .output()
        .expect("run palisade audit events")
}

/// `palisade audit <sub>` of the demo log through the log's read API (not the
/// gateway), with the tenant's token and the log's and witness's keys.
fn audit_command(stack: &Stack, sub: &str) -> std::process::Command {
    let d = stack.dir.display().to_string();
    let mut cmd = common::palisade();
    cmd.args(["audit", sub, "--url"])
        .arg(format!("https://127.0.0.1:{}/logs/demo", stack.base + 1))
        .args(["--token", &format!("@{d}/tenant-demo.token")])
        .args(["--ca", &format!("{d}/pki/ca.crt")])
        .args(common::demo_log_trust(&stack.dir));
    cmd
}

/// The customer reads the log themselves, straight from its tiles: every event,
/// proven against the witnessed checkpoint, as a timeline, JSON lines and
/// Kubernetes audit events; a second result logged for an intent (by a gateway
/// certificate, saying the action failed) is flagged and fails the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_reads_every_event_from_the_tiles_and_a_second_result_is_flagged() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, done) = gw
        .run(&token, "demo", "etcd.status", None, &[], TICKET, REASON)
        .await;
    assert_eq!(status, 200, "{done}");
    let id = done["id"].as_str().expect("operation id").to_string();
    let result_index = done["result_index"].as_u64().expect("result index");
    let wait_for = |format: &'static str, want: String| {
        let stack = &stack;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let out = audit_events(stack, format);
                let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                if stdout.contains(&want) {
                    return (out, stdout);
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no {want:?} in {format}: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let (out, table) = wait_for("table", format!("result  {id} succeeded")).await;
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains(&format!("intent  {id} etcd.status on demo-0")),
        "{table}"
    );
    assert!(
        table.contains("every one proven against the checkpoint"),
        "{table}"
    );

    let (_, json) = wait_for("json", format!("\"intent\":\"{id}\"")).await;
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let result = lines
        .iter()
        .find(|l| l["index"] == result_index)
        .expect("the result's line");
    assert_eq!(result["event"]["outcome"], "succeeded", "{result}");
    assert_eq!(result["problems"], serde_json::json!([]), "{result}");

    let (_, k8s) = wait_for("k8s-audit", "audit.k8s.io/v1".to_string()).await;
    for line in k8s.lines() {
        let e: Value = serde_json::from_str(line).expect("audit event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1", "{e}");
        assert_eq!(e["kind"], "Event", "{e}");
    }

    // With the agent's key, the customer checks that the agent signed every
    // outcome it alone can know.
    let agent_key = stack.dir.join("agent/keys/agent.pub").display().to_string();
    let signed = audit_events_with(&stack, "table", &["--agent-key", &agent_key]);
    let t = String::from_utf8_lossy(&signed.stdout).to_string();
    assert!(
        signed.status.success(),
        "{t}{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    assert!(
        t.contains("result(s) signed by an agent and checked"),
        "{t}"
    );
    assert!(!t.contains(" 0 result(s) signed"), "{t}");

    // A gateway certificate logs a second result for the same intent ("failed").
    let mut forged: Value = result["event"].clone();
    forged["event_id"] = Value::String("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".into());
    forged["outcome"] = Value::String("failed".into());
    forged.as_object_mut().expect("object").remove("output");
    forged
        .as_object_mut()
        .expect("object")
        .remove("output_digest");
    let entry = palisade_core::canonical::to_canonical_vec(&forged).expect("canonical");
    let appended = stack
        .dispatcher
        .append("demo", &entry)
        .await
        .expect("append");
    let (out, table) = wait_for("table", format!("{:>7}", appended.index)).await;
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains(&format!("a second result for intent {id}")),
        "{table}"
    );
    // Its copied agent signature does not cover "failed" without the output.
    let checked = audit_events_with(&stack, "table", &["--agent-key", &agent_key]);
    let t = String::from_utf8_lossy(&checked.stdout).to_string();
    assert_eq!(checked.status.code(), Some(1), "{t}");
    assert!(
        t.contains("failed result: the agent's signature does not verify"),
        "{t}"
    );
    // And one without any agent signature is the gateway's word alone.
    forged["event_id"] = Value::String("dddddddddddddddddddddddddddddddd".into());
    forged.as_object_mut().expect("object").remove("agent");
    let entry = palisade_core::canonical::to_canonical_vec(&forged).expect("canonical");
    let appended = stack
        .dispatcher
        .append("demo", &entry)
        .await
        .expect("append");
    let (out, table) = wait_for("table", format!("{:>7}", appended.index)).await;
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("failed result without the agent's signature: the gateway wrote it alone"),
        "{table}"
    );
}

/// A refusal by the agent reaches the customer's log as the agent's own word: the
/// tenant moves to a witness that has not cosigned yet, so the agent refuses the
/// next action; the result carries the agent's signed refusal (code, reason, the
/// trust it enforced), which `palisade audit events --agent-key` checks, and the
/// tenant's statements check against the tenant's key — not against another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refusal_reaches_the_customer_signed_by_the_agent() {
    use palisade_core::inventory::demo_tenant;
    use palisade_policy::tenant::{TenantTrust, TENANT_TRUST_SCHEMA};
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    // One action puts the tenant's first statement in force at the agent.
    let (status, done) = gw
        .run(&token, "demo", "etcd.status", None, &[], TICKET, REASON)
        .await;
    assert_eq!(status, 200, "{done}");
    let key = palisade_policy::keys::SigningKey::read(&stack.dir.join(demo_tenant::KEY))
        .expect("tenant key");
    let new_witness = palisade_tlog::note::SignerKey::generate(
        "tenant-demo.example/witness-2",
        palisade_tlog::note::KeyType::Cosignature,
    )
    .expect("witness key");
    let statement = TenantTrust {
        schema: TENANT_TRUST_SCHEMA.into(),
        tenant: palisade_core::TenantId::parse("demo").expect("tenant"),
        cluster: palisade_core::ClusterId::parse("demo").expect("cluster"),
        seq: 2,
        issued_at: palisade_core::time::Timestamp::now(),
        witnesses: vec![new_witness.verifier().to_string()],
        quorum: 1,
        approval: None,
    }
    .sign(&key)
    .expect("sign");
    let (status, body) = gw
        .call(
            "PUT",
            "/v1/tenants/demo/clusters/demo/trust",
            Some(&stack.tenant_token()),
            Some(serde_json::to_value(&statement).expect("json")),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (_, done) = gw
        .run(&token, "demo", "etcd.status", None, &[], TICKET, REASON)
        .await;
    assert_eq!(done["outcome"], "refused_by_agent", "{done}");
    let result_index = done["result_index"].as_u64().expect("result index");

    let d = stack.dir.display().to_string();
    let agent_key = format!("{d}/agent/keys/agent.pub");
    let tenant_key = format!("{d}/{}", demo_tenant::PUBLIC_KEY);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let out = audit_events_with(
            &stack,
            "json",
            &["--agent-key", &agent_key, "--tenant-key", &tenant_key],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["index"].as_u64() == Some(result_index));
        if let Some(v) = found {
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(line["problems"], serde_json::json!([]), "{line}");
    let signed = &line["event"]["agent_refusal"];
    assert_eq!(signed["code"], "not_in_log", "{line}");
    assert_eq!(
        signed["trust"]["tenant"]["seq"], 1,
        "the statement in force: {line}"
    );

    // Checked against another key, the tenant's statements are flagged.
    let other = stack.dir.join("other-tenant");
    palisade_policy::keys::generate("other", &other, false).expect("key");
    let out = audit_events_with(
        &stack,
        "table",
        &[
            "--tenant-key",
            &other.join("other.pub").display().to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not signed by the tenant's key"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The agents' keys are in the customer's own log (recorded by the gateway before it
/// dispatches), so `palisade audit events` checks every signed result without being
/// handed any key; a key recorded for an instance shows in the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keys_are_in_the_log_and_check_the_results() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, done) = gw
        .run(&token, "demo", "etcd.status", None, &[], TICKET, REASON)
        .await;
    assert_eq!(status, 200, "{done}");
    let result_index = done["result_index"].as_u64().expect("result index");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = audit_events(&stack, "table");
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        if t.contains(&format!("{result_index:>7}")) {
            assert!(out.status.success(), "{t}");
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let key = palisade_policy::keys::PublicKey::read(&stack.dir.join("agent/keys/agent.pub"))
        .expect("agent key");
    assert!(
        table.contains(&format!("key {} for demo-0 recorded", key.key_id())),
        "{table}"
    );
    assert!(
        table.contains("1 agent key(s) recorded in the log"),
        "{table}"
    );
    assert!(
        table.contains("1 result(s) signed by an agent and checked"),
        "{table}"
    );
}
