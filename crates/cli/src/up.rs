//! `palisade up`: the whole stack on one machine, for trying Palisade.
//!
//! On first run it creates the state directory (default `./.palisade`) with a CA and
//! certificates, keys, a demo inventory and one configuration file per process; a
//! later run reuses all of it. It then starts every process as a child of itself
//! (`palisade <process> serve --config …`), waits until each is serving, prints what
//! runs where and `ready`, and on Ctrl-C or SIGTERM stops them all.
//!
//! Meanwhile it supervises them as a process supervisor would: a child that exits is
//! started again after a backoff (1 s, doubling up to 30 s, back to 1 s once it ran
//! for a minute), and each exit and restart is printed.
//!
//! No orphan is left behind even if `up` itself is killed: each child's standard input
//! is a pipe from `up`, and children started with `--exit-with-parent` stop when it
//! closes (which the kernel does when `up` dies, however it dies).

use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::stack::{self, Stack};

#[derive(Args)]
pub struct UpArgs {
    /// State directory; created on first run, reused afterwards.
    #[arg(long, default_value = ".palisade")]
    dir: PathBuf,
    /// First of the loopback ports the processes listen on (each takes the next one).
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// On the first run, give the demo tenant a statement that asks for no customer
    /// approval (by default, disruptive actions need one approval by one of the two
    /// demo approvers, whose keys are in DIR/tenant-demo/approvers/).
    #[arg(long)]
    no_customer_approval: bool,
    /// On the first run, how many instances the demo cluster has (1, 3 or 5): each
    /// an agent and a member of one etcd cluster. A later run keeps the number.
    #[arg(long)]
    instances: Option<u16>,
    /// On the first run, etcd's backend quota for the demo members
    /// (`--quota-backend-bytes`; etcd's default, 2 GiB, when absent).
    #[arg(long, value_name = "BYTES")]
    etcd_quota_bytes: Option<u64>,
}

/// How long a process may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to stop after it was asked to.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The first delay before a child that exited is started again; it doubles with
/// each quick exit, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting starts again after [`BACKOFF_FIRST`].
const BACKOFF_RESET: Duration = Duration::from_secs(60);

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(up(args))
}

struct Running {
    name: String,
    /// Its place in the stack's process list.
    spec: usize,
    /// `None` while it waits to be started again.
    child: Option<Child>,
    started: tokio::time::Instant,
    backoff: Duration,
    restart_at: Option<tokio::time::Instant>,
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let options = stack::Options {
        base_port: args.base_port,
        approvals: !args.no_customer_approval,
        instances: args.instances,
        etcd_quota_bytes: args.etcd_quota_bytes,
    };
    let stack = stack::prepare(&args.dir, &options)
        .with_context(|| format!("cannot prepare {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the palisade executable")?;

    let mut running: Vec<Running> = Vec::new();
    let started = start_all(&exe, &stack, &mut running).await;
    if let Err(e) = started {
        stop_all(&mut running).await;
        return Err(e);
    }
    // The handlers exist before `ready` is printed: a SIGTERM or SIGINT sent as soon
    // as it is seen must stop the stack cleanly, not kill this process alone.
    if let Err(e) = register_tenant_witness(&stack).await {
        stop_all(&mut running).await;
        return Err(e);
    }
    let console_link = match demo_console_link(&stack).await {
        Ok(l) => l,
        Err(e) => {
            stop_all(&mut running).await;
            return Err(e);
        }
    };
    let signals = Signals::install();
    print_summary(&stack, &console_link);
    println!("ready");

    let name = supervise(&exe, &stack, signals, &mut running).await;
    stop_all(&mut running).await;
    eprintln!("palisade up: {name} received; all processes stopped");
    Ok(ExitCode::SUCCESS)
}

/// Has the gateway record the demo tenant's witness statement in the demo cluster's
/// log (once: a later start finds it in force), so the agent, which requires it,
/// accepts dispatches. The gateway serves before its log is ready, so it is retried.
async fn register_tenant_witness(stack: &Stack) -> anyhow::Result<()> {
    let statement: palisade_policy::dsse::Envelope = serde_json::from_slice(
        &std::fs::read(&stack.tenant_statement)
            .with_context(|| format!("cannot read {}", stack.tenant_statement.display()))?,
    )
    .with_context(|| {
        format!(
            "{} is not a signed statement",
            stack.tenant_statement.display()
        )
    })?;
    let token = std::fs::read_to_string(stack.dir.join("tenant-demo.token"))?
        .trim()
        .to_string();
    let ca = stack.pki_dir.join("ca.crt");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match crate::customer_cmd::register_demo(&stack.gateway_url, &ca, &token, &statement).await
        {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn spawn(exe: &Path, p: &stack::ProcessSpec) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(&p.args)
        .arg("--exit-with-parent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", p.name))?;
    forward_output(&p.name, &mut child);
    Ok(child)
}

async fn start_all(exe: &Path, stack: &Stack, running: &mut Vec<Running>) -> anyhow::Result<()> {
    for (spec, p) in stack.processes.iter().enumerate() {
        let child = spawn(exe, p)?;
        running.push(Running {
            name: p.name.clone(),
            spec,
            child: Some(child),
            started: tokio::time::Instant::now(),
            backoff: BACKOFF_FIRST,
            restart_at: None,
        });
        wait_until_serving(p, running).await?;
    }
    Ok(())
}

/// Prefixes each line a child prints with its name.
fn forward_output(name: &str, child: &mut Child) {
    if let Some(out) = child.stdout.take() {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{name}] {line}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name}] {line}");
            }
        });
    }
}

/// A process is serving once its port accepts connections: every Palisade server
/// binds only after it has loaded and checked everything it needs.
async fn wait_until_serving(p: &stack::ProcessSpec, running: &mut [Running]) -> anyhow::Result<()> {
    let name = p.name.as_str();
    let addr = where_(p);
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let serving = match &p.unix_socket {
            Some(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
            None => tokio::net::TcpStream::connect(p.addr).await.is_ok(),
        };
        if serving {
            return Ok(());
        }
        if let Some(r) = running.iter_mut().find(|r| r.name == name) {
            if let Some(Ok(Some(status))) = r.child.as_mut().map(|c| c.try_wait()) {
                bail!("{name} exited while starting ({status}); its messages above say why");
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{name} did not start serving on {addr} within {}s",
                START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGINT and SIGTERM handlers, registered when installed.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Restarts children that exit, until SIGINT or SIGTERM; returns the signal's name.
async fn supervise(
    exe: &Path,
    stack: &Stack,
    mut signals: Signals,
    running: &mut [Running],
) -> &'static str {
    let watch = async {
        loop {
            let now = tokio::time::Instant::now();
            for r in running.iter_mut() {
                if let Some(Ok(Some(status))) = r.child.as_mut().map(|c| c.try_wait()) {
                    r.child = None;
                    if r.started.elapsed() >= BACKOFF_RESET {
                        r.backoff = BACKOFF_FIRST;
                    }
                    eprintln!(
                        "palisade up: {} exited ({status}); starting it again in {}s",
                        r.name,
                        r.backoff.as_secs()
                    );
                    r.restart_at = Some(now + r.backoff);
                    r.backoff = (r.backoff * 2).min(BACKOFF_MAX);
                }
                if r.restart_at.is_some_and(|at| at <= now) {
                    r.restart_at = None;
                    let Some(p) = stack.processes.get(r.spec) else {
                        continue;
                    };
                    match spawn(exe, p) {
                        Ok(child) => {
                            eprintln!("palisade up: {} started again", r.name);
                            r.child = Some(child);
                            r.started = now;
                        }
                        Err(e) => {
                            eprintln!(
                                "palisade up: {e:#}; trying again in {}s",
                                r.backoff.as_secs()
                            );
                            r.restart_at = Some(now + r.backoff);
                            r.backoff = (r.backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = recv(&mut signals.int) => "SIGINT",
        _ = recv(&mut signals.term) => "SIGTERM",
        () = watch => "the end of supervision",
    }
}

/// Asks every child to stop (closing its stdin), in reverse start order, and kills
/// any that has not stopped within [`STOP_TIMEOUT`].
async fn stop_all(running: &mut Vec<Running>) {
    for r in running.iter_mut().rev() {
        if let Some(c) = r.child.as_mut() {
            drop(c.stdin.take());
        }
    }
    for r in running.drain(..).rev() {
        let Some(mut child) = r.child else {
            continue;
        };
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "palisade up: {} did not stop within {}s; killing it",
                    r.name,
                    STOP_TIMEOUT.as_secs()
                );
                let _ = child.kill().await;
            }
        }
    }
}

/// Where a process serves, for messages.
fn where_(p: &stack::ProcessSpec) -> String {
    match &p.unix_socket {
        Some(path) => format!("unix://{}", path.display()),
        None => format!("https://{}", p.addr),
    }
}

/// A one-time login link to the demo cluster's console, with the demo log's keys.
async fn demo_console_link(stack: &Stack) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(stack.dir.join("tenant-demo.token"))?
        .trim()
        .to_string();
    crate::customer_cmd::demo_console_link(
        &stack.gateway_url,
        &stack.pki_dir.join("ca.crt"),
        &token,
        &stack.console_trust,
    )
    .await
    .context("the console's login link")
}

fn print_summary(stack: &Stack, console_link: &str) {
    println!("Palisade is running from {}", stack.dir.display());
    for p in &stack.processes {
        println!("  {:<14} {}  ({})", p.name, where_(p), p.what);
        if let Some(w) = p.warning {
            println!("                 WARNING: {w}");
        }
    }
    if stack.processes.is_empty() {
        println!("  (no server processes exist in this build yet)");
    }
    println!("Certificates and keys: {}", stack.pki_dir.display());
    let instances = &stack.instances;
    println!(
        "Demo inventory: tenant demo, cluster demo, instance{} {} ({})",
        if instances.len() == 1 { "" } else { "s" },
        instances.join(", "),
        stack.inventory.display()
    );
    for hint in &stack.next_steps {
        println!("Try: {hint}");
    }
    println!(
        "Console: {}/console/ (the demo tenant's view of its cluster, verified in the browser; trust {}/pki/ca.crt there)\n  \
         one-time login link (15 minutes; `palisade customer console-link` with the options of `customer requests` makes another):\n  {}",
        stack.gateway_url,
        stack.dir.display(),
        console_link
    );
    println!("Stop with Ctrl-C.");
}
