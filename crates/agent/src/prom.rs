//! `component.metrics`: a component's Prometheus metrics, reduced to an allowlist.
//!
//! What leaves the agent is names and numbers: the families listed for the component
//! in [`allowed_families`], and of their samples only those whose every label name is
//! in [`ALLOWED_LABELS`] and whose `resource` label, if any, names a built-in
//! Kubernetes resource ([`BUILT_IN_RESOURCES`]). A sample with any other label (a
//! webhook's name, a custom resource, a peer's id, a path) is dropped, not stripped of
//! the label, and counted; so is every family not on the list. The parser is strict
//! and bounded: a line it cannot read is dropped and counted too.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const METRICS_SCHEMA: &str = "palisade.dev/output/component-metrics/v1";

/// The most samples one output carries; the rest are dropped and counted.
pub const MAX_SAMPLES: usize = 2_000;

/// Label names a kept sample may carry. (`type` is not one: the apiserver's etcd
/// request metrics put a resource's group-qualified name in it, a custom resource's
/// included.)
pub const ALLOWED_LABELS: &[&str] = &[
    "code",
    "le",
    "operation",
    "quantile",
    "request_kind",
    "resource",
    "result",
    "scope",
    "verb",
];

/// Labels removed from a sample before it is kept (samples then equal are summed):
/// they only refine a built-in `resource` or say how the apiserver served it.
pub const STRIPPED_LABELS: &[&str] = &["component", "dry_run", "group", "subresource", "version"];

/// The values a `resource` label may have: Kubernetes' built-in resources (plural,
/// lower case). A custom resource's name is the customer's and is dropped.
pub const BUILT_IN_RESOURCES: &[&str] = &[
    "apiservices",
    "certificatesigningrequests",
    "clusterrolebindings",
    "clusterroles",
    "configmaps",
    "controllerrevisions",
    "cronjobs",
    "csidrivers",
    "csinodes",
    "csistoragecapacities",
    "customresourcedefinitions",
    "daemonsets",
    "deployments",
    "endpoints",
    "endpointslices",
    "events",
    "flowschemas",
    "horizontalpodautoscalers",
    "ingressclasses",
    "ingresses",
    "jobs",
    "leases",
    "limitranges",
    "mutatingwebhookconfigurations",
    "namespaces",
    "networkpolicies",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "poddisruptionbudgets",
    "pods",
    "podtemplates",
    "priorityclasses",
    "prioritylevelconfigurations",
    "replicasets",
    "replicationcontrollers",
    "resourcequotas",
    "rolebindings",
    "roles",
    "runtimeclasses",
    "secrets",
    "serviceaccounts",
    "services",
    "statefulsets",
    "storageclasses",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "validatingwebhookconfigurations",
    "volumeattachments",
];

/// The metric families kept for each component.
pub fn allowed_families(component: &str) -> &'static [&'static str] {
    const PROCESS: &[&str] = &[
        "go_goroutines",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_resident_memory_bytes",
    ];
    const ETCD: &[&str] = &[
        "etcd_debugging_mvcc_keys_total",
        "etcd_disk_backend_commit_duration_seconds",
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "etcd_server_has_leader",
        "etcd_server_is_learner",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_failed_total",
        "etcd_server_proposals_pending",
        "etcd_server_quota_backend_bytes",
        "etcd_server_slow_apply_total",
        "etcd_server_slow_read_indexes_total",
        "go_goroutines",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_resident_memory_bytes",
    ];
    const APISERVER: &[&str] = &[
        "apiserver_current_inflight_requests",
        "apiserver_request_duration_seconds",
        "apiserver_request_total",
        "apiserver_storage_objects",
        "go_goroutines",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_resident_memory_bytes",
    ];
    const CONTROLLER_MANAGER: &[&str] = &[
        "go_goroutines",
        "leader_election_master_status",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_resident_memory_bytes",
    ];
    const SCHEDULER: &[&str] = &[
        "go_goroutines",
        "leader_election_master_status",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_resident_memory_bytes",
        "scheduler_pending_pods",
        "scheduler_schedule_attempts_total",
    ];
    match component {
        "etcd" => ETCD,
        "kube-apiserver" => APISERVER,
        "kube-controller-manager" => CONTROLLER_MANAGER,
        "kube-scheduler" => SCHEDULER,
        _ => PROCESS,
    }
}

/// One kept sample: its name (the family's, or with `_bucket`, `_sum`, `_count`),
/// its allowlisted labels and its value as Prometheus wrote it, re-rendered from the
/// parsed number (`+Inf`, `-Inf`, `NaN` as such).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    #[serde(rename = "type")]
    pub kind: String,
    pub samples: Vec<Sample>,
}

/// Output of `component.metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsOutput {
    pub component: String,
    pub families: Vec<Family>,
    /// Families present but not on the component's list.
    pub dropped_families: u64,
    /// Samples of kept families dropped for a label (or a label value) not allowed,
    /// for a line that could not be read, or beyond [`MAX_SAMPLES`].
    pub dropped_samples: u64,
}

/// A family's kept samples: (sample name, labels) → summed value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Reduces Prometheus text exposition `text` of `component` to the allowlist.
pub fn reduce(component: &str, text: &str) -> MetricsOutput {
    let allowed = allowed_families(component);
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    // family → (sample name, labels) → summed value
    let mut families: BTreeMap<String, Samples> = BTreeMap::new();
    let mut dropped: std::collections::BTreeSet<String> = Default::default();
    let mut dropped_samples = 0u64;
    let mut kept = 0usize;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                if matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    kinds.insert(name.to_string(), kind.to_string());
                }
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, mut labels, value)) = parse_sample(line) else {
            dropped_samples += 1;
            continue;
        };
        let family = family_of(&name, &kinds);
        if !allowed.contains(&family.as_str()) {
            dropped.insert(family);
            continue;
        }
        labels.retain(|k, _| !STRIPPED_LABELS.contains(&k.as_str()));
        let labels_ok = labels.iter().all(|(k, v)| {
            ALLOWED_LABELS.contains(&k.as_str())
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:+-".contains(&b))
                && (k != "resource" || BUILT_IN_RESOURCES.contains(&v.as_str()))
        });
        if !labels_ok {
            dropped_samples += 1;
            continue;
        }
        let samples = families.entry(family).or_default();
        let key = (name, labels);
        if !samples.contains_key(&key) {
            if kept >= MAX_SAMPLES {
                dropped_samples += 1;
                continue;
            }
            kept += 1;
        }
        *samples.entry(key).or_insert(0.0) += value;
    }
    MetricsOutput {
        component: component.to_string(),
        families: families
            .into_iter()
            .map(|(name, samples)| Family {
                kind: kinds
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| "untyped".to_string()),
                name,
                samples: samples
                    .into_iter()
                    .map(|((name, labels), value)| Sample {
                        name,
                        labels,
                        value: render(value),
                    })
                    .collect(),
            })
            .collect(),
        dropped_families: u64::try_from(dropped.len()).unwrap_or(u64::MAX),
        dropped_samples,
    }
}

/// The family a sample belongs to: its own name, or without the suffix a histogram
/// or summary adds.
fn family_of(name: &str, kinds: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                kinds.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn render(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// `name{k="v",…} value [timestamp]`, or `None` if the line is not exactly that.
pub(crate) fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.len() > 200 || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    // An optional timestamp, then nothing.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some((name.to_string(), labels, value))
}

/// Labels up to the closing `}`; returns them and what follows.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty()
            || key.len() > 100
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
            if value.len() > 1_024 {
                return None;
            }
        };
        labels.insert(key.to_string(), value);
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_escapes_and_timestamps() {
        let (n, l, v) =
            parse_sample(r#"x_total{a="b\"c",d="e\\f"} 12 1700000000000"#).expect("sample");
        assert_eq!(n, "x_total");
        assert_eq!(l.get("a").map(String::as_str), Some("b\"c"));
        assert_eq!(l.get("d").map(String::as_str), Some("e\\f"));
        assert!((v - 12.0).abs() < f64::EPSILON);
        assert!(parse_sample("x 1 2 3").is_none());
        assert!(parse_sample(r#"x{a="b" 1"#).is_none());
        assert!(parse_sample("x{a=b} 1").is_none());
        assert!(parse_sample("x one").is_none());
        assert_eq!(render(f64::INFINITY), "+Inf");
        assert_eq!(render(8_388_608.0), "8388608");
        assert_eq!(render(0.25), "0.25");
    }

    #[test]
    fn histogram_samples_belong_to_their_family() {
        let text = "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n\
                    etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 3\n\
                    etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 9\n\
                    etcd_disk_wal_fsync_duration_seconds_sum 0.5\n\
                    etcd_disk_wal_fsync_duration_seconds_count 9\n\
                    # TYPE etcd_network_peer_round_trip_time_seconds histogram\n\
                    etcd_network_peer_round_trip_time_seconds_bucket{To=\"8e9e05c52164694d\",le=\"0.1\"} 1\n";
        let out = reduce("etcd", text);
        assert_eq!(out.families.len(), 1, "{out:?}");
        let f = &out.families[0];
        assert_eq!(
            (f.name.as_str(), f.kind.as_str(), f.samples.len()),
            ("etcd_disk_wal_fsync_duration_seconds", "histogram", 4)
        );
        assert_eq!(out.dropped_families, 1);
        assert_eq!(out.dropped_samples, 0);
    }
}
