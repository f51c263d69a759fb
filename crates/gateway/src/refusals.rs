//! How many refusals of one authenticated operator on one cluster are logged one by
//! one, and the summary entry that counts the rest.
//!
//! Every refusal of an authenticated caller is logged — until the caller makes more
//! than `max` of them on one cluster within `per`: a flood would otherwise bury the
//! real actions in the customer's log and grow it at the caller's will. Beyond the
//! limit each refusal is still answered, and counted; once per `per` (at most), the
//! count goes to the log as one refusal entry carrying the operator's pseudonym, the
//! number not logged one by one and the period they fall in. So a flood is neither
//! logged in full nor unseen.
//!
//! The budget is kept by each gateway replica in memory: with several replicas the
//! limit applies per replica, and a replica that stops loses at most one period's
//! count (docs/operations.md).

use palisade_core::event::{Event, NotLogged, RefusalEvent, RefusalStage};
use palisade_core::refusal::{LoggedAction, RefusalReason};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, OperatorId};
use palisade_protocol::client::CallError;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The `[refusal_log]` settings of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalLogLimit {
    /// Refusals of one operator on one cluster logged one by one within `per_secs`.
    #[serde(default = "default_max")]
    pub max: u32,
    /// The period, in seconds; also the shortest time between two summaries.
    #[serde(default = "default_per")]
    pub per_secs: u64,
}

fn default_max() -> u32 {
    10
}
fn default_per() -> u64 {
    60
}

impl Default for RefusalLogLimit {
    fn default() -> Self {
        Self {
            max: default_max(),
            per_secs: default_per(),
        }
    }
}

impl RefusalLogLimit {
    /// Why the settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), &'static str> {
        if !(1..=10_000).contains(&self.max) {
            return Err("refusal_log.max must be between 1 and 10000");
        }
        if !(1..=86_400).contains(&self.per_secs) {
            return Err("refusal_log.per_secs must be between 1 and 86400");
        }
        Ok(())
    }

    fn per_ms(&self) -> i128 {
        i128::from(self.per_secs) * 1000
    }
}

/// Refusals counted but not logged one by one: what a summary entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlogged {
    pub cluster: ClusterId,
    pub actor: OperatorId,
    /// The status answered to the last refusal counted.
    pub status: u16,
    pub count: u64,
    /// When the first and the last of them were answered.
    pub from: Timestamp,
    pub to: Timestamp,
}

#[derive(Debug)]
struct Budget {
    actor: OperatorId,
    /// When the refusals logged one by one within the last `per` were.
    logged: VecDeque<i128>,
    /// Counted since the last summary.
    unlogged: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    last_status: u16,
}

/// Whether a refusal is logged one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Log,
    /// Counted for the next summary instead.
    Count,
}

/// The per-operator, per-cluster budgets of one gateway replica.
pub struct RefusalThrottle {
    limit: RefusalLogLimit,
    budgets: Mutex<HashMap<(OperatorId, ClusterId), Budget>>,
}

/// Operators tracked at once; beyond it, refusals are logged one by one (failing
/// towards the customer seeing more, never less).
const MAX_TRACKED: usize = 100_000;

impl RefusalThrottle {
    pub fn new(limit: RefusalLogLimit) -> Self {
        Self {
            limit,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> &RefusalLogLimit {
        &self.limit
    }

    /// Takes one refusal of `actor` on `cluster` at `now` from the budget.
    pub fn check(&self, actor: &OperatorId, cluster: &ClusterId, now: Timestamp) -> Verdict {
        let Ok(mut budgets) = self.budgets.lock() else {
            return Verdict::Log;
        };
        let key = (actor.clone(), cluster.clone());
        if !budgets.contains_key(&key) && budgets.len() >= MAX_TRACKED {
            return Verdict::Log;
        }
        let budget = budgets.entry(key).or_insert_with(|| Budget {
            actor: actor.clone(),
            logged: VecDeque::new(),
            unlogged: 0,
            first: None,
            last: None,
            last_status: 0,
        });
        let now_ms = now.unix_millis();
        let horizon = now_ms - self.limit.per_ms();
        while budget.logged.front().is_some_and(|&t| t <= horizon) {
            budget.logged.pop_front();
        }
        if budget.logged.len() < self.limit.max as usize {
            budget.logged.push_back(now_ms);
            return Verdict::Log;
        }
        budget.unlogged += 1;
        budget.first.get_or_insert(now);
        budget.last = Some(now);
        Verdict::Count
    }

    /// The counts whose first refusal is at least `per` old at `now`, taken out of the
    /// budgets (one summary per period at most); budgets with nothing left to track
    /// are forgotten.
    /// Records the status answered to a refusal that was counted, for its summary.
    pub fn note_status(&self, actor: &OperatorId, cluster: &ClusterId, status: u16) {
        if let Ok(mut budgets) = self.budgets.lock() {
            if let Some(b) = budgets.get_mut(&(actor.clone(), cluster.clone())) {
                b.last_status = status;
            }
        }
    }

    pub fn due(&self, now: Timestamp) -> Vec<Unlogged> {
        self.take_counts(now, self.limit.per_ms())
    }

    /// Every count, however recent (when the gateway stops).
    pub fn all(&self, now: Timestamp) -> Vec<Unlogged> {
        self.take_counts(now, 0)
    }

    fn take_counts(&self, now: Timestamp, min_age_ms: i128) -> Vec<Unlogged> {
        let Ok(mut budgets) = self.budgets.lock() else {
            return Vec::new();
        };
        let now_ms = now.unix_millis();
        let per_ms = self.limit.per_ms();
        let mut out = Vec::new();
        budgets.retain(|(_, cluster), b| {
            if let (Some(first), Some(last)) = (b.first, b.last) {
                if now_ms - first.unix_millis() >= min_age_ms && b.unlogged > 0 {
                    out.push(Unlogged {
                        cluster: cluster.clone(),
                        actor: b.actor.clone(),
                        status: b.last_status,
                        count: b.unlogged,
                        from: first,
                        to: last,
                    });
                    b.unlogged = 0;
                    b.first = None;
                    b.last = None;
                }
            }
            let recent = b.logged.back().is_some_and(|&t| now_ms - t < per_ms);
            recent || b.unlogged > 0
        });
        out
    }

    /// Puts back a count whose summary could not be logged, for the next attempt.
    pub fn restore(&self, u: Unlogged) {
        let Ok(mut budgets) = self.budgets.lock() else {
            return;
        };
        let b = budgets
            .entry((u.actor.clone(), u.cluster.clone()))
            .or_insert_with(|| Budget {
                actor: u.actor.clone(),
                logged: VecDeque::new(),
                unlogged: 0,
                first: None,
                last: None,
                last_status: 0,
            });
        b.unlogged += u.count;
        if b.last_status == 0 {
            b.last_status = u.status;
        }
        b.first = Some(b.first.map_or(u.from, |f| f.min(u.from)));
        b.last = Some(b.last.map_or(u.to, |l| l.max(u.to)));
    }
}

impl crate::pipeline::Gateway {
    /// Logs the refusal of an authenticated operator while within the budget;
    /// beyond it, counts it for the next summary and says so in the answer, which
    /// keeps its status.
    pub(crate) async fn log_or_count_refusal(
        &self,
        cluster: &palisade_core::inventory::Cluster,
        op: &crate::pipeline::Operator,
        action: &str,
        refused: crate::pipeline::Refused,
        now: Timestamp,
    ) -> crate::problem::Problem {
        let actor = self.pseudonym(&cluster.tenant, &op.name);
        match self.refusals.check(&actor, &cluster.id, now) {
            Verdict::Log => self.log_refusal(cluster, Some(op), action, refused).await,
            Verdict::Count => {
                let (mut problem, stage, _) = refused;
                self.metrics.refused(stage);
                self.metrics.refusal_not_logged();
                self.refusals
                    .note_status(&actor, &cluster.id, problem.status);
                let limit = self.refusals.limit();
                problem.detail.push_str(&format!(
                    " (not logged individually: more than {} refusals per {}s; \
                     counted in a summary entry of this cluster's log)",
                    limit.max, limit.per_secs
                ));
                problem
            }
        }
    }

    /// Appends a summary entry for every count that is due ([`RefusalThrottle::due`]),
    /// or for every count when `stopping`; a count whose entry cannot be appended is
    /// kept for the next call.
    pub async fn log_refusal_summaries(&self, now: Timestamp, stopping: bool) {
        let counts = if stopping {
            self.refusals.all(now)
        } else {
            self.refusals.due(now)
        };
        for unlogged in counts {
            let event = EventId::random().map(|event_id| {
                Event::Refusal(RefusalEvent {
                    event_id,
                    time: now,
                    cluster: unlogged.cluster.clone(),
                    actor: Some(unlogged.actor.clone()),
                    authn: None,
                    action: LoggedAction::summary(),
                    action_digest: None,
                    stage: RefusalStage::RateLimit,
                    reason: RefusalReason::RefusalsNotLogged,
                    status: unlogged.status,
                    not_logged: Some(NotLogged {
                        count: unlogged.count,
                        from: unlogged.from,
                        to: unlogged.to,
                        max: self.refusals.limit().max,
                        per_secs: self.refusals.limit().per_secs,
                    }),
                })
            });
            let appended = match event.map(|e| e.to_log_entry()) {
                Ok(Ok(entry)) => self
                    .dispatcher()
                    .append(unlogged.cluster.as_str(), &entry)
                    .await
                    .map(|_| ()),
                Ok(Err(e)) => Err(CallError::Setup(e.to_string())),
                Err(e) => Err(CallError::Setup(e.to_string())),
            };
            match appended {
                // In the log; witnessed with a later batch.
                Ok(()) | Err(CallError::Unwitnessed { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, cluster = %unlogged.cluster, "a summary of unlogged refusals could not be logged; will retry");
                    self.refusals.restore(unlogged);
                }
            }
        }
    }
}

/// The `action` of a summary entry (it names no single request).
pub use palisade_core::refusal::SUMMARY_ACTION;

/// Logs due summaries until the gateway stops: often enough that a summary is at
/// most a few seconds late.
pub async fn summarise(gw: std::sync::Arc<crate::pipeline::Gateway>) {
    let per = gw.refusals.limit().per_secs;
    let tick = std::time::Duration::from_secs((per / 4).clamp(1, 15));
    loop {
        tokio::time::sleep(tick).await;
        gw.log_refusal_summaries(Timestamp::now(), false).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(s)
    }

    #[test]
    fn beyond_the_limit_refusals_are_counted_and_summarised_once_per_period() {
        let t = RefusalThrottle::new(RefusalLogLimit {
            max: 10,
            per_secs: 60,
        });
        let (op, other) = (
            OperatorId::parse("op-0123456789abcdef").unwrap(),
            OperatorId::parse("op-fedcba9876543210").unwrap(),
        );
        let c = ClusterId::parse("demo").unwrap();
        let verdicts: Vec<Verdict> = (0..120)
            .map(|i| t.check(&op, &c, at(1000 + i / 6)))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Log).count(), 10);
        // Another operator's budget is their own.
        assert_eq!(t.check(&other, &c, at(1010)), Verdict::Log);
        // Nothing is due before a period has passed since the first one counted.
        assert!(t.due(at(1030)).is_empty());
        let due = t.due(at(1061));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].count, 110);
        assert_eq!((due[0].from, due[0].to), (at(1001), at(1019)));
        assert_eq!(due[0].actor, op);
        assert!(t.due(at(1200)).is_empty(), "a count is summarised once");
        // A period later the operator's refusals are logged one by one again.
        assert_eq!(t.check(&op, &c, at(1200)), Verdict::Log);
    }

    #[test]
    fn a_summary_that_could_not_be_logged_is_kept_for_the_next_attempt() {
        let t = RefusalThrottle::new(RefusalLogLimit {
            max: 1,
            per_secs: 10,
        });
        let op = OperatorId::parse("op-0123456789abcdef").unwrap();
        let c = ClusterId::parse("demo").unwrap();
        for i in 0..5 {
            t.check(&op, &c, at(100 + i));
        }
        let due = t.due(at(200));
        assert_eq!(due.len(), 1);
        t.restore(due[0].clone());
        let again = t.due(at(201));
        assert_eq!(again, due);
    }
}
