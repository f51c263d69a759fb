//! The agent's Prometheus metrics, served on `metrics_listen` (loopback only, plain
//! HTTP, `GET /metrics` and nothing else) — never on the dispatch listener, whose
//! routes are fixed. No label carries an operator, a parameter or customer data:
//! outcomes and refusal codes are fixed sets, components are the configured names.

use crate::dispatch::{RefusalCode, ResultOutcome};
use palisade_core::time::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

/// The code as refusals name it (`stale_view`, `trust_metadata`, …).
fn code_name(code: RefusalCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

pub use palisade_protocol::trust::TrustGauges;

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    dispatches: Family<OutcomeLabel, Counter>,
    refusals: Family<CodeLabel, Counter>,
    view_size: Gauge,
    component_up: Family<ComponentLabel, Gauge>,
    component_restarts: Family<ComponentLabel, Gauge>,
    last_backup: Gauge,
    pub trust: TrustGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let trust = TrustGauges::register(&mut registry);
        let agent = registry.sub_registry_with_prefix("palisade_agent");
        let dispatches = Family::<OutcomeLabel, Counter>::default();
        let refusals = Family::<CodeLabel, Counter>::default();
        let view_size = Gauge::default();
        let component_up = Family::<ComponentLabel, Gauge>::default();
        let component_restarts = Family::<ComponentLabel, Gauge>::default();
        agent.register(
            "dispatches",
            "Dispatches executed, by outcome (succeeded, failed)",
            dispatches.clone(),
        );
        agent.register(
            "refusals",
            "Dispatches refused, by refusal code",
            refusals.clone(),
        );
        agent.register(
            "view_size",
            "The size of the newest log checkpoint this agent verified",
            view_size.clone(),
        );
        agent.register(
            "component_up",
            "1 while a supervised component runs (and answers its health URL, when it has one)",
            component_up.clone(),
        );
        agent.register(
            "component_restarts",
            "Times a supervised component was started again since the agent started",
            component_restarts.clone(),
        );
        let last_backup = Gauge::default();
        agent.register(
            "last_backup_timestamp_seconds",
            "Unix time of the newest good backup of this cluster in the backup store (0: none known yet)",
            last_backup.clone(),
        );
        // Every code from zero, so that a rate over any of them is defined.
        for code in RefusalCode::ALL {
            refusals
                .get_or_create(&CodeLabel {
                    code: code_name(code),
                })
                .inc_by(0);
        }
        Self {
            last_backup,
            registry,
            dispatches,
            refusals,
            view_size,
            component_up,
            component_restarts,
            trust,
        }
    }
}

impl Metrics {
    pub fn executed(&self, outcome: ResultOutcome) {
        let outcome = match outcome {
            ResultOutcome::Succeeded => "succeeded",
            ResultOutcome::Failed => "failed",
        };
        self.dispatches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn refused(&self, code: RefusalCode) {
        self.refusals
            .get_or_create(&CodeLabel {
                code: code_name(code),
            })
            .inc();
    }

    /// A good backup exists from `at` (kept if newer than the one known).
    pub fn backup_at(&self, at: Timestamp) {
        let t = at.unix_seconds();
        if t > self.last_backup.get() {
            self.last_backup.set(t);
        }
    }

    pub fn view_size(&self, size: u64) {
        self.view_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    pub fn component(&self, name: &str, up: bool, restarts: u64) {
        let label = ComponentLabel {
            component: name.to_string(),
        };
        self.component_up.get_or_create(&label).set(i64::from(up));
        self.component_restarts
            .get_or_create(&label)
            .set(i64::try_from(restarts).unwrap_or(i64::MAX));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub use palisade_tlog_service::metrics::serve_loopback;
