//! `certs.rotate`: a supervised etcd's serving certificate, one day from expiry, is
//! renewed from the CA on the instance (a new key, the same names), etcd is restarted
//! with a health wait and serves the new certificate. The output carries names, dates
//! and serials only. A CA that did not issue the certificate renews nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../agent/support/mod.rs"]
mod support;

use palisade_agent::config::{CertKind, ComponentSettings, NamedCert};
use palisade_agent::renew::{rotate, RotateError};
use palisade_agent::supervisor::{ComponentState, Supervisor};
use palisade_core::time::Timestamp;
use palisade_pki::{CaPaths, CertName, Role};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{free_port, ReleaseRepo};

const VERSION: &str = "3.4.23";

/// The serial of the certificate served on `port`, as openssl prints it (hex).
fn served_serial(port: u16) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl is needed for this test: apt-get install openssl");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.strip_prefix("serial=")
        .unwrap_or_else(|| panic!("no serial from openssl: {text:?}"))
        .to_ascii_lowercase()
}

async fn wait_running(sup: &Supervisor) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = sup.status(Some("etcd")).await.unwrap();
        if s.components[0].state == ComponentState::Running {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd never became healthy: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn renewable(name: &str, cert: &Path, key: &Path, ca: &CaPaths) -> NamedCert {
    NamedCert {
        name: name.into(),
        path: cert.to_path_buf(),
        component: Some("etcd".into()),
        kind: Some(CertKind::Serving),
        key: Some(key.to_path_buf()),
        ca_cert: Some(ca.cert.clone()),
        ca_key: Some(ca.key.clone()),
        renew_days: Some(30),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_serving_certificate_is_renewed_and_etcd_serves_the_new_one() {
    let bytes = support::etcd_binary();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let releases = ReleaseRepo::new(&dir.join("trust"));
    releases.publish("etcd", VERSION, &bytes);

    let pki = dir.join("etcd-pki");
    let ca = palisade_pki::init_ca(&pki, false).unwrap();
    let issued = palisade_pki::issue(
        &pki,
        Role::Log,
        &CertName::new("etcd").unwrap(),
        &[],
        1,
        false,
    )
    .unwrap();
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args: Vec<String> = [
        "--name",
        "t",
        "--data-dir",
        &dir.join("etcd-data").display().to_string(),
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("t={peer_url}"),
        "--cert-file",
        &issued.cert.display().to_string(),
        "--key-file",
        &issued.key.display().to_string(),
        "--listen-metrics-urls",
        &format!("http://127.0.0.1:{metrics}"),
        "--logger",
        "zap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let settings = ComponentSettings {
        name: "etcd".into(),
        version: VERSION.into(),
        args,
        env: vec![],
        health_url: Some(format!("http://127.0.0.1:{metrics}/health")),
        data_dir: None,
        join: false,
        metrics_url: None,
    };
    let sup = Supervisor::start(
        vec![settings],
        releases.trust_files(&dir.join("agent")),
        dir.join("agent/work"),
    )
    .await
    .unwrap();
    wait_running(&sup).await;
    let before = served_serial(client);
    let old_cert = std::fs::read(&issued.cert).unwrap();
    let old_key = std::fs::read(&issued.key).unwrap();

    // A CA that did not issue it renews nothing.
    let other = palisade_pki::init_ca(&dir.join("other-pki"), false).unwrap();
    let wrong = renewable("etcd-serving", &issued.cert, &issued.key, &other);
    let refused = rotate(&[wrong], &sup, "etcd", CertKind::Serving)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("not issued by the configured CA"),
        "{refused}"
    );
    assert_eq!(std::fs::read(&issued.cert).unwrap(), old_cert);
    // Nothing configured for the peer certificate.
    let certs = [renewable("etcd-serving", &issued.cert, &issued.key, &ca)];
    assert!(matches!(
        rotate(&certs, &sup, "etcd", CertKind::Peer).await,
        Err(RotateError::NotConfigured { .. })
    ));

    let out = rotate(&certs, &sup, "etcd", CertKind::Serving)
        .await
        .unwrap();
    assert!(out.healthy);
    assert_eq!(out.serial_before, before);
    assert_ne!(out.serial_after, out.serial_before);
    let now = Timestamp::now().unix_seconds();
    assert!(out.not_after_before.unix_seconds() < now + 2 * 86_400);
    assert!(out.not_after_after.unix_seconds() > now + 29 * 86_400);
    // etcd serves the new certificate, with a new key, and answers.
    wait_running(&sup).await;
    assert_eq!(
        served_serial(client).trim_start_matches('0'),
        out.serial_after.trim_start_matches('0')
    );
    assert_ne!(std::fs::read(&issued.key).unwrap(), old_key);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&issued.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The renewed certificate has the old one's names.
    let renewed = std::fs::read_to_string(&issued.cert).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(renewed.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&pem.contents).unwrap();
    let sans = format!(
        "{:?}",
        parsed.subject_alternative_name().unwrap().unwrap().value
    );
    for name in ["localhost", "urn:palisade:role:log", "etcd"] {
        assert!(sans.contains(name), "{name} missing from {sans}");
    }
    let text = serde_json::to_string(&out).unwrap();
    for leaked in ["BEGIN", "PRIVATE", "etcd-pki", &dir.display().to_string()] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
    sup.shutdown().await;
}
