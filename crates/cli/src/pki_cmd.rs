//! `palisade pki`: the private CA and role-bearing certificates.

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_pki::{CertName, Role, SubjectAltName, DEFAULT_LEAF_DAYS};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA in DIR (ca.crt, ca.key); refuses to overwrite one without --force.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for one role (gateway, agent, log, witness, operator).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// What the holder is: gateway, agent, log, witness or operator.
        #[arg(long)]
        kind: Role,
        /// The holder's name (a DNS label, e.g. gw-1, demo-0, alice).
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses a server certificate is valid for (repeatable).
        #[arg(long = "san")]
        sans: Vec<SubjectAltName>,
        /// Validity in days.
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS)]
        days: u32,
        /// Replace an existing certificate and key of the same role and name.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: PkiArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PkiCommand::Init { dir, force } => {
            let paths = palisade_pki::init_ca(&dir, force)
                .with_context(|| format!("cannot create a CA in {}", dir.display()))?;
            println!("CA certificate: {}", paths.cert.display());
            println!(
                "CA private key: {} (mode 0600; keep it away from servers)",
                paths.key.display()
            );
            println!(
                "next: palisade pki issue --dir {} --kind gateway --name gw-1",
                dir.display()
            );
        }
        PkiCommand::Issue {
            dir,
            kind,
            name,
            sans,
            days,
            force,
        } => {
            let name = CertName::new(&name)?;
            let paths = palisade_pki::issue(&dir, kind, &name, &sans, days, force)
                .with_context(|| format!("cannot issue the {kind} certificate {name:?}"))?;
            println!("{kind} certificate: {}", paths.cert.display());
            println!("{kind} private key: {} (mode 0600)", paths.key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
