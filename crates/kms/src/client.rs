//! A client of the plugin, for Palisade's own use (backups wrap their data keys with
//! the customer's KEK through the same plugin the apiserver uses) and for tests.

use crate::kek::{KeyId, KeyIdError};
use crate::pb;
use crate::pb::key_management_service_client::KeyManagementServiceClient;
use crate::socket::{ListenAddr, SocketError};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why a call through the plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Address(#[from] SocketError),
    #[error("cannot connect to the KMS plugin at {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("the KMS plugin refused the call: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the KMS plugin answered with an invalid key_id: {0}")]
    KeyId(#[from] KeyIdError),
}

/// A connection to the plugin's socket.
#[derive(Clone)]
pub struct KmsClient {
    inner: KeyManagementServiceClient<Channel>,
}

/// Status as the plugin reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    pub version: String,
    pub healthz: String,
    pub key_id: String,
}

impl KmsClient {
    /// Connects to `socket` (`unix:///path` or `unix:///@name`), with the 3-second
    /// per-call timeout the apiserver also uses.
    pub async fn connect(socket: &str) -> Result<Self, ClientError> {
        let addr: ListenAddr = socket.parse()?;
        let target = addr.clone();
        // The URI is only used for `:authority` (kube-apiserver sends `localhost`);
        // the connector below ignores it and dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(3))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let target = target.clone();
                async move { crate::socket::connect(&target).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self {
            inner: KeyManagementServiceClient::new(channel),
        })
    }

    /// The generated gRPC client, for callers that need the raw messages.
    pub fn raw(&mut self) -> &mut KeyManagementServiceClient<Channel> {
        &mut self.inner
    }

    pub async fn status(&mut self) -> Result<PluginStatus, ClientError> {
        let r = self.inner.status(pb::StatusRequest {}).await?.into_inner();
        Ok(PluginStatus {
            version: r.version,
            healthz: r.healthz,
            key_id: r.key_id,
        })
    }

    /// Wraps `plaintext` with the primary key; returns the ciphertext and the key_id to
    /// keep with it.
    pub async fn encrypt(&mut self, plaintext: &[u8]) -> Result<(Vec<u8>, KeyId), ClientError> {
        let r = self
            .inner
            .encrypt(pb::EncryptRequest {
                plaintext: plaintext.to_vec(),
                uid: new_uid(),
            })
            .await?
            .into_inner();
        Ok((r.ciphertext, KeyId::new(r.key_id)?))
    }

    /// Unwraps a ciphertext with the key named `key_id`.
    pub async fn decrypt(
        &mut self,
        ciphertext: &[u8],
        key_id: &KeyId,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        let r = self
            .inner
            .decrypt(pb::DecryptRequest {
                ciphertext: ciphertext.to_vec(),
                uid: new_uid(),
                key_id: key_id.to_string(),
                annotations: Default::default(),
            })
            .await?
            .into_inner();
        Ok(zeroize::Zeroizing::new(r.plaintext))
    }
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}
