//! Prometheus metrics of the log and the witness, and the loopback listener every
//! Palisade process without an HTTP API of its own for them serves them on
//! (`metrics_listen`: plain HTTP, `GET /metrics` only, loopback addresses only).
//!
//! The counters are process-wide: one log or witness process serves one set. No
//! label carries an entry's content; logs are named by origin, witnesses by name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabel {
    log: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessLabel {
    witness: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The log's and the witness's metrics (one registry; a process uses its half).
pub struct ServiceMetrics {
    registry: Registry,
    appended: Family<LogLabel, Counter>,
    batch_entries: Histogram,
    checkpoint_age: Family<LogLabel, Gauge>,
    cosigned_at: Mutex<HashMap<String, Instant>>,
    witness_latency: Family<WitnessLabel, Histogram>,
    witness_failures: Family<WitnessLabel, Counter>,
    cosignatures: Family<LogLabel, Counter>,
    refusals: Family<ReasonLabel, Counter>,
}

/// Every reason a witness refuses for (`failed`: it could not decide).
pub const WITNESS_REFUSALS: [&str; 9] = [
    "malformed",
    "unknown-origin",
    "bad-signature",
    "old-size-above-new",
    "stale-old-size",
    "root-conflict",
    "bad-proof",
    "misconfigured",
    "failed",
];

/// The process's metrics.
pub static METRICS: LazyLock<ServiceMetrics> = LazyLock::new(ServiceMetrics::new);

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
}

impl ServiceMetrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let appended = Family::<LogLabel, Counter>::default();
        let batch_entries = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let checkpoint_age = Family::<LogLabel, Gauge>::default();
        let witness_latency = Family::<WitnessLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let witness_failures = Family::<WitnessLabel, Counter>::default();
        let cosignatures = Family::<LogLabel, Counter>::default();
        let refusals = Family::<ReasonLabel, Counter>::default();
        let log = registry.sub_registry_with_prefix("palisade_log");
        log.register(
            "appended_entries",
            "Entries appended, by log",
            appended.clone(),
        );
        log.register(
            "batch_entries",
            "Entries sequenced per batch",
            batch_entries.clone(),
        );
        log.register(
            "checkpoint_age_seconds",
            "Seconds since the log's checkpoint last gathered its witness quorum (-1: not since the process started)",
            checkpoint_age.clone(),
        );
        log.register(
            "witness_request_seconds",
            "Time a witness took to answer an add-checkpoint request",
            witness_latency.clone(),
        );
        log.register(
            "witness_failures",
            "Add-checkpoint requests a witness did not cosign (refused, unreachable, bad answer)",
            witness_failures.clone(),
        );
        let witness = registry.sub_registry_with_prefix("palisade_witness");
        witness.register(
            "cosignatures",
            "Checkpoints cosigned, by log origin",
            cosignatures.clone(),
        );
        witness.register(
            "refusals",
            "Add-checkpoint requests refused, by reason",
            refusals.clone(),
        );
        for reason in WITNESS_REFUSALS {
            refusals
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .inc_by(0);
        }
        Self {
            registry,
            appended,
            batch_entries,
            checkpoint_age,
            cosigned_at: Mutex::new(HashMap::new()),
            witness_latency,
            witness_failures,
            cosignatures,
            refusals,
        }
    }

    /// A batch of `n` entries was sequenced into `log`.
    pub fn batch(&self, log: &str, n: usize) {
        self.appended
            .get_or_create(&LogLabel { log: log.into() })
            .inc_by(n as u64);
        self.batch_entries.observe(n as f64);
    }

    /// `log` is known (its age reads -1 until its first quorum).
    pub fn log_opened(&self, log: &str) {
        self.checkpoint_age
            .get_or_create(&LogLabel { log: log.into() })
            .set(-1);
    }

    /// `witness` is asked by this log process (its failures count from zero).
    pub fn witness_known(&self, witness: &str) {
        self.witness_failures
            .get_or_create(&WitnessLabel {
                witness: witness.into(),
            })
            .inc_by(0);
    }

    /// `log`'s checkpoint gathered its witness quorum now.
    pub fn quorum(&self, log: &str) {
        if let Ok(mut m) = self.cosigned_at.lock() {
            m.insert(log.to_string(), Instant::now());
        }
    }

    /// One witness answer, and how long it took.
    pub fn witness_answer(&self, witness: &str, took: std::time::Duration, ok: bool) {
        let label = WitnessLabel {
            witness: witness.into(),
        };
        self.witness_latency
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if !ok {
            self.witness_failures.get_or_create(&label).inc();
        }
    }

    /// The witness cosigned a checkpoint of `origin`.
    pub fn cosigned(&self, origin: &str) {
        self.cosignatures
            .get_or_create(&LogLabel { log: origin.into() })
            .inc();
    }

    /// The witness refused, for `reason` (a fixed code).
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The text exposition, with the checkpoint ages as of now.
    pub fn encode(&self) -> String {
        if let Ok(m) = self.cosigned_at.lock() {
            for (log, at) in m.iter() {
                let age = i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX);
                self.checkpoint_age
                    .get_or_create(&LogLabel { log: log.clone() })
                    .set(age);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` (loopback only) until `shutdown` resolves;
/// `render` is called for every scrape.
pub async fn serve_loopback(
    addr: &str,
    render: Arc<dyn Fn() -> futures::future::BoxFuture<'static, String> + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e| format!("metrics_listen {addr:?}: {e}"))?;
    if !parsed.ip().is_loopback() {
        return Err(format!(
            "metrics_listen {addr:?} must be a loopback address: metrics are scraped on the host"
        ));
    }
    let listener = tokio::net::TcpListener::bind(parsed)
        .await
        .map_err(|e| format!("metrics_listen {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("metrics_listen {addr}: {e}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render().await,
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok((bound, task))
}

/// Checks a `metrics_listen` setting: absent, or a loopback address.
pub fn check_metrics_listen(value: Option<&str>) -> Result<(), palisade_core::config::FieldError> {
    match value {
        None => Ok(()),
        Some(m) if m.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback()) => Ok(()),
        Some(m) => Err(palisade_core::config::FieldError::new(
            "metrics_listen",
            format!("{m:?} must be a loopback address such as 127.0.0.1:9465"),
        )),
    }
}

/// Serves [`METRICS`] on `addr` until the returned task is aborted.
pub async fn serve_service_metrics(
    addr: &str,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let render: Arc<dyn Fn() -> futures::future::BoxFuture<'static, String> + Send + Sync> =
        Arc::new(|| Box::pin(async { METRICS.encode() }));
    serve_loopback(addr, render, std::future::pending()).await
}
