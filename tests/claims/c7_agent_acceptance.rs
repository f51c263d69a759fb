//! Claim C7 at the agent (and C1/C2 through it): the agent executes nothing that is
//! not an authenticated, approved action whose exact intent is already in the
//! cluster's witnessed log. Every test here attacks one acceptance check over the
//! network, against the real stack of `palisade up` (log, witness, agent, the etcd
//! it supervises), and asserts the refusal and its reason — and, where it matters,
//! that the agent is still willing to run the honest version afterwards (nothing
//! half-done).
//!
//! The attacker is, in turn: someone without a gateway certificate; a component with
//! another role's certificate; a gateway-key thief without the log; a compromised
//! gateway (it holds the gateway key and certificate); and an attacker who also holds
//! the log's and the witness's signing keys (it can sign any checkpoint it likes).

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::Stack;
use palisade_agent::client::Prepared;
use palisade_agent::dispatch::{DispatchRequest, RefusalCode, ResultOutcome};
use palisade_core::event::{Event, ParamValue, PolicyRef};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, InstanceId, Sha256Digest};
use palisade_pki::{CertName, Role};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::SigningKey;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::note::{Note, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tree::{consistency_proof, Frontier};
use std::time::Duration;

/// Re-derives the intent's dispatch digest after the test changed the dispatch (a
/// consistent forgery: the log will name exactly what is sent).
fn reseal(p: &mut Prepared) {
    p.intent.dispatch_digest = p.dispatch.digest().expect("digest");
}

fn now_plus(secs: i64) -> Timestamp {
    Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + secs)
}

fn assert_refused(r: &palisade_agent::dispatch::Refusal, code: RefusalCode, detail: &str) {
    assert_eq!(r.code, code, "{r}");
    assert!(
        r.detail.contains(detail),
        "refusal {r} does not say {detail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gateway_certificates_complete_the_handshake() {
    let stack = Stack::start();
    let pki = stack.dir.join("pki");
    let probe = |cfg: rustls::ClientConfig| async {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        client
            .get(format!("{}/healthz", stack.agent_url))
            .send()
            .await
    };
    // No client certificate at all.
    let roots = palisade_pki::load_roots(&pki.join("ca.crt")).expect("roots");
    let anonymous = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(
        probe(anonymous).await.is_err(),
        "served a client without a certificate"
    );

    // A valid certificate of another role: the agent's own, and an operator's.
    palisade_pki::issue(
        &pki,
        Role::Operator,
        &CertName::new("mallory").expect("name"),
        &[],
        30,
        false,
    )
    .expect("issue operator cert");
    for (cert, key) in [
        ("agent-demo-0.crt", "agent-demo-0.key"),
        ("operator-mallory.crt", "operator-mallory.key"),
    ] {
        let cfg = palisade_pki::client_config(
            &pki.join("ca.crt"),
            &pki.join(cert),
            &pki.join(key),
            &[Role::Agent],
        )
        .expect("client config");
        assert!(probe(cfg).await.is_err(), "served a {cert} client");
    }

    // The gateway's certificate works, so the refusals above are about the role.
    let health = stack
        .dispatcher
        .health(&stack.agent_url)
        .await
        .expect("gateway health");
    assert_eq!(health.cluster.as_str(), "demo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_targets_and_times_are_checked() {
    let stack = Stack::start();

    // Signed by a key that is not a gateway key (a reviewer's).
    let p = stack.prepare("etcd.status", &[]);
    let mut req = stack.logged_request(&p).await;
    let alice = SigningKey::read(&stack.dir.join("trust/keys/reviewers/alice.key")).expect("key");
    req.dispatch = p.dispatch.sign(&alice).expect("sign");
    let r = stack.refused(&req).await;
    assert_refused(
        &r,
        RefusalCode::BadSignature,
        "not signed by a trusted gateway key",
    );

    // A genuine signature over another payload: the parameters were changed after
    // signing (payload swapped, signature kept).
    let mut tampered = p.dispatch.clone();
    tampered.action = ActionName::parse("etcd.defragment").expect("action");
    let genuine = p.dispatch.sign(stack.gateway_key()).expect("sign");
    let mut swapped = tampered.sign(&alice).expect("sign");
    swapped.signatures = genuine.signatures.clone();
    req.dispatch = swapped;
    let r = stack.refused(&req).await;
    assert_eq!(r.code, RefusalCode::BadSignature, "{r}");

    // The honest request still runs: nothing above spent its nonce.
    req.dispatch = genuine;
    let result = stack.send(&req).await.expect("the honest dispatch runs");
    assert_eq!(result.outcome, ResultOutcome::Succeeded);

    // Another instance, another cluster.
    let mut p = stack.prepare("etcd.status", &[]);
    p.dispatch.instance = InstanceId::parse("demo-1").expect("instance");
    p.intent.instance = Some(p.dispatch.instance.clone());
    reseal(&mut p);
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_refused(&r, RefusalCode::WrongTarget, "demo-1");

    // Another cluster with the same instance id, and another tenant.
    let mut p = stack.prepare("etcd.status", &[]);
    p.dispatch.cluster = palisade_core::ClusterId::parse("other").expect("cluster");
    p.intent.cluster = p.dispatch.cluster.clone();
    reseal(&mut p);
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_refused(&r, RefusalCode::WrongTarget, "other");
    let mut p = stack.prepare("etcd.status", &[]);
    p.dispatch.tenant = palisade_core::TenantId::parse("other").expect("tenant");
    p.intent.tenant = p.dispatch.tenant.clone();
    reseal(&mut p);
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_refused(&r, RefusalCode::WrongTarget, "other");

    // Expired (100 s ago), valid too long, expiring before it is issued (10 s, within
    // the clock skew, so that only the order of the two times refuses it), not yet
    // valid.
    for (issued, expires, code) in [
        (-200, -100, RefusalCode::Expired),
        (0, 3_600, RefusalCode::TtlTooLong),
        (0, -10, RefusalCode::TtlTooLong),
        (600, 650, RefusalCode::NotYetValid),
    ] {
        let mut p = stack.prepare("etcd.status", &[]);
        p.dispatch.issued_at = now_plus(issued);
        p.dispatch.expires_at = now_plus(expires);
        reseal(&mut p);
        let r = stack.refused(&stack.logged_request(&p).await).await;
        assert_eq!(r.code, code, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_runs_once_even_across_a_restart() {
    let mut stack = Stack::start();
    let p = stack.prepare("etcd.status", &[]);
    let req = stack.logged_request(&p).await;
    let first = stack.send(&req).await.expect("first run");
    assert_eq!(first.outcome, ResultOutcome::Succeeded);
    let r = stack.refused(&req).await;
    assert_refused(&r, RefusalCode::Replayed, "already executed");

    stack.restart();
    let r = stack.refused(&req).await;
    assert_refused(&r, RefusalCode::Replayed, "already executed");
    // The agent is otherwise fine after the restart.
    let ok = stack
        .execute("etcd.health", &[])
        .await
        .expect("after restart");
    assert_eq!(ok.result.outcome, ResultOutcome::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_action_and_parameters_are_checked_again_at_the_agent() {
    let stack = Stack::start();

    // A policy the agent did not verify: another digest, same or newer version.
    for version in [1, 2] {
        let mut p = stack.prepare("etcd.status", &[]);
        p.dispatch.policy = PolicyRef {
            version,
            digest: Sha256Digest::of(b"a policy nobody approved"),
        };
        p.intent.policy = p.dispatch.policy.clone();
        reseal(&mut p);
        let r = stack.refused(&stack.logged_request(&p).await).await;
        assert_refused(&r, RefusalCode::PolicyMismatch, "this agent verified");
    }

    // Actions that are not in the approved policy.
    for action in ["shell.run", "etcd.exec", "files.read", "kube.port-forward"] {
        let mut p = stack.prepare("etcd.status", &[]);
        p.dispatch.action = ActionName::parse(action).expect("action name");
        p.intent.action = p.dispatch.action.clone();
        reseal(&mut p);
        let r = stack.refused(&stack.logged_request(&p).await).await;
        assert_eq!(r.code, RefusalCode::UnknownAction, "{action}: {r}");
    }

    // Parameters a compromised gateway might send, logged faithfully: every attack
    // class of docs/threat-model.md against the typed parameters of real actions.
    let s = |v: &str| ParamValue::Str(v.to_string());
    let cases: Vec<(&str, Vec<(&str, ParamValue)>)> = vec![
        ("kube.cordon", vec![("node", s("-rf"))]),
        ("kube.cordon", vec![("node", s("--all"))]),
        ("kube.cordon", vec![("node", s("worker-1; rm -rf /"))]),
        ("kube.cordon", vec![("node", s("$(reboot)"))]),
        ("kube.cordon", vec![("node", s("`id`"))]),
        ("kube.cordon", vec![("node", s("worker-*"))]),
        ("kube.cordon", vec![("node", s("../../etc/passwd"))]),
        (
            "kube.cordon",
            vec![("node", s("/etc/kubernetes/admin.conf"))],
        ),
        ("kube.cordon", vec![("node", s("worker-1\0"))]),
        ("kube.cordon", vec![("node", s("worker-1\nworker-2"))]),
        ("kube.cordon", vec![("node", s("w\u{043e}rker-1"))]),
        ("kube.cordon", vec![("node", s("worke\u{0301}r"))]),
        ("kube.cordon", vec![("node", s(&"a".repeat(300)))]),
        ("kube.cordon", vec![("node", ParamValue::Int(7))]),
        ("kube.cordon", vec![("node", ParamValue::Bool(true))]),
        ("kube.cordon", vec![]),
        (
            "kube.cordon",
            vec![("node", s("worker-1")), ("force", ParamValue::Bool(true))],
        ),
        ("component.restart", vec![("component", s("etcd;sh"))]),
        ("component.restart", vec![("component", s("../bin/sh"))]),
        ("component.restart", vec![("component", s("ETCD"))]),
        (
            "component.upgrade",
            vec![("component", s("etcd")), ("version", s("-v"))],
        ),
        (
            "component.upgrade",
            vec![("component", s("etcd")), ("version", s("3.4.23/../../x"))],
        ),
        (
            "etcd.backup-prune",
            vec![("keep_last", ParamValue::Int(-1))],
        ),
        (
            "etcd.backup-prune",
            vec![("keep_last", ParamValue::Int(i64::MAX))],
        ),
        ("etcd.backup-prune", vec![("keep_last", s("3"))]),
        (
            "etcd.backup-prune",
            vec![("keep_last", ParamValue::Int(3)), ("older_than", s("1s"))],
        ),
        ("etcd.status", vec![("endpoint", s("http://10.0.0.1:2379"))]),
    ];
    for (action, params) in cases {
        let mut p = stack.prepare("etcd.status", &[]);
        p.dispatch.action = ActionName::parse(action).expect("action");
        p.dispatch.parameters = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        p.intent.action = p.dispatch.action.clone();
        p.intent.parameters = p.dispatch.parameters.clone();
        reseal(&mut p);
        let r = stack.refused(&stack.logged_request(&p).await).await;
        assert_eq!(
            r.code,
            RefusalCode::InvalidParameters,
            "{action} {params:?} was not refused as invalid: {r}"
        );
    }

    // Duplicated keys and an array for a scalar cannot even be a dispatch.
    let p = stack.prepare("kube.cordon", &[("node", "worker-1")]);
    let text = String::from_utf8(p.dispatch.to_bytes().expect("bytes")).expect("utf8");
    for forged in [
        text.replace(
            r#"{"node":"worker-1"}"#,
            r#"{"node":"worker-1","node":"-rf"}"#,
        ),
        text.replace(
            r#"{"node":"worker-1"}"#,
            r#"{"node":["worker-1","worker-2"]}"#,
        ),
    ] {
        assert_ne!(forged, text);
        let mut req = stack.logged_request(&p).await;
        req.dispatch = Envelope::sign(
            palisade_agent::dispatch::DISPATCH_PAYLOAD_TYPE,
            forged.as_bytes(),
            stack.gateway_key(),
        );
        let r = stack.refused(&req).await;
        assert_eq!(r.code, RefusalCode::Malformed, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logged_intent_must_be_exactly_this_dispatch() {
    let stack = Stack::start();

    // Parameters changed after logging: the log says worker-1, the gateway then
    // signs a dispatch for worker-2.
    let logged = stack.prepare("kube.cordon", &[("node", "worker-1")]);
    let (entry, appended) = stack
        .log_event(&Event::Intent(Box::new(logged.intent.clone())))
        .await;
    let mut changed = logged.dispatch.clone();
    changed
        .parameters
        .insert("node".into(), ParamValue::Str("worker-2".into()));
    let req = stack
        .request_for(
            &changed.sign(stack.gateway_key()).expect("sign"),
            &entry,
            appended.index,
        )
        .await;
    let r = stack.refused(&req).await;
    assert_refused(&r, RefusalCode::EventMismatch, "dispatch digest");

    // The log names this dispatch's digest but other parameters (an intent that
    // misdescribes what runs).
    let mut p = stack.prepare("kube.cordon", &[("node", "worker-1")]);
    p.intent
        .parameters
        .insert("node".into(), ParamValue::Str("worker-9".into()));
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_refused(&r, RefusalCode::EventMismatch, "parameters");

    // Every other field of the intent is compared with the dispatch on its own.
    type Edit = fn(&mut palisade_core::event::IntentEvent);
    let edits: [(&str, Edit); 5] = [
        ("event id", |i| {
            i.event_id =
                palisade_core::EventId::parse("00000000000000000000000000000001").expect("id")
        }),
        ("cluster", |i| {
            i.cluster = palisade_core::ClusterId::parse("other").expect("cluster")
        }),
        ("instance", |i| {
            i.instance = Some(InstanceId::parse("demo-9").expect("instance"))
        }),
        ("action", |i| {
            i.action = ActionName::parse("etcd.members").expect("action")
        }),
        ("policy", |i| i.policy.version += 1),
    ];
    for (what, edit) in edits {
        let mut p = stack.prepare("etcd.status", &[]);
        edit(&mut p.intent);
        let r = stack.refused(&stack.logged_request(&p).await).await;
        assert_refused(&r, RefusalCode::EventMismatch, what);
    }

    // Another operator in the log than in the dispatch.
    let mut p = stack.prepare("etcd.status", &[]);
    p.intent.actor.id = palisade_core::OperatorId::parse("op-other").expect("op");
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_refused(&r, RefusalCode::EventMismatch, "actor");

    // An intent that was never logged, proven with another entry's proof.
    let unlogged = stack.prepare("etcd.defragment", &[]);
    let other = stack.prepare("etcd.status", &[]);
    let mut req = stack.logged_request(&other).await;
    req.dispatch = unlogged.dispatch.sign(stack.gateway_key()).expect("sign");
    req.event = DispatchRequest::encode_event(
        &Event::Intent(Box::new(unlogged.intent.clone()))
            .to_log_entry()
            .expect("entry"),
    );
    let r = stack.refused(&req).await;
    assert_eq!(r.code, RefusalCode::NotInLog, "{r}");

    // A result event or a refusal event is not an intent.
    let mut req = stack.logged_request(&other).await;
    let result_event = Event::Result(palisade_core::event::ResultEvent {
        event_id: other.intent.event_id.clone(),
        time: Timestamp::now(),
        cluster: other.intent.cluster.clone(),
        intent: other.intent.event_id.clone(),
        outcome: palisade_core::event::Outcome::Succeeded,
        output_digest: None,
        output: None,
        detail: None,
        reconciled: false,
        agent: None,
        agent_refusal: None,
    });
    let (entry, appended) = stack.log_event(&result_event).await;
    let fresh = stack
        .request_for(&req.dispatch, &entry, appended.index)
        .await;
    req.event = fresh.event;
    req.proof = fresh.proof;
    req.consistency = fresh.consistency;
    let r = stack.refused(&req).await;
    assert_refused(&r, RefusalCode::EventMismatch, "not an intent");
}

/// What an attacker holding the log's and the witness's private keys can build: any
/// tree, signed and cosigned.
struct ForgedLog {
    frontier: Frontier,
    stored: Vec<Hash>,
}

impl ForgedLog {
    fn with_entries(entries: &[Vec<u8>]) -> Self {
        let mut log = Self {
            frontier: Frontier::new(),
            stored: Vec::new(),
        };
        for e in entries {
            let new = log.frontier.append(leaf_hash(e)).expect("append");
            log.stored.extend(new);
        }
        log
    }

    fn note(&self, log_key: &SignerKey, witnesses: &[&SignerKey]) -> Note {
        let cp = Checkpoint::new(
            "palisade.local/log/demo",
            self.frontier.size(),
            self.frontier.root(),
        )
        .expect("checkpoint");
        let mut note = cp.sign(log_key).expect("sign");
        for w in witnesses {
            let ts = u64::try_from(Timestamp::now().unix_seconds()).expect("time");
            note.cosign(w, ts).expect("cosign");
        }
        note
    }

    fn proof(&self, index: u64, note: Note) -> String {
        let p = TlogProof::produce(index, note, None, self.stored.as_slice()).expect("proof");
        String::from_utf8(p.to_bytes()).expect("utf8")
    }

    fn consistency(&self, old: u64) -> Vec<String> {
        consistency_proof(old, self.frontier.size(), self.stored.as_slice())
            .expect("consistency")
            .iter()
            .map(Hash::to_base64)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_rolled_back_and_unwitnessed_checkpoints_are_refused() {
    let stack = Stack::start();
    // The agent's view: the real log after two honest actions.
    stack
        .execute("etcd.status", &[])
        .await
        .expect("honest action");
    stack
        .execute("etcd.health", &[])
        .await
        .expect("honest action");
    let seen = stack.seen().await;
    assert!(seen >= 2);
    // This attacker holds every key, the tenant witness's too (the provider alone
    // is refused for lack of it: c7_tenant_witness.rs): the agent's view is the last
    // line.
    let (log_key, witness_key, tenant_key) = (
        stack.log_signer(),
        stack.witness_signer(),
        stack.tenant_witness_signer(),
    );
    let all = [&witness_key, &tenant_key];

    // The forged intent an attacker wants executed, signed by the (stolen) gateway
    // key but never appended to the real log.
    let p = stack.prepare("etcd.defragment", &[]);
    let envelope = p.dispatch.sign(stack.gateway_key()).expect("sign");
    let entry = Event::Intent(Box::new(p.intent.clone()))
        .to_log_entry()
        .expect("entry");
    let junk =
        |n: usize| -> Vec<Vec<u8>> { (0..n).map(|i| format!("junk {i}").into_bytes()).collect() };
    let request = |proof: String, consistency: Option<palisade_agent::dispatch::Consistency>| {
        DispatchRequest {
            dispatch: envelope.clone(),
            event: DispatchRequest::encode_event(&entry),
            proof,
            consistency,
            tenant_trust: stack.dispatcher.tenant_trust("demo"),
            approval: None,
        }
    };
    let size = usize::try_from(seen).expect("size");

    // A fork: another tree of the size the agent has seen.
    let mut entries = junk(size - 1);
    entries.push(entry.clone());
    let fork = ForgedLog::with_entries(&entries);
    let note = fork.note(&log_key, &all);
    let r = stack
        .refused(&request(fork.proof(seen - 1, note), None))
        .await;
    assert_refused(&r, RefusalCode::Inconsistent, "forked");

    // A longer forked tree, with a consistency proof computed in the fork.
    let mut entries = junk(size + 2);
    entries.push(entry.clone());
    let longer = ForgedLog::with_entries(&entries);
    let note = longer.note(&log_key, &all);
    let cons = palisade_agent::dispatch::Consistency {
        from_size: seen,
        hashes: longer.consistency(seen),
    };
    let r = stack
        .refused(&request(longer.proof(seen + 2, note), Some(cons)))
        .await;
    assert_refused(&r, RefusalCode::Inconsistent, "not consistent");

    // A rolled-back (shorter) log.
    let short = ForgedLog::with_entries(std::slice::from_ref(&entry));
    let note = short.note(&log_key, &all);
    let r = stack.refused(&request(short.proof(0, note), None)).await;
    assert_eq!(r.code, RefusalCode::StaleView, "{r}");
    assert_eq!(r.known_size, Some(seen));

    // A checkpoint without the witness's cosignature, even one the real log signed:
    // strip the cosignature from an honest proof.
    let honest = stack.prepare("etcd.health", &[]);
    let req = stack.logged_request(&honest).await;
    let stripped: String = req
        .proof
        .lines()
        .filter(|l| !l.starts_with("\u{2014} palisade.local/witness "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(stripped, req.proof, "the proof had a cosignature to strip");
    let mut unwitnessed = req.clone();
    unwitnessed.proof = stripped;
    let r = stack.refused(&unwitnessed).await;
    assert_refused(&r, RefusalCode::NotInLog, "witness cosignatures");

    // Signed by a key that is not the log's.
    let impostor = SignerKey::generate("palisade.local/log", palisade_tlog::note::KeyType::Ed25519)
        .expect("key");
    let mut entries = junk(size);
    entries.push(entry.clone());
    let other = ForgedLog::with_entries(&entries);
    let note = other.note(&impostor, &all);
    let r = stack.refused(&request(other.proof(seen, note), None)).await;
    assert_eq!(r.code, RefusalCode::NotInLog, "{r}");

    // A stale but honest proof: the agent asks for a newer checkpoint, and the same
    // dispatch (same nonce) then runs, because nothing was spent by the refusal.
    let later = stack.prepare("etcd.alarms", &[]);
    let (later_entry, appended) = stack
        .log_event(&Event::Intent(Box::new(later.intent.clone())))
        .await;
    let stale_req = DispatchRequest {
        dispatch: later.dispatch.sign(stack.gateway_key()).expect("sign"),
        event: DispatchRequest::encode_event(&later_entry),
        proof: appended.proof.clone(),
        consistency: None,
        tenant_trust: stack.dispatcher.tenant_trust("demo"),
        approval: None,
    };
    stack
        .execute("etcd.health", &[])
        .await
        .expect("advance the view");
    let r = stack.refused(&stale_req).await;
    assert_eq!(r.code, RefusalCode::StaleView, "{r}");
    let fresh = stack
        .request_for(&stale_req.dispatch, &later_entry, appended.index)
        .await;
    let result = stack.send(&fresh).await.expect("runs with fresh proofs");
    assert_eq!(result.outcome, ResultOutcome::Succeeded);

    // A genuine proof, but for another index of the log than the entry's.
    let fresh = stack
        .request_for(&req.dispatch, &req.event_bytes().expect("entry"), 0)
        .await;
    let r = stack.refused(&fresh).await;
    assert_eq!(r.code, RefusalCode::NotInLog, "{r}");
}

/// Step 5's re-verification: a policy approved and published while the agent runs is
/// picked up by the first dispatch that names it (the agent re-verifies the repository
/// on demand), and from then on the older policy is the one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_approved_policy_is_accepted_while_the_agent_runs() {
    use palisade_policy::keys::SigningKey;
    use palisade_policy::tuf::{Lifetimes, OnlineKeys, RepoDir};

    let mut stack = Stack::start();
    let old = stack.policy.reference();
    let ok = stack.execute("etcd.status", &[]).await.expect("honest");
    assert_eq!(ok.result.outcome, ResultOutcome::Succeeded);

    // The next version of the published policy: proposed by alice, approved by bob
    // and carol, published with the online keys (as `palisade up` did the first).
    let keys = stack.dir.join("trust/keys");
    let repo = RepoDir::new(stack.dir.join("trust/repo"));
    let life = Lifetimes::default();
    let published = include_str!("../../deploy/policy/default.yaml");
    let newer = format!("version: {}", old.version + 1);
    let text = published.replacen(&format!("version: {}", old.version), &newer, 1);
    assert!(text.contains(&newer), "the policy names its version");
    let reviewer =
        |n: &str| SigningKey::read(&keys.join(format!("reviewers/{n}.key"))).expect("reviewer key");
    let proposal = palisade_policy::trusted_policy::propose_policy(
        &repo,
        &reviewer("alice"),
        text.as_bytes(),
        &life,
    )
    .expect("propose");
    for who in ["bob", "carol"] {
        palisade_policy::approval::approve(&repo, &proposal.id, &reviewer(who)).expect("approve");
    }
    let online = OnlineKeys::load(&keys).expect("online keys");
    palisade_policy::trusted_policy::publish_policy(&repo, &online, &proposal.id, &life)
        .expect("publish");

    // The gateway verifies it and names it; the agent, still holding the old one,
    // re-verifies and runs the dispatch.
    stack.policy =
        harness::verified_policy(&stack.dir, &stack.tmp.path().join("gateway-datastore"));
    let new = stack.policy.reference();
    assert_eq!(new.version, old.version + 1);
    assert_ne!(new.digest, old.digest);
    let ok = stack
        .execute("etcd.status", &[])
        .await
        .expect("a dispatch naming the newer approved policy runs");
    assert_eq!(ok.result.outcome, ResultOutcome::Succeeded);

    // The agent now holds the newer policy: a dispatch naming the old one is refused.
    let mut p = stack.prepare("etcd.status", &[]);
    p.dispatch.policy = old.clone();
    p.intent.policy = old;
    reseal(&mut p);
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_refused(&r, RefusalCode::PolicyMismatch, "this agent verified");
}

/// The real log's checkpoint for a real intent, re-cosigned by the (stolen) witness
/// key at `cosigned_at`: what an insider holding the log's and the witness's keys
/// could show the agent from a view frozen at that time.
fn recosigned(stack: &Stack, proof: &str, cosigned_at: i64) -> String {
    let parsed = TlogProof::parse(proof.as_bytes()).expect("proof");
    let text = parsed.checkpoint().text().to_string();
    let mut note = Note::new(text.clone()).expect("note");
    note.sign(&stack.log_signer()).expect("log signature");
    for w in [stack.witness_signer(), stack.tenant_witness_signer()] {
        note.cosign(&w, u64::try_from(cosigned_at).expect("time"))
            .expect("cosign");
    }
    let at = proof.find(&text).expect("the note in the proof");
    format!(
        "{}{}",
        &proof[..at],
        String::from_utf8(note.to_bytes()).expect("utf8")
    )
}

/// A checkpoint whose witness cosignatures are older than the agent's bound (5
/// minutes) is refused, even with every signature valid: a frozen or withheld view
/// cannot be fed to the agent. The same request cosigned now runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_cosigned_too_long_ago_is_refused() {
    let stack = Stack::start();
    let now = Timestamp::now().unix_seconds();
    let p = stack.prepare("etcd.health", &[]);
    let req = stack.logged_request(&p).await;
    for age in [301, 3600, 86_400 * 30] {
        let mut old = req.clone();
        old.proof = recosigned(&stack, &req.proof, now - age);
        let r = stack.refused(&old).await;
        assert_refused(&r, RefusalCode::StaleCheckpoint, "within the last 300 s");
    }
    // Cosigned "in the future" beyond the clock skew: refused as well.
    let mut future = req.clone();
    future.proof = recosigned(&stack, &req.proof, now + 3600);
    let r = stack.refused(&future).await;
    assert_refused(&r, RefusalCode::StaleCheckpoint, "frozen or withheld");
    // Nothing was spent: the same dispatch, cosigned within the bound, runs.
    let mut fresh = req.clone();
    fresh.proof = recosigned(&stack, &req.proof, now - 200);
    let result = stack
        .send(&fresh)
        .await
        .expect("a fresh enough checkpoint runs");
    assert_eq!(result.outcome, ResultOutcome::Succeeded);
}
