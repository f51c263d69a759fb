//! Prometheus metrics (`GET /metrics`): refusals by stage, dispatches by outcome and
//! their latency. No label carries an operator, a parameter or a cluster's data.

use palisade_core::event::RefusalStage;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    refusals: Family<StageLabel, Counter>,
    refusals_not_logged: Counter,
    dispatches: Family<OutcomeLabel, Counter>,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("palisade_gateway");
        let refusals = Family::<StageLabel, Counter>::default();
        let refusals_not_logged = Counter::default();
        let dispatches = Family::<OutcomeLabel, Counter>::default();
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
            "dispatches",
            "Logged dispatches by outcome",
            dispatches.clone(),
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
            dispatches,
            latency,
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
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
