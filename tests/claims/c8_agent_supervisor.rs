//! Claim C8 at the agent: a control-plane component runs only from a release verified
//! in the TUF repository (pipeline signature, PASSED test attestation, M-of-N
//! approvals), its binary is checked again right before every exec, and it is
//! restarted or upgraded only through the supervisor's API. These tests run the real
//! etcd (`/usr/bin/etcd`, Debian's etcd-server) under the supervisor.

#[path = "../agent/support/mod.rs"]
mod support;

use palisade_agent::supervisor::{
    ComponentState, ComponentStatus, Supervisor, SupervisorError, RESTART_SCHEMA, STATUS_SCHEMA,
    UPGRADE_SCHEMA,
};
use palisade_policy::tuf::sha256_hex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{environment_of, processes_under, EtcdPorts, ReleaseRepo};

/// The release the agent is configured with: the real etcd, published as approved.
const VERSION: &str = "3.4.23";
/// The same bytes, published again as another approved release.
const NEXT: &str = "3.4.99-test";
const ENV_MARKER: &str = "PALISADE_TEST_MARKER";
const ENV_VALUE: &str = "env-value-never-reported";

struct Agent {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    releases: ReleaseRepo,
    etcd: EtcdPorts,
    sha256: String,
}

impl Agent {
    /// A repository with etcd `VERSION` approved and published.
    fn new() -> Self {
        let bytes = support::etcd_binary();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let releases = ReleaseRepo::new(&dir.join("trust"));
        releases.publish("etcd", VERSION, &bytes);
        Self {
            _tmp: tmp,
            dir,
            releases,
            etcd: EtcdPorts::new(),
            sha256: sha256_hex(&bytes),
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.join("agent").join("work")
    }

    fn bin_dir(&self) -> PathBuf {
        self.work_dir().join("bin")
    }

    async fn start(&self, version: &str) -> Result<Arc<Supervisor>, SupervisorError> {
        let settings = self.etcd.settings(
            version,
            &self.dir.join("etcd-data"),
            &[(ENV_MARKER, ENV_VALUE)],
        );
        Supervisor::start(
            vec![settings],
            self.releases.trust_files(&self.dir.join("agent")),
            self.work_dir(),
        )
        .await
    }

    /// The one etcd process running from the agent's bin directory.
    fn etcd_process(&self) -> (i32, PathBuf) {
        let found = processes_under(&self.bin_dir());
        assert_eq!(found.len(), 1, "expected exactly one etcd, found {found:?}");
        found.into_iter().next().expect("one process")
    }
}

async fn etcd_status(sup: &Supervisor) -> ComponentStatus {
    let out = sup.status(Some("etcd")).await.expect("status");
    assert_eq!(out.schema, STATUS_SCHEMA);
    out.components.into_iter().next().expect("etcd status")
}

/// Polls the status until `done` holds, for at most `within`.
async fn wait_until(
    sup: &Supervisor,
    within: Duration,
    what: &str,
    done: impl Fn(&ComponentStatus) -> bool,
) -> ComponentStatus {
    let deadline = Instant::now() + within;
    loop {
        let s = etcd_status(sup).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_running(sup: &Supervisor) -> ComponentStatus {
    wait_until(sup, Duration::from_secs(15), "etcd running", |s| {
        s.state == ComponentState::Running
    })
    .await
}

async fn etcd_answers(url: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or(""),
    )
    .await
    else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body.starts_with("HTTP/1.0 200") && body.contains("\"health\":\"true\"")
}

/// A stand-in "binary" that would leave a mark if it ever ran.
fn write_impostor(path: &Path, marker: &Path) {
    let tmp = path.with_extension("impostor");
    std::fs::write(
        &tmp,
        format!("#!/bin/sh\ntouch {}\nexec sleep 30\n", marker.display()),
    )
    .expect("write impostor");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // The installed binary is 0500, but its directory belongs to the agent's user:
    // replace it the way an intruder with that user's rights would.
    std::fs::rename(&tmp, path).expect("swap binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_only_a_verified_release() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    let status = wait_running(&sup).await;
    assert_eq!(status.version, VERSION);
    assert_eq!(status.artifact_sha256, agent.sha256);
    assert!(etcd_answers(&agent.etcd.health_url()).await);

    // It runs from the verified copy in the work directory, mode 0500, named by
    // version and digest prefix; with only the configured environment.
    let (pid, exe) = agent.etcd_process();
    let expected = agent
        .bin_dir()
        .join(format!("etcd-{VERSION}-{}", &agent.sha256[..16]));
    assert_eq!(exe, expected);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&expected)
        .expect("bin")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o500);
    assert_eq!(
        environment_of(pid),
        vec![format!("{ENV_MARKER}={ENV_VALUE}")]
    );
    // Its output goes to the log file only.
    let log = std::fs::metadata(agent.work_dir().join("logs").join("etcd.log")).expect("log");
    assert!(log.len() > 0);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_version_that_is_not_an_approved_release() {
    let agent = Agent::new();
    // The bytes sit where a release would, but nothing signed, attested or approved them.
    agent
        .releases
        .drop_unsigned("etcd", "3.5.0", &support::etcd_binary());
    match agent.start("3.5.0").await {
        Err(SupervisorError::NotApproved {
            component,
            version,
            reason,
        }) => {
            assert_eq!((component.as_str(), version.as_str()), ("etcd", "3.5.0"));
            assert!(reason.contains("no release etcd 3.5.0"), "{reason}");
        }
        other => panic!("expected NotApproved, got {other:?}"),
    }
    assert!(processes_under(&agent.bin_dir()).is_empty());
    assert!(!etcd_answers(&agent.etcd.health_url()).await);
    let installed = std::fs::read_dir(agent.bin_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(installed, 0, "nothing unverified is installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_repository_whose_artifact_was_altered() {
    let agent = Agent::new();
    let mut altered = support::etcd_binary();
    altered.extend_from_slice(b"\npatched");
    std::fs::write(agent.releases.target_file("etcd", VERSION), &altered).expect("alter");
    let err = agent
        .start(VERSION)
        .await
        .expect_err("altered artifact must be refused");
    let text = err.to_string();
    assert!(
        matches!(err, SupervisorError::NotApproved { .. }),
        "{err:?}"
    );
    assert!(text.contains("artifact digest mismatch"), "{text}");
    assert!(
        text.contains(&agent.sha256),
        "names the approved digest: {text}"
    );
    assert!(processes_under(&agent.bin_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_closed_when_any_component_does_not_verify() {
    let agent = Agent::new();
    let good = agent
        .etcd
        .settings(VERSION, &agent.dir.join("etcd-data"), &[]);
    // A second component whose release was never approved: nothing starts, not even etcd.
    let mut unapproved = good.clone();
    unapproved.name = "kube-apiserver".into();
    unapproved.version = "1.31.0".into();
    let result = Supervisor::start(
        vec![good, unapproved],
        agent.releases.trust_files(&agent.dir.join("agent")),
        agent.work_dir(),
    )
    .await;
    match result {
        Err(SupervisorError::NotApproved { component, .. }) => {
            assert_eq!(component, "kube-apiserver")
        }
        other => panic!("expected NotApproved, got {other:?}"),
    }
    assert!(processes_under(&agent.bin_dir()).is_empty());
    assert!(!etcd_answers(&agent.etcd.health_url()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_state_version_digest_and_nothing_of_args_env_or_output() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    let s = wait_running(&sup).await;
    assert_eq!(s.name, "etcd");
    assert_eq!(s.version, VERSION);
    assert_eq!(s.artifact_sha256, agent.sha256);
    assert_eq!(s.restarts, 0);
    assert_eq!(s.last_exit, None);
    assert!(s.uptime_secs.is_some());
    assert_eq!(s.error, None);

    let all = sup.status(None).await.expect("status of all");
    assert_eq!(all.components.len(), 1);
    let json = serde_json::to_string(&all).expect("json");
    for secret in [
        ENV_VALUE,
        ENV_MARKER,
        "--data-dir",
        "etcd-data",
        "palisade-test",
        "127.0.0.1",
    ] {
        assert!(!json.contains(secret), "status leaks {secret:?}: {json}");
    }
    assert!(json.contains("\"state\":\"running\""), "{json}");

    match sup.status(Some("kube-scheduler")).await {
        Err(SupervisorError::UnknownComponent {
            component,
            configured,
        }) => {
            assert_eq!(component, "kube-scheduler");
            assert_eq!(configured, "etcd");
        }
        other => panic!("expected UnknownComponent, got {other:?}"),
    }
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replaces_the_process_and_waits_until_healthy() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (before, _) = agent.etcd_process();

    let out = sup.restart("etcd", true).await.expect("restart");
    assert_eq!(out.schema, RESTART_SCHEMA);
    assert_eq!(out.version, VERSION);
    assert_eq!(out.artifact_sha256, agent.sha256);
    assert_eq!(out.restarts, 1);
    assert_eq!(out.healthy, Some(true));
    assert!(etcd_answers(&agent.etcd.health_url()).await);

    let (after, _) = agent.etcd_process();
    assert_ne!(before, after);
    let s = etcd_status(&sup).await;
    assert_eq!(s.state, ComponentState::Running);
    let exit = s.last_exit.expect("last exit");
    assert!(exit.requested);
    // etcd ends on SIGTERM by re-raising it.
    assert!(exit.signal == Some(15) || exit.code == Some(0), "{exit:?}");

    assert!(matches!(
        sup.restart("kube-apiserver", false).await,
        Err(SupervisorError::UnknownComponent { .. })
    ));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_component_is_restarted_with_backoff_and_its_signal_recorded() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;

    let mut previous_pid = agent.etcd_process().0;
    let mut previous_exit = None;
    // Backoff doubles: about 1 s after the first crash, 2 s after the second.
    for (round, backoff) in [(1u64, 1.0f64), (2, 2.0)] {
        let killed_at = Instant::now();
        let pid = rustix::process::Pid::from_raw(previous_pid).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");

        let s = wait_until(&sup, Duration::from_secs(5), "exit recorded", |s| {
            s.last_exit != previous_exit
        })
        .await;
        let exit = s.last_exit.clone().expect("last exit");
        assert_eq!(
            (exit.signal, exit.code, exit.requested),
            (Some(9), None, false)
        );
        assert_eq!(s.restarts, round - 1);
        assert_eq!(s.state, ComponentState::Backoff, "{s:?}");
        assert_eq!(s.uptime_secs, None);
        previous_exit = Some(exit);

        let s = wait_until(&sup, Duration::from_secs(15), "restarted", |s| {
            s.restarts == round && s.state == ComponentState::Running
        })
        .await;
        let waited = killed_at.elapsed().as_secs_f64();
        assert!(
            waited >= backoff * 0.9,
            "restarted after {waited:.2} s, backoff is {backoff} s"
        );
        assert_eq!(s.version, VERSION);
        let (pid, _) = agent.etcd_process();
        assert_ne!(pid, previous_pid);
        previous_pid = pid;
    }
    assert!(etcd_answers(&agent.etcd.health_url()).await);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_binary_is_refused_right_before_a_restart() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (_, bin) = agent.etcd_process();
    let marker = agent.dir.join("impostor-ran");
    write_impostor(&bin, &marker);

    match sup.restart("etcd", true).await {
        Err(SupervisorError::ArtifactChanged {
            component,
            path,
            expected,
            found,
        }) => {
            assert_eq!(component, "etcd");
            assert_eq!(path, bin);
            assert_eq!(expected, agent.sha256);
            assert_eq!(found, sha256_hex(&std::fs::read(&bin).expect("read")));
        }
        other => panic!("expected ArtifactChanged, got {other:?}"),
    }
    let s = etcd_status(&sup).await;
    assert_eq!(s.state, ComponentState::Failed);
    assert!(s
        .error
        .as_deref()
        .unwrap_or("")
        .contains("changed after it was verified"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the swapped binary ran");
    assert!(processes_under(&agent.bin_dir()).is_empty());
    assert!(!etcd_answers(&agent.etcd.health_url()).await);

    // Re-installing the approved release (upgrade to the same version) recovers it.
    let out = sup.upgrade("etcd", VERSION).await.expect("reinstall");
    assert_eq!(out.healthy, Some(true));
    assert_eq!(
        sha256_hex(&std::fs::read(&bin).expect("read")),
        agent.sha256
    );
    assert!(!marker.exists());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_binary_is_refused_right_before_a_crash_restart() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (pid, bin) = agent.etcd_process();
    let marker = agent.dir.join("impostor-ran");
    write_impostor(&bin, &marker);
    let pid = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");

    let s = wait_until(&sup, Duration::from_secs(10), "failed", |s| {
        s.state == ComponentState::Failed
    })
    .await;
    assert_eq!(s.restarts, 0);
    assert_eq!(s.last_exit.and_then(|e| e.signal), Some(9));
    assert!(s.error.as_deref().unwrap_or("").contains(&agent.sha256));
    // Not retried: it stays failed, and the impostor never ran.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(etcd_status(&sup).await.state, ComponentState::Failed);
    assert!(!marker.exists(), "the swapped binary ran");
    assert!(processes_under(&agent.bin_dir()).is_empty());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_an_approved_version_switches_and_survives_an_agent_restart() {
    let agent = Agent::new();
    agent
        .releases
        .publish("etcd", NEXT, &support::etcd_binary());
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (old_pid, _) = agent.etcd_process();

    let out = sup.upgrade("etcd", NEXT).await.expect("upgrade");
    assert_eq!(out.schema, UPGRADE_SCHEMA);
    assert_eq!(out.component, "etcd");
    assert_eq!(
        (out.from_version.as_str(), out.to_version.as_str()),
        (VERSION, NEXT)
    );
    assert_eq!(out.from_sha256, agent.sha256);
    assert_eq!(out.to_sha256, agent.sha256);
    assert_eq!(out.healthy, Some(true));

    let (new_pid, exe) = agent.etcd_process();
    assert_ne!(old_pid, new_pid);
    assert_eq!(
        exe,
        agent
            .bin_dir()
            .join(format!("etcd-{NEXT}-{}", &agent.sha256[..16]))
    );
    let s = etcd_status(&sup).await;
    assert_eq!(
        (s.state, s.version.as_str()),
        (ComponentState::Running, NEXT)
    );

    let versions: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.work_dir().join("versions.json")).expect("versions.json"),
    )
    .expect("json");
    assert_eq!(versions, serde_json::json!({ "etcd": NEXT }));

    // The agent restarts with its configuration still naming the old version: the
    // upgraded one comes back (verified again).
    sup.shutdown().await;
    assert!(processes_under(&agent.bin_dir()).is_empty());
    let sup = agent.start(VERSION).await.expect("start again");
    let s = wait_running(&sup).await;
    assert_eq!(s.version, NEXT);
    assert!(agent
        .etcd_process()
        .1
        .ends_with(format!("etcd-{NEXT}-{}", &agent.sha256[..16])));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_an_unapproved_version_is_refused_and_the_old_one_keeps_running() {
    let agent = Agent::new();
    agent
        .releases
        .drop_unsigned("etcd", "3.5.0", &support::etcd_binary());
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (pid, _) = agent.etcd_process();

    for version in ["3.5.0", "../../etc", "3.6.0"] {
        match sup.upgrade("etcd", version).await {
            Err(SupervisorError::NotApproved { version: v, .. }) => assert_eq!(v, version),
            other => panic!("expected NotApproved for {version}, got {other:?}"),
        }
    }
    assert_eq!(
        agent.etcd_process().0,
        pid,
        "the running etcd was not touched"
    );
    let s = etcd_status(&sup).await;
    assert_eq!(
        (s.state, s.version.as_str(), s.restarts),
        (ComponentState::Running, VERSION, 0)
    );
    assert!(etcd_answers(&agent.etcd.health_url()).await);
    assert!(!agent.work_dir().join("versions.json").exists());
    sup.shutdown().await;
}

/// An older approved release is not a licence to downgrade: going below the running
/// version needs a release approved (M-of-N, like any release) as a rollback from
/// exactly that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_is_refused_unless_approved_as_a_rollback_from_the_running_version() {
    const OLDER: &str = "3.4.20";
    let agent = Agent::new();
    let bytes = support::etcd_binary();
    agent.releases.publish("etcd", OLDER, &bytes);
    agent
        .releases
        .publish_rollback("etcd", "3.4.19", &bytes, "3.4.22");
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (pid, _) = agent.etcd_process();

    // An approved older release, and one approved as a rollback from another version.
    for version in [OLDER, "3.4.19"] {
        match sup.upgrade("etcd", version).await {
            Err(SupervisorError::Downgrade {
                running, requested, ..
            }) => assert_eq!((running.as_str(), requested.as_str()), (VERSION, version)),
            other => panic!("expected Downgrade for {version}, got {other:?}"),
        }
    }
    assert_eq!(
        agent.etcd_process().0,
        pid,
        "the running etcd was not touched"
    );
    let s = etcd_status(&sup).await;
    assert_eq!(
        (s.state, s.version.as_str(), s.restarts),
        (ComponentState::Running, VERSION, 0)
    );
    assert!(!agent.work_dir().join("versions.json").exists());

    // The same older version approved as a rollback from the running one: allowed.
    agent
        .releases
        .publish_rollback("etcd", OLDER, &bytes, VERSION);
    let out = sup.upgrade("etcd", OLDER).await.expect("approved rollback");
    assert_eq!(
        (out.from_version.as_str(), out.to_version.as_str()),
        (VERSION, OLDER)
    );
    let s = wait_running(&sup).await;
    assert_eq!(s.version, OLDER);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_child_process() {
    let agent = Agent::new();
    let sup = agent.start(VERSION).await.expect("start");
    wait_running(&sup).await;
    let (pid, _) = agent.etcd_process();

    sup.shutdown().await;
    assert!(processes_under(&agent.bin_dir()).is_empty());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd (pid {pid}) still exists"
    );
    let s = etcd_status(&sup).await;
    assert_eq!(s.state, ComponentState::Stopped);
    assert!(s.last_exit.expect("last exit").requested);
    assert!(matches!(
        sup.restart("etcd", false).await,
        Err(SupervisorError::ShutDown { .. })
    ));
}
