//! The incidents an on-call meets on a managed control plane, on a real
//! three-member etcd cluster (`palisade up --instances 3`), recovered with typed
//! actions only (`palisade op run`): etcd out of space (NOSPACE), and a failed member
//! replaced. The test reads and writes etcd directly only as the customer's workload
//! would (`etcdctl`), to fill it and to check that nothing of it was lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port_block_for, palisade, Running};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(90);
/// The demo's `member_remove_after_secs`.
const REMOVE_AFTER: Duration = Duration::from_secs(20);

struct Cluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    base: u16,
    up: Running,
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        Self::start_as(extra, false)
    }

    /// With `approvals`, the demo tenant approves disruptive actions (`palisade up`'s
    /// default); without, it requires no approval.
    fn start_as(extra: &[&str], approvals: bool) -> Cluster {
        for (tool, package) in [("etcd", "etcd-server"), ("etcdctl", "etcd-client")] {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
            assert!(
                found,
                "`{tool}` is not installed: apt-get install {package}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stack");
        let base = free_port_block_for(3);
        let mut cmd = palisade();
        cmd.arg("up")
            .arg("--dir")
            .arg(&dir)
            .args(["--base-port", &base.to_string()])
            .args(["--instances", "3"])
            .args(extra);
        if !approvals {
            cmd.arg("--no-customer-approval");
        }
        let mut up = Running::spawn(cmd);
        up.wait_for("ready", READY);
        let c = Cluster {
            _tmp: tmp,
            dir,
            base,
            up,
        };
        c.wait_cluster_healthy(&[0, 1, 2]);
        c
    }

    /// Instance `i`'s etcd client URL (the layout of `palisade up`).
    fn endpoint(&self, i: u16) -> String {
        let port = if i == 0 {
            self.base + 4
        } else {
            self.base + palisade_core::ports::UP_PORTS + 4 * (i - 1) + 1
        };
        format!("http://127.0.0.1:{port}")
    }

    fn etcdctl(&self, i: u16, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(i), "--command-timeout", "10s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    fn etcdctl_ok(&self, i: u16, args: &[&str]) -> String {
        let out = self.etcdctl(i, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} on demo-{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_cluster_healthy(&self, members: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = members
                .iter()
                .all(|i| self.etcdctl(*i, &["endpoint", "health"]).status.success());
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd members {members:?} not healthy"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The number of keys, read (serializably) from member `i` alone.
    fn key_count(&self, i: u16) -> usize {
        self.etcdctl_ok(
            i,
            &["get", "", "--prefix", "--keys-only", "--consistency", "s"],
        )
        .lines()
        .filter(|l| !l.is_empty())
        .count()
    }

    /// `palisade op run ACTION` as the demo's on-call operator; (succeeded, what it printed).
    fn op(&self, action: &str, instance: Option<&str>, params: &[&str]) -> (bool, String) {
        let mut cmd = palisade();
        cmd.arg("op")
            .arg("--credentials")
            .arg(self.dir.join("op/credentials.json"))
            .args(["run", action, "--cluster", "demo"])
            .args([
                "--ticket",
                "INC-7",
                "--reason",
                "incident runbook, step by step",
            ]);
        if let Some(i) = instance {
            cmd.args(["--instance", i]);
        }
        for p in params {
            cmd.args(["--param", p]);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("palisade op run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.success() && text.contains("status     succeeded"),
            text,
        )
    }

    fn run(&self, action: &str, instance: Option<&str>, params: &[&str]) -> String {
        let (ok, text) = self.op(action, instance, params);
        assert!(ok, "{action} {params:?} did not succeed:\n{text}");
        text
    }

    /// `palisade customer ARGS` as the demo tenant.
    fn customer(&self, args: &[&str]) -> String {
        let d = self.dir.display().to_string();
        let out = palisade()
            .arg("customer")
            .args(args)
            .args(["--gateway", &format!("https://127.0.0.1:{}", self.base)])
            .args(["--ca", &format!("{d}/pki/ca.crt")])
            .args(["--token", &format!("@{d}/tenant-demo.token")])
            .args(["--tenant", "demo", "--cluster", "demo"])
            .stdin(Stdio::null())
            .output()
            .expect("palisade customer");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "customer {args:?}:\n{text}");
        text
    }

    /// An action that waits for the customer's approval: requested, approved by the
    /// demo approver `ana`, then followed until it ends; what `op show` printed.
    fn run_approved(&self, action: &str, instance: &str, params: &[&str]) -> String {
        let (ok, text) = self.op(action, Some(instance), params);
        assert!(
            !ok && text.contains("awaiting"),
            "{action} did not wait:\n{text}"
        );
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("operation"))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| panic!("no operation id in:\n{text}"));
        let key = self.dir.join("tenant-demo/approvers/ana.key");
        self.customer(&["approve", &id, "--key", &key.display().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = palisade()
                .arg("op")
                .arg("--credentials")
                .arg(self.dir.join("op/credentials.json"))
                .args(["show", &id])
                .stdin(Stdio::null())
                .output()
                .expect("palisade op show");
            let shown = String::from_utf8_lossy(&out.stdout).into_owned();
            if shown.contains("status     succeeded") {
                return shown;
            }
            assert!(
                !shown.contains("status     failed") && Instant::now() < deadline,
                "{action} on {instance}:\n{shown}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn refused(&self, action: &str, instance: Option<&str>, params: &[&str], why: &str) {
        let (ok, text) = self.op(action, instance, params);
        assert!(!ok, "{action} {params:?} ran:\n{text}");
        assert!(text.contains(why), "{action}: expected {why:?} in:\n{text}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.up.signal("TERM");
        self.up.wait_exit(Duration::from_secs(30));
    }
}

/// A number printed as `name: N` in an action's output.
fn field(text: &str, name: &str) -> i64 {
    let prefix = format!("{name}: ");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

fn write_value(dir: &Path, bytes: usize) -> PathBuf {
    use std::io::Write;
    let path = dir.join("value.txt");
    let mut f = std::fs::File::create(&path).unwrap();
    // Incompressible enough, and printable for etcdctl's standard input.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let text: String = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + u8::try_from(x % 26).unwrap())
        })
        .collect();
    f.write_all(text.as_bytes()).unwrap();
    path
}

#[test]
fn etcd_out_of_space_is_recovered_with_actions_only_and_writes_succeed_again() {
    let c = Cluster::start(&["--etcd-quota-bytes", "16777216"]);
    c.etcdctl_ok(1, &["put", "/canary/nospace", "before-the-incident"]);

    // The customer's workload fills etcd until it raises NOSPACE.
    let value = write_value(&c.dir, 700_000);
    let mut raised = false;
    for i in 0..80 {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &c.endpoint(0),
                "put",
                &format!("/fill/{}", i % 3),
            ])
            .stdin(std::fs::File::open(&value).unwrap())
            .output()
            .unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("database space exceeded"), "{err}");
            raised = true;
            break;
        }
    }
    assert!(raised, "etcd never ran out of its 16 MiB quota");
    let blocked = c.etcdctl(1, &["put", "/after", "x"]);
    assert!(
        !blocked.status.success(),
        "writes still succeed under NOSPACE"
    );

    // What the on-call sees: the alarm, and the member at its quota.
    let alarms = c.run("etcd.alarms", None, &[]);
    assert!(alarms.contains("NOSPACE"), "{alarms}");
    let quota = c.run("etcd.quota", Some("demo-0"), &[]);
    assert_eq!(field(&quota, "quota_bytes"), 16_777_216, "{quota}");
    // The member's real metrics, reduced: names and numbers, no peer ids, no keys.
    let metrics = c.run("component.metrics", Some("demo-0"), &["component=etcd"]);
    for family in [
        "etcd_server_quota_backend_bytes",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_disk_wal_fsync_duration_seconds",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(field(&metrics, "dropped_families") > 0, "{metrics}");
    for leaked in ["/fill/", "/canary", "To:", "127.0.0.1"] {
        assert!(!metrics.contains(leaked), "{leaked} in:\n{metrics}");
    }
    // etcd refuses a put when its size plus the request's would pass the quota, so
    // with 700 kB values the member that refused can sit a little under 96 %, and
    // another member a page or two lower still.
    assert!(field(&quota, "used_percent") >= 90, "{quota}");

    // Recovery: compact the history, defragment each member in turn, disarm.
    let compact = c.run("etcd.compact", None, &["retain_revisions=1"]);
    assert_eq!(field(&compact, "retained_revisions"), 1, "{compact}");
    for i in 0..3 {
        let out = c.run("etcd.defragment", Some(&format!("demo-{i}")), &[]);
        assert!(
            field(&out, "db_size_after") < field(&out, "db_size_before") / 2,
            "defragmenting demo-{i} reclaimed little:\n{out}"
        );
    }
    let disarmed = c.run("etcd.alarm-disarm", None, &[]);
    assert!(disarmed.contains("NOSPACE"), "{disarmed}");
    let left = c.etcdctl_ok(0, &["alarm", "list"]);
    assert!(left.trim().is_empty(), "alarms left: {left}");

    // Writes succeed again, and the customer's data is as it was.
    c.etcdctl_ok(1, &["put", "/after", "writes-are-back"]);
    assert_eq!(
        c.etcdctl_ok(2, &["get", "/canary/nospace", "--print-value-only"])
            .trim(),
        "before-the-incident"
    );
    let quota = c.run("etcd.quota", Some("demo-1"), &[]);
    assert!(field(&quota, "used_percent") < 50, "{quota}");
}

#[test]
fn a_failed_member_is_replaced_with_actions_only_and_no_key_is_lost() {
    let c = Cluster::start(&[]);
    for k in 0..50 {
        c.etcdctl_ok(k % 3, &["put", &format!("/workload/{k}"), &format!("v{k}")]);
    }
    c.etcdctl_ok(1, &["put", "/canary/member", "before-the-incident"]);
    let keys = c.key_count(1);

    // Refused while every member is healthy.
    c.refused(
        "etcd.member-remove",
        None,
        &["member=demo-0"],
        "has been unhealthy for 0s",
    );
    c.refused(
        "etcd.member-join",
        Some("demo-0"),
        &[],
        "etcd on this instance is running",
    );

    // demo-0 fails: its member is killed and its data lost.
    let data = c.dir.join("etcd");
    let pid = Command::new("pgrep")
        .args(["-f", &format!("data-dir {}", data.display())])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout)
        .lines()
        .next()
        .expect("demo-0's etcd process")
        .to_string();
    std::fs::remove_dir_all(&data).unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let failed_at = Instant::now();

    // Its agent does not start it again on empty data under its old identity.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = c.run("component.status", Some("demo-0"), &["component=etcd"]);
        if status.contains("state: awaiting-join") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "demo-0's etcd is not awaiting a join:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !data.join("member").exists(),
        "etcd was started again on empty data"
    );

    // Cluster actions go to a healthy instance (once the gateway's last health
    // answers, kept 2 s, are out of date); a defragment, which blocks its member, is
    // refused while another member is down; the removal waits for the configured time.
    std::thread::sleep(Duration::from_secs(3));
    let members = c.run("etcd.members", None, &[]);
    assert!(members.contains("on demo/demo-1"), "{members}");
    c.refused("etcd.defragment", Some("demo-1"), &[], "does not answer");
    c.refused(
        "etcd.member-remove",
        None,
        &["member=demo-0"],
        "it may be removed after 20s",
    );
    // Joining before the failed member is removed is refused.
    c.refused("etcd.member-join", Some("demo-0"), &[], "remove it first");
    if let Some(left) = REMOVE_AFTER.checked_sub(failed_at.elapsed()) {
        std::thread::sleep(left + Duration::from_secs(4));
    }
    let removed = c.run("etcd.member-remove", None, &["member=demo-0"]);
    assert_eq!(field(&removed, "voting_members_after"), 2, "{removed}");
    assert_eq!(
        field(&removed, "healthy_voting_members_after"),
        2,
        "{removed}"
    );

    // The replacement joins: added as a learner, caught up, promoted.
    let joined = c.run("etcd.member-join", Some("demo-0"), &[]);
    assert_eq!(field(&joined, "voting_members"), 3, "{joined}");
    c.wait_cluster_healthy(&[0, 1, 2]);
    let list = c.etcdctl_ok(1, &["member", "list"]);
    assert_eq!(
        list.lines().filter(|l| l.contains(", started, ")).count(),
        3,
        "{list}"
    );
    assert!(!list.contains("true"), "a learner is left: {list}");

    // Nothing was lost, as seen from the new member's own copy.
    assert_eq!(c.key_count(0), keys);
    assert_eq!(
        c.etcdctl_ok(
            0,
            &[
                "get",
                "/canary/member",
                "--print-value-only",
                "--consistency",
                "s"
            ]
        )
        .trim(),
        "before-the-incident"
    );
    // A healthy member is never removed.
    c.refused(
        "etcd.member-remove",
        None,
        &["member=demo-2"],
        "has been unhealthy for 0s",
    );
}

#[test]
fn a_cluster_is_restored_from_an_encrypted_backup_with_the_customers_approval() {
    let c = Cluster::start_as(&[], true);
    c.etcdctl_ok(1, &["put", "/canary/restore", "as-backed-up"]);
    let backup = c.run("etcd.backup", None, &[]);
    let id = backup
        .lines()
        .find_map(|l| l.trim().strip_prefix("backup_id: "))
        .unwrap_or_else(|| panic!("no backup_id in:\n{backup}"))
        .to_string();
    c.etcdctl_ok(2, &["put", "/canary/restore", "changed-after-the-backup"]);
    c.etcdctl_ok(0, &["put", "/after-the-backup", "x"]);

    // Each member in turn, each with the customer's approval: the tenant's approver
    // signs the exact request (this instance, this backup).
    for i in 0..3 {
        let done = c.run_approved(
            "etcd.restore",
            &format!("demo-{i}"),
            &[&format!("backup_id={id}")],
        );
        assert!(done.contains(&format!("backup_id: {id}")), "{done}");
        assert!(done.contains("cluster_members: 3"), "{done}");
        assert!(
            !done.contains("as-backed-up"),
            "content in the output:\n{done}"
        );
    }
    c.wait_cluster_healthy(&[0, 1, 2]);
    for i in 0..3 {
        assert_eq!(
            c.etcdctl_ok(i, &["get", "/canary/restore", "--print-value-only"])
                .trim(),
            "as-backed-up",
            "demo-{i}"
        );
    }
    assert!(
        c.etcdctl_ok(1, &["get", "/after-the-backup"])
            .trim()
            .is_empty(),
        "a key written after the backup survived the restore"
    );
    let list = c.etcdctl_ok(1, &["member", "list"]);
    assert_eq!(
        list.lines().filter(|l| l.contains(", started, ")).count(),
        3,
        "{list}"
    );
}
