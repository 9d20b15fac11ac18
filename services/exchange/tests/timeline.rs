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

async fn looked_after(app: &TestApp, yp: Uuid, from: &str, until: Option<&str>) {
    let mut s = sample("looked-after.started", yp);
    s["data"]["start_date"] = json!(from);
    app.post(LA, &s).await;
    if let Some(until) = until {
        let mut c = sample("looked-after.ceased", yp);
        c["data"]["date"] = json!(until);
        app.post(LA, &c).await;
    }
}

async fn outcome(
    app: &TestApp,
    yp: Uuid,
    age: u8,
    in_touch: &str,
    activity: &str,
    accommodation: &str,
) {
    let mut o = sample("care-leaver.outcome-recorded", yp);
    o["data"]["birthday_age"] = json!(age);
    o["data"]["in_touch"] = json!(in_touch);
    o["data"]["activity"] = json!(activity);
    o["data"]["accommodation"] = json!(accommodation);
    let (s, v) = app.post(LA, &o).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn the_quarterly_review_lists_those_reaching_19_the_neet_and_the_rates() {
    let app = spawn_app(); // 2 November 2026, in 2026-Q4
                           // A: 19 on 15 October, left care at 17, at college, in touch, suitably housed.
    let a = app.register("2007-10-15").await;
    looked_after(&app, a, "2022-01-10", Some("2025-06-01")).await;
    let mut d = sample("destination.recorded", a);
    d["data"]["activity_code"] = json!("230");
    app.post(CAREERS, &d).await;
    let mut plan = sample("pathway-plan.reviewed", a);
    plan["data"]["next_review_due"] = json!("2026-12-01");
    app.post(LA, &plan).await;
    outcome(&app, a, 19, "YES", "F2", "U1").await;
    // B: 19 on 1 December, NEET since 20 October, no meeting held.
    let b = app.register("2007-12-01").await;
    looked_after(&app, b, "2023-01-01", Some("2025-12-01")).await;
    neet(&app, b, "2026-10-20").await;
    // C: 17, in care: eligible; her 17th-birthday outcome: in touch, NEET, with family.
    let c = app.register("2009-06-01").await;
    looked_after(&app, c, "2022-01-10", None).await;
    outcome(&app, c, 17, "YES", "G5", "B1").await;
    // Registered by the careers service: not this authority's.
    let (_, v) = app.post(CAREERS, &registration("2007-11-11")).await;
    assert!(v["seq"].as_u64().is_some());

    let (s, r) = app.get(LA, "/v1/reports/quarterly?quarter=2026-Q4").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let turning: Vec<(Value, Value, Value, Value)> = r["turning_19"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["young_person"].clone(),
                t["eet_status"].clone(),
                t["care_status"].clone(),
                t["plan"]["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        turning,
        vec![
            (
                json!(a),
                json!("eet"),
                json!("former-relevant"),
                json!("in-date")
            ),
            (
                json!(b),
                json!("neet"),
                json!("former-relevant"),
                json!("none")
            ),
        ]
    );
    assert_eq!(r["turning_19"][0]["accommodation_suitable"], true);
    assert_eq!(r["turning_19"][0]["in_touch"], "YES");
    assert_eq!(r["neet"].as_array().unwrap().len(), 1);
    assert_eq!(r["neet"][0]["young_person"], json!(b));
    assert_eq!(r["neet"][0]["meeting_due_on"], "2026-10-27");
    assert_eq!(r["neet"][0]["meeting"], "overdue");
    assert_eq!(
        r["cohort"],
        json!({"16-17": {"eligible": 1}, "18": {"former-relevant": 1}, "19-21": {"former-relevant": 1}})
    );
    // At the end of Q3, A was 18 and B 18; C was already 17 and eligible.
    assert_eq!(
        r["cohort_previous_quarter"],
        json!({"16-17": {"eligible": 1}, "18": {"former-relevant": 2}})
    );
    assert_eq!(r["rates"]["17"]["cohort"], 1);
    assert_eq!(r["rates"]["17"]["in_touch_rate"], 100.0);
    assert_eq!(r["rates"]["17"]["eet_rate"], 0.0);
    assert_eq!(r["rates"]["19-21"]["eet"], 1);
    assert_eq!(r["ni_147"], json!({"cohort": 1, "count": 1, "rate": 100.0}));
    assert_eq!(r["ni_148"], json!({"cohort": 1, "count": 1, "rate": 100.0}));

    let (s, headers, csv) = app
        .get_text(
            LA,
            "/v1/reports/quarterly?quarter=2026-Q4&format=csv&section=neet",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("young_person,given_name,family_name,neet_start_date"));
    assert!(lines[1].starts_with(&b.to_string()) && lines[1].contains(",overdue,"));
    let (_, _, page) = app
        .get_text(LA, "/v1/reports/quarterly?quarter=2026-Q4&format=html")
        .await;
    assert!(page.contains("Quarterly review 2026-Q4: Demo Local Authority"));
    assert!(page.contains(
        "NI 148 (care leavers at 19 in education, employment or training): 1 of 1 (100.0%)"
    ));

    let (s, v) = app.get(COLLEGE, "/v1/reports/quarterly").await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, json!("not-a-local-authority"))
    );
    let (s, v) = app.get(LA, "/v1/reports/quarterly?quarter=2026-Q5").await;
    assert_eq!(
        (s, v["errors"][0]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("quarter"))
    );
}
