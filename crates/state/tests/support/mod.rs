//! A real etcd for tests: `/usr/bin/etcd` (Debian's etcd-server) on free loopback ports
//! with a temporary data directory, killed on drop. A missing etcd fails the test.

#![allow(dead_code)] // Each test binary uses part of this.

use palisade_state::EtcdStore;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn etcd_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("etcd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("these tests need a real etcd and none was found: apt-get install etcd-server")
        })
}

impl Etcd {
    /// Starts etcd and waits until a client can use it.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(etcd_binary())
            .args([
                "--name",
                "state",
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("state={peer_url}"),
                "--log-level",
                "error",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Self {
            child,
            endpoint: client_url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/ready", None).await {
                Ok(_) => return etcd,
                Err(e) if Instant::now() > deadline => panic!("etcd did not come up: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// A store on this etcd under `prefix`.
    pub async fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(&self.endpoints(), prefix, None)
            .await
            .expect("connect to the test etcd")
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers, as in a
    /// network partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} etcd");
    }

    /// Kills etcd, as a crash would look to clients.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL also ends a paused etcd.
        self.kill();
    }
}
