//! `palisade kms`: the Kubernetes KMS v2 plugin and its tools. Parsing only; the work
//! is in `palisade-kms`.

use crate::lifecycle::{runtime, shutdown_signal, ServeLifecycle};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use palisade_kms::config::{KmsConfig, MAX_SESSIONS};
use palisade_kms::health::HealthPolicy;
use palisade_kms::pkcs11::{Token, TokenConfig};
use palisade_kms::server::{BackendConfig, ServeConfig};
use palisade_kms::socket::ListenAddr;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct KmsArgs {
    #[command(subcommand)]
    command: KmsCommand,
}

#[derive(Subcommand)]
enum KmsCommand {
    /// Serve the KMS v2 gRPC API to kube-apiserver on a Unix socket, configured
    /// either by a file (--config) or by flags, never both.
    Serve {
        /// A configuration file (TOML; see docs/configuration.md) holding every
        /// setting the flags below hold. Not combined with them.
        #[arg(long, conflicts_with_all = SERVE_SETTINGS)]
        config: Option<PathBuf>,
        /// unix:///absolute/path.sock, or unix:///@name for an abstract socket.
        #[arg(long, required_unless_present = "config")]
        listen: Option<String>,
        #[command(flatten)]
        keys: KeyArgs,
        /// A user id allowed to call the plugin (repeatable). Default: this
        /// process's own uid and root.
        #[arg(long = "allow-uid")]
        allow_uids: Vec<u32>,
        /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        lifecycle: ServeLifecycle,
    },
    /// Generate a new key-encryption key inside the backend and print its key_id.
    Keygen {
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Ask a running plugin for its Status; exits non-zero unless healthz is "ok".
    Status {
        /// The plugin's socket (as given to `serve --listen`).
        #[arg(long)]
        socket: String,
    },
    /// List etcd keys under a prefix whose values are not KMS v2 encrypted (keys only,
    /// never values); exits non-zero if there is any.
    ScanEtcd {
        /// etcd endpoints, comma-separated (e.g. http://127.0.0.1:2379).
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        #[arg(long, default_value = "/registry/")]
        prefix: String,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BackendKind {
    /// A key in an HSM through its PKCS#11 module.
    Pkcs11,
    /// A customer-owned key in AWS KMS.
    Aws,
    /// A key in a local file: development only.
    File,
}

/// The `serve` flags that `--config` replaces (clap argument ids).
const SERVE_SETTINGS: [&str; 14] = [
    "listen",
    "allow_uids",
    "metrics_listen",
    "backend",
    "pkcs11_module",
    "pkcs11_token",
    "pkcs11_pin_file",
    "pkcs11_sessions",
    "key_labels",
    "aws_region",
    "aws_endpoint",
    "key_ids",
    "key_files",
    "allow_insecure_dev_key",
];

#[derive(Args)]
struct KeyArgs {
    /// Where the key-encryption keys are (required unless --config is given).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// pkcs11: the module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long)]
    pkcs11_module: Option<PathBuf>,
    /// pkcs11: the token label.
    #[arg(long)]
    pkcs11_token: Option<String>,
    /// pkcs11: a file holding the user PIN.
    #[arg(long)]
    pkcs11_pin_file: Option<PathBuf>,
    /// pkcs11: how many sessions may run calls in the HSM at once (default 4).
    #[arg(long)]
    pkcs11_sessions: Option<NonZeroUsize>,
    /// pkcs11: a key label (repeatable; the first encrypts, all decrypt).
    #[arg(long = "key-label")]
    key_labels: Vec<String>,
    /// aws: the region.
    #[arg(long)]
    aws_region: Option<String>,
    /// aws: the KMS endpoint, if not the region's public one.
    #[arg(long)]
    aws_endpoint: Option<String>,
    /// aws: a key id, ARN or alias (repeatable; the first encrypts, all decrypt).
    #[arg(long = "key-id")]
    key_ids: Vec<String>,
    /// file: a key file (repeatable; the first encrypts, all decrypt).
    #[arg(long = "key-file")]
    key_files: Vec<PathBuf>,
    /// file: accept a key file although it is insecure (development only).
    #[arg(long)]
    allow_insecure_dev_key: bool,
}

impl KeyArgs {
    fn backend(&self) -> anyhow::Result<BackendKind> {
        self.backend
            .context("--backend is required (for `serve`, or a --config file)")
    }

    fn token(&self) -> anyhow::Result<TokenConfig> {
        let (Some(module), Some(token_label), Some(pin_file)) = (
            self.pkcs11_module.clone(),
            self.pkcs11_token.clone(),
            self.pkcs11_pin_file.clone(),
        ) else {
            bail!("--backend pkcs11 needs --pkcs11-module, --pkcs11-token and --pkcs11-pin-file");
        };
        let sessions = self
            .pkcs11_sessions
            .unwrap_or(TokenConfig::DEFAULT_SESSIONS);
        if sessions.get() > MAX_SESSIONS {
            bail!("--pkcs11-sessions must be between 1 and {MAX_SESSIONS}");
        }
        Ok(TokenConfig {
            module,
            token_label,
            pin_file,
            sessions,
        })
    }

    /// Refuses options that belong to another backend, so that a typo cannot leave a
    /// key unused.
    fn check_only_own_options(&self) -> anyhow::Result<()> {
        let pkcs11 = self.pkcs11_module.is_some()
            || self.pkcs11_token.is_some()
            || self.pkcs11_sessions.is_some()
            || self.pkcs11_pin_file.is_some()
            || !self.key_labels.is_empty();
        let aws =
            self.aws_region.is_some() || self.aws_endpoint.is_some() || !self.key_ids.is_empty();
        let file = !self.key_files.is_empty() || self.allow_insecure_dev_key;
        let (name, others) = match self.backend()? {
            BackendKind::Pkcs11 => ("pkcs11", aws || file),
            BackendKind::Aws => ("aws", pkcs11 || file),
            BackendKind::File => ("file", pkcs11 || aws),
        };
        if others {
            bail!("options of another backend were given with --backend {name}");
        }
        Ok(())
    }

    fn backend_config(&self) -> anyhow::Result<BackendConfig> {
        self.check_only_own_options()?;
        Ok(match self.backend()? {
            BackendKind::Pkcs11 => {
                if self.key_labels.is_empty() {
                    bail!("--backend pkcs11 needs at least one --key-label");
                }
                BackendConfig::Pkcs11 {
                    token: self.token()?,
                    key_labels: self.key_labels.clone(),
                }
            }
            BackendKind::Aws => aws_config(self)?,
            BackendKind::File => {
                if self.key_files.is_empty() {
                    bail!("--backend file needs at least one --key-file");
                }
                BackendConfig::File {
                    key_files: self.key_files.clone(),
                    allow_insecure_dev_key: self.allow_insecure_dev_key,
                }
            }
        })
    }
}

fn aws_config(args: &KeyArgs) -> anyhow::Result<BackendConfig> {
    let Some(region) = args.aws_region.clone() else {
        bail!("--backend aws needs --aws-region");
    };
    if args.key_ids.is_empty() {
        bail!("--backend aws needs at least one --key-id");
    }
    let aws = palisade_kms::aws::AwsConfig::standard(region, args.aws_endpoint.clone());
    Ok(BackendConfig::Aws {
        aws,
        key_ids: args.key_ids.clone(),
    })
}

pub fn run(args: KmsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KmsCommand::Serve {
            config,
            listen,
            keys,
            allow_uids,
            metrics_listen,
            lifecycle,
        } => {
            let config = match (config, listen) {
                (Some(path), _) => {
                    let file: KmsConfig = palisade_core::config::load(&path)?;
                    file.into_serve_config()
                        .with_context(|| format!("{}", path.display()))?
                }
                (None, Some(listen)) => ServeConfig {
                    listen: listen.parse::<ListenAddr>()?,
                    backend: keys.backend_config()?,
                    allowed_uids: (!allow_uids.is_empty()).then_some(allow_uids),
                    metrics_listen,
                    health: HealthPolicy::default(),
                },
                (None, None) => bail!("give --config FILE, or --listen and the backend flags"),
            };
            runtime()?.block_on(palisade_kms::server::run(
                config,
                shutdown_signal(lifecycle),
            ))?;
        }
        KmsCommand::Keygen { keys } => {
            keys.check_only_own_options()?;
            if keys.pkcs11_sessions.is_some() {
                bail!("--pkcs11-sessions is a `serve` option");
            }
            let key_id = match keys.backend()? {
                BackendKind::Pkcs11 => {
                    let [label] = keys.key_labels.as_slice() else {
                        bail!("keygen --backend pkcs11 needs exactly one --key-label");
                    };
                    Token::new(keys.token()?)
                        .generate_key(label)
                        .context("cannot generate the key in the token")?
                }
                BackendKind::File => {
                    let [path] = keys.key_files.as_slice() else {
                        bail!("keygen --backend file needs exactly one --key-file");
                    };
                    eprintln!("warning: a file key is for development only; it does not protect customer data from operators");
                    palisade_kms::file_key::FileKek::generate(path)?
                }
                BackendKind::Aws => bail!(
                    "create the key in the customer's AWS account (aws kms create-key --key-spec SYMMETRIC_DEFAULT --key-usage ENCRYPT_DECRYPT) and pass its ARN with --key-id"
                ),
            };
            println!("{key_id}");
        }
        KmsCommand::Status { socket } => {
            let status = runtime()?.block_on(async {
                let mut client = palisade_kms::KmsClient::connect(&socket).await?;
                client.status().await
            })?;
            println!("version: {}", status.version);
            println!("healthz: {}", status.healthz);
            println!("key_id: {}", status.key_id);
            if status.healthz != "ok" {
                return Ok(ExitCode::FAILURE);
            }
        }
        KmsCommand::ScanEtcd { endpoints, prefix } => {
            let report =
                runtime()?.block_on(palisade_kms::scan::scan(&endpoints, prefix.as_bytes()))?;
            for key in &report.unencrypted_keys {
                println!(
                    "not encrypted: {}",
                    String::from_utf8_lossy(key).escape_debug()
                );
            }
            eprintln!(
                "scanned {} keys under {prefix:?}: {} not KMS v2 encrypted",
                report.scanned,
                report.unencrypted_keys.len()
            );
            if !report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
