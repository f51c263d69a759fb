//! The plugin's configuration file (`palisade kms serve --config FILE`), loaded by
//! `palisade_core::config::load`: unknown fields are refused, relative paths are
//! resolved against the file's directory, and the PIN file may be overridden with
//! `PALISADE_KMS_BACKEND_PIN_FILE`. Every field is documented in
//! docs/configuration.md; it holds exactly what the `serve` flags hold.
//!
//! ```toml
//! listen = "unix:///run/palisade/kms.sock"
//! allow_uids = [0, 998]               # optional; default: the plugin's own uid and root
//! metrics_listen = "127.0.0.1:9464"   # optional; loopback only
//!
//! [backend]
//! kind = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = "customer"
//! pin_file = "kms.pin"
//! key_labels = ["kek-2026-07", "kek-2026-01"]   # the first encrypts, all decrypt
//! sessions = 4                                   # optional
//! ```

use crate::health::HealthPolicy;
use crate::pkcs11::TokenConfig;
use crate::server::{BackendConfig, ServeConfig};
use crate::socket::ListenAddr;
use palisade_core::config::{check_listen, FieldError, ProcessConfig};
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// The most sessions a pool may hold: HSMs limit sessions per application, and more
/// sessions than cores buys nothing.
pub const MAX_SESSIONS: usize = 64;

/// `palisade kms serve --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// `unix:///absolute/path.sock`, or `unix:///@name` for an abstract socket.
    pub listen: String,
    /// User ids allowed to call the plugin. Absent: the plugin's own uid and root.
    #[serde(default)]
    pub allow_uids: Option<Vec<u32>>,
    /// Serve Prometheus metrics on this loopback address.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    pub backend: BackendSettings,
}

/// `[backend]`: which backend holds the keys, and the keys (the first is the primary).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum BackendSettings {
    /// A key in an HSM through its PKCS#11 module.
    Pkcs11 {
        /// The module (shared library).
        module: PathBuf,
        /// The token label.
        token: String,
        /// A file holding the user PIN.
        pin_file: PathBuf,
        /// Key labels; the first encrypts, all decrypt.
        key_labels: Vec<String>,
        /// How many sessions may run calls in the HSM at once (1..=[`MAX_SESSIONS`]).
        /// A plain integer so that 0 is refused by `validate`, naming the field.
        #[serde(default = "default_sessions")]
        sessions: usize,
    },
    /// A customer-owned key in AWS KMS; credentials from the standard AWS chain
    /// (environment, shared profile, web identity, container, instance metadata).
    Aws {
        region: String,
        /// The KMS endpoint, if not the region's public one.
        #[serde(default)]
        endpoint: Option<String>,
        /// Key ids, ARNs or aliases; the first encrypts, all decrypt.
        key_ids: Vec<String>,
    },
    /// Keys in local files: development only.
    File {
        /// Key files; the first encrypts, all decrypt.
        key_files: Vec<PathBuf>,
        /// Must be `true`: the key is on this host's disk, readable by its root.
        #[serde(default)]
        allow_insecure_dev_key: bool,
    },
}

fn default_sessions() -> usize {
    TokenConfig::DEFAULT_SESSIONS.get()
}

impl ProcessConfig for KmsConfig {
    const PROCESS: &'static str = "kms";

    fn validate(&self) -> Result<(), FieldError> {
        self.listen
            .parse::<ListenAddr>()
            .map_err(|e| FieldError::new("listen", e.to_string()))?;
        if let Some(m) = &self.metrics_listen {
            let addr = check_listen("metrics_listen", m)?;
            if !addr.ip().is_loopback() {
                return Err(FieldError::new(
                    "metrics_listen",
                    format!("{m:?} is not a loopback address; metrics are served on loopback only"),
                ));
            }
        }
        if self.allow_uids.as_ref().is_some_and(Vec::is_empty) {
            return Err(FieldError::new(
                "allow_uids",
                "is empty, so no caller could use the plugin; list at least one uid or leave it out",
            ));
        }
        match &self.backend {
            BackendSettings::Pkcs11 {
                token,
                pin_file,
                key_labels,
                sessions,
                ..
            } => {
                if token.is_empty() {
                    return Err(FieldError::new("backend.token", "must not be empty"));
                }
                check_readable_file("backend.pin_file", pin_file)?;
                check_names("backend.key_labels", key_labels, "key label")?;
                if !(1..=MAX_SESSIONS).contains(sessions) {
                    return Err(FieldError::new(
                        "backend.sessions",
                        format!("must be between 1 and {MAX_SESSIONS}"),
                    ));
                }
            }
            BackendSettings::Aws {
                region, key_ids, ..
            } => {
                if region.is_empty() {
                    return Err(FieldError::new("backend.region", "must not be empty"));
                }
                check_names("backend.key_ids", key_ids, "key id, ARN or alias")?;
            }
            BackendSettings::File {
                key_files,
                allow_insecure_dev_key,
            } => {
                if !allow_insecure_dev_key {
                    return Err(FieldError::new(
                        "backend.allow_insecure_dev_key",
                        "the file backend keeps the key on this host's disk and is for \
                         development only; set `allow_insecure_dev_key = true` to use it anyway",
                    ));
                }
                if key_files.is_empty() {
                    return Err(FieldError::new(
                        "backend.key_files",
                        "give at least one key file (the first one encrypts)",
                    ));
                }
                for (i, f) in key_files.iter().enumerate() {
                    check_readable_file(&format!("backend.key_files[{i}]"), f)?;
                }
            }
        }
        Ok(())
    }

    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        match &mut self.backend {
            BackendSettings::Pkcs11 {
                module, pin_file, ..
            } => vec![("backend.module", module), ("backend.pin_file", pin_file)],
            BackendSettings::Aws { .. } => Vec::new(),
            BackendSettings::File { key_files, .. } => key_files
                .iter_mut()
                .map(|f| ("backend.key_files", f))
                .collect(),
        }
    }

    fn secret_fields() -> &'static [&'static str] {
        &["backend.pin_file"]
    }
}

fn check_readable_file(field: &str, path: &Path) -> Result<(), FieldError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(FieldError::new(
            field,
            format!("{} is not a regular file", path.display()),
        )),
        Err(e) => Err(FieldError::new(
            field,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn check_names(field: &str, names: &[String], what: &str) -> Result<(), FieldError> {
    if names.is_empty() {
        return Err(FieldError::new(
            field,
            format!("give at least one {what} (the first one encrypts)"),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                "must not be empty",
            ));
        }
        if names.iter().take(i).any(|m| m == n) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("{n:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Why a loaded configuration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("listen: {0}")]
    Listen(#[from] crate::socket::SocketError),
    #[error("metrics_listen: {0:?} is not an address such as 127.0.0.1:9464")]
    MetricsListen(String),
    #[error("backend.sessions must be between 1 and {MAX_SESSIONS}")]
    Sessions,
    #[error(transparent)]
    Kek(#[from] crate::kek::KekError),
}

impl KmsConfig {
    /// What the server needs. The AWS backend resolves its credentials (the standard
    /// AWS chain) here.
    pub fn into_serve_config(self) -> Result<ServeConfig, ConfigError> {
        let backend = match self.backend {
            BackendSettings::Pkcs11 {
                module,
                token,
                pin_file,
                key_labels,
                sessions,
            } => BackendConfig::Pkcs11 {
                token: TokenConfig {
                    module,
                    token_label: token,
                    pin_file,
                    sessions: NonZeroUsize::new(sessions).ok_or(ConfigError::Sessions)?,
                },
                key_labels,
            },
            BackendSettings::Aws {
                region,
                endpoint,
                key_ids,
            } => aws_backend(region, endpoint, key_ids)?,
            BackendSettings::File {
                key_files,
                allow_insecure_dev_key,
            } => BackendConfig::File {
                key_files,
                allow_insecure_dev_key,
            },
        };
        Ok(ServeConfig {
            // Both addresses were checked by `validate`; parsing them again here keeps
            // `KmsConfig` a plain mirror of the file.
            listen: self.listen.parse()?,
            backend,
            allowed_uids: self.allow_uids,
            metrics_listen: match self.metrics_listen {
                Some(m) => Some(m.parse().map_err(|_| ConfigError::MetricsListen(m))?),
                None => None,
            },
            health: HealthPolicy::default(),
        })
    }
}

#[cfg(feature = "aws")]
fn aws_backend(
    region: String,
    endpoint: Option<String>,
    key_ids: Vec<String>,
) -> Result<BackendConfig, ConfigError> {
    let aws = crate::aws::AwsConfig::standard(region, endpoint);
    Ok(BackendConfig::Aws { aws, key_ids })
}

#[cfg(not(feature = "aws"))]
fn aws_backend(
    _region: String,
    _endpoint: Option<String>,
    _key_ids: Vec<String>,
) -> Result<BackendConfig, ConfigError> {
    Err(crate::kek::KekError::Invalid(
        "this build has no AWS KMS backend (cargo feature `aws`)".into(),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::config::parse_with;

    fn parse_in(dir: &Path, text: &str) -> Result<KmsConfig, palisade_core::config::ConfigError> {
        parse_with(text, &dir.join("kms.toml"), dir, &|_| None)
    }

    fn pkcs11_text(extra: &str) -> String {
        format!(
            "listen = \"unix:///run/palisade/kms.sock\"\n{extra}\n[backend]\nkind = \"pkcs11\"\n\
             module = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"customer\"\n\
             pin_file = \"kms.pin\"\nkey_labels = [\"new\", \"old\"]\n"
        )
    }

    fn dir_with_pin() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kms.pin"), "1234\n").unwrap();
        dir
    }

    #[test]
    fn pkcs11_file_resolves_the_pin_file_and_defaults_the_pool() {
        let dir = dir_with_pin();
        let c = parse_in(dir.path(), &pkcs11_text("allow_uids = [0, 998]")).unwrap();
        let serve = c.into_serve_config().unwrap();
        assert_eq!(serve.allowed_uids, Some(vec![0, 998]));
        let BackendConfig::Pkcs11 { token, key_labels } = serve.backend else {
            panic!("not pkcs11");
        };
        assert_eq!(token.pin_file, dir.path().join("kms.pin"));
        assert_eq!(token.sessions, TokenConfig::DEFAULT_SESSIONS);
        assert_eq!(key_labels, ["new", "old"]);
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let dir = dir_with_pin();
        let err = parse_in(
            dir.path(),
            &pkcs11_text("metrics_lisen = \"127.0.0.1:9464\""),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `metrics_lisen`"),
            "{err}"
        );
        let text = pkcs11_text("").replace("token = ", "sesions = 2\ntoken = ");
        let err = parse_in(dir.path(), &text).unwrap_err();
        assert!(err.to_string().contains("unknown field `sesions`"), "{err}");
    }

    #[test]
    fn missing_backend_settings_are_named() {
        let dir = dir_with_pin();
        let text = pkcs11_text("").replace("token = \"customer\"\n", "");
        let err = parse_in(dir.path(), &text).unwrap_err();
        assert!(err.to_string().contains("missing field `token`"), "{err}");
        let text = pkcs11_text("").replace("key_labels = [\"new\", \"old\"]", "key_labels = []");
        let err = parse_in(dir.path(), &text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("backend.key_labels"), "{err}");
        let err = parse_in(dir.path(), "listen = \"unix:///k.sock\"\n").unwrap_err();
        assert!(err.to_string().contains("missing field `backend`"), "{err}");
    }

    #[test]
    fn missing_pin_file_is_refused_naming_the_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse_in(dir.path(), &pkcs11_text("")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("backend.pin_file"), "{err}");
        assert!(
            err.to_string()
                .contains(&dir.path().join("kms.pin").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let dir = dir_with_pin();
        for (extra, replace, field) in [
            (
                "",
                ("unix:///run/palisade/kms.sock", "/run/kms.sock"),
                "listen",
            ),
            (
                "metrics_listen = \"0.0.0.0:9464\"",
                ("", ""),
                "metrics_listen",
            ),
            ("allow_uids = []", ("", ""), "allow_uids"),
            (
                "",
                ("key_labels", "sessions = 65\nkey_labels"),
                "backend.sessions",
            ),
            (
                "",
                ("[\"new\", \"old\"]", "[\"new\", \"new\"]"),
                "backend.key_labels[1]",
            ),
        ] {
            let text = pkcs11_text(extra).replacen(replace.0, replace.1, 1);
            let err = parse_in(dir.path(), &text).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{err}");
        }
        let text = pkcs11_text("").replace("key_labels", "sessions = 0\nkey_labels");
        let err = parse_in(dir.path(), &text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("backend.sessions"), "{err}");
    }

    #[test]
    fn file_backend_needs_the_insecure_switch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dev.key"), "x").unwrap();
        let text = "listen = \"unix:///tmp/k.sock\"\n[backend]\nkind = \"file\"\nkey_files = [\"dev.key\"]\n";
        let err = parse_in(dir.path(), text).unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("backend.allow_insecure_dev_key"),
            "{err}"
        );
        let c = parse_in(
            dir.path(),
            &format!("{text}allow_insecure_dev_key = true\n"),
        )
        .unwrap();
        let BackendSettings::File { key_files, .. } = c.backend else {
            panic!("not file");
        };
        assert_eq!(key_files, [dir.path().join("dev.key")]);
    }

    #[test]
    fn the_deploy_example_loads() {
        let dir = dir_with_pin();
        let text = include_str!("../../../deploy/kms/kms.example.toml");
        let c = parse_in(dir.path(), text).unwrap();
        // Exactly kube-apiserver's uid (the agent's user), not root.
        assert_eq!(c.allow_uids, Some(vec![990]));
        let BackendSettings::Pkcs11 { sessions, .. } = c.backend else {
            panic!("not pkcs11");
        };
        assert_eq!(sessions, 4);
    }
}
