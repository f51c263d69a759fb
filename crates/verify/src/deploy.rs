//! A complete single-machine deployment for a local run: `palisade up` in a
//! temporary directory (witness, log, agent supervising a real etcd from an approved
//! release, gateway), a recording stand-in for kube-apiserver wired into the agent,
//! and the KMS plugin on a fresh SoftHSM2 token.

use crate::ctx::{Ctx, GatewayClient, Local};
use crate::kube_stub::KubeStub;
use crate::LocalOptions;
use anyhow::{anyhow, bail, Context as _};
use palisade_agent::client::Dispatcher;
use palisade_core::time::Timestamp;
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const HSM_TOKEN: &str = "palisade-verify";
pub const KEK_LABEL: &str = "customer-kek";
/// The on-call operator of the rota written for the run.
pub const OPERATOR: &str = "verify-oncall";
/// Operators whose override shift ended an hour ago, or starts in an hour.
pub const SHIFT_ENDED: &str = "verify-shift-ended";
pub const SHIFT_LATER: &str = "verify-shift-later";

/// The KMS plugin process and how to reach its key.
pub struct KmsPlugin {
    pub socket: String,
    pub key_id: String,
    pub softhsm_conf: PathBuf,
    pub pin_file: PathBuf,
    pub pin: String,
}

/// Stops what [`start`] started.
pub struct Guard {
    up: Option<Child>,
    kms: Option<Child>,
    tmp: Option<tempfile::TempDir>,
    keep: bool,
}

impl Guard {
    pub async fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(mut up) = self.up.take() {
            stop_child(&mut up, Duration::from_secs(20));
        }
        if let Some(mut kms) = self.kms.take() {
            let _ = kms.kill();
            let _ = kms.wait();
        }
        if self.keep {
            if let Some(t) = self.tmp.take() {
                let kept = t.keep();
                eprintln!("verify-claims: deployment kept in {}", kept.display());
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// SIGTERM (so `up` stops its children cleanly), then SIGKILL after `grace`.
fn stop_child(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn require_tool(tool: &str, install: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("`{tool}` is not installed: {install}");
    }
    Ok(())
}

/// Consecutive free loopback ports for `palisade up --instances n`.
fn free_port_block(instances: u16) -> anyhow::Result<u16> {
    let n = palisade_core::ports::up_ports(instances);
    palisade_core::ports::free_loopback_block(n)
        .ok_or_else(|| anyhow!("no block of {n} free loopback ports found; pass --base-port"))
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::getrandom(&mut raw).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(raw))
}

/// The rota of the run: one operator always on call, and two override shifts that
/// do not cover now (one ended an hour ago, one starts in an hour).
fn write_rota(dir: &Path) -> anyhow::Result<()> {
    let now = Timestamp::now().unix_seconds();
    let t = |s: i64| Timestamp::from_unix_seconds(s).to_string();
    std::fs::create_dir_all(dir.join("gateway"))?;
    std::fs::write(
        dir.join("gateway/rota.yaml"),
        format!(
            "# Written by palisade verify-claims.\napiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: demo\n    timeZone: UTC\n    \
             rotation: always\n    participants: [\"{OPERATOR}\"]\n    overrides:\n      - operator: {SHIFT_ENDED}\n        start: {}\n        end: {}\n      \
             - operator: {SHIFT_LATER}\n        start: {}\n        end: {}\n",
            t(now - 7200),
            t(now - 3600),
            t(now + 3600),
            t(now + 7200),
        ),
    )?;
    Ok(())
}

/// `palisade up` as a child, its output collected.
fn spawn_up(
    exe: &Path,
    dir: &Path,
    base: u16,
    instances: u16,
    lines: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<Child> {
    let mut child = Command::new(exe)
        .args(["up", "--dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .args(["--instances", &instances.to_string()])
        // The scenarios of the other claims run disruptive actions as operators
        // would without a customer's approval policy; approvals have their own.
        .arg("--no-customer-approval")
        .env("RUST_LOG", "warn,palisade_agent=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} up", exe.display()))?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
    }
    Ok(child)
}

async fn wait_ready(
    child: &mut Child,
    lines: &Arc<Mutex<Vec<String>>>,
    from: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = lines
            .lock()
            .map(|l| l.iter().skip(from).any(|x| x.trim() == "ready"))
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = lines
                .lock()
                .map(|l| {
                    l.iter()
                        .rev()
                        .take(20)
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            bail!("palisade up exited ({status}) before it was ready:\n{tail}");
        }
        if Instant::now() > deadline {
            bail!("palisade up was not ready within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Initialises a SoftHSM2 token, generates the KEK with `palisade kms keygen` and
/// starts `palisade kms serve` on a Unix socket.
async fn start_kms(exe: &Path, root: &Path) -> anyhow::Result<(KmsPlugin, Child)> {
    let install = "apt-get install softhsm2";
    require_tool("softhsm2-util", install)?;
    if !Path::new(SOFTHSM_MODULE).exists() {
        bail!("{SOFTHSM_MODULE} is missing: {install}");
    }
    let hsm = root.join("softhsm");
    let tokens = hsm.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = hsm.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let pin = random_hex(8)?;
    let so_pin = random_hex(8)?;
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            HSM_TOKEN,
            "--pin",
            &pin,
            "--so-pin",
            &so_pin,
        ])
        .output()
        .context("cannot run softhsm2-util")?;
    if !out.status.success() {
        bail!(
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pin_file = hsm.join("pin");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pin_file)?;
        f.write_all(pin.as_bytes())?;
    }
    let key_args = |cmd: &mut Command| {
        cmd.env("SOFTHSM2_CONF", &conf).args([
            "--backend",
            "pkcs11",
            "--pkcs11-module",
            SOFTHSM_MODULE,
            "--pkcs11-token",
            HSM_TOKEN,
            "--pkcs11-pin-file",
            &pin_file.display().to_string(),
            "--key-label",
            KEK_LABEL,
        ]);
    };
    let mut keygen = Command::new(exe);
    keygen.args(["kms", "keygen"]);
    key_args(&mut keygen);
    let out = keygen.output().context("cannot run palisade kms keygen")?;
    if !out.status.success() {
        bail!(
            "palisade kms keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let socket = format!("unix://{}", root.join("kms.sock").display());
    let mut serve = Command::new(exe);
    serve.args(["kms", "serve", "--listen", &socket]);
    key_args(&mut serve);
    let log = std::fs::File::create(root.join("kms.log"))?;
    let mut child = serve
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start palisade kms serve")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = palisade_kms::KmsClient::connect(&socket).await {
            if matches!(c.status().await, Ok(s) if s.healthz == "ok") {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the KMS plugin exited ({status}); see {}",
                root.join("kms.log").display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the KMS plugin was not healthy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((
        KmsPlugin {
            socket,
            key_id,
            softhsm_conf: conf,
            pin_file,
            pin,
        },
        child,
    ))
}

async fn wait_etcd(endpoint: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await {
            if c.status().await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the supervised etcd at {endpoint} is not healthy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts everything and returns the scenarios' context.
pub async fn start(opts: &LocalOptions) -> anyhow::Result<(Ctx, Guard)> {
    require_tool("etcd", "apt-get install etcd-server")?;
    let (tmp, root) = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, std::path::absolute(d)?)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("palisade-verify-")
                .tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let mut guard = Guard {
        up: None,
        kms: None,
        tmp,
        keep: opts.keep,
    };
    let dir = root.join("deployment");
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&scratch)?;
    let base = match opts.base_port {
        Some(p) => p,
        None => free_port_block(opts.instances)?,
    };
    write_rota(&dir)?;
    let canary = format!("canary-{}", random_hex(8)?);

    // The KMS plugin first: SoftHSM's configuration is per process, read once.
    let (kms, kms_child) = start_kms(&opts.exe, &root).await?;
    guard.kms = Some(kms_child);
    std::env::set_var("SOFTHSM2_CONF", &kms.softhsm_conf);

    let kube = KubeStub::start(
        &scratch,
        &canary,
        &[("worker-1", false), ("worker-2", true)],
    )
    .await?;

    // First start writes every file; the agent then gets its [kube] table and the
    // stack starts again with it (as an operator would configure a real instance).
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut up = spawn_up(&opts.exe, &dir, base, opts.instances, &lines)?;
    let started = wait_ready(&mut up, &lines, 0).await;
    guard.up = Some(up);
    started?;
    let agent_toml = dir.join("agent/agent.toml");
    let mut text = std::fs::read_to_string(&agent_toml)?;
    if !text.contains("\n[kube]") {
        text.push_str(&kube.agent_table());
        std::fs::write(&agent_toml, text)?;
        if let Some(mut first) = guard.up.take() {
            stop_child(&mut first, Duration::from_secs(20));
        }
        let from = lines.lock().map(|l| l.len()).unwrap_or(0);
        let mut up = spawn_up(&opts.exe, &dir, base, opts.instances, &lines)?;
        let started = wait_ready(&mut up, &lines, from).await;
        guard.up = Some(up);
        started?;
    }
    let etcd_endpoint = format!("http://127.0.0.1:{}", base + 4);
    wait_etcd(&etcd_endpoint).await?;

    let pki = dir.join("pki");
    let dispatcher = Dispatcher::new(
        &pki.join("ca.crt"),
        &pki.join("gateway-gateway.crt"),
        &pki.join("gateway-gateway.key"),
        SigningKey::read(&dir.join("gateway/keys/gateway.key"))?,
        &format!("https://127.0.0.1:{}", base + 1),
    )
    .map_err(|e| anyhow!("dispatcher: {e}"))?;
    // The tenant's witness statement, as a gateway holds it, sent with dispatches.
    let statement = dir.join(palisade_core::inventory::demo_tenant::TRUST_STATEMENT);
    let statement: Envelope = serde_json::from_slice(
        &std::fs::read(&statement).with_context(|| format!("{}", statement.display()))?,
    )
    .with_context(|| format!("{}", statement.display()))?;
    dispatcher.set_tenant_trust("demo", statement);
    let root_json = std::fs::read(dir.join("trust/root.json"))?;
    let repo = palisade_policy::tuf::RepoDir::new(dir.join("trust/repo"));
    let policy = palisade_policy::trusted_policy::verify_policy(
        &repo,
        &root_json,
        &scratch.join("verifier-tuf-datastore"),
    )
    .await
    .map_err(|e| anyhow!("the deployment's policy does not verify: {e}"))?
    .policy;
    let agent_keys = vec![PublicKey::read(&dir.join("agent/keys/agent.pub"))?];
    let gw = GatewayClient::new(&format!("https://127.0.0.1:{base}"), &pki.join("ca.crt"))?;
    let op_token = gw.dev_token(OPERATOR).await?;
    let tenant_token = std::fs::read_to_string(dir.join("tenant-demo.token"))?
        .trim()
        .to_string();
    let log_policy = crate::ctx::log_policy(&dir)?;
    let ctx = Ctx {
        gw,
        operator: OPERATOR.into(),
        op_token,
        tenant: "demo".into(),
        tenant_token,
        cluster: "demo".into(),
        instance: "demo-0".into(),
        agent_url: format!("https://127.0.0.1:{}", base + 3),
        ca: pki.join("ca.crt"),
        gateway_cert: pki.join("gateway-gateway.crt"),
        gateway_key: pki.join("gateway-gateway.key"),
        log_url: format!("https://127.0.0.1:{}", base + 1),
        log_policy,
        scratch,
        kms_socket: Some(kms.socket.clone()),
        canary,
        outputs: Mutex::new(Vec::new()),
        local: Some(Local {
            dir,
            base,
            exe: opts.exe.clone(),
            dispatcher,
            policy,
            agent_keys,
            etcd_endpoint,
            kms,
            kube,
            up_output: lines,
        }),
    };
    Ok((ctx, guard))
}
