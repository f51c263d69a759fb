//! The log service's configuration file (`palisade log serve --config F`); every field
//! is documented in docs/configuration.md.

use palisade_core::config::{check_listen, FieldError, ProcessConfig};
use palisade_core::id::{ClusterId, TenantId};
use palisade_tlog::note::{KeyType, VerifierKey};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The name of the governance log, beside the per-cluster logs. A cluster may not be
/// called this.
pub const GOVERNANCE: &str = "governance";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Address to serve HTTPS on, e.g. `127.0.0.1:7401`.
    pub listen: String,
    /// Origins are `<base_origin>/<cluster-id>` and `<base_origin>/governance`.
    pub base_origin: String,
    /// The log's signed-note private key (`PRIVATE+KEY+…`); its name must equal
    /// `base_origin`. Secret: `PALISADE_LOG_KEY_FILE` overrides it.
    pub key_file: PathBuf,
    /// During a key rotation, the key the log rotates to (same name): every
    /// checkpoint is signed by both keys. Secret: `PALISADE_LOG_NEXT_KEY_FILE`
    /// overrides it. See docs/operations.md, "Rotating the log key".
    #[serde(default)]
    pub next_key_file: Option<PathBuf>,
    /// The inventory: which clusters exist and which tenant owns each.
    pub inventory: PathBuf,
    pub storage: StorageConfig,
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub checkpoint: CheckpointSettings,
    pub tls: TlsFiles,
    /// Bearer tokens with which tenants read their clusters' logs.
    #[serde(default, rename = "reader")]
    pub readers: Vec<Reader>,
    /// Witnesses asked to cosign every checkpoint.
    #[serde(default, rename = "witness")]
    pub witnesses: Vec<WitnessEntry>,
    /// How many witness cosignatures an append needs before it is acknowledged; at
    /// most the number of `[[witness]]` entries, and at start every log must have at
    /// least this many witnesses that apply to it, or the log does not start. 0:
    /// appends are acknowledged once the log-signed checkpoint is stored.
    #[serde(default)]
    pub witness_quorum: usize,
    /// Several log processes on one storage: only the holder of this etcd lease
    /// sequences and serves; the others stand by and take over when it is lost. A
    /// process writes storage only while its lease holds, and on S3 writes
    /// checkpoints conditionally.
    #[serde(default)]
    pub leader: Option<LeaderSettings>,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this loopback
    /// address; none by default.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// The sequencer lease (`[leader]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderSettings {
    pub endpoints: Vec<String>,
    /// The etcd key prefix of this deployment, e.g. `/palisade`.
    pub prefix: String,
    #[serde(default)]
    pub tls: Option<palisade_state::EtcdTls>,
    /// How long a lost leader keeps the lease, in seconds (2–60).
    #[serde(default = "default_lease_ttl")]
    pub ttl_secs: u64,
}

fn default_lease_ttl() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A local directory (every write fsynced).
    Local { dir: PathBuf },
    /// An S3-compatible bucket.
    S3 {
        bucket: String,
        region: String,
        /// The endpoint of a non-AWS service, e.g. `http://127.0.0.1:9000`:
        /// path-style requests, and plain `http://` only when the endpoint says so.
        #[serde(default)]
        endpoint: Option<String>,
        /// A file holding `<access key id>:<secret access key>` on one line; without
        /// it, the standard AWS credential chain: environment variables, the shared
        /// profile, web identity, the ECS container endpoint, then EC2 instance
        /// metadata, with temporary credentials renewed before they expire.
        #[serde(default)]
        credentials_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// At most this many entries per batch (1–4096). A larger batch writes the same
    /// few objects (partial tiles, bundles, checkpoint) for more entries: more
    /// throughput under load, no effect on an idle log.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// How long the first entry of a batch waits for more beyond those already
    /// queued (0–10000 ms). With 0, a batch is whatever queued while the previous
    /// one was written (group commit): no added latency, batches grow with load.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// With local storage: each batch is made durable as one record in the log's
    /// `journal` file, and the tiles, bundles and checkpoints are written out at most
    /// this often (0–60000 ms), and when the log starts and stops; storage can lag
    /// this much behind the read API, which serves the newest. 0: every batch writes
    /// them before it is acknowledged, without a journal (as S3 storage always does).
    #[serde(default = "default_publish_interval_ms")]
    pub publish_interval_ms: u64,
}

/// `[checkpoint]`: how fresh every log's witnessed checkpoint is kept.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSettings {
    /// A log with witnesses gets fresh cosignatures at least this often, appends or
    /// not, so that time moves forward in every log: an idle log and a frozen one
    /// look different to a customer who checks the cosignatures' age.
    #[serde(default = "default_max_interval_secs")]
    pub max_interval_secs: u64,
}

fn default_max_interval_secs() -> u64 {
    60
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            max_interval_secs: default_max_interval_secs(),
        }
    }
}

fn default_max_entries() -> usize {
    crate::sequencer::BatchConfig::default().max_entries
}
fn default_max_delay_ms() -> u64 {
    0
}
fn default_publish_interval_ms() -> u64 {
    5000
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
            max_delay_ms: default_max_delay_ms(),
            publish_interval_ms: default_publish_interval_ms(),
        }
    }
}

impl BatchSettings {
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    pub fn publish_interval(&self) -> Duration {
        Duration::from_millis(self.publish_interval_ms)
    }
}

/// A process's TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The Palisade CA certificate: the only trust anchor for peers.
    pub ca: PathBuf,
    /// This process's certificate (of its own role).
    pub cert: PathBuf,
    /// Its private key. Secret: `PALISADE_<PROCESS>_TLS_KEY` overrides it.
    pub key: PathBuf,
}

/// Checks `[[reader]]` entries: each token digest is 64 lower-case hex digits.
pub fn check_readers(readers: &[Reader]) -> Result<(), FieldError> {
    for (i, r) in readers.iter().enumerate() {
        let hex = r.token_sha256.len() == 64
            && r.token_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(FieldError::new(
                format!("reader[{i}].token_sha256"),
                "must be 64 lower-case hex digits",
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reader {
    pub tenant: TenantId,
    /// Lower-case hex SHA-256 of the bearer token (the token itself is never stored;
    /// `printf %s "$TOKEN" | sha256sum`). Whitespace around a presented token is
    /// ignored.
    pub token_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEntry {
    pub name: String,
    /// Base URL; the log posts to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's verifier key (cosignature type).
    pub key: String,
    /// Only for these clusters' logs; empty means every log.
    #[serde(default)]
    pub clusters: Vec<ClusterId>,
    /// An append also waits for this witness's cosignature, beside the quorum: a
    /// tenant's own witness, which that cluster's agents require.
    #[serde(default)]
    pub required: bool,
}

impl WitnessEntry {
    pub fn verifier(&self) -> Result<VerifierKey, String> {
        VerifierKey::parse(&self.key).map_err(|e| e.to_string())
    }

    pub fn applies_to(&self, log: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c.as_str() == log)
    }
}

impl ProcessConfig for LogConfig {
    const PROCESS: &'static str = "log";

    fn validate(&self) -> Result<(), FieldError> {
        check_listen("listen", &self.listen)?;
        crate::metrics::check_metrics_listen(self.metrics_listen.as_deref())?;
        if !palisade_tlog::note::is_valid_key_name(&self.base_origin) {
            return Err(FieldError::new(
                "base_origin",
                format!(
                    "{:?} is not a valid log origin (no spaces or '+')",
                    self.base_origin
                ),
            ));
        }
        if !(1..=crate::sequencer::MAX_BATCH_ENTRIES).contains(&self.batch.max_entries) {
            return Err(FieldError::new(
                "batch.max_entries",
                format!(
                    "must be between 1 and {}",
                    crate::sequencer::MAX_BATCH_ENTRIES
                ),
            ));
        }
        if self.batch.max_delay_ms > 10_000 {
            return Err(FieldError::new(
                "batch.max_delay_ms",
                "must be at most 10000",
            ));
        }
        if !(1..=3600).contains(&self.checkpoint.max_interval_secs) {
            return Err(FieldError::new(
                "checkpoint.max_interval_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.batch.publish_interval_ms > 60_000 {
            return Err(FieldError::new(
                "batch.publish_interval_ms",
                "must be at most 60000",
            ));
        }
        check_readers(&self.readers)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in self.witnesses.iter().enumerate() {
            let key = w
                .verifier()
                .map_err(|e| FieldError::new(format!("witness[{i}].key"), e))?;
            if key.key_type() != KeyType::Cosignature {
                return Err(FieldError::new(
                    format!("witness[{i}].key"),
                    "must be a cosignature (type 0x04) verifier key",
                ));
            }
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(FieldError::new(
                    format!("witness[{i}].url"),
                    format!("{:?} is not an http(s) URL", w.url),
                ));
            }
            if !names.insert(&w.name) {
                return Err(FieldError::new(
                    format!("witness[{i}].name"),
                    format!("witness {:?} is listed twice", w.name),
                ));
            }
        }
        if let Some(l) = &self.leader {
            if !(2..=60).contains(&l.ttl_secs) {
                return Err(FieldError::new(
                    "leader.ttl_secs",
                    "must be between 2 and 60",
                ));
            }
            if l.endpoints.is_empty() {
                return Err(FieldError::new("leader.endpoints", "at least one endpoint"));
            }
        }
        if self.witness_quorum > self.witnesses.len() {
            return Err(FieldError::new(
                "witness_quorum",
                format!(
                    "{} is more than the {} witnesses configured",
                    self.witness_quorum,
                    self.witnesses.len()
                ),
            ));
        }
        Ok(())
    }

    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let mut v = vec![
            ("key_file", &mut self.key_file),
            ("inventory", &mut self.inventory),
            ("tls.ca", &mut self.tls.ca),
            ("tls.cert", &mut self.tls.cert),
            ("tls.key", &mut self.tls.key),
        ];
        if let Some(next) = self.next_key_file.as_mut() {
            v.push(("next_key_file", next));
        }
        if let Some(palisade_state::EtcdTls { ca, cert, key }) =
            self.leader.as_mut().and_then(|l| l.tls.as_mut())
        {
            v.push(("leader.tls.ca", ca));
            v.push(("leader.tls.cert", cert));
            v.push(("leader.tls.key", key));
        }
        match &mut self.storage {
            StorageConfig::Local { dir } => v.push(("storage.dir", dir)),
            StorageConfig::S3 {
                credentials_file: Some(f),
                ..
            } => v.push(("storage.credentials_file", f)),
            StorageConfig::S3 { .. } => {}
        }
        v
    }

    fn secret_fields() -> &'static [&'static str] {
        &[
            "key_file",
            "next_key_file",
            "tls.key",
            "storage.credentials_file",
            "leader.tls.key",
        ]
    }
}
