//! A recording HTTPS server standing in for the cluster's kube-apiserver in a local
//! run: it records every request the agent sends (method, path, impersonation
//! headers) and answers for nodes like kube-apiserver would. Its node objects carry
//! a canary in labels, annotations, addresses and condition messages, so scenarios
//! can show none of it leaves the agent, and it also serves a Secret and a ConfigMap
//! (with the canary) that no action may ever request.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use axum::Router;
use palisade_pki::{CertName, ClientAuth, Role, DEFAULT_LEAF_DAYS};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    nodes: BTreeMap<String, bool>,
    canary: String,
}

pub struct KubeStub {
    pub url: String,
    pub ca: PathBuf,
    pub token_file: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for KubeStub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl KubeStub {
    /// Starts on a loopback port with its own CA in `dir`.
    pub async fn start(dir: &Path, canary: &str, nodes: &[(&str, bool)]) -> anyhow::Result<Self> {
        let pki = dir.join("kube-pki");
        palisade_pki::init_ca(&pki, false)?;
        let name = CertName::new("kube-apiserver")?;
        let issued =
            palisade_pki::issue(&pki, Role::Witness, &name, &[], DEFAULT_LEAF_DAYS, false)?;
        let tls = palisade_pki::server_config(
            &pki.join("ca.crt"),
            &issued.cert,
            &issued.key,
            ClientAuth::Optional,
        )?;
        let token_file = dir.join("kube-token");
        std::fs::write(&token_file, "verify-claims-agent-token\n")?;
        let shared = Arc::new(Mutex::new(Shared {
            nodes: nodes.iter().map(|(n, u)| (n.to_string(), *u)).collect(),
            canary: canary.to_string(),
            ..Shared::default()
        }));
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = palisade_tlog_service::https::serve(listener, tls, router, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self {
            url: format!("https://localhost:{port}"),
            ca: pki.join("ca.crt"),
            token_file,
            shared,
            stop: Some(stop),
        })
    }

    /// The agent's `[kube]` table for this stand-in.
    pub fn agent_table(&self) -> String {
        format!(
            "\n[kube]\nurl = \"{}\"\nca = \"{}\"\ntoken_file = \"{}\"\n",
            self.url,
            self.ca.display(),
            self.token_file.display()
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    pub fn unschedulable(&self, node: &str) -> Option<bool> {
        self.shared
            .lock()
            .ok()
            .and_then(|s| s.nodes.get(node).copied())
    }
}

async fn handle(State(shared): State<Arc<Mutex<Shared>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let Ok(mut s) = shared.lock() else {
        return json(500, json!({"kind": "Status", "code": 500}));
    };
    s.requests.push(recorded.clone());
    let canary = s.canary.clone();
    let segments: Vec<&str> = recorded.path.split('/').skip(1).collect();
    match (recorded.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "nodes"]) => {
            let items: Vec<Value> = s.nodes.iter().map(|(n, u)| node(n, *u, &canary)).collect();
            json(
                200,
                json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        ("GET", ["api", "v1", "nodes", name]) => match s.nodes.get(*name) {
            Some(u) => json(200, node(name, *u, &canary)),
            None => not_found(name),
        },
        ("PATCH", ["api", "v1", "nodes", name]) => {
            let Some(current) = s.nodes.get(*name).copied() else {
                return not_found(name);
            };
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let new = match patch.pointer("/spec/unschedulable") {
                Some(Value::Bool(b)) => *b,
                Some(Value::Null) => false,
                _ => current,
            };
            s.nodes.insert(name.to_string(), new);
            json(200, node(name, new, &canary))
        }
        // Content a lenient server would hand out: served here so that a request
        // for it, were one ever sent, would visibly succeed.
        ("GET", ["api", "v1", "namespaces", _, "secrets", ..]) => {
            json(200, json!({"kind": "Secret", "data": {"password": canary}}))
        }
        ("GET", ["api", "v1", "namespaces", _, "configmaps", ..]) => json(
            200,
            json!({"kind": "ConfigMap", "data": {"app.conf": canary}}),
        ),
        _ => json(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ),
    }
}

fn json(status: u16, v: Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap_or_default()
}

fn not_found(name: &str) -> Response {
    json(
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": format!("nodes \"{name}\" not found")}),
    )
}

/// A realistic Node: everything beyond name, kubelet version and condition types
/// carries the canary.
fn node(name: &str, unschedulable: bool, canary: &str) -> Value {
    let mut spec = json!({"providerID": format!("aws:///eu-west-1a/{canary}")});
    if unschedulable {
        spec["unschedulable"] = Value::Bool(true);
    }
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {"customer/team": canary},
            "annotations": {"customer/note": canary},
        },
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.3.17"}],
            "nodeInfo": {"kubeletVersion": "v1.31.2", "containerRuntimeVersion": format!("containerd://{canary}")},
            "images": [{"names": [format!("registry.example.com/{canary}:1")]}],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": format!("kubelet is posting ready status {canary}"),
                "lastTransitionTime": "2025-05-30T09:01:00Z"
            }]
        }
    })
}
