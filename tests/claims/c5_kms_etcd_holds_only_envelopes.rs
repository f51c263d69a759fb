//! Claim C5: etcd (and so every backup of it) holds Secrets only as KMS v2 envelopes
//! wrapped by the customer's key, and `palisade kms scan-etcd` proves it.
//!
//! The test starts a real etcd and `palisade kms serve` (PKCS#11 backend on SoftHSM2),
//! writes Secret-shaped values exactly as kube-apiserver stores them
//! (`k8s:enc:kms:v2:<provider>:` + protobuf `EncryptedObject`, DEK derived from a
//! 32-byte seed with HKDF-SHA256 and used with AES-256-GCM, the seed wrapped by the
//! plugin's Encrypt), reads them back through the plugin's Decrypt, and runs
//! `scan-etcd`: clean passes; one plaintext value makes it fail and name that key,
//! without printing the value.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

#[path = "../../crates/kms/tests/support/mod.rs"]
mod support;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use palisade_kms::kek::KeyId;
use palisade_kms::KmsClient;
use prost::Message;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const PROVIDER: &str = "palisade";
const PREFIX: &str = "k8s:enc:kms:v2:";

/// k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2/api.proto
#[derive(Clone, PartialEq, prost::Message)]
struct EncryptedObject {
    #[prost(bytes = "vec", tag = "1")]
    encrypted_data: Vec<u8>,
    #[prost(string, tag = "2")]
    key_id: String,
    #[prost(bytes = "vec", tag = "3")]
    encrypted_dek_source: Vec<u8>,
    #[prost(map = "string, bytes", tag = "4")]
    annotations: HashMap<String, Vec<u8>>,
    #[prost(int32, tag = "5")]
    encrypted_dek_source_type: i32,
}

/// `EncryptedDEKSourceType.HKDF_SHA256_XNONCE_AES_GCM_SEED`.
const HKDF_SHA256_XNONCE_AES_GCM_SEED: i32 = 1;

/// The apiserver's extended-nonce transformer (aes_extended_nonce.go): a random 32-byte
/// info, key = HKDF-Expand-SHA256(seed, info), then AES-256-GCM with a random 12-byte
/// nonce and the etcd key as additional data: `info ‖ nonce ‖ ct ‖ tag`.
fn seal(seed: &[u8; 32], etcd_key: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut info = [0u8; 32];
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut info).unwrap();
    getrandom::getrandom(&mut nonce).unwrap();
    let ct = cipher(seed, &info)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: etcd_key.as_bytes(),
            },
        )
        .unwrap();
    [info.as_slice(), nonce.as_slice(), ct.as_slice()].concat()
}

fn open(seed: &[u8], etcd_key: &str, data: &[u8]) -> Vec<u8> {
    let (info, rest) = data.split_at(32);
    let (nonce, ct) = rest.split_at(12);
    cipher(seed, info)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: etcd_key.as_bytes(),
            },
        )
        .expect("the stored Secret decrypts")
}

fn cipher(seed: &[u8], info: &[u8]) -> Aes256Gcm {
    let hk = hkdf::Hkdf::<Sha256>::from_prk(seed).expect("32-byte seed");
    let mut key = [0u8; 32];
    hk.expand(info, &mut key).unwrap();
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))
}

/// etcd on free loopback ports with a temporary data directory; killed on drop.
struct Etcd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Self {
        require_tool("etcd", "install etcd (Debian: apt-get install etcd-server)");
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args([
                "--name",
                "c5",
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("c5={peer_url}"),
                "--log-level",
                "error",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Self {
            child,
            port: client,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if etcd.try_post("/v3/kv/range", r#"{"key":"AA=="}"#).is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "etcd did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// etcd's JSON gateway (binary-safe: keys and values are base64).
    fn try_post(&self, path: &str, body: &str) -> Option<serde_json::Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let (head, body) = resp.split_once("\r\n\r\n")?;
        if !head.contains(" 200 ") {
            return None;
        }
        serde_json::from_str(body).ok()
    }

    fn put(&self, key: &str, value: &[u8]) {
        let body = serde_json::json!({"key": B64.encode(key), "value": B64.encode(value)});
        self.try_post("/v3/kv/put", &body.to_string())
            .expect("etcd put");
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let body = serde_json::json!({"key": B64.encode(key)});
        let v = self
            .try_post("/v3/kv/range", &body.to_string())
            .expect("etcd range");
        B64.decode(v["kvs"][0]["value"].as_str().expect("value"))
            .unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `palisade kms serve` as a child; stops when dropped.
struct PluginProcess(Child);

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn palisade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
}

fn pkcs11_args(hsm: &SoftHsm) -> Vec<String> {
    vec![
        "--backend".into(),
        "pkcs11".into(),
        "--pkcs11-module".into(),
        SOFTHSM_MODULE.into(),
        "--pkcs11-token".into(),
        hsm.label.clone(),
        "--pkcs11-pin-file".into(),
        hsm.pin_file.display().to_string(),
        "--key-label".into(),
        "customer-kek".into(),
    ]
}

async fn wait_for_plugin(socket: &str, child: &mut Child) -> KmsClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = KmsClient::connect(socket).await {
            if matches!(c.status().await, Ok(s) if s.healthz == "ok") {
                return c;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the plugin exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the plugin did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn scan(etcd: &Etcd) -> std::process::Output {
    palisade()
        .args([
            "kms",
            "scan-etcd",
            "--endpoints",
            &etcd.endpoint(),
            "--prefix",
            "/registry/",
        ])
        .output()
        .expect("run scan-etcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_holds_only_kms_v2_envelopes_and_scan_etcd_proves_it() {
    let etcd = Etcd::start();
    let hsm = SoftHsm::new("c5-etcd");

    // The customer's KEK, generated inside the token.
    let keygen = palisade()
        .args(["kms", "keygen"])
        .args(pkcs11_args(&hsm))
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let key_id = String::from_utf8(keygen.stdout).unwrap().trim().to_string();
    assert!(
        key_id.starts_with("pkcs11:c5-etcd/customer-kek/"),
        "{key_id}"
    );

    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("kms.sock").display());
    let mut child = palisade()
        .args(["kms", "serve", "--listen", &socket])
        .args(pkcs11_args(&hsm))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut client = wait_for_plugin(&socket, &mut child).await;
    let _plugin = PluginProcess(child);

    let status = palisade()
        .args(["kms", "status", "--socket", &socket])
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains(&key_id));

    // kube-apiserver's write path: one seed (DEK source) wrapped once, many objects.
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    let (wrapped_seed, plugin_key_id) = client.encrypt(&seed).await.unwrap();
    assert_eq!(plugin_key_id.as_str(), key_id);
    let secrets: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            let key = format!("/registry/secrets/ns-{}/db-password-{i}", i % 3);
            let value = format!(
                r#"{{"kind":"Secret","apiVersion":"v1","metadata":{{"name":"db-password-{i}"}},"data":{{"password":"c2VjcmV0LXZhbHVlLXt7aX19LQ-{i}"}}}}"#
            );
            (key, value.into_bytes())
        })
        .collect();
    for (key, plaintext) in &secrets {
        let object = EncryptedObject {
            encrypted_data: seal(&seed, key, plaintext),
            key_id: plugin_key_id.to_string(),
            encrypted_dek_source: wrapped_seed.clone(),
            annotations: HashMap::new(),
            encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        };
        let mut value = format!("{PREFIX}{PROVIDER}:").into_bytes();
        value.extend(object.encode_to_vec());
        etcd.put(key, &value);
    }
    // Something outside the scanned prefix is not reported.
    etcd.put("/other/plain", b"not under /registry/");

    // kube-apiserver's read path, with a fresh client (no cached seed).
    let mut reader = KmsClient::connect(&socket).await.unwrap();
    for (key, plaintext) in &secrets {
        let stored = etcd.get(key);
        let header = format!("{PREFIX}{PROVIDER}:");
        let body = stored
            .strip_prefix(header.as_bytes())
            .expect("stored with the KMS v2 prefix");
        assert!(
            !stored.windows(8).any(|w| w == b"password"),
            "no plaintext in etcd"
        );
        let object = EncryptedObject::decode(body).expect("an EncryptedObject");
        assert_eq!(
            object.encrypted_dek_source_type,
            HKDF_SHA256_XNONCE_AES_GCM_SEED
        );
        let kid = KeyId::new(object.key_id.clone()).unwrap();
        let seed_back = reader
            .decrypt(&object.encrypted_dek_source, &kid)
            .await
            .expect("the plugin unwraps the seed");
        assert_eq!(seed_back.as_slice(), seed.as_slice());
        assert_eq!(&open(&seed_back, key, &object.encrypted_data), plaintext);
    }

    // Everything under /registry/ is an envelope: the scan passes.
    let clean = scan(&etcd);
    assert!(
        clean.status.success(),
        "scan-etcd failed on a clean etcd: {}{}",
        String::from_utf8_lossy(&clean.stdout),
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(String::from_utf8_lossy(&clean.stderr).contains("scanned 20 keys"));

    // One Secret written in plaintext (as with a missing EncryptionConfiguration).
    let leaked_key = "/registry/secrets/default/leaked";
    let leaked_value = "hunter2-plaintext-password-4f1e";
    etcd.put(
        leaked_key,
        format!(r#"{{"kind":"Secret","data":{{"password":"{leaked_value}"}}}}"#).as_bytes(),
    );
    let dirty = scan(&etcd);
    assert!(
        !dirty.status.success(),
        "scan-etcd passed with a plaintext value"
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&dirty.stdout),
        String::from_utf8_lossy(&dirty.stderr)
    );
    assert!(out.contains(leaked_key), "{out}");
    assert!(
        !out.contains(leaked_value),
        "scan-etcd printed a value: {out}"
    );
    assert!(!out.contains("/other/plain"), "{out}");
    assert_eq!(
        String::from_utf8_lossy(&dirty.stdout).lines().count(),
        1,
        "exactly the one plaintext key is listed: {out}"
    );
}
