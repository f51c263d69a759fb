//! The tenant's witness statements: a tenant registers, with its reader token, a
//! statement signed by its own key naming the witnesses it runs; the gateway records
//! it in the cluster's log (a `tenant_trust` event) and sends the newest one with
//! every dispatch to that cluster, whose agents require those witnesses' cosignatures.
//!
//! The gateway records a statement only if the tenant's key (`[[tenant_key]]`)
//! signed it and its `seq` is above the one in force, so that a stolen reader token
//! cannot lock a cluster with a statement no agent accepts. The agents check the
//! signature again, against the tenant key they were installed with: nothing the
//! gateway does can make them accept a statement the tenant did not sign.

use crate::pipeline::Gateway;
use crate::problem::Problem;
use palisade_core::event::{Event, SignedEnvelope, TenantTrustEvent};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, TenantId};
use palisade_policy::dsse::Envelope;
use palisade_policy::tenant::TenantTrust;
use palisade_state::Namespace;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const TENANT_TRUST: Namespace = Namespace::new("gateway_tenant_trust");
/// `<cluster>/<instance>` → the key id of the agent key recorded in that log.
const AGENT_KEYS: Namespace = Namespace::new("gateway_agent_keys");

/// A cluster's statement in force, as the gateway keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// Its `tenant_trust` event's index in the cluster's log.
    index: u64,
    seq: u64,
    statement: Envelope,
}

fn describe(cluster: &ClusterId, s: &Stored) -> Value {
    let decoded = TenantTrust::decode(&s.statement).ok();
    json!({
        "cluster": cluster.as_str(),
        "index": s.index,
        "seq": s.seq,
        "statement_digest": decoded.as_ref().map(|(_, d)| d.to_string()),
        "witnesses": decoded.as_ref().map(|(t, _)| t.witnesses.clone()),
        "quorum": decoded.as_ref().map(|(t, _)| t.quorum),
        "statement": s.statement,
    })
}

impl Gateway {
    /// Loads every statement in force from the state into the dispatcher (at start,
    /// and on every reconciler pass, so that replicas agree). Returns how many.
    pub async fn load_tenant_trust(&self) -> usize {
        let all = match self.ops.store().list(TENANT_TRUST, "", 100_000).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the tenant statements");
                return 0;
            }
        };
        let mut n = 0;
        for (cluster, bytes) in all {
            match serde_json::from_slice::<Stored>(&bytes) {
                Ok(s) => {
                    self.dispatcher().set_tenant_trust(&cluster, s.statement);
                    n += 1;
                }
                Err(e) => {
                    tracing::error!(%cluster, error = %e, "a stored tenant statement does not decode")
                }
            }
        }
        n
    }

    /// At start: a cluster whose statement this gateway's state does not hold (a new
    /// replica, a state rebuilt) gets the newest one from its log, where every
    /// statement in force was recorded. Returns how many were found.
    pub async fn recover_tenant_trust(&self) -> usize {
        let mut found = 0;
        for cluster in &self.inventory.clusters {
            let cid = &cluster.id;
            match self.stored_trust(cid).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => {
                    tracing::warn!(cluster = %cid, error = %e.detail, "cannot read the stored tenant statement");
                    continue;
                }
            }
            let read = async {
                let policy = self.config().log.policy_for(cid)?;
                let source = self
                    .dispatcher()
                    .source(cid.as_str())
                    .map_err(|e| e.to_string())?;
                palisade_tlog_service::audit::read_entries(&source, &policy)
                    .await
                    .map_err(|e| e.to_string())
            };
            let entries = match read.await {
                Ok((_, entries)) => entries,
                Err(e) => {
                    tracing::warn!(cluster = %cid, error = %e, "cannot read the log for the tenant's statement");
                    continue;
                }
            };
            let newest = entries.iter().enumerate().rev().find_map(|(i, e)| {
                match Event::from_log_entry(e) {
                    Ok(Event::TenantTrust(t)) => Some((i as u64, t)),
                    _ => None,
                }
            });
            let Some((index, t)) = newest else { continue };
            let statement = Envelope::from(&t.statement);
            let Ok((trust, _)) = TenantTrust::decode(&statement) else {
                continue;
            };
            let stored = Stored {
                index,
                seq: trust.seq,
                statement: statement.clone(),
            };
            let Ok(bytes) = serde_json::to_vec(&stored) else {
                continue;
            };
            if let Err(e) = self
                .ops
                .store()
                .put(TENANT_TRUST, cid.as_str(), bytes)
                .await
            {
                tracing::warn!(cluster = %cid, error = %e, "cannot keep the tenant statement found in the log");
            }
            self.dispatcher().set_tenant_trust(cid.as_str(), statement);
            tracing::info!(cluster = %cid, seq = trust.seq, index, "tenant statement found in the log");
            found += 1;
        }
        found
    }

    /// Records in each cluster's log the agent keys this gateway trusts for its
    /// instances (`[[agent]]`, one or, during a rotation, several per instance), once
    /// per key: the customer then knows, from their own log, which keys sign their
    /// results, and sees a key added. Run by the
    /// reconciler, from its first pass until it returns `true`: every key recorded
    /// (by this process or another replica).
    pub async fn enrol_agent_keys(&self) -> bool {
        let mut done = true;
        for cluster in &self.inventory.clusters {
            let mut keys = Vec::new();
            for i in &cluster.instances {
                for k in self.agent_keys.get(&i.id).into_iter().flatten() {
                    keys.push((i, k));
                }
            }
            for (instance, key) in keys {
                let Some(raw) = key.raw() else { continue };
                let keyid = key.key_id();
                let name = format!("{}/{}/{keyid}", cluster.id, instance.id);
                let current = match self.ops.store().get(AGENT_KEYS, &name).await {
                    Ok(Some(v)) if v == keyid.as_bytes() => continue,
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(instance = %name, error = %e, "cannot read the recorded agent keys");
                        done = false;
                        continue;
                    }
                };
                // Claimed first, so that two passes or two replicas record it once;
                // given back if the log does not take it.
                match self
                    .ops
                    .store()
                    .compare_and_swap(
                        AGENT_KEYS,
                        &name,
                        current.clone(),
                        Some(keyid.clone().into_bytes()),
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(instance = %name, error = %e, "cannot note the agent key");
                        done = false;
                        continue;
                    }
                }
                let Ok(event_id) = EventId::random() else {
                    done = false;
                    continue;
                };
                let event = Event::AgentKey(palisade_core::event::AgentKeyEvent {
                    event_id,
                    time: Timestamp::now(),
                    cluster: cluster.id.clone(),
                    instance: instance.id.clone(),
                    key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw),
                    keyid: keyid.clone(),
                });
                let appended = match event.to_log_entry() {
                    Ok(entry) => self.dispatcher().append(cluster.id.as_str(), &entry).await,
                    Err(e) => Err(palisade_protocol::client::CallError::Setup(e.to_string())),
                };
                match appended {
                    // In the log, witnessed or not (an unwitnessed append is still an
                    // entry): recorded.
                    Ok(_) | Err(palisade_protocol::client::CallError::Unwitnessed { .. }) => {}
                    Err(e) => {
                        tracing::warn!(instance = %name, error = %e, "cannot record the agent key in the log yet");
                        let _ = self
                            .ops
                            .store()
                            .compare_and_swap(AGENT_KEYS, &name, Some(keyid.into_bytes()), current)
                            .await;
                        done = false;
                        continue;
                    }
                }
                tracing::info!(instance = %name, %keyid, "agent key recorded in the log");
            }
        }
        done
    }

    /// The cluster `cluster` of `tenant`, as a reader of that tenant may name it.
    /// A cluster that does not exist and one of another tenant look the same: 404.
    pub(crate) fn readable_cluster(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
    ) -> Result<ClusterId, Problem> {
        let not_found = || {
            Problem::new(
                404,
                "not found",
                format!(
                    "no cluster {:?} readable with this token",
                    cluster.chars().take(64).collect::<String>()
                ),
            )
        };
        if reader.as_str() != path_tenant {
            return Err(not_found());
        }
        let cid = ClusterId::parse(cluster).map_err(|_| not_found())?;
        match self.inventory.cluster(&cid) {
            Some(c) if &c.tenant == reader => Ok(cid),
            _ => Err(not_found()),
        }
    }

    async fn stored_trust(&self, cluster: &ClusterId) -> Result<Option<Stored>, Problem> {
        let bytes = self
            .ops
            .store()
            .get(TENANT_TRUST, cluster.as_str())
            .await
            .map_err(|e| Problem::new(503, "state unavailable", e.to_string()))?;
        bytes
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| Problem::new(500, "internal error", format!("stored statement: {e}")))
    }

    /// `GET /v1/tenants/{tenant}/clusters/{cluster}/trust`.
    pub async fn tenant_trust(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        match self.stored_trust(&cid).await? {
            Some(s) => Ok(describe(&cid, &s)),
            None => Err(Problem::new(
                404,
                "no statement",
                format!("cluster {cid} has no tenant witness statement; register one with `palisade customer register-witness`"),
            )),
        }
    }

    /// `PUT /v1/tenants/{tenant}/clusters/{cluster}/trust`: records a newer statement
    /// in the cluster's log, then sends it with every dispatch to that cluster.
    pub async fn put_tenant_trust(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
        body: &[u8],
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        let bad = |detail: String| Problem::new(400, "invalid statement", detail);
        let env: Envelope = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the body is not a DSSE envelope: {e}")))?;
        let entry = self
            .config()
            .tenant_keys
            .iter()
            .find(|k| &k.tenant == reader)
            .ok_or_else(|| {
                Problem::new(
                    403,
                    "no tenant key",
                    format!("this gateway knows no key for tenant {reader}: the provider lists the tenant's tenant.pub as [[tenant_key]] before statements can be recorded"),
                )
            })?;
        let key = palisade_policy::keys::PublicKey::read(&entry.key).map_err(|e| {
            Problem::new(
                500,
                "internal error",
                format!("tenant_key {}: {e}", entry.key.display()),
            )
        })?;
        let opened = TenantTrust::open(&env, &key).map_err(bad)?;
        let (trust, digest) = (opened.trust, opened.digest);
        if &trust.tenant != reader || trust.cluster != cid {
            return Err(bad(format!(
                "the statement is for {}/{}, not {reader}/{cid}",
                trust.tenant, trust.cluster
            )));
        }
        if env.signatures.is_empty() {
            return Err(bad("the statement carries no signature".into()));
        }
        if let Some(current) = self.stored_trust(&cid).await? {
            if trust.seq <= current.seq {
                return Err(Problem::new(
                    409,
                    "not newer",
                    format!(
                        "seq {} is not above the statement in force (seq {}, log index {}); sign it again with seq {}",
                        trust.seq,
                        current.seq,
                        current.index,
                        current.seq + 1
                    ),
                ));
            }
        }
        let event = Event::TenantTrust(TenantTrustEvent {
            event_id: EventId::random()
                .map_err(|e| Problem::new(500, "internal error", format!("random: {e}")))?,
            time: Timestamp::now(),
            tenant: reader.clone(),
            cluster: cid.clone(),
            statement: SignedEnvelope::from(&env),
        });
        let entry = event
            .to_log_entry()
            .map_err(|e| bad(format!("the statement is too large to log: {e}")))?;
        let appended = self
            .dispatcher()
            .append(cid.as_str(), &entry)
            .await
            .map_err(|e| {
                Problem::new(
                    503,
                    "log unavailable",
                    format!("the statement could not be logged, so it is not in force: {e}"),
                )
            })?;
        let stored = Stored {
            index: appended.index,
            seq: trust.seq,
            statement: env.clone(),
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
        self.ops
            .store()
            .put(TENANT_TRUST, cid.as_str(), bytes)
            .await
            .map_err(|e| {
                Problem::new(
                    503,
                    "state unavailable",
                    format!("the statement is in the log at index {} but could not be kept: {e}; send it again with a higher seq", appended.index),
                )
            })?;
        self.dispatcher().set_tenant_trust(cid.as_str(), env);
        tracing::info!(cluster = %cid, seq = trust.seq, statement = %digest, index = appended.index, "tenant witness statement recorded");
        Ok(describe(&cid, &stored))
    }
}
