//! Policy validator benchmark (docs/performance.md records the figures):
//!
//! ```sh
//! cargo bench -p palisade-benches --bench policy
//! POLICY_BENCH_N=1000000 cargo bench -p palisade-benches --bench policy
//! ```
//!
//! Builds a 200-action policy (catalogue entries cloned under distinct names), then
//! times single validations of realistic requests — raw JSON bytes in, a
//! `ValidatedAction` out — and reports p50/p99/p99.9/max per request kind.
//! Target: p99 ≤ 20 µs. Also times linting the 200-action policy.
#![forbid(unsafe_code)]

use palisade_policy::Policy;
use std::hint::black_box;
use std::time::Instant;

const ACTIONS: usize = 200;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const TEMPLATES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "kube.cordon",
        "cluster",
        "mutate",
        "kube-node",
        "    params:\n      node: {type: string, maxLength: 253}\n",
    ),
    (
        "etcd.backup-prune",
        "cluster",
        "disruptive",
        "etcd-backup-prune",
        "    params:\n      keep_last: {type: integer, min: 3, max: 1000}\n      older_than: {type: duration, required: false, min: 7d, max: 366d}\n",
    ),
    (
        "component.upgrade",
        "instance",
        "disruptive",
        "component-upgrade",
        "    params:\n      component: {type: enum, values: [etcd, kube-apiserver, kube-controller-manager, kube-scheduler]}\n      version: {type: string, maxLength: 16, pattern: 'v?[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}'}\n",
    ),
    ("etcd.status", "instance", "read", "etcd-status", ""),
    (
        "component.restart",
        "instance",
        "disruptive",
        "component-restart",
        "    params:\n      component: {type: enum, values: [etcd, kube-apiserver]}\n      wait_healthy: {type: boolean, required: false}\n",
    ),
];

fn policy_text() -> String {
    let mut text = String::from(
        "apiVersion: palisade.dev/v1\nkind: ActionPolicy\nmetadata:\n  version: 7\nactions:\n",
    );
    for i in 0..ACTIONS {
        let Some((handler, target, risk, schema, params)) = TEMPLATES.get(i % TEMPLATES.len())
        else {
            continue;
        };
        text.push_str(&format!(
            "  - name: {handler}-{i}\n    description: Bench action {i}.\n    handler: {handler}\n    target: {target}\n    role: operator\n    risk: {risk}\n    outputSchema: palisade.dev/output/{schema}/v1\n    rateLimit: {{max: 10, per: 1m}}\n    justification: {{ticketPattern: \"[A-Z][A-Z0-9]{{1,15}}-[0-9]{{1,10}}\", minReasonLength: 10}}\n{params}"
        ));
    }
    text
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn report(label: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    println!(
        "{label:<44} n={:>8}  p50={:>6.2} µs  p99={:>6.2} µs  p99.9={:>7.2} µs  max={:>8.2} µs",
        ns.len(),
        percentile(&ns, 0.50) as f64 / 1000.0,
        percentile(&ns, 0.99) as f64 / 1000.0,
        percentile(&ns, 0.999) as f64 / 1000.0,
        ns.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

fn main() {
    let n = env_usize("POLICY_BENCH_N", 200_000);
    let text = policy_text();

    let mut lint_ns = Vec::new();
    let mut policy = None;
    for _ in 0..20 {
        let t = Instant::now();
        let p = Policy::parse_yaml(black_box(&text));
        lint_ns.push(t.elapsed().as_nanos() as u64);
        policy = Some(p);
    }
    let policy = match policy {
        Some(Ok(p)) => p,
        Some(Err(e)) => panic!("bench policy does not lint: {e:#?}"),
        None => panic!("no policy"),
    };
    assert_eq!(policy.actions().count(), ACTIONS);
    println!(
        "policy: {} actions, {} bytes of YAML, digest {}",
        ACTIONS,
        text.len(),
        policy.digest()
    );
    report("lint + compile the 200-action policy", lint_ns);

    let requests: &[(&str, &str, &[u8])] = &[
        (
            "kube.cordon (string + DNS pattern)",
            "kube.cordon-100",
            br#"{"node":"ip-10-0-17-4.eu-west-1.compute.internal"}"#,
        ),
        (
            "etcd.backup-prune (integer + duration)",
            "etcd.backup-prune-101",
            br#"{"keep_last":14,"older_than":"30d"}"#,
        ),
        (
            "component.upgrade (enum + 2 patterns)",
            "component.upgrade-102",
            br#"{"component":"kube-apiserver","version":"v1.31.2"}"#,
        ),
        ("etcd.status (no parameters)", "etcd.status-103", b"{}"),
        (
            "kube.cordon refused (option injection)",
            "kube.cordon-195",
            br#"{"node":"--force"}"#,
        ),
    ];
    for (label, action, params) in requests {
        let expect_ok = !label.contains("refused");
        // Warm up.
        for _ in 0..1_000 {
            let _ = black_box(policy.validate(action, params));
        }
        let mut ns = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = policy.validate(black_box(action), black_box(params));
            let elapsed = t.elapsed().as_nanos() as u64;
            assert_eq!(r.is_ok(), expect_ok, "{label}: {r:?}");
            black_box(r.ok());
            ns.push(elapsed);
        }
        report(label, ns);
    }
}
