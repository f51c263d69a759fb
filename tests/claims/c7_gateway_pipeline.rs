//! Claim C7 at the gateway: every call is authenticated and authorized by current
//! on-call duty, validated against the approved policy, and logged — refusals
//! included — and nothing is dispatched unless its intent is in the log. There is no
//! break-glass: no flag, role or setting skips a step.
//!
//! Each test attacks the gateway `palisade up` runs (or a second gateway on the same
//! stack whose log or agent is unreachable) through its HTTPS API.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use harness::{dead_port, second_gateway, Stack, StateEtcd};
use palisade_agent::client::CallError;
use palisade_core::time::Timestamp;
use serde_json::Value;
use std::time::Duration;

const TICKET: &str = "INC-4242";
const REASON: &str = "checking etcd after an alert";

/// How many refusals at the authenticate stage the demo cluster's log holds.
async fn authenticate_refusals(stack: &Stack) -> usize {
    let gw = stack.gateway();
    let (mut from, mut count) = (0, 0);
    loop {
        let (status, page) = gw
            .call(
                "GET",
                &format!("/v1/tenants/demo/clusters/demo/events?from={from}&limit=100"),
                Some(&stack.tenant_token()),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return count;
        }
        from += events.len();
        count += events
            .iter()
            .filter(|e| e["event"]["kind"] == "refusal" && e["event"]["stage"] == "authenticate")
            .count();
    }
}

/// The event the log holds at `index`, read through the customer API.
async fn logged_event(stack: &Stack, index: u64) -> Value {
    let gw = stack.gateway();
    let (status, page) = gw
        .call(
            "GET",
            &format!("/v1/tenants/demo/clusters/demo/events?from={index}&limit=1"),
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["events"][0]["event"].clone()
}

async fn assert_logged_refusal(stack: &Stack, problem: &Value, stage: &str) {
    let index = problem["log_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("refusal not logged: {problem}"));
    let event = logged_event(stack, index).await;
    assert_eq!(event["kind"], "refusal", "{event}");
    assert_eq!(event["stage"], stage, "{event}");
}

fn issuer(stack: &Stack) -> palisade_authn::DevIssuer {
    palisade_authn::DevIssuer::load(&stack.dir.join("gateway/keys/dev-issuer.key"))
        .expect("dev key")
}

fn dev_iss(stack: &Stack) -> String {
    format!("https://127.0.0.1:{}/dev", stack.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_each_refusal_is_logged() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let op = stack.operator();
    let now = Timestamp::now().unix_seconds();
    let key = issuer(&stack);
    let aud = palisade_gateway::auth::DEV_AUDIENCE;
    let good = key
        .issue(&dev_iss(&stack), aud, &op, &[], 600, now)
        .expect("token");

    let other_dir = tempfile::tempdir().expect("dir");
    let stranger = palisade_authn::DevIssuer::create(&other_dir.path().join("k.key")).expect("key");
    let parts: Vec<&str> = good.split('.').collect();
    let payload: Value = serde_json::from_slice(&B64.decode(parts[1]).expect("b64")).expect("json");
    let mut forged_payload = payload.clone();
    forged_payload["sub"] = Value::String("someone-else".into());
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&forged_payload).expect("json")),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            key.issue(&dev_iss(&stack), aud, &op, &[], 60, now - 3_600)
                .expect("t"),
        ),
        (
            "not yet valid",
            key.issue(&dev_iss(&stack), aud, &op, &[], 600, now + 3_600)
                .expect("t"),
        ),
        (
            "wrong audience",
            key.issue(&dev_iss(&stack), "another-service", &op, &[], 600, now)
                .expect("t"),
        ),
        (
            "wrong issuer",
            key.issue("https://issuer.example/dev", aud, &op, &[], 600, now)
                .expect("t"),
        ),
        (
            "unknown key",
            stranger
                .issue(&dev_iss(&stack), aud, &op, &[], 600, now)
                .expect("t"),
        ),
        ("forged signature", forged),
        ("alg none", none),
        ("garbage", "not-a-jwt".into()),
    ];
    for (what, token) in cases {
        let (status, problem) = gw
            .run(
                &token,
                "demo",
                "etcd.status",
                Some("demo-0"),
                &[],
                TICKET,
                REASON,
            )
            .await;
        assert_eq!(status, 401, "{what}: {problem}");
        assert!(problem.get("log_index").is_none(), "{what}: {problem}");
    }
    // No credentials at all.
    let (status, problem) = gw
        .call(
            "POST",
            "/v1/clusters/demo/actions/etcd.status",
            None,
            Some(serde_json::json!({"instance": "demo-0", "ticket": TICKET, "reason": REASON})),
        )
        .await;
    assert_eq!(status, 401, "{problem}");
    // Each attempt is in the log (written in the background: the answer is the same
    // whether the cluster exists or not, and does not wait for it).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while authenticate_refusals(&stack).await < 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "the 9 unauthenticated attempts are not all in the log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Unauthenticated attempts cannot grow the tenant's log at will: past a bounded
    // number per address and minute they are refused without being logged. 79
    // attempts within at most two minutes leave at most 60 entries.
    for _ in 0..70 {
        let (status, problem) = gw
            .run(
                "junk",
                "demo",
                "etcd.status",
                Some("demo-0"),
                &[],
                TICKET,
                REASON,
            )
            .await;
        assert_eq!(status, 401, "{problem}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logged = authenticate_refusals(&stack).await;
    assert!(
        (30..=2 * palisade_gateway::pipeline::UNAUTHENTICATED_LOGGED_PER_MINUTE as usize)
            .contains(&logged),
        "{logged} of 79 unauthenticated attempts logged"
    );

    // The genuine token works, so the refusals above were about the tokens.
    let (status, done) = gw
        .run(
            &good,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_current_on_call_grants_authorize_and_requests_must_validate() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let me = gw.dev_token(&stack.operator()).await;

    // Authenticated but not on call.
    let mallory = gw.dev_token("mallory").await;
    let (status, problem) = gw
        .run(
            &mallory,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not on call")),
        "{problem}"
    );
    assert_logged_refusal(&stack, &problem, "authorize").await;

    // Justification: missing, malformed, too short.
    for (ticket, reason) in [
        ("", REASON),
        ("see slack", REASON),
        ("INC-1", "x"),
        ("-INC-1", REASON),
    ] {
        let (status, problem) = gw
            .run(
                &me,
                "demo",
                "etcd.status",
                Some("demo-0"),
                &[],
                ticket,
                reason,
            )
            .await;
        assert_eq!(status, 422, "{ticket:?} {reason:?}: {problem}");
        assert_logged_refusal(&stack, &problem, "validate").await;
    }
    // Unknown action, bad parameters, unknown instance.
    let (status, problem) = gw
        .run(
            &me,
            "demo",
            "etcd.exec",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 404, "{problem}");
    assert_logged_refusal(&stack, &problem, "validate").await;
    let (status, problem) = gw
        .run(
            &me,
            "demo",
            "kube.cordon",
            None,
            &[("node", "-rf")],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_logged_refusal(&stack, &problem, "validate").await;
    let (status, problem) = gw
        .run(
            &me,
            "demo",
            "etcd.status",
            Some("demo-9"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 404, "{problem}");
    assert_logged_refusal(&stack, &problem, "validate").await;
    // Duplicated parameter keys in the raw JSON: the validator sees the raw bytes.
    let raw = format!(
        r#"{{"parameters":{{"node":"worker-1","node":"-rf"}},"ticket":"{TICKET}","reason":"{REASON}"}}"#
    );
    let (status, problem) = gw
        .call_raw(
            "POST",
            "/v1/clusters/demo/actions/kube.cordon",
            Some(&me),
            &raw,
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_logged_refusal(&stack, &problem, "validate").await;
    // No body at all is malformed before anything else.
    let (status, problem) = gw
        .call(
            "POST",
            "/v1/clusters/demo/actions/kube.cordon",
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, 400, "{problem}");

    // An unknown cluster has no log to record the refusal in, and says so plainly.
    let (status, problem) = gw
        .run(
            &me,
            "nosuch",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 404, "{problem}");

    // Rate limit: etcd.alarm-disarm allows 5 per hour per operator.
    for i in 0..5 {
        let (status, done) = gw
            .run(
                &me,
                "demo",
                "etcd.alarm-disarm",
                None,
                &[],
                TICKET,
                "disarm after compaction",
            )
            .await;
        assert_eq!(status, 200, "call {i}: {done}");
    }
    let (status, problem) = gw
        .run(
            &me,
            "demo",
            "etcd.alarm-disarm",
            None,
            &[],
            TICKET,
            "disarm after compaction",
        )
        .await;
    assert_eq!(status, 429, "{problem}");
    assert_logged_refusal(&stack, &problem, "rate_limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_ends_exactly_with_the_shift() {
    // shorty covers the demo schedule from a minute ago until 40 s from now.
    let now = Timestamp::now().unix_seconds();
    let end = now + 40;
    let stack = Stack::start_with(|dir, _| {
        std::fs::create_dir_all(dir.join("gateway")).expect("dir");
        let rfc = |t: i64| Timestamp::from_unix_seconds(t).to_string();
        std::fs::write(
            dir.join("gateway/rota.yaml"),
            format!(
                "apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: demo\n    timeZone: UTC\n    \
                 rotation: always\n    participants: [\"regular\"]\n    overrides:\n      - operator: shorty\n        \
                 start: {}\n        end: {}\n",
                rfc(now - 60),
                rfc(end)
            ),
        )
        .expect("rota");
    });
    let gw = stack.gateway();
    let token = gw.dev_token("shorty").await;
    assert!(
        Timestamp::now().unix_seconds() < end - 2,
        "the stack took too long to start for this test's 40 s shift"
    );
    let (status, who) = gw.call("GET", "/v1/whoami", Some(&token), None).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(
        who["grants"][0]["ends_at"],
        Timestamp::from_unix_seconds(end).to_string(),
        "{who}"
    );
    let (status, done) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "during the shift: {done}");

    // The same, still valid token one second after the shift ended.
    let wait = end + 1 - Timestamp::now().unix_seconds();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))).await;
    }
    let (status, problem) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 403, "after the shift: {problem}");
    assert_logged_refusal(&stack, &problem, "authorize").await;
    // The regular participant is on call again.
    let regular = gw.dev_token("regular").await;
    let (status, done) = gw
        .run(
            &regular,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_down_means_nothing_is_dispatched() {
    let stack = Stack::start();
    let before = stack.seen().await;
    let dead = dead_port();
    let (_gw2, gw) = second_gateway(&stack, "nolog", |t| {
        t.replace(
            &format!("url = \"https://127.0.0.1:{}\"", stack.base + 1),
            &format!("url = \"https://127.0.0.1:{dead}\""),
        )
    });
    let token = gw.dev_token(&stack.operator()).await;
    let (status, op) = gw
        .run(
            &token,
            "demo",
            "etcd.defragment",
            Some("demo-0"),
            &[],
            TICKET,
            "defragment after compaction run",
        )
        .await;
    assert_eq!(status, 503, "{op}");
    assert_eq!(op["status"], "refused", "{op}");
    assert!(
        op["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing was dispatched")),
        "{op}"
    );
    assert!(op.get("intent_index").is_none_or(Value::is_null), "{op}");
    assert_eq!(op["outcome"], "not_dispatched", "{op}");
    // The provider's outage does not use up the operator's rate limit: etcd.backup is
    // limited to 4 an hour, and six attempts during the outage are each answered
    // with the outage, never with 429.
    for attempt in 0..6 {
        let (status, op) = gw
            .run(
                &token,
                "demo",
                "etcd.backup",
                None,
                &[],
                TICKET,
                "backup before the maintenance window",
            )
            .await;
        assert_eq!(status, 503, "attempt {attempt}: {op}");
        assert_eq!(op["outcome"], "not_dispatched", "attempt {attempt}: {op}");
    }
    // The agent saw nothing: its view of the log did not move.
    assert_eq!(stack.seen().await, before);
}

/// Authentication comes before the request is even read: a caller without valid
/// credentials learns nothing from a malformed body (401, not 400), and neither
/// from a malformed Idempotency-Key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_caller_gets_401_whatever_the_body() {
    let stack = Stack::start();
    let gw = stack.gateway();
    for (token, body) in [
        (Some("garbage"), "{not json"),
        (None, "{not json"),
        (Some("garbage"), r#"{"ticket": 7}"#),
    ] {
        let (status, problem) = gw
            .call_raw("POST", "/v1/clusters/demo/actions/etcd.status", token, body)
            .await;
        assert_eq!(status, 401, "{token:?} {body}: {problem}");
    }
    // Authenticated, the same body is a 400 that names the problem.
    let token = gw.dev_token(&stack.operator()).await;
    let (status, problem) = gw
        .call_raw(
            "POST",
            "/v1/clusters/demo/actions/etcd.status",
            Some(&token),
            "{not json",
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem.to_string().contains("request body"), "{problem}");
}

/// The operation is recorded while its intent is logged; a gateway that cannot record
/// it dispatches nothing, and the log says so. The gateway's state is an etcd that
/// takes the small rate-limit counter but refuses anything as large as an operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_cannot_record_the_operation_dispatches_nothing() {
    let stack = Stack::start();
    let before = stack.seen().await;
    let etcd = StateEtcd::start_with(&["--max-request-bytes", "320"]);
    let (_gw2, gw) = second_gateway(&stack, "nostate", |t| etcd.gateway_config(&t, "/p"));
    let token = gw.dev_token(&stack.operator()).await;
    let (status, op) = gw
        .run(
            &token,
            "demo",
            "etcd.defragment",
            Some("demo-0"),
            &[],
            TICKET,
            "defragment after compaction run",
        )
        .await;
    assert_eq!(status, 503, "{op}");
    assert_eq!(op["status"], "refused", "{op}");
    assert_eq!(op["outcome"], "not_dispatched", "{op}");
    let error = op["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("nothing was logged or dispatched") && error.contains("state unavailable"),
        "{op}"
    );
    // The operation is recorded before its intent is appended: without it, not even
    // the intent is logged (an intent the gateway could forget would never get its
    // result).
    assert!(op["intent_index"].is_null(), "{op}");
    assert!(op["result_index"].is_null(), "{op}");
    // The agent saw nothing: its view of the log did not move.
    assert_eq!(stack.seen().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_fails_and_the_failure_is_logged() {
    let stack = Stack::start();
    let dead = dead_port();
    let inventory = stack.dir.join("inventory-dead-agent.toml");
    let inv = std::fs::read_to_string(stack.dir.join("inventory.toml")).expect("inventory");
    std::fs::write(
        &inventory,
        inv.replace(
            &format!("https://127.0.0.1:{}", stack.base + 3),
            &format!("https://127.0.0.1:{dead}"),
        ),
    )
    .expect("write inventory");
    let original = stack.dir.join("inventory.toml").display().to_string();
    let (_gw2, gw) = second_gateway(&stack, "noagent", |t| {
        t.replace(&original, &inventory.display().to_string())
    });
    let token = gw.dev_token(&stack.operator()).await;
    let (status, op) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    // No connection could be made: nothing reached the agent, and operator and
    // customer read the same outcome.
    assert_eq!(status, 503, "{op}");
    assert_eq!(op["status"], "refused", "{op}");
    assert_eq!(op["outcome"], "not_dispatched", "{op}");
    let intent = op["intent_index"].as_u64().expect("the intent was logged");
    let result = op["result_index"].as_u64().expect("the failure was logged");
    assert!(result > intent);
    let event = logged_event(&stack, result).await;
    assert_eq!(event["kind"], "result", "{event}");
    assert_eq!(event["outcome"], "not_dispatched", "{event}");
    assert_eq!(event["intent"], op["event_id"], "{event}");
}

/// A grant must name a schedule some rota or feed defines: a misspelt schedule would
/// silently grant nothing, so the gateway refuses to start with it. A schedule fed
/// only by a URL (fetched after the start) counts as defined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_naming_no_schedule_stops_the_gateway_at_start() {
    let stack = Stack::start();
    let feed = format!(
        "\n[[ical]]\nschedule = \"pager\"\nurl = \"https://127.0.0.1:{}/pager.ics\"\n",
        dead_port()
    );
    let grant = |schedule: &str| {
        format!(
            "\n[[grant]]\nschedule = \"{schedule}\"\nroles = [\"operator\"]\nclusters = [\"*\"]\n"
        )
    };
    let gdir = stack.dir.join("gateway");
    let base = std::fs::read_to_string(gdir.join("gateway.toml")).expect("config");
    for (name, extra) in [
        ("nosuch", grant("nosuch")),
        ("nosuch-with-feed", format!("{feed}{}", grant("nosuch"))),
    ] {
        let port = common::free_port_block();
        let text = base
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", stack.base),
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace(
                "state = \"state.redb\"",
                &format!("state = \"{name}-state.redb\""),
            );
        let config = gdir.join(format!("{name}.toml"));
        std::fs::write(&config, format!("{text}{extra}")).expect("write config");
        let mut cmd = common::palisade();
        cmd.args([
            "gateway",
            "serve",
            "--config",
            &config.display().to_string(),
        ]);
        let mut gw = common::Running::spawn(cmd);
        gw.wait_for("which no rota or feed defines", Duration::from_secs(60));
        let said = gw.seen.last().cloned().unwrap_or_default();
        assert!(said.contains("nosuch"), "{name}: {said}");
        let status = gw.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{name}: {status}");
        assert!(
            !gw.seen.iter().any(|l| l.contains("gateway listening")),
            "{name}: {:?}",
            gw.seen
        );
    }
    // A grant naming the URL-fed schedule is accepted: the gateway starts listening
    // (`second_gateway` waits for it).
    let (_pager, _client) =
        second_gateway(&stack, "pager", |t| format!("{t}{feed}{}", grant("pager")));
}

/// Someone not on call is told when their next shift starts (whoami, and the
/// refusal), and it is the shift the rota gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_off_call_is_told_the_next_shift() {
    let start = Timestamp::now().unix_seconds() + 3600;
    let stack = Stack::start_with(|dir, _| {
        std::fs::create_dir_all(dir.join("gateway")).expect("dir");
        let rfc = |t: i64| Timestamp::from_unix_seconds(t).to_string();
        std::fs::write(
            dir.join("gateway/rota.yaml"),
            format!(
                "apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: demo\n    timeZone: UTC\n    \
                 rotation: always\n    participants: [\"regular\"]\n    overrides:\n      - operator: later\n        \
                 start: {}\n        end: {}\n",
                rfc(start),
                rfc(start + 600)
            ),
        )
        .expect("rota");
    });
    let gw = stack.gateway();
    let token = gw.dev_token("later").await;
    let starts = Timestamp::from_unix_seconds(start).to_string();
    let (status, who) = gw.call("GET", "/v1/whoami", Some(&token), None).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["grants"], Value::Array(vec![]), "{who}");
    assert_eq!(who["next_shift"]["schedule"], "demo", "{who}");
    assert_eq!(who["next_shift"]["starts_at"], starts.as_str(), "{who}");
    let (status, problem) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("your next shift (demo) starts {starts}")),
        "{problem}"
    );
}

/// A grant authorizes only on the clusters it names: the same on-call operator, on a
/// gateway whose grant names another cluster, is refused on this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_authorizes_only_on_the_clusters_it_names() {
    let stack = Stack::start();
    let (_narrow, gw) = second_gateway(&stack, "narrow", |t| {
        assert!(t.contains("clusters = [\"*\"]"), "{t}");
        t.replace("clusters = [\"*\"]", "clusters = [\"other\", \"demo-2\"]")
    });
    let me = gw.dev_token(&stack.operator()).await;
    let (status, who) = gw.call("GET", "/v1/whoami", Some(&me), None).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["grants"][0]["clusters"][0], "other", "{who}");
    let (status, problem) = gw
        .run(
            &me,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not on call for cluster demo")),
        "{problem}"
    );
    assert_logged_refusal(&stack, &problem, "authorize").await;
    // The stack's own gateway, whose grant names every cluster, runs it.
    let (status, done) = stack
        .gateway()
        .run(
            &stack.gateway().dev_token(&stack.operator()).await,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{done}");
}

/// The witness stops answering: the log keeps the intent but cannot get its quorum, so the
/// gateway dispatches nothing, logs a result saying so (in the log as well, not yet
/// witnessed), and appends neither twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_witness_quorum_nothing_is_dispatched_and_nothing_is_logged_twice() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let run = || {
        gw.run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
    };
    let (status, op) = run().await;
    assert_eq!(status, 200, "{op}");
    let before = stack.seen().await;

    // Stop the witness `palisade up` started.
    let witness: Vec<u32> = common::processes_mentioning(&stack.dir.join("witness/witness.toml"))
        .iter()
        .filter_map(|p| p.split_once(':')?.0.parse().ok())
        .collect();
    assert_eq!(witness.len(), 1, "the witness process: {witness:?}");
    // Paused, not killed (`palisade up` would stop everything): the log gives up on
    // it after its 5-second timeout. Resumed when the test ends, however it ends.
    struct Paused(u32);
    impl Drop for Paused {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let paused = std::process::Command::new("kill")
        .args(["-STOP", &witness[0].to_string()])
        .status()
        .expect("kill");
    assert!(paused.success());
    let _resume = Paused(witness[0]);

    let (status, op) = run().await;
    assert_eq!(status, 503, "{op}");
    assert_eq!(op["status"], "refused", "{op}");
    assert!(
        op["error"]
            .as_str()
            .is_some_and(|e| e.contains("witnesses, so nothing was dispatched")),
        "{op}"
    );
    let intent = op["intent_index"]
        .as_u64()
        .expect("the intent is in the log");
    let result = op["result_index"]
        .as_u64()
        .expect("the result is in the log");
    assert_eq!(result, intent + 1, "{op}");
    // The agent saw nothing.
    assert_eq!(stack.seen().await, before);
    // The next entry goes right after the result: nothing was appended twice. The
    // log answers it 503 too, naming where it is.
    match stack.dispatcher.append("demo", b"{\"probe\":1}").await {
        Err(CallError::Unwitnessed { index, .. }) => assert_eq!(index, result + 1),
        other => panic!("without the witness: {other:?}"),
    }
}

/// Many actions on one instance at once: their intents land in the log in one order
/// and their dispatches reach the agent in another, so the agent has often seen a
/// newer checkpoint than the one a dispatch was proven against. The gateway proves
/// it again against a newer one; every action runs once and is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_on_one_instance_all_run_and_are_each_logged_once() {
    const N: usize = 24;
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let before = stack.seen().await;
    let runs = (0..N).map(|_| {
        gw.run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
    });
    let ops = futures::future::join_all(runs).await;
    let mut logged = std::collections::BTreeSet::new();
    for (status, op) in &ops {
        assert_eq!(*status, 200, "{op}");
        assert_eq!(op["status"], "succeeded", "{op}");
        let intent = op["intent_index"].as_u64().expect("intent logged");
        let result = op["result_index"].as_u64().expect("result logged");
        assert!(result > intent, "{op}");
        assert!(logged.insert(intent) && logged.insert(result), "{op}");
    }
    // 2N entries, no other: nothing was logged twice, nothing is missing.
    let first = *logged.first().expect("entries");
    let last = *logged.last().expect("entries");
    assert_eq!(last - first + 1, 2 * N as u64, "{logged:?}");
    assert!(stack.seen().await > before);
    for index in [first, last] {
        let kind = logged_event(&stack, index).await["kind"].clone();
        assert!(kind == "intent" || kind == "result", "{kind}");
    }
}

/// A flood of refusals neither buries the log nor goes unseen: past the budget
/// (`[refusal_log]`, here 5 per 3 s) each refusal is still answered, but counted, and
/// one summary entry with the count and the operator's pseudonym reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_logged_up_to_a_budget_and_then_as_one_count() {
    let stack = Stack::start();
    let (_gw2, gw) = second_gateway(&stack, "flood", |t| {
        let up = "[refusal_log]\nmax = 100\nper_secs = 60";
        assert!(t.contains(up), "palisade up's budget changed: {t}");
        t.replace(up, "[refusal_log]\nmax = 5\nper_secs = 3")
    });
    let token = gw.dev_token("not-on-call").await;
    let mut logged = Vec::new();
    let mut counted = 0;
    for _ in 0..20 {
        let (status, problem) = gw
            .run(
                &token,
                "demo",
                "etcd.status",
                Some("demo-0"),
                &[],
                TICKET,
                REASON,
            )
            .await;
        assert_eq!(status, 403, "{problem}");
        match problem["log_index"].as_u64() {
            Some(i) => logged.push(i),
            None => {
                let detail = problem["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("not logged individually"), "{problem}");
                counted += 1;
            }
        }
    }
    assert_eq!((logged.len(), counted), (5, 15), "logged {logged:?}");
    for i in &logged {
        assert_logged_refusal(&stack, &serde_json::json!({ "log_index": i }), "authorize").await;
    }
    let actor = logged_event(&stack, logged[0]).await["actor"].clone();
    // The count reaches the log once the period has passed.
    let from = logged.iter().max().copied().unwrap_or(0) + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let summary = loop {
        let (status, page) = stack
            .gateway()
            .call(
                "GET",
                &format!("/v1/tenants/demo/clusters/demo/events?from={from}&limit=100"),
                Some(&stack.tenant_token()),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let found = page["events"].as_array().and_then(|events| {
            events
                .iter()
                .map(|e| e["event"].clone())
                .find(|e| e["action"] == "refusals-not-logged")
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no summary of the unlogged refusals within 30 s: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(summary["kind"], "refusal", "{summary}");
    assert_eq!(summary["stage"], "rate_limit", "{summary}");
    assert_eq!(summary["actor"], actor, "{summary}");
    assert_eq!(summary["reason"], "refusals-not-logged", "{summary}");
    assert_eq!(summary["not_logged"]["count"], 15, "{summary}");
    assert_eq!(summary["status"], 403, "{summary}");
}

/// An on-call feed that cannot be fetched grants nothing: the refusal says the feed
/// is stale (naming no feed), and the metrics say which one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_on_call_feed_grants_nothing_and_says_so() {
    let stack = Stack::start();
    let feed = format!(
        "\n[[ical]]\nschedule = \"pager\"\nurl = \"https://127.0.0.1:{}/pager.ics\"\n\
         \n[[grant]]\nschedule = \"pager\"\nroles = [\"operator\"]\nclusters = [\"*\"]\n",
        dead_port()
    );
    let (_gw2, gw) = second_gateway(&stack, "pager", |t| format!("{t}{feed}"));
    let token = gw.dev_token("paged-engineer").await;
    let (status, problem) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("oncall-feed-stale"), "{problem}");
    assert!(
        !detail.contains("pager"),
        "a feed named to the customer: {problem}"
    );
    assert_logged_refusal(&stack, &problem, "authorize").await;
    let (status, metrics) = gw.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains("palisade_gateway_oncall_feed_stale{schedule=\"pager\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("palisade_gateway_oncall_feed_age_seconds{schedule=\"pager\"} -1"),
        "{text}"
    );
    // The rota's operator, on call through a schedule that is no feed, still acts.
    let op = gw.dev_token(&stack.operator()).await;
    let (status, done) = gw
        .run(
            &op,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{done}");
}

/// An HTTPS client of `url` holding the operator certificate `operator-<name>`.
fn operator_client(stack: &Stack, name: &str) -> reqwest::Client {
    let pki = stack.dir.join("pki");
    let tls = palisade_pki::client_config(
        &pki.join("ca.crt"),
        &pki.join(format!("operator-{name}.crt")),
        &pki.join(format!("operator-{name}.key")),
        &[palisade_pki::Role::Gateway],
    )
    .expect("tls");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client")
}

async fn run_with_certificate(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let body = serde_json::json!({ "instance": "demo-0", "ticket": TICKET, "reason": REASON });
    let resp = client
        .post(format!("{url}/v1/clusters/demo/actions/etcd.status"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Whoever holds the deployment's CA key can mint an `operator` certificate for
/// anyone on call: such certificates authenticate only where `operator_certificates`
/// is on, and only from a CA of `operator_ca`. Every event records how its caller
/// authenticated: the token's issuer, or the certificate's SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_certificates_authenticate_only_when_enabled_and_from_the_operator_ca() {
    let stack = Stack::start();
    let operator = stack.operator();
    let pki = stack.dir.join("pki");
    let issued = palisade_pki::issue(
        &pki,
        palisade_pki::Role::Operator,
        &palisade_pki::CertName::new(&operator).expect("name"),
        &[],
        30,
        false,
    )
    .expect("issue");
    let der = palisade_pki::load_certs(&issued.cert, "certificate").expect("cert");
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(der[0].as_ref()));
    let client = operator_client(&stack, &operator);

    // `palisade up` turns them on for its demo, with its own CA as operator_ca.
    let url = format!("https://127.0.0.1:{}", stack.base);
    let (status, done) = run_with_certificate(&client, &url).await;
    assert_eq!(status, 200, "{done}");
    let intent = logged_event(&stack, done["intent_index"].as_u64().expect("intent")).await;
    assert_eq!(
        intent["actor"]["authn"]["method"], "certificate",
        "{intent}"
    );
    assert_eq!(
        intent["actor"]["authn"]["sha256"],
        fingerprint.as_str(),
        "{intent}"
    );
    let gw = stack.gateway();
    let token = gw.dev_token(&operator).await;
    let (status, done) = gw
        .run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            TICKET,
            REASON,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let intent = logged_event(&stack, done["intent_index"].as_u64().expect("intent")).await;
    assert_eq!(intent["actor"]["authn"]["method"], "oidc", "{intent}");
    assert_eq!(
        intent["actor"]["authn"]["issuer"],
        dev_iss(&stack).as_str(),
        "{intent}"
    );

    // Off (the default): the same certificate of an on-call operator is refused.
    // (Its `[[service]]`, which authenticates by certificate, goes too.)
    let (_off, off) = second_gateway(&stack, "certs-off", |t| {
        t.replace(
            "operator_certificates = true",
            "operator_certificates = false",
        )
        .split("[[service]]")
        .next()
        .unwrap_or_default()
        .to_string()
    });
    let before = authenticate_refusals(&stack).await;
    let (status, problem) = run_with_certificate(&client, &off.url).await;
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("operator_certificates")),
        "{problem}"
    );
    // Answered like any unauthenticated request, and logged in the background.
    assert!(problem.get("log_index").is_none(), "{problem}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while authenticate_refusals(&stack).await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the refused certificate is not in the log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // On, but operator_ca names another CA: the deployment's CA does not issue
    // operator certificates.
    let other = stack.tmp.path().join("operator-ca");
    palisade_pki::init_ca(&other, false).expect("operator CA");
    let other_ca = other.join("ca.crt");
    let (_elsewhere, elsewhere) = second_gateway(&stack, "certs-other-ca", |t| {
        t.lines()
            .map(|l| {
                if l.starts_with("operator_ca = ") {
                    format!("operator_ca = \"{}\"", other_ca.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let (status, problem) = run_with_certificate(&client, &elsewhere.url).await;
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("operator_ca")),
        "{problem}"
    );
}
