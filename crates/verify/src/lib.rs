//! `palisade verify-claims`: attacks a Palisade deployment claim by claim and writes
//! the evidence.
//!
//! Each [`Scenario`] acts as an attacker would, through the interface the attacker
//! would have (the gateway over HTTPS, the agent over mTLS, the log's HTTP API, the
//! TUF repository's files, the KMS plugin's socket, etcd), and passes only if the
//! attack failed **and** left the evidence it should: the refusal's log index read
//! back through the customer's access-log API, the agent's refusal code, the log's
//! audit still verifying, the witness refusing. A scenario that cannot run fails
//! with the reason; nothing is skipped.
//!
//! Two modes:
//! - local ([`run_local`]): starts a complete deployment (`palisade up` in a
//!   temporary directory, plus a KMS plugin on a SoftHSM2 token) and runs every
//!   scenario, including those that need the deployment's private keys (an attacker
//!   who stole them) or change it (a swapped binary, then its recovery);
//! - against ([`run_against`]): the non-destructive subset against an existing
//!   deployment described by a small TOML file ([`against::AgainstConfig`]).
#![forbid(unsafe_code)]

pub mod against;
pub mod ctx;
pub mod deploy;
pub mod kube_stub;
pub mod report;
mod scenarios;

use report::{Report, ScenarioRecord, Verdict, Versions};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

pub use ctx::Ctx;

/// The eight claims (docs/threat-model.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Claim {
    C1,
    C2,
    C3,
    C4,
    C5,
    C6,
    C7,
    C8,
}

impl Claim {
    pub const ALL: [Claim; 8] = [
        Claim::C1,
        Claim::C2,
        Claim::C3,
        Claim::C4,
        Claim::C5,
        Claim::C6,
        Claim::C7,
        Claim::C8,
    ];

    pub fn statement(self) -> &'static str {
        match self {
            Claim::C1 => "No technical means for operators to get interactive access to a control-plane instance.",
            Claim::C2 => "No means for operators to read, copy, extract or modify customer content on a control-plane instance.",
            Claim::C3 => "The administrative API cannot reach customer content in the data plane.",
            Claim::C4 => "Changes to the administrative API (its allowlist) always need multi-party review and approval.",
            Claim::C5 => "No operator can reach customer content in etcd backups, nor any plaintext encryption key.",
            Claim::C6 => "Operators reach the cluster's Kubernetes API only through the administrative API, and all such actions are visible to the customer.",
            Claim::C7 => "Every call to the administrative API is authenticated and authorized; every action is logged and audited.",
            Claim::C8 => "A control-plane instance runs only tested software deployed by the trusted pipeline.",
        }
    }
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// What a scenario established: short evidence strings, or why the claim did not hold.
pub type Outcome = anyhow::Result<Vec<String>>;
pub type BoxFut<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;
pub type RunFn = Box<dyn for<'a> Fn(&'a Ctx) -> BoxFut<'a>>;

/// Where a scenario can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only through the interfaces any deployment exposes, changing nothing that
    /// matters: also runs with `--against`.
    Any,
    /// Needs the deployment's private keys or files, or changes the deployment
    /// (and repairs it): only on a deployment started for the run.
    Local,
}

pub struct Scenario {
    pub claim: Claim,
    pub id: String,
    pub title: String,
    pub scope: Scope,
    pub run: RunFn,
}

/// Builds a [`RunFn`] from a closure (fixes the closure's higher-ranked signature).
pub fn run_fn<F>(f: F) -> RunFn
where
    F: for<'a> Fn(&'a Ctx) -> BoxFut<'a> + 'static,
{
    Box::new(f)
}

/// Every scenario, in the order they run (destructive ones last within a claim).
pub fn scenarios() -> Vec<Scenario> {
    scenarios::all()
}

/// How long one scenario may take before it counts as failed.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(150);

/// Options of a local run.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Where the deployment lives; a temporary directory when absent.
    pub dir: Option<PathBuf>,
    pub base_port: Option<u16>,
    /// Keep the deployment's directory afterwards.
    pub keep: bool,
    /// The `palisade` executable to start the deployment with.
    pub exe: PathBuf,
    /// Only scenarios whose id contains one of these (all when empty).
    pub only: Vec<String>,
    /// The demo cluster's instances (`palisade up --instances`): 1, 3 or 5.
    pub instances: u16,
}

/// Starts a deployment, runs every scenario against it, and returns the report.
pub fn run_local(opts: &LocalOptions) -> anyhow::Result<Report> {
    let started_at = palisade_core::time::Timestamp::now().to_string();
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (ctx, guard) = match deploy::start(opts).await {
            Ok(v) => v,
            Err(e) => {
                return Ok(Report::new(
                    "local",
                    "palisade up (temporary)",
                    started_at,
                    ms(t0.elapsed()),
                    Versions::default(),
                    vec![],
                    vec![format!("the deployment did not start: {e:#}")],
                ))
            }
        };
        let selected: Vec<Scenario> = scenarios()
            .into_iter()
            .filter(|s| opts.only.is_empty() || opts.only.iter().any(|o| s.id.contains(o)))
            .collect();
        let records = run_all(&ctx, selected).await;
        let versions = ctx.versions().await;
        let target = format!("palisade up in {}", ctx.dir_display());
        drop(ctx);
        guard.stop().await;
        Ok(Report::new(
            "local",
            &target,
            started_at,
            ms(t0.elapsed()),
            versions,
            records,
            vec![],
        ))
    })
}

/// Runs the non-destructive subset against an existing deployment.
pub fn run_against(config: &std::path::Path) -> anyhow::Result<Report> {
    let started_at = palisade_core::time::Timestamp::now().to_string();
    let t0 = Instant::now();
    let cfg = against::AgainstConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctx = cfg.context()?;
        let selected: Vec<Scenario> = scenarios()
            .into_iter()
            .filter(|s| s.scope == Scope::Any)
            .collect();
        let records = run_all(&ctx, selected).await;
        let versions = ctx.versions().await;
        let _ = std::fs::remove_dir_all(&ctx.scratch);
        Ok(Report::new(
            "against",
            &cfg.gateway.url,
            started_at,
            ms(t0.elapsed()),
            versions,
            records,
            vec![],
        ))
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn run_all(ctx: &Ctx, list: Vec<Scenario>) -> Vec<ScenarioRecord> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(Some(list.len() as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {wide_msg}")
    {
        bar.set_style(style);
    }
    let mut records = Vec::with_capacity(list.len());
    for s in list {
        bar.set_message(format!("{} {}", s.claim, s.id));
        let t = Instant::now();
        let outcome = match tokio::time::timeout(SCENARIO_TIMEOUT, (s.run)(ctx)).await {
            Ok(o) => o,
            Err(_) => Err(anyhow::anyhow!(
                "did not finish within {} s",
                SCENARIO_TIMEOUT.as_secs()
            )),
        };
        let (verdict, evidence, failure) = match outcome {
            Ok(ev) => (Verdict::Pass, ev, None),
            Err(e) => (Verdict::Fail, vec![], Some(format!("{e:#}"))),
        };
        if verdict == Verdict::Fail {
            bar.println(format!(
                "FAIL {} {}: {}",
                s.claim,
                s.id,
                failure.as_deref().unwrap_or("")
            ));
        }
        records.push(ScenarioRecord {
            claim: s.claim,
            id: s.id,
            title: s.title,
            verdict,
            evidence,
            failure,
            duration_ms: ms(t.elapsed()),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    records
}
