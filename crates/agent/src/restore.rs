//! `etcd.restore`: this instance's etcd member restored from an encrypted backup.
//!
//! The backup's manifest must be signed by one of the cluster's agents and name this
//! cluster and backup id; its snapshot is decrypted with the customer's KMS plugin on
//! this instance (nothing is left if a check fails). The member is then stopped, and
//! `etcdctl snapshot restore` — an approved release, verified in the TUF repository
//! before it runs, with a fixed argument vector — writes a new data directory with
//! the component's configured `--initial-cluster` and an `--initial-cluster-token`
//! derived from the backup id, so that every member restored from the same backup
//! forms one new cluster. The old data directory is kept beside it as
//! `<data_dir>.before-restore` (one, replaced by the next restore) and the member
//! started again. Run on every instance of the cluster, one after the other: the
//! restored cluster serves once a majority of its members are restored.
//!
//! It rewrites the customer's data, so it always needs the customer's approval
//! (`palisade_policy::catalogue::CUSTOMER_APPROVAL_REQUIRED`). Its output is ids and
//! numbers only.

use crate::backup::Backups;
use crate::config::ComponentSettings;
use crate::supervisor::Supervisor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const RESTORE_SCHEMA: &str = "palisade.dev/output/etcd-restore/v1";

/// How long `etcdctl snapshot restore` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// Output of `etcd.restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutput {
    pub backup_id: String,
    /// The etcd revision the backup was taken at.
    pub etcd_revision: i64,
    pub snapshot_bytes: u64,
    /// The member restored (its `--name`).
    pub member: String,
    /// How many members the restored cluster has (from `--initial-cluster`).
    pub cluster_members: u32,
    /// The member was started again on the restored data.
    pub started: bool,
    pub took_ms: u64,
}

/// What the restore needs from the agent's configuration.
pub struct Restorer {
    /// The etcd component as configured (its `--name`, `--initial-cluster`,
    /// `--initial-advertise-peer-urls` and `data_dir`).
    pub etcd: ComponentSettings,
    /// The approved `etcdctl` release.
    pub etcdctl_version: String,
    pub work_dir: PathBuf,
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

impl Restorer {
    pub async fn restore(
        &self,
        backups: &Backups,
        supervisor: &Supervisor,
        backup_id: &str,
    ) -> Result<RestoreOutput, String> {
        let start = Instant::now();
        let args = &self.etcd.args;
        let need = |name: &str| {
            flag(args, name).ok_or_else(|| {
                format!("the etcd component's arguments have no {name}: it cannot be restored")
            })
        };
        let (name, initial, peer) = (
            need("--name")?,
            need("--initial-cluster")?,
            need("--initial-advertise-peer-urls")?,
        );
        let data = self
            .etcd
            .data_dir
            .clone()
            .ok_or("the etcd component has no data_dir: it cannot be restored")?;
        let members = u32::try_from(initial.split(',').count()).unwrap_or(u32::MAX);

        // The snapshot, checked and decrypted, before anything is stopped.
        let dir = self.work_dir.join("restore");
        std::fs::create_dir_all(&dir).map_err(|e| format!("restore directory: {}", e.kind()))?;
        let snapshot = dir.join(format!("{backup_id}.db"));
        let _ = std::fs::remove_file(&snapshot);
        let restored = backups
            .restore_snapshot(backup_id, &snapshot)
            .await
            .map_err(|e| e.to_string())?;
        let _remove = RemoveOnDrop(snapshot.clone());
        let etcdctl = supervisor
            .install_tool("etcdctl", &self.etcdctl_version)
            .await
            .map_err(|e| e.to_string())?;

        // A token of the backup: every member restored from it forms one cluster,
        // and none can join the cluster that ran before.
        let token = format!("restore-{backup_id}").to_ascii_lowercase();
        let staging = PathBuf::from(format!("{}.restoring", data.display()));
        let before = PathBuf::from(format!("{}.before-restore", data.display()));
        let log = dir.join("etcdctl.log");
        let (result, started) = supervisor
            .while_stopped("etcd", || async {
                let _ = std::fs::remove_dir_all(&staging);
                let out = run_tool(
                    &etcdctl,
                    &[
                        "snapshot",
                        "restore",
                        &snapshot.display().to_string(),
                        "--name",
                        name,
                        "--initial-cluster",
                        initial,
                        "--initial-cluster-token",
                        &token,
                        "--initial-advertise-peer-urls",
                        peer,
                        "--data-dir",
                        &staging.display().to_string(),
                    ],
                    &log,
                )
                .await;
                if let Err(e) = out {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(e);
                }
                swap_in(&data, &staging, &before)
            })
            .await
            .map_err(|e| e.to_string())?;
        result?;
        tracing::warn!(
            backup_id,
            member = name,
            "etcd member restored from a backup"
        );
        Ok(RestoreOutput {
            backup_id: backup_id.to_string(),
            etcd_revision: restored.manifest.etcd_revision,
            snapshot_bytes: restored.snapshot_bytes,
            member: name.to_string(),
            cluster_members: members,
            started: started.is_ok(),
            took_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Deletes the decrypted snapshot however the restore ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Keeps the current data as `before` (replacing an older one) and moves `staging`
/// in its place.
fn swap_in(data: &Path, staging: &Path, before: &Path) -> Result<(), String> {
    if data.exists() {
        let _ = std::fs::remove_dir_all(before);
        std::fs::rename(data, before)
            .map_err(|e| format!("cannot move the old data aside: {}", e.kind()))?;
    }
    std::fs::rename(staging, data).map_err(|e| {
        // Put the old data back rather than leave the member with none.
        let _ = std::fs::rename(before, data);
        format!("cannot move the restored data in place: {}", e.kind())
    })
}

/// Runs the verified tool with a fixed argument vector and an empty environment
/// (but `ETCDCTL_API=3`), its output appended to `log` (never returned).
async fn run_tool(tool: &Path, args: &[&str], log: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| format!("tool log: {}", e.kind()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("tool log: {}", e.kind()))?;
    let mut child = tokio::process::Command::new(tool)
        .args(args)
        .env_clear()
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run etcdctl: {}", e.kind()))?;
    match tokio::time::timeout(TOOL_TIMEOUT, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!(
            "etcdctl snapshot restore failed ({s}); its output is in the agent's work directory"
        )),
        Ok(Err(e)) => Err(format!("etcdctl: {}", e.kind())),
        Err(_) => Err(format!(
            "etcdctl snapshot restore did not finish within {}s",
            TOOL_TIMEOUT.as_secs()
        )),
    }
}
