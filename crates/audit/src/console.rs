//! The console's verification: everything the customer's page shows, checked
//! here from the bytes the page fetched, with nothing taken from the server's word.
//!
//! The page calls [`plan`] with the log's checkpoint to learn which entry bundles
//! to fetch, then [`verify`] with them. The report lists every entry with its
//! checks, the witnesses' cosignatures and their age, the views agents reported,
//! whether this log extends the one the browser verified on its last visit, and
//! `failures`: the checks that failed, which the page shows as a red banner.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_core::event::{ApprovalDecision, Event, Outcome};
use palisade_core::Sha256Digest;
use palisade_tlog::checkpoint::{LogPolicy, VerifiedCheckpoint, WitnessGroup};
use palisade_tlog::note::VerifierKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

use crate::agent;
use crate::events::{agents_word, EventChecks};
use crate::log::{bundles_for, entries, BundleRef};

/// The keys the customer trusts for one cluster's log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    pub origin: String,
    /// The log's verifier keys (`<name>+<hex id>+<base64>`).
    pub log_keys: Vec<String>,
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// Distinct witnesses that must cosign; default all of `witnesses`.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// Further groups (the tenant's own witnesses), each with its own quorum.
    #[serde(default)]
    pub groups: Vec<Group>,
    /// The tenant's public key (standard base64 of its 32 bytes): with it, every
    /// tenant statement in the log must be signed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub keys: Vec<String>,
    pub quorum: usize,
}

impl Trust {
    pub fn policy(&self) -> Result<LogPolicy, String> {
        let key = |k: &String| VerifierKey::parse(k).map_err(|e| format!("key {k:?}: {e}"));
        let mut log_keys = self.log_keys.iter();
        let first = log_keys.next().ok_or("no log key to trust")?;
        let mut policy = LogPolicy::new(&self.origin, key(first)?).map_err(|e| e.to_string())?;
        if log_keys.next().is_some() {
            return Err("one log key per log".into());
        }
        if !self.witnesses.is_empty() {
            let w = self
                .witnesses
                .iter()
                .map(key)
                .collect::<Result<Vec<_>, _>>()?;
            let quorum = self.quorum.unwrap_or(w.len());
            policy = policy
                .with_witnesses(w, quorum)
                .map_err(|e| e.to_string())?;
        }
        for g in &self.groups {
            let keys = g.keys.iter().map(key).collect::<Result<Vec<_>, _>>()?;
            policy = policy
                .with_group(WitnessGroup {
                    name: g.name.clone(),
                    keys,
                    quorum: g.quorum,
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(policy)
    }
}

/// What the page asks first: is this checkpoint the log's, and which bundles hold
/// its entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub trust: Trust,
    pub checkpoint: String,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub ok: bool,
    pub failures: Vec<String>,
    pub size: u64,
    pub bundles: Vec<BundleRef>,
}

/// Which bundles the page must fetch for this checkpoint, once it verifies.
pub fn plan(input: &PlanInput) -> Plan {
    let fail = |f: String| Plan {
        ok: false,
        failures: vec![f],
        size: 0,
        bundles: vec![],
    };
    let checkpoint = match open(&input.trust, &input.checkpoint) {
        Ok(c) => c,
        Err(f) => return fail(f),
    };
    let size = checkpoint.checkpoint().size();
    match bundles_for(size) {
        Ok(bundles) => Plan {
            ok: true,
            failures: vec![],
            size,
            bundles,
        },
        Err(e) => fail(e.to_string()),
    }
}

fn open(trust: &Trust, checkpoint: &str) -> Result<VerifiedCheckpoint, String> {
    let policy = trust
        .policy()
        .map_err(|e| format!("the keys you trust are not usable: {e}"))?;
    policy
        .verify(checkpoint.as_bytes())
        .map_err(|e| format!("checkpoint: {e}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub trust: Trust,
    pub checkpoint: String,
    /// The entry bundles [`plan`] named, in order, base64.
    pub bundles: Vec<String>,
    /// The checkpoint this browser verified on its last visit.
    #[serde(default)]
    pub previous: Option<Seen>,
    /// Now, in POSIX seconds (the browser's clock).
    pub now: i64,
    /// The oldest a quorum of cosignatures may be, in seconds.
    #[serde(default)]
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub size: u64,
    pub root: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Every check passed.
    pub ok: bool,
    /// The checks that failed, each a sentence naming it.
    pub failures: Vec<String>,
    pub origin: String,
    pub size: u64,
    pub root: String,
    /// What the page should remember as verified (absent when the log failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Seen>,
    pub witnesses: Vec<WitnessSeen>,
    /// Whether this log extends the one verified on the last visit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    pub views: Vec<View>,
    pub events: Vec<Row>,
    pub pending: Vec<String>,
    /// Results and refusals whose agent signature verified.
    pub signatures_checked: usize,
    /// Tenant statements whose signature by the tenant's key verified (absent when
    /// the trust names no tenant key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_statements_checked: Option<usize>,
    /// The approvers the newest tenant statement names, and how long an approval
    /// lasts: what the page needs to approve in the browser.
    pub approvers: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct WitnessSeen {
    pub name: String,
    pub key_id: String,
    pub timestamp: u64,
    pub age_secs: i64,
}

#[derive(Debug, Serialize)]
pub struct Previous {
    pub size: u64,
    pub root: String,
    pub consistent: bool,
}

/// A view of the log an agent reported in a result it signed.
#[derive(Debug, Serialize)]
pub struct View {
    pub index: u64,
    pub instance: Option<String>,
    pub size: u64,
    pub root: String,
    pub consistent: bool,
}

/// One entry as the timeline shows it: the logged event itself, with what the
/// page filters on and the checks' findings.
#[derive(Debug, Serialize)]
pub struct Row {
    pub index: u64,
    pub kind: &'static str,
    pub time: String,
    /// Who: the operator's pseudonym, or the approver.
    pub who: String,
    pub action: String,
    pub instance: String,
    pub ticket: String,
    pub reason: String,
    /// Outcome, decision or state (`pending`, `approved`, `denied`, `expired`).
    pub outcome: String,
    /// For a result: `signed by the agent (<keyid>)`, or why it is not.
    pub agent: String,
    /// The intent a result answers, the request an approval decides.
    pub refers_to: String,
    pub event: Value,
    /// The SHA-256 of the entry's bytes (what an approval names of its request).
    pub digest: String,
    pub problems: Vec<String>,
}

/// The whole verification of a cluster's log, from the bytes the page fetched.
pub fn verify(input: &Input) -> Report {
    let mut report = Report {
        origin: input.trust.origin.clone(),
        ..Report::default()
    };
    let checkpoint = match open(&input.trust, &input.checkpoint) {
        Ok(c) => c,
        Err(f) => {
            report.failures.push(f);
            return report;
        }
    };
    if input.trust.witnesses.is_empty() && input.trust.groups.is_empty() {
        report.failures.push(
            "freshness: the keys you trust name no witness, so nothing shows this log is current or the one others see"
                .into(),
        );
    }
    report.size = checkpoint.checkpoint().size();
    report.root = checkpoint.checkpoint().root().to_base64();
    report.witnesses = checkpoint
        .cosignatures()
        .iter()
        .map(|c| WitnessSeen {
            name: c.witness().name().to_owned(),
            key_id: format!("{:08x}", c.witness().key_id()),
            timestamp: c.timestamp(),
            age_secs: input.now - i64::try_from(c.timestamp()).unwrap_or(i64::MAX),
        })
        .collect();
    if let Some(max) = input.max_age {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let stale: Vec<&str> = report
            .witnesses
            .iter()
            .filter(|w| w.age_secs > max)
            .map(|w| w.name.as_str())
            .collect();
        if !stale.is_empty() {
            report.failures.push(format!(
                "freshness: the newest cosignature of {} is older than {max} s: the log may be frozen or withheld",
                stale.join(", ")
            ));
        }
    }
    let bundles = match input
        .bundles
        .iter()
        .map(|b| STANDARD.decode(b))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(b) => b,
        Err(e) => {
            report.failures.push(format!("entries: not base64: {e}"));
            return report;
        }
    };
    let (entries, roots) = match entries(&checkpoint, &bundles) {
        Ok(x) => x,
        Err(e) => {
            report.failures.push(format!("inclusion: {e}"));
            return report;
        }
    };
    if let Some(prev) = &input.previous {
        let consistent = roots
            .get(usize::try_from(prev.size).unwrap_or(usize::MAX))
            .is_some_and(|r| r.to_base64() == prev.root);
        if !consistent {
            report.failures.push(if prev.size > report.size {
                format!(
                    "consistency: the log has {} entries, fewer than the {} this browser verified before: it was rolled back",
                    report.size, prev.size
                )
            } else {
                format!(
                    "consistency: the log this browser verified before (size {}, root {}) is not part of this one: a fork",
                    prev.size, prev.root
                )
            });
        }
        report.previous = Some(Previous {
            size: prev.size,
            root: prev.root.clone(),
            consistent,
        });
    }
    let tenant_key = match input
        .trust
        .tenant_key
        .as_deref()
        .map(tenant_key)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            report
                .failures
                .push(format!("the keys you trust are not usable: {e}"));
            return report;
        }
    };
    report.tenant_statements_checked = tenant_key.map(|_| 0);
    rows(
        &mut report,
        &entries,
        &roots,
        input.now,
        tenant_key.as_ref(),
    );
    let problems: usize = report.events.iter().map(|r| r.problems.len()).sum();
    if problems > 0 {
        report.failures.push(format!(
            "events: {problems} problem(s) in the log's events (the entries marked in the timeline)"
        ));
    }
    if !report.failures.iter().any(|f| f.starts_with("consistency")) {
        report.verified = Some(Seen {
            size: report.size,
            root: report.root.clone(),
        });
    }
    report.ok = report.failures.is_empty();
    report
}

/// A tenant key given as standard base64 of its 32 bytes.
fn tenant_key(b64: &str) -> Result<agent::AgentKey, String> {
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| "the tenant key is not base64".to_string())?;
    <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| "the tenant key is not 32 bytes".to_string())
}

/// A tenant's witness statement's payload type.
pub const TENANT_TRUST_PAYLOAD_TYPE: &str = "application/vnd.palisade.tenant-trust+json";

fn rows(
    report: &mut Report,
    entries: &[&[u8]],
    roots: &[palisade_tlog::hash::Hash],
    now: i64,
    tenant_key: Option<&agent::AgentKey>,
) {
    let mut checks = EventChecks::default();
    // Approval requests: denied by one approver's denial, approved once an intent
    // acts on them (the threshold met), expired when neither came in time.
    let mut denied: HashSet<String> = HashSet::new();
    let mut approvals: HashMap<String, usize> = HashMap::new();
    let mut used: HashSet<String> = HashSet::new();
    let events: Vec<_> = entries.iter().map(|b| Event::from_log_entry(b)).collect();
    let enrolled = agent::Enrolled::from_events(&events);
    for e in &events {
        match e {
            Ok(Event::Approval(a)) if a.decision == ApprovalDecision::Deny => {
                denied.insert(a.request.to_string());
            }
            Ok(Event::Approval(a)) => *approvals.entry(a.request.to_string()).or_default() += 1,
            Ok(Event::Intent(i)) => {
                if let Some(a) = &i.approval {
                    used.insert(a.request.to_string());
                }
            }
            _ => {}
        }
    }
    for (i, (bytes, event)) in entries.iter().zip(&events).enumerate() {
        let index = i as u64;
        let mut row = Row {
            index,
            kind: "unknown",
            time: String::new(),
            who: String::new(),
            action: String::new(),
            instance: String::new(),
            ticket: String::new(),
            reason: String::new(),
            outcome: String::new(),
            agent: String::new(),
            refers_to: String::new(),
            event: serde_json::from_slice(bytes).unwrap_or(Value::Null),
            digest: Sha256Digest::of(bytes).to_string(),
            problems: vec![],
        };
        match event {
            Ok(Event::Intent(e)) => {
                row.problems = checks.intent(index, e);
                row.kind = "intent";
                row.time = e.time.to_string();
                row.who = e.actor.id.to_string();
                row.action = e.action.to_string();
                row.instance = e
                    .instance
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                row.ticket = e.justification.ticket.clone();
                row.reason = e.justification.reason.clone();
                row.refers_to = e
                    .approval
                    .as_ref()
                    .map(|a| a.request.to_string())
                    .unwrap_or_default();
            }
            Ok(Event::Result(r)) => {
                row.problems = checks.result(index, r, roots);
                row.kind = "result";
                row.time = r.time.to_string();
                row.outcome = r.outcome.as_str().to_string();
                row.refers_to = r.intent.to_string();
                row.reason = r.detail.clone().unwrap_or_default();
                if let Some(intent) = checks.intent_of(r.intent.as_str()) {
                    row.who = intent.actor.id.to_string();
                    row.action = intent.action.to_string();
                    row.instance = intent
                        .instance
                        .as_ref()
                        .map(|i| i.to_string())
                        .unwrap_or_default();
                    row.ticket = intent.justification.ticket.clone();
                }
                row.agent = agent_signature(
                    r,
                    checks.intent_of(r.intent.as_str()),
                    &enrolled,
                    &mut row.problems,
                );
                report.signatures_checked += usize::from(row.agent.starts_with("verified"));
                if let Some(a) = &r.agent {
                    if a.log_root_seen.is_some() {
                        report.views.push(View {
                            index,
                            instance: (!row.instance.is_empty()).then(|| row.instance.clone()),
                            size: a.log_size_seen,
                            root: a.log_root_seen.clone().unwrap_or_default(),
                            consistent: crate::events::view_problem(roots, a).is_none(),
                        });
                    }
                }
            }
            Ok(Event::Refusal(r)) => {
                row.kind = "refusal";
                row.time = r.time.to_string();
                row.who = r.actor.as_ref().map(|a| a.to_string()).unwrap_or_default();
                row.action = r.action.as_str().to_string();
                row.outcome = format!("refused ({})", r.status);
                row.reason = serde_json::to_value(r.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
            }
            Ok(Event::ApprovalRequest(r)) => {
                row.kind = "approval_request";
                row.time = r.time.to_string();
                row.who = r.actor.id.to_string();
                row.action = r.action.to_string();
                row.instance = r
                    .instance
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                row.ticket = r.justification.ticket.clone();
                row.reason = r.justification.reason.clone();
                let id = r.event_id.as_str();
                row.outcome = if denied.contains(id) {
                    "denied"
                } else if used.contains(id) {
                    "approved"
                } else if r.expires_at.unix_seconds() < now {
                    "expired"
                } else {
                    "pending"
                }
                .into();
                row.agent = match approvals.get(id) {
                    Some(n) => format!("{n} approval(s) logged"),
                    None => String::new(),
                };
            }
            Ok(Event::Approval(a)) => {
                row.kind = "approval";
                row.time = a.time.to_string();
                row.who = a.approver.clone();
                row.refers_to = a.request.to_string();
                row.outcome = match a.decision {
                    ApprovalDecision::Approve => "approve".into(),
                    ApprovalDecision::Deny => "deny".into(),
                };
            }
            Ok(Event::TenantTrust(t)) => {
                row.kind = "tenant_trust";
                row.time = t.time.to_string();
                row.who = t.tenant.to_string();
                if let Some(key) = tenant_key {
                    match agent::statement_signed_by(&t.statement, TENANT_TRUST_PAYLOAD_TYPE, key) {
                        Ok(_) => {
                            if let Some(n) = report.tenant_statements_checked.as_mut() {
                                *n += 1;
                            }
                            row.agent = "verified: signed by your tenant key".into();
                        }
                        Err(e) => {
                            row.agent = "NOT SIGNED BY YOUR TENANT KEY".into();
                            row.problems
                                .push(format!("tenant statement at {index}: {e}"));
                        }
                    }
                }
                match tenant_statement(&t.statement) {
                    Ok((seq, digest, quorum, witnesses, approval, for_whom)) => {
                        if for_whom != (t.tenant.to_string(), t.cluster.to_string()) {
                            row.problems.push(format!(
                                "tenant statement at {index} is for {}/{}, logged for {}/{}",
                                for_whom.0, for_whom.1, t.tenant, t.cluster
                            ));
                        }
                        row.reason = format!(
                            "requires {quorum} of its witnesses [{}] (statement seq {seq})",
                            witnesses.join(", ")
                        );
                        row.problems
                            .extend(checks.tenant.record(index, seq, &digest));
                        // Approvers come only from a statement whose checks passed:
                        // a statement not signed by the tenant names nobody.
                        if row.problems.is_empty() {
                            report.approvers = approval["approvers"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            report.approval_ttl_secs = approval["approval_ttl_secs"].as_u64();
                        }
                    }
                    Err(e) => row
                        .problems
                        .push(format!("tenant statement at {index}: {e}")),
                }
            }
            Ok(Event::AgentKey(k)) => {
                row.kind = "agent_key";
                row.time = k.time.to_string();
                row.instance = k.instance.to_string();
                row.reason = format!("agent key {} recorded", k.keyid);
            }
            Err(e) => row.problems.push(format!("not a Palisade event: {e}")),
        }
        report.events.push(row);
    }
    report.pending = checks.pending().into_iter().map(str::to_string).collect();
}

/// The agent's signature on a result, checked against the keys the log records for
/// the intent's instance: what the timeline says of it (a failed check is also a
/// problem of the entry).
fn agent_signature(
    r: &palisade_core::event::ResultEvent,
    intent: Option<&palisade_core::event::IntentEvent>,
    enrolled: &agent::Enrolled,
    problems: &mut Vec<String>,
) -> String {
    let keys = enrolled.for_intent(&[], intent);
    let checked = match (intent, &r.agent, &r.agent_refusal) {
        (_, None, None) if agents_word(r.outcome) || r.outcome == Outcome::RefusedByAgent => {
            return "not signed: the gateway wrote it alone".into();
        }
        (_, None, None) => return "the gateway's word (the agent did not answer)".into(),
        (None, _, _) => return "signed; its intent is not earlier in the log".into(),
        (Some(_), _, _) if keys.is_empty() => {
            return "signed; the log records no key for this instance".into();
        }
        (Some(i), Some(a), _) => agent::verify_result(i, r, &keys).map(|_| a.keyid.clone()),
        (Some(i), None, Some(a)) => agent::verify_refusal(i, r, &keys).map(|_| a.keyid.clone()),
    };
    match checked {
        Ok(keyid) => format!("verified: the agent's signature ({})", short(&keyid)),
        Err(e) if e.contains("too large to log") => {
            "signed; its output was too large to log, so the signature cannot be checked".into()
        }
        Err(e) => {
            problems.push(format!("{}: {e}", r.outcome.as_str()));
            "SIGNATURE DOES NOT VERIFY".into()
        }
    }
}

fn short(keyid: &str) -> &str {
    keyid.get(..16).unwrap_or(keyid)
}

/// What the console reads of a tenant statement: seq, digest, quorum, witnesses,
/// approval policy, and (tenant, cluster).
type TenantStatement = (u64, String, u64, Vec<String>, Value, (String, String));

/// The seq, digest, quorum and witnesses of a tenant's witness statement (its
/// signature is the tenant's, checked by `palisade audit events --tenant-key`).
fn tenant_statement(s: &palisade_core::event::SignedEnvelope) -> Result<TenantStatement, String> {
    let body = STANDARD
        .decode(&s.payload)
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("payload: {e}"))?;
    let seq = v["seq"].as_u64().ok_or("payload has no seq")?;
    let quorum = v["quorum"].as_u64().unwrap_or_default();
    let witnesses = v["witnesses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let for_whom = (
        v["tenant"].as_str().unwrap_or_default().to_string(),
        v["cluster"].as_str().unwrap_or_default().to_string(),
    );
    Ok((
        seq,
        Sha256Digest::of(&body).to_string(),
        quorum,
        witnesses,
        v["approval"].clone(),
        for_whom,
    ))
}
