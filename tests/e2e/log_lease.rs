//! Two log processes on one storage: only the holder of the etcd sequencer lease
//! serves and appends; the other stands by, and takes over — recovering the same
//! tree — when the holder dies.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::{free_port_block, palisade, Running};
use harness::{Moto, Stack, StateEtcd};
use palisade_agent::client::Dispatcher;
use palisade_policy::keys::SigningKey;
use std::time::{Duration, Instant};

fn log_process(stack: &Stack, name: &str, port: u16, etcd: &str) -> Running {
    log_process_on(
        stack,
        name,
        port,
        etcd,
        "[storage]\nkind = \"local\"\ndir = \"tiles-ha\"\n",
    )
}

/// A log process of the stack's configuration on `storage` (a `[storage]` table),
/// with the lease.
fn log_process_on(stack: &Stack, name: &str, port: u16, etcd: &str, storage: &str) -> Running {
    let config = log_process_config(stack, name, port, etcd, storage);
    let mut cmd = palisade();
    cmd.args(["log", "serve", "--config", &config.display().to_string()]);
    Running::spawn(cmd)
}

/// The configuration file of [`log_process_on`].
fn log_process_config(
    stack: &Stack,
    name: &str,
    port: u16,
    etcd: &str,
    storage: &str,
) -> std::path::PathBuf {
    let ldir = stack.dir.join("log");
    let text = std::fs::read_to_string(ldir.join("log.toml")).expect("log.toml");
    // Its own listener and storage, no witness (the stack's witness follows the
    // stack's log), and the lease.
    // (`up` writes the witness table last.)
    let without_witness = text.split("[[witness]]").next().expect("config text");
    let mut out = String::new();
    for line in without_witness.lines() {
        let line = if line.starts_with("listen = ") {
            format!("listen = \"127.0.0.1:{port}\"")
        } else if line.starts_with("witness_quorum") {
            "witness_quorum = 0".to_string()
        } else if line.starts_with("metrics_listen")
            || line.starts_with("[storage]")
            || line.starts_with("kind = \"local\"")
            || line.starts_with("dir = \"tiles\"")
        {
            String::new()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("\n{storage}"));
    out.push_str(&format!(
        "\n[leader]\nendpoints = [\"{etcd}\"]\nprefix = \"/palisade-lease-test\"\nttl_secs = 3\n"
    ));
    let config = ldir.join(format!("{name}.toml"));
    std::fs::write(&config, out).expect("write config");
    config
}

fn dispatcher(stack: &Stack, port: u16) -> Dispatcher {
    let d = &stack.dir;
    Dispatcher::new(
        &d.join("pki/ca.crt"),
        &d.join("pki/gateway-gateway.crt"),
        &d.join("pki/gateway-gateway.key"),
        SigningKey::read(&d.join("gateway/keys/gateway.key")).expect("key"),
        &format!("https://127.0.0.1:{port}"),
    )
    .expect("dispatcher")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sequencer_at_a_time_and_a_standby_takes_over() {
    let stack = Stack::start();
    let etcd = StateEtcd::start();
    let ports = free_port_block();
    let (pa, pb) = (ports, ports + 1);

    let mut a = log_process(&stack, "log-a", pa, &etcd.endpoint);
    a.wait_for("holds the sequencer lease", Duration::from_secs(30));
    a.wait_for("log listening", Duration::from_secs(30));
    let mut b = log_process(&stack, "log-b", pb, &etcd.endpoint);
    b.wait_for("standing by", Duration::from_secs(30));
    // The standby neither listens nor touches the storage.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pb)).is_err(),
        "the standby serves"
    );

    let first = dispatcher(&stack, pa)
        .append("demo", b"entry 0 through the leader")
        .await
        .expect("append to the leader");
    assert_eq!(first.index, 0);

    // The leader dies without releasing: the standby takes over within the TTL.
    a.child.kill().expect("kill");
    let _ = a.child.wait();
    let started = Instant::now();
    b.wait_for("holds the sequencer lease", Duration::from_secs(20));
    b.wait_for("log listening", Duration::from_secs(30));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "takeover took {took:?}");

    // It recovered the same tree: the next entry follows the first.
    let second = dispatcher(&stack, pb)
        .append("demo", b"entry 1 through the new leader")
        .await
        .expect("append to the new leader");
    assert_eq!(second.index, 1);
}

const BUCKET: &str = "palisade-log-ha";

/// The `[storage]` table of a log on moto.
fn s3_storage(stack: &Stack, moto: &Moto) -> String {
    let creds = stack.dir.join("s3.credentials");
    std::fs::write(&creds, "testing:testing\n").expect("credentials");
    format!(
        "[storage]\nkind = \"s3\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\n\
         endpoint = \"http://127.0.0.1:{}\"\ncredentials_file = \"{}\"\n",
        moto.port,
        creds.display()
    )
}

fn bucket(moto: &Moto) -> palisade_tlog_service::store::S3Location {
    palisade_tlog_service::store::S3Location {
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
        credentials: palisade_aws::AwsCredentials::fixed("testing", "testing", None),
    }
}

/// The size in the demo log's checkpoint object, read from the bucket.
async fn stored_size(moto: &Moto) -> u64 {
    let store = palisade_tlog_service::store::TileStore::s3(&bucket(moto)).expect("s3");
    let bytes = store
        .read("clusters/demo/checkpoint")
        .await
        .expect("read")
        .expect("a checkpoint");
    let text = String::from_utf8_lossy(&bytes).to_string();
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a checkpoint: {text}"))
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_writes_nothing_after_a_failover() {
    let stack = Stack::start();
    let etcd = StateEtcd::start();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let storage = s3_storage(&stack, &moto);
    let ports = free_port_block();
    let (pa, pb) = (ports, ports + 1);

    // The first leader batches appends for 2 s: an append it took is still waiting
    // to be written when it is paused.
    let slow = format!("{storage}\n[batch]\nmax_delay_ms = 2000\n");
    let mut a = log_process_on(&stack, "log-a", pa, &etcd.endpoint, &slow);
    a.wait_for("log listening", Duration::from_secs(30));
    let mut b = log_process_on(&stack, "log-b", pb, &etcd.endpoint, &storage);
    b.wait_for("standing by", Duration::from_secs(30));
    let first = dispatcher(&stack, pa)
        .append("demo", b"entry 0 through the first leader")
        .await
        .expect("append to the leader");
    assert_eq!(first.index, 0);

    // An append reaches the leader, which is then paused (a GC pause, a frozen VM)
    // past its lease, with the entry in its batch.
    let late = tokio::spawn({
        let d = dispatcher(&stack, pa);
        async move {
            d.append("demo", b"a late entry through the paused leader")
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(a.child.id(), "STOP");
    // The standby takes over and appends.
    b.wait_for("log listening", Duration::from_secs(30));
    let second = dispatcher(&stack, pb)
        .append("demo", b"entry 1 through the new leader")
        .await
        .expect("append to the new leader");
    assert_eq!(second.index, 1);
    let store = palisade_tlog_service::store::TileStore::s3(&bucket(&moto)).expect("s3");
    let before = store
        .read("clusters/demo/checkpoint")
        .await
        .expect("read")
        .expect("checkpoint");

    // The old leader resumes with its batch due: it must write nothing.
    signal(a.child.id(), "CONT");
    let answer = tokio::time::timeout(Duration::from_secs(30), late)
        .await
        .expect("the resumed leader answers or closes")
        .expect("task");
    assert!(
        answer.is_err(),
        "the paused leader acknowledged an append after losing its lease: {answer:?}"
    );
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the fenced leader exits with an error");
    let after = store
        .read("clusters/demo/checkpoint")
        .await
        .expect("read")
        .expect("checkpoint");
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&before),
        "the old leader replaced the new leader's checkpoint"
    );
    assert_eq!(stored_size(&moto).await, 2);

    // The new leader's tree is intact: the next entry follows its own.
    let third = dispatcher(&stack, pb)
        .append("demo", b"entry 2 through the new leader")
        .await
        .expect("append after the old leader resumed");
    assert_eq!(third.index, 2);
    assert_eq!(stored_size(&moto).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_checkpoint_write_is_refused_by_the_storage_itself() {
    // The narrow case the lease check cannot close: a process that checked its
    // lease, then paused before its write reached storage. Both terms "hold" here
    // (two lease names); the storage's conditional write alone must refuse.
    use palisade_state::lease::Leadership;
    use palisade_tlog_service::store::TileStore;
    let etcd = StateEtcd::start();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let state = palisade_state::EtcdStore::connect(
        std::slice::from_ref(&etcd.endpoint),
        "/fence-test",
        None,
    )
    .await
    .expect("etcd");
    let ttl = Duration::from_secs(10);
    let term_a = Leadership::acquire(&state, "a", "a", ttl)
        .await
        .expect("lease")
        .expect("a");
    let term_b = Leadership::acquire(&state, "b", "b", ttl)
        .await
        .expect("lease")
        .expect("b");
    let location = bucket(&moto);
    let a = TileStore::s3(&location).expect("s3").fenced(term_a.fence());
    let b = TileStore::s3(&location).expect("s3").fenced(term_b.fence());

    // A creates the checkpoint; B recovers from it and writes the next one.
    assert_eq!(a.read("checkpoint").await.expect("read"), None);
    a.write("checkpoint", "size 1".into()).await.expect("first");
    assert!(b.read("checkpoint").await.expect("read").is_some());
    b.write("checkpoint", "size 2 by b".into())
        .await
        .expect("b's write");
    // A's late write: its term still "holds", but the object is not the one it wrote.
    let refused = a
        .write("checkpoint", "size 2 by a".into())
        .await
        .expect_err("a late write over another process's checkpoint");
    assert!(refused.to_string().contains("fenced"), "{refused}");
    assert_eq!(
        b.read("checkpoint").await.expect("read").as_deref(),
        Some(&b"size 2 by b"[..])
    );
    // A process that never read the object cannot create it over another's either.
    let c = TileStore::s3(&location).expect("s3").fenced(term_a.fence());
    let fresh = c.at("clusters/other");
    b.at("clusters/other")
        .read("checkpoint")
        .await
        .expect("read");
    assert_eq!(fresh.read("checkpoint").await.expect("read"), None);
    b.at("clusters/other")
        .write("checkpoint", "b first".into())
        .await
        .expect("b creates");
    let refused = fresh
        .write("checkpoint", "c second".into())
        .await
        .expect_err("create over an existing checkpoint");
    assert!(refused.to_string().contains("fenced"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_takes_its_s3_credentials_from_the_standard_aws_chain() {
    // No credentials_file: a shared profile (AWS_PROFILE) is where the keys are.
    let stack = Stack::start();
    let etcd = StateEtcd::start();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let storage = format!(
        "[storage]\nkind = \"s3\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\n\
         endpoint = \"http://127.0.0.1:{}\"\n",
        moto.port
    );
    let aws = stack.dir.join("aws");
    std::fs::create_dir_all(&aws).expect("dir");
    std::fs::write(
        aws.join("credentials"),
        "[palisade-log]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .expect("credentials");
    let spawn = |name: &str, port: u16, profile: &str| {
        let config = {
            let r = log_process_config(&stack, name, port, &etcd.endpoint, &storage);
            r.display().to_string()
        };
        let mut cmd = palisade();
        cmd.args(["log", "serve", "--config", &config])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", aws.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", aws.join("credentials"))
            .env("AWS_PROFILE", profile);
        Running::spawn(cmd)
    };
    let ports = free_port_block();
    // Without credentials anywhere the chain looks, the log does not start, and says
    // where it looked.
    let mut none = spawn("log-none", ports, "nobody");
    let status = none.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(300));
    none.drain();
    let said = none.seen.join("\n");
    assert!(said.contains("standard AWS provider chain"), "{said}");
    // With the profile: it starts, and appends land in the bucket.
    let mut log = spawn("log-profile", ports + 1, "palisade-log");
    log.wait_for("log listening", Duration::from_secs(30));
    let appended = dispatcher(&stack, ports + 1)
        .append("demo", b"an entry stored with profile credentials")
        .await
        .expect("append");
    assert_eq!(appended.index, 0);
    assert_eq!(stored_size(&moto).await, 1);
}
