//! The event-id index (idempotency), kept as sorted runs written in arrival order.
//!
//! Event ids are the agencies' own, so they are random: one sled key per id inserts at a
//! random place in a large tree, and sled 0.34 copies a leaf for every insert and splits
//! one past 16 keys. Those inserts set the indexer's pace, and batched ingest runs at the
//! indexer's pace (BENCHMARKS.md, session 9: 1.35x without them). So ids are kept the way
//! a log-structured merge tree keeps keys, and sled only ever sees keys appended at the
//! right edge of a prefix:
//! - *fresh*: the ids of groups not yet in a run, in memory. The groups' `x` chunks are
//!   what makes them durable until a run holds them.
//! - *runs*: each an immutable sequence of id records sorted by id, in chunks of 64 (`j`
//!   keys), with a Bloom filter (`f` keys, kept in memory too) so that a new id, nearly
//!   always the case, costs a few cache lines per run and no read.
//! - the *manifest* (`m`): the live runs, and the seq up to which `x` chunks are in runs.
//!   One key, so it changes atomically.
//!
//! The indexer thread seals fresh ids into a run every [`crate::LogOptions::ids_per_run`]
//! ids; the `log-merger` thread merges [`FANOUT`] runs of one level into one of the next, so
//! a lookup checks a few filters, and each id is rewritten a few times, sequentially,
//! instead of inserted once at random.
//!
//! # Crash safety
//! sled recovers a prefix of what was written. A run's chunks and filter are written before
//! the manifest names it; what it replaces (merged runs, covered `x` chunks) is removed
//! after. Opening removes runs the manifest does not name; [`crate::index::recover`]
//! removes `x` chunks the manifest covers and returns the rest to fresh. A lookup that
//! finds nothing while a merge swapped runs under it looks again, since the merged runs'
//! chunks may have gone between its choice of runs and its reads.
//!
//! # Layout
//! - [`Ids`]: fresh ids, runs and the manifest; lookups, sealing and merging.
//! - `records`: a run read back in order (filters, merging and levels are `sorted`'s).

use crate::error::LogError;
use crate::keys::{self, IdRecord, Indexed, INDEXED};
use crate::sorted::{self, Filter, Manifest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

pub use crate::sorted::FANOUT;

/// Records in a chunk: 80 bytes each, so a chunk stays near 5 KiB, as small as the log's runs
/// and for the same reason (sled never fsyncs pages it writes as blob files).
const CHUNK: usize = 64;

const RUN: u8 = b'j';
const FILTER: u8 = b'f';
const MANIFEST: &[u8] = b"m";

fn chunk_key(run: u64, first: Uuid) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..9].copy_from_slice(&keys::at_seq(RUN, run));
    k[9..].copy_from_slice(first.as_bytes());
    k
}

fn damaged(run: u64, what: &str) -> LogError {
    LogError::Storage(format!(
        "run {run} of the event-id index is damaged: {what}"
    ))
}

/// One live run.
pub struct Run {
    no: u64,
    level: u32,
    count: u64,
    filter: Filter,
}

struct State {
    fresh: HashMap<Uuid, IdRecord>,
    /// In the order they were committed; an id is in at most one of them (or in two, both
    /// the same record, after a migration cut short), so the order does not matter.
    runs: Vec<Arc<Run>>,
    /// `x` chunks up to this seq are in runs.
    covered: u64,
    next_run: u64,
    /// Moves whenever runs are replaced; see the module's note on lookups.
    generation: u64,
}

impl State {
    /// A number for a new run, never one the manifest names.
    fn reserve(&mut self) -> u64 {
        self.next_run += 1;
        self.next_run - 1
    }

    fn manifest(&self) -> Vec<u8> {
        Manifest {
            covered: self.covered,
            next_run: self.next_run,
            runs: self.runs.iter().map(|r| (r.no, r.level, r.count)).collect(),
        }
        .encode()
    }
}

/// The event-id index: fresh ids, runs, manifest.
pub struct Ids {
    tree: sled::Tree,
    state: Mutex<State>,
    per_run: usize,
}

impl Ids {
    /// Opens the index in `tree`: reads the manifest and the live runs' filters, removes
    /// runs it does not name (a seal or merge a crash cut short), and moves any one-key-per-id
    /// records of a log written before runs into a run of their own.
    pub fn open(tree: sled::Tree, per_run: usize) -> Result<Ids, LogError> {
        let Manifest {
            covered,
            next_run,
            runs: named,
        } = Manifest::read(&tree, MANIFEST)
            .map_err(|e| LogError::Storage(format!("the event-id index: {e}")))?;
        let mut runs = Vec::with_capacity(named.len());
        for (no, level, count) in named {
            let filter =
                sorted::read_filter(&tree, FILTER, no).map_err(|e| damaged(no, &e.to_string()))?;
            runs.push(Arc::new(Run {
                no,
                level,
                count,
                filter,
            }));
        }
        let ids = Ids {
            tree,
            state: Mutex::new(State {
                fresh: HashMap::new(),
                runs,
                covered,
                next_run,
                generation: 0,
            }),
            per_run: per_run.max(1),
        };
        ids.remove_unnamed_runs()?;
        ids.migrate_id_keys()?;
        Ok(ids)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `x` chunks up to this seq are in runs.
    pub fn covered(&self) -> u64 {
        self.lock().covered
    }

    pub fn per_run(&self) -> usize {
        self.per_run
    }

    /// Remembers a durable group's ids until a run holds them.
    pub fn add(&self, records: &[Indexed]) {
        let mut s = self.lock();
        s.fresh.extend(records.iter().copied());
    }

    /// The record of `id`, if it was appended.
    pub fn get(&self, id: &Uuid) -> Result<Option<IdRecord>, LogError> {
        loop {
            let (generation, candidates) = {
                let s = self.lock();
                if let Some(r) = s.fresh.get(id) {
                    return Ok(Some(*r));
                }
                let candidates: Vec<Arc<Run>> = s
                    .runs
                    .iter()
                    .filter(|r| r.filter.may_contain(id.as_bytes()))
                    .cloned()
                    .collect();
                (s.generation, candidates)
            };
            for run in &candidates {
                if let Some(r) = self.find(run.no, id)? {
                    return Ok(Some(r));
                }
            }
            if self.lock().generation == generation {
                return Ok(None);
            }
        }
    }

    /// Looks `id` up in one run: the chunk that would hold it is the last one whose first
    /// id is not after it.
    fn find(&self, run: u64, id: &Uuid) -> Result<Option<IdRecord>, LogError> {
        let Some(kv) = self
            .tree
            .range(chunk_key(run, Uuid::nil())..=chunk_key(run, *id))
            .next_back()
        else {
            return Ok(None);
        };
        let (_, chunk) = kv?;
        if !chunk.len().is_multiple_of(INDEXED) {
            return Err(damaged(run, "a chunk is truncated"));
        }
        let n = chunk.len() / INDEXED;
        let at = |i: usize| &chunk[i * INDEXED..i * INDEXED + 16];
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match at(mid).cmp(id.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let (_, r) = keys::decode_indexed(&chunk[mid * INDEXED..(mid + 1) * INDEXED]);
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Writes a run: chunks, then the filter. Returns the filter and how many records it
    /// holds, or nothing if `stop` was raised first (the run is then unnamed: the next
    /// open removes it).
    fn write_run(
        &self,
        no: u64,
        capacity: u64,
        records: impl Iterator<Item = Result<Indexed, LogError>>,
        stop: Option<&AtomicBool>,
    ) -> Result<Option<(Filter, u64)>, LogError> {
        let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
        if stopped() {
            return Ok(None);
        }
        let mut filter = Filter::with_capacity(capacity);
        let mut chunk = Vec::with_capacity(CHUNK * INDEXED);
        let mut first = Uuid::nil();
        let mut count = 0u64;
        for record in records {
            let (id, r) = record?;
            filter.insert(id.as_bytes());
            if chunk.is_empty() {
                first = id;
            }
            keys::encode_indexed(&mut chunk, &id, &r);
            count += 1;
            if chunk.len() == CHUNK * INDEXED {
                self.tree.insert(chunk_key(no, first), chunk.as_slice())?;
                chunk.clear();
                if stopped() {
                    return Ok(None);
                }
            }
        }
        if !chunk.is_empty() {
            self.tree.insert(chunk_key(no, first), chunk)?;
        }
        sorted::write_filter(&self.tree, FILTER, no, &filter)?;
        Ok(Some((filter, count)))
    }

    /// Removes every key of a run (chunks and filter).
    fn remove_run(&self, no: u64) -> Result<(), LogError> {
        Ok(sorted::remove(&self.tree, &[RUN, FILTER], no)?)
    }

    /// Names the new state in the manifest. Called with the state locked, so that manifest
    /// writes follow one another in the order the state changed.
    fn commit(&self, s: &mut State) -> Result<(), LogError> {
        s.generation += 1;
        self.tree.insert(MANIFEST, s.manifest())?;
        Ok(())
    }

    /// Writes `records` (in id order) as a new run, at the level its size belongs at; the
    /// caller names it in the manifest.
    fn new_run(
        &self,
        capacity: u64,
        records: impl Iterator<Item = Result<Indexed, LogError>>,
    ) -> Result<Arc<Run>, LogError> {
        let no = self.lock().reserve();
        let (filter, count) = self
            .write_run(no, capacity, records, None)?
            .expect("only a merge is ever stopped");
        Ok(Arc::new(Run {
            no,
            level: sorted::level_of(self.per_run, count),
            count,
            filter,
        }))
    }

    /// Writes `records` (the ids of every group up to seq `through`, not yet in a run) as a
    /// run, names it, forgets them from fresh, and removes their `x` chunks.
    pub fn seal(&self, mut records: Vec<Indexed>, through: u64) -> Result<(), LogError> {
        records.sort_unstable_by_key(|(id, _)| *id);
        let run = self.new_run(records.len() as u64, records.iter().map(|r| Ok(*r)))?;
        {
            let mut s = self.lock();
            s.runs.push(run);
            s.covered = s.covered.max(through);
            for (id, _) in &records {
                s.fresh.remove(id);
            }
            self.commit(&mut s)?;
        }
        for k in self
            .tree
            .range(keys::pending(0)..=keys::pending(through))
            .keys()
        {
            self.tree.remove(k?)?;
        }
        Ok(())
    }

    /// Merges the oldest [`FANOUT`] runs of the lowest level that has that many, if one
    /// does. Returns whether it merged. Only one thread may merge (the merger); sealing
    /// may go on meanwhile, since it only adds runs.
    pub fn merge_once(&self, stop: &AtomicBool) -> Result<bool, LogError> {
        let (inputs, level, no) = {
            let mut s = self.lock();
            let mut by_level: HashMap<u32, usize> = HashMap::new();
            for r in &s.runs {
                *by_level.entry(r.level).or_default() += 1;
            }
            let Some(level) = by_level
                .iter()
                .filter(|(_, n)| **n >= FANOUT)
                .map(|(l, _)| *l)
                .min()
            else {
                return Ok(false);
            };
            let inputs: Vec<Arc<Run>> = s
                .runs
                .iter()
                .filter(|r| r.level == level)
                .take(FANOUT)
                .cloned()
                .collect();
            (inputs, level, s.reserve())
        };
        let capacity = inputs.iter().map(|r| r.count).sum();
        let merged = sorted::Merged::new(
            inputs.iter().map(|r| records(&self.tree, r.no)).collect(),
            |r: &Indexed| r.0,
        );
        let Some((filter, count)) = self.write_run(no, capacity, merged, Some(stop))? else {
            return Ok(false);
        };
        {
            let mut s = self.lock();
            s.runs.retain(|r| !inputs.iter().any(|i| i.no == r.no));
            s.runs.push(Arc::new(Run {
                no,
                level: level + 1,
                count,
                filter,
            }));
            self.commit(&mut s)?;
        }
        for r in &inputs {
            self.remove_run(r.no)?;
        }
        Ok(true)
    }

    /// Removes the keys of runs the manifest does not name.
    fn remove_unnamed_runs(&self) -> Result<(), LogError> {
        let named: Vec<u64> = self.lock().runs.iter().map(|r| r.no).collect();
        for tag in [RUN, FILTER] {
            for no in sorted::unnamed(&self.tree, tag, &named)? {
                tracing::warn!(run = no, "removing an unfinished run of the id index");
                self.remove_run(no)?;
            }
        }
        Ok(())
    }

    /// A log written before runs holds one `i` key per id, in id order: they become one run
    /// (at the level its size belongs at), named before the keys are removed. A crash in
    /// between leaves some keys to move again at the next open, into a second run holding
    /// the same records, which is harmless: a lookup finds the same record in either, and a
    /// merge keeps one.
    fn migrate_id_keys(&self) -> Result<(), LogError> {
        let count = self.tree.scan_prefix(keys::ID_PREFIX).keys().count() as u64;
        if count == 0 {
            return Ok(());
        }
        let records =
            self.tree
                .scan_prefix(keys::ID_PREFIX)
                .map(|kv| -> Result<Indexed, LogError> {
                    let (k, v) = kv?;
                    let id = Uuid::from_slice(&k[1..17])
                        .map_err(|_| LogError::Storage("an id key is malformed".into()))?;
                    Ok((id, IdRecord::decode(&v)))
                });
        let run = self.new_run(count, records)?;
        let (no, count) = (run.no, run.count);
        {
            let mut s = self.lock();
            s.runs.push(run);
            self.commit(&mut s)?;
        }
        for k in self.tree.scan_prefix(keys::ID_PREFIX).keys() {
            self.tree.remove(k?)?;
        }
        tracing::info!(
            ids = count,
            run = no,
            "moved the id keys of an older log into a run"
        );
        Ok(())
    }

    /// The live runs' levels and sizes, oldest first.
    #[cfg(test)]
    pub fn runs(&self) -> Vec<(u32, u64)> {
        self.lock()
            .runs
            .iter()
            .map(|r| (r.level, r.count))
            .collect()
    }
}

/// A run as the manifest names it: number, level, ids.
/// A run's records, in id order.
fn records(tree: &sled::Tree, no: u64) -> impl Iterator<Item = Result<Indexed, LogError>> {
    sorted::Records::<INDEXED>::new(tree, RUN, no).map(move |r| {
        r.map(|b| keys::decode_indexed(&b))
            .map_err(|e| damaged(no, &e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Indexed {
        (
            Uuid::from_u128(sorted::mix(n) as u128 | ((n as u128) << 64)),
            IdRecord {
                seq: n,
                version: 1,
                young_person: Uuid::from_u128(7),
                digest: [n as u8; 32],
            },
        )
    }

    fn store() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("log").unwrap();
        (dir, tree)
    }

    /// The runs that have keys under `prefix` (chunks or filters).
    fn stored_runs(tree: &sled::Tree, prefix: u8) -> std::collections::BTreeSet<u64> {
        tree.scan_prefix([prefix])
            .keys()
            .map(|k| keys::u64_of(&k.unwrap()[1..]))
            .collect()
    }

    fn seq_of(ids: &Ids, n: u64) -> Option<u64> {
        ids.get(&record(n).0).unwrap().map(|r| r.seq)
    }

    /// Every id added is found, whether fresh, sealed in a run or merged; ids never added
    /// are not; and after merging, a lookup checks fewer runs.
    #[test]
    fn ids_are_found_fresh_sealed_and_merged() {
        let (_dir, tree) = store();
        let ids = Ids::open(tree.clone(), 100).unwrap();
        let never = AtomicBool::new(false);
        for batch in 0..9u64 {
            let records: Vec<_> = (batch * 100 + 1..=batch * 100 + 100).map(record).collect();
            ids.add(&records);
            assert_eq!(seq_of(&ids, batch * 100 + 50), Some(batch * 100 + 50));
            ids.seal(records, batch * 100 + 100).unwrap();
        }
        assert_eq!(ids.runs().len(), 9);
        assert!(ids.merge_once(&never).unwrap());
        assert!(ids.merge_once(&never).unwrap());
        assert!(!ids.merge_once(&never).unwrap(), "no level has four runs");
        assert_eq!(ids.runs(), vec![(0, 100), (1, 400), (1, 400)]);
        for n in 1..=900 {
            assert_eq!(seq_of(&ids, n), Some(n), "id {n}");
        }
        let absent = (901..5000).filter(|n| seq_of(&ids, *n).is_some()).count();
        assert_eq!(absent, 0);
        assert!(ids.lock().fresh.is_empty());
        // The merged runs' keys are gone; only three runs' chunks and filters remain.
        assert_eq!(stored_runs(&tree, RUN).len(), 3);
        assert_eq!(stored_runs(&tree, FILTER).len(), 3);
    }

    /// The filter answers "maybe" for every id it holds and rarely for others.
    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let mut f = Filter::with_capacity(10_000);
        for n in 0..10_000 {
            f.insert(record(n).0.as_bytes());
        }
        assert!((0..10_000).all(|n| f.may_contain(record(n).0.as_bytes())));
        let false_positives = (10_000..110_000)
            .filter(|n| f.may_contain(record(*n).0.as_bytes()))
            .count();
        assert!(false_positives < 2_000, "{false_positives} in 100,000");
        // Sequential ids, as an agency may send them, spread as well as random ones.
        let mut g = Filter::with_capacity(10_000);
        (0..10_000u128).for_each(|n| g.insert(Uuid::from_u128(n).as_bytes()));
        let sequential = (10_000..110_000u128)
            .filter(|n| g.may_contain(Uuid::from_u128(*n).as_bytes()))
            .count();
        assert!(sequential < 2_000, "{sequential} in 100,000");
    }

    /// Runs, their levels and the covered seq survive a reopen; a run a crash left unnamed
    /// (its chunks written, the manifest not) is removed, and a merge stopped midway leaves
    /// the runs it was merging in place.
    #[test]
    fn a_reopened_index_keeps_named_runs_and_drops_unfinished_ones() {
        let (_dir, tree) = store();
        {
            let ids = Ids::open(tree.clone(), 10).unwrap();
            for batch in 0..4u64 {
                let records: Vec<_> = (batch * 10 + 1..=batch * 10 + 10).map(record).collect();
                ids.add(&records);
                ids.seal(records, batch * 10 + 10).unwrap();
            }
            let stop = AtomicBool::new(true);
            assert!(!ids.merge_once(&stop).unwrap(), "stopped after one chunk");
            // An unfinished seal: chunks and filter of a run the manifest never names.
            let orphan = ids.lock().reserve();
            ids.write_run(orphan, 1, std::iter::once(Ok(record(99))), None)
                .unwrap();
        }
        let ids = Ids::open(tree.clone(), 10).unwrap();
        assert_eq!(ids.covered(), 40);
        assert_eq!(ids.runs(), vec![(0, 10); 4]);
        assert_eq!(seq_of(&ids, 99), None);
        assert!((1..=40).all(|n| seq_of(&ids, n) == Some(n)));
        assert_eq!(stored_runs(&tree, RUN).len(), 4);
        assert_eq!(stored_runs(&tree, FILTER).len(), 4);
    }

    /// A log from before runs, with one `i` key per id, opens with those ids in a run and
    /// the keys gone.
    #[test]
    fn one_key_per_id_moves_into_a_run() {
        let (_dir, tree) = store();
        for n in 1..=150 {
            let (id, r) = record(n);
            tree.insert(keys::id(id), &r.encode()[..]).unwrap();
        }
        let ids = Ids::open(tree.clone(), 100).unwrap();
        assert_eq!(ids.runs(), vec![(0, 150)]);
        assert!((1..=150).all(|n| seq_of(&ids, n) == Some(n)));
        assert!(tree.scan_prefix(keys::ID_PREFIX).next().is_none());
        drop(ids);
        let ids = Ids::open(tree, 100).unwrap();
        assert_eq!(ids.runs(), vec![(0, 150)]);
        assert_eq!(seq_of(&ids, 150), Some(150));
    }

    /// Two runs holding the same id (a migration cut short) merge into one record.
    #[test]
    fn merging_keeps_one_record_of_an_id_held_twice() {
        let (_dir, tree) = store();
        let ids = Ids::open(tree, 5).unwrap();
        for _ in 0..4 {
            let records: Vec<_> = (1..=5).map(record).collect();
            ids.seal(records, 5).unwrap();
        }
        assert!(ids.merge_once(&AtomicBool::new(false)).unwrap());
        assert_eq!(ids.runs(), vec![(1, 5)]);
        assert!((1..=5).all(|n| seq_of(&ids, n) == Some(n)));
    }
}
