//! What the agent remembers across restarts: the nonces it executed (the replay
//! cache) and the newest checkpoint of its cluster's log it accepted (its own view of
//! the log, so that a forked or rolled-back log is refused).

use palisade_core::time::Timestamp;
use palisade_state::{Namespace, StateError, StateStore};
use std::sync::Arc;

const NONCES: Namespace = Namespace::new("agent_nonces");
const VIEW: Namespace = Namespace::new("agent_view");
const CHECKPOINT_KEY: &str = "checkpoint";

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

    /// The newest accepted checkpoint (signed note bytes), if any.
    pub async fn checkpoint(&self) -> Result<Option<Vec<u8>>, StateError> {
        self.store.get(VIEW, CHECKPOINT_KEY).await
    }

    /// Replaces the view, only if it is still `expected` (callers hold the
    /// acceptance lock; this guards against a second agent on the same file).
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
