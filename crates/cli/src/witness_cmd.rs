//! `palisade witness`: create a witness key, run the witness service.

use crate::lifecycle::{self, ServeLifecycle};
use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_tlog::note::KeyType;
use palisade_tlog_service::keyfile::write_key_pair;
use palisade_tlog_service::witness_server::{self, WitnessConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct WitnessArgs {
    #[command(subcommand)]
    command: WitnessCommand,
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Create a witness cosignature key: DIR/<name>.key (private, mode 0600) and
    /// DIR/<name>.pub (the verifier key logs and customers configure).
    Keygen {
        /// The key name, e.g. witness.example.com/w1 (no spaces or '+').
        #[arg(long)]
        name: String,
        /// The directory to write both files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing key files (every log must then be given the new key).
        #[arg(long)]
        force: bool,
    },
    /// Serve tlog-witness add-checkpoint over mutual TLS for the configured logs.
    Serve {
        /// The witness configuration file (TOML; see docs/configuration.md).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        lifecycle: ServeLifecycle,
    },
}

pub fn run(args: WitnessArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        WitnessCommand::Keygen { name, out, force } => keygen(&name, &out, force),
        WitnessCommand::Serve { config, lifecycle } => serve(&config, lifecycle),
    }
}

fn keygen(name: &str, dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let (private, public, verifier) = write_key_pair(name, KeyType::Cosignature, dir, force)
        .with_context(|| format!("cannot create a witness key named {name:?} (logs configured with an old key reject a new one)"))?;
    println!("witness private key: {} (mode 0600)", private.display());
    println!("witness verifier key: {}", public.display());
    println!("{verifier}");
    Ok(ExitCode::SUCCESS)
}

fn serve(config_path: &Path, lifecycle: ServeLifecycle) -> anyhow::Result<ExitCode> {
    let config: WitnessConfig = palisade_core::config::load(config_path)?;
    let runtime = lifecycle::runtime()?;
    runtime.block_on(async {
        let bound = witness_server::bind(config)
            .await
            .context("cannot start the witness")?;
        println!("witness listening on https://{}", bound.local_addr());
        bound
            .serve(lifecycle::shutdown_signal(lifecycle))
            .await
            .context("the witness stopped with an error")
    })?;
    Ok(ExitCode::SUCCESS)
}
