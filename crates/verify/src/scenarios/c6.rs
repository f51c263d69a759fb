//! C6: operators reach the Kubernetes API only through the administrative API, and
//! the customer sees every action — in their access log (with offline-verifiable
//! proofs, as audit.k8s.io/v1 events) and at their apiserver (impersonating the
//! operator's pseudonym and naming the log entry). No tenant reads another's log.

use super::{push, short};
use crate::{BoxFut, Claim::C6, Ctx, Scenario, Scope};
use anyhow::{anyhow, bail};
use palisade_tlog::proof::TlogProof;
use serde_json::Value;

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C6,
        Scope::Any,
        "c6-intent-in-customer-log",
        "An action's intent is in the customer's log under the operator's pseudonym",
        intent,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-result-in-customer-log",
        "The action's result is in the customer's log and references the intent",
        result,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-refusal-in-customer-log",
        "A refused request is in the customer's log with the operator's pseudonym",
        refusal,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-proofs-verify-offline",
        "Every access-log entry comes with a tlog-proof that verifies offline (log key + witness)",
        proofs,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-k8s-audit-export",
        "The access log exports as audit.k8s.io/v1 events; intent and result share an auditID",
        k8s_audit,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-other-tenant-404",
        "A tenant's token reading another tenant's or a missing cluster gets 404",
        other_tenant,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-unknown-or-no-token",
        "The access log refuses an unknown token and no token with the same 401",
        bad_reader,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-log-api-refuses-cross-tenant",
        "The log service's read API refuses a guessed token and a missing token",
        log_api,
    );
    push(
        v,
        C6,
        Scope::Any,
        "c6-refusal-names-no-operator",
        "An off-call operator with an e-mail for a name is refused; the customer reads a reason code and a pseudonym, never the name",
        refusal_names_no_one,
    );
    push(v, C6, Scope::Local, "c6-kube-cordon-impersonates", "kube.cordon reaches the apiserver impersonating palisade:operator:<pseudonym> and naming its log entry", |cx| kube_action(cx, "kube.cordon", "worker-1"));
    push(
        v,
        C6,
        Scope::Local,
        "c6-kube-uncordon-impersonates",
        "kube.uncordon reaches the apiserver impersonating the pseudonym and naming its log entry",
        |cx| kube_action(cx, "kube.uncordon", "worker-2"),
    );
    push(
        v,
        C6,
        Scope::Local,
        "c6-kube-nodes-impersonates",
        "kube.nodes reaches the apiserver impersonating the pseudonym and naming its log entry",
        |cx| kube_action(cx, "kube.nodes", ""),
    );
    push(
        v,
        C6,
        Scope::Local,
        "c6-every-apiserver-request-impersonated",
        "Every request the apiserver ever received impersonated an operator and named a log entry",
        all_impersonated,
    );
}

async fn pseudonym(cx: &Ctx) -> anyhow::Result<String> {
    let (s, who) = cx
        .gw
        .call("GET", "/v1/whoami", Some(&cx.op_token), None)
        .await?;
    if s != 200 {
        bail!("whoami: {s} {who}");
    }
    let p = who["pseudonyms"][cx.tenant.as_str()]
        .as_str()
        .ok_or_else(|| anyhow!("no pseudonym: {who}"))?
        .to_string();
    if p == cx.operator || !p.starts_with("op-") {
        bail!("the pseudonym {p} is not a pseudonym of {}", cx.operator);
    }
    Ok(p)
}

async fn run_status(cx: &Ctx) -> anyhow::Result<Value> {
    let (s, op) = cx.op_run("etcd.health", &[]).await?;
    if s != 200 || op["status"] != "succeeded" {
        bail!("etcd.health failed (HTTP {s}): {}", short(&op.to_string()));
    }
    Ok(op)
}

fn intent(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let p = pseudonym(cx).await?;
        let op = run_status(cx).await?;
        let index = op["intent_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("no intent index: {op}"))?;
        let e = cx.logged_event(index).await?;
        if e["kind"] != "intent"
            || e["action"] != "etcd.health"
            || e["actor"]["id"] != p.as_str()
            || e["event_id"] != op["event_id"]
        {
            bail!("entry {index} is not this intent: {e}");
        }
        if e.to_string().contains(&cx.operator) && !cx.operator.is_empty() {
            bail!("the operator's name is in the customer's log");
        }
        Ok(vec![
            format!(
                "intent at {index}: action etcd.health, actor {p}, event {}",
                e["event_id"]
            ),
            format!("justification ticket {}", e["justification"]["ticket"]),
        ])
    })
}

fn result(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let op = run_status(cx).await?;
        let index = op["result_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("no result index: {op}"))?;
        let e = cx.logged_event(index).await?;
        if e["kind"] != "result" || e["intent"] != op["event_id"] || e["outcome"] != "succeeded" {
            bail!("entry {index} is not this result: {e}");
        }
        Ok(vec![format!(
            "result at {index} (intent at {}): outcome succeeded, output digest {}",
            op["intent_index"], e["output_digest"]
        )])
    })
}

fn refusal(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let p = pseudonym(cx).await?;
        let (s, problem) = cx
            .gw
            .run(
                &cx.op_token,
                &cx.cluster,
                "etcd.status",
                Some(&cx.instance),
                &[],
                "no-ticket",
                crate::ctx::REASON,
            )
            .await?;
        if s != 422 {
            bail!("a malformed ticket was not refused: {s}");
        }
        let index = problem["log_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("not logged: {problem}"))?;
        let e = cx.logged_event(index).await?;
        if e["kind"] != "refusal" || e["actor"] != p.as_str() {
            bail!("entry {index}: {e}");
        }
        Ok(vec![format!(
            "HTTP 422, refusal at {index} with actor {p}, stage {}",
            e["stage"]
        )])
    })
}

/// The name an off-call operator logs in with in `c6-refusal-names-no-operator`.
const OFF_CALL_NAME: &str = "jane.doe@example.com";

fn refusal_names_no_one(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let token = cx.gw.dev_token(OFF_CALL_NAME).await?;
        let (s, problem) = cx
            .gw
            .run(
                &token,
                &cx.cluster,
                "etcd.status",
                Some(&cx.instance),
                &[],
                crate::ctx::TICKET,
                crate::ctx::REASON,
            )
            .await?;
        if s != 403 {
            bail!("an off-call operator was not refused: {s} {problem}");
        }
        let index = problem["log_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("not logged: {problem}"))?;
        let e = cx.logged_event(index).await?;
        if e["kind"] != "refusal" || e["reason"] != "not-on-call" || e["status"] != 403 {
            bail!("entry {index} is not a not-on-call refusal answered 403: {e}");
        }
        let actor = e["actor"].as_str().unwrap_or("");
        if !actor.starts_with("op-") {
            bail!("entry {index} does not name the caller by a pseudonym: {e}");
        }
        let (s, lines) = page(cx, &format!("?format=k8s-audit&from={index}&limit=1")).await?;
        if s != 200 {
            bail!("k8s-audit export: {s}");
        }
        let seen = format!("{e}{lines}").to_lowercase();
        for part in ["jane", "example.com"] {
            if seen.contains(part) {
                bail!(
                    "the customer reads {part:?} at entry {index}: {}",
                    short(&seen)
                );
            }
        }
        Ok(vec![
            format!(
                "HTTP 403 to the operator: {}",
                short(problem["detail"].as_str().unwrap_or(""))
            ),
            format!("entry {index}: reason not-on-call, status 403, actor {actor}"),
            format!("neither the entry nor its audit line holds {OFF_CALL_NAME:?}"),
        ])
    })
}

async fn page(cx: &Ctx, query: &str) -> anyhow::Result<(u16, Value)> {
    cx.gw
        .call(
            "GET",
            &format!(
                "/v1/tenants/{}/clusters/{}/events{query}",
                cx.tenant, cx.cluster
            ),
            Some(&cx.tenant_token),
            None,
        )
        .await
}

fn proofs(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let (s, p) = page(cx, "?limit=50").await?;
        if s != 200 {
            bail!("access log: {s}");
        }
        let events = p["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            bail!("no events");
        }
        for e in &events {
            let entry = palisade_core::canonical::to_canonical_vec(&e["event"])
                .map_err(|e| anyhow!("{e}"))?;
            let proof = TlogProof::parse(e["proof"].as_str().unwrap_or("").as_bytes())
                .map_err(|e| anyhow!("{e}"))?;
            if Some(proof.index()) != e["index"].as_u64() {
                bail!("proof index differs");
            }
            proof
                .verify(&entry, &cx.log_policy)
                .map_err(|err| anyhow!("entry {}: {err}", e["index"]))?;
        }
        Ok(vec![format!(
            "{} entries: each tlog-proof verifies against the log key and witness quorum",
            events.len()
        )])
    })
}

fn k8s_audit(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let op = run_status(cx).await?;
        let from = op["intent_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("no intent index"))?;
        let (s, lines) = page(cx, &format!("?format=k8s-audit&from={from}&limit=20")).await?;
        if s != 200 {
            bail!("k8s-audit export: {s}");
        }
        let text = lines.as_str().ok_or_else(|| anyhow!("not JSON lines"))?;
        let audit: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if audit
            .iter()
            .any(|a| a["apiVersion"] != "audit.k8s.io/v1" || a["kind"] != "Event")
        {
            bail!("not every line is an audit.k8s.io/v1 Event");
        }
        let event_id = op["event_id"].as_str().unwrap_or("");
        let matching: Vec<&Value> = audit
            .iter()
            .filter(|a| {
                a["auditID"]
                    .as_str()
                    .is_some_and(|id| id.replace('-', "").contains(event_id) || id == event_id)
            })
            .collect();
        let stages: Vec<&str> = matching
            .iter()
            .filter_map(|a| a["stage"].as_str())
            .collect();
        if !(stages.contains(&"RequestReceived") && stages.contains(&"ResponseComplete")) {
            // Fall back to the first intent/result pair sharing an auditID.
            bail!("no RequestReceived/ResponseComplete pair for event {event_id}: {stages:?}");
        }
        let user = matching[0]["user"]["username"].as_str().unwrap_or("");
        if !user.starts_with("palisade:operator:op-") {
            bail!("audit user is {user}");
        }
        Ok(vec![
            format!("{} audit.k8s.io/v1 lines", audit.len()),
            format!(
                "auditID {}: stages {stages:?}, user {user}",
                matching[0]["auditID"]
            ),
        ])
    })
}

fn other_tenant(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut ev = Vec::new();
        for (tenant, cluster) in [
            ("other", cx.cluster.as_str()),
            (cx.tenant.as_str(), "other"),
            ("other", "other"),
            (cx.tenant.as_str(), "no-such-cluster"),
        ] {
            let (s, p) = cx
                .gw
                .call(
                    "GET",
                    &format!("/v1/tenants/{tenant}/clusters/{cluster}/events"),
                    Some(&cx.tenant_token),
                    None,
                )
                .await?;
            if s != 404 {
                bail!("{tenant}/{cluster}: {s} {p}");
            }
            ev.push(format!("{tenant}/{cluster}: 404"));
        }
        Ok(ev)
    })
}

fn bad_reader(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let path = format!("/v1/tenants/{}/clusters/{}/events", cx.tenant, cx.cluster);
        let (s1, b1) = cx
            .gw
            .call("GET", &path, Some("guess-0123456789"), None)
            .await?;
        let (s2, b2) = cx.gw.call("GET", &path, None, None).await?;
        let (s3, _) = cx.gw.call("GET", &path, Some(&cx.op_token), None).await?;
        if s1 != 401 || s2 != 401 || b1 != b2 || s3 == 200 {
            bail!("guessed token {s1} {b1}, none {s2} {b2}, operator token {s3}");
        }
        Ok(vec![
            format!("guessed token: {s1}"),
            format!("no token: {s2}"),
            format!("an operator's token: {s3}"),
        ])
    })
}

fn log_api(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(
                rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(palisade_pki::load_roots(&cx.ca)?)
                    .with_no_client_auth(),
            )
            .build()?;
        let url = format!("{}/logs/{}/checkpoint", cx.log_url, cx.cluster);
        let ok = client
            .get(&url)
            .bearer_auth(&cx.tenant_token)
            .send()
            .await?
            .status()
            .as_u16();
        let guessed = client
            .get(&url)
            .bearer_auth("guess-0123456789")
            .send()
            .await?
            .status()
            .as_u16();
        let none = client.get(&url).send().await?.status().as_u16();
        if ok != 200 || guessed == 200 || none == 200 {
            bail!("tenant {ok}, guessed {guessed}, none {none}");
        }
        Ok(vec![
            format!("own token: {ok}"),
            format!("guessed token: {guessed}"),
            format!("no token: {none}"),
        ])
    })
}

fn kube_action<'a>(cx: &'a Ctx, action: &'static str, node: &'static str) -> BoxFut<'a> {
    Box::pin(async move {
        let l = cx.local()?;
        let p = pseudonym(cx).await?;
        let before = l.kube.requests().len();
        let args: Vec<(&str, &str)> = if node.is_empty() {
            vec![]
        } else {
            vec![("node", node)]
        };
        let (s, op) = cx.op_run(action, &args).await?;
        if s != 200 || op["status"] != "succeeded" {
            bail!("{action} failed (HTTP {s}): {}", short(&op.to_string()));
        }
        let index = op["intent_index"]
            .as_u64()
            .ok_or_else(|| anyhow!("no intent index"))?;
        let entry = format!("palisade.local/log/{}#{index}", cx.cluster);
        let reqs: Vec<_> = l.kube.requests().into_iter().skip(before).collect();
        if reqs.is_empty() {
            bail!("the apiserver received nothing");
        }
        for r in &reqs {
            let user = r.header("impersonate-user").unwrap_or("");
            let logged = r
                .header("impersonate-extra-palisade.dev%2flog-entry")
                .unwrap_or("");
            let event = r
                .header("impersonate-extra-palisade.dev%2fevent-id")
                .unwrap_or("");
            if user != format!("palisade:operator:{p}")
                || logged != entry
                || Some(event) != op["event_id"].as_str()
            {
                bail!(
                    "{} {}: user {user:?}, log entry {logged:?}, event {event:?}",
                    r.method,
                    r.path
                );
            }
        }
        let e = cx.logged_event(index).await?;
        if e["kind"] != "intent" || e["action"] != action {
            bail!("entry {index} is not the intent: {e}");
        }
        if action == "kube.cordon" && l.kube.unschedulable(node) != Some(true) {
            bail!("the node was not cordoned");
        }
        Ok(vec![
            format!("{action}: HTTP {s}, intent at {index}"),
            format!(
                "{} apiserver request(s): {}",
                reqs.len(),
                reqs.iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("Impersonate-User palisade:operator:{p}; log-entry {entry}"),
        ])
    })
}

fn all_impersonated(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let reqs = l.kube.requests();
        if reqs.is_empty() {
            bail!("the apiserver received nothing");
        }
        for r in &reqs {
            if !r
                .header("impersonate-user")
                .unwrap_or("")
                .starts_with("palisade:operator:op-")
                || r.header("impersonate-extra-palisade.dev%2flog-entry")
                    .is_none()
            {
                bail!("{} {} was not impersonated", r.method, r.path);
            }
            if !r.path.starts_with("/api/v1/nodes") {
                bail!("{} {} is not a node request", r.method, r.path);
            }
        }
        Ok(vec![format!(
            "{} apiserver requests, all impersonated, all under /api/v1/nodes",
            reqs.len()
        )])
    })
}
