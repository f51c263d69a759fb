//! Status health: a round trip through the primary key's backend, cached so that
//! polling (every 10 s while unhealthy, every minute when healthy, from every
//! apiserver) does not hammer an HSM or a cloud KMS. Failures are cached for less time
//! than successes, so that a recovered backend is seen quickly.

use crate::keyring::KeyRing;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long results are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub ok_ttl: Duration,
    pub failing_ttl: Duration,
    /// A probe that takes longer counts as a failure.
    pub timeout: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            ok_ttl: Duration::from_secs(10),
            failing_ttl: Duration::from_secs(2),
            timeout: Duration::from_secs(3),
        }
    }
}

/// The health of the primary key, with its cache.
pub struct Health {
    ring: Arc<KeyRing>,
    metrics: Arc<Metrics>,
    policy: HealthPolicy,
    // A tokio mutex: concurrent Status calls wait for the one probe in flight.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Health {
    pub fn new(ring: Arc<KeyRing>, metrics: Arc<Metrics>, policy: HealthPolicy) -> Self {
        Self {
            ring,
            metrics,
            policy,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `Ok(())` when healthy, otherwise a short reason (free of secrets).
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            let ttl = if result.is_ok() {
                self.policy.ok_ttl
            } else {
                self.policy.failing_ttl
            };
            if at.elapsed() < ttl {
                return result.clone();
            }
        }
        let primary = self.ring.primary();
        let result = match tokio::time::timeout(self.policy.timeout, primary.health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", primary.backend())),
            Err(_) => Err(format!("{}: health probe timed out", primary.backend())),
        };
        let was_ok = last.as_ref().map(|(_, r)| r.is_ok());
        match (&result, was_ok) {
            (Err(reason), Some(true) | None) => {
                tracing::warn!(key_id = %primary.key_id(), %reason, "backend unhealthy")
            }
            (Ok(()), Some(false)) => {
                tracing::info!(key_id = %primary.key_id(), "backend healthy again")
            }
            _ => {}
        }
        self.metrics
            .set_healthy(primary.backend().as_str(), result.is_ok());
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
