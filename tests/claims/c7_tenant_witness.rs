//! Claim C7 with the tenant's key: no party on the provider's side — nor the log,
//! witness and gateway operators together — can run an action the customer cannot
//! see. The demo agent of `palisade up` is installed with the demo tenant's public
//! key; it acts only under the newest witness statement signed by that key, and
//! requires the cosignature of the tenant's own witness (a process of its own, its
//! key under `tenant-demo/`) beside the provider's quorum.
//!
//! The attacker here holds everything outside the tenant's directory: the log's
//! key, the provider witness's key, the gateway's key and certificate, and a copy of
//! the log.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::Stack;
use palisade_agent::dispatch::AgentStatement;
use palisade_agent::dispatch::{Consistency, DispatchRequest, RefusalCode, ResultOutcome};
use palisade_core::event::Event;
use palisade_core::time::Timestamp;
use palisade_policy::keys::SigningKey;
use palisade_policy::tenant::{TenantTrust, TENANT_TRUST_SCHEMA};
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::note::{KeyType, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tree::{consistency_proof, Frontier};
use std::path::Path;

/// Every file under `dir` (the instance's backup store), recursively.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A statement by `key` for the demo cluster.
fn statement(
    key: &SigningKey,
    seq: u64,
    witnesses: Vec<String>,
) -> palisade_policy::dsse::Envelope {
    TenantTrust {
        schema: TENANT_TRUST_SCHEMA.into(),
        tenant: palisade_core::TenantId::parse("demo").expect("tenant"),
        cluster: palisade_core::ClusterId::parse("demo").expect("cluster"),
        seq,
        issued_at: Timestamp::now(),
        quorum: 1,
        witnesses,
        approval: None,
    }
    .sign(key)
    .expect("sign")
}

fn tenant_key(stack: &Stack) -> SigningKey {
    SigningKey::read(&stack.dir.join(palisade_core::inventory::demo_tenant::KEY)).expect("key")
}

/// The attack: a copy of the real log, extended in private by a forged
/// `etcd.backup` intent, signed with the log's key and cosigned with the provider
/// witness's key, shown to the real agent with a valid consistency proof from its
/// view. Refused for want of the tenant witness's cosignature; nothing ran (no
/// backup object), the agent's view did not move, and the same forgery cosigned by
/// the tenant's witness key too (which the provider does not hold) would be needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_alone_cannot_show_the_agent_a_private_fork() {
    let stack = Stack::start();
    stack
        .execute("etcd.status", &[])
        .await
        .expect("an honest action");
    let seen = stack.seen().await;
    let backups = stack.dir.join("backups");
    let before = files(&backups);

    // The copy of the log up to the agent's view, read from its tiles.
    let source = stack.dispatcher.source("demo").expect("source");
    let (_, real) = palisade_tlog_service::audit::read_entries(&source, &stack.log_policy)
        .await
        .expect("read the log");
    let mut entries: Vec<Vec<u8>> = real
        .iter()
        .take(usize::try_from(seen).expect("size"))
        .map(|b| b.to_vec())
        .collect();
    assert_eq!(entries.len() as u64, seen);

    let p = stack.prepare("etcd.backup", &[]);
    let intent = Event::Intent(Box::new(p.intent.clone()))
        .to_log_entry()
        .expect("entry");
    entries.push(intent.clone());
    let mut frontier = Frontier::new();
    let mut stored: Vec<Hash> = Vec::new();
    for e in &entries {
        stored.extend(frontier.append(leaf_hash(e)).expect("append"));
    }
    let cp = Checkpoint::new("palisade.local/log/demo", frontier.size(), frontier.root())
        .expect("checkpoint");
    let now = u64::try_from(Timestamp::now().unix_seconds()).expect("time");
    let mut note = cp.sign(&stack.log_signer()).expect("log key");
    note.cosign(&stack.witness_signer(), now)
        .expect("provider witness");
    let proof = TlogProof::produce(seen, note.clone(), None, stored.as_slice()).expect("proof");
    let consistency = Consistency {
        from_size: seen,
        hashes: consistency_proof(seen, frontier.size(), stored.as_slice())
            .expect("consistency")
            .iter()
            .map(Hash::to_base64)
            .collect(),
    };
    let req = DispatchRequest {
        dispatch: p.dispatch.sign(stack.gateway_key()).expect("gateway key"),
        event: DispatchRequest::encode_event(&intent),
        proof: String::from_utf8(proof.to_bytes()).expect("utf8"),
        consistency: Some(consistency.clone()),
        tenant_trust: stack.dispatcher.tenant_trust("demo"),
        approval: None,
    };
    let r = stack.refused(&req).await;
    assert_eq!(r.code, RefusalCode::NotInLog, "{r}");
    assert!(r.detail.contains("tenant demo's witnesses"), "{r}");
    // The refusal is the agent's word, signed: what it refused and under which trust.
    let signed = palisade_agent::dispatch::AgentRefusal::verify(
        r.signed.as_deref().expect("a signed refusal"),
        &stack.agent_keys,
    )
    .expect("signed by the agent's key");
    assert_eq!(signed.code, RefusalCode::NotInLog);
    assert_eq!(signed.dispatch_digest, Some(p.intent.dispatch_digest));
    assert_eq!(signed.trust.tenant.map(|t| t.seq), Some(1));
    assert_eq!(stack.seen().await, seen, "the agent's view moved");
    assert_eq!(files(&backups), before, "the forged backup wrote something");

    // Without any statement, or with one the provider signed itself (naming a
    // witness it controls), the agent does not even look at the checkpoint.
    let mut none = req.clone();
    none.tenant_trust = None;
    let r = stack.refused(&none).await;
    assert_eq!(r.code, RefusalCode::TenantTrust, "{r}");
    let mut forged = req.clone();
    forged.tenant_trust = Some(statement(
        stack.gateway_key(),
        99,
        vec![stack.witness_signer().verifier().to_string()],
    ));
    let r = stack.refused(&forged).await;
    assert_eq!(r.code, RefusalCode::TenantTrust, "{r}");
    assert!(r.detail.contains("not signed by the tenant's key"), "{r}");

    // The control: the same fork, also cosigned with the tenant witness's key, is
    // accepted — so the refusals above were for the tenant's witness alone.
    note.cosign(&stack.tenant_witness_signer(), now)
        .expect("tenant witness");
    let proof = TlogProof::produce(seen, note, None, stored.as_slice()).expect("proof");
    let mut with_tenant = req.clone();
    with_tenant.proof = String::from_utf8(proof.to_bytes()).expect("utf8");
    let ran = stack
        .send(&with_tenant)
        .await
        .expect("accepted with every key");
    assert_eq!(ran.outcome, ResultOutcome::Succeeded);
    assert_ne!(files(&backups), before, "the control backup wrote nothing");
}

/// Only the tenant moves its statement, and only forward: a newer statement signed
/// by the tenant's key (naming another witness) takes effect, after which the older
/// one is refused, also after the agent restarts; every result names the statement
/// it was accepted under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_newer_statement_by_the_tenant_changes_what_the_agent_requires() {
    let mut stack = Stack::start();
    let first = stack.dispatcher.tenant_trust("demo").expect("statement");
    let opened = TenantTrust::decode(&first).expect("decode");
    let done = stack.execute("etcd.health", &[]).await.expect("honest");
    let trust = done.result.trust.expect("the result names its trust");
    let tenant = trust.tenant.expect("the tenant part");
    assert_eq!((tenant.seq, tenant.statement), (1, opened.1));
    assert_eq!(tenant.witnesses, opened.0.witnesses);
    assert_eq!(trust.quorum, 1);
    assert_eq!(trust.witnesses.len(), 1);

    // The tenant moves to a new witness (not running yet): seq 2.
    let new_witness =
        SignerKey::generate("tenant-demo.example/witness-2", KeyType::Cosignature).expect("w2");
    let second = statement(
        &tenant_key(&stack),
        2,
        vec![new_witness.verifier().to_string()],
    );
    stack.dispatcher.set_tenant_trust("demo", second.clone());
    let p = stack.prepare("etcd.health", &[]);
    let r = stack.refused(&stack.logged_request(&p).await).await;
    assert_eq!(r.code, RefusalCode::NotInLog, "{r}");
    assert!(r.detail.contains("tenant demo's witnesses"), "{r}");

    // The statement was not taken on a refused dispatch: seq 1 still runs.
    stack.dispatcher.set_tenant_trust("demo", first.clone());
    stack
        .execute("etcd.health", &[])
        .await
        .expect("seq 1 still in force");

    // A dispatch accepted under seq 2 (its checkpoint cosigned by the new witness,
    // as it would be once the tenant runs it) puts seq 2 in force.
    stack.dispatcher.set_tenant_trust("demo", second.clone());
    let p = stack.prepare("etcd.health", &[]);
    let mut req = stack.logged_request(&p).await;
    let parsed = TlogProof::parse(req.proof.as_bytes()).expect("proof");
    let text = parsed.checkpoint().text().to_string();
    let mut note = parsed.checkpoint().clone();
    let now = u64::try_from(Timestamp::now().unix_seconds()).expect("time");
    note.cosign(&new_witness, now).expect("cosign");
    let at = req.proof.find(&text).expect("note in proof");
    req.proof = format!(
        "{}{}",
        &req.proof[..at],
        String::from_utf8(note.to_bytes()).expect("utf8")
    );
    let ran = stack.send(&req).await.expect("accepted under seq 2");
    assert_eq!(ran.trust.and_then(|t| t.tenant).map(|t| t.seq), Some(2));

    // From now on seq 1 (the provider's easiest way back to a witness it might
    // have compromised) is refused, and stays refused across a restart.
    for restarted in [false, true] {
        if restarted {
            stack.restart();
        }
        stack.dispatcher.set_tenant_trust("demo", first.clone());
        let p = stack.prepare("etcd.health", &[]);
        let r = stack.refused(&stack.logged_request(&p).await).await;
        assert_eq!(
            r.code,
            RefusalCode::TenantTrust,
            "restarted {restarted}: {r}"
        );
        assert!(r.detail.contains("not the newest"), "{r}");
    }
}

/// `palisade agent check` says which tenant key the agent enforces.
#[test]
fn agent_check_names_the_tenant_key() {
    let stack = Stack::start();
    let out = common::palisade()
        .args(["agent", "check", "--config"])
        .arg(stack.dir.join("agent/agent.toml"))
        .output()
        .expect("palisade agent check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = palisade_policy::keys::PublicKey::read(
        &stack
            .dir
            .join(palisade_core::inventory::demo_tenant::PUBLIC_KEY),
    )
    .expect("tenant key");
    assert!(
        text.contains(&format!(
            "requires the witnesses named by tenant key {}",
            key.key_id()
        )),
        "{text}"
    );
}

/// The gateway records a tenant's statement in the cluster's log only for that
/// tenant's reader token, only forward, and says why it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_records_statements_only_for_their_tenant_and_only_forward() {
    let stack = Stack::start();
    let gw = stack.gateway();
    let token = stack.tenant_token();
    let path = "/v1/tenants/demo/clusters/demo/trust";
    let (status, shown) = gw.call("GET", path, Some(&token), None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["seq"], 1);
    let index = shown["index"].as_u64().expect("index");

    let witness = stack.tenant_witness_signer().verifier().to_string();
    let same = serde_json::to_value(statement(&tenant_key(&stack), 1, vec![witness.clone()]))
        .expect("json");
    let (status, body) = gw.call("PUT", path, Some(&token), Some(same.clone())).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("seq 2"),
        "{body}"
    );
    let (status, _) = gw.call("PUT", path, None, Some(same.clone())).await;
    assert_eq!(status, 401);
    let (status, _) = gw
        .call(
            "PUT",
            "/v1/tenants/other/clusters/demo/trust",
            Some(&token),
            Some(same),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = gw
        .call(
            "PUT",
            path,
            Some(&token),
            Some(serde_json::json!({"payload": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A stolen reader token cannot lock the cluster with a statement the tenant did
    // not sign (a huge seq no agent would accept): the gateway opens it with the
    // tenant's key first.
    let mallory = serde_json::to_value(statement(
        stack.gateway_key(),
        u64::MAX,
        vec![witness.clone()],
    ))
    .expect("json");
    let (status, body) = gw.call("PUT", path, Some(&token), Some(mallory)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not signed by the tenant's key"),
        "{body}"
    );
    let newer =
        serde_json::to_value(statement(&tenant_key(&stack), 2, vec![witness])).expect("json");
    let (status, body) = gw.call("PUT", path, Some(&token), Some(newer)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["seq"], 2);
    assert!(body["index"].as_u64().expect("index") > index);
    // It is in the log, as a tenant_trust event the customer reads back.
    let source = stack.dispatcher.source("demo").expect("source");
    let (_, entries) = palisade_tlog_service::audit::read_entries(&source, &stack.log_policy)
        .await
        .expect("read");
    let logged = entries
        .iter()
        .filter(|e| matches!(Event::from_log_entry(e), Ok(Event::TenantTrust(_))))
        .count();
    assert_eq!(logged, 2);
}
