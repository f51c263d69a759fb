//! `palisade audit events`: the customer reads their cluster's log themselves.
//!
//! The entries come straight from the log's tiles (a directory, or the log's read
//! API), never through the gateway: every entry is hashed into the tree again and
//! the root must be the one the log signed and the witnesses cosigned
//! ([`audit::read_entries`]). Each is then decoded and checked — a result's logged
//! output against its digest, a result against the intent it names (earlier in the
//! log, one result per intent), a `succeeded` or `failed` result against the agent's
//! signature (rebuilt from the result and its intent; with `--agent-key`, verified)
//! — and printed as a timeline, as JSON lines, or as Kubernetes `audit.k8s.io/v1`
//! Event lines for an audit pipeline.
//!
//! The tenant's witness statements are checked too: each signed by the tenant's key
//! (with `--tenant-key`), each with a higher `seq` than the one before; and every
//! result an agent signed must name, as the tenant trust it enforced, the statement
//! in force when its intent was logged (or a newer one in this log) — so an agent
//! shown a statement the log does not hold, or none, is visible.

use std::collections::HashMap;
use std::process::ExitCode;

use palisade_core::event::Event;
use palisade_gateway::customer::{intent_targets, to_k8s_audit, ProvenEvent};
use palisade_tlog_service::audit;
use serde_json::{json, Value};

use crate::audit_cmd::{policy, source, PolicyArgs, SourceArgs};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    K8sAudit,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Print entries from this index on (all are read and checked).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// An agent's public key file (`agent.pub`, as the provider's inventory lists
    /// it). Repeat for each instance. With them, every `succeeded` or `failed` result
    /// must carry a signature of one of these agents over exactly its outcome, output
    /// and intent.
    #[arg(long = "agent-key", value_name = "FILE")]
    agent_keys: Vec<std::path::PathBuf>,
    /// The tenant's public key file (`tenant.pub`): every witness statement in the
    /// log must be signed by it.
    #[arg(long = "tenant-key", value_name = "FILE")]
    tenant_key: Option<std::path::PathBuf>,
    /// `table` (a timeline), `json` (one object per line: index, event, checks) or
    /// `k8s-audit` (one audit.k8s.io/v1 Event per line).
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// What the checks found about one entry.
#[derive(Default)]
struct Checks {
    problems: Vec<String>,
}

pub fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    crate::lifecycle::runtime()?.block_on(events(args))
}

async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(&args.policy)?;
    let source = source(&args.source)?;
    let agent_keys = args
        .agent_keys
        .iter()
        .map(|p| palisade_policy::keys::PublicKey::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let tenant_key = args
        .tenant_key
        .as_deref()
        .map(palisade_policy::keys::PublicKey::read)
        .transpose()?;
    let (checkpoint, entries) = audit::read_entries(&source, &policy)
        .await
        .map_err(|e| anyhow::anyhow!("the log {} did not verify: {e}", policy.origin()))?;
    let cluster = policy
        .origin()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();

    // The root of the customer's log at every size: an agent's view must be one.
    let mut roots = Vec::with_capacity(entries.len() + 1);
    let mut frontier = palisade_tlog::tree::Frontier::new();
    roots.push(frontier.root());
    for e in &entries {
        frontier
            .append(palisade_tlog::hash::leaf_hash(e))
            .map_err(|_| anyhow::anyhow!("the log is larger than a tree can be"))?;
        roots.push(frontier.root());
    }

    // Decode and check, in log order.
    let mut intent_events: HashMap<String, palisade_core::event::IntentEvent> = HashMap::new();
    let mut unsigned_checked = 0usize;
    let mut signatures_checked = 0usize;
    let mut intents: HashMap<String, u64> = HashMap::new();
    let mut results: HashMap<String, u64> = HashMap::new();
    let mut tenant = TenantStatements::default();
    // Agent keys recorded in the log, by instance (beside those given with --agent-key).
    // Each entry decoded once; the keys first, since a result may precede its key.
    let events: Vec<_> = entries.iter().map(|b| Event::from_log_entry(b)).collect();
    let mut enrolled: HashMap<String, Vec<palisade_policy::keys::PublicKey>> = HashMap::new();
    for event in &events {
        if let Ok(Event::AgentKey(k)) = event {
            if let Some(key) = logged_agent_key(k) {
                enrolled
                    .entry(k.instance.to_string())
                    .or_default()
                    .push(key);
            }
        }
    }
    let enrolled_count: usize = enrolled.values().map(Vec::len).sum();
    let mut rows = Vec::new();
    for (i, (bytes, event)) in entries.iter().zip(events).enumerate() {
        let index = i as u64;
        let mut checks = Checks::default();
        match &event {
            Ok(Event::Intent(e)) => {
                if intents.insert(e.event_id.to_string(), index).is_some() {
                    checks
                        .problems
                        .push(format!("intent {} is logged twice", e.event_id));
                }
                intent_events.insert(e.event_id.to_string(), (**e).clone());
                tenant.at_intent(e.event_id.as_str());
            }
            Ok(Event::TenantTrust(t)) => {
                if let Some(p) = tenant.record(index, t, tenant_key.as_ref()) {
                    checks.problems.push(p);
                }
            }
            Ok(Event::AgentKey(k)) => {
                if logged_agent_key(k).is_none() {
                    checks.problems.push(format!(
                        "agent key {} for {} is not a 32-byte Ed25519 key",
                        k.keyid, k.instance
                    ));
                }
            }
            Ok(Event::Result(r)) => {
                if let Err(e) = r.check_output() {
                    checks.problems.push(format!("output: {e}"));
                }
                // The view the agent acted on must be a tree of this log: an agent
                // shown a fork says so in every result it signs afterwards.
                if let Some(a) = &r.agent {
                    if let Some(problem) = view_problem(&roots, a) {
                        checks.problems.push(problem);
                    }
                    if let Some(problem) = tenant.enforced_problem(r.intent.as_str(), a) {
                        checks.problems.push(problem);
                    }
                }
                // An outcome only the agent can know is the agent's, signed.
                let agents_word = matches!(
                    r.outcome,
                    palisade_core::event::Outcome::Succeeded
                        | palisade_core::event::Outcome::Failed
                );
                let keys = keys_for(&agent_keys, &enrolled, intent_events.get(r.intent.as_str()));
                match (agents_word, intent_events.get(r.intent.as_str())) {
                    (true, _) if r.agent.is_none() => checks.problems.push(format!(
                        "{} result without the agent's signature: the gateway wrote it alone",
                        r.outcome.as_str()
                    )),
                    (true, Some(intent)) if !keys.is_empty() => {
                        match palisade_agent::dispatch::AgentResult::verify_logged(intent, r, &keys)
                        {
                            Ok(_) => signatures_checked += 1,
                            Err(e) if e.contains("too large to log") => unsigned_checked += 1,
                            Err(e) => checks
                                .problems
                                .push(format!("{} result: {e}", r.outcome.as_str())),
                        }
                    }
                    _ => {}
                }
                if r.outcome == palisade_core::event::Outcome::RefusedByAgent
                    && r.agent_refusal.is_none()
                {
                    checks.problems.push(
                        "refused_by_agent result without the agent's signature: the gateway wrote it alone"
                            .into(),
                    );
                }
                // A refusal the agent signed is checked like a result.
                if let (Some(intent), Some(_)) =
                    (intent_events.get(r.intent.as_str()), &r.agent_refusal)
                {
                    if r.outcome != palisade_core::event::Outcome::RefusedByAgent {
                        checks.problems.push(format!(
                            "a {} result carries an agent's refusal",
                            r.outcome.as_str()
                        ));
                    } else if !keys.is_empty() {
                        match palisade_agent::dispatch::AgentRefusal::verify_logged(
                            intent, r, &keys,
                        ) {
                            Ok(_) => signatures_checked += 1,
                            Err(e) => checks
                                .problems
                                .push(format!("refused_by_agent result: {e}")),
                        }
                    }
                }
                match intents.get(r.intent.as_str()) {
                    None => checks.problems.push(format!(
                        "a result for intent {}, which is not earlier in the log",
                        r.intent
                    )),
                    Some(_) => {
                        if let Some(first) = results.insert(r.intent.to_string(), index) {
                            checks.problems.push(format!(
                                "a second result for intent {} (the first is at {first})",
                                r.intent
                            ));
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => checks.problems.push(format!("not a Palisade event: {e}")),
        }
        rows.push((index, bytes, event, checks));
    }
    let pending: Vec<&String> = intents
        .keys()
        .filter(|id| !results.contains_key(*id))
        .collect();

    let proven: Vec<ProvenEvent> = rows
        .iter()
        .map(|(index, bytes, _, _)| ProvenEvent {
            index: *index,
            event: serde_json::from_slice(bytes).unwrap_or(Value::Null),
            proof: String::new(),
        })
        .collect();
    let targets = intent_targets(&proven);
    let problems: usize = rows.iter().map(|r| r.3.problems.len()).sum();
    for ((index, _, event, checks), p) in rows.iter().zip(&proven) {
        if *index < args.from {
            continue;
        }
        match args.output {
            Format::K8sAudit => println!("{}", to_k8s_audit(&cluster, p, &targets)),
            Format::Json => println!(
                "{}",
                json!({"index": index, "event": p.event, "problems": checks.problems})
            ),
            Format::Table => println!("{}", row(*index, event, checks)),
        }
    }
    if args.output == Format::Table {
        println!(
            "--\n{} entries, every one proven against the checkpoint of size {} (root {}), signed by the log and cosigned by {} witness(es)",
            entries.len(),
            checkpoint.checkpoint().size(),
            checkpoint.checkpoint().root().to_base64(),
            checkpoint.cosignatures().len()
        );
        if enrolled_count > 0 {
            println!("{enrolled_count} agent key(s) recorded in the log, each result checked against its instance's");
        }
        if agent_keys.is_empty() && enrolled_count == 0 {
            println!(
                "agent signatures not checked: the log records no agent key; pass --agent-key for each instance's agent.pub"
            );
        } else {
            println!(
                "{signatures_checked} result(s) signed by an agent and checked{}",
                if unsigned_checked > 0 {
                    format!("; {unsigned_checked} with an output too large to log, whose signature cannot be checked")
                } else {
                    String::new()
                }
            );
        }
        if !pending.is_empty() {
            println!(
                "{} intent(s) without a result yet (an action still running, or a result the gateway is still appending)",
                pending.len()
            );
        }
    }
    if problems > 0 {
        eprintln!("error: {problems} problem(s) in the log's events; see the entries marked !");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The public key an `agent_key` event records, if it is well formed (32 bytes).
fn logged_agent_key(
    k: &palisade_core::event::AgentKeyEvent,
) -> Option<palisade_policy::keys::PublicKey> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&k.key)
        .ok()?;
    if raw.len() != 32 {
        return None;
    }
    Some(palisade_policy::keys::PublicKey::from_raw(
        &format!("agent {}", k.instance),
        &raw,
    ))
}

/// The keys a result of `intent` may be signed with: those given on the command line
/// and those the log records for its instance.
fn keys_for(
    given: &[palisade_policy::keys::PublicKey],
    enrolled: &HashMap<String, Vec<palisade_policy::keys::PublicKey>>,
    intent: Option<&palisade_core::event::IntentEvent>,
) -> Vec<palisade_policy::keys::PublicKey> {
    let mut keys = given.to_vec();
    if let Some(i) = intent.and_then(|i| i.instance.as_ref()) {
        keys.extend(enrolled.get(i.as_str()).into_iter().flatten().cloned());
    }
    keys
}

/// The tenant's witness statements met so far, in log order.
#[derive(Default)]
struct TenantStatements {
    /// Statement digest → seq, for every statement in the log so far.
    logged: HashMap<String, u64>,
    /// The newest statement's seq so far.
    newest: Option<u64>,
    /// Intent event id → the seq in force when it was logged.
    at_intent: HashMap<String, u64>,
}

impl TenantStatements {
    fn record(
        &mut self,
        index: u64,
        t: &palisade_core::event::TenantTrustEvent,
        key: Option<&palisade_policy::keys::PublicKey>,
    ) -> Option<String> {
        let env = palisade_policy::dsse::Envelope::from(&t.statement);
        let (trust, digest) = match key {
            Some(k) => match palisade_policy::tenant::TenantTrust::open(&env, k) {
                Ok(o) => (o.trust, o.digest),
                Err(e) => return Some(format!("tenant statement at {index}: {e}")),
            },
            None => match palisade_policy::tenant::TenantTrust::decode(&env) {
                Ok(d) => d,
                Err(e) => return Some(format!("tenant statement at {index}: {e}")),
            },
        };
        if trust.tenant != t.tenant || trust.cluster != t.cluster {
            return Some(format!(
                "tenant statement at {index} is for {}/{}, logged for {}/{}",
                trust.tenant, trust.cluster, t.tenant, t.cluster
            ));
        }
        let problem = self.newest.filter(|n| trust.seq <= *n).map(|n| {
            format!(
                "tenant statement at {index} has seq {}, not above the {n} before it",
                trust.seq
            )
        });
        self.logged.insert(digest.to_string(), trust.seq);
        self.newest = Some(self.newest.map_or(trust.seq, |n| n.max(trust.seq)));
        problem
    }

    fn at_intent(&mut self, intent: &str) {
        if let Some(n) = self.newest {
            self.at_intent.insert(intent.to_string(), n);
        }
    }

    /// Whether an agent's signed result names a tenant trust this log holds, no
    /// older than the one in force when its intent was logged.
    fn enforced_problem(
        &self,
        intent: &str,
        a: &palisade_core::event::AgentAttestation,
    ) -> Option<String> {
        let in_force = self.at_intent.get(intent).copied();
        let enforced = a.trust.as_ref().and_then(|t| t.tenant.as_ref());
        match (in_force, enforced) {
            (None, None) => None,
            (Some(seq), None) => Some(format!(
                "the agent enforced no tenant witness, though your statement seq {seq} was in force"
            )),
            (_, Some(e)) => match self.logged.get(&e.statement.to_string()) {
                None => Some(format!(
                    "the agent enforced a tenant statement ({}, seq {}) that is not in your log",
                    e.statement, e.seq
                )),
                Some(seq) if in_force.is_some_and(|f| *seq < f) => Some(format!(
                    "the agent enforced your tenant statement seq {seq}, older than seq {} in force when the intent was logged",
                    in_force.unwrap_or_default()
                )),
                Some(_) => None,
            },
        }
    }
}

/// Why the view an agent reports (size, root) is not a tree of the log whose roots by
/// size are `roots`, if it is not.
fn view_problem(
    roots: &[palisade_tlog::hash::Hash],
    a: &palisade_core::event::AgentAttestation,
) -> Option<String> {
    let root = a.log_root_seen.as_deref()?;
    let size = usize::try_from(a.log_size_seen).unwrap_or(usize::MAX);
    match roots.get(size) {
        None => Some(format!(
            "the agent accepted a checkpoint of size {size}, larger than your log ({}): a view your log does not contain",
            roots.len().saturating_sub(1)
        )),
        Some(ours) if ours.to_base64() != root => Some(format!(
            "the agent accepted a checkpoint your log does not contain (size {size}, root {root}; your log's root at that size is {})",
            ours.to_base64()
        )),
        Some(_) => None,
    }
}

/// One line of the timeline.
fn row(
    index: u64,
    event: &Result<Event, palisade_core::event::EventError>,
    checks: &Checks,
) -> String {
    let mark = if checks.problems.is_empty() { " " } else { "!" };
    let body = match event {
        Ok(Event::Intent(e)) => format!(
            "{} intent  {} {} on {} by {}{} ({}: {})",
            e.time,
            e.event_id,
            e.action,
            e.instance.as_ref().map_or("-".into(), |i| i.to_string()),
            e.actor.id,
            e.actor
                .service
                .as_ref()
                .map(|s| format!(" (automation: {})", palisade_core::sanitize::escape(s, 32)))
                .unwrap_or_default(),
            e.justification.ticket,
            palisade_core::sanitize::escape(&e.justification.reason, 80)
        ),
        Ok(Event::Result(r)) => format!(
            "{} result  {} {}{}{}",
            r.time,
            r.intent,
            r.outcome.as_str(),
            if r.reconciled { " (reconciled)" } else { "" },
            r.detail
                .as_deref()
                .map(|d| format!(": {}", palisade_core::sanitize::escape(d, 120)))
                .unwrap_or_default()
        ),
        Ok(Event::Refusal(r)) => format!(
            "{} refusal {} {} by {} ({})",
            r.time,
            r.status,
            r.action.as_str(),
            r.actor.as_ref().map_or("-".into(), |a| a.to_string()),
            serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        Ok(Event::TenantTrust(t)) => {
            let env = palisade_policy::dsse::Envelope::from(&t.statement);
            match palisade_policy::tenant::TenantTrust::decode(&env) {
                Ok((trust, digest)) => format!(
                    "{} tenant  {} requires {} of its witnesses [{}] (statement seq {}, {digest})",
                    t.time,
                    t.tenant,
                    trust.quorum,
                    trust.witnesses.join(", "),
                    trust.seq
                ),
                Err(e) => format!(
                    "{} tenant  {} (undecodable statement: {e})",
                    t.time, t.tenant
                ),
            }
        }
        Ok(Event::AgentKey(k)) => format!(
            "{} agent   key {} for {} recorded",
            k.time, k.keyid, k.instance
        ),
        Ok(Event::ApprovalRequest(r)) => format!(
            "{} request {} {} on {} by {} awaits approval until {} ({}: {})",
            r.time,
            r.event_id,
            r.action,
            r.instance.as_ref().map_or("-".into(), |i| i.to_string()),
            r.actor.id,
            r.expires_at,
            r.justification.ticket,
            palisade_core::sanitize::escape(&r.justification.reason, 80)
        ),
        Ok(Event::Approval(a)) => {
            let env = palisade_policy::dsse::Envelope::from(&a.statement);
            let why = palisade_policy::customer_approval::CustomerApproval::decode(&env)
                .ok()
                .and_then(|c| c.reason)
                .map(|r| format!(": {}", palisade_core::sanitize::escape(&r, 80)))
                .unwrap_or_default();
            format!(
                "{} {} {} by approver {}{why}",
                a.time,
                match a.decision {
                    palisade_core::event::ApprovalDecision::Approve => "approve",
                    palisade_core::event::ApprovalDecision::Deny => "deny   ",
                },
                a.request,
                a.approver
            )
        }
        Err(_) => "(not a Palisade event)".to_string(),
    };
    let problems = if checks.problems.is_empty() {
        String::new()
    } else {
        format!("  [{}]", checks.problems.join("; "))
    };
    format!("{mark}{index:>7}  {body}{problems}")
}

#[cfg(test)]
mod tests {
    use super::view_problem;
    use palisade_core::event::AgentAttestation;
    use palisade_core::time::Timestamp;
    use palisade_tlog::hash::leaf_hash;
    use palisade_tlog::tree::Frontier;

    fn attestation(size: u64, root: &str) -> AgentAttestation {
        AgentAttestation {
            output_schema: "palisade.dev/output/etcd-health/v1".into(),
            started_at: Timestamp::from_unix_seconds(1),
            finished_at: Timestamp::from_unix_seconds(2),
            log_size_seen: size,
            log_root_seen: Some(root.into()),
            error: None,
            trust: None,
            keyid: String::new(),
            sig: String::new(),
        }
    }

    /// An agent's view must be a tree of the customer's own log: the root at that size.
    /// A result's enforced tenant trust must be a statement of the log, no older
    /// than the one in force when its intent was logged.
    #[test]
    fn an_agent_enforcing_another_or_an_older_tenant_statement_is_named() {
        use super::TenantStatements;
        use palisade_core::event::{EnforcedTrust, TenantTrustRef};
        let mut t = TenantStatements::default();
        let digest = |b: &[u8]| palisade_core::Sha256Digest::of(b);
        t.logged.insert(digest(b"s1").to_string(), 1);
        t.logged.insert(digest(b"s2").to_string(), 2);
        t.newest = Some(2);
        t.at_intent.insert("i".into(), 2);
        let with = |seq: u64, d: &[u8]| {
            let mut a = attestation(1, "x");
            a.trust = Some(Box::new(EnforcedTrust {
                witnesses: vec![],
                quorum: 1,
                tenant: Some(TenantTrustRef {
                    seq,
                    statement: digest(d),
                    witnesses: vec![],
                    quorum: 1,
                }),
            }));
            a
        };
        assert_eq!(t.enforced_problem("i", &with(2, b"s2")), None);
        assert!(t
            .enforced_problem("i", &with(1, b"s1"))
            .expect("older")
            .contains("older than seq 2"));
        assert!(t
            .enforced_problem("i", &with(3, b"elsewhere"))
            .expect("not logged")
            .contains("not in your log"));
        assert!(t
            .enforced_problem("i", &attestation(1, "x"))
            .expect("none")
            .contains("enforced no tenant witness"));
        // An intent logged before any statement: nothing is required of it.
        assert_eq!(t.enforced_problem("before", &attestation(1, "x")), None);
    }

    #[test]
    fn a_view_the_log_does_not_contain_is_named() {
        let mut f = Frontier::new();
        let mut roots = vec![f.root()];
        for e in [b"a".as_slice(), b"b", b"c"] {
            f.append(leaf_hash(e)).expect("append");
            roots.push(f.root());
        }
        let ours = roots[2].to_base64();
        assert_eq!(view_problem(&roots, &attestation(2, &ours)), None);
        let mut fork = Frontier::new();
        for e in [b"a".as_slice(), b"forged"] {
            fork.append(leaf_hash(e)).expect("append");
        }
        let forked = view_problem(&roots, &attestation(2, &fork.root().to_base64()));
        assert!(forked.is_some_and(|p| p.contains("a checkpoint your log does not contain")),);
        let beyond = view_problem(&roots, &attestation(9, &ours));
        assert!(beyond.is_some_and(|p| p.contains("larger than your log (3)")));
    }
}
