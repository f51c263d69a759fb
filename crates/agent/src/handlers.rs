//! The typed handlers: one arm per catalogue handler id
//! (`palisade_policy::catalogue::HANDLERS`), each taking only a
//! [`ValidatedAction`]'s typed parameters and returning a typed output. What leaves
//! the agent is that output's canonical JSON, capped at the configured size.

use crate::accept::Accepted;
use crate::backup::Backups;
use crate::config::NamedCert;
use crate::etcd::{DisarmableAlarm, Etcd};
use crate::host;
use crate::kube::{Impersonation, KubeClient};
use crate::supervisor::Supervisor;
use palisade_core::time::Timestamp;
use palisade_core::Sha256Digest;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The action that takes a backup.
pub const BACKUP_ACTION: &str = "etcd.backup";

/// What the handlers act on.
pub struct Services {
    pub etcd: Etcd,
    pub kube: Option<KubeClient>,
    pub supervisor: Option<Arc<Supervisor>>,
    pub backups: Option<Backups>,
    pub certs: Vec<NamedCert>,
    pub disks: Vec<PathBuf>,
    pub max_output_bytes: usize,
    /// `[[component]] metrics_url` by component name.
    pub metrics_urls: std::collections::BTreeMap<String, String>,
    /// `etcd.restore`, when etcd is supervised with a data directory and `etcdctl`
    /// is configured as a tool.
    pub restorer: Option<crate::restore::Restorer>,
}

/// A handler's reduced output.
#[derive(Debug, Clone)]
pub struct Output {
    pub schema: &'static str,
    pub value: serde_json::Value,
    pub digest: Sha256Digest,
}

/// The longest any handler may run before the result says it failed.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(300);

fn reduce<T: Serialize>(schema: &'static str, max: usize, out: &T) -> Result<Output, String> {
    let value = serde_json::to_value(out).map_err(|e| format!("output: {e}"))?;
    let bytes = palisade_core::canonical::value_to_canonical_vec(&value)
        .map_err(|e| format!("output is not canonical JSON: {e}"))?;
    if bytes.len() > max {
        return Err(format!(
            "output is {} bytes, more than the {max} this agent returns",
            bytes.len()
        ));
    }
    Ok(Output {
        schema,
        value,
        digest: Sha256Digest::of(&bytes),
    })
}

/// Who a Kubernetes request of this dispatch is made as: the operator's pseudonym,
/// with the access event and its log entry.
fn impersonation(a: &Accepted) -> Impersonation {
    Impersonation {
        pseudonym: a.dispatch.actor.clone(),
        event_id: a.dispatch.event_id.clone(),
        log_entry: format!("{}#{}", a.log_origin, a.log_index),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Services {
    /// `etcd.member-join`: only a member awaiting join (its data gone) is added,
    /// as a learner; it is started with the cluster's current membership and
    /// promoted once it caught up.
    async fn member_join(&self) -> Result<crate::etcd::MemberJoinOutput, String> {
        let sup = self
            .supervisor
            .as_ref()
            .ok_or("this agent supervises no components: it cannot start a member")?;
        let status = sup.status(Some("etcd")).await.map_err(err)?;
        let state = status
            .components
            .first()
            .map(|c| c.state)
            .ok_or("this agent does not supervise etcd")?;
        let start = std::time::Instant::now();
        let (id, resumed) = if state == crate::supervisor::ComponentState::AwaitingJoin {
            let (id, initial, resumed) = self.etcd.add_learner().await.map_err(err)?;
            sup.join(
                "etcd",
                vec![
                    ("--initial-cluster".into(), initial),
                    ("--initial-cluster-state".into(), "existing".into()),
                ],
            )
            .await
            .map_err(err)?;
            (id, resumed)
        } else if let Some(id) = self.etcd.own_learner().await.unwrap_or(None) {
            // A join whose promotion did not finish: the learner runs; promote it.
            // (The cluster unreachable: not a learner this agent can promote.)
            (id, true)
        } else {
            return Err(format!(
                "etcd on this instance is {state}: only a member whose data is gone (awaiting-join) joins"
            ));
        };
        let voters = self.etcd.promote(id).await.map_err(err)?;
        Ok(crate::etcd::MemberJoinOutput {
            member_id: format!("{id:x}"),
            name: self.etcd.member_name().to_string(),
            resumed,
            voting_members: voters,
            took_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Runs an accepted dispatch's handler.
    pub async fn execute(&self, a: &Accepted) -> Result<Output, String> {
        match tokio::time::timeout(HANDLER_TIMEOUT, self.run(a)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the handler did not finish within {}s",
                HANDLER_TIMEOUT.as_secs()
            )),
        }
    }

    async fn run(&self, a: &Accepted) -> Result<Output, String> {
        let v = &a.action;
        let max = self.max_output_bytes;
        let schema = v.output_schema();
        match v.handler() {
            "etcd.status" => reduce(schema, max, &self.etcd.status().await.map_err(err)?),
            "etcd.members" => reduce(schema, max, &self.etcd.members().await.map_err(err)?),
            "etcd.alarms" => reduce(schema, max, &self.etcd.alarms().await.map_err(err)?),
            "etcd.alarm-disarm" => {
                let which = DisarmableAlarm::parse(v.str_param("alarm")).map_err(err)?;
                reduce(
                    schema,
                    max,
                    &self.etcd.alarm_disarm(which).await.map_err(err)?,
                )
            }
            "etcd.health" => reduce(schema, max, &self.etcd.health().await.map_err(err)?),
            "etcd.defragment" => reduce(schema, max, &self.etcd.defragment().await.map_err(err)?),
            "etcd.compact" => {
                let retain = v
                    .int_param("retain_revisions")
                    .ok_or("missing parameter retain_revisions")?;
                reduce(schema, max, &self.etcd.compact(retain).await.map_err(err)?)
            }
            "etcd.quota" => reduce(schema, max, &self.etcd.quota().await.map_err(err)?),
            "etcd.member-remove" => {
                let member = v.str_param("member").ok_or("missing parameter member")?;
                reduce(
                    schema,
                    max,
                    &self.etcd.member_remove(member).await.map_err(err)?,
                )
            }
            "etcd.member-join" => reduce(schema, max, &self.member_join().await?),
            "etcd.restore" => {
                let id = v
                    .str_param("backup_id")
                    .ok_or("missing parameter backup_id")?;
                let restorer = self.restorer.as_ref().ok_or(
                    "this agent cannot restore: it needs a supervised etcd with a data_dir and the etcdctl tool",
                )?;
                let backups = self
                    .backups
                    .as_ref()
                    .ok_or("this agent has no [backup] store configured")?;
                let sup = self
                    .supervisor
                    .as_ref()
                    .ok_or("this agent supervises no components")?;
                reduce(schema, max, &restorer.restore(backups, sup, id).await?)
            }
            "instance.resources" => {
                let disks = self.disks.clone();
                let out = tokio::task::spawn_blocking(move || host::resources(&disks))
                    .await
                    .map_err(err)?
                    .map_err(err)?;
                reduce(schema, max, &out)
            }
            "certs.rotate" => {
                let sup = self
                    .supervisor
                    .as_ref()
                    .ok_or("this agent supervises no components")?;
                let component = v
                    .str_param("component")
                    .ok_or("missing parameter component")?;
                let kind = v
                    .str_param("kind")
                    .and_then(crate::config::CertKind::parse)
                    .ok_or("missing or unknown parameter kind")?;
                let out = crate::renew::rotate(&self.certs, sup, component, kind)
                    .await
                    .map_err(err)?;
                reduce(schema, max, &out)
            }
            "certs.expiry" => reduce(
                schema,
                max,
                &host::certs_expiry(&self.certs, Timestamp::now()),
            ),
            "kube.nodes"
            | "kube.cordon"
            | "kube.uncordon"
            | "kube.webhooks"
            | "kube.webhook-bypass" => {
                let kube = self
                    .kube
                    .as_ref()
                    .ok_or("this agent has no kube-apiserver configured")?;
                let who = impersonation(a);
                match v.handler() {
                    "kube.nodes" => {
                        return reduce(schema, max, &kube.nodes(&who).await.map_err(err)?)
                    }
                    "kube.webhooks" => {
                        return reduce(schema, max, &kube.webhooks(&who).await.map_err(err)?)
                    }
                    "kube.webhook-bypass" => {
                        let kind = v
                            .str_param("kind")
                            .and_then(crate::kube::WebhookKind::parse)
                            .ok_or("missing or unknown parameter kind")?;
                        let configuration = v
                            .str_param("configuration")
                            .ok_or("missing parameter configuration")?;
                        let webhook = v.str_param("webhook").ok_or("missing parameter webhook")?;
                        let out = kube
                            .bypass_webhook(&who, kind, configuration, webhook)
                            .await
                            .map_err(err)?;
                        return reduce(schema, max, &out);
                    }
                    _ => {}
                }
                let node = v.str_param("node").ok_or("missing parameter node")?;
                let out = kube
                    .set_unschedulable(&who, node, v.handler() == "kube.cordon")
                    .await
                    .map_err(err)?;
                reduce(schema, max, &out)
            }
            "component.metrics" => {
                let c = v
                    .str_param("component")
                    .ok_or("missing parameter component")?;
                let text = match (self.metrics_urls.get(c), c, &self.kube) {
                    (Some(url), _, _) => crate::etcd::fetch_metrics(url).await.map_err(err)?,
                    (None, "etcd", _) => self.etcd.metrics_text().await.map_err(err)?,
                    (None, "kube-apiserver", Some(kube)) => {
                        kube.metrics(&impersonation(a)).await.map_err(err)?
                    }
                    (None, other, _) => {
                        return Err(format!(
                        "no metrics for {other} on this agent: set its [[component]] metrics_url"
                    ))
                    }
                };
                reduce(schema, max, &crate::prom::reduce(c, &text))
            }
            "component.status" | "component.restart" | "component.upgrade" => {
                let sup = self
                    .supervisor
                    .as_ref()
                    .ok_or("this agent supervises no components")?;
                match v.handler() {
                    "component.status" => {
                        let out = sup.status(v.str_param("component")).await.map_err(err)?;
                        reduce(schema, max, &out)
                    }
                    "component.restart" => {
                        let c = v
                            .str_param("component")
                            .ok_or("missing parameter component")?;
                        let wait = v.bool_param("wait_healthy").unwrap_or(false);
                        reduce(schema, max, &sup.restart(c, wait).await.map_err(err)?)
                    }
                    _ => {
                        let c = v
                            .str_param("component")
                            .ok_or("missing parameter component")?;
                        let version = v.str_param("version").ok_or("missing parameter version")?;
                        reduce(schema, max, &sup.upgrade(c, version).await.map_err(err)?)
                    }
                }
            }
            "etcd.backup" | "etcd.backups" | "etcd.backup-prune" => {
                let backups = self
                    .backups
                    .as_ref()
                    .ok_or("this agent has no [backup] store configured")?;
                match v.handler() {
                    "etcd.backup" => reduce(
                        schema,
                        max,
                        &backups.backup(&self.etcd, a).await.map_err(err)?,
                    ),
                    "etcd.backups" => reduce(schema, max, &backups.list().await.map_err(err)?),
                    _ => {
                        let keep = v
                            .int_param("keep_last")
                            .and_then(|k| usize::try_from(k).ok())
                            .ok_or("missing parameter keep_last")?;
                        let older = v.duration_param("older_than").map(|d| d.to_std());
                        reduce(schema, max, &backups.prune(keep, older).await.map_err(err)?)
                    }
                }
            }
            other => Err(format!("no handler {other:?} in this agent")),
        }
    }
}
