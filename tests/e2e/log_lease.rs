//! Two log processes on one storage: only the holder of the etcd sequencer lease
//! serves and appends; the other stands by, and takes over — recovering the same
//! tree — when the holder dies.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::{free_port_block, palisade, Running};
use harness::{Stack, StateEtcd};
use palisade_agent::client::Dispatcher;
use palisade_policy::keys::SigningKey;
use std::time::{Duration, Instant};

fn log_process(stack: &Stack, name: &str, port: u16, etcd: &str) -> Running {
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
        } else if line.starts_with("metrics_listen") {
            String::new()
        } else if line.starts_with("dir = \"tiles\"") {
            "dir = \"tiles-ha\"".to_string()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n[leader]\nendpoints = [\"{etcd}\"]\nprefix = \"/palisade-lease-test\"\nttl_secs = 3\n"
    ));
    let config = ldir.join(format!("{name}.toml"));
    std::fs::write(&config, out).expect("write config");
    let mut cmd = palisade();
    cmd.args(["log", "serve", "--config", &config.display().to_string()]);
    Running::spawn(cmd)
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
