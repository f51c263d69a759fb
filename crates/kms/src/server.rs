//! Starting the plugin: open the configured keys (refusing what must not be used),
//! bind the socket and the metrics listener, serve until told to stop.

use crate::file_key::{FileKek, FileKeyError};
use crate::health::{Health, HealthPolicy};
use crate::kek::{Kek, KekError};
use crate::keyring::{KeyRing, KeyRingError};
use crate::metrics::{self, Metrics, MetricsError};
use crate::pkcs11::{Pkcs11Kek, Token, TokenConfig};
use crate::service::KmsService;
use crate::socket::{self, ListenAddr, PeerPolicy, SocketError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Which backend holds the keys, and which keys (the first is the primary).
#[derive(Debug, Clone)]
pub enum BackendConfig {
    Pkcs11 {
        token: TokenConfig,
        key_labels: Vec<String>,
    },
    #[cfg(feature = "aws")]
    Aws {
        aws: crate::aws::AwsConfig,
        key_ids: Vec<String>,
    },
    File {
        key_files: Vec<PathBuf>,
        /// Must be true: the file backend is for development only.
        allow_insecure_dev_key: bool,
    },
}

/// Everything `palisade kms serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: ListenAddr,
    pub backend: BackendConfig,
    /// `None`: this process's uid and root.
    pub allowed_uids: Option<Vec<u32>>,
    pub metrics_listen: Option<SocketAddr>,
    pub health: HealthPolicy,
}

/// Why the plugin cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the file backend keeps the key on this host's disk and is for development only; pass --allow-insecure-dev-key to use it anyway")]
    InsecureDevKeyNotAllowed,
    #[error("no key configured: give at least one key (the first one encrypts)")]
    NoKey,
    #[error("key {name}: {source}")]
    Key { name: String, source: KekError },
    #[error(transparent)]
    FileKey(#[from] FileKeyError),
    #[error(transparent)]
    KeyRing(#[from] KeyRingError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("the gRPC server stopped: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Opens every configured key; refuses keys that must not be used.
pub async fn open_keys(backend: &BackendConfig) -> Result<KeyRing, ServeError> {
    let mut keys: Vec<Arc<dyn Kek>> = Vec::new();
    match backend {
        BackendConfig::Pkcs11 { token, key_labels } => {
            let token = Token::new(token.clone());
            for label in key_labels {
                let kek = Pkcs11Kek::open(token.clone(), label)
                    .await
                    .map_err(|source| ServeError::Key {
                        name: label.clone(),
                        source,
                    })?;
                keys.push(Arc::new(kek));
            }
        }
        #[cfg(feature = "aws")]
        BackendConfig::Aws { aws, key_ids } => {
            let client =
                crate::aws::AwsKms::new(aws.clone()).map_err(|source| ServeError::Key {
                    name: "aws".into(),
                    source,
                })?;
            for id in key_ids {
                let kek = crate::aws::AwsKek::open(client.clone(), id)
                    .await
                    .map_err(|source| ServeError::Key {
                        name: id.clone(),
                        source,
                    })?;
                keys.push(Arc::new(kek));
            }
        }
        BackendConfig::File {
            key_files,
            allow_insecure_dev_key,
        } => {
            if !allow_insecure_dev_key {
                return Err(ServeError::InsecureDevKeyNotAllowed);
            }
            for path in key_files {
                keys.push(Arc::new(FileKek::load(path)?));
            }
            tracing::warn!(
                "INSECURE: serving with a development key read from a file on this host. \
                 Anyone with root here can read it, so customer data is NOT protected from \
                 operators (claim C5 does not hold). Never use this outside development."
            );
        }
    }
    if keys.is_empty() {
        return Err(ServeError::NoKey);
    }
    Ok(KeyRing::new(keys)?)
}

/// A plugin serving in the background.
pub struct Running {
    /// Where the metrics are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops serving, removes the socket file, waits for the server to end.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// Serves `ring` on `listen` in the background.
pub async fn start(
    listen: &ListenAddr,
    ring: KeyRing,
    allowed_uids: Option<Vec<u32>>,
    metrics_listen: Option<SocketAddr>,
    health_policy: HealthPolicy,
) -> Result<Running, ServeError> {
    let policy = match allowed_uids {
        Some(uids) => PeerPolicy::uids(uids),
        None => PeerPolicy::own_and_root()?,
    };
    let ring = Arc::new(ring);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(ring.clone(), metrics.clone(), health_policy));
    // One probe at start: the backend's health is known (and exported) before
    // kube-apiserver first asks.
    {
        let health = health.clone();
        tokio::spawn(async move {
            let _ = health.check().await;
        });
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut metrics_addr = None;
    let mut metrics_task = None;
    if let Some(addr) = metrics_listen {
        let (bound, serve) = metrics::bind(addr, metrics.clone(), wait(stopped.clone())).await?;
        metrics_addr = Some(bound);
        metrics_task = Some(tokio::spawn(serve));
    }

    let socket::BoundSocket { listener, guard } = socket::bind(listen).await?;
    let service = KmsService::new(ring.clone(), health, metrics.clone());
    let reject_metrics = metrics.clone();
    let on_reject: Arc<dyn Fn() + Send + Sync> = Arc::new(move || reject_metrics.peer_rejected());
    let allowed: Vec<u32> = policy.allowed().collect();
    tracing::info!(
        listen = %listen,
        primary_key_id = %ring.primary().key_id(),
        keys = ring.keys().count(),
        backend = %ring.primary().backend(),
        allowed_uids = ?allowed,
        metrics = ?metrics_addr,
        "KMS v2 plugin serving"
    );
    let shutdown = wait(stopped);
    let checked = policy.clone();
    let server =
        crate::pb::key_management_service_server::KeyManagementServiceServer::with_interceptor(
            service,
            move |req| checked.check(req),
        );
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(socket::incoming(listener, policy, on_reject), shutdown)
            .await;
        drop(guard);
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        tracing::info!("KMS v2 plugin stopped");
        result.map_err(ServeError::from)
    });
    Ok(Running {
        metrics_addr,
        metrics,
        stop,
        task,
    })
}

/// Opens the keys and serves until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let ring = open_keys(&config.backend).await?;
    let running = start(
        &config.listen,
        ring,
        config.allowed_uids,
        config.metrics_listen,
        config.health,
    )
    .await?;
    shutdown.await;
    running.stop().await
}
