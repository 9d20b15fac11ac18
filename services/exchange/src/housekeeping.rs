//! The exchange's own scheduled work: the statutory timeline (deadlines set, met, overdue)
//! and purging what recipients have kept past their flow's retention. Runs at start and then
//! on an interval; tests call [`Housekeeper::step`] directly after draining the projector,
//! so nothing waits on a timer.
//!
//! Both kinds of decision are events appended through the recorder, not private writes: they
//! are then in the record of truth, repeated by a rebuild, fanned out under the agreements,
//! and shown in subject access. Their ids are derived from what they say, so a repeated pass
//! appends nothing twice (the log's idempotency).

use anyhow::anyhow;
use pathway_core::calendar;
use pathway_core::date::Day;
use pathway_core::history;
use pathway_core::timeline::{self, Action};
use pathway_gateway::imports::derived_id;
use pathway_projector::retention::{self, Due};
use pathway_projector::Projector;
use pathway_recorder::Recorder;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

pub struct Housekeeper {
    projector: Projector,
    recorder: Arc<Recorder>,
    timeline: Mutex<Timeline>,
    /// Signs a checkpoint of the log's head on each pass, when given.
    signing: Option<ring::signature::Ed25519KeyPair>,
}

/// Which people the timeline must look at: those with new entries since `cursor`, and those
/// whose deadlines start or fall due on a known day (`wake`). Kept in memory: at start the
/// cursor is 0, so the first pass looks at everyone.
#[derive(Default)]
struct Timeline {
    cursor: u64,
    wake: BTreeMap<Day, BTreeSet<Uuid>>,
}

fn deadline_envelope(yp: Uuid, action: &Action, today: Day) -> Value {
    let (ty, data) = match action {
        Action::Set {
            rule,
            due_on,
            trigger,
            alerts,
        } => {
            let mut data = json!({"rule": rule, "due_on": due_on, "trigger_event": trigger});
            if !alerts.is_empty() {
                data["alerts"] = json!(alerts);
            }
            ("deadline.set", data)
        }
        Action::Met {
            rule,
            due_on,
            met_by,
            met_on,
        } => (
            "deadline.met",
            json!({"rule": rule, "due_on": due_on, "met_by_event": met_by, "met_on": met_on}),
        ),
        Action::Overdue {
            rule,
            due_on,
            alerts,
        } => {
            let mut data = json!({"rule": rule, "due_on": due_on});
            if !alerts.is_empty() {
                data["alerts"] = json!(alerts);
            }
            ("deadline.overdue", data)
        }
    };
    let key = match action {
        Action::Set { rule, trigger, .. } => vec![
            ty.to_owned(),
            yp.to_string(),
            rule.clone(),
            trigger.to_string(),
        ],
        Action::Met { rule, due_on, .. } | Action::Overdue { rule, due_on, .. } => {
            vec![
                ty.to_owned(),
                yp.to_string(),
                rule.clone(),
                due_on.to_string(),
            ]
        }
    };
    let parts: Vec<&str> = key.iter().map(String::as_str).collect();
    json!({
        "id": derived_id(&parts),
        "type": ty,
        "young_person": yp,
        "occurred_at": format!("{today}T00:00:00Z"),
        "data": data,
    })
}

/// A purge's id, derived from what it purges: a repeated pass (say, after a restart before
/// the first pass was projected) appends nothing new, by the log's idempotency.
fn purge_id(d: &Due) -> Uuid {
    derived_id(&[
        "retention.purged",
        &d.recipient,
        &d.young_person.to_string(),
        &d.flow,
        &d.up_to_seq.to_string(),
    ])
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
            timeline: Mutex::new(Timeline::default()),
            signing: None,
        }
    }

    /// Also signs a checkpoint of the log's head on each pass.
    pub fn signing_with(mut self, key: ring::signature::Ed25519KeyPair) -> Housekeeper {
        self.signing = Some(key);
        self
    }

    /// One pass: retention, then the timeline. Returns how many events were newly recorded.
    /// Retention goes first because it waits for the projector to catch up with the log,
    /// which the timeline's own appends would otherwise move on.
    pub async fn step(&self) -> anyhow::Result<usize> {
        let recorded = self.retention_step().await? + self.timeline_step().await?;
        if let Some(key) = &self.signing {
            if let Some(cp) = self.projector.log().checkpoint(key)? {
                tracing::info!(seq = cp.seq, "signed a checkpoint");
            }
        }
        Ok(recorded)
    }

    /// Appends the deadlines that have started, been met or fallen overdue by today, for the
    /// people whose history or calendar moved since the last pass.
    pub async fn timeline_step(&self) -> anyhow::Result<usize> {
        let log = self.projector.log().clone();
        let today = Day(log.now().date());
        let (cursor, woken) = {
            let mut t = self.timeline.lock().expect("timeline lock");
            let later = t.wake.split_off(&calendar::days(today, 1));
            let woken: BTreeSet<Uuid> = std::mem::replace(&mut t.wake, later)
                .into_values()
                .flatten()
                .collect();
            (t.cursor, woken)
        };
        let (envelopes, head, wake) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut people = woken;
            let mut head = cursor;
            loop {
                let entries = log.read_from(head, 4096)?;
                let Some(last) = entries.last() else { break };
                head = last.record.seq;
                people.extend(entries.iter().map(|e| e.record.young_person));
            }
            let mut envelopes = Vec::new();
            let mut wake = Vec::new();
            for yp in people {
                let entries = log.read_person(yp)?;
                let facts: Vec<_> = entries.iter().map(|e| e.fact()).collect();
                let history = history::parse(&facts);
                for action in timeline::evaluate(&history, today) {
                    envelopes.push(deadline_envelope(yp, &action, today));
                }
                if let Some(day) = timeline::next_check(&history, today) {
                    wake.push((day, yp));
                }
            }
            Ok((envelopes, head, wake))
        })
        .await??;
        {
            let mut t = self.timeline.lock().expect("timeline lock");
            t.cursor = t.cursor.max(head);
            for (day, yp) in wake {
                t.wake.entry(day).or_default().insert(yp);
            }
        }
        let mut recorded = 0;
        for chunk in envelopes.chunks(500) {
            let answers = self
                .recorder
                .record_own(chunk)
                .await
                .map_err(|p| anyhow!("recording deadlines failed: {}", p.title))?;
            recorded += answers.iter().filter(|a| !a.duplicate).count();
        }
        if recorded > 0 {
            tracing::info!(recorded, "deadline events recorded");
        }
        Ok(recorded)
    }

    /// Records every retention purge due today. Returns how many were newly recorded.
    pub async fn retention_step(&self) -> anyhow::Result<usize> {
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
            match self.step().await {
                Ok(recorded) => tracing::debug!(recorded, "housekeeping pass done"),
                Err(e) => tracing::error!(error = %e, "housekeeping pass failed; will retry"),
            }
        }
    }
}
