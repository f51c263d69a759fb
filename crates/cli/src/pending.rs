//! Subcommands whose capability has not been built yet. They say so and exit with
//! status 2, instead of pretending to work.

use std::process::ExitCode;

/// Accepts any arguments, so that the message below is what the user sees.
#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn refuse(command: &str, capability: &str) -> anyhow::Result<ExitCode> {
    eprintln!(
        "palisade {command}: not available yet. It is part of {capability}, which this \
         build of Palisade does not include. See docs/architecture.md for what exists today."
    );
    Ok(ExitCode::from(2))
}
