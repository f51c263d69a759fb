//! Loading and verifying a TUF repository with many targets (docs/performance.md
//! records the figures):
//!
//! ```sh
//! cargo bench -p palisade-benches --bench tuf
//! TUF_BENCH_TARGETS=1000 TUF_BENCH_RUNS=20 cargo bench -p palisade-benches --bench tuf
//! ```
//!
//! Builds a repository the way a real one grows: `policy init` with three reviewers
//! (threshold 2), the default policy proposed by alice and approved by bob and carol,
//! then `TUF_BENCH_TARGETS` component releases (default 1,000), each attested by the
//! CI key, proposed, approved by two reviewers and published into the `components`
//! role — every one a real release with its attestation, author signature and
//! approvals. Then, each time from a fresh datastore (what a gateway or agent does at
//! its first start), it times:
//!
//! - `verify_policy`: the TUF chain (root, timestamp, snapshot, targets, the `policy`
//!   role), the approvals, the policy's digest;
//! - `verify_release` of a release picked at random: the same chain with the
//!   `components` role holding every target, the attestation, the author, the
//!   approvals.
#![forbid(unsafe_code)]

use palisade_policy::approval;
use palisade_policy::keys::{self, PublicKey, SigningKey};
use palisade_policy::release::{self, TestOutcome, TestResult};
use palisade_policy::trusted_policy;
use palisade_policy::tuf::{self, Lifetimes, OnlineKeys, RepoDir, TrustConfig};
use std::path::Path;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "{label:<58} n={:>3}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        times.len(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    );
}

fn passed() -> TestResult {
    TestResult {
        result: TestOutcome::Passed,
        configuration: vec![],
        url: "https://ci.example/run/1".into(),
        passed_tests: vec!["e2e".into()],
        warned_tests: vec![],
        failed_tests: vec![],
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let targets = env_usize("TUF_BENCH_TARGETS", 1_000);
    let runs = env_usize("TUF_BENCH_RUNS", 20).max(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let people = tmp.path().join("people");
    for n in ["alice", "bob", "carol", "ci"] {
        keys::generate(n, &people, false).expect("key");
    }
    let pk = |n: &str| PublicKey::read(&people.join(format!("{n}.pub"))).expect("pub");
    let sk = |n: &str| SigningKey::read(&people.join(format!("{n}.key"))).expect("key");
    let repo = RepoDir::new(tmp.path().join("repo"));
    let keys_dir = tmp.path().join("keys");
    let life = Lifetimes::default();
    let trust = TrustConfig {
        threshold: 2,
        reviewers: vec![pk("alice"), pk("bob"), pk("carol")],
        ci_keys: vec![pk("ci")],
        proposers: vec![],
    };
    tuf::init(&repo, &keys_dir, &trust, &life).expect("init");
    let online = OnlineKeys::load(&keys_dir).expect("online keys");
    let root = std::fs::read(repo.metadata().join("root.json")).expect("root.json");
    let (alice, bob, carol, ci) = (sk("alice"), sk("bob"), sk("carol"), sk("ci"));

    let policy =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy/default.yaml"))
            .expect("deploy/policy/default.yaml");
    let id = trusted_policy::propose_policy(&repo, &alice, &policy, &life)
        .expect("propose policy")
        .id;
    approval::approve(&repo, &id, &bob).expect("approve");
    approval::approve(&repo, &id, &carol).expect("approve");
    trusted_policy::publish_policy(&repo, &online, &id, &life).expect("publish policy");

    // Releases: each a distinct 4 KiB artifact, as `palisade release` publishes them.
    let t = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..targets {
        let version = format!("1.{}.{}", i / 100, i % 100);
        let artifact = format!("component build {i}\n").repeat(4096 / 24);
        let attestation =
            release::attest("etcd", artifact.as_bytes(), passed(), &ci).expect("attest");
        let id = release::propose_release(
            &repo,
            &alice,
            "etcd",
            &version,
            "etcd",
            artifact.as_bytes(),
            attestation,
            &[],
        )
        .expect("propose release");
        approval::approve(&repo, &id, &bob).expect("approve");
        approval::approve(&repo, &id, &carol).expect("approve");
        release::publish_release(&repo, &online, &id, &[], &life).expect("publish release");
        // The proposals are no longer needed; dropping them keeps the directory to
        // what clients read.
        let _ = std::fs::remove_dir_all(repo.proposals().join(&id));
        if last_report.elapsed() > Duration::from_secs(10) {
            println!("  built {} of {targets} releases...", i + 1);
            last_report = Instant::now();
        }
    }
    let components = repo.metadata().join("components.json");
    println!(
        "repository: {targets} releases + the policy, built in {:.1} s; metadata {:.1} MiB \
         (components.json {:.1} MiB), whole repository {:.1} MiB",
        t.elapsed().as_secs_f64(),
        dir_bytes(&repo.metadata()) as f64 / 1048576.0,
        std::fs::metadata(&components).map_or(0, |m| m.len()) as f64 / 1048576.0,
        dir_bytes(&repo.root) as f64 / 1048576.0,
    );

    let mut policy_times = Vec::with_capacity(runs);
    let mut release_times = Vec::with_capacity(runs);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for run in 0..runs {
        let store = tmp.path().join(format!("datastore-p{run}"));
        let t = Instant::now();
        let v = trusted_policy::verify_policy(&repo, &root, &store)
            .await
            .expect("verify policy");
        policy_times.push(t.elapsed());
        assert_eq!(v.author, "alice");

        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % targets.max(1) as u64) as usize;
        let version = format!("1.{}.{}", i / 100, i % 100);
        let artifact = format!("component build {i}\n").repeat(4096 / 24);
        let store = tmp.path().join(format!("datastore-r{run}"));
        let t = Instant::now();
        let r = release::verify_release(
            &repo,
            &root,
            &store,
            "etcd",
            &version,
            artifact.as_bytes(),
            &[],
        )
        .await
        .expect("verify release");
        release_times.push(t.elapsed());
        assert_eq!(r.approvers, vec!["bob".to_string(), "carol".to_string()]);
    }
    report(
        &format!("verify_policy, fresh datastore ({targets} other targets)"),
        policy_times,
    );
    report(
        &format!("verify_release of one of {targets}, fresh datastore"),
        release_times,
    );
}
