//! C7, who may do what: component certificates confined to their own log, operator
//! certificates, refusal flooding and the rate limiter's window edges.

use super::push;
use crate::{BoxFut, Claim::C7, Ctx, Scenario, Scope};
use anyhow::bail;
use palisade_pki::{CertName, IssuedPaths, Role};
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::note::Note;
use std::time::Duration;

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C7,
        Scope::Local,
        "c7-log-append-agent-confined",
        "An agent certificate cannot append to another cluster's log nor to the governance log",
        agent_append_confined,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-refusal-flood",
        "120 requests of an off-call operator: each refused, 10 logged one by one, the rest counted in one summary entry",
        refusal_flood,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-rate-limit-window-edge",
        "A burst of etcd.status across a minute boundary gets at most 60 (60/min), not twice that",
        window_edge,
    );
}

/// A client of the log service holding the certificate `role`-`name` from the
/// deployment's PKI directory, issued there first if missing.
fn component_client(
    l: &crate::ctx::Local,
    role: Role,
    name: &str,
) -> anyhow::Result<reqwest::Client> {
    let pki = l.dir.join("pki");
    let cert_name = CertName::new(name)?;
    let paths = IssuedPaths::in_dir(&pki, role, &cert_name);
    if !paths.cert.exists() {
        palisade_pki::issue(&pki, role, &cert_name, &[], 30, false)?;
    }
    let tls =
        palisade_pki::client_config(&pki.join("ca.crt"), &paths.cert, &paths.key, &[Role::Log])?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?)
}

/// The size of the checkpoint `log` serves now, read with the gateway's certificate.
async fn log_size(cx: &Ctx, l: &crate::ctx::Local, log: &str) -> anyhow::Result<u64> {
    let body = component_client(l, Role::Gateway, "gateway")?
        .get(format!("{}/logs/{log}/checkpoint", cx.log_url))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let note = Note::parse(&body)?;
    Ok(Checkpoint::parse(note.text())?.size())
}

fn agent_append_confined(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut evidence = Vec::new();
        // The deployment's own agent writes a forged release record; an agent
        // certificate the same CA issued for an instance of another cluster writes
        // into this cluster's log.
        let foreign = format!("{}-elsewhere-0", cx.cluster);
        for (name, log, entry) in [
            (
                cx.instance.as_str(),
                "governance",
                "{\"release\":\"forged\"}",
            ),
            (
                foreign.as_str(),
                cx.cluster.as_str(),
                "{\"result\":\"forged\"}",
            ),
        ] {
            let before = log_size(cx, l, log).await?;
            let status = component_client(l, Role::Agent, name)?
                .post(format!("{}/logs/{log}/append", cx.log_url))
                .body(entry)
                .send()
                .await?
                .status();
            let after = log_size(cx, l, log).await?;
            if status.as_u16() != 403 {
                bail!("agent certificate {name} got {status} appending to log {log}");
            }
            // Scenarios run one at a time: nothing else appends meanwhile.
            if after != before {
                bail!("log {log} grew from {before} to {after} entries on a refused append");
            }
            evidence.push(format!(
                "agent certificate {name}: POST /logs/{log}/append 403, log size stays {after}"
            ));
        }
        Ok(evidence)
    })
}

/// The refusals of one authenticated operator on one cluster the gateway logs one by
/// one per period (its default `[refusal_log]`).
const REFUSALS_LOGGED: usize = 10;
const REFUSAL_PERIOD_SECS: u64 = 60;

fn refusal_flood(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        // An operator the deployment's identity provider knows, on no schedule.
        let token = cx.gw.dev_token("verify-flooder").await?;
        let target = Some(cx.instance.as_str());
        let mut logged = Vec::new();
        let mut counted = 0usize;
        for _ in 0..120 {
            let (status, problem) = cx
                .gw
                .run(
                    &token,
                    &cx.cluster,
                    "etcd.status",
                    target,
                    &[],
                    crate::ctx::TICKET,
                    "flooding the log",
                )
                .await?;
            if status != 403 {
                bail!(
                    "an off-call request got {status}: {}",
                    super::short(&problem.to_string())
                );
            }
            match problem["log_index"].as_u64() {
                Some(i) => logged.push(i),
                None if problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("not logged individually")) =>
                {
                    counted += 1
                }
                None => bail!("a refusal neither logged nor counted: {problem}"),
            }
        }
        if logged.len() > REFUSALS_LOGGED || logged.is_empty() {
            bail!(
                "{} of 120 refusals were logged one by one; the budget is {REFUSALS_LOGGED}",
                logged.len()
            );
        }
        let first = cx.logged_event(logged[0]).await?;
        let from = logged.iter().max().copied().unwrap_or(0) + 1;
        // The count reaches the log once the period has passed (plus the summariser's
        // tick).
        let deadline = std::time::Instant::now() + Duration::from_secs(REFUSAL_PERIOD_SECS + 45);
        let summary = loop {
            let (status, page) = cx
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
            if status != 200 {
                bail!("the customer's access log answered {status}: {page}");
            }
            let found = page["events"].as_array().and_then(|events| {
                events
                    .iter()
                    .map(|e| (e["index"].clone(), e["event"].clone()))
                    .find(|(_, e)| {
                        e["action"] == "refusals-not-logged" && e["actor"] == first["actor"]
                    })
            });
            if let Some(found) = found {
                break found;
            }
            if std::time::Instant::now() > deadline {
                bail!("no summary entry of the {counted} unlogged refusals in the customer's log");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let reason = summary.1["reason"].as_str().unwrap_or_default();
        if !reason.starts_with(&format!("refusals-not-logged: {counted} refusals")) {
            bail!(
                "the summary does not count the {counted} unlogged refusals: {}",
                summary.1
            );
        }
        Ok(vec![
            format!(
                "120 requests: 120 × 403, {} logged one by one, {counted} counted",
                logged.len()
            ),
            format!(
                "summary entry at index {} for {}: {}",
                summary.0,
                first["actor"],
                super::short(reason)
            ),
        ])
    })
}

/// Waits until the wall clock is `secs` seconds into a minute.
async fn until_second_of_minute(secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into = now.as_millis() % 60_000;
    let want = u128::from(secs) * 1000;
    let wait = (want + 60_000 - into) % 60_000;
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
}

fn window_edge(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        const MAX: usize = 60;
        // From 4 s before a minute boundary to 4 s after it: an interval far shorter
        // than the limit's minute, so at most 60 may be admitted in it whatever was
        // admitted before. Epoch-aligned windows would admit 60 on each side.
        until_second_of_minute(56).await;
        let end = std::time::Instant::now() + Duration::from_secs(8);
        let worker = || async {
            let (mut ok, mut limited) = (0usize, 0usize);
            while std::time::Instant::now() < end {
                let (status, body) = cx.op_run("etcd.status", &[]).await?;
                match status {
                    200 | 202 => ok += 1,
                    429 => limited += 1,
                    _ => bail!("etcd.status: {status} {}", super::short(&body.to_string())),
                }
            }
            Ok::<_, anyhow::Error>((ok, limited))
        };
        // Eight requests in flight at a time: fast enough to reach the limit on both
        // sides of the boundary.
        let results = tokio::join!(
            worker(),
            worker(),
            worker(),
            worker(),
            worker(),
            worker(),
            worker(),
            worker()
        );
        let (mut admitted, mut limited) = (0usize, 0usize);
        for r in [
            results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
        ] {
            let (a, l) = r?;
            admitted += a;
            limited += l;
        }
        if admitted > MAX {
            bail!("{admitted} etcd.status admitted within 8 s across a minute boundary; the limit is {MAX}/min");
        }
        if limited == 0 {
            bail!("the burst never reached the limit ({admitted} admitted): too slow to test the window edge");
        }
        Ok(vec![format!(
            "8 s across a minute boundary: {admitted} admitted, {limited} × 429 (limit {MAX}/min)"
        )])
    })
}
