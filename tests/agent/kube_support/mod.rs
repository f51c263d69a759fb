//! A recording HTTPS server standing in for kube-apiserver.
//!
//! It serves over real TLS with a certificate issued by a Palisade CA made for the
//! test, records method, path, query, headers, body and the client certificate's role
//! of every request that reaches it, and answers like a kube-apiserver would for
//! nodes: a `NodeList`, a `Node`, a strategic-merge patch of `spec.unschedulable`, or
//! a `Status` object. Node objects are realistic on purpose — labels, annotations,
//! addresses, images, taints, condition messages, each carrying a `MARKER` — so tests
//! can show none of it leaves in an action's output.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use palisade_pki::{CertName, ClientAuth, Role, DEFAULT_LEAF_DAYS};
use palisade_tlog_service::https::Peer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Every string a test must never find in an action's output.
pub const LEAKS: &[&str] = &[
    "MARKER",
    "10.0.3.",
    "registry.example.com",
    "kubelet has sufficient",
    "containerd",
    "aws:///",
    "10.244.",
];

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The role in the client certificate, if one was presented.
    pub client_role: Option<Role>,
}

impl Recorded {
    /// The single value of header `name`; panics if it is repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(
            values.len() <= 1,
            "header {name} sent {} times",
            values.len()
        );
        values.first().copied()
    }

    /// Every header whose name starts with `prefix`.
    pub fn headers_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A canned answer that replaces the normal behaviour for every request.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub location: Option<String>,
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    /// Node name → `spec.unschedulable`.
    nodes: BTreeMap<String, bool>,
    /// Override for every answer.
    canned: Option<Canned>,
    /// Condition reason sent for every condition (to test bounds).
    long_reason: Option<String>,
    /// One more condition sent on every node (what any `nodes/status` writer can add).
    extra_condition: Option<Value>,
    /// Admission webhook configurations: (resource, name) → object.
    webhook_configs: BTreeMap<(String, String), Value>,
    /// What `GET /metrics` answers.
    metrics: Option<String>,
}

/// The CA, the server's certificate, an agent client certificate and a second,
/// unrelated CA, in a temporary directory.
pub struct Pki {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
    pub token_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        palisade_pki::init_ca(&dir, false).unwrap();
        let server = CertName::new("kube-apiserver").unwrap();
        palisade_pki::issue(&dir, Role::Witness, &server, &[], DEFAULT_LEAF_DAYS, false).unwrap();
        let agent = CertName::new("agent").unwrap();
        let issued =
            palisade_pki::issue(&dir, Role::Agent, &agent, &[], DEFAULT_LEAF_DAYS, false).unwrap();
        let other = tmp.path().join("other-pki");
        palisade_pki::init_ca(&other, false).unwrap();
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, "token-one\n").unwrap();
        Pki {
            ca: dir.join("ca.crt"),
            other_ca: other.join("ca.crt"),
            agent_cert: issued.cert,
            agent_key: issued.key,
            dir,
            token_file,
            _tmp: tmp,
        }
    }

    fn server_tls(&self) -> rustls::ServerConfig {
        palisade_pki::server_config(
            &self.ca,
            &self.dir.join("witness-kube-apiserver.crt"),
            &self.dir.join("witness-kube-apiserver.key"),
            ClientAuth::Optional,
        )
        .unwrap()
    }
}

/// A running recording apiserver.
pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl ApiServer {
    /// Starts on 127.0.0.1 with `nodes` (name, unschedulable).
    pub async fn start(pki: &Pki, nodes: &[(&str, bool)]) -> ApiServer {
        Self::start_on(pki, "127.0.0.1", nodes).await
    }

    /// Starts on `ip` (any loopback address) with `nodes`.
    pub async fn start_on(pki: &Pki, ip: &str, nodes: &[(&str, bool)]) -> ApiServer {
        let shared = Arc::new(Mutex::new(Shared {
            nodes: nodes.iter().map(|(n, u)| (n.to_string(), *u)).collect(),
            ..Shared::default()
        }));
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = pki.server_tls();
        tokio::spawn(async move {
            palisade_tlog_service::https::serve(listener, tls, router, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        ApiServer {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// `https://localhost:<port>` (the certificate is valid for `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().requests.clone()
    }

    pub fn unschedulable(&self, node: &str) -> Option<bool> {
        self.shared.lock().unwrap().nodes.get(node).copied()
    }

    pub fn answer_always(&self, canned: Canned) {
        self.shared.lock().unwrap().canned = Some(canned);
    }

    pub fn add_nodes(&self, count: usize) {
        let mut s = self.shared.lock().unwrap();
        for i in 0..count {
            s.nodes.insert(format!("filler-{i:05}"), false);
        }
    }

    pub fn set_condition_reason(&self, reason: String) {
        self.shared.lock().unwrap().long_reason = Some(reason);
    }

    /// Adds `condition` to every node's `status.conditions`.
    pub fn add_condition(&self, condition: Value) {
        self.shared.lock().unwrap().extra_condition = Some(condition);
    }

    /// Adds a webhook configuration (`resource` is `validatingwebhookconfigurations`
    /// or `mutatingwebhookconfigurations`).
    pub fn add_webhook_config(&self, resource: &str, config: Value) {
        let name = config["metadata"]["name"].as_str().unwrap().to_string();
        self.shared
            .lock()
            .unwrap()
            .webhook_configs
            .insert((resource.to_string(), name), config);
    }

    pub fn webhook_config(&self, resource: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .unwrap()
            .webhook_configs
            .get(&(resource.to_string(), name.to_string()))
            .cloned()
    }

    /// What `GET /metrics` answers from now on.
    pub fn set_metrics(&self, text: &str) {
        self.shared.lock().unwrap().metrics = Some(text.to_string());
    }
}

/// A realistic webhook configuration of `kind` (`Validating` or `Mutating`): a CA
/// bundle, rules, selectors and a service path, each carrying `MARKER`; `webhooks` is
/// (name, failurePolicy, service or URL target).
pub fn webhook_config_json(
    kind: &str,
    name: &str,
    webhooks: &[(&str, Option<&str>, &str)],
) -> Value {
    let hooks: Vec<Value> = webhooks
        .iter()
        .map(|(n, policy, target)| {
            let client = if target.starts_with("https://") {
                json!({"url": target, "caBundle": "TUFSS0VSLWNhLWJ1bmRsZQ=="})
            } else {
                let (svc, ns) = target.split_once('.').unwrap();
                json!({"service": {"name": svc, "namespace": ns, "path": "/validate-MARKER", "port": 443},
                       "caBundle": "TUFSS0VSLWNhLWJ1bmRsZQ=="})
            };
            let mut w = json!({
                "name": n,
                "clientConfig": client,
                "rules": [{"apiGroups": ["MARKER.example.com"], "apiVersions": ["v1"],
                           "operations": ["CREATE"], "resources": ["MARKERwidgets"], "scope": "*"}],
                "namespaceSelector": {"matchLabels": {"team": "MARKER-payments"}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            });
            if let Some(p) = policy {
                w["failurePolicy"] = json!(p);
            }
            w
        })
        .collect();
    json!({
        "kind": format!("{kind}WebhookConfiguration"),
        "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": name, "resourceVersion": "7001",
                     "annotations": {"owner": "MARKER-team@example.com"}},
        "webhooks": hooks,
    })
}

/// Applies the `test`, `add` and `replace` operations of an RFC 6902 patch.
fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    for op in patch.as_array().ok_or("not a JSON patch")? {
        let path = op["path"].as_str().ok_or("no path")?;
        match op["op"].as_str() {
            Some("test") => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test of {path} failed"));
                }
            }
            Some("add" | "replace") => {
                let (parent, key) = path.rsplit_once('/').ok_or("bad path")?;
                let target = doc.pointer_mut(parent).ok_or("no parent")?;
                target
                    .as_object_mut()
                    .ok_or("parent is not an object")?
                    .insert(key.to_string(), op["value"].clone());
            }
            _ => return Err("unsupported operation".into()),
        }
    }
    Ok(())
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    Extension(peer): Extension<Peer>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
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
        body,
        client_role: peer.role(),
    };
    let mut s = shared.lock().unwrap();
    s.requests.push(recorded.clone());
    if let Some(c) = &s.canned {
        let mut response = Response::builder()
            .status(c.status)
            .header(header::CONTENT_TYPE, c.content_type);
        if let Some(l) = &c.location {
            response = response.header(header::LOCATION, l);
        }
        return response.body(Body::from(c.body.clone())).unwrap();
    }
    let reason = s.long_reason.clone();
    let extra = s.extra_condition.clone();
    let node_json = |name: &str, unschedulable: bool, reason: Option<&str>| {
        let mut node = node_json(name, unschedulable, reason);
        if let (Some(extra), Some(list)) = (
            &extra,
            node.pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut),
        ) {
            list.push(extra.clone());
        }
        node
    };
    let segments: Vec<&str> = recorded.path.split('/').skip(1).collect();
    match (recorded.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "nodes"]) => {
            let items: Vec<Value> = s
                .nodes
                .iter()
                .map(|(n, u)| node_json(n, *u, reason.as_deref()))
                .collect();
            json_response(
                200,
                json!({
                    "kind": "NodeList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "48213"},
                    "items": items,
                }),
            )
        }
        ("GET", ["api", "v1", "nodes", name]) => match s.nodes.get(*name) {
            Some(u) => json_response(200, node_json(name, *u, reason.as_deref())),
            None => not_found(name),
        },
        ("PATCH", ["api", "v1", "nodes", name]) => {
            let Some(current) = s.nodes.get(*name).copied() else {
                return not_found(name);
            };
            let patch: Value = match serde_json::from_slice(&recorded.body) {
                Ok(v) => v,
                Err(_) => return status_response(400, "BadRequest", "bad patch"),
            };
            let new = match patch.pointer("/spec/unschedulable") {
                Some(Value::Bool(b)) => *b,
                Some(Value::Null) => false,
                _ => current,
            };
            s.nodes.insert(name.to_string(), new);
            json_response(200, node_json(name, new, reason.as_deref()))
        }
        ("GET", ["metrics"]) => match &s.metrics {
            Some(text) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                text.clone(),
            )
                .into_response(),
            None => status_response(403, "Forbidden", "metrics are forbidden"),
        },
        ("GET", ["apis", "admissionregistration.k8s.io", "v1", resource]) => {
            let kind = if resource.starts_with("validating") {
                "Validating"
            } else {
                "Mutating"
            };
            let items: Vec<Value> = s
                .webhook_configs
                .iter()
                .filter(|((r, _), _)| r == resource)
                .map(|(_, v)| v.clone())
                .collect();
            json_response(
                200,
                json!({"kind": format!("{kind}WebhookConfigurationList"),
                       "apiVersion": "admissionregistration.k8s.io/v1",
                       "metadata": {"resourceVersion": "7001"}, "items": items}),
            )
        }
        ("GET", ["apis", "admissionregistration.k8s.io", "v1", resource, name]) => {
            match s
                .webhook_configs
                .get(&(resource.to_string(), name.to_string()))
            {
                Some(v) => json_response(200, v.clone()),
                None => not_found(name),
            }
        }
        ("PATCH", ["apis", "admissionregistration.k8s.io", "v1", resource, name]) => {
            let key = (resource.to_string(), name.to_string());
            let Some(mut doc) = s.webhook_configs.get(&key).cloned() else {
                return not_found(name);
            };
            let patch: Value = match serde_json::from_slice(&recorded.body) {
                Ok(v) => v,
                Err(_) => return status_response(400, "BadRequest", "bad patch"),
            };
            if let Err(e) = json_patch(&mut doc, &patch) {
                return status_response(422, "Invalid", &e);
            }
            doc["metadata"]["resourceVersion"] = json!("7002");
            s.webhook_configs.insert(key, doc.clone());
            json_response(200, doc)
        }
        _ => status_response(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn json_response(status: u16, value: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn not_found(name: &str) -> Response {
    status_response(
        404,
        "NotFound",
        &format!("nodes \"{name}\" not found BODY-MARKER"),
    )
}

/// A `Status` object as kube-apiserver sends for errors.
pub fn status_json(code: u16, reason: &str, message: &str) -> String {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"kind": "nodes"},
        "code": code,
    })
    .to_string()
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        status_json(code, reason, message),
    )
        .into_response()
}

/// A Node the way kube-apiserver returns one, with customer-ish details in it.
pub fn node_json(name: &str, unschedulable: bool, reason: Option<&str>) -> Value {
    let reason = |default: &str| reason.unwrap_or(default).to_string();
    let mut spec = json!({
        "podCIDR": "10.244.1.0/24",
        "podCIDRs": ["10.244.1.0/24"],
        "providerID": "aws:///eu-west-1a/i-0abc123MARKER",
        "taints": [{"key": "dedicated", "value": "TAINT-MARKER-gpu", "effect": "NoSchedule"}],
    });
    if unschedulable {
        spec["unschedulable"] = json!(true);
        spec["taints"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
    }
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": "5f1c2a4e-0d0b-4e0e-9a57-MARKER",
            "resourceVersion": "48190",
            "creationTimestamp": "2025-01-10T08:00:00Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": "m5.large",
                "customer.example.com/team": "LABEL-MARKER-payments",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "customer.example.com/notes": "ANNOTATION-MARKER",
            },
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": "2", "memory": "8025424Ki", "pods": "110"},
            "allocatable": {"cpu": "1930m", "memory": "7275856Ki", "pods": "110"},
            "conditions": [
                {
                    "type": "MemoryPressure", "status": "False",
                    "lastHeartbeatTime": "2025-06-01T10:00:00Z",
                    "lastTransitionTime": "2025-05-30T09:00:00Z",
                    "reason": reason("KubeletHasSufficientMemory"),
                    "message": "kubelet has sufficient memory available MESSAGE-MARKER",
                },
                {
                    "type": "DiskPressure", "status": "False",
                    "lastHeartbeatTime": "2025-06-01T10:00:00Z",
                    "lastTransitionTime": "2025-05-30T09:00:00Z",
                    "reason": reason("KubeletHasNoDiskPressure"),
                    "message": "kubelet has no disk pressure MESSAGE-MARKER",
                },
                {
                    "type": "Ready", "status": "True",
                    "lastHeartbeatTime": "2025-06-01T10:00:00Z",
                    "lastTransitionTime": "2025-05-30T09:01:00Z",
                    "reason": reason("KubeletReady"),
                    "message": "kubelet is posting ready status MESSAGE-MARKER",
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.0.3.17"},
                {"type": "Hostname", "address": "ip-10-0-3-17.MARKER.internal"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "MACHINEID-MARKER",
                "systemUUID": "ec2d1c1e-MARKER",
                "bootID": "b00t-MARKER",
                "kernelVersion": "6.1.0-18-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.13",
                "kubeletVersion": "v1.31.2",
                "kubeProxyVersion": "v1.31.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [
                {
                    "names": [
                        "registry.example.com/customer/payments@sha256:0123MARKER",
                        "registry.example.com/customer/payments:IMAGE-MARKER",
                    ],
                    "sizeBytes": 123456789,
                },
            ],
            "volumesAttached": [{"name": "kubernetes.io/csi/ebs^vol-MARKER", "devicePath": ""}],
        },
    })
}

/// `KubeSettings` for a server at `url`.
pub fn token_settings(
    url: &str,
    ca: &Path,
    token_file: &Path,
) -> palisade_agent::config::KubeSettings {
    palisade_agent::config::KubeSettings {
        url: url.to_string(),
        ca: ca.to_path_buf(),
        token_file: Some(token_file.to_path_buf()),
        client_cert: None,
        client_key: None,
    }
}
