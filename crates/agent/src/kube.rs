//! Kubernetes API actions: `kube.nodes`, `kube.cordon {node}`, `kube.uncordon {node}`,
//! `kube.webhooks` and `kube.webhook-bypass` (claims C3 and C6 in
//! docs/threat-model.md).
//!
//! These are the operators' only ways into the cluster's Kubernetes API. The agent
//! calls the *local* kube-apiserver with its own credential (a service-account token
//! or a client certificate, see `deploy/kubernetes/palisade-agent-rbac.yaml`) and
//! **impersonates** the operator:
//!
//! | header | value |
//! |---|---|
//! | `Impersonate-User` | `palisade:operator:<pseudonym>` |
//! | `Impersonate-Group` | `palisade:operators` |
//! | `Impersonate-Extra-palisade.dev%2Fevent-id` | the access event's id |
//! | `Impersonate-Extra-palisade.dev%2Flog-entry` | `<log origin>#<leaf index>` |
//!
//! so the request is authorized as the operator (RBAC role `palisade-operator`), and the
//! customer's own Kubernetes audit log names the pseudonym and where to find the same
//! action in their Palisade log. Kubernetes lower-cases extra keys and percent-decodes
//! them from the header name (header names cannot hold `/`), so the keys arrive as
//! `palisade.dev/event-id` and `palisade.dev/log-entry`.
//!
//! # The guard
//!
//! Every request passes [`check_request`] before anything is sent, in one private
//! function (`KubeClient::send`). It is hard-coded, whatever the action policy says:
//!
//! 1. a **deny list** of what holds or reaches customer content — `secrets`,
//!    `configmaps`, `pods/exec`, `pods/attach`, `pods/log`, `pods/portforward`,
//!    `pods/proxy`, `nodes/proxy`, `services/proxy`, `serviceaccounts/token`, and every
//!    resource of a non-core API group (custom resources included) but the two
//!    webhook configuration resources of `admissionregistration.k8s.io` — judged on
//!    what the path would reach once a server percent-decoded it and resolved `..`;
//! 2. a **syntax** check: only `a-z 0-9 - . /`, so no query string, no fragment, no
//!    percent-escape, no upper case; no empty, `.` or `..` segment; no trailing slash;
//! 3. an **allowlist** that is exactly `GET /api/v1/nodes`, `GET /api/v1/nodes/{name}`,
//!    `PATCH /api/v1/nodes/{name}`, `{name}` a DNS-1123 subdomain of at most 253
//!    bytes, `GET /metrics` (reduced to an allowlist of families and labels by
//!    `component.metrics` before anything leaves the agent, see `prom.rs`), and, in
//!    `admissionregistration.k8s.io/v1`, `GET` of the list and `GET` and `PATCH` of
//!    one `validatingwebhookconfigurations` or `mutatingwebhookconfigurations` object
//!    (the patch only for `kube.webhook-bypass`, which always needs the customer's
//!    approval: `palisade_policy::catalogue::CUSTOMER_APPROVAL_REQUIRED`).
//!
//! The URL actually sent is built from the checked request and compared again with it;
//! redirects are never followed and no proxy is used, so what was checked is what the
//! apiserver receives. The client speaks https only and trusts only `kube.ca`; its
//! token file is read again for every request. `kube.cordon` and `kube.uncordon` read
//! the node first and send kubectl's strategic-merge patch only if it is not already
//! in the wanted state. The cluster's RBAC
//! (`deploy/kubernetes/palisade-agent-rbac.yaml`) enforces the same scope a second
//! time.
//!
//! # Outputs
//!
//! [`NodesOutput`] and [`NodeOutput`] carry names, scheduling state, kubelet version and
//! condition types/statuses/reasons/times — the well-known ones only, anything else
//! as `other` ([`crate::node_conditions`]) — never labels, annotations, addresses,
//! images, taints or condition messages (free text a workload can influence). The
//! response is decoded into private types holding only those fields, so the rest is not
//! even kept in memory; strings and counts are bounded.
//!
//! # What this does not protect against
//!
//! A compromised agent holds its own credential and can send anything the
//! `palisade-agent` ClusterRole allows; the guard protects against operator input (a
//! node name is the only operator-supplied part of a request), not against the agent's
//! own code being replaced. That is what C8 (only approved releases run) is for.

use crate::config::KubeSettings;
use palisade_core::{EventId, OperatorId};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Output schema of `kube.nodes`: a [`NodesOutput`].
pub const NODES_SCHEMA: &str = "palisade.dev/output/kube-nodes/v1";
/// Output schema of `kube.cordon` and `kube.uncordon`: a [`NodeOutput`].
pub const NODE_SCHEMA: &str = "palisade.dev/output/kube-node/v1";

/// The most nodes `kube.nodes` reports; beyond it, [`NodesOutput::truncated`] is set.
pub const MAX_NODES: usize = 1000;
/// The most conditions reported per node (a node has about five).
pub const MAX_CONDITIONS: usize = 32;
/// Longest node name (a DNS-1123 subdomain).
pub const MAX_NAME_BYTES: usize = 253;
/// Longest kubelet version, condition type, status or transition time reported.
pub const MAX_SHORT_BYTES: usize = 64;
/// Longest condition reason reported (a CamelCase word in practice).
pub const MAX_REASON_BYTES: usize = 128;

/// The prefix of every impersonated user name.
pub const OPERATOR_USER_PREFIX: &str = "palisade:operator:";
/// The one group every impersonated operator is put in (bound to `palisade-operator`).
pub const OPERATOR_GROUP: &str = "palisade:operators";
/// The user-extra key carrying the access event's id.
pub const EXTRA_EVENT_ID: &str = "palisade.dev/event-id";
/// The user-extra key carrying `<log origin>#<leaf index>`.
pub const EXTRA_LOG_ENTRY: &str = "palisade.dev/log-entry";
/// Longest `log_entry` accepted (an origin is a short URL-like string).
pub const MAX_LOG_ENTRY_BYTES: usize = 512;

/// Header names; `http` stores them lower-case (HTTP/2 requires it; HTTP/1.1 names are
/// case-insensitive). The `/` of an extra key is percent-encoded as `%2F` (`%2f`).
const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_EXTRA_EVENT_ID: &str = "impersonate-extra-palisade.dev%2fevent-id";
const IMPERSONATE_EXTRA_LOG_ENTRY: &str = "impersonate-extra-palisade.dev%2flog-entry";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest successful response read (a node list of [`MAX_NODES`] nodes with their
/// images and labels fits comfortably); more is a decode error, not unbounded memory.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Largest error response read, only to find the Status object's `reason`.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Longest path or method echoed in an error.
const MAX_ECHO_CHARS: usize = 200;

/// The strategic-merge-patch bodies kubectl sends (`kubectl cordon` / `uncordon`).
///
/// kubectl builds a two-way strategic merge patch between the node before and after
/// setting `spec.unschedulable`. Because the field is `omitempty`, `false` disappears
/// from the "after" document, so uncordon's patch *deletes* the field
/// (`null`) rather than setting `false`; the apiserver then reads it as `false`.
/// We send exactly the same bodies, so an audit reader sees what kubectl would.
const CORDON_PATCH: &str = r#"{"spec":{"unschedulable":true}}"#;
const UNCORDON_PATCH: &str = r#"{"spec":{"unschedulable":null}}"#;
const PATCH_CONTENT_TYPE: &str = "application/strategic-merge-patch+json";
const JSON_PATCH_CONTENT_TYPE: &str = "application/json-patch+json";

/// A PATCH body: kubectl's node patches, or a JSON patch built by
/// [`KubeClient::bypass_webhook`] from checked values.
#[derive(Debug)]
enum Patch {
    StrategicMerge(&'static str),
    Json(String),
}

/// The most webhooks `kube.webhooks` lists.
const MAX_WEBHOOKS: usize = 500;
/// What went wrong. Messages never contain the credential or a response body.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The guard refused the request; nothing was sent.
    #[error(
        "refused {method} {path:?}: it reaches {resource}; {why}. The agent only sends \
         GET /api/v1/nodes, GET /api/v1/nodes/<name>, PATCH /api/v1/nodes/<name>, \
         GET /metrics and GET or PATCH of admission webhook configurations (claim C3)"
    )]
    Denied {
        method: String,
        path: String,
        /// What the path would reach, as Kubernetes names it: `secrets`, `pods/exec`,
        /// `widgets.example.com`, `nodes`, or `non-resource URL /logs`.
        resource: String,
        why: String,
    },
    /// The impersonation to send is malformed (a caller's mistake); nothing was sent.
    #[error("cannot impersonate: {0}")]
    Impersonation(String),
    /// The kube-apiserver could not be reached, or TLS failed (wrong CA, name mismatch).
    #[error("kube-apiserver unreachable: {0}")]
    Transport(String),
    /// The kube-apiserver answered with an error status. `reason` is only the Status
    /// object's `reason` field (e.g. `Forbidden`, `NotFound`), never the body.
    #[error("kube-apiserver answered {code}{}; {}", reason_suffix(reason), status_hint(*code))]
    Status { code: u16, reason: Option<String> },
    /// The kube-apiserver answered success with something that is not what was asked.
    #[error("unexpected kube-apiserver response: {0}")]
    Decode(String),
    /// The agent's `[kube]` settings or credential files are unusable.
    #[error("kube settings: {0}")]
    Config(String),
    /// What the action names does not exist (nothing was changed).
    #[error("{0}")]
    Missing(String),
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!(" ({r})"),
        None => String::new(),
    }
}

fn status_hint(code: u16) -> &'static str {
    match code {
        300..=399 => "redirects are never followed",
        401 => "the agent's own credential was not accepted (expired or wrong token/certificate?)",
        403 => {
            "the request or the impersonation was forbidden; check the palisade-agent and \
             palisade-operator ClusterRoles (deploy/kubernetes/palisade-agent-rbac.yaml)"
        }
        404 => "no such node or webhook configuration",
        409 | 422 => "the object changed meanwhile; try again",
        429 => "the kube-apiserver is throttling; try again later",
        500..=599 => "the kube-apiserver failed; try again later",
        _ => "the action was not carried out",
    }
}

/// Who a request is made for; sent as impersonation headers (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// The operator's stable pseudonym (never their real identity).
    pub pseudonym: OperatorId,
    /// The access event that authorized this action.
    pub event_id: EventId,
    /// Where the event is in the customer's Palisade log: `<log origin>#<leaf index>`.
    pub log_entry: String,
}

impl Impersonation {
    /// The four impersonation headers, or why they cannot be sent.
    fn headers(&self) -> Result<HeaderMap, KubeError> {
        check_log_entry(&self.log_entry)?;
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| KubeError::Impersonation(format!("{v:?} is not a header value")))
        };
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(IMPERSONATE_USER),
            value(&format!("{OPERATOR_USER_PREFIX}{}", self.pseudonym))?,
        );
        h.insert(
            HeaderName::from_static(IMPERSONATE_GROUP),
            value(OPERATOR_GROUP)?,
        );
        h.insert(
            HeaderName::from_static(IMPERSONATE_EXTRA_EVENT_ID),
            value(self.event_id.as_str())?,
        );
        h.insert(
            HeaderName::from_static(IMPERSONATE_EXTRA_LOG_ENTRY),
            value(&self.log_entry)?,
        );
        Ok(h)
    }
}

/// `<origin>#<index>`: printable ASCII without spaces or commas, a non-empty origin and a
/// decimal index. Kept strict because it lands verbatim in the customer's audit log.
fn check_log_entry(entry: &str) -> Result<(), KubeError> {
    let bad = |why: &str| {
        KubeError::Impersonation(format!(
            "log entry {:?} {why}; it must be \"<log origin>#<leaf index>\"",
            echo(entry)
        ))
    };
    if entry.len() > MAX_LOG_ENTRY_BYTES {
        return Err(bad(&format!("is longer than {MAX_LOG_ENTRY_BYTES} bytes")));
    }
    if let Some(c) = entry.chars().find(|c| !c.is_ascii_graphic() || *c == ',') {
        return Err(bad(&format!("contains {c:?}")));
    }
    let Some((origin, index)) = entry.rsplit_once('#') else {
        return Err(bad("has no '#'"));
    };
    if origin.is_empty() || origin.contains('#') {
        return Err(bad("has an empty origin or more than one '#'"));
    }
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || index.len() > 20 {
        return Err(bad("does not end in a decimal leaf index"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------

/// `kube.nodes` output ([`NODES_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesOutput {
    /// At most [`MAX_NODES`] nodes, in the apiserver's order (by name).
    pub nodes: Vec<NodeSummary>,
    /// `true` if the cluster has more than [`MAX_NODES`] nodes and the rest were left out.
    pub truncated: bool,
}

/// One node, reduced to what keeps a cluster healthy and says nothing of its workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSummary {
    /// `metadata.name` (≤ 253 bytes).
    pub name: String,
    /// `spec.unschedulable` (absent means `false`): whether the node is cordoned.
    pub unschedulable: bool,
    /// `status.nodeInfo.kubeletVersion` (≤ 64 bytes; empty if not reported).
    pub kubelet_version: String,
    /// The `Ready` condition: `True` → `true`, `False` → `false`, `Unknown` or absent →
    /// `None`.
    pub ready: Option<bool>,
    /// `status.conditions`, at most [`MAX_CONDITIONS`], without their messages.
    pub conditions: Vec<NodeCondition>,
}

/// A node condition without its free-text `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCondition {
    /// `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NetworkUnavailable`,
    /// or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False`, `Unknown`, or `other`.
    pub status: String,
    /// A well-known kubelet or node-controller reason, or `other`, if any.
    pub reason: Option<String>,
    /// RFC 3339 time as sent by the apiserver (≤ 64 bytes), if any.
    pub last_transition_time: Option<String>,
}

/// `kube.cordon` / `kube.uncordon` output ([`NODE_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOutput {
    pub node: String,
    /// The node's `spec.unschedulable` as the apiserver reported it afterwards.
    pub unschedulable: bool,
    /// `false` if the node was already in the wanted state and no PATCH was sent.
    pub changed: bool,
}

/// Output of `kube.webhooks` (schema `palisade.dev/output/kube-webhooks/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhooksOutput {
    pub webhooks: Vec<WebhookSummary>,
    /// More than [`MAX_WEBHOOKS`] existed.
    pub truncated: bool,
    /// Why the counts are absent (the apiserver's `/metrics` could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_error: Option<String>,
}

/// One admission webhook: names and numbers only (never its CA bundle, rules,
/// selectors or path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSummary {
    pub kind: WebhookKind,
    pub configuration: String,
    pub name: String,
    /// `Fail` or `Ignore`.
    pub failure_policy: String,
    pub timeout_seconds: i64,
    /// The service's `name.namespace.svc`, or the URL's host.
    pub target_host: String,
    /// Requests the webhook rejected, from the apiserver's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejections: Option<u64>,
    /// Calls to the webhook that failed or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_errors: Option<u64>,
}

/// Output of `kube.webhook-bypass` (schema `palisade.dev/output/kube-webhook-bypass/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookBypassOutput {
    pub kind: WebhookKind,
    pub configuration: String,
    pub webhook: String,
    pub failure_policy_before: String,
    pub failure_policy_after: String,
    /// `false` if it already was `Ignore` and nothing was sent.
    pub changed: bool,
}

/// A name from the apiserver as it may leave the agent: a DNS-1123 subdomain, else
/// a placeholder.
fn shown_name(name: &str) -> String {
    if is_dns1123_subdomain(name) {
        name.to_string()
    } else {
        "(not a DNS name)".to_string()
    }
}

fn shown_policy(policy: Option<&str>) -> String {
    match policy {
        // The API's default.
        None | Some("Fail") => "Fail".into(),
        Some("Ignore") => "Ignore".into(),
        Some(_) => "(unknown)".into(),
    }
}

// ---------------------------------------------------------------------------------------
// The guard (claim C3)
// ---------------------------------------------------------------------------------------

/// Refuses every request off the allowlist the actions need; see the module docs for the
/// rules and their order. Nothing may be sent to the kube-apiserver without passing it.
pub fn check_request(method: &str, path: &str) -> Result<(), KubeError> {
    Allowed::parse(method, path).map(|_| ())
}

/// A request that passed the guard: the only values [`KubeClient::send`] builds URLs from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    ListNodes,
    GetNode(String),
    PatchNode(String),
    /// The apiserver's own Prometheus metrics (reduced before they leave the agent).
    Metrics,
    ListWebhookConfigs(WebhookKind),
    GetWebhookConfig(WebhookKind, String),
    PatchWebhookConfig(WebhookKind, String),
}

/// The group of admission webhook configurations, the one non-core group reached.
const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";

/// Validating or mutating admission webhook configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    Validating,
    Mutating,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 2] = [WebhookKind::Validating, WebhookKind::Mutating];

    /// `validating` or `mutating`, as `kube.webhook-bypass`'s `kind`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "validating" => Some(Self::Validating),
            "mutating" => Some(Self::Mutating),
            _ => None,
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Self::Validating => "validatingwebhookconfigurations",
            Self::Mutating => "mutatingwebhookconfigurations",
        }
    }

    fn of_resource(resource: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.resource() == resource)
    }

    fn list_kind(self) -> &'static str {
        match self {
            Self::Validating => "ValidatingWebhookConfigurationList",
            Self::Mutating => "MutatingWebhookConfigurationList",
        }
    }

    fn object_kind(self) -> &'static str {
        match self {
            Self::Validating => "ValidatingWebhookConfiguration",
            Self::Mutating => "MutatingWebhookConfiguration",
        }
    }

    /// The `type` label of the apiserver's webhook metrics.
    fn metric_type(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Mutating => "admit",
        }
    }
}

impl fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Validating => "validating",
            Self::Mutating => "mutating",
        })
    }
}

impl Allowed {
    fn parse(method: &str, path: &str) -> Result<Self, KubeError> {
        let target = Target::of(path);
        let deny = |why: String| KubeError::Denied {
            method: echo(method),
            path: echo(path),
            resource: target.to_string(),
            why,
        };
        // 1. The hard deny list, on what the path would reach on a lenient server.
        if let Some(why) = target.denied_because() {
            return Err(deny(why.to_string()));
        }
        // 2. Syntax of the raw path.
        if let Some(why) = syntax_problem(path) {
            return Err(deny(why));
        }
        // 3. The allowlist.
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        match (method, segments.as_slice()) {
            ("GET", ["api", "v1", "nodes"]) => Ok(Allowed::ListNodes),
            ("GET", ["metrics"]) => Ok(Allowed::Metrics),
            ("GET", ["apis", ADMISSION_GROUP, "v1", resource]) => {
                WebhookKind::of_resource(resource)
                    .map(Allowed::ListWebhookConfigs)
                    .ok_or_else(|| deny("it is not on the allowlist".into()))
            }
            ("GET" | "PATCH", ["apis", ADMISSION_GROUP, "v1", resource, name]) => {
                let kind = WebhookKind::of_resource(resource)
                    .ok_or_else(|| deny("it is not on the allowlist".into()))?;
                if !is_dns1123_subdomain(name) {
                    return Err(deny(format!(
                        "configuration name {:?} is not a DNS-1123 subdomain",
                        echo(name)
                    )));
                }
                Ok(if method == "GET" {
                    Allowed::GetWebhookConfig(kind, (*name).to_string())
                } else {
                    Allowed::PatchWebhookConfig(kind, (*name).to_string())
                })
            }
            ("GET" | "PATCH", ["api", "v1", "nodes", name]) => {
                if !is_dns1123_subdomain(name) {
                    return Err(deny(format!(
                        "node name {:?} is not a DNS-1123 subdomain of at most \
                         {MAX_NAME_BYTES} bytes",
                        echo(name)
                    )));
                }
                Ok(if method == "GET" {
                    Allowed::GetNode((*name).to_string())
                } else {
                    Allowed::PatchNode((*name).to_string())
                })
            }
            (_, ["api", "v1", "nodes", ..]) => Err(deny(format!(
                "{:?} of this path is not on the allowlist (nodes: GET the list, GET or \
                 PATCH one node, no subresources)",
                echo(method)
            ))),
            _ => Err(deny("it is not on the allowlist".into())),
        }
    }

    fn method(&self) -> Method {
        match self {
            Allowed::ListNodes
            | Allowed::GetNode(_)
            | Allowed::Metrics
            | Allowed::ListWebhookConfigs(_)
            | Allowed::GetWebhookConfig(..) => Method::GET,
            Allowed::PatchNode(_) | Allowed::PatchWebhookConfig(..) => Method::PATCH,
        }
    }

    fn path(&self) -> String {
        match self {
            Allowed::ListNodes => "/api/v1/nodes".to_string(),
            Allowed::Metrics => "/metrics".to_string(),
            Allowed::ListWebhookConfigs(k) => {
                format!("/apis/{ADMISSION_GROUP}/v1/{}", k.resource())
            }
            Allowed::GetWebhookConfig(k, n) | Allowed::PatchWebhookConfig(k, n) => {
                format!("/apis/{ADMISSION_GROUP}/v1/{}/{n}", k.resource())
            }
            Allowed::GetNode(n) | Allowed::PatchNode(n) => format!("/api/v1/nodes/{n}"),
        }
    }
}

/// What a path would reach if a server percent-decoded it and resolved dot segments:
/// used to name the resource in refusals and to apply the deny list to tricks such as
/// `/api/v1/nodes/../secrets` or `%2e%2e`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A core (`/api/v1`) resource and optional subresource.
    Core {
        resource: String,
        subresource: Option<String>,
    },
    /// A resource of a named API group (`/apis/<group>/...`).
    Group { group: String, resource: String },
    /// Anything else (`/logs`, `/version`, `/`, …).
    NonResource(String),
}

impl Target {
    fn of(path: &str) -> Target {
        let mut decoded = path.to_string();
        // Decode repeatedly: a double-encoded `%252e` names what a twice-decoding proxy
        // would reach. Bounded, since each round shortens the string.
        for _ in 0..4 {
            if !decoded.contains('%') {
                break;
            }
            decoded = percent_decode(&decoded);
        }
        let without_query = decoded
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut segments: Vec<&str> = Vec::new();
        for s in without_query.split(['/', '\\']) {
            match s {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        match segments.as_slice() {
            ["api", _version, rest @ ..] => {
                let (resource, subresource) = resource_of(rest);
                Target::Core {
                    resource: resource.unwrap_or_else(|| "the core API root".to_string()),
                    subresource,
                }
            }
            ["apis", group, _version, rest @ ..] => Target::Group {
                group: group.to_string(),
                resource: resource_of(rest).0.unwrap_or_else(|| "*".into()),
            },
            ["apis", group] => Target::Group {
                group: group.to_string(),
                resource: "*".into(),
            },
            _ => Target::NonResource(format!("/{}", segments.join("/"))),
        }
    }

    /// Why the hard deny list refuses this target, if it does.
    fn denied_because(&self) -> Option<&'static str> {
        match self {
            Target::Core {
                resource,
                subresource,
            } => match (resource.as_str(), subresource.as_deref()) {
                ("secrets", _) => Some("Secrets are customer content and are never read"),
                ("configmaps", _) => Some("ConfigMaps are customer content and are never read"),
                ("pods", Some("exec" | "attach" | "portforward" | "proxy")) => {
                    Some("it opens a channel into a customer workload")
                }
                ("pods", Some("log")) => Some("container logs are customer content"),
                ("nodes" | "services", Some("proxy")) => Some("it proxies into the data plane"),
                ("proxy", _) => Some("the legacy proxy reaches into the data plane"),
                ("serviceaccounts", Some("token")) => Some("it mints credentials"),
                _ => None,
            },
            Target::Group { group, resource }
                if group == ADMISSION_GROUP && WebhookKind::of_resource(resource).is_some() =>
            {
                None
            }
            Target::Group { .. } => Some(
                "resources of non-core API groups (custom resources included) are never \
                 reached, but admission webhook configurations",
            ),
            Target::NonResource(_) => None,
        }
    }
}

/// The resource and subresource of the path after `/api/v1` or `/apis/<g>/<v>`,
/// following the apiserver's own reading: an optional `watch/` prefix, an optional
/// `namespaces/<ns>/` scope (except the namespace's own `status` and `finalize`).
fn resource_of(rest: &[&str]) -> (Option<String>, Option<String>) {
    let rest = match rest {
        ["watch", tail @ ..] => tail,
        all => all,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..]
            if !tail.is_empty() && !matches!(tail.first(), Some(&"status" | &"finalize")) =>
        {
            tail
        }
        all => all,
    };
    (
        rest.first().map(|s| s.to_string()),
        rest.get(2).map(|s| s.to_string()),
    )
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Core {
                resource,
                subresource: Some(sub),
            } => write!(f, "{}/{}", echo(resource), echo(sub)),
            Target::Core {
                resource,
                subresource: None,
            } => f.write_str(&echo(resource)),
            Target::Group { group, resource } => {
                write!(f, "{}.{}", echo(resource), echo(group))
            }
            Target::NonResource(p) => write!(f, "non-resource URL {}", echo(p)),
        }
    }
}

/// Why the raw path is malformed, if it is.
fn syntax_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("the path must start with '/'".into());
    }
    if path.len() > 300 {
        return Some("the path is too long".into());
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '/')))
    {
        return Some(match c {
            '?' => "query strings are not allowed".into(),
            '#' => "fragments are not allowed".into(),
            '%' => "percent-escapes are not allowed".into(),
            c => format!("the character {c:?} is not allowed"),
        });
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "" if i + 1 == segments.len() => {
                return Some("trailing slashes are not allowed".into())
            }
            "" => return Some("empty path segments ('//') are not allowed".into()),
            "." | ".." => return Some("dot segments (path traversal) are not allowed".into()),
            _ => {}
        }
    }
    None
}

/// A Kubernetes object name: lower-case alphanumerics, `-` and `.`, each dot-separated
/// part starting and ending with an alphanumeric, at most 253 bytes (RFC 1123 subdomain
/// as Kubernetes' `IsDNS1123Subdomain` reads it).
fn is_dns1123_subdomain(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(&first), Some(&last)) => {
                    alnum(first) && alnum(last) && b.iter().all(|&c| alnum(c) || c == b'-')
                }
                _ => false,
            }
        })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(hex) = bytes.get(i + 1..i + 3) {
                if let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A bounded, `{:?}`-safe rendering of caller-supplied text for error messages.
fn echo(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_ECHO_CHARS).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------------------------------
// The client (claim C6)
// ---------------------------------------------------------------------------------------

/// How the agent authenticates itself to the kube-apiserver.
enum Credential {
    /// A bearer token file, re-read for every request (projected and `kubectl create
    /// token` tokens expire and are replaced on disk).
    TokenFile(PathBuf),
    /// A client certificate, already in the TLS configuration.
    ClientCertificate,
}

/// A client for the local kube-apiserver that can only send what [`check_request`]
/// allows, always impersonating an operator.
pub struct KubeClient {
    http: reqwest::Client,
    /// `https://host:port`, no path.
    base: String,
    credential: Credential,
}

impl fmt::Debug for KubeClient {
    /// Names the credential's kind and file, never its content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = match &self.credential {
            Credential::TokenFile(p) => format!("token file {}", p.display()),
            Credential::ClientCertificate => "client certificate".to_string(),
        };
        f.debug_struct("KubeClient")
            .field("base", &self.base)
            .field("credential", &credential)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client for `settings`: https only, trusting only `settings.ca`, no proxy, no
    /// redirects, connect timeout 5 s, request timeout 15 s. Exactly one credential
    /// must be configured: `token_file`, or `client_cert` with `client_key`.
    pub fn new(settings: &KubeSettings) -> Result<Self, KubeError> {
        let base = base_url(&settings.url)?;
        let roots = palisade_pki::load_roots(&settings.ca)
            .map_err(|e| KubeError::Config(format!("kube.ca: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| KubeError::Config(format!("TLS: {e}")))?
            .with_root_certificates(Arc::new(roots));
        let (mut tls, credential) = match (
            &settings.token_file,
            &settings.client_cert,
            &settings.client_key,
        ) {
            (Some(token), None, None) => (
                builder.with_no_client_auth(),
                Credential::TokenFile(token.clone()),
            ),
            (None, Some(cert), Some(key)) => {
                let chain = palisade_pki::load_certs(cert, "kube client certificate")
                    .map_err(|e| KubeError::Config(format!("kube.client_cert: {e}")))?;
                let key = palisade_pki::load_private_key(key)
                    .map_err(|e| KubeError::Config(format!("kube.client_key: {e}")))?;
                let tls = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| KubeError::Config(format!("kube.client_key: {e}")))?;
                (tls, Credential::ClientCertificate)
            }
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(KubeError::Config(
                    "set token_file or client_cert/client_key, not both: the agent \
                         must have exactly one identity on the kube-apiserver"
                        .into(),
                ))
            }
            _ => {
                return Err(KubeError::Config(
                    "needs token_file, or client_cert and client_key".into(),
                ))
            }
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("palisade-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KubeError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(KubeClient {
            http,
            base,
            credential,
        })
    }

    /// `kube.nodes`: every node's name, scheduling state, kubelet version and
    /// conditions (see [`NodesOutput`]).
    pub async fn nodes(&self, who: &Impersonation) -> Result<NodesOutput, KubeError> {
        let body = self.send(who, "GET", "/api/v1/nodes", None).await?;
        let list: wire::NodeList = decode(&body, "NodeList")?;
        let truncated = list.items.len() > MAX_NODES;
        let nodes = list
            .items
            .into_iter()
            .take(MAX_NODES)
            .map(wire::Node::summary)
            .collect();
        Ok(NodesOutput { nodes, truncated })
    }

    /// The apiserver's `/metrics` text, for `component.metrics` (which reduces it to
    /// its allowlist before anything leaves the agent).
    pub async fn metrics(&self, who: &Impersonation) -> Result<String, KubeError> {
        let body = self.send(who, "GET", "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `kube.webhooks`: every validating and mutating admission webhook, with the
    /// rejection and call-error counts of the apiserver's metrics.
    pub async fn webhooks(&self, who: &Impersonation) -> Result<WebhooksOutput, KubeError> {
        let mut webhooks = Vec::new();
        let mut truncated = false;
        for kind in WebhookKind::ALL {
            let path = format!("/apis/{ADMISSION_GROUP}/v1/{}", kind.resource());
            let list: wire::WebhookConfigList =
                decode(&self.send(who, "GET", &path, None).await?, kind.list_kind())?;
            for config in list.items {
                for w in config.webhooks {
                    if webhooks.len() >= MAX_WEBHOOKS {
                        truncated = true;
                        break;
                    }
                    webhooks.push(WebhookSummary {
                        kind,
                        configuration: shown_name(&config.metadata.name),
                        name: shown_name(&w.name),
                        failure_policy: shown_policy(w.failure_policy.as_deref()),
                        timeout_seconds: w.timeout_seconds.unwrap_or(10).clamp(0, 30),
                        target_host: w.client_config.host(),
                        rejections: None,
                        call_errors: None,
                    });
                }
            }
        }
        let counts_error = match self.metrics(who).await {
            Ok(text) => {
                let counts = webhook_counts(&text);
                for w in &mut webhooks {
                    let key = (w.kind.metric_type().to_string(), w.name.clone());
                    let (rejected, errors) = counts.get(&key).copied().unwrap_or_default();
                    w.rejections = Some(rejected);
                    w.call_errors = Some(errors);
                }
                None
            }
            Err(e) => Some(e.to_string().chars().take(256).collect()),
        };
        Ok(WebhooksOutput {
            webhooks,
            truncated,
            counts_error,
        })
    }

    /// `kube.webhook-bypass`: sets `failurePolicy: Ignore` on one webhook of one
    /// configuration, by a JSON patch that first tests the configuration's
    /// `resourceVersion` and the webhook's name at its index, so that it changes
    /// exactly the webhook read, or nothing.
    pub async fn bypass_webhook(
        &self,
        who: &Impersonation,
        kind: WebhookKind,
        configuration: &str,
        webhook: &str,
    ) -> Result<WebhookBypassOutput, KubeError> {
        let path = format!(
            "/apis/{ADMISSION_GROUP}/v1/{}/{configuration}",
            kind.resource()
        );
        let before: wire::WebhookConfig = decode(
            &self.send(who, "GET", &path, None).await?,
            kind.object_kind(),
        )?;
        if before.metadata.name != configuration {
            return Err(KubeError::Decode(format!(
                "asked for {kind} configuration {}, got another one",
                echo(configuration)
            )));
        }
        let index = before
            .webhooks
            .iter()
            .position(|w| w.name == webhook)
            .ok_or_else(|| {
                KubeError::Missing(format!(
                    "{kind} configuration {configuration} has no webhook {} (it has {})",
                    echo(webhook),
                    before
                        .webhooks
                        .iter()
                        .map(|w| shown_name(&w.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let was = shown_policy(before.webhooks[index].failure_policy.as_deref());
        let output = |after: String, changed: bool| WebhookBypassOutput {
            kind,
            configuration: configuration.to_string(),
            webhook: webhook.to_string(),
            failure_policy_before: was.clone(),
            failure_policy_after: after,
            changed,
        };
        if was == "Ignore" {
            return Ok(output(was.clone(), false));
        }
        let version = before
            .metadata
            .resource_version
            .ok_or_else(|| KubeError::Decode("the configuration has no resourceVersion".into()))?;
        let patch = serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "test", "path": format!("/webhooks/{index}/name"), "value": webhook},
            {"op": "add", "path": format!("/webhooks/{index}/failurePolicy"), "value": "Ignore"},
        ])
        .to_string();
        let after: wire::WebhookConfig = decode(
            &self
                .send(who, "PATCH", &path, Some(Patch::Json(patch)))
                .await?,
            kind.object_kind(),
        )?;
        let now = after
            .webhooks
            .iter()
            .find(|w| w.name == webhook)
            .map(|w| shown_policy(w.failure_policy.as_deref()))
            .unwrap_or_else(|| "(missing)".into());
        Ok(output(now, true))
    }

    /// `kube.cordon` (`unschedulable = true`) and `kube.uncordon` (`false`): reads the
    /// node, and only if it is not already in the wanted state sends kubectl's patch.
    pub async fn set_unschedulable(
        &self,
        who: &Impersonation,
        node: &str,
        unschedulable: bool,
    ) -> Result<NodeOutput, KubeError> {
        // The node name is operator input: it goes into the path and the guard judges
        // the whole path (a name like `../secrets` is refused there).
        let path = format!("/api/v1/nodes/{node}");
        let before: wire::Node = decode(&self.send(who, "GET", &path, None).await?, "Node")?;
        before.expect_name(node)?;
        if before.unschedulable() == unschedulable {
            return Ok(NodeOutput {
                node: node.to_string(),
                unschedulable,
                changed: false,
            });
        }
        let patch = if unschedulable {
            CORDON_PATCH
        } else {
            UNCORDON_PATCH
        };
        let after: wire::Node = decode(
            &self
                .send(who, "PATCH", &path, Some(Patch::StrategicMerge(patch)))
                .await?,
            "Node",
        )?;
        after.expect_name(node)?;
        Ok(NodeOutput {
            node: node.to_string(),
            unschedulable: after.unschedulable(),
            changed: true,
        })
    }

    /// The only way a request leaves: the guard first (`Allowed::parse` is
    /// [`check_request`] keeping its typed result), then the URL built from what the
    /// guard returned, the credential, the impersonation, and a bounded read.
    async fn send(
        &self,
        who: &Impersonation,
        method: &str,
        path: &str,
        patch: Option<Patch>,
    ) -> Result<Vec<u8>, KubeError> {
        let allowed = match Allowed::parse(method, path) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(
                    pseudonym = %who.pseudonym, event_id = %who.event_id, error = %e,
                    "kube request refused"
                );
                return Err(e);
            }
        };
        let body = match (&allowed, patch) {
            (Allowed::PatchNode(_), Some(p @ Patch::StrategicMerge(_)))
            | (Allowed::PatchWebhookConfig(..), Some(p @ Patch::Json(_))) => Some(p),
            (
                Allowed::ListNodes
                | Allowed::GetNode(_)
                | Allowed::Metrics
                | Allowed::ListWebhookConfigs(_)
                | Allowed::GetWebhookConfig(..),
                None,
            ) => None,
            _ => {
                return Err(KubeError::Denied {
                    method: echo(method),
                    path: echo(path),
                    resource: "nodes".into(),
                    why: "a PATCH needs its patch body and a GET has none".into(),
                })
            }
        };
        let url = self.url(&allowed)?;
        let mut headers = who.headers()?;
        if let Credential::TokenFile(file) = &self.credential {
            headers.insert(reqwest::header::AUTHORIZATION, bearer(file).await?);
        }
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(if allowed == Allowed::Metrics {
                "text/plain"
            } else {
                "application/json"
            }),
        );
        let mut request = self.http.request(allowed.method(), url).headers(headers);
        if let Some(p) = body {
            let (content_type, body) = match p {
                Patch::StrategicMerge(b) => (PATCH_CONTENT_TYPE, b.to_string()),
                Patch::Json(b) => (JSON_PATCH_CONTENT_TYPE, b),
            };
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type),
                )
                .body(body);
        }
        tracing::info!(
            method = %allowed.method(), path = %allowed.path(),
            pseudonym = %who.pseudonym, event_id = %who.event_id, log_entry = %who.log_entry,
            "kube request"
        );
        let mut response = request
            .send()
            .await
            .map_err(|e| KubeError::Transport(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let reason = read_bounded(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .ok()
                .and_then(|b| status_reason(&b));
            return Err(KubeError::Status {
                code: status.as_u16(),
                reason,
            });
        }
        read_bounded(&mut response, MAX_RESPONSE_BYTES).await
    }

    /// The URL for a checked request, refused if URL parsing changed the path (it
    /// resolves `..` and escapes; the guard already refused those, this keeps it so).
    fn url(&self, allowed: &Allowed) -> Result<Url, KubeError> {
        let path = allowed.path();
        let url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| KubeError::Config(format!("kube.url: {e}")))?;
        if url.path() != path || url.query().is_some() || url.fragment().is_some() {
            return Err(KubeError::Denied {
                method: allowed.method().to_string(),
                path: echo(&path),
                resource: "nodes".into(),
                why: format!(
                    "the URL would be {:?}, not the checked path",
                    echo(url.as_str())
                ),
            });
        }
        Ok(url)
    }
}

/// Per (metric `type`, webhook name): (rejections, call errors), from the
/// apiserver's `apiserver_admission_webhook_rejection_count`.
fn webhook_counts(text: &str) -> std::collections::HashMap<(String, String), (u64, u64)> {
    let mut counts: std::collections::HashMap<(String, String), (u64, u64)> = Default::default();
    for line in text.lines() {
        if !line.starts_with("apiserver_admission_webhook_rejection_count{") {
            continue;
        }
        let Some((_, labels, value)) = crate::prom::parse_sample(line) else {
            continue;
        };
        let (Some(name), Some(kind)) = (labels.get("name"), labels.get("type")) else {
            continue;
        };
        let n = if value.is_finite() && value > 0.0 {
            value as u64
        } else {
            0
        };
        let entry = counts.entry((kind.clone(), name.clone())).or_default();
        match labels.get("error_type").map(String::as_str) {
            Some("no_error") => entry.0 += n,
            Some("calling_webhook_error") => entry.1 += n,
            _ => {}
        }
    }
    counts
}

/// `https://host[:port]` from `kube.url`; anything but a bare https origin is refused.
fn base_url(url: &str) -> Result<String, KubeError> {
    let bad = |why: &str| KubeError::Config(format!("kube.url {:?}: {why}", echo(url)));
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(bad("the kube-apiserver is only reached over https"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials do not belong in the URL"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return Err(bad(
            "give only https://host:port (no path, query or fragment)",
        ));
    }
    Ok(parsed.origin().ascii_serialization())
}

/// `Bearer <token>` from the token file, read now. The value is marked sensitive and no
/// error message contains it.
async fn bearer(file: &Path) -> Result<HeaderValue, KubeError> {
    let shown = file.display();
    let meta = tokio::fs::metadata(file)
        .await
        .map_err(|e| KubeError::Config(format!("kube.token_file {shown}: {e}")))?;
    if meta.len() > MAX_TOKEN_BYTES {
        return Err(KubeError::Config(format!(
            "kube.token_file {shown}: larger than {MAX_TOKEN_BYTES} bytes; not a token"
        )));
    }
    let raw = tokio::fs::read(file)
        .await
        .map_err(|e| KubeError::Config(format!("kube.token_file {shown}: {e}")))?;
    let token = raw.trim_ascii();
    if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return Err(KubeError::Config(format!(
            "kube.token_file {shown}: empty or not a printable token"
        )));
    }
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(token);
    let mut value = HeaderValue::from_bytes(&value)
        .map_err(|_| KubeError::Config(format!("kube.token_file {shown}: not a header value")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads at most `limit` bytes of the body; more is an error.
async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, KubeError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(KubeError::Decode(format!(
            "response larger than {limit} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| KubeError::Transport(error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(KubeError::Decode(format!(
                "response larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `reason` of a `Status` object: a CamelCase word, at most 64 characters, only
/// ASCII alphanumerics kept. The rest of the body (its `message`, which may quote
/// request data) is never looked at.
fn status_reason(body: &[u8]) -> Option<String> {
    let status: wire::Status = serde_json::from_slice(body).ok()?;
    if status.kind.as_deref() != Some("Status") {
        return None;
    }
    let reason: String = status
        .reason?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    (!reason.is_empty()).then_some(reason)
}

fn decode<T: serde::de::DeserializeOwned + wire::Kind>(
    body: &[u8],
    want: &str,
) -> Result<T, KubeError> {
    let value: T = serde_json::from_slice(body)
        .map_err(|e| KubeError::Decode(format!("not a {want}: {e}")))?;
    match value.kind() {
        Some(k) if k != want => Err(KubeError::Decode(format!(
            "expected a {want}, got kind {:?}",
            echo(k)
        ))),
        _ => Ok(value),
    }
}

/// An error with its sources (TLS failures are in the sources: "invalid peer
/// certificate: UnknownIssuer").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Only the fields the outputs need; serde skips everything else unread (labels,
/// annotations, addresses, images, taints, condition messages, …).
mod wire {
    use super::*;
    use crate::node_conditions;

    pub(super) trait Kind {
        fn kind(&self) -> Option<&str>;
    }

    #[derive(Deserialize)]
    pub(super) struct Status {
        pub kind: Option<String>,
        pub reason: Option<String>,
    }

    #[derive(Deserialize)]
    pub(super) struct WebhookConfigList {
        kind: Option<String>,
        #[serde(default)]
        pub items: Vec<WebhookConfig>,
    }

    impl Kind for WebhookConfigList {
        fn kind(&self) -> Option<&str> {
            self.kind.as_deref()
        }
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct WebhookConfig {
        kind: Option<String>,
        pub metadata: WebhookMeta,
        pub webhooks: Vec<Webhook>,
    }

    impl Kind for WebhookConfig {
        fn kind(&self) -> Option<&str> {
            self.kind.as_deref()
        }
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct WebhookMeta {
        pub name: String,
        pub resource_version: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Webhook {
        pub name: String,
        pub failure_policy: Option<String>,
        pub timeout_seconds: Option<i64>,
        pub client_config: ClientConfig,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct ClientConfig {
        url: Option<String>,
        service: Option<ServiceRef>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ServiceRef {
        name: String,
        namespace: String,
    }

    impl ClientConfig {
        /// The target's host only: `name.namespace.svc`, or the URL's host.
        pub fn host(&self) -> String {
            let host = match (&self.service, &self.url) {
                (Some(s), _) => format!("{}.{}.svc", s.name, s.namespace),
                (None, Some(u)) => Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default(),
                (None, None) => String::new(),
            };
            let ip = host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok();
            if ip || is_dns1123_subdomain(&host) {
                host
            } else {
                "(not a host name)".into()
            }
        }
    }

    #[derive(Deserialize)]
    pub(super) struct NodeList {
        kind: Option<String>,
        #[serde(default)]
        pub items: Vec<Node>,
    }

    impl Kind for NodeList {
        fn kind(&self) -> Option<&str> {
            self.kind.as_deref()
        }
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct Node {
        kind: Option<String>,
        metadata: Metadata,
        spec: Spec,
        status: NodeStatus,
    }

    impl Kind for Node {
        fn kind(&self) -> Option<&str> {
            self.kind.as_deref()
        }
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Metadata {
        name: String,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Spec {
        unschedulable: Option<bool>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct NodeStatus {
        node_info: NodeInfo,
        conditions: Vec<Condition>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct NodeInfo {
        kubelet_version: String,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Condition {
        #[serde(rename = "type")]
        kind: String,
        status: String,
        reason: Option<String>,
        last_transition_time: Option<String>,
    }

    impl Node {
        pub fn unschedulable(&self) -> bool {
            self.spec.unschedulable.unwrap_or(false)
        }

        pub fn expect_name(&self, name: &str) -> Result<(), KubeError> {
            if self.metadata.name == name {
                Ok(())
            } else {
                Err(KubeError::Decode(format!(
                    "asked for node {name:?}, got {:?}",
                    bounded(&self.metadata.name, MAX_NAME_BYTES)
                )))
            }
        }

        pub fn summary(self) -> NodeSummary {
            let ready = self
                .status
                .conditions
                .iter()
                .find(|c| c.kind == "Ready")
                .and_then(|c| match c.status.as_str() {
                    "True" => Some(true),
                    "False" => Some(false),
                    _ => None,
                });
            NodeSummary {
                unschedulable: self.unschedulable(),
                name: bounded(&self.metadata.name, MAX_NAME_BYTES),
                kubelet_version: node_conditions::kubelet_version(
                    &self.status.node_info.kubelet_version,
                ),
                ready,
                conditions: self
                    .status
                    .conditions
                    .into_iter()
                    .take(MAX_CONDITIONS)
                    // Any `nodes/status` writer sets these strings: only
                    // well-known ones pass, the rest read `other`.
                    .map(|c| NodeCondition {
                        kind: node_conditions::condition_type(&c.kind),
                        status: node_conditions::status(&c.status),
                        reason: c.reason.map(|r| node_conditions::reason(&r)),
                        last_transition_time: c
                            .last_transition_time
                            .map(|t| bounded(&t, MAX_SHORT_BYTES)),
                    })
                    .collect(),
            }
        }
    }

    /// At most `max` bytes of `s`, cut on a character boundary, control characters
    /// dropped (they have no place in these fields and could forge log lines).
    pub(super) fn bounded(s: &str, max: usize) -> String {
        let mut out = String::new();
        for c in s.chars().filter(|c| !c.is_control()) {
            if out.len() + c.len_utf8() > max {
                break;
            }
            out.push(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_subdomain_rules() {
        for ok in ["n1", "ip-10-0-0-1.ec2.internal", "a", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a..b",
            ".a",
            "a.",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn target_names_what_tricks_would_reach() {
        let name = |p: &str| Target::of(p).to_string();
        assert_eq!(name("/api/v1/nodes/../secrets"), "secrets");
        assert_eq!(name("/api/v1/nodes/%2e%2e/secrets"), "secrets");
        assert_eq!(name("/api/v1/nodes/%252e%252e/configmaps"), "configmaps");
        assert_eq!(name("/api/v1/namespaces/x/pods/p/exec"), "pods/exec");
        assert_eq!(name("/api/v1/watch/namespaces/x/secrets"), "secrets");
        assert_eq!(name("/apis/example.com/v1/widgets"), "widgets.example.com");
        assert_eq!(name("/logs"), "non-resource URL /logs");
        assert_eq!(name("/api/v1/nodes/n1"), "nodes");
    }

    #[test]
    fn log_entry_must_be_origin_hash_index() {
        assert!(check_log_entry("palisade.test/clusters/c1#42").is_ok());
        for bad in ["", "#1", "o#", "o#x", "o 1#1", "o#1#2", "o,x#1", "o\n#1"] {
            assert!(check_log_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounded_cuts_on_char_boundaries_and_drops_controls() {
        assert_eq!(wire::bounded("ab\ncd", 10), "abcd");
        assert_eq!(wire::bounded("ééé", 5), "éé");
    }
}
