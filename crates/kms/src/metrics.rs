//! Prometheus metrics on a separate loopback listener, in the text exposition format.
//!
//! Labels are the operation, the backend and (for errors) the gRPC code: never a
//! key_id (it would let the label set grow without bound), never request data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: &'static str,
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: &'static str,
    backend: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

type HistogramFamily = Family<OpLabels, Histogram, fn() -> Histogram>;

/// The plugin's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<OpLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: HistogramFamily,
    healthy: Family<BackendLabels, Gauge>,
    peers_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s: an in-process key answers in microseconds, an HSM or cloud KMS
    // in milliseconds, and the apiserver gives up after 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade_kms");
        let requests = Family::<OpLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let healthy = Family::<BackendLabels, Gauge>::default();
        let peers_rejected = Counter::default();
        registry.register("requests", "KMS v2 requests answered", requests.clone());
        registry.register(
            "errors",
            "KMS v2 requests answered with an error, by gRPC code",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a KMS v2 request",
            latency.clone(),
        );
        registry.register(
            "backend_healthy",
            "1 when the last health probe of the primary key succeeded",
            healthy.clone(),
        );
        registry.register(
            "peers_rejected",
            "Connections refused by the peer-credential check",
            peers_rejected.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            latency,
            healthy,
            peers_rejected,
        }
    }

    /// Records one answered request.
    pub fn observe(
        &self,
        operation: &'static str,
        backend: &'static str,
        elapsed: Duration,
        error_code: Option<&'static str>,
    ) {
        let labels = OpLabels { operation, backend };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error_code {
            self.errors
                .get_or_create(&ErrorLabels {
                    operation,
                    backend,
                    code,
                })
                .inc();
        }
    }

    pub fn set_healthy(&self, backend: &'static str, healthy: bool) {
        self.healthy
            .get_or_create(&BackendLabels { backend })
            .set(i64::from(healthy));
    }

    pub fn peer_rejected(&self) {
        self.peers_rejected.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Why the metrics listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("the metrics listener must be on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the metrics listener (loopback only) and returns the bound address and the
/// future that serves `GET /metrics` until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), MetricsError> {
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    m.render(),
                )
            }
        }),
    );
    let serve = async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    };
    Ok((bound, serve))
}
