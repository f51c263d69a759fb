//! `palisade witness`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct WitnessArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: WitnessArgs) -> anyhow::Result<ExitCode> {
    crate::pending::refuse("witness", "the tamper-evident log")
}
