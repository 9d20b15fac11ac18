//! Signed submissions: an agency that registers Ed25519 keys must sign every envelope; the
//! signature is verified over the envelope without it and kept with the entry, so who said
//! what can be proven later.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pathway_core::canonical::canonical_bytes;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap()
}

fn sign(envelope: &mut Value, k: &Ed25519KeyPair) {
    let sig = k.sign(&canonical_bytes(envelope));
    envelope["signature"] =
        json!({"key": hex(k.public_key().as_ref()), "value": hex(sig.as_ref())});
}

async fn post(router: &axum::Router, token: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_signing_agency_must_sign_and_its_signatures_are_kept() {
    let careers = key();
    let stranger = key();
    let text = exchange::config::DEMO.replace(
        "id = \"demo-careers\"\n",
        &format!(
            "id = \"demo-careers\"\nsigning_keys = [\"{}\"]\n",
            hex(careers.public_key().as_ref())
        ),
    );
    let config = exchange::config::parse(&text, "test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = exchange::app::build(config, dir.path()).unwrap();
    let log = running.log.clone();
    let router = pathway_gateway::router(running.state);

    // The local authority registers no keys: it need not sign.
    let reg = json!({"id": Uuid::new_v4(), "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z",
        "data": pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered)});
    let (s, v) = post(&router, "demo-la-token", &reg).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let yp = v["young_person"].clone();

    let destination = || {
        json!({"id": Uuid::new_v4(), "type": "destination.recorded", "young_person": yp, "occurred_at": "2026-11-02T10:00:00Z",
            "data": pathway_core::samples::data(pathway_core::EventType::DestinationRecorded)})
    };
    let unsigned = destination();
    let (s, v) = post(&router, "demo-careers-token", &unsigned).await;
    assert_eq!(
        (s, v["code"].clone(), v["errors"][0]["field"].clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!("bad-signature"),
            json!("/signature")
        )
    );

    let mut by_stranger = destination();
    sign(&mut by_stranger, &stranger);
    let (s, _) = post(&router, "demo-careers-token", &by_stranger).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "not a registered key");

    let mut tampered = destination();
    sign(&mut tampered, &careers);
    tampered["data"]["activity_code"] = json!("619");
    let (s, v) = post(&router, "demo-careers-token", &tampered).await;
    assert_eq!(
        (s, v["errors"][0]["message"].clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!("does not verify over this envelope")
        )
    );
    assert_eq!(log.head(), 1, "nothing was appended");

    let mut signed = destination();
    sign(&mut signed, &careers);
    let (s, v) = post(&router, "demo-careers-token", &signed).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let entry = log.get(v["seq"].as_u64().unwrap()).unwrap().unwrap();
    let kept = entry
        .record
        .signature
        .clone()
        .expect("the signature is kept with the entry");
    assert_eq!(kept.key, hex(careers.public_key().as_ref()));
    // Later, anyone with the key can check who said it, from the stored entry.
    let mut proven = signed.clone();
    proven.as_object_mut().unwrap().remove("signature");
    let value: Vec<u8> = (0..kept.value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&kept.value[i..i + 2], 16).unwrap())
        .collect();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        careers.public_key().as_ref(),
    )
    .verify(&canonical_bytes(&proven), &value)
    .unwrap();
}
