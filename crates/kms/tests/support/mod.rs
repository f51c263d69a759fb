//! What the KMS tests and benchmarks start for themselves: a SoftHSM2 token, a moto
//! KMS endpoint, a plugin on a temporary socket, and the checks kube-apiserver applies
//! to a plugin's answers. A missing tool fails the test with an install hint; nothing
//! is skipped.
#![allow(dead_code)]

use palisade_kms::health::HealthPolicy;
use palisade_kms::keyring::KeyRing;
use palisade_kms::pb;
use palisade_kms::pkcs11::TokenConfig;
use palisade_kms::server::{self, Running};
use palisade_kms::socket::ListenAddr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const USER_PIN: &str = "pin-7f3a9c21e4";
pub const SO_PIN: &str = "so-pin-5b8e0d7a";

/// Fails (never skips) when `tool` is not on PATH.
pub fn require_tool(tool: &str, hint: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "`{tool}` is not installed; {hint}");
}

/// The SoftHSM2 configuration of this test process: one token directory shared by all
/// tokens of the process (SoftHSM reads `SOFTHSM2_CONF` once per process).
fn softhsm_conf() -> &'static Path {
    static CONF: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, conf) = CONF.get_or_init(|| {
        require_tool(
            "softhsm2-util",
            "install SoftHSM2 (Debian: apt-get install softhsm2)",
        );
        assert!(
            Path::new(SOFTHSM_MODULE).exists(),
            "{SOFTHSM_MODULE} is missing; install SoftHSM2 (Debian: apt-get install softhsm2)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write conf");
        std::env::set_var("SOFTHSM2_CONF", &conf);
        (dir, conf)
    });
    conf
}

/// The token directory of this process's SoftHSM.
pub fn softhsm_token_dir() -> PathBuf {
    softhsm_conf().parent().expect("conf dir").join("tokens")
}

/// A fresh SoftHSM2 token with a user PIN in a 0600 file.
pub struct SoftHsm {
    pub label: String,
    pub pin_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl SoftHsm {
    pub fn new(label: &str) -> Self {
        let conf = softhsm_conf();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let pin_file = dir.path().join("pin");
        write_private(&pin_file, USER_PIN);
        Self {
            label: label.to_string(),
            pin_file,
            _dir: dir,
        }
    }

    pub fn token_config(&self) -> TokenConfig {
        TokenConfig {
            module: SOFTHSM_MODULE.into(),
            token_label: self.label.clone(),
            pin_file: self.pin_file.clone(),
            sessions: TokenConfig::DEFAULT_SESSIONS,
        }
    }
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Serializes in-process PKCS#11 use: a module is initialized once per process, and a
/// plugin that re-initializes it after a failure would close every other session.
pub async fn pkcs11_lock() -> tokio::sync::MutexGuard<'static, ()> {
    PKCS11_LOCK.lock().await
}

/// [`pkcs11_lock`] for tests that are not async.
pub fn pkcs11_lock_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    PKCS11_LOCK.blocking_lock()
}

static PKCS11_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on port {port} within 60 s");
}

/// A moto server (a local endpoint of the AWS KMS API), killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

pub const AWS_REGION: &str = "us-east-1";

impl Moto {
    pub fn start() -> Self {
        require_tool(
            "python3",
            "install Python 3 (Debian: apt-get install python3)",
        );
        let probe = Command::new("python3")
            .args(["-c", "import moto.server"])
            .output()
            .expect("run python3");
        assert!(
            probe.status.success(),
            "moto is not installed; install it with `pip install 'moto[server]'`"
        );
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        wait_for_port(port, "moto", &mut child);
        Self {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}/"),
        }
    }

    /// Creates a customer-managed symmetric key; returns its ARN.
    pub fn create_key(&self) -> String {
        let v = self.call(
            "CreateKey",
            r#"{"KeySpec":"SYMMETRIC_DEFAULT","KeyUsage":"ENCRYPT_DECRYPT","Description":"palisade test KEK"}"#,
        );
        v["KeyMetadata"]["Arn"]
            .as_str()
            .expect("CreateKey answer has an ARN")
            .to_string()
    }

    /// One unsigned JSON call (moto does not check signatures).
    pub fn call(&self, action: &str, body: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect moto");
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=test/20250101/{AWS_REGION}/kms/aws4_request, SignedHeaders=host, Signature=0"
        );
        write!(
            s,
            "POST / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.{action}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP answer");
        assert!(head.contains(" 200 "), "{action} failed: {head}\n{body}");
        serde_json::from_str(body).expect("JSON answer")
    }

    pub fn aws_config(&self) -> palisade_kms::aws::AwsConfig {
        palisade_kms::aws::AwsConfig {
            region: AWS_REGION.into(),
            endpoint: Some(self.endpoint.clone()),
            credentials: palisade_kms::aws::AwsCredentials::fixed(
                "AKIDEXAMPLETEST",
                AWS_SECRET,
                None,
            ),
        }
    }

    /// Stops answering (SIGSTOP) until `resume`: the endpoint is "down".
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

impl Drop for Moto {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plugin served in-process on a temporary socket, with metrics on loopback.
pub struct Plugin {
    pub socket: String,
    pub socket_path: PathBuf,
    pub metrics_addr: std::net::SocketAddr,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

/// Health results cached briefly, so tests see changes quickly.
pub fn quick_health() -> HealthPolicy {
    HealthPolicy {
        ok_ttl: Duration::from_millis(300),
        failing_ttl: Duration::from_millis(300),
        timeout: Duration::from_secs(3),
    }
}

impl Plugin {
    pub async fn start(ring: KeyRing) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_at(ring, dir).await
    }

    pub async fn start_at(ring: KeyRing, dir: tempfile::TempDir) -> Self {
        let socket_path = dir.path().join("kms.sock");
        let listen = ListenAddr::Path(socket_path.clone());
        let running = server::start(
            &listen,
            ring,
            None,
            Some("127.0.0.1:0".parse().expect("addr")),
            quick_health(),
        )
        .await
        .expect("start the plugin");
        Self {
            socket: listen.to_string(),
            socket_path,
            metrics_addr: running.metrics_addr.expect("metrics address"),
            running: Some(running),
            _dir: dir,
        }
    }

    pub async fn client(&self) -> palisade_kms::KmsClient {
        palisade_kms::KmsClient::connect(&self.socket)
            .await
            .expect("connect to the plugin")
    }

    /// Stops the plugin and returns its directory (to restart on the same socket path).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self._dir, dir)
    }

    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect(self.metrics_addr).expect("connect metrics");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        resp
    }
}

/// kube-apiserver's checks on a Status answer (staging/src/k8s.io/apiserver/pkg/
/// storage/value/encrypt/envelope/kmsv2: `isKMSv2ProviderHealthy`, `ValidateKeyID`).
pub fn assert_kube_accepts_status(s: &pb::StatusResponse) {
    assert!(
        s.version == "v2" || s.version == "v2beta1",
        "version {:?}",
        s.version
    );
    assert_eq!(s.healthz, "ok", "healthz");
    assert!(!s.key_id.is_empty(), "Status key_id is empty");
    assert!(s.key_id.len() <= 1024, "Status key_id longer than 1024");
}

/// kube-apiserver's checks on an Encrypt answer, given the key_id Status reported
/// (`validateEncryptedObject`, `validateAnnotations`, rotation check).
pub fn assert_kube_accepts_encrypt(e: &pb::EncryptResponse, status_key_id: &str) {
    assert!(!e.ciphertext.is_empty(), "ciphertext is empty");
    assert!(e.ciphertext.len() <= 1024, "ciphertext longer than 1024");
    assert!(!e.key_id.is_empty(), "Encrypt key_id is empty");
    assert!(e.key_id.len() <= 1024, "Encrypt key_id longer than 1024");
    assert_eq!(
        e.key_id, status_key_id,
        "EncryptResponse.key_id must equal the Status key_id"
    );
    let mut total = 0;
    for (k, v) in &e.annotations {
        assert!(
            palisade_kms::limits::is_fqdn(k),
            "annotation key {k:?} not an FQDN"
        );
        total += k.len() + v.len();
    }
    assert!(total <= 32 * 1024, "annotations larger than 32 KiB");
}

/// The secret access key of [`Moto::aws_config`] (moto does not check it; the tests
/// check it never leaks).
pub const AWS_SECRET: &str = "test-secret-not-real-9d1c";
