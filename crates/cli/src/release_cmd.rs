//! `palisade release`: test attestations and the multi-party release flow
//! (propose → approve → publish → verify) for component artifacts (claim C8).

use crate::policy_cmd::{
    approve, default_datastore, keys_dir, read_pubs, report_publication, verify_runtime,
    TrustedRootArgs,
};
use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::SigningKey;
use palisade_policy::release::{self, TestOutcome, TestResult};
use palisade_policy::tuf::{Lifetimes, OnlineKeys, RepoDir};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    command: ReleaseCommand,
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Write a DSSE-signed in-toto test-result attestation for an artifact.
    Attest {
        #[arg(long)]
        artifact: PathBuf,
        /// PASSED, WARNED or FAILED.
        #[arg(long)]
        result: TestOutcome,
        /// The CI key.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Link to the CI run.
        #[arg(long, default_value = "")]
        url: String,
        /// A passed test's name (repeatable).
        #[arg(long = "passed")]
        passed: Vec<String>,
        /// A failed test's name (repeatable).
        #[arg(long = "failed")]
        failed: Vec<String>,
    },
    /// Stage a release of COMPONENT VERSION with its artifact and attestation.
    #[command(disable_version_flag = true)]
    Propose {
        #[command(flatten)]
        target: TargetArgs,
        /// The author's private key file (a reviewer's or a registered proposer's).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        attestation: PathBuf,
        #[arg(long = "ci-key")]
        ci_keys: Vec<PathBuf>,
        /// Mark this release as an approved rollback from this (higher) version: once
        /// approved and published, agents running that version may be downgraded to
        /// this one. Without it, no agent replaces a higher version by this one.
        #[arg(long)]
        rollback_from: Option<String>,
    },
    /// Add one reviewer's approval (never the author's). The proposal is verified
    /// from the root you trust (`--root`), not from the repository's files as served.
    Approve {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        proposal: String,
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        trusted: TrustedRootArgs,
    },
    /// Publish an approved release into the `components` role (pipeline key).
    Publish {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        proposal: String,
        #[arg(long)]
        keys: Option<PathBuf>,
        #[arg(long = "ci-key")]
        ci_keys: Vec<PathBuf>,
        #[arg(long)]
        log_entry: Option<PathBuf>,
    },
    /// Re-sign the `components` role with the pipeline key (KEYS/pipeline.key): the
    /// same releases under a new version and a fresh expiry (365 days). Run it after
    /// a pipeline key rotation and before the role expires.
    Resign {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Verify an artifact as the agent does before starting it.
    #[command(disable_version_flag = true)]
    Verify {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        datastore: Option<PathBuf>,
        #[arg(long = "ci-key")]
        ci_keys: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct TargetArgs {
    #[arg(long)]
    repo: PathBuf,
    #[arg(long)]
    component: String,
    /// The component's version (this subcommand has no --version flag of its own).
    #[arg(long)]
    version: String,
    #[arg(long)]
    artifact: PathBuf,
}

fn file_name(p: &std::path::Path) -> anyhow::Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no file name", p.display()))
}

pub fn run(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let life = Lifetimes::default();
    match args.command {
        ReleaseCommand::Attest {
            artifact,
            result,
            key,
            out,
            url,
            passed,
            failed,
        } => {
            let bytes = std::fs::read(&artifact)
                .with_context(|| format!("cannot read {}", artifact.display()))?;
            let key = SigningKey::read(&key)?;
            let tr = TestResult {
                result,
                configuration: vec![],
                url,
                passed_tests: passed,
                warned_tests: vec![],
                failed_tests: failed,
            };
            let env = release::attest(&file_name(&artifact)?, &bytes, tr, &key)?;
            let mut json = serde_json::to_vec_pretty(&env)?;
            json.push(b'\n');
            std::fs::write(&out, json)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "attestation: {} (signed by {})",
                out.display(),
                key.key_id()
            );
        }
        ReleaseCommand::Propose {
            target,
            key,
            attestation,
            ci_keys,
            rollback_from,
        } => {
            let bytes = std::fs::read(&target.artifact)
                .with_context(|| format!("cannot read {}", target.artifact.display()))?;
            let env: Envelope = serde_json::from_slice(
                &std::fs::read(&attestation)
                    .with_context(|| format!("cannot read {}", attestation.display()))?,
            )
            .with_context(|| format!("{} is not a DSSE envelope", attestation.display()))?;
            let id = release::propose_release_marked(
                &RepoDir::new(&target.repo),
                &SigningKey::read(&key)?,
                &target.component,
                &target.version,
                &file_name(&target.artifact)?,
                &bytes,
                env,
                &read_pubs(&ci_keys)?,
                rollback_from.as_deref(),
            )?;
            println!("proposal: {id}");
            if let Some(from) = &rollback_from {
                println!(
                    "marked: a rollback from {from} to {} (reviewers approve the mark with the release)",
                    target.version
                );
            }
            println!("next: reviewers run `palisade release approve --repo {} --proposal {id} --key <their key> --root <the root.json they trust>`", target.repo.display());
        }
        ReleaseCommand::Approve {
            repo,
            proposal,
            key,
            trusted,
        } => approve(&RepoDir::new(&repo), &proposal, &key, &trusted, false)?,
        ReleaseCommand::Publish {
            repo,
            proposal,
            keys,
            ci_keys,
            log_entry,
        } => {
            let online = OnlineKeys::load(&keys_dir(&repo, keys))?;
            let p = release::publish_release(
                &RepoDir::new(&repo),
                &online,
                &proposal,
                &read_pubs(&ci_keys)?,
                &life,
            )?;
            report_publication(&p, log_entry.as_deref())?;
        }
        ReleaseCommand::Resign { repo, keys } => {
            let online = OnlineKeys::load(&keys_dir(&repo, keys))?;
            let version = palisade_policy::trusted_policy::resign_components(
                &RepoDir::new(&repo),
                &online,
                &life,
            )?;
            println!(
                "components role version {version} signed by the pipeline key {}",
                online.pipeline.key_id()
            );
        }
        ReleaseCommand::Verify {
            target,
            root,
            datastore,
            ci_keys,
        } => {
            let root = std::fs::read(&root)
                .with_context(|| format!("cannot read the trusted root {}", root.display()))?;
            let bytes = std::fs::read(&target.artifact)
                .with_context(|| format!("cannot read {}", target.artifact.display()))?;
            let datastore = datastore.unwrap_or_else(|| default_datastore(&target.repo));
            let v = verify_runtime()?.block_on(release::verify_release(
                &RepoDir::new(&target.repo),
                &root,
                &datastore,
                &target.component,
                &target.version,
                &bytes,
                &read_pubs(&ci_keys)?,
            ))?;
            println!("verified {} (sha256:{})", v.target, v.sha256);
            println!(
                "tests {:?}; author {}, approved by {}",
                v.test_result.result,
                v.author,
                v.approvers.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
