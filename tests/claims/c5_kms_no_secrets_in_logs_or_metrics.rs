//! Claim C5: nothing an operator can read on the host — the plugin's log lines at any
//! level, its metrics — contains a wrapped seed, a ciphertext or key material. The
//! test captures every tracing event (level TRACE, every crate, including the HTTP,
//! gRPC and SigV4 libraries) and the metrics text while the plugin serves good and
//! bad requests on each backend, then searches them for the secrets as raw bytes,
//! hex, base64 and Rust debug notation.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

#[path = "../../crates/kms/tests/support/mod.rs"]
mod support;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use palisade_kms::file_key::FileKek;
use palisade_kms::kek::Kek;
use palisade_kms::keyring::KeyRing;
use palisade_kms::pb;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).unwrap();
    b
}

/// Every way a secret could be spelled in a log line.
fn spellings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
        STANDARD.encode(secret).into_bytes(),
        STANDARD_NO_PAD.encode(secret).into_bytes(),
        URL_SAFE.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        format!("{secret:?}").into_bytes(),
    ];
    // A fragment is enough to leak: the first 12 bytes in each spelling.
    let head = &secret[..12.min(secret.len())];
    out.push(hex::encode(head).into_bytes());
    out.push(
        format!("{head:?}")
            .trim_end_matches(']')
            .as_bytes()
            .to_vec(),
    );
    // base64 of a prefix (aligned to 3 bytes so that it is a prefix of the encoding).
    out.push(STANDARD_NO_PAD.encode(head).into_bytes());
    out
}

fn assert_absent(haystack: &[u8], what: &str, secret: &[u8], source: &str) {
    // Raw bytes: a byte-window search; every other spelling is text.
    let raw_found = haystack.windows(secret.len().max(1)).any(|w| w == secret);
    assert!(!raw_found, "{what} appears raw in the {source}");
    let text = String::from_utf8_lossy(haystack);
    for needle in spellings(secret).into_iter().skip(1) {
        let needle = String::from_utf8_lossy(&needle).into_owned();
        assert!(
            !text.contains(&needle),
            "{what} appears in the {source} as {needle:?}"
        );
    }
}

/// Serves good and bad requests; returns the secrets used and the metrics text.
async fn exercise(plugin: &Plugin, secrets: &mut Vec<(String, Vec<u8>)>) -> String {
    let mut client = plugin.client().await;
    let raw = client.raw();
    let status = raw.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.healthz, "ok");
    for i in 0..3 {
        let seed: [u8; 32] = random();
        secrets.push((format!("seed {i}"), seed.to_vec()));
        let e = raw
            .encrypt(pb::EncryptRequest {
                plaintext: seed.to_vec(),
                uid: format!("req-{i}"),
            })
            .await
            .unwrap()
            .into_inner();
        secrets.push((format!("ciphertext {i}"), e.ciphertext.clone()));
        let d = raw
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: format!("req-{i}"),
                key_id: e.key_id.clone(),
                annotations: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, seed.to_vec());
        // Failures log too: make sure their messages carry no data either.
        let mut tampered = e.ciphertext.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        secrets.push((format!("tampered ciphertext {i}"), tampered.clone()));
        assert!(raw
            .decrypt(pb::DecryptRequest {
                ciphertext: tampered,
                uid: "bad".into(),
                key_id: e.key_id.clone(),
                annotations: HashMap::new(),
            })
            .await
            .is_err());
        assert!(raw
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "unknown".into(),
                key_id: "no-such-key".into(),
                annotations: HashMap::new(),
            })
            .await
            .is_err());
        let big: [u8; 32] = random();
        let mut oversize = big.repeat(20);
        oversize.truncate(600);
        secrets.push((format!("oversize plaintext {i}"), big.to_vec()));
        assert!(raw
            .encrypt(pb::EncryptRequest {
                plaintext: oversize,
                uid: "big".into(),
            })
            .await
            .is_err());
    }
    plugin.metrics_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_or_metric_contains_plaintext_ciphertext_or_key_material() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("install the capturing subscriber");

    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut metrics = String::new();

    // File backend: the key bytes are known, so they are searched for too.
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("dev.key");
    FileKek::generate(&key_path).unwrap();
    let key_hex = std::fs::read_to_string(&key_path).unwrap();
    secrets.push(("file key".into(), hex::decode(key_hex.trim()).unwrap()));
    let ring = palisade_kms::server::open_keys(&palisade_kms::server::BackendConfig::File {
        key_files: vec![key_path.clone()],
        allow_insecure_dev_key: true,
    })
    .await
    .unwrap();
    let plugin = Plugin::start(ring).await;
    metrics.push_str(&exercise(&plugin, &mut secrets).await);
    plugin.stop().await;

    // PKCS#11 backend (the PIN is a secret too).
    {
        let _guard = pkcs11_lock().await;
        let hsm = SoftHsm::new("c5-logs");
        secrets.push(("user PIN".into(), USER_PIN.as_bytes().to_vec()));
        let token = Token::new(hsm.token_config());
        token.generate_key("kek").unwrap();
        let kek: Arc<dyn Kek> = Arc::new(Pkcs11Kek::open(token, "kek").await.unwrap());
        let plugin = Plugin::start(KeyRing::new(vec![kek]).unwrap()).await;
        metrics.push_str(&exercise(&plugin, &mut secrets).await);
        plugin.stop().await;
    }

    // AWS backend on moto (the secret access key is a secret too).
    let moto = Moto::start();
    let arn = moto.create_key();
    let config = moto.aws_config();
    secrets.push((
        "AWS secret access key".into(),
        support::AWS_SECRET.as_bytes().to_vec(),
    ));
    let kms = palisade_kms::aws::AwsKms::new(config).unwrap();
    let kek: Arc<dyn Kek> = Arc::new(palisade_kms::aws::AwsKek::open(kms, &arn).await.unwrap());
    let plugin = Plugin::start(KeyRing::new(vec![kek]).unwrap()).await;
    metrics.push_str(&exercise(&plugin, &mut secrets).await);
    plugin.stop().await;

    let logs = captured.0.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&logs).contains("INSECURE"),
        "the capture works (the file key's warning is in it)"
    );
    assert!(metrics.contains("palisade_kms_requests_total"), "{metrics}");
    for (what, secret) in &secrets {
        assert_absent(&logs, what, secret, "logs");
        assert_absent(metrics.as_bytes(), what, secret, "metrics");
    }
}
