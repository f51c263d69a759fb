//! Helpers shared by the end-to-end tests: run the `palisade` binary, find free
//! loopback ports, wait for output, send signals.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn palisade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
}

/// A run of ten consecutive free loopback ports, for one `palisade up`.
pub fn free_port_block() -> u16 {
    palisade_core::ports::free_loopback_block(palisade_core::ports::UP_PORTS)
        .expect("no block of free loopback ports found for palisade up")
}

/// A run of free loopback ports for `palisade up --instances n`.
pub fn free_port_block_for(instances: u16) -> u16 {
    palisade_core::ports::free_loopback_block(palisade_core::ports::up_ports(instances))
        .expect("no block of free loopback ports found for palisade up")
}

/// A running child whose stdout lines are collected in the background.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start palisade");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        // Standard error is still shown, and also kept (tests scan what was logged).
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`; panics with what was seen.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "exited ({status}) before printing {needle:?}; output:\n{}",
                            self.seen.join("\n")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    panic!(
                        "exited ({status}) before printing {needle:?}; output:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
        panic!(
            "no {needle:?} within {timeout:?}; output:\n{}",
            self.seen.join("\n")
        );
    }

    /// Collects the lines printed so far, without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose command line mentions `needle` (e.g. a test's state directory).
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().to_string();
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// The flags that name the demo cluster's log and the keys to verify it with, as a
/// `palisade up` in `dir` wrote them: `--origin`, `--log-key` and the provider's
/// `--witness-key`.
pub fn demo_log_trust(dir: &Path) -> [String; 6] {
    let d = dir.display();
    [
        "--origin".into(),
        "palisade.local/log/demo".into(),
        "--log-key".into(),
        format!("@{d}/log/keys/palisade.local_log.pub"),
        "--witness-key".into(),
        format!("@{d}/witness/keys/palisade.local_witness.pub"),
    ]
}
