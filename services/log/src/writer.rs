//! The single writer thread and its group commit.
//!
//! Appends queue on a channel. The writer takes everything queued (up to a bound), checks
//! each batch against the log plus what earlier batches of the same group staged, writes the
//! accepted ones key by key with the head key last, fsyncs once, and only then answers them
//! all. While it waits on the disk, the next group queues up: under load, one fsync serves
//! many callers. The group's stream keys and its ids' place in a run of the id index are
//! left to the indexer thread ([`crate::index`], [`crate::ids`]).

use crate::disk::Disk;
use crate::error::{AppendError, LogError};
use crate::ids::Ids;
use crate::index::{self, Pending, Progress};
use crate::keys::{self, IdRecord, Indexed};
use crate::people::PersonMap;
use crate::record::{Entry, Record, GENESIS};
use crate::runs;
use crate::vault::Vault;
use pathway_core::catalogue::EventType;
use pathway_core::envelope::Submitted;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use time::format_description::well_known::Rfc3339;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub type Clock = Arc<dyn Fn() -> time::OffsetDateTime + Send + Sync>;

/// A validated event and the agency that sent it (authenticated by the caller).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub submitted: Submitted,
    pub source: String,
}

/// The answer for one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub version: u64,
    pub young_person: Uuid,
    /// True when this id was appended before with the same body: the first answer again.
    pub duplicate: bool,
}

pub(crate) struct Job {
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<Vec<Receipt>, AppendError>>,
}

/// Where the log ends.
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// Where the log ends, with the end made whole.
    ///
    /// A group writes key by key (see [`Writer::write`]): its person keys, its runs, its
    /// `x` index chunks, and last the head key. sled recovers a prefix of what was written,
    /// so after a crash mid-group the head key names the last whole group, and its runs
    /// past the head are removed here (its chunks past the head go in [`index::recover`]).
    /// None of it was acknowledged. Id and stream keys pointing into those runs exist only
    /// in logs written before the indexer, when a group wrote them itself; they go too, and
    /// so does any stream slot pointing past the head (the indexer writes a group's slots
    /// only once the group is durable, so none should). A
    /// person key it wrote for a registration stays; it opens nothing in the log. A log
    /// from before the head key (every group one sled batch) ends at its last run, and gets
    /// its head key now.
    pub fn recover(tree: &sled::Tree) -> Result<Head, LogError> {
        let Some(head) = tree.get(keys::HEAD)?.map(|v| keys::u64_of(&v)) else {
            let head = Head::at_last_run(tree)?;
            tree.insert(keys::HEAD, &head.seq.to_be_bytes()[..])?;
            tree.flush()?;
            return Ok(head);
        };
        let cut = Head::remove_after(tree, head)?;
        if cut > 0 {
            tree.flush()?;
            tracing::warn!(
                head,
                entries = cut,
                "the log's last group was cut short by a crash; what it wrote past the head is removed"
            );
        }
        Head::at(tree, head)
    }

    /// The head of a log whose groups were each one sled batch: the end of its last run.
    fn at_last_run(tree: &sled::Tree) -> Result<Head, LogError> {
        match tree.scan_prefix(keys::ENTRY_PREFIX).next_back() {
            None => Ok(Head {
                seq: 0,
                hash: GENESIS,
            }),
            Some(kv) => {
                let (k, v) = kv?;
                let seq = runs::first_seq(&k) + runs::split(&v).count() as u64 - 1;
                Head::at(tree, seq)
            }
        }
    }

    /// The head at `seq`, with the hash of the entry there.
    fn at(tree: &sled::Tree, seq: u64) -> Result<Head, LogError> {
        if seq == 0 {
            return Ok(Head {
                seq: 0,
                hash: GENESIS,
            });
        }
        let entry = match runs::Cursor::new(tree).at(seq)? {
            Some(Ok(bytes)) if bytes.len() >= 64 => {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&bytes[32..64]);
                Some(hash)
            }
            _ => None,
        };
        match entry {
            Some(hash) => Ok(Head { seq, hash }),
            None => Err(LogError::Corrupt {
                seq,
                reason: "the entry at the head of the log is missing or unreadable".into(),
            }),
        }
    }

    /// Removes the runs past `head` and the id and stream keys that point into them;
    /// returns how many entries they held.
    fn remove_after(tree: &sled::Tree, head: u64) -> Result<usize, LogError> {
        let mut keys_to_remove = Vec::new();
        let mut entries = 0;
        for kv in tree.range(keys::entry(head.saturating_add(1))..=keys::entry(u64::MAX)) {
            let (k, v) = kv?;
            let first = runs::first_seq(&k);
            for (i, bytes) in runs::split(&v).enumerate() {
                let Ok(Ok(entry)) = bytes.map(Entry::decode) else {
                    continue;
                };
                let (seq, r) = (first + i as u64, &entry.record);
                entries += 1;
                let id = keys::id(r.id);
                if tree
                    .get(id)?
                    .is_some_and(|v| IdRecord::decode(&v).seq == seq)
                {
                    keys_to_remove.push(id.to_vec());
                }
                let stream = keys::stream(r.young_person, r.version);
                if tree.get(stream)?.is_some_and(|v| keys::u64_of(&v) == seq) {
                    keys_to_remove.push(stream.to_vec());
                }
                crate::streams::cut(tree, r.young_person, r.version, seq)?;
            }
            keys_to_remove.push(k.to_vec());
        }
        for k in keys_to_remove {
            tree.remove(k)?;
        }
        Ok(entries)
    }
}

const GROUP_LIMIT: usize = 1024;

pub(crate) struct Writer {
    disk: Arc<Disk>,
    tree: sled::Tree,
    head: Head,
    clock: Clock,
    durable: watch::Sender<u64>,
    /// Known versions; a cache of each person's last `s` key.
    versions: PersonMap<u64>,
    vault: Arc<Vault>,
    people_cached: usize,
    /// What the indexer has been handed and not yet written.
    pending: Pending,
    progress: Arc<Progress>,
    ids: Arc<Ids>,
    indexer: Option<(mpsc::SyncSender<index::Job>, std::thread::JoinHandle<()>)>,
    /// The merging thread and the flag that stops it.
    merger: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// What one group has staged but not yet written.
#[derive(Default)]
struct Stage {
    /// Stored bytes of the new entries, in sequence order from the group's start.
    entries: Vec<Vec<u8>>,
    /// Person keys made for this stage's people, stored (wrapped) with its entries.
    keys: PersonMap<[u8; 32]>,
    /// The new entries' index records, for the `x` chunks and then the indexer.
    index: Vec<Indexed>,
    ids: PersonMap<IdRecord>,
    versions: PersonMap<u64>,
    seq: u64,
    hash: [u8; 32],
}

/// What the writer shares with the rest of the log: its store, clock, vault and the
/// indexer's progress.
pub(crate) struct Parts {
    pub disk: Arc<Disk>,
    pub tree: sled::Tree,
    pub clock: Clock,
    pub durable: watch::Sender<u64>,
    pub vault: Arc<Vault>,
    pub people_cached: usize,
    pub progress: Arc<Progress>,
    pub ids: Arc<Ids>,
    /// Ids of durable groups not yet in a run, found at open: the indexer's first run.
    pub unsealed: Vec<Indexed>,
}

impl Writer {
    /// The writer, with its indexer and merger threads started.
    pub fn new(mut parts: Parts, head: Head) -> Result<Writer, LogError> {
        let spawn_failed = |e: std::io::Error| LogError::Storage(e.to_string());
        let (wake, woken) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let merger = index::Merger {
            ids: parts.ids.clone(),
            stop: stop.clone(),
        };
        let merging = std::thread::Builder::new()
            .name("log-merger".into())
            .spawn(move || merger.run(woken))
            .map_err(spawn_failed)?;
        let (jobs, rx) = mpsc::sync_channel(index::QUEUE);
        let indexer = index::Indexer {
            tree: parts.tree.clone(),
            progress: parts.progress.clone(),
            ids: parts.ids.clone(),
            unsealed: std::mem::take(&mut parts.unsealed),
            merges: wake,
        };
        let thread = std::thread::Builder::new()
            .name("log-indexer".into())
            .spawn(move || indexer.run(rx))
            .map_err(spawn_failed)?;
        let mut w = Writer::with_indexer(parts, head, jobs, thread);
        w.merger = Some((stop, merging));
        Ok(w)
    }

    fn with_indexer(
        parts: Parts,
        head: Head,
        jobs: mpsc::SyncSender<index::Job>,
        thread: std::thread::JoinHandle<()>,
    ) -> Writer {
        Writer {
            disk: parts.disk,
            tree: parts.tree,
            head,
            clock: parts.clock,
            durable: parts.durable,
            versions: PersonMap::default(),
            vault: parts.vault,
            people_cached: parts.people_cached,
            pending: Pending::default(),
            progress: parts.progress,
            ids: parts.ids,
            indexer: Some((jobs, thread)),
            merger: None,
        }
    }

    /// Closes the indexer's queue and waits for it to write what it holds; then stops the
    /// merger, abandoning a merge midway rather than holding up a shutdown.
    fn stop_indexer(&mut self) {
        if let Some((jobs, thread)) = self.indexer.take() {
            drop(jobs);
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.merger.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }

    pub fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < GROUP_LIMIT {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if let Err(fatal) = self.commit_group(jobs) {
                // A failed write or fsync leaves sled's state unknowable: stop accepting.
                tracing::error!(error = %fatal, "log writer stopped");
                for job in rx.try_iter() {
                    let _ = job.reply.send(Err(AppendError::Storage(fatal.to_string())));
                }
                break;
            }
        }
        self.stop_indexer();
    }

    fn commit_group(&mut self, jobs: Vec<Job>) -> Result<(), LogError> {
        if let Some(why) = self.progress.failed() {
            let fatal = LogError::Storage(format!("the log's indexer stopped: {why}"));
            for job in jobs {
                let _ = job.reply.send(Err(AppendError::Storage(fatal.to_string())));
            }
            return Err(fatal);
        }
        self.pending.forget_through(self.progress.done());
        // Whole seconds: one group, one `recorded_at`.
        let now = (self.clock)();
        let now = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut group = Stage {
            seq: self.head.seq,
            hash: self.head.hash,
            ..Stage::default()
        };
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut stage = Stage {
                seq: group.seq,
                hash: group.hash,
                ..Stage::default()
            };
            match self.stage(&job.events, &group, &mut stage, &now) {
                Ok(receipts) => {
                    group.seq = stage.seq;
                    group.hash = stage.hash;
                    group.index.append(&mut stage.index);
                    group.entries.append(&mut stage.entries);
                    group.ids.extend(stage.ids);
                    group.versions.extend(stage.versions);
                    group.keys.extend(stage.keys);
                    answers.push((job.reply, Ok(receipts)));
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if group.seq != self.head.seq {
            let written = self.write(&group);
            if let Err(e) = written {
                for (reply, _) in answers {
                    let _ = reply.send(Err(AppendError::Storage(e.to_string())));
                }
                return Err(e);
            }
            self.head = Head {
                seq: group.seq,
                hash: group.hash,
            };
            self.ids.add(&group.index);
            if self.versions.len() >= self.people_cached {
                // A cache, re-read from each person's stream key on a miss: bounded, so
                // memory does not grow with the number of people in the log.
                self.versions.clear();
            }
            self.versions.extend(group.versions);
            self.vault.remember(group.keys);
            self.durable.send_replace(group.seq);
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        if !group.index.is_empty() {
            let index: Arc<[Indexed]> = group.index.into();
            self.pending.add(index.clone());
            // Blocks while the indexer is `index::QUEUE` groups behind: the writer's
            // pending memory stays bounded, and readers never wait long.
            let handed = match &self.indexer {
                Some((jobs, _)) => jobs.send(index::Job(index)).is_ok(),
                None => false,
            };
            if !handed {
                return Err(LogError::Storage("the log's indexer is gone".into()));
            }
        }
        Ok(())
    }

    /// Writes a group key by key, in an order a crash can cut anywhere: person keys (so no
    /// entry is ever without its key), runs, the `x` chunks of its index, and the head key
    /// last ([`Head::recover`] removes whatever a cut left past the head). Then one flush,
    /// made durable by [`Disk::flush`].
    /// The id and stream keys come later, from the indexer; a crash before it writes them
    /// leaves the chunks, which opening the log indexes ([`index::recover`]).
    ///
    /// Not one sled batch, though that would be atomic by itself: sled 0.34 applies a batch
    /// under a lock global to the process, which stops every insert and every iterator of
    /// every database in it (the projector's and every reader's) while a group of a
    /// thousand events goes in. Readers need no batch to stay consistent: they read up to
    /// the durable head, which moves only after the flush.
    fn write(&self, group: &Stage) -> Result<(), LogError> {
        self.vault.store(&group.keys)?;
        let mut first = self.head.seq + 1;
        for run in runs::cut(&group.entries) {
            self.tree.insert(keys::entry(first), runs::encode(run))?;
            first += run.len() as u64;
        }
        for (k, v) in index::chunks(&group.index) {
            self.tree.insert(k, v)?;
        }
        self.tree.insert(keys::HEAD, &group.seq.to_be_bytes()[..])?;
        self.disk.flush()
    }

    fn stored_id(
        &self,
        id: Uuid,
        group: &Stage,
        stage: &Stage,
    ) -> Result<Option<IdRecord>, AppendError> {
        if let Some(r) = stage.ids.get(&id).or_else(|| group.ids.get(&id)) {
            return Ok(Some(*r));
        }
        self.ids
            .get(&id)
            .map_err(|e| AppendError::Storage(e.to_string()))
    }

    fn version(&mut self, yp: Uuid, group: &Stage, stage: &Stage) -> Result<u64, AppendError> {
        if let Some(v) = stage.versions.get(&yp).or_else(|| group.versions.get(&yp)) {
            return Ok(*v);
        }
        if let Some(v) = self.pending.version(&yp) {
            return Ok(v);
        }
        if let Some(v) = self.versions.get(&yp) {
            return Ok(*v);
        }
        let v = crate::streams::version(&self.tree, yp)
            .map_err(|e| AppendError::Storage(e.to_string()))?;
        self.versions.insert(yp, v);
        Ok(v)
    }

    /// The person's key: made in this group, stored, or (for a registration) new, staged with
    /// the entry. A known person without a key was erased: nothing more is recorded of them.
    fn person_key(
        &self,
        yp: Uuid,
        registering: bool,
        index: usize,
        group: &Stage,
        stage: &mut Stage,
    ) -> Result<[u8; 32], AppendError> {
        if let Some(k) = stage.keys.get(&yp).or_else(|| group.keys.get(&yp)) {
            return Ok(*k);
        }
        let storage = |e: LogError| AppendError::Storage(e.to_string());
        if let Some(k) = self.vault.key(yp).map_err(storage)? {
            return Ok(k);
        }
        if !registering {
            return Err(AppendError::Conflict {
                index,
                field: "young_person",
                message:
                    "this young person's record was erased; nothing more can be recorded about them"
                        .into(),
            });
        }
        self.new_key(yp, stage)
    }

    /// A new key for a person being registered, staged with their first entry.
    fn new_key(&self, yp: Uuid, stage: &mut Stage) -> Result<[u8; 32], AppendError> {
        let k = self
            .vault
            .new_key()
            .map_err(|e| AppendError::Storage(e.to_string()))?;
        stage.keys.insert(yp, k);
        Ok(k)
    }

    /// Checks one all-or-nothing batch and stages its writes, or explains the first problem.
    fn stage(
        &mut self,
        events: &[NewEvent],
        group: &Stage,
        stage: &mut Stage,
        now: &str,
    ) -> Result<Vec<Receipt>, AppendError> {
        let mut receipts = Vec::with_capacity(events.len());
        for (index, ev) in events.iter().enumerate() {
            let s = &ev.submitted;
            let digest = digest(&ev.source, &s.canonical);
            if let Some(prior) = self.stored_id(s.id, group, stage)? {
                if prior.digest != digest {
                    return Err(AppendError::Conflict {
                        index,
                        field: "id",
                        message: "this event id was already used for a different event".into(),
                    });
                }
                receipts.push(Receipt {
                    seq: prior.seq,
                    version: prior.version,
                    young_person: prior.young_person,
                    duplicate: true,
                });
                continue;
            }
            let registering = s.event_type == EventType::YoungPersonRegistered;
            let (yp, minted) = match (s.young_person, registering) {
                (Some(yp), _) => (yp, false),
                (None, true) => (mint(), true),
                (None, false) => return Err(AppendError::UnknownPerson { index }),
            };
            // A person minted here has nothing in the log yet: no version, no key to look up.
            let current = if minted {
                0
            } else {
                self.version(yp, group, stage)?
            };
            if registering && current > 0 {
                return Err(AppendError::Conflict {
                    index,
                    field: "young_person",
                    message: "this young person is already registered".into(),
                });
            }
            if !registering && current == 0 {
                return Err(AppendError::UnknownPerson { index });
            }
            if let Some(expected) = s.expected_version {
                if expected != current {
                    return Err(AppendError::VersionMismatch {
                        index,
                        expected,
                        actual: current,
                    });
                }
            }
            let seq = stage.seq + 1;
            let version = current + 1;
            // The erasure notice stays readable; everything else is sealed with the person's key.
            let data = if s.event_type == EventType::YoungPersonErased {
                RawValue::from_string(s.data.clone()).expect("validated data is JSON")
            } else {
                let key = if minted {
                    self.new_key(yp, stage)?
                } else {
                    self.person_key(yp, registering, index, group, stage)?
                };
                Vault::seal(&key, seq, s.data.as_bytes())
            };
            let record = Record {
                seq,
                id: s.id,
                event_type: s.event_type,
                schema_version: s.schema_version,
                young_person: yp,
                version,
                source: ev.source.clone(),
                occurred_at: s.occurred_at.clone(),
                recorded_at: now.to_owned(),
                expected_version: s.expected_version,
                data,
                signature: s.signature.clone(),
            };
            let (bytes, hash) = Entry::encode(&record, &stage.hash);
            let id_record = IdRecord {
                seq,
                version,
                young_person: yp,
                digest,
            };
            stage.entries.push(bytes);
            stage.index.push((s.id, id_record));
            stage.ids.insert(s.id, id_record);
            stage.versions.insert(yp, version);
            stage.seq = seq;
            stage.hash = hash;
            receipts.push(Receipt {
                seq,
                version,
                young_person: yp,
                duplicate: false,
            });
        }
        Ok(receipts)
    }
}

/// An exchange id for a person registered without one. Time-ordered (UUIDv7), so the keys a
/// new person brings (their wrapped key, their stream, their projections) go in at the
/// growing edge of each tree rather than at random places, which sled pays for in leaf
/// copies and splits. The time it carries is the registration's, which the event records
/// anyway. Ids minted by one process are ordered, and their random bits make a collision
/// with a stored person (minted at another millisecond, or sent by an agency) vanishingly
/// unlikely, which is why a minted person is not looked up.
fn mint() -> Uuid {
    Uuid::now_v7()
}

/// The idempotency digest: the source is part of it, so another agency reusing an id is a
/// conflict, not a replay of someone else's answer.
fn digest(source: &str, canonical: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(source.as_bytes());
    ctx.update(&[0]);
    ctx.update(canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    const PEOPLE: usize = crate::PEOPLE_CACHED;

    /// An event from `demo-la`; about no one (for a registration whose id the log mints)
    /// when `yp` is `None`.
    fn event(id: u128, yp: Option<Uuid>, ty: &str, expected_version: Option<u64>) -> NewEvent {
        let data = match ty {
            "young-person.registered" => {
                pathway_core::samples::data(EventType::YoungPersonRegistered)
            }
            _ => json!({"date": "2026-11-01", "risk": "finance"}),
        };
        let mut e = json!({"id": Uuid::from_u128(id), "type": ty,
            "occurred_at": "2026-10-01T10:00:00Z", "data": data});
        if let Some(yp) = yp {
            e["young_person"] = json!(yp);
        }
        if let Some(v) = expected_version {
            e["expected_version"] = json!(v);
        }
        NewEvent {
            submitted: pathway_core::envelope::validate(&e).expect("valid"),
            source: "demo-la".into(),
        }
    }

    /// Appends one batch through the writer's group commit, as its thread would.
    fn append(w: &mut Writer, events: Vec<NewEvent>) -> Result<Vec<Receipt>, AppendError> {
        let (reply, mut answer) = oneshot::channel();
        w.commit_group(vec![Job { events, reply }]).unwrap();
        answer.try_recv().expect("answered")
    }

    /// People registered without an id get ids that sort in the order they were minted, so
    /// their keys go in at the growing edge of each tree; and each is a new person.
    #[test]
    fn minted_people_are_new_and_in_minting_order() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = crate::Log::open(dir.path(), crate::LogOptions::default()).unwrap();
        let registration = |id: u128| event(id, None, "young-person.registered", None);
        let first = rt
            .block_on(log.append((1..=3).map(registration).collect()))
            .unwrap();
        let later = rt.block_on(log.append(vec![registration(4)])).unwrap();
        let ids: Vec<Uuid> = first.iter().chain(&later).map(|r| r.young_person).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(first.iter().chain(&later).all(|r| r.version == 1));
    }

    /// A writer on a fresh store whose device sync is `sync` and whose indexer takes its
    /// groups but writes nothing, remembering `people_cached` people's versions at most.
    fn writer(
        people_cached: usize,
        sync: Box<dyn Fn() -> std::io::Result<()> + Send + Sync>,
    ) -> (Writer, sled::Tree, watch::Receiver<u64>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("log").unwrap();
        let vault = Arc::new(Vault::open(dir.path(), tree.clone(), people_cached).unwrap());
        let (durable, watch) = watch::channel(0);
        let (jobs, rx) = mpsc::sync_channel(64);
        let idle = std::thread::spawn(move || rx.iter().for_each(drop));
        let disk = Arc::new(Disk::with_sync(db, sync));
        let ids = Ids::open(
            tree.clone(),
            &dir.path().join(crate::ids::DIR),
            disk.clone(),
            crate::IDS_PER_RUN,
        )
        .unwrap();
        let parts = Parts {
            disk,
            tree: tree.clone(),
            clock: Arc::new(time::OffsetDateTime::now_utc),
            durable,
            vault,
            people_cached,
            progress: Arc::new(Progress::new(0)),
            ids: Arc::new(ids),
            unsealed: Vec::new(),
        };
        let head = Head {
            seq: 0,
            hash: GENESIS,
        };
        let w = Writer::with_indexer(parts, head, jobs, idle);
        (w, tree, watch, dir)
    }

    /// sled's flush stops short of the device (see `disk`): no one hears "accepted", and
    /// the durable head does not move, until the device sync after it has returned.
    #[test]
    fn nothing_is_answered_before_the_device_sync_returns() {
        // Given a writer whose device sync says when it starts and waits to be let go
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release, released) = mpsc::channel::<()>();
        let (entered_tx, released) = (Mutex::new(entered_tx), Mutex::new(released));
        let sync = Box::new(move || {
            entered_tx.lock().unwrap().send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
            Ok(())
        });
        let (w, tree, durable, _dir) = writer(PEOPLE, sync);
        let (jobs, rx) = mpsc::sync_channel(8);
        let thread = std::thread::spawn(move || w.run(rx));

        // When an append reaches the device sync
        let (reply, mut answer) = oneshot::channel();
        let events = vec![event(1, None, "young-person.registered", None)];
        jobs.send(Job { events, reply }).unwrap();
        entered
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the writer syncs the device");

        // Then its entry is written, but it is not answered and not yet durable
        assert!(tree.get(keys::entry(1)).unwrap().is_some(), "flushed first");
        assert!(matches!(
            answer.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(*durable.borrow(), 0);

        // And once the sync returns, it is
        release.send(()).unwrap();
        let receipts = answer.blocking_recv().unwrap().expect("accepted");
        assert_eq!(receipts[0].seq, 1);
        assert_eq!(*durable.borrow(), 1);
        drop(jobs);
        thread.join().unwrap();
    }

    /// A device sync that fails stops the writer: what reached the disk is unknowable, so
    /// the append is refused, and so is everything after it.
    #[test]
    fn a_failed_device_sync_refuses_the_append_and_stops_the_writer() {
        let sync = Box::new(|| Err(std::io::Error::other("EIO")));
        let (w, _tree, durable, _dir) = writer(PEOPLE, sync);
        let (jobs, rx) = mpsc::sync_channel(8);
        let thread = std::thread::spawn(move || w.run(rx));
        let (reply, answer) = oneshot::channel();
        let events = vec![event(1, None, "young-person.registered", None)];
        jobs.send(Job { events, reply }).unwrap();
        let refused = answer.blocking_recv().unwrap().expect_err("refused");
        assert!(matches!(&refused, AppendError::Storage(why) if why.contains("EIO")));
        thread.join().unwrap();
        assert_eq!(*durable.borrow(), 0);
        let (reply, _answer) = oneshot::channel();
        let events = vec![event(2, None, "young-person.registered", None)];
        assert!(
            jobs.send(Job { events, reply }).is_err(),
            "the writer is gone"
        );
    }

    /// While the indexer lags, a person the writer no longer caches still has the version
    /// of their last (unindexed) event, and an id in no cache is still a repeat: the writer
    /// asks what it has handed to the indexer before it asks the store.
    #[test]
    fn a_lagging_indexer_hides_no_version_and_no_id_from_the_writer() {
        // Given a writer whose indexer takes its groups but writes nothing, remembering one
        // person's version at most
        let (mut w, tree, _durable, _dir) = writer(1, Box::new(|| Ok(())));
        let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
        append(
            &mut w,
            vec![event(10, Some(p), "young-person.registered", None)],
        )
        .unwrap();
        append(&mut w, vec![event(11, Some(p), "place.at-risk", Some(1))]).unwrap();
        append(
            &mut w,
            vec![event(20, Some(q), "young-person.registered", None)],
        )
        .unwrap();
        append(&mut w, vec![event(21, Some(q), "place.at-risk", Some(1))]).unwrap();
        assert_eq!(
            crate::streams::version(&tree, p).unwrap(),
            0,
            "nothing indexed"
        );

        // When p, forgotten by the cache and not in the store's index, is appended to again
        let next = append(&mut w, vec![event(12, Some(p), "place.at-risk", Some(2))]);
        let repeat = append(&mut w, vec![event(11, Some(p), "place.at-risk", Some(1))]);

        // Then it is their third event, and the repeat is the second, not a new one
        let next = next.expect("p's version is 2");
        assert_eq!((next[0].seq, next[0].version), (5, 3));
        let repeat = repeat.expect("a repeat");
        assert_eq!((repeat[0].seq, repeat[0].duplicate), (2, true));
        w.stop_indexer();
    }
}
