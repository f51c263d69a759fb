//! `palisade agent`: run the agent on a control-plane instance.

use crate::lifecycle::{self, ServeLifecycle};
use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_agent::config::AgentConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Serve signed, logged dispatches over mutual TLS (gateway certificates only),
    /// and supervise the configured control-plane components.
    Serve {
        /// The agent configuration file (TOML; see docs/configuration.md).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        lifecycle: ServeLifecycle,
    },
    /// Check a configuration file and the trust it names (signing key, gateway keys,
    /// log trust, the approved policy) without serving.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentCommand::Serve { config, lifecycle } => serve(&config, lifecycle),
        AgentCommand::Check { config } => check(&config),
    }
}

fn serve(config_path: &Path, lifecycle: ServeLifecycle) -> anyhow::Result<ExitCode> {
    let config: AgentConfig = palisade_core::config::load(config_path)?;
    let runtime = lifecycle::runtime()?;
    runtime.block_on(async {
        palisade_agent::server::run(&config, lifecycle::shutdown_signal(lifecycle), |addr| {
            println!(
                "agent for {}/{} listening on https://{addr}",
                config.cluster, config.instance
            );
        })
        .await
        .context("the agent stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config: AgentConfig = palisade_core::config::load(config_path)?;
    palisade_policy::keys::SigningKey::read(&config.signing_key)?;
    for k in &config.gateway_keys {
        palisade_policy::keys::PublicKey::read(k)?;
    }
    config.log.policy().map_err(anyhow::Error::msg)?;
    let tenant = match &config.tenant_key {
        Some(p) => {
            let key = palisade_policy::keys::PublicKey::read(p)
                .map_err(|e| anyhow::anyhow!("tenant_key: {e}"))?;
            format!(
                "; requires the witnesses named by tenant key {} (from the tenant's newest statement)",
                key.key_id()
            )
        }
        None => "; no tenant_key: only the log's witnesses are required".to_string(),
    };
    let runtime = lifecycle::runtime()?;
    runtime.block_on(async {
        let policy = palisade_agent::server::TufPolicy {
            trust: config.trust.clone(),
        };
        let p = palisade_agent::accept::PolicySource::load(&policy)
            .await
            .map_err(anyhow::Error::msg)?;
        if let Some(why) = &p.unverified {
            anyhow::bail!(
                "{why}\nthe agent would start its components from the releases it verified before (policy version {}), and accept no action until the repository verifies",
                p.policy.version()
            );
        }
        println!(
            "configuration ok: agent {}/{}, policy version {} ({}), trust metadata valid until {}{tenant}",
            config.cluster,
            config.instance,
            p.policy.version(),
            p.policy.digest(),
            p.expires
        );
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
