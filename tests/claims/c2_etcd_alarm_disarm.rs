//! Claim C2 (no modification of customer data): `etcd.alarm-disarm` disarms NOSPACE
//! only. A CORRUPT alarm (a member found diverged) is never cleared by an action,
//! because clearing it re-opens the diverged member to writes; recovering from it is
//! replacing the member. Checked against a real etcd holding both alarms, and at the
//! validator, which refuses `alarm=CORRUPT` before anything is dispatched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client};
use palisade_agent::config::EtcdSettings;
use palisade_agent::etcd::{DisarmableAlarm, Etcd};
use palisade_policy::Policy;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_POLICY: &str = include_str!("../../deploy/policy/default.yaml");

/// A single-member etcd in a temporary directory, killed on drop.
struct LocalEtcd {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl LocalEtcd {
    fn start() -> Self {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`etcd` is not installed: apt-get install etcd-server"
        );
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let data = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = Command::new("etcd")
            .args([
                "--name",
                "alarms",
                "--data-dir",
                &data.path().join("member").display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("alarms={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        Self {
            child,
            endpoint: client,
            _data: data,
        }
    }

    async fn client(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect([self.endpoint.as_str()], None).await {
                if c.status().await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn active(c: &mut Client) -> Vec<AlarmType> {
    let mut kinds: Vec<AlarmType> = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap()
        .alarms()
        .iter()
        .map(|a| a.alarm())
        .collect();
    kinds.sort_by_key(|k| *k as i32);
    kinds
}

#[tokio::test]
async fn alarm_disarm_clears_nospace_and_leaves_corrupt() {
    let etcd = LocalEtcd::start();
    let mut c = etcd.client().await;
    let member = c.status().await.unwrap().header().unwrap().member_id();
    for kind in [AlarmType::Nospace, AlarmType::Corrupt] {
        let mut o = AlarmOptions::new();
        o.with_member(member);
        c.alarm(AlarmAction::Activate, kind, Some(o)).await.unwrap();
    }
    assert_eq!(
        active(&mut c).await,
        [AlarmType::Nospace, AlarmType::Corrupt],
        "the test could not raise both alarms"
    );

    let agent = Etcd::new(&EtcdSettings {
        endpoints: vec![etcd.endpoint.clone()],
        tls: None,
        metrics_url: None,
        member_remove_after_secs: 300,
        member: None,
        peers: vec![],
    })
    .unwrap();
    let out = agent
        .alarm_disarm(DisarmableAlarm::parse(None).unwrap())
        .await
        .unwrap();

    // CORRUPT is still raised, in etcd and in what the operator is shown.
    assert_eq!(active(&mut c).await, [AlarmType::Corrupt]);
    let shown: Vec<&str> = out.alarms.iter().map(|a| a.alarm.as_str()).collect();
    assert_eq!(shown, ["CORRUPT"]);
    let disarmed: Vec<&str> = out
        .disarmed
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| a.alarm.as_str())
        .collect();
    assert_eq!(disarmed, ["NOSPACE"]);

    // Disarming again with only CORRUPT raised changes nothing.
    let again = agent.alarm_disarm(DisarmableAlarm::Nospace).await.unwrap();
    assert_eq!(again.disarmed.as_deref().map(<[_]>::len), Some(0));
    assert_eq!(active(&mut c).await, [AlarmType::Corrupt]);
}

#[test]
fn corrupt_cannot_be_named_in_an_alarm_disarm_request() {
    let policy = Policy::parse_yaml(DEFAULT_POLICY).unwrap();
    for value in ["CORRUPT", "corrupt", "NONE", "NOSPACE,CORRUPT", ""] {
        let err = policy
            .validate_args("etcd.alarm-disarm", &[("alarm".into(), value.into())])
            .expect_err(value);
        assert_eq!(err.param(), Some("alarm"), "{value:?}: {err}");
    }
    let ok = policy
        .validate_args("etcd.alarm-disarm", &[("alarm".into(), "NOSPACE".into())])
        .unwrap();
    assert_eq!(ok.str_param("alarm"), Some("NOSPACE"));
    // Absent means NOSPACE, the only alarm an action may disarm.
    let bare = policy.validate_args("etcd.alarm-disarm", &[]).unwrap();
    assert_eq!(
        DisarmableAlarm::parse(bare.str_param("alarm")).unwrap(),
        DisarmableAlarm::Nospace
    );
    assert!(DisarmableAlarm::parse(Some("CORRUPT")).is_err());
    // No policy can widen the handler to CORRUPT: the linter refuses it.
    let widened = DEFAULT_POLICY.replace("values: [NOSPACE]", "values: [NOSPACE, CORRUPT]");
    assert_ne!(widened, DEFAULT_POLICY);
    assert!(Policy::parse_yaml(&widened).is_err());
}
