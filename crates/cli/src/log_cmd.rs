//! `palisade log`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct LogArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: LogArgs) -> anyhow::Result<ExitCode> {
    crate::pending::refuse("log", "the tamper-evident log")
}
