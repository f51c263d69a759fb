//! The checks of a log's events, entry by entry in log order.

use std::collections::HashMap;

use palisade_core::event::{AgentAttestation, IntentEvent, Outcome, ResultEvent};
use palisade_tlog::hash::Hash;

/// What the events seen so far establish, and the checks of the next one.
#[derive(Default)]
pub struct EventChecks {
    /// Intent event id → its index.
    intents: HashMap<String, u64>,
    /// Intent event id → the index of its result.
    results: HashMap<String, u64>,
    intent_events: HashMap<String, IntentEvent>,
    pub tenant: TenantStatements,
}

impl EventChecks {
    /// An intent at `index`: logged once.
    pub fn intent(&mut self, index: u64, e: &IntentEvent) -> Vec<String> {
        let mut problems = Vec::new();
        if self.intents.insert(e.event_id.to_string(), index).is_some() {
            problems.push(format!("intent {} is logged twice", e.event_id));
        }
        self.intent_events.insert(e.event_id.to_string(), e.clone());
        self.tenant.at_intent(e.event_id.as_str());
        problems
    }

    /// A result at `index`, in a log whose roots by size are `roots`: its output
    /// matches its digest, the agent's view is a tree of this log and names the
    /// tenant trust in force, an outcome only the agent can know carries the agent's
    /// signature, and it answers an earlier intent that has no other result. (The
    /// signature itself is checked by the caller, against the agent keys it holds.)
    pub fn result(&mut self, index: u64, r: &ResultEvent, roots: &[Hash]) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = r.check_output() {
            problems.push(format!("output: {e}"));
        }
        // The view the agent acted on must be a tree of this log: an agent shown a
        // fork says so in every result it signs afterwards.
        if let Some(a) = &r.agent {
            problems.extend(view_problem(roots, a));
            problems.extend(self.tenant.enforced_problem(r.intent.as_str(), a));
        }
        if agents_word(r.outcome) && r.agent.is_none() {
            problems.push(format!(
                "{} result without the agent's signature: the gateway wrote it alone",
                r.outcome.as_str()
            ));
        }
        if r.outcome == Outcome::RefusedByAgent && r.agent_refusal.is_none() {
            problems.push(
                "refused_by_agent result without the agent's signature: the gateway wrote it alone"
                    .into(),
            );
        }
        if r.agent_refusal.is_some() && r.outcome != Outcome::RefusedByAgent {
            problems.push(format!(
                "a {} result carries an agent's refusal",
                r.outcome.as_str()
            ));
        }
        match self.intents.get(r.intent.as_str()) {
            None => problems.push(format!(
                "a result for intent {}, which is not earlier in the log",
                r.intent
            )),
            Some(_) => {
                if let Some(first) = self.results.insert(r.intent.to_string(), index) {
                    problems.push(format!(
                        "a second result for intent {} (the first is at {first})",
                        r.intent
                    ));
                }
            }
        }
        problems
    }

    /// The intent logged with this event id, if it is earlier in the log.
    pub fn intent_of(&self, event_id: &str) -> Option<&IntentEvent> {
        self.intent_events.get(event_id)
    }

    /// The intents with no result yet (an action still running, or a result the
    /// gateway is still appending).
    pub fn pending(&self) -> Vec<&str> {
        let mut p: Vec<_> = self
            .intents
            .iter()
            .filter(|(id, _)| !self.results.contains_key(*id))
            .map(|(id, index)| (*index, id.as_str()))
            .collect();
        p.sort_unstable();
        p.into_iter().map(|(_, id)| id).collect()
    }
}

/// An outcome only the agent can know: the agent's to sign.
pub fn agents_word(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Succeeded | Outcome::Failed)
}

/// The tenant's witness statements met so far, in log order.
#[derive(Default)]
pub struct TenantStatements {
    /// Statement digest → seq, for every statement in the log so far.
    logged: HashMap<String, u64>,
    /// The newest statement's seq so far.
    newest: Option<u64>,
    /// Intent event id → the seq in force when it was logged.
    at_intent: HashMap<String, u64>,
}

impl TenantStatements {
    /// A statement at `index` with this `seq` and `digest`: each must have a higher
    /// seq than the one before.
    pub fn record(&mut self, index: u64, seq: u64, digest: &str) -> Option<String> {
        let problem = self.newest.filter(|n| seq <= *n).map(|n| {
            format!("tenant statement at {index} has seq {seq}, not above the {n} before it")
        });
        self.logged.insert(digest.to_string(), seq);
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        problem
    }

    fn at_intent(&mut self, intent: &str) {
        if let Some(n) = self.newest {
            self.at_intent.insert(intent.to_string(), n);
        }
    }

    /// Whether an agent's signed result names a tenant trust this log holds, no
    /// older than the one in force when its intent was logged.
    pub fn enforced_problem(&self, intent: &str, a: &AgentAttestation) -> Option<String> {
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

/// Why the view an agent reports (size, root) is not a tree of the log whose roots
/// by size are `roots`, if it is not.
pub fn view_problem(roots: &[Hash], a: &AgentAttestation) -> Option<String> {
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
        assert_eq!(t.record(0, 1, &digest(b"s1").to_string()), None);
        assert_eq!(t.record(1, 2, &digest(b"s2").to_string()), None);
        t.at_intent("i");
        assert!(t
            .record(2, 2, &digest(b"s2 again").to_string())
            .expect("a seq not above the one before")
            .contains("not above the 2 before it"));
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
