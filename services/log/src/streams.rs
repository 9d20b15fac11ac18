//! Each young person's stream: the seqs of their entries in version order, 64 versions a
//! key (`t` young person, first version of the segment → seqs, 8 bytes each).
//!
//! One key per event (the `s` keys of earlier versions) put a new key at a random place in
//! a large tree for nearly every event, and sled 0.34 splits a leaf past 16 keys, copying
//! its parent index node (up to 256 children) each time: after the id index left sled's
//! random inserts (see [`crate::ids`]) those splits were most of the indexer's time. With
//! segments, an event of a known person rewrites one small value in place (a leaf copy, no
//! split) and the tree grows by one key per 64 events of a person, not per event. A new
//! person's first segment goes in at the tree's growing edge, since the exchange mints
//! time-ordered ids.
//!
//! A segment's slots are fixed by version (slot = version − first), so writing the same
//! event twice writes the same slot: replaying `x` chunks after a crash is harmless. Seqs
//! are placed in version order, so a slot past the segment's end is a gap, which is
//! refused as damage rather than papered over.

use crate::error::LogError;
use crate::keys::{self, Indexed};
use uuid::Uuid;

/// Versions one key holds: 512 bytes at most, so a leaf of them stays far below the size
/// at which sled writes a page as a blob file (which it never fsyncs).
pub const SEGMENT: u64 = 64;

const PREFIX: u8 = b't';

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
/// read and at most one write per segment they touch. Returns how many slots changed.
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
    for slot in slots {
        let (yp, version, seq) = slot?;
        let first = first_of(version);
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
    let k = key(yp, first);
    let Some(segment) = tree.get(k)? else {
        return Ok(false);
    };
    let at = (version - first) as usize * 8;
    if segment.len() < at + 8 || keys::u64_of(&segment[at..]) != seq {
        return Ok(false);
    }
    if at == 0 {
        tree.remove(k)?;
    } else {
        tree.insert(k, &segment[..at])?;
    }
    Ok(true)
}

/// The seq at `version` of a person's stream, if the stream reaches it.
pub fn slot(tree: &sled::Tree, yp: Uuid, version: u64) -> Result<Option<u64>, LogError> {
    let first = first_of(version);
    let at = (version - first) as usize * 8;
    Ok(tree
        .get(key(yp, first))?
        .filter(|segment| segment.len() >= at + 8)
        .map(|segment| keys::u64_of(&segment[at..])))
}

/// A person's seqs, in version order.
pub fn seqs(tree: &sled::Tree, yp: Uuid) -> Result<Vec<u64>, LogError> {
    let mut out = Vec::new();
    for v in tree.scan_prefix(prefix(yp)).values() {
        out.extend(v?.chunks_exact(8).map(keys::u64_of));
    }
    Ok(out)
}

/// A person's current version: the last slot of their last segment; 0 for no one.
pub fn version(tree: &sled::Tree, yp: Uuid) -> Result<u64, LogError> {
    match tree.scan_prefix(prefix(yp)).next_back().transpose()? {
        None => Ok(0),
        Some((k, v)) => Ok(keys::u64_of(&k[17..]) + (v.len() / 8) as u64 - 1),
    }
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
        assert_eq!(tree.scan_prefix([PREFIX]).count(), 6, "three segments each");
        assert_eq!(apply(&tree, &all).unwrap(), 0);
        assert_eq!(version(&tree, Uuid::from_u128(9)).unwrap(), 0);
        assert!(seqs(&tree, Uuid::from_u128(9)).unwrap().is_empty());
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
