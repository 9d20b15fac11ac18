//! The dispatcher: tails the log and applies each entry to the projections.

use crate::codec::{self, DecisionRef, RunWriter};
use crate::latest;
use crate::registry::{self, Change, Edit, Registry};
use crate::states::States;
use crate::store::{self, ProjectionError, Purges};
use pathway_bus::{Egress, Notice};
use pathway_core::events::EventData;
use pathway_core::identity;
use pathway_core::person::Fact;
use pathway_core::person::PersonState;
use pathway_core::policy::{self, decide, Basis, Disclosure, Restored};
use pathway_core::{Agreements, Category, EventType, FlowBasis};
use pathway_log::Log;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

struct State {
    checkpoint: u64,
    /// True when this process projected from the start of the log, so every person with
    /// earlier entries is already in `persons` and nothing needs replaying.
    complete: bool,
    /// What policy knows of each person, derived from their log stream. Not stored: after a
    /// restart, or once too many are held and forgotten, a step rebuilds the people it
    /// names by replaying their earlier entries ([`rebuild_people`]).
    persons: States,
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
    registry: Registry,
}

/// One stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// What one step changes, written at the end of the step (see [`Writes`]). Feed and
/// disclosure items go into new runs (never rewriting old ones); purges are
/// read-modify-write.
struct Pending<'t> {
    tree: &'t sled::Tree,
    registry: &'t Registry,
    /// Runs filled to [`store::RUN`] in this step.
    full: Vec<OpenRun>,
    /// Each agency's run being filled in this step, found by agency with one hash lookup:
    /// with a hundred recipients per event this is the projector's innermost loop.
    open_feed: HashMap<String, OpenRun>,
    open_disclosures: Option<OpenRun>,
    purges: BTreeMap<Vec<u8>, Purges>,
    /// Consent review keys: `Some(value)` to write, `None` to remove. The last event of a
    /// step about (agency, person) decides, since each value is their whole state.
    reviews: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Identity registry keys to write, by person.
    identities: BTreeMap<Uuid, Vec<Vec<u8>>>,
    /// People erased in this step: their registry entries go.
    erased: Vec<Uuid>,
    /// Latest destinations recorded in this step, by (person, agency): the last one wins.
    destinations: BTreeMap<(Uuid, String), [u8; latest::STORED]>,
}

/// A step's writes, in the order they are made: key by key, then the checkpoint.
///
/// Not a `sled::Batch`: sled 0.34 applies a batch under a lock that is global to the
/// process (its `concurrency_control`), which stops every other insert and every iterator
/// in every database of the process until the batch is in, the log writer's and the log
/// reader's included. Key by key, a rebuild projected 1.5 times as fast (BENCHMARKS.md).
/// What the batch gave is kept by other means:
/// - a crash between keys leaves only a step past the checkpoint, which the next open
///   clears ([`Projector::open`]) and projects again: runs past the checkpoint are removed,
///   and every other key a step writes is the same when projected again;
/// - orders that matter are kept here: a person's registry list is written before the
///   registry keys it names and removed after them, so a crash never leaves a registry key
///   that erasure cannot find;
/// - readers of the feed stop at the checkpoint, so no one is served a step in progress.
#[derive(Default)]
struct Writes {
    keys: Vec<(Vec<u8>, Option<sled::IVec>)>,
    /// The latest-destination index's changes, written last, each packed key as soon as it
    /// is read ([`latest::change`]).
    destinations: BTreeMap<(Uuid, String), [u8; latest::STORED]>,
    erased: Vec<Uuid>,
}

impl Writes {
    fn insert(&mut self, key: impl AsRef<[u8]>, value: impl Into<sled::IVec>) {
        self.keys.push((key.as_ref().to_vec(), Some(value.into())));
    }

    fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.keys.push((key.as_ref().to_vec(), None));
    }

    fn apply(self, tree: &sled::Tree) -> Result<(), ProjectionError> {
        for (key, value) in self.keys {
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
        latest::change(tree, &self.destinations, &self.erased)
    }
}

/// A run being written in this step, and the key it will be stored under.
struct OpenRun {
    key: Vec<u8>,
    run: RunWriter,
}

impl OpenRun {
    fn new(key: Vec<u8>) -> OpenRun {
        OpenRun {
            key,
            run: RunWriter::default(),
        }
    }

    fn is_full(&self) -> bool {
        self.run.len() >= store::RUN || self.run.bytes() >= store::RUN_BYTES
    }
}

impl<'t> Pending<'t> {
    fn new(tree: &'t sled::Tree, registry: &'t Registry) -> Self {
        Pending {
            tree,
            registry,
            full: Vec::new(),
            open_feed: HashMap::new(),
            open_disclosures: None,
            purges: BTreeMap::new(),
            reviews: BTreeMap::new(),
            identities: BTreeMap::new(),
            erased: Vec::new(),
            destinations: BTreeMap::new(),
        }
    }

    fn feed(
        &mut self,
        agency: &str,
        fact: &Fact,
        category: Category,
        d: &Disclosure,
        restored: &[Restored],
    ) {
        let open = match self.open_feed.get_mut(agency) {
            Some(open) if !open.is_full() => open,
            _ => {
                let fresh = OpenRun::new(store::feed_run(agency, fact.seq));
                if let Some(old) = self.open_feed.insert(agency.to_owned(), fresh) {
                    self.full.push(old);
                }
                self.open_feed.get_mut(agency).expect("just inserted")
            }
        };
        open.run.feed(
            fact.seq,
            &fact.young_person,
            category,
            &d.basis,
            d.fields.as_deref(),
            restored,
        );
    }

    /// A disclosure-log line decided at `fact`'s position, about `fact` itself or (when
    /// restored) an earlier event `(seq, id)`.
    fn disclosure(
        &mut self,
        fact: &Fact,
        about: Option<(u64, &Uuid)>,
        recipient: &str,
        decision: DecisionRef,
    ) {
        let at = fact.seq;
        let (seq, id) = about.unwrap_or((fact.seq, &fact.id));
        if self.open_disclosures.as_ref().is_none_or(OpenRun::is_full) {
            let fresh = OpenRun::new(store::disclosure_run(at));
            if let Some(old) = self.open_disclosures.replace(fresh) {
                self.full.push(old);
            }
        }
        let open = self.open_disclosures.as_mut().expect("just ensured");
        open.run
            .disclosure(at, seq, id, &fact.young_person, recipient, decision);
    }

    /// The purge markers of (agency, person), loaded once per step and written at its end.
    fn purges_of(&mut self, agency: &str, yp: Uuid) -> Result<&mut Purges, ProjectionError> {
        let key = store::purges(agency, yp);
        if !self.purges.contains_key(&key) {
            let stored = self
                .tree
                .get(&key)?
                .map(|v| store::decode(&v))
                .transpose()?;
            self.purges.insert(key.clone(), stored.unwrap_or_default());
        }
        Ok(self.purges.get_mut(&key).expect("loaded"))
    }

    /// The step's writes, and the registry changes and edits to take into memory once they
    /// are made. `step` is the position of the step's first entry, which names its journal.
    fn writes(self, step: u64) -> Result<(Writes, Vec<Change>, Vec<Edit>), ProjectionError> {
        let mut writes = Writes::default();
        let mut changes = Vec::new();
        for (yp, keys) in &self.identities {
            if !self.erased.contains(yp) {
                for k in keys {
                    changes.push(Change::add(k, *yp)?);
                }
            }
        }
        let mut edits = Vec::new();
        if !self.erased.is_empty() {
            let erased: HashSet<Uuid> = self.erased.iter().copied().collect();
            let (removed, rewritten) = self.registry.erasing(&erased)?;
            for (k, chunk) in rewritten.iter().map(Edit::key_value) {
                writes.insert(k, chunk);
            }
            changes.extend(removed);
            edits = rewritten;
        }
        for (k, chunk) in self.registry.journal(step, &changes) {
            writes.insert(k, chunk);
        }
        writes.destinations = self.destinations;
        writes.erased = self.erased;
        let runs = self
            .full
            .into_iter()
            .chain(self.open_feed.into_values())
            .chain(self.open_disclosures);
        for OpenRun { key, run } in runs {
            writes.insert(key, run.finish());
        }
        for (k, purges) in self.purges {
            writes.insert(k, store::encode(&purges));
        }
        for (k, review) in self.reviews {
            match review {
                Some(value) => writes.insert(k, value),
                None => writes.remove(k),
            }
        }
        Ok((writes, changes, edits))
    }
}

/// Publishes a step's checkpoint unless a later step's is already out. Steps on two threads
/// (the live loop, an import catching up) can publish out of order; a checkpoint that went
/// back would leave `step`, which reads from it, finding only applied entries, and callers
/// that step until the head is reached looping for ever.
fn advance(applied: &watch::Sender<u64>, last: u64) {
    applied.send_if_modified(|published| {
        let later = last > *published;
        if later {
            *published = last;
        }
        later
    });
}

/// How the projections are sized.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// sled's page cache for the projections: [`store::CACHE_BYTES`] while serving,
    /// [`store::REBUILD_CACHE_BYTES`] for a rebuild.
    pub cache_bytes: u64,
    /// Entries after which the identity registry seals a run: small in tests, so that a
    /// few events exercise its seals and merges.
    pub registry_per_run: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: store::CACHE_BYTES,
            registry_per_run: registry::PER_RUN,
        }
    }
}

impl Projector {
    pub fn open(
        dir: &Path,
        log: Log,
        agreements: Arc<Agreements>,
        egress: Option<Arc<dyn Egress>>,
    ) -> Result<Projector, ProjectionError> {
        Projector::open_with(dir, log, agreements, egress, Options::default())
    }

    /// [`Projector::open`], sized by `options` rather than for serving: a rebuild's larger
    /// cache, or a registry that seals runs often in tests.
    pub fn open_with(
        dir: &Path,
        log: Log,
        agreements: Arc<Agreements>,
        egress: Option<Arc<dyn Egress>>,
        options: Options,
    ) -> Result<Projector, ProjectionError> {
        let (db, tree) = store::open(dir, options.cache_bytes)?;
        if tree.get(store::LAYOUT_KEY)?.as_deref() != Some(store::LAYOUT) {
            // Projections written in another layout are not read: they are derived, so they
            // are cleared and the dispatcher projects the log again from its start.
            if !tree.is_empty() {
                tracing::warn!("projections are in an older layout: rebuilding them from the log");
                tree.clear()?;
            }
            tree.insert(store::LAYOUT_KEY, store::LAYOUT)?;
            tree.flush()?;
        }
        let checkpoint = tree
            .get(store::CHECKPOINT)?
            .map_or(0, |v| store::seq_suffix(&v));
        let cleared = store::clear_runs_after(&tree, checkpoint)?;
        let registry = Registry::open(
            tree.clone(),
            pathway_log::Disk::open(db.clone(), dir)?,
            &dir.join(registry::DIR),
            checkpoint,
            options.registry_per_run,
        )?;
        if cleared > 0 {
            tracing::warn!(
                checkpoint,
                runs = cleared,
                "a projection step was cut short; projecting it again"
            );
        }
        Ok(Projector {
            inner: Arc::new(Inner {
                db,
                tree,
                log,
                agreements,
                egress,
                state: Mutex::new(State {
                    checkpoint,
                    persons: States::default(),
                    complete: checkpoint == 0,
                }),
                applied: watch::channel(checkpoint).0,
                registry,
            }),
        })
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    /// The identity registry (see [`registry`]).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Import rows held for identity review (agency 0 identifier → JSON). Operational state,
    /// not derived from the log: a rebuild clears it, and sending the file again refills it.
    pub fn identity_review(&self) -> Result<sled::Tree, ProjectionError> {
        Ok(self.inner.db.open_tree("identity-review")?)
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
        let entries = self
            .inner
            .log
            .read_from_opening(self.checkpoint(), max, reads_data)?;
        self.apply(&entries)
    }

    /// Applies entries that continue from the checkpoint; returns how many. Entries another
    /// caller applied meanwhile (steps may run on several threads: the live loop, an import
    /// waiting for its registrations) are skipped; a gap is an error.
    fn apply(&self, entries: &[pathway_log::Entry]) -> Result<usize, ProjectionError> {
        let inner = &*self.inner;
        let mut state = inner.state.lock().expect("projector state lock");
        let done = entries
            .iter()
            .take_while(|e| e.record.seq <= state.checkpoint)
            .count();
        let entries = &entries[done..];
        let Some(last) = entries.last().map(|e| e.record.seq) else {
            return Ok(0);
        };
        let first = entries[0].record.seq;
        if first != state.checkpoint + 1 {
            return Err(ProjectionError::Corrupt(format!(
                "entries from {first} do not follow the checkpoint {}",
                state.checkpoint
            )));
        }
        let mut pending = Pending::new(&inner.tree, &inner.registry);
        let mut notices = Vec::new();
        let notify = inner.egress.is_some();
        // Bounded: forget everyone (or everyone held in full, whose states are larger), and
        // rebuild each person from their log stream on their next event, as after a restart.
        if state.persons.len() >= inner.log.policy_states() {
            state.persons.clear();
            state.complete = false;
        } else if state.persons.full_len() >= inner.log.people_cached() {
            state.persons.forget_full();
            state.complete = false;
        }
        let complete = state.complete;
        if !complete {
            rebuild_people(&inner.log, &mut state.persons, entries)?;
        }
        for entry in entries {
            let fact = entry.fact();
            let yp = fact.young_person;
            // Everyone with a past is held by now (all along, or rebuilt just above):
            // whoever is missing is new, as is anyone at their first event, who is not looked
            // for (most of a file of new people's events).
            let known = match entry.record.version {
                1 => None,
                _ => state.persons.get(&yp),
            };
            let was_held = known.is_some();
            let mut held = known.unwrap_or_default();
            let person = &mut held;
            let category = fact.event_type.category();
            // State first: a registration's age band needs its own date of birth. Consent
            // events are addressed by name, so deciding after they apply changes nothing for
            // them, and a withdrawal still stops everything appended after it.
            let change = person.evolve(&fact);
            let restored = if change.granted.is_empty() {
                HashMap::new()
            } else {
                restore(
                    &inner.log,
                    &inner.agreements,
                    person,
                    &fact,
                    &change.granted,
                )?
            };
            for agency in inner.agreements.agencies() {
                let id = agency.id.as_str();
                let brought = restored.get(id).map_or(&[][..], Vec::as_slice);
                let decision = if id == fact.source {
                    // An agency's own events are not disclosures to it, but a grant it
                    // recorded naming itself still brings it up to date.
                    if brought.is_empty() {
                        continue;
                    }
                    Ok(Disclosure {
                        basis: Basis::Named,
                        fields: None,
                    })
                } else {
                    decide(&inner.agreements, person, &fact, agency)
                };
                match decision {
                    Ok(d) => {
                        pending.feed(id, &fact, category, &d, brought);
                        pending.disclosure(&fact, None, id, DecisionRef::Disclosed(&d.basis));
                        for r in brought {
                            pending.disclosure(
                                &fact,
                                Some((r.seq, &r.id)),
                                id,
                                DecisionRef::Disclosed(&r.basis),
                            );
                        }
                        if notify {
                            notices.push(Notice {
                                agency: id.to_owned(),
                                seq: fact.seq,
                                event_type: fact.event_type.name().to_owned(),
                            });
                        }
                    }
                    Err(reason) if reason.matters() => {
                        pending.disclosure(&fact, None, id, DecisionRef::Refused(&reason));
                    }
                    Err(_) => {}
                }
            }
            // Each agency whose grants changed gets its whole list again, from the person's
            // state; an empty list removes the key.
            let started = person.grants().get(&fact.id);
            let ended = change.grants_ended.iter().map(|(_, g)| g);
            let changed: BTreeSet<&str> = started
                .into_iter()
                .chain(ended)
                .map(|g| g.recorded_by.as_str())
                .collect();
            for by in changed {
                let value = store::encode_reviews(
                    person
                        .grants()
                        .iter()
                        .filter(|(_, g)| g.recorded_by == by)
                        .map(|(id, g)| store::Review {
                            due: g.review_due,
                            grant: *id,
                            seq: g.seq,
                        }),
                );
                let value = (!value.is_empty()).then_some(value);
                pending.reviews.insert(store::reviews(by, yp), value);
            }
            // Withdrawal takes effect at once: the recipient's read model stops showing what
            // it held about this person on consent for these categories.
            for (recipient, cat) in change.withdrawn {
                pending
                    .purges_of(&recipient, yp)?
                    .withdrawn
                    .insert(cat, fact.seq);
            }
            if fact.event_type.category() == Category::Identity {
                if let Some(a) = EventData::parse_raw(fact.event_type, fact.data)
                    .ok()
                    .and_then(|d| identity::assertions(fact.source, &d))
                {
                    for (scheme, scope, value) in &a.identifiers {
                        let k = store::identifier_key(*scheme, scope, value);
                        pending.identities.entry(yp).or_default().push(k);
                    }
                    if let Some((dob, name)) = &a.name_key {
                        let k = store::name_key(*dob, name);
                        pending.identities.entry(yp).or_default().push(k);
                    }
                }
            }
            if fact.event_type == EventType::DestinationRecorded {
                if let Ok(EventData::DestinationRecorded(d)) =
                    EventData::parse_raw(fact.event_type, fact.data)
                {
                    let digest = store::destination_digest(
                        yp,
                        &d.activity_code,
                        d.start_date,
                        d.date_ascertained,
                    );
                    let mut value = [0u8; latest::STORED];
                    let (head, seq) = value.split_at_mut(store::DESTINATION_DIGEST);
                    head.copy_from_slice(&digest);
                    seq.copy_from_slice(&fact.seq.to_be_bytes());
                    pending
                        .destinations
                        .insert((yp, fact.source.to_owned()), value);
                }
            }
            if fact.event_type == EventType::YoungPersonErased {
                pending.erased.push(yp);
                // Their date of birth goes with their key. Replaying them, as a rebuild
                // does, finds entries that no longer open: the same empty state.
                state.persons.forget(&yp);
            } else if was_held && !PersonState::changed_by(fact.event_type) {
                state.persons.give_back(held);
            } else {
                state.persons.put(yp, held);
            }
            if fact.event_type == EventType::RetentionPurged {
                if let Ok(EventData::RetentionPurged(r)) =
                    EventData::parse_raw(fact.event_type, fact.data)
                {
                    for recipient in &r.recipients {
                        let done = pending
                            .purges_of(recipient, yp)?
                            .retention
                            .entry(r.flow.clone())
                            .or_default();
                        *done = (*done).max(r.up_to_seq);
                    }
                }
            }
        }
        let erased = !pending.erased.is_empty();
        let (writes, changes, edits) = pending.writes(first)?;
        writes.apply(&inner.tree)?;
        // Last: a crash before it leaves a step that the next open clears and projects again.
        inner
            .tree
            .insert(store::CHECKPOINT, &last.to_be_bytes()[..])?;
        state.checkpoint = last;
        inner.registry.applied(&changes, edits);
        // After an erasure at once, so the journal naming the erased goes too.
        if erased || inner.registry.due() {
            inner.registry.seal(last)?;
        }
        drop(state);
        advance(&inner.applied, last);
        if let Some(egress) = &inner.egress {
            for n in notices {
                egress.publish(n);
            }
        }
        tracing::debug!(checkpoint = last, applied = entries.len(), "projected");
        Ok(entries.len())
    }

    /// Applies everything the log holds now.
    ///
    /// Reading and decoding the log runs on a second thread while this one decides and
    /// writes, so a rebuild uses both cores.
    pub fn catch_up(&self) -> Result<u64, ProjectionError> {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<Result<Vec<pathway_log::Entry>, ProjectionError>>(2);
        let log = self.inner.log.clone();
        let mut cursor = self.checkpoint();
        let reader = std::thread::spawn(move || loop {
            let chunk = log
                .read_from_opening(cursor, 4096, reads_data)
                .map_err(ProjectionError::from);
            let done = match &chunk {
                Ok(entries) => match entries.last() {
                    Some(e) => {
                        cursor = e.record.seq;
                        false
                    }
                    None => true,
                },
                Err(_) => true,
            };
            if tx.send(chunk).is_err() || done {
                return;
            }
        });
        let mut result = Ok(());
        for chunk in rx {
            match chunk.and_then(|entries| self.apply(&entries)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let _ = reader.join();
        result?;
        // Anything appended while the reader finished is picked up the plain way.
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
                    // Cancelled: the runtime is shutting down.
                    Err(e) if e.is_cancelled() => return,
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
    ///
    /// Runs are cut where steps happened to end, so they are flattened to one key per item
    /// (the run's prefix and the item's position): what is compared is what was decided.
    pub fn dump(&self) -> Result<Vec<KeyValue>, ProjectionError> {
        let mut out = Vec::new();
        for kv in self.inner.tree.iter() {
            let (k, v) = kv?;
            match k[0] {
                b'f' => {
                    let prefix = &k[..k.len() - 8];
                    for item in codec::decode_feed(&v)? {
                        let mut key = prefix.to_vec();
                        key.extend_from_slice(&item.seq.to_be_bytes());
                        out.push((key, store::encode(&item)));
                    }
                }
                b'd' => {
                    for record in codec::decode_disclosures(&v)? {
                        let mut key = store::disclosure_run(record.at);
                        key.extend_from_slice(&record.seq.to_be_bytes());
                        key.extend_from_slice(record.recipient.as_bytes());
                        out.push((key, store::encode(&record)));
                    }
                }
                // The registry is compared on what it holds (below), not on how it is kept.
                _ if registry::keeps(&k) => {}
                _ => out.push((k.to_vec(), v.to_vec())),
            }
        }
        for (key, people) in self.inner.registry.content()? {
            let people = people.iter().flat_map(|p| *p.as_bytes()).collect();
            out.push((key, people));
        }
        out.sort();
        Ok(out)
    }

    pub fn flush(&self) -> Result<(), ProjectionError> {
        self.inner.db.flush()?;
        Ok(())
    }
}

/// Whether the projection step reads an entry's data: for the person's policy state
/// (registrations, corrections and the consent category, retention purges among it:
/// [`PersonState::changed_by`], which also covers what `policy::decide` reads of consent
/// events), the identity registry (identity events) and the latest-destination digests.
/// Every other entry is projected with its data still sealed, which spares most events an
/// AES-GCM open and a JSON check. Whatever else parses an entry's data (restores, replays,
/// read models) reads it opened, by seq.
fn reads_data(record: &pathway_log::Record) -> bool {
    let ty = record.event_type;
    PersonState::changed_by(ty)
        || ty.category() == Category::Identity
        || ty == EventType::DestinationRecorded
}

/// What a grant at `fact` brings each recipient, for the pairs it newly covers (see
/// [`pathway_core::policy::restore`]). The person's history is read only when some consent
/// flow could carry a restored category to a recipient.
fn restore(
    log: &Log,
    agreements: &Agreements,
    person: &PersonState,
    fact: &Fact,
    granted: &[(String, Category)],
) -> Result<HashMap<String, Vec<Restored>>, ProjectionError> {
    let mut wanted: BTreeMap<&str, Vec<Category>> = BTreeMap::new();
    for (recipient, category) in granted {
        let carried = agreements
            .flows_to(recipient)
            .any(|f| f.basis == FlowBasis::Consent && f.categories.contains(category));
        if carried {
            wanted.entry(recipient).or_default().push(*category);
        }
    }
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let history = log.read_person_before(fact.young_person, fact.seq)?;
    let facts: Vec<Fact> = history.iter().map(|e| e.fact()).collect();
    for (recipient, categories) in wanted {
        let Some(agency) = agreements.agency(recipient) else {
            continue;
        };
        let brought = policy::restore(agreements, person, &facts, agency, &categories);
        if !brought.is_empty() {
            out.insert(recipient.to_owned(), brought);
        }
    }
    Ok(out)
}

/// The states of the people whom `entries` name and the projector no longer holds (it
/// forgets everyone when too many are held, and holds no one after a restart), each as of
/// just before their first entry here, rebuilt all at once ([`Log::each_before`]). One at a
/// time, as each came up, each was a walk of the log of their own: more than half the cost
/// of projecting a large import's changed rows (BENCHMARKS.md, session 21). A person whose
/// first entry here is their first of all has nothing before it: no replay (after a
/// restart, this saves each newcomer a wait for the log's indexer and a read of their
/// stream).
fn rebuild_people(
    log: &Log,
    persons: &mut States,
    entries: &[pathway_log::Entry],
) -> Result<(), ProjectionError> {
    let mut met = HashSet::new();
    let cold: Vec<(Uuid, u64)> = entries
        .iter()
        .map(|e| &e.record)
        .filter(|r| met.insert(r.young_person) && r.version != 1)
        .filter(|r| !persons.holds(&r.young_person))
        .map(|r| (r.young_person, r.seq))
        .collect();
    // A thousand people at a time: their streams' positions are held while their entries
    // are read, and some people have thousands of events.
    for part in cold.chunks(1024) {
        let mut states = vec![PersonState::default(); part.len()];
        log.each_before(part, |i, e| {
            states[i].evolve(&e.fact());
        })?;
        for ((yp, _), state) in part.iter().zip(states) {
            persons.put(*yp, state);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_published_late_does_not_take_it_back() {
        let (applied, watching) = watch::channel(0);
        advance(&applied, 800);
        advance(&applied, 500);
        assert_eq!(*watching.borrow(), 800);
        advance(&applied, 801);
        assert_eq!(*watching.borrow(), 801);
    }
}
