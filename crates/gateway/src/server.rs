//! Starting the gateway: load and verify everything it trusts (fail closed), then
//! serve the API over TLS (operator certificates optional: tokens are the default).
//!
//! [`start`] fails, before the port is bound, if any of these fails: loading the
//! inventory; verifying the action policy from the TUF repository with the gateway's
//! own trusted root and datastore; opening the state store; building the OIDC
//! verifier (at least one usable key in the issuer's JWK Set) and the development
//! issuer, if configured; loading every rota and iCalendar file; reading the dispatch
//! signing key, the agents' result keys and the pseudonym key (at least 32 bytes);
//! building each inventory cluster's log trust. Only then does it print
//! `gateway listening on https://<addr>`.
//!
//! Afterwards it re-verifies the TUF repository every minute (a newer approved
//! policy replaces the one in memory; a repository that stops verifying keeps the
//! last verified policy) and fetches the iCalendar feeds given by URL every five
//! minutes (`https://` only, 30 s timeout).

use crate::auth::Authenticators;
use crate::config::GatewayConfig;
use crate::oncall::OnCall;
use crate::ops::Ops;
use crate::pipeline::Gateway;
use palisade_core::inventory::Inventory;
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_protocol::client::Dispatcher;
use palisade_protocol::trust::PolicySource;
use palisade_protocol::trust::TufPolicy;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

fn setup(what: &'static str) -> impl Fn(String) -> GatewayError {
    move |e| GatewayError::Setup(format!("{what}: {e}"))
}

/// Builds the gateway from its configuration.
pub async fn start(cfg: GatewayConfig) -> Result<Arc<Gateway>, GatewayError> {
    let inventory: Inventory = palisade_core::config::load(&cfg.inventory)
        .map_err(|e| GatewayError::Setup(e.to_string()))?;
    let policy = TufPolicy {
        trust: cfg.trust.clone(),
    }
    .load()
    .await
    .map_err(setup("policy"))?;
    palisade_protocol::trust::warn_if_expiring(&policy, palisade_core::time::Timestamp::now());
    let store = cfg
        .state
        .backend()
        .open()
        .await
        .map_err(|e| GatewayError::Setup(format!("state: {e}")))?;
    let state_dir = cfg.state.dir(
        cfg.signing_key
            .parent()
            .unwrap_or(std::path::Path::new(".")),
    );
    let auth = Authenticators::new(
        cfg.oidc.clone(),
        cfg.dev_issuer
            .as_ref()
            .map(|d| (d.key.as_path(), d.token_ttl_secs)),
        &dev_issuer_url(&cfg.listen),
        &state_dir,
        cfg.operator_ca_if_enabled(),
    )
    .await
    .map_err(GatewayError::Setup)?;
    let oncall = OnCall::load(&cfg).map_err(setup("on-call schedules"))?;
    let key = SigningKey::read(&cfg.signing_key).map_err(|e| GatewayError::Setup(e.to_string()))?;
    let dispatcher = Dispatcher::new(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key, key, &cfg.log.url)
        .map_err(|e| GatewayError::Setup(e.to_string()))?;
    // Several `[[agent]]` entries for one instance: a key rotation's overlap, during
    // which an answer signed by any of them is the agent's.
    let mut agent_keys: HashMap<_, Vec<PublicKey>> = HashMap::new();
    for a in &cfg.agents {
        let k = PublicKey::read(&a.key).map_err(|e| GatewayError::Setup(e.to_string()))?;
        agent_keys.entry(a.instance.clone()).or_default().push(k);
    }
    let pseudonym_key = std::fs::read(&cfg.pseudonym_key).map_err(|e| {
        GatewayError::Setup(format!(
            "pseudonym key {}: {e}",
            cfg.pseudonym_key.display()
        ))
    })?;
    if pseudonym_key.len() < 32 {
        return Err(GatewayError::Setup(format!(
            "pseudonym key {} holds {} bytes; at least 32 random bytes are needed",
            cfg.pseudonym_key.display(),
            pseudonym_key.len()
        )));
    }
    for c in &inventory.clusters {
        cfg.log.policy_for(&c.id).map_err(setup("log trust"))?;
    }
    let exclusive = matches!(
        cfg.state.backend(),
        palisade_state::StateBackend::Redb { .. }
    );
    Ok(Arc::new(Gateway::new(
        cfg,
        inventory,
        policy,
        auth,
        oncall,
        Ops::new(store.clone()),
        crate::results::Pending::new(store),
        exclusive,
        dispatcher,
        agent_keys,
        pseudonym_key,
    )))
}

/// The `iss` of development tokens.
pub fn dev_issuer_url(listen: &str) -> String {
    format!("https://{listen}/dev")
}

/// Serves until `shutdown`; `ready` gets the bound address.
pub async fn run(
    cfg: GatewayConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), GatewayError> {
    let tls = crate::operator_certs::server_tls(
        &cfg.tls.ca,
        &cfg.tls.cert,
        &cfg.tls.key,
        cfg.operator_ca_if_enabled(),
    )
    .map_err(|e| GatewayError::Setup(format!("TLS: {e}")))?;
    let listen = cfg.listen.clone();
    let feeds: Vec<(String, String)> = cfg
        .icals
        .iter()
        .filter_map(|f| f.url.clone().map(|u| (f.schedule.clone(), u)))
        .collect();
    let gw = start(cfg).await?;
    let listener =
        tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| GatewayError::Listen {
                addr: listen.clone(),
                reason: e.to_string(),
            })?;
    let addr = listener.local_addr().map_err(|e| GatewayError::Listen {
        addr: listen.clone(),
        reason: e.to_string(),
    })?;
    let refresher = tokio::spawn(refresh(gw.clone(), feeds));
    let summaries = tokio::spawn(crate::refusals::summarise(gw.clone()));
    gw.load_tenant_trust().await;
    // Bounded: a log that does not answer must not hold the gateway's start.
    if tokio::time::timeout(
        std::time::Duration::from_secs(30),
        gw.recover_tenant_trust(),
    )
    .await
    .is_err()
    {
        tracing::warn!("reading the tenants' statements from the logs took over 30 s; dispatches to clusters without one are refused until the next start");
    }
    // The agents' keys are in the logs before this gateway dispatches anything, so a
    // result signed with a new key never precedes the key's record (bounded; the
    // reconciler goes on if a log does not answer).
    if tokio::time::timeout(std::time::Duration::from_secs(30), gw.enrol_agent_keys())
        .await
        .is_err()
    {
        tracing::warn!(
            "recording the agents' keys in the logs took over 30 s; the reconciler goes on with it"
        );
    }
    let reconciler = tokio::spawn(gw.clone().reconcile_forever());
    ready(addr);
    let served = palisade_tlog_service::https::serve(
        listener,
        tls,
        crate::api::router(gw.clone()),
        shutdown,
    )
    .await;
    refresher.abort();
    summaries.abort();
    reconciler.abort();
    // Counts not yet due still reach the log: a stop must not hide a flood.
    gw.log_refusal_summaries(palisade_core::time::Timestamp::now(), true)
        .await;
    served.map_err(|e| GatewayError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

/// The governance log's entry for a policy the gateway verified and enforces:
/// canonical JSON, the same bytes from every gateway.
pub fn policy_record(v: &palisade_policy::trusted_policy::VerifiedPolicy) -> Vec<u8> {
    let record = serde_json::json!({
        "schema": "palisade.dev/governance/v1",
        "kind": "policy",
        "version": v.version,
        "digest": v.digest,
        "sha256": v.sha256,
        "author": v.author,
        "approvers": v.approvers,
        "proposal": v.proposal,
    });
    // A JSON value of strings, integers and arrays always has a canonical form.
    palisade_core::canonical::to_canonical_vec(&record).unwrap_or_default()
}

/// The governance log's entry for a component release published with its approvals
/// (pipeline signature, PASSED attestation, author, approvers all verified).
pub fn release_record(r: &palisade_policy::release::VerifiedRelease) -> Vec<u8> {
    let record = serde_json::json!({
        "schema": "palisade.dev/governance/v1",
        "kind": "release",
        "component": r.component,
        "version": r.version,
        "target": r.target,
        "sha256": r.sha256,
        "author": r.author,
        "approvers": r.approvers,
        "proposal": r.proposal,
        "test_result": "PASSED",
    });
    palisade_core::canonical::to_canonical_vec(&record).unwrap_or_default()
}

/// Appends `record` to the governance log once (one gateway among those sharing the
/// state store does it, the one that claims `key`); on failure the claim is given back
/// so that the next refresh tries again. Returns whether the record is in the log.
async fn record_governance(gw: &Gateway, key: &str, record: &[u8]) -> bool {
    match gw.ops.claim_governance_record(key).await {
        Ok(true) => {}
        Ok(false) => return true,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot record in the governance log yet (state store)");
            return false;
        }
    }
    match gw
        .dispatcher()
        .append(palisade_tlog_service::config::GOVERNANCE, record)
        .await
    {
        Ok(r) => {
            tracing::info!(key, index = r.index, "recorded in the governance log");
            true
        }
        // In the log, witnessed with a later batch: appending it again would record
        // it twice.
        Err(palisade_protocol::client::CallError::Unwitnessed { index, reason }) => {
            tracing::warn!(key, index, %reason, "recorded in the governance log, not yet witnessed");
            true
        }
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot record in the governance log; will retry");
            let _ = gw.ops.unclaim_governance_record(key).await;
            false
        }
    }
}

async fn record_policy(gw: &Gateway, v: &palisade_policy::trusted_policy::VerifiedPolicy) -> bool {
    let key = format!("policy/{}/{}", v.version, v.sha256);
    record_governance(gw, &key, &policy_record(v)).await
}

/// Records each published release not yet recorded (by this process: `recorded`
/// holds `target@sha256`; across gateways the state store's claim decides). A
/// release that does not verify is not recorded, and said.
/// Returns whether every release that verifies is recorded.
async fn record_releases(
    gw: &Gateway,
    trust: &palisade_protocol::trust::TrustFiles,
    recorded: &mut std::collections::HashSet<String>,
) -> bool {
    let root = match std::fs::read(&trust.root) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(root = %trust.root.display(), error = %e, "trusted root unreadable; releases not recorded");
            return false;
        }
    };
    let repo = palisade_policy::tuf::RepoDir::new(&trust.repo);
    let releases = match palisade_policy::release::published_releases(
        &repo,
        &root,
        &trust.datastore,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the release repository does not verify; releases not recorded");
            return false;
        }
    };
    let mut all = true;
    for release in releases {
        match release {
            Ok(r) => {
                let key = format!("release/{}@{}", r.target, r.sha256);
                if recorded.contains(&key) {
                    continue;
                }
                if record_governance(gw, &key, &release_record(&r)).await {
                    recorded.insert(key);
                } else {
                    all = false;
                }
            }
            Err((target, e)) => {
                tracing::warn!(target, error = %e, "a published release does not verify; not recorded")
            }
        }
    }
    all
}

/// Re-verifies the policy every minute (a newer approved one replaces it and is
/// recorded in the governance log; a repository that stops verifying keeps the last
/// good policy and says so) and fetches iCalendar feeds every five minutes (a feed
/// whose last good fetch is older than `oncall_feed_max_age_secs` grants nothing).
async fn refresh(gw: Arc<Gateway>, feeds: Vec<(String, String)>) {
    let source = TufPolicy {
        trust: gw.config().trust.clone(),
    };
    // Feeds are usually public services (PagerDuty, Opsgenie, Grafana OnCall): the
    // platform's trust store, with Palisade's crypto provider.
    palisade_pki::install_default_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .https_only(true)
        .build()
        .ok();
    let mut tick = 0u64;
    // The policy (version, sha256) known to be in the governance log.
    let mut recorded: Option<(u64, String)> = None;
    let mut releases_recorded = std::collections::HashSet::new();
    // Said once, when the policy and every release are first known to be recorded.
    let mut announced = false;
    loop {
        if tick % 5 == 0 {
            for (schedule, url) in &feeds {
                let Some(http) = &http else { break };
                match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(text) => match gw.oncall.set_feed(
                            schedule,
                            &text,
                            palisade_core::time::Timestamp::now(),
                        ) {
                            Ok(n) => tracing::info!(schedule, shifts = n, "on-call feed refreshed"),
                            Err(e) => {
                                tracing::warn!(schedule, error = %e, "on-call feed refused; keeping the last one")
                            }
                        },
                        Err(e) => tracing::warn!(schedule, error = %e, "on-call feed unreadable"),
                    },
                    Ok(r) => {
                        tracing::warn!(schedule, status = %r.status(), "on-call feed unavailable")
                    }
                    Err(e) => tracing::warn!(schedule, error = %e, "on-call feed unavailable"),
                }
            }
        }
        match source.load_verified().await {
            Ok(v) => {
                let current = gw.loaded_policy().await;
                if v.policy.digest() != current.policy.digest() {
                    tracing::info!(version = v.version, digest = %v.digest, "a newer approved policy was loaded");
                }
                let held = palisade_protocol::trust::LoadedPolicy::verified(
                    v.policy.clone(),
                    palisade_protocol::trust::expiry(v.expires),
                );
                palisade_protocol::trust::warn_if_expiring(
                    &held,
                    palisade_core::time::Timestamp::now(),
                );
                gw.set_policy(held).await;
                let id = (v.version, v.sha256.clone());
                if recorded.as_ref() != Some(&id) && record_policy(&gw, &v).await {
                    recorded = Some(id);
                }
            }
            Err(e) => {
                let mut held = gw.loaded_policy().await;
                held.unverified = Some(e.clone());
                gw.set_policy(held).await;
                tracing::warn!(error = %e, "the policy repository does not verify; keeping the last verified policy, and accepting no new action until it verifies")
            }
        }
        let releases_done = record_releases(&gw, &source.trust, &mut releases_recorded).await;
        if !announced && releases_done {
            if let Some((version, _)) = &recorded {
                tracing::info!(
                    policy = version,
                    releases = releases_recorded.len(),
                    "governance log up to date"
                );
                announced = true;
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
