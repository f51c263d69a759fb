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
use palisade_policy::customer_approval::Decision;
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
        /// Make the key inside a PKCS#11 token (an approver's key): its private half
        /// is generated there, sensitive and non-extractable, labelled NAME; only
        /// NAME.pub is written to --out.
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Sign a statement naming the tenant's witnesses and record it in the
    /// cluster's log: every agent of the cluster then requires their cosignatures.
    RegisterWitness(RegisterArgs),
    /// Show the witness statement in force for a cluster.
    Trust(GatewayArgs),
    /// Sign a statement that sets which actions need the customer's approval and
    /// who approves (it keeps the witnesses in force), and record it: every agent of
    /// the cluster then refuses those actions without the approvals.
    ApprovalPolicy(ApprovalPolicyArgs),
    /// List the requests for approval on a cluster.
    Requests(RequestsArgs),
    /// Approve one request with an approver's key: signs its log index and digest.
    Approve(DecideArgs),
    /// Deny one request with an approver's key: it will never run.
    Deny(DenyArgs),
    /// Show, set (--url) or remove (--remove) the HTTPS endpoint every request for
    /// approval on the cluster is POSTed to (signed by the gateway's key).
    Webhook(WebhookArgs),
    /// Print a one-time login link to the cluster's console (valid 15 minutes,
    /// used once; the session it opens lasts 12 hours). With --origin and
    /// --log-key, the link also carries the keys the page must pin.
    ConsoleLink(ConsoleLinkArgs),
}

#[derive(Args)]
struct ConsoleLinkArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The log's origin, e.g. palisade.example/clusters/c1.
    #[arg(long, requires = "log_key")]
    origin: Option<String>,
    /// The log's verifier key (`<name>+<hex id>+<base64>`), or `@FILE`.
    #[arg(long, value_name = "VKEY", requires = "origin")]
    log_key: Option<String>,
    /// A witness's verifier key, or `@FILE`. Repeat for several.
    #[arg(long = "witness-key", value_name = "VKEY", requires = "log_key")]
    witness_keys: Vec<String>,
    /// The tenant's public key file (`tenant.pub`): the page then checks every
    /// tenant statement's signature.
    #[arg(long = "tenant-key", value_name = "FILE", requires = "log_key")]
    tenant_key: Option<PathBuf>,
}

/// The keys a console link carries for the page to pin (`&trust=<base64url JSON>`):
/// the log's origin and key, its witnesses (all required), and the tenant's key.
pub fn console_trust(
    origin: &str,
    log_key: &str,
    witnesses: &[String],
    tenant_key: Option<&Path>,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let log_key = verifier_key(log_key, "--log-key")?.to_string();
    let witnesses = witnesses
        .iter()
        .map(|w| verifier_key(w, "--witness-key").map(|k| k.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut trust =
        serde_json::json!({"origin": origin, "log_keys": [log_key], "witnesses": witnesses});
    if let Some(path) = tenant_key {
        let key = palisade_policy::keys::PublicKey::read(path)?;
        let raw = key.raw().context("the tenant's key is not Ed25519")?;
        trust["tenant_key"] = base64::engine::general_purpose::STANDARD.encode(raw).into();
    }
    Ok(format!(
        "&trust={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(trust.to_string())
    ))
}

#[derive(Args)]
struct WebhookArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The endpoint, https only.
    #[arg(long, conflicts_with = "remove")]
    url: Option<String>,
    #[arg(long)]
    remove: bool,
}

#[derive(Args)]
struct ApprovalPolicyArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The tenant's private key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// An approver's public key file (`palisade customer keygen`). Repeat for several.
    #[arg(
        long = "approver",
        value_name = "FILE",
        required_unless_present = "none"
    )]
    approvers: Vec<PathBuf>,
    /// How many distinct approvers must approve. Default: 1.
    #[arg(long, default_value_t = 1)]
    threshold: u32,
    /// A risk class whose actions need approval: read, mutate or disruptive. Repeatable.
    #[arg(long = "risk", value_name = "CLASS")]
    risks: Vec<String>,
    /// An action that needs approval, by name. Repeatable.
    #[arg(long = "action", value_name = "NAME")]
    actions: Vec<String>,
    /// Every action needs approval.
    #[arg(long)]
    all: bool,
    /// How long an approval stays valid (e.g. 8h).
    #[arg(long, value_name = "DURATION", default_value = "8h", value_parser = crate::audit_cmd::parse_age)]
    approval_ttl: u64,
    /// How long a request waits for its approvals (e.g. 24h).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = crate::audit_cmd::parse_age)]
    request_ttl: u64,
    /// Require no approval any more.
    #[arg(long, conflicts_with_all = ["approvers", "risks", "actions", "all"])]
    none: bool,
}

#[derive(Args)]
struct RequestsArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Also list denied and expired requests.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A key inside a PKCS#11 token.
#[derive(Args, Clone)]
struct TokenArgs {
    /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "FILE", requires_all = ["token_label", "pin_file"])]
    pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "pkcs11_module")]
    token_label: Option<String>,
    /// A file holding the token's user PIN.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pin_file: Option<PathBuf>,
}

impl TokenArgs {
    fn key(&self, label: &str) -> Option<palisade_kms::token_signer::TokenKey> {
        Some(palisade_kms::token_signer::TokenKey {
            module: self.pkcs11_module.clone()?,
            token_label: self.token_label.clone()?,
            pin_file: self.pin_file.clone()?,
            label: label.to_string(),
        })
    }
}

#[derive(Args)]
struct DecideArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The request (the operation id `palisade customer requests` lists).
    request: String,
    /// The approver's private key file.
    #[arg(long, value_name = "FILE", required_unless_present = "key_label")]
    key: Option<PathBuf>,
    /// Or the label of the approver's key in a PKCS#11 token (with --pkcs11-module,
    /// --token-label, --pin-file).
    #[arg(
        long,
        value_name = "LABEL",
        conflicts_with = "key",
        requires = "pkcs11_module"
    )]
    key_label: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
}

#[derive(Args)]
struct DenyArgs {
    #[command(flatten)]
    decide: DecideArgs,
    /// Why (recorded in the log, shown to the operator).
    #[arg(long)]
    reason: String,
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
        CustomerCommand::Keygen { out, name, token } => {
            if let Some(key) = token.key(&name) {
                palisade_policy::keys::check_name(&name)?;
                let raw = key.generate().map_err(|e| anyhow::anyhow!("{e}"))?;
                let public = palisade_policy::keys::PublicKey::from_raw(&name, &raw);
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                let path = out.join(format!("{name}.pub"));
                if path.exists() {
                    bail!("{} exists; choose another name", path.display());
                }
                std::fs::write(&path, public.to_json())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!(
                    "private key  {} (generated in the token; it never leaves it)",
                    palisade_kms::token_signer::describe(&key)
                );
                println!(
                    "public key   {} (key id {})",
                    path.display(),
                    public.key_id()
                );
                return Ok(ExitCode::SUCCESS);
            }
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
        CustomerCommand::ApprovalPolicy(a) => {
            crate::lifecycle::runtime()?.block_on(set_approval_policy(a))
        }
        CustomerCommand::Requests(a) => crate::lifecycle::runtime()?.block_on(list_requests(a)),
        CustomerCommand::Approve(a) => {
            crate::lifecycle::runtime()?.block_on(decide(a, Decision::Approve, None))
        }
        CustomerCommand::Deny(a) => {
            crate::lifecycle::runtime()?.block_on(decide(a.decide, Decision::Deny, Some(a.reason)))
        }
        CustomerCommand::Webhook(a) => crate::lifecycle::runtime()?.block_on(webhook(a)),
        CustomerCommand::ConsoleLink(a) => crate::lifecycle::runtime()?.block_on(async {
            let fragment = match (&a.origin, &a.log_key) {
                (Some(origin), Some(log_key)) => {
                    console_trust(origin, log_key, &a.witness_keys, a.tenant_key.as_deref())?
                }
                _ => String::new(),
            };
            println!("{}", console_link(&a.gateway, &fragment).await?);
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

/// A call to the tenant's part of the gateway API, `…/v1/tenants/T/clusters/C/{route}`,
/// with the reader token; the status and the JSON answer (`null` if none).
async fn tenant_api(
    g: &GatewayArgs,
    route: &str,
    method: reqwest::Method,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(u16, Value)> {
    let http = crate::op_cmd::client(g.ca.as_deref())?;
    let token = secret_arg(&g.token)?;
    let url = format!(
        "{}/v1/tenants/{}/clusters/{}/{route}",
        g.gateway.trim_end_matches('/'),
        g.tenant,
        g.cluster
    );
    let mut req = http.request(method, &url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// The statement in force (`GET …/trust`), or a new one recorded (`PUT`).
async fn call(g: &GatewayArgs, put: Option<&Envelope>) -> anyhow::Result<(u16, Value)> {
    match put {
        Some(env) => {
            tenant_api(
                g,
                "trust",
                reqwest::Method::PUT,
                Some(serde_json::to_vec(env)?),
            )
            .await
        }
        None => tenant_api(g, "trust", reqwest::Method::GET, None).await,
    }
}

/// The requests for approval (`GET …/approvals`), or a decision logged (`POST`).
async fn approvals_call(g: &GatewayArgs, post: Option<&Envelope>) -> anyhow::Result<(u16, Value)> {
    match post {
        Some(env) => {
            tenant_api(
                g,
                "approvals",
                reqwest::Method::POST,
                Some(serde_json::to_vec(env)?),
            )
            .await
        }
        None => tenant_api(g, "approvals", reqwest::Method::GET, None).await,
    }
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
    let in_force = in_force(g, Some(key.public())).await?;
    let seq = match (seq, &in_force) {
        (Some(s), _) => s,
        (None, None) => 1,
        (None, Some(t)) => next_seq(t.seq)?,
    };
    // A new witness list keeps the approval policy in force.
    let approval = in_force.and_then(|t| t.approval);
    let trust = TenantTrust {
        schema: TENANT_TRUST_SCHEMA.into(),
        tenant: g.tenant.clone(),
        cluster: g.cluster.clone(),
        seq,
        issued_at: Timestamp::now(),
        quorum: quorum.unwrap_or(u32::try_from(witnesses.len()).unwrap_or(u32::MAX)),
        witnesses,
        approval,
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

/// A one-time login link to `g`'s cluster console, with `fragment` (e.g. the log's
/// keys, `&trust=…`) after the code.
async fn console_link(g: &GatewayArgs, fragment: &str) -> anyhow::Result<String> {
    let (status, body) = tenant_api(g, "console-link", reqwest::Method::POST, None).await?;
    if status != 201 {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    // The link is built here from the code alone: nothing else the gateway says
    // goes into it (another host, keys to pin).
    let code = body["code"]
        .as_str()
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .context("the gateway sent no login code")?;
    Ok(format!(
        "{}/console/#code={code}&tenant={}&cluster={}{fragment}",
        g.gateway.trim_end_matches('/'),
        g.tenant,
        g.cluster
    ))
}

/// The demo tenant's one-time console link (for `palisade up`).
pub async fn demo_console_link(
    gateway: &str,
    ca: &Path,
    token: &str,
    fragment: &str,
) -> anyhow::Result<String> {
    let g = GatewayArgs {
        gateway: gateway.to_string(),
        ca: Some(ca.to_path_buf()),
        token: token.to_string(),
        tenant: TenantId::parse("demo").map_err(|e| anyhow::anyhow!("{e}"))?,
        cluster: ClusterId::parse("demo").map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    console_link(&g, fragment).await
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

/// The statement in force for the cluster, as the gateway holds it (`None`: none).
/// With `tenant_key`, it must be signed by that key and be for this tenant and
/// cluster: a new statement built on it is signed by the tenant, so nothing the
/// gateway makes up (a dropped approval policy, a witness of its own) may slip in.
async fn in_force(
    g: &GatewayArgs,
    tenant_key: Option<&palisade_policy::keys::PublicKey>,
) -> anyhow::Result<Option<TenantTrust>> {
    let (status, body) = call(g, None).await?;
    match status {
        404 => Ok(None),
        200 => {
            let env: Envelope = serde_json::from_value(body["statement"].clone())
                .context("the gateway's answer holds no statement")?;
            let trust = match tenant_key {
                None => TenantTrust::decode(&env).map_err(anyhow::Error::msg)?.0,
                Some(key) => {
                    let opened = TenantTrust::open(&env, key).map_err(|e| {
                        anyhow::anyhow!(
                            "the statement the gateway says is in force does not open with your key ({e}): \
                             refusing to build a new one on it; compare it with the newest statement in your log"
                        )
                    })?;
                    if opened.trust.tenant != g.tenant || opened.trust.cluster != g.cluster {
                        bail!(
                            "the statement the gateway says is in force is for {}/{}, not {}/{}",
                            opened.trust.tenant,
                            opened.trust.cluster,
                            g.tenant,
                            g.cluster
                        );
                    }
                    opened.trust
                }
            };
            Ok(Some(trust))
        }
        s => bail!("the gateway answered {s}: {}", detail(&body)),
    }
}

/// The next `seq` after `current`.
fn next_seq(current: u64) -> anyhow::Result<u64> {
    current
        .checked_add(1)
        .context("the statement in force has the highest seq there is")
}

async fn set_approval_policy(a: ApprovalPolicyArgs) -> anyhow::Result<ExitCode> {
    use palisade_policy::customer_approval::{ApprovalPolicy, Approver};
    let key = SigningKey::read(&a.key)?;
    let Some(current) = in_force(&a.gateway, Some(key.public())).await? else {
        bail!(
            "cluster {} has no statement in force: register your witness first (`palisade customer register-witness`)",
            a.gateway.cluster
        );
    };
    let approval = if a.none {
        None
    } else {
        let mut risks = Vec::new();
        for r in &a.risks {
            risks.push(
                serde_json::from_value(Value::String(r.clone())).map_err(|_| {
                    anyhow::anyhow!("--risk {r:?}: one of read, mutate, disruptive")
                })?,
            );
        }
        let approvers = a
            .approvers
            .iter()
            .map(|p| {
                let k = palisade_policy::keys::PublicKey::read(p)?;
                Approver::of(&k).map_err(anyhow::Error::msg)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let policy = ApprovalPolicy {
            all: a.all,
            risks,
            actions: a.actions.clone(),
            approvers,
            threshold: a.threshold,
            approval_ttl_secs: a.approval_ttl,
            request_ttl_secs: a.request_ttl,
        };
        policy.approver_keys().map_err(anyhow::Error::msg)?;
        Some(policy)
    };
    let trust = TenantTrust {
        seq: next_seq(current.seq)?,
        issued_at: Timestamp::now(),
        approval,
        ..current
    };
    let statement = trust.sign(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (status, body) = call(&a.gateway, Some(&statement)).await?;
    if status != 201 {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    print_trust(&body);
    match &trust.approval {
        None => println!("approval   none required"),
        Some(p) => println!(
            "approval   {} of {} approvers for {}",
            p.threshold,
            p.approvers.len(),
            describe_scope(p)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_scope(p: &palisade_policy::customer_approval::ApprovalPolicy) -> String {
    if p.all {
        return "every action".into();
    }
    let mut parts: Vec<String> = p
        .risks
        .iter()
        .map(|r| format!("{} actions", r.as_str()))
        .collect();
    parts.extend(p.actions.iter().cloned());
    parts.join(", ")
}

async fn list_requests(a: RequestsArgs) -> anyhow::Result<ExitCode> {
    let (status, body) = approvals_call(&a.gateway, None).await?;
    if status != 200 {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    let rows: Vec<&Value> = body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| a.all || r["state"] == "pending")
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no request awaits approval on {}", a.gateway.cluster);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<34} {:<8} {:<20} {:<10} {:<20} {:<10} {:<9} EXPIRES",
        "REQUEST", "STATE", "ACTION", "INSTANCE", "OPERATOR", "TICKET", "APPROVED"
    );
    let mut invalid = 0;
    for r in rows {
        let id = r["id"].as_str().unwrap_or_default();
        // What is shown comes from the request's log entry (what an approval signs),
        // never from the gateway's summary of it.
        let Some(req) = request_of(r) else {
            invalid += 1;
            println!(
                "{id:<34} INVALID  the gateway's entry is not this request (do not approve it)"
            );
            continue;
        };
        println!(
            "{:<34} {:<8} {:<20} {:<10} {:<20} {:<10} {:<9} {}",
            id,
            r["state"].as_str().unwrap_or_default(),
            req.action.as_str(),
            req.instance.as_ref().map_or("-".into(), |i| i.to_string()),
            req.actor.id.to_string(),
            palisade_core::sanitize::escape(&req.justification.ticket, 10),
            format!(
                "{}/{}",
                r["approved_by"].as_array().map_or(0, Vec::len),
                r["threshold"]
            ),
            req.expires_at
        );
    }
    if invalid > 0 {
        bail!("{invalid} request(s) listed by the gateway do not match their log entries");
    }
    Ok(ExitCode::SUCCESS)
}

/// The request a listed row stands for, decoded from its log entry; `None` unless
/// the entry is an approval request with the row's id and digest.
fn request_of(row: &Value) -> Option<palisade_core::event::ApprovalRequestEvent> {
    use base64::Engine as _;
    let entry = base64::engine::general_purpose::STANDARD
        .decode(row["entry"].as_str()?)
        .ok()?;
    let digest = palisade_core::Sha256Digest::of(&entry);
    match palisade_core::event::Event::from_log_entry(&entry).ok()? {
        palisade_core::event::Event::ApprovalRequest(req)
            if req.event_id.as_str() == row["id"].as_str()?
                && row["digest"].as_str() == Some(digest.to_string().as_str()) =>
        {
            Some(*req)
        }
        _ => None,
    }
}

/// Signs a decision on one request, after reading the request from its log entry
/// (never from the gateway's summary of it), and has the gateway log it.
async fn decide(
    a: DecideArgs,
    decision: Decision,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    use base64::Engine as _;
    use palisade_core::event::Event;
    use palisade_policy::customer_approval::{CustomerApproval, APPROVAL_SCHEMA};
    let signer = match (&a.key, &a.key_label) {
        (Some(path), _) => Signer::File(SigningKey::read(path)?),
        (None, Some(label)) => {
            let key = a
                .token
                .key(label)
                .context("--key-label needs --pkcs11-module, --token-label and --pin-file")?;
            let token = key.open().map_err(|e| anyhow::anyhow!("{e}"))?;
            let public = palisade_policy::keys::PublicKey::from_raw(label, &token.public());
            Signer::Token(token, public)
        }
        (None, None) => bail!("give the approver's key: --key FILE or --key-label LABEL"),
    };
    let (status, body) = approvals_call(&a.gateway, None).await?;
    if status != 200 {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    let Some(row) = body
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"].as_str() == Some(a.request.as_str()))
    else {
        bail!("no request {} on {}", a.request, a.gateway.cluster);
    };
    let entry = base64::engine::general_purpose::STANDARD
        .decode(row["entry"].as_str().unwrap_or_default())
        .context("the request's log entry is not base64")?;
    let digest = palisade_core::Sha256Digest::of(&entry);
    let Ok(Event::ApprovalRequest(req)) = Event::from_log_entry(&entry) else {
        bail!(
            "the gateway's entry for {} is not an approval request",
            a.request
        );
    };
    if req.event_id.as_str() != a.request || req.cluster != a.gateway.cluster {
        bail!("the gateway's entry is for another request or cluster");
    }
    let index = row["index"].as_u64().context("no log index")?;
    let ttl = in_force(&a.gateway, None)
        .await?
        .and_then(|t| t.approval)
        .map(|p| p.approval_ttl_secs)
        .context("the statement in force requires no approval")?;
    println!("request    {} (log index {index}, {digest})", req.event_id);
    println!(
        "action     {} {} on {}",
        req.action,
        serde_json::to_string(&req.parameters)?,
        req.instance.as_ref().map_or("-".into(), |i| i.to_string())
    );
    println!(
        "by         {} ({}: {})",
        req.actor.id,
        palisade_core::sanitize::escape(&req.justification.ticket, 64),
        palisade_core::sanitize::escape(&req.justification.reason, 200)
    );
    println!("expires    {}", req.expires_at);
    let now = Timestamp::now();
    let approval = CustomerApproval {
        schema: APPROVAL_SCHEMA.into(),
        tenant: req.tenant.clone(),
        cluster: req.cluster.clone(),
        request: req.event_id.clone(),
        request_index: index,
        request_digest: digest,
        decision,
        issued_at: now,
        expires_at: Timestamp::from_unix_seconds(
            now.unix_seconds() + i64::try_from(ttl).unwrap_or(i64::MAX),
        ),
        reason,
    };
    let env = match &signer {
        Signer::File(key) => approval.sign(key),
        Signer::Token(token, public) => approval.sign_external(public, |m| token.sign(m)),
    }
    .map_err(anyhow::Error::msg)?;
    let (status, body) = approvals_call(&a.gateway, Some(&env)).await?;
    if status != 201 {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    println!(
        "{}    logged at index {}; the request is {}",
        decision.as_str(),
        body["index"],
        body["state"].as_str().unwrap_or_default()
    );
    if let Some(op) = body.get("operation") {
        println!(
            "operation  {} {}",
            op["id"].as_str().unwrap_or_default(),
            op["status"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An approver's key: a file, or a key inside a PKCS#11 token.
enum Signer {
    File(SigningKey),
    Token(
        palisade_kms::token_signer::TokenSigner,
        palisade_policy::keys::PublicKey,
    ),
}

async fn webhook(a: WebhookArgs) -> anyhow::Result<ExitCode> {
    let (status, body) = match (&a.url, a.remove) {
        (Some(u), _) => {
            let b = serde_json::to_vec(&serde_json::json!({ "url": u }))?;
            tenant_api(&a.gateway, "webhook", reqwest::Method::PUT, Some(b)).await?
        }
        (None, true) => tenant_api(&a.gateway, "webhook", reqwest::Method::DELETE, None).await?,
        (None, false) => tenant_api(&a.gateway, "webhook", reqwest::Method::GET, None).await?,
    };
    if !(200..300).contains(&status) {
        bail!("the gateway answered {status}: {}", detail(&body));
    }
    match body["url"].as_str() {
        Some(u) => println!(
            "webhook    {u} (since {})",
            body["registered_at"].as_str().unwrap_or("?")
        ),
        None => println!("webhook    none"),
    }
    Ok(ExitCode::SUCCESS)
}
