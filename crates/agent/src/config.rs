//! The agent's configuration file (`palisade agent serve --config F`); every field is
//! documented in docs/configuration.md.
//!
//! Nothing in it can widen what operators may do: which actions exist comes only from
//! the approved policy in the TUF repository, which binaries run only from approved
//! releases. The file says *where* things are (etcd, kube-apiserver, certificates) and
//! *whom* to trust (gateway keys, the cluster's log key, its witnesses).

use palisade_core::config::{check_listen, FieldError, ProcessConfig};
use palisade_core::id::{ClusterId, InstanceId, TenantId};
use palisade_tlog_service::config::TlsFiles;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The longest a dispatch may be valid (`expires_at - issued_at`).
pub const MAX_DISPATCH_TTL_SECS: u64 = 600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address to serve HTTPS on, e.g. `127.0.0.1:7403`.
    pub listen: String,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    /// This control-plane instance.
    pub instance: InstanceId,
    /// The redb file holding the replay cache and the newest checkpoint seen.
    pub state: PathBuf,
    /// The agent's Ed25519 signing key (PKCS#8 PEM, as `palisade policy keygen`
    /// writes); results are signed with it. Secret: `PALISADE_AGENT_SIGNING_KEY`.
    pub signing_key: PathBuf,
    /// Public key files (`.pub`) of the gateways whose dispatches are accepted.
    pub gateway_keys: Vec<PathBuf>,
    /// The tenant's public key (`.pub`, from `palisade customer keygen`). With it,
    /// the agent acts only under the newest witness statement signed by this key it
    /// has seen, and requires the tenant's witnesses to cosign as well as the log's.
    /// The statement travels with each dispatch; one older than the newest seen is
    /// refused, also after a restart. An agent whose state holds a statement does not
    /// start without this key.
    #[serde(default)]
    pub tenant_key: Option<PathBuf>,
    /// Longest validity a dispatch may claim, in seconds (≤ 600).
    #[serde(default = "default_max_ttl")]
    pub max_dispatch_ttl_secs: u64,
    /// Tolerated clock difference with the gateway, in seconds (≤ 120): `issued_at`
    /// may be this far in the future and `expires_at` this far in the past.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// The largest action output returned, in bytes (1 KiB to 1 MiB; `kube.nodes`
    /// takes about 600 bytes per node). A larger output makes the result `failed`.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    pub tls: TlsFiles,
    pub log: LogTrust,
    pub trust: TrustFiles,
    pub etcd: EtcdSettings,
    #[serde(default)]
    pub kube: Option<KubeSettings>,
    /// Components the agent supervises (started only from approved releases).
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentSettings>,
    /// Where supervised components' binaries are unpacked and their output kept
    /// (`bin/`, `logs/`, `versions.json`, `<name>.member`); created with mode 0700.
    /// Required when any `[[component]]` is configured.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Tools actions run (`etcdctl` for `etcd.restore`), from approved releases.
    #[serde(default, rename = "tool")]
    pub tools: Vec<ToolSettings>,
    /// Control-plane certificates whose expiry `certs.expiry` reports.
    #[serde(default, rename = "cert")]
    pub certs: Vec<NamedCert>,
    /// Directories whose file systems `instance.resources` reports.
    #[serde(default)]
    pub disks: Vec<PathBuf>,
    /// Encrypted etcd backups (`etcd.backup`, `etcd.backups`, `etcd.backup-prune`).
    #[serde(default)]
    pub backup: Option<BackupSettings>,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this loopback
    /// address; none by default.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// Where backups go and which KMS plugin wraps their keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// `file:///dir`, a directory path (a relative one is resolved against this
    /// file's directory, like every path here), or `s3://bucket[/prefix]`.
    pub store: palisade_backup::StoreUrl,
    /// s3: the region (default: from the environment, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// s3: the endpoint of an S3-compatible service, e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// s3: a file holding `<access key id>:<secret access key>`. Secret.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The customer's KMS v2 plugin (`unix:///path.sock`), which wraps every
    /// backup's data key with the customer's key-encryption key.
    pub kms_socket: String,
    /// Multipart upload part size in MiB (5 to 64; S3 needs at least 5). Memory
    /// during a backup stays within about three parts.
    #[serde(default = "default_part_size")]
    pub part_size_mib: u32,
    /// `etcd.backup-prune` never deletes a backup younger than this many days
    /// (1 to 366), whatever the request says.
    #[serde(default = "default_prune_min_age_days")]
    pub prune_min_age_days: u32,
    /// `etcd.backup-prune` never leaves fewer good backups than this (1 to 1000).
    #[serde(default = "default_prune_min_count")]
    pub prune_min_count: u32,
    /// The public keys of the cluster's other agents: their backups' manifests are
    /// listed and restored here too (this agent's own key always is).
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
}

/// A tool the agent runs for an action, from an approved release like a component:
/// only `etcdctl` (for `etcd.restore`), verified in the TUF repository before each use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    pub name: String,
    pub version: String,
}

/// The tools an action may run.
pub const TOOLS: &[&str] = &["etcdctl"];

fn default_part_size() -> u32 {
    8
}
fn default_prune_min_age_days() -> u32 {
    7
}
fn default_prune_min_count() -> u32 {
    3
}

impl BackupSettings {
    /// The retention floor pruning keeps (claim C5: recent history cannot be deleted
    /// by an operator action).
    pub fn prune_floor(&self) -> palisade_backup::catalog::PruneFloor {
        palisade_backup::catalog::PruneFloor {
            min_age: std::time::Duration::from_secs(u64::from(self.prune_min_age_days) * 86_400),
            min_count: self.prune_min_count as usize,
        }
    }
}

fn default_max_ttl() -> u64 {
    120
}
fn default_skew() -> u64 {
    30
}
fn default_max_output() -> usize {
    256 * 1024
}

pub use palisade_protocol::trust::{LogTrust, TrustFiles};

/// How to reach this instance's etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// Client URLs of this instance's member, e.g. `http://127.0.0.1:2379`; the etcd
    /// actions talk only to the first.
    pub endpoints: Vec<String>,
    /// Client TLS (for `https://` endpoints).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The member's metrics (`etcd.quota`), plain http: etcd's
    /// `--listen-metrics-urls` address with `/metrics`. Default: the first endpoint's
    /// `/metrics`, when that endpoint is `http://`.
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// How long (seconds) another member must have been seen unhealthy, without a
    /// break, before `etcd.member-remove` removes it (default 300).
    #[serde(default = "default_member_remove_after")]
    pub member_remove_after_secs: u64,
    /// This instance's member as the cluster knows it, for `etcd.member-join`.
    #[serde(default)]
    pub member: Option<MemberSettings>,
    /// Client URLs of the cluster's other members: `etcd.member-join` reaches the
    /// cluster through them while this instance's member has no data. With them,
    /// the agent also probes every member's health every 3 s (for
    /// `etcd.member-remove`); a lone member's agent probes nothing.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// This instance's etcd member: the same `--name` and peer URL as its component's
/// arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    pub name: String,
    pub peer_url: String,
}

fn default_member_remove_after() -> u64 {
    300
}

/// How to reach the local kube-apiserver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSettings {
    /// `https://host:port` of the local kube-apiserver.
    pub url: String,
    /// CA certificate that signed the apiserver's serving certificate.
    pub ca: PathBuf,
    /// A bearer token file for the agent's own service account (bound to the
    /// `palisade-agent` ClusterRole in deploy/kubernetes/), read again for every
    /// request so that a rotated token is picked up. Secret.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Or a client certificate and key.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// A supervised component: what to start, from which approved release, with which
/// fixed arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// One of the catalogue's components (`etcd`, `kube-apiserver`, …).
    pub name: String,
    /// The approved release to start (`components/<name>/<version>/…` in the repo).
    /// A version recorded in `<work_dir>/versions.json` by an upgrade takes
    /// precedence.
    pub version: String,
    /// The fixed argument vector (never from a dispatch).
    #[serde(default)]
    pub args: Vec<String>,
    /// The component's whole environment, as `["NAME", "value"]` pairs (fixed, from
    /// this file only); the agent's own environment is not passed on.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// A URL that answers 200 when the component is healthy (e.g. etcd's
    /// `http://127.0.0.1:2379/health`), plain `http://`. Checked when the supervisor
    /// starts, not by `palisade agent check`.
    #[serde(default)]
    pub health_url: Option<String>,
    /// The component's data directory (etcd's `--data-dir`). Once the component was
    /// healthy on it, a missing or empty directory means its data was lost: the
    /// supervisor does not start it again (an etcd member restarted empty under its
    /// old identity would diverge) and waits for `etcd.member-join` (state
    /// `awaiting-join`). That it was healthy is recorded as `<work_dir>/<name>.member`.
    /// Needs `health_url`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// This instance replaces a member of a running cluster: with an empty
    /// `data_dir`, the component waits for `etcd.member-join` instead of starting.
    #[serde(default)]
    pub join: bool,
    /// The component's Prometheus metrics, plain `http://`, for `component.metrics`
    /// (etcd's default: `[etcd] metrics_url`; kube-apiserver's: `/metrics` through
    /// `[kube]`).
    #[serde(default)]
    pub metrics_url: Option<String>,
}

/// A certificate whose expiry is reported (name and dates only, never content).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedCert {
    pub name: String,
    pub path: PathBuf,
    /// For `certs.rotate`: the supervised component that uses it…
    #[serde(default)]
    pub component: Option<String>,
    /// …as which certificate.
    #[serde(default)]
    pub kind: Option<CertKind>,
    /// Its private key, replaced with it.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The CA certificate and key on this instance that issued it.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// How many days a renewed certificate is valid (default 365, never beyond the
    /// CA).
    #[serde(default)]
    pub renew_days: Option<u32>,
}

/// Which certificate of a component a `[[cert]]` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    Serving,
    Peer,
    Client,
}

impl CertKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "serving" => Some(Self::Serving),
            "peer" => Some(Self::Peer),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

impl std::fmt::Display for CertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Serving => "serving",
            Self::Peer => "peer",
            Self::Client => "client",
        })
    }
}

impl ProcessConfig for AgentConfig {
    const PROCESS: &'static str = "agent";

    fn validate(&self) -> Result<(), FieldError> {
        check_listen("listen", &self.listen)?;
        palisade_tlog_service::metrics::check_metrics_listen(self.metrics_listen.as_deref())?;
        if self.gateway_keys.is_empty() {
            return Err(FieldError::new(
                "gateway_keys",
                "at least one gateway public key is needed",
            ));
        }
        if !(1..=MAX_DISPATCH_TTL_SECS).contains(&self.max_dispatch_ttl_secs) {
            return Err(FieldError::new(
                "max_dispatch_ttl_secs",
                format!("must be between 1 and {MAX_DISPATCH_TTL_SECS}"),
            ));
        }
        if self.clock_skew_secs > 120 {
            return Err(FieldError::new("clock_skew_secs", "must be at most 120"));
        }
        if !(1024..=1024 * 1024).contains(&self.max_output_bytes) {
            return Err(FieldError::new(
                "max_output_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        let expected_suffix = format!("/{}", self.cluster);
        if !self.log.origin.ends_with(&expected_suffix) {
            return Err(FieldError::new(
                "log.origin",
                format!(
                    "{:?} is not this cluster's log (it must end in {expected_suffix:?})",
                    self.log.origin
                ),
            ));
        }
        // An agent that needs no witness would accept a checkpoint only the log's key
        // signed: a fork shown to this agent alone would pass. There is no setting
        // for that.
        if self.log.witnesses.is_empty() {
            return Err(FieldError::new(
                "log.witnesses",
                "at least one witness is needed: without one, a log (or whoever holds its key) could show this agent a fork no one else sees",
            ));
        }
        if !(60..=86_400).contains(&self.log.max_cosignature_age_secs) {
            return Err(FieldError::new(
                "log.max_cosignature_age_secs",
                "must be between 60 (the log cosigns at least every minute) and 86400",
            ));
        }
        if self.log.witness_quorum == 0 {
            return Err(FieldError::new(
                "log.witness_quorum",
                "must be at least 1: a quorum of 0 accepts checkpoints no witness cosigned",
            ));
        }
        self.log.policy().map_err(|e| FieldError::new("log", e))?;
        self.log
            .retired()
            .map_err(|e| FieldError::new("log.retired_keys", e))?;
        if self.etcd.endpoints.is_empty() {
            return Err(FieldError::new("etcd.endpoints", "at least one endpoint"));
        }
        for (i, e) in self.etcd.endpoints.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(FieldError::new(
                    format!("etcd.endpoints[{i}]"),
                    format!("{e:?} is not an http(s) URL"),
                ));
            }
        }
        for (i, e) in self.etcd.peers.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(FieldError::new(
                    format!("etcd.peers[{i}]"),
                    format!("{e:?} is not an http(s) URL"),
                ));
            }
        }
        if let Some(u) = &self.etcd.metrics_url {
            if !u.starts_with("http://") {
                return Err(FieldError::new(
                    "etcd.metrics_url",
                    "a plain http:// URL (etcd's --listen-metrics-urls)",
                ));
            }
        }
        if let Some(m) = &self.etcd.member {
            if palisade_core::InstanceId::parse(&m.name).is_err() {
                return Err(FieldError::new(
                    "etcd.member.name",
                    "a member name is an instance id (lower-case letters, digits, '-', '.')",
                ));
            }
            if !(m.peer_url.starts_with("http://") || m.peer_url.starts_with("https://")) {
                return Err(FieldError::new("etcd.member.peer_url", "an http(s) URL"));
            }
            if self.etcd.peers.is_empty() {
                return Err(FieldError::new(
                    "etcd.peers",
                    "a member that can join needs the other members' client URLs",
                ));
            }
        }
        for (i, c) in self.components.iter().enumerate() {
            if c.data_dir.is_some() && c.health_url.is_none() {
                return Err(FieldError::new(
                    format!("component[{i}].health_url"),
                    "a component with a data_dir needs a health_url: its data is recorded as its own once it is healthy on it",
                ));
            }
        }
        if self.etcd.member_remove_after_secs < 10 {
            return Err(FieldError::new(
                "etcd.member_remove_after_secs",
                "at least 10: a member is removed only after it has been unhealthy that long",
            ));
        }
        for (i, t) in self.tools.iter().enumerate() {
            if !TOOLS.contains(&t.name.as_str()) {
                return Err(FieldError::new(
                    format!("tool[{i}].name"),
                    format!("one of {}", TOOLS.join(", ")),
                ));
            }
        }
        let mut renewable = std::collections::BTreeSet::new();
        for (i, c) in self.certs.iter().enumerate() {
            let field = format!("cert[{i}]");
            match (&c.component, c.kind) {
                (None, None) => continue,
                (Some(component), Some(kind)) => {
                    if !palisade_policy::catalogue::COMPONENTS.contains(&component.as_str()) {
                        return Err(FieldError::new(
                            format!("{field}.component"),
                            format!(
                                "one of {}",
                                palisade_policy::catalogue::COMPONENTS.join(", ")
                            ),
                        ));
                    }
                    if !renewable.insert((component.clone(), kind)) {
                        return Err(FieldError::new(
                            field,
                            format!("a second [[cert]] for {component}'s {kind} certificate"),
                        ));
                    }
                }
                _ => {
                    return Err(FieldError::new(
                        field,
                        "a renewable certificate names both component and kind",
                    ))
                }
            }
            if c.key.is_none() || c.ca_cert.is_none() || c.ca_key.is_none() {
                return Err(FieldError::new(
                    field,
                    "a renewable certificate names its key, ca_cert and ca_key",
                ));
            }
        }
        if let Some(k) = &self.kube {
            if !k.url.starts_with("https://") {
                return Err(FieldError::new(
                    "kube.url",
                    "the kube-apiserver is only reached over https",
                ));
            }
            let cert_pair = k.client_cert.is_some() && k.client_key.is_some();
            if k.token_file.is_none() && !cert_pair {
                return Err(FieldError::new(
                    "kube",
                    "needs token_file, or client_cert and client_key",
                ));
            }
            if k.token_file.is_some() && cert_pair {
                return Err(FieldError::new(
                    "kube",
                    "use either token_file or client_cert and client_key, not both",
                ));
            }
            if k.client_cert.is_some() != k.client_key.is_some() {
                return Err(FieldError::new(
                    "kube.client_key",
                    "client_cert and client_key go together",
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.components.iter().enumerate() {
            if !palisade_policy::catalogue::COMPONENTS.contains(&c.name.as_str()) {
                return Err(FieldError::new(
                    format!("component[{i}].name"),
                    format!(
                        "{:?} is not a supervised component ({})",
                        c.name,
                        palisade_policy::catalogue::COMPONENTS.join(", ")
                    ),
                ));
            }
            if !names.insert(&c.name) {
                return Err(FieldError::new(
                    format!("component[{i}].name"),
                    "listed twice",
                ));
            }
        }
        if !self.components.is_empty() && self.work_dir.is_none() {
            return Err(FieldError::new(
                "work_dir",
                "needed when components are supervised",
            ));
        }
        if let Some(b) = &self.backup {
            if !b.kms_socket.starts_with("unix://") {
                return Err(FieldError::new(
                    "backup.kms_socket",
                    "the KMS plugin is reached on a Unix socket: unix:///path.sock",
                ));
            }
            if !(5..=64).contains(&b.part_size_mib) {
                return Err(FieldError::new(
                    "backup.part_size_mib",
                    "must be between 5 and 64",
                ));
            }
            if !(1..=366).contains(&b.prune_min_age_days) {
                return Err(FieldError::new(
                    "backup.prune_min_age_days",
                    "must be between 1 and 366 (pruning never deletes backups younger than this)",
                ));
            }
            if !(1..=1000).contains(&b.prune_min_count) {
                return Err(FieldError::new(
                    "backup.prune_min_count",
                    "must be between 1 and 1000 (pruning never leaves fewer backups than this)",
                ));
            }
        }
        Ok(())
    }

    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let mut v = vec![
            ("state", &mut self.state),
            ("signing_key", &mut self.signing_key),
            ("tls.ca", &mut self.tls.ca),
            ("tls.cert", &mut self.tls.cert),
            ("tls.key", &mut self.tls.key),
            ("trust.repo", &mut self.trust.repo),
            ("trust.root", &mut self.trust.root),
            ("trust.datastore", &mut self.trust.datastore),
        ];
        for p in &mut self.gateway_keys {
            v.push(("gateway_keys", p));
        }
        if let Some(p) = &mut self.tenant_key {
            v.push(("tenant_key", p));
        }
        if let Some(t) = &mut self.etcd.tls {
            v.push(("etcd.tls.ca", &mut t.ca));
            v.push(("etcd.tls.cert", &mut t.cert));
            v.push(("etcd.tls.key", &mut t.key));
        }
        if let Some(k) = &mut self.kube {
            v.push(("kube.ca", &mut k.ca));
            if let Some(t) = &mut k.token_file {
                v.push(("kube.token_file", t));
            }
            if let Some(c) = &mut k.client_cert {
                v.push(("kube.client_cert", c));
            }
            if let Some(c) = &mut k.client_key {
                v.push(("kube.client_key", c));
            }
        }
        if let Some(w) = &mut self.work_dir {
            v.push(("work_dir", w));
        }
        for c in &mut self.certs {
            v.push(("cert.path", &mut c.path));
            for p in [&mut c.key, &mut c.ca_cert, &mut c.ca_key]
                .into_iter()
                .flatten()
            {
                v.push(("cert.key", p));
            }
        }
        for c in &mut self.components {
            if let Some(d) = &mut c.data_dir {
                v.push(("component.data_dir", d));
            }
        }
        for d in &mut self.disks {
            v.push(("disks", d));
        }
        if let Some(b) = &mut self.backup {
            if let palisade_backup::StoreUrl::Local(dir) = &mut b.store {
                v.push(("backup.store", dir));
            }
            if let Some(f) = &mut b.credentials_file {
                v.push(("backup.credentials_file", f));
            }
            for k in &mut b.trusted_keys {
                v.push(("backup.trusted_keys", k));
            }
        }
        v
    }

    fn secret_fields() -> &'static [&'static str] {
        &[
            "signing_key",
            "tls.key",
            "etcd.tls.key",
            "kube.token_file",
            "kube.client_key",
            "backup.credentials_file",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_backup::StoreUrl;
    use palisade_core::config::{parse_with, ConfigError};
    use palisade_tlog::note::{KeyType, SignerKey};
    use std::path::Path;

    /// A minimal valid agent.toml with the given `[backup]` store line.
    fn load(store: &str) -> Result<AgentConfig, ConfigError> {
        let log = SignerKey::generate("palisade.local/log", KeyType::Ed25519)
            .expect("log key")
            .verifier();
        let witness = SignerKey::generate("palisade.local/witness", KeyType::Cosignature)
            .expect("witness key")
            .verifier();
        let text = format!(
            "listen = \"127.0.0.1:7403\"\ntenant = \"demo\"\ncluster = \"demo\"\n\
             instance = \"demo-0\"\nstate = \"state.redb\"\nsigning_key = \"keys/agent.key\"\n\
             gateway_keys = [\"keys/gateway.pub\"]\n\n\
             [tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n\n\
             [log]\norigin = \"palisade.local/log/demo\"\nkey = \"{log}\"\n\
             witnesses = [\"{witness}\"]\nwitness_quorum = 1\n\n\
             [trust]\nrepo = \"repo\"\nroot = \"root.json\"\ndatastore = \"tuf\"\n\n\
             [etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n\n\
             [backup]\n{store}\nkms_socket = \"unix:///run/palisade/kms.sock\"\n"
        );
        parse_with(
            &text,
            Path::new("/etc/palisade/agent.toml"),
            Path::new("/etc/palisade"),
            &|_| None,
        )
    }

    fn store_of(c: AgentConfig) -> StoreUrl {
        c.backup.expect("a [backup] table").store
    }

    #[test]
    fn relative_backup_store_is_resolved_against_the_config_files_directory() {
        let c = load("store = \"backups\"").expect("valid");
        assert_eq!(c.state, Path::new("/etc/palisade/state.redb"));
        assert_eq!(
            store_of(c),
            StoreUrl::Local("/etc/palisade/backups".into()),
            "like every other relative path in the file"
        );
        let c = load("store = \"../data/backups\"").expect("valid");
        assert_eq!(
            store_of(c),
            StoreUrl::Local("/etc/palisade/../data/backups".into())
        );
    }

    #[test]
    fn absolute_and_s3_backup_stores_are_kept_as_written() {
        for (store, want) in [
            (
                "/var/lib/palisade/backups",
                StoreUrl::Local("/var/lib/palisade/backups".into()),
            ),
            (
                "file:///var/lib/palisade/backups",
                StoreUrl::Local("/var/lib/palisade/backups".into()),
            ),
            (
                "s3://bucket/prod",
                StoreUrl::S3 {
                    bucket: "bucket".into(),
                    prefix: "prod".into(),
                },
            ),
        ] {
            let c = load(&format!("store = \"{store}\"")).expect("valid");
            assert_eq!(store_of(c), want, "{store}");
        }
    }

    #[test]
    fn invalid_backup_store_is_refused_naming_the_field() {
        for store in ["", "file://backups", "https://bucket.example/prod", "s3://"] {
            let e = load(&format!("store = \"{store}\"")).expect_err(store);
            assert_eq!(e.field.as_deref(), Some("backup.store"), "{store}: {e}");
            assert!(e.problem.contains("invalid backup store"), "{store}: {e}");
        }
    }
}
