//! `palisade up`: starts, prints `ready`, stops cleanly on SIGINT and SIGTERM with no
//! orphan processes, and restarts on the same directory reusing what it created.

mod common;

use common::{free_port_block, palisade, processes_mentioning, Running};
use std::time::Duration;

const READY: Duration = Duration::from_secs(60);

fn up(dir: &std::path::Path, base_port: u16) -> Running {
    let mut cmd = palisade();
    cmd.arg("up")
        .arg("--dir")
        .arg(dir)
        .arg("--base-port")
        .arg(base_port.to_string());
    Running::spawn(cmd)
}

#[test]
fn up_prints_ready_stops_on_sigint_and_restarts_on_the_same_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stack");
    let port = free_port_block();

    let mut first = up(&dir, port);
    first.wait_for("ready", READY);
    let ca = std::fs::read(dir.join("pki/ca.crt")).expect("CA written");
    let inventory = std::fs::read_to_string(dir.join("inventory.toml")).expect("inventory written");
    assert!(inventory.contains("demo-0"), "{inventory}");
    first.signal("INT");
    let status = first.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "up exited with {status} after SIGINT");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<String>::new(),
        "orphans after SIGINT"
    );

    let mut second = up(&dir, port);
    second.wait_for("ready", READY);
    assert_eq!(
        std::fs::read(dir.join("pki/ca.crt")).expect("CA"),
        ca,
        "second run must reuse the CA"
    );
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "up exited with {status} after SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<String>::new(),
        "orphans after SIGTERM"
    );
}

#[test]
fn up_killed_outright_leaves_no_orphans() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stack");
    let mut run = up(&dir, free_port_block());
    run.wait_for("ready", READY);
    run.signal("KILL");
    run.wait_exit(Duration::from_secs(10));
    // Children notice their stdin closing and stop on their own.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_mentioning(&dir);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orphans after SIGKILL of up: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn up_refuses_a_broken_inventory_naming_file_and_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stack");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("inventory.toml"), "[[tenant]]\nid = \"Demo\"\n").expect("write");
    let out = palisade()
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .arg("--base-port")
        .arg(free_port_block().to_string())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("inventory.toml") && err.contains("tenant id \"Demo\""),
        "{err}"
    );
}
