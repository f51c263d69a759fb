//! The agent's Kubernetes API actions against a recording kube-apiserver stand-in over
//! real TLS (claims C3 and C6): which requests are sent, with which credential and
//! impersonation, what the outputs keep and drop, and that the guard stops every
//! request to customer content before it leaves the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../agent/kube_support/mod.rs"]
mod kube_support;

use kube_support::{
    status_json, token_settings, webhook_config_json, ApiServer, Canned, Pki, LEAKS,
};
use palisade_agent::config::KubeSettings;
use palisade_agent::kube::{
    check_request, Impersonation, KubeClient, KubeError, NodeOutput, WebhookBypassOutput,
    WebhookKind, WebhookSummary, MAX_NODES, MAX_REASON_BYTES,
};
use palisade_core::{EventId, OperatorId};
use palisade_pki::Role;

const EVENT_ID: &str = "0123456789abcdef0123456789abcdef";
const LOG_ENTRY: &str = "palisade.test/clusters/c1#42";

fn operator() -> Impersonation {
    Impersonation {
        pseudonym: OperatorId::parse("op-7f3a9c").unwrap(),
        event_id: EventId::parse(EVENT_ID).unwrap(),
        log_entry: LOG_ENTRY.to_string(),
    }
}

fn client(server: &ApiServer, pki: &Pki) -> KubeClient {
    KubeClient::new(&token_settings(&server.url(), &pki.ca, &pki.token_file)).unwrap()
}

/// Asserts the four impersonation headers, exactly and alone.
fn assert_impersonates_operator(r: &kube_support::Recorded) {
    assert_eq!(
        r.header("impersonate-user"),
        Some("palisade:operator:op-7f3a9c")
    );
    assert_eq!(r.header("impersonate-group"), Some("palisade:operators"));
    assert_eq!(
        r.header("impersonate-extra-palisade.dev%2fevent-id"),
        Some(EVENT_ID)
    );
    assert_eq!(
        r.header("impersonate-extra-palisade.dev%2flog-entry"),
        Some(LOG_ENTRY)
    );
    let all = r.headers_with_prefix("impersonate-");
    assert_eq!(all.len(), 4, "{all:?}");
    // What Kubernetes makes of the extra header names: lower-cased, percent-decoded.
    let keys: Vec<String> = r
        .headers_with_prefix("impersonate-extra-")
        .iter()
        .map(|(n, _)| n["impersonate-extra-".len()..].replace("%2f", "/"))
        .collect();
    assert_eq!(keys, ["palisade.dev/event-id", "palisade.dev/log-entry"]);
}

#[tokio::test]
async fn nodes_lists_names_and_conditions_only() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false), ("node-b", true)]).await;
    let out = client(&server, &pki).nodes(&operator()).await.unwrap();

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/api/v1/nodes")
    );
    assert_eq!(r.query, None);
    assert!(r.body.is_empty());
    assert_eq!(r.header("authorization"), Some("Bearer token-one"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_impersonates_operator(r);

    assert!(!out.truncated);
    let names: Vec<&str> = out.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    let b = &out.nodes[1];
    assert!(b.unschedulable);
    assert!(!out.nodes[0].unschedulable);
    assert_eq!(b.kubelet_version, "v1.31.2");
    assert_eq!(b.ready, Some(true));
    let kinds: Vec<&str> = b.conditions.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["MemoryPressure", "DiskPressure", "Ready"]);
    assert_eq!(b.conditions[2].reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        b.conditions[2].last_transition_time.as_deref(),
        Some("2025-05-30T09:01:00Z")
    );

    // Exactly the documented fields, and nothing of labels, annotations, addresses,
    // images, taints, provider ids or condition messages.
    let json = serde_json::to_string(&out).unwrap();
    for leak in LEAKS {
        assert!(!json.contains(leak), "{leak:?} leaked into {json}");
    }
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut keys: Vec<&String> = value["nodes"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "conditions",
            "kubelet_version",
            "name",
            "ready",
            "unschedulable"
        ]
    );
    let mut ckeys: Vec<&String> = value["nodes"][0]["conditions"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    ckeys.sort();
    assert_eq!(ckeys, ["last_transition_time", "reason", "status", "type"]);
    // The output round-trips through its own schema type.
    let back: palisade_agent::kube::NodesOutput = serde_json::from_str(&json).unwrap();
    assert_eq!(back, out);
}

#[tokio::test]
async fn token_file_is_read_again_for_every_request() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let kube = client(&server, &pki);
    kube.nodes(&operator()).await.unwrap();
    // A projected token rotates on disk; the next request must carry the new one.
    std::fs::write(&pki.token_file, "token-two").unwrap();
    kube.nodes(&operator()).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer token-one"));
    assert_eq!(reqs[1].header("authorization"), Some("Bearer token-two"));
    // The client's Debug output names the file, never the token.
    let debug = format!("{kube:?}");
    assert!(!debug.contains("token-two"), "{debug}");
}

#[tokio::test]
async fn cordon_reads_the_node_then_sends_kubectls_patch() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let out = client(&server, &pki)
        .set_unschedulable(&operator(), "node-a", true)
        .await
        .unwrap();
    assert_eq!(
        out,
        NodeOutput {
            node: "node-a".into(),
            unschedulable: true,
            changed: true
        }
    );
    assert_eq!(server.unschedulable("node-a"), Some(true));

    let reqs = server.requests();
    let sent: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("GET", "/api/v1/nodes/node-a"),
            ("PATCH", "/api/v1/nodes/node-a")
        ]
    );
    let patch = &reqs[1];
    assert_eq!(patch.query, None);
    assert_eq!(
        patch.header("content-type"),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(patch.body, br#"{"spec":{"unschedulable":true}}"#);
    for r in &reqs {
        assert_eq!(r.header("authorization"), Some("Bearer token-one"));
        assert_impersonates_operator(r);
    }
}

#[tokio::test]
async fn uncordon_sends_kubectls_patch_that_removes_the_field() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-b", true)]).await;
    let out = client(&server, &pki)
        .set_unschedulable(&operator(), "node-b", false)
        .await
        .unwrap();
    assert!(out.changed);
    assert!(!out.unschedulable);
    assert_eq!(server.unschedulable("node-b"), Some(false));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].method, "PATCH");
    assert_eq!(reqs[1].body, br#"{"spec":{"unschedulable":null}}"#);
    assert_impersonates_operator(&reqs[1]);
}

#[tokio::test]
async fn node_already_in_the_wanted_state_is_not_patched() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("cordoned", true), ("open", false)]).await;
    let kube = client(&server, &pki);
    let a = kube
        .set_unschedulable(&operator(), "cordoned", true)
        .await
        .unwrap();
    let b = kube
        .set_unschedulable(&operator(), "open", false)
        .await
        .unwrap();
    assert!(!a.changed && a.unschedulable);
    assert!(!b.changed && !b.unschedulable);
    let methods: Vec<String> = server.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "GET"]);
}

/// Paths to customer content or outside the allowlist, and the resource each refusal
/// must name.
const DENIED: &[(&str, &str)] = &[
    ("/api/v1/secrets", "secrets"),
    ("/api/v1/namespaces/x/secrets/y", "secrets"),
    ("/api/v1/watch/namespaces/x/secrets", "secrets"),
    ("/api/v1/configmaps", "configmaps"),
    (
        "/api/v1/namespaces/kube-system/configmaps/cfg",
        "configmaps",
    ),
    ("/api/v1/namespaces/x/pods/p/exec", "pods/exec"),
    ("/api/v1/namespaces/x/pods/p/attach", "pods/attach"),
    ("/api/v1/namespaces/x/pods/p/log", "pods/log"),
    (
        "/api/v1/namespaces/x/pods/p/portforward",
        "pods/portforward",
    ),
    ("/api/v1/namespaces/x/pods/p/proxy", "pods/proxy"),
    ("/api/v1/nodes/node-a/proxy", "nodes/proxy"),
    (
        "/api/v1/nodes/node-a/proxy/containerLogs/x/p/c",
        "nodes/proxy",
    ),
    ("/api/v1/namespaces/x/services/s/proxy", "services/proxy"),
    (
        "/api/v1/namespaces/x/serviceaccounts/sa/token",
        "serviceaccounts/token",
    ),
    ("/apis/example.com/v1/widgets", "widgets.example.com"),
    (
        "/apis/example.com/v1/namespaces/x/widgets/w",
        "widgets.example.com",
    ),
    ("/apis/apps/v1/deployments", "deployments.apps"),
    ("/apis/example.com", "*.example.com"),
    // Traversal and encoding tricks: named by what they would reach.
    ("/api/v1/nodes/../secrets", "secrets"),
    (
        "/api/v1/nodes/node-a/../../namespaces/x/secrets/y",
        "secrets",
    ),
    ("/api/v1/nodes/%2e%2e/secrets", "secrets"),
    ("/api/v1/nodes/%2E%2E/configmaps", "configmaps"),
    ("/api/v1/nodes/%252e%252e/secrets", "secrets"),
    ("/api/v1/nodes%2f..%2fsecrets", "secrets"),
    ("/api/v1/nodes/./node-a", "nodes"),
    (
        "/api/v1/nodes/../../../apis/example.com/v1/widgets",
        "widgets.example.com",
    ),
    // Query strings, fragments, escapes, slashes, case.
    ("/api/v1/nodes?watch=true", "nodes"),
    ("/api/v1/nodes?fieldSelector=metadata.name%3Dx", "nodes"),
    ("/api/v1/nodes/node-a?dryRun=All", "nodes"),
    ("/api/v1/nodes#frag", "nodes"),
    ("/api/v1/nodes/", "nodes"),
    ("/api/v1/nodes/node-a/", "nodes"),
    ("/api/v1//nodes", "nodes"),
    ("/api/v1/nodes/node%2da", "nodes"),
    ("/api/v1/nodes/Node-A", "nodes"),
    ("/api/v1/nodes/-node", "nodes"),
    ("/api/v1/nodes/node_a", "nodes"),
    ("/api/v1/nodes/node-a/status", "nodes/status"),
    ("/api/v1/namespaces", "namespaces"),
    ("/api/v1/namespaces/x/pods", "pods"),
    ("/logs", "non-resource URL /logs"),
    ("/version", "non-resource URL /version"),
    ("api/v1/nodes", "nodes"),
    // The metrics: GET of exactly `/metrics` only.
    ("/metrics?format=json", "non-resource URL /metrics"),
    ("/metrics/", "non-resource URL /metrics"),
    ("/metrics/../api/v1/secrets", "secrets"),
    ("/metrics/cadvisor", "non-resource URL /metrics/cadvisor"),
    // Of the admission group, only webhook configurations, only v1, no subresource.
    (
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        "validatingadmissionpolicies.admissionregistration.k8s.io",
    ),
    (
        "/apis/admissionregistration.k8s.io/v1beta1/validatingwebhookconfigurations",
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
    ),
    (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mesh/status",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    ),
    (
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/../../../../api/v1/secrets",
        "secrets",
    ),
];

#[test]
fn check_request_refuses_content_and_everything_off_the_allowlist() {
    for (path, resource) in DENIED {
        for method in ["GET", "PATCH", "POST", "PUT", "DELETE"] {
            match check_request(method, path) {
                Err(KubeError::Denied { resource: r, .. }) => {
                    assert_eq!(&r, resource, "{method} {path}")
                }
                other => panic!("{method} {path} was not refused: {other:?}"),
            }
        }
    }
    let long = format!("/api/v1/nodes/{}", "a".repeat(254));
    assert!(check_request("GET", &long).is_err());
    // The refusal says what and why.
    let msg = check_request("GET", "/api/v1/nodes/../secrets")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("secrets"), "{msg}");
    assert!(msg.contains("C3"), "{msg}");
}

#[test]
fn check_request_allows_exactly_the_four_requests() {
    assert!(check_request("GET", "/api/v1/nodes").is_ok());
    assert!(check_request("GET", "/metrics").is_ok());
    for method in ["PATCH", "POST", "PUT", "DELETE"] {
        assert!(
            check_request(method, "/metrics").is_err(),
            "{method} /metrics"
        );
    }
    for kind in ["validating", "mutating"] {
        let list = format!("/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations");
        let one = format!("{list}/payments-policy");
        assert!(check_request("GET", &list).is_ok(), "{list}");
        assert!(check_request("GET", &one).is_ok(), "{one}");
        assert!(check_request("PATCH", &one).is_ok(), "{one}");
        for method in ["POST", "PUT", "DELETE"] {
            assert!(check_request(method, &one).is_err(), "{method} {one}");
            assert!(check_request(method, &list).is_err(), "{method} {list}");
        }
        assert!(check_request("PATCH", &list).is_err(), "PATCH {list}");
    }
    for name in [
        "node-a",
        "ip-10-0-3-17.eu-west-1.compute.internal",
        &"a".repeat(253),
    ] {
        let path = format!("/api/v1/nodes/{name}");
        assert!(check_request("GET", &path).is_ok(), "{path}");
        assert!(check_request("PATCH", &path).is_ok(), "{path}");
        for method in ["POST", "PUT", "DELETE", "get", "patch", "OPTIONS", "HEAD"] {
            assert!(check_request(method, &path).is_err(), "{method} {path}");
        }
    }
    for method in ["PATCH", "POST", "DELETE", "PUT"] {
        assert!(check_request(method, "/api/v1/nodes").is_err(), "{method}");
    }
}

/// Node names that smuggle a different path: the only operator input in a request.
const SMUGGLED_NODES: &[&str] = &[
    "../secrets",
    "../namespaces/x/secrets/y",
    "../configmaps",
    "../namespaces/x/pods/p/exec",
    "../namespaces/x/pods/p/attach",
    "../namespaces/x/pods/p/log",
    "../namespaces/x/pods/p/portforward",
    "node-a/proxy",
    "../namespaces/x/services/s/proxy",
    "../../../apis/example.com/v1/widgets",
    "%2e%2e/secrets",
    "..%2fsecrets",
    "node-a?watch=1",
    "node-a#x",
    "node-a/",
    "",
    "Node-A",
    "node a",
];

#[tokio::test]
async fn refused_requests_never_reach_the_apiserver() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let kube = client(&server, &pki);
    for node in SMUGGLED_NODES {
        for wanted in [true, false] {
            match kube.set_unschedulable(&operator(), node, wanted).await {
                Err(KubeError::Denied { .. }) => {}
                other => panic!("node {node:?} was not refused: {other:?}"),
            }
        }
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // The server was reachable all along.
    kube.nodes(&operator()).await.unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn apiserver_errors_are_clear_and_never_echo_the_body() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let kube = client(&server, &pki);
    let cases = [
        (403, "Forbidden", "application/json", "forbidden"),
        (404, "NotFound", "application/json", "no such node"),
        (500, "InternalError", "application/json", "try again later"),
    ];
    for (code, reason, content_type, hint) in cases {
        server.answer_always(Canned {
            status: code,
            content_type,
            body: status_json(
                code,
                reason,
                "nodes \"node-a\" is forbidden: BODY-MARKER secret data from the server",
            ),
            location: None,
        });
        for result in [
            kube.nodes(&operator()).await.map(|_| ()),
            kube.set_unschedulable(&operator(), "node-a", true)
                .await
                .map(|_| ()),
        ] {
            let err = result.unwrap_err();
            match &err {
                KubeError::Status { code: c, reason: r } => {
                    assert_eq!(*c, code);
                    assert_eq!(r.as_deref(), Some(reason));
                }
                other => panic!("expected a status error, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&code.to_string()), "{msg}");
            assert!(msg.contains(hint), "{msg}");
            assert!(!msg.contains("MARKER"), "{msg}");
        }
    }
    // A body that is not a Status object gives no reason at all.
    server.answer_always(Canned {
        status: 500,
        content_type: "text/plain",
        body: "panic: BODY-MARKER goroutine dump".into(),
        location: None,
    });
    let err = kube.nodes(&operator()).await.unwrap_err();
    assert!(
        matches!(
            err,
            KubeError::Status {
                code: 500,
                reason: None
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("MARKER"));
    // A reason field stuffed with text is cut to a bounded word.
    server.answer_always(Canned {
        status: 403,
        content_type: "application/json",
        body: status_json(403, &format!("Forbidden {}", "X".repeat(500)), "m"),
        location: None,
    });
    match kube.nodes(&operator()).await.unwrap_err() {
        KubeError::Status {
            reason: Some(r), ..
        } => {
            assert!(r.len() <= 64 && r.starts_with("Forbidden"), "{r}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    server.answer_always(Canned {
        status: 307,
        content_type: "text/plain",
        body: String::new(),
        location: Some("/api/v1/namespaces/x/secrets/y".into()),
    });
    let err = client(&server, &pki).nodes(&operator()).await.unwrap_err();
    assert!(
        matches!(err, KubeError::Status { code: 307, .. }),
        "{err:?}"
    );
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/v1/nodes"]);
}

#[tokio::test]
async fn a_server_not_signed_by_the_configured_ca_is_refused() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let kube = KubeClient::new(&token_settings(
        &server.url(),
        &pki.other_ca,
        &pki.token_file,
    ))
    .unwrap();
    let err = kube.nodes(&operator()).await.unwrap_err();
    match &err {
        KubeError::Transport(m) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_name_the_certificate_does_not_cover_is_refused() {
    let pki = Pki::new();
    // Reachable (all of 127/8 is loopback) but not in the certificate, which names
    // kube-apiserver, localhost, 127.0.0.1 and ::1.
    let server = ApiServer::start_on(&pki, "127.0.0.2", &[("node-a", false)]).await;
    let url = format!("https://127.0.0.2:{}", server.addr.port());
    let kube = KubeClient::new(&token_settings(&url, &pki.ca, &pki.token_file)).unwrap();
    match kube.nodes(&operator()).await.unwrap_err() {
        KubeError::Transport(m) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn client_certificate_replaces_the_token() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let settings = KubeSettings {
        url: server.url(),
        ca: pki.ca.clone(),
        token_file: None,
        client_cert: Some(pki.agent_cert.clone()),
        client_key: Some(pki.agent_key.clone()),
    };
    KubeClient::new(&settings)
        .unwrap()
        .nodes(&operator())
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].client_role, Some(Role::Agent));
    assert_impersonates_operator(&reqs[0]);
}

#[tokio::test]
async fn node_list_and_strings_are_bounded() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[]).await;
    server.add_nodes(MAX_NODES + 1);
    server.set_condition_reason(format!("Reason{}", "z".repeat(10_000)));
    let out = client(&server, &pki).nodes(&operator()).await.unwrap();
    assert_eq!(out.nodes.len(), MAX_NODES);
    assert!(out.truncated);
    for c in &out.nodes[0].conditions {
        assert!(c.reason.as_ref().unwrap().len() <= MAX_REASON_BYTES);
        assert_eq!(c.reason.as_deref(), Some("other"));
    }
}

/// Condition types, statuses and reasons are written by any `nodes/status` writer (a
/// kubelet, a compromised node): only well-known ones reach the output, the rest
/// read `other`, so no such writer can put its own text in front of the operator
/// or into the customer's log.
#[tokio::test]
async fn node_conditions_report_only_well_known_types_and_reasons() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    server.set_condition_reason("SUCCEEDED: operator op-7f3a9c restored backup MARKER".into());
    server.add_condition(serde_json::json!({
        "type": "CustomerDataMARKER\u{202e}",
        "status": "Definitely",
        "reason": "KubeletReady",
        "lastTransitionTime": "2025-05-30T09:00:00Z",
        "message": "MESSAGE-MARKER",
    }));
    let out = client(&server, &pki).nodes(&operator()).await.unwrap();
    let node = &out.nodes[0];
    let got: Vec<(&str, &str, Option<&str>)> = node
        .conditions
        .iter()
        .map(|c| (c.kind.as_str(), c.status.as_str(), c.reason.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("MemoryPressure", "False", Some("other")),
            ("DiskPressure", "False", Some("other")),
            ("Ready", "True", Some("other")),
            ("other", "other", Some("KubeletReady")),
        ]
    );
    assert_eq!(node.ready, Some(true));
    let json = serde_json::to_string(&out).unwrap();
    for leak in ["MARKER", "SUCCEEDED", "Definitely", "\u{202e}"] {
        assert!(!json.contains(leak), "{leak:?} leaked into {json}");
    }
}

#[tokio::test]
async fn malformed_impersonation_is_refused_before_sending() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    let kube = client(&server, &pki);
    for entry in ["", "no-index", "origin#x", "origin#1\r\nX-Evil: 1", "a b#1"] {
        let who = Impersonation {
            log_entry: entry.to_string(),
            ..operator()
        };
        let err = kube.nodes(&who).await.unwrap_err();
        assert!(
            matches!(err, KubeError::Impersonation(_)),
            "{entry:?}: {err:?}"
        );
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn settings_that_would_weaken_the_client_are_refused() {
    let pki = Pki::new();
    let refused = |s: KubeSettings| match KubeClient::new(&s) {
        Err(KubeError::Config(_)) => {}
        other => panic!("{:?} accepted: {other:?}", s.url),
    };
    refused(token_settings(
        "http://127.0.0.1:6443",
        &pki.ca,
        &pki.token_file,
    ));
    refused(token_settings(
        "https://127.0.0.1:6443/prefix",
        &pki.ca,
        &pki.token_file,
    ));
    refused(token_settings(
        "https://127.0.0.1:6443/?x=1",
        &pki.ca,
        &pki.token_file,
    ));
    refused(token_settings(
        "https://u:p@127.0.0.1:6443",
        &pki.ca,
        &pki.token_file,
    ));
    refused(token_settings(
        "https://127.0.0.1:6443",
        &pki.dir.join("missing.crt"),
        &pki.token_file,
    ));
    let mut both = token_settings("https://127.0.0.1:6443", &pki.ca, &pki.token_file);
    both.client_cert = Some(pki.agent_cert.clone());
    both.client_key = Some(pki.agent_key.clone());
    refused(both);
    let mut none = token_settings("https://127.0.0.1:6443", &pki.ca, &pki.token_file);
    none.token_file = None;
    refused(none);
}

#[tokio::test]
async fn an_empty_token_file_is_a_config_error_that_sends_nothing() {
    let pki = Pki::new();
    let server = ApiServer::start(&pki, &[("node-a", false)]).await;
    std::fs::write(&pki.token_file, "  \n").unwrap();
    let err = client(&server, &pki).nodes(&operator()).await.unwrap_err();
    assert!(matches!(err, KubeError::Config(_)), "{err:?}");
    assert!(server.requests().is_empty());
}

const WEBHOOK_METRICS: &str = "# TYPE apiserver_admission_webhook_rejection_count counter
apiserver_admission_webhook_rejection_count{error_type=\"no_error\",name=\"policy.payments.example.com\",operation=\"CREATE\",rejection_code=\"403\",type=\"validating\"} 17
apiserver_admission_webhook_rejection_count{error_type=\"calling_webhook_error\",name=\"policy.payments.example.com\",operation=\"CREATE\",rejection_code=\"0\",type=\"validating\"} 230
apiserver_admission_webhook_rejection_count{error_type=\"calling_webhook_error\",name=\"policy.payments.example.com\",operation=\"UPDATE\",rejection_code=\"0\",type=\"validating\"} 3
apiserver_admission_webhook_rejection_count{error_type=\"calling_webhook_error\",name=\"inject.mesh.example.com\",operation=\"CREATE\",rejection_code=\"0\",type=\"admit\"} 4
";

async fn webhook_server(pki: &Pki) -> ApiServer {
    let server = ApiServer::start(pki, &[]).await;
    server.add_webhook_config(
        "validatingwebhookconfigurations",
        webhook_config_json(
            "Validating",
            "payments-policy",
            &[
                (
                    "policy.payments.example.com",
                    Some("Fail"),
                    "gatekeeper.payments",
                ),
                (
                    "audit.payments.example.com",
                    None,
                    "https://audit.example.net:8443/MARKER",
                ),
            ],
        ),
    );
    server.add_webhook_config(
        "mutatingwebhookconfigurations",
        webhook_config_json(
            "Mutating",
            "mesh-injector",
            &[("inject.mesh.example.com", Some("Ignore"), "injector.mesh")],
        ),
    );
    server
}

fn summary(
    kind: WebhookKind,
    configuration: &str,
    name: &str,
    policy: &str,
    host: &str,
    counts: Option<(u64, u64)>,
) -> WebhookSummary {
    WebhookSummary {
        kind,
        configuration: configuration.into(),
        name: name.into(),
        failure_policy: policy.into(),
        timeout_seconds: 5,
        target_host: host.into(),
        rejections: counts.map(|c| c.0),
        call_errors: counts.map(|c| c.1),
    }
}

#[tokio::test]
async fn webhooks_lists_names_policies_hosts_and_counts_and_nothing_else() {
    use WebhookKind::{Mutating, Validating};
    let pki = Pki::new();
    let server = webhook_server(&pki).await;
    server.set_metrics(WEBHOOK_METRICS);
    let out = client(&server, &pki).webhooks(&operator()).await.unwrap();
    assert_eq!(
        out.webhooks,
        [
            summary(
                Validating,
                "payments-policy",
                "policy.payments.example.com",
                "Fail",
                "gatekeeper.payments.svc",
                Some((17, 233))
            ),
            // No failurePolicy is the API's default, Fail; a URL target shows its host.
            summary(
                Validating,
                "payments-policy",
                "audit.payments.example.com",
                "Fail",
                "audit.example.net",
                Some((0, 0))
            ),
            summary(
                Mutating,
                "mesh-injector",
                "inject.mesh.example.com",
                "Ignore",
                "injector.mesh.svc",
                Some((0, 4))
            ),
        ]
    );
    assert!(!out.truncated);
    assert_eq!(out.counts_error, None);
    let text = serde_json::to_string(&out).unwrap();
    for leak in LEAKS {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    for leak in ["caBundle", "TUFSS0VS", "8443", "rules", "validate-"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let reqs = server.requests();
    let sent: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            (
                "GET",
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
            ),
            (
                "GET",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
            ),
            ("GET", "/metrics"),
        ]
    );
    for r in &reqs {
        assert_impersonates_operator(r);
    }
}

#[tokio::test]
async fn webhooks_without_the_metrics_still_list_and_say_why_the_counts_are_missing() {
    let pki = Pki::new();
    let server = webhook_server(&pki).await;
    let out = client(&server, &pki).webhooks(&operator()).await.unwrap();
    assert_eq!(out.webhooks.len(), 3);
    assert!(out.webhooks.iter().all(|w| w.rejections.is_none()));
    let why = out.counts_error.expect("a reason");
    assert!(why.contains("403"), "{why}");
}

#[tokio::test]
async fn webhook_bypass_sets_ignore_on_exactly_one_webhook_by_a_tested_json_patch() {
    let pki = Pki::new();
    let server = webhook_server(&pki).await;
    let kube = client(&server, &pki);
    let bypass = |kind, configuration: &'static str, webhook: &'static str| {
        let kube = &kube;
        async move {
            kube.bypass_webhook(&operator(), kind, configuration, webhook)
                .await
        }
    };
    let out = bypass(
        WebhookKind::Validating,
        "payments-policy",
        "policy.payments.example.com",
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        WebhookBypassOutput {
            kind: WebhookKind::Validating,
            configuration: "payments-policy".into(),
            webhook: "policy.payments.example.com".into(),
            failure_policy_before: "Fail".into(),
            failure_policy_after: "Ignore".into(),
            changed: true,
        }
    );
    let stored = server
        .webhook_config("validatingwebhookconfigurations", "payments-policy")
        .unwrap();
    assert_eq!(stored["webhooks"][0]["failurePolicy"], "Ignore");
    assert!(
        stored["webhooks"][1].get("failurePolicy").is_none(),
        "the other webhook changed"
    );
    let reqs = server.requests();
    let patch = reqs.iter().find(|r| r.method == "PATCH").expect("a PATCH");
    assert_eq!(
        patch.header("content-type"),
        Some("application/json-patch+json")
    );
    let body: serde_json::Value = serde_json::from_slice(&patch.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "7001"},
            {"op": "test", "path": "/webhooks/0/name", "value": "policy.payments.example.com"},
            {"op": "add", "path": "/webhooks/0/failurePolicy", "value": "Ignore"},
        ])
    );
    for r in &reqs {
        assert_impersonates_operator(r);
    }

    // Already Ignore: only the GET is sent.
    let before = server.requests().len();
    let again = bypass(
        WebhookKind::Validating,
        "payments-policy",
        "policy.payments.example.com",
    )
    .await
    .unwrap();
    assert!(!again.changed);
    assert_eq!(server.requests().len(), before + 1);

    // A webhook the configuration does not have: refused after the GET alone.
    let missing = bypass(
        WebhookKind::Validating,
        "payments-policy",
        "nope.example.com",
    )
    .await
    .unwrap_err();
    assert!(matches!(missing, KubeError::Missing(_)), "{missing}");
    // The same name under the other kind is another object, which does not exist.
    let other = bypass(
        WebhookKind::Mutating,
        "payments-policy",
        "policy.payments.example.com",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(other, KubeError::Status { code: 404, .. }),
        "{other}"
    );
    let patches = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1);
}
