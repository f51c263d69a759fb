//! The witness service over real HTTPS on 127.0.0.1: C2SP tlog-witness v1.0.0
//! `add-checkpoint` answers, who may call it, durability across restarts, and
//! atomicity under concurrent requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_pki::{CertName, Role, DEFAULT_LEAF_DAYS};
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::{empty_root, leaf_hash, Hash};
use palisade_tlog::note::{KeyType, Note, NoteSignature, SignerKey, VerifierKey};
use palisade_tlog::tree::{consistency_proof, Frontier};
use palisade_tlog::witness::AddCheckpointRequest;
use palisade_tlog_service::https::Peer;
use palisade_tlog_service::witness_server::{
    self, Witness, WitnessConfig, WitnessError, WitnessedLogs, MAX_BODY_BYTES,
};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ORIGIN: &str = "palisade.test/clusters/c1";
const OTHER_ORIGIN: &str = "palisade.test/clusters/c2";

/// A CA, certificates for every role, a witness key, a log key and a config file.
struct Env {
    _tmp: tempfile::TempDir,
    pki: PathBuf,
    config: PathBuf,
    witness_key: VerifierKey,
    log_key: SignerKey,
    other_key: SignerKey,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        palisade_pki::init_ca(&pki, false).unwrap();
        for (role, name) in [
            (Role::Witness, "witness"),
            (Role::Log, "log"),
            (Role::Gateway, "gw"),
            (Role::Operator, "alice"),
        ] {
            let name = CertName::new(name).unwrap();
            palisade_pki::issue(&pki, role, &name, &[], DEFAULT_LEAF_DAYS, false).unwrap();
        }
        let witness = SignerKey::generate("witness.test/w1", KeyType::Cosignature).unwrap();
        let key_file = tmp.path().join("witness.key");
        std::fs::write(&key_file, format!("{}\n", witness.to_private_text())).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The log's key name need not be its origin.
        let log_key = SignerKey::generate("log-key-c1", KeyType::Ed25519).unwrap();
        let other = SignerKey::generate(OTHER_ORIGIN, KeyType::Ed25519).unwrap();
        let config = tmp.path().join("witness.toml");
        // Relative paths: resolved against the file's directory.
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n\
                 key_file = \"witness.key\"\n\
                 state_file = \"state/witness.redb\"\n\
                 [tls]\n\
                 ca = \"pki/ca.crt\"\n\
                 cert = \"pki/witness-witness.crt\"\n\
                 key = \"pki/witness-witness.key\"\n\
                 [[log]]\n\
                 origin = \"{ORIGIN}\"\n\
                 key = \"{}\"\n\
                 [[log]]\n\
                 origin = \"{OTHER_ORIGIN}\"\n\
                 key = \"{}\"\n",
                log_key.verifier(),
                other.verifier()
            ),
        )
        .unwrap();
        Env {
            _tmp: tmp,
            pki,
            config,
            witness_key: witness.verifier(),
            log_key,
            other_key: other,
        }
    }

    fn config(&self) -> WitnessConfig {
        palisade_core::config::load(&self.config).unwrap()
    }

    /// An HTTPS client holding the certificate `<role>-<name>`.
    fn client(&self, role: Role, name: &str) -> reqwest::Client {
        let tls = palisade_pki::client_config(
            &self.pki.join("ca.crt"),
            &self.pki.join(format!("{role}-{name}.crt")),
            &self.pki.join(format!("{role}-{name}.key")),
            &[Role::Witness],
        )
        .unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn log_client(&self) -> reqwest::Client {
        self.client(Role::Log, "log")
    }

    /// A client that trusts the CA but presents no certificate.
    fn anonymous_client(&self) -> reqwest::Client {
        let roots = palisade_pki::load_roots(&self.pki.join("ca.crt")).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn log(&self) -> TestLog {
        TestLog::new(ORIGIN, self.log_key.clone(), "entry")
    }
}

/// A running witness service.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), WitnessError>>,
}

impl Running {
    async fn start(config: WitnessConfig) -> Running {
        let bound = witness_server::bind(config).await.unwrap();
        Running::serve(bound)
    }

    fn serve(bound: witness_server::BoundWitness) -> Running {
        let addr = bound.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A log in memory: its stored hashes and the root at every size.
struct TestLog {
    origin: String,
    key: SignerKey,
    seed: String,
    frontier: Frontier,
    stored: Vec<Hash>,
    roots: Vec<Hash>,
}

impl TestLog {
    fn new(origin: &str, key: SignerKey, seed: &str) -> TestLog {
        TestLog {
            origin: origin.to_owned(),
            key,
            seed: seed.to_owned(),
            frontier: Frontier::new(),
            stored: Vec::new(),
            roots: vec![empty_root()],
        }
    }

    fn grow_to(&mut self, size: u64) -> &mut Self {
        while self.frontier.size() < size {
            let entry = format!("{}-{}", self.seed, self.frontier.size());
            let hashes = self.frontier.append(leaf_hash(entry.as_bytes())).unwrap();
            self.stored.extend(hashes);
            self.roots.push(self.frontier.root());
        }
        self
    }

    fn checkpoint(&self, size: u64) -> Checkpoint {
        Checkpoint::new(&self.origin, size, self.roots[size as usize]).unwrap()
    }

    fn signed(&self, size: u64) -> Note {
        self.checkpoint(size).sign(&self.key).unwrap()
    }

    fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        consistency_proof(old, new, &self.stored).unwrap()
    }

    /// A correct `add-checkpoint` body from `old` to `new`.
    fn body(&self, old: u64, new: u64) -> Vec<u8> {
        AddCheckpointRequest::new(old, self.proof(old, new), self.signed(new))
            .unwrap()
            .to_bytes()
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

async fn post(client: &reqwest::Client, witness: &Running, body: Vec<u8>) -> Reply {
    let resp = client
        .post(witness.url("/add-checkpoint"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.text().await.unwrap();
    Reply {
        status,
        content_type,
        body,
    }
}

/// The one cosignature line of a 200 answer, checked against the witness key.
fn cosignature(reply: &Reply, checkpoint: &Checkpoint, witness: &VerifierKey) -> u64 {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type, "text/plain; charset=utf-8");
    assert!(reply.body.ends_with('\n'), "{:?}", reply.body);
    let lines: Vec<&str> = reply.body.lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", reply.body);
    let sig = NoteSignature::parse_line(lines[0]).unwrap();
    checkpoint.verify_cosignature(&sig, witness).unwrap()
}

fn assert_conflict(reply: &Reply, stored: u64) {
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.content_type, "text/x.tlog.size");
    assert_eq!(reply.body, format!("{stored}\n"));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_checkpoint_is_cosigned_and_the_cosignature_verifies() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(3);

    let before = unix_now();
    let reply = post(&client, &witness, log.body(0, 3)).await;
    let time = cosignature(&reply, &log.checkpoint(3), &env.witness_key);
    assert!(
        time >= before && time <= unix_now() + 1,
        "cosigned at {time}"
    );

    // Resubmitting the same checkpoint is cosigned again (same size, same root).
    let reply = post(&client, &witness, log.body(3, 3)).await;
    cosignature(&reply, &log.checkpoint(3), &env.witness_key);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn growing_with_a_valid_consistency_proof_is_cosigned() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(13);

    cosignature(
        &post(&client, &witness, log.body(0, 3)).await,
        &log.checkpoint(3),
        &env.witness_key,
    );
    assert!(!log.proof(3, 13).is_empty());
    cosignature(
        &post(&client, &witness, log.body(3, 13)).await,
        &log.checkpoint(13),
        &env.witness_key,
    );
    // The witness now holds 13: a proof from 3 is stale.
    assert_conflict(&post(&client, &witness, log.body(3, 13)).await, 13);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_old_size_is_409_with_the_stored_size() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(7);

    cosignature(
        &post(&client, &witness, log.body(0, 5)).await,
        &log.checkpoint(5),
        &env.witness_key,
    );
    assert_conflict(&post(&client, &witness, log.body(0, 7)).await, 5);
    assert_conflict(&post(&client, &witness, log.body(2, 7)).await, 5);
    // A never-seen log: the stored size is 0.
    let mut other = TestLog::new(OTHER_ORIGIN, env.other_key.clone(), "o");
    other.grow_to(4);
    assert_conflict(&post(&client, &witness, other.body(2, 4)).await, 0);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn old_size_above_new_is_400() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(5);

    let body = AddCheckpointRequest::new(6, Vec::new(), log.signed(5))
        .unwrap()
        .to_bytes();
    let reply = post(&client, &witness, body).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("old size 6"), "{}", reply.body);

    // A malformed body is 400 as well.
    let reply = post(&client, &witness, b"old five\n\nnonsense".to_vec()).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_log_signature_or_unknown_key_is_403() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(5);

    // Signed by a key of the same name that the witness does not know.
    let impostor = SignerKey::generate(env.log_key.name(), KeyType::Ed25519).unwrap();
    let forged = log.checkpoint(5).sign(&impostor).unwrap();
    let body = AddCheckpointRequest::new(0, Vec::new(), forged)
        .unwrap()
        .to_bytes();
    let reply = post(&client, &witness, body).await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // The log's real key id, but its signature belongs to another checkpoint.
    let real = log.signed(4);
    let mut moved = Note::new(log.checkpoint(5).to_text()).unwrap();
    moved.add_signature(real.signatures()[0].clone()).unwrap();
    let body = AddCheckpointRequest::new(0, Vec::new(), moved)
        .unwrap()
        .to_bytes();
    let reply = post(&client, &witness, body).await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // Nothing was stored: the honest checkpoint from 0 is still accepted.
    cosignature(
        &post(&client, &witness, log.body(0, 5)).await,
        &log.checkpoint(5),
        &env.witness_key,
    );
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_origin_is_404() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let key = SignerKey::generate("palisade.test/clusters/nobody", KeyType::Ed25519).unwrap();
    let mut stranger = TestLog::new("palisade.test/clusters/nobody", key, "s");
    stranger.grow_to(2);
    let reply = post(&client, &witness, stranger.body(0, 2)).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.body.contains("nobody"), "{}", reply.body);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_consistency_proof_is_422() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(11);

    cosignature(
        &post(&client, &witness, log.body(0, 3)).await,
        &log.checkpoint(3),
        &env.witness_key,
    );
    let mut proof = log.proof(3, 11);
    proof[0] = Hash([0x5a; 32]);
    let body = AddCheckpointRequest::new(3, proof, log.signed(11))
        .unwrap()
        .to_bytes();
    let reply = post(&client, &witness, body).await;
    assert_eq!(reply.status, 422, "{}", reply.body);

    // A proof for other sizes does not fit either.
    let body = AddCheckpointRequest::new(3, log.proof(4, 11), log.signed(11))
        .unwrap()
        .to_bytes();
    assert_eq!(post(&client, &witness, body).await.status, 422);
    // The stored state did not move.
    assert_conflict(&post(&client, &witness, log.body(0, 11)).await, 3);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_is_refused() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(4);
    cosignature(
        &post(&client, &witness, log.body(0, 4)).await,
        &log.checkpoint(4),
        &env.witness_key,
    );

    // Same key, same size, different entries: a split view.
    let mut fork = TestLog::new(ORIGIN, env.log_key.clone(), "forked");
    fork.grow_to(6);
    assert_ne!(fork.checkpoint(4).root(), log.checkpoint(4).root());
    assert_conflict(&post(&client, &witness, fork.body(4, 4)).await, 4);
    // Growing the fork: its proof does not lead from the stored root.
    let reply = post(&client, &witness, fork.body(4, 6)).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_log_certificates_may_add_checkpoints() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let mut log = env.log();
    log.grow_to(3);

    for (role, name) in [(Role::Gateway, "gw"), (Role::Operator, "alice")] {
        let client = env.client(role, name);
        let reply = post(&client, &witness, log.body(0, 3)).await;
        assert_eq!(reply.status, 403, "{role}: {}", reply.body);
        assert_eq!(reply.content_type, "text/plain; charset=utf-8");
        assert!(reply.body.contains("role log"), "{}", reply.body);
        assert!(reply.body.contains(role.as_str()), "{}", reply.body);
    }
    // Nothing was stored by them.
    cosignature(
        &post(&env.log_client(), &witness, log.body(0, 3)).await,
        &log.checkpoint(3),
        &env.witness_key,
    );
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_without_a_client_certificate_is_refused() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let mut log = env.log();
    log.grow_to(3);
    let answer = env
        .anonymous_client()
        .post(witness.url("/add-checkpoint"))
        .body(log.body(0, 3))
        .send()
        .await;
    match answer {
        Err(_) => {}
        Ok(resp) => assert_eq!(resp.status().as_u16(), 403),
    }
    // Still nothing stored.
    cosignature(
        &post(&env.log_client(), &witness, log.body(0, 3)).await,
        &log.checkpoint(3),
        &env.witness_key,
    );
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_oversize_bodies() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let resp = client.get(witness.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // The witness answers 413 without reading the body; the client may then still be
    // writing it and see the connection close instead (HTTP/1.1 has no way around
    // that race), so either outcome means "refused".
    let huge = vec![b'a'; 2 << 20];
    match client
        .post(witness.url("/add-checkpoint"))
        .body(huge)
        .send()
        .await
    {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
    // The witness still serves (on a new connection: it closed that one).
    let mut log = env.log();
    log.grow_to(2);
    cosignature(
        &post(&env.log_client(), &witness, log.body(0, 2)).await,
        &log.checkpoint(2),
        &env.witness_key,
    );
    witness.stop().await;
}

/// The router in-process, as a caller holding `identity` would reach it.
async fn call_router(
    router: &axum::Router,
    identity: Option<(Role, &str)>,
    body: Vec<u8>,
) -> (u16, String) {
    use tower_service::Service;
    let peer = Peer {
        addr: "127.0.0.1:1".parse().unwrap(),
        identity: identity.map(|(role, name)| (role, CertName::new(name).unwrap())),
        chain: Default::default(),
    };
    let mut request = axum::http::Request::post("/add-checkpoint")
        .body(axum::body::Body::from(body))
        .unwrap();
    request.extensions_mut().insert(peer);
    let resp = router.clone().call(request).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn router_in_process_enforces_the_body_limit_and_the_log_role() {
    let env = Env::new();
    let config = env.config();
    let key = witness_server::load_key(&config.key_file).unwrap();
    let logs = WitnessedLogs::from_config(&config.logs).unwrap();
    let store = palisade_state::open_embedded(&config.state_file).unwrap();
    let witness = Arc::new(Witness::new(key, logs, store).unwrap());
    let router = witness_server::router(witness.clone());
    let log_caller = Some((Role::Log, "log"));

    let (status, _) = call_router(&router, log_caller, vec![b'a'; MAX_BODY_BYTES + 1]).await;
    assert_eq!(status, 413);
    // Exactly at the limit the body is read, and refused as malformed.
    let (status, _) = call_router(&router, log_caller, vec![b'a'; MAX_BODY_BYTES]).await;
    assert_eq!(status, 400);

    let mut log = env.log();
    log.grow_to(3);
    let (status, body) = call_router(&router, None, log.body(0, 3)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no client certificate"), "{body}");
    let (status, body) = call_router(&router, Some((Role::Agent, "demo-0")), log.body(0, 3)).await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = call_router(&router, log_caller, log.body(0, 3)).await;
    assert_eq!(status, 200, "{body}");
    let stored = witness.stored(ORIGIN).await.unwrap().unwrap();
    assert_eq!((stored.size, stored.root), (3, *log.checkpoint(3).root()));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_a_restart() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let mut log = env.log();
    log.grow_to(9);
    {
        let client = env.log_client();
        cosignature(
            &post(&client, &witness, log.body(0, 5)).await,
            &log.checkpoint(5),
            &env.witness_key,
        );
    }
    witness.stop().await;

    // The state file stays locked until the old server's connections have closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let bound = loop {
        match witness_server::bind(env.config()).await {
            Ok(bound) => break bound,
            Err(WitnessError::State(e)) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    let witness = Running::serve(bound);
    let client = env.log_client();
    assert_conflict(&post(&client, &witness, log.body(0, 9)).await, 5);
    // The fork check still knows the stored root.
    let mut fork = TestLog::new(ORIGIN, env.log_key.clone(), "forked");
    fork.grow_to(5);
    assert_conflict(&post(&client, &witness, fork.body(5, 5)).await, 5);
    cosignature(
        &post(&client, &witness, log.body(5, 9)).await,
        &log.checkpoint(9),
        &env.witness_key,
    );
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_leave_exactly_one_accepted_chain() {
    let env = Env::new();
    let witness = Running::start(env.config()).await;
    let client = env.log_client();
    let mut log = env.log();
    log.grow_to(12);

    // Two requests start from every old size 0..10: if check-and-persist were not
    // atomic, both of a pair could be accepted from the same stored state.
    let mut requests = Vec::new();
    for old in 0..10u64 {
        requests.push((old, old + 1));
        requests.push((old, old + 2));
    }
    let tasks: Vec<_> = requests
        .iter()
        .map(|&(old, new)| {
            let body = log.body(old, new);
            let client = client.clone();
            let url = witness.url("/add-checkpoint");
            tokio::spawn(async move {
                let resp = client.post(url).body(body).send().await.unwrap();
                let status = resp.status().as_u16();
                (old, new, status, resp.text().await.unwrap())
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut conflicts = Vec::new();
    for task in tasks {
        let (old, new, status, body) = task.await.unwrap();
        match status {
            200 => {
                let sig = NoteSignature::parse_line(body.trim_end()).unwrap();
                log.checkpoint(new)
                    .verify_cosignature(&sig, &env.witness_key)
                    .unwrap();
                accepted.push((old, new));
            }
            409 => conflicts.push(body.trim_end().parse::<u64>().unwrap()),
            other => panic!("{old}->{new}: unexpected {other}: {body}"),
        }
    }
    assert!(!accepted.is_empty(), "one request from 0 must win");

    // The accepted answers form one chain from 0: each starts where the previous
    // ended, so no two were decided from the same state.
    accepted.sort();
    let mut at = 0;
    for &(old, new) in &accepted {
        assert_eq!(old, at, "accepted {accepted:?}");
        at = new;
    }
    // Every refusal reported a state on that chain.
    for size in conflicts {
        assert!(
            size == 0 || accepted.iter().any(|&(_, new)| new == size),
            "409 reported {size}, not on the chain {accepted:?}"
        );
    }

    // Twenty requests from the one stored state: exactly one wins, and every other
    // is told the winner's size.
    log.grow_to(at + 20);
    let tasks: Vec<_> = (1..=20u64)
        .map(|k| {
            let body = log.body(at, at + k);
            let client = client.clone();
            let url = witness.url("/add-checkpoint");
            tokio::spawn(async move {
                let resp = client.post(url).body(body).send().await.unwrap();
                let status = resp.status().as_u16();
                (at + k, status, resp.text().await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut told = Vec::new();
    for task in tasks {
        let (new, status, body) = task.await.unwrap();
        match status {
            200 => winners.push(new),
            409 => told.push(body.trim_end().parse::<u64>().unwrap()),
            other => panic!("{at}->{new}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners {winners:?}");
    let winner = winners[0];
    assert_eq!(told.len(), 19);
    assert!(
        told.iter().all(|&s| s == winner),
        "409 sizes {told:?}, winner {winner}"
    );

    // The stored state is the winner: every accepted size is at most it, and the
    // next request must start there.
    assert!(accepted.iter().all(|&(_, new)| new <= winner));
    assert_conflict(&post(&client, &witness, log.body(0, at + 20)).await, winner);
    cosignature(
        &post(&client, &witness, log.body(winner, at + 20)).await,
        &log.checkpoint(at + 20),
        &env.witness_key,
    );
    witness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn start_refuses_a_key_others_can_read_and_a_log_key_as_witness_key() {
    let env = Env::new();
    let config = env.config();
    std::fs::set_permissions(&config.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = witness_server::bind(config.clone()).await.unwrap_err();
    assert!(
        matches!(err, WitnessError::KeyReadableByOthers { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");

    write_key(&config.key_file, &env.log_key);
    let err = witness_server::bind(config).await.unwrap_err();
    assert!(
        matches!(err, WitnessError::NotACosignatureKey { .. }),
        "{err}"
    );
}

fn write_key(path: &Path, key: &SignerKey) {
    std::fs::write(path, key.to_private_text()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
