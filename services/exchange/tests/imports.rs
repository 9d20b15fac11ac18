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

/// How many people the careers service finds by its own id for them.
async fn found_by_nccis_id(app: &TestApp, id: &str) -> usize {
    let (_, found) = app
        .get(CAREERS, &format!("/v1/young-people?nccis_id={id}"))
        .await;
    found["items"].as_array().map_or(0, Vec::len)
}

/// The import answered OK, having registered exactly one person.
fn assert_registered_one(status: StatusCode, answer: &Value) {
    assert_eq!(
        (status, answer["registered"].clone()),
        (StatusCode::OK, json!(1)),
        "{answer}"
    );
}

/// Imports a destinations file, with the projections drained before and after.
async fn import(app: &TestApp, token: &str, csv: &str) -> (StatusCode, Value) {
    app.drain();
    let answer = import_undrained(app, token, csv).await;
    app.drain();
    answer
}

async fn import_undrained(app: &TestApp, token: &str, csv: &str) -> (StatusCode, Value) {
    let (s, _, v) = app
        .request(
            "POST",
            "/v1/imports/destinations",
            Some(token),
            Some(csv.as_bytes().to_vec()),
        )
        .await;
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
    let cara = register(
        &app,
        "Cara",
        "Double",
        "2008-08-08",
        json!({"uln": "1234567890"}),
    )
    .await;

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
        json!([{"line": 5, "nccis_id": "0000000000003", "candidates": 2, "reason": "date-of-birth-and-name"}])
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
    // A later file that tells the Caras apart ends the hold.
    let (_, told) = import(
        &app,
        CAREERS,
        "YoungPersonsID,DOB,GivenName,FamilyName,UniqueLearnerNo,ActivityCode,StartDate,DateAscertained\n\
         0000000000003,2008-08-08,Cara,Double,1234567890,230,2026-09-01,2026-09-22\n",
    )
    .await;
    assert_eq!(
        (told["linked"].clone(), told["changed"].clone()),
        (json!(1), json!(1)),
        "{told}"
    );
    let (_, queue) = app.get(CAREERS, "/v1/identity/review").await;
    assert_eq!(queue["items"], json!([]), "the hold is over");
    let (_, found) = app
        .get(CAREERS, "/v1/young-people?nccis_id=0000000000003")
        .await;
    assert_eq!(found["items"], json!([{"young_person": cara}]));

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
        (json!(0), json!(0), json!(0), json!(4)),
        "Ada, Ben, Dan, and Cara, now known by the careers service's own id"
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

const HEADER: &str = include_str!("../../../reference/samples/ssda903/header.csv");
const EPISODES: &str = include_str!("../../../reference/samples/ssda903/episodes.csv");
const OC3: &str = include_str!("../../../reference/samples/ssda903/oc3.csv");

/// POSTs files as multipart/form-data, one part per (name, CSV text).
async fn upload(
    app: &TestApp,
    token: &str,
    query: &str,
    parts: &[(&str, &str)],
) -> (StatusCode, Value) {
    app.drain();
    send(app, looked_after_request(token, query, parts)).await
}

fn looked_after_request(
    token: &str,
    query: &str,
    parts: &[(&str, &str)],
) -> axum::http::Request<axum::body::Body> {
    let boundary = "pathway-test-boundary";
    let mut body = String::new();
    for (name, text) in parts {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.csv\"\r\nContent-Type: text/csv\r\n\r\n{text}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    axum::http::Request::builder()
        .method("POST")
        .uri(format!("/v1/imports/looked-after{query}"))
        .header("authorization", format!("Bearer {token}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// Sends a prepared request to the router; the projections are drained before and after.
async fn send(app: &TestApp, req: axum::http::Request<axum::body::Body>) -> (StatusCode, Value) {
    app.drain();
    let res = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    let status = res.status();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    app.drain();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_fake_ssda903_samples_load_with_invalid_rows_reported_and_load_once() {
    let app = spawn_app();
    let parts = [("header", HEADER), ("episodes", EPISODES), ("oc3", OC3)];
    let (s, first) = upload(&app, LA, "?year=2021", &parts).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["rows"], 353);
    let rejected = first["rejected"].as_array().unwrap();
    // 100 children in header, all new; one (197474) also has an invalid OC3 row (DIED with
    // an activity), so none of its rows load.
    assert_eq!(first["registered"], 99);
    assert!(rejected
        .iter()
        .any(|e| e["file"] == "oc3" && e["line"] == 2));
    assert!(first["appended"]["looked-after.started"].as_u64().unwrap() > 80);
    // The OC3 rows are about care leavers from earlier years, not in this header: unknown to
    // a fresh exchange, so reported rather than guessed at.
    assert!(first["appended"]
        .get("care-leaver.outcome-recorded")
        .is_none());
    assert!(rejected.iter().any(|e| e["file"] == "oc3"
        && e["column"] == "CHILD"
        && e["message"].as_str().unwrap().contains("not known")));
    assert!(rejected.iter().any(|e| e["file"] == "oc3"
        && e["line"] == 2
        && e["column"] == "ACTIV"
        && e["message"].as_str().unwrap().contains("DIED")));
    let head = app.log.head();

    let (_, again) = upload(&app, LA, "?year=2021", &parts).await;
    assert_eq!(again["registered"], 0);
    assert_eq!(again["appended"], json!({}), "re-uploading appends nothing");
    assert_eq!(app.log.head(), head);
    assert_eq!(
        again["unchanged"], 99,
        "every child loaded the first time is unchanged"
    );
}

#[tokio::test]
async fn a_looked_after_list_appends_only_what_changed_since_the_last_one() {
    let app = spawn_app();
    // Known already, by the authority's own child id (the sample registration's C1001).
    let known = app.register("2008-05-01").await;
    let header = "CHILD,SEX,DOB,UPN,GIVEN_NAME,FAMILY_NAME\r\nC1001,F,01/05/2008,UN1,Ada,Example\r\nC2002,1,02/06/2009,,Bo,Newcomer\r\n";
    let episodes = "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,HOME_POST,PL_POST,URN\r\n\
        C1001,10/01/2022,S,C2,N1,U1,PR1,,,,,EX1 1AA,\r\n\
        C2002,01/03/2023,S,V2,N1,U3,PR1,,,,,EX2 2BB,\r\n";
    let oc3 = "CHILD,DOB,IN_TOUCH,ACTIV,ACCOM\r\nC1001,01/05/2008,YES,F2,U1\r\n";
    let files = [("header", header), ("episodes", episodes), ("oc3", oc3)];
    let (_, first) = upload(&app, LA, "", &files).await;
    assert_eq!(
        (first["registered"].clone(), first["linked"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        first["appended"],
        json!({"care-leaver.outcome-recorded": 1, "looked-after.started": 2, "placement.changed": 2})
    );
    let (_, model) = app.get(LA, &format!("/v1/young-people/{known}")).await;
    assert_eq!(model["care"]["looked_after"], true);

    // Next month C1001 moves placement (the first episode ends with X1, a new one begins).
    let episodes = "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,HOME_POST,PL_POST,URN\r\n\
        C1001,10/01/2022,S,C2,N1,U1,PR1,01/02/2026,X1,,,EX1 1AA,\r\n\
        C1001,01/02/2026,P,C2,N1,U4,PR1,,,CARPL,,EX3 3CC,\r\n\
        C2002,01/03/2023,S,V2,N1,U3,PR1,,,,,EX2 2BB,\r\n";
    let (_, second) = upload(
        &app,
        LA,
        "",
        &[("header", header), ("episodes", episodes), ("oc3", oc3)],
    )
    .await;
    assert_eq!(second["appended"], json!({"placement.changed": 1}));
    assert_eq!(second["unchanged"], 1);

    let (s, v) = upload(
        &app,
        CAREERS,
        "",
        &[("header", header), ("episodes", episodes)],
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, json!("not-a-permitted-source"))
    );
    let (s, v) = upload(&app, LA, "", &[("header", header)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = upload(
        &app,
        LA,
        "",
        &[
            ("header", "CHILD,DOB\n1,01/01/2008\n"),
            ("episodes", episodes),
        ],
    )
    .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("unreadable-file"))
    );
}

#[tokio::test]
async fn exports_give_each_agency_its_own_list_in_csv() {
    let app = spawn_app(); // 2 November 2026
    let leaver = app.register("2008-01-01").await;
    let mut start = sample("looked-after.started", leaver);
    start["data"]["start_date"] = json!("2022-01-10");
    app.post(LA, &start).await;
    let mut ceased = sample("looked-after.ceased", leaver);
    ceased["data"]["date"] = json!("2025-06-01");
    app.post(LA, &ceased).await;
    let young = app.register("2013-06-01").await; // 13, in care: not a care leaver, not 14
    app.post(LA, &sample("looked-after.started", young)).await;
    for (code, ascertained) in [("230", "2026-09-20"), ("619", "2026-10-15")] {
        let mut d = sample("destination.recorded", leaver);
        d["data"]["activity_code"] = json!(code);
        d["data"]["start_date"] = json!(ascertained);
        d["data"]["date_ascertained"] = json!(ascertained);
        app.post(CAREERS, &d).await;
    }
    app.drain();

    let csv = |q: &'static str| {
        let app = &app;
        async move {
            let (s, headers, body) = app
                .get_text(LA, &format!("/v1/exports/destinations?quarter={q}"))
                .await;
            assert_eq!(s, StatusCode::OK, "{body}");
            assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
            body
        }
    };
    let q3 = csv("2026-Q3").await;
    let lines: Vec<&str> = q3.lines().collect();
    assert_eq!(lines.len(), 2, "{q3}");
    assert!(lines[0].starts_with("young_person,la_child_id,given_name"));
    assert!(lines[1].starts_with(&format!(
        "{leaver},C1001,Ada,Example,2008-01-01,former-relevant,230,F2,"
    )));
    let q4 = csv("2026-Q4").await;
    assert!(q4.lines().nth(1).unwrap().contains(",619,G5,"), "{q4}");

    let (s, _, list) = app.get_text(CAREERS, "/v1/exports/looked-after").await;
    assert_eq!(s, StatusCode::OK);
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(
        rows.len(),
        2,
        "only those the careers service may see: {list}"
    );
    assert!(rows[1].starts_with(&format!(
        "{leaver},C1001,A123456789012,Ada,Example,2008-01-01,false,C2,former-relevant"
    )));
    assert!(!list.contains(&young.to_string()));

    let (s, _) = app.get(COLLEGE, "/v1/exports/looked-after").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.get(CAREERS, "/v1/exports/destinations").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// A destinations upload as the careers service, its body sent in pieces of 1,021 bytes, as
/// a slow connection would deliver it.
fn streamed(bytes: Vec<u8>) -> axum::http::Request<axum::body::Body> {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1021).map(|c| Ok(c.to_vec())).collect();
    axum::http::Request::builder()
        .method("POST")
        .uri("/v1/imports/destinations")
        .header("authorization", format!("Bearer {CAREERS}"))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}

/// A file longer than one chunk, sent in pieces that cut lines (and the byte-order mark)
/// anywhere: the person on its first and last lines is registered once, both destinations
/// are recorded, and sending it again appends nothing. A third file repeats the first 6,000
/// rows and then changes, so the changes arrive in one of the larger chunks that follow a
/// quiet one.
#[tokio::test]
async fn a_long_file_streams_through_in_chunks_and_people_span_them() {
    let app = spawn_app();
    let rows = 12_000;
    let mut csv = String::from(
        "\u{feff}YoungPersonsID,DOB,GivenName,FamilyName,ActivityCode,StartDate,DateAscertained,LEACode\r\n",
    );
    for i in 0..rows {
        // Person 0 again on the last line, later and now NEET.
        let (id, code, ascertained) = if i == rows - 1 {
            (0, "619", "2026-10-20")
        } else {
            (i, "230", "2026-09-20")
        };
        csv.push_str(&format!(
            "{id:013},2008-{:02}-{:02},{},Person,{code},2026-09-01,{ascertained},878\r\n",
            1 + id % 12,
            1 + id % 28,
            exchange::bench_import::letters(id),
        ));
    }
    let stream = |csv: String| streamed(csv.into_bytes());
    let (s, summary) = send(&app, stream(csv.clone())).await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    assert_eq!(summary["rows"], rows);
    assert_eq!(
        summary["registered"],
        rows - 1,
        "person 0 once, across chunks"
    );
    assert_eq!(
        summary["changed"], rows,
        "every destination, person 0's twice"
    );
    assert_eq!(
        summary["neet_onsets"], 1,
        "230 then 619 across chunks is a NEET onset"
    );
    assert_eq!(summary["rejected"], json!([]));
    let head = app.log.head();
    assert_eq!(
        head as usize,
        2 * rows,
        "registrations, destinations, one onset"
    );

    let (s, again) = send(&app, stream(csv.clone())).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    // Person 0's first row is older than the latest destination held (its last row): history,
    // not news.
    assert_eq!(again["unchanged"].as_u64().unwrap() as usize, rows - 1);
    assert_eq!(
        (again["superseded"].clone(), again["changed"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(app.log.head(), head, "the same file twice appends nothing");

    // A file that repeats its first chunk and then changes: the import reads on in larger
    // chunks after a quiet one, which must still register, change and keep what it should.
    let mut changed = csv.clone();
    let (first, rest) = changed.split_at(changed.find('\n').unwrap() + 1);
    let mut lines: Vec<String> = rest.lines().map(str::to_owned).collect();
    for line in &mut lines[6000..rows - 1] {
        *line = line
            .replace(",230,", ",310,")
            .replace(",2026-09-20,", ",2026-11-01,");
    }
    for i in 0..500 {
        let id = 100_000 + i;
        lines.push(format!(
            "{id:013},2009-{:02}-{:02},{},Newcomer,230,2026-09-01,2026-11-01,878\r",
            1 + i % 12,
            1 + i % 28,
            exchange::bench_import::letters(id),
        ));
    }
    changed = format!("{first}{}\n", lines.join("\n"));
    let (s, third) = send(&app, stream(changed)).await;
    assert_eq!(s, StatusCode::OK, "{third}");
    assert_eq!(third["rows"].as_u64().unwrap() as usize, rows + 500);
    assert_eq!(
        (
            third["registered"].clone(),
            third["changed"].clone(),
            third["unchanged"].clone(),
            third["superseded"].clone()
        ),
        (
            json!(500),
            json!(rows - 1 - 6000 + 500),
            json!(6000),
            json!(1)
        ),
        "{third}"
    );
    assert_eq!(third["rejected"], json!([]));
    assert_eq!(
        app.log.head() as usize,
        head as usize + 500 + (rows - 1 - 6000) + 500,
        "a registration and a destination for each newcomer, a destination for each change"
    );
}

/// The projector's digest of each agency's latest destination, which lets an unchanged
/// import row skip reading the person's stream: it follows destinations from any route,
/// the newest winning, per agency, and goes with the person on erasure.
#[tokio::test]
async fn the_latest_destination_digest_follows_every_destination_and_erasure() {
    use pathway_core::date::Day;
    use pathway_projector::views::latest_destination_if;
    let app = spawn_app();
    let yp = app.register("2008-05-01").await;
    let day = |s: &str| Day::parse(s).unwrap();
    let is_latest = |agency: &str, code: &str, start: &str, seen: &str| {
        latest_destination_if(&app.projector, agency, yp, code, day(start), day(seen))
            .unwrap()
            .is_some()
    };
    assert!(!is_latest(
        "demo-careers",
        "230",
        "2026-09-01",
        "2026-09-20"
    ));

    let destination = |code: &str, start: &str, seen: &str| {
        let mut d = sample("destination.recorded", yp);
        d["data"]["activity_code"] = json!(code);
        d["data"]["start_date"] = json!(start);
        d["data"]["date_ascertained"] = json!(seen);
        d
    };
    let (s, v) = app
        .post(CAREERS, &destination("230", "2026-09-01", "2026-09-20"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.drain();
    assert!(is_latest("demo-careers", "230", "2026-09-01", "2026-09-20"));
    assert_eq!(
        latest_destination_if(
            &app.projector,
            "demo-careers",
            yp,
            "230",
            day("2026-09-01"),
            day("2026-09-20")
        )
        .unwrap(),
        v["seq"].as_u64(),
        "and where it was said"
    );
    assert!(!is_latest(
        "demo-careers",
        "230",
        "2026-09-01",
        "2026-09-21"
    ));
    assert!(!is_latest(
        "demo-careers",
        "310",
        "2026-09-01",
        "2026-09-20"
    ));
    assert!(
        !is_latest("demo-la", "230", "2026-09-01", "2026-09-20"),
        "per agency"
    );

    let second = destination("619", "2026-11-01", "2026-11-10");
    let (s, v) = app.post(CAREERS, &second).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.drain();
    assert!(is_latest("demo-careers", "619", "2026-11-01", "2026-11-10"));
    assert!(!is_latest(
        "demo-careers",
        "230",
        "2026-09-01",
        "2026-09-20"
    ));

    // A file repeating the HTTP-recorded destination is unchanged.
    let row = |code: &str, start: &str, seen: &str| {
        format!(
            "YoungPersonsID,DOB,UniquePupilNumber,ActivityCode,StartDate,DateAscertained\n0000000000009,2008-05-01,A123456789012,{code},{start},{seen}\n"
        )
    };
    let (_, summary) = import(&app, CAREERS, &row("619", "2026-11-01", "2026-11-10")).await;
    assert_eq!(
        (summary["unchanged"].clone(), summary["changed"].clone()),
        (json!(1), json!(0)),
        "{summary}"
    );
    // An older destination than the latest held is history, not news.
    let head = app.log.head();
    let (_, summary) = import(&app, CAREERS, &row("230", "2026-09-01", "2026-09-20")).await;
    assert_eq!(summary["superseded"], 1, "{summary}");
    assert_eq!(app.log.head(), head);
    assert!(is_latest("demo-careers", "619", "2026-11-01", "2026-11-10"));
    // A newer one is recorded, and becomes the latest.
    let (_, summary) = import(&app, CAREERS, &row("230", "2026-11-15", "2026-11-20")).await;
    assert_eq!(summary["changed"], 1, "{summary}");
    assert!(is_latest("demo-careers", "230", "2026-11-15", "2026-11-20"));
    // Said otherwise over HTTP, then the same file again: the file's row is recorded again
    // (a fresh event, not the first one answered again from the log's idempotency).
    let (s, v) = app
        .post(CAREERS, &destination("619", "2026-11-01", "2026-11-10"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let head = app.log.head();
    let (_, summary) = import(&app, CAREERS, &row("230", "2026-11-15", "2026-11-20")).await;
    assert_eq!(summary["changed"], 1, "{summary}");
    assert_eq!(
        app.log.head(),
        head + 1,
        "the row is appended, not deduplicated"
    );
    assert!(is_latest("demo-careers", "230", "2026-11-15", "2026-11-20"));

    // Two destinations for one person on one day in one file contradict each other.
    let twice = format!(
        "{}0000000000009,2008-05-01,A123456789012,310,2026-11-15,2026-11-25\n",
        row("230", "2026-11-15", "2026-11-25")
    );
    let (_, summary) = import(&app, CAREERS, &twice).await;
    assert_eq!(summary["changed"], 1, "{summary}");
    assert_eq!(summary["rejected"][0]["line"], 3, "{summary}");
    assert_eq!(summary["rejected"][0]["column"], "DateAscertained");
    let head = app.log.head();
    let (_, again) = import(&app, CAREERS, &twice).await;
    assert_eq!(
        (again["unchanged"].clone(), again["changed"].clone()),
        (json!(1), json!(0)),
        "{again}"
    );
    assert_eq!(app.log.head(), head, "the same file twice appends nothing");

    // Someone else's latest destination, which may well share the erased person's key.
    let other = app.register("2008-06-01").await;
    let mut d = sample("destination.recorded", other);
    d["data"]["activity_code"] = json!("310");
    let (s, v) = app.post(CAREERS, &d).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.drain();
    let others = |p: &pathway_projector::Projector| {
        let data = &d["data"];
        latest_destination_if(
            p,
            "demo-careers",
            other,
            "310",
            day(data["start_date"].as_str().unwrap()),
            day(data["date_ascertained"].as_str().unwrap()),
        )
        .unwrap()
    };
    assert_eq!(others(&app.projector), v["seq"].as_u64());

    app.erase(yp).await;
    assert!(!is_latest(
        "demo-careers",
        "230",
        "2026-11-15",
        "2026-11-25"
    ));
    assert_eq!(
        others(&app.projector),
        v["seq"].as_u64(),
        "only theirs goes"
    );
    use pathway_projector::latest;
    let held: Vec<latest::Record> = app
        .projector
        .dump()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.first() == Some(&latest::TAG))
        .flat_map(|(_, v)| latest::records(v).unwrap())
        .collect();
    assert!(held.iter().any(|r| r.young_person == other));
    assert!(
        held.iter().all(|r| r.young_person != yp),
        "erasure removes the digests"
    );
}

/// A file that cannot be read on part-way: what was applied before stays applied, the answer
/// says the import stopped there, and sending the corrected file applies only the rest.
#[tokio::test]
async fn a_file_broken_part_way_stops_there_and_the_corrected_file_finishes_it() {
    let app = spawn_app();
    let header =
        "YoungPersonsID,DOB,GivenName,FamilyName,ActivityCode,StartDate,DateAscertained,LEACode\n";
    let row = |i: usize| {
        format!(
            "{i:013},2008-{:02}-{:02},{},Person,230,2026-09-01,2026-09-20,878\n",
            1 + i % 12,
            1 + i % 28,
            exchange::bench_import::letters(i),
        )
    };
    let good: Vec<u8> = std::iter::once(header.to_owned())
        .chain((0..6010).map(row))
        .collect::<String>()
        .into_bytes();
    // Not text from row 6,000 on: the first chunks (2,500 rows each) are applied by then.
    let mut broken = good.clone();
    let at = String::from_utf8_lossy(&good)
        .match_indices('\n')
        .nth(6000)
        .unwrap()
        .0
        + 1;
    broken.splice(at..at, [0xff, 0xfe, b'\n']);
    let stream = streamed;

    let (s, v) = send(&app, stream(broken)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "unreadable-file");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("The import stopped here"),
        "{v}"
    );
    assert_eq!(
        app.log.head(),
        2 * 5000,
        "the first chunk's registrations and destinations, and nothing after it"
    );

    let (s, v) = send(&app, stream(good)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["registered"].clone(), v["unchanged"].clone()),
        (json!(1010), json!(5000))
    );
    assert_eq!(app.log.head(), 2 * 6010);
}

/// Each chunk is planned while the previous one is still being projected, unless it asks
/// about someone the previous chunk registered or changed. Planned on projections without
/// the previous chunk, the newcomer below would be registered twice, and the known person's
/// older destination taken for the latest one.
/// A chunk is planned while the one before it is appended and the one before that may not
/// be projected yet. Someone registered two chunks back is still found, not registered
/// again. (The test app steps its projector only when asked, so without the check the
/// third chunk would be planned before the first is projected, every time.)
#[tokio::test]
async fn a_chunk_naming_people_two_chunks_back_waits_for_their_projection() {
    let app = spawn_app();
    let header =
        "YoungPersonsID,DOB,GivenName,FamilyName,ActivityCode,StartDate,DateAscertained,LEACode\n";
    let row = |i: usize, code: &str, ascertained: &str| {
        format!(
            "{i:013},2008-{:02}-{:02},{},Person,{code},2026-09-01,{ascertained},878\n",
            1 + i % 12,
            1 + i % 28,
            exchange::bench_import::letters(i),
        )
    };
    let chunk = pathway_gateway::imports::CHUNK_ROWS;
    // Chunks one and two: newcomers. Chunk three: newcomer 7 again, now NEET.
    let mut file = header.to_owned();
    file += &(1..=2 * chunk)
        .map(|i| row(i, "230", "2026-09-20"))
        .collect::<String>();
    file += &row(7, "619", "2026-10-20");
    let (s, v) = import(&app, CAREERS, &file).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registered"], 2 * chunk, "newcomer 7 once: {v}");
    assert_eq!(v["neet_onsets"], 1, "{v}");
    assert_eq!(app.log.head() as usize, 2 * chunk + 2 * chunk + 1 + 1);
}

#[tokio::test]
async fn a_chunk_naming_people_the_last_chunk_changed_waits_for_its_projection() {
    let app = spawn_app();
    let header = "YoungPersonsID,DOB,GivenName,FamilyName,ActivityCode,StartDate,DateAscertained,LEACode,UniqueLearnerNo\n";
    let row = |id: &str, i: usize, code: &str, ascertained: &str, uln: &str| {
        format!(
            "{id},2008-{:02}-{:02},{},Person,{code},2026-09-01,{ascertained},878,{uln}\n",
            1 + i % 12,
            1 + i % 28,
            exchange::bench_import::letters(i),
        )
    };
    let newcomer = |i: usize| row(&format!("{i:013}"), i, "230", "2026-09-20", "");
    let summary = |v: &Value| {
        [
            "rows",
            "registered",
            "linked",
            "changed",
            "unchanged",
            "superseded",
            "neet_onsets",
        ]
        .map(|k| v[k].as_u64().unwrap())
    };
    // Known before: one person with a ULN.
    let known = format!(
        "{header}{}",
        row("9000000000001", 90_000, "230", "2026-09-20", "2000000001")
    );
    let (s, v) = import(&app, CAREERS, &known).await;
    assert_registered_one(s, &v);

    // By the same id. First chunk: the known person starts an apprenticeship; 4,999
    // newcomers. Second chunk: newcomer 7 again, now NEET.
    let mut file = header.to_owned();
    file += &row("9000000000001", 90_000, "310", "2026-10-20", "2000000001");
    file += &(1..5000).map(newcomer).collect::<String>();
    file += &row(&format!("{:013}", 7), 7, "619", "2026-10-20", "");
    let (s, v) = import(&app, CAREERS, &file).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(summary(&v), [5001, 4999, 0, 5001, 0, 0, 1], "{v}");
    assert_eq!(app.log.head(), 2 + 4999 + 5001 + 1);

    // By another identifier. First chunk: the known person becomes NEET; the same
    // newcomers, unchanged; one more. Second chunk: the known person under a new id, found
    // by ULN, with the apprenticeship the first chunk has just superseded.
    let mut file = header.to_owned();
    file += &row("9000000000001", 90_000, "540", "2026-11-20", "2000000001");
    file += &(1..5001)
        .filter(|i| *i != 7)
        .map(newcomer)
        .collect::<String>();
    file += &row("9000000000002", 90_000, "310", "2026-10-20", "2000000001");
    let head = app.log.head();
    let (s, v) = import(&app, CAREERS, &file).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(summary(&v), [5001, 1, 1, 2, 4998, 1, 1], "{v}");
    // A destination and NEET onset for the known person, and the link; the newcomer.
    assert_eq!(app.log.head(), head + 3 + 2);
}

/// An import answers once what it appended is projected: the agency can look up the people
/// it has just sent without waiting for the live loop (the test app has none, so nothing
/// else projects them).
#[tokio::test]
async fn people_an_import_registered_can_be_looked_up_once_it_answers() {
    let app = spawn_app();
    let (s, v) = import_undrained(&app, CAREERS, QUARTER_3).await;
    assert_registered_one(s, &v);
    // Dan, the one row that registers someone.
    assert_eq!(found_by_nccis_id(&app, "0000000000004").await, 1);

    let res = tower::ServiceExt::oneshot(
        app.router.clone(),
        looked_after_request(LA, "", &[("header", HEADER), ("episodes", EPISODES)]),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, found) = app.get(LA, "/v1/young-people?la_child_id=566910").await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(app.projector.checkpoint(), app.log.head());
}

/// The registry's runs have filters in memory, so that identifiers never seen are not read
/// (`registry`); after a restart they are loaded from the store, and a file sent again
/// matches everyone it registered before.
#[tokio::test]
async fn after_a_restart_a_file_sent_again_matches_everyone_it_registered() {
    let app = spawn_app();
    let (s, v) = import(&app, CAREERS, QUARTER_3).await;
    assert_registered_one(s, &v);
    let head = app.log.head();

    let app = app.restart();
    let stored = pathway_projector::store::identifier_key(
        pathway_core::identity::Scheme::NccisId,
        "demo-careers",
        "0000000000004",
    );
    let never = pathway_projector::store::identifier_key(
        pathway_core::identity::Scheme::NccisId,
        "demo-careers",
        "0000000000099",
    );
    assert!(app.projector.registry().may_contain(&stored));
    assert!(
        !app.projector.registry().may_contain(&never),
        "the filter is in use"
    );
    assert_eq!(found_by_nccis_id(&app, "0000000000004").await, 1);
    let (s, v) = import(&app, CAREERS, QUARTER_3).await;
    assert_eq!(
        (s, v["registered"].clone(), v["unchanged"].clone()),
        (StatusCode::OK, json!(0), json!(1)),
        "{v}"
    );
    assert_eq!(app.log.head(), head, "nothing appended");
}

/// A reviewer's decision on a held row, as the agency sends it.
async fn decide(app: &TestApp, token: &str, decision: Value) -> (StatusCode, Value) {
    app.post_to("/v1/identity/review", token, &decision).await
}

#[tokio::test]
async fn a_reviewer_decides_who_a_held_row_is_about_among_those_the_agency_may_see() {
    let app = spawn_app();
    let first = register(&app, "Cara", "Double", "2008-08-08", json!({})).await;
    let second = register(&app, "Cara", "Double", "2008-08-08", json!({})).await;
    // Two twelve-year-olds: the careers service's flows do not reach them.
    let young = register(&app, "Zed", "Young", "2014-01-01", json!({})).await;
    register(&app, "Zed", "Young", "2014-01-01", json!({})).await;
    let file =
        "YoungPersonsID,DOB,GivenName,FamilyName,ActivityCode,StartDate,DateAscertained,LEACode\n\
                0000000000003,2008-08-08,Cara,Double,230,2026-09-01,2026-09-22,878\n\
                0000000000009,2014-01-01,Zed,Young,230,2026-09-01,2026-09-22,878\n";
    let (_, summary) = import(&app, CAREERS, file).await;
    assert_eq!(
        summary["held_for_review"].as_array().unwrap().len(),
        2,
        "{summary}"
    );
    let (_, queue) = app.get(CAREERS, "/v1/identity/review").await;
    let items = queue["items"].as_array().unwrap();
    let cara = items
        .iter()
        .find(|i| i["nccis_id"] == "0000000000003")
        .unwrap();
    let mut visible: Vec<&str> = cara["visible_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    visible.sort();
    let mut both = [first.to_string(), second.to_string()];
    both.sort();
    assert_eq!(visible, both, "{cara}");
    assert_eq!(cara["reason"], "date-of-birth-and-name");
    let zed = items
        .iter()
        .find(|i| i["nccis_id"] == "0000000000009")
        .unwrap();
    assert_eq!(
        (zed["candidates"].clone(), zed["visible_candidates"].clone()),
        (json!(2), json!([])),
        "counted, never named: {zed}"
    );

    // Refusals name the field, and say the same of a stranger and of a hidden candidate.
    let head = app.log.head();
    for who in [Uuid::new_v4(), young] {
        let (s, v) = decide(
            &app,
            CAREERS,
            json!({"nccis_id": if who == young { "0000000000009" } else { "0000000000003" }, "young_person": who}),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["errors"][0]["field"], "/young_person");
        assert!(!v.to_string().contains(&second.to_string()));
    }
    let (s, v) = decide(
        &app,
        CAREERS,
        json!({"nccis_id": "0000000000003", "la_child_id": "C1", "young_person": first}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = decide(&app, CAREERS, json!({"nccis_id": "0000000000003"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = decide(
        &app,
        CAREERS,
        json!({"nccis_id": "0000000000008", "young_person": first}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not held");
    let (s, _) = decide(
        &app,
        LA,
        json!({"nccis_id": "0000000000003", "young_person": first}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another agency's queue");
    assert_eq!(app.log.head(), head, "no refusal appends anything");

    // The decision links the careers service's id to the person chosen, and ends the hold.
    let (s, decided) = decide(
        &app,
        CAREERS,
        json!({"nccis_id": "0000000000003", "young_person": first}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{decided}");
    assert_eq!(decided["young_person"], json!(first));
    let (_, linked) = app
        .get(LA, &format!("/v1/young-people/{first}/subject-access"))
        .await;
    let link = linked["held"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "identity.linked")
        .expect("the link is in the person's record");
    assert_eq!(
        link["data"],
        json!({"agency": "demo-careers", "identifiers": {"nccis_id": "0000000000003"}, "match": "reviewed"})
    );
    assert_eq!(
        app.get(CAREERS, "/v1/young-people?nccis_id=0000000000003")
            .await
            .1["items"],
        json!([{"young_person": first}])
    );
    let (_, queue) = app.get(CAREERS, "/v1/identity/review").await;
    assert_eq!(
        queue["items"].as_array().unwrap().len(),
        1,
        "only Zed is held: {queue}"
    );
    let (s, _) = decide(
        &app,
        CAREERS,
        json!({"nccis_id": "0000000000003", "young_person": first}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "decided once");

    // The file again: Cara's row now matches by the careers service's own id.
    let (_, again) = import(&app, CAREERS, file).await;
    assert_eq!(
        (
            again["changed"].clone(),
            again["linked"].clone(),
            again["registered"].clone()
        ),
        (json!(1), json!(0), json!(0)),
        "{again}"
    );
    assert_eq!(again["held_for_review"][0]["nccis_id"], "0000000000009");
    let (_, model) = app.get(CAREERS, &format!("/v1/young-people/{first}")).await;
    assert_eq!(
        model["education_employment"]["destination"]["activity_code"],
        "230"
    );
    let (s, _) = app
        .get(CAREERS, &format!("/v1/young-people/{second}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, model) = app
        .get(CAREERS, &format!("/v1/young-people/{second}"))
        .await;
    assert!(
        model["education_employment"]["destination"].is_null(),
        "{model}"
    );
}

#[tokio::test]
async fn a_row_whose_identifiers_name_different_people_cannot_be_settled_by_review() {
    let app = spawn_app();
    let by_upn = register(
        &app,
        "Ann",
        "One",
        "2008-01-01",
        json!({"upn": "A123456789012"}),
    )
    .await;
    register(
        &app,
        "Ann",
        "Two",
        "2008-01-01",
        json!({"uln": "1234567890"}),
    )
    .await;
    let file = "YoungPersonsID,DOB,GivenName,FamilyName,UniquePupilNumber,UniqueLearnerNo,ActivityCode,StartDate,DateAscertained\n\
                0000000000001,2008-01-01,Ann,One,A123456789012,1234567890,230,2026-09-01,2026-09-22\n";
    let (_, summary) = import(&app, CAREERS, file).await;
    assert_eq!(
        summary["held_for_review"][0]["reason"], "identifiers",
        "{summary}"
    );
    let (s, v) = decide(
        &app,
        CAREERS,
        json!({"nccis_id": "0000000000001", "young_person": by_upn}),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
    let (_, queue) = app.get(CAREERS, "/v1/identity/review").await;
    assert_eq!(queue["items"].as_array().unwrap().len(), 1, "still held");
}

#[tokio::test]
async fn a_looked_after_child_held_for_review_is_queued_and_decided() {
    let app = spawn_app();
    let first = register(&app, "Ida", "Same", "2009-03-03", json!({})).await;
    register(&app, "Ida", "Same", "2009-03-03", json!({})).await;
    let header = "CHILD,SEX,DOB,UPN,GIVEN_NAME,FAMILY_NAME\r\nC7007,F,03/03/2009,,Ida,Same\r\n";
    let episodes = "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,HOME_POST,PL_POST,URN\r\n\
        C7007,10/01/2025,S,C2,N1,U1,PR1,,,,,EX1 1AA,\r\n";
    let files = [("header", header), ("episodes", episodes)];
    let (_, summary) = upload(&app, LA, "", &files).await;
    assert_eq!(
        summary["held_for_review"],
        json!([{"child": "C7007", "candidates": 2, "reason": "date-of-birth-and-name"}])
    );
    let (_, queue) = app.get(LA, "/v1/identity/review").await;
    assert_eq!(queue["items"][0]["la_child_id"], "C7007", "{queue}");
    assert_eq!(
        queue["items"][0]["visible_candidates"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (s, v) = decide(
        &app,
        LA,
        json!({"la_child_id": "C7007", "young_person": first}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (_, again) = upload(&app, LA, "", &files).await;
    assert_eq!(again["held_for_review"], json!([]), "{again}");
    assert_eq!(
        again["appended"],
        json!({"looked-after.started": 1, "placement.changed": 1})
    );
    let (_, model) = app.get(LA, &format!("/v1/young-people/{first}")).await;
    assert_eq!(model["care"]["looked_after"], true);
    let (_, queue) = app.get(LA, "/v1/identity/review").await;
    assert_eq!(queue["items"], json!([]));
}
