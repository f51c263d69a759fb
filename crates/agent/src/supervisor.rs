//! The component supervisor (claim C8) and the state behind the `component.*` actions.
//!
//! A control-plane component (etcd, kube-apiserver, …) runs only from a release that
//! [`verify_release`] accepted: the pipeline's TUF signature, a PASSED test
//! attestation for its exact digest, and M-of-N non-author approvals. The verified
//! bytes are copied to `<work_dir>/bin/<name>-<version>-<sha256 prefix>` (mode 0500),
//! and **right before every exec** — first start, restart action, crash restart,
//! upgrade — that file is read again and its SHA-256 compared with the verified one,
//! so a binary swapped on disk after verification is refused, never run.
//!
//! Each component has one task (its *runner*) that owns the child process: it starts
//! it, waits for it, restarts it after a crash with exponential backoff (1 s doubling
//! to 30 s, reset after 60 s of stable running), and obeys the commands the action
//! handlers send through [`Supervisor::restart`], [`Supervisor::upgrade`] and
//! [`Supervisor::shutdown`]. Nothing else starts or stops a component.
//!
//! What this does not protect against: someone who can write the agent's work
//! directory between the digest check and the `execve` (a window of microseconds), or
//! who can write the running binary's memory. The work directory must be writable by
//! the agent only.
//!
//! Inputs from a dispatch only *select*: the component name must be one configured
//! here, the version must be a release approved in the repository. Arguments and
//! environment come from the agent's configuration file only; the child's output goes
//! to `<work_dir>/logs/<name>.log` and is never returned by any action.
//!
//! More of the rules, in the order a component meets them:
//!
//! - At start every configured release is verified before any component starts; one
//!   failure and nothing starts. A version recorded in `<work_dir>/versions.json` by
//!   an upgrade takes precedence over the configured one (and is verified again).
//! - The child runs with the agent's environment cleared, in its own process group,
//!   with working directory `work_dir` and standard input `/dev/null`. A changed
//!   installed file is not run: the component goes to `failed` and waits for a
//!   `component.restart` or `component.upgrade`.
//! - With a `health_url` the component is `starting` until that URL answers 200
//!   (polled every 200 ms), then `running`. Stopping sends SIGTERM, then SIGKILL
//!   after 10 s.
//! - With a `data_dir`, a directory found missing or empty after the component was
//!   once healthy on it (`<work_dir>/<name>.member`) is not started again: the state
//!   is `awaiting-join` until `etcd.member-join` adds the member back as a learner.
//! - `component.upgrade` verifies the requested version first (the running process is
//!   untouched if it does not verify, or is lower than the running one without being
//!   an approved rollback), then stops the old process, starts the new one, records
//!   the version in `versions.json` and waits up to 30 s for health. One restart or
//!   upgrade runs at a time per component.
//! - Every release verified and installed is recorded in
//!   `<work_dir>/verified-releases.json`: when the repository cannot be verified at
//!   start (expired, unreadable, rolled back), that same release is started again,
//!   re-hashed, while the agent refuses every dispatch (`trust_metadata`) until fresh
//!   metadata verifies.

use crate::config::{ComponentSettings, TrustFiles};
use palisade_policy::release::{release_target_name, verify_measured_release, Measured};
use palisade_policy::tuf::RepoDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;

pub const STATUS_SCHEMA: &str = "palisade.dev/output/component-status/v1";
pub const RESTART_SCHEMA: &str = "palisade.dev/output/component-restart/v1";
pub const UPGRADE_SCHEMA: &str = "palisade.dev/output/component-upgrade/v1";

/// First delay before restarting a component that exited on its own.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest delay between two crash restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Running this long without exiting resets the backoff to [`BACKOFF_INITIAL`].
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long a stopped component has between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest `wait_healthy` (and an upgrade) waits for the health URL to answer 200.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a starting component's health URL is polled.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// Hex digits of the SHA-256 kept in an installed binary's file name.
const DIGEST_PREFIX: usize = 16;

/// Why the supervisor refused or failed to do something.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "{component:?} is not a supervised component on this instance (configured: {configured})"
    )]
    UnknownComponent {
        component: String,
        configured: String,
    },
    #[error("{component} {version} is not an approved release, so it is not started: {reason}")]
    NotApproved {
        component: String,
        version: String,
        reason: String,
    },
    #[error("the installed binary of {component} at {} changed after it was verified (verified sha256:{expected}, on disk sha256:{found}); it was not started. Upgrade to an approved release (the same version re-installs it) or restart the agent", path.display())]
    ArtifactChanged {
        component: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("the repository's file of {component} at {} changed while it was installed (verified sha256:{expected}, copied sha256:{found}); nothing was installed. The repository host changed a published artifact: check it, then retry", source_path.display())]
    ReleaseChanged {
        component: String,
        source_path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("cannot start {component}: {source}")]
    Spawn {
        component: String,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{component} did not report healthy at {url} within {} s (state: {state})", waited.as_secs())]
    Unhealthy {
        component: String,
        url: String,
        waited: Duration,
        state: ComponentState,
    },
    #[error("{component} is not changed from {running} to {requested}: {reason}")]
    Downgrade {
        component: String,
        running: String,
        requested: String,
        reason: Box<palisade_policy::rollback::DowngradeError>,
    },
    #[error("invalid supervisor configuration: {0}")]
    Config(String),
    #[error("the supervisor is shut down; {component} is no longer supervised")]
    ShutDown { component: String },
    #[error("{component} lost its data ({} is empty) after it had run on it: it is not started again under its old identity; it waits for etcd.member-join", data_dir.display())]
    AwaitingJoin {
        component: String,
        data_dir: PathBuf,
    },
    #[error("{component} is {state}: only a member whose data is gone (awaiting-join) can join")]
    NotAwaitingJoin {
        component: String,
        state: ComponentState,
    },
}

impl SupervisorError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The state of a supervised component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    /// Started; its health URL has not answered 200 yet.
    Starting,
    /// Started and healthy (or started, when it has no health URL).
    Running,
    /// Exited on its own; waiting to be restarted.
    Backoff,
    /// Stopped by the supervisor (shutdown).
    Stopped,
    /// Not running and not restarted automatically: its binary could not be started
    /// (e.g. it changed on disk). Needs a restart or upgrade action.
    Failed,
    /// Not started: its data directory is empty after it had run on it, or this
    /// instance replaces a member. Needs `etcd.member-join`.
    #[serde(rename = "awaiting-join")]
    AwaitingJoin,
}

impl std::fmt::Display for ComponentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::AwaitingJoin => "awaiting-join",
        })
    }
}

/// How the last process of a component ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it (9 = SIGKILL, 15 = SIGTERM).
    pub signal: Option<i32>,
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// Whether the supervisor stopped it (restart, upgrade, shutdown), rather than
    /// it exiting on its own.
    pub requested: bool,
}

/// One component in `component.status`: never its output, arguments or environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub name: String,
    pub state: ComponentState,
    pub version: String,
    pub artifact_sha256: String,
    /// Times it was started again after its first start (crash restarts and
    /// restart/upgrade actions).
    pub restarts: u64,
    pub last_exit: Option<LastExit>,
    /// Seconds since the current process started (starting or running only).
    pub uptime_secs: Option<u64>,
    /// Why it is `failed`.
    pub error: Option<String>,
}

/// Output of `component.status` (schema [`STATUS_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatusOutput {
    pub schema: String,
    pub components: Vec<ComponentStatus>,
}

/// Output of `component.restart` (schema [`RESTART_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartOutput {
    pub schema: String,
    pub component: String,
    pub version: String,
    pub artifact_sha256: String,
    pub restarts: u64,
    /// `Some(true)` once healthy when asked to wait; `None` when not asked or the
    /// component has no health URL.
    pub healthy: Option<bool>,
}

/// Output of `component.upgrade` (schema [`UPGRADE_SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOutput {
    pub schema: String,
    pub component: String,
    pub from_version: String,
    pub from_sha256: String,
    pub to_version: String,
    pub to_sha256: String,
    /// `Some(true)` once the new version answered its health URL; `None` when it has
    /// none.
    pub healthy: Option<bool>,
}

/// A verified release, installed in the work directory.
#[derive(Debug, Clone)]
struct Artifact {
    version: String,
    sha256: String,
    path: PathBuf,
    /// The version this release may replace although it is lower (its approved
    /// rollback mark).
    rollback_from: Option<String>,
}

/// Where trust and installed files live.
struct Trust {
    repo: RepoDir,
    root: Vec<u8>,
    datastore: PathBuf,
    bin_dir: PathBuf,
    /// `<work_dir>/verified-releases.json`: the releases verified and installed so
    /// far ([`KeptReleases`]).
    kept: PathBuf,
    /// One verification at a time: they share the TUF datastore.
    lock: Mutex<()>,
}

/// The releases this agent verified and installed, by `<name> <version>`: what a
/// start may run again when the repository cannot be verified (its metadata expired,
/// it is unreachable). Written by the agent only, in its private work directory;
/// the installed file is hashed again before it is used, and before every exec.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct KeptReleases {
    releases: BTreeMap<String, KeptRelease>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptRelease {
    sha256: String,
    file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollback_from: Option<String>,
}

impl KeptReleases {
    fn read(path: &Path) -> Result<Self, SupervisorError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SupervisorError::Config(format!(
                    "{} is not a valid list of verified releases ({e}); remove it, and the agent verifies from the repository again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(SupervisorError::io(path, e)),
        }
    }
}

impl Trust {
    /// Verifies release `name` `version` in the TUF repository and installs its bytes
    /// (temporary file, mode 0500, fsync, rename) as
    /// `<bin>/<name>-<version>-<sha256 prefix>`.
    async fn verify_and_install(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Artifact, SupervisorError> {
        let _one_at_a_time = self.lock.lock().await;
        let (verified, source) = self
            .verify_locked(name, version)
            .await
            .map_err(|e| not_approved(name, version, e.to_string()))?;
        self.install_verified(name, version, verified, source).await
    }

    /// What a start runs: the release as it verifies now; or, when the repository
    /// cannot be verified now (expired or unreadable metadata), the same release as
    /// this agent verified and installed it before, hashed again. A repository that
    /// verifies and no longer approves the release stops it from starting.
    async fn verified_or_kept(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Artifact, SupervisorError> {
        let _one_at_a_time = self.lock.lock().await;
        let e = match self.verify_locked(name, version).await {
            Ok((verified, source)) => {
                return self.install_verified(name, version, verified, source).await
            }
            Err(e) if e.repository_unverifiable() => e,
            Err(e) => return Err(not_approved(name, version, e.to_string())),
        };
        let kept = KeptReleases::read(&self.kept)?
            .releases
            .remove(&format!("{name} {version}"))
            .ok_or_else(|| {
                not_approved(
                    name,
                    version,
                    format!("{e}; and this agent never verified this release before"),
                )
            })?;
        check_unchanged(name, &kept.file, &kept.sha256).await?;
        tracing::warn!(
            component = name,
            version,
            sha256 = %kept.sha256,
            reason = %e,
            "the repository cannot be verified; starting the release this agent verified before"
        );
        Ok(Artifact {
            version: version.to_string(),
            sha256: kept.sha256,
            path: kept.file,
            rollback_from: kept.rollback_from,
        })
    }

    /// Verifies release `name` `version` against the repository, streaming the
    /// artifact through SHA-256 (never held in memory); returns it with the
    /// repository's path of the artifact. The caller holds the lock.
    async fn verify_locked(
        &self,
        name: &str,
        version: &str,
    ) -> Result<
        (palisade_policy::release::VerifiedRelease, PathBuf),
        palisade_policy::tuf::TrustError,
    > {
        use palisade_policy::tuf::TrustError;
        let target =
            release_target_name(&self.repo, &self.root, &self.datastore, name, version).await?;
        let source = self.repo.target_path(&target);
        let measured = measure_file(&source).await.map_err(|e| TrustError::Tuf {
            location: source.display().to_string(),
            detail: format!("cannot read the artifact: {e}"),
        })?;
        let verified = verify_measured_release(
            &self.repo,
            &self.root,
            &self.datastore,
            name,
            version,
            &measured,
            &[],
        )
        .await?;
        Ok((verified, source))
    }

    /// Records `artifact` in [`KeptReleases`].
    fn remember(&self, name: &str, artifact: &Artifact) -> Result<(), SupervisorError> {
        let mut kept = KeptReleases::read(&self.kept)?;
        kept.releases.insert(
            format!("{name} {}", artifact.version),
            KeptRelease {
                sha256: artifact.sha256.clone(),
                file: artifact.path.clone(),
                rollback_from: artifact.rollback_from.clone(),
            },
        );
        write_json_atomic(&self.kept, &kept)
    }

    async fn install_verified(
        &self,
        name: &str,
        version: &str,
        verified: palisade_policy::release::VerifiedRelease,
        source: PathBuf,
    ) -> Result<Artifact, SupervisorError> {
        let prefix = verified
            .sha256
            .get(..DIGEST_PREFIX)
            .unwrap_or(&verified.sha256);
        let path = self.bin_dir.join(format!("{name}-{version}-{prefix}"));
        let install_to = path.clone();
        let expected = verified.sha256.clone();
        let from = source.clone();
        let copied = tokio::task::spawn_blocking(move || install(&from, &install_to, &expected))
            .await
            .map_err(|e| SupervisorError::io(&path, std::io::Error::other(e)))??;
        if let Some(found) = copied {
            return Err(SupervisorError::ReleaseChanged {
                component: name.to_string(),
                source_path: source,
                expected: verified.sha256,
                found,
            });
        }
        tracing::info!(
            component = name,
            version,
            sha256 = %verified.sha256,
            author = %verified.author,
            approvers = ?verified.approvers,
            "release verified and installed"
        );
        let artifact = Artifact {
            version: version.to_string(),
            sha256: verified.sha256,
            path,
            rollback_from: verified.rollback_from,
        };
        self.remember(name, &artifact)?;
        Ok(artifact)
    }
}

/// Copies `source` to `path` atomically with mode 0500 (temporary file, fsync,
/// rename), hashing the bytes it writes. When they are not the verified `sha256`
/// (the repository's file changed since it was verified), nothing is installed and
/// the digest found is returned.
fn install(source: &Path, path: &Path, sha256: &str) -> Result<Option<String>, SupervisorError> {
    use sha2::Digest;
    use std::io::{Read, Write};
    let mut from = open_regular(source).map_err(|e| SupervisorError::io(source, e))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| SupervisorError::io(&tmp, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; STREAM_CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(SupervisorError::io(source, e));
            }
        };
        hasher.update(&buf[..n]);
        if let Err(e) = f.write_all(&buf[..n]) {
            let _ = std::fs::remove_file(&tmp);
            return Err(SupervisorError::io(&tmp, e));
        }
    }
    let found = hex::encode(hasher.finalize());
    if found != sha256 {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Ok(Some(found));
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o500))
        .map_err(|e| SupervisorError::io(&tmp, e))?;
    f.sync_all().map_err(|e| SupervisorError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| SupervisorError::io(path, e))?;
    Ok(None)
}

/// How much of a file is read at a time when it is hashed or copied: component
/// binaries are hundreds of MiB, and an idle agent holds a few MiB in all.
const STREAM_CHUNK: usize = 64 * 1024;

/// The SHA-256 (hex) and length of the regular file at `path`, read in chunks.
fn measure(path: &Path) -> std::io::Result<Measured> {
    use sha2::Digest;
    let mut file = open_regular(path)?;
    let mut hasher = sha2::Sha256::new();
    let length = std::io::copy(
        &mut std::io::BufReader::with_capacity(STREAM_CHUNK, &mut file),
        &mut hasher,
    )?;
    Ok(Measured {
        sha256: hex::encode(hasher.finalize()),
        length,
    })
}

/// Opens a regular file for reading; a FIFO or device, which may never end, is
/// refused.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// [`measure`], off the async workers.
async fn measure_file(path: &Path) -> std::io::Result<Measured> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || measure(&owned))
        .await
        .map_err(std::io::Error::other)?
}

/// Creates `dir` (and parents) and makes it private to the agent (0700).
fn private_dir(dir: &Path) -> Result<(), SupervisorError> {
    std::fs::create_dir_all(dir).map_err(|e| SupervisorError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| SupervisorError::io(dir, e))
}

/// `<work_dir>/versions.json`: the version each upgraded component runs, so an agent
/// restart starts it again (after verifying it again).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct Versions {
    chosen: BTreeMap<String, String>,
}

impl Versions {
    fn read(path: &Path) -> Result<Self, SupervisorError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SupervisorError::Config(format!(
                    "{} is not a valid versions file ({e}); fix or remove it",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(SupervisorError::io(path, e)),
        }
    }

    fn write(&self, path: &Path) -> Result<(), SupervisorError> {
        write_json_atomic(path, self)
    }
}

/// Writes `value` as pretty JSON to `path` (temporary file, fsync, rename).
fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), SupervisorError> {
    use std::io::Write;
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| SupervisorError::io(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| SupervisorError::io(&tmp, e))?;
    f.write_all(&bytes)
        .map_err(|e| SupervisorError::io(&tmp, e))?;
    f.sync_all().map_err(|e| SupervisorError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SupervisorError::io(path, e))
}

fn not_approved(name: &str, version: &str, reason: String) -> SupervisorError {
    SupervisorError::NotApproved {
        component: name.to_string(),
        version: version.to_string(),
        reason,
    }
}

/// What the runner knows, published to readers through a watch channel.
#[derive(Debug, Clone)]
struct Snapshot {
    state: ComponentState,
    version: String,
    sha256: String,
    /// Processes started so far.
    starts: u64,
    last_exit: Option<LastExit>,
    started_at: Option<Instant>,
    error: Option<String>,
}

type Reply = oneshot::Sender<Result<(), SupervisorError>>;

/// What the action handlers ask of a component's runner.
enum Request {
    Restart(Reply),
    Switch(Artifact, Reply),
    /// Start a component awaiting join, with these flags' values replaced.
    Join(Vec<(String, String)>, Reply),
    /// Stop the component, say so, wait for `resume`, then start it again.
    Hold {
        stopped: oneshot::Sender<()>,
        resume: oneshot::Receiver<()>,
        reply: Reply,
    },
    Stop(oneshot::Sender<()>),
}

/// A supervised component, as the supervisor sees it.
struct Handle {
    commands: mpsc::Sender<Request>,
    snapshot: watch::Receiver<Snapshot>,
    health_url: Option<String>,
    /// One restart/upgrade at a time per component.
    op: Mutex<()>,
    runner: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Handle {
    fn status(&self, name: &str) -> ComponentStatus {
        let s = self.snapshot.borrow().clone();
        let live = matches!(s.state, ComponentState::Starting | ComponentState::Running);
        ComponentStatus {
            name: name.to_string(),
            state: s.state,
            version: s.version,
            artifact_sha256: s.sha256,
            restarts: s.starts.saturating_sub(1),
            last_exit: s.last_exit,
            uptime_secs: s.started_at.filter(|_| live).map(|t| t.elapsed().as_secs()),
            error: s.error,
        }
    }

    async fn send(&self, name: &str, command: Request) -> Result<(), SupervisorError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| SupervisorError::ShutDown {
                component: name.to_string(),
            })
    }

    /// Waits until the process started as start number `starts` (or a later one) is
    /// running, i.e. its health URL answered 200.
    async fn wait_healthy(&self, name: &str, starts: u64) -> Result<Option<bool>, SupervisorError> {
        let Some(url) = &self.health_url else {
            return Ok(None);
        };
        let mut rx = self.snapshot.clone();
        let healthy = tokio::time::timeout(
            HEALTH_TIMEOUT,
            rx.wait_for(|s| s.starts >= starts && s.state == ComponentState::Running),
        )
        .await
        .map(|r| r.map(|_| ()));
        match healthy {
            Ok(Ok(())) => Ok(Some(true)),
            Ok(Err(_)) => Err(SupervisorError::ShutDown {
                component: name.to_string(),
            }),
            Err(_) => Err(SupervisorError::Unhealthy {
                component: name.to_string(),
                url: url.clone(),
                waited: HEALTH_TIMEOUT,
                state: self.snapshot.borrow().state,
            }),
        }
    }
}

/// Supervises this instance's control-plane components.
pub struct Supervisor {
    trust: Trust,
    work_dir: PathBuf,
    components: BTreeMap<String, Handle>,
    /// Serialises writes of `versions.json`.
    versions: Mutex<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("work_dir", &self.work_dir)
            .field("components", &self.components.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Verifies every configured component's release (the version recorded in
    /// `<work_dir>/versions.json` by an earlier upgrade, else the configured one) and
    /// starts them. Fails closed: if any release does not verify, nothing is started;
    /// if one fails to start, those already started are stopped again.
    pub async fn start(
        components: Vec<ComponentSettings>,
        trust: TrustFiles,
        work_dir: PathBuf,
    ) -> Result<Arc<Self>, SupervisorError> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &components {
            if !seen.insert(c.name.as_str()) {
                return Err(SupervisorError::Config(format!(
                    "component {:?} is listed twice",
                    c.name
                )));
            }
            if let Some(url) = &c.health_url {
                if !url.starts_with("http://") {
                    return Err(SupervisorError::Config(format!(
                        "component {}: health_url {url:?} must be a plain http:// URL (a local health endpoint)",
                        c.name
                    )));
                }
            }
        }
        let bin_dir = work_dir.join("bin");
        let log_dir = work_dir.join("logs");
        for d in [&work_dir, &bin_dir, &log_dir] {
            private_dir(d)?;
        }
        let root = std::fs::read(&trust.root).map_err(|e| SupervisorError::io(&trust.root, e))?;
        let trust = Trust {
            repo: RepoDir::new(trust.repo),
            root,
            datastore: trust.datastore,
            bin_dir,
            kept: work_dir.join("verified-releases.json"),
            lock: Mutex::new(()),
        };
        let chosen = Versions::read(&work_dir.join("versions.json"))?.chosen;

        // Verify everything before starting anything.
        let mut verified = Vec::new();
        for c in components {
            let version = chosen
                .get(&c.name)
                .cloned()
                .unwrap_or_else(|| c.version.clone());
            let artifact = trust.verified_or_kept(&c.name, &version).await?;
            verified.push((c, artifact));
        }

        let http = health_client()?;
        let spawner = Spawner::start();
        let mut handles = BTreeMap::new();
        let mut first_starts = Vec::new();
        for (settings, artifact) in verified {
            let log = log_dir.join(format!("{}.log", settings.name));
            let (commands, rx) = mpsc::channel(4);
            let (snapshot_tx, snapshot) = watch::channel(Snapshot {
                state: ComponentState::Starting,
                version: artifact.version.clone(),
                sha256: artifact.sha256.clone(),
                starts: 0,
                last_exit: None,
                started_at: None,
                error: None,
            });
            let (first_tx, first_rx) = oneshot::channel();
            let health_url = settings.health_url.clone();
            let runner = Runner {
                pidfile: crate::leftover::PidFile::new(&work_dir, &settings.name),
                settings,
                artifact,
                work_dir: work_dir.clone(),
                log,
                http: http.clone(),
                spawner: spawner.clone(),
                commands: rx,
                snapshot: snapshot_tx,
                backoff: BACKOFF_INITIAL,
                first: true,
                joined: None,
            };
            let name = runner.settings.name.clone();
            let task = tokio::spawn(runner.run(first_tx));
            first_starts.push((name.clone(), first_rx));
            handles.insert(
                name,
                Handle {
                    commands,
                    snapshot,
                    health_url,
                    op: Mutex::new(()),
                    runner: std::sync::Mutex::new(Some(task)),
                },
            );
        }
        let supervisor = Arc::new(Self {
            trust,
            work_dir,
            components: handles,
            versions: Mutex::new(()),
        });
        for (name, first) in first_starts {
            let started = first.await.unwrap_or_else(|_| {
                Err(SupervisorError::ShutDown {
                    component: name.clone(),
                })
            });
            if let Err(e) = started {
                supervisor.shutdown().await;
                return Err(e);
            }
        }
        Ok(supervisor)
    }

    fn handle(&self, component: &str) -> Result<&Handle, SupervisorError> {
        self.components
            .get(component)
            .ok_or_else(|| SupervisorError::UnknownComponent {
                component: component.chars().take(64).collect(),
                configured: self
                    .components
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `component.status`: every component, or only `component`.
    pub async fn status(
        &self,
        component: Option<&str>,
    ) -> Result<ComponentStatusOutput, SupervisorError> {
        let components = match component {
            Some(name) => vec![self.handle(name)?.status(name)],
            None => self
                .components
                .iter()
                .map(|(name, h)| h.status(name))
                .collect(),
        };
        Ok(ComponentStatusOutput {
            schema: STATUS_SCHEMA.to_string(),
            components,
        })
    }

    /// `component.restart`: stops the component (SIGTERM, then SIGKILL after
    /// [`STOP_GRACE`]) and starts it again from its verified binary, checked again
    /// first. With `wait_healthy`, waits up to [`HEALTH_TIMEOUT`] for its health URL.
    pub async fn restart(
        &self,
        component: &str,
        wait_healthy: bool,
    ) -> Result<RestartOutput, SupervisorError> {
        let handle = self.handle(component)?;
        let _op = handle.op.lock().await;
        let (reply, done) = oneshot::channel();
        handle.send(component, Request::Restart(reply)).await?;
        await_reply(component, done).await?;
        let starts = handle.snapshot.borrow().starts;
        let healthy = if wait_healthy {
            handle.wait_healthy(component, starts).await?
        } else {
            None
        };
        let s = handle.status(component);
        Ok(RestartOutput {
            schema: RESTART_SCHEMA.to_string(),
            component: component.to_string(),
            version: s.version,
            artifact_sha256: s.artifact_sha256,
            restarts: s.restarts,
            healthy,
        })
    }

    /// `component.upgrade`: verifies release `version` first (the running process is
    /// left alone if it does not verify), then stops the old process, starts the new
    /// one, records the choice in `versions.json` and waits for its health URL.
    pub async fn upgrade(
        &self,
        component: &str,
        version: &str,
    ) -> Result<UpgradeOutput, SupervisorError> {
        let handle = self.handle(component)?;
        let _op = handle.op.lock().await;
        let artifact = self.trust.verify_and_install(component, version).await?;
        let (from_version, from_sha256) = {
            let s = handle.snapshot.borrow();
            (s.version.clone(), s.sha256.clone())
        };
        // Approved is not enough for a lower version: that downgrade itself must
        // have been approved as a rollback from the running one.
        palisade_policy::rollback::check_upgrade(
            &from_version,
            &artifact.version,
            artifact.rollback_from.as_deref(),
        )
        .map_err(|reason| SupervisorError::Downgrade {
            component: component.to_string(),
            running: from_version.clone(),
            requested: artifact.version.clone(),
            reason: Box::new(reason),
        })?;
        let (to_version, to_sha256) = (artifact.version.clone(), artifact.sha256.clone());
        let (reply, done) = oneshot::channel();
        handle
            .send(component, Request::Switch(artifact, reply))
            .await?;
        // The new version is what runs now (or what failed to start): an agent
        // restart must come back to it, not to the old one.
        self.persist_version(component, &to_version).await?;
        await_reply(component, done).await?;
        tracing::info!(component, from = %from_version, to = %to_version, "component upgraded");
        let starts = handle.snapshot.borrow().starts;
        let healthy = handle.wait_healthy(component, starts).await?;
        Ok(UpgradeOutput {
            schema: UPGRADE_SCHEMA.to_string(),
            component: component.to_string(),
            from_version,
            from_sha256,
            to_version,
            to_sha256,
            healthy,
        })
    }

    /// Verifies tool `name` at `version` in the TUF repository (as a component's
    /// release) and installs it; returns the path to run, whose SHA-256 was checked
    /// just now.
    pub async fn install_tool(
        &self,
        name: &str,
        version: &str,
    ) -> Result<PathBuf, SupervisorError> {
        let artifact = self.trust.verify_and_install(name, version).await?;
        check_unchanged(name, &artifact.path, &artifact.sha256).await?;
        Ok(artifact.path)
    }

    /// Stops `component`, runs `work`, and starts the component again (whatever
    /// `work` returned); returns what `work` returned and how the start went.
    pub async fn while_stopped<T, F, Fut>(
        &self,
        component: &str,
        work: F,
    ) -> Result<(T, Result<(), SupervisorError>), SupervisorError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let handle = self.handle(component)?;
        let _op = handle.op.lock().await;
        let (stopped_tx, stopped) = oneshot::channel();
        let (resume, resume_rx) = oneshot::channel();
        let (reply, done) = oneshot::channel();
        handle
            .send(
                component,
                Request::Hold {
                    stopped: stopped_tx,
                    resume: resume_rx,
                    reply,
                },
            )
            .await?;
        stopped.await.map_err(|_| SupervisorError::ShutDown {
            component: component.to_string(),
        })?;
        let out = work().await;
        let _ = resume.send(());
        let started = await_reply(component, done).await;
        Ok((out, started))
    }

    /// Whether `component` waits for a join (its data is gone).
    pub fn awaiting_join(&self, component: &str) -> Result<bool, SupervisorError> {
        Ok(self.handle(component)?.snapshot.borrow().state == ComponentState::AwaitingJoin)
    }

    /// `etcd.member-join`'s start: a component awaiting join is started with the
    /// given flags' values replaced (or added), e.g. `--initial-cluster-state
    /// existing`. Refused unless it is awaiting join.
    pub async fn join(
        &self,
        component: &str,
        flags: Vec<(String, String)>,
    ) -> Result<(), SupervisorError> {
        let handle = self.handle(component)?;
        let _op = handle.op.lock().await;
        let state = handle.snapshot.borrow().state;
        if state != ComponentState::AwaitingJoin {
            return Err(SupervisorError::NotAwaitingJoin {
                component: component.to_string(),
                state,
            });
        }
        let (reply, done) = oneshot::channel();
        handle.send(component, Request::Join(flags, reply)).await?;
        await_reply(component, done).await
    }

    async fn persist_version(&self, component: &str, version: &str) -> Result<(), SupervisorError> {
        let _one_writer = self.versions.lock().await;
        let path = self.work_dir.join("versions.json");
        let mut versions = Versions::read(&path)?;
        versions
            .chosen
            .insert(component.to_string(), version.to_string());
        versions.write(&path)
    }

    /// Stops every component (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and waits
    /// for their runners to end. Later actions answer [`SupervisorError::ShutDown`].
    pub async fn shutdown(&self) {
        for (name, handle) in &self.components {
            let (tx, rx) = oneshot::channel();
            if handle.commands.send(Request::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
            let task = handle.runner.lock().ok().and_then(|mut t| t.take());
            if let Some(task) = task {
                if let Err(e) = task.await {
                    tracing::error!(component = %name, error = %e, "component runner ended abnormally");
                }
            }
        }
    }
}

async fn await_reply(
    component: &str,
    done: oneshot::Receiver<Result<(), SupervisorError>>,
) -> Result<(), SupervisorError> {
    done.await.unwrap_or_else(|_| {
        Err(SupervisorError::ShutDown {
            component: component.to_string(),
        })
    })
}

/// A plain-HTTP client for local health endpoints. reqwest is built without a
/// default TLS provider, so it is handed a TLS configuration (ring, no trusted roots:
/// `https://` health URLs are refused at start anyway).
pub(crate) fn health_client() -> Result<reqwest::Client, SupervisorError> {
    let no_client =
        |e: String| SupervisorError::Config(format!("cannot build the health-check client: {e}"));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| no_client(e.to_string()))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| no_client(e.to_string()))
}

/// What a runner does next.
enum Next {
    Start(Option<Reply>),
    Stop(Option<oneshot::Sender<()>>),
}

/// The task that owns one component's process.
struct Runner {
    settings: ComponentSettings,
    artifact: Artifact,
    work_dir: PathBuf,
    log: PathBuf,
    pidfile: crate::leftover::PidFile,
    spawner: Spawner,
    http: reqwest::Client,
    commands: mpsc::Receiver<Request>,
    snapshot: watch::Sender<Snapshot>,
    backoff: Duration,
    /// Not started yet: a first start that finds the data gone is not an error.
    first: bool,
    /// Flags replaced by a join, kept until the component was healthy on its data.
    joined: Option<Vec<(String, String)>>,
}

impl Runner {
    async fn run(mut self, first: Reply) {
        let mut next = Next::Start(Some(first));
        loop {
            next = match next {
                Next::Start(reply) if self.joined.is_none() && self.data_gone() => {
                    self.await_join(reply).await
                }
                Next::Start(reply) => match self.spawn().await {
                    Ok(child) => {
                        answer(reply, Ok(()));
                        self.supervise(child).await
                    }
                    Err(e) => {
                        tracing::error!(component = %self.settings.name, error = %e, "component not started");
                        let message = e.to_string();
                        self.snapshot.send_modify(|s| {
                            s.state = ComponentState::Failed;
                            s.started_at = None;
                            s.error = Some(message);
                        });
                        answer(reply, Err(e));
                        // Retrying the same binary cannot help: wait for an action.
                        let command = self.commands.recv().await;
                        self.obey(command, None).await
                    }
                },
                Next::Stop(done) => {
                    self.snapshot.send_modify(|s| {
                        s.state = ComponentState::Stopped;
                        s.started_at = None;
                    });
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            };
        }
    }

    /// The marker that this component was healthy on its data directory.
    fn member_marker(&self) -> PathBuf {
        self.work_dir.join(format!("{}.member", self.settings.name))
    }

    /// Whether the member's data is missing while it must not be: the component ran
    /// on it before (the marker exists), or this instance joins a running cluster.
    /// The data is etcd's `member` directory: a volume with only `lost+found` or a
    /// stray file in it holds none.
    fn data_gone(&self) -> bool {
        let Some(dir) = &self.settings.data_dir else {
            return false;
        };
        !has_member_data(dir) && (self.settings.join || self.member_marker().exists())
    }

    /// Records that the component is healthy on a non-empty data directory.
    fn mark_member(&mut self) {
        let Some(dir) = &self.settings.data_dir else {
            return;
        };
        if !has_member_data(dir) {
            return;
        }
        self.joined = None;
        let marker = self.member_marker();
        if !marker.exists() {
            if let Err(e) = std::fs::write(&marker, b"healthy on its data\n") {
                tracing::warn!(component = %self.settings.name, error = %e, "cannot record that the component runs on its data");
            }
        }
    }

    /// Waits, without starting the component, for a join (or a stop).
    async fn await_join(&mut self, reply: Option<Reply>) -> Next {
        let data_dir = self.settings.data_dir.clone().unwrap_or_default();
        let refusal = || SupervisorError::AwaitingJoin {
            component: self.settings.name.clone(),
            data_dir: data_dir.clone(),
        };
        tracing::warn!(component = %self.settings.name, data_dir = %data_dir.display(), "data directory is empty after the component ran on it; waiting for etcd.member-join");
        let message = refusal().to_string();
        self.snapshot.send_modify(|s| {
            s.state = ComponentState::AwaitingJoin;
            s.started_at = None;
            s.error = Some(message);
        });
        let first = std::mem::replace(&mut self.first, false);
        answer(reply, if first { Ok(()) } else { Err(refusal()) });
        loop {
            match self.commands.recv().await {
                Some(Request::Join(flags, reply)) => {
                    self.joined = Some(flags);
                    return Next::Start(Some(reply));
                }
                Some(Request::Restart(reply)) => answer(Some(reply), Err(refusal())),
                // Refused, and not kept: the release to join with is the one running
                // before the data was lost.
                Some(Request::Switch(_, reply)) => answer(Some(reply), Err(refusal())),
                Some(Request::Hold {
                    stopped,
                    resume,
                    reply,
                }) => return self.hold(stopped, resume, reply).await,
                Some(Request::Stop(done)) => return Next::Stop(Some(done)),
                None => return Next::Stop(None),
            }
        }
    }

    /// Held stopped (the process already is): says so, waits to be resumed, starts.
    async fn hold(
        &mut self,
        stopped: oneshot::Sender<()>,
        resume: oneshot::Receiver<()>,
        reply: Reply,
    ) -> Next {
        self.snapshot.send_modify(|s| {
            s.state = ComponentState::Stopped;
            s.started_at = None;
        });
        let _ = stopped.send(());
        let _ = resume.await;
        Next::Start(Some(reply))
    }

    /// The argument vector: the configured one, with a join's flags replaced.
    fn args(&self) -> Vec<String> {
        let mut args = self.settings.args.clone();
        for (flag, value) in self.joined.iter().flatten() {
            match args.iter().position(|a| a == flag) {
                Some(i) if i + 1 < args.len() => args[i + 1] = value.clone(),
                _ => {
                    args.push(flag.clone());
                    args.push(value.clone());
                }
            }
        }
        args
    }

    /// Checks the installed binary against the verified digest, then starts it.
    async fn spawn(&mut self) -> Result<Child, SupervisorError> {
        self.first = false;
        let name = &self.settings.name;
        let path = &self.artifact.path;
        check_unchanged(name, path, &self.artifact.sha256).await?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(|e| SupervisorError::io(&self.log, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| SupervisorError::io(&self.log, e))?;
        // What a killed agent left running (crates/agent/src/leftover.rs) would hold
        // this one's ports and data: it is stopped first.
        if let Some(pid) = self.pidfile.stop_leftover().await {
            tracing::warn!(component = %name, pid, "stopped a leftover of this component that a previous agent run did not stop");
        }
        // Dies with the agent where setpriv can ask the kernel for it.
        let mut command = if Path::new(crate::leftover::SETPRIV).exists() {
            let mut c = Command::new(crate::leftover::SETPRIV);
            c.args(["--pdeathsig", "TERM", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command
            .args(self.args())
            // Only the configured environment: the agent's own may hold secrets.
            .env_clear()
            .envs(self.settings.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.work_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a signal to the agent's group does not reach it;
            // the supervisor stops it.
            .process_group(0)
            .kill_on_drop(true);
        let child = self
            .spawner
            .spawn(command)
            .await
            .map_err(|source| SupervisorError::Spawn {
                component: name.clone(),
                source,
            })?;
        let healthy_at_once = self.settings.health_url.is_none();
        let (version, sha256) = (self.artifact.version.clone(), self.artifact.sha256.clone());
        self.snapshot.send_modify(|s| {
            s.state = if healthy_at_once {
                ComponentState::Running
            } else {
                ComponentState::Starting
            };
            s.version = version;
            s.sha256 = sha256;
            s.starts += 1;
            s.started_at = Some(Instant::now());
            s.error = None;
        });
        if let Some(pid) = child.id() {
            if let Err(e) = self.pidfile.record(pid) {
                tracing::warn!(component = %name, error = %e, "cannot record the component's pid; a leftover after a kill of the agent would not be found");
            }
        }
        tracing::info!(component = %name, version = %self.artifact.version, pid = ?child.id(), "component started");
        Ok(child)
    }

    /// Watches a running child until it exits or a command arrives.
    async fn supervise(&mut self, mut child: Child) -> Next {
        let started = Instant::now();
        let mut poll = tokio::time::interval(HEALTH_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let starting = self.snapshot.borrow().state == ComponentState::Starting;
            tokio::select! {
                status = child.wait() => {
                    self.record_exit(status, false);
                    if started.elapsed() >= BACKOFF_RESET_AFTER {
                        self.backoff = BACKOFF_INITIAL;
                    }
                    let delay = self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    self.snapshot.send_modify(|s| {
                        s.state = ComponentState::Backoff;
                        s.started_at = None;
                    });
                    tracing::warn!(component = %self.settings.name, delay_secs = delay.as_secs(), "component exited; restarting after backoff");
                    return tokio::select! {
                        () = tokio::time::sleep(delay) => Next::Start(None),
                        command = self.commands.recv() => self.obey(command, None).await,
                    };
                }
                command = self.commands.recv() => return self.obey(command, Some(child)).await,
                _ = poll.tick(), if starting => {
                    if self.healthy().await {
                        self.snapshot.send_modify(|s| {
                            if s.state == ComponentState::Starting {
                                s.state = ComponentState::Running;
                            }
                        });
                        self.mark_member();
                    }
                }
            }
        }
    }

    async fn healthy(&self) -> bool {
        let Some(url) = &self.settings.health_url else {
            return true;
        };
        matches!(self.http.get(url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK)
    }

    /// Carries out a command (stopping `child` first, if running).
    async fn obey(&mut self, command: Option<Request>, child: Option<Child>) -> Next {
        if let Some(child) = child {
            self.stop(child).await;
        }
        self.backoff = BACKOFF_INITIAL;
        match command {
            Some(Request::Restart(reply)) => Next::Start(Some(reply)),
            Some(Request::Switch(artifact, reply)) => {
                self.artifact = artifact;
                Next::Start(Some(reply))
            }
            // Only sent to a component awaiting join (checked by `Supervisor::join`).
            Some(Request::Join(flags, reply)) => {
                self.joined = Some(flags);
                Next::Start(Some(reply))
            }
            Some(Request::Hold {
                stopped,
                resume,
                reply,
            }) => self.hold(stopped, resume, reply).await,
            Some(Request::Stop(done)) => Next::Stop(Some(done)),
            // The supervisor is gone.
            None => Next::Stop(None),
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; records how it ended.
    async fn stop(&mut self, mut child: Child) {
        // `id()` is `None` once the child was reaped: its pid may then belong to
        // someone else, so it is only signalled while still ours.
        if let Some(pid) = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(component = %self.settings.name, "component ignored SIGTERM; killing it");
                let _ = child.start_kill();
                child.wait().await
            }
        };
        self.record_exit(status, true);
    }

    fn record_exit(&mut self, status: std::io::Result<ExitStatus>, requested: bool) {
        // Reaped: its pid is no longer this component's.
        self.pidfile.clear();
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let (code, signal) = match &status {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        tracing::info!(component = %self.settings.name, ?code, ?signal, requested, "component exited");
        self.snapshot.send_modify(|s| {
            s.last_exit = Some(LastExit {
                code,
                signal,
                at,
                requested,
            });
        });
    }
}

/// Whether `dir` holds an etcd member's data (its `member/wal` directory).
fn has_member_data(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("member").join("wal")).is_ok_and(|mut d| d.next().is_some())
}

/// Refuses an installed file whose SHA-256 is no longer the verified one.
async fn check_unchanged(name: &str, path: &Path, expected: &str) -> Result<(), SupervisorError> {
    let found = file_sha256(path).await?;
    if found != expected {
        return Err(SupervisorError::ArtifactChanged {
            component: name.to_string(),
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

/// The SHA-256 of the file at `path`, read off the async workers.
async fn file_sha256(path: &Path) -> Result<String, SupervisorError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || measure(&owned).map(|m| m.sha256))
        .await
        .map_err(|e| SupervisorError::io(path, std::io::Error::other(e)))?
        .map_err(|e| SupervisorError::io(path, e))
}

fn answer(reply: Option<Reply>, result: Result<(), SupervisorError>) {
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// Starts components from one thread that lives as long as the supervisor: the
/// parent-death signal (`setpriv --pdeathsig`) fires when the *thread* that forked
/// the component ends, and a runtime's worker threads may come and go.
#[derive(Clone)]
struct Spawner {
    jobs: std::sync::mpsc::Sender<(Command, oneshot::Sender<std::io::Result<Child>>)>,
}

impl Spawner {
    fn start() -> Spawner {
        let (jobs, rx) =
            std::sync::mpsc::channel::<(Command, oneshot::Sender<std::io::Result<Child>>)>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("component-spawner".into())
            .spawn(move || {
                // Ends when the supervisor and all its runners are gone.
                while let Ok((mut command, reply)) = rx.recv() {
                    let _entered = runtime.enter();
                    let _ = reply.send(spawn_retrying_busy(&mut command));
                }
            })
            .ok();
        Spawner { jobs }
    }

    async fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((command, tx))
            .map_err(|_| std::io::Error::other("the component spawner thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the component spawner thread is gone"))?
    }
}

/// Spawns `command`, retrying briefly on ETXTBSY: a process forked elsewhere in the
/// agent while the binary was being written can hold its write descriptor until it
/// execs.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    const ETXTBSY: i32 = 26;
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{has_member_data, install, measure, STREAM_CHUNK};
    use std::os::unix::fs::PermissionsExt;

    /// A release is copied in chunks, hashed as it is written, and installed only when
    /// the bytes written are the verified ones.
    #[test]
    fn install_streams_and_refuses_bytes_that_are_not_the_verified_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("artifact");
        // Several chunks and a partial one.
        let body: Vec<u8> = (0..(3 * STREAM_CHUNK + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&source, &body).expect("write");
        let measured = measure(&source).expect("measure");
        assert_eq!(measured.length, body.len() as u64);
        assert_eq!(measured.sha256, palisade_policy::tuf::sha256_hex(&body));

        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let to = bin.join("etcd-3.4.23-abc");
        assert_eq!(
            install(&source, &to, &measured.sha256).expect("install"),
            None
        );
        assert_eq!(std::fs::read(&to).expect("installed"), body);
        let mode = std::fs::metadata(&to).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o500);

        // The repository's file changed after it was verified: nothing is installed.
        std::fs::write(&source, b"something else").expect("rewrite");
        let other = bin.join("etcd-3.4.24-def");
        let found = install(&source, &other, &measured.sha256).expect("install");
        assert_eq!(
            found,
            Some(palisade_policy::tuf::sha256_hex(b"something else"))
        );
        assert!(!other.exists());
        let left: Vec<_> = std::fs::read_dir(&bin)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");

        // A file that may never end is not read at all.
        let endless = std::path::Path::new("/dev/zero");
        assert!(measure(endless).is_err());
        assert!(install(endless, &bin.join("zero"), &measured.sha256).is_err());
        assert!(!bin.join("zero").exists());
    }

    #[test]
    fn only_an_etcd_member_directory_counts_as_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("etcd");
        assert!(!has_member_data(&data), "a missing directory holds no data");
        std::fs::create_dir_all(data.join("lost+found")).expect("mkdir");
        std::fs::write(data.join("stray"), b"x").expect("write");
        assert!(!has_member_data(&data), "a fresh volume holds no member");
        std::fs::create_dir_all(data.join("member/wal")).expect("mkdir");
        assert!(
            !has_member_data(&data),
            "an empty WAL directory holds no member"
        );
        std::fs::write(
            data.join("member/wal/0000000000000000-0000000000000000.wal"),
            b"w",
        )
        .expect("write");
        assert!(has_member_data(&data));
    }
}
