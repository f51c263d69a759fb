//! The `palisade` binary's surface: every subcommand is listed with a one-line
//! explanation; subcommands not built yet say so and exit non-zero; `pki` works.

mod common;

use common::palisade;

const SUBCOMMANDS: [&str; 13] = [
    "up",
    "gateway",
    "agent",
    "log",
    "witness",
    "kms",
    "op",
    "audit",
    "policy",
    "release",
    "backup",
    "pki",
    "verify-claims",
];

#[test]
fn help_lists_all_thirteen_subcommands() {
    let out = palisade().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in SUBCOMMANDS {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().next() == Some(sub))
            .unwrap_or_else(|| panic!("`{sub}` missing from --help:\n{help}"));
        assert!(
            line.split_whitespace().count() > 3,
            "`{sub}` has no explanation: {line}"
        );
    }
}

#[test]
fn pki_init_and_issue_then_second_init_refuses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let ok = palisade()
        .args(["pki", "init", "--dir"])
        .arg(&dir)
        .output()
        .expect("init");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (kind, name) in [
        ("gateway", "gw-1"),
        ("agent", "demo-0"),
        ("log", "log"),
        ("witness", "w1"),
        ("operator", "alice"),
    ] {
        let out = palisade()
            .args(["pki", "issue", "--dir"])
            .arg(&dir)
            .args(["--kind", kind, "--name", name])
            .output()
            .expect("issue");
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verify = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(dir.join("ca.crt"))
            .arg(dir.join(format!("{kind}-{name}.crt")))
            .output()
            .expect("openssl is required for this test: apt-get install openssl");
        assert!(
            verify.status.success(),
            "openssl verify {kind}: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
    let before = std::fs::read(dir.join("ca.key")).expect("ca.key");
    let again = palisade()
        .args(["pki", "init", "--dir"])
        .arg(&dir)
        .output()
        .expect("init again");
    assert!(!again.status.success(), "second init must refuse");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("ca.key")).expect("ca.key"),
        before,
        "refusal changed the CA key"
    );

    let bad = palisade()
        .args(["pki", "issue", "--dir"])
        .arg(&dir)
        .args(["--kind", "root", "--name", "x"])
        .output()
        .expect("bad kind");
    assert!(!bad.status.success());
}

/// `PALISADE_LOG_FORMAT=json`: every message on standard error is one JSON object
/// with its level and fields (what a log shipper reads).
#[test]
fn json_log_output_is_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("kek");
    let out = palisade()
        .args(["kms", "keygen", "--backend", "file", "--key-file"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = palisade();
    cmd.env("PALISADE_LOG_FORMAT", "json")
        .args([
            "kms",
            "serve",
            "--backend",
            "file",
            "--allow-insecure-dev-key",
            "--key-file",
        ])
        .arg(&key)
        .arg("--listen")
        .arg(format!("unix://{}", dir.path().join("kms.sock").display()));
    let mut running = common::Running::spawn(cmd);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let warning = loop {
        running.drain();
        if let Some(l) = running.seen.iter().find(|l| l.contains("INSECURE")) {
            break l.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no INSECURE warning: {:?}",
            running.seen
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let v: serde_json::Value = serde_json::from_str(&warning)
        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {warning}"));
    assert_eq!(v["level"], "WARN", "{v}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("INSECURE")),
        "{v}"
    );
}
