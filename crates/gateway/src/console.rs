//! The customer's console at `/console/`: a page, its script and style, and the
//! verifier compiled to WebAssembly (`crates/console`), all embedded in this binary
//! (no CDN, no external fonts or scripts). The page reads a cluster's log through
//! [`log_object`] — the log's own checkpoint and tiles, byte for byte — and checks
//! them itself: nothing the gateway says is taken on its word.
//!
//! Tenant users sign in with their tenant reader's token (the login link `palisade
//! up` prints carries it in the URL fragment, which the browser never sends).

use crate::pipeline::Gateway;
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_tlog::note::MAX_NOTE_LEN;
use palisade_tlog::tile::TilePath;
use std::sync::Arc;

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
    let reader = match crate::api::tenant_reader(&gw, &headers) {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let cid = match gw.readable_cluster(&reader, &tenant, &cluster) {
        Ok(c) => c,
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
    let reader = match crate::api::tenant_reader(&gw, &headers) {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let cid = match gw.readable_cluster(&reader, &tenant, &cluster) {
        Ok(c) => c,
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
