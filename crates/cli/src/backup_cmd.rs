//! `palisade backup`: the customer's and the auditor's side of encrypted etcd
//! backups. Parsing and printing only; the work is in `palisade-backup`.

use crate::lifecycle::runtime;
use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_backup::restore;
use palisade_backup::store::{BackupStore, S3Options, StoreUrl};
use palisade_policy::keys::PublicKey;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(Args)]
struct StoreArgs {
    /// The backup store: file:///dir, a directory, or s3://bucket[/prefix].
    #[arg(long)]
    store: String,
    /// s3: the region.
    #[arg(long)]
    s3_region: Option<String>,
    /// s3: the endpoint of an S3-compatible service (e.g. http://127.0.0.1:9000).
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// s3: a file holding `<access key id>:<secret access key>` (else the AWS_*
    /// environment variables).
    #[arg(long)]
    s3_credentials_file: Option<PathBuf>,
}

/// Which backup is asked for; the signed manifest must be that one.
#[derive(Args)]
struct ExpectArgs {
    /// The backup id asked for (default: from the manifest's file name,
    /// `<id>.manifest.json`). The signed manifest must be that backup.
    #[arg(long)]
    backup_id: Option<String>,
    /// The cluster the backup must belong to.
    #[arg(long)]
    cluster: Option<String>,
    /// The manifest's SHA-256 as the cluster's log recorded it (`manifest_sha256`
    /// in the `etcd.backup` output, `sha256:<hex>`): anything else is refused.
    #[arg(long)]
    expect_digest: Option<palisade_core::Sha256Digest>,
}

impl ExpectArgs {
    fn expected(&self, manifest: &std::path::Path) -> anyhow::Result<restore::Expected> {
        let backup_id = match &self.backup_id {
            Some(id) => id.clone(),
            None => restore::Expected::id_from_manifest_name(manifest).with_context(|| {
                format!(
                    "cannot tell which backup {} is meant to be (its name is not <id>.manifest.json): give --backup-id",
                    manifest.display()
                )
            })?,
        };
        Ok(restore::Expected {
            backup_id: Some(backup_id),
            cluster: self.cluster.clone(),
            manifest_sha256: self.expect_digest,
        })
    }
}

impl StoreArgs {
    fn open(&self) -> anyhow::Result<BackupStore> {
        let url: StoreUrl = self.store.parse()?;
        Ok(BackupStore::open(
            &url,
            &S3Options {
                region: self.s3_region.clone(),
                endpoint: self.s3_endpoint.clone(),
                credentials_file: self.s3_credentials_file.clone(),
            },
        )?)
    }
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Decrypt a backup with your KMS plugin into an etcd snapshot file
    /// (`etcdctl snapshot restore` / `etcdutl snapshot restore` take it).
    Restore {
        /// The backup's manifest file (`<id>.manifest.json` from the store).
        #[arg(long)]
        manifest: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        expect: ExpectArgs,
        /// Your KMS v2 plugin's socket (unix:///path.sock), holding the KEK.
        #[arg(long)]
        kms_socket: String,
        /// The snapshot file to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// The public key (`agent.pub`) of the agent that took the backup
        /// (repeatable); the manifest must be signed by one of them.
        #[arg(long = "agent-key", required = true)]
        agent_keys: Vec<PathBuf>,
    },
    /// Check a backup's integrity without its key: manifest, sizes, SHA-256, header.
    Verify {
        #[arg(long)]
        manifest: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        expect: ExpectArgs,
        /// Also require the manifest's signature by one of these agent keys.
        #[arg(long = "agent-key")]
        agent_keys: Vec<PathBuf>,
    },
}

fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| PublicKey::read(p).map_err(anyhow::Error::from))
        .collect()
}

fn read_manifest(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the manifest {}", path.display()))
}

pub fn run(args: BackupArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BackupCommand::Restore {
            manifest,
            store,
            expect,
            kms_socket,
            out,
            agent_keys,
        } => {
            let expected = expect.expected(&manifest)?;
            let bytes = read_manifest(&manifest)?;
            let keys = read_keys(&agent_keys)?;
            let store = store.open()?;
            let show = std::io::stderr().is_terminal();
            let restored = runtime()?.block_on(async {
                let mut kms = palisade_kms::KmsClient::connect(&kms_socket)
                    .await
                    .with_context(|| format!("cannot reach your KMS plugin at {kms_socket}"))?;
                let mut bar: Option<indicatif::ProgressBar> = None;
                let total =
                    palisade_backup::Manifest::unverified(&bytes).map_or(0, |m| m.snapshot_bytes);
                let r = restore::restore(
                    &bytes,
                    &keys,
                    &expected,
                    &store,
                    &mut kms,
                    &out,
                    &mut |done| {
                        if show {
                            bar.get_or_insert_with(|| progress_bar(total))
                                .set_position(done);
                        }
                    },
                )
                .await;
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                r.with_context(|| {
                    format!(
                        "the backup was not restored (nothing was written to {})",
                        out.display()
                    )
                })
            })?;
            let m = &restored.manifest;
            println!("restored  {}", m.backup_id);
            println!("asked     {}", asked(&expected));
            println!(
                "cluster   {} (instance {}, member {})",
                m.cluster, m.instance, m.member_id
            );
            println!(
                "taken     {} at etcd revision {}",
                m.created_at, m.etcd_revision
            );
            println!(
                "wrote     {} ({} bytes; its etcd SHA-256 checked)",
                restored.path.display(),
                restored.snapshot_bytes
            );
            println!(
                "next      ETCDCTL_API=3 etcdctl snapshot restore {} --data-dir <new data dir>",
                restored.path.display()
            );
        }
        BackupCommand::Verify {
            manifest,
            store,
            expect,
            agent_keys,
        } => {
            let expected = expect.expected(&manifest)?;
            let bytes = read_manifest(&manifest)?;
            let keys = read_keys(&agent_keys)?;
            let store = store.open()?;
            let v = runtime()?
                .block_on(restore::verify(&bytes, &keys, &expected, &store))
                .context("the backup does not verify")?;
            let m = &v.manifest;
            println!(
                "backup    {} of cluster {} (instance {})",
                m.backup_id, m.cluster, m.instance
            );
            println!(
                "taken     {} at etcd revision {}",
                m.created_at, m.etcd_revision
            );
            println!("object    {} in {}", m.object, store.url());
            println!(
                "checked   {} bytes, SHA-256 {}, header matches the manifest",
                m.object_bytes, m.object_sha256
            );
            println!("manifest  sha256:{}", v.manifest_sha256);
            println!("asked     {}", asked(&expected));
            match &v.signer {
                Some(k) => println!("signed    by agent key {k}"),
                None => println!("signed    NOT CHECKED (give --agent-key to check the signature)"),
            }
            println!(
                "key       {} (not opened: only the key holder can decrypt)",
                m.key_id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What was checked of "this is the backup asked for".
fn asked(e: &restore::Expected) -> String {
    let digest = match &e.manifest_sha256 {
        Some(d) => format!("manifest digest {d} as logged"),
        None => "manifest digest NOT CHECKED (give --expect-digest from the log)".into(),
    };
    format!(
        "backup {}, {digest}",
        e.backup_id.as_deref().unwrap_or("(any)")
    )
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "decrypting {bar:40} {bytes}/{total_bytes}, {eta} left",
    ) {
        bar.set_style(style);
    }
    bar
}
