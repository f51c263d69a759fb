//! `palisade op` against the stack `palisade up` runs: the commands a newcomer types
//! after `ready`, their output and exit codes, and errors that say what to do next.
//! Also: operators may authenticate with a certificate of role operator instead of a
//! token — and are then held to exactly the same on-call rule.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::palisade;
use harness::Stack;
use palisade_pki::{CertName, Role};
use std::process::Output;

fn op(stack: &Stack, args: &[&str]) -> Output {
    palisade()
        .arg("op")
        .arg("--credentials")
        .arg(stack.dir.join("op/credentials.json"))
        .args(args)
        .output()
        .expect("run palisade op")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_commands_after_up_work_and_explain_refusals() {
    let stack = Stack::start();
    let who = op(&stack, &["whoami"]);
    assert!(who.status.success(), "{}", text(&who));
    let t = text(&who);
    assert!(
        t.contains(&stack.operator()) && t.contains("grants:") && t.contains("demo"),
        "{t}"
    );

    let actions = op(&stack, &["actions", "--cluster", "demo"]);
    assert!(actions.status.success(), "{}", text(&actions));
    assert!(text(&actions).contains("etcd.status"), "{}", text(&actions));

    // The command `palisade up` suggests.
    let run = op(
        &stack,
        &[
            "run",
            "etcd.status",
            "--cluster",
            "demo",
            "--ticket",
            "DEMO-1",
            "--reason",
            "first look",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let t = text(&run);
    assert!(t.contains("succeeded") && t.contains("version: 3."), "{t}");

    let json = op(
        &stack,
        &[
            "run",
            "etcd.members",
            "--cluster",
            "demo",
            "--ticket",
            "DEMO-1",
            "--reason",
            "membership check",
            "-o",
            "json",
        ],
    );
    assert!(json.status.success(), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json output");
    assert_eq!(v["status"], "succeeded");
    let id = v["id"].as_str().expect("id").to_string();

    let ops = op(&stack, &["ops"]);
    assert!(
        ops.status.success() && text(&ops).contains(&id),
        "{}",
        text(&ops)
    );
    let show = op(&stack, &["show", &id]);
    assert!(
        show.status.success() && text(&show).contains("etcd.members"),
        "{}",
        text(&show)
    );

    // A refused request fails, says why, where it was logged, and what to do.
    let bad = op(
        &stack,
        &[
            "run",
            "etcd.status",
            "--cluster",
            "demo",
            "--ticket",
            "see chat",
            "--reason",
            "first look",
        ],
    );
    assert!(!bad.status.success());
    let t = text(&bad);
    assert!(
        t.contains("invalid request")
            && t.contains("recorded in the cluster's log")
            && t.contains("next:"),
        "{t}"
    );

    // Someone else, logged in with the development issuer, is not on call.
    let creds = stack.tmp.path().join("mallory.json");
    let login = palisade()
        .args(["op", "--credentials"])
        .arg(&creds)
        .args([
            "login",
            "--dev",
            "mallory",
            "--gateway",
            &format!("https://127.0.0.1:{}", stack.base),
            "--ca",
        ])
        .arg(stack.dir.join("pki/ca.crt"))
        .output()
        .expect("login");
    assert!(login.status.success(), "{}", text(&login));
    let run = palisade()
        .args(["op", "--credentials"])
        .arg(&creds)
        .args([
            "run",
            "etcd.status",
            "--cluster",
            "demo",
            "--ticket",
            "DEMO-2",
            "--reason",
            "just looking around",
        ])
        .output()
        .expect("run");
    assert!(!run.status.success());
    let t = text(&run);
    assert!(t.contains("not on call") && t.contains("next:"), "{t}");
    // Without any credentials file, the message says how to get one.
    let none = palisade()
        .args(["op", "--credentials"])
        .arg(stack.tmp.path().join("missing.json"))
        .arg("whoami")
        .output()
        .expect("run");
    assert!(!none.status.success());
    assert!(text(&none).contains("palisade op login"), "{}", text(&none));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_authenticates_under_the_same_on_call_rule() {
    let stack = Stack::start();
    let pki = stack.dir.join("pki");
    for name in [stack.operator(), "mallory".to_string()] {
        palisade_pki::issue(
            &pki,
            Role::Operator,
            &CertName::new(&name).expect("name"),
            &[],
            30,
            false,
        )
        .expect("issue");
    }
    let client = |name: &str| {
        let tls = palisade_pki::client_config(
            &pki.join("ca.crt"),
            &pki.join(format!("operator-{name}.crt")),
            &pki.join(format!("operator-{name}.key")),
            &[Role::Gateway],
        )
        .expect("tls");
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .expect("client")
    };
    let url = format!("https://127.0.0.1:{}", stack.base);
    let body = serde_json::json!({"ticket": "INC-5", "reason": "checking etcd status"});
    let resp = client(&stack.operator())
        .post(format!("{url}/v1/clusters/demo/actions/etcd.status"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value =
        serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(v["status"], "succeeded", "{v}");
    let resp = client("mallory")
        .post(format!("{url}/v1/clusters/demo/actions/etcd.status"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.status().as_u16(),
        403,
        "a certificate is no way around on-call"
    );
}

/// `palisade op run` follows a running operation for `--wait-secs`, then prints what
/// it knows, says how to follow it, and exits 3; `palisade op show` picks it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_run_stops_following_at_its_deadline_and_says_how_to_go_on() {
    let stack = Stack::start();
    // The gateway answers 202 after one second; a backup of 40 MiB takes longer.
    let config = stack.dir.join("gateway/gateway.toml");
    let text_before = std::fs::read_to_string(&config).expect("gateway.toml");
    let with_wait = text_before.replacen("\n[", "\nwait_secs = 1\n\n[", 1);
    std::fs::write(&config, with_wait).expect("write gateway.toml");
    let gateway = harness_pid(&stack.dir, "gateway serve");
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &gateway.to_string()])
        .status()
        .expect("kill")
        .success());
    // `palisade up` starts it again with the new setting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while harness_pid_opt(&stack.dir, "gateway serve").is_none_or(|p| p == gateway)
        || std::net::TcpStream::connect(("127.0.0.1", stack.base)).is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stack.etcd.fill(40);
    let run = op(
        &stack,
        &[
            "run",
            "etcd.backup",
            "--cluster",
            "demo",
            "--ticket",
            "DEMO-2",
            "--reason",
            "backup before the maintenance window",
            "--wait-secs",
            "1",
        ],
    );
    let t = text(&run);
    assert_eq!(run.status.code(), Some(3), "{t}");
    assert!(
        t.contains("still running after 1 s") && t.contains("palisade op show "),
        "{t}"
    );
    let id = t
        .split("palisade op show ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the operation id")
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let show = op(&stack, &["show", &id]);
        if show.status.success() {
            assert!(text(&show).contains("succeeded"), "{}", text(&show));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", text(&show));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn harness_pid_opt(dir: &std::path::Path, needle: &str) -> Option<i32> {
    common::processes_mentioning(dir)
        .into_iter()
        .filter(|l| l.contains(needle))
        .find_map(|l| l.split(':').next().and_then(|p| p.parse().ok()))
}

fn harness_pid(dir: &std::path::Path, needle: &str) -> i32 {
    harness_pid_opt(dir, needle).expect("the process")
}
