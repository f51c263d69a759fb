//! Claim C2 (no customer content): `component.metrics` returns allowlisted metric
//! families with names and numbers only. A recorded kube-apiserver `/metrics` carrying
//! a canary in a webhook's name, a custom resource's name and a path is reduced: the
//! canary is in no kept sample, and what was dropped is counted. (etcd's real
//! `/metrics` is reduced in tests/e2e/incidents.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_agent::prom::{reduce, ALLOWED_LABELS, BUILT_IN_RESOURCES};

const RECORDED: &str = include_str!("fixtures/kube-apiserver.metrics");
const CANARY: &str = "7f3a";

#[test]
fn kube_apiserver_metrics_keep_built_in_resources_and_drop_everything_named_by_the_customer() {
    assert!(
        RECORDED.contains(CANARY),
        "the fixture must carry the canary"
    );
    let out = reduce("kube-apiserver", RECORDED);
    let text = serde_json::to_string(&out).unwrap();
    assert!(!text.contains(CANARY), "the canary left: {text}");
    assert!(!text.contains("path"), "a path label left: {text}");

    let names: Vec<&str> = out.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "apiserver_current_inflight_requests",
            "apiserver_request_duration_seconds",
            "apiserver_request_total",
            "apiserver_storage_objects",
            "go_goroutines",
            "process_resident_memory_bytes",
        ]
    );
    // Not on the list: the webhook rejection counts (they name the webhook), the
    // audit counter, and the etcd request latencies (a resource's group-qualified
    // name in `type`).
    assert_eq!(out.dropped_families, 3, "{text}");
    // The custom resource and the path in apiserver_request_total, the custom
    // resource's object count, and the two lines that do not parse.
    assert_eq!(out.dropped_samples, 5, "{text}");

    let total = out
        .families
        .iter()
        .find(|f| f.name == "apiserver_request_total")
        .unwrap();
    let resources: Vec<&str> = total
        .samples
        .iter()
        .map(|s| s.labels["resource"].as_str())
        .collect();
    assert_eq!(resources, ["nodes", "secrets"]);
    // `component`, `group`, `subresource`, `version`… are stripped; the samples that
    // are then the same are summed (GET nodes and GET nodes/status).
    assert_eq!(total.samples[0].value, "1540");
    assert!(total
        .samples
        .iter()
        .all(|s| !s.labels.contains_key("group")));
    assert_eq!(total.kind, "counter");
    let histogram = out
        .families
        .iter()
        .find(|f| f.name == "apiserver_request_duration_seconds")
        .unwrap();
    assert_eq!(histogram.kind, "histogram");
    assert_eq!(histogram.samples.len(), 4);
    assert!(histogram
        .samples
        .iter()
        .any(|s| s.labels.get("le").map(String::as_str) == Some("+Inf")));
    let rss = out
        .families
        .iter()
        .find(|f| f.name == "process_resident_memory_bytes")
        .unwrap();
    assert_eq!(rss.samples[0].value, "618991616");
    for f in &out.families {
        for s in &f.samples {
            for (k, v) in &s.labels {
                assert!(ALLOWED_LABELS.contains(&k.as_str()), "{k}");
                assert!(k != "resource" || BUILT_IN_RESOURCES.contains(&v.as_str()));
            }
        }
    }
}

#[test]
fn another_component_keeps_only_its_own_families() {
    let out = reduce("kube-scheduler", RECORDED);
    let names: Vec<&str> = out.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["go_goroutines", "process_resident_memory_bytes"]);
}
