//! Disclosures out: each agency's feed, published in order to its own JetStream stream
//! `OUT_<agency>` on `exchange.out.<agency>.<type>`, so an agency that was offline catches up
//! with any NATS client.
//!
//! The feed (in the projections) is the source and the stream only a copy, so the cursor is
//! read back from the stream itself (the `Pathway-Seq` of its last message) rather than kept
//! beside it: a stream that was lost or purged is simply filled again from the log. Each
//! publish also names the stream sequence it must follow (`Nats-Expected-Last-Sequence`),
//! so if the broker lost the stream's tail (a restart), the next publish is refused instead
//! of leaving a gap, and the outbox reads the cursor back and fills it. On one node the out
//! streams may therefore persist asynchronously (`persist_mode: async`) even where the
//! broker fsyncs everything else; replicated streams rely on their quorum instead.

use crate::subjects::{self, SEQ_HEADER};
use crate::Error;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use pathway_projector::{views, Projector};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Feed items published per agency per step; their acks are awaited together.
const BATCH: usize = 512;

pub struct Outbox {
    js: jetstream::Context,
    projector: Projector,
    agencies: Vec<String>,
    cursors: Mutex<HashMap<String, Cursor>>,
}

/// Where an agency's stream is up to: the log position of its last message, and that
/// message's sequence in the stream.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    seq: u64,
    stream_seq: u64,
}

fn out_stream_config(agency: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::out_stream(agency),
        subjects: vec![subjects::out_filter(agency)],
        storage: stream::StorageType::File,
        // nats-server refuses asynchronous persistence on replicated streams.
        persist_mode: (replicas == 1).then_some(stream::PersistenceMode::Async),
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    }
}

impl Outbox {
    /// Creates each agency's stream if missing and reads where each left off.
    pub async fn open(
        js: jetstream::Context,
        projector: Projector,
        agencies: Vec<String>,
        replicas: usize,
    ) -> Result<Outbox, Error> {
        let mut cursors = HashMap::new();
        for agency in &agencies {
            let mut stream = js
                .get_or_create_stream(out_stream_config(agency, replicas))
                .await
                .map_err(Error::nats)?;
            let last = stream
                .info()
                .await
                .map_err(Error::nats)?
                .state
                .last_sequence;
            let seq = if last == 0 {
                0
            } else {
                match stream.get_raw_message(last).await {
                    Ok(m) => m
                        .headers
                        .get(SEQ_HEADER)
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(0),
                    // Gone (purged by hand): publish the feed again from the start.
                    Err(_) => 0,
                }
            };
            cursors.insert(
                agency.clone(),
                Cursor {
                    seq,
                    stream_seq: last,
                },
            );
        }
        Ok(Outbox {
            js,
            projector,
            agencies,
            cursors: Mutex::new(cursors),
        })
    }

    /// Where an agency's stream is up to.
    fn position(&self, agency: &str) -> Cursor {
        self.cursors
            .lock()
            .expect("not poisoned")
            .get(agency)
            .copied()
            .unwrap_or_default()
    }

    /// Publishes up to a batch of each agency's new disclosures and waits for the broker to
    /// store them. Returns how many were published; an error leaves each cursor after the
    /// last one stored, and the next step republishes the rest (the duplicate window drops
    /// any the broker had already stored).
    pub async fn step(&self) -> Result<usize, Error> {
        let mut published = 0;
        for agency in &self.agencies {
            let Cursor {
                seq: after,
                stream_seq: mut expect,
            } = self.position(agency);
            let items = {
                let (p, a) = (self.projector.clone(), agency.clone());
                tokio::task::spawn_blocking(move || views::feed(&p, &a, after, BATCH))
                    .await
                    .map_err(|e| Error::Nats(e.to_string()))??
            };
            let mut acks = Vec::with_capacity(items.len());
            for item in &items {
                let seq = item["seq"].as_u64().unwrap_or(after);
                let event_type = item["type"].as_str().unwrap_or("unknown");
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", subjects::out_msg_id(agency, seq).as_str());
                headers.insert(SEQ_HEADER, seq.to_string().as_str());
                headers.insert("Content-Type", "application/json");
                headers.insert("Nats-Expected-Last-Sequence", expect.to_string().as_str());
                expect += 1;
                let ack = self
                    .js
                    .publish_with_headers(
                        subjects::out_subject(agency, event_type),
                        headers,
                        serde_json::to_vec(item)
                            .expect("feed items serialise")
                            .into(),
                    )
                    .await;
                match ack {
                    Ok(ack) => acks.push((seq, ack)),
                    Err(e) => {
                        self.settle(agency, acks, &mut published).await?;
                        return Err(Error::nats(e));
                    }
                }
            }
            self.settle(agency, acks, &mut published).await?;
        }
        Ok(published)
    }

    async fn settle(
        &self,
        agency: &str,
        acks: Vec<(u64, jetstream::context::PublishAckFuture)>,
        published: &mut usize,
    ) -> Result<(), Error> {
        for (seq, ack) in acks {
            let ack = ack.await.map_err(Error::nats)?;
            self.cursors.lock().expect("not poisoned").insert(
                agency.to_owned(),
                Cursor {
                    seq,
                    stream_seq: ack.sequence,
                },
            );
            *published += 1;
        }
        Ok(())
    }

    /// Publishes as the feeds grow until a step fails (the broker went away); the caller
    /// opens the outbox again once it is back.
    pub async fn run(&self) -> Result<(), Error> {
        let mut applied = self.projector.watch();
        loop {
            if self.step().await? > 0 {
                continue;
            }
            // Woken by new projections; the timeout only bounds a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
        }
    }
}
