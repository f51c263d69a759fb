//! Tenants' approval webhooks. A tenant registers, with its reader token, one HTTPS
//! URL per cluster; every request for its approval is then POSTed there as canonical
//! JSON, signed by the gateway's key (header `Palisade-Signature: keyid=…,sig=…`, an
//! Ed25519 signature over the exact body), and retried with backoff until the
//! endpoint answers 2xx. Each delivery's outcome is logged and kept with the request
//! (`notified` in the request list). A notification only tells; what runs depends on
//! the approvals, never on the webhook.

use crate::pipeline::Gateway;
use crate::problem::Problem;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, TenantId};
use palisade_state::Namespace;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const WEBHOOKS: Namespace = Namespace::new("gateway_webhooks");
/// Attempts per notification: after 1, 2, 4, … 64 s (about two minutes in all).
const ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hook {
    url: String,
    registered_at: Timestamp,
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::new(503, "state unavailable", e.to_string())
}

fn check_url(text: &str) -> Result<reqwest::Url, Problem> {
    let bad = |d: String| Problem::new(400, "invalid webhook", d);
    if text.len() > 2048 {
        return Err(bad("the URL is longer than 2048 characters".into()));
    }
    let url = reqwest::Url::parse(text).map_err(|e| bad(format!("not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(bad("a webhook is reached over https only".into()));
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(bad("the URL needs a host and no user or password".into()));
    }
    Ok(url)
}

impl Gateway {
    async fn hook(&self, cluster: &ClusterId) -> Result<Option<Hook>, Problem> {
        match self
            .ops
            .store()
            .get(WEBHOOKS, cluster.as_str())
            .await
            .map_err(unavailable)?
        {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Problem::new(500, "internal error", e.to_string())),
        }
    }

    /// `GET /v1/tenants/{tenant}/clusters/{cluster}/webhook`.
    pub async fn webhook(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        match self.hook(&cid).await? {
            Some(h) => {
                Ok(json!({"cluster": cid.as_str(), "url": h.url, "registered_at": h.registered_at}))
            }
            None => Err(Problem::new(
                404,
                "no webhook",
                format!("cluster {cid} has no approval webhook"),
            )),
        }
    }

    /// `PUT /v1/tenants/{tenant}/clusters/{cluster}/webhook` (`{"url": "https://…"}`).
    pub async fn put_webhook(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
        body: &[u8],
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            url: String,
        }
        let b: Body = serde_json::from_slice(body)
            .map_err(|e| Problem::new(400, "bad request", format!("request body: {e}")))?;
        let url = check_url(&b.url)?;
        let hook = Hook {
            url: url.to_string(),
            registered_at: Timestamp::now(),
        };
        let bytes = serde_json::to_vec(&hook)
            .map_err(|e| Problem::new(500, "internal error", e.to_string()))?;
        self.ops
            .store()
            .put(WEBHOOKS, cid.as_str(), bytes)
            .await
            .map_err(unavailable)?;
        tracing::info!(cluster = %cid, url = %hook.url, "approval webhook registered");
        Ok(json!({"cluster": cid.as_str(), "url": hook.url, "registered_at": hook.registered_at}))
    }

    /// `DELETE /v1/tenants/{tenant}/clusters/{cluster}/webhook`.
    pub async fn delete_webhook(
        &self,
        reader: &TenantId,
        path_tenant: &str,
        cluster: &str,
    ) -> Result<Value, Problem> {
        let cid = self.readable_cluster(reader, path_tenant, cluster)?;
        let removed = self
            .ops
            .store()
            .delete(WEBHOOKS, cid.as_str())
            .await
            .map_err(unavailable)?;
        Ok(json!({"cluster": cid.as_str(), "removed": removed}))
    }

    /// POSTs `notification` to the cluster's webhook, if it has one, in the
    /// background; the request `id` records how delivery went.
    pub(crate) fn notify(self: &Arc<Self>, cluster: ClusterId, id: String, notification: Value) {
        let gw = self.clone();
        tokio::spawn(async move {
            let hook = match gw.hook(&cluster).await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(%cluster, error = %e.detail, "cannot read the approval webhook");
                    return;
                }
            };
            let outcome = gw.deliver(&hook.url, &notification).await;
            match &outcome {
                Ok(n) => {
                    tracing::info!(%cluster, request = %id, url = %hook.url, attempts = n, "approval request delivered to the tenant's webhook")
                }
                Err(e) => {
                    tracing::warn!(%cluster, request = %id, url = %hook.url, error = %e, "approval request not delivered to the tenant's webhook")
                }
            }
            let note = match outcome {
                Ok(n) => format!(
                    "delivered to {} at {} (attempt {n})",
                    hook.url,
                    Timestamp::now()
                ),
                Err(e) => format!("not delivered to {}: {e}", hook.url),
            };
            gw.note_delivery(&id, note).await;
        });
    }

    /// Sends until a 2xx answer; the number of attempts, or the last problem.
    async fn deliver(&self, url: &str, notification: &Value) -> Result<u32, String> {
        let body = palisade_core::canonical::value_to_canonical_vec(notification)
            .map_err(|e| e.to_string())?;
        let key = self.dispatcher().signing_key();
        let signature = format!(
            "keyid={},sig={}",
            key.key_id(),
            STANDARD.encode(key.sign(&body))
        );
        let client = self.webhook_client()?;
        let mut delay = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = client
                .post(url)
                .header("content-type", "application/json")
                .header("palisade-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(attempt),
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(format!("{last} (after {ATTEMPTS} attempts)"))
    }

    fn webhook_client(&self) -> Result<reqwest::Client, String> {
        palisade_pki::install_default_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none());
        let builder = match &self.config().webhook_ca {
            Some(ca) => {
                let roots = palisade_pki::load_roots(ca).map_err(|e| e.to_string())?;
                let tls =
                    rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| e.to_string())?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                builder.tls_backend_preconfigured(tls)
            }
            None => builder,
        };
        builder.build().map_err(|e| e.to_string())
    }
}
