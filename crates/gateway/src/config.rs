//! The gateway's configuration file (`palisade gateway serve --config F`); every field
//! is documented in docs/configuration.md.
//!
//! Nothing here can bypass the pipeline: there is no flag for an emergency path, no
//! role that skips on-call, no action outside the approved policy.

use palisade_core::config::{check_listen, FieldError, ProcessConfig};
use palisade_core::id::{ClusterId, InstanceId};
use palisade_tlog::note::{KeyType, VerifierKey};
use palisade_tlog_service::config::TlsFiles;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to serve HTTPS on, e.g. `127.0.0.1:7400`.
    pub listen: String,
    /// The Ed25519 key dispatches are signed with (PKCS#8 PEM). Secret:
    /// `PALISADE_GATEWAY_SIGNING_KEY`.
    pub signing_key: PathBuf,
    /// The secret that turns operator names into stable pseudonyms (any file of at
    /// least 32 random bytes, used as they are). An operator appears in a tenant's
    /// log as `op-` and 16 hex digits derived from this secret, the tenant and the
    /// name, so one operator has a different pseudonym in each tenant's log. Changing
    /// it changes every pseudonym; gateway replicas must share it. Secret:
    /// `PALISADE_GATEWAY_PSEUDONYM_KEY`.
    pub pseudonym_key: PathBuf,
    pub inventory: PathBuf,
    /// Where operations, idempotency keys and rate-limit counters live: a redb file
    /// path (one gateway), or a `[state]` table (`kind = "etcd"` for several gateway
    /// replicas sharing state; see docs/configuration.md). The redb file's directory
    /// also receives `dev-jwks.json` when the development issuer is on.
    pub state: StateSetting,
    /// How long a dispatch is valid, in seconds (5–600). More than the agents'
    /// `max_dispatch_ttl_secs`, and they refuse every dispatch as `ttl_too_long`.
    #[serde(default = "default_ttl")]
    pub dispatch_ttl_secs: u64,
    /// How long a request waits for its action before answering 202 with an
    /// operation to poll.
    #[serde(default = "default_wait")]
    pub wait_secs: u64,
    /// How long after a dispatch expired the gateway keeps asking an agent that does
    /// not answer how it ended, before it logs the result `outcome_unknown`
    /// (10–604800 s; agents keep results for 7 days).
    #[serde(default = "default_result_deadline")]
    pub result_deadline_secs: u64,
    pub tls: TlsFiles,
    pub log: LogSettings,
    pub trust: palisade_protocol::trust::TrustFiles,
    #[serde(default)]
    pub oidc: Option<palisade_authn::OidcSettings>,
    /// The development issuer (`palisade op login --dev`): only for `palisade up` and
    /// tests. Never enable it on a real deployment.
    #[serde(default)]
    pub dev_issuer: Option<DevIssuerSettings>,
    /// Whether operators may authenticate with a client certificate (role
    /// `operator`) instead of a token. Off by default: whoever holds a CA key could
    /// mint one for anyone on call. The operator's name is the certificate's common
    /// name.
    #[serde(default)]
    pub operator_certificates: bool,
    /// The CA certificates (PEM bundle) an operator certificate must chain to; no CA
    /// by default. Required when `operator_certificates` is on. Name a CA of its
    /// own, held by whoever vouches for operators, not the deployment's `[tls] ca`,
    /// which issues the components' certificates.
    #[serde(default)]
    pub operator_ca: Option<PathBuf>,
    /// The CA certificates (PEM bundle) a tenant's approval webhook must chain to;
    /// by default, the platform's trust store. Webhooks are reached over `https`
    /// only, and redirects are not followed.
    #[serde(default)]
    pub webhook_ca: Option<PathBuf>,
    /// YAML rota files.
    #[serde(default)]
    pub rotas: Vec<PathBuf>,
    /// iCalendar feeds (file or URL), each one schedule.
    #[serde(default, rename = "ical")]
    pub icals: Vec<IcalFeed>,
    /// How old, in seconds, the last successful fetch of an iCalendar feed from a URL
    /// may be for its shifts to grant anything (default 900: three missed refreshes;
    /// 1–86400). Beyond it, and before the first good fetch, the feed's schedule
    /// grants nothing, a request that finds no other grant is refused with
    /// `oncall-feed-stale`, and `palisade_gateway_oncall_feed_stale{schedule}` is 1.
    #[serde(default = "default_feed_max_age")]
    pub oncall_feed_max_age_secs: u64,
    /// Which schedules grant which roles on which clusters.
    #[serde(default, rename = "grant")]
    pub grants: Vec<Grant>,
    /// Agents' public result-signing keys. List every instance of the inventory: the
    /// gateway still dispatches to an instance without one (the intent is logged and
    /// the action runs), but cannot verify its answer, so the operation and the
    /// logged result say `failed` although the action ran.
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentKey>,
    /// Tenants' bearer tokens for the customer access-log API.
    #[serde(default, rename = "reader")]
    pub readers: Vec<Reader>,
    /// Tenants' public keys (`tenant.pub`): a witness statement is recorded only if
    /// the tenant's key signed it, so a reader token alone cannot lock a cluster. A
    /// tenant without one gets `403` from `PUT …/trust`.
    #[serde(default, rename = "tenant_key")]
    pub tenant_keys: Vec<TenantKey>,
    /// How many refusals of one operator on one cluster are logged one by one
    /// ([`crate::refusals`]). Beyond `max` within `per_secs`, a refusal is still
    /// answered with its status, its detail saying `not logged individually`, and
    /// counted; at most once per `per_secs` the count is logged as one refusal entry
    /// (action `refusals-not-logged`, stage `rate_limit`). Counts not yet logged are
    /// logged when the gateway stops.
    #[serde(default)]
    pub refusal_log: crate::refusals::RefusalLogLimit,
    /// Automation identities (scheduled backups): who they are, and what they may run.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceIdentity>,
}

/// `[[service]]`: an automation identity, such as the scheduler that takes backups.
/// It authenticates with a client certificate pinned here (from `operator_ca`), holds
/// a standing grant of `role` on `clusters` for `actions` only, is rate-limited under
/// its own name, and is logged like an operator, marked as automation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceIdentity {
    /// Lower-case letters, digits and `-`: logged as the service's name.
    pub name: String,
    /// SHA-256 (hex) of each certificate it may present (two while rotating).
    pub certificates: Vec<String>,
    /// The role its grant carries (the policy's actions name the role they need).
    pub role: String,
    /// The only actions it may run.
    pub actions: Vec<String>,
    /// Cluster ids, or `"*"`.
    pub clusters: Vec<String>,
}

impl ServiceIdentity {
    /// The name it acts under: `service/<name>`, which no person's name can be (`/`
    /// is not in an operator name).
    pub fn operator_name(&self) -> String {
        format!("service/{}", self.name)
    }
}

fn default_ttl() -> u64 {
    60
}
fn default_wait() -> u64 {
    20
}
fn default_result_deadline() -> u64 {
    3600
}
fn default_feed_max_age() -> u64 {
    900
}

/// `state = "file.redb"` or a `[state]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StateSetting {
    Path(PathBuf),
    Backend(palisade_state::StateBackend),
}

impl StateSetting {
    pub fn backend(&self) -> palisade_state::StateBackend {
        match self {
            StateSetting::Path(p) => palisade_state::StateBackend::Redb { path: p.clone() },
            StateSetting::Backend(b) => b.clone(),
        }
    }

    /// The directory for the gateway's own files (the redb file's, or `fallback`).
    pub fn dir(&self, fallback: &std::path::Path) -> PathBuf {
        match self {
            StateSetting::Path(p)
            | StateSetting::Backend(palisade_state::StateBackend::Redb { path: p }) => p
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_else(|| fallback.to_path_buf()),
            StateSetting::Backend(_) => fallback.to_path_buf(),
        }
    }
}

/// The log service and what makes its checkpoints trustworthy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// e.g. `https://127.0.0.1:7401`
    pub url: String,
    /// Cluster logs are `<base_origin>/<cluster>`.
    pub base_origin: String,
    /// The log's verifier key.
    pub key: String,
    #[serde(default)]
    pub witnesses: Vec<String>,
    #[serde(default)]
    pub witness_quorum: usize,
}

impl LogSettings {
    /// The checkpoint policy of one cluster's log.
    pub fn policy_for(
        &self,
        cluster: &ClusterId,
    ) -> Result<palisade_tlog::checkpoint::LogPolicy, String> {
        palisade_protocol::trust::LogTrust {
            origin: format!("{}/{cluster}", self.base_origin),
            key: self.key.clone(),
            retired_keys: Vec::new(),
            witnesses: self.witnesses.clone(),
            witness_quorum: self.witness_quorum,
            max_cosignature_age_secs: 300,
        }
        .policy()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIssuerSettings {
    /// The issuer's Ed25519 key file (PKCS#8 PEM, mode 0600; created by `palisade
    /// up`). Its tokens (`POST /v1/dev/login`) are EdDSA JWTs with audience
    /// `palisade-gateway` and issuer `https://<listen>/dev`, checked like an OIDC
    /// issuer's against `dev-jwks.json`, which the gateway writes beside its state
    /// file at start. Secret: `PALISADE_GATEWAY_DEV_ISSUER_KEY`.
    pub key: PathBuf,
    /// Token lifetime, seconds: at most 86400, or every development login fails
    /// with 422.
    #[serde(default = "default_dev_ttl")]
    pub token_ttl_secs: u64,
}

fn default_dev_ttl() -> u64 {
    12 * 3600
}

/// `[[ical]]`: one schedule from an iCalendar feed, `file` (read at start) or `url`
/// (`https://`, fetched at start and every five minutes with the platform's trust
/// store and a 30 s timeout). A failed fetch or parse keeps the previous shifts and is
/// logged (`on-call feed unavailable`, `on-call feed refused; keeping the last one`),
/// for at most `oncall_feed_max_age_secs`. A feed may share its schedule name with a
/// rota schedule; the shifts add up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcalFeed {
    pub schedule: String,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
}

/// Holders of a current shift in `schedule` get `roles` on the matching clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub schedule: String,
    pub roles: Vec<String>,
    /// Cluster ids, or `"*"` for every cluster of the inventory.
    pub clusters: Vec<String>,
}

impl Grant {
    pub fn covers(&self, cluster: &ClusterId) -> bool {
        self.clusters
            .iter()
            .any(|c| c == "*" || c == cluster.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKey {
    pub instance: InstanceId,
    /// The agent's `.pub` file.
    pub key: PathBuf,
}

/// `[[tenant_key]]`: a tenant's statement key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantKey {
    pub tenant: palisade_core::TenantId,
    /// The tenant's `.pub` file (`palisade customer keygen`).
    pub key: PathBuf,
}

/// A tenant's access-log token (as the log service configures it).
pub use palisade_tlog_service::config::Reader;

impl GatewayConfig {
    /// The bundle operator certificates must chain to, if they are accepted at all.
    pub fn operator_ca_if_enabled(&self) -> Option<&std::path::Path> {
        self.operator_ca
            .as_deref()
            .filter(|_| self.operator_certificates)
    }
}

impl ProcessConfig for GatewayConfig {
    const PROCESS: &'static str = "gateway";

    fn validate(&self) -> Result<(), FieldError> {
        check_listen("listen", &self.listen)?;
        let mut pinned = std::collections::HashSet::new();
        for svc in &self.services {
            let ok_name = !svc.name.is_empty()
                && svc.name.len() <= 32
                && svc
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok_name {
                return Err(FieldError::new(
                    "service.name",
                    format!("{:?}: 1-32 lower-case letters, digits and -", svc.name),
                ));
            }
            if svc.certificates.is_empty() || svc.actions.is_empty() || svc.clusters.is_empty() {
                return Err(FieldError::new(
                    "service",
                    format!(
                        "service {}: certificates, actions and clusters must each name at least one",
                        svc.name
                    ),
                ));
            }
            for c in &svc.certificates {
                let hex = c.len() == 64
                    && c.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !hex || !pinned.insert(c.clone()) {
                    return Err(FieldError::new(
                        "service.certificates",
                        format!(
                            "service {}: {c:?} is not a lower-case hex SHA-256, or is pinned twice",
                            svc.name
                        ),
                    ));
                }
            }
            if !self.operator_certificates {
                return Err(FieldError::new(
                    "service",
                    "services authenticate with certificates: set operator_certificates = true and operator_ca",
                ));
            }
        }
        if !(5..=600).contains(&self.dispatch_ttl_secs) {
            return Err(FieldError::new(
                "dispatch_ttl_secs",
                "must be between 5 and 600",
            ));
        }
        if !(1..=300).contains(&self.wait_secs) {
            return Err(FieldError::new("wait_secs", "must be between 1 and 300"));
        }
        if !(10..=7 * 24 * 3600).contains(&self.result_deadline_secs) {
            return Err(FieldError::new(
                "result_deadline_secs",
                "must be between 10 and 604800 (7 days, how long agents keep results)",
            ));
        }
        if !self.log.url.starts_with("https://") {
            return Err(FieldError::new(
                "log.url",
                "the log is only reached over https",
            ));
        }
        let key = VerifierKey::parse(&self.log.key)
            .map_err(|e| FieldError::new("log.key", e.to_string()))?;
        if key.key_type() != KeyType::Ed25519 {
            return Err(FieldError::new(
                "log.key",
                "must be an Ed25519 verifier key",
            ));
        }
        if self.log.witness_quorum > self.log.witnesses.len() {
            return Err(FieldError::new(
                "log.witness_quorum",
                "more than the witnesses listed",
            ));
        }
        if self.oidc.is_none() && self.dev_issuer.is_none() {
            return Err(FieldError::new(
                "oidc",
                "an OIDC issuer is needed (operators also may use mTLS certificates, but tokens are the default)",
            ));
        }
        if self.operator_certificates && self.operator_ca.is_none() {
            return Err(FieldError::new(
                "operator_ca",
                "operator_certificates is on, but no CA is named for operator certificates: \
                 set operator_ca to the CA bundle that issues them",
            ));
        }
        if let Some(o) = &self.oidc {
            o.validate()
                .map_err(|e| FieldError::new("oidc", e.to_string()))?;
        }
        for (i, g) in self.grants.iter().enumerate() {
            if g.roles.is_empty() || g.clusters.is_empty() {
                return Err(FieldError::new(
                    format!("grant[{i}]"),
                    "needs at least one role and one cluster (or \"*\")",
                ));
            }
        }
        for (i, f) in self.icals.iter().enumerate() {
            if f.file.is_some() == f.url.is_some() {
                return Err(FieldError::new(
                    format!("ical[{i}]"),
                    "needs exactly one of file and url",
                ));
            }
        }
        if !(1..=86_400).contains(&self.oncall_feed_max_age_secs) {
            return Err(FieldError::new(
                "oncall_feed_max_age_secs",
                "must be between 1 and 86400",
            ));
        }
        palisade_tlog_service::config::check_readers(&self.readers)?;
        self.refusal_log
            .check()
            .map_err(|e| FieldError::new("refusal_log", e))?;
        Ok(())
    }

    fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        let mut v = vec![
            ("signing_key", &mut self.signing_key),
            ("pseudonym_key", &mut self.pseudonym_key),
            ("inventory", &mut self.inventory),
            ("tls.ca", &mut self.tls.ca),
            ("tls.cert", &mut self.tls.cert),
            ("tls.key", &mut self.tls.key),
            ("trust.repo", &mut self.trust.repo),
            ("trust.root", &mut self.trust.root),
            ("trust.datastore", &mut self.trust.datastore),
        ];
        if let Some(ca) = self.webhook_ca.as_mut() {
            v.push(("webhook_ca", ca));
        }
        match &mut self.state {
            StateSetting::Path(p)
            | StateSetting::Backend(palisade_state::StateBackend::Redb { path: p }) => {
                v.push(("state", p));
            }
            StateSetting::Backend(palisade_state::StateBackend::Etcd { tls: Some(t), .. }) => {
                v.push(("state.tls.ca", &mut t.ca));
                v.push(("state.tls.cert", &mut t.cert));
                v.push(("state.tls.key", &mut t.key));
            }
            StateSetting::Backend(_) => {}
        }
        if let Some(d) = &mut self.dev_issuer {
            v.push(("dev_issuer.key", &mut d.key));
        }
        if let Some(p) = &mut self.operator_ca {
            v.push(("operator_ca", p));
        }
        if let Some(o) = &mut self.oidc {
            v.extend(o.paths_mut());
        }
        for r in &mut self.rotas {
            v.push(("rotas", r));
        }
        for f in &mut self.icals {
            if let Some(p) = &mut f.file {
                v.push(("ical.file", p));
            }
        }
        for t in &mut self.tenant_keys {
            v.push(("tenant_key.key", &mut t.key));
        }
        for a in &mut self.agents {
            v.push(("agent.key", &mut a.key));
        }
        v
    }

    fn secret_fields() -> &'static [&'static str] {
        &[
            "signing_key",
            "pseudonym_key",
            "tls.key",
            "dev_issuer.key",
            "state.tls.key",
        ]
    }
}
