//! `spawn_app()`: the real service (demo configuration, embedded bus) over a temporary data
//! directory, driven through its router with `oneshot`. Background projection is replaced by
//! `drain()`, which steps the projector until it has applied everything: no sleeps.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use exchange::{app, config};
use http_body_util::BodyExt;
use pathway_projector::Projector;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use time::macros::datetime;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

pub const LA: &str = "demo-la-token";
pub const CAREERS: &str = "demo-careers-token";
pub const COLLEGE: &str = "demo-college-token";

pub struct TestApp {
    pub router: Router,
    pub projector: Projector,
    pub log: pathway_log::Log,
    pub dir: tempfile::TempDir,
    /// The service's clock (it stamps `recorded_at` and says what day it is); starts at
    /// 2026-11-02 10:00 UTC and moves only when a test moves it.
    pub clock: Arc<Mutex<OffsetDateTime>>,
    pub recorder: Arc<pathway_recorder::Recorder>,
    /// The housekeeper, kept across passes as the service keeps it (it remembers whom to
    /// look at next).
    pub keeper: Arc<exchange::housekeeping::Housekeeper>,
    pub webhooks: Arc<pathway_gateway::webhooks::Webhooks>,
}

pub fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir, Arc::new(Mutex::new(datetime!(2026-11-02 10:00 UTC))))
}

pub fn spawn_app_in(dir: tempfile::TempDir, clock: Arc<Mutex<OffsetDateTime>>) -> TestApp {
    let config = config::parse(config::DEMO, "demo").unwrap();
    let reading = clock.clone();
    let options = pathway_log::LogOptions {
        clock: Arc::new(move || *reading.lock().unwrap()),
        ..Default::default()
    };
    let running = app::build_with(config, dir.path(), options).unwrap();
    let keeper = Arc::new(exchange::housekeeping::Housekeeper::new(
        running.projector.clone(),
        running.recorder.clone(),
    ));
    TestApp {
        router: pathway_gateway::router(running.state),
        projector: running.projector,
        log: running.log,
        dir,
        clock,
        keeper,
        webhooks: running.webhooks.clone(),
        recorder: running.recorder,
    }
}

impl TestApp {
    /// Stops the service (every handle on the stores dropped) and starts it again on the
    /// same data directory.
    pub fn restart(self) -> TestApp {
        let TestApp {
            router,
            projector,
            log,
            dir,
            clock,
            recorder,
            keeper,
            webhooks,
        } = self;
        drop(webhooks);
        drop(keeper);
        drop(recorder);
        drop(router);
        drop(projector);
        drop(log);
        spawn_app_in(dir, clock)
    }

    /// Moves the service's clock on.
    pub fn advance(&self, by: time::Duration) {
        *self.clock.lock().unwrap() += by;
    }

    /// Moves the service's clock to noon UTC on `day` (YYYY-MM-DD).
    pub fn set_today(&self, day: &str) {
        let date = time::Date::parse(
            day,
            &time::macros::format_description!("[year]-[month]-[day]"),
        )
        .unwrap();
        *self.clock.lock().unwrap() = date.with_time(time::macros::time!(12:00)).assume_utc();
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, String, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .header("content-type", "application/json")
            .body(body.map_or(Body::empty(), Body::from))
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let ctype = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, ctype, value)
    }

    pub async fn post(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        self.post_to("/v1/events", token, body).await
    }

    /// A JSON body posted to `path`: status and answer.
    pub async fn post_to(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .request(
                "POST",
                path,
                Some(token),
                Some(body.to_string().into_bytes()),
            )
            .await;
        (s, v)
    }

    /// A GET whose body is not JSON (pages): status, headers and text.
    pub async fn get_text(
        &self,
        token: &str,
        path: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let req = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.request("GET", path, Some(token), None).await;
        (s, v)
    }

    /// One retention pass after draining; returns purges recorded.
    pub async fn housekeep(&self) -> usize {
        self.drain();
        let recorded = self.keeper.retention_step().await.unwrap();
        self.drain();
        recorded
    }

    /// One timeline pass; returns deadline events recorded.
    pub async fn timeline(&self) -> usize {
        self.drain();
        let recorded = self.keeper.timeline_step().await.unwrap();
        self.drain();
        recorded
    }

    /// Applies everything appended so far to the projections.
    pub fn drain(&self) {
        self.projector.catch_up().unwrap();
    }

    /// Registers a young person born on `dob` through the local authority; returns the id.
    pub async fn register(&self, dob: &str) -> Uuid {
        let (s, v) = self.post(LA, &registration(dob)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        serde_json::from_value(v["young_person"].clone()).unwrap()
    }

    /// Erases `yp` as the exchange's admin, and projects the erasure.
    pub async fn erase(&self, yp: Uuid) {
        let path = format!("/v1/young-people/{yp}/erase");
        let (s, _, v) = self
            .request("POST", &path, Some("demo-admin-token"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        self.drain();
    }

    pub async fn feed(&self, token: &str) -> Vec<Value> {
        self.drain();
        let (s, v) = self.get(token, "/v1/feed?after=0&limit=1000").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().clone()
    }
}

pub fn envelope(ty: &str, yp: Option<Uuid>, data: Value) -> Value {
    let mut e = json!({"id": Uuid::new_v4(), "type": ty, "occurred_at": "2026-11-02T10:00:00Z", "data": data});
    if let Some(yp) = yp {
        e["young_person"] = json!(yp);
    }
    e
}

pub fn registration(dob: &str) -> Value {
    let mut d = pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered);
    d["date_of_birth"] = json!(dob);
    envelope("young-person.registered", None, d)
}

pub fn sample(ty: &str, yp: Uuid) -> Value {
    envelope(
        ty,
        Some(yp),
        pathway_core::samples::data(pathway_core::EventType::parse(ty).unwrap()),
    )
}

pub fn types_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["type"].as_str().unwrap().to_owned())
        .collect()
}
