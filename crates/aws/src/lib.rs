//! One AWS credential model for every Palisade process that talks to AWS: the log's
//! S3 storage, the agent's S3 backups and the KMS plugin's AWS KMS backend.
//!
//! [`AwsCredentials::standard_chain`] is the AWS SDK's own default provider chain
//! (`aws-config`), in its order: environment variables (`AWS_ACCESS_KEY_ID`, …), the
//! shared config and credentials files (`AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`,
//! `AWS_CONFIG_FILE`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` with
//! `AWS_ROLE_ARN`, as on EKS), the ECS container endpoint, and EC2 instance metadata
//! (IMDSv2). [`AwsCredentials::fixed`] holds keys read from a file a configuration
//! names. Either way, credentials are kept until five minutes before they expire and
//! then fetched again, so a role's temporary credentials are renewed without a
//! restart.
//!
//! Why `aws-config` rather than hand-written providers: web identity needs STS and
//! IMDSv2 a session token dance; the SDK's chain is the reference behaviour users
//! expect, maintained by AWS. Signing stays with each client (object_store signs S3
//! requests, the KMS backend signs with `aws-sigv4`).
#![forbid(unsafe_code)]

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// Renew credentials this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// Where a process's AWS credentials come from, with a cache.
#[derive(Clone)]
pub struct AwsCredentials {
    provider: Provider,
    source: &'static str,
    cached: Arc<Mutex<Option<Credentials>>>,
}

#[derive(Clone)]
enum Provider {
    Fixed(SharedCredentialsProvider),
    /// The chain, built at the first use (building it reads the profile files).
    Chain {
        region: Option<String>,
        built: Arc<tokio::sync::OnceCell<SharedCredentialsProvider>>,
    },
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
#[error("no AWS credentials from {source_name}: {reason} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE with a shared credentials file, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or run where instance metadata serves a role)")]
pub struct CredentialsError {
    source_name: &'static str,
    reason: String,
}

impl AwsCredentials {
    /// The AWS SDK's default provider chain (module documentation). `region` is
    /// where STS is asked for web-identity credentials.
    pub fn standard_chain(region: Option<&str>) -> Self {
        Self {
            provider: Provider::Chain {
                region: region.map(str::to_string),
                built: Arc::new(tokio::sync::OnceCell::new()),
            },
            source: "the standard AWS provider chain",
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// Fixed keys (from a file a configuration names).
    pub fn fixed(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> Self {
        let creds = Credentials::from_keys(
            access_key_id,
            secret_access_key,
            session_token.map(str::to_string),
        );
        Self {
            provider: Provider::Fixed(SharedCredentialsProvider::new(creds)),
            source: "a credentials file",
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// Keys from a file holding `<access key id>:<secret access key>` (optionally
    /// `:<session token>`).
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("credentials file {}: {e}", path.display()))?;
        let mut parts = text.trim().splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(secret), token) if !id.is_empty() && !secret.is_empty() => {
                Ok(Self::fixed(id, secret, token))
            }
            _ => Err(format!(
                "credentials file {} must hold <access key id>:<secret access key>",
                path.display()
            )),
        }
    }

    /// `file`'s keys if a file is named, else the standard chain.
    pub fn file_or_chain(
        file: Option<&std::path::Path>,
        region: Option<&str>,
    ) -> Result<Self, String> {
        match file {
            Some(f) => Self::from_file(f),
            None => Ok(Self::standard_chain(region)),
        }
    }

    async fn provider(&self) -> &SharedCredentialsProvider {
        match &self.provider {
            Provider::Fixed(p) => p,
            Provider::Chain { region, built } => {
                built
                    .get_or_init(|| async {
                        let mut b =
                        aws_config::default_provider::credentials::DefaultCredentialsChain::builder(
                        );
                        if let Some(r) = region {
                            b = b.region(aws_config::Region::new(r.clone()));
                        }
                        SharedCredentialsProvider::new(b.build().await)
                    })
                    .await
            }
        }
    }

    /// Current credentials: cached until [`RENEW_BEFORE`] their expiry.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + RENEW_BEFORE);
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self
            .provider()
            .await
            .provide_credentials()
            .await
            .map_err(|e| CredentialsError {
                source_name: self.source,
                reason: error_chain(&e),
            })?;
        tracing::debug!(source = self.source, expires = ?c.expiry(), "AWS credentials obtained");
        *cached = Some(c.clone());
        Ok(c)
    }

    /// These credentials for object_store's S3 client.
    pub fn for_object_store(
        &self,
    ) -> Arc<dyn object_store::CredentialProvider<Credential = object_store::aws::AwsCredential>>
    {
        Arc::new(ObjectStoreCredentials(self.clone()))
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[derive(Debug)]
struct ObjectStoreCredentials(AwsCredentials);

#[async_trait::async_trait]
impl object_store::CredentialProvider for ObjectStoreCredentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let c = self
            .0
            .get()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(Arc::new(object_store::aws::AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_keys_come_back_and_a_file_must_hold_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "AKIDEXAMPLE:secret\n").unwrap();
        let c = AwsCredentials::from_file(&f).unwrap().get().await.unwrap();
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key(), "secret");
        assert_eq!(c.session_token(), None);
        std::fs::write(&f, "AKIDEXAMPLE\n").unwrap();
        assert!(AwsCredentials::from_file(&f)
            .unwrap_err()
            .contains("<access key id>:<secret access key>"));
    }
}
