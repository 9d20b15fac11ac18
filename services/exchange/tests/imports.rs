//! The careers service's quarterly destinations, imported from its own NCCIS-layout export:
//! people matched by identifier, then by date of birth and name, linked or registered;
//! doubtful matches held for review; only changes appended; the same file twice appends
//! nothing; every bad row reported by line and column.

mod helpers;

use axum::http::StatusCode;
use helpers::*;
use serde_json::{json, Value};
use uuid::Uuid;

async fn register(app: &TestApp, given: &str, family: &str, dob: &str, ids: Value) -> Uuid {
    let mut r = registration(dob);
    r["data"]["given_name"] = json!(given);
    r["data"]["family_name"] = json!(family);
    r["data"]["identifiers"] = ids;
    let (s, v) = app.post(LA, &r).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    serde_json::from_value(v["young_person"].clone()).unwrap()
}

async fn import(app: &TestApp, token: &str, csv: &str) -> (StatusCode, Value) {
    app.drain();
    let (s, _, v) = app
        .request(
            "POST",
            "/v1/imports/destinations",
            Some(token),
            Some(csv.as_bytes().to_vec()),
        )
        .await;
    app.drain();
    (s, v)
}

/// An export as real systems write them: a byte-order mark, CRLF, columns in their own
/// order with extras, a quoted name, a blank line, trailing spaces.
const QUARTER_3: &str = "\u{feff}DOB,YoungPersonsID,GivenName,FamilyName,UniquePupilNumber,ActivityCode,StartDate,DateAscertained,LEACode,Notes\r\n\
2008-05-01,0000000000001,Ada,Example,A123456789012,230,2026-09-01,2026-09-20,,from school\r\n\
2008-07-07,0000000000002,BEN,\"Twin\",,310,2026-09-01,2026-09-21,,\r\n\
\r\n\
2008-08-08,0000000000003,Cara,Double,,230,2026-09-01,2026-09-22,,\r\n\
2008-09-09,0000000000004,Dan,New,,619,2026-09-01,2026-09-23,878 ,\r\n\
2008-10-10,0000000000005,Eve,Bad,,999,2026-09-01,2026-09-24,878,\r\n\
2008-11-11,0000000000006,Fay,Nolea,,230,2026-09-01,2026-09-25,,\r\n";

#[tokio::test]
async fn destinations_are_matched_linked_registered_and_only_changes_appended() {
    let app = spawn_app();
    let ada = register(
        &app,
        "Ada",
        "Example",
        "2008-05-01",
        json!({"upn": "A123456789012"}),
    )
    .await;
    let ben = register(&app, "Ben", "Twin", "2008-07-07", json!({})).await;
    register(&app, "Cara", "Double", "2008-08-08", json!({})).await;
    register(&app, "Cara", "Double", "2008-08-08", json!({})).await;

    let (s, summary) = import(&app, CAREERS, QUARTER_3).await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    assert_eq!(summary["rows"], 6);
    assert_eq!(summary["registered"], 1, "Dan is new");
    assert_eq!(
        summary["linked"], 2,
        "Ada by her UPN, Ben by date of birth and name"
    );
    assert_eq!(summary["changed"], 3);
    assert_eq!(summary["unchanged"], 0);
    assert_eq!(
        summary["held_for_review"],
        json!([{"line": 5, "nccis_id": "0000000000003", "candidates": 2}])
    );
    let rejected: Vec<(u64, &str)> = summary["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_str().unwrap()))
        .collect();
    assert_eq!(rejected, vec![(7, "ActivityCode"), (8, "LEACode")]);

    let (_, queue) = app.get(CAREERS, "/v1/identity/review").await;
    assert_eq!(queue["items"][0]["nccis_id"], "0000000000003");
    let (_, queue) = app.get(LA, "/v1/identity/review").await;
    assert_eq!(queue["items"], json!([]), "each agency sees its own queue");

    // The links are the exchange's own events; the careers service now finds people by its id.
    let (_, found) = app
        .get(CAREERS, "/v1/young-people?nccis_id=0000000000002")
        .await;
    assert_eq!(found["items"], json!([{"young_person": ben}]));
    let (_, found) = app.get(LA, "/v1/young-people?upn=A123456789012").await;
    assert_eq!(found["items"], json!([{"young_person": ada}]));
    let (_, found) = app.get(COLLEGE, "/v1/young-people?upn=A123456789012").await;
    assert_eq!(found["items"], json!([]), "only among those it may see");
    let (s, _) = app.get(CAREERS, "/v1/young-people?upn=A1&uln=1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, model) = app.get(LA, &format!("/v1/young-people/{ada}")).await;
    assert_eq!(
        model["education_employment"]["destination"]["activity_code"],
        "230"
    );

    // The same file again appends nothing.
    let head = app.log.head();
    let (_, again) = import(&app, CAREERS, QUARTER_3).await;
    assert_eq!(
        (
            again["registered"].clone(),
            again["linked"].clone(),
            again["changed"].clone(),
            again["unchanged"].clone()
        ),
        (json!(0), json!(0), json!(0), json!(3))
    );
    assert_eq!(app.log.head(), head);

    // Next quarter Ada leaves college and is NEET: a destination and a NEET onset.
    let quarter_4 = "YoungPersonsID,DOB,ActivityCode,StartDate,DateAscertained,NEETStartDate\n\
                     0000000000001,2008-05-01,619,2026-11-01,2026-11-10,2026-10-30\n";
    let (_, summary) = import(&app, CAREERS, quarter_4).await;
    assert_eq!(
        (summary["changed"].clone(), summary["neet_onsets"].clone()),
        (json!(1), json!(1))
    );
    let la = app.feed(LA).await;
    let onset = la
        .iter()
        .find(|i| i["type"] == "neet.onset" && i["young_person"] == json!(ada))
        .expect("the local authority hears of the NEET onset");
    assert_eq!(onset["data"]["neet_start_date"], "2026-10-30");
}

#[tokio::test]
async fn imports_refuse_the_wrong_agency_and_unreadable_files() {
    let app = spawn_app();
    let (s, v) = import(&app, LA, QUARTER_3).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, json!("not-a-permitted-source"))
    );
    let (s, v) = import(
        &app,
        CAREERS,
        "YoungPersonsID,DOB\n0000000000001,2008-01-01\n",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["code"], "unreadable-file");
    assert!(v["detail"].as_str().unwrap().contains("ActivityCode"));
    assert_eq!(app.log.head(), 0);
}
