//! The key space of the `log` tree. Big-endian numbers, so sled's byte order is log order.
//!
//! - `e` seq → [`crate::record::Entry`] bytes
//! - `i` event id → seq, version, young person, body digest: written by earlier versions
//!   of the log, one key per id; opening moves them into the id index's runs
//! - `j` run, first id → a chunk of a run of the id index, and `f` run, part → its filter:
//!   written by earlier versions (layout 2); opening moves each run into its file under
//!   `ids/`
//! - `m` → the id index's manifest: its live runs' files (see [`crate::ids`])
//! - `s` young person, version → seq: written by earlier versions, one key per event;
//!   opening moves them into `t` segments
//! - `t` young person, first version → the seqs of 64 versions from the 65th on; until
//!   layout 4 also the first 64 (see [`crate::streams`])
//! - `u` young person → people's first 64 seqs, packed many people to a key
//!   ([`crate::packed`], [`crate::streams`])
//! - `w` young person → people's keys, wrapped, packed many people to a key
//!   ([`crate::vault`]); `p` young person → one person's, as layouts before 5 kept them
//! - `h` → the last seq of the last whole group: moved after everything a group writes, so
//!   it is where the log ends after a crash (see [`crate::writer::Head::recover`])
//! - `v` → the layout of these keys ([`LAYOUT_NOW`])
//! - `x` seq → the id records of the entries from seq on, kept until the id index holds
//!   them in a run; their stream keys are written meanwhile (see [`crate::index`])

use crate::error::LogError;
use uuid::Uuid;

pub const LAYOUT: &[u8] = b"v";

/// The layout of the log's keys: 2 since ids went into runs and streams into segments; 3
/// since the id index's runs are files (`ids/`) rather than `j` and `f` keys; 4 since first
/// stream segments are packed (`u`); 5 since person keys are packed (`w`). Opening moves a
/// log in an older layout forward (see [`crate::ids`], [`crate::streams`] and
/// [`crate::vault`]); a log in a newer one is refused, because this build would misread
/// it, and misreading the id index would take every repeat for a new event.
pub const LAYOUT_NOW: &[u8] = b"5";

/// The layout a log was written in: `None` for a new log or one older than layout 2.
pub fn stored_layout(tree: &sled::Tree) -> Result<Option<u32>, LogError> {
    Ok(tree
        .get(LAYOUT)?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
}

/// Records this build's layout, once opening has moved the log to it; a write only when
/// it changes, so an ordinary open writes nothing.
pub fn settle_layout(tree: &sled::Tree) -> Result<(), LogError> {
    if tree.get(LAYOUT)?.as_deref() != Some(LAYOUT_NOW) {
        tree.insert(LAYOUT, LAYOUT_NOW)?;
    }
    Ok(())
}

/// Refuses a log whose layout is newer than this build's.
pub fn check_layout(tree: &sled::Tree) -> Result<(), LogError> {
    let Some(found) = tree.get(LAYOUT)? else {
        return Ok(());
    };
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u32>().ok();
    match (number(&found), number(LAYOUT_NOW)) {
        (Some(found), Some(now)) if found <= now => Ok(()),
        _ => Err(LogError::Storage(format!(
            "the log's layout ({}) is newer than this build's ({}): open it with the build that wrote it",
            String::from_utf8_lossy(&found),
            String::from_utf8_lossy(LAYOUT_NOW)
        ))),
    }
}

/// A one-byte prefix and a sequence number: the shape of every key the log orders by seq.
pub(crate) fn at_seq(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn entry(seq: u64) -> [u8; 9] {
    at_seq(b'e', seq)
}

pub const ENTRY_PREFIX: &[u8] = b"e";

pub const HEAD: &[u8] = b"h";

pub const PENDING_PREFIX: &[u8] = b"x";

pub fn pending(first: u64) -> [u8; 9] {
    at_seq(b'x', first)
}

/// Keys of logs written before the id index kept runs ([`crate::ids`]); opening moves them.
pub const ID_PREFIX: &[u8] = b"i";

pub fn id(id: Uuid) -> [u8; 17] {
    let mut k = [b'i'; 17];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// Keys of logs written by earlier versions, one per event; opening moves them into
/// segments ([`crate::streams`]).
pub const STREAM_PREFIX: &[u8] = b"s";

pub fn stream_prefix(yp: Uuid) -> [u8; 17] {
    let mut k = [b's'; 17];
    k[1..].copy_from_slice(yp.as_bytes());
    k
}

pub fn stream(yp: Uuid, version: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..17].copy_from_slice(&stream_prefix(yp));
    k[17..].copy_from_slice(&version.to_be_bytes());
    k
}

pub fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// What the idempotency key remembers: enough to give "the first answer again" without
/// reading the entry, and the digest to tell a retry from a different body.
#[derive(Clone, Copy)]
pub struct IdRecord {
    pub seq: u64,
    pub version: u64,
    pub young_person: Uuid,
    pub digest: [u8; 32],
}

impl IdRecord {
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.version.to_be_bytes());
        b[16..32].copy_from_slice(self.young_person.as_bytes());
        b[32..].copy_from_slice(&self.digest);
        b
    }

    pub fn decode(b: &[u8]) -> IdRecord {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&b[32..64]);
        IdRecord {
            seq: u64_of(&b[..8]),
            version: u64_of(&b[8..16]),
            young_person: Uuid::from_slice(&b[16..32]).expect("16 bytes"),
            digest,
        }
    }
}

/// One new event's index: its id and what the id index will hold for it (seq, version,
/// person, digest), from which its stream key follows.
pub type Indexed = (Uuid, IdRecord);

/// The stored size of an [`Indexed`]: the id, then the encoded record.
pub const INDEXED: usize = 16 + 64;

/// The stored bytes of an [`Indexed`].
pub fn encode_indexed(id: &Uuid, r: &IdRecord) -> [u8; INDEXED] {
    let mut b = [0u8; INDEXED];
    b[..16].copy_from_slice(id.as_bytes());
    b[16..].copy_from_slice(&r.encode());
    b
}

/// Reads an [`Indexed`] from exactly [`INDEXED`] bytes.
pub fn decode_indexed(b: &[u8]) -> Indexed {
    let id = Uuid::from_slice(&b[..16]).expect("16 bytes");
    (id, IdRecord::decode(&b[16..INDEXED]))
}

/// The index record of the entry at `seq`, version `version` of person `yp`, for tests.
#[cfg(test)]
pub fn indexed(seq: u64, version: u64, yp: u128) -> Indexed {
    (
        Uuid::from_u128(1000 + seq as u128),
        IdRecord {
            seq,
            version,
            young_person: Uuid::from_u128(yp),
            digest: [seq as u8; 32],
        },
    )
}
