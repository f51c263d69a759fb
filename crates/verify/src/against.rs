//! `--against CONFIG`: the non-destructive subset against an existing deployment.
//!
//! ```toml
//! [gateway]
//! url = "https://gateway.example:7400"
//! ca = "/etc/palisade/ca.crt"                 # the CA that signed every server certificate
//! credentials = "/home/me/.palisade/op/credentials.json"   # an on-call operator's
//! cluster = "demo"
//! instance = "demo-0"
//!
//! [tenant]
//! id = "demo"
//! token_file = "/etc/palisade/tenant-demo.token"
//!
//! [log]
//! url = "https://log.example:7401"
//! origin = "palisade.local/log/demo"
//! key = "palisade.local/log+1a2b3c4d+AU..."     # verifier key text
//! witness_keys = ["palisade.local/witness+..."]
//! quorum = 1
//!
//! [agent]
//! url = "https://agent.example:7403"
//! cert = "/etc/palisade/pki/gateway-gateway.crt"  # a gateway certificate, for mTLS probes
//! key = "/etc/palisade/pki/gateway-gateway.key"
//!
//! [kms]                                        # optional, on the instance only
//! socket = "unix:///run/palisade/kms.sock"
//! ```
//! Relative paths resolve against the configuration file's directory.

use crate::ctx::{log_policy_from, Ctx, GatewayClient};
use anyhow::{anyhow, Context as _};
use palisade_tlog::note::VerifierKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgainstConfig {
    pub gateway: GatewaySection,
    pub tenant: TenantSection,
    pub log: LogSection,
    pub agent: AgentSection,
    #[serde(default)]
    pub kms: Option<KmsSection>,
    #[serde(skip)]
    base: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub url: String,
    pub ca: PathBuf,
    pub credentials: PathBuf,
    pub cluster: String,
    pub instance: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub id: String,
    pub token_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub url: String,
    pub origin: String,
    pub key: String,
    #[serde(default)]
    pub witness_keys: Vec<String>,
    #[serde(default)]
    pub quorum: usize,
}

/// Optional: the KMS plugin's socket, when the verifier runs on the instance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSection {
    pub socket: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub url: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AgainstConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg: AgainstConfig =
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        cfg.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(cfg)
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The scenarios' context: public interfaces only, no local deployment.
    pub fn context(&self) -> anyhow::Result<Ctx> {
        let ca = self.path(&self.gateway.ca);
        let creds: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.path(&self.gateway.credentials))
                .context("cannot read the operator credentials")?,
        )?;
        let op_token = creds["token"]
            .as_str()
            .ok_or_else(|| anyhow!("the operator credentials hold no token"))?
            .to_string();
        let tenant_token = std::fs::read_to_string(self.path(&self.tenant.token_file))
            .context("cannot read the tenant token")?
            .trim()
            .to_string();
        let parse = |k: &str| VerifierKey::parse(k.trim()).map_err(|e| anyhow!("log key {k}: {e}"));
        let witnesses = self
            .log
            .witness_keys
            .iter()
            .map(|k| parse(k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let log_policy = log_policy_from(
            &self.log.origin,
            parse(&self.log.key)?,
            witnesses,
            self.log.quorum.max(1),
        )?;
        let scratch = tempfile::Builder::new()
            .prefix("palisade-verify-against-")
            .tempdir()?
            .keep();
        Ok(Ctx {
            gw: GatewayClient::new(&self.gateway.url, &ca)?,
            operator: String::new(),
            op_token,
            tenant: self.tenant.id.clone(),
            tenant_token,
            cluster: self.gateway.cluster.clone(),
            instance: self.gateway.instance.clone(),
            agent_url: self.agent.url.trim_end_matches('/').to_string(),
            ca,
            gateway_cert: self.path(&self.agent.cert),
            gateway_key: self.path(&self.agent.key),
            log_url: self.log.url.trim_end_matches('/').to_string(),
            log_policy,
            scratch,
            kms_socket: self.kms.as_ref().map(|k| k.socket.clone()),
            canary: "palisade-verify-canary-never-planted".into(),
            outputs: Mutex::new(Vec::new()),
            local: None,
        })
    }
}
