//! Claim C5, failing closed: when the customer's key cannot be used (token missing,
//! wrong PIN, KMS endpoint down) the plugin says so in Status and Encrypt fails; it
//! never falls back to another key or to plaintext, and it recovers by itself once
//! the backend is back.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

#[path = "../../crates/kms/tests/support/mod.rs"]
mod support;

use palisade_kms::file_key::FileKek;
use palisade_kms::kek::Kek;
use palisade_kms::keyring::KeyRing;
use palisade_kms::pb;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use palisade_kms::server::{open_keys, BackendConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

type Raw = pb::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>;

async fn healthz(raw: &mut Raw) -> String {
    raw.status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .healthz
}

/// Polls Status until `want(healthz)` holds; returns the last healthz.
async fn wait_health(raw: &mut Raw, within: Duration, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let h = healthz(raw).await;
        if want(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "Status stayed {h:?} for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn encrypt(raw: &mut Raw, plaintext: &[u8]) -> Result<pb::EncryptResponse, tonic::Status> {
    raw.encrypt(pb::EncryptRequest {
        plaintext: plaintext.to_vec(),
        uid: "t".into(),
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_at_start_refuses_to_serve() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("c5-pin-start");
    Token::new(hsm.token_config()).generate_key("kek").unwrap();
    write_private(&hsm.pin_file, "not-the-pin");
    let err = open_keys(&BackendConfig::Pkcs11 {
        token: hsm.token_config(),
        key_labels: vec!["kek".into()],
    })
    .await
    .err()
    .expect("a wrong PIN must stop the plugin from starting");
    assert!(err.to_string().contains("wrong PIN"), "{err}");
    let mut missing = hsm.token_config();
    missing.token_label = "no-such-token".into();
    let err = open_keys(&BackendConfig::Pkcs11 {
        token: missing,
        key_labels: vec!["kek".into()],
    })
    .await
    .err()
    .expect("a missing token must stop the plugin from starting");
    assert!(err.to_string().contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_or_wrong_pin_makes_status_unhealthy_and_encrypt_fail() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("c5-fail");
    let token = Token::new(hsm.token_config());
    token.generate_key("kek").unwrap();
    let hsm_kek: Arc<dyn Kek> = Arc::new(Pkcs11Kek::open(token, "kek").await.unwrap());
    // A second, working key is configured too: Encrypt must still never use it while
    // the primary is down.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.key");
    FileKek::generate(&other).unwrap();
    let other_kek: Arc<dyn Kek> = Arc::new(FileKek::load(&other).unwrap());
    let plugin = Plugin::start(KeyRing::new(vec![hsm_kek.clone(), other_kek]).unwrap()).await;
    let mut client = plugin.client().await;
    let raw = client.raw();

    assert_eq!(healthz(raw).await, "ok");
    let before = encrypt(raw, &[7; 32]).await.unwrap();
    assert_eq!(before.key_id, hsm_kek.key_id().as_str());

    // The token disappears (its directory is moved away) and, unknown to the plugin,
    // the PIN file now holds a wrong PIN.
    let token_dir = softhsm_token_dir();
    let entries: Vec<_> = std::fs::read_dir(&token_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let parked = dir.path().join("parked");
    std::fs::create_dir(&parked).unwrap();
    for e in &entries {
        std::fs::rename(e, parked.join(e.file_name().unwrap())).unwrap();
    }
    write_private(&hsm.pin_file, "wrong-pin-000");

    let h = wait_health(raw, Duration::from_secs(10), |h| h != "ok").await;
    assert!(h.starts_with("pkcs11:"), "{h}");
    let err = encrypt(raw, &[8; 32]).await.expect_err("Encrypt must fail");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // The token is back but the PIN is wrong: still unhealthy, still no Encrypt.
    for e in &entries {
        std::fs::rename(parked.join(e.file_name().unwrap()), e).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let h = wait_health(raw, Duration::from_secs(10), |h| h.contains("PIN")).await;
    assert_ne!(h, "ok");
    assert!(
        encrypt(raw, &[8; 32]).await.is_err(),
        "Encrypt with a wrong PIN"
    );

    // The PIN is fixed: the plugin recovers by itself (new session, new login).
    write_private(&hsm.pin_file, USER_PIN);
    wait_health(raw, Duration::from_secs(10), |h| h == "ok").await;
    let after = encrypt(raw, &[9; 32]).await.unwrap();
    assert_eq!(after.key_id, hsm_kek.key_id().as_str());
    let back = raw
        .decrypt(pb::DecryptRequest {
            ciphertext: before.ciphertext,
            uid: "t".into(),
            key_id: before.key_id,
            annotations: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, vec![7; 32]);
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_endpoint_down_makes_status_unhealthy_and_encrypt_fail() {
    let moto = Moto::start();
    let arn = moto.create_key();
    let kms = palisade_kms::aws::AwsKms::new(moto.aws_config()).unwrap();
    let kek: Arc<dyn Kek> = Arc::new(palisade_kms::aws::AwsKek::open(kms, &arn).await.unwrap());
    let plugin = Plugin::start(KeyRing::new(vec![kek]).unwrap()).await;
    let mut client = plugin.client().await;
    let raw = client.raw();
    assert_eq!(healthz(raw).await, "ok");

    moto.pause();
    let h = wait_health(raw, Duration::from_secs(15), |h| h != "ok").await;
    assert!(h.starts_with("aws:"), "{h}");
    assert!(
        encrypt(raw, &[1; 32]).await.is_err(),
        "Encrypt while KMS is down"
    );

    moto.resume();
    wait_health(raw, Duration::from_secs(15), |h| h == "ok").await;
    assert!(encrypt(raw, &[1; 32]).await.is_ok());
    plugin.stop().await;
}
