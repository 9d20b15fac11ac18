//! Events in over NATS, both ways. In both, an event counts as accepted only once our log
//! has it durably: request/reply answers after the append; the ingress stream's message is
//! acknowledged after it, so the broker redelivers anything the exchange had not recorded
//! when it stopped, and the log's idempotency by event id makes the redelivery harmless.

use crate::answer::{self, Limits};
use crate::subjects;
use crate::Error;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::{Client, HeaderMap, Subject};
use futures::StreamExt;
use pathway_bus::{Handler, Problem};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Request/reply messages being decided at once: enough for the log's group commit to
/// share each flush among many, bounded so a flood cannot exhaust memory.
const MAX_IN_FLIGHT: usize = 1024;
/// Stream messages are decided in this many lanes, each in order, chosen by young person:
/// one person's events keep their order, different people's share the log's flushes.
const LANES: usize = 256;
/// Unacknowledged stream messages the broker may hand the recorder.
const MAX_ACK_PENDING: i64 = 4096;

/// Serves `exchange.in.<agency>.<type>` in the exchange's queue group until the client
/// closes. Stream subjects also arrive here (a core subscription sees everything) and are
/// left to the stream's consumer.
pub async fn serve_requests(
    client: Client,
    handler: Arc<dyn Handler>,
    limits: Arc<Limits>,
) -> Result<(), Error> {
    let mut sub = client
        .queue_subscribe(subjects::IN_ALL, subjects::QUEUE_GROUP.to_owned())
        .await
        .map_err(Error::nats)?;
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(msg) = sub.next().await {
        if subjects::parse_in(&msg.subject).is_some_and(|i| i.stored) {
            continue;
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (client, handler, limits) = (client.clone(), handler.clone(), limits.clone());
        tokio::spawn(async move {
            respond(
                &client,
                &*handler,
                &limits,
                &msg.subject,
                msg.reply.as_ref(),
                &msg.payload,
            )
            .await;
            drop(permit);
        });
    }
    Ok(())
}

/// Decides one message and sends the answer: to the one waiting, if anyone is, and to the
/// agency's `exchange.rejected.<agency>` for every rejection, or `exchange.accepted.<agency>`
/// for an acceptance no one is waiting for. Returns the status.
async fn respond(
    client: &Client,
    handler: &dyn Handler,
    limits: &Limits,
    subject: &str,
    reply: Option<&Subject>,
    payload: &[u8],
) -> u16 {
    let Some(inbound) = subjects::parse_in(subject) else {
        // No agency can be named, so only the one waiting can be told.
        if let Some(reply) = reply {
            let problem = Problem::new(400, "bad-subject", "The subject names no event type")
                .detail(
                "Publish on exchange.in.<agency>.<type> or exchange.in.<agency>.jetstream.<type>.",
            );
            let (headers, body) = answer::render(&Err(problem), false, subject);
            publish(client, reply.clone(), headers, body).await;
        }
        return 400;
    };
    let (answer, batch) = answer::decide(handler, limits, inbound, payload).await;
    let status = answer::status(&answer);
    let (headers, body) = answer::render(&answer, batch, subject);
    match &answer {
        Ok(accepted) => tracing::debug!(status, seq = accepted[0].seq, "recorded from NATS"),
        Err(p) => {
            tracing::info!(status, code = %p.code, agency = inbound.agency, "refused a NATS message")
        }
    }
    if let Some(reply) = reply {
        publish(client, reply.clone(), headers.clone(), body.clone()).await;
    }
    if answer.is_err() {
        publish(
            client,
            subjects::rejected_subject(inbound.agency).into(),
            headers,
            body,
        )
        .await;
    } else if reply.is_none() {
        publish(
            client,
            subjects::accepted_subject(inbound.agency).into(),
            headers,
            body,
        )
        .await;
    }
    status
}

async fn publish(client: &Client, subject: Subject, headers: HeaderMap, body: bytes::Bytes) {
    if let Err(e) = client.publish_with_headers(subject, headers, body).await {
        tracing::warn!(error = %e, "could not send an answer");
    }
}

/// The ingress stream as the exchange creates it (the benchmark publishes into the same).
pub fn in_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::STREAM_IN.to_owned(),
        subjects: vec![subjects::STREAM_IN_SUBJECTS.to_owned()],
        // Kept until purged: the recorder purges, in bulk, everything below its consumer's
        // ack floor (all of it in our log). A work queue would delete each message as it is
        // acknowledged, one more fsync'd write per event (measured: BENCHMARKS.md).
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The recorder's durable pull consumer, under `name` (the benchmark measures the broker
/// with another of the same shape).
pub fn consumer_config(name: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// The consumer's messages as the recorder takes them: a standing pull of up to 1,024.
pub async fn pull(consumer: &consumer::PullConsumer) -> Result<consumer::pull::Stream, Error> {
    consumer
        .stream()
        .max_messages_per_batch(1024)
        .messages()
        .await
        .map_err(Error::nats)
}

/// Consumes the ingress stream with the recorder's durable pull consumer until the
/// connection fails; the caller starts it again.
pub async fn consume_stored(
    js: jetstream::Context,
    client: Client,
    handler: Arc<dyn Handler>,
    limits: Arc<Limits>,
    replicas: usize,
) -> Result<(), Error> {
    let stream = js
        .get_or_create_stream(in_stream_config(replicas))
        .await
        .map_err(Error::nats)?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            subjects::RECORDER_CONSUMER,
            consumer_config(subjects::RECORDER_CONSUMER),
        )
        .await
        .map_err(Error::nats)?;
    let purger = tokio::spawn(purge_recorded(stream.clone(), consumer.clone()));
    let _stop_purger = AbortOnDrop(purger);
    let mut messages = pull(&consumer).await?;
    let lanes: Vec<mpsc::Sender<jetstream::Message>> = (0..LANES)
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<jetstream::Message>(16);
            let (client, handler, limits) = (client.clone(), handler.clone(), limits.clone());
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    settle(&client, &*handler, &limits, msg).await;
                }
            });
            tx
        })
        .collect();
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(Error::nats)?;
        let lane = lane_of(&msg.payload);
        if lanes[lane].send(msg).await.is_err() {
            return Err(Error::Nats("an ingress lane stopped".to_owned()));
        }
    }
    Ok(())
}

/// How often recorded messages are purged from the ingress stream: personal data stays on
/// the broker at most about this long after our log has it.
const PURGE_EVERY: Duration = Duration::from_millis(250);

/// Purges the ingress stream below the recorder's ack floor, until the connection fails.
async fn purge_recorded(stream: stream::Stream, mut consumer: consumer::PullConsumer) {
    let mut purged = 0;
    loop {
        tokio::time::sleep(PURGE_EVERY).await;
        let floor = match consumer.info().await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(_) => continue,
        };
        if floor > purged {
            match stream.purge().sequence(floor + 1).await {
                Ok(_) => purged = floor,
                Err(e) => tracing::debug!(error = %e, "could not purge the ingress stream"),
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decides a stream message and acknowledges it unless the failure was ours (5xx): a bad
/// message is answered and removed, never left to block those behind it.
async fn settle(client: &Client, handler: &dyn Handler, limits: &Limits, msg: jetstream::Message) {
    let status = respond(client, handler, limits, &msg.subject, None, &msg.payload).await;
    let acked = if status >= 500 {
        msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await
    } else {
        msg.ack().await
    };
    if let Err(e) = acked {
        // The broker redelivers after ack_wait; the log answers the retry as a duplicate.
        tracing::warn!(error = %e, status, "could not acknowledge a stream message");
    }
}

/// The lane for a message: by its young person, so one person's events stay in order.
fn lane_of(payload: &[u8]) -> usize {
    use std::hash::{Hash, Hasher};
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        young_person: Option<&'a str>,
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match serde_json::from_slice::<Probe>(payload) {
        Ok(Probe {
            young_person: Some(yp),
        }) => yp.hash(&mut hasher),
        _ => payload.hash(&mut hasher),
    }
    hasher.finish() as usize % LANES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_persons_events_share_a_lane_whatever_else_they_carry() {
        let a = br#"{"id":"1","young_person":"p-1","type":"neet.onset"}"#;
        let b = br#"{"type":"placement.changed","young_person":"p-1","data":{"x":1}}"#;
        assert_eq!(lane_of(a), lane_of(b));
        let lanes: std::collections::HashSet<usize> = (0..200)
            .map(|i| lane_of(format!(r#"{{"young_person":"p-{i}"}}"#).as_bytes()))
            .collect();
        assert!(lanes.len() > LANES / 2, "people spread over the lanes");
    }
}
