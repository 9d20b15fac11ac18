//! The identity registry: the people registered under each identifier or name digest,
//! kept as sorted runs instead of one sled key per digest.
//!
//! Registry keys are digests, so a file of new people inserted them at random places in a
//! tree far larger than sled's cache, and sled 0.34 copies a leaf for every insert and
//! splits one past 16 keys: a third of a new row's time and about 240 MB of a million-row
//! import's peak (BENCHMARKS.md, session 14). So the registry is kept the way the log keeps
//! event ids (`pathway_log`'s id index):
//! - the *journal* (`J` step part, in sled): each step's changes, written with the step's
//!   other keys before its checkpoint, so that a step cut short is cleared at open like its
//!   feed runs;
//! - *fresh*: the journal's changes since the last seal, applied, in memory, with a Bloom
//!   filter of their keys;
//! - *runs*: entries (registry key ‖ person) in order, each in a file of its own
//!   ([`pathway_log::run_file`]) in chunks of at most [`store::RUN_BYTES`], read with `pread`
//!   rather than through sled,
//!   whose leaves read back for lookups were the largest part of a repeated import's peak
//!   (BENCHMARKS.md, session 17). Each run has a Bloom filter and the first key of each
//!   chunk (its fences), both held in memory, so a lookup reads only the chunks that may
//!   hold its key;
//! - the *manifest* (`M`, in sled): the live runs, and the step up to which the journal is
//!   in runs. One key, so it changes atomically.
//!
//! Fresh entries are sealed into a run every `per_run` entries, and [`FANOUT`] runs of one
//! level are merged into one of the next, by the projector's thread after a step: each
//! entry is rewritten a few times, in order, instead of inserted once at random.
//!
//! # Erasure
//! An erased person's entries are found by reading every run ([`Registry::erasing`]) and
//! taken out: each chunk holding one is rewritten without it (its fence, now perhaps below
//! its first entry, is still a lower bound), first as an `E` key in sled, written with the
//! step, then over the chunk in the run's file once sled holds it durably. They leave
//! fresh, and the journal chunks that named them are sealed away right after the step, so
//! once the step is done no key or file of the registry names them.
//!
//! # Crash safety
//! sled recovers a prefix of what was written. A step's journal chunks and `E` keys come
//! before its checkpoint: a step cut short is cleared and projected again, and rewriting a
//! chunk without someone twice is harmless. A run's file is synced before the manifest
//! names it, and deleted (merged away) only once sled durably holds a manifest that no
//! longer does; opening removes files the manifest does not name, writes again every `E`
//! key its chunk in the file lacks (a torn write), and reads the journal past the
//! manifest's step into a run of its own.
//! A lookup holds the runs it reads open, so a merge deleting one meanwhile changes nothing
//! for it.
//!
//! Only one thread at a time changes the registry: the projector's, holding its state lock.
//! Lookups run on any thread.

use crate::dispatcher::KeyValue;
use crate::store::{self, ProjectionError};
use pathway_log::run_file::{self, Run, Shape};
use pathway_log::sorted::{self, number, numbered, Manifest, FANOUT};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// A registry key: its tag (`x` identifier, `n` name) and digest (`store::identifier_key`).
pub const KEY: usize = 17;
/// An entry: a key and a person.
const ENTRY: usize = KEY + 16;
/// A journal change: `+` or `-`, then an entry.
const CHANGE: usize = 1 + ENTRY;
/// Entries a chunk holds: what one lookup reads, a page of the operating system's cache.
const CHUNK: usize = store::RUN_BYTES / ENTRY;

/// A run's file.
const SHAPE: Shape = Shape {
    record: ENTRY,
    key: KEY,
    per_chunk: CHUNK,
    magic: *b"PXREGRN1",
    probe: |e| probe(key_of(e)),
};

/// What fills an erased entry's place in a run's file: above every key (tags are `x` and
/// `n`), so a chunk stays in order, and skipped by every reader.
const PAD: u8 = 0xff;

fn is_pad(e: &[u8]) -> bool {
    e[0] == PAD
}

/// Fresh entries sealed into a run: a few MB in memory, and about 500 chunks.
pub const PER_RUN: usize = 1 << 16;

const JOURNAL: u8 = b'J';
const EDIT: u8 = b'E';
const MANIFEST: &[u8] = b"M";

/// Whether `key` is one of the registry's own keys in the projections tree (journal,
/// edits, manifest), which say how it is kept rather than what it holds.
pub fn keeps(key: &[u8]) -> bool {
    key == MANIFEST || matches!(key.first(), Some(&JOURNAL | &EDIT)) && key.len() == 13
}

/// Where the runs' files are, under the projections' directory.
pub const DIR: &str = "registry";

type Entry = [u8; ENTRY];

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
    #[cfg(test)]
    pub fn remove(key: &[u8], yp: Uuid) -> Result<Change, ProjectionError> {
        Ok(Change {
            add: false,
            entry: entry(key, yp)?,
        })
    }
}

/// A chunk of a run rewritten without erased entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    run: u64,
    chunk: u32,
    bytes: Vec<u8>,
}

impl Edit {
    /// The sled write that keeps it until the run is merged away.
    pub fn key_value(&self) -> KeyValue {
        (
            numbered(EDIT, self.run, self.chunk).to_vec(),
            self.bytes.clone(),
        )
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

/// The entries of a chunk with `key`, as people (an erased place is never `key`).
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

/// Chunk `chunk` of `run` as it is now: its edit if erasure rewrote it, else as stored.
fn chunk_of(run: &Run, chunk: u32, edit: Option<&Arc<Vec<u8>>>) -> Result<Chunk, ProjectionError> {
    let bytes = match edit {
        Some(e) => Chunk::Edited(e.clone()),
        None => Chunk::Stored(run.file.read_chunk(chunk)?),
    };
    if !bytes.as_ref().len().is_multiple_of(ENTRY) {
        return Err(damaged(run.no, "a chunk is truncated"));
    }
    Ok(bytes)
}

/// A chunk read for a lookup or a merge.
enum Chunk {
    Stored(Vec<u8>),
    Edited(Arc<Vec<u8>>),
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        match self {
            Chunk::Stored(v) => v,
            Chunk::Edited(v) => v,
        }
    }
}

/// Chunks rewritten by erasure, by (run, chunk).
type Edits = BTreeMap<(u64, u32), Arc<Vec<u8>>>;

/// The fresh entries, and a filter of their keys. Most lookups ask about keys fresh does not
/// hold (people registered before the last seal), and the filter answers those without a
/// search of the set: the search was half of a typical quarter's registry lookups
/// (BENCHMARKS.md, session 23). Removals leave their keys' bits set, which only costs a
/// search; a seal starts the filter afresh.
struct Fresh {
    entries: BTreeSet<Entry>,
    keys: sorted::Filter,
}

impl Fresh {
    fn new(per_run: usize) -> Fresh {
        Fresh {
            entries: BTreeSet::new(),
            keys: sorted::Filter::with_capacity(per_run as u64),
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.keys.insert(probe(key_of(&entry)));
        self.entries.insert(entry);
    }

    fn remove(&mut self, entry: &Entry) {
        self.entries.remove(entry);
    }

    /// The entries under `key`.
    fn under(&self, key: &[u8]) -> impl Iterator<Item = &Entry> {
        self.keys
            .may_contain(probe(key))
            .then(|| self.entries.range(bounds(key)))
            .into_iter()
            .flatten()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
    }
}

struct State {
    fresh: Fresh,
    /// Oldest first. Runs hold only additions, so their order does not change an answer.
    runs: Vec<Arc<Run>>,
    edits: Edits,
    /// Edits not yet written over their chunks' files.
    unwritten: BTreeSet<(u64, u32)>,
    /// Journal chunks of steps up to this seq are in runs.
    covered: u64,
    next_run: u64,
}

impl State {
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

    fn edits_of(&self, run: u64) -> BTreeMap<u32, Arc<Vec<u8>>> {
        self.edits
            .range((run, 0)..=(run, u32::MAX))
            .map(|((_, chunk), e)| (*chunk, e.clone()))
            .collect()
    }
}

/// The registry's runs (files), fresh entries, edits and manifest.
pub struct Registry {
    tree: sled::Tree,
    /// Makes the manifest durable before a file it no longer names is deleted, and an edit
    /// before it is written over its chunk.
    disk: pathway_log::Disk,
    dir: PathBuf,
    state: Mutex<State>,
    per_run: usize,
}

impl Registry {
    /// Opens the registry in `tree` and `dir`, whose projections are whole up to
    /// `checkpoint`: removes run files the manifest does not name and journal chunks past
    /// the checkpoint (a step cut short), writes again each edit its chunk lacks, and seals
    /// the journal the manifest does not cover into a run.
    pub fn open(
        tree: sled::Tree,
        disk: pathway_log::Disk,
        dir: &Path,
        checkpoint: u64,
        per_run: usize,
    ) -> Result<Registry, ProjectionError> {
        let Manifest {
            covered,
            next_run,
            runs: named,
        } = Manifest::read(&tree, MANIFEST)?;
        for no in run_file::stored(dir)? {
            if !named.iter().any(|(n, _, _)| *n == no) {
                tracing::warn!(
                    run = no,
                    "removing an unfinished run of the identity registry"
                );
                run_file::remove(dir, no)?;
            }
        }
        let runs = named
            .into_iter()
            .map(|(no, level, count)| {
                let opened = run_file::open(dir, no, SHAPE, count)
                    .map_err(|e| damaged(no, &e.to_string()))?;
                Ok(Arc::new(opened.at(level)))
            })
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        let mut edits = Edits::new();
        let mut doomed = Vec::new();
        for kv in tree.scan_prefix([EDIT]) {
            let (k, v) = kv?;
            if k.len() != 13 {
                return Err(ProjectionError::Corrupt(
                    "an edited chunk of the identity registry is misnamed".into(),
                ));
            }
            let (no, chunk) = (
                number(&k),
                u32::from_be_bytes(k[9..].try_into().expect("4")),
            );
            match runs.iter().any(|r| r.no == no) {
                true => {
                    edits.insert((no, chunk), Arc::new(v.to_vec()));
                }
                false => doomed.push(k),
            }
        }
        let unwritten = edits.keys().copied().collect();
        let registry = Registry {
            tree,
            disk,
            dir: dir.to_owned(),
            state: Mutex::new(State {
                fresh: Fresh::new(per_run.max(1)),
                runs,
                edits,
                unwritten,
                covered,
                next_run,
            }),
            per_run: per_run.max(1),
        };
        // What sled holds after a restart is on its disk: the edits may go to the files.
        registry.write_edits()?;
        let mut replayed = false;
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

    /// What erasing `people` takes out of the registry: their fresh entries, as changes for
    /// the step's journal, and each chunk of a run holding any of their entries, rewritten
    /// without them (the step writes each [`Edit::key_value`], then hands both to
    /// [`Registry::applied`]).
    ///
    /// Found by reading every run rather than from a list of each person's keys: erasure is
    /// rare, the runs' files read in milliseconds a million entries, and a list kept for
    /// each person cost every new person a sled insert (BENCHMARKS.md, session 17). Reading
    /// them all also finds entries whatever crash or replay wrote them.
    pub fn erasing(
        &self,
        people: &HashSet<Uuid>,
    ) -> Result<(Vec<Change>, Vec<Edit>), ProjectionError> {
        let (removed, runs) = {
            let s = self.lock();
            let removed: Vec<Change> = s
                .fresh
                .entries
                .iter()
                .filter(|e| people.contains(&person_of(*e)))
                .map(|entry| Change {
                    add: false,
                    entry: *entry,
                })
                .collect();
            let runs: Vec<_> = s
                .runs
                .iter()
                .map(|r| (r.clone(), s.edits_of(r.no)))
                .collect();
            (removed, runs)
        };
        let erased = |e: &[u8]| people.contains(&person_of(e));
        let mut edits = Vec::new();
        for (run, run_edits) in runs {
            for chunk in 0..run.file.chunks() {
                let now = chunk_of(&run, chunk, run_edits.get(&chunk))?;
                let entries = || now.as_ref().chunks_exact(ENTRY).filter(|e| !is_pad(e));
                if entries().any(erased) {
                    let bytes = entries()
                        .filter(|e| !erased(e))
                        .flatten()
                        .copied()
                        .collect();
                    edits.push(Edit {
                        run: run.no,
                        chunk,
                        bytes,
                    });
                }
            }
        }
        Ok((removed, edits))
    }

    /// Takes a step's changes into fresh and its edits into the runs, once its keys are
    /// written.
    pub fn applied(&self, changes: &[Change], edits: Vec<Edit>) {
        let mut s = self.lock();
        for c in changes {
            match c.add {
                true => s.fresh.insert(c.entry),
                false => s.fresh.remove(&c.entry),
            };
        }
        for e in edits {
            s.unwritten.insert((e.run, e.chunk));
            s.edits.insert((e.run, e.chunk), Arc::new(e.bytes));
        }
    }

    /// Whether fresh holds enough for a run.
    pub fn due(&self) -> bool {
        self.lock().fresh.entries.len() >= self.per_run
    }

    /// Writes fresh as a run, names it with the journal up to `through` (the checkpoint)
    /// covered, removes that journal, writes edits over their chunks, then merges what is
    /// due.
    pub fn seal(&self, through: u64) -> Result<(), ProjectionError> {
        let entries: Vec<Entry> = self.lock().fresh.entries.iter().copied().collect();
        let run = match entries.is_empty() {
            true => None,
            false => {
                let no = self.reserve();
                let capacity = entries.len() as u64;
                Some(self.write_run(no, capacity, entries.into_iter().map(Ok))?)
            }
        };
        {
            let mut s = self.lock();
            if let Some(run) = run {
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
        if !self.lock().unwritten.is_empty() {
            self.disk.flush()?;
            self.write_edits()?;
        }
        while self.merge_once()? {}
        Ok(())
    }

    /// Writes the edits not yet in their runs' files over their chunks. Only once sled holds
    /// them durably: until then, a crash could leave a file rewritten for a step that is
    /// projected again.
    fn write_edits(&self) -> Result<(), ProjectionError> {
        let mut s = self.lock();
        for r in &s.runs {
            let chunks: Vec<(u32, &[u8])> = s
                .unwritten
                .range((r.no, 0)..=(r.no, u32::MAX))
                .map(|&(no, chunk)| (chunk, s.edits[&(no, chunk)].as_slice()))
                .collect();
            if !chunks.is_empty() {
                r.file.overwrite(&self.dir, &chunks, PAD)?;
            }
        }
        s.unwritten.clear();
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
        self.tree.insert(MANIFEST, s.manifest())?;
        Ok(())
    }

    /// Writes `entries` (in order) as run `no`, at the level its size says.
    fn write_run(
        &self,
        no: u64,
        capacity: u64,
        entries: impl Iterator<Item = Result<Entry, ProjectionError>>,
    ) -> Result<Run, ProjectionError> {
        let opened = run_file::write(&self.dir, no, SHAPE, capacity, entries, || false)?
            .expect("never stopped");
        let level = sorted::level_of(self.per_run, opened.count());
        Ok(opened.at(level))
    }

    /// Merges the oldest [`FANOUT`] runs of the lowest level that has that many, if one
    /// does. Returns whether it merged.
    fn merge_once(&self) -> Result<bool, ProjectionError> {
        let (inputs, edits): (Vec<Arc<Run>>, Vec<_>) = {
            let s = self.lock();
            let mut levels: BTreeMap<u32, Vec<Arc<Run>>> = BTreeMap::new();
            for r in &s.runs {
                levels.entry(r.level).or_default().push(r.clone());
            }
            match levels.into_values().find(|runs| runs.len() >= FANOUT) {
                Some(mut runs) => {
                    runs.truncate(FANOUT);
                    let edits = runs.iter().map(|r| s.edits_of(r.no)).collect();
                    (runs, edits)
                }
                None => return Ok(false),
            }
        };
        let no = self.reserve();
        let capacity = inputs.iter().map(|r| r.count()).sum();
        let merged = sorted::Merged::new(
            inputs
                .iter()
                .zip(edits)
                .map(|(r, edits)| Entries::new(r.clone(), edits))
                .collect(),
            |e: &Entry| *e,
        );
        let mut run = self.write_run(no, capacity, merged)?;
        run.level = inputs[0].level + 1;
        {
            let mut s = self.lock();
            s.runs.retain(|r| !inputs.iter().any(|i| i.no == r.no));
            s.runs.push(Arc::new(run));
            for r in &inputs {
                let gone: Vec<_> = s.edits_of(r.no).into_keys().collect();
                for chunk in gone {
                    s.edits.remove(&(r.no, chunk));
                    s.unwritten.remove(&(r.no, chunk));
                }
            }
            self.commit(&mut s)?;
        }
        for r in &inputs {
            for k in self.tree.scan_prefix(sorted::prefix(EDIT, r.no)).keys() {
                self.tree.remove(k?)?;
            }
        }
        // Durably named no more before their files go: sled recovers a prefix, and a
        // manifest naming a deleted file would be a registry that cannot open.
        self.disk.flush()?;
        for r in &inputs {
            run_file::remove(&self.dir, r.no)?;
        }
        Ok(true)
    }

    /// Whether `key` may list anyone: false only for a key nothing was ever added under.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let s = self.lock();
        key.len() != KEY
            || s.fresh.under(key).next().is_some()
            || s.runs.iter().any(|r| r.filter.may_contain(probe(key)))
    }

    /// The people under each key, in the order asked. A key no run's filter admits is
    /// answered from memory; the chunks that may hold the rest are read in file order, split
    /// across the cores.
    pub fn people(&self, keys: &[Vec<u8>]) -> Result<Vec<BTreeSet<Uuid>>, ProjectionError> {
        let mut out = vec![BTreeSet::new(); keys.len()];
        let mut wanted: BTreeMap<(u64, u32), Wanted> = BTreeMap::new();
        {
            let s = self.lock();
            for (i, key) in keys.iter().enumerate() {
                if key.len() != KEY {
                    continue;
                }
                out[i].extend(s.fresh.under(key).map(|e| person_of(e)));
                for run in s.runs.iter().filter(|r| r.filter.may_contain(probe(key))) {
                    for chunk in run.fences.chunks_for(key) {
                        wanted
                            .entry((run.no, chunk))
                            .or_insert_with(|| Wanted {
                                run: run.clone(),
                                chunk,
                                edit: s.edits.get(&(run.no, chunk)).cloned(),
                                readers: Vec::new(),
                            })
                            .readers
                            .push(i);
                    }
                }
            }
        }
        let wanted: Vec<Wanted> = wanted.into_values().collect();
        for (i, yp) in read_all(&wanted, keys)? {
            out[i].insert(yp);
        }
        Ok(out)
    }

    /// Everything the registry holds, key by key: what a rebuild is compared on, since run
    /// boundaries follow when seals happened.
    pub fn content(&self) -> Result<BTreeMap<Vec<u8>, BTreeSet<Uuid>>, ProjectionError> {
        let (fresh, runs) = {
            let s = self.lock();
            let runs: Vec<_> = s
                .runs
                .iter()
                .map(|r| (r.clone(), s.edits_of(r.no)))
                .collect();
            (s.fresh.entries.clone(), runs)
        };
        let mut out: BTreeMap<Vec<u8>, BTreeSet<Uuid>> = BTreeMap::new();
        let stored = runs
            .into_iter()
            .flat_map(|(run, edits)| Entries::new(run, edits));
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

/// A chunk a lookup reads, and which of its keys want it.
struct Wanted {
    run: Arc<Run>,
    chunk: u32,
    edit: Option<Arc<Vec<u8>>>,
    readers: Vec<usize>,
}

/// Reads `wanted` chunks in the order given (file order), each into one buffer reused, and
/// answers who each reader's key lists, split across the cores when there are many: the
/// operating system serves the chunks from its cache, and two threads keep both cores on a
/// chunk of rows' lookups (BENCHMARKS.md, session 12). Holding every chunk read at once
/// instead took a repeated million-row file 65 MB higher (session 17).
fn read_all(wanted: &[Wanted], keys: &[Vec<u8>]) -> Result<Vec<(usize, Uuid)>, ProjectionError> {
    let read = |part: &[Wanted]| -> Result<Vec<(usize, Uuid)>, ProjectionError> {
        let mut found = Vec::new();
        let mut buf = Vec::new();
        for w in part {
            let chunk: &[u8] = match &w.edit {
                Some(edit) => edit,
                None => {
                    w.run.file.read_chunk_into(w.chunk, &mut buf)?;
                    &buf
                }
            };
            if !chunk.len().is_multiple_of(ENTRY) {
                return Err(damaged(w.run.no, "a chunk is truncated"));
            }
            for i in &w.readers {
                found.extend(people_in(chunk, &keys[*i]).map(|yp| (*i, yp)));
            }
        }
        Ok(found)
    };
    let threads = pathway_log::cores();
    if threads < 2 || wanted.len() < 256 {
        return read(wanted);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = wanted
            .chunks(wanted.len().div_ceil(threads))
            .map(|part| scope.spawn(move || read(part)))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| ProjectionError::Corrupt("a registry reader panicked".into()))??,
            );
        }
        Ok(out)
    })
}

/// The fresh entries under `key`.
fn bounds(key: &[u8]) -> std::ops::RangeInclusive<Entry> {
    let (mut lo, mut hi) = ([0u8; ENTRY], [0xffu8; ENTRY]);
    lo[..KEY].copy_from_slice(key);
    hi[..KEY].copy_from_slice(key);
    lo..=hi
}

/// A run's entries, in order, as its edits leave them.
struct Entries {
    run: Arc<Run>,
    edits: BTreeMap<u32, Arc<Vec<u8>>>,
    next: u32,
    chunk: Option<Chunk>,
    at: usize,
}

impl Entries {
    fn new(run: Arc<Run>, edits: BTreeMap<u32, Arc<Vec<u8>>>) -> Entries {
        Entries {
            run,
            edits,
            next: 0,
            chunk: None,
            at: 0,
        }
    }
}

impl Iterator for Entries {
    type Item = Result<Entry, ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(chunk) = &self.chunk {
                let bytes = chunk.as_ref();
                while self.at + ENTRY <= bytes.len() {
                    let e = &bytes[self.at..self.at + ENTRY];
                    self.at += ENTRY;
                    if !is_pad(e) {
                        return Some(Ok(e.try_into().expect("an entry")));
                    }
                }
            }
            if self.next >= self.run.file.chunks() {
                return None;
            }
            let chunk = self.next;
            self.next += 1;
            self.at = 0;
            match chunk_of(&self.run, chunk, self.edits.get(&chunk)) {
                Ok(c) => self.chunk = Some(c),
                Err(e) => {
                    self.next = u32::MAX;
                    return Some(Err(e));
                }
            }
        }
    }
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

    /// A projections directory: sled's tree, and the runs' files beside it.
    struct Store {
        dir: tempfile::TempDir,
        db: sled::Db,
        tree: sled::Tree,
    }

    impl Store {
        fn new() -> Store {
            let dir = tempfile::tempdir().unwrap();
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree("t").unwrap();
            Store { dir, db, tree }
        }

        fn runs_dir(&self) -> PathBuf {
            self.dir.path().join(DIR)
        }

        fn open(&self, checkpoint: u64, per_run: usize) -> Result<Registry, ProjectionError> {
            let disk = pathway_log::Disk::open(self.db.clone(), self.dir.path()).unwrap();
            Registry::open(
                self.tree.clone(),
                disk,
                &self.runs_dir(),
                checkpoint,
                per_run,
            )
        }

        fn files(&self) -> Vec<u64> {
            let mut files = run_file::stored(&self.runs_dir()).unwrap();
            files.sort();
            files
        }

        /// Whether any run file holds `yp`'s id, erased places aside.
        fn on_disk(&self, yp: Uuid) -> bool {
            self.files().into_iter().any(|no| {
                let bytes = std::fs::read(run_file::path(&self.runs_dir(), no)).unwrap();
                bytes.windows(16).any(|w| w == yp.as_bytes())
            })
        }
    }

    /// One step: its journal and edits written, then its changes applied; the checkpoint is
    /// the caller's `step`.
    fn step(r: &Registry, tree: &sled::Tree, at: u64, changes: &[Change], edits: Vec<Edit>) {
        for (k, v) in r.journal(at, changes) {
            tree.insert(k, v).unwrap();
        }
        for (k, v) in edits.iter().map(Edit::key_value) {
            tree.insert(k, v).unwrap();
        }
        r.applied(changes, edits);
        if r.due() {
            r.seal(at).unwrap();
        }
    }

    fn adds(range: std::ops::Range<u32>) -> Vec<Change> {
        range
            .map(|i| Change::add(&key(i), person(i)).unwrap())
            .collect()
    }

    /// Steps `steps`, step `s` adding `n` people from `s × stride`.
    fn add_in_steps(r: &Registry, store: &Store, steps: std::ops::Range<u32>, stride: u32, n: u32) {
        for s in steps {
            step(
                r,
                &store.tree,
                s as u64,
                &adds(s * stride..s * stride + n),
                vec![],
            );
        }
    }

    #[test]
    fn lookups_find_people_in_fresh_entries_runs_and_merged_runs_alike() {
        let store = Store::new();
        let r = store.open(0, 100).unwrap();
        for s in 0..30u32 {
            step(
                &r,
                &store.tree,
                s as u64 + 1,
                &adds(s * 50..s * 50 + 50),
                vec![],
            );
        }
        // A key listing two people, one added long after the other.
        step(
            &r,
            &store.tree,
            31,
            &[Change::add(&key(7), person(9999)).unwrap()],
            vec![],
        );
        // 15 runs sealed, merged four at a time, and the merged runs' files deleted.
        assert!(
            r.runs() <= 2 * (FANOUT - 1),
            "runs were merged: {}",
            r.runs()
        );
        assert_eq!(store.files().len(), r.runs(), "one file a live run");

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

    /// Merges delete the files of the runs they replace while lookups may be reading them:
    /// a lookup never answers "no one" for a key that was there.
    #[test]
    fn lookups_racing_seals_and_merges_find_every_person_that_was_there() {
        let store = Store::new();
        let r = store.open(0, 16).unwrap();
        step(&r, &store.tree, 1, &adds(0..100), vec![]);
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
            add_in_steps(&r, &store, 2..300, 100, 20);
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
        let store = Store::new();
        let r = store.open(0, 64).unwrap();
        for s in 0..5u32 {
            step(
                &r,
                &store.tree,
                s as u64 + 1,
                &adds(s * 40..s * 40 + 40),
                vec![],
            );
        }
        let held = r.content().unwrap();
        // A step past the checkpoint (5) wrote its journal, then the process stopped.
        for (k, v) in r.journal(6, &adds(900..910)) {
            store.tree.insert(k, v).unwrap();
        }
        drop(r);

        let r = store.open(5, 64).unwrap();
        assert_eq!(r.content().unwrap(), held);
        assert!(r.people(&[key(905)]).unwrap()[0].is_empty());
        assert_eq!(
            store.tree.scan_prefix([JOURNAL]).count(),
            0,
            "the journal was sealed"
        );
    }

    #[test]
    fn a_run_the_manifest_does_not_name_is_removed_at_open() {
        let store = Store::new();
        let r = store.open(0, 1000).unwrap();
        step(&r, &store.tree, 1, &adds(0..10), vec![]);
        r.seal(1).unwrap();
        // A merge or seal cut short after its file, before the manifest named its run.
        let no = r.reserve();
        let orphan: Vec<Entry> = adds(10..20).iter().map(|c| c.entry).collect();
        r.write_run(no, 10, orphan.into_iter().map(Ok)).unwrap();
        assert_eq!(store.files().len(), 2);
        drop(r);

        let r = store.open(1, 1000).unwrap();
        assert_eq!(r.runs(), 1);
        assert!(!store.files().contains(&no), "the orphan's file is gone");
        assert_eq!(r.people(&[key(3)]).unwrap()[0], BTreeSet::from([person(3)]));
        assert!(r.people(&[key(13)]).unwrap()[0].is_empty());
    }

    #[test]
    fn a_run_file_cut_short_is_refused_at_open() {
        let store = Store::new();
        let r = store.open(0, 1000).unwrap();
        step(&r, &store.tree, 1, &adds(0..300), vec![]);
        r.seal(1).unwrap();
        drop(r);
        let path = run_file::path(&store.runs_dir(), store.files()[0]);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1)
            .unwrap();

        match store.open(1, 1000) {
            Err(ProjectionError::Corrupt(m)) => assert!(m.contains("truncated"), "{m}"),
            Err(e) => panic!("not refused as damaged: {e}"),
            Ok(_) => panic!("a truncated run was opened"),
        }
    }

    /// Erases person 10, whose keys are 10 (shared with person 77) and 300.
    fn erase_ten(store: &Store, r: &Registry) {
        step(r, &store.tree, 1, &adds(0..200), vec![]);
        let shared = Change::add(&key(10), person(77)).unwrap();
        step(
            r,
            &store.tree,
            2,
            &[shared, Change::add(&key(300), person(10)).unwrap()],
            vec![],
        );
        assert!(store.on_disk(person(10)), "sealed into runs first");
        let (removed, edits) = r.erasing(&HashSet::from([person(10)])).unwrap();
        step(r, &store.tree, 3, &removed, edits);
        r.seal(3).unwrap();
    }

    fn erased_everywhere(store: &Store, r: &Registry) {
        let found = r.people(&[key(10), key(300), key(11)]).unwrap();
        assert_eq!(found[0], BTreeSet::from([person(77)]));
        assert!(found[1].is_empty());
        assert_eq!(found[2], BTreeSet::from([person(11)]));
        let everywhere = r.content().unwrap();
        assert!(everywhere
            .values()
            .all(|people| !people.contains(&person(10))));
        assert_eq!(store.tree.scan_prefix([JOURNAL]).count(), 0);
        assert!(!store.on_disk(person(10)), "no run's file holds them");
    }

    #[test]
    fn an_erased_person_leaves_every_run_its_files_and_fresh() {
        let store = Store::new();
        let r = store.open(0, 50).unwrap();
        erase_ten(&store, &r);
        erased_everywhere(&store, &r);
        drop(r);

        let r = store.open(3, 50).unwrap();
        erased_everywhere(&store, &r);
        // Merging the edited runs away leaves neither their files nor their edits.
        add_in_steps(&r, &store, 4..40, 1000, 50);
        erased_everywhere(&store, &r);
        let live: BTreeSet<u64> = r.lock().runs.iter().map(|r| r.no).collect();
        assert!(store
            .tree
            .scan_prefix([EDIT])
            .keys()
            .all(|k| live.contains(&number(&k.unwrap()))));
        assert_eq!(store.files().len(), r.runs());
    }

    /// A crash can tear an edit's write over its chunk: opening writes it again from sled.
    #[test]
    fn an_edit_torn_in_its_file_is_written_again_at_open() {
        let store = Store::new();
        let r = store.open(0, 50).unwrap();
        let before: BTreeMap<u64, Vec<u8>> = {
            step(&r, &store.tree, 1, &adds(0..200), vec![]);
            step(
                &r,
                &store.tree,
                2,
                &[
                    Change::add(&key(10), person(77)).unwrap(),
                    Change::add(&key(300), person(10)).unwrap(),
                ],
                vec![],
            );
            store
                .files()
                .into_iter()
                .map(|no| {
                    (
                        no,
                        std::fs::read(run_file::path(&store.runs_dir(), no)).unwrap(),
                    )
                })
                .collect()
        };
        let (removed, edits) = r.erasing(&HashSet::from([person(10)])).unwrap();
        assert_eq!(
            removed,
            [Change::remove(&key(300), person(10)).unwrap()],
            "the entry still fresh"
        );
        assert_eq!(edits.len(), 1, "the chunk of the sealed run holding them");
        step(&r, &store.tree, 3, &removed, edits);
        r.seal(3).unwrap();
        drop(r);
        // The files as they were before the edits reached them.
        for (no, bytes) in &before {
            std::fs::write(run_file::path(&store.runs_dir(), *no), bytes).unwrap();
        }
        assert!(store.on_disk(person(10)));

        let r = store.open(3, 50).unwrap();
        erased_everywhere(&store, &r);
    }
}
