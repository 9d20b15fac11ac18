//! The event-id index (idempotency), kept as sorted runs written in arrival order.
//!
//! Event ids are the agencies' own, so they are random: one sled key per id inserts at a
//! random place in a large tree, and sled 0.34 copies a leaf for every insert and splits
//! one past 16 keys. Those inserts set the indexer's pace, and batched ingest runs at the
//! indexer's pace (BENCHMARKS.md, session 9: 1.35x without them). So ids are kept the way
//! a log-structured merge tree keeps keys:
//! - *fresh*: the ids of groups not yet in a run, in memory. The groups' `x` chunks are
//!   what makes them durable until a run holds them.
//! - *runs*: each an immutable sequence of id records sorted by id, in a file of its own
//!   ([`crate::run_file`], under `ids/` in the log's directory) in chunks of 64, read with
//!   `pread`, with a Bloom filter and each chunk's first id in memory so that a new id,
//!   nearly always the case, costs a few cache lines per run and no read. In sled they were
//!   chunks read back as leaves that stayed in the process (BENCHMARKS.md, session 17).
//! - the *manifest* (`m`): the live runs, and the seq up to which `x` chunks are in runs.
//!   One key, so it changes atomically.
//!
//! The indexer thread seals fresh ids into a run every [`crate::LogOptions::ids_per_run`]
//! ids; the `log-merger` thread merges [`FANOUT`] runs of one level into one of the next, so
//! a lookup checks a few filters, and each id is rewritten a few times, sequentially,
//! instead of inserted once at random.
//!
//! # Crash safety
//! sled recovers a prefix of what was written. A run's file is whole and synced before the
//! manifest names it; covered `x` chunks are removed after the manifest, and merged runs'
//! files only once sled durably holds a manifest that no longer names them ([`Disk`]).
//! Opening removes files the manifest does not name; [`crate::index::recover`] removes `x`
//! chunks the manifest covers and returns the rest to fresh. A lookup holds the runs it
//! reads open, so a merge deleting one meanwhile changes nothing for it.
//!
//! A log whose runs are still sled keys (`j` chunks, `f` filters: layout 2) has each named
//! run written to its file at open, then its keys removed; a crash in between leaves keys
//! that the next open removes, the file being there.
//!
//! # Layout
//! - [`Ids`]: fresh ids, runs and the manifest; lookups, sealing and merging.
//! - `records`: a run read back in order (filters, merging and levels are `sorted`'s).

use crate::disk::Disk;
use crate::error::LogError;
use crate::keys::{self, IdRecord, Indexed, INDEXED};
use crate::people::PersonMap;
use crate::run_file::{self, Run, Shape};
use crate::sorted::{self, Manifest, RunError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

pub use crate::sorted::FANOUT;

/// Records in a chunk: 80 bytes each, so a lookup reads 5 KiB.
const CHUNK: usize = 64;

const SHAPE: Shape = Shape {
    record: INDEXED,
    key: 16,
    per_chunk: CHUNK,
    magic: *b"PXIDSRN1",
    probe: |r| r[..16].try_into().expect("16 bytes"),
};

/// Where a layout-2 log kept its runs in sled: moved into files at open.
const SLED_RUN: u8 = b'j';
const SLED_FILTER: u8 = b'f';
const MANIFEST: &[u8] = b"m";

/// Where the runs' files are, in the log's directory.
pub const DIR: &str = "ids";

fn damaged(run: u64, what: &str) -> LogError {
    LogError::Storage(format!(
        "run {run} of the event-id index is damaged: {what}"
    ))
}

impl From<RunError> for LogError {
    fn from(e: RunError) -> Self {
        LogError::Storage(format!("the event-id index: {e}"))
    }
}

/// Looks `id` up in `run`: in the chunk whose span holds it (two, when a chunk starts with
/// it).
fn find(run: &Run, id: &Uuid, buf: &mut Vec<u8>) -> Result<Option<IdRecord>, LogError> {
    for chunk in run.fences.chunks_for(id.as_bytes()) {
        run.file.read_chunk_into(chunk, buf)?;
        let n = buf.len() / INDEXED;
        let at = |i: usize| &buf[i * INDEXED..i * INDEXED + 16];
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match at(mid).cmp(id.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let (_, r) = keys::decode_indexed(&buf[mid * INDEXED..(mid + 1) * INDEXED]);
                    return Ok(Some(r));
                }
            }
        }
    }
    Ok(None)
}

struct State {
    fresh: PersonMap<IdRecord>,
    /// In the order they were committed; an id is in at most one of them (or in two, both
    /// the same record, after a migration cut short), so the order does not matter.
    runs: Vec<Arc<Run>>,
    /// `x` chunks up to this seq are in runs.
    covered: u64,
    next_run: u64,
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
            runs: self
                .runs
                .iter()
                .map(|r| (r.no, r.level, r.count()))
                .collect(),
        }
        .encode()
    }
}

/// The event-id index: fresh ids, runs, manifest.
pub struct Ids {
    tree: sled::Tree,
    dir: PathBuf,
    /// Makes a manifest durable before the files it no longer names are deleted.
    disk: Arc<Disk>,
    state: Mutex<State>,
    per_run: usize,
}

impl Ids {
    /// Opens the index in `tree` and the files in `dir`: reads the manifest and the live
    /// runs' filters and fences, moves runs still in sled into files, removes files it does
    /// not name (a seal or merge a crash cut short), and moves any one-key-per-id records of
    /// a log written before runs into a run of their own.
    pub fn open(
        tree: sled::Tree,
        dir: &Path,
        disk: Arc<Disk>,
        per_run: usize,
    ) -> Result<Ids, LogError> {
        let Manifest {
            covered,
            next_run,
            runs: named,
        } = Manifest::read(&tree, MANIFEST)
            .map_err(|e| LogError::Storage(format!("the event-id index: {e}")))?;
        let on_disk = run_file::stored(dir)?;
        for no in &on_disk {
            if !named.iter().any(|(n, _, _)| n == no) {
                tracing::warn!(run = no, "removing an unfinished run of the id index");
                run_file::remove(dir, *no)?;
            }
        }
        let mut runs = Vec::with_capacity(named.len());
        for (no, level, count) in named {
            if !on_disk.contains(&no) {
                move_to_file(&tree, dir, no, count)?;
            }
            let opened =
                run_file::open(dir, no, SHAPE, count).map_err(|e| damaged(no, &e.to_string()))?;
            runs.push(Arc::new(opened.at(level)));
        }
        // Every named run is in its file: what sled still holds of runs is moved or orphaned.
        for tag in [SLED_RUN, SLED_FILTER] {
            for no in sorted::unnamed(&tree, tag, &[])? {
                sorted::remove(&tree, &[tag], no)?;
            }
        }
        let ids = Ids {
            tree,
            dir: dir.to_owned(),
            disk,
            state: Mutex::new(State {
                // Room for a run's worth and the group that overshoots it.
                fresh: PersonMap::with_capacity_and_hasher(
                    per_run + per_run / 8,
                    Default::default(),
                ),
                runs,
                covered,
                next_run,
            }),
            per_run: per_run.max(1),
        };
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
        let candidates: Vec<Arc<Run>> = {
            let s = self.lock();
            if let Some(r) = s.fresh.get(id) {
                return Ok(Some(*r));
            }
            s.runs
                .iter()
                .filter(|r| r.filter.may_contain(id.as_bytes()))
                .cloned()
                .collect()
        };
        let mut buf = Vec::new();
        for run in &candidates {
            if let Some(r) = find(run, id, &mut buf)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Writes a run's file. `None` if `stop` was raised first (nothing is named: the next
    /// open removes what was written).
    fn write_run(
        &self,
        no: u64,
        capacity: u64,
        records: impl Iterator<Item = Result<Indexed, LogError>>,
        stop: Option<&AtomicBool>,
    ) -> Result<Option<Run>, LogError> {
        let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let bytes = records.map(|r| r.map(|(id, r)| keys::encode_indexed(&id, &r)));
        run_file::write(&self.dir, no, SHAPE, capacity, bytes, stopped)
    }

    /// Names the new state in the manifest. Called with the state locked, so that manifest
    /// writes follow one another in the order the state changed.
    fn commit(&self, s: &mut State) -> Result<(), LogError> {
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
        let opened = self
            .write_run(no, capacity, records, None)?
            .expect("only a merge is ever stopped");
        let level = sorted::level_of(self.per_run, opened.count());
        Ok(Arc::new(opened.at(level)))
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
        let capacity = inputs.iter().map(|r| r.count()).sum();
        let merged = sorted::Merged::new(
            inputs.iter().map(|r| records(r.clone())).collect(),
            |r: &Indexed| r.0,
        );
        let Some(opened) = self.write_run(no, capacity, merged, Some(stop))? else {
            return Ok(false);
        };
        {
            let mut s = self.lock();
            s.runs.retain(|r| !inputs.iter().any(|i| i.no == r.no));
            s.runs.push(Arc::new(opened.at(level + 1)));
            self.commit(&mut s)?;
        }
        // Durably named no more before their files go: a manifest naming a deleted file
        // would be an index that cannot open.
        self.disk.flush()?;
        for r in &inputs {
            run_file::remove(&self.dir, r.no)?;
        }
        Ok(true)
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
        let (no, count) = (run.no, run.count());
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
            .map(|r| (r.level, r.count()))
            .collect()
    }
}

/// Writes run `no`, which a layout-2 log keeps as sled keys, to its file.
fn move_to_file(tree: &sled::Tree, dir: &Path, no: u64, count: u64) -> Result<(), LogError> {
    let stored = sorted::Records::<INDEXED>::new(tree, SLED_RUN, no)
        .map(|r| r.map_err(|e| damaged(no, &e.to_string())));
    let opened = run_file::write(dir, no, SHAPE, count, stored, || false)?.expect("never stopped");
    if opened.count() != count {
        return Err(damaged(no, "it holds fewer ids than its manifest says"));
    }
    tracing::info!(
        run = no,
        ids = count,
        "moved a run of the id index into its file"
    );
    Ok(())
}

/// A run's records, in id order.
fn records(run: Arc<Run>) -> impl Iterator<Item = Result<Indexed, LogError>> {
    let mut buf = Vec::new();
    (0..run.file.chunks()).flat_map(move |chunk| {
        let read = run
            .file
            .read_chunk_into(chunk, &mut buf)
            .map_err(LogError::from);
        let out: Vec<Result<Indexed, LogError>> = match read {
            Ok(()) => buf
                .chunks_exact(INDEXED)
                .map(|b| Ok(keys::decode_indexed(b)))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        out
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

    /// A log's sled tree and directory, where the index keeps its files.
    struct Store {
        dir: tempfile::TempDir,
        db: sled::Db,
        tree: sled::Tree,
    }

    impl Store {
        fn new() -> Store {
            let dir = tempfile::tempdir().unwrap();
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree("log").unwrap();
            Store { dir, db, tree }
        }

        fn open(&self, per_run: usize) -> Ids {
            let disk = Arc::new(Disk::open(self.db.clone(), self.dir.path()).unwrap());
            Ids::open(self.tree.clone(), &self.files_dir(), disk, per_run).unwrap()
        }

        fn files_dir(&self) -> PathBuf {
            self.dir.path().join(DIR)
        }

        /// The runs that have files.
        fn stored_runs(&self) -> std::collections::BTreeSet<u64> {
            run_file::stored(&self.files_dir())
                .unwrap()
                .into_iter()
                .collect()
        }
    }

    fn seq_of(ids: &Ids, n: u64) -> Option<u64> {
        ids.get(&record(n).0).unwrap().map(|r| r.seq)
    }

    /// Every id added is found, whether fresh, sealed in a run or merged; ids never added
    /// are not; and after merging, a lookup checks fewer runs.
    #[test]
    fn ids_are_found_fresh_sealed_and_merged() {
        let store = Store::new();
        let ids = store.open(100);
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
        // The merged runs' files are gone; only three runs' remain.
        assert_eq!(store.stored_runs().len(), 3);
    }

    /// The filter answers "maybe" for every id it holds and rarely for others.
    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let mut f = sorted::Filter::with_capacity(10_000);
        for n in 0..10_000 {
            f.insert(record(n).0.as_bytes());
        }
        assert!((0..10_000).all(|n| f.may_contain(record(n).0.as_bytes())));
        let false_positives = (10_000..110_000)
            .filter(|n| f.may_contain(record(*n).0.as_bytes()))
            .count();
        assert!(false_positives < 2_000, "{false_positives} in 100,000");
        // Sequential ids, as an agency may send them, spread as well as random ones.
        let mut g = sorted::Filter::with_capacity(10_000);
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
        let store = Store::new();
        {
            let ids = store.open(10);
            for batch in 0..4u64 {
                let records: Vec<_> = (batch * 10 + 1..=batch * 10 + 10).map(record).collect();
                ids.add(&records);
                ids.seal(records, batch * 10 + 10).unwrap();
            }
            let stop = AtomicBool::new(true);
            assert!(!ids.merge_once(&stop).unwrap(), "stopped after one chunk");
            // An unfinished seal: the file of a run the manifest never names.
            let orphan = ids.lock().reserve();
            ids.write_run(orphan, 1, std::iter::once(Ok(record(99))), None)
                .unwrap();
        }
        let ids = store.open(10);
        assert_eq!(ids.covered(), 40);
        assert_eq!(ids.runs(), vec![(0, 10); 4]);
        assert_eq!(seq_of(&ids, 99), None);
        assert!((1..=40).all(|n| seq_of(&ids, n) == Some(n)));
        assert_eq!(store.stored_runs().len(), 4);
    }

    /// A log from before runs, with one `i` key per id, opens with those ids in a run and
    /// the keys gone.
    #[test]
    fn one_key_per_id_moves_into_a_run() {
        let store = Store::new();
        for n in 1..=150 {
            let (id, r) = record(n);
            store.tree.insert(keys::id(id), &r.encode()[..]).unwrap();
        }
        let ids = store.open(100);
        assert_eq!(ids.runs(), vec![(0, 150)]);
        assert!((1..=150).all(|n| seq_of(&ids, n) == Some(n)));
        assert!(store.tree.scan_prefix(keys::ID_PREFIX).next().is_none());
        drop(ids);
        let ids = store.open(100);
        assert_eq!(ids.runs(), vec![(0, 150)]);
        assert_eq!(seq_of(&ids, 150), Some(150));
    }

    /// Two runs holding the same id (a migration cut short) merge into one record.
    #[test]
    fn merging_keeps_one_record_of_an_id_held_twice() {
        let store = Store::new();
        let ids = store.open(5);
        for _ in 0..4 {
            let records: Vec<_> = (1..=5).map(record).collect();
            ids.seal(records, 5).unwrap();
        }
        assert!(ids.merge_once(&AtomicBool::new(false)).unwrap());
        assert_eq!(ids.runs(), vec![(1, 5)]);
        assert!((1..=5).all(|n| seq_of(&ids, n) == Some(n)));
    }

    /// A layout-2 log keeps its runs as sled keys (`j` chunks of 64 records under their
    /// first id, `f` filter parts): opening writes each named run to its file and removes
    /// the keys, and every id is found as before.
    #[test]
    fn runs_kept_in_sled_move_into_files() {
        let store = Store::new();
        let records: Vec<_> = (1..=150).map(record).collect();
        let mut sorted_records = records.clone();
        sorted_records.sort_unstable_by_key(|(id, _)| *id);
        let mut filter = sorted::Filter::with_capacity(150);
        for (part, chunk) in sorted_records.chunks(CHUNK).enumerate() {
            let mut key = keys::at_seq(SLED_RUN, 0).to_vec();
            key.extend_from_slice(chunk[0].0.as_bytes());
            let mut value = Vec::new();
            for (id, r) in chunk {
                value.extend_from_slice(&keys::encode_indexed(id, r));
                filter.insert(id.as_bytes());
            }
            assert!(part < 3);
            store.tree.insert(key, value).unwrap();
        }
        for (part, bytes) in filter.to_bytes().chunks(4096).enumerate() {
            let key = sorted::numbered(SLED_FILTER, 0, part as u32);
            store.tree.insert(key, bytes).unwrap();
        }
        let manifest = Manifest {
            covered: 150,
            next_run: 1,
            runs: vec![(0, 1, 150)],
        };
        store.tree.insert(MANIFEST, manifest.encode()).unwrap();

        let ids = store.open(100);
        assert_eq!(ids.runs(), vec![(1, 150)]);
        assert!((1..=150).all(|n| seq_of(&ids, n) == Some(n)));
        assert_eq!(seq_of(&ids, 151), None);
        assert_eq!(store.stored_runs(), [0].into());
        for tag in [SLED_RUN, SLED_FILTER] {
            assert!(store.tree.scan_prefix([tag]).next().is_none(), "{tag}");
        }
        drop(ids);
        let ids = store.open(100);
        assert!((1..=150).all(|n| seq_of(&ids, n) == Some(n)));
    }
}
