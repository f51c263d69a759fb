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
        "c7-operator-cert-needs-setting",
        "An operator certificate minted with the deployment's CA for the on-call operator is refused by a gateway where operator_certificates is off; where on, the event records its fingerprint",
        operator_cert_setting,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-automation-identity-is-pinned-and-narrow",
        "The scheduler (a [[service]]) runs only the actions it is allowed; a certificate of the same name minted with the operator CA is not the scheduler",
        automation_identity,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-agent-needs-a-witness",
        "The deployment's agent configuration without witnesses, or with a witness quorum of 0, does not start (palisade agent serve and check refuse it, naming the setting)",
        agent_needs_a_witness,
    );
    push(
        v,
        C7,
        Scope::Local,
        "c7-refusal-flood",
        "A flood of an off-call operator's requests: each refused, the budget logged one by one, the rest counted in one summary entry",
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

fn agent_needs_a_witness(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let dir = super::scratch(cx, "agent-witnesses")?;
        let text = std::fs::read_to_string(l.dir.join("agent/agent.toml"))?;
        if !text.contains("witness_quorum = ") {
            bail!("the deployment's agent.toml names no witness_quorum");
        }
        let no_witness: String = text
            .lines()
            .filter(|line| {
                !line.starts_with("witnesses = ") && !line.starts_with("witness_quorum = ")
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let quorum_zero: String = text
            .lines()
            .map(|line| {
                if line.starts_with("witness_quorum = ") {
                    "witness_quorum = 0\n".to_string()
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let mut evidence = Vec::new();
        for (name, config, field) in [
            ("no-witness", no_witness, "log.witnesses"),
            ("quorum-zero", quorum_zero, "log.witness_quorum"),
        ] {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, config)?;
            for sub in ["serve", "check"] {
                let out = tokio::time::timeout(
                    Duration::from_secs(30),
                    tokio::process::Command::new(&l.exe)
                        .args(["agent", sub, "--config"])
                        .arg(&path)
                        .stdin(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .output(),
                )
                .await
                .map_err(|_| {
                    anyhow::anyhow!("palisade agent {sub} with {name}.toml still runs after 30 s")
                })??;
                let err = String::from_utf8_lossy(&out.stderr);
                if out.status.success() || !err.contains(field) {
                    bail!(
                        "palisade agent {sub} with {name}.toml exited {} without naming {field}: {}",
                        out.status,
                        super::short(&err)
                    );
                }
                evidence.push(format!(
                    "{name}: palisade agent {sub} exits {} naming {field}",
                    out.status.code().unwrap_or(-1)
                ));
            }
        }
        Ok(evidence)
    })
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

/// The deployment's budget of refusals logged one by one per operator and cluster:
/// its gateway's `[refusal_log]` (max, per_secs), or the defaults.
fn refusal_budget(l: &crate::ctx::Local) -> anyhow::Result<(usize, u64)> {
    let text = std::fs::read_to_string(l.dir.join("gateway/gateway.toml"))?;
    let config: toml::Table = toml::from_str(&text)?;
    let table = config.get("refusal_log").and_then(|t| t.as_table());
    let max = table
        .and_then(|t| t.get("max"))
        .and_then(|v| v.as_integer())
        .unwrap_or(10);
    let per = table
        .and_then(|t| t.get("per_secs"))
        .and_then(|v| v.as_integer())
        .unwrap_or(60);
    Ok((usize::try_from(max)?, u64::try_from(per)?))
}

fn refusal_flood(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        // An operator the deployment's identity provider knows, on no schedule.
        let (budget, period) = refusal_budget(cx.local()?)?;
        let requests = budget + 110;
        let token = cx.gw.dev_token("verify-flooder").await?;
        let target = Some(cx.instance.as_str());
        let mut logged = Vec::new();
        let mut counted = 0usize;
        for _ in 0..requests {
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
        if logged.len() > budget || logged.is_empty() {
            bail!(
                "{} of {requests} refusals were logged one by one; the budget is {budget}",
                logged.len()
            );
        }
        let first = cx.logged_event(logged[0]).await?;
        let from = logged.iter().max().copied().unwrap_or(0) + 1;
        // The count reaches the log once the period has passed (plus the summariser's
        // tick).
        let deadline = std::time::Instant::now() + Duration::from_secs(period + 45);
        let summary = loop {
            let page = cx.events_page(from, 100).await?;
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
        if reason != "refusals-not-logged"
            || summary.1["not_logged"]["count"].as_u64() != Some(counted as u64)
        {
            bail!(
                "the summary does not count the {counted} unlogged refusals: {}",
                summary.1
            );
        }
        Ok(vec![
            format!(
                "{requests} requests: {requests} × 403, {} logged one by one (budget {budget} per {period}s), {counted} counted",
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
                    429 => {
                        limited += 1;
                        // Keep asking, without hammering the gateway.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
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

/// Sends etcd.status to `url` with the operator certificate `issued`.
async fn run_with_certificate(
    cx: &Ctx,
    ca: &std::path::Path,
    issued: &IssuedPaths,
    url: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    run_action_with_certificate(cx, ca, issued, url, "etcd.status").await
}

async fn run_action_with_certificate(
    cx: &Ctx,
    ca: &std::path::Path,
    issued: &IssuedPaths,
    url: &str,
    action: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let tls = palisade_pki::client_config(ca, &issued.cert, &issued.key, &[Role::Gateway])?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(60))
        .build()?;
    let body = serde_json::json!({
        "instance": cx.instance,
        "ticket": crate::ctx::TICKET,
        "reason": "an operator certificate minted with the CA key",
    });
    let resp = client
        .post(format!("{url}/v1/clusters/{}/actions/{action}", cx.cluster))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

fn operator_cert_setting(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let pki = l.dir.join("pki");
        let ca = pki.join("ca.crt");
        // Whoever holds the CA key mints a certificate for the operator on call.
        let name = CertName::new(&cx.operator)?;
        let mut issued = IssuedPaths::in_dir(&pki, Role::Operator, &name);
        if !issued.cert.exists() {
            issued = palisade_pki::issue(&pki, Role::Operator, &name, &[], 30, false)?;
        }
        let der = palisade_pki::load_certs(&issued.cert, "operator certificate")?;
        let fingerprint = der
            .first()
            .map(|c| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(c.as_ref())))
            .unwrap_or_default();

        // A gateway of this deployment with operator_certificates off (the default),
        // everything else as configured: built in this process from the deployment's
        // configuration, with its own state, and serving until the scenario ends.
        let gdir = l.dir.join("gateway");
        let text = std::fs::read_to_string(gdir.join("gateway.toml"))?;
        // Without operator certificates no `[[service]]` can authenticate either:
        // this gateway has none.
        let text = text
            .split("[[service]]")
            .next()
            .unwrap_or_default()
            .to_string();
        let scratch = super::scratch(cx, "gateway-certs-off")?;
        let state = scratch.join("state.redb");
        let datastore = scratch.join("tuf-datastore");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let edited: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("listen = ") {
                    format!("listen = \"127.0.0.1:{port}\"")
                } else if line.starts_with("state = ") {
                    format!("state = {:?}", state.display().to_string())
                } else if line.starts_with("datastore = ") {
                    // Its own TUF datastore: the deployment's gateway keeps writing its own.
                    format!("datastore = {:?}", datastore.display().to_string())
                } else if line.starts_with("operator_certificates = ") {
                    "operator_certificates = false".into()
                } else {
                    line.to_string()
                }
            })
            .collect();
        let config = gdir.join("verify-certs-off.toml");
        std::fs::write(&config, edited.join("\n"))?;
        let loaded =
            palisade_core::config::load::<palisade_gateway::config::GatewayConfig>(&config);
        let _ = std::fs::remove_file(&config);
        let cfg = loaded?;
        if cfg.operator_certificates {
            bail!("the edited configuration still accepts operator certificates");
        }
        let tls = palisade_gateway::operator_certs::server_tls(
            &cfg.tls.ca,
            &cfg.tls.cert,
            &cfg.tls.key,
            cfg.operator_ca_if_enabled(),
        )
        .map_err(|e| anyhow::anyhow!("gateway TLS: {e}"))?;
        let gw = palisade_gateway::server::start(cfg)
            .await
            .map_err(|e| anyhow::anyhow!("a gateway with operator_certificates off: {e}"))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(palisade_tlog_service::https::serve(
            listener,
            tls,
            palisade_gateway::api::router(gw),
            async move {
                let _ = stopped.await;
            },
        ));
        let from = cx.log_size().await?;
        let off =
            run_with_certificate(cx, &ca, &issued, &format!("https://127.0.0.1:{port}")).await;
        let _ = stop.send(());
        let _ = server.await;
        let (status, problem) = off?;
        if status != 401 {
            bail!("operator_certificates off: a CA-minted certificate got {status}: {problem}");
        }
        let detail = super::short(problem["detail"].as_str().unwrap_or_default());
        let (logged, _) = cx
            .expect_unauthenticated("a CA-minted operator certificate", (status, problem), from)
            .await?;
        let mut evidence = vec![format!(
            "operator_certificates off: certificate of on-call {} refused, HTTP 401: {detail}",
            cx.operator,
        )];
        evidence.extend(logged);

        // The deployment itself (palisade up's demo turns them on, with its own CA):
        // accepted, and the logged intent names the certificate by its SHA-256.
        let (status, done) = run_with_certificate(cx, &ca, &issued, &cx.gw.url).await?;
        if status != 200 {
            bail!("palisade up's gateway refused the demo operator certificate: {status} {done}");
        }
        let index = done["intent_index"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no intent index: {done}"))?;
        let intent = cx.logged_event(index).await?;
        if intent["actor"]["authn"]["method"] != "certificate"
            || intent["actor"]["authn"]["sha256"] != fingerprint.as_str()
        {
            bail!("the intent does not record the certificate {fingerprint}: {intent}");
        }
        evidence.push(format!(
            "operator_certificates on (palisade up): intent {index} records certificate sha256 {fingerprint}"
        ));
        Ok(evidence)
    })
}

fn automation_identity(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let pki = l.dir.join("pki");
        let ca = pki.join("ca.crt");
        let name = CertName::new("scheduler")?;
        let scheduler = IssuedPaths::in_dir(&pki, Role::Operator, &name);
        if !scheduler.cert.exists() {
            bail!(
                "this deployment has no scheduler certificate ({})",
                scheduler.cert.display()
            );
        }
        let mut evidence = Vec::new();
        // The real scheduler, asked for an action beyond its list.
        let (status, problem) =
            run_action_with_certificate(cx, &ca, &scheduler, &cx.gw.url, "etcd.status").await?;
        let detail = problem["detail"].as_str().unwrap_or_default();
        if status != 403 || !detail.contains("may run only") {
            bail!("the scheduler ran etcd.status, or was refused for another reason: {status} {problem}");
        }
        evidence.push(format!(
            "scheduler certificate, etcd.status: HTTP 403: {}",
            super::short(detail)
        ));
        // Whoever holds the operator CA key mints another "scheduler".
        let scratch = super::scratch(cx, "automation-identity")?;
        for f in ["ca.crt", "ca.key"] {
            std::fs::copy(pki.join(f), scratch.join(f))?;
        }
        let impostor = palisade_pki::issue(&scratch, Role::Operator, &name, &[], 30, true)?;
        let (status, problem) =
            run_action_with_certificate(cx, &ca, &impostor, &cx.gw.url, "etcd.backup").await?;
        let detail = problem["detail"].as_str().unwrap_or_default();
        if status != 403 || detail.contains("may run only") {
            bail!("a CA-minted certificate named scheduler got {status}: {problem}");
        }
        evidence.push(format!(
            "CA-minted certificate named scheduler, etcd.backup: HTTP 403 as an ordinary operator: {}",
            super::short(detail)
        ));
        Ok(evidence)
    })
}
