//! `palisade op`: the operator's command line for the gateway.
//!
//! Credentials (gateway URL, CA, token) are kept in a file, found in this order:
//! `--credentials`, `$PALISADE_OP_CREDENTIALS`, `./.palisade/op/credentials.json`
//! (what `palisade up` writes), `$XDG_CONFIG_HOME/palisade/credentials.json` or
//! `~/.config/palisade/credentials.json`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct OpArgs {
    /// The credentials file (see `palisade op login`).
    #[arg(long, global = true)]
    credentials: Option<PathBuf>,
    #[command(subcommand)]
    command: OpCommand,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum OpCommand {
    /// Log in and store the token: with the development issuer of `palisade up`
    /// (`--dev NAME`), or with a token your identity provider issued (`--token-file`).
    Login {
        /// Development login as NAME (only works when the gateway enables it).
        #[arg(long, value_name = "NAME", conflicts_with = "token_file")]
        dev: Option<String>,
        /// A file holding an OIDC token for the gateway's audience.
        #[arg(long, conflicts_with = "cert")]
        token_file: Option<PathBuf>,
        /// A client certificate (from the gateway's operator_ca) to authenticate
        /// with instead of a token, e.g. the scheduler's; with --key.
        #[arg(long, requires = "key", conflicts_with = "dev")]
        cert: Option<PathBuf>,
        /// The certificate's private key.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// The gateway, e.g. https://127.0.0.1:7400 (default: the stored one).
        #[arg(long)]
        gateway: Option<String>,
        /// The CA certificate the gateway's certificate chains to.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Who you are, your current on-call grants and when each ends.
    Whoami {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The approved actions on a cluster, and which you may run now.
    Actions {
        #[arg(long)]
        cluster: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run an approved action (logged before it is dispatched).
    Run {
        action: String,
        #[arg(long)]
        cluster: String,
        /// Required for instance actions.
        #[arg(long)]
        instance: Option<String>,
        /// A parameter, `name=value` (repeatable); typed by the policy.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// The ticket this work is for, e.g. INC-1234.
        #[arg(long)]
        ticket: String,
        /// Why, in words.
        #[arg(long)]
        reason: String,
        /// Makes a retried request run at most once.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// How long to follow the operation, in seconds, before printing what is
        /// known so far (it goes on; `palisade op show <id>` follows it).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
        /// When the customer's approval is needed, wait for it (and the result) for
        /// up to --wait-secs, instead of returning once the request is logged.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Your recent operations.
    Ops {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// One operation (waits for it while it runs).
    Show {
        id: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    gateway: String,
    ca: Option<PathBuf>,
    /// A bearer token; empty when a client certificate authenticates.
    #[serde(default)]
    token: String,
    #[serde(default)]
    expires_at: Option<String>,
    /// A client certificate and its key, instead of a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
}

fn credentials_path(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(p) = std::env::var_os("PALISADE_OP_CREDENTIALS") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(".palisade/op/credentials.json");
    if local.exists() {
        return local;
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("palisade/credentials.json")
}

fn read_credentials(path: &Path) -> anyhow::Result<Credentials> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no credentials at {}: run `palisade op login` first (after `palisade up`: `palisade op login --dev $USER`)",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a credentials file", path.display()))
}

fn write_credentials(path: &Path, c: &Credentials) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(c)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(crate) fn client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let provider = palisade_pki::crypto_provider();
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(330))
        .https_only(true);
    let builder = match ca {
        Some(ca) => {
            let roots = palisade_pki::load_roots(ca).map_err(|e| anyhow::anyhow!("{e}"))?;
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.tls_backend_preconfigured(tls)
        }
        None => {
            palisade_pki::install_default_provider();
            builder
        }
    };
    builder.build().context("cannot build the HTTPS client")
}

struct Api {
    creds: Credentials,
    http: reqwest::Client,
}

/// A problem document's text, with a hint of what to do next.
fn explain(status: reqwest::StatusCode, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let detail = v["detail"].as_str().unwrap_or(body).to_string();
    let title = v["title"].as_str().unwrap_or("error");
    let hint = match status.as_u16() {
        401 => "\nnext: log in again (`palisade op login --dev <name>` on a `palisade up` stack)",
        403 if detail.contains("not on call") => "\nnext: ask whoever is on call, or wait for your shift",
        422 => "\nnext: check the action's parameters with `palisade op actions --cluster <c>`; tickets look like INC-1234",
        429 => "\nnext: wait for the rate-limit window to pass",
        503 => "\nnext: nothing was done; try again once the log is back",
        _ => "",
    };
    let logged = v["log_index"]
        .as_u64()
        .map(|i| format!(" (recorded in the cluster's log at index {i})"))
        .unwrap_or_default();
    format!("{title}: {detail}{logged}{hint}")
}

/// A client that authenticates with a certificate (and trusts `ca` for the gateway).
fn client_with_certificate(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<reqwest::Client> {
    let tls = palisade_pki::client_config(ca, cert, key, &[palisade_pki::Role::Gateway])
        .map_err(|e| anyhow::anyhow!("client certificate {}: {e}", cert.display()))?;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(330))
        .https_only(true)
        .tls_backend_preconfigured(tls)
        .build()
        .context("cannot build the HTTPS client")
}

impl Api {
    fn new(creds: Credentials) -> anyhow::Result<Self> {
        let http = match (&creds.cert, &creds.key) {
            (Some(cert), Some(key)) => {
                let ca = creds
                    .ca
                    .as_deref()
                    .context("a certificate login needs the gateway's CA (--ca)")?;
                client_with_certificate(ca, cert, key)?
            }
            _ => client(creds.ca.as_deref())?,
        };
        Ok(Self { creds, http })
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let req = if self.creds.token.is_empty() {
            req
        } else {
            req.bearer_auth(&self.creds.token)
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.creds.gateway))?;
        let status = resp.status();
        let body = resp.text().await.context("reading the gateway's answer")?;
        if status.is_client_error() || status.is_server_error() {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                if v.get("status").is_some() && v.get("id").is_some() {
                    return Ok((status, v));
                }
            }
            bail!("{}", explain(status, &body));
        }
        Ok((
            status,
            serde_json::from_str(&body).context("the gateway's answer is not JSON")?,
        ))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.creds.gateway.trim_end_matches('/'))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(args: OpArgs) -> anyhow::Result<ExitCode> {
    let path = credentials_path(args.credentials);
    let rt = runtime()?;
    rt.block_on(async move {
        match args.command {
            OpCommand::Login { dev, token_file, cert, key, gateway, ca } => {
                login(&path, dev, token_file, cert.zip(key), gateway, ca).await
            }
            OpCommand::Whoami { output } => {
                let api = Api::new(read_credentials(&path)?)?;
                let (_, v) = api.call(api.http.get(api.url("/v1/whoami"))).await?;
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_whoami(&v);
                }
                Ok(ExitCode::SUCCESS)
            }
            OpCommand::Actions { cluster, output } => {
                let api = Api::new(read_credentials(&path)?)?;
                let (_, v) = api
                    .call(api.http.get(api.url(&format!("/v1/clusters/{cluster}/actions"))))
                    .await?;
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_actions(&v);
                }
                Ok(ExitCode::SUCCESS)
            }
            OpCommand::Run { action, cluster, instance, params, ticket, reason, idempotency_key, wait_secs, wait, output } => {
                let api = Api::new(read_credentials(&path)?)?;
                let mut arguments = BTreeMap::new();
                for p in &params {
                    let (k, v) = p
                        .split_once('=')
                        .with_context(|| format!("--param {p:?} is not NAME=VALUE"))?;
                    if arguments.insert(k.to_string(), v.to_string()).is_some() {
                        bail!("--param {k} is given twice");
                    }
                }
                let body = serde_json::json!({
                    "instance": instance, "arguments": arguments, "ticket": ticket, "reason": reason,
                });
                let mut req = api
                    .http
                    .post(api.url(&format!("/v1/clusters/{cluster}/actions/{action}")))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&body)?);
                if let Some(k) = &idempotency_key {
                    req = req.header("Idempotency-Key", k);
                }
                let spinner = spinner(&format!("{action} on {cluster}: logging, dispatching, waiting for the agent"), output);
                let deadline = std::time::Instant::now() + Duration::from_secs(wait_secs);
                let mut result = api.call(req).await;
                // Still running after the gateway's wait: poll the operation, until the
                // deadline. A poll that fails (the gateway restarting) is tried again.
                let mut last = None;
                loop {
                    let id = match &result {
                        Ok((s, v)) if s.as_u16() == 202 && v["status"] == "awaiting_approval" && !wait => {
                            if let Some(s) = &spinner {
                                s.finish_and_clear();
                            }
                            print_operation(v, output)?;
                            let id = v["id"].as_str().unwrap_or_default();
                            eprintln!(
                                "awaiting customer approval until {}: nothing runs until the customer approves; follow it with `palisade op show {id}` (or run with --wait)",
                                v["approval"]["expires_at"].as_str().unwrap_or("the request expires")
                            );
                            return Ok(ExitCode::from(3));
                        }
                        Ok((s, v)) if s.as_u16() == 202 => {
                            last = Some(v.clone());
                            v["id"].as_str().unwrap_or_default().to_string()
                        }
                        Err(_) if last.is_some() => last
                            .as_ref()
                            .and_then(|v: &Value| v["id"].as_str())
                            .unwrap_or_default()
                            .to_string(),
                        _ => break,
                    };
                    if std::time::Instant::now() >= deadline {
                        if let Some(s) = &spinner {
                            s.finish_and_clear();
                        }
                        let v = last.unwrap_or(Value::Null);
                        print_operation(&v, output)?;
                        eprintln!(
                            "still running after {wait_secs} s: follow it with `palisade op show {id}`"
                        );
                        return Ok(ExitCode::from(3));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    result = api.call(api.http.get(api.url(&format!("/v1/operations/{id}")))).await;
                }
                if let Some(s) = spinner {
                    s.finish_and_clear();
                }
                let (_, v) = result?;
                print_operation(&v, output)
            }
            OpCommand::Ops { limit, output } => {
                let api = Api::new(read_credentials(&path)?)?;
                let (_, v) = api
                    .call(api.http.get(api.url(&format!("/v1/operations?limit={limit}"))))
                    .await?;
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("{:<34} {:<20} {:<10} {:<10} CREATED", "OPERATION", "ACTION", "CLUSTER", "STATUS");
                    for o in v.as_array().into_iter().flatten() {
                        println!(
                            "{:<34} {:<20} {:<10} {:<10} {}",
                            o["id"].as_str().unwrap_or(""),
                            o["action"].as_str().unwrap_or(""),
                            o["cluster"].as_str().unwrap_or(""),
                            o["status"].as_str().unwrap_or(""),
                            o["created_at"].as_str().unwrap_or("")
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            OpCommand::Show { id, output } => {
                let api = Api::new(read_credentials(&path)?)?;
                let (_, v) = api.call(api.http.get(api.url(&format!("/v1/operations/{id}")))).await?;
                print_operation(&v, output)
            }
        }
    })
}

fn spinner(msg: &str, output: Output) -> Option<indicatif::ProgressBar> {
    if output == Output::Json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let s = indicatif::ProgressBar::new_spinner();
    s.set_message(msg.to_string());
    s.enable_steady_tick(Duration::from_millis(100));
    Some(s)
}

async fn login(
    path: &Path,
    dev: Option<String>,
    token_file: Option<PathBuf>,
    certificate: Option<(PathBuf, PathBuf)>,
    gateway: Option<String>,
    ca: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let previous = read_credentials(path).ok();
    let gateway = gateway
        .or_else(|| previous.as_ref().map(|c| c.gateway.clone()))
        .context("--gateway is needed (e.g. https://127.0.0.1:7400)")?;
    let ca = ca.or_else(|| previous.as_ref().and_then(|c| c.ca.clone()));
    let ca = match ca {
        Some(p) => {
            Some(std::fs::canonicalize(&p).with_context(|| format!("--ca {}", p.display()))?)
        }
        None => None,
    };
    if let Some((cert, key)) = certificate {
        let ca = ca.context("a certificate login needs the gateway's CA (--ca)")?;
        let absolute =
            |p: &Path| std::fs::canonicalize(p).with_context(|| format!("{}", p.display()));
        let creds = Credentials {
            gateway,
            ca: Some(ca),
            token: String::new(),
            expires_at: None,
            cert: Some(absolute(&cert)?),
            key: Some(absolute(&key)?),
        };
        // Ask who the gateway takes this certificate for before keeping it.
        let api = Api::new(creds)?;
        let (_, me) = api.call(api.http.get(api.url("/v1/whoami"))).await?;
        write_credentials(path, &api.creds)?;
        println!(
            "logged in as {} with certificate {}; credentials in {}",
            me["operator"].as_str().unwrap_or("?"),
            cert.display(),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (token, expires_at) = match (dev, token_file) {
        (Some(name), None) => {
            let http = client(ca.as_deref())?;
            let resp = http
                .post(format!("{}/v1/dev/login", gateway.trim_end_matches('/')))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&serde_json::json!({ "operator": name }))?)
                .send()
                .await
                .with_context(|| format!("cannot reach the gateway at {gateway}"))?;
            let status = resp.status();
            let body = resp.text().await?;
            if !status.is_success() {
                bail!("{}", explain(status, &body));
            }
            let v: Value = serde_json::from_str(&body)?;
            (
                v["token"].as_str().context("no token in the answer")?.to_string(),
                v["expires_at"].as_str().map(str::to_string),
            )
        }
        (None, Some(f)) => (
            std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim()
                .to_string(),
            None,
        ),
        _ => bail!("use --dev NAME (development issuer) or --token-file FILE (your identity provider's token)"),
    };
    write_credentials(
        path,
        &Credentials {
            gateway,
            ca,
            token,
            expires_at: expires_at.clone(),
            cert: None,
            key: None,
        },
    )?;
    println!(
        "logged in; credentials in {}{}",
        path.display(),
        expires_at
            .map(|e| format!(" (valid until {e})"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_whoami(v: &Value) {
    println!(
        "operator:  {} (via {})",
        v["operator"].as_str().unwrap_or(""),
        v["via"].as_str().unwrap_or("")
    );
    if let Some(map) = v["pseudonyms"].as_object() {
        for (tenant, pseudonym) in map {
            println!(
                "pseudonym: {} (what tenant {tenant} sees)",
                pseudonym.as_str().unwrap_or("")
            );
        }
    }
    let grants = v["grants"].as_array().cloned().unwrap_or_default();
    if grants.is_empty() {
        println!("grants:    none: you are not on call now");
    } else {
        println!("grants:");
        for g in grants {
            println!(
                "  {:<12} roles {:<30} clusters {:<20} until {}",
                g["schedule"].as_str().unwrap_or(""),
                join(&g["roles"]),
                join(&g["clusters"]),
                g["ends_at"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(n) = v.get("next_shift") {
        println!(
            "next shift: {} starts {}",
            n["schedule"].as_str().unwrap_or(""),
            n["starts_at"].as_str().unwrap_or("")
        );
    }
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn print_actions(v: &Value) {
    println!(
        "{:<22} {:<9} {:<11} {:<16} {:<5} PARAMETERS",
        "ACTION", "TARGET", "RISK", "ROLE", "NOW"
    );
    for a in v.as_array().into_iter().flatten() {
        println!(
            "{:<22} {:<9} {:<11} {:<16} {:<5} {}",
            a["name"].as_str().unwrap_or(""),
            a["target"].as_str().unwrap_or(""),
            a["risk"].as_str().unwrap_or(""),
            a["role"].as_str().unwrap_or(""),
            if a["allowed_now"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            join(&a["params"])
        );
    }
}

fn print_operation(v: &Value, output: Output) -> anyhow::Result<ExitCode> {
    let status = v["status"].as_str().unwrap_or("");
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!("operation  {}", v["id"].as_str().unwrap_or(""));
        println!(
            "action     {} on {}/{}",
            v["action"].as_str().unwrap_or(""),
            v["cluster"].as_str().unwrap_or(""),
            v["instance"].as_str().unwrap_or("")
        );
        match v["outcome"].as_str() {
            Some(o) => println!("status     {status} ({o})"),
            None => println!("status     {status}"),
        }
        if let Some(i) = v["intent_index"].as_u64() {
            println!(
                "logged     intent at index {i}{}",
                v["result_index"]
                    .as_u64()
                    .map(|r| format!(", result at index {r}"))
                    .unwrap_or_default()
            );
        }
        if let Some(a) = v.get("approval").filter(|a| !a.is_null()) {
            let by: Vec<&str> = a["approved_by"]
                .as_array()
                .map(|x| x.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "approval   request at index {}, until {}; {} of {} approvals{}{}",
                a["request_index"],
                a["expires_at"].as_str().unwrap_or("?"),
                by.len(),
                a["threshold"],
                if by.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", by.join(", "))
                },
                a["denied_by"]
                    .as_str()
                    .map(|d| format!("; denied by {d}"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = v["error"].as_str() {
            println!("error      {e}");
        }
        if let Some(out) = v.get("output").filter(|o| !o.is_null()) {
            println!("output");
            print_value(out, 1);
        }
    }
    Ok(if status == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_value(v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                match val {
                    Value::Object(_) | Value::Array(_) => {
                        println!("{pad}{k}:");
                        print_value(val, depth + 1);
                    }
                    _ => println!("{pad}{k}: {}", scalar(val)),
                }
            }
        }
        Value::Array(a) if a.is_empty() => println!("{pad}(none)"),
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        println!("{pad}- [{i}]");
                        print_value(item, depth + 1);
                    }
                    _ => println!("{pad}- {}", scalar(item)),
                }
            }
        }
        other => println!("{pad}{}", scalar(other)),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
