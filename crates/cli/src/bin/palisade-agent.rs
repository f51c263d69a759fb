//! `palisade-agent`: the agent alone, for control-plane instances. The same code as
//! `palisade agent`, linked without the gateway, log, witness, KMS plugin and customer
//! tools: an instance carries only the door it needs, and an idle agent's resident
//! memory (most of it the mapped code) stays small. Build it with
//! `cargo build --profile agent -p palisade --bin palisade-agent`
//! (`target/agent/palisade-agent`; the profile is in the workspace's Cargo.toml).
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

#[path = "../agent_cmd.rs"]
mod agent_cmd;
#[path = "../lifecycle.rs"]
mod lifecycle;

/// The agent: the only door into a control-plane instance.
#[derive(Parser)]
#[command(name = "palisade-agent", version)]
struct Cli {
    #[command(flatten)]
    agent: agent_cmd::AgentArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lifecycle::init_tracing();
    palisade_pki::install_default_provider();
    lifecycle::exit_code(agent_cmd::run(cli.agent))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The instance's binary serves and checks an agent, and nothing else.
    #[test]
    fn it_has_only_the_agents_commands() {
        let cmd = super::Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        assert_eq!(names, ["serve", "check"]);
    }
}
