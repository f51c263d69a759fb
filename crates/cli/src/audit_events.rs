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

use std::process::ExitCode;

use palisade_audit::agent;
use palisade_audit::events::{agents_word, EventChecks};
use palisade_core::event::{Event, Outcome};
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
    let agent_keys = palisade_agent::dispatch::raw_keys(&agent_keys);
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

    // Decode and check, in log order (the checks the console runs in the browser).
    let mut unsigned_checked = 0usize;
    let mut signatures_checked = 0usize;
    let mut log = EventChecks::default();
    // Agent keys recorded in the log, by instance (beside those given with --agent-key).
    // Each entry decoded once; the keys first, since a result may precede its key.
    let events: Vec<_> = entries.iter().map(|b| Event::from_log_entry(b)).collect();
    let enrolled = agent::Enrolled::from_events(&events);
    let enrolled_count = enrolled.count();
    let mut rows = Vec::new();
    for (i, (bytes, event)) in entries.iter().zip(events).enumerate() {
        let index = i as u64;
        let mut checks = Checks::default();
        match &event {
            Ok(Event::Intent(e)) => checks.problems = log.intent(index, e),
            Ok(Event::TenantTrust(t)) => {
                if let Some(p) = tenant_statement(index, t, tenant_key.as_ref(), &mut log) {
                    checks.problems.push(p);
                }
            }
            Ok(Event::AgentKey(k)) => {
                if agent::logged_key(k).is_none() {
                    checks.problems.push(format!(
                        "agent key {} for {} is not a 32-byte Ed25519 key",
                        k.keyid, k.instance
                    ));
                }
            }
            Ok(Event::Result(r)) => {
                checks.problems = log.result(index, r, &roots);
                // An outcome only the agent can know is the agent's, signed; so is
                // the agent's refusal.
                let intent = log.intent_of(r.intent.as_str());
                let keys = enrolled.for_intent(&agent_keys, intent);
                if let Some(intent) = intent.filter(|_| !keys.is_empty()) {
                    if agents_word(r.outcome) && r.agent.is_some() {
                        match agent::verify_result(intent, r, &keys) {
                            Ok(_) => signatures_checked += 1,
                            Err(e) if e.contains("too large to log") => unsigned_checked += 1,
                            Err(e) => checks
                                .problems
                                .push(format!("{} result: {e}", r.outcome.as_str())),
                        }
                    }
                    if r.outcome == Outcome::RefusedByAgent && r.agent_refusal.is_some() {
                        match agent::verify_refusal(intent, r, &keys) {
                            Ok(_) => signatures_checked += 1,
                            Err(e) => checks
                                .problems
                                .push(format!("refused_by_agent result: {e}")),
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => checks.problems.push(format!("not a Palisade event: {e}")),
        }
        rows.push((index, bytes, event, checks));
    }
    let pending = log.pending();

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

/// A tenant's witness statement at `index`: signed by the tenant's key (when it is
/// given), for the tenant and cluster it is logged for, with a seq above the one
/// before it.
fn tenant_statement(
    index: u64,
    t: &palisade_core::event::TenantTrustEvent,
    key: Option<&palisade_policy::keys::PublicKey>,
    log: &mut EventChecks,
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
    log.tenant.record(index, trust.seq, &digest.to_string())
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
