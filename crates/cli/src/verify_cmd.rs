//! `palisade verify-claims`: parsing only; the scenarios, the deployment they attack
//! and the report are in `palisade-verify`.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {
    /// Where to create the deployment (default: a temporary directory, removed
    /// afterwards unless --keep).
    #[arg(long, conflicts_with = "against")]
    dir: Option<PathBuf>,
    /// Directory for report.json, report.md and report.html.
    #[arg(long, default_value = "verify-claims-report")]
    out: PathBuf,
    /// First of the deployment's consecutive loopback ports (11, and 4 more per extra
    /// instance; default: free ones).
    #[arg(long, conflicts_with = "against")]
    base_port: Option<u16>,
    /// Keep the deployment's directory after the run.
    #[arg(long, conflicts_with = "against")]
    keep: bool,
    /// Run the non-destructive subset against an existing deployment described by
    /// this TOML file (its format: docs/threat-model.md, section "--against CONFIG").
    #[arg(long, value_name = "CONFIG")]
    against: Option<PathBuf>,
    /// Only scenarios whose id contains this text (repeatable; local runs only).
    #[arg(long, conflicts_with = "against")]
    only: Vec<String>,
    /// The demo cluster's instances (1, 3 or 5): each an agent and a member of one
    /// etcd cluster. The scenarios attack instance demo-0.
    #[arg(long, default_value_t = 1, conflicts_with = "against")]
    instances: u16,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = match &args.against {
        Some(config) => palisade_verify::run_against(config)?,
        None => {
            let exe = std::env::current_exe().context("cannot find the palisade executable")?;
            palisade_verify::run_local(&palisade_verify::LocalOptions {
                dir: args.dir.clone(),
                base_port: args.base_port,
                keep: args.keep,
                exe,
                only: args.only.clone(),
                instances: args.instances,
            })?
        }
    };
    report
        .write(&args.out)
        .with_context(|| format!("cannot write the report to {}", args.out.display()))?;
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    for line in report.summary_lines() {
        println!("{line}");
    }
    let failed = report
        .scenarios
        .iter()
        .filter(|s| s.verdict == palisade_verify::report::Verdict::Fail)
        .count();
    println!(
        "{} scenarios, {} failed, {:.1} s; report in {}",
        report.scenarios.len(),
        failed,
        report.duration_ms as f64 / 1000.0,
        args.out.display()
    );
    Ok(if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
