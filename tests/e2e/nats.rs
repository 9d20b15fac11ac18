//! What only NATS has: the ingress stream, the broker's permissions, a broker that comes
//! and goes, and a three-node cluster losing a node.

use crate::broker::{agency_client, Cluster, Node};
use crate::support::Server;
use async_nats::jetstream::{self, consumer::pull};
use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use uuid::Uuid;

fn registration(id: Uuid) -> Value {
    let mut d = pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered);
    d["date_of_birth"] = json!("2008-01-01");
    json!({"id": id, "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z", "data": d})
}

const STORED: &str = "exchange.in.demo-la.jetstream.young-person.registered";
const DIRECT: &str = "exchange.in.demo-la.young-person.registered";

async fn log_head(server: &Server) -> u64 {
    let body: Value = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["log_head"].as_u64().unwrap()
}

/// Publishes to the ingress stream until the broker acknowledges (retrying through a
/// failover with the same `Nats-Msg-Id`).
async fn publish_stored(js: &jetstream::Context, subject: &str, id: Uuid, body: &Value) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    for _ in 0..100 {
        let sent = js
            .publish_with_headers(
                subject.to_owned(),
                headers.clone(),
                serde_json::to_vec(body).unwrap().into(),
            )
            .await;
        if let Ok(ack) = sent {
            if let Ok(ack) = ack.await {
                return ack.duplicate;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the broker never acknowledged {id}");
}

/// Reads the `seq` of every message in an agency's out stream until `want` distinct ones.
async fn out_seqs(client: async_nats::Client, agency: &str, want: usize) -> BTreeSet<u64> {
    let js = jetstream::new(client);
    // As a partner's client would: retry while a cluster elects new leaders.
    let mut tries = 0;
    let consumer: jetstream::consumer::PullConsumer = loop {
        let made = match js.get_stream(format!("OUT_{agency}")).await {
            Ok(stream) => stream.create_consumer(pull::Config::default()).await.ok(),
            Err(_) => None,
        };
        match made {
            Some(c) => break c,
            None if tries < 20 => tries += 1,
            None => panic!("cannot read {agency}'s out stream"),
        }
    };
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < want {
        let msg = tokio::time::timeout(Duration::from_secs(60), messages.next())
            .await
            .unwrap_or_else(|_| panic!("{agency}'s out stream stopped at {} of {want}", seen.len()))
            .unwrap()
            .unwrap();
        let seq: u64 = msg
            .headers
            .as_ref()
            .unwrap()
            .get("Pathway-Seq")
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        seen.insert(seq);
        msg.ack().await.unwrap();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_stream_keeps_events_until_the_exchange_has_recorded_them() {
    let (data, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let broker = Node::single(store.path());
    let server = Server::start_with(data.path(), &["--nats", &broker.url()]);
    server.wait_ready(true).await; // the streams exist
    server.kill();

    let la = agency_client(&broker.url(), "demo-la").await;
    let mut accepted = la.subscribe("exchange.accepted.demo-la").await.unwrap();
    let mut rejected = la.subscribe("exchange.rejected.demo-la").await.unwrap();
    la.flush().await.unwrap();
    let js = jetstream::new(la.clone());
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        assert!(!publish_stored(&js, STORED, *id, &registration(*id)).await);
    }
    // Published twice under one message id: the broker drops the copy.
    assert!(publish_stored(&js, STORED, ids[0], &registration(ids[0])).await);
    // Published again under another message id: the log's own idempotency answers it.
    let again = Uuid::new_v4();
    publish_stored(&js, STORED, again, &registration(ids[1])).await;
    let mut bad = registration(Uuid::new_v4());
    bad["data"]["date_of_birth"] = json!("2008-13-01");
    publish_stored(&js, STORED, Uuid::new_v4(), &bad).await;

    // The exchange comes back and records what waited for it.
    let server = Server::start_with(data.path(), &["--nats", &broker.url()]);
    let mut statuses = HashMap::<String, u32>::new();
    let mut seqs = BTreeSet::new();
    for _ in 0..21 {
        let m = tokio::time::timeout(Duration::from_secs(30), accepted.next())
            .await
            .expect("an answer for each stored event")
            .unwrap();
        let status = m
            .headers
            .as_ref()
            .unwrap()
            .get("Pathway-Status")
            .unwrap()
            .to_string();
        *statuses.entry(status).or_default() += 1;
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        seqs.insert(body["seq"].as_u64().unwrap());
    }
    assert_eq!(statuses.get("201"), Some(&20));
    assert_eq!(
        statuses.get("200"),
        Some(&1),
        "the republished event is a duplicate"
    );
    assert_eq!(
        seqs,
        (1..=20).collect(),
        "each event once, in a gapless log"
    );
    let refusal = tokio::time::timeout(Duration::from_secs(30), rejected.next())
        .await
        .expect("the bad message is answered, not dropped")
        .unwrap();
    let problem: Value = serde_json::from_slice(&refusal.payload).unwrap();
    assert_eq!(problem["errors"][0]["field"], "/data/date_of_birth");
    assert_eq!(log_head(&server).await, 20);

    // Everything recorded is purged from the broker soon after (asked as the exchange: an
    // agency may not look at the ingress stream).
    let exchange = async_nats::ConnectOptions::new()
        .user_and_password("exchange".into(), "exchange-nats".into())
        .custom_inbox_prefix("_INBOX.exchange")
        .connect(broker.url())
        .await
        .unwrap();
    let mut stream = jetstream::new(exchange)
        .get_stream("EXCHANGE_IN")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stream.info().await.unwrap().state.messages > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "recorded messages stay on the broker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stream.info().await.unwrap().state.last_sequence == 22,
        "all 22 (not the broker's duplicate) were stored first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_can_neither_read_others_subjects_nor_publish_as_another() {
    let (data, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let broker = Node::single(store.path());
    let server = Server::start_with(data.path(), &["--nats", &broker.url()]);
    server.wait_ready(true).await;

    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel::<String>();
    let college = async_nats::ConnectOptions::new()
        .user_and_password("demo-college".into(), "demo-college-nats".into())
        .custom_inbox_prefix("_INBOX.demo-college")
        .event_callback(move |e| {
            let tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = e {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(broker.url())
        .await
        .unwrap();
    let mut permission_error = async |what: &str| {
        let e = tokio::time::timeout(Duration::from_secs(10), errors.recv())
            .await
            .unwrap_or_else(|_| panic!("the broker did not refuse {what}"))
            .unwrap();
        assert!(
            e.to_lowercase().contains("permissions violation"),
            "{what}: {e}"
        );
        e
    };

    // Reading another agency's disclosures.
    let _sub = college.subscribe("exchange.out.demo-la.>").await.unwrap();
    let e = permission_error("a subscription to demo-la's out subjects").await;
    assert!(e.contains("exchange.out.demo-la"), "{e}");
    // Everything at once.
    let _all = college.subscribe(">").await.unwrap();
    permission_error("a subscription to everything").await;
    // Another agency's answers and inbox.
    let _inbox = college.subscribe("_INBOX.demo-la.>").await.unwrap();
    permission_error("a subscription to demo-la's inbox").await;

    // Publishing as the local authority: refused by the broker, never recorded.
    let id = Uuid::new_v4();
    college
        .publish(
            DIRECT,
            serde_json::to_vec(&registration(id)).unwrap().into(),
        )
        .await
        .unwrap();
    college.flush().await.unwrap();
    let e = permission_error("a publish as demo-la").await;
    assert!(e.contains("exchange.in.demo-la"), "{e}");

    // Another agency's stream, through the JetStream API.
    let js = jetstream::new(college.clone());
    assert!(js.get_stream("OUT_demo-la").await.is_err());
    permission_error("reading demo-la's stream").await;

    // Its own subjects work: the control that the refusals above are about whose they are.
    let own = college
        .request(
            "exchange.in.demo-college.enrolment.started",
            serde_json::to_vec(&json!({"id": Uuid::new_v4(), "type": "enrolment.started", "young_person": Uuid::new_v4(), "occurred_at": "2026-11-02T10:00:00Z", "data": {}})).unwrap().into(),
        )
        .await
        .expect("the college may publish as itself");
    let status = own
        .headers
        .as_ref()
        .unwrap()
        .get("Pathway-Status")
        .unwrap()
        .to_string();
    assert_ne!(status, "403", "answered as demo-college");
    assert!(js.get_stream("OUT_demo-college").await.is_ok());
    assert_eq!(
        log_head(&server).await,
        0,
        "nothing was recorded as demo-la"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_at_start_http_works_and_fan_out_catches_up() {
    let (data, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut broker = Node::single_stopped(store.path());
    let server = Server::start_with(data.path(), &["--nats", &broker.url()]);
    let body = server.wait_ready(false).await;
    assert_eq!(body["nats"], "not ready");

    let res = crate::support::post_event(
        &reqwest::Client::new(),
        &server.base,
        "demo-la-token",
        &registration(Uuid::new_v4()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201, "HTTP ingest goes on without NATS");

    broker.start();
    broker.wait_healthy();
    let body = server.wait_ready(true).await;
    assert_eq!(body["nats"], "ready");
    // The registration reaches the careers service (statutory identity flow) over NATS.
    let careers = agency_client(&broker.url(), "demo-careers").await;
    assert_eq!(
        out_seqs(careers, "demo-careers", 1).await,
        BTreeSet::from([1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_flow_loses_nothing_and_doubles_nothing() {
    let (data, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut broker = Node::single(store.path());
    let server = Server::start_with(data.path(), &["--nats", &broker.url()]);
    server.wait_ready(true).await;
    let url = broker.url();

    const PUBLISHERS: usize = 4;
    const EACH: usize = 60;
    let (halfway_tx, mut halfway) = tokio::sync::mpsc::channel::<()>(PUBLISHERS);
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (url, halfway_tx) = (url.clone(), halfway_tx.clone());
            tokio::spawn(async move {
                let la = agency_client(&url, "demo-la").await;
                let mut acked = Vec::new();
                for i in 0..EACH {
                    let id = Uuid::new_v4();
                    let body = serde_json::to_vec(&registration(id)).unwrap();
                    // A partner's retry loop: the same envelope until it is answered.
                    let seq = loop {
                        match tokio::time::timeout(
                            Duration::from_secs(2),
                            la.request(DIRECT, body.clone().into()),
                        )
                        .await
                        {
                            Ok(Ok(reply)) => {
                                let v: Value = serde_json::from_slice(&reply.payload).unwrap();
                                break v["seq"].as_u64().expect("accepted");
                            }
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    };
                    acked.push((id, seq));
                    if i == EACH / 2 {
                        halfway_tx.send(()).await.unwrap();
                    }
                }
                acked
            })
        })
        .collect();
    for _ in 0..PUBLISHERS {
        halfway.recv().await.unwrap();
    }
    broker.kill();
    broker.start();
    broker.wait_healthy();

    let mut ids = BTreeSet::new();
    let mut seqs = BTreeSet::new();
    for t in tasks {
        for (id, seq) in t.await.unwrap() {
            assert!(ids.insert(id));
            assert!(seqs.insert(seq), "seq {seq} answered twice");
        }
    }
    let total = (PUBLISHERS * EACH) as u64;
    assert_eq!(
        seqs,
        (1..=total).collect(),
        "every acknowledged event, once"
    );
    assert_eq!(log_head(&server).await, total, "and nothing else");
    let careers = agency_client(&url, "demo-careers").await;
    assert_eq!(
        out_seqs(careers, "demo-careers", total as usize).await,
        (1..=total).collect(),
        "every disclosure reached the careers service's stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_a_node_and_no_acknowledged_event() {
    let (data, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cluster = Cluster::start(store.path());
    let config = data.path().join("exchange.toml");
    std::fs::write(
        &config,
        pathway_demo_config().replace("[nats]\n", "[nats]\nreplicas = 3\n"),
    )
    .unwrap();
    let exchange_data = data.path().join("data");
    let server = Server::spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "--nats",
            &cluster.urls(),
        ],
        &exchange_data,
        "info",
        None,
    );
    server.wait_ready(true).await;

    let la = agency_client(&cluster.urls(), "demo-la").await;
    let js = jetstream::new(la.clone());
    const TOTAL: usize = 150;
    let mut ids = Vec::new();
    for i in 0..TOTAL {
        if i == TOTAL / 3 {
            cluster.nodes[1].kill();
        }
        let id = Uuid::new_v4();
        publish_stored(&js, STORED, id, &registration(id)).await;
        ids.push(id);
    }
    // The answers on exchange.accepted are core NATS, at most once, and the publisher's
    // connection may have been on the node that died; the log is the record, so count there.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while log_head(&server).await < TOTAL as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the exchange stopped recording"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let careers = agency_client(&cluster.urls(), "demo-careers").await;
    assert_eq!(
        out_seqs(careers, "demo-careers", TOTAL).await.len(),
        TOTAL,
        "each reached its recipient"
    );
    server.kill();
    let (ok, export, err) = crate::support::run(&["export"], &exchange_data);
    assert!(ok, "{err}");
    let mut recorded: Vec<String> = export
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    recorded.sort();
    let mut acked: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    acked.sort();
    assert_eq!(
        recorded, acked,
        "every acknowledged event in the log exactly once"
    );
}
fn pathway_demo_config() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/demo.toml"
    ))
    .unwrap()
}

#[test]
fn the_committed_broker_users_are_what_nats_config_generates() {
    let (ok, out, err) = crate::support::run_plain(&["nats-config", "--demo"]);
    assert!(ok, "{err}");
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nats/authorization.conf"
    ))
    .unwrap();
    assert_eq!(
        out, committed,
        "regenerate: exchange nats-config --demo > deploy/nats/authorization.conf"
    );
    for agency in ["demo-la", "demo-careers", "demo-college"] {
        assert!(out.contains(&format!("\"exchange.in.{agency}.>\"")));
    }
}
