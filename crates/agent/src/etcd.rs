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
pub const COMPACT_SCHEMA: &str = "palisade.dev/output/etcd-compact/v1";
pub const QUOTA_SCHEMA: &str = "palisade.dev/output/etcd-quota/v1";
pub const MEMBER_REMOVE_SCHEMA: &str = "palisade.dev/output/etcd-member-remove/v1";
pub const MEMBER_JOIN_SCHEMA: &str = "palisade.dev/output/etcd-member-join/v1";

/// How long a probe of another member may take before it counts as unhealthy
/// (generous: a busy machine must not make a healthy member look down).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the agent looks at every member's health (for `etcd.member-remove`).
pub const TRACK_EVERY: Duration = Duration::from_secs(3);
/// How long `etcd.member-join` waits for the new learner to catch up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Connect { endpoints: String, reason: String },
    #[error("etcd {op} failed: {reason}")]
    Call { op: &'static str, reason: String },
    #[error("etcd TLS files: {0}")]
    Tls(String),
    /// A precondition of the action does not hold; nothing was changed.
    #[error("{0}")]
    Refused(String),
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactOutput {
    /// The store's revision when the action ran.
    pub revision: i64,
    /// Every revision before this one is gone.
    pub compacted_to: i64,
    pub retained_revisions: i64,
    pub took_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaOutput {
    pub member_id: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    /// `--quota-backend-bytes`, from the member's metrics.
    pub quota_bytes: i64,
    /// `db_size` as a percentage of the quota (NOSPACE is raised at 100).
    pub used_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoveOutput {
    pub removed_id: String,
    pub removed_name: String,
    /// How long the agent had seen it unhealthy.
    pub unhealthy_secs: u64,
    pub voting_members_before: u32,
    pub voting_members_after: u32,
    pub healthy_voting_members_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJoinOutput {
    pub member_id: String,
    pub name: String,
    /// Whether an earlier, interrupted join had already added the learner.
    pub resumed: bool,
    pub voting_members: u32,
    pub took_ms: u64,
}

/// Since when each member has been seen unhealthy, without a break (member id →
/// first failed probe). Members seen healthy are absent.
#[derive(Debug, Default)]
struct MemberHealth {
    unhealthy_since: std::collections::HashMap<u64, Instant>,
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
    metrics_url: Option<String>,
    remove_after: Duration,
    member: Option<crate::config::MemberSettings>,
    peers: Vec<String>,
    health: Arc<Mutex<MemberHealth>>,
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
        let metrics_url = settings.metrics_url.clone().or_else(|| {
            let first = settings.endpoints.first()?;
            first
                .starts_with("http://")
                .then(|| format!("{}/metrics", first.trim_end_matches('/')))
        });
        Ok(Self {
            endpoints: settings.endpoints.clone(),
            options,
            stream_options,
            cached: Arc::default(),
            metrics_url,
            remove_after: Duration::from_secs(settings.member_remove_after_secs),
            member: settings.member.clone(),
            peers: settings.peers.clone(),
            health: Arc::default(),
        })
    }

    /// This instance's member name (`[etcd.member]`), or `""`.
    pub fn member_name(&self) -> &str {
        self.member.as_ref().map_or("", |m| m.name.as_str())
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

    /// Defragments this member only, and only while every other voting member
    /// answers: a member blocks while it defragments, so two at once (or one while
    /// another is down) could cost the cluster its quorum.
    pub async fn defragment(&self) -> Result<DefragmentOutput, EtcdError> {
        let mut c = self.client().await?;
        let before = c.status().await.map_err(self.call("status"))?;
        let own = before.header().map_or(0, |h| h.member_id());
        let list = c.member_list().await.map_err(self.call("member list"))?;
        for m in list.members() {
            if m.id() == own || m.is_learner() {
                continue;
            }
            if !self.probe_read(m.client_urls()).await {
                return Err(EtcdError::Refused(format!(
                    "member {} ({}) does not answer a read (down, or defragmenting): \
                     defragmenting blocks this member, so it runs only while every other \
                     member serves (one member at a time)",
                    id_hex(m.id()),
                    m.name().chars().take(64).collect::<String>()
                )));
            }
        }
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

    /// Whether a member answers a status call on one of its client URLs within
    /// [`PROBE_TIMEOUT`].
    async fn probe(&self, urls: &[String]) -> bool {
        self.answers(urls, false).await
    }

    /// Whether a member answers a serializable read (of the key `health`, whose
    /// value is not looked at) within [`PROBE_TIMEOUT`]: a member that defragments
    /// answers status calls but not reads.
    async fn probe_read(&self, urls: &[String]) -> bool {
        self.answers(urls, true).await
    }

    /// Whether a member answers a status call (or, with `read`, a serializable read
    /// of keys only) on one of its client URLs within [`PROBE_TIMEOUT`].
    async fn answers(&self, urls: &[String], read: bool) -> bool {
        if urls.is_empty() {
            return false;
        }
        let options = self.options.clone().with_timeout(PROBE_TIMEOUT);
        let attempt = async {
            let mut c = Client::connect(urls, Some(options)).await.ok()?;
            if read {
                let keys_only = etcd_client::GetOptions::new()
                    .with_serializable()
                    .with_keys_only();
                c.get("health", Some(keys_only)).await.ok().map(|_| ())
            } else {
                c.status().await.ok().map(|_| ())
            }
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT * 2, attempt).await,
            Ok(Some(()))
        )
    }

    /// Probes every member once and records since when each has been unhealthy.
    pub async fn observe_members(&self) {
        let Ok(mut c) = self.client().await else {
            return;
        };
        let Ok(list) = c.member_list().await.map_err(self.call("member list")) else {
            return;
        };
        let mut seen = Vec::new();
        for m in list.members() {
            seen.push((m.id(), self.probe(m.client_urls()).await));
        }
        let now = Instant::now();
        let mut h = self.health_lock();
        h.unhealthy_since
            .retain(|id, _| seen.iter().any(|(s, _)| s == id));
        for (id, healthy) in seen {
            if healthy {
                h.unhealthy_since.remove(&id);
            } else {
                h.unhealthy_since.entry(id).or_insert(now);
            }
        }
    }

    /// Keeps [`Etcd::observe_members`] running every [`TRACK_EVERY`].
    pub fn spawn_member_tracker(&self) -> tokio::task::JoinHandle<()> {
        let etcd = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRACK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                etcd.observe_members().await;
            }
        })
    }

    fn health_lock(&self) -> std::sync::MutexGuard<'_, MemberHealth> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `etcd.compact`: compacts the history to the current revision minus
    /// `retain` (physically, so that a defragment can then reclaim the space).
    pub async fn compact(&self, retain: i64) -> Result<CompactOutput, EtcdError> {
        let mut c = self.client().await?;
        let s = c.status().await.map_err(self.call("status"))?;
        let revision = s.header().map_or(0, |h| h.revision());
        let to = revision.saturating_sub(retain.max(0));
        if to < 1 {
            return Err(EtcdError::Refused(format!(
                "the store is at revision {revision}: retaining {retain} revisions leaves nothing to compact"
            )));
        }
        let start = Instant::now();
        match c
            .compact(
                to,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
        {
            Ok(_) => {}
            // Already compacted that far: nothing more to do, and not a failure.
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") => {}
            Err(e) => return Err(self.call("compact")(e)),
        }
        Ok(CompactOutput {
            revision,
            compacted_to: to,
            retained_revisions: revision - to,
            took_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The member's Prometheus text, from its metrics URL.
    pub async fn metrics_text(&self) -> Result<String, EtcdError> {
        let url = self.metrics_url.as_deref().ok_or_else(|| {
            EtcdError::Refused(
                "no metrics URL for this member: set [etcd] metrics_url (etcd's --listen-metrics-urls)"
                    .into(),
            )
        })?;
        fetch_metrics(url).await
    }

    /// `etcd.quota`: the member's sizes and its backend quota (from its metrics).
    pub async fn quota(&self) -> Result<QuotaOutput, EtcdError> {
        let mut c = self.client().await?;
        let s = c.status().await.map_err(self.call("status"))?;
        let text = self.metrics_text().await?;
        let quota = metric_value(&text, "etcd_server_quota_backend_bytes").ok_or_else(|| {
            EtcdError::Call {
                op: "metrics",
                reason: "the member's metrics have no etcd_server_quota_backend_bytes".into(),
            }
        })?;
        let quota = quota as i64;
        let used = if quota > 0 {
            u32::try_from(s.db_size().saturating_mul(100) / quota).unwrap_or(u32::MAX)
        } else {
            0
        };
        Ok(QuotaOutput {
            member_id: id_hex(s.header().map_or(0, |h| h.member_id())),
            db_size: s.db_size(),
            db_size_in_use: s.raft_used_db_size(),
            quota_bytes: quota,
            used_percent: used,
        })
    }

    /// `etcd.member-remove`: removes member `name`, only if the agent has seen it
    /// unhealthy for the configured time without a break, it still does not answer,
    /// and the members that remain keep a healthy quorum without it.
    pub async fn member_remove(&self, name: &str) -> Result<MemberRemoveOutput, EtcdError> {
        let mut c = self.client().await?;
        let list = c.member_list().await.map_err(self.call("member list"))?;
        let members = list.members();
        let named = members.iter().filter(|m| m.name() == name).count();
        if named > 1 {
            return Err(EtcdError::Refused(format!(
                "{named} members are named {name:?}: remove by name only when it is unique"
            )));
        }
        let target = members.iter().find(|m| m.name() == name).ok_or_else(|| {
            EtcdError::Refused(format!(
                "no member named {:?} (members: {})",
                name,
                members
                    .iter()
                    .map(|m| m.name().chars().take(64).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let since = self
            .health_lock()
            .unhealthy_since
            .get(&target.id())
            .copied();
        let unhealthy_for = since.map(|t| t.elapsed()).unwrap_or_default();
        if since.is_none() || unhealthy_for < self.remove_after {
            return Err(EtcdError::Refused(format!(
                "member {name} has been unhealthy for {}s without a break; it may be removed after {}s",
                unhealthy_for.as_secs(),
                self.remove_after.as_secs()
            )));
        }
        if self.probe(target.client_urls()).await {
            self.health_lock().unhealthy_since.remove(&target.id());
            return Err(EtcdError::Refused(format!(
                "member {name} answers now: it is not removed"
            )));
        }
        let voters: Vec<_> = members.iter().filter(|m| !m.is_learner()).collect();
        let after: Vec<_> = voters.iter().filter(|m| m.id() != target.id()).collect();
        let mut healthy_after = 0u32;
        for m in &after {
            if self.probe(m.client_urls()).await {
                healthy_after += 1;
            }
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let quorum_after = count(after.len()) / 2 + 1;
        if healthy_after < quorum_after {
            return Err(EtcdError::Refused(format!(
                "without {name}, {healthy_after} of {} voting members answer, fewer than the {quorum_after} a quorum needs: it is not removed",
                after.len()
            )));
        }
        // Once more, just before: it may have come back while the others were probed.
        if self.probe(target.client_urls()).await {
            self.health_lock().unhealthy_since.remove(&target.id());
            return Err(EtcdError::Refused(format!(
                "member {name} answers now: it is not removed"
            )));
        }
        c.member_remove(target.id())
            .await
            .map_err(self.call("member remove"))?;
        self.health_lock().unhealthy_since.remove(&target.id());
        tracing::warn!(member = name, id = %id_hex(target.id()), "etcd member removed");
        Ok(MemberRemoveOutput {
            removed_id: id_hex(target.id()),
            removed_name: name.chars().take(64).collect(),
            unhealthy_secs: unhealthy_for.as_secs(),
            voting_members_before: count(voters.len()),
            voting_members_after: count(after.len()),
            healthy_voting_members_after: healthy_after,
        })
    }

    /// `etcd.member-join`, the cluster's side: adds this instance's member as a
    /// learner (or finds the learner an interrupted join added), and returns its id
    /// and the `--initial-cluster` value it must start with.
    pub async fn add_learner(&self) -> Result<(u64, String, bool), EtcdError> {
        let me = self.member.as_ref().ok_or_else(|| {
            EtcdError::Refused("this agent has no [etcd.member]: it cannot join a member".into())
        })?;
        let mut c = self.peers_client().await?;
        let list = c.member_list().await.map_err(call("member list"))?;
        let existing = list
            .members()
            .iter()
            .find(|m| m.peer_urls().iter().any(|u| same_url(u, &me.peer_url)))
            .cloned();
        // Adding a voter while another is down lowers what the cluster survives:
        // the dead member is removed first.
        for m in list.members() {
            if m.is_learner() || existing.as_ref().is_some_and(|e| e.id() == m.id()) {
                continue;
            }
            if !self.probe(m.client_urls()).await {
                return Err(EtcdError::Refused(format!(
                    "member {} ({}) does not answer: remove it first (etcd.member-remove), then join",
                    id_hex(m.id()),
                    m.name().chars().take(64).collect::<String>()
                )));
            }
        }
        let (id, members, resumed) = match existing {
            Some(m) if !m.is_learner() => {
                return Err(EtcdError::Refused(format!(
                    "member {} ({}) with peer URL {} is still in the cluster: remove it first (etcd.member-remove)",
                    id_hex(m.id()),
                    m.name().chars().take(64).collect::<String>(),
                    me.peer_url
                )))
            }
            Some(m) => (m.id(), list.members().to_vec(), true),
            None => {
                let r = c
                    .member_add(
                        [me.peer_url.as_str()],
                        Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                    )
                    .await
                    .map_err(call("member add"))?;
                let id = r.member().map(|m| m.id()).ok_or_else(|| EtcdError::Call {
                    op: "member add",
                    reason: "the answer names no member".into(),
                })?;
                (id, r.member_list().to_vec(), false)
            }
        };
        let initial: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let name = if m.id() == id {
                    me.name.as_str()
                } else {
                    m.name()
                };
                let url = m.peer_urls().first()?;
                (!name.is_empty()).then(|| format!("{name}={url}"))
            })
            .collect();
        Ok((id, initial.join(","), resumed))
    }

    /// This instance's member, when the cluster lists it as a learner (a join whose
    /// promotion did not finish).
    pub async fn own_learner(&self) -> Result<Option<u64>, EtcdError> {
        let Some(me) = self.member.as_ref() else {
            return Ok(None);
        };
        let mut c = self.peers_client().await?;
        let list = c.member_list().await.map_err(call("member list"))?;
        Ok(list
            .members()
            .iter()
            .find(|m| m.is_learner() && m.peer_urls().iter().any(|u| same_url(u, &me.peer_url)))
            .map(|m| m.id()))
    }

    /// `etcd.member-join`, once this member runs: promotes the learner as soon as
    /// etcd says it caught up with the leader.
    pub async fn promote(&self, id: u64) -> Result<u32, EtcdError> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut c = self.peers_client().await?;
        loop {
            match c.member_promote(id).await {
                Ok(r) => {
                    let voters = r.members().iter().filter(|m| !m.is_learner()).count();
                    return Ok(u32::try_from(voters).unwrap_or(u32::MAX));
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(EtcdError::Call {
                        op: "member promote",
                        reason: format!(
                            "the learner did not catch up within {}s: {e}",
                            JOIN_TIMEOUT.as_secs()
                        ),
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    async fn peers_client(&self) -> Result<Client, EtcdError> {
        if self.peers.is_empty() {
            return Err(EtcdError::Refused(
                "this agent lists no [etcd] peers: it cannot reach the cluster to join it".into(),
            ));
        }
        Client::connect(&self.peers, Some(self.options.clone()))
            .await
            .map_err(|e| EtcdError::Connect {
                endpoints: self.peers.join(","),
                reason: e.to_string(),
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

/// Whether two peer URLs name the same endpoint (a trailing `/` aside).
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The text of a plain-http Prometheus endpoint (at most 4 MiB).
pub(crate) async fn fetch_metrics(url: &str) -> Result<String, EtcdError> {
    let fail = |reason: String| EtcdError::Call {
        op: "metrics",
        reason,
    };
    let client = crate::supervisor::health_client().map_err(|e| fail(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(format!("{url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(fail(format!("{url}: HTTP {}", resp.status())));
    }
    let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
    if body.len() > 4 << 20 {
        return Err(fail(format!("{url}: more than 4 MiB of metrics")));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_values_are_read_from_unlabelled_samples_only() {
        let text =
            "# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.\n\
                    # TYPE etcd_server_quota_backend_bytes gauge\n\
                    etcd_server_quota_backend_bytes 8.388608e+06\n\
                    etcd_server_quota_backend_bytes_total{x=\"y\"} 3\n";
        assert_eq!(
            metric_value(text, "etcd_server_quota_backend_bytes"),
            Some(8_388_608.0)
        );
        assert_eq!(metric_value(text, "etcd_server_quota"), None);
        assert_eq!(metric_value("", "etcd_server_quota_backend_bytes"), None);
    }
}
