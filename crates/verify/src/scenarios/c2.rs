//! C2: no action returns customer content. A canary is planted in etcd (Secrets,
//! ConfigMaps, a key name) and in the Kubernetes API stand-in; every read action runs
//! and its output, the access log and the agent's own output are searched for it.

use super::{push, push_with, short};
use crate::{BoxFut, Claim::C2, Ctx, Scenario, Scope};
use anyhow::bail;
use palisade_agent::dispatch::ResultOutcome;

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C2,
        Scope::Local,
        "c2-plant-canary-in-etcd",
        "Customer Secrets and ConfigMaps carrying a canary are written to the cluster's etcd",
        plant,
    );
    let reads: [(&str, &str); 9] = [
        ("etcd.status", "c2-etcd-status-no-content"),
        ("etcd.quota", "c2-etcd-quota-no-content"),
        ("etcd.members", "c2-etcd-members-no-content"),
        ("etcd.alarms", "c2-etcd-alarms-no-content"),
        ("etcd.health", "c2-etcd-health-no-content"),
        ("instance.resources", "c2-instance-resources-no-content"),
        ("certs.expiry", "c2-certs-expiry-no-key-material"),
        ("component.status", "c2-component-status-no-content"),
        ("kube.nodes", "c2-kube-nodes-no-content"),
    ];
    for (action, id) in reads {
        push_with(
            v,
            C2,
            Scope::Any,
            id,
            &format!("{action} through the gateway returns no etcd value, key or key material"),
            action,
            read_action,
        );
    }
    push(
        v,
        C2,
        Scope::Any,
        "c2-component-status-no-args-or-output",
        "component.status never shows a component's arguments or output",
        component_args,
    );
    push(
        v,
        C2,
        Scope::Local,
        "c2-mutating-actions-no-content",
        "Mutating etcd actions (defragment, alarm-disarm) return no content",
        mutating,
    );
    push(
        v,
        C2,
        Scope::Local,
        "c2-incident-actions-no-content",
        "Incident actions (compact, component.metrics, member-remove, member-join, certs.rotate) return no content, whether they run or are refused",
        incident,
    );
    push(
        v,
        C2,
        Scope::Local,
        "c2-alarm-disarm-never-clears-corrupt",
        "With a CORRUPT alarm raised, etcd.alarm-disarm alarm=CORRUPT is refused by the validator and a plain disarm leaves CORRUPT raised",
        corrupt_stays,
    );
    push(
        v,
        C2,
        Scope::Local,
        "c2-access-log-no-canary",
        "The customer's whole access log holds no canary (outputs are digests, not content)",
        access_log,
    );
    push(
        v,
        C2,
        Scope::Local,
        "c2-agent-output-no-canary",
        "The agent's own output (what an operator with host logs would see) holds no canary",
        agent_output,
    );
}

/// Runs after every other claim: searches everything collected during the run.
pub fn add_final(v: &mut Vec<Scenario>) {
    push(
        v,
        C2,
        Scope::Any,
        "c2-all-outputs-no-canary",
        "No output collected during the whole run holds the canary, a PEM block or an etcd key",
        all_outputs,
    );
}

async fn etcd_put(endpoint: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let mut c = etcd_client::Client::connect([endpoint], None).await?;
    c.put(key, value, None).await?;
    Ok(())
}

fn plant(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let keys = [
            (
                "/registry/secrets/prod/db-password".to_string(),
                cx.canary.clone(),
            ),
            (
                "/registry/configmaps/prod/app".to_string(),
                cx.canary.clone(),
            ),
            (
                format!("/registry/secrets/prod/{}", cx.canary),
                "x".to_string(),
            ),
        ];
        for (k, v) in &keys {
            etcd_put(&l.etcd_endpoint, k, v).await?;
        }
        let mut c = etcd_client::Client::connect([l.etcd_endpoint.as_str()], None).await?;
        let got = c.get("/registry/secrets/prod/db-password", None).await?;
        let stored = got
            .kvs()
            .first()
            .map(|kv| kv.value().to_vec())
            .unwrap_or_default();
        if stored != cx.canary.as_bytes() {
            bail!("the canary is not readable back from etcd");
        }
        Ok(vec![
            format!("canary {} written under 3 etcd keys", cx.canary),
            "read back from etcd directly: present (so a leak would be visible)".into(),
        ])
    })
}

pub(crate) fn leaks(cx: &Ctx, text: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    if text.contains(&cx.canary) {
        found.push("the canary");
    }
    if text.contains("/registry/") {
        found.push("an etcd key (/registry/)");
    }
    if text.contains("PRIVATE KEY") {
        found.push("a private key");
    }
    if text.contains("-----BEGIN") {
        found.push("a PEM block");
    }
    found
}

fn read_action<'a>(cx: &'a Ctx, action: &'static str) -> BoxFut<'a> {
    Box::pin(async move {
        let (s, op) = cx.op_run(action, &[]).await?;
        if s != 200 || op["status"] != "succeeded" {
            bail!(
                "{action} did not succeed (HTTP {s}): {}",
                short(&op.to_string())
            );
        }
        let text = op.to_string();
        let found = leaks(cx, &text);
        if !found.is_empty() {
            bail!("{action} returned {found:?}: {}", short(&text));
        }
        Ok(vec![
            format!(
                "{action}: HTTP {s}, succeeded, intent at {}",
                op["intent_index"]
            ),
            format!(
                "output {} bytes, fields {}",
                op["output"].to_string().len(),
                op["output"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            ),
            "no canary, no /registry/ key, no PEM".into(),
        ])
    })
}

fn component_args(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let (s, op) = cx
            .op_run("component.status", &[("component", "etcd")])
            .await?;
        if s != 200 || op["status"] != "succeeded" {
            bail!("component.status failed (HTTP {s}): {op}");
        }
        let text = op["output"].to_string();
        for leaked in [
            "--data-dir",
            "--listen",
            "listening",
            "raft",
            "127.0.0.1:",
            "PALISADE",
        ] {
            if text.contains(leaked) {
                bail!(
                    "component output or arguments leaked ({leaked}): {}",
                    short(&text)
                );
            }
        }
        Ok(vec![
            format!("component.status etcd: HTTP {s}"),
            format!(
                "fields: {}",
                op["output"]["components"][0]
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            ),
            "no argv, no listen URLs, no log lines".into(),
        ])
    })
}

fn mutating(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut ev = Vec::new();
        for action in ["etcd.defragment", "etcd.alarm-disarm"] {
            let done = l.execute(action, &[]).await?;
            if done.result.outcome != ResultOutcome::Succeeded {
                bail!(
                    "{action}: {:?} {:?}",
                    done.result.outcome,
                    done.result.error
                );
            }
            let text = serde_json::to_string(&done.result)?;
            cx.record_output(text.clone());
            let found = leaks(cx, &text);
            if !found.is_empty() {
                bail!("{action} returned {found:?}");
            }
            ev.push(format!(
                "{action}: intent {}, succeeded, no content",
                done.intent_index
            ));
        }
        Ok(ev)
    })
}

/// The incident actions on the canary-holding etcd: a compaction and a metrics read
/// run; removing
/// the healthy member and joining the running one are refused by the agent. Every
/// result is searched for the canary.
fn incident(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut ev = Vec::new();
        // (action, parameters, whether it runs, what the refusal says)
        type Run<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, &'a str);
        let runs: [Run; 5] = [
            ("etcd.compact", &[("retain_revisions", "1")], true, ""),
            ("component.metrics", &[("component", "etcd")], true, ""),
            (
                "etcd.member-remove",
                &[("member", "demo-0")],
                false,
                "has been unhealthy for",
            ),
            (
                "etcd.member-join",
                &[],
                false,
                "only a member whose data is gone",
            ),
            (
                "certs.rotate",
                &[("component", "etcd"), ("kind", "serving")],
                false,
                "renews etcd's serving certificate",
            ),
        ];
        for (action, params, runs, refusal) in runs {
            let done = l.execute(action, params).await?;
            let text = serde_json::to_string(&done.result)?;
            cx.record_output(text.clone());
            let found = leaks(cx, &text);
            if !found.is_empty() {
                bail!("{action} returned {found:?}");
            }
            let error = done.result.error.clone().unwrap_or_default();
            match (runs, done.result.outcome) {
                (true, ResultOutcome::Succeeded) => ev.push(format!(
                    "{action}: intent {}, succeeded, numbers only",
                    done.intent_index
                )),
                (false, ResultOutcome::Failed) if error.contains(refusal) => ev.push(format!(
                    "{action}: intent {}, refused by the agent ({}), no content",
                    done.intent_index,
                    short(&error)
                )),
                (_, outcome) => bail!("{action}: {outcome:?} {error}"),
            }
        }
        Ok(ev)
    })
}

/// The CORRUPT alarm raised on `endpoint`'s member (what etcd does when it finds a
/// member diverged), or, with `raise == false`, cleared again by the verifier itself
/// (no action can) so that the rest of the run has a writable etcd.
async fn corrupt_alarm(endpoint: &str, raise: bool) -> anyhow::Result<()> {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let mut c = etcd_client::Client::connect([endpoint], None).await?;
    let member = c
        .status()
        .await?
        .header()
        .map(|h| h.member_id())
        .ok_or_else(|| anyhow::anyhow!("etcd status has no header"))?;
    let mut o = AlarmOptions::new();
    o.with_member(member);
    let action = if raise {
        AlarmAction::Activate
    } else {
        AlarmAction::Deactivate
    };
    c.alarm(action, AlarmType::Corrupt, Some(o)).await?;
    Ok(())
}

async fn corrupt_raised(endpoint: &str) -> anyhow::Result<bool> {
    use etcd_client::{AlarmAction, AlarmType};
    let mut c = etcd_client::Client::connect([endpoint], None).await?;
    let r = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    Ok(r.alarms().iter().any(|a| a.alarm() == AlarmType::Corrupt))
}

fn corrupt_stays(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        corrupt_alarm(&l.etcd_endpoint, true).await?;
        let attack = async {
            if !corrupt_raised(&l.etcd_endpoint).await? {
                bail!("the verifier could not raise a CORRUPT alarm");
            }
            // Named explicitly: not a value the handler or the policy accepts.
            let got = cx
                .op_run("etcd.alarm-disarm", &[("alarm", "CORRUPT")])
                .await?;
            let mut ev = cx
                .expect_refusal("etcd.alarm-disarm alarm=CORRUPT", got, 422, "validate")
                .await?;
            // A plain disarm (NOSPACE) runs and leaves CORRUPT raised.
            let done = l.execute("etcd.alarm-disarm", &[]).await?;
            if done.result.outcome != ResultOutcome::Succeeded {
                bail!(
                    "etcd.alarm-disarm: {:?} {:?}",
                    done.result.outcome,
                    done.result.error
                );
            }
            let text = serde_json::to_string(&done.result)?;
            cx.record_output(text.clone());
            if !corrupt_raised(&l.etcd_endpoint).await? {
                bail!(
                    "etcd.alarm-disarm cleared the CORRUPT alarm: {}",
                    short(&text)
                );
            }
            if !text.contains("CORRUPT") {
                bail!(
                    "the output does not show CORRUPT still raised: {}",
                    short(&text)
                );
            }
            ev.push(format!(
                "etcd.alarm-disarm (intent {}): succeeded, CORRUPT still raised and shown",
                done.intent_index
            ));
            Ok(ev)
        }
        .await;
        // Whatever happened, the rest of the run needs a writable etcd.
        corrupt_alarm(&l.etcd_endpoint, false).await?;
        attack
    })
}

fn access_log(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut from = 0u64;
        let mut total = 0usize;
        loop {
            let (s, page) = cx
                .gw
                .call(
                    "GET",
                    &format!(
                        "/v1/tenants/{}/clusters/{}/events?from={from}&limit=100",
                        cx.tenant, cx.cluster
                    ),
                    Some(&cx.tenant_token),
                    None,
                )
                .await?;
            if s != 200 {
                bail!("access log answered {s}");
            }
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            for e in &events {
                let text = e["event"].to_string();
                if text.contains(&cx.canary) {
                    bail!("log entry {} holds the canary", e["index"]);
                }
            }
            total += events.len();
            from += events.len() as u64;
            if events.len() < 100 {
                break;
            }
        }
        if total == 0 {
            bail!("the access log is empty");
        }
        Ok(vec![format!(
            "{total} access-log events read as the customer; none holds the canary"
        )])
    })
}

fn agent_output(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let lines = l.agent_output();
        if let Some(line) = lines.iter().find(|x| x.contains(&cx.canary)) {
            bail!("the agent printed the canary: {}", short(line));
        }
        Ok(vec![format!(
            "{} agent output lines; none holds the canary",
            lines.len()
        )])
    })
}

fn all_outputs(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let outputs = cx.outputs.lock().map(|o| o.clone()).unwrap_or_default();
        if outputs.len() < 5 {
            bail!("only {} outputs were collected", outputs.len());
        }
        for o in &outputs {
            let found = leaks(cx, o);
            if !found.is_empty() {
                bail!("an output holds {found:?}: {}", short(o));
            }
        }
        Ok(vec![format!(
            "{} outputs collected so far searched: no canary, PEM or etcd key",
            outputs.len()
        )])
    })
}
