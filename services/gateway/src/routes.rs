//! Handlers. `router()` is a plain function of its state so tests drive it with `oneshot`
//! and the binary serves it on a socket.

use crate::auth::Tokens;
use crate::permissions;
use crate::problem::{bad_request, internal, unauthenticated, HttpProblem, Problem};
use axum::body::{to_bytes, Body};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream};
use pathway_bus::{Ingress, OwnEvents, Submission};
use pathway_core::date::Day;
use pathway_core::identity::Scheme;
use pathway_core::report::{self, Quarter};
use pathway_core::AgencyKind;
use pathway_projector::{views, Projector};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// How long a handler may take to start answering (a live feed answers at once).
    pub request_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            max_batch: 5000,
            request_timeout: std::time::Duration::from_secs(120),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub ingress: Arc<dyn Ingress>,
    /// The exchange's own appends (identity links found by imports).
    pub own: Arc<dyn OwnEvents>,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub rate: Arc<crate::ratelimit::RateLimiter>,
    /// Agencies whose body limit differs from `limits.max_body_bytes`.
    pub body_limits: Arc<std::collections::HashMap<String, usize>>,
    pub projector: Projector,
    pub tokens: Arc<Tokens>,
    pub limits: Limits,
    /// The transports the configuration asks for (NATS); `/readyz` is not ready while any
    /// of them is down, though HTTP ingest goes on.
    pub health: Vec<Arc<dyn pathway_bus::Health>>,
}

impl AppState {
    /// The largest body this agency may send.
    pub fn body_limit(&self, agency: &str) -> usize {
        self.body_limits
            .get(agency)
            .copied()
            .unwrap_or(self.limits.max_body_bytes)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/feed", get(get_feed))
        .route("/v1/feed/stream", get(get_feed_stream))
        .route("/v1/young-people", get(find_young_people))
        .route("/v1/young-people/{id}", get(get_young_person))
        .route("/v1/imports/destinations", post(import_destinations))
        .route(
            "/v1/identity/review",
            get(get_identity_review).post(post_identity_review),
        )
        .route("/v1/imports/looked-after", post(import_looked_after))
        .route("/v1/webhooks", post(post_webhook).get(get_webhooks))
        .route("/v1/webhooks/dead-letters", get(get_dead_letters))
        .route("/v1/webhooks/{id}", axum::routing::delete(delete_webhook))
        .route("/v1/exports/destinations", get(export_destinations))
        .route("/v1/exports/looked-after", get(export_looked_after))
        .route(
            "/v1/young-people/{id}/subject-access",
            get(get_subject_access),
        )
        .route("/v1/young-people/{id}/erase", post(erase_young_person))
        .route("/v1/disclosures", get(get_disclosures))
        .route("/v1/consent/review", get(get_consent_review))
        .route("/v1/reports/quarterly", get(get_quarterly))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            HttpProblem::from(Problem::new(404, "not-found", "No such endpoint"))
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Checks the caller against the permission table before any handler runs: no valid token
/// is 401, a role the table does not list for this route is 403. Routes are matched first,
/// so unknown paths still answer 404.
async fn authorize(
    State(state): State<AppState>,
    matched: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        return next.run(req).await;
    };
    let method = req.method().as_str().to_owned();
    if permissions::is_public(&method, &path) {
        return next.run(req).await;
    }
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(principal) = state.tokens.principal(auth) else {
        return unauthenticated().into_response();
    };
    if !permissions::permitted(&method, &path, principal.role) {
        return HttpProblem::from(
            Problem::new(403, "forbidden-role", "Your role may not use this endpoint").detail(
                format!(
                    "{method} {path} is not open to the {} role.",
                    principal.role
                ),
            ),
        )
        .into_response();
    }
    let who = principal.agency.as_deref().unwrap_or(&principal.user);
    if let Err(wait) = state.rate.take(who) {
        let mut res = HttpProblem::from(
            Problem::new(429, "rate-limited", "Too many requests from your agency")
                .detail(format!("Try again in {wait} s.")),
        )
        .into_response();
        if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    // An import streams its file and makes progress all along: a large one may take longer
    // than any request should wait to start answering, so it is not timed out.
    if req.uri().path().starts_with("/v1/imports/") {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.limits.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => HttpProblem::from(
            Problem::new(503, "timeout", "The request took too long")
                .detail("Send it again: what was recorded is recognised and not recorded twice."),
        )
        .into_response(),
    }
}

/// Headers every answer carries: nothing here is for a browser to sniff, frame, cache or
/// refer onwards. Pages set their own content security policy (they need inline styles).
async fn security_headers(mut res: Response) -> Response {
    use header::HeaderValue;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    res
}

fn caller<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a str, HttpProblem> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.tokens.agency(auth).ok_or_else(unauthenticated)
}

async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let bytes = to_bytes(body, state.body_limit(&agency))
        .await
        .map_err(|_| {
            HttpProblem::from(
                Problem::new(413, "too-large", "The body is too large").detail(format!(
                    "At most {} bytes per request; split the batch.",
                    state.body_limit(&agency)
                )),
            )
        })?;
    let (envelopes, batch) = pathway_bus::read_body(&bytes, state.limits.max_batch)?;
    let accepted = state
        .ingress
        .submit(Submission {
            agency,
            envelopes,
            batch,
        })
        .await?;
    let all_duplicates = accepted.iter().all(|a| a.duplicate);
    let status = if all_duplicates {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = if batch {
        json!(accepted)
    } else {
        json!(accepted[0])
    };
    Ok((status, Json(body)).into_response())
}

/// The two body shapes: one envelope, or `{"events": [...]}` (nothing else beside `events`).
#[derive(Deserialize)]
struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
}

fn number(name: &str, v: Option<&str>, default: u64) -> Result<u64, HttpProblem> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| bad_request(name, "must be a whole number".into())),
    }
}

async fn get_feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?;
    let after = number("after", q.after.as_deref(), 0)?;
    let limit = number("limit", q.limit.as_deref(), 100)?.clamp(1, 1000) as usize;
    let items = views::feed(&state.projector, agency, after, limit).map_err(internal)?;
    let next = items
        .last()
        .and_then(|i| i["seq"].as_u64())
        .unwrap_or(after);
    Ok(Json(json!({ "items": items, "next_after": next })))
}

async fn get_feed_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = number("Last-Event-ID", resume.or(q.after.as_deref()), 0)?;
    let watch = state.projector.watch();
    let projector = state.projector.clone();
    // Each turn: send what the feed holds past the cursor, or wait for the projector to move.
    let events = stream::unfold(
        (after, watch, VecDeque::<Value>::new()),
        move |(mut cursor, mut watch, mut pending)| {
            let projector = projector.clone();
            let agency = agency.clone();
            async move {
                loop {
                    if let Some(item) = pending.pop_front() {
                        cursor = item["seq"].as_u64().unwrap_or(cursor);
                        let event = Event::default()
                            .id(cursor.to_string())
                            .event("disclosure")
                            .data(item.to_string());
                        return Some((Ok(event), (cursor, watch, pending)));
                    }
                    watch.borrow_and_update();
                    match views::feed(&projector, &agency, cursor, 256) {
                        Ok(items) if !items.is_empty() => pending = items.into(),
                        Ok(_) => watch.changed().await.ok()?,
                        Err(e) => {
                            tracing::error!(error = %e, "feed stream read failed");
                            return None;
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn get_young_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?;
    let not_found = || {
        HttpProblem::from(Problem::new(
            404,
            "not-found",
            "No young person with this id is visible to you",
        ))
    };
    let yp = Uuid::parse_str(&id).map_err(|_| not_found())?;
    match views::read_model(&state.projector, agency, yp).map_err(internal)? {
        Some(model) => Ok(Json(model)),
        None => Err(not_found()),
    }
}

/// Finds people by the caller's own identifier for them (`la_child_id`, `upn`, `uln` or
/// `nccis_id`), among those it may see.
async fn find_young_people(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let given: Vec<(Scheme, String)> = Scheme::ALL
        .iter()
        .filter_map(|s| q.get(s.name()).map(|v| (*s, v.trim().to_owned())))
        .collect();
    let [(scheme, value)] = given.as_slice() else {
        return Err(bad_request(
            "",
            "give exactly one of la_child_id, upn, uln or nccis_id".into(),
        ));
    };
    let (scheme, value) = (*scheme, value.clone());
    let projector = state.projector.clone();
    let items = blocking(move || {
        let found =
            views::lookup(&projector, scheme, scheme.scope(&agency), &value).map_err(internal)?;
        let mut items = Vec::new();
        for yp in found {
            if views::may_see(&projector, &agency, yp).map_err(internal)? {
                items.push(json!({ "young_person": yp }));
            }
        }
        Ok(items)
    })
    .await?;
    Ok(Json(json!({ "items": items })))
}

/// Import rows the caller sent whose person could not be told apart from others.
async fn get_identity_review(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let reading = state.clone();
    let items = blocking(move || crate::imports::review_queue(&reading, &agency)).await?;
    Ok(Json(json!({ "items": items })))
}

/// A reviewer decides who a held row is about: its identifier is linked to them.
async fn post_identity_review(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let decision: crate::imports::Decision = serde_json::from_slice(&body).map_err(|e| {
        bad_request(
            "",
            format!(
                "expected {{\"nccis_id\" or \"la_child_id\": ..., \"young_person\": ...}}: {e}"
            ),
        )
    })?;
    let decided = crate::imports::decide_review(&state, &agency, decision).await?;
    let status = if decided.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(decided.answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    /// The feed position to deliver after; by default, from now.
    after: Option<u64>,
}

/// Registers a webhook for the caller's feed. The answer carries the signing secret, once.
async fn post_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let hook: NewWebhook = serde_json::from_slice(&body)
        .map_err(|e| bad_request("", format!("expected {{\"url\": ...}}: {e}")))?;
    let answer = state.webhooks.register(&agency, &hook.url, hook.after)?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn get_webhooks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?;
    Ok(Json(json!({ "items": state.webhooks.list(agency)? })))
}

async fn delete_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpProblem> {
    let agency = caller(&state, &headers)?;
    let id = Uuid::parse_str(&id).map_err(|_| {
        HttpProblem::from(Problem::new(404, "not-found", "No such webhook of yours"))
    })?;
    state.webhooks.remove(agency, id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?;
    Ok(Json(
        json!({ "items": state.webhooks.dead_letters(agency)? }),
    ))
}

fn csv_download(name: String, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

fn kind_of(state: &AppState, agency: &str) -> Option<AgencyKind> {
    state.projector.agreements().agency(agency).map(|a| a.kind)
}

/// A local authority's care leavers with their latest destination by the quarter's end.
async fn export_destinations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<QuarterlyQuery>,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    if kind_of(&state, &agency) != Some(AgencyKind::LocalAuthority) {
        return Err(Problem::new(
            403,
            "not-a-local-authority",
            "Only a local authority downloads its care leavers' destinations",
        )
        .into());
    }
    let today = Day(state.projector.log().now().date());
    let quarter = match q.quarter.as_deref() {
        None => Quarter::containing(today),
        Some(s) => Quarter::parse(s)
            .ok_or_else(|| bad_request("quarter", "must look like 2026-Q4".into()))?,
    };
    let projector = state.projector.clone();
    let who = agency.clone();
    let body = blocking(move || crate::exports::destinations(&projector, &who, quarter)).await?;
    Ok(csv_download(
        format!("destinations-{agency}-{quarter}.csv"),
        body,
    ))
}

/// The looked-after list a careers service may see.
async fn export_looked_after(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    if kind_of(&state, &agency) != Some(AgencyKind::CareersService) {
        return Err(Problem::new(
            403,
            "not-a-careers-service",
            "The looked-after list is the careers service's download",
        )
        .into());
    }
    let projector = state.projector.clone();
    let who = agency.clone();
    let body = blocking(move || crate::exports::looked_after(&projector, &who)).await?;
    Ok(csv_download(format!("looked-after-{agency}.csv"), body))
}

#[derive(Deserialize)]
struct ListQuery {
    year: Option<String>,
}

/// A local authority's looked-after list: multipart parts `header`, `episodes` and optionally
/// `oc3`, each an SSDA903-layout CSV; `?year=2021` names the collection year (2020-21).
async fn import_looked_after(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    if kind_of(&state, &agency) != Some(AgencyKind::LocalAuthority) {
        return Err(Problem::new(
            403,
            "not-a-permitted-source",
            "Only a local authority imports its looked-after list",
        )
        .into());
    }
    let year = match q.year.as_deref() {
        None => None,
        Some(y) => Some(
            y.parse::<i32>()
                .ok()
                .filter(|y| (2000..=2100).contains(y))
                .ok_or_else(|| {
                    bad_request(
                        "year",
                        "must be the year the collection ends, e.g. 2021".into(),
                    )
                })?,
        ),
    };
    let mut multipart =
        multipart.map_err(|e| bad_request("", format!("expected multipart/form-data: {e}")))?;
    let mut parts: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad_request("", format!("the upload could not be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if !matches!(name.as_str(), "header" | "episodes" | "oc3") {
            return Err(bad_request(
                &name,
                "parts must be named header, episodes or oc3".into(),
            ));
        }
        let text = field
            .text()
            .await
            .map_err(|e| bad_request(&name, format!("could not be read as text: {e}")))?;
        parts.insert(name, text);
    }
    let (Some(header), Some(episodes)) = (parts.remove("header"), parts.remove("episodes")) else {
        return Err(bad_request(
            "",
            "the parts header and episodes are required".into(),
        ));
    };
    let summary =
        crate::imports::looked_after(&state, &agency, header, episodes, parts.remove("oc3"), year)
            .await?;
    Ok(Json(json!(summary)))
}

/// A careers service's quarterly destinations, as a `text/csv` body in NCCIS layout.
async fn import_destinations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    if kind_of(&state, &agency) != Some(AgencyKind::CareersService) {
        return Err(Problem::new(
            403,
            "not-a-permitted-source",
            "Only a careers service imports destinations",
        )
        .into());
    }
    // Streamed: a file of any length is read and applied in chunks, in bounded memory.
    let summary = crate::imports::destinations(&state, &agency, body.into_data_stream()).await?;
    Ok(Json(json!(summary)))
}

/// The exchange's admin erases a young person: `young-person.erased` is appended (readable:
/// it holds nothing personal), then their key is destroyed, so every event about them, in
/// the log and everything derived from it, is unreadable for good. The chain still verifies.
async fn erase_young_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpProblem> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = state
        .tokens
        .principal(auth)
        .ok_or_else(unauthenticated)?
        .clone();
    let yp = Uuid::parse_str(&id).map_err(|_| not_visible())?;
    let today = Day(state.projector.log().now().date());
    let by = if principal.user.len() <= 63
        && principal
            .user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        principal.user.clone()
    } else {
        "exchange-admin".to_owned()
    };
    let notice = json!({
        "id": Uuid::new_v4(),
        "type": "young-person.erased",
        "young_person": yp,
        "occurred_at": format!("{today}T00:00:00Z"),
        "data": {"erased_on": today, "authorised_by": by},
    });
    let answer = state.own.record_own(&[notice]).await.map_err(|p| {
        if p.code == "unknown-young-person" {
            not_visible()
        } else {
            HttpProblem::from(p)
        }
    })?;
    let projector = state.projector.clone();
    blocking(move || projector.log().shred(yp).map_err(internal)).await?;
    tracing::info!(seq = answer[0].seq, "young person erased");
    Ok(Json(
        json!({ "young_person": yp, "erased": true, "seq": answer[0].seq }),
    ))
}

#[derive(Deserialize)]
struct DisclosureQuery {
    young_person: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn not_visible() -> HttpProblem {
    HttpProblem::from(Problem::new(
        404,
        "not-found",
        "No young person with this id is visible to you",
    ))
}

/// The disclosure log. About one person: everything for the local authority that registered
/// them, and for anyone else only what they themselves received. Without a person: what the
/// caller received, in log order, paged like the feed.
async fn get_disclosures(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DisclosureQuery>,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let projector = state.projector.clone();
    match q.young_person {
        Some(id) => {
            let yp = Uuid::parse_str(&id)
                .map_err(|_| bad_request("young_person", "must be a UUID".into()))?;
            let items = blocking(move || {
                let entries = projector.log().read_person(yp).map_err(internal)?;
                let owner = views::owner(&entries) == Some(agency.as_str());
                let mut items = views::person_disclosures(
                    &projector,
                    &entries,
                    (!owner).then_some(agency.as_str()),
                )
                .map_err(internal)?;
                if !owner {
                    items.retain(|i| i["decision"]["outcome"] == "disclosed");
                    if items.is_empty() {
                        return Err(not_visible());
                    }
                }
                Ok(items)
            })
            .await?;
            Ok(Json(json!({ "young_person": yp, "items": items })))
        }
        None => {
            let after = number("after", q.after.as_deref(), 0)?;
            let limit = number("limit", q.limit.as_deref(), 100)?.clamp(1, 1000) as usize;
            let items = blocking(move || {
                views::received(&projector, &agency, after, limit).map_err(internal)
            })
            .await?;
            let next = items.last().and_then(|i| i["at"].as_u64()).unwrap_or(after);
            Ok(Json(json!({ "items": items, "next_after": next })))
        }
    }
}

/// Grants the caller recorded whose review date has passed and that still stand.
async fn get_consent_review(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let projector = state.projector.clone();
    let today = Day(projector.log().now().date());
    let items =
        blocking(move || views::consent_review(&projector, &agency, today).map_err(internal))
            .await?;
    Ok(Json(json!({ "as_of": today, "items": items })))
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

/// Everything held about a person, for the local authority that registered them: JSON, or
/// (with `Accept: text/html` or `?format=html`) a page the young person can read and print.
async fn get_subject_access(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    let yp = Uuid::parse_str(&id).map_err(|_| not_visible())?;
    let html = match q.format.as_deref() {
        Some("html") => true,
        Some("json") | None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
        Some(_) => return Err(bad_request("format", "must be `json` or `html`".into())),
    };
    let projector = state.projector.clone();
    let today = Day(projector.log().now().date());
    let report = blocking(move || {
        let entries = projector.log().read_person(yp).map_err(internal)?;
        if views::owner(&entries) != Some(agency.as_str()) {
            let visible = views::read_model(&projector, &agency, yp).map_err(internal)?;
            return Err(if visible.is_some() {
                Problem::new(
                    403,
                    "not-the-owner",
                    "Only the local authority that registered this young person may make a subject access request here",
                )
                .into()
            } else {
                not_visible()
            });
        }
        views::subject_access(&projector, yp, today)
            .map_err(internal)?
            .ok_or_else(not_visible)
    })
    .await?;
    if html {
        let page = crate::pages::subject_access(state.projector.agreements(), &report);
        Ok((PAGE_HEADERS, page).into_response())
    } else {
        Ok(([(header::CACHE_CONTROL, "no-store")], Json(report)).into_response())
    }
}

#[derive(Deserialize)]
struct QuarterlyQuery {
    quarter: Option<String>,
    format: Option<String>,
    section: Option<String>,
}

/// Headers for pages people read: nothing loads from anywhere, nothing is cached.
const PAGE_HEADERS: [(header::HeaderName, &str); 5] = [
    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// The quarterly review of the young people the calling local authority registered: JSON,
/// one section as CSV (`format=csv&section=turning-19|neet|cohort|rates`), or a printable page.
async fn get_quarterly(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<QuarterlyQuery>,
) -> Result<Response, HttpProblem> {
    let agency = caller(&state, &headers)?.to_owned();
    if kind_of(&state, &agency) != Some(AgencyKind::LocalAuthority) {
        return Err(Problem::new(
            403,
            "not-a-local-authority",
            "Only a local authority runs the quarterly review of its young people",
        )
        .into());
    }
    let projector = state.projector.clone();
    let today = Day(projector.log().now().date());
    let quarter = match q.quarter.as_deref() {
        None => Quarter::containing(today),
        Some(s) => Quarter::parse(s)
            .ok_or_else(|| bad_request("quarter", "must look like 2026-Q4".into()))?,
    };
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv" | "html") {
        return Err(bad_request(
            "format",
            "must be `json`, `csv` or `html`".into(),
        ));
    }
    let section = q.section.clone().unwrap_or_else(|| "turning-19".into());
    let review = blocking(move || {
        let people = views::registered_by(&projector, &agency).map_err(internal)?;
        let persons: Vec<report::Person> = people
            .iter()
            .map(|(id, history)| report::Person { id: *id, history })
            .collect();
        Ok(report::quarterly(&agency, quarter, today, &persons))
    })
    .await?;
    Ok(match format {
        "csv" => {
            let body = report::csv(&review, &section).ok_or_else(|| {
                bad_request(
                    "section",
                    "must be `turning-19`, `neet`, `cohort` or `rates`".into(),
                )
            })?;
            let disposition = format!(
                "attachment; filename=\"quarterly-{}-{section}.csv\"",
                review.quarter
            );
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                body,
            )
                .into_response()
        }
        "html" => (
            PAGE_HEADERS,
            crate::pages::quarterly(state.projector.agreements(), &review),
        )
            .into_response(),
        _ => ([(header::CACHE_CONTROL, "no-store")], Json(review)).into_response(),
    })
}

/// Runs a read that touches sled off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HttpProblem> + Send + 'static,
) -> Result<T, HttpProblem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(e.to_string()))?
}

async fn readyz(State(state): State<AppState>) -> Response {
    let mut body = json!({
        "log_head": state.projector.log().head(),
        "projected": state.projector.checkpoint(),
    });
    let mut ready = true;
    for h in &state.health {
        let up = h.ready();
        ready &= up;
        body[h.name()] = json!(if up { "ready" } else { "not ready" });
    }
    body["ready"] = json!(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
