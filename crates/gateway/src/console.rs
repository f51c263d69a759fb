//! The customer's console at `/console/`: a page, its script and style, and the
//! verifier compiled to WebAssembly (`crates/console`), all embedded in this binary
//! (no CDN, no external fonts or scripts). The page reads a cluster's log through
//! [`log_object`] — the log's own checkpoint and tiles, byte for byte — and checks
//! them itself: nothing the gateway says is taken on its word.
//!
//! Tenant users sign in with a one-time login link ([`Sessions`]: `palisade up`
//! prints one for the demo tenant, `palisade customer console-link` makes more) or
//! with their tenant reader's token.

use crate::pipeline::Gateway;
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_tlog::note::MAX_NOTE_LEN;
use palisade_tlog::tile::TilePath;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the page may load and talk to: itself and this gateway, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../console/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../console/console.css"),
    },
    Asset {
        name: "palisade_console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/console/palisade_console.js")),
    },
    Asset {
        name: "palisade_console_bg.wasm",
        content_type: "application/wasm",
        body: include_bytes!(concat!(
            env!("OUT_DIR"),
            "/console/palisade_console_bg.wasm"
        )),
    },
];

/// `GET /console`: to the page.
pub async fn root() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/` and `GET /console/{file}`.
pub async fn asset(file: Option<Path<String>>) -> Response {
    let name = file.map(|Path(f)| f).unwrap_or_default();
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            a.body,
        )
            .into_response(),
        None => Problem::new(404, "not found", "no such file in the console").into_response(),
    }
}

/// The caller's tenant and the cluster it names, if the tenant may read it; with
/// `admin`, only for the tenant's own token, not a console session.
fn tenant_cluster(
    gw: &Gateway,
    headers: &HeaderMap,
    tenant: &str,
    cluster: &str,
    admin: bool,
) -> Result<(palisade_core::TenantId, palisade_core::ClusterId), Problem> {
    let reader = if admin {
        crate::api::tenant_admin(gw, headers)?
    } else {
        crate::api::tenant_reader(gw, headers)?
    };
    let cid = gw.readable_cluster(&reader, tenant, cluster)?;
    Ok((reader, cid))
}

/// The largest entry bundle a log serves (256 entries of at most 64 KiB).
const MAX_BUNDLE_BYTES: usize = 256 * (2 + 65_535);

/// `GET /v1/tenants/{tenant}/clusters/{cluster}/log/{*object}`: the cluster's log
/// checkpoint (`checkpoint`) or a tile (`tile/...`), exactly as the log serves it,
/// for the tenant that owns the cluster. The reader verifies what it gets.
pub async fn log_object(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster, object)): Path<(String, String, String)>,
) -> Response {
    let cid = match tenant_cluster(&gw, &headers, &tenant, &cluster, false) {
        Ok((_, c)) => c,
        Err(p) => return p.into_response(),
    };
    let limit = if object == "checkpoint" {
        MAX_NOTE_LEN
    } else if TilePath::parse(&object).is_ok() {
        MAX_BUNDLE_BYTES
    } else {
        return Problem::new(
            404,
            "not found",
            "a log object is `checkpoint` or a tile path (`tile/...`)",
        )
        .into_response();
    };
    let source = match gw.dispatcher().source(cid.as_str()) {
        Ok(s) => s,
        Err(e) => return Problem::new(503, "log unavailable", e.to_string()).into_response(),
    };
    match source.read(&object, limit).await {
        Ok(Some(bytes)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(if object == "checkpoint" {
                        "text/plain; charset=utf-8"
                    } else {
                        "application/octet-stream"
                    }),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => {
            Problem::new(404, "not found", format!("the log has no {object}")).into_response()
        }
        Err(e) => Problem::new(503, "log unavailable", e.to_string()).into_response(),
    }
}

/// `GET /v1/tenants/{tenant}/clusters/{cluster}/log-keys`: the keys this gateway
/// verifies the cluster's log with. The console pins them on first use only when
/// its login link carried none, and says so.
pub async fn log_keys(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
) -> Response {
    let cid = match tenant_cluster(&gw, &headers, &tenant, &cluster, false) {
        Ok((_, c)) => c,
        Err(p) => return p.into_response(),
    };
    match gw.config().log.policy_for(&cid) {
        Ok(p) => axum::Json(serde_json::json!({
            "origin": p.origin(),
            "log_keys": p.log_keys().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "witnesses": p.witnesses().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "quorum": p.quorum(),
        }))
        .into_response(),
        Err(e) => Problem::new(500, "internal error", e).into_response(),
    }
}

/// How long a login code may wait to be used, and how long the session it opens lasts.
pub const CODE_TTL: Duration = Duration::from_secs(15 * 60);
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// At most this many unused codes, and open sessions, per tenant; beyond, new ones
/// are refused.
const MAX_PER_TENANT: usize = 100;

/// Whether `token` is a console session's (not a tenant's own token).
pub fn is_session(token: &str) -> bool {
    token.trim().starts_with("pcs_")
}

/// One-time login codes, each exchanged once for a session token of its tenant.
/// Only SHA-256 digests are held, in this process's memory: a restart ends every
/// session, and behind several gateways a code is redeemed at the one that made it.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    codes: HashMap<[u8; 32], (palisade_core::TenantId, Instant)>,
    sessions: HashMap<[u8; 32], (palisade_core::TenantId, Instant)>,
}

fn digest(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// 256 random bits, hex.
fn secret() -> Option<String> {
    let a = palisade_core::EventId::random().ok()?;
    let b = palisade_core::EventId::random().ok()?;
    Some(format!("{a}{b}"))
}

impl Held {
    fn prune(&mut self, now: Instant) {
        self.codes.retain(|_, (_, until)| *until > now);
        self.sessions.retain(|_, (_, until)| *until > now);
    }
}

impl Sessions {
    /// A new one-time login code for `tenant`.
    pub fn mint(&self, tenant: &palisade_core::TenantId) -> Result<String, Problem> {
        let code = secret().ok_or_else(|| Problem::new(503, "not ready", "no randomness"))?;
        let now = Instant::now();
        let mut held = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        held.prune(now);
        if held.codes.values().filter(|(t, _)| t == tenant).count() >= MAX_PER_TENANT {
            return Err(Problem::new(
                429,
                "rate limit reached",
                "too many unused login codes for this tenant",
            ));
        }
        held.codes
            .insert(digest(&code), (tenant.clone(), now + CODE_TTL));
        Ok(code)
    }

    /// The session a code opens, once: `(token, tenant)`.
    fn redeem(&self, code: &str) -> Option<(String, palisade_core::TenantId)> {
        let now = Instant::now();
        let mut held = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        held.prune(now);
        let (tenant, _) = held.codes.get(&digest(code))?.clone();
        // The oldest session of a tenant at its limit ends; the code is spent.
        let mut open: Vec<([u8; 32], Instant)> = held
            .sessions
            .iter()
            .filter(|(_, (t, _))| *t == tenant)
            .map(|(k, (_, until))| (*k, *until))
            .collect();
        if open.len() >= MAX_PER_TENANT {
            open.sort_by_key(|(_, until)| *until);
            held.sessions.remove(&open[0].0);
        }
        held.codes.remove(&digest(code));
        let token = format!("pcs_{}", secret()?);
        held.sessions
            .insert(digest(&token), (tenant.clone(), now + SESSION_TTL));
        Some((token, tenant))
    }

    /// The tenant whose session `token` is, while it lasts.
    pub fn tenant(&self, token: &str) -> Option<palisade_core::TenantId> {
        if !is_session(token) {
            return None;
        }
        let held = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        held.sessions
            .get(&digest(token))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| t.clone())
    }
}

/// `POST /v1/tenants/{tenant}/clusters/{cluster}/console-link`: a one-time login
/// link to this cluster's console, for the tenant whose token calls it.
pub async fn console_link(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
) -> Response {
    let reader = match tenant_cluster(&gw, &headers, &tenant, &cluster, true) {
        Ok((r, _)) => r,
        Err(p) => return p.into_response(),
    };
    match gw.console.mint(&reader) {
        Ok(code) => (
            axum::http::StatusCode::CREATED,
            axum::Json(serde_json::json!({
                "code": code,
                "path": format!("/console/#code={code}&tenant={tenant}&cluster={cluster}"),
                "expires_in_secs": CODE_TTL.as_secs(),
            })),
        )
            .into_response(),
        Err(p) => p.into_response(),
    }
}

/// `POST /v1/console/session` with `{"code"}`: the session token a one-time login
/// code opens, once. Any other code, or the same code again, is `401`.
pub async fn session(State(gw): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        code: String,
    }
    let Ok(Body { code }) = serde_json::from_slice::<Body>(&body) else {
        return Problem::new(400, "bad request", "send {\"code\": \"<the login code>\"}")
            .into_response();
    };
    match gw.console.redeem(code.trim()) {
        Some((token, tenant)) => axum::Json(serde_json::json!({
            "token": token,
            "tenant": tenant.as_str(),
            "expires_in_secs": SESSION_TTL.as_secs(),
        }))
        .into_response(),
        None => Problem::new(
            401,
            "not authenticated",
            "this login link was used already, has expired, or is not one: ask for a new one",
        )
        .into_response(),
    }
}
