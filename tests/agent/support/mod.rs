//! Shared setup for agent tests: a real TUF repository with approved component
//! releases (made through the library, as `palisade release` does), the real etcd
//! binary, free loopback ports, and a look at which processes run from a directory.
#![allow(dead_code)]

use palisade_agent::config::{ComponentSettings, TrustFiles};
use palisade_policy::approval;
use palisade_policy::keys::{self, PublicKey, SigningKey};
use palisade_policy::release::{self, TestOutcome, TestResult};
use palisade_policy::tuf::{self, Lifetimes, OnlineKeys, RepoDir, TrustConfig};
use std::path::{Path, PathBuf};

/// Debian's etcd-server binary.
pub const ETCD: &str = "/usr/bin/etcd";

/// The bytes of the real etcd binary. Fails (never skips) when it is missing.
pub fn etcd_binary() -> Vec<u8> {
    match std::fs::read(ETCD) {
        Ok(b) => b,
        Err(e) => panic!("{ETCD} is needed for this test ({e}): run `apt-get install etcd-server`"),
    }
}

/// A TUF repository whose trust config has reviewers alice, bob and carol
/// (threshold 2) and the CI key `ci`; the pipeline key publishes.
pub struct ReleaseRepo {
    pub dir: PathBuf,
    pub repo: RepoDir,
    keys: PathBuf,
}

impl ReleaseRepo {
    pub fn new(dir: &Path) -> Self {
        let people = dir.join("people");
        for name in ["alice", "bob", "carol", "ci"] {
            keys::generate(name, &people, false).expect("generate key");
        }
        let pk = |n: &str| PublicKey::read(&people.join(format!("{n}.pub"))).expect("public key");
        let trust = TrustConfig {
            threshold: 2,
            reviewers: vec![pk("alice"), pk("bob"), pk("carol")],
            ci_keys: vec![pk("ci")],
            proposers: vec![],
        };
        let repo = RepoDir::new(dir.join("repo"));
        let keys = dir.join("keys");
        tuf::init(&repo, &keys, &trust, &Lifetimes::default()).expect("tuf init");
        Self {
            dir: dir.to_path_buf(),
            repo,
            keys,
        }
    }

    fn key(&self, name: &str) -> SigningKey {
        SigningKey::read(&self.dir.join("people").join(format!("{name}.key"))).expect("key")
    }

    /// Publishes `artifact` as `components/<component>/<version>/<component>`: CI
    /// attests PASSED, alice proposes, bob and carol approve, the pipeline publishes.
    pub fn publish(&self, component: &str, version: &str, artifact: &[u8]) {
        self.publish_marked(component, version, artifact, None);
    }

    /// Like [`ReleaseRepo::publish`], marked as an approved rollback from
    /// `rollback_from` (the mark is approved with the release).
    pub fn publish_rollback(
        &self,
        component: &str,
        version: &str,
        artifact: &[u8],
        rollback_from: &str,
    ) {
        self.publish_marked(component, version, artifact, Some(rollback_from));
    }

    fn publish_marked(
        &self,
        component: &str,
        version: &str,
        artifact: &[u8],
        rollback_from: Option<&str>,
    ) {
        let result = TestResult {
            result: TestOutcome::Passed,
            configuration: vec![],
            url: "https://ci.example/run/1".into(),
            passed_tests: vec!["e2e".into()],
            warned_tests: vec![],
            failed_tests: vec![],
        };
        let attestation =
            release::attest(component, artifact, result, &self.key("ci")).expect("attest");
        let id = release::propose_release_marked(
            &self.repo,
            &self.key("alice"),
            component,
            version,
            component,
            artifact,
            attestation,
            &[],
            rollback_from,
        )
        .expect("propose release");
        for who in ["bob", "carol"] {
            approval::approve(&self.repo, &id, &self.key(who)).expect("approve");
        }
        let online = OnlineKeys::load(&self.keys).expect("online keys");
        release::publish_release(&self.repo, &online, &id, &[], &Lifetimes::default())
            .expect("publish release");
    }

    /// Drops `artifact` where a release would be, without any signature, attestation
    /// or approval.
    pub fn drop_unsigned(&self, component: &str, version: &str, artifact: &[u8]) {
        let path = self
            .repo
            .target_path(&format!("components/{component}/{version}/{component}"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, artifact).expect("write unsigned artifact");
    }

    /// The published file of a release, in the repository's `targets/`.
    pub fn target_file(&self, component: &str, version: &str) -> PathBuf {
        self.repo
            .target_path(&format!("components/{component}/{version}/{component}"))
    }

    /// What an agent installed with this repository's root is configured with.
    pub fn trust_files(&self, agent_dir: &Path) -> TrustFiles {
        TrustFiles {
            repo: self.repo.root.clone(),
            root: self.repo.metadata().join("root.json"),
            datastore: agent_dir.join("tuf-datastore"),
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A single-member etcd on free loopback ports with its data in `data_dir`.
pub struct EtcdPorts {
    pub client: u16,
    pub peer: u16,
}

impl EtcdPorts {
    pub fn new() -> Self {
        Self {
            client: free_port(),
            peer: free_port(),
        }
    }

    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.client)
    }

    /// The component settings an agent configuration would hold for this etcd.
    pub fn settings(
        &self,
        version: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> ComponentSettings {
        let client = format!("http://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let args = [
            "--name",
            "palisade-test",
            "--data-dir",
            &data_dir.display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("palisade-test={peer}"),
            "--logger",
            "zap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        ComponentSettings {
            name: "etcd".into(),
            version: version.into(),
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            health_url: Some(self.health_url()),
            data_dir: None,
            join: false,
            metrics_url: None,
        }
    }
}

impl Default for EtcdPorts {
    fn default() -> Self {
        Self::new()
    }
}

/// Live processes whose executable lies under `dir` (from `/proc/<pid>/exe`; a
/// binary replaced after it started shows as `<path> (deleted)` and still counts).
pub fn processes_under(dir: &Path) -> Vec<(i32, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            if exe.starts_with(dir) {
                found.push((pid, exe));
            }
        }
    }
    found
}

/// The environment a process was started with (`/proc/<pid>/environ`).
pub fn environment_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}
