//! etcd actions, through the `etcd-client` crate against this instance's member.
//!
//! None of them reads a key's value: status, membership, alarms, health (a
//! linearizable read of the key `health`, as `etcdctl endpoint health` does, whose
//! value is never looked at) and defragmentation. Outputs are the typed structs
//! below; member ids are hex as etcdctl prints them.

use crate::config::EtcdSettings;
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, ConnectOptions};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const STATUS_SCHEMA: &str = "palisade.dev/output/etcd-status/v1";
pub const MEMBERS_SCHEMA: &str = "palisade.dev/output/etcd-members/v1";
pub const ALARMS_SCHEMA: &str = "palisade.dev/output/etcd-alarms/v1";
pub const HEALTH_SCHEMA: &str = "palisade.dev/output/etcd-health/v1";
pub const DEFRAGMENT_SCHEMA: &str = "palisade.dev/output/etcd-defragment/v1";

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Connect { endpoints: String, reason: String },
    #[error("etcd {op} failed: {reason}")]
    Call { op: &'static str, reason: String },
    #[error("etcd TLS files: {0}")]
    Tls(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOutput {
    pub endpoint: String,
    pub member_id: String,
    pub version: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub leader: String,
    pub is_leader: bool,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersOutput {
    pub cluster_id: String,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub member_id: String,
    /// `NOSPACE` or `CORRUPT`.
    pub alarm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmsOutput {
    /// Alarms active now (after disarming, for `etcd.alarm-disarm`).
    pub alarms: Vec<Alarm>,
    /// What `etcd.alarm-disarm` deactivated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disarmed: Option<Vec<Alarm>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthOutput {
    pub endpoint: String,
    pub healthy: bool,
    pub took_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragmentOutput {
    pub endpoint: String,
    pub member_id: String,
    pub db_size_before: i64,
    pub db_size_after: i64,
    pub took_ms: u64,
}

/// The instance's etcd member.
#[derive(Clone)]
pub struct Etcd {
    endpoints: Vec<String>,
    options: ConnectOptions,
    /// The same without a per-call timeout: a snapshot streams for as long as the
    /// database takes to send.
    stream_options: ConnectOptions,
    /// One connection kept for the calls (they share it, as HTTP/2 streams), dropped
    /// when a call on it fails so that the next one connects again.
    cached: Arc<Mutex<Option<Client>>>,
}

/// A snapshot being streamed from this instance's member.
pub struct SnapshotSource {
    pub member_id: u64,
    pub revision: i64,
    /// The snapshot's bytes as etcd sends them (database, then its SHA-256).
    pub stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
}

/// An etcd alarm an action may disarm (`etcd.alarm-disarm`'s `alarm` parameter).
/// Only NOSPACE: there is deliberately no way to name CORRUPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisarmableAlarm {
    Nospace,
}

impl DisarmableAlarm {
    /// The validated parameter's value; absent means NOSPACE, the only one.
    pub fn parse(value: Option<&str>) -> Result<Self, UnknownAlarm> {
        match value {
            None | Some("NOSPACE") => Ok(Self::Nospace),
            Some(other) => Err(UnknownAlarm(other.chars().take(32).collect())),
        }
    }

    fn alarm_type(self) -> AlarmType {
        match self {
            Self::Nospace => AlarmType::Nospace,
        }
    }
}

/// An `alarm` value no action may disarm.
#[derive(Debug, thiserror::Error)]
#[error("alarm {0:?} cannot be disarmed by an action: only NOSPACE can (a CORRUPT member is replaced, never re-opened)")]
pub struct UnknownAlarm(String);

fn id_hex(id: u64) -> String {
    format!("{id:x}")
}

fn alarm_name(t: AlarmType) -> String {
    match t {
        AlarmType::Nospace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
        AlarmType::None => "NONE",
    }
    .to_string()
}

fn call(op: &'static str) -> impl FnOnce(etcd_client::Error) -> EtcdError {
    move |e| EtcdError::Call {
        op,
        reason: e.to_string(),
    }
}

impl Etcd {
    pub fn new(settings: &EtcdSettings) -> Result<Self, EtcdError> {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        let mut stream_options = options.clone();
        options = options.with_timeout(Duration::from_secs(30));
        if let Some(tls) = &settings.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| EtcdError::Tls(format!("{}: {e}", p.display())))
            };
            let ca = etcd_client::Certificate::from_pem(read(&tls.ca)?);
            let identity = etcd_client::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(ca)
                .identity(identity);
            options = options.with_tls(tls.clone());
            stream_options = stream_options.with_tls(tls);
        }
        Ok(Self {
            endpoints: settings.endpoints.clone(),
            options,
            stream_options,
            cached: Arc::default(),
        })
    }

    /// The first endpoint: this instance's member.
    pub fn endpoint(&self) -> &str {
        self.endpoints.first().map_or("", String::as_str)
    }

    async fn client(&self) -> Result<Client, EtcdError> {
        if let Some(c) = self.cached().clone() {
            return Ok(c);
        }
        // Only this instance's member: a cluster-wide client could be balanced to
        // another member, and the status would describe the wrong one.
        let c = Client::connect([self.endpoint()], Some(self.options.clone()))
            .await
            .map_err(|e| EtcdError::Connect {
                endpoints: self.endpoint().to_string(),
                reason: e.to_string(),
            })?;
        *self.cached() = Some(c.clone());
        Ok(c)
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Client>> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A failed call on the kept connection: it is dropped (the member may have
    /// restarted). A snapshot streams on a connection of its own, whose failures leave
    /// the kept one alone.
    fn call(&self, op: &'static str) -> impl FnOnce(etcd_client::Error) -> EtcdError + '_ {
        move |e| {
            *self.cached() = None;
            call(op)(e)
        }
    }

    pub async fn status(&self) -> Result<StatusOutput, EtcdError> {
        let mut c = self.client().await?;
        let s = c.status().await.map_err(self.call("status"))?;
        let member = s.header().map_or(0, |h| h.member_id());
        Ok(StatusOutput {
            endpoint: self.endpoint().to_string(),
            member_id: id_hex(member),
            version: s.version().chars().take(64).collect(),
            db_size: s.db_size(),
            db_size_in_use: s.raft_used_db_size(),
            leader: id_hex(s.leader()),
            is_leader: member != 0 && s.leader() == member,
            is_learner: s.is_learner(),
            raft_term: s.raft_term(),
            raft_index: s.raft_index(),
            raft_applied_index: s.raft_applied_index(),
            errors: s
                .errors()
                .iter()
                .take(16)
                .map(|e| e.chars().take(256).collect())
                .collect(),
        })
    }

    pub async fn members(&self) -> Result<MembersOutput, EtcdError> {
        let mut c = self.client().await?;
        let r = c.member_list().await.map_err(self.call("member list"))?;
        let cluster_id = r.header().map_or(0, |h| h.cluster_id());
        Ok(MembersOutput {
            cluster_id: id_hex(cluster_id),
            members: r
                .members()
                .iter()
                .take(64)
                .map(|m| Member {
                    id: id_hex(m.id()),
                    name: m.name().chars().take(128).collect(),
                    peer_urls: m.peer_urls().iter().take(8).cloned().collect(),
                    client_urls: m.client_urls().iter().take(8).cloned().collect(),
                    is_learner: m.is_learner(),
                })
                .collect(),
        })
    }

    async fn list_alarms(&self, c: &mut Client) -> Result<Vec<(u64, AlarmType)>, EtcdError> {
        let r = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .map_err(self.call("alarm list"))?;
        Ok(r.alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect())
    }

    fn typed(list: &[(u64, AlarmType)]) -> Vec<Alarm> {
        list.iter()
            .map(|(m, t)| Alarm {
                member_id: id_hex(*m),
                alarm: alarm_name(*t),
            })
            .collect()
    }

    pub async fn alarms(&self) -> Result<AlarmsOutput, EtcdError> {
        let mut c = self.client().await?;
        let list = self.list_alarms(&mut c).await?;
        Ok(AlarmsOutput {
            alarms: Self::typed(&list),
            disarmed: None,
        })
    }

    /// Deactivates the active alarms of kind `which` only, member by member, and
    /// reports every alarm still active: a CORRUPT alarm is never touched (a member
    /// etcd found diverged must be replaced, not re-opened to writes).
    pub async fn alarm_disarm(&self, which: DisarmableAlarm) -> Result<AlarmsOutput, EtcdError> {
        let mut c = self.client().await?;
        let before = self.list_alarms(&mut c).await?;
        let chosen: Vec<(u64, AlarmType)> = before
            .into_iter()
            .filter(|(_, t)| *t == which.alarm_type())
            .collect();
        for (member, alarm) in &chosen {
            let mut options = AlarmOptions::new();
            options.with_member(*member);
            c.alarm(AlarmAction::Deactivate, *alarm, Some(options))
                .await
                .map_err(self.call("alarm disarm"))?;
        }
        let after = self.list_alarms(&mut c).await?;
        Ok(AlarmsOutput {
            alarms: Self::typed(&after),
            disarmed: Some(Self::typed(&chosen)),
        })
    }

    /// A linearizable read through this member (the value is never looked at).
    pub async fn health(&self) -> Result<HealthOutput, EtcdError> {
        let start = Instant::now();
        let result = async {
            let mut c = self.client().await?;
            c.get("health", None)
                .await
                .map_err(self.call("health read"))?;
            Ok::<_, EtcdError>(())
        }
        .await;
        let took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(HealthOutput {
            endpoint: self.endpoint().to_string(),
            healthy: result.is_ok(),
            took_ms,
            error: result
                .err()
                .map(|e| e.to_string().chars().take(256).collect()),
        })
    }

    pub async fn defragment(&self) -> Result<DefragmentOutput, EtcdError> {
        let mut c = self.client().await?;
        let before = c.status().await.map_err(self.call("status"))?;
        let start = Instant::now();
        c.defragment().await.map_err(self.call("defragment"))?;
        let took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let after = c.status().await.map_err(self.call("status"))?;
        Ok(DefragmentOutput {
            endpoint: self.endpoint().to_string(),
            member_id: id_hex(after.header().map_or(0, |h| h.member_id())),
            db_size_before: before.db_size(),
            db_size_after: after.db_size(),
            took_ms,
        })
    }

    /// Starts `Maintenance.Snapshot` on this member. The member id and revision come
    /// from the first message's header (etcd fills it), or from a status call.
    pub async fn snapshot(&self) -> Result<SnapshotSource, EtcdError> {
        let mut c = self.client().await?;
        let status = c.status().await.map_err(self.call("status"))?;
        let mut s = Client::connect([self.endpoint()], Some(self.stream_options.clone()))
            .await
            .map_err(|e| EtcdError::Connect {
                endpoints: self.endpoint().to_string(),
                reason: e.to_string(),
            })?
            .snapshot()
            .await
            .map_err(call("snapshot"))?;
        let first = s.message().await.map_err(call("snapshot"))?;
        let (mut member_id, mut revision) = status
            .header()
            .map_or((0, 0), |h| (h.member_id(), h.revision()));
        if let Some(h) = first.as_ref().and_then(|m| m.header()) {
            if h.member_id() != 0 {
                member_id = h.member_id();
            }
            if h.revision() != 0 {
                revision = h.revision();
            }
        }
        let first = first.map(|m| bytes::Bytes::copy_from_slice(m.blob()));
        let rest = futures::stream::unfold(s, |mut s| async move {
            match s.message().await {
                Ok(Some(m)) => Some((Ok(bytes::Bytes::copy_from_slice(m.blob())), s)),
                Ok(None) => None,
                Err(e) => Some((Err(format!("etcd snapshot: {e}")), s)),
            }
        });
        // After an error the stream is not polled again: the consumer stops at the
        // first `Err`.
        let stream = futures::stream::iter(first.map(Ok)).chain(rest);
        Ok(SnapshotSource {
            member_id,
            revision,
            stream: Box::pin(stream),
        })
    }
}
