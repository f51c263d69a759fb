//! The gateway's side of a dispatch: build the dispatch and its intent event, log the
//! intent first, send the dispatch with its proofs, and open the signed result.
//!
//! [`Dispatcher::execute`] is steps 5–7 of the gateway pipeline
//! (docs/architecture.md) for one instance; the gateway calls its two halves,
//! [`Dispatcher::log_intent`] and [`Dispatcher::dispatch_logged`], so that it can
//! record the intent's index in between.
//!
//! It remembers, per agent, the newest checkpoint size that agent has seen, and asks
//! the log for a consistency proof from that size with the append
//! (`?consistency_from=`), so the dispatch carries the proof the agent needs without
//! a round trip. When it guessed wrong (or a concurrent dispatch moved the agent's
//! view past this one's checkpoint), the agent's `stale_view` refusal names the size,
//! and the same signed dispatch (its nonce unspent) is re-sent with proofs against
//! the log's current checkpoint, for as long as each refusal names a larger view than
//! the one before, up to 64 sends. A view that did not move means the log is behind
//! the agent, and the refusal is returned as is.
//!
//! Timeouts: 5 s to connect, 30 s per log request, 330 s per agent request (a
//! handler has 300 s). The answer must be a DSSE envelope signed by one of the
//! instance's result keys, naming this dispatch's digest and event id.

use crate::dispatch::AgentStatement;
use crate::dispatch::{
    AgentResult, ApprovalBundle, Consistency, Dispatch, DispatchRequest, Health, Refusal,
    RefusalCode, DISPATCH_PATH, DISPATCH_SCHEMA, HEALTH_PATH, RESULTS_PATH,
};
use palisade_core::event::{Actor, Event, IntentEvent, Justification, ParamValue, PolicyRef};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, ClusterId, EventId, InstanceId, TenantId};
use palisade_pki::Role;
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog_service::audit::{produce_proofs, Source};
use palisade_tlog_service::server::AppendResponse;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// At most how many times one dispatch is sent while the agent answers `stale_view`
/// with a view that moved on since the previous answer.
const STALE_VIEW_ATTEMPTS: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The agent refused the dispatch (nothing ran).
    #[error("the agent refused the dispatch: {0}")]
    Refused(Refusal),
    /// No connection to the agent could be made: the request never reached it.
    #[error("the agent at {url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    /// The request was sent, and no answer came back (the connection broke, or the
    /// wait timed out): whether the action ran is unknown until the agent is asked
    /// again ([`Dispatcher::result_of`]).
    #[error("the agent at {url} did not answer: {reason}")]
    NoAnswer { url: String, reason: String },
    #[error("the agent's answer is not a valid signed result: {0}")]
    BadAnswer(String),
    /// The intent is in the log, but the dispatch was never sent (its proofs could
    /// not be fetched): the gateway must log that nothing ran.
    #[error("the intent was logged but not dispatched: {0}")]
    NotSent(String),
    /// The intent could not be logged, so nothing was dispatched (fail closed).
    #[error("the log refused or could not be reached, nothing was dispatched: {0}")]
    Log(String),
    /// The entry is in the log at `index`, but the log could not get the witness
    /// quorum for it (yet): nothing may be dispatched on it, and appending it again
    /// would log it twice.
    #[error("the entry is in the log at index {index}, but not witnessed: {reason}")]
    Unwitnessed { index: u64, reason: String },
    #[error("{0}")]
    Setup(String),
}

/// What an operator asked for, already authenticated, authorized and validated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub tenant: TenantId,
    pub cluster: ClusterId,
    pub instance: InstanceId,
    pub actor: Actor,
    pub action: ActionName,
    pub parameters: BTreeMap<String, ParamValue>,
    pub justification: Justification,
    pub policy: PolicyRef,
}

/// A dispatch and the intent event that names it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dispatch: Dispatch,
    pub intent: IntentEvent,
    /// The customer's approval sent with the dispatch, when one is needed.
    pub approval: Option<ApprovalBundle>,
}

/// Builds a dispatch valid for `ttl` and its intent event (same ids, fields and the
/// dispatch's digest).
pub fn prepare(req: &Request, ttl: Duration, now: Timestamp) -> Result<Prepared, String> {
    let event_id = EventId::random().map_err(|e| format!("random: {e}"))?;
    prepare_as(req, event_id, ttl, now)
}

/// [`prepare`] with a given event id (the intent that carries out an approved
/// request keeps the request's id).
pub fn prepare_as(
    req: &Request,
    event_id: EventId,
    ttl: Duration,
    now: Timestamp,
) -> Result<Prepared, String> {
    let nonce = EventId::random().map_err(|e| format!("random: {e}"))?;
    let ttl = i64::try_from(ttl.as_secs()).map_err(|e| e.to_string())?;
    let dispatch = Dispatch {
        schema: DISPATCH_SCHEMA.into(),
        nonce,
        issued_at: now,
        expires_at: Timestamp::from_unix_seconds(now.unix_seconds() + ttl),
        tenant: req.tenant.clone(),
        cluster: req.cluster.clone(),
        instance: req.instance.clone(),
        event_id: event_id.clone(),
        actor: req.actor.id.clone(),
        action: req.action.clone(),
        parameters: req.parameters.clone(),
        policy: req.policy.clone(),
    };
    let intent = IntentEvent {
        event_id,
        time: now,
        tenant: req.tenant.clone(),
        cluster: req.cluster.clone(),
        instance: Some(req.instance.clone()),
        actor: req.actor.clone(),
        action: req.action.clone(),
        parameters: req.parameters.clone(),
        justification: req.justification.clone(),
        policy: req.policy.clone(),
        dispatch_digest: dispatch.digest().map_err(|e| e.to_string())?,
        approval: None,
    };
    Ok(Prepared {
        dispatch,
        intent,
        approval: None,
    })
}

/// Calls the log (append, read) and agents with a gateway certificate.
pub struct Dispatcher {
    key: SigningKey,
    log_base: String,
    log_http: reqwest::Client,
    agent_http: reqwest::Client,
    /// Agent URL → the newest checkpoint size it reported.
    seen: Mutex<HashMap<String, u64>>,
    /// Cluster → the tenant's newest witness statement, sent with every dispatch.
    tenant_trust: Mutex<HashMap<String, Envelope>>,
}

/// What a logged and dispatched action came to.
#[derive(Debug)]
pub struct Executed {
    pub intent_index: u64,
    pub result: AgentResult,
    pub envelope: Envelope,
}

fn http(tls: rustls::ClientConfig, timeout: Duration) -> Result<reqwest::Client, CallError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .https_only(true)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| CallError::Setup(e.to_string()))
}

impl Dispatcher {
    /// `ca`, `cert`, `key_pem`: the gateway's TLS files; `signing_key`: the gateway's
    /// dispatch key; `log_base`: e.g. `https://127.0.0.1:7401`.
    pub fn new(
        ca: &Path,
        cert: &Path,
        key_pem: &Path,
        signing_key: SigningKey,
        log_base: &str,
    ) -> Result<Self, CallError> {
        let setup = |e: palisade_pki::Error| CallError::Setup(e.to_string());
        let log_tls =
            palisade_pki::client_config(ca, cert, key_pem, &[Role::Log]).map_err(setup)?;
        let agent_tls =
            palisade_pki::client_config(ca, cert, key_pem, &[Role::Agent]).map_err(setup)?;
        Ok(Self {
            key: signing_key,
            log_base: log_base.trim_end_matches('/').to_string(),
            log_http: http(log_tls, Duration::from_secs(30))?,
            // Long actions (defragment, upgrade) answer when they finish.
            agent_http: http(agent_tls, Duration::from_secs(330))?,
            seen: Mutex::new(HashMap::new()),
            tenant_trust: Mutex::new(HashMap::new()),
        })
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The tenant statement sent with dispatches to `cluster` from now on.
    pub fn set_tenant_trust(&self, cluster: &str, statement: Envelope) {
        if let Ok(mut m) = self.tenant_trust.lock() {
            m.insert(cluster.to_string(), statement);
        }
    }

    /// The tenant statement dispatches to `cluster` carry, if there is one.
    pub fn tenant_trust(&self, cluster: &str) -> Option<Envelope> {
        self.tenant_trust
            .lock()
            .ok()
            .and_then(|m| m.get(cluster).cloned())
    }

    /// Appends one log entry to `log` and returns its index and tlog-proof, once the
    /// entry is under a checkpoint with the witness quorum.
    pub async fn append(&self, log: &str, entry: &[u8]) -> Result<AppendResponse, CallError> {
        self.append_to(format!("{}/logs/{log}/append", self.log_base), entry)
            .await
    }

    async fn append_to(&self, url: String, entry: &[u8]) -> Result<AppendResponse, CallError> {
        let resp = self
            .log_http
            .post(&url)
            .body(entry.to_vec())
            .send()
            .await
            .map_err(|e| CallError::Log(format!("{url}: {}", chain(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            let logged = resp
                .headers()
                .get(palisade_tlog_service::server::LOGGED_INDEX_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = resp.text().await.unwrap_or_default();
            let reason = format!(
                "{url}: {status}: {}",
                body.trim_end().chars().take(300).collect::<String>()
            );
            return Err(match logged {
                Some(index) if status == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    CallError::Unwitnessed { index, reason }
                }
                _ => CallError::Log(reason),
            });
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| CallError::Log(format!("{url}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| CallError::Log(format!("{url}: {e}")))
    }

    /// Sends a dispatch request as is.
    pub async fn send(
        &self,
        agent_url: &str,
        req: &DispatchRequest,
    ) -> Result<Envelope, CallError> {
        let url = format!("{}{DISPATCH_PATH}", agent_url.trim_end_matches('/'));
        let resp = self
            .agent_http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(req).map_err(|e| CallError::Setup(e.to_string()))?)
            .send()
            .await
            .map_err(|e| unanswered(&url, &e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| CallError::NoAnswer {
            url: url.clone(),
            reason: chain(&e),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| CallError::BadAnswer(e.to_string()));
        }
        match serde_json::from_slice::<Refusal>(&body) {
            Ok(r) => Err(CallError::Refused(r)),
            Err(_) => Err(CallError::BadAnswer(format!(
                "HTTP {status} without a refusal body"
            ))),
        }
    }

    /// Asks `agent_url` how the dispatch of `prepared` ended: its signed result
    /// (checked against `agent_keys` and the dispatch), still running, or never
    /// accepted.
    pub async fn result_of(
        &self,
        agent_url: &str,
        prepared_event: &EventId,
        dispatch_digest: &palisade_core::Sha256Digest,
        agent_keys: &[PublicKey],
    ) -> Result<Lookup, CallError> {
        let url = format!(
            "{}{}",
            agent_url.trim_end_matches('/'),
            RESULTS_PATH.replace("{event_id}", prepared_event.as_str())
        );
        let resp = self
            .agent_http
            .get(&url)
            .send()
            .await
            .map_err(|e| unanswered(&url, &e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| CallError::NoAnswer {
            url: url.clone(),
            reason: chain(&e),
        })?;
        match status.as_u16() {
            200 => {
                let envelope: Envelope = serde_json::from_slice(&body)
                    .map_err(|e| CallError::BadAnswer(e.to_string()))?;
                let result =
                    AgentResult::verify(&envelope, agent_keys).map_err(CallError::BadAnswer)?;
                if &result.dispatch_digest != dispatch_digest || &result.event_id != prepared_event
                {
                    return Err(CallError::BadAnswer(
                        "the signed result is for another dispatch".into(),
                    ));
                }
                Ok(Lookup::Done(Box::new((result, envelope))))
            }
            202 => Ok(Lookup::Running),
            404 => Ok(Lookup::NeverAccepted),
            _ => Err(match serde_json::from_slice::<Refusal>(&body) {
                Ok(r) => CallError::Refused(r),
                Err(_) => CallError::BadAnswer(format!("HTTP {status} from {url}")),
            }),
        }
    }

    /// `GET /healthz` of an agent.
    pub async fn health(&self, agent_url: &str) -> Result<Health, CallError> {
        let url = format!("{}{HEALTH_PATH}", agent_url.trim_end_matches('/'));
        let resp = self
            .agent_http
            .get(&url)
            .send()
            .await
            .map_err(|e| CallError::Unreachable {
                url: url.clone(),
                reason: chain(&e),
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CallError::BadAnswer(e.to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Refusal>(&body) {
                Ok(r) => CallError::Refused(r),
                Err(_) => CallError::BadAnswer(format!("HTTP {status} from {url}")),
            });
        }
        serde_json::from_slice(&body).map_err(|e| CallError::BadAnswer(e.to_string()))
    }

    /// The read API of `log` (tiles and checkpoint), with the gateway certificate.
    pub fn source(&self, log: &str) -> Result<Source, CallError> {
        // The appends' client: its connections to the log are already open.
        Source::https_client(
            &format!("{}/logs/{log}", self.log_base),
            self.log_http.clone(),
        )
        .map_err(|e| CallError::Log(e.to_string()))
    }

    /// Proofs for entry `index` against the log's current checkpoint, with a
    /// consistency proof from `from`.
    pub async fn proofs(
        &self,
        log: &str,
        policy: &LogPolicy,
        index: u64,
        from: u64,
    ) -> Result<(String, Consistency), CallError> {
        let source = self.source(log)?;
        let (produced, hashes) = produce_proofs(&source, policy, index, Some(from))
            .await
            .map_err(|e| CallError::Log(e.to_string()))?;
        Ok((
            String::from_utf8_lossy(&produced.proof.to_bytes()).into_owned(),
            Consistency {
                from_size: from,
                hashes: hashes.iter().map(|h| h.to_base64()).collect(),
            },
        ))
    }

    /// Logs the intent (waiting for its witnessed checkpoint), dispatches, and opens
    /// the agent's signed result. `policy` is the cluster log's checkpoint policy;
    /// `agent_keys` the keys the result must be signed with.
    pub async fn execute(
        &self,
        agent_url: &str,
        prepared: &Prepared,
        policy: &LogPolicy,
        agent_keys: &[PublicKey],
    ) -> Result<Executed, CallError> {
        let (entry, appended) = self.log_intent_for(prepared, agent_url).await?;
        self.dispatch_logged(agent_url, prepared, &entry, &appended, policy, agent_keys)
            .await
    }

    /// Step 4 alone: appends the intent (answers once it is witnessed) and returns
    /// the entry and where it is. An error means nothing was logged.
    pub async fn log_intent(
        &self,
        prepared: &Prepared,
    ) -> Result<(Vec<u8>, AppendResponse), CallError> {
        self.append_intent(prepared, None).await
    }

    /// Appends the intent, asking for a consistency proof from `from` if given.
    async fn append_intent(
        &self,
        prepared: &Prepared,
        from: Option<u64>,
    ) -> Result<(Vec<u8>, AppendResponse), CallError> {
        let entry = Event::Intent(Box::new(prepared.intent.clone()))
            .to_log_entry()
            .map_err(|e| CallError::Setup(e.to_string()))?;
        let query = from
            .map(|f| format!("?consistency_from={f}"))
            .unwrap_or_default();
        let url = format!(
            "{}/logs/{}/append{query}",
            self.log_base,
            prepared.dispatch.cluster.as_str()
        );
        let appended = self.append_to(url, &entry).await?;
        Ok((entry, appended))
    }

    /// [`Dispatcher::log_intent`] for a dispatch to `agent_url`: the log's answer also
    /// proves its checkpoint consistent with the newest one that agent reported, so
    /// that [`Dispatcher::dispatch_logged`] needs nothing more from the log.
    pub async fn log_intent_for(
        &self,
        prepared: &Prepared,
        agent_url: &str,
    ) -> Result<(Vec<u8>, AppendResponse), CallError> {
        self.append_intent(prepared, self.known_size(agent_url))
            .await
    }

    /// The size of the newest checkpoint `agent_url` reported, if it reported one.
    pub fn known_size(&self, agent_url: &str) -> Option<u64> {
        self.seen
            .lock()
            .ok()
            .and_then(|m| m.get(agent_url).copied())
            .filter(|k| *k > 0)
    }

    /// Replaces the proof of `req` by one against the log's current checkpoint, with
    /// a consistency proof from `from`, read from the log's tiles.
    async fn fetch_proofs(
        &self,
        req: &mut DispatchRequest,
        log: &str,
        policy: &LogPolicy,
        index: u64,
        from: u64,
    ) -> Result<(), CallError> {
        let (proof, consistency) = self
            .proofs(log, policy, index, from)
            .await
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        req.proof = proof;
        req.consistency = Some(consistency);
        Ok(())
    }

    /// Steps 5 and 6 for an intent already logged at `appended`.
    pub async fn dispatch_logged(
        &self,
        agent_url: &str,
        prepared: &Prepared,
        entry: &[u8],
        appended: &AppendResponse,
        policy: &LogPolicy,
        agent_keys: &[PublicKey],
    ) -> Result<Executed, CallError> {
        let log = prepared.dispatch.cluster.as_str();
        let envelope = prepared
            .dispatch
            .sign(&self.key)
            .map_err(|e| CallError::Setup(e.to_string()))?;
        let mut req = DispatchRequest {
            dispatch: envelope,
            event: DispatchRequest::encode_event(entry),
            proof: appended.proof.clone(),
            consistency: None,
            tenant_trust: self.tenant_trust(log),
            approval: prepared.approval.clone(),
        };
        if let Some(from) = self.known_size(agent_url) {
            match appended
                .consistency
                .as_ref()
                .filter(|c| c.from_size == from)
            {
                // The append's own checkpoint, proven consistent by the log: the agent
                // checks both, so nothing is fetched.
                Some(c) => {
                    req.consistency = Some(Consistency {
                        from_size: c.from_size,
                        hashes: c.hashes.clone(),
                    });
                }
                None => {
                    self.fetch_proofs(&mut req, log, policy, appended.index, from)
                        .await?
                }
            }
        }
        // Dispatches to one agent run concurrently, so another one may have moved its
        // view past this proof's checkpoint; each refusal names the view, and the
        // proofs are fetched again against the log's current checkpoint, which is at
        // least that. This goes on while the view keeps moving (other dispatches are
        // getting through); a view that did not move means the log is behind what the
        // agent accepted, and the refusal is final. Nothing ran on a refusal (the
        // nonce is spent only on success).
        let mut attempt = 1;
        let mut last_view = None;
        let answer = loop {
            match self.send(agent_url, &req).await {
                Err(CallError::Refused(mut r)) if r.code == RefusalCode::StaleView => {
                    let from = r.known_size.ok_or_else(|| {
                        CallError::BadAnswer("stale_view refusal without known_size".into())
                    })?;
                    if attempt >= STALE_VIEW_ATTEMPTS || last_view.is_some_and(|v| from <= v) {
                        r.detail = format!("{} (after {attempt} attempts)", r.detail);
                        break Err(CallError::Refused(r));
                    }
                    last_view = Some(from);
                    if let Ok(mut m) = self.seen.lock() {
                        m.insert(agent_url.to_string(), from);
                    }
                    self.fetch_proofs(&mut req, log, policy, appended.index, from)
                        .await?;
                    attempt += 1;
                }
                other => break other,
            }
        }?;
        let result = AgentResult::verify(&answer, agent_keys).map_err(CallError::BadAnswer)?;
        let digest = prepared
            .dispatch
            .digest()
            .map_err(|e| CallError::Setup(e.to_string()))?;
        if result.dispatch_digest != digest || result.event_id != prepared.intent.event_id {
            return Err(CallError::BadAnswer(
                "the signed result is for another dispatch".into(),
            ));
        }
        if let Ok(mut m) = self.seen.lock() {
            // Results of concurrent dispatches arrive in any order: keep the newest.
            let seen = m.entry(agent_url.to_string()).or_default();
            *seen = (*seen).max(result.log_size_seen);
        }
        Ok(Executed {
            intent_index: appended.index,
            result,
            envelope: answer,
        })
    }
}

/// What an agent knows of one dispatch ([`Dispatcher::result_of`]).
#[derive(Debug)]
pub enum Lookup {
    /// It ended: the verified result and its signed envelope.
    Done(Box<(AgentResult, Envelope)>),
    /// Accepted and still running.
    Running,
    /// This agent never accepted it.
    NeverAccepted,
}

/// A failed request: never sent if no connection was made, otherwise unanswered.
fn unanswered(url: &str, e: &reqwest::Error) -> CallError {
    if e.is_connect() {
        CallError::Unreachable {
            url: url.to_string(),
            reason: chain(e),
        }
    } else {
        CallError::NoAnswer {
            url: url.to_string(),
            reason: chain(e),
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
