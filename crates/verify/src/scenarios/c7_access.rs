//! C7, who may do what: component certificates confined to their own log, operator
//! certificates, refusal flooding and the rate limiter's window edges.

use super::push;
use crate::{BoxFut, Claim::C7, Ctx, Scenario, Scope};
use anyhow::bail;
use palisade_pki::{CertName, IssuedPaths, Role};
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::note::Note;

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C7,
        Scope::Local,
        "c7-log-append-agent-confined",
        "An agent certificate cannot append to another cluster's log nor to the governance log",
        agent_append_confined,
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
