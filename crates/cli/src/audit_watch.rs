//! `palisade audit watch`: the customer's continuous check of their cluster's log.
//!
//! Every `--interval` it reads the log's checkpoint and proves it consistent with
//! the state kept in `--state` ([`audit::watch_step`]: signatures, witness quorum,
//! no rollback, no second root for a size, a consistency proof from the tiles when
//! the log grew), then checks that the witnesses named cosigned it within
//! `--max-age`. An alarm — `fork`, `rollback`, `stale`, `unverifiable` — ends the
//! watch with status 2, or, with `--on-alarm PROGRAM`, runs that program (alarm in
//! its environment) and goes on watching; each alarm is raised once until it clears.
//! A log that cannot be read is an alarm (`stale`) once the last good look is older
//! than `--max-age`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use palisade_core::time::Timestamp;
use palisade_tlog_service::audit::{self, AuditError, TrustedState};

use crate::audit_cmd::{parse_age, policy, source, PolicyArgs, SourceArgs};

#[derive(clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// State file: the size and root proven last. Created on the first look (trust
    /// on first use, like `audit verify --state`; start it from a verified run), and
    /// updated after every good one.
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// How often to look.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_age)]
    interval: u64,
    /// A view whose witnesses' newest cosignatures are older than this is stale (every
    /// log is cosigned again at least every minute).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_age)]
    max_age: u64,
    /// Run this program on each alarm and keep watching. Its environment holds
    /// PALISADE_ALARM (fork, rollback, stale, unverifiable), PALISADE_LOG (the origin)
    /// and PALISADE_DETAIL.
    #[arg(long, value_name = "PROGRAM")]
    on_alarm: Option<PathBuf>,
    /// Look once and exit: 0 when all holds, 2 on an alarm.
    #[arg(long)]
    once: bool,
}

/// What a look can find wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alarm {
    Fork,
    Rollback,
    Stale,
    Unverifiable,
}

impl Alarm {
    fn name(self) -> &'static str {
        match self {
            Alarm::Fork => "fork",
            Alarm::Rollback => "rollback",
            Alarm::Stale => "stale",
            Alarm::Unverifiable => "unverifiable",
        }
    }
}

pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    if args.policy.witness_keys.is_empty() {
        anyhow::bail!(
            "audit watch needs the witnesses you rely on (--witness-key, repeated): without them a log could show you a view no one else sees, and freshness means nothing"
        );
    }
    crate::lifecycle::runtime()?.block_on(watch(args))
}

async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(&args.policy)?;
    let source = source(&args.source)?;
    let quorum = policy.quorum().max(1);
    let mut raised: Option<Alarm> = None;
    // When the log last looked good (its newest fresh cosignature counts).
    let mut last_good = Timestamp::now().unix_seconds();
    loop {
        let previous = TrustedState::load(&args.state)
            .with_context(|| format!("state file {}", args.state.display()))?;
        let now = Timestamp::now().unix_seconds();
        let found = match audit::watch_step(&source, &policy, previous.as_ref()).await {
            Ok(w) => {
                let fresh = audit::fresh_witnesses(&w.cosignatures, now, args.max_age);
                let newest = w.cosignatures.iter().map(|c| c.timestamp).max();
                let age = newest.map(|t| now - i64::try_from(t).unwrap_or(0));
                // The log's history is proven either way: keep it.
                w.state.save(&args.state)?;
                if fresh < quorum {
                    Err((
                        Alarm::Stale,
                        format!(
                            "{} of {quorum} required witnesses cosigned the checkpoint within {} s (newest cosignature {}): the log is frozen, or newer checkpoints are withheld from you",
                            fresh,
                            args.max_age,
                            age.map_or("none".into(), |a| format!("{a} s old"))
                        ),
                    ))
                } else {
                    last_good = now;
                    Ok(format!(
                        "ok {} size {} root {} cosigned {} s ago",
                        policy.origin(),
                        w.state.size,
                        w.state.root.to_base64(),
                        age.unwrap_or(0)
                    ))
                }
            }
            Err(e) => Err(classify(&e, now - last_good, args.max_age)),
        };
        match found {
            Ok(line) => {
                if raised.take().is_some() {
                    println!("cleared {line}");
                } else {
                    println!("{line}");
                }
                if args.once {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // Unreadable, but not for long enough to say the view is stale.
            Err((Alarm::Stale, detail)) if detail.starts_with("unreadable:") => {
                eprintln!("{detail}");
                if args.once {
                    return Ok(ExitCode::from(2));
                }
            }
            Err((alarm, detail)) => {
                eprintln!("ALARM {} {}: {detail}", alarm.name(), policy.origin());
                match (&args.on_alarm, args.once) {
                    (Some(program), false) => {
                        if raised != Some(alarm) {
                            notify(program, alarm, policy.origin(), &detail).await;
                            raised = Some(alarm);
                        }
                    }
                    (Some(program), true) => {
                        notify(program, alarm, policy.origin(), &detail).await;
                        return Ok(ExitCode::from(2));
                    }
                    (None, _) => return Ok(ExitCode::from(2)),
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(args.interval)).await;
    }
}

/// The alarm a failed look raises. A log that cannot be read is not an alarm until
/// the last good look is older than `max_age` (`unreadable:` detail otherwise).
fn classify(e: &AuditError, since_good: i64, max_age: u64) -> (Alarm, String) {
    match e {
        AuditError::Fork { .. } => (Alarm::Fork, e.to_string()),
        AuditError::RolledBack { .. } => (Alarm::Rollback, e.to_string()),
        AuditError::Open { .. }
        | AuditError::Read { .. }
        | AuditError::Refused { .. }
        | AuditError::NoCheckpoint { .. }
        | AuditError::Missing { .. } => {
            if since_good > i64::try_from(max_age).unwrap_or(i64::MAX) {
                (
                    Alarm::Stale,
                    format!("the log could not be read for {since_good} s: {e}"),
                )
            } else {
                (Alarm::Stale, format!("unreadable: {e} (tried again)"))
            }
        }
        _ => (Alarm::Unverifiable, e.to_string()),
    }
}

/// Runs the alarm program with the alarm in its environment (no shell).
async fn notify(program: &std::path::Path, alarm: Alarm, origin: &str, detail: &str) {
    let run = tokio::process::Command::new(program)
        .env("PALISADE_ALARM", alarm.name())
        .env("PALISADE_LOG", origin)
        .env("PALISADE_DETAIL", detail)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => eprintln!("--on-alarm {} exited {s}", program.display()),
        Ok(Err(e)) => eprintln!("--on-alarm {}: {e}", program.display()),
        Err(_) => eprintln!("--on-alarm {} did not end within 60 s", program.display()),
    }
}
