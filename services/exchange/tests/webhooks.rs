//! Webhooks: a college registers a URL and its feed is pushed there, signed, in order;
//! failures are retried with backoff and dead-lettered after the limit, visible to the
//! agency, and delivery moves on. The receiver is a real HTTP server on a loopback port.

mod helpers;

use axum::http::{HeaderMap, StatusCode};
use helpers::*;
use pathway_gateway::webhooks::{verify, MAX_ATTEMPTS};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<(HeaderMap, String)>>,
    fail_next: AtomicUsize,
    attempts: AtomicUsize,
}

async fn receiver() -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver::default());
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let r = shared.clone();
            async move {
                r.attempts.fetch_add(1, Ordering::SeqCst);
                let failing = r
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                r.got.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

async fn destination(app: &TestApp, yp: uuid::Uuid, code: &str) -> u64 {
    let mut d = sample("destination.recorded", yp);
    d["data"]["activity_code"] = json!(code);
    let (_, v) = app.post(CAREERS, &d).await;
    app.drain();
    v["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn a_college_webhook_is_signed_ordered_retried_and_dead_lettered() {
    let app = spawn_app();
    let (url, rx) = receiver().await;
    let (s, hook) = app
        .request(
            "POST",
            "/v1/webhooks",
            Some(COLLEGE),
            Some(json!({"url": url}).to_string().into_bytes()),
        )
        .await
        .into_pair();
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();

    let yp = app.register("2008-01-01").await;
    app.post(LA, &sample("consent.granted", yp)).await;
    destination(&app, yp, "310").await;
    assert_eq!(app.webhooks.step().await.unwrap(), 2);
    let feed = app.feed(COLLEGE).await;
    {
        let got = rx.got.lock().unwrap();
        assert_eq!(got.len(), 2);
        for ((headers, body), item) in got.iter().zip(&feed) {
            let h = |n: &str| headers[n].to_str().unwrap().to_owned();
            assert!(verify(
                &secret,
                &h("x-pathway-timestamp"),
                body,
                &h("x-pathway-signature")
            ));
            assert!(!verify(
                "another-secret",
                &h("x-pathway-timestamp"),
                body,
                &h("x-pathway-signature")
            ));
            assert_eq!(&serde_json::from_str::<Value>(body).unwrap(), item);
            assert_eq!(h("x-pathway-delivery"), item["seq"].to_string());
        }
    }
    assert_eq!(
        app.webhooks.step().await.unwrap(),
        0,
        "nothing new, nothing sent"
    );

    // The receiver goes down: retried with backoff, then dead-lettered, and delivery moves on.
    rx.fail_next.store(usize::MAX, Ordering::SeqCst);
    let lost = destination(&app, yp, "230").await;
    let before = rx.attempts.load(Ordering::SeqCst);
    assert_eq!(app.webhooks.step().await.unwrap(), 0);
    assert_eq!(
        app.webhooks.step().await.unwrap(),
        0,
        "not retried before its time"
    );
    assert_eq!(rx.attempts.load(Ordering::SeqCst), before + 1);
    for _ in 1..MAX_ATTEMPTS {
        app.advance(time::Duration::hours(1));
        app.webhooks.step().await.unwrap();
    }
    assert_eq!(
        rx.attempts.load(Ordering::SeqCst),
        before + MAX_ATTEMPTS as usize
    );
    let (_, dead) = app.get(COLLEGE, "/v1/webhooks/dead-letters").await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead["items"][0]["seq"], lost);
    assert_eq!(dead["items"][0]["attempts"], MAX_ATTEMPTS);
    let (_, theirs) = app.get(CAREERS, "/v1/webhooks/dead-letters").await;
    assert_eq!(theirs["items"], json!([]));

    rx.fail_next.store(0, Ordering::SeqCst);
    let next = destination(&app, yp, "619").await;
    app.advance(time::Duration::hours(1));
    assert_eq!(app.webhooks.step().await.unwrap(), 1);
    let last = rx.got.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(serde_json::from_str::<Value>(&last).unwrap()["seq"], next);

    let (_, listed) = app.get(COLLEGE, "/v1/webhooks").await;
    assert_eq!(listed["items"][0]["delivered_through"], next);
    assert!(
        listed["items"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, _, _) = app
        .request("DELETE", &format!("/v1/webhooks/{id}"), Some(CAREERS), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not another agency's to remove");
    let (s, _, _) = app
        .request("DELETE", &format!("/v1/webhooks/{id}"), Some(COLLEGE), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = app
        .request(
            "POST",
            "/v1/webhooks",
            Some(COLLEGE),
            Some(br#"{"url": "ftp://x"}"#.to_vec()),
        )
        .await;
    assert_eq!(
        (s, v["errors"][0]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("/url"))
    );
}

trait Pair {
    fn into_pair(self) -> (StatusCode, Value);
}

impl Pair for (StatusCode, String, Value) {
    fn into_pair(self) -> (StatusCode, Value) {
        (self.0, self.2)
    }
}
