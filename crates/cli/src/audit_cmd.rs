//! `palisade audit`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: AuditArgs) -> anyhow::Result<ExitCode> {
    crate::pending::refuse("audit", "the tamper-evident log")
}
