//! Prometheus metrics (`GET /metrics`): refusals by stage, dispatches by outcome and
//! their latency, on-call feeds' ages. No label carries an operator, a parameter or a cluster's data.
//!
//! OpenMetrics text, prefix `palisade_gateway_` (plus the unprefixed trust gauges
//! shared with the agent, `palisade_trust_expires_in_seconds` and
//! `palisade_trust_unverified`):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `refusals_total` | `stage`: `Authenticate`, `Authorize`, `Validate`, `RateLimit` | requests refused at steps 1–4, logged or not |
//! | `refusals_not_logged_total` | — | refusals beyond an operator's budget, counted in summary entries |
//! | `dispatches_total` | `outcome`: `succeeded`, `failed`, `agent_refused`, `not_dispatched`, `outcome_unknown`, `log_unavailable`, `state_unavailable` | requests that reached step 5 |
//! | `dispatch_seconds` | — (histogram, 5 ms to 60 s) | from logging the intent to logging the result |
//! | `unresolved_operations` | — | the reconciler's queue after its last pass |
//! | `oncall_feed_age_seconds`, `oncall_feed_stale` | `schedule` | age of each URL feed's last good fetch (-1: never); 1 while too old to grant |

use palisade_core::event::RefusalStage;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Stage {
    Authenticate,
    Authorize,
    Validate,
    RateLimit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Unprefixed: the same trust gauges as the agent's.
    shared: Arc<Registry>,
    pub(crate) trust: palisade_protocol::trust::TrustGauges,
    refusals: Family<StageLabel, Counter>,
    refusals_not_logged: Counter,
    feed_age: Family<ScheduleLabel, Gauge>,
    feed_stale: Family<ScheduleLabel, Gauge>,
    dispatches: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    unresolved: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut shared = Registry::default();
        let trust = palisade_protocol::trust::TrustGauges::register(&mut shared);
        let mut registry = Registry::with_prefix("palisade_gateway");
        let refusals = Family::<StageLabel, Counter>::default();
        let refusals_not_logged = Counter::default();
        let feed_age = Family::<ScheduleLabel, Gauge>::default();
        let feed_stale = Family::<ScheduleLabel, Gauge>::default();
        let dispatches = Family::<OutcomeLabel, Counter>::default();
        let unresolved = Gauge::default();
        let latency = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
        ]);
        registry.register(
            "refusals",
            "Requests refused before anything was dispatched, by pipeline stage",
            refusals.clone(),
        );
        registry.register(
            "refusals_not_logged",
            "Refusals beyond an operator's per-cluster budget, counted in summary log entries instead of logged one by one",
            refusals_not_logged.clone(),
        );
        registry.register(
            "oncall_feed_age_seconds",
            "Seconds since an on-call feed was last fetched and parsed (-1: never)",
            feed_age.clone(),
        );
        registry.register(
            "oncall_feed_stale",
            "1 while an on-call feed's last good fetch is older than oncall_feed_max_age_secs (its shifts grant nothing)",
            feed_stale.clone(),
        );
        registry.register(
            "dispatches",
            "Logged dispatches by outcome",
            dispatches.clone(),
        );
        registry.register(
            "unresolved_operations",
            "Operations whose intent may be in the log without its result yet (the reconciler's queue, as of its last pass)",
            unresolved.clone(),
        );
        registry.register(
            "dispatch_seconds",
            "Time from logging the intent to logging the result",
            latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            refusals,
            refusals_not_logged,
            feed_age,
            feed_stale,
            dispatches,
            latency,
            unresolved,
            shared: Arc::new(shared),
            trust,
        }
    }
}

impl Metrics {
    pub fn refused(&self, stage: RefusalStage) {
        let stage = match stage {
            RefusalStage::Authenticate => Stage::Authenticate,
            RefusalStage::Authorize => Stage::Authorize,
            RefusalStage::Validate => Stage::Validate,
            RefusalStage::RateLimit => Stage::RateLimit,
        };
        self.refusals.get_or_create(&StageLabel { stage }).inc();
    }

    /// The on-call feeds' ages, as of the scrape.
    pub fn feeds(&self, feeds: &[crate::feed_age::FeedAge]) {
        for f in feeds {
            let label = ScheduleLabel {
                schedule: f.schedule.clone(),
            };
            self.feed_age
                .get_or_create(&label)
                .set(f.age_secs.unwrap_or(-1));
            self.feed_stale
                .get_or_create(&label)
                .set(i64::from(f.stale));
        }
    }

    /// The reconciler's queue after a pass.
    pub fn unresolved(&self, n: usize) {
        self.unresolved.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn refusal_not_logged(&self) {
        self.refusals_not_logged.inc();
    }

    pub fn dispatched(&self, outcome: &str, took: Duration) {
        self.dispatches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        if encode_registry(&mut out, &self.shared).is_err()
            || encode_registry(&mut out, &self.registry).is_err()
            || encode_eof(&mut out).is_err()
        {
            out.clear();
        }
        out
    }
}
