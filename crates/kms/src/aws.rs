//! The AWS KMS backend: the KEK is a customer-owned symmetric key in AWS KMS (or any
//! service speaking its JSON API, such as moto in the tests), used through
//! `TrentService.Encrypt` / `Decrypt` / `DescribeKey`.
//!
//! Why not `aws-sdk-kms`: the SDK and its runtime are several hundred thousand lines to
//! compile for three JSON calls. This backend signs requests with `aws-sigv4` (the
//! SDK's own signer, tested against AWS's SigV4 suite) and sends them with `reqwest`
//! on rustls with the ring provider (docs/kms.md, "AWS KMS backend").
//!
//! - Every request carries an encryption context (`palisade.dev/purpose`), so a
//!   ciphertext wrapped for another purpose with the same key does not decrypt here.
//! - The body is signed by its SHA-256 only, so the signer never sees (or traces) the
//!   plaintext.
//! - Only customer-managed, enabled, symmetric ENCRYPT_DECRYPT keys are accepted.
//! - key_id = `aws:<key ARN>`: ARNs embed a key UUID that AWS never reuses; AWS's own
//!   automatic rotation keeps every older key version able to decrypt, so the id stays
//!   valid for all ciphertexts made under it. Rotation to a *new* key is done by
//!   configuring the new key first (docs/kms.md).
//! - Credentials come from the standard AWS chain (environment, shared profile, web
//!   identity, container, instance metadata; [`palisade_aws`]), fetched again before
//!   temporary ones expire.

use crate::kek::{check_key_id, Backend, Kek, KekError, KeyId};
use async_trait::async_trait;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// The encryption context bound to every ciphertext.
const CONTEXT_KEY: &str = "palisade.dev/purpose";
const CONTEXT_VALUE: &str = "kms-v2-kek";

pub use palisade_aws::AwsCredentials;

/// Where the keys are, and the credentials to use them.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub region: String,
    /// Default: `https://kms.<region>.amazonaws.com/`.
    pub endpoint: Option<String>,
    pub credentials: palisade_aws::AwsCredentials,
}

impl AwsConfig {
    /// Credentials from the standard AWS chain ([`palisade_aws`]).
    pub fn standard(region: String, endpoint: Option<String>) -> Self {
        let credentials = palisade_aws::AwsCredentials::standard_chain(Some(&region));
        Self {
            region,
            endpoint,
            credentials,
        }
    }
}

/// A signed-request client of one KMS endpoint.
pub struct AwsKms {
    config: AwsConfig,
    endpoint: String,
    host: String,
    http: reqwest::Client,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptBody<'a> {
    key_id: &'a str,
    plaintext: String,
    encryption_context: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptBody<'a> {
    key_id: &'a str,
    ciphertext_blob: String,
    encryption_context: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeBody<'a> {
    key_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptAnswer {
    ciphertext_blob: String,
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptAnswer {
    plaintext: String,
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeAnswer {
    key_metadata: KeyMetadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    arn: String,
    #[serde(default)]
    key_state: Option<String>,
    #[serde(default)]
    key_usage: Option<String>,
    #[serde(default)]
    key_manager: Option<String>,
    #[serde(default)]
    key_spec: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(rename = "__type", default)]
    kind: String,
}

fn context() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([(CONTEXT_KEY, CONTEXT_VALUE)])
}

fn unavailable(what: impl std::fmt::Display) -> KekError {
    KekError::Unavailable(format!("aws kms: {what}"))
}

impl AwsKms {
    pub fn new(config: AwsConfig) -> Result<Arc<Self>, KekError> {
        // The workspace's rustls has only the ring provider; make it the process
        // default (a no-op if someone already installed one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kms.{}.amazonaws.com/", config.region));
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| KekError::Invalid(format!("{endpoint:?} is not a URL")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| KekError::Invalid(format!("{endpoint:?} has no host")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_millis(2500))
            .build()
            .map_err(|e| KekError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Arc::new(Self {
            config,
            endpoint,
            host,
            http,
        }))
    }

    /// One signed `TrentService.<action>` call.
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        action: &str,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<T, KekError> {
        let target = format!("TrentService.{action}");
        let content_type = "application/x-amz-json-1.1";
        let body_hash = hex::encode(Sha256::digest(&body[..]));
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", content_type),
            ("x-amz-target", target.as_str()),
        ];
        let identity = self
            .config
            .credentials
            .get()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| unavailable(format!("signing parameters: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Precomputed(body_hash),
        )
        .map_err(|e| unavailable(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| unavailable(format!("cannot sign: {e}")))?
            .into_parts();
        let mut req = self
            .http
            .post(&self.endpoint)
            .header("content-type", content_type)
            .header("x-amz-target", &target);
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        let resp = req
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| unavailable(format!("{action}: {}", without_url(&e))))?;
        let status = resp.status();
        let bytes = Zeroizing::new(
            resp.bytes()
                .await
                .map_err(|e| unavailable(format!("{action}: {}", without_url(&e))))?
                .to_vec(),
        );
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|_| unavailable(format!("{action}: malformed answer")));
        }
        let kind = serde_json::from_slice::<ErrorAnswer>(&bytes)
            .map(|e| e.kind)
            .unwrap_or_default();
        // The type is an AWS error name such as `NotFoundException`; the message is
        // not used, so nothing from the request can echo into logs.
        let kind = kind.rsplit('#').next().unwrap_or_default().to_string();
        match kind.as_str() {
            "InvalidCiphertextException" | "IncorrectKeyException" => Err(KekError::Undecryptable),
            _ => Err(unavailable(format!(
                "{action}: HTTP {} {kind}",
                status.as_u16()
            ))),
        }
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let e = e.to_string();
    e.chars().take(200).collect()
}

/// A customer-owned key in AWS KMS.
pub struct AwsKek {
    kms: Arc<AwsKms>,
    arn: String,
    key_id: KeyId,
}

impl AwsKek {
    /// Resolves `key` (id, ARN or alias) with DescribeKey and checks that it may be used.
    pub async fn open(kms: Arc<AwsKms>, key: &str) -> Result<Self, KekError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&DescribeBody { key_id: key })
                .map_err(|e| KekError::Invalid(e.to_string()))?,
        );
        let meta = kms
            .call::<DescribeAnswer>("DescribeKey", body)
            .await?
            .key_metadata;
        let refuse = |why: String| Err(KekError::Refused(format!("AWS key {key}: {why}")));
        if let Some(state) = &meta.key_state {
            if state != "Enabled" {
                return refuse(format!("its state is {state}, not Enabled"));
            }
        }
        if let Some(usage) = &meta.key_usage {
            if usage != "ENCRYPT_DECRYPT" {
                return refuse(format!("its usage is {usage}, not ENCRYPT_DECRYPT"));
            }
        }
        if let Some(manager) = &meta.key_manager {
            if manager != "CUSTOMER" {
                return refuse(format!(
                    "it is managed by {manager}; only customer-managed keys are accepted"
                ));
            }
        }
        if let Some(spec) = &meta.key_spec {
            if spec != "SYMMETRIC_DEFAULT" {
                return refuse(format!("its key spec is {spec}, not SYMMETRIC_DEFAULT"));
            }
        }
        let key_id = KeyId::new(format!("aws:{}", meta.arn))
            .map_err(|e| KekError::Invalid(format!("key ARN: {e}")))?;
        Ok(Self {
            kms,
            arn: meta.arn,
            key_id,
        })
    }
}

#[async_trait]
impl Kek for AwsKek {
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    fn backend(&self) -> Backend {
        Backend::Aws
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&EncryptBody {
                key_id: &self.arn,
                plaintext: B64.encode(plaintext),
                encryption_context: context(),
            })
            .map_err(|e| KekError::Invalid(e.to_string()))?,
        );
        let answer: EncryptAnswer = self.kms.call("Encrypt", body).await?;
        if answer.key_id != self.arn {
            return Err(unavailable("Encrypt answered for another key"));
        }
        B64.decode(answer.ciphertext_blob)
            .map_err(|_| unavailable("Encrypt: malformed ciphertext"))
    }

    async fn decrypt(&self, key_id: &KeyId, ciphertext: &[u8]) -> Result<Vec<u8>, KekError> {
        check_key_id(&self.key_id, key_id)?;
        let body = Zeroizing::new(
            serde_json::to_vec(&DecryptBody {
                key_id: &self.arn,
                ciphertext_blob: B64.encode(ciphertext),
                encryption_context: context(),
            })
            .map_err(|e| KekError::Invalid(e.to_string()))?,
        );
        let answer: DecryptAnswer = self.kms.call("Decrypt", body).await?;
        let answer_plaintext = Zeroizing::new(answer.plaintext);
        if answer.key_id != self.arn {
            return Err(KekError::Undecryptable);
        }
        B64.decode(answer_plaintext.as_bytes())
            .map_err(|_| unavailable("Decrypt: malformed plaintext"))
    }
}
