//! Claim C5, and the plugin's honesty about its own health: a ciphertext that fails
//! authentication is bad data, answered `INVALID_ARGUMENT`, on every backend, and
//! Status stays ok. `UNAVAILABLE` (which kube-apiserver and monitoring read as "the
//! plugin is down") is answered only when the backend really is down. SoftHSM2
//! reports a GCM tag that does not verify as CKR_GENERAL_ERROR, the code of a broken
//! token; the plugin tells the two apart with a known-answer probe.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

#[path = "../../crates/kms/tests/support/mod.rs"]
mod support;

use palisade_kms::file_key::FileKek;
use palisade_kms::kek::Kek;
use palisade_kms::keyring::KeyRing;
use palisade_kms::pb;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tonic::Code;

type Raw = pb::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>;

async fn healthz(raw: &mut Raw) -> String {
    raw.status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .healthz
}

async fn encrypt(raw: &mut Raw, plaintext: &[u8]) -> pb::EncryptResponse {
    raw.encrypt(pb::EncryptRequest {
        plaintext: plaintext.to_vec(),
        uid: "t".into(),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn decrypt(
    raw: &mut Raw,
    ciphertext: Vec<u8>,
    key_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    raw.decrypt(pb::DecryptRequest {
        ciphertext,
        uid: "t".into(),
        key_id: key_id.into(),
        annotations: HashMap::new(),
    })
    .await
    .map(|r| r.into_inner().plaintext)
}

/// The ciphertext with one bit flipped at `at` (from the end when negative).
fn flipped(ct: &[u8], at: isize) -> Vec<u8> {
    let mut out = ct.to_vec();
    let i = if at < 0 {
        out.len() - at.unsigned_abs()
    } else {
        at as usize
    };
    out[i] ^= 0x01;
    out
}

/// Every tampering of a good ciphertext is answered INVALID_ARGUMENT, Status stays ok
/// and the good ciphertext still decrypts.
async fn tampered_ciphertexts_are_bad_data(
    raw: &mut Raw,
    good: &pb::EncryptResponse,
    backend: &str,
) {
    let len = good.ciphertext.len() as isize;
    for at in [-1, len / 2, 1] {
        let err = decrypt(raw, flipped(&good.ciphertext, at), &good.key_id)
            .await
            .expect_err("a tampered ciphertext must not decrypt");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{backend}: bit {at} flipped: {err:?}"
        );
    }
    let mut truncated = good.ciphertext.clone();
    truncated.truncate(truncated.len() - 1);
    let err = decrypt(raw, truncated, &good.key_id).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{backend}: truncated: {err:?}"
    );
    assert_eq!(healthz(raw).await, "ok", "{backend}: Status after bad data");
    assert_eq!(
        decrypt(raw, good.ciphertext.clone(), &good.key_id)
            .await
            .unwrap(),
        vec![5; 32],
        "{backend}: a good ciphertext after bad ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_bad_tag_is_invalid_argument_and_a_removed_token_is_unavailable() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("c5-bad-ct");
    let token = Token::new(hsm.token_config());
    token.generate_key("kek").unwrap();
    let kek: Arc<dyn Kek> = Arc::new(Pkcs11Kek::open(token, "kek").await.unwrap());
    let plugin = Plugin::start(KeyRing::new(vec![kek]).unwrap()).await;
    let mut client = plugin.client().await;
    let raw = client.raw();
    assert_eq!(healthz(raw).await, "ok");
    let good = encrypt(raw, &[5; 32]).await;

    tampered_ciphertexts_are_bad_data(raw, &good, "pkcs11").await;
    let metrics = plugin.metrics_text();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("backend_healthy") && l.contains("pkcs11") && l.ends_with(" 1")),
        "{metrics}"
    );

    // The token goes away: now a tampered ciphertext cannot be judged, and the
    // answer is that the backend is down.
    let dir = tempfile::tempdir().unwrap();
    let token_dir = softhsm_token_dir();
    let entries: Vec<_> = std::fs::read_dir(&token_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for e in &entries {
        std::fs::rename(e, dir.path().join(e.file_name().unwrap())).unwrap();
    }
    // Wait until the plugin itself reports the token gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = healthz(raw).await;
        if h != "ok" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Status stayed ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = decrypt(raw, flipped(&good.ciphertext, -1), &good.key_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    for e in &entries {
        std::fs::rename(dir.path().join(e.file_name().unwrap()), e).unwrap();
    }
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_bad_ciphertext_is_invalid_argument_and_an_unreachable_kms_is_unavailable() {
    let moto = Moto::start();
    let arn = moto.create_key();
    let kms = palisade_kms::aws::AwsKms::new(moto.aws_config()).unwrap();
    let kek: Arc<dyn Kek> = Arc::new(palisade_kms::aws::AwsKek::open(kms, &arn).await.unwrap());
    let plugin = Plugin::start(KeyRing::new(vec![kek]).unwrap()).await;
    let mut client = plugin.client().await;
    let raw = client.raw();
    assert_eq!(healthz(raw).await, "ok");
    let good = encrypt(raw, &[5; 32]).await;

    tampered_ciphertexts_are_bad_data(raw, &good, "aws").await;

    // KMS stops answering: the tampered ciphertext cannot be judged, and the answer
    // is that the backend is down (its HTTP calls time out after 2.5 s).
    moto.pause();
    let err = decrypt(raw, flipped(&good.ciphertext, -1), &good.key_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    moto.resume();
    tokio::time::sleep(Duration::from_millis(400)).await;
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_key_bad_ciphertext_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.key");
    FileKek::generate(&path).unwrap();
    let kek: Arc<dyn Kek> = Arc::new(FileKek::load(&path).unwrap());
    let plugin = Plugin::start(KeyRing::new(vec![kek]).unwrap()).await;
    let mut client = plugin.client().await;
    let raw = client.raw();
    let good = encrypt(raw, &[5; 32]).await;
    tampered_ciphertexts_are_bad_data(raw, &good, "file").await;
    plugin.stop().await;
}
