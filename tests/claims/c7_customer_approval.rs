//! Customer approval, enforced on the instance. The demo tenant of `palisade up`
//! requires one approval by one of its two approvers (`ana`, `ben`, keys under
//! `tenant-demo/approvers/`) for every disruptive action. The agent refuses such an
//! action unless the dispatch carries the approvals of exactly that request; the
//! attacker here holds the gateway's key (and so can send the agent anything) and an
//! operator's identity, never an approver's or the tenant's key. Every attempt below
//! first logs its intent, so the customer sees it.

#![allow(clippy::unwrap_used)]

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::palisade;
use harness::Stack;
use palisade_agent::client::{prepare_as, Prepared};
use palisade_agent::dispatch::{ApprovalBundle, RefusalCode, ResultOutcome};
use palisade_core::event::{ApprovalRef, ApprovalRequestEvent, Event};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, EventId, InstanceId, Sha256Digest};
use palisade_policy::customer_approval::{
    ApprovalPolicy, Approver, CustomerApproval, Decision, APPROVAL_SCHEMA,
};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::SigningKey;
use palisade_policy::tenant::TenantTrust;
use std::time::Duration;

fn key(stack: &Stack, rel: &str) -> SigningKey {
    SigningKey::read(&stack.dir.join(rel)).expect(rel)
}

fn approver(stack: &Stack, name: &str) -> SigningKey {
    key(stack, &format!("tenant-demo/approvers/{name}.key"))
}

/// A request for `action` logged as an `approval_request` (`with` makes the
/// dispatches that would carry it out).
struct Requested {
    entry: Vec<u8>,
    index: u64,
    event: ApprovalRequestEvent,
}

impl Requested {
    fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.entry)
    }

    fn approval(&self, decision: Decision, issued: i64, ttl: i64) -> CustomerApproval {
        CustomerApproval {
            schema: APPROVAL_SCHEMA.into(),
            tenant: self.event.tenant.clone(),
            cluster: self.event.cluster.clone(),
            request: self.event.event_id.clone(),
            request_index: self.index,
            request_digest: self.digest(),
            decision,
            issued_at: Timestamp::from_unix_seconds(issued),
            expires_at: Timestamp::from_unix_seconds(issued + ttl),
            reason: None,
        }
    }

    /// The dispatch, with `approvals` attached to this request (a fresh nonce each
    /// time: a new dispatch for the same request).
    async fn with(&self, stack: &Stack, approvals: Vec<Envelope>) -> Prepared {
        let mut p = prepare_as(
            &stack.request(self.event.action.as_str(), &params_of(&self.event)),
            self.event.event_id.clone(),
            Duration::from_secs(60),
            Timestamp::now(),
        )
        .unwrap();
        p.intent.approval = Some(ApprovalRef {
            request: self.event.event_id.clone(),
            request_index: self.index,
            request_digest: self.digest(),
            approvers: vec![],
        });
        let (proof, _) = stack
            .dispatcher
            .proofs("demo", &stack.log_policy, self.index, self.index + 1)
            .await
            .unwrap();
        p.approval = Some(ApprovalBundle {
            request: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &self.entry,
            ),
            proof,
            approvals,
        });
        p
    }
}

fn params_of(e: &ApprovalRequestEvent) -> Vec<(&str, &str)> {
    e.parameters
        .iter()
        .filter_map(|(k, v)| match v {
            palisade_core::event::ParamValue::Str(s) => Some((k.as_str(), s.as_str())),
            _ => None,
        })
        .collect()
}

async fn requested(stack: &Stack, action: &str, params: &[(&str, &str)]) -> Requested {
    requested_until(
        stack,
        action,
        params,
        Timestamp::now().unix_seconds() + 3600,
    )
    .await
}

async fn requested_until(
    stack: &Stack,
    action: &str,
    params: &[(&str, &str)],
    expires: i64,
) -> Requested {
    let req = stack.request(action, params);
    let id = EventId::random().unwrap();
    let now = Timestamp::now();
    let event = ApprovalRequestEvent {
        event_id: id.clone(),
        time: now,
        tenant: req.tenant.clone(),
        cluster: req.cluster.clone(),
        instance: Some(req.instance.clone()),
        actor: req.actor.clone(),
        action: req.action.clone(),
        parameters: req.parameters.clone(),
        justification: req.justification.clone(),
        policy: req.policy.clone(),
        statement_seq: 1,
        expires_at: Timestamp::from_unix_seconds(expires),
    };
    let (entry, appended) = stack
        .log_event(&Event::ApprovalRequest(Box::new(event.clone())))
        .await;
    Requested {
        entry,
        index: appended.index,
        event,
    }
}

/// Logs `p`'s intent, sends it with its approvals, and expects `not_approved`
/// whose detail contains `why`.
async fn refused(stack: &Stack, p: &Prepared, why: &str) {
    let mut req = stack.logged_request(p).await;
    req.approval = p.approval.clone();
    let r = stack.refused(&req).await;
    assert_eq!(r.code, RefusalCode::NotApproved, "{why}: {r}");
    assert!(r.detail.contains(why), "expected {why:?} in: {}", r.detail);
}

async fn runs(stack: &Stack, p: &Prepared) {
    let mut req = stack.logged_request(p).await;
    req.approval = p.approval.clone();
    let r = stack.send(&req).await.expect("the approved action runs");
    assert_eq!(r.outcome, ResultOutcome::Succeeded, "{r:?}");
}

/// The tenant signs a new statement (its key) with `policy`; the harness's dispatcher
/// sends it from then on, as the gateway does once it is recorded.
fn tenant_states(stack: &Stack, seq: u64, policy: Option<ApprovalPolicy>) -> Envelope {
    let current = harness::tenant_trust(&stack.dir);
    let (trust, _) = TenantTrust::decode(&current).unwrap();
    let next = TenantTrust {
        seq,
        issued_at: Timestamp::now(),
        approval: policy,
        ..trust
    };
    let env = next.sign(&key(stack, "tenant-demo/tenant.key")).unwrap();
    stack.dispatcher.set_tenant_trust("demo", env.clone());
    env
}

fn demo_policy(stack: &Stack) -> ApprovalPolicy {
    let (trust, _) = TenantTrust::decode(&harness::tenant_trust(&stack.dir)).unwrap();
    trust.approval.expect("the demo tenant requires approvals")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_every_dispatch_without_the_approvals_of_exactly_that_request() {
    let stack = Stack::start_with_customer_approval();
    let now = Timestamp::now().unix_seconds();
    let (ana, ben) = (approver(&stack, "ana"), approver(&stack, "ben"));

    // A read action needs no approval; a disruptive one without any is refused.
    let (status, body) = stack
        .etcd_status_via_gateway("reading needs no approval")
        .await;
    assert_eq!(status, 200, "{body}");
    let r = requested(&stack, "etcd.defragment", &[]).await;
    let none = r.with(&stack, vec![]).await;
    refused(&stack, &none, "0 of the 1").await;
    let mut bare = stack.prepare("etcd.defragment", &[]);
    bare.approval = None;
    refused(&stack, &bare, "needs the customer's approval").await;

    // Signed by the gateway's key, by an operator's (any key the policy does not name).
    let gateway_key = stack.gateway_key();
    let a = r.approval(Decision::Approve, now, 3600);
    refused(
        &stack,
        &r.with(&stack, vec![a.sign(gateway_key).unwrap()]).await,
        "not signed by an approver",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let op_key = palisade_policy::keys::generate("operator-1", dir.path(), false).unwrap();
    refused(
        &stack,
        &r.with(
            &stack,
            vec![a.sign(&SigningKey::read(&op_key.private).unwrap()).unwrap()],
        )
        .await,
        "not signed by an approver",
    )
    .await;

    // An approval of another request replayed onto this one: other parameters,
    // another instance, another cluster.
    let other = requested(&stack, "component.restart", &[("component", "etcd")]).await;
    let theirs = other
        .approval(Decision::Approve, now, 3600)
        .sign(&ana)
        .unwrap();
    refused(
        &stack,
        &r.with(&stack, vec![theirs]).await,
        "approves request",
    )
    .await;
    for changed in [
        CustomerApproval {
            cluster: ClusterId::parse("other").unwrap(),
            ..a.clone()
        },
        CustomerApproval {
            request_index: r.index + 1,
            ..a.clone()
        },
    ] {
        refused(
            &stack,
            &r.with(&stack, vec![changed.sign(&ana).unwrap()]).await,
            "0 of the 1",
        )
        .await;
    }
    // The request's entry swapped for one naming another instance, under the same id.
    let mut moved = r.event.clone();
    moved.instance = Some(InstanceId::parse("demo-1").unwrap());
    let moved_entry = Event::ApprovalRequest(Box::new(moved))
        .to_log_entry()
        .unwrap();
    let mut p = r.with(&stack, vec![a.sign(&ana).unwrap()]).await;
    p.approval.as_mut().unwrap().request =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &moved_entry);
    refused(&stack, &p, "is not the one the intent names").await;

    // A request that lapsed, approved in time or not.
    let lapsed = requested_until(&stack, "etcd.defragment", &[], now - 120).await;
    let late = lapsed
        .approval(Decision::Approve, now - 600, 3600)
        .sign(&ana)
        .unwrap();
    refused(&stack, &lapsed.with(&stack, vec![late]).await, "expired at").await;

    // The request's place in the log is checked: another entry's proof does not do.
    let mut p = r.with(&stack, vec![a.sign(&ana).unwrap()]).await;
    let (elsewhere, _) = stack
        .dispatcher
        .proofs("demo", &stack.log_policy, other.index, other.index + 1)
        .await
        .unwrap();
    p.approval.as_mut().unwrap().proof = elsewhere;
    refused(&stack, &p, "the request's proof is for index").await;

    // Expired; a denial presented as an approval.
    let expired = r
        .approval(Decision::Approve, now - 7200, 3600)
        .sign(&ana)
        .unwrap();
    refused(&stack, &r.with(&stack, vec![expired]).await, "expired").await;
    let denial = r.approval(Decision::Deny, now, 3600).sign(&ana).unwrap();
    refused(&stack, &r.with(&stack, vec![denial]).await, "denial").await;

    // The right approval runs it, once; the same approval again is refused.
    let good = a.sign(&ana).unwrap();
    runs(&stack, &r.with(&stack, vec![good.clone()]).await).await;
    refused(&stack, &r.with(&stack, vec![good]).await, "already used").await;

    // Two of two: the same approver twice is one; M-1 is not enough; both run it.
    let mut two = demo_policy(&stack);
    two.threshold = 2;
    tenant_states(&stack, 2, Some(two.clone()));
    let r2 = requested(&stack, "etcd.defragment", &[]).await;
    let by_ana = r2
        .approval(Decision::Approve, now, 3600)
        .sign(&ana)
        .unwrap();
    let by_ben = r2
        .approval(Decision::Approve, now, 3600)
        .sign(&ben)
        .unwrap();
    refused(
        &stack,
        &r2.with(&stack, vec![by_ana.clone()]).await,
        "1 of the 2",
    )
    .await;
    refused(
        &stack,
        &r2.with(&stack, vec![by_ana.clone(), by_ana.clone()]).await,
        "already counted",
    )
    .await;
    runs(&stack, &r2.with(&stack, vec![by_ana, by_ben]).await).await;

    // Ben is removed: his approval no longer counts.
    let mut without_ben = demo_policy(&stack);
    without_ben
        .approvers
        .retain(|a| a != &Approver::of(ben.public()).unwrap());
    tenant_states(&stack, 3, Some(without_ben));
    let r3 = requested(&stack, "etcd.defragment", &[]).await;
    let by_ben = r3
        .approval(Decision::Approve, now, 3600)
        .sign(&ben)
        .unwrap();
    refused(
        &stack,
        &r3.with(&stack, vec![by_ben]).await,
        "not signed by an approver",
    )
    .await;

    // The provider signs a statement that drops the approvals: the agent refuses it,
    // and the older statement the tenant signed cannot come back either.
    let (trust, _) = TenantTrust::decode(&harness::tenant_trust(&stack.dir)).unwrap();
    let loosened = TenantTrust {
        seq: 9,
        issued_at: Timestamp::now(),
        approval: None,
        ..trust
    }
    .sign(stack.gateway_key())
    .unwrap();
    stack.dispatcher.set_tenant_trust("demo", loosened);
    let mut req = stack
        .logged_request(&stack.prepare("etcd.defragment", &[]))
        .await;
    req.approval = None;
    let refusal = stack.refused(&req).await;
    assert_eq!(refusal.code, RefusalCode::TenantTrust, "{refusal}");
    stack
        .dispatcher
        .set_tenant_trust("demo", harness::tenant_trust(&stack.dir));
    let mut req = stack
        .logged_request(&stack.prepare("etcd.defragment", &[]))
        .await;
    req.approval = None;
    let refusal = stack.refused(&req).await;
    assert_eq!(refusal.code, RefusalCode::TenantTrust, "{refusal}");
    assert!(refusal.detail.contains("not the newest"), "{refusal}");
}

/// `palisade customer …` as the tenant runs it, against `stack`'s gateway.
fn customer(stack: &Stack, args: &[&str]) -> std::process::Output {
    let d = stack.dir.display().to_string();
    palisade()
        .arg("customer")
        .args(args)
        .args([
            "--gateway",
            &format!("https://127.0.0.1:{}", stack.base),
            "--ca",
            &format!("{d}/pki/ca.crt"),
            "--token",
            &format!("@{d}/tenant-demo.token"),
            "--tenant",
            "demo",
            "--cluster",
            "demo",
        ])
        .output()
        .expect("palisade customer")
}

fn said(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_requests_the_customer_approves_or_denies_and_the_log_shows_it() {
    let stack = Stack::start_with_customer_approval();
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, op) = gw
        .run(
            &token,
            "demo",
            "etcd.defragment",
            Some("demo-0"),
            &[],
            "INC-9",
            "etcd database is fragmented after the compaction",
        )
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(op["status"], "awaiting_approval", "{op}");
    let id = op["id"].as_str().unwrap().to_string();

    let listed = customer(&stack, &["requests"]);
    assert!(listed.status.success(), "{}", said(&listed));
    assert!(said(&listed).contains(&id), "{}", said(&listed));

    let d = stack.dir.display().to_string();
    let approved = customer(
        &stack,
        &[
            "approve",
            &id,
            "--key",
            &format!("{d}/tenant-demo/approvers/ana.key"),
        ],
    );
    assert!(approved.status.success(), "{}", said(&approved));
    assert!(
        said(&approved).contains("etcd.defragment"),
        "{}",
        said(&approved)
    );
    let done = wait_done(&gw, &token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["approval"]["approved_by"][0], "ana", "{done}");

    // A second request, denied: never dispatched; a late approval is refused.
    let (_, op) = gw
        .run(
            &token,
            "demo",
            "etcd.defragment",
            Some("demo-0"),
            &[],
            "INC-10",
            "defragment again after the nightly compaction",
        )
        .await;
    let id2 = op["id"].as_str().unwrap().to_string();
    let denied = customer(
        &stack,
        &[
            "deny",
            &id2,
            "--key",
            &format!("{d}/tenant-demo/approvers/ben.key"),
            "--reason",
            "not during our release",
        ],
    );
    assert!(denied.status.success(), "{}", said(&denied));
    let (_, v) = gw
        .call("GET", &format!("/v1/operations/{id2}"), Some(&token), None)
        .await;
    assert_eq!(v["status"], "denied", "{v}");
    let late = customer(
        &stack,
        &[
            "approve",
            &id2,
            "--key",
            &format!("{d}/tenant-demo/approvers/ana.key"),
        ],
    );
    assert!(
        !late.status.success(),
        "an approval after a denial was taken"
    );
    assert!(said(&late).contains("denied"), "{}", said(&late));

    // The customer's log shows the requests, the decisions and the intent that
    // names the approved request; the k8s-audit view shows them too.
    let (status, events) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events?format=k8s-audit",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    let lines: Vec<serde_json::Value> = events
        .as_str()
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["annotations"]["palisade.dev/kind"].as_str())
        .collect();
    for kind in ["approval_request", "approval", "intent", "result"] {
        assert!(
            kinds.contains(&kind),
            "no {kind} in the customer's log: {kinds:?}"
        );
    }
    let decisions: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["annotations"]["palisade.dev/decision"].as_str())
        .collect();
    assert_eq!(decisions, ["approve", "deny"]);
    assert!(
        lines
            .iter()
            .any(|l| l["annotations"]["palisade.dev/reason"] == "not during our release"),
        "the denial's reason is not in the customer's log"
    );
}

async fn wait_done(gw: &harness::GatewayClient, token: &str, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = gw
            .call("GET", &format!("/v1/operations/{id}"), Some(token), None)
            .await;
        let s = v["status"].as_str().unwrap_or_default().to_string();
        if s != "running" && s != "awaiting_approval" {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "still {s}: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_key_inside_a_pkcs11_token_approves_and_never_leaves_it() {
    harness::require_tool("softhsm2-util", "apt-get install softhsm2");
    let stack = Stack::start_with_customer_approval();
    let hsm = tempfile::tempdir().unwrap();
    let conf = hsm.path().join("softhsm2.conf");
    std::fs::create_dir_all(hsm.path().join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            hsm.path().join("tokens").display()
        ),
    )
    .unwrap();
    let init = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "approvers"])
        .args(["--pin", "pin-4a7c19", "--so-pin", "so-pin-93b2e1"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", said(&init));
    let pin = hsm.path().join("pin");
    std::fs::write(&pin, "pin-4a7c19\n").unwrap();
    let token_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--pkcs11-module".into(),
            SOFTHSM_MODULE.into(),
            "--token-label".into(),
            "approvers".into(),
            "--pin-file".into(),
            pin.display().to_string(),
        ]);
        v
    };
    let run_customer = |args: Vec<String>| {
        let d = stack.dir.display().to_string();
        let mut c = palisade();
        c.env("SOFTHSM2_CONF", &conf).arg("customer").args(&args);
        if args[0] != "keygen" {
            c.args([
                "--gateway",
                &format!("https://127.0.0.1:{}", stack.base),
                "--ca",
                &format!("{d}/pki/ca.crt"),
                "--token",
                &format!("@{d}/tenant-demo.token"),
                "--tenant",
                "demo",
                "--cluster",
                "demo",
            ]);
        }
        c.output().unwrap()
    };

    // The approver's key is made in the token; only its public half comes out.
    let out = hsm.path().join("keys");
    let made = run_customer(token_args(&[
        "keygen",
        "--out",
        &out.display().to_string(),
        "--name",
        "carla",
    ]));
    assert!(made.status.success(), "{}", said(&made));
    assert!(out.join("carla.pub").exists());
    assert!(
        !out.join("carla.key").exists(),
        "a private key file was written"
    );

    // The tenant names carla the only approver of etcd.status.
    let d = stack.dir.display().to_string();
    let set = run_customer(vec![
        "approval-policy".into(),
        "--key".into(),
        format!("{d}/tenant-demo/tenant.key"),
        "--approver".into(),
        out.join("carla.pub").display().to_string(),
        "--action".into(),
        "etcd.status".into(),
    ]);
    assert!(set.status.success(), "{}", said(&set));

    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, op) = stack
        .etcd_status_via_gateway("the tenant now approves every status read")
        .await;
    assert_eq!(status, 202, "{op}");
    let id = op["id"].as_str().unwrap().to_string();
    let approved = run_customer(token_args(&["approve", &id, "--key-label", "carla"]));
    assert!(approved.status.success(), "{}", said(&approved));
    let done = wait_done(&gw, &token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Ana's file key no longer approves anything on this cluster.
    let (_, op) = stack
        .etcd_status_via_gateway("a second status read after the change")
        .await;
    let id2 = op["id"].as_str().unwrap().to_string();
    let refused = run_customer(vec![
        "approve".into(),
        id2,
        "--key".into(),
        format!("{d}/tenant-demo/approvers/ana.key"),
    ]);
    assert!(
        !refused.status.success(),
        "a removed approver's approval was taken"
    );
    assert!(
        said(&refused).contains("not signed by an approver"),
        "{}",
        said(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_webhook_gets_each_request_signed_by_the_gateway_with_retries() {
    use axum::http::HeaderMap;
    let mut stack = Stack::start_with_customer_approval();
    // The tenant's endpoint: HTTPS with a certificate of the stack's CA (which the
    // gateway is told to trust for webhooks); it answers 503 once, then 200.
    let pki = stack.dir.join("pki");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let calls = calls.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let sig = headers
                        .get("palisade-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((sig, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let port = serve_https(&pki, palisade_pki::Role::Witness, "tenant-webhook", router).await;
    let gateway_toml = stack.dir.join("gateway/gateway.toml");
    let text = std::fs::read_to_string(&gateway_toml).unwrap();
    std::fs::write(
        &gateway_toml,
        format!(
            "webhook_ca = {:?}\n{text}",
            pki.join("ca.crt").display().to_string()
        ),
    )
    .unwrap();
    stack.restart();

    // Plain http is refused; the https endpoint is registered.
    let http = customer(&stack, &["webhook", "--url", "http://127.0.0.1:1/hook"]);
    assert!(
        !http.status.success() && said(&http).contains("https only"),
        "{}",
        said(&http)
    );
    let set = customer(
        &stack,
        &[
            "webhook",
            "--url",
            &format!("https://127.0.0.1:{port}/hook"),
        ],
    );
    assert!(set.status.success(), "{}", said(&set));

    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, op) = gw
        .run(
            &token,
            "demo",
            "etcd.defragment",
            Some("demo-0"),
            &[],
            "INC-11",
            "the tenant hears of it at once",
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let id = op["id"].as_str().unwrap().to_string();
    let (sig, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the webhook got nothing")
        .unwrap();
    let note: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(note["request"], id.as_str(), "{note}");
    assert_eq!(note["action"], "etcd.defragment", "{note}");
    // Signed by the gateway's key over the exact body.
    let (keyid, b64) = sig
        .strip_prefix("keyid=")
        .and_then(|s| s.split_once(",sig="))
        .expect("keyid=…,sig=…");
    let gateway = stack.gateway_key().public().clone();
    assert_eq!(keyid, gateway.key_id());
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    assert!(
        gateway.verify(&body, &raw),
        "the notification's signature does not verify"
    );
    assert!(!gateway.verify(b"{}", &raw));

    // The delivery (second attempt) is recorded with the request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = customer(&stack, &["requests", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let notified = rows[0]["notified"].as_str().unwrap_or_default().to_string();
        if notified.contains("attempt 2") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery not recorded: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gateway that lies to the customer's commands: the statement it says is in
/// force is not the tenant's (signed by another key, with no approval policy), and
/// the request it lists is not the one its entry holds. The tenant's commands refuse
/// to build on the first and to show the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customers_commands_trust_neither_the_gateways_statement_nor_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    palisade_pki::init_ca(&pki, false).unwrap();
    let keys = dir.path().join("keys");
    let tenant = palisade_policy::keys::generate("tenant", &keys, false).unwrap();
    let insider = palisade_policy::keys::generate("insider", &keys, false).unwrap();
    let approver = palisade_policy::keys::generate("ana", &keys, false).unwrap();
    let witness = palisade_tlog::note::SignerKey::generate(
        "tenant.example/witness",
        palisade_tlog::note::KeyType::Cosignature,
    )
    .unwrap();
    let forged = TenantTrust {
        schema: palisade_policy::tenant::TENANT_TRUST_SCHEMA.into(),
        tenant: palisade_core::TenantId::parse("demo").unwrap(),
        cluster: ClusterId::parse("demo").unwrap(),
        seq: 5,
        issued_at: Timestamp::now(),
        witnesses: vec![witness.verifier().to_string()],
        quorum: 1,
        approval: None,
    }
    .sign(&SigningKey::read(&insider.private).unwrap())
    .unwrap();
    // A request for one thing listed as another.
    let real = ApprovalRequestEvent {
        event_id: EventId::random().unwrap(),
        time: Timestamp::now(),
        tenant: palisade_core::TenantId::parse("demo").unwrap(),
        cluster: ClusterId::parse("demo").unwrap(),
        instance: Some(InstanceId::parse("demo-0").unwrap()),
        actor: palisade_core::event::Actor {
            id: palisade_core::OperatorId::parse("op-1234").unwrap(),
            groups: vec![],
            grant: None,
            authn: None,
            service: None,
        },
        action: palisade_core::ActionName::parse("component.restart").unwrap(),
        parameters: Default::default(),
        justification: palisade_core::event::Justification {
            ticket: "INC-1".into(),
            reason: "restart the apiserver".into(),
        },
        policy: palisade_core::event::PolicyRef {
            version: 1,
            digest: Sha256Digest::of(b"policy"),
        },
        statement_seq: 5,
        expires_at: Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3600),
    };
    let entry = Event::ApprovalRequest(Box::new(real))
        .to_log_entry()
        .unwrap();
    let other_id = EventId::random().unwrap();
    let listed = serde_json::json!([{
        "id": other_id.as_str(), "state": "pending", "index": 3,
        "digest": Sha256Digest::of(&entry).to_string(),
        "entry": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &entry),
        "action": "etcd.status", "instance": "demo-0", "parameters": {},
        "ticket": "INC-1", "reason": "a harmless read", "operator": "op-1234",
        "expires_at": "2030-01-01T00:00:00Z", "threshold": 1, "approved_by": [],
    }]);
    let statement =
        serde_json::json!({"cluster": "demo", "index": 1, "seq": 5, "statement": forged});
    let router = axum::Router::new()
        .route(
            "/v1/tenants/demo/clusters/demo/trust",
            axum::routing::get(move || {
                let s = statement.clone();
                async move { axum::Json(s) }
            }),
        )
        .route(
            "/v1/tenants/demo/clusters/demo/approvals",
            axum::routing::get(move || {
                let l = listed.clone();
                async move { axum::Json(l) }
            }),
        );
    let port = serve_https(&pki, palisade_pki::Role::Gateway, "lying-gateway", router).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "reader-token").unwrap();
    let run = |args: &[&str]| {
        palisade()
            .arg("customer")
            .args(args)
            .args(["--gateway", &format!("https://127.0.0.1:{port}")])
            .arg("--ca")
            .arg(pki.join("ca.crt"))
            .arg("--token")
            .arg(format!("@{}", token.display()))
            .args(["--tenant", "demo", "--cluster", "demo"])
            .output()
            .unwrap()
    };
    let tenant_key = tenant.private.display().to_string();
    let approver_pub = approver.public.display().to_string();
    let set = run(&[
        "approval-policy",
        "--key",
        &tenant_key,
        "--approver",
        &approver_pub,
        "--risk",
        "disruptive",
    ]);
    assert!(
        !set.status.success(),
        "built on a statement the tenant never signed"
    );
    assert!(
        said(&set).contains("does not open with your key"),
        "{}",
        said(&set)
    );
    let reg = run(&[
        "register-witness",
        "--key",
        &tenant_key,
        "--witness-key",
        &witness.verifier().to_string(),
    ]);
    assert!(
        !reg.status.success(),
        "built on a statement the tenant never signed"
    );
    assert!(
        said(&reg).contains("does not open with your key"),
        "{}",
        said(&reg)
    );
    let list = run(&["requests"]);
    assert!(!list.status.success(), "{}", said(&list));
    assert!(said(&list).contains("INVALID"), "{}", said(&list));
    assert!(!said(&list).contains("etcd.status"), "{}", said(&list));
}

/// Serves `router` over HTTPS on a free loopback port, with a certificate for `name`
/// (role `role`) issued by the CA in `pki`; returns the port.
async fn serve_https(
    pki: &std::path::Path,
    role: palisade_pki::Role,
    name: &str,
    router: axum::Router,
) -> u16 {
    let issued = palisade_pki::issue(
        pki,
        role,
        &palisade_pki::CertName::new(name).unwrap(),
        &[],
        30,
        false,
    )
    .unwrap();
    let tls = palisade_pki::server_config(
        &pki.join("ca.crt"),
        &issued.cert,
        &issued.key,
        palisade_pki::ClientAuth::Optional,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(palisade_tlog_service::https::serve(
        listener,
        tls,
        router,
        std::future::pending::<()>(),
    ));
    port
}

/// `kube.webhook-bypass` changes an object the customer owns: it needs the customer's
/// approval whatever the tenant's statement reserves for approval. With a statement
/// that names no approvers, the gateway refuses it (and logs the refusal) and the
/// agent refuses a dispatch of it even from a gateway that logged its intent.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_to_a_customer_object_needs_approval_even_from_a_tenant_without_approvers() {
    let stack = Stack::start();
    let params = [
        ("kind", "validating"),
        ("configuration", "payments-policy"),
        ("webhook", "policy.payments.example.com"),
    ];
    refused(
        &stack,
        &stack.prepare("kube.webhook-bypass", &params),
        "runs only with the customer's approval",
    )
    .await;
    // A restore rewrites the customer's data: the same.
    let restore = [("backup_id", "20261207T101500Z-0a1b2c3d")];
    refused(
        &stack,
        &stack.prepare("etcd.restore", &restore),
        "runs only with the customer's approval",
    )
    .await;
    // A tenant with approvers, whose statement reserves only backups for approval:
    // the bypass still needs one.
    let files =
        palisade_policy::keys::generate("ana", &stack.dir.join("other-approver"), false).unwrap();
    let ana = SigningKey::read(&files.private).unwrap();
    let only_backups = ApprovalPolicy {
        all: false,
        risks: vec![],
        actions: vec!["etcd.backup".into()],
        approvers: vec![Approver::of(ana.public()).unwrap()],
        threshold: 1,
        approval_ttl_secs: 3600,
        request_ttl_secs: 3600,
    };
    tenant_states(&stack, 2, Some(only_backups));
    refused(
        &stack,
        &stack.prepare("kube.webhook-bypass", &params),
        "needs the customer's approval",
    )
    .await;
    // (Recorded only with the agent's dispatcher: the gateway keeps the statement
    // without approvers.)

    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (status, body) = gw
        .run(
            &token,
            "demo",
            "kube.webhook-bypass",
            None,
            &params,
            "INC-9",
            "a webhook blocks every pod creation",
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("names no approvers"), "{body}");
    // The refusal is in the customer's access log, with its reason.
    let (status, events) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    assert!(events.to_string().contains("no-approvers"), "{events}");
    // A read of the same webhooks needs nothing of the kind (it fails here only
    // because the demo agent has no kube-apiserver).
    let (status, body) = gw
        .run(
            &token,
            "demo",
            "kube.webhooks",
            None,
            &[],
            "INC-9",
            "which webhook blocks pods",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("no kube-apiserver configured"),
        "{body}"
    );
}
