//! No orphaned components: what an agent that was killed leaves running is stopped by
//! the next agent before it starts its own.
//!
//! A component dies with the agent where the platform allows it: under systemd, the
//! unit's control group is stopped with the agent (deploy/); elsewhere the component
//! is started through `setpriv --pdeathsig TERM` (util-linux) when it is installed, so
//! the kernel signals it when the agent's thread that started it ends. What still
//! survives (no setpriv, a kill that raced the start) is found at the next start: each
//! running component's pid and kernel start time are kept in
//! `<work_dir>/run/<name>.pid`, and a process that still has both is the leftover of
//! a previous agent. Its process group is sent SIGTERM, then SIGKILL, before the new
//! one starts. A pid reused by another process has another start time and is left
//! alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a leftover gets to stop after SIGTERM before SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(10);

/// The tool that starts a component with a parent-death signal, when installed.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// One component's pid file.
#[derive(Debug, Clone)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn new(work_dir: &Path, component: &str) -> Self {
        Self {
            path: work_dir.join("run").join(format!("{component}.pid")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the component started as `pid`.
    pub fn record(&self, pid: u32) -> std::io::Result<()> {
        let Some(started) = start_time(pid) else {
            // Already gone: nothing can be left over.
            return Ok(());
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{pid} {started}\n"))?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Forgets the component (it was stopped, or exited and was reaped).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Stops the process recorded here if it is still the one recorded (same pid,
    /// same start time): the leftover of an agent that did not stop it. Returns its
    /// pid if there was one.
    pub async fn stop_leftover(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut words = text.split_whitespace();
        let pid: u32 = words.next()?.parse().ok()?;
        let started: u64 = words.next()?.parse().ok()?;
        if start_time(pid) != Some(started) {
            self.clear();
            return None;
        }
        let group = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)?;
        // The component leads its own process group (the supervisor starts it so):
        // whatever it started goes with it.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        if !gone_within(pid, started, LEFTOVER_GRACE).await {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            gone_within(pid, started, Duration::from_secs(5)).await;
        }
        self.clear();
        Some(pid)
    }
}

/// Whether `pid` (started at `started`) ends within `wait`.
async fn gone_within(pid: u32, started: u64, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if start_time(pid) != Some(started) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start_time(pid) != Some(started)
}

/// The kernel start time of a live process (field 22 of `/proc/<pid>/stat`, clock
/// ticks since boot); `None` if there is no such process, or only its zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: the fields
    // after the last ')' are counted from field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_leftover_is_stopped_and_a_reused_pid_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = PidFile::new(dir.path(), "sleeper");
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        file.record(child.id()).unwrap();
        assert!(file.path().exists());
        // Another process's start time under the same pid: not ours.
        let text = std::fs::read_to_string(file.path()).unwrap();
        let pid = text.split_whitespace().next().unwrap().to_string();
        std::fs::write(file.path(), format!("{pid} 1\n")).unwrap();
        assert_eq!(file.stop_leftover().await, None);
        assert!(
            start_time(child.id()).is_some(),
            "a pid of another start time was signalled"
        );
        // The real record: stopped.
        file.record(child.id()).unwrap();
        assert_eq!(file.stop_leftover().await, Some(child.id()));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!file.path().exists());
    }

    use std::os::unix::process::CommandExt as _;
}
