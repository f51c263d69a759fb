//! What the agent remembers across restarts: the nonces it executed (the replay
//! cache), the newest checkpoint of its cluster's log it accepted (its own view of
//! the log, so that a forked or rolled-back log is refused), and the outcome of every
//! dispatch it accepted (so that a gateway that lost the answer can ask again).

use crate::dispatch::AgentResult;
use palisade_core::time::Timestamp;
use palisade_policy::dsse::Envelope;
use palisade_state::{Namespace, StateError, StateStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const NONCES: Namespace = Namespace::new("agent_nonces");
/// Relaxed: the view is advanced right before a nonce is spent, whose durable commit
/// persists both (see [`AgentState::advance`]).
const VIEW: Namespace = Namespace::relaxed("agent_view");
const CHECKPOINT_KEY: &str = "checkpoint";
/// The newest tenant witness statement accepted (its DSSE envelope as JSON).
const TENANT_TRUST_KEY: &str = "tenant_trust";
const OUTCOMES: Namespace = Namespace::new("agent_outcomes");

/// What the agent knows of one accepted dispatch, by its intent's event id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoredOutcome {
    /// Accepted and running. `interrupted` is the result signed in its place if the
    /// agent stops before the action ends: failed, saying it may have partly run.
    Running {
        started_at: Timestamp,
        interrupted: Box<AgentResult>,
    },
    /// Ended: the signed result, as it was (or would have been) answered.
    Done {
        finished_at: Timestamp,
        envelope: Envelope,
    },
}

fn corrupt(key: &str, e: serde_json::Error) -> StateError {
    StateError::Backend {
        op: "decode",
        ns: "agent_outcomes",
        reason: format!("outcome {key}: {e}"),
    }
}

/// The agent's durable state.
#[derive(Clone)]
pub struct AgentState {
    store: Arc<dyn StateStore>,
}

impl AgentState {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// Whether this nonce was executed before.
    pub async fn nonce_seen(&self, nonce: &str) -> Result<bool, StateError> {
        Ok(self.store.get(NONCES, nonce).await?.is_some())
    }

    /// Records a nonce; `false` if it was already there (a concurrent replay).
    pub async fn spend_nonce(
        &self,
        nonce: &str,
        expires_at: Timestamp,
    ) -> Result<bool, StateError> {
        self.store
            .insert_new(
                NONCES,
                nonce,
                expires_at.unix_seconds().to_string().into_bytes(),
            )
            .await
    }

    /// Forgets nonces whose dispatch expired more than `grace_secs` ago: such a
    /// dispatch is refused as expired anyway. Returns how many were dropped.
    pub async fn prune_nonces(&self, now: Timestamp, grace_secs: u64) -> Result<usize, StateError> {
        let cutoff = now.unix_seconds() - i64::try_from(grace_secs).unwrap_or(i64::MAX);
        let mut dropped = 0;
        for (key, value) in self.store.list(NONCES, "", 1_000_000).await? {
            let expires = std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            if expires < cutoff && self.store.delete(NONCES, &key).await? {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Records that the dispatch of `event_id` was accepted and is about to run.
    pub async fn outcome_running(
        &self,
        event_id: &str,
        started_at: Timestamp,
        interrupted: &AgentResult,
    ) -> Result<(), StateError> {
        let record = StoredOutcome::Running {
            started_at,
            interrupted: Box::new(interrupted.clone()),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| corrupt(event_id, e))?;
        self.store.put(OUTCOMES, event_id, bytes).await
    }

    /// Records the signed result of `event_id`.
    pub async fn outcome_done(
        &self,
        event_id: &str,
        finished_at: Timestamp,
        envelope: &Envelope,
    ) -> Result<(), StateError> {
        let record = StoredOutcome::Done {
            finished_at,
            envelope: envelope.clone(),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| corrupt(event_id, e))?;
        self.store.put(OUTCOMES, event_id, bytes).await
    }

    /// What is known of `event_id`'s dispatch, if this agent accepted it.
    pub async fn outcome(&self, event_id: &str) -> Result<Option<StoredOutcome>, StateError> {
        match self.store.get(OUTCOMES, event_id).await? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| corrupt(event_id, e)),
            None => Ok(None),
        }
    }

    /// The dispatches recorded as running: at start, those the previous run of the
    /// agent did not finish.
    pub async fn outcomes_running(&self) -> Result<Vec<(String, AgentResult)>, StateError> {
        let mut running = Vec::new();
        for (key, value) in self.store.list(OUTCOMES, "", 1_000_000).await? {
            if let StoredOutcome::Running { interrupted, .. } =
                serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?
            {
                running.push((key, *interrupted));
            }
        }
        Ok(running)
    }

    /// Forgets results that ended more than `keep_secs` before `now`; returns how
    /// many were dropped. Running ones are kept.
    pub async fn prune_outcomes(
        &self,
        now: Timestamp,
        keep_secs: u64,
    ) -> Result<usize, StateError> {
        let cutoff = now.unix_seconds() - i64::try_from(keep_secs).unwrap_or(i64::MAX);
        let mut dropped = 0;
        for (key, value) in self.store.list(OUTCOMES, "", 1_000_000).await? {
            let old = match serde_json::from_slice::<StoredOutcome>(&value) {
                Ok(StoredOutcome::Done { finished_at, .. }) => finished_at.unix_seconds() < cutoff,
                _ => false,
            };
            if old && self.store.delete(OUTCOMES, &key).await? {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// The newest accepted checkpoint (signed note bytes), if any.
    pub async fn checkpoint(&self) -> Result<Option<Vec<u8>>, StateError> {
        self.store.get(VIEW, CHECKPOINT_KEY).await
    }

    /// The tenant witness statement in force, if any.
    pub async fn tenant_trust(&self) -> Result<Option<Vec<u8>>, StateError> {
        self.store.get(VIEW, TENANT_TRUST_KEY).await
    }

    /// Records a newer tenant statement (callers hold the acceptance lock); durable
    /// with the next durable write, like the view.
    pub async fn set_tenant_trust(&self, envelope: Vec<u8>) -> Result<(), StateError> {
        self.store.put(VIEW, TENANT_TRUST_KEY, envelope).await
    }

    /// Replaces the view, only if it is still `expected` (callers hold the
    /// acceptance lock; this guards against a second agent on the same file). On
    /// redb the write is made durable by the next durable one (the nonce spent right
    /// after it): a crash before that loses only a view no dispatch ran under.
    pub async fn advance(
        &self,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StateError> {
        if expected.as_deref() == Some(new.as_slice()) {
            return Ok(true);
        }
        self.store
            .compare_and_swap(VIEW, CHECKPOINT_KEY, expected, Some(new))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_state::RedbStore;

    /// The view is written without a commit of its own, right before the nonce: what
    /// a crash right after the nonce's commit leaves (the file as it is, copied and
    /// opened afresh) holds both.
    #[tokio::test]
    async fn a_view_moved_before_a_spent_nonce_is_stored_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.redb");
        let state = AgentState::new(Arc::new(RedbStore::open(&path).expect("open")));
        let expires = Timestamp::from_unix_seconds(4_000_000_000);
        assert!(state.spend_nonce("n0", expires).await.expect("nonce"));
        assert!(state
            .advance(None, b"view 1".to_vec())
            .await
            .expect("advance"));
        assert!(state.spend_nonce("n1", expires).await.expect("nonce"));
        let crashed = dir.path().join("crashed.redb");
        std::fs::copy(&path, &crashed).expect("copy the file");
        std::mem::forget(state);
        let state = AgentState::new(Arc::new(RedbStore::open(&crashed).expect("open the copy")));
        assert_eq!(
            state.checkpoint().await.expect("view"),
            Some(b"view 1".to_vec())
        );
        assert!(state.nonce_seen("n1").await.expect("nonce"));
    }
}
