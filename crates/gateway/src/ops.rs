//! Operations, idempotency keys and rate limits ([`crate::limits`]), behind the state trait (redb
//! on one machine, etcd for several gateway replicas).
//!
//! Every request that passes validation (pipeline step 4) becomes an **operation**
//! whose id is the intent's event id, stored before the intent is logged and updated
//! after each step; operations are never removed. The request waits up to
//! `wait_secs` for the pipeline to finish, then answers the operation:
//!
//! | status | HTTP | meaning |
//! |---|---|---|
//! | `succeeded` | 200 | the agent ran the action; `output` is its typed output |
//! | `failed` | 200 | the action failed, the agent refused the dispatch, or how it ended could not be learnt (`outcome` says which) |
//! | `running` | 202 | still being logged, dispatched or reconciled: poll `GET /v1/operations/{id}` |
//! | `awaiting_approval` | 202 | logged as a request for the customer's approval |
//! | `denied`, `expired` | 200 | the customer denied the request, or it lapsed: nothing was dispatched |
//! | `refused` | 503 | nothing was dispatched (`outcome` `not_dispatched`): the log or its witnesses, the state store, or the agent could not be reached |
//!
//! **Idempotency keys** (`Idempotency-Key`, 1–128 printable ASCII characters, else
//! 400) are claimed per operator (`<operator>/<key>`, with `insert_new`) together
//! with a digest of the request (cluster, instance, action, validated parameters,
//! ticket, reason), only after step 4, so a refused request claims nothing. The same
//! key with the same request answers the existing operation (409 `request in
//! progress` while its record cannot be read yet); with another request it is 422
//! `idempotency key reused`. Keys do not expire.

use palisade_core::time::Timestamp;
use palisade_state::{Namespace, StateError, StateStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const OPERATIONS: Namespace = Namespace::new("gateway_operations");
const IDEMPOTENCY: Namespace = Namespace::new("gateway_idempotency");
const GOVERNANCE: Namespace = Namespace::new("gateway_governance");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Logged and dispatched; the agent has not answered yet.
    Running,
    Succeeded,
    /// The action ran and failed, the agent refused it, or how it ended could not
    /// be learnt (`outcome` says which).
    Failed,
    /// Nothing was dispatched (`outcome` is `not_dispatched`).
    Refused,
    /// Logged as a request; the tenant's policy needs the customer's approval first.
    AwaitingApproval,
    /// An approver denied the request: nothing was dispatched.
    Denied,
    /// The request lapsed before it was approved: nothing was dispatched.
    Expired,
}

/// One requested action, as its operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub operator: String,
    pub cluster: String,
    pub instance: String,
    pub action: String,
    pub parameters: serde_json::Value,
    pub ticket: String,
    pub status: OpStatus,
    /// How it ended, in the words of the result in the customer's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<palisade_core::event::Outcome>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The intent event's id and index in the cluster's log.
    pub event_id: String,
    /// Saved while the dispatch runs: a `running` operation read meanwhile (or left by
    /// a gateway that stopped) may lack it although its intent is logged; the event id
    /// finds the intent in the cluster's log either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For an action that needs the customer's approval: where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStatus>,
}

/// Where an operation's request for customer approval stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalStatus {
    /// The `approval_request` event's index in the cluster's log.
    pub request_index: u64,
    /// The request lapses then.
    pub expires_at: Timestamp,
    /// Approvals needed, and the approvers who approved so far.
    pub threshold: u32,
    pub approved_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct IdemRecord {
    request_digest: String,
    operation: String,
}

/// What an idempotency key already stands for.
pub enum Idem {
    New,
    Same(String),
    Conflict,
}

#[derive(Clone)]
pub struct Ops {
    store: Arc<dyn StateStore>,
}

fn backend(op: &'static str, reason: String) -> StateError {
    StateError::Backend {
        op,
        ns: "gateway",
        reason,
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(v).map_err(|e| backend("encode", e.to_string()))
}

impl Ops {
    /// Claims the right to record `key` in the governance log: true for exactly one
    /// caller among the gateways sharing this store (until [`Ops::unclaim_governance_record`]).
    pub async fn claim_governance_record(&self, key: &str) -> Result<bool, StateError> {
        self.store.insert_new(GOVERNANCE, key, b"1".to_vec()).await
    }

    /// Gives a claim back (the append failed), so that it is tried again.
    pub async fn unclaim_governance_record(&self, key: &str) -> Result<(), StateError> {
        self.store.delete(GOVERNANCE, key).await.map(|_| ())
    }

    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// The state store itself (for the gateway's other records).
    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub async fn save(&self, op: &Operation) -> Result<(), StateError> {
        self.store.put(OPERATIONS, &op.id, encode(op)?).await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Operation>, StateError> {
        match self.store.get(OPERATIONS, id).await? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| backend("decode", format!("corrupt operation {id}: {e}"))),
            None => Ok(None),
        }
    }

    /// The operator's operations, newest first, at most `limit`.
    pub async fn list(&self, operator: &str, limit: usize) -> Result<Vec<Operation>, StateError> {
        let mut ops: Vec<Operation> = self
            .store
            .list(OPERATIONS, "", 100_000)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Operation>(&v).ok())
            .filter(|o| o.operator == operator)
            .collect();
        ops.sort_by_key(|o| std::cmp::Reverse(o.created_at));
        ops.truncate(limit);
        Ok(ops)
    }

    /// Claims `key` for `operation` unless the operator used it before.
    pub async fn idempotency(
        &self,
        operator: &str,
        key: &str,
        request_digest: &str,
        operation: &str,
    ) -> Result<Idem, StateError> {
        let k = format!("{operator}/{key}");
        let record = IdemRecord {
            request_digest: request_digest.to_string(),
            operation: operation.to_string(),
        };
        if self
            .store
            .insert_new(IDEMPOTENCY, &k, encode(&record)?)
            .await?
        {
            return Ok(Idem::New);
        }
        let Some(existing) = self.store.get(IDEMPOTENCY, &k).await? else {
            return Ok(Idem::Conflict);
        };
        let existing: IdemRecord = serde_json::from_slice(&existing)
            .map_err(|e| backend("decode", format!("corrupt idempotency record: {e}")))?;
        if existing.request_digest == request_digest {
            Ok(Idem::Same(existing.operation))
        } else {
            Ok(Idem::Conflict)
        }
    }

    /// Admits one request of `who` for `action` unless `max` were admitted in the
    /// `per_secs` before `now` ([`crate::limits::SlidingLog`]).
    pub async fn take(
        &self,
        who: &str,
        action: &str,
        max: u32,
        per_secs: u64,
        now: Timestamp,
    ) -> Result<bool, StateError> {
        crate::limits::SlidingLog::new(self.store.clone())
            .take(who, action, max, per_secs, now)
            .await
    }

    /// Gives back the admission [`Ops::take`] made at `at` ([`crate::limits::SlidingLog::give_back`]).
    pub async fn give_back(
        &self,
        who: &str,
        action: &str,
        at: Timestamp,
    ) -> Result<bool, StateError> {
        crate::limits::SlidingLog::new(self.store.clone())
            .give_back(who, action, at)
            .await
    }
}
