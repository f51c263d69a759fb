//! deploy/ cannot rot: every reference configuration loads with the parser and
//! checks of the process that reads it, the systemd units pass `systemd-analyze
//! verify`, the Kubernetes files agree with the KMS plugin's and the agent's
//! settings, and every metric an alert rule names is exported by a running stack.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::{require_tool, Stack};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// The value after `flag` in a component's arguments.
fn arg<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(i + 1).map(String::as_str).expect("a value")
}

#[test]
fn management_and_instance_configurations_load_with_the_real_parsers() {
    let gateway: palisade_gateway::config::GatewayConfig =
        palisade_core::config::load(&deploy("management/gateway.toml")).expect("gateway.toml");
    assert!(
        matches!(
            gateway.state.backend(),
            palisade_state::StateBackend::Etcd { .. }
        ),
        "the gateways of the reference deployment share their state in etcd"
    );
    let log: palisade_tlog_service::config::LogConfig =
        palisade_core::config::load(&deploy("management/log.toml")).expect("log.toml");
    assert!(log.leader.is_some(), "the reference log runs with a lease");
    assert!(matches!(
        log.storage,
        palisade_tlog_service::config::StorageConfig::S3 { .. }
    ));
    let _: palisade_tlog_service::witness_server::WitnessConfig =
        palisade_core::config::load(&deploy("management/witness.toml")).expect("witness.toml");
    let agent: palisade_agent::config::AgentConfig =
        palisade_core::config::load(&deploy("agent/agent.example.toml")).expect("agent");
    assert!(agent.metrics_listen.is_some());

    // A three-member etcd, bootstrapped together, with TLS for clients and peers.
    let component = |name: &str| {
        agent
            .components
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} component"))
            .args
            .clone()
    };
    let etcd = component("etcd");
    let members: Vec<&str> = arg(&etcd, "--initial-cluster").split(',').collect();
    assert_eq!(members.len(), 3, "{members:?}");
    let me = arg(&etcd, "--name");
    assert!(members.iter().any(|m| m.starts_with(&format!("{me}="))));
    for flag in ["--client-cert-auth", "--peer-client-cert-auth"] {
        assert!(etcd.iter().any(|a| a == flag), "etcd without {flag}");
    }
    assert!(arg(&etcd, "--listen-client-urls")
        .split(',')
        .all(|u| u.starts_with("https://")));

    // kube-apiserver encrypts through the plugin the KMS example configures, with
    // the audit policy shipped beside it.
    let apiserver = component("kube-apiserver");
    assert_eq!(
        arg(&apiserver, "--encryption-provider-config"),
        "/etc/kubernetes/encryption-config.yaml"
    );
    assert_eq!(
        arg(&apiserver, "--audit-policy-file"),
        "/etc/kubernetes/audit-policy.yaml"
    );
    let kms_listen = read("kms/kms.example.toml")
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("kms listen");
    let encryption = read("kubernetes/encryption-config.yaml");
    assert!(
        encryption.contains(&format!("endpoint: {kms_listen}")),
        "the EncryptionConfiguration does not name the plugin's socket {kms_listen}"
    );
    assert!(encryption.contains("apiVersion: v2") && encryption.contains("- secrets"));
    assert!(read("kubernetes/audit-policy.yaml").contains("kind: Policy"));
    // The KMS plugin admits exactly one uid (kube-apiserver's), not root.
    let uids = read("kms/kms.example.toml")
        .lines()
        .find_map(|l| l.strip_prefix("allow_uids = "))
        .map(str::to_string)
        .expect("allow_uids");
    assert!(uids != "[0]" && !uids.contains(','), "{uids}");
    // Controller-manager and scheduler use the kubeconfigs shipped here.
    for (name, file) in [
        ("kube-controller-manager", "controller-manager.kubeconfig"),
        ("kube-scheduler", "scheduler.kubeconfig"),
    ] {
        let args = component(name);
        assert_eq!(
            arg(&args, "--kubeconfig"),
            format!("/etc/kubernetes/{file}")
        );
        assert!(read(&format!("kubernetes/{file}")).contains("server: https://127.0.0.1:6443"));
    }
}

#[test]
fn systemd_units_and_timers_pass_systemd_analyze_verify() {
    require_tool("systemd-analyze", "apt-get install systemd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for e in std::fs::read_dir(deploy("systemd")).expect("deploy/systemd") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        // The binaries as installed are /usr/local/bin/palisade and, on instances,
        // /usr/local/bin/palisade-agent; here, the ones built.
        let text = std::fs::read_to_string(&p)
            .expect("unit")
            .replace(
                "/usr/local/bin/palisade-agent",
                env!("CARGO_BIN_EXE_palisade-agent"),
            )
            .replace(
                "/usr/local/bin/palisade ",
                &format!("{} ", env!("CARGO_BIN_EXE_palisade")),
            );
        // A template is verified as an instance of it (`@demo`).
        let name = name.replace("@.", "@demo.");
        std::fs::write(tmp.path().join(&name), text).expect("copy");
        units.push(name);
    }
    for needed in [
        "palisade-gateway.service",
        "palisade-log.service",
        "palisade-witness.service",
        "palisade-kms.service",
        "palisade-agent.service",
        "palisade-audit-watch.service",
        "palisade-policy-refresh.service",
        "palisade-policy-refresh.timer",
        "palisade-backup@demo.service",
        "palisade-backup@demo.timer",
    ] {
        assert!(
            units.iter().any(|u| u == needed),
            "no {needed} in deploy/systemd"
        );
    }
    units.sort();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| tmp.path().join(u)))
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // Every long-running service is hardened the same way.
    for u in units.iter().filter(|u| u.ends_with(".service")) {
        let text = std::fs::read_to_string(tmp.path().join(u)).expect("unit");
        for line in ["ProtectSystem=strict", "NoNewPrivileges=yes"] {
            assert!(text.contains(line), "{u} lacks {line}");
        }
        if !u.contains("audit-watch") {
            assert!(text.contains("ReadWritePaths="), "{u} lacks ReadWritePaths");
            assert!(
                text.contains("\nUser=palisade-"),
                "{u} runs as no dedicated user"
            );
        }
    }
}

/// The metric names in an OpenMetrics/Prometheus text exposition: every sample's
/// name, and for each counter its `_total` sample name.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.insert(name.to_string());
                if kind == "counter" {
                    names.insert(format!("{name}_total"));
                }
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_an_alert_names_is_exported_by_a_running_stack() {
    let alerts = read("prometheus/alerts.yaml");
    let named: BTreeSet<String> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("palisade_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in [
        "palisade_log_checkpoint_age_seconds",
        "palisade_trust_expires_in_seconds",
        "palisade_kms_backend_healthy",
        "palisade_agent_last_backup_timestamp_seconds",
    ] {
        assert!(named.contains(needed), "no alert on {needed}");
    }

    let stack = Stack::start();
    let mut all = BTreeSet::new();
    let (status, body) = stack.gateway().call_raw("GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    all.extend(exported(body.as_str().expect("text")));
    for (offset, who) in [(7, "agent"), (8, "log"), (9, "witness"), (10, "kms")] {
        let url = format!("http://127.0.0.1:{}", stack.base + offset);
        let (status, body) = harness::GatewayClient::new(&url, &stack.dir.join("pki/ca.crt"))
            .call_raw("GET", "/metrics", None, "")
            .await;
        assert_eq!(status, 200, "the {who}'s metrics at {url}: {body}");
        let text = body.as_str().expect("text");
        let names = exported(text);
        assert!(!names.is_empty(), "the {who} exports nothing: {text}");
        all.extend(names);
    }
    let missing: Vec<&String> = named.iter().filter(|n| !all.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "alerts name metrics no process exports: {missing:?}\nexported: {all:?}"
    );
}
