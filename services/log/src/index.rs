//! The per-event index behind the writer: each event's slot in its person's stream
//! ([`crate::streams`]) and its id in the id index ([`crate::ids`]).
//!
//! Indexing was most of the writer's time, on the one thread every append waits for. So
//! the writer stores a group's id records as a few keys at the log's right edge (`x`
//! chunks, durable with the group's entries before anyone is answered) and hands the group
//! to the indexer thread, which writes the stream slots on the other core, and every
//! [`crate::LogOptions::ids_per_run`] ids seals them into a run of the id index, which
//! then removes their chunks. The `log-merger` thread merges runs.
//!
//! Until a group's stream slots are written, its versions are known from memory: the
//! writer keeps them ([`Pending`]), and readers of a person's stream wait for the indexer
//! to pass the entries they need ([`Progress::wait_for`]). Ids are in the id index's memory
//! from the moment the group is durable. After a crash or a stop, opening the log writes
//! whatever stream slots the chunks left show missing and gives their ids back to the index
//! ([`recover`]); the chunks are what makes that possible, since an id record's body
//! digest cannot be recomputed from the stored entry.
//!
//! # Layout
//! - [`chunks`]: a group's id records cut into `x` values; [`records`] reads one back.
//! - [`Indexer`]: the thread, and [`Progress`], how far it has got; [`Merger`], the
//!   merging thread.
//! - [`Pending`]: the writer's memory of versions the indexer has not yet written.

use crate::error::LogError;
use crate::ids::Ids;
use crate::keys::{self, Indexed, INDEXED};
use crate::people::PersonMap;
use crate::streams;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Records in one `x` chunk: 80 bytes each, so a chunk stays near 5 KiB, as small as the
/// log's runs and for the same reason (sled never fsyncs pages it writes as blob files).
pub const CHUNK: usize = 64;

/// A group's records cut into chunks, each keyed by the seq of its first record (the
/// records of a group have consecutive seqs).
pub fn chunks(records: &[Indexed]) -> impl Iterator<Item = ([u8; 9], Vec<u8>)> + '_ {
    records.chunks(CHUNK).map(|chunk| {
        let mut v = Vec::with_capacity(chunk.len() * INDEXED);
        for (id, r) in chunk {
            v.extend_from_slice(&keys::encode_indexed(id, r));
        }
        (keys::pending(chunk[0].1.seq), v)
    })
}

/// The records of one `x` chunk; a chunk whose length is not a whole number of records is
/// corrupt, and names the seq of its key.
pub fn records(key: &[u8], value: &[u8]) -> Result<Vec<Indexed>, LogError> {
    if !value.len().is_multiple_of(INDEXED) {
        return Err(LogError::Corrupt {
            seq: keys::u64_of(&key[1..]),
            reason: "its pending index chunk is truncated".into(),
        });
    }
    Ok(value.chunks(INDEXED).map(keys::decode_indexed).collect())
}

/// What opening the log found in the `x` chunks.
pub struct Recovered {
    /// Id records of durable groups not yet in a run: back in the id index's memory, and
    /// the indexer's first run to seal.
    pub unsealed: Vec<Indexed>,
    /// Entries whose stream key was missing (the indexer had not reached them).
    pub restored: usize,
}

/// At open, after the head is made whole and the id index opened: removes chunks the id
/// index covers and chunks past `head` (a group cut short: never acknowledged); for the
/// rest, writes the stream keys missing and gives their ids back to the index.
pub fn recover(tree: &sled::Tree, head: u64, ids: &Ids) -> Result<Recovered, LogError> {
    let covered = ids.covered();
    let mut found = Recovered {
        unsealed: Vec::new(),
        restored: 0,
    };
    let mut removed = false;
    for kv in tree.scan_prefix(keys::PENDING_PREFIX) {
        let (k, v) = kv?;
        let first = keys::u64_of(&k[1..]);
        if first <= covered || first > head {
            tree.remove(k)?;
            removed = true;
            continue;
        }
        let records = records(&k, &v)?;
        found.restored += streams::apply(tree, &records)?;
        found.unsealed.extend(records);
    }
    ids.add(&found.unsealed);
    if removed || found.restored > 0 {
        tree.flush()?;
    }
    Ok(found)
}

/// How far the indexer has got: every group with seqs up to `done` has its keys in the tree.
pub struct Progress {
    state: Mutex<State>,
    moved: Condvar,
}

struct State {
    done: u64,
    failed: Option<String>,
}

/// Longer than any group takes to index; a reader that waits this long finds the indexer
/// stuck, and says so rather than hang.
const PATIENCE: Duration = Duration::from_secs(60);

impl Progress {
    pub fn new(done: u64) -> Progress {
        Progress {
            state: Mutex::new(State { done, failed: None }),
            moved: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn done(&self) -> u64 {
        self.lock().done
    }

    /// Why the indexer stopped, if it did.
    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    fn advance(&self, seq: u64) {
        self.lock().done = seq;
        self.moved.notify_all();
    }

    fn fail(&self, why: String) {
        self.lock().failed = Some(why);
        self.moved.notify_all();
    }

    /// Returns once every entry up to `seq` is indexed. Under load this is at most the time
    /// the indexer takes for one group; a reader that lags the head (the projector) rarely
    /// waits at all.
    pub fn wait_for(&self, seq: u64) -> Result<(), LogError> {
        let state = self.lock();
        let (state, timeout) = self
            .moved
            .wait_timeout_while(state, PATIENCE, |s| s.done < seq && s.failed.is_none())
            .unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &state.failed {
            return Err(LogError::Storage(format!(
                "the log's indexer stopped: {why}"
            )));
        }
        if timeout.timed_out() && state.done < seq {
            return Err(LogError::Storage(format!(
                "the log's index is still behind seq {seq} after {} s",
                PATIENCE.as_secs()
            )));
        }
        Ok(())
    }
}

/// One durable group for the indexer: its records, in seq order, never empty. Shared with
/// the writer's [`Pending`], which holds the same group until the indexer has written it.
pub struct Job(pub Arc<[Indexed]>);

/// Groups the writer may hand over before it waits for the indexer: enough to ride out a
/// slow group, few enough that the writer's [`Pending`] stays small.
pub const QUEUE: usize = 8;

/// The indexer thread's loop.
pub struct Indexer {
    pub tree: sled::Tree,
    pub progress: Arc<Progress>,
    pub ids: Arc<Ids>,
    /// Id records of groups indexed but not yet in a run, starting with those opening found.
    pub unsealed: Vec<Indexed>,
    /// Wakes the merger after each seal.
    pub merges: mpsc::Sender<()>,
}

/// Tells readers the indexer is gone if its thread unwinds, so that none waits out its
/// patience for a thread that will never move again.
struct Unwinding<'a>(&'a Progress);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the indexer panicked".into());
        }
    }
}

impl Indexer {
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let progress = self.progress.clone();
        let _unwinding = Unwinding(&progress);
        for Job(records) in jobs {
            let (first, last) = (records[0].1.seq, records[records.len() - 1].1.seq);
            if let Err(e) = self.index(&records, last) {
                // The chunks stay, so opening the log again indexes this group.
                tracing::error!(error = %e, first, last, "log indexer stopped");
                self.progress.fail(e.to_string());
                return;
            }
        }
    }

    fn index(&mut self, records: &[Indexed], last: u64) -> Result<(), LogError> {
        streams::apply(&self.tree, records)?;
        self.progress.advance(last);
        self.unsealed.extend_from_slice(records);
        if self.unsealed.len() >= self.ids.per_run() {
            self.ids.seal(std::mem::take(&mut self.unsealed), last)?;
            let _ = self.merges.send(());
        }
        Ok(())
    }
}

/// The merging thread's loop: after each seal, merges while any level has
/// [`crate::ids::FANOUT`] runs. `stop` abandons a merge midway, at shutdown; the run it was
/// writing is unnamed, so the next open removes it.
pub struct Merger {
    pub ids: Arc<Ids>,
    pub stop: Arc<AtomicBool>,
}

impl Merger {
    pub fn run(self, wake: mpsc::Receiver<()>) {
        while wake.recv().is_ok() {
            while !self.stop.load(Ordering::Relaxed) {
                match self.ids.merge_once(&self.stop) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        // Lookups stay right with more runs; only slower.
                        tracing::error!(error = %e, "the id index's merger stopped");
                        return;
                    }
                }
            }
        }
    }
}

/// What the writer has handed to the indexer and the indexer has not yet written: the
/// writer's lookups of versions look here before the tree. (Ids need no such memory: the
/// id index holds a group's ids from the moment it is durable.)
#[derive(Default)]
pub struct Pending {
    versions: PersonMap<u64>,
    groups: VecDeque<Arc<[Indexed]>>,
}

impl Pending {
    pub fn add(&mut self, records: Arc<[Indexed]>) {
        for (_, r) in records.iter() {
            self.versions.insert(r.young_person, r.version);
        }
        self.groups.push_back(records);
    }

    /// Forgets the groups the indexer has written (all of whose seqs are at most `done`):
    /// the tree answers for them now.
    pub fn forget_through(&mut self, done: u64) {
        while let Some(group) = self.groups.front() {
            if group.last().is_some_and(|(_, r)| r.seq > done) {
                break;
            }
            for (_, r) in self.groups.pop_front().iter().flat_map(|g| g.iter()) {
                if self.versions.get(&r.young_person) == Some(&r.version) {
                    self.versions.remove(&r.young_person);
                }
            }
        }
    }

    pub fn version(&self, young_person: &Uuid) -> Option<u64> {
        self.versions.get(young_person).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::indexed as record;

    /// A chunk reads back as the records written into it, and a group of more than one
    /// chunk is keyed by the seq of each chunk's first record.
    #[test]
    fn chunks_read_back_and_are_keyed_by_their_first_seq() {
        let group: Vec<_> = (10..10 + CHUNK as u64 + 3)
            .map(|s| record(s, s, 7))
            .collect();
        let cut: Vec<_> = chunks(&group).collect();
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0].0, keys::pending(10));
        assert_eq!(cut[1].0, keys::pending(10 + CHUNK as u64));
        let back: Vec<_> = cut
            .iter()
            .flat_map(|(k, v)| records(k, v).unwrap())
            .map(|(id, r)| (id, r.seq, r.version, r.young_person, r.digest))
            .collect();
        let want: Vec<_> = group
            .iter()
            .map(|(id, r)| (*id, r.seq, r.version, r.young_person, r.digest))
            .collect();
        assert_eq!(back, want);
        assert!(records(&cut[0].0, &cut[0].1[..INDEXED + 1]).is_err());
    }

    /// A reader waits until the indexer has passed what it needs, and no longer than until
    /// the indexer stops, which it hears as an error.
    #[test]
    fn readers_wait_for_the_indexer_to_pass_their_entries() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let progress = Arc::new(Progress::new(4));
        progress.wait_for(4).unwrap();
        let advanced = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (progress, advanced) = (progress.clone(), advanced.clone());
            std::thread::spawn(move || {
                progress.wait_for(9).unwrap();
                advanced.load(Ordering::SeqCst)
            })
        };
        progress.advance(8);
        advanced.store(true, Ordering::SeqCst);
        progress.advance(9);
        assert!(
            waiter.join().unwrap(),
            "returned before the indexer reached 9"
        );

        let stuck = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.wait_for(10))
        };
        progress.fail("disk full".into());
        let err = stuck.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("disk full"), "{err}");
    }

    /// An indexer thread that panics leaves word of it, so readers stop waiting at once.
    #[test]
    fn a_panicking_indexer_fails_its_progress() {
        let progress = Arc::new(Progress::new(0));
        let thread = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                let _unwinding = Unwinding(&progress);
                panic!("a bug in the indexer");
            })
        };
        assert!(thread.join().is_err());
        assert!(progress.wait_for(1).is_err());
        assert!(progress.failed().is_some());
    }

    /// Forgetting a group keeps a person's later pending version: only the version the
    /// group itself set is dropped.
    #[test]
    fn pending_forgets_only_what_the_indexer_wrote() {
        let mut p = Pending::default();
        let first = vec![record(1, 1, 7), record(2, 1, 8)];
        let second = vec![record(3, 2, 7)];
        p.add(first.clone().into());
        p.add(second.clone().into());
        p.forget_through(2);
        assert_eq!(p.version(&Uuid::from_u128(7)), Some(2));
        assert_eq!(p.version(&Uuid::from_u128(8)), None);
        p.forget_through(3);
        assert_eq!(p.version(&Uuid::from_u128(7)), None);
    }
}
