//! The log: the record of truth. Append-only, globally ordered (gapless sequence from 1),
//! versioned per young person, idempotent by event id, SHA-256 hash-chained, and durable
//! before anyone hears "accepted".
//!
//! # Layout
//! - [`record`]: what one stored entry holds and how its hash is computed.
//! - [`keys`]: the key space inside the single sled tree.
//! - `runs`: how a group's entries share one key.
//! - `streams`: each person's seqs, 64 versions a key.
//! - [`people`]: maps keyed by young person, for the per-person caches.
//! - [`writer`]: the one thread that appends, with group commit.
//! - `disk`: what makes a flush durable (sled's own stops short of it).
//! - [`index`]: the thread behind it that writes each event's stream key and seals ids
//!   into runs.
//! - [`ids`]: the event-id index (idempotency), as sorted runs merged in the background.
//! - [`sorted`]: what sorted runs are made of (filters, reading back, merging, levels),
//!   shared with the projector's identity registry.
//! - [`verify`]: recomputing the chain.
//!
//! Everything lives in one sled tree with prefixed keys. A group is written key by key with
//! its head key last, not as one sled batch (whose lock is global to the process: see
//! `writer`); "nothing partial" after a crash rests on sled recovering a prefix of what was
//! written and on opening the log removing whatever lies past the head.

pub mod checkpoint;
mod disk;
mod error;
mod ids;
mod index;
mod keys;
pub mod packed;
pub mod people;
pub mod record;
pub mod run_file;
mod runs;
pub mod sorted;
mod streams;
pub mod vault;
mod verify;
mod writer;

pub use checkpoint::Checkpoint;
pub use disk::Disk;
pub use error::{AppendError, LogError};
pub use record::{Entry, Record};
pub use verify::{VerifyError, VerifyReport};
pub use writer::{Clock, NewEvent, Receipt};

use std::path::Path;
use std::sync::{mpsc, Arc, OnceLock};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// The threads a batch of reads is split over: the machine's cores. Asked once, because the
/// standard library reads the cgroup's files to answer, which showed in profiles of imports
/// that ask for every chunk.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Tuning and injected dependencies.
#[derive(Clone)]
pub struct LogOptions {
    /// Where `recorded_at` comes from; tests fix it.
    pub clock: Clock,
    /// sled's page cache, [`CACHE_BYTES`] unless the service's settings say otherwise.
    pub cache_bytes: u64,
    /// People whose version and key stay in memory at most (and whose policy state the
    /// projector keeps in full, those with consent held); [`PEOPLE_CACHED`] unless a test
    /// wants eviction all the time.
    pub people_cached: usize,
    /// People whose policy state the projector keeps packed, at most: [`POLICY_STATES`]
    /// unless a test wants the projector to forget and replay people all the time.
    pub policy_states: usize,
    /// Ids the indexer gathers before it seals them into a run of the id index
    /// ([`IDS_PER_RUN`] unless a test wants runs sealed and merged all the time).
    pub ids_per_run: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            clock: Arc::new(time::OffsetDateTime::now_utc),
            cache_bytes: CACHE_BYTES,
            people_cached: PEOPLE_CACHED,
            policy_states: POLICY_STATES,
            ids_per_run: IDS_PER_RUN,
        }
    }
}

/// The log's page cache by default, 16 MiB. sled's nodes of small entries take about three
/// times in memory what its cache counts for them, and an import of new people writes
/// small keys (each person's wrapped key and first stream segment) at random places. At
/// 16 MiB a million-row import peaked 25-35 MB lower than at 32 MiB, under 200 MB for both
/// passes, at the same speed; batched ingest runs 5-6% slower (BENCHMARKS.md, sessions 16
/// and 18). A deployment that wants the ingest back and has the memory sets
/// `service.log_cache_mib = 32`.
pub const CACHE_BYTES: u64 = 16 << 20;

/// How many people's versions and keys the log keeps in memory at most. Past this the
/// caches are emptied and refilled from the store on demand, so memory stays bounded
/// however many people the exchange holds (a million-row import, for one).
pub const PEOPLE_CACHED: usize = 100_000;

/// How many people's policy states the projector keeps, packed in about 20 bytes each
/// (40 MB at most). Past this it forgets them all and replays each from their stream on
/// their next event, as after a restart. Two million is more than the young people of one
/// age group in England, so one exchange's people fit: a quarterly file of a million rows
/// then replays none of the people it changes, where holding 100,000 replayed nearly all
/// of them (BENCHMARKS.md, session 23).
pub const POLICY_STATES: usize = 2_000_000;

/// Ids a run of the id index starts with: about 2 MB of records, so sealing is rare, the
/// ids waiting for it stay small in memory, and at most that many are read back at open.
/// Three quarters of a 32,768-slot hash map's capacity (28,672), so the fresh ids, sized for
/// it at open, never grow the map however far a group overshoots: at 32,768 the map doubled
/// to 65,536 slots, 6 MB held for good and 9 MB while it grew.
pub const IDS_PER_RUN: usize = 24_576;

/// Opens a sled database, waiting (up to ten seconds) for a lock its previous owner in this
/// process has let go of but sled has not yet released: dropping a `sled::Db` does not
/// release its file lock synchronously, because a background flusher thread shares it
/// (sled issues 1234 and 1289). A restart inside one process, or a rebuild right after a
/// stop, would otherwise fail at random under load (two seconds was once not enough, in a
/// CI run on a busy machine). A lock held by another live owner still fails, after the
/// wait, with sled's own error.
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            Err(e) if lock_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether sled failed to open because another owner holds the directory's lock. sled 0.34
/// reports it as an `ErrorKind::Other` error whose message carries the OS's `WouldBlock`, so
/// the kind alone does not tell (matching on it made the wait above a no-op, and a CI run
/// failed on a reopen in 0.4 s).
fn lock_busy(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

/// Decodes one entry of a run, naming its sequence number if it is unreadable.
fn decode_at(seq: u64, bytes: Result<&[u8], usize>) -> Result<Entry, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { seq, reason };
    let bytes = bytes.map_err(|_| corrupt("its run is truncated".into()))?;
    Entry::decode(bytes).map_err(|e| match e {
        LogError::Corrupt { reason, .. } => corrupt(reason),
        other => other,
    })
}

/// A handle to the log. Cheap to clone; the writer thread stops when the last one drops.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    disk: Arc<disk::Disk>,
    tree: sled::Tree,
    jobs: Option<mpsc::SyncSender<writer::Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    durable: watch::Receiver<u64>,
    clock: Clock,
    vault: Arc<vault::Vault>,
    people_cached: usize,
    policy_states: usize,
    /// How far the indexer has written stream slots; readers of a person's stream wait on
    /// it.
    indexed: Arc<index::Progress>,
    /// The id index, which the writer consults and `verify` checks.
    ids: Arc<ids::Ids>,
}

impl Drop for Inner {
    /// Closes the queue and waits for the writer, so that once the last handle is gone the
    /// sled lock is free and the same directory can be opened again.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`. sled takes an exclusive lock: one process owns
    /// the log; others reach it through that process.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        let db = open_sled(
            &sled::Config::new()
                .path(dir)
                .cache_capacity(options.cache_bytes)
                .mode(sled::Mode::HighThroughput),
        )?;
        let tree = db.open_tree("log")?;
        keys::check_layout(&tree)?;
        // Before the head is recovered: cutting an entry a crash left past the head looks
        // for its stream slot where this layout keeps it.
        let layout = keys::stored_layout(&tree)?;
        if layout.is_some_and(|l| (2..4).contains(&l)) {
            streams::pack_first_segments(&tree)?;
        }
        if layout.is_none_or(|l| l < 5) {
            vault::Vault::pack_older(&tree)?;
        }
        let head = writer::Head::recover(&tree)?;
        streams::migrate(&tree)?;
        let disk = Arc::new(disk::Disk::open(db.clone(), dir)?);
        let ids = Arc::new(ids::Ids::open(
            tree.clone(),
            &dir.join(ids::DIR),
            disk.clone(),
            options.ids_per_run,
        )?);
        keys::settle_layout(&tree)?;
        let found = index::recover(&tree, head.seq, &ids)?;
        if found.restored > 0 {
            tracing::warn!(
                head = head.seq,
                entries = found.restored,
                "the log's last groups were not yet indexed at shutdown; indexed them now"
            );
        }
        let (durable_tx, durable) = watch::channel(head.seq);
        let (jobs, rx) = mpsc::sync_channel(4096);
        let clock = options.clock;
        let people_cached = options.people_cached.max(1);
        let vault = Arc::new(vault::Vault::open(dir, tree.clone(), people_cached)?);
        vault.recover(&disk)?;
        let indexed = Arc::new(index::Progress::new(head.seq));
        let w = writer::Writer::new(
            writer::Parts {
                disk: disk.clone(),
                tree: tree.clone(),
                clock: clock.clone(),
                durable: durable_tx,
                vault: vault.clone(),
                people_cached,
                progress: indexed.clone(),
                ids: ids.clone(),
                unsealed: found.unsealed,
            },
            head,
        )?;
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| LogError::Storage(e.to_string()))?;
        Ok(Log {
            inner: Arc::new(Inner {
                disk,
                tree,
                jobs: Some(jobs),
                thread: Some(thread),
                durable,
                clock,
                vault,
                people_cached,
                policy_states: options.policy_states.max(1),
                indexed,
                ids,
            }),
        })
    }

    /// How many people's state a reader of this log should keep in memory at most.
    pub fn people_cached(&self) -> usize {
        self.inner.people_cached
    }

    /// How many people's policy states a projector of this log should keep packed at most.
    pub fn policy_states(&self) -> usize {
        self.inner.policy_states
    }

    /// Appends all of `events` or none of them, and answers once they are on disk.
    /// Concurrent calls share one flush (group commit).
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Receipt>, AppendError> {
        let (reply, answer) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or(AppendError::Closed)?;
        jobs.send(writer::Job { events, reply })
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Opens an entry's sealed data with its person's key; with the key destroyed, the data
    /// reads as `null` and the entry says it is erased.
    fn open_entry(&self, mut e: Entry) -> Result<Entry, LogError> {
        let Some(sealed) = vault::Vault::sealed(&e.record.data) else {
            return Ok(e);
        };
        let seq = e.record.seq;
        match self.inner.vault.key(e.record.young_person)? {
            Some(key) => {
                e.record.data =
                    vault::Vault::unseal(&key, seq, sealed).ok_or_else(|| LogError::Corrupt {
                        seq,
                        reason: "its sealed data does not open with its person's key".into(),
                    })?;
            }
            None => {
                e.record.data =
                    serde_json::value::RawValue::from_string("null".into()).expect("JSON null");
                e.erased = true;
            }
        }
        Ok(e)
    }

    /// Destroys a young person's key (see [`vault`]): every event about them becomes
    /// unreadable, for good. The caller appends `young-person.erased` first. Returns whether
    /// they had a key.
    pub fn shred(&self, young_person: Uuid) -> Result<bool, LogError> {
        self.inner.vault.shred(young_person, &self.inner.disk)
    }

    /// The log's clock: what stamps `recorded_at`, so that anything else asking "what day is
    /// it" (retention, consent review) agrees with the log, and tests fix both at once.
    pub fn now(&self) -> time::OffsetDateTime {
        (self.inner.clock)()
    }

    /// The highest sequence number that is durable (0 when empty).
    pub fn head(&self) -> u64 {
        *self.inner.durable.borrow()
    }

    /// Changes whenever the durable head moves; projections tail the log with it.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.durable.clone()
    }

    /// Durable entries with `seq > after`, at most `limit`.
    pub fn read_from(&self, after: u64, limit: usize) -> Result<Vec<Entry>, LogError> {
        self.read_from_opening(after, limit, |_| true)
    }

    /// Durable entries with `seq > after`, at most `limit`, with the data of only those
    /// records `open` chooses opened; the rest keep their sealed data (`{"$sealed": ...}`)
    /// and `erased` unset. For a reader that needs the data of few event types (the
    /// projector): opening is an AES-GCM open and a JSON check per entry.
    pub fn read_from_opening(
        &self,
        after: u64,
        limit: usize,
        open: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Entry>, LogError> {
        let head = self.head();
        let mut out = Vec::with_capacity(limit.min(4096));
        if after >= head || limit == 0 {
            return Ok(out);
        }
        let tree = &self.inner.tree;
        let start = match runs::holding(tree, after + 1)? {
            Some((k, _)) => k.to_vec(),
            None => keys::entry(after + 1).to_vec(),
        };
        for kv in tree.range(start..=keys::entry(head).to_vec()) {
            let (k, v) = kv?;
            let first = runs::first_seq(&k);
            for (i, bytes) in runs::split(&v).enumerate() {
                let seq = first + i as u64;
                if seq <= after {
                    continue;
                }
                if seq > head || out.len() >= limit {
                    return Ok(out);
                }
                let entry = decode_at(seq, bytes)?;
                out.push(if open(&entry.record) {
                    self.open_entry(entry)?
                } else {
                    entry
                });
            }
        }
        Ok(out)
    }

    pub fn get(&self, seq: u64) -> Result<Option<Entry>, LogError> {
        self.sealed(seq)?.map(|e| self.open_entry(e)).transpose()
    }

    /// The durable entry at `seq`, decoded but with its data still sealed: callers that
    /// choose among entries by their envelope open only the one they keep.
    fn sealed(&self, seq: u64) -> Result<Option<Entry>, LogError> {
        if seq == 0 || seq > self.head() {
            return Ok(None);
        }
        runs::Cursor::new(&self.inner.tree)
            .at(seq)?
            .map(|bytes| decode_at(seq, bytes))
            .transpose()
    }

    /// The durable entries at `seqs`, opened, in the order asked. They are read in log
    /// order, each run once for the positions it holds, and their people's keys at once:
    /// an import chunk's changed rows ask for thousands of entries appended together.
    pub fn get_many(&self, seqs: &[u64]) -> Result<Vec<Option<Entry>>, LogError> {
        let head = self.head();
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_unstable_by_key(|i| seqs[*i]);
        let mut cursor = runs::Cursor::new(&self.inner.tree);
        let mut out: Vec<Option<Entry>> = vec![None; seqs.len()];
        for i in order {
            let seq = seqs[i];
            if (1..=head).contains(&seq) {
                out[i] = cursor.at(seq)?.map(|b| decode_at(seq, b)).transpose()?;
            }
        }
        let people: Vec<Uuid> = out
            .iter()
            .flatten()
            .map(|e| e.record.young_person)
            .collect();
        self.inner.vault.warm(&people)?;
        out.into_iter()
            .map(|e| e.map(|e| self.open_entry(e)).transpose())
            .collect()
    }

    /// Each of many people's durable entries before that person's own bound (`asked`:
    /// person and bound), opened, in log order, with the index of the person asked; so each
    /// person's in order. What [`Log::read_person_before`] gives one at a time, read in key
    /// order: streams and keys one read for the people a packed key holds, entries one read
    /// for the positions a run holds. People registered or changed together (an import's)
    /// share both. Entries are handed to `f` as read, so memory does not grow with the
    /// histories.
    pub fn each_before(
        &self,
        asked: &[(Uuid, u64)],
        mut f: impl FnMut(usize, Entry),
    ) -> Result<(), LogError> {
        let Some(last) = asked.iter().map(|(_, before)| *before).max() else {
            return Ok(());
        };
        let head = self.head();
        self.inner
            .indexed
            .wait_for(head.min(last.saturating_sub(1)))?;
        let people: Vec<Uuid> = asked.iter().map(|(yp, _)| *yp).collect();
        let mut wanted: Vec<(u64, usize)> = Vec::new();
        for (i, seqs) in streams::seqs_many(&self.inner.tree, &people)?
            .into_iter()
            .enumerate()
        {
            let before = asked[i].1;
            wanted.extend(
                seqs.into_iter()
                    .take_while(|seq| *seq <= head && *seq < before)
                    .map(|seq| (seq, i)),
            );
        }
        wanted.sort_unstable();
        self.inner.vault.warm(&people)?;
        let mut cursor = runs::Cursor::new(&self.inner.tree);
        for (seq, i) in wanted {
            if let Some(bytes) = cursor.at(seq)? {
                f(i, self.open_entry(decode_at(seq, bytes)?)?);
            }
        }
        Ok(())
    }

    /// One young person's durable entries, in order.
    pub fn read_person(&self, young_person: Uuid) -> Result<Vec<Entry>, LogError> {
        self.read_person_before(young_person, u64::MAX)
    }

    /// One young person's durable entries with `seq < before`, in order. Stops at the index:
    /// later entries are never read.
    pub fn read_person_before(
        &self,
        young_person: Uuid,
        before: u64,
    ) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        self.each_before(&[(young_person, before)], |_, e| out.push(e))?;
        Ok(out)
    }

    /// The newest of one young person's durable entries whose record (still sealed: `data`
    /// is not yet opened) satisfies `wanted`, opened. Reads the person's stream from its end
    /// and stops at the first match, so a question about their latest event of some kind
    /// reads and decrypts one entry instead of the whole stream (the destinations import
    /// asks it of every row).
    pub fn latest_of_person(
        &self,
        young_person: Uuid,
        wanted: impl Fn(&Record) -> bool,
    ) -> Result<Option<Entry>, LogError> {
        self.inner.indexed.wait_for(self.head())?;
        for seq in streams::seqs(&self.inner.tree, young_person)?
            .into_iter()
            .rev()
        {
            match self.sealed(seq)? {
                Some(entry) if wanted(&entry.record) => return self.open_entry(entry).map(Some),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Recomputes the whole chain and checks every signed checkpoint (against `trusted`, the
    /// exchange's public key, when given), and that every entry is where the indexes derived
    /// from it say (the id index gives its id its seq, version and person; its person's
    /// stream holds it at its version): idempotency and per-person reads rest on them. Names
    /// the first bad entry. Entries appended while it runs are checked for their chain only.
    pub fn verify(&self, trusted: Option<&[u8]>) -> Result<VerifyReport, VerifyError> {
        let head = self.head();
        self.inner.indexed.wait_for(head).map_err(|e| VerifyError {
            seq: head,
            reason: e.to_string(),
        })?;
        verify::verify(&self.inner.tree, trusted, |r| {
            if r.seq > head {
                return Ok(());
            }
            self.indexed_as_recorded(r)
        })
    }

    /// Whether the id index and the person's stream place `r` where it is.
    fn indexed_as_recorded(&self, r: &Record) -> Result<(), String> {
        let x = self.inner.ids.get(&r.id).map_err(|e| e.to_string())?;
        let x = x.ok_or("its id is not in the id index")?;
        if (x.seq, x.version, x.young_person) != (r.seq, r.version, r.young_person) {
            return Err(format!(
                "the id index gives its id to entry {} (version {})",
                x.seq, x.version
            ));
        }
        match streams::slot(&self.inner.tree, r.young_person, r.version)
            .map_err(|e| e.to_string())?
        {
            Some(seq) if seq == r.seq => Ok(()),
            Some(seq) => Err(format!(
                "its person's stream holds entry {seq} at its version {}",
                r.version
            )),
            None => Err(format!(
                "its person's stream does not reach its version {}",
                r.version
            )),
        }
    }

    /// Signs a checkpoint at the durable head, unless the head is already signed (or empty).
    /// Returns the new checkpoint.
    pub fn checkpoint(
        &self,
        key: &ring::signature::Ed25519KeyPair,
    ) -> Result<Option<Checkpoint>, LogError> {
        let head = self.head();
        if head == 0 || self.inner.tree.contains_key(checkpoint::key(head))? {
            return Ok(None);
        }
        let Some(entry) = self.get(head)? else {
            return Ok(None);
        };
        let signed_at = self
            .now()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| LogError::Storage(e.to_string()))?;
        let cp = checkpoint::sign(key, head, &entry.hash, signed_at);
        self.inner.tree.insert(
            checkpoint::key(head),
            serde_json::to_vec(&cp).expect("checkpoints serialise"),
        )?;
        self.inner.disk.flush()?;
        Ok(Some(cp))
    }

    /// Flushes sled's buffers durably (appends already do; this is for orderly shutdown).
    pub fn flush(&self) -> Result<(), LogError> {
        self.inner.disk.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error sled gives while another handle holds the lock is recognised as "busy", so
    /// `open_sled` waits instead of failing at once.
    #[test]
    fn a_held_lock_is_recognised_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let _held = config.open().unwrap();
        let err = match config.open() {
            Err(e) => e,
            Ok(_) => panic!("a second open of a locked directory succeeded"),
        };
        assert!(lock_busy(&err), "{err}");
        assert!(!lock_busy(&sled::Error::Unsupported("x".into())));
    }

    /// A reader that opens only some entries gets the others with their data still sealed,
    /// and the ones it chose exactly as `read_from` gives them.
    #[test]
    fn entries_not_chosen_keep_their_data_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let registration = serde_json::json!({"id": Uuid::from_u128(1),
            "type": "young-person.registered", "occurred_at": "2026-10-01T10:00:00Z",
            "data": pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered)});
        let first = NewEvent {
            submitted: pathway_core::envelope::validate(&registration).unwrap(),
            source: "demo-la".into(),
        };
        let yp = rt.block_on(log.append(vec![first])).unwrap()[0].young_person;
        let risk = serde_json::json!({"id": Uuid::from_u128(2), "type": "place.at-risk",
            "young_person": yp, "occurred_at": "2026-10-02T10:00:00Z",
            "data": {"date": "2026-10-02", "risk": "finance"}});
        let second = NewEvent {
            submitted: pathway_core::envelope::validate(&risk).unwrap(),
            source: "demo-la".into(),
        };
        rt.block_on(log.append(vec![second])).unwrap();

        let registrations_only = log
            .read_from_opening(0, 10, |r| {
                r.event_type == pathway_core::EventType::YoungPersonRegistered
            })
            .unwrap();
        let all = log.read_from(0, 10).unwrap();
        assert_eq!(registrations_only.len(), 2);
        assert_eq!(
            registrations_only[0].record.data.get(),
            all[0].record.data.get()
        );
        assert!(vault::Vault::sealed(&registrations_only[1].record.data).is_some());
        assert!(vault::Vault::sealed(&all[1].record.data).is_none());
        assert!(all[1].record.data.get().contains("finance"));
    }
}
