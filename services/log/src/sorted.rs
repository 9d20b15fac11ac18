//! Sorted runs (a log-structured merge tree's, not the entry runs of `runs`): the parts the
//! log's event-id index (`ids`) and the projector's identity registry share.
//!
//! Both keep keys that land at random places (agencies' event ids; digests of identifiers)
//! the way a log-structured merge tree does, because sled 0.34 copies a leaf for every
//! insert and splits one past 16 keys: immutable runs of fixed-size records, in order, each
//! a file of its own ([`crate::run_file`]) with a Bloom filter, named by a manifest key in
//! sled and merged [`FANOUT`] at a time. What a record is and when runs are sealed stay with
//! each user, since each ties them to its own crash protocol.
//!
//! # Layout
//! - [`Filter`]: a cache-line-blocked Bloom filter, stored as its words.
//! - [`Merged`]: runs merged in order.
//! - [`Manifest`]: the live runs, in one key.
//! - [`level_of`]: where a run belongs.
//! - [`Records`], [`unnamed`], [`remove`]: runs as the id index kept them in sled before
//!   files (chunks under `tag ‖ run number ‖ …` keys), which opening moves into files.

use crate::keys;

/// Runs of one level merged at once. Small, so a lookup checks few filters (fewer than
/// `FANOUT` runs a level once merges have caught up); each record is rewritten once a
/// level, and the levels grow by this factor, so there are few of them.
pub const FANOUT: usize = 4;

/// About 1% false positives with [`PROBES`] probes in one 512-bit block.
const BITS_PER_KEY: u64 = 10;
const PROBES: u32 = 7;
const BLOCK_WORDS: usize = 8;

/// What reading a run back can find wrong.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("a chunk is truncated")]
    Truncated,
    #[error("its filter is missing or truncated")]
    Filter,
    #[error("the manifest is damaged")]
    Manifest,
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    File(&'static str),
}

/// `tag ‖ no`: the prefix of every key of run `no` of one kind.
pub fn prefix(tag: u8, no: u64) -> [u8; 9] {
    keys::at_seq(tag, no)
}

/// `tag ‖ no ‖ part`.
pub fn numbered(tag: u8, no: u64, part: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&prefix(tag, no));
    k[9..].copy_from_slice(&part.to_be_bytes());
    k
}

/// The run number of a key made by [`prefix`] or [`numbered`].
pub fn number(key: &[u8]) -> u64 {
    keys::u64_of(&key[1..])
}

pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two independent hashes of a key. Keys are mixed, not used as they come: an agency may
/// well send sequential ids.
fn hashes(key: &[u8; 16]) -> (u64, u64) {
    let v = u128::from_be_bytes(*key);
    let a = mix(v as u64 ^ 0x9e37_79b9_7f4a_7c15);
    (a, mix((v >> 64) as u64 ^ a))
}

/// A Bloom filter of 16-byte keys whose probes for one key all fall in one 64-byte block:
/// one cache miss a run, where a classic filter would take one a probe.
pub struct Filter {
    words: Vec<u64>,
}

impl Filter {
    pub fn with_capacity(keys: u64) -> Filter {
        let blocks = (keys.max(1) * BITS_PER_KEY).div_ceil(64 * BLOCK_WORDS as u64);
        Filter {
            words: vec![0; blocks as usize * BLOCK_WORDS],
        }
    }

    fn probes(&self, key: &[u8; 16]) -> (usize, impl Iterator<Item = (usize, u64)>) {
        let (a, b) = hashes(key);
        let blocks = (self.words.len() / BLOCK_WORDS) as u128;
        let block = ((a as u128 * blocks) >> 64) as usize * BLOCK_WORDS;
        let bits = (0..PROBES).map(move |i| {
            let bit = (b >> (i * 9)) & 511;
            ((bit >> 6) as usize, 1u64 << (bit & 63))
        });
        (block, bits)
    }

    pub fn insert(&mut self, key: &[u8; 16]) {
        let (block, bits) = self.probes(key);
        for (word, mask) in bits {
            self.words[block + word] |= mask;
        }
    }

    /// Empties the filter, keeping its size.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    pub fn may_contain(&self, key: &[u8; 16]) -> bool {
        let (block, mut bits) = self.probes(key);
        bits.all(|(word, mask)| self.words[block + word] & mask != 0)
    }
}

impl Filter {
    /// The filter as stored: its words, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The filter [`Filter::to_bytes`] stored; refused if it is not whole.
    pub fn from_bytes(bytes: &[u8]) -> Result<Filter, RunError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(8 * BLOCK_WORDS) {
            return Err(RunError::Filter);
        }
        let words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        Ok(Filter { words })
    }
}

/// What a manifest key holds: the live runs (number, level, records) and the position up to
/// which what feeds them (the log's `x` chunks, the registry's journal) is in runs. One key,
/// so a seal or a merge changes it atomically.
#[derive(Debug, Default, PartialEq)]
pub struct Manifest {
    pub covered: u64,
    pub next_run: u64,
    pub runs: Vec<(u64, u32, u64)>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.runs.len() * 20);
        v.extend_from_slice(&self.covered.to_be_bytes());
        v.extend_from_slice(&self.next_run.to_be_bytes());
        for (no, level, count) in &self.runs {
            v.extend_from_slice(&no.to_be_bytes());
            v.extend_from_slice(&level.to_be_bytes());
            v.extend_from_slice(&count.to_be_bytes());
        }
        v
    }

    /// The manifest stored under `key`; the empty one when there is none yet.
    pub fn read(tree: &sled::Tree, key: &[u8]) -> Result<Manifest, RunError> {
        match tree.get(key)? {
            None => Ok(Manifest::default()),
            Some(m) => Manifest::decode(&m).ok_or(RunError::Manifest),
        }
    }

    /// `None` for bytes that are not a manifest (damaged).
    pub fn decode(m: &[u8]) -> Option<Manifest> {
        if m.len() < 16 || !(m.len() - 16).is_multiple_of(20) {
            return None;
        }
        let runs = m[16..]
            .chunks_exact(20)
            .map(|r| {
                let level = u32::from_be_bytes(r[8..12].try_into().expect("4 bytes"));
                (keys::u64_of(r), level, keys::u64_of(&r[12..]))
            })
            .collect();
        Some(Manifest {
            covered: keys::u64_of(m),
            next_run: keys::u64_of(&m[8..]),
            runs,
        })
    }
}

/// The level a run of `count` records belongs at: the merges a run sealed at `per_run`
/// records would have taken to reach its size.
pub fn level_of(per_run: usize, count: u64) -> u32 {
    let mut level = 0;
    let mut size = per_run as u64 * FANOUT as u64;
    while size <= count {
        level += 1;
        size = size.saturating_mul(FANOUT as u64);
    }
    level
}

/// The numbers of the runs stored under `tag` that are not `named` (a seal or merge a crash
/// cut short), one seek a run.
pub fn unnamed(tree: &sled::Tree, tag: u8, named: &[u64]) -> Result<Vec<u64>, sled::Error> {
    let mut out = Vec::new();
    let mut from = prefix(tag, 0);
    while let Some(k) = tree.range(from..).keys().next() {
        let k = k?;
        if k[0] != tag || k.len() < 9 {
            break;
        }
        let no = number(&k);
        if !named.contains(&no) {
            out.push(no);
        }
        match no.checked_add(1) {
            Some(next) => from = prefix(tag, next),
            None => break,
        }
    }
    Ok(out)
}

/// Removes every key under `tag ‖ no` for each of `tags`.
pub fn remove(tree: &sled::Tree, tags: &[u8], no: u64) -> Result<(), sled::Error> {
    for tag in tags {
        for k in tree.scan_prefix(prefix(*tag, no)).keys() {
            tree.remove(k?)?;
        }
    }
    Ok(())
}

/// A run's `N`-byte records, in order: the chunks under a prefix, in key order.
pub struct Records<const N: usize> {
    chunks: sled::Iter,
    chunk: sled::IVec,
    at: usize,
}

impl<const N: usize> Records<N> {
    pub fn new(tree: &sled::Tree, tag: u8, no: u64) -> Records<N> {
        Records {
            chunks: tree.scan_prefix(prefix(tag, no)),
            chunk: sled::IVec::default(),
            at: 0,
        }
    }
}

impl<const N: usize> Iterator for Records<N> {
    type Item = Result<[u8; N], RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.at + N > self.chunk.len() {
            match self.chunks.next()? {
                Err(e) => return Some(Err(e.into())),
                Ok((_, v)) if !v.len().is_multiple_of(N) => return Some(Err(RunError::Truncated)),
                Ok((_, v)) => {
                    self.chunk = v;
                    self.at = 0;
                }
            }
        }
        let r = self.chunk[self.at..self.at + N]
            .try_into()
            .expect("N bytes");
        self.at += N;
        Some(Ok(r))
    }
}

/// Runs merged in order of `key`, each key once (from the first input holding it).
pub struct Merged<T, K, I> {
    inputs: Vec<I>,
    heads: Vec<Option<T>>,
    started: bool,
    last: Option<K>,
    key: fn(&T) -> K,
}

impl<T: Copy, K: Ord + Copy, E, I: Iterator<Item = Result<T, E>>> Merged<T, K, I> {
    pub fn new(inputs: Vec<I>, key: fn(&T) -> K) -> Self {
        let heads = inputs.iter().map(|_| None).collect();
        Merged {
            inputs,
            heads,
            started: false,
            last: None,
            key,
        }
    }

    fn refill(&mut self, i: usize) -> Result<(), E> {
        self.heads[i] = self.inputs[i].next().transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<T>, E> {
        if !self.started {
            self.started = true;
            for i in 0..self.inputs.len() {
                self.refill(i)?;
            }
        }
        loop {
            let key = self.key;
            let Some(i) = (0..self.heads.len())
                .filter(|i| self.heads[*i].is_some())
                .min_by_key(|i| self.heads[*i].as_ref().map(key))
            else {
                return Ok(None);
            };
            let next = self.heads[i].take().expect("chosen among the present");
            self.refill(i)?;
            if self.last != Some(key(&next)) {
                self.last = Some(key(&next));
                return Ok(Some(next));
            }
        }
    }
}

impl<T: Copy, K: Ord + Copy, E, I: Iterator<Item = Result<T, E>>> Iterator for Merged<T, K, I> {
    type Item = Result<T, E>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_runs_are_in_order_with_each_key_once() {
        let runs = [vec![1u32, 4, 6], vec![2, 4, 9], vec![], vec![0, 6, 10]];
        let inputs = runs
            .iter()
            .map(|r| r.iter().map(|x| Ok::<_, ()>(*x)))
            .collect();
        let merged: Vec<u32> = Merged::new(inputs, |x: &u32| *x)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(merged, vec![0, 1, 2, 4, 6, 9, 10]);
    }

    #[test]
    fn a_filter_never_forgets_and_reads_back_as_written() {
        let keys: Vec<[u8; 16]> = (0..5000u128).map(|i| (i * 7919).to_be_bytes()).collect();
        let mut filter = Filter::with_capacity(keys.len() as u64);
        for k in &keys {
            filter.insert(k);
        }
        let read = Filter::from_bytes(&filter.to_bytes()).unwrap();
        assert!(keys.iter().all(|k| read.may_contain(k)));
        let strangers = (1_000_000..1_010_000u128)
            .filter(|i| read.may_contain(&i.to_be_bytes()))
            .count();
        assert!(
            strangers < 300,
            "about 1% false positives, not {strangers} in 10,000"
        );
        assert!(matches!(Filter::from_bytes(&[]), Err(RunError::Filter)));
    }

    #[test]
    fn a_manifest_reads_back_as_written_and_a_damaged_one_is_refused() {
        let m = Manifest {
            covered: 7,
            next_run: 12,
            runs: vec![(3, 0, 100), (11, 2, u64::MAX)],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Some(m));
        assert_eq!(Manifest::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Manifest::decode(&[]), None);

        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        assert_eq!(Manifest::read(&tree, b"m").unwrap(), Manifest::default());
        tree.insert(b"m", bytes.clone()).unwrap();
        assert_eq!(
            Manifest::decode(&bytes),
            Some(Manifest::read(&tree, b"m").unwrap())
        );
        tree.insert(b"m", &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            Manifest::read(&tree, b"m"),
            Err(RunError::Manifest)
        ));
    }

    #[test]
    fn unnamed_runs_are_found_with_one_seek_each_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        for no in [1u64, 2, 5] {
            for part in 0..3 {
                tree.insert(numbered(b'j', no, part), vec![0u8; 8]).unwrap();
            }
        }
        assert_eq!(unnamed(&tree, b'j', &[2]).unwrap(), vec![1, 5]);
        remove(&tree, b"j", 5).unwrap();
        assert_eq!(unnamed(&tree, b'j', &[2]).unwrap(), vec![1]);
        let records: Vec<[u8; 4]> = Records::<4>::new(&tree, b'j', 2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 6, "three chunks of two records");
    }
}
