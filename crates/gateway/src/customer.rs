//! The customer access-log API: a tenant reads the operator events of its own
//! clusters — never another tenant's — each with its inclusion proof, as Palisade's
//! native events or as Kubernetes `audit.k8s.io/v1` Event JSON lines that existing
//! audit pipelines ingest. Operators appear under the pseudonyms the log holds.
//!
//! The entries and proofs come from the cluster's log and are verified here against
//! the log's key and witnesses before they are served; the customer can (and should)
//! verify them again with `palisade audit`.
//!
//! `GET /v1/tenants/{tenant}/clusters/{cluster}/events[?format=native|k8s-audit][&from=N][&limit=L]`:
//! the bearer token is looked up by its SHA-256 among the `[[reader]]` entries before
//! anything else (no token and an unknown token get the same 401, whatever the path).
//! A tenant in the path other than the token's, a cluster that does not exist and a
//! cluster of another tenant all get the same 404 (`no cluster "<name>" readable with
//! this token`). A page holds up to `limit` (1–[`MAX_PAGE`], default [`MAX_PAGE`])
//! events from index `from` (default 0), each with a tlog-proof against the log's
//! current checkpoint, and says where the next page starts (`next`).
//! `format=k8s-audit` answers `application/jsonl`, one `audit.k8s.io/v1` Event per
//! line. The page is a view: `palisade audit verify` against the log's read API
//! remains the complete check.

use crate::pipeline::Gateway;
use crate::problem::Problem;
use base64::Engine as _;
use palisade_core::event::{Event, Outcome};
use palisade_core::sanitize;
use palisade_core::TenantId;
use palisade_tlog_service::audit::produce_proof;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Most events one page returns.
pub const MAX_PAGE: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Native,
    K8sAudit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub from: u64,
    #[serde(default)]
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProvenEvent {
    pub index: u64,
    pub event: Value,
    /// C2SP tlog-proof text.
    pub proof: String,
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub cluster: String,
    pub log_size: u64,
    pub from: u64,
    pub events: Vec<ProvenEvent>,
    /// Where the next page starts, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

impl Gateway {
    /// The tenant a bearer token belongs to.
    pub fn tenant_for_token(&self, token: &str) -> Option<TenantId> {
        let digest = hex::encode(Sha256::digest(token.trim().as_bytes()));
        self.config()
            .readers
            .iter()
            .find(|r| r.token_sha256 == digest)
            .map(|r| r.tenant.clone())
            .or_else(|| self.console.tenant(token.trim()))
    }

    /// A page of `cluster`'s events for `tenant`.
    pub async fn customer_events(
        &self,
        tenant: &TenantId,
        path_tenant: &str,
        cluster: &str,
        q: &Query,
    ) -> Result<Page, Problem> {
        let cid = self.readable_cluster(tenant, path_tenant, cluster)?;
        let policy = self
            .config()
            .log
            .policy_for(&cid)
            .map_err(|e| Problem::new(500, "internal error", e))?;
        let source = self
            .dispatcher()
            .source(cid.as_str())
            .map_err(|e| Problem::new(503, "log unavailable", e.to_string()))?;
        let limit = q.limit.unwrap_or(MAX_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Problem::new(
                400,
                "bad request",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let mut events = Vec::new();
        let mut size = 0;
        let mut index = q.from;
        while index < q.from.saturating_add(limit) {
            match produce_proof(&source, &policy, index).await {
                Ok(p) => {
                    size = p.checkpoint.checkpoint().size();
                    let event: Value = serde_json::from_slice(&p.entry).unwrap_or(Value::Null);
                    events.push(ProvenEvent {
                        index,
                        event,
                        proof: String::from_utf8_lossy(&p.proof.to_bytes()).into_owned(),
                    });
                    index += 1;
                }
                Err(palisade_tlog_service::audit::AuditError::IndexOutOfRange {
                    size: s, ..
                }) => {
                    size = s;
                    break;
                }
                Err(e) => return Err(Problem::new(503, "log unavailable", e.to_string())),
            }
        }
        let next = (index < size).then_some(index);
        Ok(Page {
            cluster: cid.to_string(),
            log_size: size,
            from: q.from,
            events,
            next,
        })
    }
}

/// The action (and instance) each intent of `events` asked for, by intent event id:
/// what a result's audit line names as its `requestURI` and `objectRef`.
pub fn intent_targets(events: &[ProvenEvent]) -> HashMap<String, (String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| {
            let bytes = palisade_core::canonical::to_canonical_vec(&e.event).ok()?;
            match Event::from_log_entry(&bytes).ok()? {
                Event::Intent(i) => Some((
                    i.event_id.to_string(),
                    (
                        i.action.to_string(),
                        i.instance.as_ref().map(|x| x.to_string()),
                    ),
                )),
                _ => None,
            }
        })
        .collect()
}

/// `requestURI` and `objectRef` of the request for `action` (on `instance`).
fn set_target(v: &mut Value, cluster: &str, action: &str, instance: Option<&str>) {
    v["requestURI"] = json!(format!("/palisade/v1/clusters/{cluster}/actions/{action}"));
    v["objectRef"] = json!({
        "apiGroup": "palisade.dev", "apiVersion": "v1", "resource": "actions",
        "name": action,
        "subresource": instance,
    });
}

/// A Palisade event as a Kubernetes `audit.k8s.io/v1` Event. An intent is the
/// request's `RequestReceived` stage, its result the `ResponseComplete` stage with
/// the same `auditID` (and, when its intent is in `intents`, the same `requestURI`
/// and `objectRef`); a refusal is a `ResponseComplete` with the refusal's status.
pub fn to_k8s_audit(
    cluster: &str,
    e: &ProvenEvent,
    intents: &HashMap<String, (String, Option<String>)>,
) -> Value {
    let proof = base64::engine::general_purpose::STANDARD.encode(e.proof.as_bytes());
    let entry = serde_json::to_vec(&e.event).unwrap_or_default();
    let parsed = palisade_core::canonical::to_canonical_vec(&e.event)
        .ok()
        .and_then(|b| Event::from_log_entry(&b).ok())
        .or_else(|| Event::from_log_entry(&entry).ok());
    let mut annotations = serde_json::Map::new();
    annotations.insert("palisade.dev/log-index".into(), json!(e.index.to_string()));
    // An entry verified with the whole log (`palisade audit events`) has no proof
    // of its own.
    if !e.proof.is_empty() {
        annotations.insert("palisade.dev/tlog-proof".into(), json!(proof));
    }
    let base = |audit_id: String, stage: &str, time: String, user: Value| {
        json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": audit_id,
            "stage": stage,
            "user": user,
            "sourceIPs": [],
            "userAgent": "palisade-gateway",
            "requestReceivedTimestamp": time,
            "stageTimestamp": time,
        })
    };
    let mut out = match parsed {
        Some(Event::Intent(i)) => {
            annotations.insert("palisade.dev/kind".into(), json!("intent"));
            annotations.insert(
                "palisade.dev/ticket".into(),
                json!(shown(&i.justification.ticket)),
            );
            annotations.insert(
                "palisade.dev/reason".into(),
                json!(shown(&i.justification.reason)),
            );
            annotations.insert(
                "palisade.dev/parameters".into(),
                json!(shown(
                    &serde_json::to_string(&i.parameters).unwrap_or_default()
                )),
            );
            annotations.insert(
                "palisade.dev/policy".into(),
                json!(i.policy.digest.to_string()),
            );
            if let Some(svc) = &i.actor.service {
                annotations.insert("palisade.dev/automation".into(), json!(shown(svc)));
            }
            if let Some(g) = &i.actor.grant {
                annotations.insert(
                    "palisade.dev/grant".into(),
                    json!(shown(&format!(
                        "{}/{} until {}",
                        g.schedule, g.role, g.ends_at
                    ))),
                );
            }
            let mut v = base(
                uuid_of(i.event_id.as_str()),
                "RequestReceived",
                i.time.to_string(),
                json!({"username": format!("palisade:operator:{}", i.actor.id), "groups": i.actor.groups.iter().map(|g| shown(g)).collect::<Vec<_>>()}),
            );
            v["verb"] = json!("create");
            let instance = i.instance.as_ref().map(|x| x.to_string());
            set_target(&mut v, cluster, i.action.as_str(), instance.as_deref());
            v
        }
        Some(Event::Result(r)) => {
            annotations.insert("palisade.dev/kind".into(), json!("result"));
            let (code, status) = match r.outcome {
                Outcome::Succeeded => (200, "Success"),
                Outcome::Failed => (500, "Failure"),
                Outcome::RefusedByAgent => (403, "Failure"),
                Outcome::NotDispatched => (503, "Failure"),
                Outcome::OutcomeUnknown => (504, "Failure"),
            };
            annotations.insert("palisade.dev/outcome".into(), json!(r.outcome.as_str()));
            if r.reconciled {
                annotations.insert("palisade.dev/reconciled".into(), json!("true"));
            }
            if let Some(d) = &r.output_digest {
                annotations.insert("palisade.dev/output-digest".into(), json!(d.to_string()));
            }
            // The output itself (canonical JSON, no customer content by design); the
            // customer checks it against the digest the agent signed.
            if let Some(o) = &r.output {
                if let Ok(bytes) = palisade_core::canonical::value_to_canonical_vec(o) {
                    annotations.insert(
                        "palisade.dev/output".into(),
                        json!(shown(&String::from_utf8_lossy(&bytes))),
                    );
                }
            }
            let mut v = base(
                uuid_of(r.intent.as_str()),
                "ResponseComplete",
                r.time.to_string(),
                json!({"username": "system:palisade:gateway"}),
            );
            v["verb"] = json!("create");
            if let Some((action, instance)) = intents.get(r.intent.as_str()) {
                set_target(&mut v, cluster, action, instance.as_deref());
            }
            v["responseStatus"] = json!({"code": code, "status": status, "message": shown(r.detail.as_deref().unwrap_or_default())});
            v
        }
        Some(Event::Refusal(r)) => {
            annotations.insert("palisade.dev/kind".into(), json!("refusal"));
            if let Some(d) = &r.action_digest {
                annotations.insert("palisade.dev/action-digest".into(), json!(d.to_string()));
            }
            // The status the caller was answered, as the refusal recorded it.
            let code = r.status;
            let user = match &r.actor {
                Some(a) => json!({"username": format!("palisade:operator:{a}")}),
                None => json!({"username": "system:anonymous"}),
            };
            let mut v = base(
                uuid_of(r.event_id.as_str()),
                "ResponseComplete",
                r.time.to_string(),
                user,
            );
            v["verb"] = json!("create");
            // The action is a validated name or `unknown-action`: never what was sent.
            v["requestURI"] = json!(format!(
                "/palisade/v1/clusters/{cluster}/actions/{}",
                r.action
            ));
            v["responseStatus"] =
                json!({"code": code, "status": "Failure", "message": r.reason.as_str()});
            v
        }
        Some(Event::TenantTrust(t)) => {
            annotations.insert("palisade.dev/kind".into(), json!("tenant_trust"));
            let env = palisade_policy::dsse::Envelope::from(&t.statement);
            if let Ok((trust, digest)) = palisade_policy::tenant::TenantTrust::decode(&env) {
                annotations.insert("palisade.dev/statement".into(), json!(digest.to_string()));
                annotations.insert("palisade.dev/seq".into(), json!(trust.seq.to_string()));
                annotations.insert(
                    "palisade.dev/tenant-witnesses".into(),
                    json!(format!(
                        "{} of {}",
                        trust.quorum,
                        trust.witnesses.join(", ")
                    )),
                );
            }
            let mut v = base(
                uuid_of(t.event_id.as_str()),
                "ResponseComplete",
                t.time.to_string(),
                json!({"username": format!("palisade:tenant:{}", t.tenant)}),
            );
            v["verb"] = json!("update");
            v["requestURI"] = json!(format!(
                "/palisade/v1/tenants/{}/clusters/{cluster}/trust",
                t.tenant
            ));
            v["responseStatus"] = json!({"code": 200, "status": "Success"});
            v
        }
        Some(Event::AgentKey(k)) => {
            annotations.insert("palisade.dev/kind".into(), json!("agent_key"));
            annotations.insert("palisade.dev/agent-keyid".into(), json!(k.keyid));
            let mut v = base(
                uuid_of(k.event_id.as_str()),
                "ResponseComplete",
                k.time.to_string(),
                json!({"username": "system:palisade:gateway"}),
            );
            v["verb"] = json!("create");
            set_target(&mut v, cluster, "agent-key", Some(k.instance.as_str()));
            v["responseStatus"] = json!({"code": 200, "status": "Success"});
            v
        }
        Some(Event::ApprovalRequest(r)) => {
            annotations.insert("palisade.dev/kind".into(), json!("approval_request"));
            annotations.insert(
                "palisade.dev/ticket".into(),
                json!(shown(&r.justification.ticket)),
            );
            annotations.insert(
                "palisade.dev/reason".into(),
                json!(shown(&r.justification.reason)),
            );
            annotations.insert(
                "palisade.dev/parameters".into(),
                json!(shown(
                    &serde_json::to_string(&r.parameters).unwrap_or_default()
                )),
            );
            annotations.insert(
                "palisade.dev/approval-expires".into(),
                json!(r.expires_at.to_string()),
            );
            let mut v = base(
                uuid_of(r.event_id.as_str()),
                "RequestReceived",
                r.time.to_string(),
                json!({"username": format!("palisade:operator:{}", r.actor.id)}),
            );
            v["verb"] = json!("create");
            let instance = r.instance.as_ref().map(|x| x.to_string());
            set_target(&mut v, cluster, r.action.as_str(), instance.as_deref());
            v
        }
        Some(Event::Approval(a)) => {
            annotations.insert("palisade.dev/kind".into(), json!("approval"));
            annotations.insert(
                "palisade.dev/decision".into(),
                json!(match a.decision {
                    palisade_core::event::ApprovalDecision::Approve => "approve",
                    palisade_core::event::ApprovalDecision::Deny => "deny",
                }),
            );
            annotations.insert("palisade.dev/request".into(), json!(a.request.as_str()));
            let env = palisade_policy::dsse::Envelope::from(&a.statement);
            if let Some(r) = palisade_policy::customer_approval::CustomerApproval::decode(&env)
                .ok()
                .and_then(|c| c.reason)
            {
                annotations.insert("palisade.dev/reason".into(), json!(shown(&r)));
            }
            let mut v = base(
                uuid_of(a.event_id.as_str()),
                "ResponseComplete",
                a.time.to_string(),
                json!({"username": format!("palisade:approver:{}", a.approver)}),
            );
            v["verb"] = json!("update");
            v["requestURI"] = json!(format!(
                "/palisade/v1/tenants/{}/clusters/{cluster}/approvals/{}",
                a.tenant, a.request
            ));
            v["responseStatus"] = json!({"code": 200, "status": "Success"});
            v
        }
        None => base(
            uuid_of(&format!("{:032x}", e.index)),
            "ResponseComplete",
            String::new(),
            json!({"username": "system:unknown"}),
        ),
    };
    out["annotations"] = Value::Object(annotations);
    out
}

/// Text as an audit line may show it: unchanged when it holds no control, bidi or
/// invisible character (validated or already escaped when logged), escaped if it does.
fn shown(text: &str) -> String {
    if sanitize::is_clean(text) {
        text.to_string()
    } else {
        sanitize::escape(text, usize::MAX)
    }
}

/// A 128-bit hex id written as a UUID (8-4-4-4-12), the shape of `auditID`.
fn uuid_of(hex32: &str) -> String {
    let h: String = hex32
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(32)
        .collect();
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
