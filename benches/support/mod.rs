//! Helpers shared by the benchmarks that start the real stack (`gateway`, `backup`,
//! `agent -- memory`, `log -- fleet`):
//! the release binary, free ports, child processes, and what `/proc` says about a
//! process.

// Each benchmark uses a part of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The release `palisade` binary: `$PALISADE_BIN`, or next to this benchmark's
/// `deps/` directory.
pub fn palisade_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("palisade"))
        .expect("target dir");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p palisade` (same CARGO_TARGET_DIR) or set PALISADE_BIN",
        bin.display()
    );
    bin
}

/// `n` consecutive free loopback ports.
pub fn free_port_block(n: u16) -> u16 {
    palisade_core::ports::free_loopback_block(n)
        .unwrap_or_else(|| panic!("no block of {n} free loopback ports"))
}

/// Two KiB fields of `/proc/<pid>/<file>` (0 for one that is missing).
fn proc_kib(pid: u32, file: &str, names: [&str; 2]) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field(names[0]), field(names[1]))
}

/// `VmRSS` and `VmHWM` of a process, KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    proc_kib(pid, "status", ["VmRSS:", "VmHWM:"])
}

/// Resident and anonymous memory of a process, KiB (`smaps_rollup`): what is not
/// anonymous is mapped code and data.
pub fn resident(pid: u32) -> (u64, u64) {
    proc_kib(pid, "smaps_rollup", ["Rss:", "Anonymous:"])
}

/// `palisade up --dir <dir> --base-port <base>`.
pub fn up_command(bin: &Path, dir: &Path, base: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "up",
        "--dir",
        &dir.display().to_string(),
        "--base-port",
        &base.to_string(),
    ]);
    cmd
}

/// The child of `parent` whose command line contains `needle`.
pub fn child_pid(parent: u32, needle: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            return Some(pid);
        }
    }
    None
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A process whose output is collected in the background; stopped on drop.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// How long `terminate` waits after SIGTERM before killing.
    grace: Duration,
    /// Kept open: children run with `--exit-with-parent` stop when it closes.
    _stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts `cmd`; `terminate` waits `grace` after SIGTERM before killing it.
    pub fn spawn(mut cmd: Command, grace: Duration) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (tx, lines) = mpsc::channel();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Self {
            child,
            lines,
            grace,
            _stdin: stdin,
        }
    }

    /// Keeps the pipes drained so that the child never blocks writing its log.
    pub fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    pub fn wait_for(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // `ready` is a line of its own; other markers are parts of lines.
                    if line.trim() == what || (what.len() > 5 && line.contains(what)) {
                        return;
                    }
                    seen.push(line);
                }
                Err(_) => panic!(
                    "no {what:?} within {timeout:?}; output:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            self.drain();
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}
