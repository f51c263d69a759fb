//! The KMS v2 gRPC service. Each call reads top to bottom: parse and bound the request
//! ([`crate::limits`]), pick the key (primary for Encrypt, by key_id for Decrypt, no
//! fallback), call the backend with a deadline (a Decrypt failure that could be bad
//! data or a broken backend is told apart by [`crate::ambiguity`]), check the answer against what
//! kube-apiserver accepts, record metrics. Logs carry the request uid, the key_id
//! and sizes; never plaintext, ciphertext or key material.

use crate::health::Health;
use crate::kek::KekError;
use crate::keyring::KeyRing;
use crate::limits::{self, LimitError};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::key_management_service_server::KeyManagementService;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status};

/// kube-apiserver's default per-call timeout; a backend call that takes longer is
/// abandoned with `DeadlineExceeded`.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(3);

/// The service: the keys, their health and the metrics.
pub struct KmsService {
    ring: Arc<KeyRing>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl KmsService {
    pub fn new(ring: Arc<KeyRing>, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        Self {
            ring,
            health,
            metrics,
        }
    }

    pub fn into_server(
        self,
    ) -> pb::key_management_service_server::KeyManagementServiceServer<Self> {
        pb::key_management_service_server::KeyManagementServiceServer::new(self)
    }

    fn finish<T>(
        &self,
        operation: &'static str,
        backend: &'static str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = result.as_ref().err().map(|s| code_name(s.code()));
        self.metrics
            .observe(operation, backend, started.elapsed(), code);
        result.map(Response::new)
    }
}

fn invalid(e: LimitError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn backend_status(e: KekError) -> Status {
    match e {
        KekError::Unavailable(_) => Status::unavailable(e.to_string()),
        KekError::Undecryptable | KekError::Invalid(_) => Status::invalid_argument(e.to_string()),
        KekError::Refused(_) => Status::failed_precondition(e.to_string()),
    }
}

async fn with_deadline<T>(
    f: impl std::future::Future<Output = Result<T, KekError>>,
) -> Result<T, Status> {
    match tokio::time::timeout(BACKEND_TIMEOUT, f).await {
        Ok(r) => r.map_err(backend_status),
        Err(_) => Err(Status::deadline_exceeded(
            "the key backend did not answer in time",
        )),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::Unavailable => "unavailable",
        Code::FailedPrecondition => "failed_precondition",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Internal => "internal",
        _ => "other",
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let started = Instant::now();
        let primary = self.ring.primary();
        let healthz = match self.health.check().await {
            Ok(()) => "ok".to_string(),
            Err(reason) => reason,
        };
        let resp = pb::StatusResponse {
            version: crate::API_VERSION.to_string(),
            healthz,
            key_id: primary.key_id().to_string(),
        };
        self.finish("status", primary.backend().as_str(), started, Ok(resp))
    }

    async fn encrypt(
        &self,
        request: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let started = Instant::now();
        let primary = self.ring.primary().clone();
        let backend = primary.backend().as_str();
        let result = async {
            let input = limits::encrypt_input(request.into_inner()).map_err(invalid)?;
            let ciphertext = with_deadline(primary.encrypt(&input.plaintext)).await;
            let ciphertext = match ciphertext {
                Ok(ct) => ct,
                Err(status) => {
                    tracing::warn!(uid = input.uid.as_str(), key_id = %primary.key_id(), error = status.message(), "encrypt failed");
                    return Err(status);
                }
            };
            // What kube-apiserver would reject must not leave the plugin.
            if limits::check_ciphertext(&ciphertext).is_err() {
                tracing::error!(uid = input.uid.as_str(), len = ciphertext.len(), "backend ciphertext outside 1..=1024 bytes");
                return Err(Status::internal("the backend produced a ciphertext outside 1..=1024 bytes"));
            }
            tracing::debug!(uid = input.uid.as_str(), key_id = %primary.key_id(), plaintext_len = input.plaintext.len(), "encrypted");
            Ok(pb::EncryptResponse {
                ciphertext,
                key_id: primary.key_id().to_string(),
                annotations: Default::default(),
            })
        }
        .await;
        self.finish("encrypt", backend, started, result)
    }

    async fn decrypt(
        &self,
        request: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let started = Instant::now();
        let input = match limits::decrypt_input(request.into_inner()) {
            Ok(i) => i,
            Err(e) => {
                let backend = self.ring.primary().backend().as_str();
                return self.finish("decrypt", backend, started, Err(invalid(e)));
            }
        };
        let Some(kek) = self.ring.get(&input.key_id).cloned() else {
            tracing::warn!(uid = input.uid.as_str(), key_id = %input.key_id, "decrypt for an unknown key_id refused");
            let status = Status::not_found(format!(
                "key_id {} is not configured in this plugin",
                input.key_id
            ));
            return self.finish("decrypt", "none", started, Err(status));
        };
        let backend = kek.backend().as_str();
        let decrypted = crate::ambiguity::decrypt(kek.as_ref(), &input.key_id, &input.ciphertext);
        let result = match with_deadline(decrypted).await {
            Ok(plaintext) => {
                tracing::debug!(uid = input.uid.as_str(), key_id = %input.key_id, "decrypted");
                Ok(pb::DecryptResponse { plaintext })
            }
            Err(status) => {
                tracing::warn!(uid = input.uid.as_str(), key_id = %input.key_id, error = status.message(), "decrypt failed");
                Err(status)
            }
        };
        self.finish("decrypt", backend, started, result)
    }
}
