//! Claims C6/C7, the log half: every operator action lands in a per-cluster log that
//! the customer can read whole and verify, and that nobody — not even a provider
//! insider holding the log's own key and disk — can rewrite, roll back or fork
//! without the customer noticing.
//!
//! The stack is the real one (`palisade up`: log and witness processes over mutual
//! TLS); the attacker acts through the same interfaces an insider would have.

#[path = "../e2e/common.rs"]
mod common;

use common::{free_port_block, palisade, Running};
use palisade_pki::Role;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::note::Note;
use palisade_tlog::tile::TileHashReader;
use palisade_tlog::tree::consistency_proof;
use palisade_tlog::witness::AddCheckpointRequest;
use palisade_tlog_service::fetch::{MemoryTiles, StoreFetcher};
use palisade_tlog_service::store::TileStore;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

const ORIGIN: &str = "palisade.local/log/demo";

struct Stack {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    port: u16,
    run: Running,
}

impl Stack {
    fn start() -> Stack {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("stack");
        let port = free_port_block();
        let run = Self::up(&dir, port);
        Stack {
            _tmp: tmp,
            dir,
            port,
            run,
        }
    }

    fn up(dir: &std::path::Path, port: u16) -> Running {
        let mut cmd = palisade();
        cmd.arg("up")
            .arg("--dir")
            .arg(dir)
            .arg("--base-port")
            .arg(port.to_string());
        let mut run = Running::spawn(cmd);
        run.wait_for("ready", Duration::from_secs(60));
        run
    }

    /// Stops the whole stack (SIGINT) and starts it again on the same directory.
    fn restart(&mut self) {
        self.run.signal("INT");
        self.run.wait_exit(Duration::from_secs(30));
        self.run = Self::up(&self.dir, self.port);
    }

    fn log_url(&self, cluster: &str) -> String {
        format!("https://127.0.0.1:{}/logs/{cluster}", self.port + 1)
    }

    fn witness_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port + 2)
    }

    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// An HTTPS client holding the certificate of `role`-`name`.
    fn client(&self, role: Role, name: &str, server: Role) -> reqwest::Client {
        let pki = self.pki();
        let tls = palisade_pki::client_config(
            &pki.join("ca.crt"),
            &pki.join(format!("{role}-{name}.crt")),
            &pki.join(format!("{role}-{name}.key")),
            &[server],
        )
        .expect("client TLS config");
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .expect("client")
    }

    fn tiles(&self) -> PathBuf {
        self.dir.join("log/tiles/clusters/demo")
    }

    /// The stored checkpoint of the demo log once it covers what the log serves now:
    /// the log writes storage from its journal within its publish interval.
    async fn stored_checkpoint(&self) -> Vec<u8> {
        let served = self
            .client(Role::Gateway, "gateway", Role::Log)
            .get(format!("{}/checkpoint", self.log_url("demo")))
            .send()
            .await
            .expect("GET checkpoint")
            .bytes()
            .await
            .expect("checkpoint");
        let want = size_of(&served);
        let path = self.tiles().join("checkpoint");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(stored) = std::fs::read(&path) {
                if size_of(&stored) >= want {
                    return stored;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "storage did not catch up with size {want} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `palisade audit verify` of the demo log through the log's read API.
    fn audit(&self, extra: &[&str]) -> Output {
        let d = self.dir.display().to_string();
        self.audit_from(
            &[
                "--url",
                &self.log_url("demo"),
                "--token",
                &format!("@{d}/tenant-demo.token"),
                "--ca",
                &format!("{d}/pki/ca.crt"),
            ],
            extra,
        )
    }

    /// `palisade audit verify` of the demo log from `source` (`--url …` or `--dir …`).
    fn audit_from(&self, source: &[&str], extra: &[&str]) -> Output {
        let d = self.dir.display().to_string();
        let mut cmd = palisade();
        cmd.args(["audit", "verify"])
            .args(source)
            .args([
                "--origin",
                ORIGIN,
                "--log-key",
                &format!("@{d}/log/keys/palisade.local_log.pub"),
            ])
            .args([
                "--witness-key",
                &format!("@{d}/witness/keys/palisade.local_witness.pub"),
                "--quorum",
                "1",
            ])
            .args(extra);
        cmd.output().expect("run palisade audit")
    }
}

fn size_of(note: &[u8]) -> u64 {
    Checkpoint::parse(Note::parse(note).expect("note").text())
        .expect("checkpoint")
        .size()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn append_as(stack: &Stack, role: Role, name: &str, entry: &str) -> reqwest::Response {
    stack
        .client(role, name, Role::Log)
        .post(format!("{}/append", stack.log_url("demo")))
        .body(entry.to_string())
        .send()
        .await
        .expect("append request")
}

async fn append_events(stack: &Stack, n: usize) {
    for i in 0..n {
        let r = append_as(
            stack,
            Role::Gateway,
            "gateway",
            &format!("{{\"event\":{i}}}"),
        )
        .await;
        assert_eq!(
            r.status(),
            200,
            "append {i}: {}",
            r.text().await.unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_verifies_the_whole_witnessed_log_and_detects_a_rewritten_entry() {
    let stack = Stack::start();
    append_events(&stack, 40).await;
    let state = stack.dir.join("customer-state.json");
    let ok = stack.audit(&["--state", state.to_str().expect("utf8")]);
    assert!(ok.status.success(), "{}", text(&ok));
    // The 40 events and, first, the agent key and the tenant's statement.
    assert!(text(&ok).contains("42 entries"), "{}", text(&ok));

    // An insider edits one stored event on disk (the bytes the customer reads).
    stack.stored_checkpoint().await;
    let bundle = stack.tiles().join("tile/entries/000.p/42");
    let original = std::fs::read(&bundle).expect("bundle");
    // Bytes, not text: the tenant statement's length prefix is not UTF-8.
    let (from, to) = (b"{\"event\":7}", b"{\"event\":8}");
    let at = original
        .windows(from.len())
        .position(|w| w == from)
        .expect("the event in the bundle");
    let mut forged = original.clone();
    forged[at..at + to.len()].copy_from_slice(to);
    std::fs::write(&bundle, forged).expect("tamper");
    let caught = stack.audit(&["--state", state.to_str().expect("utf8")]);
    assert!(
        !caught.status.success(),
        "a rewritten entry went unnoticed:\n{}",
        text(&caught)
    );
    assert!(
        text(&caught).contains("tile/entries/000.p/42"),
        "the message must name the object:\n{}",
        text(&caught)
    );
    std::fs::write(&bundle, original).expect("restore");
}

/// Readers are never served a checkpoint without its witness cosignatures, even while
/// the log stores each new checkpoint before the witness has seen it: neither through
/// the read API nor from the storage (a bucket served as static files), where the
/// checkpoint also never goes back.
#[tokio::test(flavor = "multi_thread")]
async fn every_checkpoint_served_or_stored_while_appending_is_witnessed() {
    use palisade_tlog::checkpoint::LogPolicy;
    use palisade_tlog::note::VerifierKey;
    let stack = Stack::start();
    let read_key = |rel: &str| {
        VerifierKey::parse(
            std::fs::read_to_string(stack.dir.join(rel))
                .expect("read key")
                .trim(),
        )
        .expect("verifier key")
    };
    let policy = LogPolicy::new(ORIGIN, read_key("log/keys/palisade.local_log.pub"))
        .expect("log policy")
        .with_witnesses(vec![read_key("witness/keys/palisade.local_witness.pub")], 1)
        .expect("witness quorum");
    let reader = stack.client(Role::Gateway, "gateway", Role::Log);
    let url = format!("{}/checkpoint", stack.log_url("demo"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll = {
        let (done, url) = (done.clone(), url.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let r = reader.get(&url).send().await.expect("GET checkpoint");
                assert_eq!(r.status(), 200);
                seen.push(r.bytes().await.expect("checkpoint body"));
            }
            seen
        })
    };
    // Storage is written from the journal once per publish interval: the writers go
    // on until the storage reader has seen it change three times.
    let stored_sizes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stored = {
        let (done, path) = (done.clone(), stack.tiles().join("checkpoint"));
        let stored_sizes = stored_sizes.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut sizes = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let note = std::fs::read(&path).expect("the stored checkpoint");
                if let Ok(n) = Note::parse(&note) {
                    if let Ok(c) = Checkpoint::parse(n.text()) {
                        sizes.insert(c.size());
                        stored_sizes.store(sizes.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
                seen.push(note);
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        })
    };
    // Eight writers, so that batches follow one another without pause.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = stack.client(Role::Gateway, "gateway", Role::Log);
            let url = format!("{}/append", stack.log_url("demo"));
            let stored_sizes = stored_sizes.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    if (i >= 25 && stored_sizes.load(std::sync::atomic::Ordering::Relaxed) > 3)
                        || std::time::Instant::now() > deadline
                    {
                        break;
                    }
                    let r = client
                        .post(&url)
                        .body(format!("{{\"writer\":{w},\"event\":{i}}}"))
                        .send()
                        .await
                        .expect("append");
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = poll.await.expect("poller");
    assert!(seen.len() > 10, "only {} checkpoints read", seen.len());
    let mut sizes = std::collections::BTreeSet::new();
    for note in &seen {
        let verified = policy.verify(note).unwrap_or_else(|e| {
            panic!(
                "a checkpoint was served that a reader requiring the witness refuses ({e}):\n{}",
                String::from_utf8_lossy(note)
            )
        });
        sizes.insert(verified.checkpoint().size());
    }
    assert!(
        sizes.len() > 2,
        "the reads saw too few checkpoints to test anything: {sizes:?}"
    );
    let stored = stored.join().expect("storage reader");
    let mut sizes = Vec::new();
    for note in &stored {
        let verified = policy.verify(note).unwrap_or_else(|e| {
            panic!(
                "the storage held a checkpoint that a reader requiring the witness refuses ({e}):\n{}",
                String::from_utf8_lossy(note)
            )
        });
        sizes.push(verified.checkpoint().size());
    }
    assert!(
        sizes.windows(2).all(|w| w[0] <= w[1]),
        "the stored checkpoint went back: {sizes:?}"
    );
    sizes.dedup();
    assert!(
        sizes.len() > 2,
        "the storage reads saw too few checkpoints to test anything: {sizes:?}"
    );
}

/// A log stopped after storing a batch's commit point but before its cosigned
/// checkpoint (here: the stored `checkpoint` put back one batch) continues from the
/// commit point, has it cosigned, and stores it; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_stopped_before_storing_the_cosigned_checkpoint_continues_from_its_commit_point() {
    let mut stack = Stack::start();
    append_events(&stack, 5).await;
    let older = stack.stored_checkpoint().await;
    append_events(&stack, 5).await;
    stack.run.signal("INT");
    stack.run.wait_exit(Duration::from_secs(30));
    let commit = std::fs::read(stack.tiles().join("checkpoint.commit")).expect("commit point");
    let acknowledged = size_of(&commit);
    assert!(size_of(&older) < acknowledged);
    std::fs::write(stack.tiles().join("checkpoint"), &older).expect("put back");
    stack.run = Stack::up(&stack.dir, stack.port);
    // The log serves the newest checkpoint, cosigned, and stores it.
    let stored = stack.tiles().join("checkpoint");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while size_of(&std::fs::read(&stored).expect("checkpoint")) < acknowledged {
        assert!(
            std::time::Instant::now() < deadline,
            "the cosigned checkpoint of size {acknowledged} was never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = stack.audit_from(&["--dir", stack.tiles().to_str().expect("utf8")], &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let ok = stack.audit(&[]);
    assert!(ok.status.success(), "{}", text(&ok));
    // Appends continue after it.
    let r = append_as(&stack, Role::Gateway, "gateway", "{\"after\":1}").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("append answer")).expect("JSON");
    assert_eq!(body["index"].as_u64(), Some(acknowledged), "{body}");
}

/// The policy the gateway enforces is recorded in the governance log, which every
/// tenant can read: author, approvers, version and digest, as verified from TUF.
#[tokio::test(flavor = "multi_thread")]
async fn the_enforced_policy_is_recorded_in_the_governance_log_tenants_read() {
    let mut stack = Stack::start();
    let pki = stack.pki();
    let tls = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(palisade_pki::load_roots(&pki.join("ca.crt")).expect("CA"))
        .with_no_client_auth();
    let tenant = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    let token = std::fs::read_to_string(stack.dir.join("tenant-demo.token")).expect("token");
    let base = stack.log_url("governance");
    let get = |path: String| {
        let req = tenant
            .get(format!("{base}/{path}"))
            .bearer_auth(token.trim());
        async move {
            let r = req.send().await.expect("GET");
            assert_eq!(r.status(), 200, "{path}");
            r.bytes().await.expect("body")
        }
    };
    // The gateway records the policy and the released etcd and etcdctl when it has
    // verified them, just after start.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let size = loop {
        let note = Note::parse(&get("checkpoint".into()).await).expect("note");
        let size = Checkpoint::parse(note.text()).expect("checkpoint").size();
        if size >= 3 {
            break size;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no policy and release entries within 30 s (size {size})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bundle = get(format!("tile/entries/000.p/{size}")).await;
    let entries = palisade_tlog::tile::parse_bundle(&bundle).expect("entry bundle");
    let records: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::from_slice(e).expect("JSON entry"))
        .collect();
    let policy: Vec<_> = records.iter().filter(|r| r["kind"] == "policy").collect();
    assert_eq!(policy.len(), 1, "one record per policy: {records:?}");
    let r = policy[0];
    assert_eq!(r["schema"], "palisade.dev/governance/v1");
    assert_eq!(r["version"], 1);
    assert_eq!(r["author"], "alice");
    assert_eq!(r["approvers"], serde_json::json!(["bob", "carol"]));
    // The record names exactly the policy the TUF repository verifies to.
    let datastore = tempfile::tempdir().expect("datastore");
    let verified = palisade_policy::trusted_policy::verify_policy(
        &palisade_policy::tuf::RepoDir::new(stack.dir.join("trust/repo")),
        &std::fs::read(stack.dir.join("trust/root.json")).expect("root.json"),
        datastore.path(),
    )
    .await
    .expect("the published policy verifies");
    assert_eq!(r["sha256"], verified.sha256);
    assert_eq!(r["digest"], verified.digest);
    assert_eq!(r["proposal"], verified.proposal);

    // The released etcd and etcdctl (the tool etcd.restore runs): one record each,
    // naming what the repository verifies to.
    let release: Vec<_> = records.iter().filter(|r| r["kind"] == "release").collect();
    let mut components: Vec<_> = release.iter().map(|r| r["component"].clone()).collect();
    components.sort_by_key(|c| c.to_string());
    assert_eq!(
        components,
        [serde_json::json!("etcd"), serde_json::json!("etcdctl")],
        "one record per release: {records:?}"
    );
    let r = release
        .iter()
        .find(|r| r["component"] == "etcd")
        .expect("the etcd release");
    assert_eq!(r["schema"], "palisade.dev/governance/v1");
    assert_eq!(r["component"], "etcd");
    assert_eq!(r["test_result"], "PASSED");
    let published = palisade_policy::release::published_releases(
        &palisade_policy::tuf::RepoDir::new(stack.dir.join("trust/repo")),
        &std::fs::read(stack.dir.join("trust/root.json")).expect("root.json"),
        datastore.path(),
    )
    .await
    .expect("the repository verifies");
    let etcd = published
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .find(|p| p.target.starts_with("components/etcd/"))
        .unwrap_or_else(|| panic!("no verified etcd release: {published:?}"));
    assert_eq!(published.len(), 2, "{published:?}");
    assert_eq!(r["version"], etcd.version);
    assert_eq!(r["target"], etcd.target);
    assert_eq!(r["sha256"], etcd.sha256);
    assert_eq!(r["author"], etcd.author);
    assert_eq!(r["approvers"], serde_json::json!(etcd.approvers));
    assert_eq!(r["proposal"], etcd.proposal);
    assert_eq!(size, 3, "nothing else is recorded: {records:?}");

    // A restarted gateway (nothing in memory) finds both already recorded in its
    // state store and appends neither again.
    stack.restart();
    // The line may come before `up` says it is running (read while waiting for that).
    stack.run.drain();
    if !stack
        .run
        .seen
        .iter()
        .any(|l| l.contains("governance log up to date"))
    {
        stack
            .run
            .wait_for("governance log up to date", Duration::from_secs(60));
    }
    let note = Note::parse(&get("checkpoint".into()).await).expect("note");
    assert_eq!(
        Checkpoint::parse(note.text()).expect("checkpoint").size(),
        3,
        "a restarted gateway recorded the policy or a release again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_gateway_and_agent_certificates_can_append() {
    let stack = Stack::start();
    palisade()
        .args(["pki", "issue", "--dir"])
        .arg(stack.pki())
        .args(["--kind", "operator", "--name", "mallory"])
        .output()
        .expect("issue");
    let refused = append_as(&stack, Role::Operator, "mallory", "{\"forged\":true}").await;
    assert_eq!(
        refused.status(),
        403,
        "an operator certificate appended to the log"
    );
    let accepted = append_as(&stack, Role::Agent, "demo-0", "{\"result\":1}").await;
    assert_eq!(accepted.status(), 200);
}

/// The size of `log`'s checkpoint as the log serves it now.
async fn served_size(stack: &Stack, log: &str) -> u64 {
    let note = stack
        .client(Role::Gateway, "gateway", Role::Log)
        .get(format!("{}/checkpoint", stack.log_url(log)))
        .send()
        .await
        .expect("GET checkpoint")
        .bytes()
        .await
        .expect("checkpoint");
    size_of(&note)
}

async fn append_to(stack: &Stack, name: &str, log: &str, entry: &str) -> reqwest::Response {
    stack
        .client(Role::Agent, name, Role::Log)
        .post(format!("{}/append", stack.log_url(log)))
        .body(entry.to_string())
        .send()
        .await
        .expect("append request")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_certificate_appends_only_to_its_own_clusters_log() {
    let stack = Stack::start();
    // The gateway records the policy and the releases just after start: wait until
    // it has (the size holds still for two seconds), so that the governance log's
    // size below changes only through this test.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = (0, std::time::Instant::now());
    loop {
        let size = served_size(&stack, "governance").await;
        if size != last.0 {
            last = (size, std::time::Instant::now());
        } else if size >= 2 && last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not finish recording the policy and the releases within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let governance = served_size(&stack, "governance").await;
    let demo = served_size(&stack, "demo").await;

    // demo-0 is the demo cluster's instance: its certificate cannot forge a
    // governance record (a release, a policy)...
    let forged = append_to(&stack, "demo-0", "governance", "{\"release\":\"forged\"}").await;
    assert_eq!(
        forged.status(),
        403,
        "an agent appended to the governance log"
    );
    // ...and a certificate the deployment's CA issued to an instance no cluster of
    // this log lists (another cluster's agent) cannot write into the demo log.
    let issued = palisade()
        .args(["pki", "issue", "--dir"])
        .arg(stack.pki())
        .args(["--kind", "agent", "--name", "globex-0"])
        .output()
        .expect("issue");
    assert!(issued.status.success(), "{}", text(&issued));
    let foreign = append_to(&stack, "globex-0", "demo", "{\"result\":\"forged\"}").await;
    assert_eq!(
        foreign.status(),
        403,
        "another cluster's agent appended to the demo log"
    );
    assert_eq!(served_size(&stack, "governance").await, governance);
    assert_eq!(served_size(&stack, "demo").await, demo);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_rolled_back_by_an_insider_is_detected_by_the_customer() {
    let stack = Stack::start();
    append_events(&stack, 10).await;
    let old_checkpoint = stack.stored_checkpoint().await;
    let state = stack.dir.join("customer-state.json");
    append_events(&stack, 10).await;
    let ok = stack.audit(&["--state", state.to_str().expect("utf8")]);
    assert!(ok.status.success(), "{}", text(&ok));
    // Storage has the newer checkpoint before the rollback, so that the log's own
    // next publish does not undo the insider's write.
    stack.stored_checkpoint().await;
    // The insider restores the older (validly signed and witnessed) checkpoint in the
    // storage that customers read (a bucket served as static files, or a mirror of it).
    std::fs::write(stack.tiles().join("checkpoint"), old_checkpoint).expect("roll back");
    let caught = stack.audit_from(
        &["--dir", stack.tiles().to_str().expect("utf8")],
        &["--state", state.to_str().expect("utf8")],
    );
    assert!(
        !caught.status.success(),
        "rollback went unnoticed:\n{}",
        text(&caught)
    );
    assert!(text(&caught).contains("rolled back"), "{}", text(&caught));
}

/// An insider holding the log's private key and the log's certificate builds a second
/// history of the same log. The witness refuses to cosign it, and a customer who
/// verified the real log before detects the fork even if shown only the forged one.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_signed_with_the_log_key_is_refused_by_the_witness_and_caught_by_the_customer() {
    let stack = Stack::start();
    append_events(&stack, 20).await;
    let state = stack.dir.join("customer-state.json");
    let ok = stack.audit(&["--state", state.to_str().expect("utf8")]);
    assert!(ok.status.success(), "{}", text(&ok));

    // The forged history: same origin, same key, entry 5 differs, then it grows.
    let fork = stack.dir.join("fork");
    let key = stack.dir.join("log/keys/palisade.local_log.key");
    let mut lines: Vec<String> = (0..30).map(|i| format!("{{\"event\":{i}}}")).collect();
    lines[5] = "{\"event\":\"erased\"}".into();
    let mut append = palisade();
    append
        .args(["log", "append", "--dir"])
        .arg(&fork)
        .args(["--origin", ORIGIN, "--key-file"])
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = append.spawn().expect("log append");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{}\n", lines.join("\n")).as_bytes())
            .expect("write");
    }
    assert!(child.wait().expect("wait").success());

    // The witness has seen size 20 of the real log; the fork claims 30 consistent with it.
    let note_bytes = std::fs::read(fork.join("checkpoint")).expect("fork checkpoint");
    let note = Note::parse(&note_bytes).expect("note");
    let cp = Checkpoint::parse(note.text()).expect("checkpoint");
    let store = TileStore::local(&fork).expect("store");
    let memory = MemoryTiles::new();
    let proof = tokio::task::block_in_place(|| {
        let fetcher = StoreFetcher::new(&store, &memory);
        let reader = TileHashReader::new(cp.size(), *cp.root(), &fetcher);
        consistency_proof(20, cp.size(), &reader).expect("proof within the fork")
    });
    let body = AddCheckpointRequest::new(20, proof, note)
        .expect("request")
        .to_bytes();
    let answer = stack
        .client(Role::Log, "log", Role::Witness)
        .post(format!("{}/add-checkpoint", stack.witness_url()))
        .body(body)
        .send()
        .await
        .expect("witness request");
    let status = answer.status().as_u16();
    assert!(
        status == 409 || status == 422,
        "the witness cosigned a fork: {status}"
    );

    // Shown only the fork, the customer's verifier refuses it: no witness
    // cosignature, and — even without witnesses — it contradicts the saved state.
    let d = stack.dir.display().to_string();
    let base = |quorum: bool| {
        let mut c = palisade();
        c.args(["audit", "verify", "--dir"]).arg(&fork).args([
            "--origin",
            ORIGIN,
            "--log-key",
            &format!("@{d}/log/keys/palisade.local_log.pub"),
        ]);
        if quorum {
            c.args([
                "--witness-key",
                &format!("@{d}/witness/keys/palisade.local_witness.pub"),
                "--quorum",
                "1",
            ]);
        }
        c
    };
    let unwitnessed = base(true).output().expect("audit");
    assert!(!unwitnessed.status.success(), "{}", text(&unwitnessed));
    let forked = base(false)
        .args(["--state", state.to_str().expect("utf8")])
        .output()
        .expect("audit");
    assert!(!forked.status.success(), "{}", text(&forked));
    assert!(text(&forked).contains("fork"), "{}", text(&forked));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_read_another_tenants_log() {
    let stack = Stack::start();
    // Add a second tenant and cluster, and a token for it; restart the stack's log.
    let inventory = stack.dir.join("inventory.toml");
    let mut inv = std::fs::read_to_string(&inventory).expect("inventory");
    inv.push_str(
        "\n[[tenant]]\nid = \"acme\"\n\n[[cluster]]\nid = \"acme-prod\"\ntenant = \"acme\"\n",
    );
    std::fs::write(&inventory, inv).expect("inventory");
    let token = "acme-secret-token";
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    let log_toml = stack.dir.join("log/log.toml");
    let mut cfg = std::fs::read_to_string(&log_toml).expect("log.toml");
    cfg.push_str(&format!(
        "\n[[reader]]\ntenant = \"acme\"\ntoken_sha256 = \"{digest}\"\n"
    ));
    std::fs::write(&log_toml, cfg).expect("log.toml");
    // Stop the stack cleanly (up waits for its children), then start it again.
    let mut first = stack.run;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).success());
    let port = stack.port;
    let mut cmd = palisade();
    cmd.arg("up")
        .arg("--dir")
        .arg(&stack.dir)
        .arg("--base-port")
        .arg(port.to_string());
    let mut run = Running::spawn(cmd);
    run.wait_for("ready", Duration::from_secs(60));

    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(
                    palisade_pki::load_roots(&stack.dir.join("pki/ca.crt")).expect("roots"),
                )
                .with_no_client_auth(),
        )
        .build()
        .expect("client");
    let get = |cluster: &str, token: &str| {
        client
            .get(format!(
                "https://127.0.0.1:{}/logs/{cluster}/checkpoint",
                port + 1
            ))
            .bearer_auth(token)
            .send()
    };
    let demo_token = std::fs::read_to_string(stack.dir.join("tenant-demo.token")).expect("token");
    assert_eq!(get("acme-prod", token).await.expect("get").status(), 200);
    let cross = get("demo", token).await.expect("get");
    assert_eq!(cross.status(), 404, "acme read demo's log");
    let cross_body = cross.text().await.expect("body");
    let missing = get("no-such-cluster", token)
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert_eq!(
        cross_body.replace("demo", "X"),
        missing.replace("no-such-cluster", "X"),
        "another tenant's cluster must look exactly like a missing one"
    );
    assert_eq!(
        get("acme-prod", demo_token.trim())
            .await
            .expect("get")
            .status(),
        404,
        "demo read acme's log"
    );
    assert_eq!(get("governance", token).await.expect("get").status(), 200);
    run.signal("TERM");
    run.wait_exit(Duration::from_secs(30));
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let path = e.path();
        let target = to.join(e.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Freshness: every log is cosigned again at least every `[checkpoint]
/// max_interval_secs`, appends or not, so that a frozen copy of the log (served by an
/// insider to hide what came after) fails `audit verify --max-age`, while the honest
/// log, idle all along, passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_log_fails_max_age_and_the_idle_honest_one_passes() {
    let mut stack = Stack::start();
    let config = stack.dir.join("log/log.toml");
    let mut toml = std::fs::read_to_string(&config).expect("log.toml");
    toml.push_str("\n[checkpoint]\nmax_interval_secs = 2\n");
    std::fs::write(&config, toml).expect("write log.toml");
    stack.restart();
    append_events(&stack, 3).await;
    stack.stored_checkpoint().await;
    let frozen = stack.dir.join("frozen");
    copy_tree(&stack.tiles(), &frozen);
    let frozen_dir = frozen.display().to_string();
    // Fresh at first: the copy is the log as it is now.
    let out = stack.audit_from(&["--dir", &frozen_dir], &["--max-age", "30s"]);
    assert!(out.status.success(), "{}", text(&out));
    // Six idle seconds later, three intervals: the copy is stale, the log is not.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = stack.audit_from(&["--dir", &frozen_dir], &["--max-age", "4s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("is not fresh") && t.contains("withheld"), "{t}");
    let out = stack.audit(&["--max-age", "4s"]);
    assert!(out.status.success(), "the idle honest log: {}", text(&out));
    // --max-age means nothing without the witnesses it is about.
    let d = stack.dir.display().to_string();
    let out = palisade()
        .args([
            "audit",
            "verify",
            "--dir",
            &frozen_dir,
            "--origin",
            ORIGIN,
            "--log-key",
        ])
        .arg(format!("@{d}/log/keys/palisade.local_log.pub"))
        .args(["--max-age", "5m"])
        .output()
        .expect("audit");
    assert!(!out.status.success());
    assert!(text(&out).contains("--witness-key"), "{}", text(&out));
}

/// `palisade audit watch --once` of the demo log from `source`, with `state`.
fn watch_once(stack: &Stack, source: &[&str], state: &std::path::Path, extra: &[&str]) -> Output {
    let d = stack.dir.display().to_string();
    palisade()
        .args(["audit", "watch", "--once"])
        .args(source)
        .args([
            "--origin",
            ORIGIN,
            "--log-key",
            &format!("@{d}/log/keys/palisade.local_log.pub"),
            "--witness-key",
            &format!("@{d}/witness/keys/palisade.local_witness.pub"),
        ])
        .arg("--state")
        .arg(state)
        .args(extra)
        .output()
        .expect("run palisade audit watch")
}

/// `palisade audit watch`: quiet while the log only grows and stays fresh; an alarm
/// (exit 2, or the --on-alarm program) on a stale view, a rollback and a fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_watch_alarms_on_a_stale_view_a_rollback_and_a_fork() {
    let mut stack = Stack::start();
    let config = stack.dir.join("log/log.toml");
    let mut toml = std::fs::read_to_string(&config).expect("log.toml");
    toml.push_str("\n[checkpoint]\nmax_interval_secs = 2\n");
    std::fs::write(&config, toml).expect("write log.toml");
    stack.restart();
    append_events(&stack, 3).await;
    let d = stack.dir.display().to_string();
    let token = format!("@{d}/tenant-demo.token");
    let ca = format!("{d}/pki/ca.crt");
    let url = stack.log_url("demo");
    let live = [
        "--url",
        url.as_str(),
        "--token",
        token.as_str(),
        "--ca",
        ca.as_str(),
    ];
    let state = stack.dir.join("watch.state");

    let out = watch_once(&stack, &live, &state, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok palisade.local/log/demo size 5"),
        "{}",
        text(&out)
    );

    // A copy frozen now; the log goes on.
    stack.stored_checkpoint().await;
    let frozen = stack.dir.join("frozen");
    copy_tree(&stack.tiles(), &frozen);
    let frozen_dir = frozen.display().to_string();
    append_events(&stack, 2).await;
    let out = watch_once(&stack, &live, &state, &[]);
    assert!(out.status.success(), "the log grew: {}", text(&out));

    // Shown the frozen copy, smaller than what was proven: a rollback.
    let out = watch_once(&stack, &["--dir", &frozen_dir], &state, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ALARM rollback"), "{}", text(&out));

    // A state of the same size with another root: a fork.
    let forked_state = stack.dir.join("forked.state");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    s["root"] = serde_json::Value::String(
        palisade_tlog::hash::Hash::from_hex(&"07".repeat(32))
            .expect("hash")
            .to_base64(),
    );
    std::fs::write(&forked_state, s.to_string()).expect("write");
    let out = watch_once(&stack, &live, &forked_state, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ALARM fork"), "{}", text(&out));

    // The frozen copy, on its own, goes stale; the program runs with the alarm.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fresh_state = stack.dir.join("frozen.state");
    let record = stack.dir.join("alarm.txt");
    let program = stack.dir.join("alarm.sh");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho \"$PALISADE_ALARM $PALISADE_LOG\" >> {}\n",
            record.display()
        ),
    )
    .expect("write the alarm program");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let out = watch_once(
        &stack,
        &["--dir", &frozen_dir],
        &fresh_state,
        &[
            "--max-age",
            "3s",
            "--on-alarm",
            program.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ALARM stale"), "{}", text(&out));
    let recorded = std::fs::read_to_string(&record).expect("the alarm program ran");
    assert_eq!(
        recorded.trim(),
        "stale palisade.local/log/demo",
        "{recorded}"
    );
    // The live log, idle as long, is fresh.
    let out = watch_once(&stack, &live, &state, &["--max-age", "3s"]);
    assert!(out.status.success(), "{}", text(&out));
}
