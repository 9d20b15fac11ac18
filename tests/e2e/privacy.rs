//! No personal data in logs: an end-to-end scenario through the real binary, logging at
//! debug level, touching every path that handles personal data (registration, consent,
//! destinations, the NCCIS import, subject access, the quarterly review, a rejected event);
//! then everything it logged is searched for the names, dates and identifiers used.

use crate::support::{post_event, Server};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

const GIVEN: &str = "Philippa";
const FAMILY: &str = "Quennell-Oyelaran";
const DOB: &str = "2008-03-17";
const UPN: &str = "K123456789012";
const ULN: &str = "4567891234";
const LA_CHILD_ID: &str = "ZX9182";
const NCCIS_ID: &str = "7777777777777";
const POSTCODE: &str = "QQ9 9QQ";

#[tokio::test]
async fn nothing_personal_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let server = Server::start_logging(dir.path(), "debug,sled=info", Some(logs.clone()));
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let la = "demo-la-token";

    let reg = json!({"id": Uuid::new_v4(), "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z",
        "data": {"given_name": GIVEN, "family_name": FAMILY, "date_of_birth": DOB, "sex": "F",
                 "identifiers": {"la_child_id": LA_CHILD_ID, "upn": UPN, "uln": ULN}, "responsible_authority": "878"}});
    let res = post_event(&client, &base, la, &reg).await.unwrap();
    assert_eq!(res.status(), 201);
    let yp = res.json::<Value>().await.unwrap()["young_person"].clone();
    let event = |ty: &str, data: Value| json!({"id": Uuid::new_v4(), "type": ty, "young_person": yp, "occurred_at": "2026-11-02T10:00:00Z", "data": data});
    for (token, e) in [
        (
            la,
            event(
                "placement.changed",
                json!({"start_date": "2026-10-01", "placement_type": "U1", "postcode": POSTCODE}),
            ),
        ),
        (
            la,
            event(
                "consent.granted",
                json!({"recipients": ["demo-college"], "categories": ["education-employment", "identity"],
            "purpose": "College support", "given_by": "young-person", "method": "written", "evidence_ref": "F-1",
            "granted_on": "2026-11-01", "review_due": "2027-11-01"}),
            ),
        ),
        (
            "demo-careers-token",
            event(
                "destination.recorded",
                json!({"activity_code": "230", "start_date": "2026-09-01", "date_ascertained": "2026-09-20"}),
            ),
        ),
    ] {
        let res = post_event(&client, &base, token, &e).await.unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    // A rejected event: its problem names fields, and the log must not quote the values.
    let bad = event(
        "placement.changed",
        json!({"start_date": DOB, "placement_type": "ZZ", "postcode": POSTCODE}),
    );
    assert_eq!(
        post_event(&client, &base, la, &bad).await.unwrap().status(),
        422
    );
    // The careers service's import, with the same person under its own id.
    let csv = format!(
        "YoungPersonsID,GivenName,FamilyName,DOB,UniqueLearnerNo,ActivityCode,StartDate,DateAscertained\n{NCCIS_ID},{GIVEN},{FAMILY},{DOB},{ULN},310,2026-10-01,2026-10-20\n"
    );
    let res = client
        .post(format!("{base}/v1/imports/destinations"))
        .bearer_auth("demo-careers-token")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for path in [
        format!(
            "/v1/young-people/{}/subject-access?format=html",
            yp.as_str().unwrap()
        ),
        format!("/v1/young-people?upn={UPN}"),
        "/v1/reports/quarterly?format=html".to_owned(),
        "/v1/feed".to_owned(),
    ] {
        let res = client
            .get(format!("{base}{path}"))
            .bearer_auth(la)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let _ = res.text().await.unwrap();
    }
    drop(server);

    let logged = logs.lock().unwrap().clone();
    assert!(
        logged.contains("exchange listening"),
        "the logs were captured"
    );
    assert!(logged.lines().count() > 5, "debug logging was on: {logged}");
    for secret in [
        GIVEN,
        FAMILY,
        DOB,
        "17/03/2008",
        UPN,
        ULN,
        LA_CHILD_ID,
        NCCIS_ID,
        POSTCODE,
    ] {
        assert!(
            !logged.contains(secret),
            "the logs contain {secret:?}:\n{logged}"
        );
    }
}
