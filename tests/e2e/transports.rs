//! One end-to-end suite, run on both transports: agencies submit over HTTP or NATS
//! request/reply and receive over the SSE feed or their NATS out stream, and everything the
//! suite checks must come out the same.

use crate::broker::{agency_client, Node};
use crate::support::{Server, Sse};
use async_nats::jetstream::consumer::{pull, PullConsumer};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    Http,
    Nats,
}

/// An agency's system, as a partner would build it on one transport.
pub struct Agency {
    pub id: &'static str,
    transport: Transport,
    base: String,
    http: reqwest::Client,
    nats: Option<async_nats::Client>,
    inbox: Option<Inbox>,
}

enum Inbox {
    Sse(Sse),
    Stream(Box<PullConsumer>),
}

impl Agency {
    pub async fn connect(
        id: &'static str,
        transport: Transport,
        server: &Server,
        nats: Option<&str>,
    ) -> Agency {
        let nats = match (transport, nats) {
            (Transport::Nats, Some(url)) => Some(agency_client(url, id).await),
            _ => None,
        };
        Agency {
            id,
            transport,
            base: server.base.clone(),
            http: reqwest::Client::new(),
            nats,
            inbox: None,
        }
    }

    fn token(&self) -> String {
        format!("{}-token", self.id)
    }

    /// Submits one envelope; returns the status and body HTTP would give.
    pub async fn submit(&self, envelope: &Value) -> (u16, Value) {
        match self.transport {
            Transport::Http => {
                let res = self
                    .http
                    .post(format!("{}/v1/events", self.base))
                    .bearer_auth(self.token())
                    .json(envelope)
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.json().await.unwrap())
            }
            Transport::Nats => {
                let subject = format!(
                    "exchange.in.{}.{}",
                    self.id,
                    envelope["type"].as_str().unwrap()
                );
                let reply = self
                    .nats
                    .as_ref()
                    .unwrap()
                    .request(subject, serde_json::to_vec(envelope).unwrap().into())
                    .await
                    .expect("an answer");
                let status = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Pathway-Status"))
                    .expect("a status header")
                    .as_str()
                    .parse()
                    .unwrap();
                (status, serde_json::from_slice(&reply.payload).unwrap())
            }
        }
    }

    /// Starts listening for disclosures from the beginning of the agency's feed.
    pub async fn listen(&mut self) {
        self.inbox = Some(match self.transport {
            Transport::Http => {
                let res = self
                    .http
                    .get(format!("{}/v1/feed/stream", self.base))
                    .bearer_auth(self.token())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                Inbox::Sse(Sse::new(res))
            }
            Transport::Nats => {
                let js = async_nats::jetstream::new(self.nats.clone().unwrap());
                let stream = js.get_stream(format!("OUT_{}", self.id)).await.unwrap();
                let consumer = stream
                    .get_or_create_consumer(
                        "suite",
                        pull::Config {
                            durable_name: Some("suite".into()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                Inbox::Stream(Box::new(consumer))
            }
        });
    }

    /// The next `n` disclosures, in order, each as (seq, item).
    pub async fn received(&mut self, n: usize) -> Vec<(u64, Value)> {
        match self.inbox.as_mut().expect("listen first") {
            Inbox::Sse(sse) => sse.next(n).await,
            Inbox::Stream(consumer) => {
                let mut out = Vec::new();
                let mut messages = consumer.messages().await.unwrap();
                while out.len() < n {
                    let msg = tokio::time::timeout(Duration::from_secs(20), messages.next())
                        .await
                        .expect("the out stream went quiet")
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
                    let item: Value = serde_json::from_slice(&msg.payload).unwrap();
                    assert_eq!(item["seq"], seq, "the header and the item agree");
                    assert!(msg.subject.ends_with(item["type"].as_str().unwrap()));
                    msg.ack().await.unwrap();
                    out.push((seq, item));
                }
                out
            }
        }
    }
}

fn envelope(ty: &str, yp: &Value, data: Value) -> Value {
    json!({"id": Uuid::new_v4(), "type": ty, "young_person": yp, "occurred_at": "2026-11-02T10:00:00Z", "data": data})
}

fn sample(ty: &str) -> Value {
    pathway_core::samples::data(pathway_core::EventType::parse(ty).unwrap())
}

fn destination(yp: &Value, code: &str) -> Value {
    let mut d = sample("destination.recorded");
    d["activity_code"] = json!(code);
    envelope("destination.recorded", yp, d)
}

fn consent(yp: &Value, ty: &str) -> Value {
    let mut d = sample(ty);
    d["recipients"] = json!(["demo-college"]);
    if ty == "consent.granted" {
        d["categories"] = json!(["identity", "support", "education-employment"]);
    }
    envelope(ty, yp, d)
}

/// Starts what a transport needs: the exchange, and for NATS a broker first.
pub struct Rig {
    pub server: Server,
    pub broker: Option<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Rig {
    pub async fn start(transport: Transport) -> Rig {
        let data = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let broker = (transport == Transport::Nats).then(|| Node::single(store.path()));
        let server = match &broker {
            Some(b) => Server::start_with(data.path(), &["--nats", &b.url()]),
            None => Server::start(data.path()),
        };
        server.wait_ready(true).await;
        Rig {
            server,
            broker,
            _dirs: vec![data, store],
        }
    }

    pub async fn agency(&self, id: &'static str, transport: Transport) -> Agency {
        let url = self.broker.as_ref().map(Node::url);
        Agency::connect(id, transport, &self.server, url.as_deref()).await
    }
}

/// The README's walkthrough: consent opens the flow to the college, withdrawal closes it,
/// a new grant opens it again with the current state restored.
async fn consent_opens_and_closes_the_college_flow(transport: Transport) {
    let rig = Rig::start(transport).await;
    let la = rig.agency("demo-la", transport).await;
    let careers = rig.agency("demo-careers", transport).await;
    let mut college = rig.agency("demo-college", transport).await;
    college.listen().await;

    let mut reg = sample("young-person.registered");
    reg["date_of_birth"] = json!("2008-01-01");
    let (status, body) = la
        .submit(&json!({"id": Uuid::new_v4(), "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z", "data": reg}))
        .await;
    assert_eq!(status, 201, "{body}");
    let yp = body["young_person"].clone();

    let (status, before) = careers.submit(&destination(&yp, "230")).await;
    assert_eq!(status, 201, "{before}");
    let (_, granted) = la.submit(&consent(&yp, "consent.granted")).await;
    let (_, during) = careers.submit(&destination(&yp, "310")).await;

    let got = college.received(2).await;
    assert_eq!(got[0].0, granted["seq"].as_u64().unwrap());
    assert_eq!(got[0].1["type"], "consent.granted");
    let restored: Vec<u64> = got[0].1["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        restored.contains(&before["seq"].as_u64().unwrap()),
        "the grant restores the destination recorded before it"
    );
    assert_eq!(got[1].0, during["seq"].as_u64().unwrap());
    assert_eq!(got[1].1["basis"]["kind"], "consent");

    let (_, withdrawn) = la.submit(&consent(&yp, "consent.withdrawn")).await;
    let (_, after) = careers.submit(&destination(&yp, "619")).await;
    let (_, regranted) = la.submit(&consent(&yp, "consent.granted")).await;
    let got = college.received(2).await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        vec![
            withdrawn["seq"].as_u64().unwrap(),
            regranted["seq"].as_u64().unwrap()
        ],
        "the destination recorded while consent was withdrawn ({}) never reached the college on its own",
        after["seq"]
    );
}

/// Bad input gets the same problem on both transports, and nothing is appended.
async fn bad_input_gets_a_problem_naming_the_field(transport: Transport) {
    let rig = Rig::start(transport).await;
    let la = rig.agency("demo-la", transport).await;
    let mut reg = sample("young-person.registered");
    reg["date_of_birth"] = json!("2008-02-30");
    let bad = json!({"id": Uuid::new_v4(), "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z", "data": reg});
    let (status, problem) = la.submit(&bad).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid-event");
    assert!(
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "/data/date_of_birth"),
        "{problem}"
    );

    let careers = rig.agency("demo-careers", transport).await;
    let (status, problem) = careers
        .submit(&envelope(
            "placement.changed",
            &json!(Uuid::new_v4()),
            sample("placement.changed"),
        ))
        .await;
    assert_eq!(
        status, 403,
        "a careers service may not source placements: {problem}"
    );

    let head: Value = reqwest::get(format!("{}/readyz", rig.server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(head["log_head"], 0, "nothing was appended");
}

/// The same id and body answer 200 with the first seq; another body under it is a conflict.
async fn retries_are_idempotent_and_conflicts_refused(transport: Transport) {
    let rig = Rig::start(transport).await;
    let la = rig.agency("demo-la", transport).await;
    let mut reg = sample("young-person.registered");
    reg["date_of_birth"] = json!("2008-01-01");
    let first = json!({"id": Uuid::new_v4(), "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z", "data": reg});
    let (s1, a1) = la.submit(&first).await;
    let (s2, a2) = la.submit(&first).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a1, a2);
    let mut other = first.clone();
    other["occurred_at"] = json!("2026-11-03T10:00:00Z");
    let (s3, p3) = la.submit(&other).await;
    assert_eq!(s3, 409, "{p3}");
}

macro_rules! on_both {
    ($($name:ident),*) => {
        mod http {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Transport::Http).await })*
        }
        mod nats {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Transport::Nats).await })*
        }
    };
}

on_both!(
    consent_opens_and_closes_the_college_flow,
    bad_input_gets_a_problem_naming_the_field,
    retries_are_idempotent_and_conflicts_refused
);
