//! Helpers shared by the backup tests (tests/e2e/backup.rs, tests/claims/c5_backup_*):
//! loading data into the supervised etcd, running `palisade backup`, and starting a
//! fresh etcd from a restored snapshot with the standard tools.
#![allow(dead_code)]

use crate::common::palisade;
use crate::harness::{require_tool, Stack};
use palisade_agent::client::Executed;
use palisade_agent::dispatch::ResultOutcome;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A succeeded action's output.
pub fn output(e: &Executed) -> Value {
    assert_eq!(
        e.result.outcome,
        ResultOutcome::Succeeded,
        "{:?}",
        e.result.error
    );
    e.result.output.clone().expect("output")
}

pub fn store_dir(stack: &Stack) -> PathBuf {
    stack.dir.join("backups")
}

pub fn kms_socket(stack: &Stack) -> String {
    format!("unix://{}", stack.dir.join("kms/kms.sock").display())
}

pub fn agent_pub(stack: &Stack) -> PathBuf {
    stack.dir.join("agent/keys/agent.pub")
}

/// The stored manifest an `etcd.backup` output names.
pub fn manifest_path(stack: &Stack, out: &Value) -> PathBuf {
    store_dir(stack).join(out["manifest"].as_str().expect("manifest name"))
}

/// `count` keys of `size` random bytes each (hex), written with etcdctl from stdin.
pub fn load_bulk(stack: &Stack, count: usize, size: usize) {
    for i in 0..count {
        let mut raw = vec![0u8; size / 2];
        getrandom::getrandom(&mut raw).expect("random");
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &stack.etcd.endpoint(),
                "put",
                &format!("/registry/bulk/{i}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("etcdctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(hex::encode(&raw).as_bytes())
            .expect("write value");
        assert!(
            child.wait().expect("etcdctl").success(),
            "etcdctl put failed"
        );
    }
}

pub fn palisade_cmd(args: &[&str]) -> Output {
    palisade().args(args).output().expect("run palisade")
}

pub fn restore_cmd(
    stack: &Stack,
    manifest: &Path,
    store: &Path,
    kms_socket: &str,
    out: &Path,
) -> Output {
    restore_cmd_with(stack, manifest, store, kms_socket, out, &[])
}

/// [`restore_cmd`] with more arguments (e.g. `--expect-digest`).
pub fn restore_cmd_with(
    stack: &Stack,
    manifest: &Path,
    store: &Path,
    kms_socket: &str,
    out: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "backup".to_string(),
        "restore".into(),
        "--manifest".into(),
        manifest.display().to_string(),
        "--store".into(),
        store.display().to_string(),
        "--kms-socket".into(),
        kms_socket.into(),
        "--out".into(),
        out.display().to_string(),
        "--agent-key".into(),
        agent_pub(stack).display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    palisade_cmd(&args)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// `etcdctl snapshot restore` into a new data dir under `work`, etcd started on it,
/// and `key` read back (stopping etcd afterwards).
pub fn etcd_from_snapshot(snapshot: &Path, work: &Path, key: &str) -> Option<String> {
    require_tool("etcdctl", "apt-get install etcd-client");
    let (client, peer) = (free_port(), free_port());
    let data = work.join("restored-data");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "snapshot",
            "restore",
            &snapshot.display().to_string(),
            "--data-dir",
            &data.display().to_string(),
            "--name",
            "restored",
            "--initial-cluster",
            &format!("restored={peer_url}"),
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .output()
        .expect("etcdctl snapshot restore");
    assert!(
        out.status.success(),
        "etcdctl snapshot restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client_url = format!("http://127.0.0.1:{client}");
    let mut etcd = Command::new(crate::harness::etcd_binary_path())
        .args([
            "--name",
            "restored",
            "--data-dir",
            &data.display().to_string(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("restored={peer_url}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let value = loop {
        let got = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &client_url, "get", key, "--print-value-only"])
            .output()
            .expect("etcdctl get");
        if got.status.success() {
            let v = String::from_utf8_lossy(&got.stdout).trim().to_string();
            break (!v.is_empty()).then_some(v);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = etcd.kill();
    let _ = etcd.wait();
    value
}

/// Every file below `dir` (recursively), for scans.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
