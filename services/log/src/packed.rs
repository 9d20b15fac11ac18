//! Small per-person values packed many people to a sled key: the log's first stream
//! segments (`streams`) and the projections' latest-destination index.
//!
//! Why: sled 0.34 keeps in memory, for every page it holds on disk, a stub with the disk
//! locations of the page's fragments, and a leaf page holds at most 16 keys. A key per
//! person therefore costs memory for good, growing with people: with three such keys a
//! person, a million people held about 40 MB of stubs (BENCHMARKS.md, sessions 19 and 20).
//! Packed about [`PER_KEY`] people a key, a million people take about 32,000 keys.
//!
//! # Layout
//! - key: `tag` ‖ a person's id (16 bytes). The key *covers* the people from that id up to
//!   the next key of the tag, and holds the values of those it has, in order;
//! - value: records of `person (16) ‖ length (2) ‖ the person's value`, ordered by person.
//!
//! Which keys hold whom depends only on who is held: a key starts at the first person held
//! and at each person whom a hash of their id picks ([`starts_key`], one in [`PER_KEY`]).
//! So the same people make the same keys whatever order they came in (where values are
//! small enough never to pass [`MAX_VALUE`]), and a rebuild of the projections equals the
//! live run key for key. People minted in order (UUIDv7) arrive at
//! the right edge: they join the last key or start the next, and nothing moves.
//!
//! Each user is the only writer of its tag, one step at a time, so a key is read, changed
//! and written back without a race. Where a change moves stored records from one key to
//! another (a newcomer who starts a key in the middle of one; the removal of a person who
//! started one), its keys are written as one sled batch, so a crash never leaves a
//! person's value in two keys or in none.

use std::ops::{Bound, Range};
use uuid::Uuid;

/// People a key holds on average: values of about 2 KB for the small values packed here
/// (a wrapped key, 82 bytes a record; a few events of a stream; an agency's digest).
pub const PER_KEY: usize = 32;

/// The most a key's value holds, whatever the hash picks: a key past it is cut, filled from
/// the left (so people added at the right edge still move nothing). Durability, as for the
/// log's entry runs ([`crate::runs`]'s `RUN_BYTES`): sled 0.34 writes a page bigger than
/// 128 KiB as a blob file, which it never fsyncs, and a leaf splits only past 16 keys.
/// Cuts make the keys depend on more than who is held, but only where values are large (a
/// full first stream segment is 530 bytes), never for the projections' small digests.
pub const MAX_VALUE: usize = crate::runs::RUN_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("a packed record is cut short")]
    Cut,
}

pub fn key(tag: u8, yp: Uuid) -> [u8; 17] {
    let mut k = [tag; 17];
    k[1..].copy_from_slice(yp.as_bytes());
    k
}

/// One person's value.
pub type Record = (Uuid, Vec<u8>);

pub fn encode(records: &[Record]) -> Vec<u8> {
    encode_each(records.iter().map(|(yp, v)| (*yp, v.as_slice())))
}

fn encode_each<'a>(records: impl Iterator<Item = (Uuid, &'a [u8])> + Clone) -> Vec<u8> {
    let size = records.clone().map(|(_, v)| 18 + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (yp, value) in records {
        out.extend_from_slice(yp.as_bytes());
        let len = u16::try_from(value.len()).expect("a packed value is at most 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, PackError> {
    records(bytes)
        .map(|r| r.map(|(yp, value)| (yp, value.to_vec())))
        .collect()
}

/// A stored value's records, read in place.
fn records(bytes: &[u8]) -> impl Iterator<Item = Result<(Uuid, &[u8]), PackError>> {
    spans(bytes).map(|r| r.map(|(yp, at)| (yp, &bytes[at])))
}

/// A stored value's records: each person and where their value lies in it.
fn spans(bytes: &[u8]) -> impl Iterator<Item = Result<(Uuid, Range<usize>), PackError>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at == bytes.len() {
            return None;
        }
        let record = (|| {
            let rest = &bytes[at..];
            let (yp, rest) = rest.split_first_chunk::<16>().ok_or(PackError::Cut)?;
            let (len, rest) = rest.split_first_chunk::<2>().ok_or(PackError::Cut)?;
            let len = usize::from(u16::from_be_bytes(*len));
            if rest.len() < len {
                return Err(PackError::Cut);
            }
            let start = at + 18;
            at = start + len;
            Ok((Uuid::from_bytes(*yp), start..at))
        })();
        if record.is_err() {
            at = bytes.len();
        }
        Some(record)
    })
}

/// The stored key covering a person (the last at or before them), and the next key of the
/// tag, where that cover ends.
fn bounds(tree: &sled::Tree, tag: u8, yp: Uuid) -> Result<Stored, PackError> {
    let at = key(tag, yp);
    let below = below(tree, tag, yp)?;
    let after = below.as_ref().map_or(&at[..], |(k, _)| &k[..]).to_vec();
    let end = Bound::Excluded(vec![tag + 1]);
    let until = tree
        .range((Bound::Excluded(after), end))
        .next()
        .transpose()?
        .map(|(k, _)| k);
    Ok((below, until))
}

/// A stored key and value, if any, and where the next stored key begins.
type Stored = (Option<(sled::IVec, sled::IVec)>, Option<sled::IVec>);

/// The stored key at or before a person's (the one covering them), and its value.
fn below(
    tree: &sled::Tree,
    tag: u8,
    yp: Uuid,
) -> Result<Option<(sled::IVec, sled::IVec)>, PackError> {
    let at = key(tag, yp);
    Ok(tree.range(&[tag][..]..=&at[..]).next_back().transpose()?)
}

/// The records of the key covering a person, and the next key (where its cover ends).
struct Cover {
    records: Vec<Record>,
    until: Option<sled::IVec>,
}

impl Cover {
    fn find(tree: &sled::Tree, tag: u8, yp: Uuid) -> Result<Cover, PackError> {
        let (stored, until) = bounds(tree, tag, yp)?;
        let records = match &stored {
            Some((_, v)) => decode(v)?,
            None => Vec::new(),
        };
        Ok(Cover { records, until })
    }

    fn covers(&self, tag: u8, yp: Uuid) -> bool {
        self.until.as_deref().is_none_or(|u| key(tag, yp)[..] < *u)
    }

    fn value(&self, yp: Uuid) -> Option<&[u8]> {
        self.records
            .binary_search_by_key(&yp, |(p, _)| *p)
            .ok()
            .map(|i| self.records[i].1.as_slice())
    }
}

/// A person's value: one reverse range read, and the key's records walked in place (the
/// log asks this on every cache miss of a person's key or stream).
pub fn get(tree: &sled::Tree, tag: u8, yp: Uuid) -> Result<Option<Vec<u8>>, PackError> {
    let Some((_, value)) = below(tree, tag, yp)? else {
        return Ok(None);
    };
    for record in records(&value) {
        let (id, v) = record?;
        match id.cmp(&yp) {
            std::cmp::Ordering::Equal => return Ok(Some(v.to_vec())),
            std::cmp::Ordering::Greater => break,
            std::cmp::Ordering::Less => {}
        }
    }
    Ok(None)
}

/// The values of many people, in the order asked. Read in key order and split across the
/// cores: a chunk of import rows asks about thousands of people, far more than sled's cache
/// holds, and in key order each key is read once for all the people it covers
/// (BENCHMARKS.md, session 12).
pub fn get_many(
    tree: &sled::Tree,
    tag: u8,
    asked: &[Uuid],
) -> Result<Vec<Option<Vec<u8>>>, PackError> {
    type Found = Vec<(usize, Option<Vec<u8>>)>;
    let mut order: Vec<usize> = (0..asked.len()).collect();
    order.sort_unstable_by_key(|i| asked[*i]);
    let read = |part: &[usize]| -> Result<Found, PackError> {
        let mut cover: Option<Cover> = None;
        let mut out = Vec::with_capacity(part.len());
        for i in part {
            let yp = asked[*i];
            // Asked in order, so a key found for an earlier person starts at or before this one.
            let held = match cover.take() {
                Some(c) if c.covers(tag, yp) => cover.insert(c),
                _ => cover.insert(Cover::find(tree, tag, yp)?),
            };
            out.push((*i, held.value(yp).map(<[u8]>::to_vec)));
        }
        Ok(out)
    };
    let threads = crate::cores();
    let parts: Vec<Found> = if threads < 2 || asked.len() < 256 {
        vec![read(&order)?]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = order
                .chunks(asked.len().div_ceil(threads))
                .map(|part| scope.spawn(move || read(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a packed-key reader panicked"))
                .collect::<Result<_, _>>()
        })?
    };
    let mut out = vec![None; asked.len()];
    for (i, v) in parts.into_iter().flatten() {
        out[i] = v;
    }
    Ok(out)
}

/// Keys to write (`Some`) or remove (`None`) for the people one stored key covered.
/// `together` when a stored record moves to another key, so the keys must land at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub keys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub together: bool,
}

/// Whether a person starts a key of their own: about one in [`PER_KEY`], by a hash of the
/// id, so which keys hold whom is a function of who is held, not of the order they came in
/// (a rebuild of the projections writes the same keys as the live run did).
pub fn starts_key(yp: Uuid) -> bool {
    let v = yp.as_u128();
    crate::sorted::mix(v as u64 ^ crate::sorted::mix((v >> 64) as u64))
        .is_multiple_of(PER_KEY as u64)
}

fn person_of(key: &[u8]) -> Uuid {
    Uuid::from_slice(&key[1..]).expect("a packed key is a tag and a person")
}

/// One person's record in a region being changed: where its value is stored, unless the
/// step gave it a new one. Values stay in the stored keys' bytes until they change, since a
/// step changes a person or two of the [`PER_KEY`] a key holds (a typical quarter's file
/// changes a fifth of the people, spread over every key).
struct Slot {
    yp: Uuid,
    /// The stored key it came from (an index into the region's `old`) and where its value
    /// lies in that key's value.
    stored: Option<(usize, Range<usize>)>,
    new: Option<Vec<u8>>,
}

/// Stored keys being changed together: their records, changed in place, and where the
/// next stored key begins.
struct Region {
    /// The stored keys the region's records came from, and their values as stored.
    old: Vec<(sled::IVec, sled::IVec)>,
    slots: Vec<Slot>,
    until: Option<sled::IVec>,
}

impl Region {
    fn covers(&self, tag: u8, yp: Uuid) -> bool {
        self.until.as_deref().is_none_or(|u| key(tag, yp)[..] < *u)
    }

    fn value<'a>(&'a self, slot: &'a Slot) -> &'a [u8] {
        match (&slot.new, &slot.stored) {
            (Some(v), _) => v,
            (None, Some((k, at))) => &self.old[*k].1[at.clone()],
            (None, None) => &[],
        }
    }

    /// The slots of the stored key `old[k]`.
    fn slots_of(&self, k: usize) -> Result<Vec<Slot>, PackError> {
        spans(&self.old[k].1)
            .map(|r| {
                r.map(|(yp, at)| Slot {
                    yp,
                    stored: Some((k, at)),
                    new: None,
                })
            })
            .collect()
    }

    /// Puts `earlier`'s keys and records before this region's.
    fn after(&mut self, mut earlier: Region) {
        let shift = earlier.old.len();
        for slot in &mut self.slots {
            if let Some((k, _)) = &mut slot.stored {
                *k += shift;
            }
        }
        earlier.old.append(&mut self.old);
        earlier.slots.append(&mut self.slots);
        self.old = earlier.old;
        self.slots = earlier.slots;
    }
}

/// What changing `people` (ascending, each once) makes of the keys: `update` is given each
/// person's stored value and returns the new one (`None`: none).
///
/// The keys are always those [`starts_key`] gives for the people held: a key starts at the
/// first person held and at every person who starts a key. A newcomer who starts a key
/// splits the key they land in; the removal of a person who started one merges what
/// followed them into the key before.
pub fn plan<E: From<PackError>>(
    tree: &sled::Tree,
    tag: u8,
    people: impl IntoIterator<Item = Uuid>,
    update: impl FnMut(Uuid, Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<Vec<Rewrite>, E> {
    let mut rewrites = Vec::new();
    regions(tree, tag, people, update, |r| {
        rewrites.push(r);
        Ok(())
    })?;
    Ok(rewrites)
}

/// [`plan`] and [`apply`] at once, each stored key written as soon as its region is planned:
/// the page it was just read from is still in sled's cache. Planned first and applied
/// after, a step's keys spread over more pages than the cache holds are each read twice
/// (BENCHMARKS.md, session 24). Regions are disjoint and each is written as [`apply`]
/// writes it, so a crash between two leaves each person's value in one key, as before.
pub fn change<E: From<PackError>>(
    tree: &sled::Tree,
    tag: u8,
    people: impl IntoIterator<Item = Uuid>,
    update: impl FnMut(Uuid, Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> Result<(), E> {
    regions(tree, tag, people, update, |r| Ok(apply(tree, vec![r])?))
}

/// The regions changing `people` makes, each given to `emit` once it is final: a region is
/// held back until the next one is known, since a key whose head goes joins the key before.
fn regions<E: From<PackError>>(
    tree: &sled::Tree,
    tag: u8,
    people: impl IntoIterator<Item = Uuid>,
    mut update: impl FnMut(Uuid, Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
    mut emit: impl FnMut(Rewrite) -> Result<(), E>,
) -> Result<(), E> {
    let mut people = people.into_iter().peekable();
    // The region before, not yet emitted.
    let mut held: Option<Region> = None;
    while let Some(first) = people.next() {
        let (mut stored, mut until) = bounds(tree, tag, first)?;
        if stored.is_none() {
            // Below everyone held: the first person becomes the first key's head.
            if let Some(next) = until.take() {
                (stored, until) = bounds(tree, tag, person_of(&next))?;
            }
        }
        let mut region = Region {
            old: stored.into_iter().collect(),
            slots: Vec::new(),
            until,
        };
        if !region.old.is_empty() {
            region.slots = region.slots_of(0)?;
        }
        let mut yp = first;
        loop {
            let at = region.slots.binary_search_by_key(&yp, |s| s.yp);
            let stored = at.ok().map(|i| region.value(&region.slots[i]));
            match (update(yp, stored)?, at) {
                (Some(v), Ok(i)) => region.slots[i].new = Some(v),
                (Some(v), Err(i)) => region.slots.insert(
                    i,
                    Slot {
                        yp,
                        stored: None,
                        new: Some(v),
                    },
                ),
                (None, Ok(i)) => {
                    region.slots.remove(i);
                }
                (None, Err(_)) => {}
            }
            match people.next_if(|p| region.covers(tag, *p)) {
                Some(p) => yp = p,
                None => break,
            }
        }
        // A key whose head has gone (and who was not the first person held) joins the key
        // before it.
        let head = region.old.first().map(|(k, _)| k.clone());
        if let Some(head) = head {
            let kept = region.slots.first().map(|s| s.yp) == Some(person_of(&head));
            if !kept {
                if held
                    .as_ref()
                    .is_some_and(|r| r.until.as_ref() == Some(&head))
                {
                    let before = held.take().expect("just seen");
                    region.after(before);
                } else if let Some(kv) = tree
                    .range(&[tag][..]..&head[..])
                    .next_back()
                    .transpose()
                    .map_err(PackError::from)?
                {
                    let mut before = Region {
                        old: vec![kv],
                        slots: Vec::new(),
                        until: None,
                    };
                    before.slots = before.slots_of(0)?;
                    region.after(before);
                }
            }
        }
        if let Some(before) = held.replace(region) {
            emit(rewrite(tag, &before))?;
        }
    }
    if let Some(last) = held {
        emit(rewrite(tag, &last))?;
    }
    Ok(())
}

/// `slots` cut into runs of at most [`MAX_VALUE`] encoded bytes, filled from the left.
fn cut<'a>(region: &Region, slots: &'a [Slot]) -> Vec<&'a [Slot]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, slot) in slots.iter().enumerate() {
        let n = 18 + region.value(slot).len();
        if i > start && size + n > MAX_VALUE {
            out.push(&slots[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    out.push(&slots[start..]);
    out
}

/// The keys holding a region's records, split where [`starts_key`] says (and [`cut`] where
/// values are large).
fn rewrite(tag: u8, region: &Region) -> Rewrite {
    let mut chunks: Vec<&[Slot]> = Vec::new();
    let mut start = 0;
    for (i, slot) in region.slots.iter().enumerate() {
        if i > start && starts_key(slot.yp) {
            chunks.push(&region.slots[start..i]);
            start = i;
        }
    }
    if start < region.slots.len() {
        chunks.push(&region.slots[start..]);
    }
    let chunks: Vec<&[Slot]> = chunks.into_iter().flat_map(|c| cut(region, c)).collect();
    let mut keys = Vec::new();
    let mut together = false;
    let mut written = vec![false; region.old.len()];
    for chunk in chunks {
        let k = key(tag, chunk[0].yp);
        // A record moves when the key it was stored in is not the key it is written to.
        together |= chunk.iter().any(|s| {
            s.stored
                .as_ref()
                .is_some_and(|(from, _)| region.old[*from].0[..] != k[..])
        });
        let value = encode_each(chunk.iter().map(|s| (s.yp, region.value(s))));
        let at = region.old.iter().position(|(old, _)| old[..] == k[..]);
        if let Some(i) = at {
            written[i] = true;
        }
        if at.is_none_or(|i| region.old[i].1[..] != value[..]) {
            keys.push((k.to_vec(), Some(value)));
        }
    }
    for ((old, _), written) in region.old.iter().zip(written) {
        if !written {
            keys.push((old.to_vec(), None));
        }
    }
    Rewrite { keys, together }
}

/// Applies a plan key by key, or as one batch where records move between keys.
pub fn apply(tree: &sled::Tree, rewrites: Vec<Rewrite>) -> Result<(), PackError> {
    for r in rewrites {
        if r.together {
            let mut batch = sled::Batch::default();
            for (k, v) in r.keys {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            tree.apply_batch(batch)?;
        } else {
            for (k, v) in r.keys {
                match v {
                    Some(v) => tree.insert(k, v)?,
                    None => tree.remove(k)?,
                };
            }
        }
    }
    Ok(())
}

/// Every person's value under `tag`, in order.
pub fn all(tree: &sled::Tree, tag: u8) -> impl Iterator<Item = Result<Record, PackError>> + '_ {
    tree.scan_prefix([tag]).flat_map(|kv| {
        let records = kv.map_err(PackError::from).and_then(|(_, v)| decode(&v));
        match records {
            Ok(r) => r.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const TAG: u8 = b'q';

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("t").unwrap()
    }

    /// A small deterministic generator, so a failure is repeatable.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    type Model = BTreeMap<Uuid, Vec<u8>>;

    /// Sets (`Some`) and removes (`None`) values as one step; returns its plan.
    fn step(
        tree: &sled::Tree,
        model: &mut Model,
        changes: BTreeMap<Uuid, Option<Vec<u8>>>,
    ) -> Vec<Rewrite> {
        let plan = plan::<PackError>(tree, TAG, changes.keys().copied(), |yp, _| {
            Ok(changes[&yp].clone())
        })
        .unwrap();
        apply(tree, plan.clone()).unwrap();
        for (yp, v) in changes {
            match v {
                Some(v) => model.insert(yp, v),
                None => model.remove(&yp),
            };
        }
        plan
    }

    /// As [`step`], through [`change`], which writes each key as it is planned.
    fn step_changing(
        tree: &sled::Tree,
        model: &mut Model,
        changes: BTreeMap<Uuid, Option<Vec<u8>>>,
    ) {
        change::<PackError>(tree, TAG, changes.keys().copied(), |yp, _| {
            Ok(changes[&yp].clone())
        })
        .unwrap();
        for (yp, v) in changes {
            match v {
                Some(v) => model.insert(yp, v),
                None => model.remove(&yp),
            };
        }
    }

    /// Every record lies in the key that covers it, no key is empty or holds more than
    /// [`PER_KEY`] people, the records are exactly the model's, and lookups find them.
    fn check(tree: &sled::Tree, model: &Model, people: &[Uuid]) {
        let keys: Vec<(sled::IVec, Vec<Record>)> = tree
            .scan_prefix([TAG])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k, decode(&v).unwrap())
            })
            .collect();
        // The keys are exactly those the people held make, whatever the steps were.
        let heads: Vec<Uuid> = model
            .keys()
            .enumerate()
            .filter(|(i, yp)| *i == 0 || starts_key(**yp))
            .map(|(_, yp)| *yp)
            .collect();
        let stored: Vec<Uuid> = keys.iter().map(|(k, _)| person_of(k)).collect();
        assert_eq!(stored, heads, "the keys the people held make");
        for (i, (k, records)) in keys.iter().enumerate() {
            assert_eq!(records[0].0, person_of(k), "a key is its first person's");
            for (yp, _) in records {
                if let Some((next, _)) = keys.get(i + 1) {
                    assert!(key(TAG, *yp)[..] < next[..], "a record past its cover");
                }
            }
        }
        let all: Model = all(tree, TAG).map(Result::unwrap).collect();
        assert_eq!(&all, model);
        let asked: Vec<Uuid> = people.iter().rev().copied().collect();
        for (yp, found) in asked.iter().zip(get_many(tree, TAG, &asked).unwrap()) {
            assert_eq!(found.as_ref(), model.get(yp), "{yp}");
            assert_eq!(get(tree, TAG, *yp).unwrap(), found);
        }
    }

    #[test]
    fn records_round_trip_and_a_cut_value_is_refused() {
        let records = vec![
            (Uuid::from_u128(1), b"demo".to_vec()),
            (Uuid::from_u128(2), Vec::new()),
        ];
        let bytes = encode(&records);
        assert_eq!(decode(&bytes).unwrap(), records);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..20]).is_err());
    }

    /// Given keys built by many steps of sets and removals, at random places and some at
    /// the right edge, planned then applied or written as planned, when every person is
    /// looked up, then each finds exactly their value.
    #[test]
    fn lookups_match_a_plain_map_through_random_steps() {
        let tree = tree();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut people: Vec<Uuid> = Vec::new();
        let mut model = Model::new();
        for round in 0..60u64 {
            let mut changes = BTreeMap::new();
            for _ in 0..rng.below(120) {
                let yp = if people.is_empty() || rng.below(3) == 0 {
                    // Newcomers: mostly random ids, some ascending like minted ones.
                    let id = if rng.below(2) == 0 {
                        Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next()))
                    } else {
                        Uuid::from_u128(
                            u128::MAX / 2 + u128::from(round * 1000) + people.len() as u128,
                        )
                    };
                    people.push(id);
                    id
                } else {
                    people[rng.below(people.len())]
                };
                let value =
                    (rng.below(8) != 0).then(|| rng.next().to_be_bytes()[..rng.below(8)].to_vec());
                changes.insert(yp, value);
            }
            // Half the steps write each key as it is planned, which must make the same keys.
            if round % 2 == 0 {
                step(&tree, &mut model, changes);
            } else {
                step_changing(&tree, &mut model, changes);
            }
            check(&tree, &model, &people);
        }
        assert!(model.len() > 1000, "many keys: {} people", model.len());
        let everyone = people.iter().map(|yp| (*yp, None)).collect();
        step(&tree, &mut model, everyone);
        assert_eq!(tree.scan_prefix([TAG]).count(), 0, "every key goes");
    }

    /// People minted in order fill keys from the left and start the next one, so no stored
    /// record moves and no step needs a batch.
    #[test]
    fn people_in_order_fill_keys_without_moving_records() {
        let tree = tree();
        let mut model = Model::new();
        let mut people = Vec::new();
        for round in 0..20u128 {
            let mut changes = BTreeMap::new();
            for i in 0..13 {
                let yp = Uuid::from_u128(round * 100 + i);
                people.push(yp);
                changes.insert(yp, Some(vec![1]));
            }
            let plan = step(&tree, &mut model, changes);
            assert!(plan.iter().all(|r| !r.together), "round {round}");
        }
        check(&tree, &model, &people);
        assert!(tree.scan_prefix([TAG]).count() > 1, "more than one key");
    }

    /// Large values are cut into keys of at most [`MAX_VALUE`], filled from the left, so
    /// people added in order still move nothing; every value is found.
    #[test]
    fn large_values_are_cut_into_keys_of_bounded_size() {
        let tree = tree();
        let mut model = Model::new();
        let mut people = Vec::new();
        for round in 0..30u128 {
            let changes: BTreeMap<Uuid, Option<Vec<u8>>> = (0..7)
                .map(|i| {
                    let yp = Uuid::from_u128(round * 10 + i);
                    people.push(yp);
                    (yp, Some(vec![round as u8; 512]))
                })
                .collect();
            let plan = step(&tree, &mut model, changes);
            assert!(plan.iter().all(|r| !r.together), "round {round}");
        }
        for kv in tree.scan_prefix([TAG]) {
            let (_, v) = kv.unwrap();
            assert!(v.len() <= MAX_VALUE, "a value of {} bytes", v.len());
        }
        assert!(tree.scan_prefix([TAG]).count() >= 210 * 530 / MAX_VALUE);
        let held: Model = super::all(&tree, TAG).map(Result::unwrap).collect();
        assert_eq!(held, model);
        for (yp, found) in people.iter().zip(get_many(&tree, TAG, &people).unwrap()) {
            assert_eq!(found.as_ref(), model.get(yp));
        }
        // A value growing in the middle cuts again, and moves what follows, together.
        let middle = people[100];
        let plan = step(
            &tree,
            &mut model,
            BTreeMap::from([(middle, Some(vec![9; 4000]))]),
        );
        assert!(plan.iter().any(|r| r.together));
        for kv in tree.scan_prefix([TAG]) {
            assert!(kv.unwrap().1.len() <= MAX_VALUE);
        }
        assert_eq!(get(&tree, TAG, middle).unwrap(), Some(vec![9; 4000]));
        let held: Model = super::all(&tree, TAG).map(Result::unwrap).collect();
        assert_eq!(held, model);
    }

    /// A newcomer who starts a key, landing in the middle of one, moves the records after
    /// them to their key, and the two keys are written together; their removal moves the
    /// records back, together again.
    #[test]
    fn keys_split_and_merge_with_the_people_who_start_them() {
        let tree = tree();
        let mut model = Model::new();
        // Ids far enough apart to find one that starts a key between two that do not.
        let plain: Vec<Uuid> = (1..)
            .map(|i: u128| Uuid::from_u128(i << 64))
            .filter(|yp| !starts_key(*yp))
            .take(10)
            .collect();
        let starter = (plain[4].as_u128() + 1..)
            .map(Uuid::from_u128)
            .find(|yp| starts_key(*yp))
            .unwrap();
        assert!(starter < plain[5]);
        step(
            &tree,
            &mut model,
            plain.iter().map(|yp| (*yp, Some(vec![1]))).collect(),
        );
        assert_eq!(tree.scan_prefix([TAG]).count(), 1);

        let plan = step(
            &tree,
            &mut model,
            BTreeMap::from([(starter, Some(vec![2]))]),
        );
        assert_eq!(plan.len(), 1);
        assert!(plan[0].together);
        assert_eq!(tree.scan_prefix([TAG]).count(), 2);
        let mut people = plain.clone();
        people.push(starter);
        check(&tree, &model, &people);

        let plan = step(&tree, &mut model, BTreeMap::from([(starter, None)]));
        assert!(plan[0].together);
        assert_eq!(tree.scan_prefix([TAG]).count(), 1);
        check(&tree, &model, &people);

        // The first person held goes: the key is the next one's.
        let plan = step(&tree, &mut model, BTreeMap::from([(plain[0], None)]));
        assert!(plan[0].together);
        check(&tree, &model, &people);
        assert_eq!(
            person_of(&tree.scan_prefix([TAG]).next().unwrap().unwrap().0),
            plain[1]
        );
    }
}
