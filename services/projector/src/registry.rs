//! The identity registry: the people registered under each identifier or name digest,
//! kept as sorted runs instead of one sled key per digest.
//!
//! Registry keys are digests, so a file of new people inserted them at random places in a
//! tree far larger than sled's cache, and sled 0.34 copies a leaf for every insert and
//! splits one past 16 keys: a third of a new row's time and about 240 MB of a million-row
//! import's peak (BENCHMARKS.md, session 14). So the registry is kept the way the log keeps
//! event ids (`pathway_log`'s id index), and sled only sees keys appended at the right edge
//! of a prefix:
//! - the *journal* (`J` step part): each step's changes, written with the step's other keys
//!   before its checkpoint, so that a step cut short is cleared at open like its feed runs;
//! - *fresh*: the journal's changes since the last seal, applied, in memory;
//! - *runs* (`R` run chunk): entries (registry key ‖ person) in order, in chunks of at most
//!   [`store::RUN_BYTES`]. Each run has a Bloom filter (`F`) and the first key of each chunk
//!   (`I`, its fences), both held in memory, so a lookup reads only the chunks that may hold
//!   its key, each with one exact `get`;
//! - the *manifest* (`M`): the live runs, and the step up to which the journal is in runs.
//!   One key, so it changes atomically.
//!
//! Fresh entries are sealed into a run every `per_run` entries, and [`FANOUT`] runs of one
//! level are merged into one of the next, by the projector's thread after a step: each
//! entry is rewritten a few times, in order, instead of inserted once at random.
//!
//! # Erasure
//! An erased person's entries are taken out of the runs in place: each chunk holding one is
//! rewritten without it (its fence, now perhaps below its first entry, is still a lower
//! bound). They leave fresh, and the journal chunks that named them are sealed away right
//! after the step, so once the step is done no key of the registry names them.
//!
//! # Crash safety
//! sled recovers a prefix of what was written. A step's journal chunks and rewritten chunks
//! come before its checkpoint: a step cut short is cleared and projected again, and
//! rewriting a chunk without someone twice is harmless. A run's chunks, filter and fences
//! are written before the manifest names it; what it replaces (merged runs, the journal it
//! holds) is removed after. Opening removes runs the manifest does not name, and reads the
//! journal past the manifest's step into a run of its own. A lookup that finds a chunk gone
//! (a merge removed its run meanwhile) looks again.
//!
//! Only one thread at a time changes the registry: the projector's, holding its state lock.
//! Lookups run on any thread.

use crate::dispatcher::KeyValue;
use crate::store::{self, ProjectionError};
use pathway_log::sorted::{self, number, numbered, prefix, Filter, Manifest, RunError, FANOUT};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// A registry key: its tag (`x` identifier, `n` name) and digest (`store::identifier_key`).
pub const KEY: usize = 17;
/// An entry: a key and a person.
const ENTRY: usize = KEY + 16;
/// A journal change: `+` or `-`, then an entry.
const CHANGE: usize = 1 + ENTRY;
/// Entries a chunk holds: a chunk stays under [`store::RUN_BYTES`], as the projector's other
/// runs do, and for the same reason (sled never fsyncs a page it writes as a blob file).
const CHUNK: usize = store::RUN_BYTES / ENTRY;
/// Fences a key holds.
const FENCE_PART: usize = store::RUN_BYTES / KEY;

/// Fresh entries sealed into a run: a few MB in memory, and about 500 chunks.
pub const PER_RUN: usize = 1 << 16;

const JOURNAL: u8 = b'J';
const RUN: u8 = b'R';
const FILTER: u8 = b'F';
const FENCES: u8 = b'I';
const MANIFEST: &[u8] = b"M";

type Entry = [u8; ENTRY];
type Key = [u8; KEY];

/// One change a step makes to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    add: bool,
    entry: Entry,
}

impl Change {
    /// `key` lists `yp`. Errs for a key that is not a registry key (a damaged stored list).
    pub fn add(key: &[u8], yp: Uuid) -> Result<Change, ProjectionError> {
        Ok(Change {
            add: true,
            entry: entry(key, yp)?,
        })
    }

    /// `key` no longer lists `yp`.
    pub fn remove(key: &[u8], yp: Uuid) -> Result<Change, ProjectionError> {
        Ok(Change {
            add: false,
            entry: entry(key, yp)?,
        })
    }
}

fn entry(key: &[u8], yp: Uuid) -> Result<Entry, ProjectionError> {
    if key.len() != KEY {
        return Err(ProjectionError::Corrupt(format!(
            "a registry key of {} bytes, not {KEY}",
            key.len()
        )));
    }
    let mut e = [0u8; ENTRY];
    e[..KEY].copy_from_slice(key);
    e[KEY..].copy_from_slice(yp.as_bytes());
    Ok(e)
}

fn key_of(e: &[u8]) -> &[u8] {
    &e[..KEY]
}

fn person_of(e: &[u8]) -> Uuid {
    Uuid::from_slice(&e[KEY..ENTRY]).expect("16 bytes")
}

/// What a filter is asked: the digest, already uniform (the tag is left out, so an
/// identifier and a name with equal digests would share bits, which costs a read at most).
fn probe(key: &[u8]) -> &[u8; 16] {
    key[1..KEY].try_into().expect("16 bytes")
}

fn damaged(run: u64, what: &str) -> ProjectionError {
    ProjectionError::Corrupt(format!("run {run} of the identity registry: {what}"))
}

/// The entries of a chunk with `key`, as people.
fn people_in<'a>(chunk: &'a [u8], key: &'a [u8]) -> impl Iterator<Item = Uuid> + 'a {
    let n = chunk.len() / ENTRY;
    let at = |i: usize| &chunk[i * ENTRY..(i + 1) * ENTRY];
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key_of(at(mid)) < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo..n)
        .map(at)
        .take_while(move |e| key_of(e) == key)
        .map(person_of)
}

/// One live run.
struct Run {
    no: u64,
    level: u32,
    count: u64,
    filter: Filter,
    /// The first key of each chunk.
    fences: Vec<Key>,
}

impl Run {
    /// The chunks that may hold entries with `key`: the last one starting below it (its
    /// tail may), and every one starting with it.
    fn chunks_for(&self, key: &[u8]) -> std::ops::Range<u32> {
        let lo = self.fences.partition_point(|f| f.as_slice() < key);
        let with = self.fences[lo..]
            .iter()
            .take_while(|f| f.as_slice() == key)
            .count();
        lo.saturating_sub(1) as u32..(lo + with) as u32
    }
}

struct State {
    fresh: BTreeSet<Entry>,
    /// Oldest first. Runs hold only additions, so their order does not change an answer.
    runs: Vec<Arc<Run>>,
    /// Journal chunks of steps up to this seq are in runs.
    covered: u64,
    next_run: u64,
    /// Moves whenever runs are replaced; see the module's note on lookups.
    generation: u64,
}

impl State {
    fn manifest(&self) -> Vec<u8> {
        Manifest {
            covered: self.covered,
            next_run: self.next_run,
            runs: self.runs.iter().map(|r| (r.no, r.level, r.count)).collect(),
        }
        .encode()
    }
}

/// The registry's runs, fresh entries and manifest in the projections tree.
pub struct Registry {
    tree: sled::Tree,
    state: Mutex<State>,
    per_run: usize,
}

impl Registry {
    /// Opens the registry in `tree`, whose projections are whole up to `checkpoint`: removes
    /// runs the manifest does not name and journal chunks past the checkpoint (a step cut
    /// short), and seals the journal the manifest does not cover into a run.
    pub fn open(
        tree: sled::Tree,
        checkpoint: u64,
        per_run: usize,
    ) -> Result<Registry, ProjectionError> {
        let Manifest {
            covered,
            next_run,
            runs: named,
        } = Manifest::read(&tree, MANIFEST).map_err(|e| match e {
            RunError::Storage(e) => ProjectionError::from(e),
            damage => ProjectionError::Corrupt(format!("the identity registry: {damage}")),
        })?;
        let runs = named
            .into_iter()
            .map(|(no, level, count)| load_run(&tree, no, level, count).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let registry = Registry {
            tree,
            state: Mutex::new(State {
                fresh: BTreeSet::new(),
                runs,
                covered,
                next_run,
                generation: 0,
            }),
            per_run: per_run.max(1),
        };
        registry.remove_unnamed_runs()?;
        let mut replayed = false;
        let mut doomed = Vec::new();
        {
            let mut s = registry.lock();
            for kv in registry.tree.scan_prefix([JOURNAL]) {
                let (k, v) = kv?;
                let step = number(&k);
                if step <= covered || step > checkpoint {
                    doomed.push(k);
                    continue;
                }
                if !v.len().is_multiple_of(CHANGE) {
                    return Err(ProjectionError::Corrupt(
                        "a journal chunk of the identity registry is truncated".into(),
                    ));
                }
                for c in v.chunks_exact(CHANGE) {
                    let entry: Entry = c[1..].try_into().expect("an entry");
                    match c[0] {
                        b'+' => s.fresh.insert(entry),
                        b'-' => s.fresh.remove(&entry),
                        _ => {
                            return Err(ProjectionError::Corrupt(
                                "a journal chunk of the identity registry is damaged".into(),
                            ))
                        }
                    };
                }
                replayed = true;
            }
        }
        for k in doomed {
            registry.tree.remove(k)?;
        }
        if replayed {
            registry.seal(checkpoint)?;
        }
        Ok(registry)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The journal keys recording `changes`, made by the step starting at `step`.
    pub fn journal(&self, step: u64, changes: &[Change]) -> Vec<KeyValue> {
        changes
            .chunks(store::RUN_BYTES / CHANGE)
            .enumerate()
            .map(|(part, changes)| {
                let mut v = Vec::with_capacity(changes.len() * CHANGE);
                for c in changes {
                    v.push(if c.add { b'+' } else { b'-' });
                    v.extend_from_slice(&c.entry);
                }
                (numbered(JOURNAL, step, part as u32).to_vec(), v)
            })
            .collect()
    }

    /// The chunks of the runs that hold `removed` entries, rewritten without them.
    pub fn rewritten_without(&self, removed: &[Change]) -> Result<Vec<KeyValue>, ProjectionError> {
        let runs = self.lock().runs.clone();
        let mut edited: BTreeMap<[u8; 13], Vec<u8>> = BTreeMap::new();
        for c in removed {
            let key = key_of(&c.entry);
            for run in runs.iter().filter(|r| r.filter.may_contain(probe(key))) {
                for chunk in run.chunks_for(key) {
                    let k = numbered(RUN, run.no, chunk);
                    let value = match edited.get_mut(&k) {
                        Some(v) => v,
                        None => {
                            let stored = self
                                .tree
                                .get(k)?
                                .ok_or_else(|| damaged(run.no, "a chunk is missing"))?;
                            edited.entry(k).or_insert(stored.to_vec())
                        }
                    };
                    if let Some(at) = value
                        .chunks_exact(ENTRY)
                        .position(|e| e == c.entry.as_slice())
                    {
                        value.drain(at * ENTRY..(at + 1) * ENTRY);
                    }
                }
            }
        }
        Ok(edited.into_iter().map(|(k, v)| (k.to_vec(), v)).collect())
    }

    /// Takes a step's changes into fresh, once its keys are written.
    pub fn applied(&self, changes: &[Change]) {
        let mut s = self.lock();
        for c in changes {
            match c.add {
                true => s.fresh.insert(c.entry),
                false => s.fresh.remove(&c.entry),
            };
        }
    }

    /// Whether fresh holds enough for a run.
    pub fn due(&self) -> bool {
        self.lock().fresh.len() >= self.per_run
    }

    /// Writes fresh as a run, names it with the journal up to `through` (the checkpoint)
    /// covered, removes that journal, then merges what is due.
    pub fn seal(&self, through: u64) -> Result<(), ProjectionError> {
        let entries: Vec<Entry> = self.lock().fresh.iter().copied().collect();
        let run = match entries.is_empty() {
            true => None,
            false => {
                let no = self.reserve();
                Some(self.write_run(no, entries.len() as u64, entries.into_iter().map(Ok))?)
            }
        };
        {
            let mut s = self.lock();
            if let Some(mut run) = run {
                run.level = sorted::level_of(self.per_run, run.count);
                s.runs.push(Arc::new(run));
            }
            s.fresh.clear();
            s.covered = s.covered.max(through);
            self.commit(&mut s)?;
        }
        let journal = self
            .tree
            .range(numbered(JOURNAL, 0, 0)..=numbered(JOURNAL, through, u32::MAX));
        for k in journal.keys() {
            self.tree.remove(k?)?;
        }
        while self.merge_once()? {}
        Ok(())
    }

    fn reserve(&self) -> u64 {
        let mut s = self.lock();
        s.next_run += 1;
        s.next_run - 1
    }

    /// Names the new state in the manifest, with the state locked so that manifest writes
    /// follow one another in the order the state changed.
    fn commit(&self, s: &mut State) -> Result<(), ProjectionError> {
        s.generation += 1;
        self.tree.insert(MANIFEST, s.manifest())?;
        Ok(())
    }

    /// Writes `entries` (in order) as run `no`: chunks, then filter and fences.
    fn write_run(
        &self,
        no: u64,
        capacity: u64,
        entries: impl Iterator<Item = Result<Entry, ProjectionError>>,
    ) -> Result<Run, ProjectionError> {
        let mut filter = Filter::with_capacity(capacity);
        let mut fences = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK * ENTRY);
        let mut count = 0u64;
        for e in entries {
            let e = e?;
            filter.insert(probe(key_of(&e)));
            if chunk.is_empty() {
                fences.push(key_of(&e).try_into().expect("a key"));
            }
            chunk.extend_from_slice(&e);
            count += 1;
            if chunk.len() == CHUNK * ENTRY {
                let k = numbered(RUN, no, fences.len() as u32 - 1);
                self.tree.insert(k, std::mem::take(&mut chunk))?;
            }
        }
        if !chunk.is_empty() {
            self.tree
                .insert(numbered(RUN, no, fences.len() as u32 - 1), chunk)?;
        }
        sorted::write_filter(&self.tree, FILTER, no, &filter)?;
        for (part, keys) in fences.chunks(FENCE_PART).enumerate() {
            self.tree
                .insert(numbered(FENCES, no, part as u32), keys.concat())?;
        }
        Ok(Run {
            no,
            level: 0,
            count,
            filter,
            fences,
        })
    }

    /// Merges the oldest [`FANOUT`] runs of the lowest level that has that many, if one
    /// does. Returns whether it merged.
    fn merge_once(&self) -> Result<bool, ProjectionError> {
        let inputs: Vec<Arc<Run>> = {
            let s = self.lock();
            let mut levels: BTreeMap<u32, Vec<Arc<Run>>> = BTreeMap::new();
            for r in &s.runs {
                levels.entry(r.level).or_default().push(r.clone());
            }
            match levels.into_values().find(|runs| runs.len() >= FANOUT) {
                Some(mut runs) => {
                    runs.truncate(FANOUT);
                    runs
                }
                None => return Ok(false),
            }
        };
        let no = self.reserve();
        let capacity = inputs.iter().map(|r| r.count).sum();
        let merged = sorted::Merged::new(
            inputs.iter().map(|r| entries(&self.tree, r.no)).collect(),
            |e: &Entry| *e,
        );
        let mut run = self.write_run(no, capacity, merged)?;
        run.level = inputs[0].level + 1;
        {
            let mut s = self.lock();
            s.runs.retain(|r| !inputs.iter().any(|i| i.no == r.no));
            s.runs.push(Arc::new(run));
            self.commit(&mut s)?;
        }
        for r in &inputs {
            self.remove_run(r.no)?;
        }
        Ok(true)
    }

    fn remove_run(&self, no: u64) -> Result<(), ProjectionError> {
        Ok(sorted::remove(&self.tree, &[RUN, FILTER, FENCES], no)?)
    }

    /// Removes the keys of runs the manifest does not name (a seal or merge cut short).
    fn remove_unnamed_runs(&self) -> Result<(), ProjectionError> {
        let named: Vec<u64> = self.lock().runs.iter().map(|r| r.no).collect();
        for tag in [RUN, FILTER, FENCES] {
            for no in sorted::unnamed(&self.tree, tag, &named)? {
                tracing::warn!(
                    run = no,
                    "removing an unfinished run of the identity registry"
                );
                self.remove_run(no)?;
            }
        }
        Ok(())
    }

    /// Whether `key` may list anyone: false only for a key nothing was ever added under.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let s = self.lock();
        key.len() != KEY
            || s.fresh.range(bounds(key)).next().is_some()
            || s.runs.iter().any(|r| r.filter.may_contain(probe(key)))
    }

    /// The people under each key, in the order asked. A key no run's filter admits is
    /// answered from memory; the chunks that may hold the rest are read in key order (see
    /// [`crate::views::get_many`]).
    pub fn people(&self, keys: &[Vec<u8>]) -> Result<Vec<BTreeSet<Uuid>>, ProjectionError> {
        loop {
            let mut out = vec![BTreeSet::new(); keys.len()];
            let mut wanted: BTreeMap<[u8; 13], Vec<usize>> = BTreeMap::new();
            let generation = {
                let s = self.lock();
                for (i, key) in keys.iter().enumerate() {
                    if key.len() != KEY {
                        continue;
                    }
                    out[i].extend(s.fresh.range(bounds(key)).map(|e| person_of(e)));
                    for run in s.runs.iter().filter(|r| r.filter.may_contain(probe(key))) {
                        for chunk in run.chunks_for(key) {
                            wanted
                                .entry(numbered(RUN, run.no, chunk))
                                .or_default()
                                .push(i);
                        }
                    }
                }
                s.generation
            };
            let chunk_keys: Vec<Vec<u8>> = wanted.keys().map(|k| k.to_vec()).collect();
            let chunks = crate::views::get_many(&self.tree, &chunk_keys)?;
            let mut gone = false;
            for ((k, readers), chunk) in wanted.iter().zip(chunks) {
                let Some(chunk) = chunk else {
                    gone = true;
                    break;
                };
                if !chunk.len().is_multiple_of(ENTRY) {
                    return Err(damaged(number(k), "a chunk is truncated"));
                }
                for i in readers {
                    out[*i].extend(people_in(&chunk, &keys[*i]));
                }
            }
            if !gone {
                return Ok(out);
            }
            if self.lock().generation == generation {
                return Err(ProjectionError::Corrupt(
                    "a chunk of the identity registry is missing".into(),
                ));
            }
        }
    }

    /// Everything the registry holds, key by key: what a rebuild is compared on, since run
    /// boundaries follow when seals happened.
    pub fn content(&self) -> Result<BTreeMap<Vec<u8>, BTreeSet<Uuid>>, ProjectionError> {
        let (fresh, runs) = {
            let s = self.lock();
            (s.fresh.clone(), s.runs.clone())
        };
        let mut out: BTreeMap<Vec<u8>, BTreeSet<Uuid>> = BTreeMap::new();
        let stored = runs.iter().flat_map(|r| entries(&self.tree, r.no));
        for e in fresh.into_iter().map(Ok).chain(stored) {
            let e = e?;
            out.entry(key_of(&e).to_vec())
                .or_default()
                .insert(person_of(&e));
        }
        Ok(out)
    }

    /// Live runs, for tests and measurements.
    pub fn runs(&self) -> usize {
        self.lock().runs.len()
    }
}

/// The fresh entries under `key`.
fn bounds(key: &[u8]) -> std::ops::RangeInclusive<Entry> {
    let (mut lo, mut hi) = ([0u8; ENTRY], [0xffu8; ENTRY]);
    lo[..KEY].copy_from_slice(key);
    hi[..KEY].copy_from_slice(key);
    lo..=hi
}

fn load_run(tree: &sled::Tree, no: u64, level: u32, count: u64) -> Result<Run, ProjectionError> {
    let filter = sorted::read_filter(tree, FILTER, no).map_err(|e| damaged(no, &e.to_string()))?;
    let mut fences = Vec::new();
    for v in tree.scan_prefix(prefix(FENCES, no)).values() {
        let v = v?;
        if !v.len().is_multiple_of(KEY) {
            return Err(damaged(no, "its fences are truncated"));
        }
        fences.extend(
            v.chunks_exact(KEY)
                .map(|f| Key::try_from(f).expect("a key")),
        );
    }
    Ok(Run {
        no,
        level,
        count,
        filter,
        fences,
    })
}

/// A run's entries, in order.
fn entries(tree: &sled::Tree, no: u64) -> impl Iterator<Item = Result<Entry, ProjectionError>> {
    sorted::Records::<ENTRY>::new(tree, RUN, no)
        .map(move |e| e.map_err(|e| damaged(no, &e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pathway_core::identity::Scheme;

    fn key(i: u32) -> Vec<u8> {
        store::identifier_key(Scheme::Uln, "", &format!("{}", 1_000_000_000 + i))
    }

    fn person(i: u32) -> Uuid {
        Uuid::from_u128(0x1000 + i as u128)
    }

    fn tree() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        (dir, db, tree)
    }

    /// One step: its journal written, then its changes applied; the checkpoint is the
    /// caller's `step`.
    fn step(r: &Registry, tree: &sled::Tree, at: u64, changes: &[Change]) {
        for (k, v) in r.journal(at, changes) {
            tree.insert(k, v).unwrap();
        }
        r.applied(changes);
        if r.due() {
            r.seal(at).unwrap();
        }
    }

    fn adds(range: std::ops::Range<u32>) -> Vec<Change> {
        range
            .map(|i| Change::add(&key(i), person(i)).unwrap())
            .collect()
    }

    #[test]
    fn lookups_find_people_in_fresh_entries_runs_and_merged_runs_alike() {
        let (_dir, _db, tree) = tree();
        let r = Registry::open(tree.clone(), 0, 100).unwrap();
        for s in 0..30u32 {
            step(&r, &tree, s as u64 + 1, &adds(s * 50..s * 50 + 50));
        }
        // A key listing two people, one added long after the other.
        step(
            &r,
            &tree,
            31,
            &[Change::add(&key(7), person(9999)).unwrap()],
        );
        // 15 runs sealed, merged four at a time.
        assert!(
            r.runs() <= 2 * (FANOUT - 1),
            "runs were merged: {}",
            r.runs()
        );

        let keys: Vec<Vec<u8>> = (0..1500).map(key).chain([key(5000)]).collect();
        let found = r.people(&keys).unwrap();
        for i in 0..1500 {
            let mut want = BTreeSet::from([person(i)]);
            if i == 7 {
                want.insert(person(9999));
            }
            assert_eq!(found[i as usize], want, "key {i}");
        }
        assert!(found[1500].is_empty(), "a key never added lists no one");
        assert!(r.may_contain(&key(3)) && r.may_contain(&key(1499)));
    }

    /// Merges remove the runs they replace while lookups may be reading them: a lookup that
    /// finds a chunk gone looks again, and never answers "no one" for a key that was there.
    #[test]
    fn lookups_racing_seals_and_merges_find_every_person_that_was_there() {
        let (_dir, _db, tree) = tree();
        let r = Registry::open(tree.clone(), 0, 16).unwrap();
        step(&r, &tree, 1, &adds(0..100));
        let keys: Vec<Vec<u8>> = (0..100).map(key).collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let lookups = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut lookups = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let found = r.people(&keys).unwrap();
                    for (i, people) in found.iter().enumerate() {
                        assert!(people.contains(&person(i as u32)), "key {i} lost");
                    }
                    lookups += 1;
                }
                lookups
            });
            for s in 2..300u32 {
                step(&r, &tree, s as u64, &adds(s * 100..s * 100 + 20));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert!(lookups > 0);
        assert!(
            r.runs() < 300 / FANOUT,
            "merged as it went: {} runs",
            r.runs()
        );
    }

    #[test]
    fn a_reopened_registry_holds_what_it_held_and_drops_a_step_cut_short() {
        let (_dir, _db, tree) = tree();
        let r = Registry::open(tree.clone(), 0, 64).unwrap();
        for s in 0..5u32 {
            step(&r, &tree, s as u64 + 1, &adds(s * 40..s * 40 + 40));
        }
        let held = r.content().unwrap();
        // A step past the checkpoint (5) wrote its journal, then the process stopped.
        for (k, v) in r.journal(6, &adds(900..910)) {
            tree.insert(k, v).unwrap();
        }
        drop(r);

        let r = Registry::open(tree.clone(), 5, 64).unwrap();
        assert_eq!(r.content().unwrap(), held);
        assert!(r.people(&[key(905)]).unwrap()[0].is_empty());
        assert_eq!(
            tree.scan_prefix([JOURNAL]).count(),
            0,
            "the journal was sealed"
        );
    }

    #[test]
    fn a_run_the_manifest_does_not_name_is_removed_at_open() {
        let (_dir, _db, tree) = tree();
        let r = Registry::open(tree.clone(), 0, 1000).unwrap();
        step(&r, &tree, 1, &adds(0..10));
        r.seal(1).unwrap();
        // A merge or seal cut short after its chunks, before the manifest named its run.
        let no = r.reserve();
        let orphan: Vec<Entry> = adds(10..20).iter().map(|c| c.entry).collect();
        r.write_run(no, 10, orphan.into_iter().map(Ok)).unwrap();
        drop(r);

        let r = Registry::open(tree.clone(), 1, 1000).unwrap();
        assert_eq!(r.runs(), 1);
        for tag in [RUN, FILTER, FENCES] {
            assert_eq!(tree.scan_prefix(prefix(tag, no)).count(), 0);
        }
        assert_eq!(r.people(&[key(3)]).unwrap()[0], BTreeSet::from([person(3)]));
        assert!(r.people(&[key(13)]).unwrap()[0].is_empty());
    }

    #[test]
    fn an_erased_person_leaves_every_run_and_fresh() {
        let (_dir, _db, tree) = tree();
        let r = Registry::open(tree.clone(), 0, 50).unwrap();
        step(&r, &tree, 1, &adds(0..200));
        let shared = Change::add(&key(10), person(77)).unwrap();
        step(
            &r,
            &tree,
            2,
            &[shared, Change::add(&key(300), person(10)).unwrap()],
        );

        let removed = [
            Change::remove(&key(10), person(10)).unwrap(),
            Change::remove(&key(300), person(10)).unwrap(),
        ];
        for (k, v) in r.rewritten_without(&removed).unwrap() {
            tree.insert(k, v).unwrap();
        }
        step(&r, &tree, 3, &removed);
        r.seal(3).unwrap();

        let found = r.people(&[key(10), key(300), key(11)]).unwrap();
        assert_eq!(found[0], BTreeSet::from([person(77)]));
        assert!(found[1].is_empty());
        assert_eq!(found[2], BTreeSet::from([person(11)]));
        let everywhere = r.content().unwrap();
        assert!(everywhere
            .values()
            .all(|people| !people.contains(&person(10))));
        assert_eq!(tree.scan_prefix([JOURNAL]).count(), 0);
    }
}
