//! Agreements and consent in full, through the HTTP API: re-granting restores the current
//! state, overrides and their expiry, the disclosure log, and the consent review.

mod helpers;

use axum::http::StatusCode;
use helpers::*;
use serde_json::{json, Value};
use uuid::Uuid;

fn destination(yp: Uuid, code: &str) -> Value {
    let mut d = sample("destination.recorded", yp);
    d["data"]["activity_code"] = json!(code);
    d
}

fn grant(yp: Uuid, recipients: &[&str], categories: &[&str], review_due: &str) -> Value {
    let mut g = sample("consent.granted", yp);
    g["data"]["recipients"] = json!(recipients);
    g["data"]["categories"] = json!(categories);
    g["data"]["review_due"] = json!(review_due);
    g
}

fn override_for(yp: Uuid, recipients: &[&str], categories: &[&str], expires: &str) -> Value {
    let mut o = sample("disclosure-override.recorded", yp);
    o["data"]["recipients"] = json!(recipients);
    o["data"]["categories"] = json!(categories);
    o["data"]["expires_on"] = json!(expires);
    o
}

async fn seq_of(app: &TestApp, token: &str, event: &Value) -> u64 {
    let (s, v) = app.post(token, event).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["seq"].as_u64().unwrap()
}

/// The agency's consent review once the projector has caught up: (seq, review date) of
/// each grant listed, in the order given.
async fn consent_review(app: &TestApp, token: &str) -> Vec<(u64, String)> {
    app.drain();
    let (s, v) = app.get(token, "/v1/consent/review").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["seq"].as_u64().unwrap(),
                i["review_due"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn disclosures(app: &TestApp, token: &str, yp: Uuid) -> (StatusCode, Vec<Value>) {
    app.drain();
    let (s, v) = app
        .get(token, &format!("/v1/disclosures?young_person={yp}"))
        .await;
    (s, v["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn re_granting_shows_the_current_state_not_every_past_event() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    app.post(LA, &sample("consent.granted", yp)).await;
    app.post(CAREERS, &destination(yp, "310")).await;
    app.post(LA, &sample("consent.withdrawn", yp)).await;
    let refused = seq_of(&app, CAREERS, &destination(yp, "230")).await;
    let latest = seq_of(&app, CAREERS, &destination(yp, "619")).await;
    let (_, model) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert!(model.get("education_employment").is_none(), "{model}");

    let regrant = seq_of(&app, LA, &sample("consent.granted", yp)).await;
    let feed = app.feed(COLLEGE).await;
    let last = feed.last().unwrap();
    assert_eq!(
        (last["seq"].as_u64(), &last["type"]),
        (Some(regrant), &json!("consent.granted"))
    );
    let restored: Vec<(String, u64)> = last["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        restored,
        vec![
            ("young-person.registered".to_owned(), 1),
            ("destination.recorded".to_owned(), latest)
        ],
        "the latest destination and the identity, not every past destination"
    );
    assert_eq!(last["restored"][1]["basis"]["kind"], "consent");

    let (_, model) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(
        model["education_employment"]["destination"]["activity_code"],
        "619"
    );
    let folded: Vec<u64> = model["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(!folded.contains(&refused), "{folded:?}");

    // The owner's disclosure log has the refusal when it happened and the restoration at
    // the grant, with the grant as basis.
    let (s, log) = disclosures(&app, LA, yp).await;
    assert_eq!(s, StatusCode::OK);
    let to_college = |seq: u64| -> Vec<&Value> {
        log.iter()
            .filter(|r| r["recipient"] == "demo-college" && r["seq"].as_u64() == Some(seq))
            .collect()
    };
    let refusal = to_college(refused);
    assert_eq!(refusal.len(), 1);
    assert_eq!(refusal[0]["decision"]["outcome"], "refused");
    assert_eq!(refusal[0]["decision"]["reason"]["kind"], "no-consent");
    let restoration = to_college(latest);
    assert_eq!(
        restoration.len(),
        2,
        "refused when recorded, restored at the grant"
    );
    assert_eq!(restoration[1]["at"].as_u64(), Some(regrant));
    assert_eq!(restoration[1]["decision"]["basis"]["kind"], "consent");
    let regrant_id = feed.last().unwrap()["id"].clone();
    assert_eq!(restoration[1]["decision"]["basis"]["consent"], regrant_id);
}

#[tokio::test]
async fn the_disclosure_log_is_for_the_owner_and_each_recipient_sees_only_its_own() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    let young = app.register("2014-01-01").await; // under the careers flow's age band
    app.post(LA, &sample("consent.granted", yp)).await;
    app.post(CAREERS, &destination(yp, "310")).await;
    app.post(LA, &sample("placement.changed", yp)).await; // no consent for careers: refused

    let (s, all) = disclosures(&app, LA, yp).await;
    assert_eq!(s, StatusCode::OK);
    let recipients: std::collections::BTreeSet<&str> = all
        .iter()
        .map(|r| r["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(
        recipients.into_iter().collect::<Vec<_>>(),
        vec!["demo-careers", "demo-college", "demo-la"]
    );
    assert!(all.iter().any(|r| r["decision"]["outcome"] == "refused"
        && r["type"] == "placement.changed"
        && r["decision"]["reason"]["flow"] == "la-to-careers-consent"));
    assert!(all.iter().all(|r| r["decided_at"].is_string()));

    let (s, own) = disclosures(&app, COLLEGE, yp).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!own.is_empty());
    assert!(own
        .iter()
        .all(|r| r["recipient"] == "demo-college" && r["decision"]["outcome"] == "disclosed"));

    let (s, _) = disclosures(&app, CAREERS, young).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "nothing about this person reached careers"
    );
    let (s, _) = app.get(LA, "/v1/disclosures?young_person=nope").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Without a person: what the caller received, paged by position. The grant came first,
    // with the identity it restored: one position, two lines, never split across pages.
    let (s, page) = app.get(COLLEGE, "/v1/disclosures?limit=1").await;
    assert_eq!(s, StatusCode::OK);
    let first = page["items"].as_array().unwrap();
    assert_eq!(
        first
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["consent.granted", "young-person.registered"]
    );
    let next = page["next_after"].as_u64().unwrap();
    assert!(first.iter().all(|r| r["at"].as_u64() == Some(next)));
    let (_, rest) = app
        .get(COLLEGE, &format!("/v1/disclosures?after={next}"))
        .await;
    let rest = rest["items"].as_array().unwrap();
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|r| r["at"].as_u64().unwrap() > next));
}

#[tokio::test]
async fn a_child_protection_override_allows_what_it_names_until_it_expires_and_the_owner_is_told() {
    let app = spawn_app(); // today: 2026-11-02
    let yp = app.register("2008-01-01").await;
    let ov = seq_of(
        &app,
        LA,
        &override_for(yp, &["demo-careers"], &["placement"], "2026-12-31"),
    )
    .await;
    let during = seq_of(&app, LA, &sample("placement.changed", yp)).await;
    app.post(LA, &sample("pathway-plan.reviewed", yp)).await; // plans: not named
    app.set_today("2027-01-01");
    let after = seq_of(&app, LA, &sample("placement.changed", yp)).await;

    let feed = app.feed(CAREERS).await;
    let got = |seq: u64| feed.iter().find(|i| i["seq"].as_u64() == Some(seq));
    assert_eq!(got(ov).unwrap()["basis"]["kind"], "named");
    let item = got(during).expect("the override let the placement through");
    assert_eq!(item["basis"]["kind"], "override");
    assert_eq!(item["basis"]["override_id"], got(ov).unwrap()["id"]);
    assert!(got(after).is_none(), "the override expired by itself");
    assert!(!types_of(&feed).contains(&"pathway-plan.reviewed".to_owned()));

    // An override recorded by the careers service is told to the local authority that owns
    // the record, and its end to the recipients it named.
    let ov2 = seq_of(
        &app,
        CAREERS,
        &override_for(
            yp,
            &["demo-college"],
            &["education-employment"],
            "2027-06-30",
        ),
    )
    .await;
    let through = seq_of(&app, CAREERS, &destination(yp, "230")).await;
    let ov2_id = app.feed(COLLEGE).await[0]["id"].clone();
    let mut end = sample("disclosure-override.ended", yp);
    end["data"]["override_id"] = ov2_id;
    end["data"]["date"] = json!("2027-01-02");
    let ended = seq_of(&app, CAREERS, &end).await;
    let stopped = seq_of(&app, CAREERS, &destination(yp, "619")).await;

    let la = app.feed(LA).await;
    let la_got = |seq: u64| la.iter().find(|i| i["seq"].as_u64() == Some(seq));
    assert_eq!(la_got(ov2).unwrap()["basis"]["kind"], "owner");
    assert_eq!(la_got(ended).unwrap()["basis"]["kind"], "owner");
    let college = app.feed(COLLEGE).await;
    let seqs: Vec<u64> = college.iter().map(|i| i["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![ov2, through, ended]);
    assert!(!seqs.contains(&stopped));
    let (s, _) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn consent_reviews_list_grants_past_their_date_for_the_agency_that_recorded_them() {
    let app = spawn_app(); // today: 2026-11-02
    let a = app.register("2008-01-01").await;
    let b = app.register("2008-02-02").await;
    let by_la = seq_of(
        &app,
        LA,
        &grant(a, &["demo-college"], &["support"], "2027-09-01"),
    )
    .await;
    let by_careers = seq_of(
        &app,
        CAREERS,
        &grant(
            b,
            &["demo-college"],
            &["education-employment"],
            "2026-12-01",
        ),
    )
    .await;
    let review = |token: &'static str| {
        let app = &app;
        async move {
            consent_review(app, token)
                .await
                .into_iter()
                .map(|(seq, _)| seq)
                .collect::<Vec<_>>()
        }
    };
    assert!(review(LA).await.is_empty());
    assert!(review(CAREERS).await.is_empty());

    app.set_today("2027-01-01");
    assert_eq!(review(CAREERS).await, vec![by_careers]);
    assert!(review(LA).await.is_empty());

    app.set_today("2027-10-01");
    assert_eq!(review(LA).await, vec![by_la]);
    // A renewal replaces the old grant; a withdrawal of everything ends it.
    let renewal = seq_of(
        &app,
        CAREERS,
        &grant(
            b,
            &["demo-college"],
            &["education-employment"],
            "2028-10-01",
        ),
    )
    .await;
    assert!(review(CAREERS).await.is_empty(), "renewed: {renewal}");
    let mut w = sample("consent.withdrawn", a);
    w["data"]["recipients"] = json!(["demo-college"]);
    app.post(LA, &w).await;
    assert!(review(LA).await.is_empty());
    let (s, _) = app.get(COLLEGE, "/v1/consent/review").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = app.request("GET", "/v1/consent/review", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_consent_review_lists_an_agencys_grants_by_review_date_across_people() {
    let app = spawn_app(); // today: 2026-11-02
    let a = app.register("2008-01-01").await;
    let b = app.register("2008-02-02").await;
    // Two grants of one person, both in force (different pairs), and one of another person
    // due between them: whatever order the people are stored in, only sorting by date puts
    // the other person in the middle.
    let a_late = seq_of(
        &app,
        LA,
        &grant(a, &["demo-college"], &["support"], "2027-09-01"),
    )
    .await;
    let a_early = seq_of(
        &app,
        LA,
        &grant(a, &["demo-careers"], &["placement"], "2027-01-01"),
    )
    .await;
    let b_middle = seq_of(
        &app,
        LA,
        &grant(b, &["demo-college"], &["support"], "2027-05-01"),
    )
    .await;
    app.set_today("2027-12-01");
    assert_eq!(
        consent_review(&app, LA).await,
        vec![
            (a_early, "2027-01-01".to_owned()),
            (b_middle, "2027-05-01".to_owned()),
            (a_late, "2027-09-01".to_owned()),
        ]
    );
}

#[tokio::test]
async fn retention_purges_what_recipients_kept_too_long_and_records_it() {
    let app = spawn_app(); // today: 2026-11-02
    let yp = app.register("2008-01-01").await;
    app.post(LA, &sample("consent.granted", yp)).await;
    let first = seq_of(&app, CAREERS, &destination(yp, "310")).await;
    assert_eq!(app.housekeep().await, 0);

    // The college keeps what it got for 1,095 days; the careers service and the local
    // authority for 2,555. On the 1,095th day nothing is due yet.
    app.set_today("2029-11-01");
    assert_eq!(app.housekeep().await, 0);
    app.set_today("2029-11-03");
    assert_eq!(
        app.housekeep().await,
        2,
        "the identity restored at the grant (la-to-college) and the destination (careers-to-college)"
    );
    assert_eq!(app.housekeep().await, 0, "a second pass finds nothing new");

    let (s, college) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(college.get("education_employment").is_none(), "{college}");
    assert!(college.get("identity").is_none(), "{college}");
    let purges: Vec<&Value> = college["retention"].as_array().unwrap().iter().collect();
    assert_eq!(purges.len(), 2);
    assert!(purges
        .iter()
        .any(|p| p["data"]["flow"] == "careers-to-college" && p["data"]["up_to_seq"] == first));
    // Longer retention elsewhere is untouched.
    let (_, la) = app.get(LA, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(
        la["education_employment"]["destination"]["activity_code"],
        "310"
    );
    let (_, careers) = app.get(CAREERS, &format!("/v1/young-people/{yp}")).await;
    assert!(careers.get("identity").is_some());

    // What is disclosed after the purge shows again; the purge stays recorded.
    app.post(CAREERS, &destination(yp, "230")).await;
    app.drain();
    let (_, college) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert_eq!(
        college["education_employment"]["destination"]["activity_code"],
        "230"
    );
    let feed = app.feed(COLLEGE).await;
    assert_eq!(
        types_of(&feed)
            .iter()
            .filter(|t| *t == "retention.purged")
            .count(),
        2
    );

    // A rebuild repeats the purges exactly.
    let other = tempfile::tempdir().unwrap();
    let agreements = std::sync::Arc::new(
        exchange::config::parse(exchange::config::DEMO, "demo")
            .unwrap()
            .agreements,
    );
    let rebuilt =
        pathway_projector::Projector::open(other.path(), app.log.clone(), agreements, None)
            .unwrap();
    rebuilt.catch_up().unwrap();
    assert_eq!(rebuilt.dump().unwrap(), app.projector.dump().unwrap());
}

#[tokio::test]
async fn subject_access_shows_everything_held_and_shared_to_the_owner_only() {
    let app = spawn_app();
    let mut reg = registration("2008-01-01");
    reg["data"]["given_name"] = json!("<script>alert(1)</script>Mary");
    let (_, v) = app.post(LA, &reg).await;
    let yp: Uuid = serde_json::from_value(v["young_person"].clone()).unwrap();
    app.post(LA, &sample("consent.granted", yp)).await;
    app.post(CAREERS, &destination(yp, "310")).await;
    app.post(LA, &sample("placement.changed", yp)).await; // careers: no consent, refused
    app.post(
        LA,
        &override_for(yp, &["demo-careers"], &["plans"], "2026-12-31"),
    )
    .await;
    app.post(LA, &sample("pathway-plan.reviewed", yp)).await; // careers: on the override
    app.drain();

    let (s, report) = app
        .get(LA, &format!("/v1/young-people/{yp}/subject-access"))
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["held"].as_array().unwrap().len(), 6);
    assert_eq!(
        report["held"][0]["data"]["given_name"], "<script>alert(1)</script>Mary",
        "held in full"
    );
    let shared = report["shared"].as_array().unwrap();
    assert!(shared.iter().any(|r| r["recipient"] == "demo-college"
        && r["type"] == "destination.recorded"
        && r["decision"]["basis"]["kind"] == "consent"));
    assert!(report["withheld"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["recipient"] == "demo-careers" && r["type"] == "placement.changed"));
    let models = report["read_models"].as_object().unwrap();
    assert_eq!(
        models.keys().collect::<Vec<_>>(),
        vec!["demo-careers", "demo-college", "demo-la"]
    );
    assert_eq!(
        models["demo-college"]["education_employment"]["destination"]["activity_code"],
        "310"
    );
    assert_eq!(report["consent"]["in_force"].as_array().unwrap().len(), 3);
    assert_eq!(report["overrides"][0]["in_force"], true);

    let (s, headers, page) = app
        .get_text(
            LA,
            &format!("/v1/young-people/{yp}/subject-access?format=html"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(page.contains("What Pathway Exchange holds about you"));
    assert!(page.contains("Demo FE College (designated staff)"));
    assert!(page.contains("You gave consent"));
    assert!(page.contains("because of child protection"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;Mary"));
    assert!(!page.contains("<script>"), "data is escaped, never run");

    let (s, v) = app
        .get(CAREERS, &format!("/v1/young-people/{yp}/subject-access"))
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, json!("not-the-owner"))
    );
    let (s, _) = app
        .get(
            LA,
            &format!("/v1/young-people/{}/subject-access", Uuid::new_v4()),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = app
        .request(
            "GET",
            &format!("/v1/young-people/{yp}/subject-access"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Mary moves placement and starts at a new college. With her consent the college's
/// designated staff see her education and who she is; her placement (where she lives) and
/// her care history do not reach them.
#[tokio::test]
async fn mary_education_reaches_her_new_college_but_family_and_placement_do_not() {
    let app = spawn_app();
    let mut reg = registration("2009-03-14");
    reg["data"]["given_name"] = json!("Mary");
    let (_, v) = app.post(LA, &reg).await;
    let mary: Uuid = serde_json::from_value(v["young_person"].clone()).unwrap();
    app.post(LA, &sample("looked-after.started", mary)).await;
    let mut moved = sample("placement.changed", mary);
    moved["data"]["postcode"] = json!("ZZ9 9ZZ");
    app.post(LA, &moved).await;
    app.post(
        LA,
        &grant(
            mary,
            &["demo-college"],
            &["identity", "education-employment"],
            "2027-09-01",
        ),
    )
    .await;
    app.post(CAREERS, &destination(mary, "230")).await;
    app.post(LA, &sample("worker.allocated", mary)).await; // support: not consented

    let feed = app.feed(COLLEGE).await;
    let (_, model) = app.get(COLLEGE, &format!("/v1/young-people/{mary}")).await;
    assert_eq!(model["identity"]["given_name"], "Mary");
    assert_eq!(
        model["education_employment"]["destination"]["activity_code"],
        "230"
    );
    for absent in ["placement", "care", "workers"] {
        assert!(model.get(absent).is_none(), "{absent}: {model}");
    }
    let everything = format!("{feed:?}{model}");
    assert!(
        !everything.contains("ZZ9 9ZZ"),
        "her address never reaches the college"
    );
    assert!(!everything.contains("placement.changed"));
    assert!(!everything.contains("looked-after.started"));
    // The careers service gets her care status by statute, but not her placement.
    let (_, careers) = app.get(CAREERS, &format!("/v1/young-people/{mary}")).await;
    assert_eq!(careers["care"]["looked_after"], true);
    assert!(careers.get("placement").is_none());
}

/// A college loses access the moment consent is withdrawn: nothing after it arrives, and
/// what it held on consent leaves its read model; the disclosure log shows both.
#[tokio::test]
async fn a_college_loses_access_when_consent_is_withdrawn() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    app.post(LA, &sample("consent.granted", yp)).await;
    let before = seq_of(&app, CAREERS, &destination(yp, "310")).await;
    let withdrawal = seq_of(&app, LA, &sample("consent.withdrawn", yp)).await;
    let after = seq_of(&app, CAREERS, &destination(yp, "619")).await;

    let seqs: Vec<u64> = app
        .feed(COLLEGE)
        .await
        .iter()
        .map(|i| i["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.contains(&before) && seqs.contains(&withdrawal));
    assert!(!seqs.contains(&after));
    let (_, model) = app.get(COLLEGE, &format!("/v1/young-people/{yp}")).await;
    assert!(model.get("education_employment").is_none());
    assert!(model.get("identity").is_none());
    let (_, log) = disclosures(&app, LA, yp).await;
    let refused = log
        .iter()
        .find(|r| r["seq"].as_u64() == Some(after) && r["recipient"] == "demo-college")
        .unwrap();
    assert_eq!(refused["decision"]["reason"]["kind"], "no-consent");
}
