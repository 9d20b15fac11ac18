//! The HTTP API against the real service, arrange / act / assert.

mod helpers;

use axum::http::StatusCode;
use helpers::*;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn without_a_valid_token_the_answer_is_401_and_nothing_is_appended() {
    let app = spawn_app();
    let (s, ctype, v) = app
        .request(
            "POST",
            "/v1/events",
            None,
            Some(registration("2008-01-01").to_string().into_bytes()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(v["code"], "unauthenticated");
    let (s, _) = app.post("wrong-token", &registration("2008-01-01")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(app.log.head(), 0);
}

#[tokio::test]
async fn an_agency_may_not_send_types_its_kind_does_not_source() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    let (s, v) = app.post(COLLEGE, &sample("placement.changed", yp)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["errors"][0]["field"], "/type");
    let (s, _) = app.post(LA, &sample("deadline.set", yp)).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "the exchange's own types are never accepted"
    );
    assert_eq!(app.log.head(), 1);
}

#[tokio::test]
async fn bad_input_names_the_field_and_appends_nothing() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    let cases = [
        (
            json!({"activity_code": "999", "start_date": "2026-09-01", "date_ascertained": "2026-09-20"}),
            "/data/activity_code",
        ),
        (
            json!({"activity_code": "230", "start_date": "2026-02-30", "date_ascertained": "2026-09-20"}),
            "/data/start_date",
        ),
        (
            json!({"activity_code": "230", "start_date": "2026-09-01", "date_ascertained": "2026-09-20", "mood": "ok"}),
            "/data/mood",
        ),
        (
            json!({"start_date": "2026-09-01", "date_ascertained": "2026-09-20"}),
            "/data/activity_code",
        ),
    ];
    for (data, field) in cases {
        let (s, v) = app
            .post(CAREERS, &envelope("destination.recorded", Some(yp), data))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["errors"][0]["field"], field, "{v}");
    }
    let (s, v) = app
        .post(CAREERS, &envelope("pony.delivered", Some(yp), json!({})))
        .await;
    assert_eq!(
        (s, v["errors"][0]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("/type"))
    );
    let (s, v) = app
        .post(CAREERS, &sample("destination.recorded", Uuid::new_v4()))
        .await;
    assert_eq!(
        (s, v["errors"][0]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("/young_person"))
    );
    let (s, _, v) = app
        .request("POST", "/v1/events", Some(LA), Some(b"{\"id\": ".to_vec()))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    assert_eq!(app.log.head(), 1);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = spawn_app();
    let big = vec![b' '; (8 << 20) + 1];
    let (s, ctype, v) = app.request("POST", "/v1/events", Some(LA), Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(v["code"], "too-large");
}

#[tokio::test]
async fn the_same_event_twice_gives_the_first_answer_and_another_body_conflicts() {
    let app = spawn_app();
    let reg = registration("2008-01-01");
    let (s1, first) = app.post(LA, &reg).await;
    let (s2, again) = app.post(LA, &reg).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first, again);
    let mut changed = reg.clone();
    changed["data"]["sex"] = json!("M");
    let (s3, v) = app.post(LA, &changed).await;
    assert_eq!(s3, StatusCode::CONFLICT);
    assert_eq!(v["errors"][0]["field"], "/id");
    assert_eq!(app.log.head(), 1);
}

#[tokio::test]
async fn expected_version_must_match() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    let mut e = sample("placement.changed", yp);
    e["expected_version"] = json!(3);
    let (s, v) = app.post(LA, &e).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["code"], "version-mismatch");
    e["expected_version"] = json!(1);
    let (s, v) = app.post(LA, &e).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["version"], 2);
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    let good = sample("placement.changed", yp);
    let mut bad = sample("looked-after.started", yp);
    bad["data"]["legal_status"] = json!("ZZ");
    let (s, v) = app.post(LA, &json!({"events": [good.clone(), bad]})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["errors"][0]["field"], "/events/1/data/legal_status");
    assert_eq!(app.log.head(), 1);

    let (s, v) = app
        .post(
            LA,
            &json!({"events": [good, sample("looked-after.started", yp)]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let seqs: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[tokio::test]
async fn statutory_flows_follow_the_age_band() {
    let app = spawn_app();
    let old = app.register("2008-01-01").await;
    let young = app.register("2014-01-01").await; // 12 on the event date
    app.post(LA, &sample("looked-after.started", old)).await;
    app.post(LA, &sample("looked-after.started", young)).await;
    let careers = app.feed(CAREERS).await;
    let people: Vec<&str> = careers
        .iter()
        .map(|i| i["young_person"].as_str().unwrap())
        .collect();
    assert!(people.iter().all(|p| *p == old.to_string()), "{people:?}");
    assert_eq!(
        types_of(&careers),
        vec!["young-person.registered", "looked-after.started"]
    );
    assert_eq!(careers[1]["basis"]["kind"], "statutory");
    let (s, _) = app.get(CAREERS, &format!("/v1/young-people/{young}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn consent_opens_a_flow_and_withdrawal_closes_it_and_purges_the_read_model() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    // no consent yet: the college sees nothing
    app.post(CAREERS, &sample("destination.recorded", yp)).await;
    assert!(app.feed(COLLEGE).await.is_empty());
    let (s, _) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    app.post(LA, &sample("consent.granted", yp)).await;
    let mut dest = sample("destination.recorded", yp);
    dest["data"]["activity_code"] = json!("310");
    app.post(CAREERS, &dest).await;
    let feed = app.feed(COLLEGE).await;
    assert_eq!(
        types_of(&feed),
        vec!["consent.granted", "destination.recorded"]
    );
    assert_eq!(feed[1]["basis"]["kind"], "consent");
    assert_eq!(feed[1]["data"]["activity_code"], "310");
    let (_, model) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(
        model["education_employment"]["destination"]["activity_code"],
        "310"
    );

    app.post(LA, &sample("consent.withdrawn", yp)).await;
    let mut later = sample("destination.recorded", yp);
    later["data"]["activity_code"] = json!("619");
    app.post(CAREERS, &later).await;
    let feed = app.feed(COLLEGE).await;
    assert_eq!(
        types_of(&feed),
        vec![
            "consent.granted",
            "destination.recorded",
            "consent.withdrawn"
        ]
    );
    let (_, model) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert!(model.get("education_employment").is_none(), "{model}");
    // the statutory recipient is unaffected
    let la = app.feed(LA).await;
    assert_eq!(
        types_of(&la)
            .iter()
            .filter(|t| *t == "destination.recorded")
            .count(),
        3
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app();
    let (s, _, v) = app.request("GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].clone()), (StatusCode::OK, json!("ok")));
    let (s, _, v) = app.request("GET", "/readyz", None, None).await;
    assert_eq!((s, v["ready"].clone()), (StatusCode::OK, json!(true)));
}

#[tokio::test]
async fn feed_paging_uses_the_log_position() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    for _ in 0..5 {
        app.post(LA, &sample("worker.allocated", yp)).await;
    }
    app.drain();
    let (_, page) = app.get(CAREERS, "/v1/feed?after=0&limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_after"].as_u64().unwrap();
    let (_, rest) = app
        .get(CAREERS, &format!("/v1/feed?after={next}&limit=100"))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 4);
    assert!(rest["items"][0]["seq"].as_u64().unwrap() > next);
    let (s, _) = app.get(CAREERS, "/v1/feed?after=minus-one").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn feeds_and_read_models_span_many_storage_blocks() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    let events: Vec<_> = (0..300).map(|_| sample("worker.allocated", yp)).collect();
    let (s, _) = app.post(LA, &json!({ "events": events })).await;
    assert_eq!(s, StatusCode::CREATED);
    app.drain();

    // Page through the careers service's feed in awkward page sizes.
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = app
            .get(CAREERS, &format!("/v1/feed?after={after}&limit=7"))
            .await;
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        seqs.extend(items.iter().map(|i| i["seq"].as_u64().unwrap()));
        after = page["next_after"].as_u64().unwrap();
    }
    assert_eq!(seqs, (1..=301).collect::<Vec<_>>());

    let (_, model) = app.get(CAREERS, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(model["events"].as_array().unwrap().len(), 301);
    assert_eq!(model["as_of_seq"], 301);
    let (_, own) = app.get(LA, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(
        own["events"].as_array().unwrap().len(),
        301,
        "the source sees its own events"
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app();
    for (path, token) in [
        ("/healthz", None),
        ("/v1/feed", Some(LA)),
        ("/v1/feed", None),
        ("/nowhere", Some(LA)),
    ] {
        let req = axum::http::Request::builder().uri(path);
        let req = match token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        };
        let res = tower::ServiceExt::oneshot(
            app.router.clone(),
            req.body(axum::body::Body::empty()).unwrap(),
        )
        .await
        .unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
    }
}

#[tokio::test]
async fn each_agency_has_a_rate_limit_and_hears_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = exchange::config::parse(exchange::config::DEMO, "demo").unwrap();
    config.service.rate_per_second = Some(0.001);
    config.service.rate_burst = Some(3.0);
    let running = exchange::app::build(config, dir.path()).unwrap();
    let router = pathway_gateway::router(running.state);
    let get = |token: &'static str| {
        let router = router.clone();
        async move {
            let req = axum::http::Request::builder()
                .uri("/v1/feed")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            tower::ServiceExt::oneshot(router, req).await.unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(get(CAREERS).await.status(), StatusCode::OK);
    }
    let refused = get(CAREERS).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        get(COLLEGE).await.status(),
        StatusCode::OK,
        "another agency is not held up"
    );
    // The MI officer and the LA's own systems share the local authority's bucket.
    for _ in 0..3 {
        assert_eq!(get(LA).await.status(), StatusCode::OK);
    }
    assert_eq!(
        get("demo-la-mi-token").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn an_agency_can_have_its_own_size_limit() {
    let text = exchange::config::DEMO.replace(
        "id = \"demo-college\"\n",
        "id = \"demo-college\"\nmax_body_bytes = 200\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let running =
        exchange::app::build(exchange::config::parse(&text, "test").unwrap(), dir.path()).unwrap();
    let router = pathway_gateway::router(running.state);
    let body = registration("2008-01-01").to_string();
    assert!(body.len() > 200);
    let post = |token: &'static str| {
        let router = router.clone();
        let body = body.clone();
        async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .uri("/v1/events")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post(COLLEGE).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_ne!(
        post(LA).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "others keep the service's limit"
    );
}
