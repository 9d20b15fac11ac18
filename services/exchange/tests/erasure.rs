//! Erasure by crypto-shredding: the admin erases a young person; their key is destroyed, so
//! every event about them is unreadable; read models, feeds, lookups, subject access,
//! reports and exports drop them; the hash chain still verifies; and nothing readable of
//! them is left anywhere in the data directory.

mod helpers;

use axum::http::StatusCode;
use helpers::*;
use serde_json::json;
use std::path::Path;

const GIVEN: &str = "Zebedee";
const FAMILY: &str = "Quartermaine";
const DOB: &str = "2008-03-17";
const UPN: &str = "H987654321098";

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under `dir` that contains `needle`.
fn containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|p| p.display().to_string())
        .collect()
}

#[tokio::test]
async fn an_erased_person_is_unreadable_everywhere_and_the_chain_still_holds() {
    let app = spawn_app();
    let mut reg = registration(DOB);
    reg["data"]["given_name"] = json!(GIVEN);
    reg["data"]["family_name"] = json!(FAMILY);
    reg["data"]["identifiers"] = json!({"upn": UPN});
    let (_, v) = app.post(LA, &reg).await;
    let yp: uuid::Uuid = serde_json::from_value(v["young_person"].clone()).unwrap();
    app.post(LA, &sample("consent.granted", yp)).await;
    app.post(LA, &sample("looked-after.started", yp)).await;
    app.post(CAREERS, &sample("destination.recorded", yp)).await;
    let other = app.register("2009-09-09").await;
    app.drain();
    // Before: everyone who may see them does, by name.
    let (_, model) = app.get(LA, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(model["identity"]["given_name"], GIVEN);
    assert!(app
        .feed(COLLEGE)
        .await
        .iter()
        .any(|i| i["young_person"] == json!(yp)));
    // Nothing is stored in the clear even now: data is sealed with the person's key.
    assert!(containing(app.dir.path(), GIVEN).is_empty());

    let (s, v) = app
        .request(
            "POST",
            &format!("/v1/young-people/{yp}/erase"),
            Some("demo-admin-token"),
            None,
        )
        .await
        .into_two();
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = app
        .request(
            "POST",
            &format!("/v1/young-people/{yp}/erase"),
            Some(LA),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only the exchange's admin erases");
    app.drain();

    for token in [LA, CAREERS, COLLEGE] {
        let (s, _) = app.get(token, &format!("/v1/young-people/{yp}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(app
            .feed(token)
            .await
            .iter()
            .all(|i| i["young_person"] != json!(yp)));
    }
    let (_, found) = app.get(LA, &format!("/v1/young-people?upn={UPN}")).await;
    assert_eq!(found["items"], json!([]));
    let (s, _) = app
        .get(LA, &format!("/v1/young-people/{yp}/subject-access"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, report) = app.get(LA, "/v1/reports/quarterly").await;
    assert!(!report.to_string().contains(&yp.to_string()));
    // Nothing more can be recorded about them; others are untouched.
    let (s, v) = app.post(LA, &sample("placement.changed", yp)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, model) = app.get(LA, &format!("/v1/young-people/{other}")).await;
    assert_eq!(
        (s, model["identity"]["given_name"].clone()),
        (StatusCode::OK, json!("Ada"))
    );
    // The chain covers the sealed bytes, so it still verifies.
    let report = app.log.verify(None).unwrap();
    assert_eq!(report.entries, app.log.head());
    assert!(app.log.read_person(yp).unwrap().iter().any(|e| e.erased));
    // The master key that wrapped their key is destroyed; a fresh one wraps everyone else's.
    let keys: Vec<String> = std::fs::read_dir(app.dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("master-"))
        .collect();
    assert_eq!(keys, vec!["master-2.key"]);

    // Nothing readable is left: search every file the exchange wrote.
    let dir = app.dir.path().to_owned();
    let app = app.restart(); // everything flushed and reopened
    for needle in [GIVEN, FAMILY, DOB, "17/03/2008", UPN] {
        assert!(
            containing(&dir, needle).is_empty(),
            "{needle} is still in {:?}",
            containing(&dir, needle)
        );
    }
    let (s, _) = app.get(LA, &format!("/v1/young-people/{other}")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the others' keys survived the master key's rotation"
    );
}

trait Two {
    fn into_two(self) -> (StatusCode, serde_json::Value);
}

impl Two for (StatusCode, String, serde_json::Value) {
    fn into_two(self) -> (StatusCode, serde_json::Value) {
        (self.0, self.2)
    }
}
