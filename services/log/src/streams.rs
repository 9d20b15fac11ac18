//! Each young person's stream: the seqs of their entries in version order, 64 versions a
//! segment. A person's first segment (versions 1 to 64, all most people ever have) is
//! packed with other people's (`u`, see [`crate::packed`]); later ones are keys of their own
//! (`t` young person, first version → the seqs, 8 bytes each).
//!
//! One key per event (the `s` keys of earlier versions) put a new key at a random place in
//! a large tree for nearly every event, and sled 0.34 splits a leaf past 16 keys, copying
//! its parent index node (up to 256 children) each time: after the id index left sled's
//! random inserts (see [`crate::ids`]) those splits were most of the indexer's time. With
//! segments, an event of a known person rewrites one small value in place (a leaf copy, no
//! split). A key per person was still a stub in sled's memory for every 16 people, for
//! good (about 20 MB a million people, BENCHMARKS.md session 20), hence first segments
//! packed about 32 people a key. A new person's goes in at the growing edge, since the exchange
//! mints time-ordered ids.
//!
//! A segment's slots are fixed by version (slot = version − first), so writing the same
//! event twice writes the same slot: replaying `x` chunks after a crash is harmless. Seqs
//! are placed in version order, so a slot past the segment's end is a gap, which is
//! refused as damage rather than papered over.

use crate::error::LogError;
use crate::keys::{self, Indexed};
use crate::packed;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Versions one key holds: 512 bytes at most, so a leaf of them stays far below the size
/// at which sled writes a page as a blob file (which it never fsyncs).
pub const SEGMENT: u64 = 64;

const PREFIX: u8 = b't';

/// The tag of packed first segments.
pub const FIRSTS: u8 = b'u';

/// People whose first segments are written at once while moving many (an older log's).
const FIRSTS_AT_ONCE: usize = 4096;

pub fn prefix(yp: Uuid) -> [u8; 17] {
    let mut k = [PREFIX; 17];
    k[1..].copy_from_slice(yp.as_bytes());
    k
}

/// The first version of the segment holding `version` (versions start at 1).
fn first_of(version: u64) -> u64 {
    (version.saturating_sub(1) / SEGMENT) * SEGMENT + 1
}

fn key(yp: Uuid, first: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..17].copy_from_slice(&prefix(yp));
    k[17..].copy_from_slice(&first.to_be_bytes());
    k
}

fn gap(version: u64, seq: u64) -> LogError {
    LogError::Corrupt {
        seq,
        reason: format!("its person's stream has no entry for the version before {version}"),
    }
}

/// Puts `seq` in the slot of `version` in a segment starting at `first`. Returns whether
/// the segment changed.
fn place(segment: &mut Vec<u8>, first: u64, version: u64, seq: u64) -> Result<bool, LogError> {
    let at = (version - first) as usize * 8;
    let bytes = seq.to_be_bytes();
    if at + 8 <= segment.len() {
        if segment[at..at + 8] == bytes {
            return Ok(false);
        }
        segment[at..at + 8].copy_from_slice(&bytes);
        Ok(true)
    } else if at == segment.len() {
        segment.extend_from_slice(&bytes);
        Ok(true)
    } else {
        Err(gap(version, seq))
    }
}

/// A segment being filled: read once, written back once if a slot changed.
struct Open {
    key: [u8; 25],
    first: u64,
    slots: Vec<u8>,
    dirty: bool,
}

/// Writes slots given as (person, version, seq) in person-then-version order, with one
/// read and at most one write per segment (or packed key) they touch. Returns how many
/// slots changed.
fn write_slots(
    tree: &sled::Tree,
    slots: impl IntoIterator<Item = Result<(Uuid, u64, u64), LogError>>,
) -> Result<usize, LogError> {
    let close = |open: Option<Open>| -> Result<(), LogError> {
        if let Some(o) = open.filter(|o| o.dirty) {
            tree.insert(o.key, o.slots)?;
        }
        Ok(())
    };
    let mut changed = 0;
    let mut open: Option<Open> = None;
    let mut firsts: BTreeMap<Uuid, Vec<(u64, u64)>> = BTreeMap::new();
    for slot in slots {
        let (yp, version, seq) = slot?;
        let first = first_of(version);
        if first == 1 {
            if firsts.len() == FIRSTS_AT_ONCE && !firsts.contains_key(&yp) {
                changed += write_firsts(tree, &std::mem::take(&mut firsts))?;
            }
            firsts.entry(yp).or_default().push((version, seq));
            continue;
        }
        let k = key(yp, first);
        if open.as_ref().is_none_or(|o| o.key != k) {
            close(open.take())?;
            let slots = tree.get(k)?.map(|v| v.to_vec()).unwrap_or_default();
            open = Some(Open {
                key: k,
                first,
                slots,
                dirty: false,
            });
        }
        let o = open.as_mut().expect("just opened");
        if place(&mut o.slots, o.first, version, seq)? {
            o.dirty = true;
            changed += 1;
        }
    }
    close(open)?;
    changed += write_firsts(tree, &firsts)?;
    Ok(changed)
}

/// Places slots (version, seq) of people's first segments, each person's in version order.
fn write_firsts(
    tree: &sled::Tree,
    firsts: &BTreeMap<Uuid, Vec<(u64, u64)>>,
) -> Result<usize, LogError> {
    let mut changed = 0;
    packed::change(tree, FIRSTS, firsts.keys().copied(), |yp, stored| {
        let mut segment = stored.map(<[u8]>::to_vec).unwrap_or_default();
        for (version, seq) in &firsts[&yp] {
            if place(&mut segment, 1, *version, *seq)? {
                changed += 1;
            }
        }
        Ok::<_, LogError>(Some(segment))
    })?;
    Ok(changed)
}

/// Writes the stream slots of `records` (in seq order, as a group holds them), one write
/// per segment they touch. Returns how many slots were not already as given.
pub fn apply(tree: &sled::Tree, records: &[Indexed]) -> Result<usize, LogError> {
    let mut order: Vec<&Indexed> = records.iter().collect();
    // By person and version; a person's versions rise with seq, so stable order suffices.
    order.sort_by_key(|(_, r)| (r.young_person, r.version));
    write_slots(
        tree,
        order
            .into_iter()
            .map(|(_, r)| Ok((r.young_person, r.version, r.seq))),
    )
}

/// Forgets `version` and the later versions of its segment, if the slot of `version` holds
/// `seq`: opening the log does this for each entry past the head that a crash cut short.
/// Returns whether it did.
pub fn cut(tree: &sled::Tree, yp: Uuid, version: u64, seq: u64) -> Result<bool, LogError> {
    let first = first_of(version);
    let at = (version - first) as usize * 8;
    let holds = |segment: &[u8]| segment.len() >= at + 8 && keys::u64_of(&segment[at..]) == seq;
    if first == 1 {
        let mut did = false;
        packed::change(tree, FIRSTS, [yp], |_, stored| {
            Ok::<_, LogError>(match stored {
                Some(segment) if holds(segment) => {
                    did = true;
                    (at > 0).then(|| segment[..at].to_vec())
                }
                other => other.map(<[u8]>::to_vec),
            })
        })?;
        return Ok(did);
    }
    let k = key(yp, first);
    let Some(segment) = tree.get(k)? else {
        return Ok(false);
    };
    if !holds(&segment) {
        return Ok(false);
    }
    if at == 0 {
        tree.remove(k)?;
    } else {
        tree.insert(k, &segment[..at])?;
    }
    Ok(true)
}

/// The segment holding `version`, as stored.
fn segment(tree: &sled::Tree, yp: Uuid, first: u64) -> Result<Option<Vec<u8>>, LogError> {
    if first == 1 {
        Ok(packed::get(tree, FIRSTS, yp)?)
    } else {
        Ok(tree.get(key(yp, first))?.map(|v| v.to_vec()))
    }
}

/// The seq at `version` of a person's stream, if the stream reaches it.
pub fn slot(tree: &sled::Tree, yp: Uuid, version: u64) -> Result<Option<u64>, LogError> {
    let first = first_of(version);
    let at = (version - first) as usize * 8;
    Ok(segment(tree, yp, first)?
        .filter(|segment| segment.len() >= at + 8)
        .map(|segment| keys::u64_of(&segment[at..])))
}

/// A person's seqs, in version order.
pub fn seqs(tree: &sled::Tree, yp: Uuid) -> Result<Vec<u64>, LogError> {
    seqs_after_first(tree, yp, segment(tree, yp, 1)?)
}

/// Many people's seqs, in the order asked: their first segments read in key order, one
/// read for the people a packed key holds ([`packed::get_many`]).
pub fn seqs_many(tree: &sled::Tree, people: &[Uuid]) -> Result<Vec<Vec<u64>>, LogError> {
    packed::get_many(tree, FIRSTS, people)?
        .into_iter()
        .zip(people)
        .map(|(first, yp)| seqs_after_first(tree, *yp, first))
        .collect()
}

/// A person's seqs, given their first segment as stored.
fn seqs_after_first(
    tree: &sled::Tree,
    yp: Uuid,
    first: Option<Vec<u8>>,
) -> Result<Vec<u64>, LogError> {
    let first = first.unwrap_or_default();
    let mut out: Vec<u64> = first.chunks_exact(8).map(keys::u64_of).collect();
    if is_full(&first) {
        for v in tree.scan_prefix(prefix(yp)).values() {
            out.extend(v?.chunks_exact(8).map(keys::u64_of));
        }
    }
    Ok(out)
}

/// A person's current version: the last slot of their last segment; 0 for no one.
pub fn version(tree: &sled::Tree, yp: Uuid) -> Result<u64, LogError> {
    let first = segment(tree, yp, 1)?.unwrap_or_default();
    if !is_full(&first) {
        return Ok((first.len() / 8) as u64);
    }
    match tree.scan_prefix(prefix(yp)).next_back().transpose()? {
        None => Ok(SEGMENT),
        Some((k, v)) => Ok(keys::u64_of(&k[17..]) + (v.len() / 8) as u64 - 1),
    }
}

/// Whether a segment holds all its versions. Versions are placed in order, so a person
/// has later segments only past a full first one, and most people's streams are read
/// with one lookup.
fn is_full(segment: &[u8]) -> bool {
    segment.len() == SEGMENT as usize * 8
}

/// Moves the first segments of a log in layout 3 or earlier, a key each, into packed keys,
/// then removes them. A crash midway leaves keys that the next open moves again into the
/// same slots. Returns how many people's it moved.
pub fn pack_first_segments(tree: &sled::Tree) -> Result<usize, LogError> {
    let is_first = |k: &[u8]| k.len() == 25 && keys::u64_of(&k[17..]) == 1;
    let mut moved = 0;
    let slots = tree.scan_prefix([PREFIX]).filter_map(|kv| {
        let (k, v) = match kv {
            Ok(kv) => kv,
            Err(e) => return Some(vec![Err(e.into())]),
        };
        if !is_first(&k) {
            return None;
        }
        moved += 1;
        let yp = Uuid::from_slice(&k[1..17]).expect("16 bytes");
        Some(
            v.chunks_exact(8)
                .enumerate()
                .map(|(i, seq)| Ok((yp, i as u64 + 1, keys::u64_of(seq))))
                .collect(),
        )
    });
    write_slots(tree, slots.flatten())?;
    if moved > 0 {
        for k in tree.scan_prefix([PREFIX]).keys() {
            let k = k?;
            if is_first(&k) {
                tree.remove(k)?;
            }
        }
        tracing::info!(
            people = moved,
            "packed the first stream segments of an older log"
        );
    }
    Ok(moved)
}

/// Moves the one-key-per-event `s` keys of a log written by an earlier version into
/// segments, then removes them. They are read in order (person, then version), so each
/// segment is written once. A crash midway leaves `s` keys that the next open moves again
/// into the same slots. Returns how many it moved.
pub fn migrate(tree: &sled::Tree) -> Result<usize, LogError> {
    let mut moved = 0;
    let slots = tree.scan_prefix(keys::STREAM_PREFIX).map(|kv| {
        let (k, v) = kv?;
        if k.len() != 25 || v.len() != 8 {
            return Err(LogError::Storage("a stream key is malformed".into()));
        }
        moved += 1;
        let yp = Uuid::from_slice(&k[1..17]).expect("16 bytes");
        Ok((yp, keys::u64_of(&k[17..]), keys::u64_of(&v)))
    });
    write_slots(tree, slots)?;
    if moved > 0 {
        for k in tree.scan_prefix(keys::STREAM_PREFIX).keys() {
            tree.remove(k?)?;
        }
        tracing::info!(
            entries = moved,
            "moved the stream keys of an older log into segments"
        );
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::indexed as record;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("log").unwrap();
        (dir, tree)
    }

    /// Streams read back in version order across segments and groups; the version is the
    /// last slot; applying the same records again changes nothing.
    #[test]
    fn streams_read_back_across_segments_and_replays_change_nothing() {
        let (_dir, tree) = tree();
        // Two people interleaved, 150 events each, in groups of 7.
        let all: Vec<Indexed> = (1..=300)
            .map(|seq| record(seq, seq.div_ceil(2), (seq % 2) as u128))
            .collect();
        for group in all.chunks(7) {
            assert_eq!(apply(&tree, group).unwrap(), group.len());
        }
        for yp in [0u128, 1] {
            let want: Vec<u64> = (1..=300).filter(|s| (s % 2) as u128 == yp).collect();
            assert_eq!(seqs(&tree, Uuid::from_u128(yp)).unwrap(), want);
            assert_eq!(version(&tree, Uuid::from_u128(yp)).unwrap(), 150);
        }
        assert_eq!(
            tree.scan_prefix([PREFIX]).count(),
            4,
            "two later segments each"
        );
        assert_eq!(
            tree.scan_prefix([FIRSTS]).count(),
            1,
            "both first segments in one key"
        );
        assert_eq!(apply(&tree, &all).unwrap(), 0);
        assert_eq!(version(&tree, Uuid::from_u128(9)).unwrap(), 0);
        assert!(seqs(&tree, Uuid::from_u128(9)).unwrap().is_empty());
    }

    /// Cutting the entries a crash left past the head takes them off the end of their
    /// segment, packed or not, and only if the slot holds that entry.
    #[test]
    fn cuts_take_entries_off_the_end_of_either_kind_of_segment() {
        let (_dir, tree) = tree();
        let all: Vec<Indexed> = (1..=70).map(|seq| record(seq, seq, 4)).collect();
        apply(&tree, &all).unwrap();
        apply(&tree, &[record(71, 1, 5), record(72, 2, 5)]).unwrap();
        let (four, five) = (Uuid::from_u128(4), Uuid::from_u128(5));
        assert!(!cut(&tree, five, 2, 99).unwrap(), "another entry's slot");
        assert!(cut(&tree, five, 2, 72).unwrap());
        assert_eq!(seqs(&tree, five).unwrap(), vec![71]);
        assert!(cut(&tree, five, 1, 71).unwrap());
        assert_eq!(version(&tree, five).unwrap(), 0);
        assert!(!cut(&tree, five, 1, 71).unwrap(), "nothing left to cut");
        assert!(cut(&tree, four, 66, 66).unwrap());
        assert_eq!(version(&tree, four).unwrap(), 65);
        assert!(cut(&tree, four, 65, 65).unwrap());
        assert_eq!(version(&tree, four).unwrap(), 64);
        assert!(cut(&tree, four, 60, 60).unwrap());
        assert_eq!(seqs(&tree, four).unwrap(), (1..60).collect::<Vec<_>>());
    }

    /// A layout-3 log's first segments, a key each, move into packed keys and are removed;
    /// later segments stay; moving again finds nothing.
    #[test]
    fn first_segments_of_an_older_log_are_packed() {
        let (_dir, tree) = tree();
        for n in 0..100u128 {
            let yp = Uuid::from_u128(n * 7919);
            let versions = if n == 3 { 70 } else { 3 };
            let slots: Vec<u8> = (1..=versions.min(64))
                .flat_map(|v: u64| (n as u64 * 1000 + v).to_be_bytes())
                .collect();
            tree.insert(key(yp, 1), slots).unwrap();
            if versions > 64 {
                let later: Vec<u8> = (65..=versions)
                    .flat_map(|v: u64| (n as u64 * 1000 + v).to_be_bytes())
                    .collect();
                tree.insert(key(yp, 65), later).unwrap();
            }
        }
        assert_eq!(pack_first_segments(&tree).unwrap(), 100);
        for n in 0..100u128 {
            let yp = Uuid::from_u128(n * 7919);
            let versions = if n == 3 { 70 } else { 3 };
            let want: Vec<u64> = (1..=versions).map(|v| n as u64 * 1000 + v).collect();
            assert_eq!(seqs(&tree, yp).unwrap(), want, "person {n}");
            assert_eq!(version(&tree, yp).unwrap(), versions);
        }
        assert_eq!(
            tree.scan_prefix([PREFIX]).count(),
            1,
            "the one later segment"
        );
        let heads = (0..100u128)
            .filter(|n| *n == 0 || packed::starts_key(Uuid::from_u128(n * 7919)))
            .count();
        assert_eq!(
            tree.scan_prefix([FIRSTS]).count(),
            heads,
            "packed, not a key each"
        );
        assert!(heads < 20);
        assert_eq!(pack_first_segments(&tree).unwrap(), 0);
    }

    /// A version past the end of its segment (one missing before it) is refused.
    #[test]
    fn a_gap_in_a_stream_is_refused() {
        let (_dir, tree) = tree();
        apply(&tree, &[record(1, 1, 5)]).unwrap();
        let err = apply(&tree, &[record(3, 3, 5)]).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { seq: 3, .. }), "{err}");
        assert_eq!(seqs(&tree, Uuid::from_u128(5)).unwrap(), vec![1]);
    }

    /// An older log's `s` keys move into segments and are removed.
    #[test]
    fn one_key_per_event_moves_into_segments() {
        let (_dir, tree) = tree();
        for version in 1..=70u64 {
            tree.insert(
                keys::stream(Uuid::from_u128(3), version),
                &(version * 10).to_be_bytes()[..],
            )
            .unwrap();
        }
        tree.insert(keys::stream(Uuid::from_u128(4), 1), &5u64.to_be_bytes()[..])
            .unwrap();
        assert_eq!(migrate(&tree).unwrap(), 71);
        assert_eq!(
            seqs(&tree, Uuid::from_u128(3)).unwrap(),
            (1..=70).map(|v| v * 10).collect::<Vec<_>>()
        );
        assert_eq!(version(&tree, Uuid::from_u128(4)).unwrap(), 1);
        assert!(tree.scan_prefix(keys::STREAM_PREFIX).next().is_none());
        assert_eq!(migrate(&tree).unwrap(), 0);
    }
}
