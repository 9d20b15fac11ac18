//! The exchange's own scheduled work: today, purging what recipients have kept past their
//! flow's retention. Runs at start and then on an interval; tests call [`Housekeeper::step`]
//! directly after draining the projector, so nothing waits on a timer.
//!
//! The purge is an event (`retention.purged`) appended through the recorder, not a private
//! write: it is then in the record of truth, repeated by a rebuild, shown in subject access,
//! and told to the recipient, which must delete its own copies too.

use anyhow::anyhow;
use pathway_core::date::Day;
use pathway_projector::retention::{self, Due};
use pathway_projector::Projector;
use pathway_recorder::Recorder;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub struct Housekeeper {
    projector: Projector,
    recorder: Arc<Recorder>,
}

/// A purge's id, derived from what it purges: a repeated pass (say, after a restart before
/// the first pass was projected) appends nothing new, by the log's idempotency.
fn purge_id(d: &Due) -> Uuid {
    let key = format!(
        "retention.purged\0{}\0{}\0{}\0{}",
        d.recipient, d.young_person, d.flow, d.up_to_seq
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn envelope(d: &Due, today: Day) -> Value {
    json!({
        "id": purge_id(d),
        "type": "retention.purged",
        "young_person": d.young_person,
        "occurred_at": format!("{today}T00:00:00Z"),
        "data": {
            "recipients": [d.recipient],
            "flow": d.flow,
            "up_to_seq": d.up_to_seq,
            "retention_days": d.retention_days,
        },
    })
}

impl Housekeeper {
    pub fn new(projector: Projector, recorder: Arc<Recorder>) -> Housekeeper {
        Housekeeper {
            projector,
            recorder,
        }
    }

    /// One pass: records every purge due today. Returns how many were newly recorded.
    pub async fn step(&self) -> anyhow::Result<usize> {
        // Purges already appended must be projected before deciding what is still due.
        let head = self.projector.log().head();
        let mut applied = self.projector.watch();
        applied.wait_for(|seq| *seq >= head).await?;
        let p = self.projector.clone();
        let today = Day(p.log().now().date());
        let due = tokio::task::spawn_blocking(move || retention::due(&p, today)).await??;
        let mut recorded = 0;
        for chunk in due.chunks(500) {
            let envelopes: Vec<Value> = chunk.iter().map(|d| envelope(d, today)).collect();
            let answers = self
                .recorder
                .record_own(&envelopes)
                .await
                .map_err(|p| anyhow!("recording retention purges failed: {}", p.title))?;
            recorded += answers.iter().filter(|a| !a.duplicate).count();
        }
        if recorded > 0 {
            tracing::info!(recorded, "retention purges recorded");
        }
        Ok(recorded)
    }

    /// Steps now and then every `every`, until the runtime stops.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = self.step().await {
                tracing::error!(error = %e, "housekeeping pass failed; will retry");
            }
        }
    }
}
