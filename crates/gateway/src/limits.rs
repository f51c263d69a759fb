//! Rate limits that hold at every instant, shared by every gateway replica.
//!
//! [`SlidingLog`] keeps, per operator and action, the times of the requests it admitted
//! within the last `per`, in the state store; a request is admitted only while fewer
//! than `max` of them are younger than `per`. So no interval of length `per` ever holds
//! more than `max` admissions — unlike counters of fixed, epoch-aligned windows, which
//! let `max` through at the end of one window and `max` more at the start of the next.
//! Every update is a compare-and-swap on one key, so replicas sharing an etcd store
//! admit together exactly what one gateway would.

use palisade_core::time::Timestamp;
use palisade_state::{Namespace, StateError, StateStore};
use std::sync::Arc;

/// Relaxed: the admission times precede a durable write (the operation's record) for
/// every request that goes on; a crash can forget admissions of refused requests only.
const SLIDING: Namespace = Namespace::relaxed("gateway_rate_sliding");

/// How often a contended key is read and swapped again before giving up.
const CAS_ATTEMPTS: usize = 64;

fn backend(op: &'static str, reason: String) -> StateError {
    StateError::Backend {
        op,
        ns: SLIDING.name(),
        reason,
    }
}

/// The admission times of one key: milliseconds since the epoch, 8 bytes big-endian
/// each, oldest first.
#[derive(Debug, Default, PartialEq, Eq)]
struct Admissions(Vec<i64>);

impl Admissions {
    fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        if bytes.len() % 8 != 0 {
            return Err(backend(
                "decode",
                format!(
                    "{} bytes of admission times is not a whole number of 8-byte times",
                    bytes.len()
                ),
            ));
        }
        Ok(Self(
            bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_be_bytes(b)
                })
                .collect(),
        ))
    }

    fn encode(&self) -> Vec<u8> {
        self.0.iter().flat_map(|t| t.to_be_bytes()).collect()
    }

    /// Drops the admissions at least `per_ms` old at `now_ms`, then admits one more if
    /// fewer than `max` remain. A time after `now_ms` (another replica's clock ahead of
    /// this one) stays counted: erring on the side of refusing.
    fn admit(&mut self, now_ms: i64, max: u32, per_ms: i64) -> bool {
        let horizon = now_ms.saturating_sub(per_ms);
        self.0.retain(|&t| t > horizon);
        if self.0.len() >= max as usize {
            return false;
        }
        let at = self.0.partition_point(|&t| t <= now_ms);
        self.0.insert(at, now_ms);
        true
    }
}

/// Sliding-log rate limits in a state store (module documentation).
#[derive(Clone)]
pub struct SlidingLog {
    store: Arc<dyn StateStore>,
}

impl SlidingLog {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// Admits one request of `who` for `action` at `now` if fewer than `max` were
    /// admitted in the `per_secs` before it; `false` otherwise (nothing is recorded).
    pub async fn take(
        &self,
        who: &str,
        action: &str,
        max: u32,
        per_secs: u64,
        now: Timestamp,
    ) -> Result<bool, StateError> {
        let per_ms = i64::try_from(per_secs.max(1).saturating_mul(1000)).unwrap_or(i64::MAX);
        let now_ms = i64::try_from(now.unix_millis()).unwrap_or(i64::MAX);
        let key = format!("{who}/{action}");
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.get(SLIDING, &key).await?;
            let mut admissions = match &current {
                Some(b) => Admissions::decode(b)?,
                None => Admissions::default(),
            };
            if !admissions.admit(now_ms, max, per_ms) {
                return Ok(false);
            }
            if self
                .store
                .compare_and_swap(SLIDING, &key, current, Some(admissions.encode()))
                .await?
            {
                return Ok(true);
            }
        }
        Err(backend(
            "rate limit",
            "admission times too contended".into(),
        ))
    }

    /// Forgets the admission [`SlidingLog::take`] made at `at` for `who` and
    /// `action`: the request it admitted never reached the instance because the
    /// provider's own side failed (the log, the gateway's state), and an outage must
    /// not use up an operator's allowance.
    pub async fn give_back(
        &self,
        who: &str,
        action: &str,
        at: Timestamp,
    ) -> Result<bool, StateError> {
        let at_ms = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
        let key = format!("{who}/{action}");
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.get(SLIDING, &key).await?;
            let Some(bytes) = &current else {
                return Ok(false);
            };
            let mut admissions = Admissions::decode(bytes)?;
            let Some(pos) = admissions.0.iter().position(|&t| t == at_ms) else {
                return Ok(false);
            };
            admissions.0.remove(pos);
            if self
                .store
                .compare_and_swap(SLIDING, &key, current, Some(admissions.encode()))
                .await?
            {
                return Ok(true);
            }
        }
        Err(backend(
            "rate limit",
            "admission times too contended".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The limiter as the pipeline reaches it.
    fn store() -> (tempfile::TempDir, crate::ops::Ops) {
        let dir = tempfile::tempdir().unwrap();
        let store = palisade_state::open_embedded(&dir.path().join("state.redb")).unwrap();
        (dir, crate::ops::Ops::new(store))
    }

    fn at_ms(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(i128::from(ms))
    }

    /// The largest number of `admitted` times in any half-open interval of `per_ms`.
    fn busiest_interval(admitted: &[i64], per_ms: i64) -> usize {
        admitted
            .iter()
            .map(|&start| {
                admitted
                    .iter()
                    .filter(|&&t| t >= start && t < start + per_ms)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_burst_across_a_window_edge_gets_max_not_twice_max() {
        let (_dir, limits) = store();
        // 60 per minute; 60 requests in the last 100 ms of a minute and 60 in the
        // first 100 ms of the next: epoch-aligned windows admit all 120.
        let edge = 28_333_334_i64 * 60_000;
        let mut admitted = 0;
        for i in 0..120 {
            let t = edge - 100 + i * 200 / 120;
            if limits
                .take("alice", "etcd.status", 60, 60, at_ms(t))
                .await
                .unwrap()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 60);
        // A full `per` after the burst began, room comes back one admission at a time.
        assert!(limits
            .take("alice", "etcd.status", 60, 60, at_ms(edge - 100 + 60_000))
            .await
            .unwrap());
        // Limits are per operator and action.
        assert!(limits
            .take("bob", "etcd.status", 60, 60, at_ms(edge))
            .await
            .unwrap());
        assert!(limits
            .take("alice", "etcd.alarms", 60, 60, at_ms(edge))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn no_interval_of_length_per_holds_more_than_max_admissions() {
        let (_dir, limits) = store();
        let (max, per_ms) = (5u32, 10_000i64);
        let mut admitted = Vec::new();
        // Irregular arrivals over a minute, bursts and gaps, several window edges.
        let mut t = 1_700_000_000_000i64;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..400 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t += i64::try_from(seed % 400).unwrap();
            if limits
                .take("alice", "etcd.status", max, 10, at_ms(t))
                .await
                .unwrap()
            {
                admitted.push(t);
            }
        }
        assert!(
            admitted.len() > 20,
            "the limiter admitted too little: {}",
            admitted.len()
        );
        assert!(busiest_interval(&admitted, per_ms) <= max as usize);
    }

    #[tokio::test]
    async fn an_admission_given_back_frees_its_place() {
        let (_dir, ops) = store();
        assert!(ops.take("op", "a", 1, 3600, at_ms(1_000)).await.unwrap());
        assert!(!ops.take("op", "a", 1, 3600, at_ms(2_000)).await.unwrap());
        assert!(ops.give_back("op", "a", at_ms(1_000)).await.unwrap());
        assert!(!ops.give_back("op", "a", at_ms(1_000)).await.unwrap());
        assert!(ops.take("op", "a", 1, 3600, at_ms(3_000)).await.unwrap());
    }

    #[test]
    fn corrupt_admission_times_are_an_error_not_an_empty_log() {
        assert!(Admissions::decode(&[0u8; 9]).is_err());
        assert_eq!(Admissions::decode(&[]).unwrap(), Admissions::default());
    }
}
