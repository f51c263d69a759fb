//! The log service over real HTTPS on 127.0.0.1, as its callers see it: who may
//! append (gateway and agent certificates only), who may read which log (a tenant
//! reads its own clusters and the governance log, and cannot tell another tenant's
//! cluster from one that does not exist), how malformed requests are refused, and the
//! caching headers of the tlog-tiles read API.
//!
//! Inventory: tenant `acme` owns cluster `c1`, tenant `globex` owns cluster `c2`; both
//! have a reader token.

use bytes::Bytes;
use palisade_pki::{CertName, ClientAuth, IssuedPaths, Role};
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::note::{KeyType, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tile::parse_bundle;
use palisade_tlog_service::config::LogConfig;
use palisade_tlog_service::server::{AppendResponse, LogService};
use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const BASE_ORIGIN: &str = "palisade.test/log";
const ACME_TOKEN: &str = "acme-reader-token-5f0c";
const GLOBEX_TOKEN: &str = "globex-reader-token-91ab";

/// A log service on an ephemeral loopback port, stopped when dropped.
struct Service {
    _dir: tempfile::TempDir,
    pki: PathBuf,
    addr: SocketAddr,
    key: SignerKey,
    service: Arc<LogService>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Service {
    async fn start() -> Service {
        Self::start_with("", "").await
    }

    /// With `top` among the top-level settings and `tail` after the tables.
    async fn start_with(top: &str, tail: &str) -> Service {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let ca = palisade_pki::init_ca(&pki, false).expect("init CA");
        for (role, name) in [
            (Role::Log, "log"),
            (Role::Gateway, "gw"),
            (Role::Agent, "agent-0"),
            (Role::Operator, "alice"),
        ] {
            let name = CertName::new(name).expect("cert name");
            palisade_pki::issue(
                &pki,
                role,
                &name,
                &[],
                palisade_pki::DEFAULT_LEAF_DAYS,
                false,
            )
            .expect("issue certificate");
        }
        let key = SignerKey::generate(BASE_ORIGIN, KeyType::Ed25519).expect("log key");
        std::fs::write(
            dir.path().join("log.key"),
            format!("{}\n", key.to_private_text()),
        )
        .expect("write key");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("log.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
        }
        std::fs::write(
            dir.path().join("inventory.toml"),
            r#"
[[tenant]]
id = "acme"

[[tenant]]
id = "globex"

[[cluster]]
id = "c1"
tenant = "acme"
[[cluster.instance]]
id = "agent-0"
agent_url = "https://127.0.0.1:1"

[[cluster]]
id = "c2"
tenant = "globex"
"#,
        )
        .expect("write inventory");
        let log_cert = IssuedPaths::in_dir(&pki, Role::Log, &CertName::new("log").expect("name"));
        let config_path = dir.path().join("log.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"
listen = "127.0.0.1:7401"
base_origin = "{BASE_ORIGIN}"
key_file = "log.key"
inventory = "inventory.toml"
{top}

[storage]
kind = "local"
dir = "tiles"

[batch]
max_entries = 256
max_delay_ms = 2

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[[reader]]
tenant = "acme"
token_sha256 = "{acme}"

[[reader]]
tenant = "globex"
token_sha256 = "{globex}"
{tail}
"#,
                ca = ca.cert.display(),
                cert = log_cert.cert.display(),
                key = log_cert.key.display(),
                acme = sha256_hex(ACME_TOKEN),
                globex = sha256_hex(GLOBEX_TOKEN),
            ),
        )
        .expect("write config");
        let config: LogConfig = palisade_core::config::load(&config_path).expect("load config");
        let tls = palisade_pki::server_config(
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
            ClientAuth::Optional,
        )
        .expect("server TLS");
        let svc: Arc<LogService> = LogService::open(config).await.expect("open log service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(palisade_tlog_service::https::serve(
            listener,
            tls,
            svc.router(),
            async move {
                let _ = stop.await;
            },
        ));
        Service {
            _dir: dir,
            pki,
            addr,
            key,
            service: svc,
            shutdown: Some(shutdown),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// A client presenting the certificate of `role` named `name`.
    fn client_as(&self, role: Role, name: &str) -> Client {
        let paths = IssuedPaths::in_dir(&self.pki, role, &CertName::new(name).expect("name"));
        let tls = palisade_pki::client_config(
            &self.pki.join("ca.crt"),
            &paths.cert,
            &paths.key,
            &[Role::Log],
        )
        .expect("client TLS");
        Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .expect("client")
    }

    fn anonymous_tls(&self) -> rustls::ClientConfig {
        let roots = palisade_pki::load_roots(&self.pki.join("ca.crt")).expect("roots");
        rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// A client that trusts the CA but presents no certificate (a tenant, or anyone).
    fn anonymous(&self) -> Client {
        Client::builder()
            .tls_backend_preconfigured(self.anonymous_tls())
            .build()
            .expect("client")
    }

    fn gateway(&self) -> Client {
        self.client_as(Role::Gateway, "gw")
    }

    /// Appends to `c1` with each query are refused (400).
    async fn assert_queries_refused(&self, queries: &[&str]) {
        let gateway = self.gateway();
        for query in queries {
            let bad = self
                .append_at(&gateway, &format!("/logs/c1/append?{query}"), "never")
                .await;
            assert_eq!(
                bad.status,
                StatusCode::BAD_REQUEST,
                "{query}: {}",
                bad.text()
            );
        }
    }

    fn policy(&self, log: &str) -> LogPolicy {
        LogPolicy::new(&format!("{BASE_ORIGIN}/{log}"), self.key.verifier()).expect("policy")
    }

    async fn append(&self, client: &Client, log: &str, entry: impl Into<Bytes>) -> Answer {
        self.append_at(client, &format!("/logs/{log}/append"), entry)
            .await
    }

    /// An append to `path` (with its query, if any).
    async fn append_at(&self, client: &Client, path: &str, entry: impl Into<Bytes>) -> Answer {
        let resp = client
            .post(self.url(path))
            .body(entry.into())
            .send()
            .await
            .expect("append request");
        Answer::read(resp).await
    }

    async fn get(&self, client: &Client, path: &str, token: Option<&str>) -> Answer {
        let mut req = client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Answer::read(req.send().await.expect("GET request")).await
    }

    /// Sends `GET <path>` byte for byte (no URL normalisation, so `..` arrives as
    /// written) and returns the status code.
    async fn raw_get(&self, path: &str, token: &str) -> u16 {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.anonymous_tls()));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status for {path:?}: {text:?}"))
    }

    /// Appends `n` entries to `log` through the gateway, 32 at a time.
    async fn fill(&self, log: &str, n: usize) -> Vec<(u64, Bytes)> {
        let gateway = self.gateway();
        let mut out = Vec::new();
        let entries: Vec<Bytes> = (0..n)
            .map(|i| Bytes::from(format!("{log} event {i}")))
            .collect();
        for chunk in entries.chunks(32) {
            let answers = futures::future::join_all(
                chunk.iter().map(|e| self.append(&gateway, log, e.clone())),
            )
            .await;
            for (entry, answer) in chunk.iter().zip(answers) {
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                out.push((answer.appended().index, entry.clone()));
            }
        }
        out
    }
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("response body");
        Answer {
            status,
            headers,
            body,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn appended(&self) -> AppendResponse {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "append answer is not JSON {{index, proof}}: {e}: {}",
                self.text()
            )
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn assert_proof(svc: &Service, log: &str, answer: &Answer, entry: &[u8]) -> u64 {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let appended = answer.appended();
    let proof = TlogProof::parse(appended.proof.as_bytes()).expect("proof parses");
    assert_eq!(proof.index(), appended.index);
    proof
        .verify(entry, &svc.policy(log))
        .expect("the proof verifies for the entry under the log key");
    appended.index
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_agent_appends_are_acknowledged_with_verifying_proofs() {
    let svc = Service::start().await;
    let gateway = svc.gateway();
    let agent = svc.client_as(Role::Agent, "agent-0");

    let first = svc.append(&gateway, "c1", "from the gateway").await;
    assert_eq!(assert_proof(&svc, "c1", &first, b"from the gateway"), 0);
    let second = svc.append(&agent, "c1", "from the agent").await;
    assert_eq!(assert_proof(&svc, "c1", &second, b"from the agent"), 1);
    // Each cluster has its own log, with its own origin and indexes.
    let other = svc.append(&gateway, "c2", "c2's first").await;
    assert_eq!(assert_proof(&svc, "c2", &other, b"c2's first"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_and_anonymous_callers_cannot_append() {
    let svc = Service::start().await;
    let operator = svc.client_as(Role::Operator, "alice");
    let refused = svc.append(&operator, "c1", "operator was here").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    let refused = svc.append(&svc.anonymous(), "c1", "anyone was here").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    // A tenant token is for reading, never for appending.
    let resp = svc
        .anonymous()
        .post(svc.url("/logs/c1/append"))
        .bearer_auth(ACME_TOKEN)
        .body("tenant was here")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let checkpoint = svc.get(&svc.gateway(), "/logs/c1/checkpoint", None).await;
    let size = svc
        .policy("c1")
        .verify(&checkpoint.body)
        .expect("checkpoint verifies")
        .checkpoint()
        .size();
    assert_eq!(size, 0, "a refused append must not be logged");
}

/// The size of `log`'s current checkpoint.
async fn log_size(svc: &Service, log: &str) -> u64 {
    let checkpoint = svc
        .get(&svc.gateway(), &format!("/logs/{log}/checkpoint"), None)
        .await;
    svc.policy(log)
        .verify(&checkpoint.body)
        .expect("checkpoint verifies")
        .checkpoint()
        .size()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_appends_only_to_its_own_clusters_log_and_never_to_governance() {
    let svc = Service::start().await;
    // agent-0 is an instance of c1 (acme): c2 belongs to globex.
    let agent = svc.client_as(Role::Agent, "agent-0");
    let other = svc.append(&agent, "c2", "into another tenant's log").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text());
    let governance = svc.append(&agent, "governance", "a forged release").await;
    assert_eq!(
        governance.status,
        StatusCode::FORBIDDEN,
        "{}",
        governance.text()
    );
    assert_eq!(
        log_size(&svc, "c2").await,
        0,
        "the refused append was logged"
    );
    assert_eq!(
        log_size(&svc, "governance").await,
        0,
        "the refused append was logged"
    );
    // Its own cluster's log takes it; the gateway's certificate writes governance.
    let own = svc.append(&agent, "c1", "its own result").await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    let record = svc.append(&svc.gateway(), "governance", "a release").await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn append_to_an_unknown_cluster_is_404() {
    let svc = Service::start().await;
    let answer = svc.append(&svc.gateway(), "c3", "nowhere").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
}

/// A cluster added to the inventory gets its log while the service runs; an
/// inventory that does not load changes nothing; a removed cluster's log is closed
/// to appends and reads.
#[tokio::test(flavor = "multi_thread")]
async fn the_inventory_grows_and_shrinks_without_a_restart() {
    let svc = Service::start().await;
    let gateway = svc.gateway();
    let inventory = svc._dir.path().join("inventory.toml");
    let original = std::fs::read_to_string(&inventory).expect("inventory");
    let before = svc.append(&gateway, "c3", "too early").await;
    assert_eq!(before.status, StatusCode::NOT_FOUND, "{}", before.text());

    let with_c3 = format!("{original}\n[[cluster]]\nid = \"c3\"\ntenant = \"acme\"\n");
    std::fs::write(&inventory, &with_c3).expect("write inventory");
    // A request naming an unknown log looks at the file at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let first = svc.append(&gateway, "c3", "c3's first").await;
    assert_eq!(assert_proof(&svc, "c3", &first, b"c3's first"), 0);
    // Its tenant reads it; another tenant cannot tell it exists.
    let read = svc
        .get(&svc.anonymous(), "/logs/c3/checkpoint", Some(ACME_TOKEN))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    let other = svc
        .get(&svc.anonymous(), "/logs/c3/checkpoint", Some(GLOBEX_TOKEN))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text());

    // An inventory that does not load (a cluster named like the governance log)
    // leaves the one in force.
    std::fs::write(
        &inventory,
        format!("{with_c3}\n[[cluster]]\nid = \"governance\"\ntenant = \"acme\"\n[[cluster]]\nid = \"c4\"\ntenant = \"acme\"\n"),
    )
    .expect("write inventory");
    let refused = svc.service.refresh_inventory().await;
    assert!(refused.is_err(), "a governance cluster was accepted");
    let c4 = svc.append(&gateway, "c4", "not yet").await;
    assert_eq!(c4.status, StatusCode::NOT_FOUND, "{}", c4.text());
    let still = svc.append(&gateway, "c3", "c3's second").await;
    assert_eq!(assert_proof(&svc, "c3", &still, b"c3's second"), 1);

    // c2 leaves the inventory: its log takes no more entries and is not served.
    let without_c2 = with_c3.replace("[[cluster]]\nid = \"c2\"\ntenant = \"globex\"\n", "");
    assert_ne!(without_c2, with_c3, "c2 is in the inventory");
    std::fs::write(&inventory, &without_c2).expect("write inventory");
    assert_eq!(
        svc.service.refresh_inventory().await.expect("refresh"),
        Vec::<String>::new()
    );
    let gone = svc.append(&gateway, "c2", "after removal").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text());
    let unread = svc
        .get(&svc.anonymous(), "/logs/c2/checkpoint", Some(GLOBEX_TOKEN))
        .await;
    assert_eq!(unread.status, StatusCode::NOT_FOUND, "{}", unread.text());

    // An instance leaves c1: its agent's certificate no longer appends there.
    let agent = svc.client_as(Role::Agent, "agent-0");
    let before = svc.append(&agent, "c1", "while listed").await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text());
    let without_agent = without_c2.replace(
        "[[cluster.instance]]\nid = \"agent-0\"\nagent_url = \"https://127.0.0.1:1\"\n",
        "",
    );
    assert_ne!(without_agent, without_c2, "agent-0 is in the inventory");
    std::fs::write(&inventory, &without_agent).expect("write inventory");
    svc.service.refresh_inventory().await.expect("refresh");
    let after = svc.append(&agent, "c1", "after removal").await;
    assert_eq!(after.status, StatusCode::FORBIDDEN, "{}", after.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_over_65535_bytes_are_refused_with_413() {
    let svc = Service::start().await;
    let gateway = svc.gateway();
    let too_big = svc.append(&gateway, "c1", vec![b'a'; 65_536]).await;
    assert_eq!(
        too_big.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        too_big.text()
    );
    let largest = vec![b'b'; 65_535];
    let ok = svc.append(&gateway, "c1", largest.clone()).await;
    assert_eq!(assert_proof(&svc, "c1", &ok, &largest), 0);
    let empty = svc.append(&gateway, "c1", Vec::new()).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_reads_its_own_clusters_checkpoint_and_tiles() {
    let svc = Service::start().await;
    let appended = svc.fill("c1", 300).await;
    let acme = svc.anonymous();

    let checkpoint = svc
        .get(&acme, "/logs/c1/checkpoint", Some(ACME_TOKEN))
        .await;
    assert_eq!(checkpoint.status, StatusCode::OK, "{}", checkpoint.text());
    let verified = svc
        .policy("c1")
        .verify(&checkpoint.body)
        .expect("checkpoint verifies under the log key");
    assert_eq!(verified.checkpoint().size(), 300);

    for (path, len) in [
        ("/logs/c1/tile/0/000", 256 * 32),
        ("/logs/c1/tile/0/001.p/44", 44 * 32),
        ("/logs/c1/tile/1/000.p/1", 32),
    ] {
        let tile = svc.get(&acme, path, Some(ACME_TOKEN)).await;
        assert_eq!(tile.status, StatusCode::OK, "{path}: {}", tile.text());
        assert_eq!(tile.body.len(), len, "{path}");
    }
    let bundle = svc
        .get(&acme, "/logs/c1/tile/entries/001.p/44", Some(ACME_TOKEN))
        .await;
    assert_eq!(bundle.status, StatusCode::OK, "{}", bundle.text());
    let entries = parse_bundle(&bundle.body).expect("bundle parses");
    for (i, e) in entries.iter().enumerate() {
        let index = 256 + i as u64;
        let want = appended
            .iter()
            .find(|(at, _)| *at == index)
            .map(|(_, e)| e.clone())
            .expect("appended");
        assert!(*e == &want[..], "entry {index}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_cannot_read_another_tenants_log() {
    let svc = Service::start().await;
    svc.fill("c2", 3).await;
    let client = svc.anonymous();

    for (theirs, unknown) in [
        ("/logs/c2/checkpoint", "/logs/c9/checkpoint"),
        ("/logs/c2/tile/0/000.p/3", "/logs/c9/tile/0/000.p/3"),
        (
            "/logs/c2/tile/entries/000.p/3",
            "/logs/c9/tile/entries/000.p/3",
        ),
    ] {
        let other = svc.get(&client, theirs, Some(ACME_TOKEN)).await;
        let missing = svc.get(&client, unknown, Some(ACME_TOKEN)).await;
        assert_eq!(
            other.status,
            StatusCode::NOT_FOUND,
            "{theirs}: {}",
            other.text()
        );
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{unknown}");
        // The answers differ only by the name the caller sent: nothing tells an existing
        // cluster of another tenant from a cluster that does not exist.
        assert_eq!(
            other.text().replace("c2", "<name>"),
            missing.text().replace("c9", "<name>"),
            "{theirs} vs {unknown}"
        );
        assert_eq!(other.header("content-type"), missing.header("content-type"));
        // The owner does read it.
        let owner = svc.get(&client, theirs, Some(GLOBEX_TOKEN)).await;
        assert_eq!(
            owner.status,
            StatusCode::OK,
            "globex {theirs}: {}",
            owner.text()
        );
    }
    // And the other way round.
    let c1 = svc
        .get(&client, "/logs/c1/checkpoint", Some(GLOBEX_TOKEN))
        .await;
    assert_eq!(c1.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn governance_log_is_readable_by_every_tenant() {
    let svc = Service::start().await;
    let client = svc.anonymous();
    for token in [ACME_TOKEN, GLOBEX_TOKEN] {
        let answer = svc
            .get(&client, "/logs/governance/checkpoint", Some(token))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        svc.policy("governance")
            .verify(&answer.body)
            .expect("governance checkpoint verifies");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_without_credentials_is_401_and_with_a_wrong_token_403() {
    let svc = Service::start().await;
    let client = svc.anonymous();
    for path in [
        "/logs/c1/checkpoint",
        "/logs/c1/tile/0/000.p/1",
        "/logs/governance/checkpoint",
    ] {
        let none = svc.get(&client, path, None).await;
        assert_eq!(
            none.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {}",
            none.text()
        );
        let wrong = svc.get(&client, path, Some("not-a-reader-token")).await;
        assert_eq!(
            wrong.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            wrong.text()
        );
        // An operator certificate is not a reader credential either.
        let operator = svc.client_as(Role::Operator, "alice");
        let op = svc.get(&operator, path, None).await;
        assert_eq!(op.status, StatusCode::UNAUTHORIZED, "{path}: {}", op.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_tile_paths_are_refused_never_served_nor_server_errors() {
    let svc = Service::start().await;
    svc.fill("c1", 3).await;
    svc.fill("c2", 3).await;
    let paths = [
        "/logs/c1/tile/0/1",
        "/logs/c1/tile/0/x001",
        "/logs/c1/tile/0/000.p/0",
        "/logs/c1/tile/0/000.p/256",
        "/logs/c1/tile/0/000.p/03",
        "/logs/c1/tile/64/000",
        "/logs/c1/tile/entries/x001",
        "/logs/c1/tile/0/000.p/3/",
        "/logs/c1/tile/",
        "/logs/c1/tile/../checkpoint",
        "/logs/c1/tile/0/../../checkpoint",
        "/logs/c1/tile/../../c2/checkpoint",
        "/logs/c1/tile/0/%2e%2e/%2e%2e/checkpoint",
        "/logs/c1/tile/..%2f..%2fc2%2fcheckpoint",
        "/logs/c1/../c2/checkpoint",
        "/logs/../logs/c2/checkpoint",
        "/logs/c1%2f..%2fc2/checkpoint",
        "/logs/%2e%2e/checkpoint",
        "/logs/c1/tile/0/000.p/3%00",
    ];
    for path in paths {
        let status = svc.raw_get(path, ACME_TOKEN).await;
        assert!(
            status == 400 || status == 404,
            "GET {path} as tenant acme answered {status}; want 400 or 404"
        );
    }
    // A Palisade component may read every log, so the same paths as the gateway
    // (those without dot segments: the URL library would resolve them first).
    let gateway = svc.gateway();
    for path in paths
        .iter()
        .filter(|p| !p.contains("..") && !p.contains("%2e"))
    {
        let answer = svc.get(&gateway, path, None).await;
        let status = answer.status.as_u16();
        assert!(
            status == 400 || status == 404,
            "GET {path} as the gateway answered {status}; want 400 or 404"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_is_no_cache_and_full_tiles_are_immutable() {
    let svc = Service::start().await;
    svc.fill("c1", 260).await;
    let client = svc.anonymous();

    let checkpoint = svc
        .get(&client, "/logs/c1/checkpoint", Some(ACME_TOKEN))
        .await;
    assert_eq!(checkpoint.status, StatusCode::OK);
    assert_eq!(checkpoint.header("cache-control"), "no-cache");

    for full in ["/logs/c1/tile/0/000", "/logs/c1/tile/entries/000"] {
        let tile = svc.get(&client, full, Some(ACME_TOKEN)).await;
        assert_eq!(tile.status, StatusCode::OK, "{full}");
        assert!(
            tile.header("cache-control").contains("immutable"),
            "{full}: Cache-Control {:?}",
            tile.header("cache-control")
        );
    }
    for partial in ["/logs/c1/tile/0/001.p/4", "/logs/c1/tile/1/000.p/1"] {
        let tile = svc.get(&client, partial, Some(ACME_TOKEN)).await;
        assert_eq!(tile.status, StatusCode::OK, "{partial}");
        assert!(
            !tile.header("cache-control").contains("immutable"),
            "{partial} will be replaced by a wider tile: Cache-Control {:?}",
            tile.header("cache-control")
        );
    }
}

/// An append answers once its entry is under a witnessed checkpoint, or with
/// `?wait=stored` once it is under the stored commit point. With the only witness
/// unreachable, the first is refused (503, naming the index it has in the log) and the
/// second answers with a proof signed by the log alone; both entries are in the log.
#[tokio::test(flavor = "multi_thread")]
async fn wait_stored_answers_at_the_commit_point_without_the_witnesses() {
    let witness = SignerKey::generate("witness.test/w1", KeyType::Cosignature).expect("key");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let svc = Service::start_with(
        "witness_quorum = 1",
        &format!(
            "[[witness]]\nname = \"w1\"\nurl = \"https://127.0.0.1:{dead_port}\"\nkey = \"{}\"\n",
            witness.verifier()
        ),
    )
    .await;
    let gateway = svc.gateway();
    let refused = svc.append(&gateway, "c1", "needs the witness").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("index 0"), "{}", refused.text());
    // Where it is, for the caller not to append it again.
    assert_eq!(refused.header("palisade-log-index"), "0");

    let stored = svc
        .append_at(&gateway, "/logs/c1/append?wait=stored", "a result")
        .await;
    assert_eq!(assert_proof(&svc, "c1", &stored, b"a result"), 1);
    // The proof carries the log's signature only: a reader requiring the witness
    // refuses it.
    let proof = TlogProof::parse(stored.appended().proof.as_bytes()).expect("proof");
    let with_witness = svc
        .policy("c1")
        .with_witnesses(vec![witness.verifier()], 1)
        .expect("policy");
    assert!(proof.verify(b"a result", &with_witness).is_err());

    // Any other query is refused before anything is appended.
    svc.assert_queries_refused(&["wait=later", "wait=stored&x=1", "x"])
        .await;
    let bundle = svc
        .get(
            &svc.anonymous(),
            "/logs/c1/tile/entries/000.p/2",
            Some(ACME_TOKEN),
        )
        .await;
    assert_eq!(bundle.status, StatusCode::OK, "{}", bundle.text());
    let entries = parse_bundle(&bundle.body).expect("entry bundle");
    assert_eq!(entries, [&b"needs the witness"[..], &b"a result"[..]]);
}

/// `?consistency_from=N` answers with the RFC 6962 consistency proof from size N to the
/// append's checkpoint (what a verifier that saw size N needs), built by the sequencer;
/// a size beyond the checkpoint gets none, and a malformed or repeated one is refused.
#[tokio::test(flavor = "multi_thread")]
async fn consistency_from_proves_the_answers_checkpoint_extends_an_earlier_one() {
    use palisade_tlog::hash::Hash;
    let svc = Service::start().await;
    let gateway = svc.gateway();
    let earlier = svc.fill("c1", 300).await;
    assert_eq!(earlier.len(), 300);
    // The checkpoint a verifier saw at size 300, and later ones.
    let seen = svc.get(&gateway, "/logs/c1/checkpoint", None).await;
    let seen = svc.policy("c1").verify(&seen.body).expect("checkpoint");
    assert_eq!(seen.checkpoint().size(), 300);
    svc.fill("c1", 20).await;

    for (query, from) in [
        ("consistency_from=300", 300),
        ("wait=stored&consistency_from=300", 300),
        ("consistency_from=1", 1),
    ] {
        let answer = svc
            .append_at(
                &gateway,
                &format!("/logs/c1/append?{query}"),
                "with consistency",
            )
            .await;
        assert_proof(&svc, "c1", &answer, b"with consistency");
        let appended = answer.appended();
        let proof = TlogProof::parse(appended.proof.as_bytes()).expect("proof");
        let now = svc
            .policy("c1")
            .verify(&proof.checkpoint().to_bytes())
            .expect("checkpoint");
        let c = appended.consistency.expect("a consistency proof");
        assert_eq!(c.from_size, from);
        let hashes: Vec<Hash> = c
            .hashes
            .iter()
            .map(|h| Hash::from_base64(h).expect("base64 hash"))
            .collect();
        if from == 300 {
            palisade_tlog::tree::verify_consistency(
                300,
                now.checkpoint().size(),
                seen.checkpoint().root(),
                now.checkpoint().root(),
                &hashes,
            )
            .expect("the proof verifies against the checkpoint seen at 300");
            // And against no other history.
            let mut forged = hashes.clone();
            forged[0] = Hash::from_slice(&[7; 32]).expect("hash");
            assert!(palisade_tlog::tree::verify_consistency(
                300,
                now.checkpoint().size(),
                seen.checkpoint().root(),
                now.checkpoint().root(),
                &forged,
            )
            .is_err());
        } else {
            assert!(!hashes.is_empty());
        }
    }

    // Beyond the checkpoint: no proof, and the append stands.
    let answer = svc
        .append_at(
            &gateway,
            "/logs/c1/append?consistency_from=100000",
            "too far",
        )
        .await;
    assert_proof(&svc, "c1", &answer, b"too far");
    assert!(answer.appended().consistency.is_none(), "{}", answer.text());

    svc.assert_queries_refused(&[
        "consistency_from=x",
        "consistency_from=-1",
        "consistency_from=1&consistency_from=2",
        "wait=stored&wait=stored",
    ])
    .await;
}
