//! The statutory timeline through the running service: deadlines are events the exchange
//! appends on its housekeeping pass, fanned out under the agreements, idempotent across
//! passes and restarts; read models show the legal care status.

mod helpers;

use axum::http::StatusCode;
use helpers::*;
use serde_json::{json, Value};
use uuid::Uuid;

async fn worker(app: &TestApp, token: &str, yp: Uuid, role: &str) {
    let mut w = sample("worker.allocated", yp);
    w["data"]["role"] = json!(role);
    let (s, v) = app.post(token, &w).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn neet(app: &TestApp, yp: Uuid, start: &str) {
    let mut n = sample("neet.onset", yp);
    n["data"]["neet_start_date"] = json!(start);
    let (s, v) = app.post(CAREERS, &n).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

fn deadlines(feed: &[Value], yp: Uuid) -> Vec<&Value> {
    feed.iter()
        .filter(|i| {
            i["young_person"] == json!(yp) && i["type"].as_str().unwrap().starts_with("deadline.")
        })
        .collect()
}

#[tokio::test]
async fn neet_onset_sets_a_meeting_deadline_met_on_day_4_or_overdue_without_one() {
    let app = spawn_app(); // Monday 2 November 2026
    let held = app.register("2007-03-01").await;
    let missed = app.register("2007-04-01").await;
    for yp in [held, missed] {
        worker(&app, LA, yp, "leaving-care-personal-adviser").await;
        worker(&app, CAREERS, yp, "named-link").await;
        neet(&app, yp, "2026-11-02").await;
    }
    assert_eq!(app.timeline().await, 2, "one deadline set for each");

    let la = app.feed(LA).await;
    let set = deadlines(&la, held);
    assert_eq!(set.len(), 1);
    assert_eq!(set[0]["type"], "deadline.set");
    assert_eq!(set[0]["source"], "exchange");
    assert_eq!(
        set[0]["basis"],
        json!({"kind": "statutory", "flow": "exchange-to-la"})
    );
    assert_eq!(set[0]["data"]["rule"], "neet-meeting");
    assert_eq!(set[0]["data"]["due_on"], "2026-11-09");
    assert_eq!(set[0]["data"]["alerts"], json!(["demo-careers", "demo-la"]));
    let careers = app.feed(CAREERS).await;
    assert_eq!(
        deadlines(&careers, held).len(),
        1,
        "the careers service is alerted too"
    );
    assert!(
        deadlines(&app.feed(COLLEGE).await, held).is_empty(),
        "no flow, nothing"
    );

    // Day 4: the meeting is held for one of them.
    app.set_today("2026-11-05");
    let mut m = sample("meeting.held", held);
    m["data"]["date"] = json!("2026-11-05");
    app.post(CAREERS, &m).await;
    assert_eq!(app.timeline().await, 1);
    app.set_today("2026-11-10");
    assert_eq!(
        app.timeline().await,
        1,
        "the other falls overdue after its due day"
    );
    assert_eq!(app.timeline().await, 0, "a second pass adds nothing");

    let la = app.feed(LA).await;
    let types = |yp| -> Vec<String> {
        deadlines(&la, yp)
            .iter()
            .map(|i| i["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(types(held), vec!["deadline.set", "deadline.met"]);
    assert_eq!(types(missed), vec!["deadline.set", "deadline.overdue"]);
    let (_, model) = app.get(LA, &format!("/v1/young-people/{missed}")).await;
    assert_eq!(model["deadlines"].as_array().unwrap().len(), 2);

    // A restart starts the timeline from scratch (at start), and finds nothing new.
    let app = app.restart();
    assert_eq!(app.timeline().await, 0);
}

#[tokio::test]
async fn read_models_show_the_legal_care_status() {
    let app = spawn_app(); // 2 November 2026
    let yp = app.register("2009-06-01").await; // 17
    let (s, _) = app.post(LA, &sample("looked-after.started", yp)).await; // since 2022-01-10
    assert_eq!(s, StatusCode::CREATED);
    app.drain();
    let (_, la) = app.get(LA, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(la["care"]["status"], "eligible");
    let (_, careers) = app.get(CAREERS, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(careers["care"]["status"], "eligible");

    let mut ceased = sample("looked-after.ceased", yp);
    ceased["data"]["date"] = json!("2026-11-01");
    app.post(LA, &ceased).await;
    app.drain();
    let (_, la) = app.get(LA, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(la["care"]["status"], "relevant");
    app.set_today("2027-06-02");
    let (_, la) = app.get(LA, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(la["care"]["status"], "former-relevant");
}
