//! Claims C1 and C2 at the agent: it is the only door into a control-plane instance,
//! and that door has exactly three routes — execute a dispatch, read the signed
//! result of a dispatch it accepted, report health. No shell, exec, file,
//! log-streaming, port-forward or "run this binary" route exists, and no action
//! returns customer content.
//!
//! The route list is checked twice: in the source (every router and listener of the
//! agent crate) and over the network (a gateway certificate probing paths an attacker
//! would try, with every method).

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::Stack;
use palisade_agent::dispatch::ResultOutcome;
use std::path::{Path, PathBuf};

fn agent_sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let mut out = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read agent sources") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path, text));
            }
        }
    }
    assert!(out.len() >= 8, "agent sources not found");
    out
}

#[test]
fn the_agent_source_declares_exactly_three_routes_and_one_listener() {
    let mut routes = Vec::new();
    let mut listeners = Vec::new();
    for (path, text) in agent_sources() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for needle in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".merge(",
                ".fallback(",
            ] {
                if code.contains(needle) {
                    routes.push(format!("{name}: {}", line.trim()));
                }
            }
            for needle in [
                "TcpListener::bind",
                "UnixListener::bind",
                "UdpSocket::bind",
                "axum::serve(",
            ] {
                if code.contains(needle) {
                    listeners.push(format!("{name}:{}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert_eq!(
        routes,
        [
            "server.rs: .route(DISPATCH_PATH, post(dispatch))",
            "server.rs: .route(RESULTS_PATH, get(result_of))",
            "server.rs: .route(HEALTH_PATH, get(health))",
        ],
        "the agent's routes changed: only dispatch, the signed results of accepted dispatches, and health may exist"
    );
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    assert!(listeners[0].starts_with("server.rs:"), "{listeners:?}");
    assert_eq!(palisade_agent::dispatch::DISPATCH_PATH, "/v1/dispatch");
    assert_eq!(palisade_agent::dispatch::HEALTH_PATH, "/healthz");
    assert_eq!(
        palisade_agent::dispatch::RESULTS_PATH,
        "/v1/results/{event_id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_dispatch_results_and_health_answers_over_the_network() {
    let stack = Stack::start();
    let pki = stack.dir.join("pki");
    let tls = palisade_pki::client_config(
        &pki.join("ca.crt"),
        &pki.join("gateway-gateway.crt"),
        &pki.join("gateway-gateway.key"),
        &[palisade_pki::Role::Agent],
    )
    .expect("gateway tls");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let paths = [
        "/",
        "/exec",
        "/v1/exec",
        "/shell",
        "/v1/shell",
        "/run",
        "/v1/run",
        "/v1/command",
        "/files/etc/passwd",
        "/v1/files",
        "/logs",
        "/v1/logs",
        "/v1/logs/etcd",
        "/portforward",
        "/port-forward",
        "/v1/portforward",
        "/proxy",
        "/v1/proxy",
        "/debug/pprof",
        "/metrics",
        "/upload",
        "/download",
        "/v2/dispatch",
        "/V1/DISPATCH",
        "/v1/dispatch/extra",
        "/v1/dispatch/../exec",
        "/healthz/x",
        "/v1/healthz",
        "/api/v1/namespaces/x/pods/y/exec",
        "/api/v1/nodes/n/proxy",
        "/v1/etcd/get",
        "/v1/etcd/snapshot",
        "/v1/backup",
        "/v1/component/exec",
        "/.well-known/openid-configuration",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let mut answered = Vec::new();
    for path in paths {
        for method in methods {
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let resp = client
                .request(m, format!("{}{path}", stack.agent_url))
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            if status != 404 && status != 405 {
                answered.push(format!("{method} {path} -> {status}"));
            }
        }
    }
    assert!(
        answered.is_empty(),
        "routes beyond dispatch, results and health: {answered:?}"
    );
    // The two routes there are: health answers GET only; dispatch POST only (and
    // refuses an empty body without running anything).
    for method in ["POST", "PUT", "DELETE"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let s = client
            .request(m, format!("{}/healthz", stack.agent_url))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(s.as_u16(), 405, "{method} /healthz");
    }
    let s = client
        .get(format!("{}/v1/dispatch", stack.agent_url))
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(s.as_u16(), 405);
    let s = client
        .post(format!("{}/v1/dispatch", stack.agent_url))
        .body("{}")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(s.as_u16(), 400, "a malformed dispatch is refused");
    // The results route reads only: GET of a signed result by event id; anything
    // that is not an event id is refused, and an id no dispatch was accepted for is
    // unknown.
    let results = format!(
        "{}/v1/results/0123456789abcdef0123456789abcdef",
        stack.agent_url
    );
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let s = client
            .request(m, &results)
            .body("{}")
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(s.as_u16(), 405, "{method} /v1/results/<id>");
    }
    let resp = client.get(&results).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 404);
    let body = resp.text().await.expect("body");
    assert!(body.contains("unknown-dispatch"), "{body}");
    for bad in [
        "abc",
        "etc%2Fpasswd",
        "x;id",
        "0123456789ABCDEF0123456789ABCDEF",
    ] {
        let s = client
            .get(format!("{}/v1/results/{bad}", stack.agent_url))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(s.as_u16(), 400, "GET /v1/results/{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_action_returns_customer_content() {
    let stack = Stack::start();
    // What kube-apiserver would store: Secrets and ConfigMaps, with recognisable
    // values and keys.
    let marker = "c2-customer-value-6f1e";
    stack.etcd.put("/registry/secrets/prod/db-password", marker);
    stack.etcd.put("/registry/configmaps/prod/app", marker);
    stack
        .etcd
        .put(&format!("/registry/secrets/prod/{marker}"), "x");
    let actions: &[(&str, &[(&str, &str)])] = &[
        ("etcd.status", &[]),
        ("etcd.members", &[]),
        ("etcd.alarms", &[]),
        ("etcd.health", &[]),
        ("etcd.defragment", &[]),
        ("etcd.alarm-disarm", &[]),
        ("instance.resources", &[]),
        ("certs.expiry", &[]),
        ("component.status", &[]),
    ];
    for (action, params) in actions {
        let done = stack.execute(action, params).await.expect("dispatched");
        assert_eq!(
            done.result.outcome,
            ResultOutcome::Succeeded,
            "{action}: {:?}",
            done.result.error
        );
        let text = serde_json::to_string(&done.result).expect("json");
        assert!(
            !text.contains(marker),
            "{action} returned customer content: {text}"
        );
        assert!(
            !text.contains("/registry/"),
            "{action} returned etcd keys: {text}"
        );
        assert!(
            !text.contains("PRIVATE KEY"),
            "{action} returned key material"
        );
    }
    // Components' output is never returned: etcd logs to a file only the agent
    // holds, and no action reads it.
    let status = stack
        .execute("component.status", &[("component", "etcd")])
        .await
        .expect("status");
    let text = serde_json::to_string(&status.result).expect("json");
    for leaked in ["listening", "raft", "--data-dir", "127.0.0.1:"] {
        assert!(
            !text.contains(leaked),
            "component output or arguments leaked: {text}"
        );
    }
}
