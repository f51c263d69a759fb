//! `palisade audit`: the customer's verifier of their cluster's log.
//!
//! - `verify` reads the whole log (a directory or its HTTPS read API) and checks the
//!   checkpoint, its witnesses, every tile and entry, and — with `--state` — that the
//!   log only grew since the last run;
//! - `proof` writes an offline proof (C2SP tlog-proof) that one entry is in the log;
//! - `check-proof` checks such a file against the entry, without the network;
//! - `watch` keeps checking the log ([`crate::audit_watch`]);
//! - `events` prints the log's events, read and proven from its tiles
//!   ([`crate::audit_events`]).
//!
//! The checks live in `palisade_tlog_service::audit`; this module parses arguments
//! and prints.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use palisade_core::time::Timestamp;
use palisade_tlog::checkpoint::{LogPolicy, VerifiedCheckpoint};
use palisade_tlog::note::VerifierKey;
use palisade_tlog_service::audit::{self, AuditReport, ProofSubject, Source, TrustedState};

/// Below this many entries a verification is quick enough to need no progress bar.
const PROGRESS_FROM_ENTRIES: u64 = 5_000;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Verify the whole log: checkpoint signature and witnesses, every tile and entry,
    /// and (with --state) that the log only grew since the last verification.
    Verify(VerifyArgs),
    /// Write an offline proof (C2SP tlog-proof) that one entry is in the log.
    Proof(ProofArgs),
    /// Check an offline proof file against the entry it proves, without the network.
    CheckProof(CheckProofArgs),
    /// Keep checking the log: consistent with what was proven before, and freshly
    /// cosigned by your witnesses; alarm (exit 2, or --on-alarm) on a fork, a
    /// rollback or a stale view.
    Watch(crate::audit_watch::WatchArgs),
    /// Read every event of the log straight from its tiles, each proven against the
    /// signed, witnessed checkpoint, checked, and printed as a timeline, JSON lines
    /// or Kubernetes audit events.
    Events(crate::audit_events::EventsArgs),
}

/// Where to read the log.
#[derive(clap::Args)]
pub(crate) struct SourceArgs {
    /// The log's read URL: it serves `checkpoint` and `tile/…` below it
    /// (e.g. https://log.example/logs/c1).
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "dir",
        conflicts_with = "dir"
    )]
    url: Option<String>,
    /// Bearer token for the read API, or `@FILE` to read it from a file (which keeps
    /// it out of the process list).
    #[arg(long, value_name = "TOKEN", requires = "url")]
    token: Option<String>,
    /// PEM file of the CA the server must chain to (a private CA). Default: the
    /// system's trust store.
    #[arg(long, value_name = "FILE", requires = "url")]
    ca: Option<PathBuf>,
    /// The log's directory: a copy of its storage prefix, the one holding `checkpoint`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// What the customer trusts about the log.
#[derive(clap::Args)]
pub(crate) struct PolicyArgs {
    /// The log's origin, e.g. palisade.example/clusters/c1.
    #[arg(long)]
    origin: String,
    /// The log's verifier key (`<name>+<hex id>+<base64>`), or `@FILE`.
    #[arg(long, value_name = "VKEY")]
    log_key: String,
    /// A witness's verifier key, or `@FILE`. Repeat for several witnesses.
    #[arg(long = "witness-key", value_name = "VKEY")]
    pub(crate) witness_keys: Vec<String>,
    /// How many distinct witnesses must have cosigned. Default: all of them.
    #[arg(long, value_name = "N", requires = "witness_keys")]
    quorum: Option<usize>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// State file: the size and root verified last time. The log must be consistent
    /// with it; it is updated (atomically) only after a successful verification.
    /// Created on the first run.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Fail when the witnesses you name (`--witness-key`, at least the quorum of
    /// them) did not cosign the log's checkpoint within this long (e.g. `5m`): every
    /// log is cosigned again at least every minute, idle or not, so an older view is
    /// a frozen or withheld one.
    #[arg(long, value_name = "DURATION", value_parser = parse_age, requires = "witness_keys")]
    max_age: Option<u64>,
}

/// `30s`, `5m`, `1h`, `7d`, in seconds.
pub(crate) fn parse_age(text: &str) -> Result<u64, String> {
    palisade_policy::model::Duration::parse(text)
        .map(|d| d.as_secs())
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} is not a duration like 90s, 5m, 1h or 7d"))
}

#[derive(clap::Args)]
struct ProofArgs {
    /// Index of the entry to prove (0 is the first).
    #[arg(long)]
    index: u64,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Where to write the proof file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also write the entry itself (as read from the log and proven) to this file.
    #[arg(long, value_name = "FILE")]
    entry_out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CheckProofArgs {
    /// The proof file (C2SP tlog-proof).
    file: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The entry the proof is for, read from this file (exact bytes).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "entry_text",
        conflicts_with = "entry_text"
    )]
    entry_file: Option<PathBuf>,
    /// The entry the proof is for, as text (exact bytes, no newline added).
    #[arg(long, value_name = "TEXT")]
    entry_text: Option<String>,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let runtime = crate::lifecycle::runtime()?;
    match args.command {
        AuditCommand::Verify(args) => runtime.block_on(verify(args)),
        AuditCommand::Proof(args) => runtime.block_on(proof(args)),
        AuditCommand::CheckProof(args) => check_proof(args),
        AuditCommand::Watch(args) => {
            drop(runtime);
            crate::audit_watch::run(args)
        }
        AuditCommand::Events(args) => {
            drop(runtime);
            crate::audit_events::run(args)
        }
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(&args.policy)?;
    let source = source(&args.source)?;
    let previous = match &args.state {
        Some(path) => TrustedState::load(path)?,
        None => None,
    };

    let show_progress = std::io::stderr().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let result = audit::verify(&source, &policy, previous.as_ref(), |done, total| {
        if show_progress && total >= PROGRESS_FROM_ENTRIES {
            bar.get_or_insert_with(|| progress_bar(total))
                .set_position(done);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = result.with_context(|| {
        format!(
            "the log {} at {} did not verify",
            policy.origin(),
            source.location()
        )
    })?;

    if let Some(max_age) = args.max_age {
        // The log verified: its history is kept even if it is not fresh.
        if let Some(path) = &args.state {
            report.state.save(path)?;
        }
        let now = palisade_core::time::Timestamp::now().unix_seconds();
        let fresh = audit::fresh_witnesses(&report.cosignatures, now, max_age);
        if fresh < policy.quorum().max(1) {
            print_report(&report, &policy, args.state.as_deref());
            let newest = report.cosignatures.iter().map(|c| c.timestamp).max();
            let age = newest.map_or_else(
                || "no witness cosigned it".to_string(),
                |t| {
                    format!(
                        "its newest cosignature is {} s old",
                        now - i64::try_from(t).unwrap_or(0)
                    )
                },
            );
            anyhow::bail!(
                "the log {} is not fresh: {age}, and {fresh} of the {} required witnesses cosigned within --max-age {max_age} s. Every log is cosigned again at least every minute: this view is frozen, or newer checkpoints are withheld from you",
                policy.origin(),
                policy.quorum().max(1)
            );
        }
    }
    if let Some(path) = &args.state {
        report.state.save(path)?;
    }
    print_report(&report, &policy, args.state.as_deref());
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "verifying {bar:40} {human_pos}/{human_len} entries, {eta} left",
    ) {
        bar.set_style(style);
    }
    bar
}

fn print_report(report: &AuditReport, policy: &LogPolicy, state: Option<&Path>) {
    println!("verified  {}", report.origin);
    println!(
        "size      {} entries, every one checked ({} tiles, {} entry bundles)",
        report.size, report.tiles_checked, report.bundles_checked
    );
    println!("root      {}", report.root.to_base64());
    print_witnesses(
        report
            .cosignatures
            .iter()
            .map(|c| (c.name.as_str(), c.timestamp)),
        policy,
    );
    match (&report.consistent_with, state) {
        (Some(before), Some(path)) => println!(
            "history   consistent with the previously verified size {} (state saved to {})",
            before.size,
            path.display()
        ),
        (None, Some(path)) => println!(
            "history   first verification with this state file: saved to {}; later runs will \
             prove that the log only grew",
            path.display()
        ),
        _ => println!(
            "history   not compared with an earlier run (pass --state FILE to detect forks and \
             rollbacks between runs)"
        ),
    }
}

fn print_witnesses<'a>(cosignatures: impl Iterator<Item = (&'a str, u64)>, policy: &LogPolicy) {
    let mut any = false;
    for (name, timestamp) in cosignatures {
        any = true;
        let when = i64::try_from(timestamp)
            .map(|t| Timestamp::from_unix_seconds(t).to_string())
            .unwrap_or_else(|_| format!("@{timestamp}"));
        println!("witness   {name}, cosigned {when}");
    }
    if !any {
        if policy.quorum() == 0 {
            println!(
                "witness   none required: only the log's own key vouches for this view (require \
                 witnesses with --witness-key)"
            );
        } else {
            println!("witness   none");
        }
    }
}

async fn proof(args: ProofArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(&args.policy)?;
    let source = source(&args.source)?;
    let produced = audit::produce_proof(&source, &policy, args.index)
        .await
        .with_context(|| {
            format!(
                "no proof for entry {} of {} at {}",
                args.index,
                policy.origin(),
                source.location()
            )
        })?;
    std::fs::write(&args.out, produced.proof.to_bytes())
        .with_context(|| format!("cannot write the proof to {}", args.out.display()))?;
    if let Some(path) = &args.entry_out {
        std::fs::write(path, &produced.entry)
            .with_context(|| format!("cannot write the entry to {}", path.display()))?;
    }
    println!(
        "proof     entry {} of {} (checkpoint size {}) written to {}",
        args.index,
        policy.origin(),
        produced.checkpoint.checkpoint().size(),
        args.out.display()
    );
    if let Some(path) = &args.entry_out {
        println!(
            "entry     {} bytes written to {}",
            produced.entry.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check_proof(args: CheckProofArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(&args.policy)?;
    let file = std::fs::read(&args.file)
        .with_context(|| format!("cannot read the proof file {}", args.file.display()))?;
    let entry = match (&args.entry_file, &args.entry_text) {
        (Some(path), _) => std::fs::read(path)
            .with_context(|| format!("cannot read the entry file {}", path.display()))?,
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => anyhow::bail!("give the entry with --entry-file or --entry-text"),
    };
    let checked =
        audit::check_proof(&file, ProofSubject::Entry(&entry), &policy).with_context(|| {
            format!(
                "the proof {} does not hold for this entry",
                args.file.display()
            )
        })?;
    print_checked(checked.index, &checked.checkpoint, &policy);
    Ok(ExitCode::SUCCESS)
}

fn print_checked(index: u64, verified: &VerifiedCheckpoint, policy: &LogPolicy) {
    let checkpoint = verified.checkpoint();
    println!("included  entry {index} of {}", checkpoint.origin());
    println!("size      checkpoint size {}", checkpoint.size());
    println!("root      {}", checkpoint.root().to_base64());
    print_witnesses(
        verified
            .cosignatures()
            .iter()
            .map(|c| (c.witness().name(), c.timestamp())),
        policy,
    );
}

pub(crate) fn source(args: &SourceArgs) -> anyhow::Result<Source> {
    match (&args.dir, &args.url) {
        (Some(dir), _) => Ok(Source::dir(dir)?),
        (None, Some(url)) => {
            let token = args.token.as_deref().map(secret_arg).transpose()?;
            Ok(Source::url(url, token.as_deref(), args.ca.as_deref())?)
        }
        (None, None) => anyhow::bail!("say where the log is: --dir DIR or --url URL"),
    }
}

pub(crate) fn policy(args: &PolicyArgs) -> anyhow::Result<LogPolicy> {
    let log_key = verifier_key(&args.log_key, "--log-key")?;
    let policy = LogPolicy::new(&args.origin, log_key).context("--origin / --log-key")?;
    if args.witness_keys.is_empty() {
        return Ok(policy);
    }
    let witnesses = args
        .witness_keys
        .iter()
        .map(|k| verifier_key(k, "--witness-key"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let quorum = args.quorum.unwrap_or(witnesses.len());
    policy
        .with_witnesses(witnesses, quorum)
        .context("--witness-key / --quorum")
}

/// Verifier key text, or `@FILE` holding it.
pub(crate) fn verifier_key(arg: &str, option: &str) -> anyhow::Result<VerifierKey> {
    palisade_tlog_service::keyfile::verifier_arg(arg).with_context(|| option.to_string())
}

/// A secret given directly or as `@FILE`; never echoed back.
pub(crate) fn secret_arg(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("--token: cannot read the token file {path}"))?
            .trim()
            .to_owned()),
        None => Ok(arg.to_owned()),
    }
}
