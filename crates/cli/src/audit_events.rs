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
    let mut rows = Vec::new();
    for (i, bytes) in entries.iter().enumerate() {
        let index = i as u64;
        let mut checks = Checks::default();
        let event = Event::from_log_entry(bytes);
        match &event {
            Ok(Event::Intent(e)) => {
                if intents.insert(e.event_id.to_string(), index).is_some() {
                    checks
                        .problems
                        .push(format!("intent {} is logged twice", e.event_id));
                }
                intent_events.insert(e.event_id.to_string(), (**e).clone());
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
                }
                // An outcome only the agent can know is the agent's, signed.
                let agents_word = matches!(
                    r.outcome,
                    palisade_core::event::Outcome::Succeeded
                        | palisade_core::event::Outcome::Failed
                );
                match (agents_word, intent_events.get(r.intent.as_str())) {
                    (true, Some(intent)) if !agent_keys.is_empty() => {
                        match palisade_agent::dispatch::AgentResult::verify_logged(
                            intent,
                            r,
                            &agent_keys,
                        ) {
                            Ok(_) => signatures_checked += 1,
                            Err(e) if e.contains("too large to log") => unsigned_checked += 1,
                            Err(e) => checks
                                .problems
                                .push(format!("{} result: {e}", r.outcome.as_str())),
                        }
                    }
                    (true, _) if r.agent.is_none() => checks.problems.push(format!(
                        "{} result without the agent's signature: the gateway wrote it alone",
                        r.outcome.as_str()
                    )),
                    _ => {}
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
        if agent_keys.is_empty() {
            println!(
                "agent signatures not checked: pass --agent-key for each instance's agent.pub"
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
            "{} intent  {} {} on {} by {} ({}: {})",
            e.time,
            e.event_id,
            e.action,
            e.instance.as_ref().map_or("-".into(), |i| i.to_string()),
            e.actor.id,
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
            keyid: String::new(),
            sig: String::new(),
        }
    }

    /// An agent's view must be a tree of the customer's own log: the root at that size.
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
