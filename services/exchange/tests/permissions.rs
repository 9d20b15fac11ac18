//! The permission table, walked: every role (and no token at all) against every endpoint the
//! table lists, each answer asserted. A role the table lists reaches the handler (whatever the
//! handler then says); any other gets 403 `forbidden-role`; no token gets 401.

mod helpers;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use helpers::*;
use http_body_util::BodyExt;
use pathway_gateway::auth::Role;
use pathway_gateway::permissions::{is_public, TABLE};
use serde_json::Value;
use tower::ServiceExt;

fn token(role: Role) -> &'static str {
    match role {
        Role::Service => "demo-la-token",
        Role::MiOfficer => "demo-la-mi-token",
        Role::PersonalAdviser => "demo-la-pa-token",
        Role::DesignatedStaff => "demo-college-staff-token",
        Role::AgencyAdmin => "demo-la-admin-token",
        Role::Admin => "demo-admin-token",
    }
}

/// The status and, for refusals, the problem code. The body of a success is not read (the
/// live feed never ends).
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = if method == "POST" {
        Body::from("{}")
    } else {
        Body::empty()
    };
    let req = req
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return (status, v["code"].as_str().map(str::to_owned));
    }
    (status, None)
}

#[tokio::test]
async fn every_role_against_every_endpoint() {
    let app = spawn_app();
    let mut checked = 0;
    for rule in TABLE {
        let path = rule
            .path
            .replace("{id}", "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
        assert!(!is_public(rule.method, rule.path));
        let (status, code) = call(&app, rule.method, &path, None).await;
        assert_eq!(
            (status, code.as_deref()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{} {} without a token",
            rule.method,
            rule.path
        );
        for role in Role::ALL {
            let (status, code) = call(&app, rule.method, &path, Some(token(role))).await;
            let refused = code.as_deref() == Some("forbidden-role");
            if rule.roles.contains(&role) {
                // It reached the handler: whatever it answers (a 404 for a person not there,
                // a 403 for the wrong kind of agency, a 400 for an empty body), not the table's.
                assert!(
                    status != StatusCode::UNAUTHORIZED && !refused,
                    "{} {} as {role}: {status} {code:?}",
                    rule.method,
                    rule.path
                );
            } else {
                assert_eq!(
                    (status, code.as_deref()),
                    (StatusCode::FORBIDDEN, Some("forbidden-role")),
                    "{} {} as {role}",
                    rule.method,
                    rule.path
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, TABLE.len() * Role::ALL.len());
    // The exchange's admin reaches no agency's data; liveness stays open to all.
    let admin: Vec<&str> = TABLE
        .iter()
        .filter(|r| r.roles.contains(&Role::Admin))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        admin,
        vec!["/v1/young-people/{id}/erase"],
        "the admin erases, and reads nothing"
    );
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn roles_within_an_agency_act_for_it() {
    let app = spawn_app();
    // An MI officer records for the local authority; the personal adviser reads its feed.
    let (s, v) = app
        .post("demo-la-mi-token", &registration("2008-01-01"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let yp = v["young_person"].as_str().unwrap().to_owned();
    app.drain();
    let (s, model) = app
        .get("demo-la-pa-token", &format!("/v1/young-people/{yp}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(model["events"][0]["source"], "demo-la");
    // Designated staff cannot take the subject access request; the admin cannot read data.
    let (s, v) = app
        .get(
            "demo-college-staff-token",
            &format!("/v1/young-people/{yp}/subject-access"),
        )
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, serde_json::json!("forbidden-role"))
    );
    let (s, v) = app
        .get("demo-admin-token", &format!("/v1/young-people/{yp}"))
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, serde_json::json!("forbidden-role"))
    );
}
