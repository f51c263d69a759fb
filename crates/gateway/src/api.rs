//! The gateway's REST/JSON API (the OpenAPI 3 document is `GET /openapi.json`).
//!
//! | route | who |
//! |---|---|
//! | `POST /v1/clusters/{cluster}/actions/{action}` | an operator: runs the pipeline |
//! | `GET /v1/clusters/{cluster}/actions` | an operator: what they may run now |
//! | `GET /v1/whoami` | an operator: identity, current grants, next shift |
//! | `GET /v1/operations`, `GET /v1/operations/{id}` | an operator: their operations |
//! | `POST /v1/dev/login` | anyone, only when the development issuer is on |
//! | `GET /v1/tenants/{tenant}/clusters/{cluster}/events` | a tenant (bearer token): its access log |
//! | `GET`, `PUT /v1/tenants/{tenant}/clusters/{cluster}/trust` | a tenant (bearer token): its statement in force; record a newer one |
//! | `GET`, `POST /v1/tenants/{tenant}/clusters/{cluster}/approvals` | a tenant (bearer token): requests awaiting approval; an approver's signed decision |
//! | `GET`, `PUT`, `DELETE /v1/tenants/{tenant}/clusters/{cluster}/webhook` | a tenant (bearer token): where requests for approval are POSTed |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` | anyone |

use crate::customer::{intent_targets, to_k8s_audit, Format, Query as EventsQuery};
use crate::ops::{OpStatus, Operation};
use crate::pipeline::{Credential, Gateway};
use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use palisade_core::time::Timestamp;
use palisade_pki::Role;
use palisade_tlog_service::https::Peer;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The OpenAPI 3.0 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/dev/login", post(dev_login))
        .route("/v1/whoami", get(whoami))
        .route("/v1/clusters/{cluster}/actions", get(actions))
        .route("/v1/clusters/{cluster}/actions/{action}", post(run))
        .route("/v1/operations", get(operations))
        .route("/v1/operations/{id}", get(operation))
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/events",
            get(events),
        )
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/log/{*object}",
            get(crate::console::log_object),
        )
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/log-keys",
            get(crate::console::log_keys),
        )
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/console-link",
            post(crate::console::console_link),
        )
        .route("/v1/console/session", post(crate::console::session))
        .route("/console", get(crate::console::root))
        .route("/console/", get(crate::console::asset))
        .route("/console/{file}", get(crate::console::asset))
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/trust",
            get(get_trust).put(put_trust),
        )
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/approvals",
            get(get_approvals).post(post_approval),
        )
        .route(
            "/v1/tenants/{tenant}/clusters/{cluster}/webhook",
            get(get_webhook).put(put_webhook).delete(delete_webhook),
        )
        .fallback(|| async { Problem::new(404, "not found", "no such route (see /openapi.json)") })
        .with_state(gw)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

fn credential(peer: &Peer, headers: &HeaderMap) -> Credential {
    if let Some(t) = bearer(headers) {
        return Credential::Bearer(t);
    }
    match &peer.identity {
        Some((Role::Operator, name)) => Credential::Certificate(name.clone(), peer.chain.clone()),
        _ => Credential::None,
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => Problem::new(503, "not ready", e).into_response(),
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    gw.metrics.trust.set(
        &gw.loaded_policy().await,
        palisade_core::time::Timestamp::now(),
    );
    gw.metrics.feeds(
        &gw.oncall
            .feed_ages()
            .at(palisade_core::time::Timestamp::now()),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevLogin {
    operator: String,
}

#[derive(Serialize)]
struct Token {
    token: String,
    expires_at: Timestamp,
}

async fn dev_login(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let req: DevLogin = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return Problem::new(400, "bad request", e.to_string()).into_response(),
    };
    match gw.auth.dev_login(&req.operator, Timestamp::now()) {
        Ok((token, exp)) => Json(Token {
            token,
            expires_at: Timestamp::from_unix_seconds(exp),
        })
        .into_response(),
        Err(p) => p.into_response(),
    }
}

#[derive(Serialize)]
struct WhoAmI {
    operator: String,
    /// What each tenant's log calls this operator (pseudonyms are per tenant).
    pseudonyms: std::collections::BTreeMap<String, String>,
    via: &'static str,
    groups: Vec<String>,
    grants: Vec<crate::pipeline::ActiveGrant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_shift: Option<NextShift>,
}

#[derive(Serialize)]
struct NextShift {
    schedule: String,
    starts_at: Timestamp,
}

async fn whoami(
    State(gw): State<Arc<Gateway>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let now = Timestamp::now();
    let op = match gw.authenticate(&credential(&peer, &headers), now).await {
        Ok(op) => op,
        Err(p) => return p.into_response(),
    };
    let grants = gw.grants(&op, None, now);
    let next_shift = gw
        .oncall
        .next_shift(&op.name, now)
        .map(|(schedule, starts_at)| NextShift {
            schedule,
            starts_at,
        });
    Json(WhoAmI {
        pseudonyms: gw
            .inventory
            .clusters
            .iter()
            .map(|c| {
                (
                    c.tenant.to_string(),
                    gw.pseudonym(&c.tenant, &op.name).to_string(),
                )
            })
            .collect(),
        operator: op.name,
        via: op.via,
        groups: op.groups,
        grants,
        next_shift,
    })
    .into_response()
}

#[derive(Serialize)]
struct ActionView {
    name: String,
    description: String,
    target: palisade_policy::Target,
    role: String,
    risk: palisade_policy::Risk,
    /// Whether a current grant carries the role.
    allowed_now: bool,
    params: Vec<String>,
}

async fn actions(
    State(gw): State<Arc<Gateway>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(cluster): Path<String>,
) -> Response {
    let now = Timestamp::now();
    let op = match gw.authenticate(&credential(&peer, &headers), now).await {
        Ok(op) => op,
        Err(p) => return p.into_response(),
    };
    let Ok(cid) = palisade_core::ClusterId::parse(&cluster) else {
        return Problem::new(404, "unknown cluster", format!("no cluster {cluster:?}"))
            .into_response();
    };
    if gw.inventory.cluster(&cid).is_none() {
        return Problem::new(
            404,
            "unknown cluster",
            format!("no cluster {cluster:?} in the inventory"),
        )
        .into_response();
    }
    let grants = gw.grants(&op, Some(&cid), now);
    let policy = gw.policy().await;
    let list: Vec<ActionView> = policy
        .actions()
        .map(|a| ActionView {
            name: a.name.to_string(),
            description: a.description.clone(),
            target: a.target,
            role: a.role.clone(),
            risk: a.risk,
            allowed_now: grants.iter().any(|g| g.roles.contains(&a.role)),
            params: a.params.keys().cloned().collect(),
        })
        .collect();
    Json(list).into_response()
}

async fn run(
    State(gw): State<Arc<Gateway>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((cluster, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    // Checked only once the caller is authenticated (in the pipeline): whoever has no
    // credentials learns nothing, not even what a well-formed request looks like.
    let idem = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k))
            if !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_string()))
        }
        Some(_) => Err(Problem::new(
            400,
            "bad request",
            "Idempotency-Key must be 1-128 printable ASCII characters",
        )),
    };
    let cred = credential(&peer, &headers);
    match gw
        .run(&cred, peer.addr.ip(), &cluster, &action, &body, idem)
        .await
    {
        Ok(op) => operation_response(op),
        Err(p) => p.into_response(),
    }
}

fn operation_response(op: Operation) -> Response {
    let status = match op.status {
        OpStatus::Running | OpStatus::AwaitingApproval => StatusCode::ACCEPTED,
        OpStatus::Refused => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, Json(op)).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn operations(
    State(gw): State<Arc<Gateway>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return Problem::new(400, "bad request", e.body_text()).into_response(),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::new(400, "bad request", "limit must be between 1 and 500").into_response();
    }
    let op = match gw
        .authenticate(&credential(&peer, &headers), Timestamp::now())
        .await
    {
        Ok(op) => op,
        Err(p) => return p.into_response(),
    };
    match gw
        .ops
        .list(&op.name, q.limit.unwrap_or(50).clamp(1, 500))
        .await
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => Problem::new(503, "state unavailable", e.to_string()).into_response(),
    }
}

async fn operation(
    State(gw): State<Arc<Gateway>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let op = match gw
        .authenticate(&credential(&peer, &headers), Timestamp::now())
        .await
    {
        Ok(op) => op,
        Err(p) => return p.into_response(),
    };
    let not_found = || {
        Problem::new(
            404,
            "not found",
            format!(
                "no operation {:?} of yours",
                id.chars().take(64).collect::<String>()
            ),
        )
    };
    if id.len() > 64 {
        return not_found().into_response();
    }
    match gw.ops.get(&id).await {
        Ok(Some(o)) if o.operator == op.name => operation_response(o),
        Ok(_) => not_found().into_response(),
        Err(e) => Problem::new(503, "state unavailable", e.to_string()).into_response(),
    }
}

pub(crate) fn tenant_reader(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<palisade_core::TenantId, Problem> {
    bearer(headers)
        .and_then(|t| gw.tenant_for_token(&t))
        .ok_or_else(|| {
            Problem::new(
                401,
                "not authenticated",
                "send a tenant reader's token as `Authorization: Bearer`",
            )
        })
}

/// The tenant of a tenant's own token, for what changes the tenant's settings (its
/// statement, its webhook, console links): a console session cannot.
pub(crate) fn tenant_admin(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<palisade_core::TenantId, Problem> {
    if bearer(headers).is_some_and(|t| crate::console::is_session(&t)) {
        return Err(Problem::new(
            403,
            "not authorized",
            "a console session cannot change the tenant's settings or make login links: use the tenant's token",
        ));
    }
    tenant_reader(gw, headers)
}

/// A tenant route's answer: its JSON with `ok`, or the problem.
fn answer(ok: StatusCode, r: Result<serde_json::Value, Problem>) -> Response {
    match r {
        Ok(v) => (ok, Json(v)).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn get_trust(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
) -> Response {
    let r = async {
        let reader = tenant_reader(&gw, &headers)?;
        gw.tenant_trust(&reader, &tenant, &cluster).await
    };
    answer(StatusCode::OK, r.await)
}

async fn put_trust(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let r = async {
        let reader = tenant_admin(&gw, &headers)?;
        gw.put_tenant_trust(&reader, &tenant, &cluster, &body).await
    };
    answer(StatusCode::CREATED, r.await)
}

async fn get_webhook(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
) -> Response {
    let r = async {
        let reader = tenant_reader(&gw, &headers)?;
        gw.webhook(&reader, &tenant, &cluster).await
    };
    answer(StatusCode::OK, r.await)
}

async fn put_webhook(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let r = async {
        let reader = tenant_admin(&gw, &headers)?;
        gw.put_webhook(&reader, &tenant, &cluster, &body).await
    };
    answer(StatusCode::OK, r.await)
}

async fn delete_webhook(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
) -> Response {
    let r = async {
        let reader = tenant_admin(&gw, &headers)?;
        gw.delete_webhook(&reader, &tenant, &cluster).await
    };
    answer(StatusCode::OK, r.await)
}

async fn get_approvals(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
) -> Response {
    let r = async {
        let reader = tenant_reader(&gw, &headers)?;
        gw.approval_requests(&reader, &tenant, &cluster).await
    };
    answer(StatusCode::OK, r.await)
}

async fn post_approval(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let r = async {
        let reader = tenant_reader(&gw, &headers)?;
        gw.decide(&reader, &tenant, &cluster, &body).await
    };
    answer(StatusCode::CREATED, r.await)
}

async fn events(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path((tenant, cluster)): Path<(String, String)>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return Problem::new(400, "bad request", e.body_text()).into_response(),
    };
    // Authenticated before anything is looked up: a missing and an unknown token get
    // the same answer whatever the tenant or cluster named.
    let reader = match tenant_reader(&gw, &headers) {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let page = match gw.customer_events(&reader, &tenant, &cluster, &q).await {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    match q.format {
        Format::Native => Json(page).into_response(),
        Format::K8sAudit => {
            let mut out = String::new();
            let intents = intent_targets(&page.events);
            for e in &page.events {
                out.push_str(&to_k8s_audit(&page.cluster, e, &intents).to_string());
                out.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/jsonl")], out).into_response()
        }
    }
}
