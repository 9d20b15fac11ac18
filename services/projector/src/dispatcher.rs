//! The dispatcher: tails the log and applies each entry to the projections.

use crate::store::{self, Decision, DisclosureRecord, ProjectionError, Ref};
use pathway_bus::{Egress, Notice};
use pathway_core::person::PersonState;
use pathway_core::policy::{decide, Basis};
use pathway_core::{Agreements, Category, EventType};
use pathway_log::Log;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

struct State {
    checkpoint: u64,
    /// Person states seen so far; a cache of the `p` keys (the projector is their only writer).
    persons: HashMap<Uuid, PersonState>,
}

/// Owns the projections database. Cheap to clone.
#[derive(Clone)]
pub struct Projector {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    log: Log,
    agreements: Arc<Agreements>,
    egress: Option<Arc<dyn Egress>>,
    state: Mutex<State>,
    applied: watch::Sender<u64>,
}

/// Writes of one step, applied together. `None` deletes.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("projection records serialise")
}

impl Projector {
    pub fn open(
        dir: &Path,
        log: Log,
        agreements: Arc<Agreements>,
        egress: Option<Arc<dyn Egress>>,
    ) -> Result<Projector, ProjectionError> {
        let (db, tree) = store::open(dir)?;
        let checkpoint = tree
            .get(store::CHECKPOINT)?
            .map_or(0, |v| store::seq_suffix(&v));
        Ok(Projector {
            inner: Arc::new(Inner {
                db,
                tree,
                log,
                agreements,
                egress,
                state: Mutex::new(State {
                    checkpoint,
                    persons: HashMap::new(),
                }),
                applied: watch::channel(checkpoint).0,
            }),
        })
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    pub fn agreements(&self) -> &Agreements {
        &self.inner.agreements
    }

    /// The last log sequence number applied.
    pub fn checkpoint(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Changes whenever the checkpoint moves: live feeds wait on it.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// Applies up to `max` entries past the checkpoint; returns how many. Blocking.
    pub fn step(&self, max: usize) -> Result<usize, ProjectionError> {
        let inner = &*self.inner;
        let mut state = inner.state.lock().expect("projector state lock");
        let entries = inner.log.read_from(state.checkpoint, max)?;
        let Some(last) = entries.last().map(|e| e.record.seq) else {
            return Ok(0);
        };
        let mut overlay = Overlay::new();
        let mut notices = Vec::new();
        for entry in &entries {
            let fact = entry.fact();
            let yp = fact.young_person;
            let person = match state.persons.entry(yp) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let stored = match inner.tree.get(store::person(yp))? {
                        Some(v) => serde_json::from_slice(&v)
                            .map_err(|e| ProjectionError::Corrupt(e.to_string()))?,
                        None => PersonState::default(),
                    };
                    e.insert(stored)
                }
            };
            let category = fact.event_type.category();
            // State first: a registration's age band needs its own date of birth. Consent
            // events are addressed by name, so deciding after they apply changes nothing for
            // them, and a withdrawal still stops everything appended after it.
            let withdrawn = person.evolve(&fact);
            for agency in inner.agreements.agencies() {
                let id = agency.id.as_str();
                if id == fact.source {
                    let own = Ref {
                        young_person: yp,
                        category,
                        basis: None,
                        fields: None,
                    };
                    overlay.insert(store::read_ref(id, yp, fact.seq), Some(json(&own)));
                    continue;
                }
                let decision = match decide(&inner.agreements, person, &fact, agency) {
                    Ok(d) => {
                        let r = Ref {
                            young_person: yp,
                            category,
                            basis: Some(d.basis.clone()),
                            fields: d.fields,
                        };
                        let bytes = json(&r);
                        overlay.insert(store::feed(id, fact.seq), Some(bytes.clone()));
                        overlay.insert(store::read_ref(id, yp, fact.seq), Some(bytes));
                        notices.push(Notice {
                            agency: id.to_owned(),
                            seq: fact.seq,
                            event_type: fact.event_type.name().to_owned(),
                        });
                        Decision::Disclosed { basis: d.basis }
                    }
                    Err(reason) if reason.matters() => Decision::Refused { reason },
                    Err(_) => continue,
                };
                let record = DisclosureRecord {
                    seq: fact.seq,
                    event_id: fact.id,
                    young_person: yp,
                    recipient: id.to_owned(),
                    decision,
                };
                overlay.insert(store::disclosure(fact.seq, id), Some(json(&record)));
            }
            if matches!(
                fact.event_type,
                EventType::YoungPersonRegistered | EventType::YoungPersonDetailsCorrected
            ) || category == Category::Consent
            {
                overlay.insert(store::person(yp), Some(json(person)));
            }
            for (recipient, cat) in withdrawn {
                purge_consent_based(&inner.tree, &mut overlay, &recipient, yp, cat)?;
            }
        }
        overlay.insert(
            store::CHECKPOINT.to_vec(),
            Some(last.to_be_bytes().to_vec()),
        );
        let mut batch = sled::Batch::default();
        for (k, v) in overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        inner.tree.apply_batch(batch)?;
        state.checkpoint = last;
        drop(state);
        inner.applied.send_replace(last);
        if let Some(egress) = &inner.egress {
            for n in notices {
                egress.publish(n);
            }
        }
        tracing::debug!(checkpoint = last, applied = entries.len(), "projected");
        Ok(entries.len())
    }

    /// Applies everything the log holds now.
    pub fn catch_up(&self) -> Result<u64, ProjectionError> {
        while self.step(4096)? > 0 {}
        Ok(self.checkpoint())
    }

    /// Tails the log until the log's handles are gone.
    pub async fn run(self) {
        let mut head = self.inner.log.watch();
        loop {
            head.borrow_and_update();
            loop {
                let p = self.clone();
                match tokio::task::spawn_blocking(move || p.step(4096)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, checkpoint = self.checkpoint(), "projection step failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "projection task failed");
                        return;
                    }
                }
            }
            if head.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every key and value of the projections, for comparing a rebuild with the live state.
    pub fn dump(&self) -> Result<Vec<KeyValue>, ProjectionError> {
        self.inner
            .tree
            .iter()
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Into::into)
            })
            .collect()
    }

    pub fn flush(&self) -> Result<(), ProjectionError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

/// Withdrawal takes effect at once: the recipient's read model loses what it held about
/// this person on consent for this category (statutory and override data stay).
fn purge_consent_based(
    tree: &sled::Tree,
    overlay: &mut Overlay,
    recipient: &str,
    yp: Uuid,
    cat: Category,
) -> Result<(), ProjectionError> {
    let prefix = store::read_prefix(recipient, yp);
    let consent_based = |v: &[u8]| -> bool {
        serde_json::from_slice::<Ref>(v)
            .map(|r| r.category == cat && matches!(r.basis, Some(Basis::Consent { .. })))
            .unwrap_or(false)
    };
    let mut doomed = Vec::new();
    for kv in tree.scan_prefix(&prefix) {
        let (k, v) = kv?;
        if consent_based(&v) {
            doomed.push(k.to_vec());
        }
    }
    for (k, v) in overlay.range(prefix.clone()..) {
        if !k.starts_with(&prefix) {
            break;
        }
        if v.as_deref().is_some_and(consent_based) {
            doomed.push(k.clone());
        }
    }
    for k in doomed {
        overlay.insert(k, None);
    }
    Ok(())
}
