//! C7 with the customer's approval: the tenant's statement reserves an action for
//! its approval, and the agent enforces it whatever the gateway does. The attacker
//! holds the gateway's key; the approver's key stays the tenant's.

use super::{push, short};
use crate::{BoxFut, Claim::C7, Ctx, Scenario, Scope};
use anyhow::{anyhow, bail};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use palisade_agent::client::prepare_as;
use palisade_agent::dispatch::{ApprovalBundle, RefusalCode};
use palisade_core::event::ApprovalRef;
use palisade_core::time::Timestamp;
use palisade_core::{EventId, Sha256Digest};
use palisade_policy::customer_approval::{
    ApprovalPolicy, Approver, CustomerApproval, Decision, APPROVAL_SCHEMA,
    DEFAULT_APPROVAL_TTL_SECS, DEFAULT_REQUEST_TTL_SECS,
};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::SigningKey;
use palisade_policy::tenant::TenantTrust;
use serde_json::Value;
use std::time::Duration;

/// The action the scenario reserves for approval (by name: a read action, so that
/// nothing else is disturbed while the statement is in force).
const ACTION: &str = "etcd.health";

pub fn add(v: &mut Vec<Scenario>) {
    // Before the scenario below records a statement with approvers.
    push(
        v,
        C7,
        Scope::Local,
        "c7-customer-object-change-needs-approval",
        "kube.webhook-bypass and etcd.restore, which change what the customer owns, need the customer's approval though the tenant reserves nothing: with no approvers, the gateway refuses (logged) and the agent refuses their logged dispatches",
        customer_object,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-customer-approval-enforced-on-the-instance",
        "With an action reserved for the customer's approval, the gateway only logs a request; the agent refuses it with no approval, one signed with the gateway's key, a denial, an expired approval, one of another request or cluster, a spent one, and a provider-signed statement dropping the requirement; the approver's signature runs it once",
        approval,
    );
}

fn customer_object(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let params = [
            ("kind", "validating"),
            ("configuration", "payments-policy"),
            ("webhook", "policy.payments.example.com"),
        ];
        let got = cx.op_run("kube.webhook-bypass", &params).await?;
        if !got.1.to_string().contains("names no approvers") {
            bail!("the gateway's refusal does not say why: {}", got.1);
        }
        let mut ev = cx
            .expect_refusal("kube.webhook-bypass", got, 403, "authorize")
            .await?;
        let l = cx.local()?;
        let restore = [("backup_id", "20261207T101500Z-0a1b2c3d")];
        for (action, params) in [
            ("kube.webhook-bypass", &params[..]),
            ("etcd.restore", &restore[..]),
        ] {
            let (req, index) = l.logged_request(&l.prepare(action, params)?).await?;
            let r = l.refused(&req).await?;
            if r.code != RefusalCode::NotApproved
                || !r.detail.contains("runs only with the customer's approval")
            {
                bail!("the agent did not refuse {action} for want of approval: {r}");
            }
            ev.push(format!(
                "{action}: a dispatch whose intent is logged at {index}, from the gateway's key: refused by the agent ({})",
                short(&r.detail)
            ));
        }
        Ok(ev)
    })
}

/// `PUT` of a statement through the gateway (the tenant's reader token); the local
/// dispatcher sends it from then on too.
async fn state(cx: &Ctx, env: &Envelope) -> anyhow::Result<u64> {
    let (status, body) = cx
        .gw
        .call(
            "PUT",
            &format!("/v1/tenants/{}/clusters/{}/trust", cx.tenant, cx.cluster),
            Some(&cx.tenant_token),
            Some(&serde_json::to_value(env)?),
        )
        .await?;
    if status != 201 {
        bail!("the gateway did not record the tenant's statement: {status} {body}");
    }
    cx.local()?
        .dispatcher
        .set_tenant_trust(&cx.cluster, env.clone());
    body["index"]
        .as_u64()
        .ok_or_else(|| anyhow!("no log index: {body}"))
}

async fn in_force(cx: &Ctx) -> anyhow::Result<TenantTrust> {
    let (status, body) = cx
        .gw
        .call(
            "GET",
            &format!("/v1/tenants/{}/clusters/{}/trust", cx.tenant, cx.cluster),
            Some(&cx.tenant_token),
            None,
        )
        .await?;
    if status != 200 {
        bail!("no tenant statement in force: {status} {body}");
    }
    let env: Envelope = serde_json::from_value(body["statement"].clone())?;
    Ok(TenantTrust::decode(&env).map_err(|e| anyhow!("{e}"))?.0)
}

async fn wait_status(cx: &Ctx, id: &str) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, op) = cx
            .gw
            .call(
                "GET",
                &format!("/v1/operations/{id}"),
                Some(&cx.op_token),
                None,
            )
            .await?;
        let s = op["status"].as_str().unwrap_or_default();
        if s != "running" && s != "awaiting_approval" {
            return Ok(op);
        }
        if std::time::Instant::now() > deadline {
            bail!("operation {id} still {s}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn approval(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let tenant_key = SigningKey::read(&l.dir.join("tenant-demo/tenant.key"))?;
        let scratch = super::scratch(cx, "c7-approval")?;
        let made = palisade_policy::keys::generate("verify-approver", &scratch, true)?;
        let approver = SigningKey::read(&made.private)?;
        let before = in_force(cx).await?;
        let restore = before.clone();
        let strict = TenantTrust {
            seq: before.seq + 1,
            issued_at: Timestamp::now(),
            approval: Some(ApprovalPolicy {
                all: false,
                risks: vec![],
                actions: vec![ACTION.into()],
                approvers: vec![Approver::of(approver.public()).map_err(|e| anyhow!("{e}"))?],
                threshold: 1,
                approval_ttl_secs: DEFAULT_APPROVAL_TTL_SECS,
                request_ttl_secs: DEFAULT_REQUEST_TTL_SECS,
            }),
            ..before
        };
        let statement_index =
            state(cx, &strict.sign(&tenant_key).map_err(|e| anyhow!("{e}"))?).await?;
        let outcome = run(cx, &approver).await;
        // Whatever happened, the tenant lifts the requirement again (a newer statement).
        let lifted = TenantTrust {
            seq: strict.seq + 1,
            issued_at: Timestamp::now(),
            approval: None,
            ..restore
        };
        state(cx, &lifted.sign(&tenant_key).map_err(|e| anyhow!("{e}"))?).await?;
        let mut evidence = vec![format!(
            "tenant statement seq {} (log index {statement_index}) reserves {ACTION} for 1 approver",
            strict.seq
        )];
        evidence.extend(outcome?);
        Ok(evidence)
    })
}

async fn run(cx: &Ctx, approver: &SigningKey) -> anyhow::Result<Vec<String>> {
    let l = cx.local()?;
    // 1. The operator's request is logged, not dispatched.
    let (status, op) = cx.op_run(ACTION, &[]).await?;
    if status != 202 || op["status"] != "awaiting_approval" {
        bail!(
            "expected 202 awaiting_approval, got {status}: {}",
            short(&op.to_string())
        );
    }
    let id = op["id"].as_str().unwrap_or_default().to_string();
    let (_, list) = cx
        .gw
        .call(
            "GET",
            &format!(
                "/v1/tenants/{}/clusters/{}/approvals",
                cx.tenant, cx.cluster
            ),
            Some(&cx.tenant_token),
            None,
        )
        .await?;
    let row = list
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id.as_str()))
        .ok_or_else(|| anyhow!("request {id} not listed: {list}"))?
        .clone();
    let entry = STANDARD.decode(row["entry"].as_str().unwrap_or_default())?;
    let index = row["index"].as_u64().ok_or_else(|| anyhow!("no index"))?;
    let digest = Sha256Digest::of(&entry);
    let request = EventId::parse(&id).map_err(|e| anyhow!("{e}"))?;
    let now = Timestamp::now().unix_seconds();
    let statement = |key: &SigningKey,
                     decision: Decision,
                     issued: i64,
                     index: u64|
     -> anyhow::Result<Envelope> {
        CustomerApproval {
            schema: APPROVAL_SCHEMA.into(),
            tenant: palisade_core::TenantId::parse(&cx.tenant).map_err(|e| anyhow!("{e}"))?,
            cluster: palisade_core::ClusterId::parse(&cx.cluster).map_err(|e| anyhow!("{e}"))?,
            request: request.clone(),
            request_index: index,
            request_digest: digest,
            decision,
            issued_at: Timestamp::from_unix_seconds(issued),
            expires_at: Timestamp::from_unix_seconds(issued + 3600),
            reason: None,
        }
        .sign(key)
        .map_err(|e| anyhow!("{e}"))
    };
    let signed = |key: &SigningKey| statement(key, Decision::Approve, now, index);
    // 2. Signed with the gateway's key instead of the approver's.
    let target = Target {
        request: &request,
        index,
        digest,
        entry: &entry,
    };
    let (r, logged) = attempt(l, &target, vec![signed(l.gateway_key())?]).await?;
    if r.code != RefusalCode::NotApproved {
        bail!("an approval signed with the gateway's key: expected not_approved, got {r}");
    }
    let mut evidence = vec![
        format!("operator's request logged at index {index}, answered 202 awaiting_approval"),
        format!(
            "approval signed with the gateway key (intent logged at {logged}): not_approved ({})",
            short(&r.detail)
        ),
    ];
    // None; the approver's denial presented as an approval; an expired approval; one
    // for another log index (another request).
    for (what, approvals, why) in [
        ("no approval", vec![], "0 of the 1"),
        (
            "the approver's denial",
            vec![statement(approver, Decision::Deny, now, index)?],
            "denial",
        ),
        (
            "an approval that expired",
            vec![statement(approver, Decision::Approve, now - 7200, index)?],
            "expired",
        ),
        (
            "an approval of another log index",
            vec![statement(approver, Decision::Approve, now, index + 1)?],
            "approves request",
        ),
    ] {
        let (r, logged) = attempt(l, &target, approvals).await?;
        if r.code != RefusalCode::NotApproved || !r.detail.contains(why) {
            bail!("{what}: expected not_approved ({why}), got {r}");
        }
        evidence.push(format!(
            "{what} (intent logged at {logged}): not_approved ({})",
            short(&r.detail)
        ));
    }
    // An approval for another cluster (the same request id, index and digest).
    let elsewhere = CustomerApproval {
        cluster: palisade_core::ClusterId::parse("elsewhere").map_err(|e| anyhow!("{e}"))?,
        ..CustomerApproval::decode(&signed(approver)?).map_err(|e| anyhow!("{e}"))?
    }
    .sign(approver)
    .map_err(|e| anyhow!("{e}"))?;
    let (r, logged) = attempt(l, &target, vec![elsewhere]).await?;
    if r.code != RefusalCode::NotApproved || !r.detail.contains("it is for") {
        bail!("an approval for another cluster: expected not_approved, got {r}");
    }
    evidence.push(format!(
        "an approval for another cluster (intent logged at {logged}): not_approved ({})",
        short(&r.detail)
    ));
    // The provider signs a newer statement without the requirement, with its own key:
    // the agent refuses the statement itself.
    let in_force_now = in_force(cx).await?;
    let loosened = TenantTrust {
        seq: in_force_now.seq + 10,
        issued_at: Timestamp::now(),
        approval: None,
        ..in_force_now
    }
    .sign(l.gateway_key())
    .map_err(|e| anyhow!("{e}"))?;
    let mut p = l.prepare(ACTION, &[])?;
    p.approval = None;
    let (mut req, logged) = l.logged_request(&p).await?;
    req.tenant_trust = Some(loosened);
    let r = l.refused(&req).await?;
    if r.code != RefusalCode::TenantTrust {
        bail!("a statement the provider signed without the requirement: expected tenant_trust, got {r}");
    }
    evidence.push(format!(
        "a statement signed by the gateway's key dropping the requirement (intent logged at {logged}): tenant_trust ({})",
        short(&r.detail)
    ));
    // 3. The approver's signature through the gateway: it runs.
    let (status, decided) = cx
        .gw
        .call(
            "POST",
            &format!(
                "/v1/tenants/{}/clusters/{}/approvals",
                cx.tenant, cx.cluster
            ),
            Some(&cx.tenant_token),
            Some(&serde_json::to_value(signed(approver)?)?),
        )
        .await?;
    if status != 201 {
        bail!("the approval was not taken: {status} {decided}");
    }
    let done = wait_status(cx, &id).await?;
    if done["status"] != "succeeded" {
        bail!(
            "the approved request did not run: {}",
            short(&done.to_string())
        );
    }
    evidence.push(format!(
        "approved by the approver's key (logged at {}): {ACTION} succeeded",
        decided["index"]
    ));
    // 4. The same approval again, on a new dispatch: spent.
    let (r, _) = attempt(l, &target, vec![signed(approver)?]).await?;
    if r.code != RefusalCode::NotApproved || !r.detail.contains("already used") {
        bail!("a spent approval: expected not_approved (already used), got {r}");
    }
    evidence.push(format!(
        "the approval replayed: not_approved ({})",
        short(&r.detail)
    ));
    Ok(evidence)
}

struct Target<'a> {
    request: &'a EventId,
    index: u64,
    digest: Sha256Digest,
    entry: &'a [u8],
}

/// A dispatch of the request, logged and sent with the gateway's key (what an
/// insider holding it can do), carrying `approvals`: the agent's refusal, and where
/// its intent was logged.
async fn attempt(
    l: &crate::ctx::Local,
    t: &Target<'_>,
    approvals: Vec<Envelope>,
) -> anyhow::Result<(palisade_agent::dispatch::Refusal, u64)> {
    let mut p = prepare_as(
        &l.request(ACTION, &[])?,
        t.request.clone(),
        Duration::from_secs(60),
        Timestamp::now(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    p.intent.approval = Some(ApprovalRef {
        request: t.request.clone(),
        request_index: t.index,
        request_digest: t.digest,
        approvers: vec![],
    });
    let (proof, _) = l
        .dispatcher
        .proofs("demo", &l.log_policy()?, t.index, t.index + 1)
        .await
        .map_err(|e| anyhow!("the request's proof: {e}"))?;
    p.approval = Some(ApprovalBundle {
        request: STANDARD.encode(t.entry),
        proof,
        approvals,
    });
    let (mut req, logged) = l.logged_request(&p).await?;
    req.approval = p.approval.clone();
    Ok((l.refused(&req).await?, logged))
}
