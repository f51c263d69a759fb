//! KMS v2 conformance: drives the plugin over its real Unix socket with a gRPC client
//! generated from the same proto, and applies every check kube-apiserver applies, for
//! each backend (PKCS#11 on SoftHSM2, AWS KMS on moto, the development file key),
//! including a key rotation done the way the apiserver does it.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

mod support;

use palisade_kms::file_key::FileKek;
use palisade_kms::kek::Kek;
use palisade_kms::keyring::KeyRing;
use palisade_kms::pb;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use std::collections::HashMap;
use std::sync::Arc;
use support::*;
use tonic::Code;

/// Keys for one backend: `old` is configured first, then `new` is rotated in.
struct Keys {
    old: Arc<dyn Kek>,
    new: Arc<dyn Kek>,
}

async fn run_suite(keys: Keys) {
    // Phase 1: one key.
    let plugin = Plugin::start(KeyRing::new(vec![keys.old.clone()]).unwrap()).await;
    let mut client = plugin.client().await;
    let raw = client.raw();

    let status = raw.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_kube_accepts_status(&status);
    assert_eq!(status.key_id, keys.old.key_id().as_str());

    // What the apiserver stores: 32-byte seeds, wrapped.
    let mut stored = Vec::new();
    for i in 0..5u8 {
        let seed = [i; 32];
        let e = raw
            .encrypt(pb::EncryptRequest {
                plaintext: seed.to_vec(),
                uid: format!("uid-{i}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_kube_accepts_encrypt(&e, &status.key_id);
        assert_ne!(e.ciphertext, seed.to_vec());
        stored.push((seed, e));
    }
    for (seed, e) in &stored {
        let d = raw
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "d".into(),
                key_id: e.key_id.clone(),
                annotations: e.annotations.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, seed.to_vec());
    }
    // Two encryptions of the same seed differ (fresh IV / KMS nonce).
    assert_ne!(stored[0].1.ciphertext, {
        raw.encrypt(pb::EncryptRequest {
            plaintext: [0u8; 32].to_vec(),
            uid: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
    });

    check_limits(raw, &stored[0].1).await;

    // Phase 2: rotation, as kube-apiserver sees it. The plugin restarts on the same
    // socket with the new key first and the old key still configured.
    let dir = plugin.stop().await;
    let plugin = Plugin::start_at(
        KeyRing::new(vec![keys.new.clone(), keys.old.clone()]).unwrap(),
        dir,
    )
    .await;
    let mut client = plugin.client().await;
    let raw = client.raw();
    let rotated = raw.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_kube_accepts_status(&rotated);
    assert_ne!(
        rotated.key_id, status.key_id,
        "the key_id changes on rotation"
    );
    assert_eq!(rotated.key_id, keys.new.key_id().as_str());
    // The apiserver saw a new key_id: it calls Encrypt and accepts the result only if
    // its key_id equals the Status key_id.
    let probe = raw
        .encrypt(pb::EncryptRequest {
            plaintext: [9u8; 32].to_vec(),
            uid: "rotation-probe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_kube_accepts_encrypt(&probe, &rotated.key_id);

    // Storage migration: every object is read (Decrypt under its old key_id still
    // works) and rewritten (Encrypt under the new key_id).
    for (seed, e) in &mut stored {
        let d = raw
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "migrate".into(),
                key_id: e.key_id.clone(),
                annotations: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, seed.to_vec(), "old ciphertexts still decrypt");
        let again = raw
            .encrypt(pb::EncryptRequest {
                plaintext: d.plaintext,
                uid: "migrate".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_kube_accepts_encrypt(&again, &rotated.key_id);
        *e = again;
    }
    for (seed, e) in &stored {
        assert_eq!(e.key_id, rotated.key_id);
        // No fallback: a new ciphertext presented under the old key_id is refused.
        let wrong = raw
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: "wrong".into(),
                key_id: status.key_id.clone(),
                annotations: HashMap::new(),
            })
            .await;
        assert!(wrong.is_err(), "decrypting under another key_id must fail");
        let d = raw
            .decrypt(pb::DecryptRequest {
                ciphertext: e.ciphertext.clone(),
                uid: String::new(),
                key_id: e.key_id.clone(),
                annotations: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext, seed.to_vec());
    }

    // The client library used by backups.
    let (ct, key_id) = client
        .encrypt(b"a 32-byte backup data key.......")
        .await
        .unwrap();
    assert_eq!(key_id.as_str(), rotated.key_id);
    assert_eq!(
        client.decrypt(&ct, &key_id).await.unwrap().as_slice(),
        b"a 32-byte backup data key......."
    );
    plugin.stop().await;
}

/// Malformed requests are InvalidArgument (or NotFound for an unknown key), never a
/// panic, never a fallback.
async fn check_limits(
    raw: &mut pb::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    >,
    good: &pb::EncryptResponse,
) {
    let enc = |plaintext: Vec<u8>| pb::EncryptRequest {
        plaintext,
        uid: String::new(),
    };
    let dec = |ciphertext: Vec<u8>, key_id: &str| pb::DecryptRequest {
        ciphertext,
        uid: String::new(),
        key_id: key_id.into(),
        annotations: HashMap::new(),
    };
    assert_eq!(
        code_of(raw.encrypt(enc(vec![])).await.map(|_| ())),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(raw.encrypt(enc(vec![1; 513])).await.map(|_| ())),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(raw.encrypt(enc(vec![1; 64 * 1024])).await.map(|_| ())),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(raw.decrypt(dec(vec![], &good.key_id)).await.map(|_| ())),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            raw.decrypt(dec(vec![1; 1025], &good.key_id))
                .await
                .map(|_| ())
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            raw.decrypt(dec(good.ciphertext.clone(), ""))
                .await
                .map(|_| ())
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            raw.decrypt(dec(good.ciphertext.clone(), &"k".repeat(1025)))
                .await
                .map(|_| ())
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            raw.decrypt(dec(good.ciphertext.clone(), "no-such-key"))
                .await
                .map(|_| ())
        ),
        Code::NotFound
    );
    let mut bad_annotations = dec(good.ciphertext.clone(), &good.key_id);
    bad_annotations
        .annotations
        .insert("not_a_domain".into(), b"x".to_vec());
    assert_eq!(
        code_of(raw.decrypt(bad_annotations).await.map(|_| ())),
        Code::InvalidArgument
    );
    let mut big_annotations = dec(good.ciphertext.clone(), &good.key_id);
    big_annotations
        .annotations
        .insert("a.example.com".into(), vec![0; 32 * 1024]);
    assert_eq!(
        code_of(raw.decrypt(big_annotations).await.map(|_| ())),
        Code::InvalidArgument
    );
    // Tampered ciphertexts do not decrypt.
    let mut tampered = good.ciphertext.clone();
    if let Some(b) = tampered.last_mut() {
        *b ^= 0x01;
    }
    assert!(raw.decrypt(dec(tampered, &good.key_id)).await.is_err());
    assert!(raw
        .decrypt(dec(vec![0xff; 40], &good.key_id))
        .await
        .is_err());
}

fn code_of<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_passes_kube_apiserver_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("old.key"), dir.path().join("new.key"));
    FileKek::generate(&a).unwrap();
    FileKek::generate(&b).unwrap();
    let old: Arc<dyn Kek> = Arc::new(FileKek::load(&a).unwrap());
    let new: Arc<dyn Kek> = Arc::new(FileKek::load(&b).unwrap());
    assert!(old.key_id().as_str().starts_with("insecure-dev:"));
    run_suite(Keys { old, new }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_backend_passes_kube_apiserver_checks() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("conformance");
    let token = Token::new(hsm.token_config());
    let old_id = token.generate_key("kek-2025").unwrap();
    let new_id = token.generate_key("kek-2026").unwrap();
    assert!(old_id.as_str().starts_with("pkcs11:conformance/kek-2025/"));
    assert_ne!(old_id, new_id);
    let old: Arc<dyn Kek> = Arc::new(Pkcs11Kek::open(token.clone(), "kek-2025").await.unwrap());
    let new: Arc<dyn Kek> = Arc::new(Pkcs11Kek::open(token.clone(), "kek-2026").await.unwrap());
    assert_eq!(old.key_id(), &old_id);
    run_suite(Keys { old, new }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_backend_passes_kube_apiserver_checks() {
    let moto = Moto::start();
    let (a, b) = (moto.create_key(), moto.create_key());
    let kms = palisade_kms::aws::AwsKms::new(moto.aws_config()).unwrap();
    let old: Arc<dyn Kek> = Arc::new(
        palisade_kms::aws::AwsKek::open(kms.clone(), &a)
            .await
            .unwrap(),
    );
    let new: Arc<dyn Kek> = Arc::new(
        palisade_kms::aws::AwsKek::open(kms.clone(), &b)
            .await
            .unwrap(),
    );
    assert_eq!(old.key_id().as_str(), format!("aws:{a}"));
    run_suite(Keys { old, new }).await;
}

/// A caller whose uid is not in `allow_uids` gets `PERMISSION_DENIED` saying which uid
/// and what to configure (kube-apiserver logs the status), not a broken pipe; its
/// requests never reach the key. The allowed uid is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_uid_is_not_allowed_gets_permission_denied_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("kek");
    FileKek::generate(&key).unwrap();
    let kek: Arc<dyn Kek> = Arc::new(FileKek::load(&key).unwrap());
    let me = palisade_kms::socket::own_uid().unwrap();
    for (allowed, expect_ok) in [(me + 1, false), (me, true)] {
        let listen =
            palisade_kms::socket::ListenAddr::Path(dir.path().join(format!("{allowed}.sock")));
        let running = palisade_kms::server::start(
            &listen,
            KeyRing::new(vec![kek.clone()]).unwrap(),
            Some(vec![allowed]),
            Some("127.0.0.1:0".parse().unwrap()),
            quick_health(),
        )
        .await
        .unwrap();
        let mut client = palisade_kms::KmsClient::connect(&listen.to_string())
            .await
            .unwrap();
        let raw = client.raw();
        let answer = raw.status(pb::StatusRequest {}).await;
        let encrypted = raw
            .encrypt(pb::EncryptRequest {
                plaintext: vec![7; 32],
                uid: "refused-caller".into(),
            })
            .await;
        if expect_ok {
            assert!(
                answer.is_ok() && encrypted.is_ok(),
                "{answer:?} {encrypted:?}"
            );
        } else {
            for e in [answer.err().unwrap(), encrypted.err().unwrap()] {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert!(
                    e.message().contains(&format!("uid {me} may not call"))
                        && e.message().contains("allow_uids"),
                    "{e:?}"
                );
            }
            let metrics = metrics_over_tcp(running.metrics_addr.unwrap());
            assert!(
                metrics.contains("palisade_kms_peers_rejected_total 1"),
                "{metrics}"
            );
        }
        drop(client);
        tokio::time::timeout(std::time::Duration::from_secs(30), running.stop())
            .await
            .expect("the plugin stops")
            .unwrap();
    }
}

/// `GET /metrics` over a plain TCP connection.
fn metrics_over_tcp(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}
