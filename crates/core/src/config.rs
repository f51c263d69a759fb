//! Per-process configuration files (TOML), documented in docs/configuration.md.
//!
//! Each process reads one file. Loading is strict and happens once at start:
//! - unknown fields are errors (a typo must not silently keep a default);
//! - every error names the file, the field (as a dotted path) and the problem, with
//!   the line and column when the TOML parser knows them;
//! - after parsing, [`ProcessConfig::validate`] checks what types cannot express;
//! - relative paths are resolved against the directory of the file, so a config
//!   directory can be moved as a whole;
//! - paths to secrets (private keys, PIN files, tokens) can be overridden from the
//!   environment as `PALISADE_<PROCESS>_<FIELD>` (e.g. `PALISADE_LOG_KEY_FILE`), so a
//!   secret can come from a mounted volume without editing the file.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error, naming the file, the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub line_col: Option<(usize, usize)>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// A problem with one field, found by [`ProcessConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A configuration file of one process.
pub trait ProcessConfig: DeserializeOwned {
    /// The process name used in environment overrides (`PALISADE_<PROCESS>_…`).
    const PROCESS: &'static str;

    /// Checks what the types alone cannot.
    fn validate(&self) -> Result<(), FieldError>;

    /// Every path field, with its dotted name, so that relative paths can be resolved
    /// against the file's directory.
    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        Vec::new()
    }

    /// The names (as in [`ProcessConfig::paths_mut`]) of path fields that point at
    /// secrets and may be overridden from the environment.
    fn secret_fields() -> &'static [&'static str] {
        &[]
    }
}

/// The environment variable that overrides a secret path field.
pub fn env_var_for<T: ProcessConfig>(field: &str) -> String {
    let mut name = format!("PALISADE_{}_{}", T::PROCESS, field);
    name = name.replace(['.', '-'], "_");
    name.to_ascii_uppercase()
}

/// Reads, parses, resolves and validates a configuration file.
pub fn load<T: ProcessConfig>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        field: None,
        line_col: None,
        problem: format!("cannot read the file: {e}"),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_with(&text, path, &base, &|name| std::env::var_os(name))
}

/// Parses configuration text; `file` is only used in messages and `base` resolves
/// relative paths. `env` looks up overrides (injected so tests need no global state).
pub fn parse_with<T: ProcessConfig>(
    text: &str,
    file: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<T, ConfigError> {
    let err = |field: Option<String>, line_col, problem: String| ConfigError {
        file: file.to_path_buf(),
        field,
        line_col,
        problem,
    };
    let de = toml::Deserializer::new(text);
    let mut config: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line_col = inner.span().map(|span| line_col(text, span.start));
        let field = (path != "." && !path.is_empty()).then_some(path);
        err(field, line_col, inner.message().trim().to_string())
    })?;
    let secrets = T::secret_fields();
    for (name, path) in config.paths_mut() {
        if secrets.contains(&name) {
            if let Some(value) = env(&env_var_for::<T>(name)) {
                *path = PathBuf::from(value);
            }
        }
        if path.as_os_str().is_empty() {
            return Err(err(
                Some(name.to_string()),
                None,
                "path must not be empty".into(),
            ));
        }
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
    config
        .validate()
        .map_err(|e| err(Some(e.field), None, e.problem))?;
    Ok(config)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A `host:port` listen address on which a process serves.
pub fn check_listen(field: &str, value: &str) -> Result<std::net::SocketAddr, FieldError> {
    value.parse().map_err(|_| {
        FieldError::new(
            field,
            format!("{value:?} is not an address such as 127.0.0.1:7400"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        listen: String,
        key_file: PathBuf,
        #[serde(default)]
        batch: Batch,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        #[serde(default)]
        max_entries: u32,
    }

    impl ProcessConfig for Demo {
        const PROCESS: &'static str = "demo";
        fn validate(&self) -> Result<(), FieldError> {
            check_listen("listen", &self.listen)?;
            if self.batch.max_entries > 10_000 {
                return Err(FieldError::new(
                    "batch.max_entries",
                    "must be at most 10000",
                ));
            }
            Ok(())
        }
        fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
            vec![("key_file", &mut self.key_file)]
        }
        fn secret_fields() -> &'static [&'static str] {
            &["key_file"]
        }
    }

    fn parse(text: &str) -> Result<Demo, ConfigError> {
        parse_with(
            text,
            Path::new("/etc/palisade/demo.toml"),
            Path::new("/etc/palisade"),
            &|_| None,
        )
    }

    #[test]
    fn valid_file_resolves_relative_paths() {
        let c = parse("listen = \"127.0.0.1:7400\"\nkey_file = \"keys/log.key\"\n").expect("valid");
        assert_eq!(c.key_file, PathBuf::from("/etc/palisade/keys/log.key"));
    }

    #[test]
    fn unknown_field_names_file_field_and_line() {
        let err = parse("listen = \"127.0.0.1:7400\"\nkey_file = \"k\"\n[batch]\nmax_entrys = 5\n")
            .expect_err("typo");
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/palisade/demo.toml:4:1"), "{msg}");
        assert!(msg.contains("unknown field `max_entrys`"), "{msg}");
        assert_eq!(err.field.as_deref(), Some("batch.max_entrys"), "{msg}");
    }

    #[test]
    fn wrong_type_and_missing_fields() {
        let err = parse("listen = 7400\nkey_file = \"k\"\n").expect_err("type");
        assert_eq!(err.field.as_deref(), Some("listen"), "{err}");
        assert!(err.to_string().contains(":1:10"), "{err}");
        let err = parse("listen = \"127.0.0.1:1\"\n").expect_err("missing");
        assert!(
            err.to_string().contains("missing field `key_file`"),
            "{err}"
        );
        let err = parse("listen = \"127.0.0.1:1\"\nkey_file = \"\"\n").expect_err("empty");
        assert_eq!(err.field.as_deref(), Some("key_file"));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let err = parse("listen = \"nowhere\"\nkey_file = \"k\"\n").expect_err("listen");
        assert_eq!(
            err.to_string(),
            "/etc/palisade/demo.toml: field `listen`: \"nowhere\" is not an address such as 127.0.0.1:7400"
        );
        let err =
            parse("listen = \"127.0.0.1:1\"\nkey_file = \"k\"\n[batch]\nmax_entries = 99999\n")
                .expect_err("range");
        assert_eq!(err.field.as_deref(), Some("batch.max_entries"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("listen = \"127.0.0.1:1\nkey_file = 1\n").expect_err("syntax");
        assert!(err.line_col.is_some(), "{err}");
    }

    #[test]
    fn secret_paths_come_from_the_environment() {
        assert_eq!(env_var_for::<Demo>("key_file"), "PALISADE_DEMO_KEY_FILE");
        let c: Demo = parse_with(
            "listen = \"127.0.0.1:1\"\nkey_file = \"k\"\n",
            Path::new("demo.toml"),
            Path::new("/base"),
            &|name| (name == "PALISADE_DEMO_KEY_FILE").then(|| "/run/secrets/k".into()),
        )
        .expect("valid");
        assert_eq!(c.key_file, PathBuf::from("/run/secrets/k"));
    }
}
