//! What the agent remembers across restarts: the nonces it executed (the replay
//! cache) and the newest checkpoint of its cluster's log it accepted (its own view of
//! the log, so that a forked or rolled-back log is refused).

use palisade_core::time::Timestamp;
use palisade_state::{Namespace, StateError, StateStore};
use std::sync::Arc;

const NONCES: Namespace = Namespace::new("agent_nonces");
/// Relaxed: the view is advanced right before a nonce is spent, whose durable commit
/// persists both (see [`AgentState::advance`]).
const VIEW: Namespace = Namespace::relaxed("agent_view");
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
