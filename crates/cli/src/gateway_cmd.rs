//! `palisade gateway`: run the administrative API.

use crate::lifecycle::{self, ServeLifecycle};
use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_gateway::config::GatewayConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: GatewayCommand,
}

#[derive(Subcommand)]
enum GatewayCommand {
    /// Serve the administrative API (operators) and the access-log API (tenants).
    Serve {
        /// The gateway configuration file (TOML; see docs/configuration.md).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        lifecycle: ServeLifecycle,
    },
}

pub fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GatewayCommand::Serve { config, lifecycle } => serve(&config, lifecycle),
    }
}

fn serve(config_path: &Path, lifecycle: ServeLifecycle) -> anyhow::Result<ExitCode> {
    let config: GatewayConfig = palisade_core::config::load(config_path)?;
    let runtime = lifecycle::runtime()?;
    runtime.block_on(async {
        palisade_gateway::server::run(config, lifecycle::shutdown_signal(lifecycle), |addr| {
            println!("gateway listening on https://{addr}");
        })
        .await
        .context("the gateway stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}
