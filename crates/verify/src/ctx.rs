//! What scenarios act through: the gateway as an operator and as a tenant, the agent
//! over mTLS, the log's HTTP API — and, in a local run, the deployment's private keys
//! and files (what an attacker who stole them would hold).

use crate::kube_stub::KubeStub;
use crate::report::{ReleaseDigest, Versions};
use anyhow::{anyhow, bail, Context as _};
use palisade_agent::client::{prepare, CallError, Dispatcher, Executed, Prepared, Request};
use palisade_agent::dispatch::AgentStatement;
use palisade_agent::dispatch::{AgentResult, DispatchRequest, Refusal};
use palisade_core::event::{Actor, Event, GrantRef, Justification};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, ClusterId, InstanceId, OperatorId, TenantId};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_policy::Policy;
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::note::{SignerKey, VerifierKey};
use palisade_tlog_service::server::AppendResponse;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const TICKET: &str = "SEC-2025";
pub const REASON: &str = "verify-claims adversarial check of this deployment";

/// The gateway, called as an operator or a tenant would.
pub struct GatewayClient {
    pub url: String,
    http: reqwest::Client,
}

impl GatewayClient {
    pub fn new(url: &str, ca: &Path) -> anyhow::Result<Self> {
        let roots = palisade_pki::load_roots(ca)?;
        let tls = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// (status, JSON body or the body as a JSON string).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let raw = body.map(|b| b.to_string());
        self.call_raw(method, path, token, raw.as_deref()).await
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(m, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// `GET path` with a bearer token: the status and the body's bytes.
    pub async fn get_bytes(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?.to_vec()))
    }

    /// `POST /v1/clusters/{cluster}/actions/{action}` with text arguments.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        token: &str,
        cluster: &str,
        action: &str,
        instance: Option<&str>,
        args: &[(&str, &str)],
        ticket: &str,
        reason: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let arguments: serde_json::Map<String, Value> = args
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let mut body =
            serde_json::json!({ "arguments": arguments, "ticket": ticket, "reason": reason });
        if let Some(i) = instance {
            body["instance"] = Value::String(i.to_string());
        }
        self.call(
            "POST",
            &format!("/v1/clusters/{cluster}/actions/{action}"),
            Some(token),
            Some(&body),
        )
        .await
    }

    pub async fn dev_token(&self, operator: &str) -> anyhow::Result<String> {
        let (status, v) = self
            .call(
                "POST",
                "/v1/dev/login",
                None,
                Some(&serde_json::json!({ "operator": operator })),
            )
            .await?;
        if status != 200 {
            bail!("dev login for {operator}: {status} {v}");
        }
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("dev login answered no token: {v}"))
    }
}

/// The deployment's private material and tools, in a local run.
pub struct Local {
    pub dir: PathBuf,
    pub base: u16,
    pub exe: PathBuf,
    pub dispatcher: Dispatcher,
    pub policy: Policy,
    pub agent_keys: Vec<PublicKey>,
    pub etcd_endpoint: String,
    pub kms: crate::deploy::KmsPlugin,
    pub kube: KubeStub,
    /// What `palisade up` printed (each child's lines prefixed with its name).
    pub up_output: std::sync::Arc<Mutex<Vec<String>>>,
}

pub struct Ctx {
    pub gw: GatewayClient,
    /// The operator on call for cluster `cluster` and a token for them.
    pub operator: String,
    pub op_token: String,
    pub tenant: String,
    pub tenant_token: String,
    pub cluster: String,
    pub instance: String,
    pub agent_url: String,
    /// A gateway certificate and key (what the agent accepts), and the CA.
    pub ca: PathBuf,
    pub gateway_cert: PathBuf,
    pub gateway_key: PathBuf,
    /// `https://host:port` of the log service.
    pub log_url: String,
    pub log_policy: LogPolicy,
    /// A per-run scratch directory.
    pub scratch: PathBuf,
    /// The KMS plugin's socket (`unix://…`), when it can be reached from here.
    pub kms_socket: Option<String>,
    /// A value planted in etcd and the kube stand-in that must never come back.
    pub canary: String,
    /// Every action output and result seen during the run (searched for the canary).
    pub outputs: Mutex<Vec<String>>,
    pub local: Option<Local>,
}

impl Ctx {
    /// The deployment's private side; scenarios of scope Local only.
    pub fn local(&self) -> anyhow::Result<&Local> {
        self.local
            .as_ref()
            .ok_or_else(|| anyhow!("needs a local deployment (not available with --against)"))
    }

    pub fn dir_display(&self) -> String {
        self.local
            .as_ref()
            .map(|l| l.dir.display().to_string())
            .unwrap_or_default()
    }

    pub fn record_output(&self, text: String) {
        if let Ok(mut o) = self.outputs.lock() {
            o.push(text);
        }
    }

    /// Runs `action` through the gateway as the on-call operator.
    pub async fn op_run(
        &self,
        action: &str,
        args: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let target = self
            .policy_target_is_instance(action)
            .then_some(self.instance.as_str());
        let r = self
            .gw
            .run(
                &self.op_token,
                &self.cluster,
                action,
                target,
                args,
                TICKET,
                REASON,
            )
            .await?;
        self.record_output(r.1.to_string());
        Ok(r)
    }

    fn policy_target_is_instance(&self, action: &str) -> bool {
        !matches!(
            action,
            "etcd.members"
                | "etcd.alarms"
                | "etcd.alarm-disarm"
                | "etcd.backup"
                | "etcd.backups"
                | "etcd.backup-prune"
                | "kube.nodes"
                | "kube.cordon"
                | "kube.uncordon"
        )
    }

    /// The event at `index` of the cluster's log, read as the customer reads it.
    /// A page of the cluster's access log from `from`, as the customer reads it
    /// (the page's `events` and `log_size`); any answer but 200 is an error.
    pub async fn events_page(&self, from: u64, limit: u64) -> anyhow::Result<Value> {
        let (status, page) = self
            .gw
            .call(
                "GET",
                &format!(
                    "/v1/tenants/{}/clusters/{}/events?from={from}&limit={limit}",
                    self.tenant, self.cluster
                ),
                Some(&self.tenant_token),
                None,
            )
            .await?;
        if status != 200 {
            bail!("the customer's access log answered {status}: {page}");
        }
        Ok(page)
    }

    pub async fn logged_event(&self, index: u64) -> anyhow::Result<Value> {
        let page = self.events_page(index, 1).await?;
        let e = &page["events"][0];
        if e["index"].as_u64() != Some(index) {
            bail!("the customer's access log has no entry {index}: {page}");
        }
        Ok(e["event"].clone())
    }

    /// Checks that a gateway refusal names its log entry, and that the customer reads
    /// a refusal event of `stage` there. Returns evidence.
    pub async fn logged_refusal(&self, problem: &Value, stage: &str) -> anyhow::Result<String> {
        let index = problem["log_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("the refusal was not logged: {problem}"))?;
        let event = self.logged_event(index).await?;
        if event["kind"] != "refusal" || event["stage"] != stage {
            bail!("log entry {index} is not a {stage} refusal: {event}");
        }
        Ok(format!("refusal logged at index {index} (stage {stage})"))
    }

    /// Expects a gateway refusal with `status` at `stage`, logged and readable by the
    /// customer.
    pub async fn expect_refusal(
        &self,
        what: &str,
        got: (u16, Value),
        status: u16,
        stage: &str,
    ) -> anyhow::Result<Vec<String>> {
        let (s, problem) = got;
        if s != status {
            bail!("{what}: expected HTTP {status}, got {s}: {problem}");
        }
        let logged = self.logged_refusal(&problem, stage).await?;
        Ok(vec![format!("{what}: HTTP {s}"), logged])
    }

    /// The size of the cluster's log as the customer reads it now.
    pub async fn log_size(&self) -> anyhow::Result<u64> {
        let page = self.events_page(0, 1).await?;
        page["log_size"]
            .as_u64()
            .ok_or_else(|| anyhow!("no log size: {page}"))
    }

    /// Expects the 401 every unauthenticated caller gets (no log index: the answer
    /// is the same whether the cluster exists or not), and an `authenticate` refusal
    /// in the customer's log at or after `from` (written in the background). Returns
    /// the evidence and the refusal's index.
    pub async fn expect_unauthenticated(
        &self,
        what: &str,
        got: (u16, Value),
        from: u64,
    ) -> anyhow::Result<(Vec<String>, u64)> {
        let (s, problem) = got;
        if s != 401 || problem.get("log_index").is_some() {
            bail!("{what}: expected HTTP 401 without a log index, got {s}: {problem}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.events_page(from, 100).await?;
            let found = page["events"].as_array().and_then(|events| {
                events.iter().find(|e| {
                    e["event"]["kind"] == "refusal"
                        && e["event"]["stage"] == "authenticate"
                        && e["event"].get("actor").is_none()
                })
            });
            if let Some(index) = found.and_then(|e| e["index"].as_u64()) {
                return Ok((
                    vec![
                        format!("{what}: HTTP 401, no log index in the answer"),
                        format!("refusal logged at index {index} (stage authenticate)"),
                    ],
                    index,
                ));
            }
            if std::time::Instant::now() > deadline {
                bail!("{what}: no authenticate refusal in the log from index {from} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// An HTTPS client presenting `cert`/`key` to the agent (or none).
    pub fn agent_client(&self, cert: Option<(&Path, &Path)>) -> anyhow::Result<reqwest::Client> {
        let tls = match cert {
            Some((c, k)) => {
                palisade_pki::client_config(&self.ca, c, k, &[palisade_pki::Role::Agent])?
            }
            None => rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(palisade_pki::load_roots(&self.ca)?)
                .with_no_client_auth(),
        };
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(20))
            .build()?)
    }

    pub fn gateway_agent_client(&self) -> anyhow::Result<reqwest::Client> {
        self.agent_client(Some((&self.gateway_cert, &self.gateway_key)))
    }

    /// What was tested.
    pub async fn versions(&self) -> Versions {
        let mut v = Versions {
            palisade: env!("CARGO_PKG_VERSION").to_string(),
            ..Versions::default()
        };
        if let Ok(agent) = self.gateway_agent_client() {
            if let Ok(r) = agent
                .get(format!("{}/healthz", self.agent_url))
                .send()
                .await
            {
                if let Some(h) = r
                    .text()
                    .await
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                {
                    v.policy_version = h["policy_version"].as_u64();
                    v.policy_digest = h["policy_digest"].as_str().map(str::to_string);
                }
            }
        }
        if let Ok((200, s)) = self.op_run("component.status", &[]).await {
            if let Some(list) = s["output"]["components"].as_array() {
                for c in list {
                    let name = c["name"].as_str().unwrap_or("?");
                    let version = c["version"].as_str().unwrap_or("?");
                    if name == "etcd" {
                        v.etcd = Some(version.to_string());
                    }
                    if let Some(sha) = c["artifact_sha256"].as_str() {
                        v.releases.push(ReleaseDigest {
                            target: format!("components/{name}/{version}/{name}"),
                            sha256: sha.to_string(),
                        });
                    }
                }
            }
        }
        if let Some(l) = &self.local {
            v.kms_key_id = Some(l.kms.key_id.clone());
        }
        v
    }
}

impl Local {
    /// What a gateway would send after authenticating and authorizing the operator.
    pub fn request(&self, action: &str, params: &[(&str, &str)]) -> anyhow::Result<Request> {
        let args: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let validated = self
            .policy
            .validate_args(action, &args)
            .map_err(|e| anyhow!("{action} does not validate: {e}"))?;
        Ok(Request {
            tenant: TenantId::parse("demo").map_err(|e| anyhow!("{e}"))?,
            cluster: ClusterId::parse("demo").map_err(|e| anyhow!("{e}"))?,
            instance: InstanceId::parse("demo-0").map_err(|e| anyhow!("{e}"))?,
            actor: actor()?,
            action: ActionName::parse(action).map_err(|e| anyhow!("{e}"))?,
            parameters: validated.params().clone(),
            justification: Justification {
                ticket: TICKET.into(),
                reason: REASON.into(),
            },
            policy: self.policy.reference(),
        })
    }

    pub fn prepare(&self, action: &str, params: &[(&str, &str)]) -> anyhow::Result<Prepared> {
        prepare(
            &self.request(action, params)?,
            Duration::from_secs(60),
            Timestamp::now(),
        )
        .map_err(|e| anyhow!("prepare {action}: {e}"))
    }

    pub fn agent_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.base + 3)
    }

    pub fn log_policy(&self) -> anyhow::Result<LogPolicy> {
        log_policy(&self.dir)
    }

    /// The whole gateway path for one action: log, dispatch, open the result.
    pub async fn execute(&self, action: &str, params: &[(&str, &str)]) -> anyhow::Result<Executed> {
        let p = self.prepare(action, params)?;
        self.dispatcher
            .execute(&self.agent_url(), &p, &self.log_policy()?, &self.agent_keys)
            .await
            .map_err(|e| anyhow!("{action}: {e}"))
    }

    pub async fn log_event(&self, event: &Event) -> anyhow::Result<(Vec<u8>, AppendResponse)> {
        let entry = event.to_log_entry().map_err(|e| anyhow!("{e}"))?;
        let appended = self
            .dispatcher
            .append("demo", &entry)
            .await
            .map_err(|e| anyhow!("append: {e}"))?;
        Ok((entry, appended))
    }

    /// Logs `p`'s intent and builds the request a correct gateway would send.
    pub async fn logged_request(&self, p: &Prepared) -> anyhow::Result<(DispatchRequest, u64)> {
        let (entry, appended) = self
            .log_event(&Event::Intent(Box::new(p.intent.clone())))
            .await?;
        let env = p
            .dispatch
            .sign(self.gateway_key())
            .map_err(|e| anyhow!("{e}"))?;
        Ok((
            self.request_for(&env, &entry, appended.index).await?,
            appended.index,
        ))
    }

    pub async fn request_for(
        &self,
        envelope: &Envelope,
        entry: &[u8],
        index: u64,
    ) -> anyhow::Result<DispatchRequest> {
        let seen = self.seen().await?;
        let (proof, consistency) = self
            .dispatcher
            .proofs("demo", &self.log_policy()?, index, seen)
            .await
            .map_err(|e| anyhow!("proofs: {e}"))?;
        Ok(DispatchRequest {
            dispatch: envelope.clone(),
            event: DispatchRequest::encode_event(entry),
            proof,
            consistency: (seen > 0).then_some(consistency),
            tenant_trust: self.dispatcher.tenant_trust("demo"),
            approval: None,
        })
    }

    pub async fn seen(&self) -> anyhow::Result<u64> {
        Ok(self
            .dispatcher
            .health(&self.agent_url())
            .await
            .map_err(|e| anyhow!("agent health: {e}"))?
            .log_size_seen)
    }

    pub fn gateway_key(&self) -> &SigningKey {
        self.dispatcher.signing_key()
    }

    pub async fn send(&self, req: &DispatchRequest) -> anyhow::Result<AgentResult> {
        let env = self
            .dispatcher
            .send(&self.agent_url(), req)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        AgentResult::verify(&env, &self.agent_keys).map_err(|e| anyhow!("unsigned result: {e}"))
    }

    /// Sends and expects a refusal.
    pub async fn refused(&self, req: &DispatchRequest) -> anyhow::Result<Refusal> {
        match self.dispatcher.send(&self.agent_url(), req).await {
            Err(CallError::Refused(r)) => Ok(r),
            Ok(env) => bail!(
                "the agent executed it: {:?}",
                AgentResult::verify(&env, &self.agent_keys).map(|r| r.outcome)
            ),
            Err(e) => bail!("expected a refusal, got {e}"),
        }
    }

    pub fn log_signer(&self) -> anyhow::Result<SignerKey> {
        read_signer(&self.dir.join("log/keys/palisade.local_log.key"))
    }

    pub fn witness_signer(&self) -> anyhow::Result<SignerKey> {
        read_signer(&self.dir.join("witness/keys/palisade.local_witness.key"))
    }

    /// The demo tenant's witness key (which the provider side never holds: an
    /// attacker with it holds the tenant's keys too).
    pub fn tenant_witness_signer(&self) -> anyhow::Result<SignerKey> {
        read_signer(
            &self
                .dir
                .join(palisade_core::inventory::demo_tenant::WITNESS_KEY),
        )
    }

    /// The real log's first `n` entries, read from its tiles (what a provider
    /// insider copying the log holds).
    pub async fn log_entries(&self, n: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        let source = self
            .dispatcher
            .source("demo")
            .map_err(|e| anyhow!("log source: {e}"))?;
        let (_, entries) =
            palisade_tlog_service::audit::read_entries(&source, &self.log_policy()?).await?;
        Ok(entries
            .into_iter()
            .take(usize::try_from(n)?)
            .map(|b| b.to_vec())
            .collect())
    }

    /// The lines the agent printed so far.
    pub fn agent_output(&self) -> Vec<String> {
        self.up_output
            .lock()
            .map(|o| {
                o.iter()
                    .filter(|l| l.starts_with("[agent]"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn read_signer(path: &Path) -> anyhow::Result<SignerKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SignerKey::parse(text.trim()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn actor() -> anyhow::Result<Actor> {
    Ok(Actor {
        service: None,
        authn: None,
        id: OperatorId::parse("op-verify").map_err(|e| anyhow!("{e}"))?,
        groups: vec!["sre".into()],
        grant: Some(GrantRef {
            schedule: "demo".into(),
            role: "senior-operator".into(),
            ends_at: Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3600),
        }),
    })
}

/// The demo cluster's checkpoint policy: log key, witness key, quorum 1.
pub fn log_policy(dir: &Path) -> anyhow::Result<LogPolicy> {
    let read = |p: PathBuf| -> anyhow::Result<VerifierKey> {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        VerifierKey::parse(text.trim()).map_err(|e| anyhow!("{}: {e}", p.display()))
    };
    log_policy_from(
        "palisade.local/log/demo",
        read(dir.join("log/keys/palisade.local_log.pub"))?,
        vec![read(dir.join("witness/keys/palisade.local_witness.pub"))?],
        1,
    )
}

pub fn log_policy_from(
    origin: &str,
    log_key: VerifierKey,
    witnesses: Vec<VerifierKey>,
    quorum: usize,
) -> anyhow::Result<LogPolicy> {
    let p = LogPolicy::new(origin, log_key).map_err(|e| anyhow!("log policy: {e}"))?;
    if witnesses.is_empty() {
        return Ok(p);
    }
    p.with_witnesses(witnesses, quorum)
        .map_err(|e| anyhow!("witnesses: {e}"))
}
