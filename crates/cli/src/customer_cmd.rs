//! `palisade customer`: what a tenant does with its own key. The tenant's key never
//! leaves the tenant's machine; the provider only ever sees statements it signed.
//!
//! - `keygen` writes the tenant's Ed25519 key pair (the `.pub` goes into every agent
//!   of the tenant's clusters, as `tenant_key`).
//! - `register-witness` signs a statement naming the witnesses the tenant runs and
//!   how many must cosign, and has the gateway record it in the cluster's log; from
//!   then on every agent of the cluster requires those cosignatures too.
//! - `trust` shows the statement in force.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use palisade_core::time::Timestamp;
use palisade_core::{ClusterId, TenantId};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::SigningKey;
use palisade_policy::tenant::{TenantTrust, TENANT_TRUST_SCHEMA};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit_cmd::{secret_arg, verifier_key};

#[derive(Args)]
pub struct CustomerArgs {
    #[command(subcommand)]
    command: CustomerCommand,
}

#[derive(Subcommand)]
enum CustomerCommand {
    /// Write the tenant's key pair: NAME.key (private, 0600) and NAME.pub.
    Keygen {
        /// Directory to write the key files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "tenant")]
        name: String,
    },
    /// Sign a statement naming the tenant's witnesses and record it in the
    /// cluster's log: every agent of the cluster then requires their cosignatures.
    RegisterWitness(RegisterArgs),
    /// Show the witness statement in force for a cluster.
    Trust(GatewayArgs),
}

#[derive(Args)]
struct GatewayArgs {
    /// The gateway's URL, e.g. https://127.0.0.1:7400.
    #[arg(long)]
    gateway: String,
    /// PEM file of the CA the gateway's certificate chains to.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The tenant's reader token, or `@FILE`.
    #[arg(long, value_name = "TOKEN")]
    token: String,
    #[arg(long)]
    tenant: TenantId,
    #[arg(long)]
    cluster: ClusterId,
}

#[derive(Args)]
struct RegisterArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The tenant's private key file (from `palisade customer keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// A witness's verifier key (cosignature type), or `@FILE`. Repeat for several.
    #[arg(long = "witness-key", value_name = "VKEY", required = true)]
    witness_keys: Vec<String>,
    /// How many of them must cosign. Default: all of them.
    #[arg(long, value_name = "N")]
    quorum: Option<u32>,
    /// The statement's sequence number. Default: one above the statement in force.
    #[arg(long, value_name = "N")]
    seq: Option<u64>,
    /// Also write the signed statement to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: CustomerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CustomerCommand::Keygen { out, name } => {
            let files = palisade_policy::keys::generate(&name, &out, false)?;
            println!(
                "private key  {} (keep it on the tenant's side)",
                files.private.display()
            );
            println!(
                "public key   {} (install it as `tenant_key` on every agent of your clusters)",
                files.public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CustomerCommand::RegisterWitness(a) => crate::lifecycle::runtime()?.block_on(async {
            let key = SigningKey::read(&a.key)?;
            let stored = register(&a.gateway, &key, &a.witness_keys, a.quorum, a.seq).await?;
            if let Some(out) = &a.out {
                std::fs::write(out, serde_json::to_vec_pretty(&stored.statement)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            print_trust(&stored.shown);
            Ok(ExitCode::SUCCESS)
        }),
        CustomerCommand::Trust(g) => crate::lifecycle::runtime()?.block_on(async {
            let (status, body) = call(&g, None).await?;
            if status == 404 {
                bail!("{}", detail(&body));
            }
            if !(200..300).contains(&status) {
                bail!("the gateway answered {status}: {}", detail(&body));
            }
            print_trust(&body);
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// What `register` recorded.
pub struct Registered {
    pub statement: Envelope,
    pub shown: Value,
}

fn trust_url(g: &GatewayArgs) -> String {
    format!(
        "{}/v1/tenants/{}/clusters/{}/trust",
        g.gateway.trim_end_matches('/'),
        g.tenant,
        g.cluster
    )
}

async fn call(g: &GatewayArgs, put: Option<&Envelope>) -> anyhow::Result<(u16, Value)> {
    let http = crate::op_cmd::client(g.ca.as_deref())?;
    let token = secret_arg(&g.token)?;
    let url = trust_url(g);
    let req = match put {
        Some(env) => http
            .put(&url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(env)?),
        None => http.get(&url),
    };
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, body))
}

fn detail(body: &Value) -> String {
    body["detail"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}

/// Signs and records a witness statement; the sequence number defaults to one above
/// the statement in force.
async fn register(
    g: &GatewayArgs,
    key: &SigningKey,
    witness_keys: &[String],
    quorum: Option<u32>,
    seq: Option<u64>,
) -> anyhow::Result<Registered> {
    let witnesses = witness_keys
        .iter()
        .map(|w| verifier_key(w, "--witness-key").map(|k| k.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seq = match seq {
        Some(s) => s,
        None => {
            let (status, body) = call(g, None).await?;
            match status {
                404 => 1,
                200 => {
                    body["seq"]
                        .as_u64()
                        .context("the gateway's answer has no seq")?
                        + 1
                }
                s => bail!("the gateway answered {s}: {}", detail(&body)),
            }
        }
    };
    let trust = TenantTrust {
        schema: TENANT_TRUST_SCHEMA.into(),
        tenant: g.tenant.clone(),
        cluster: g.cluster.clone(),
        seq,
        issued_at: Timestamp::now(),
        quorum: quorum.unwrap_or(u32::try_from(witnesses.len()).unwrap_or(u32::MAX)),
        witnesses,
    };
    let statement = trust.sign(key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (status, body) = call(g, Some(&statement)).await?;
    if status != 201 {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    Ok(Registered {
        statement,
        shown: body,
    })
}

/// `palisade up`'s registration of the demo tenant's witness, with the statement it
/// signed once (kept in the tenant's directory): recorded unless already in force.
pub async fn register_demo(
    gateway: &str,
    ca: &Path,
    token: &str,
    statement: &Envelope,
) -> anyhow::Result<()> {
    let (trust, _) = TenantTrust::decode(statement).map_err(|e| anyhow::anyhow!("{e}"))?;
    let g = GatewayArgs {
        gateway: gateway.to_string(),
        ca: Some(ca.to_path_buf()),
        token: token.to_string(),
        tenant: trust.tenant.clone(),
        cluster: trust.cluster.clone(),
    };
    let (status, body) = call(&g, None).await?;
    if status == 200 && body["seq"].as_u64() >= Some(trust.seq) {
        return Ok(());
    }
    let (status, body) = call(&g, Some(statement)).await?;
    if status != 201 {
        bail!(
            "the demo tenant's witness statement was not recorded: {status}: {}",
            detail(&body)
        );
    }
    Ok(())
}

fn print_trust(v: &Value) {
    println!("cluster    {}", v["cluster"].as_str().unwrap_or_default());
    println!(
        "statement  seq {}, {} (log index {})",
        v["seq"],
        v["statement_digest"].as_str().unwrap_or_default(),
        v["index"]
    );
    let witnesses: Vec<&str> = v["witnesses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("requires   {} of: {}", v["quorum"], witnesses.join(", "));
}
