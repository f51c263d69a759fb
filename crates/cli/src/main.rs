//! `palisade`: one binary for every Palisade process and tool.
//!
//! This crate only parses arguments and wires the library crates together; the work
//! happens in `palisade-core`, `palisade-pki`, `palisade-tlog` and the others.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod agent_cmd;
mod audit_cmd;
mod audit_events;
mod audit_watch;
mod backup_cmd;
mod customer_cmd;
mod gateway_cmd;
mod kms_cmd;
mod lifecycle;
mod log_cmd;
mod op_cmd;
mod pki_cmd;
mod policy_cmd;
mod release_cmd;
mod stack;
mod up;
mod verify_cmd;
mod witness_cmd;

/// Palisade: an operator-proof control plane for managed Kubernetes.
///
/// Operators keep clusters healthy through typed, approved, logged actions; customers
/// keep their keys and can verify every action in a log of their own.
#[derive(Parser)]
#[command(name = "palisade", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole stack on this machine (for trying Palisade), on loopback ports.
    Up(up::UpArgs),
    /// Run the administrative API that operators call (authn, on-call authz, log-first dispatch).
    Gateway(gateway_cmd::GatewayArgs),
    /// Run the agent: the only door into a control-plane instance.
    Agent(agent_cmd::AgentArgs),
    /// Run or administer a cluster's tamper-evident log.
    Log(log_cmd::LogArgs),
    /// Run a witness that cosigns log checkpoints after checking consistency.
    Witness(witness_cmd::WitnessArgs),
    /// Run the Kubernetes KMS v2 plugin that keeps the customer's key in an HSM or cloud KMS.
    Kms(kms_cmd::KmsArgs),
    /// Operator CLI: log in, see your on-call grants, run approved actions.
    Op(op_cmd::OpArgs),
    /// Customer CLI: verify your cluster's log, its proofs and its witnesses.
    Audit(audit_cmd::AuditArgs),
    /// Customer CLI: your own key, and the witnesses it makes every agent require.
    Customer(customer_cmd::CustomerArgs),
    /// Write, review, approve and publish the action policy (multi-party, on TUF).
    Policy(policy_cmd::PolicyArgs),
    /// Attest, approve, publish and verify component releases (multi-party, on TUF).
    Release(release_cmd::ReleaseArgs),
    /// Verify and restore encrypted etcd backups with the customer's key.
    Backup(backup_cmd::BackupArgs),
    /// Create the private CA and issue role-bearing certificates.
    Pki(pki_cmd::PkiArgs),
    /// Attack a deployment claim by claim and write an evidence report.
    VerifyClaims(verify_cmd::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lifecycle::init_tracing();
    // One TLS provider (ring) for every client, including those built by libraries
    // (object storage, cloud KMS) without a configuration of ours.
    palisade_pki::install_default_provider();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Pki(args) => pki_cmd::run(args),
        Command::Gateway(args) => gateway_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Log(args) => log_cmd::run(args),
        Command::Witness(args) => witness_cmd::run(args),
        Command::Kms(args) => kms_cmd::run(args),
        Command::Op(args) => op_cmd::run(args),
        Command::Audit(args) => audit_cmd::run(args),
        Command::Customer(args) => customer_cmd::run(args),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Release(args) => release_cmd::run(args),
        Command::Backup(args) => backup_cmd::run(args),
        Command::VerifyClaims(args) => verify_cmd::run(args),
    };
    lifecycle::exit_code(result)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// clap's own consistency checks (argument ids named in `conflicts_with_all` and
    /// `required_unless_present` exist, no duplicate flags), which release builds
    /// otherwise skip.
    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
