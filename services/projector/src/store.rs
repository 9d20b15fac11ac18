//! The projections tree. One sled tree with prefixed keys. A step writes its keys one by
//! one and the checkpoint last (not as a sled batch: see `dispatcher::Writes`); after a
//! crash, opening removes the runs past the checkpoint and the step is projected again,
//! rewriting every other key as it was, so the projections are those of a prefix of the log.
//!
//! - `c` → checkpoint (last applied seq)
//! - `f` agency 0 first-seq → [`FeedItem`]s: a run of the agency's disclosures (binary, `codec`)
//! - `d` first-seq → [`DisclosureRecord`]s: a run of the disclosure log (binary, `codec`)
//! - `w` agency 0 person → [`Purges`]: where withdrawals cut off consent-based data
//! - `g` agency 0 person → [`Review`]s: the person's grants in force that the agency
//!   recorded, each with its review date and seq. One key per (agency, person), rewritten
//!   from the person's state whenever a grant starts or ends: a renewal is one write, where
//!   a key per grant cost an insert and a remove (a quarter of a rebuild's writes). The
//!   review reads the agency's keys and keeps those due, an occasional scan of one prefix.
//! - `v` → the layout of this tree ([`LAYOUT`]); a tree in another layout is cleared and
//!   projected again at open
//! - `J`, `E`, `M`: the identity registry ([`crate::registry`]; its runs are files in
//!   [`crate::registry::DIR`]): the people registered under each key, a key being `x` and
//!   SHA-256(scheme, scope, value) cut to 16 bytes for an identifier, or `n` and
//!   SHA-256(date of birth, normalised name) for the registry's fallback
//! - `l` person → the latest-destination index ([`crate::latest`]): for the people from that
//!   person to the next `l` key, [`destination_digest`] of the latest `destination.recorded`
//!   each agency sourced about them, then its seq: an import row that repeats it is known
//!   unchanged with one lookup, without reading (and decrypting) the person's log stream
//!
//! Registry keys are digests, not the identifiers, names and dates themselves: the
//! projections hold no personal data in the clear (ARCHITECTURE.md, erasure seam).
//!
//! Feeds and the disclosure log are stored as runs (one step's items, at most [`RUN`]) under
//! the position of their first item, rather than a key per item: sled copies a node on every
//! insert, so keys, not bytes, are what writing costs. Runs are written once and never
//! rewritten; a reader finds the run holding a position with one reverse range lookup.

use pathway_core::catalogue::Category;
use pathway_core::date::Day;
use pathway_core::identity::Scheme;
use pathway_core::policy::{Basis, Refusal, Restored};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error("projection storage: {0}")]
    Storage(String),
    #[error("log: {0}")]
    Log(#[from] pathway_log::LogError),
    #[error("stored projection record is unreadable: {0}")]
    Corrupt(String),
}

impl From<pathway_log::sorted::RunError> for ProjectionError {
    fn from(e: pathway_log::sorted::RunError) -> Self {
        use pathway_log::sorted::RunError;
        match e {
            RunError::Storage(e) => e.into(),
            RunError::Io(e) => ProjectionError::Storage(e),
            damage => ProjectionError::Corrupt(format!("the identity registry: {damage}")),
        }
    }
}

impl From<pathway_log::packed::PackError> for ProjectionError {
    fn from(e: pathway_log::packed::PackError) -> Self {
        use pathway_log::packed::PackError;
        match e {
            PackError::Storage(e) => e.into(),
            damage => ProjectionError::Corrupt(format!("the latest-destination index: {damage}")),
        }
    }
}

impl From<sled::Error> for ProjectionError {
    fn from(e: sled::Error) -> Self {
        ProjectionError::Storage(e.to_string())
    }
}

/// Most items in one stored run, so that reading one item never decodes a huge value.
pub const RUN: usize = 256;

/// A run is closed once it holds this many bytes. sled 0.34 writes a page over 128 KiB as a
/// blob file of its own and never fsyncs it, so after a power cut a projection could be
/// silently short of what it held; a leaf splits only past 16 keys, so runs of a few KiB
/// keep every leaf under that size (the log's runs have the same bound, for the same reason).
pub const RUN_BYTES: usize = 4 * 1024;

/// One disclosure in an agency's feed: a reference to a log entry and how much of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedItem {
    pub seq: u64,
    pub young_person: Uuid,
    pub category: Category,
    pub basis: Basis,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fields: Option<Vec<String>>,
    /// On a grant's item: the earlier events it brought the recipient up to date with.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub restored: Vec<Restored>,
}

/// One line of the disclosure log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisclosureRecord {
    /// The log position whose projection made the decision: the event's own position, or a
    /// later grant's when the event was restored.
    pub at: u64,
    /// The event decided on.
    pub seq: u64,
    pub event_id: Uuid,
    pub young_person: Uuid,
    pub recipient: String,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Decision {
    Disclosed { basis: Basis },
    Refused { reason: Refusal },
}

/// Where purges cut off what a recipient's read model shows of one person.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Purges {
    /// Per category, the position of the latest withdrawal: consent-based disclosures of
    /// that category made before it no longer show.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub withdrawn: BTreeMap<Category, u64>,
    /// Per flow, the position up to which retention purged: disclosures on that flow made
    /// at or before it no longer show, whatever their basis.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retention: BTreeMap<String, u64>,
}

/// Whether a purge hides a disclosure of `category` on `basis`, made at position `at`.
pub fn purged(purges: &Purges, category: Category, basis: &Basis, at: u64) -> bool {
    let withdrawn = basis.is_consent() && purges.withdrawn.get(&category).is_some_and(|w| at < *w);
    let expired = basis
        .flow()
        .and_then(|f| purges.retention.get(f))
        .is_some_and(|r| at <= *r);
    withdrawn || expired
}

pub const CHECKPOINT: &[u8] = b"c";
pub const LAYOUT_KEY: &[u8] = b"v";
/// Changed whenever a key's meaning changes (2: registry values list people; `l` keys;
/// 3: `g` keys per person; destination digests over day numbers; 4: runs in `codec`'s
/// version 3; 5: digests cut to fit sled's inline keys and values; 6: the registry in runs;
/// 7: the registry's runs in files of their own; 8: `l` keys of many people each).
pub const LAYOUT: &[u8] = b"8";

fn agency_key(tag: u8, agency: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + agency.len() + rest.len());
    k.push(tag);
    k.extend_from_slice(agency.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

pub fn feed_prefix(agency: &str) -> Vec<u8> {
    agency_key(b'f', agency, &[])
}

pub fn feed_run(agency: &str, first_seq: u64) -> Vec<u8> {
    agency_key(b'f', agency, &first_seq.to_be_bytes())
}

pub const DISCLOSURE_PREFIX: &[u8] = b"d";

pub fn disclosure_run(first_seq: u64) -> Vec<u8> {
    let mut k = DISCLOSURE_PREFIX.to_vec();
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}

/// Removes the feed and disclosure runs that start after `checkpoint`; returns how many.
///
/// A step writes key by key and moves the checkpoint last, so after a crash mid-step these
/// are all that step left, and all of its runs start after the checkpoint it began from.
/// Projected again, the step may end elsewhere and key its runs differently: left in place,
/// they would list their items twice.
pub fn clear_runs_after(tree: &sled::Tree, checkpoint: u64) -> Result<usize, ProjectionError> {
    let after = checkpoint.saturating_add(1).to_be_bytes();
    let mut doomed = Vec::new();
    for kv in tree.range(disclosure_run(checkpoint.saturating_add(1))..=disclosure_run(u64::MAX)) {
        doomed.push(kv?.0);
    }
    // Each agency's feed runs, agency by agency: `f agency 0 seq`.
    let mut from = b"f".to_vec();
    while let Some(kv) = tree.range(from.clone()..).next() {
        let (k, _) = kv?;
        if k.first() != Some(&b'f') {
            break;
        }
        let Some(end) = k.iter().position(|b| *b == 0) else {
            break;
        };
        let prefix = &k[..=end];
        let first = [prefix, &after[..]].concat();
        let last = [prefix, &u64::MAX.to_be_bytes()[..]].concat();
        for kv in tree.range(first..=last) {
            doomed.push(kv?.0);
        }
        // Past every key of this agency: `f agency 1` sorts after `f agency 0 …`.
        from = prefix.to_vec();
        *from.last_mut().expect("not empty") = 1;
    }
    for k in &doomed {
        tree.remove(k)?;
    }
    Ok(doomed.len())
}

/// Where to start reading runs under `prefix` to see every item with `seq >= from`: the run
/// that may hold `from` started at or before it.
pub fn run_start(
    tree: &sled::Tree,
    prefix: &[u8],
    key_of_from: Vec<u8>,
) -> Result<Vec<u8>, ProjectionError> {
    match tree
        .range(prefix.to_vec()..=key_of_from.clone())
        .next_back()
    {
        Some(kv) => Ok(kv?.0.to_vec()),
        None => Ok(key_of_from),
    }
}

pub fn review_prefix(agency: &str) -> Vec<u8> {
    agency_key(b'g', agency, &[])
}

pub fn reviews(agency: &str, yp: Uuid) -> Vec<u8> {
    agency_key(b'g', agency, yp.as_bytes())
}

/// A grant in force, as the consent review lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Review {
    pub due: Day,
    pub grant: Uuid,
    pub seq: u64,
}

const REVIEW_BYTES: usize = 4 + 16 + 8;

/// A day as 4 bytes (its Julian day number): fixed width, and no date formatting on the
/// projector's path.
fn day_bytes(day: Day) -> [u8; 4] {
    day.0.to_julian_day().to_be_bytes()
}

/// Review date ([`day_bytes`]), grant id, seq; in the order given.
pub fn encode_reviews(reviews: impl IntoIterator<Item = Review>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reviews {
        out.extend_from_slice(&day_bytes(r.due));
        out.extend_from_slice(r.grant.as_bytes());
        out.extend_from_slice(&r.seq.to_be_bytes());
    }
    out
}

pub fn decode_reviews(bytes: &[u8]) -> Result<Vec<Review>, ProjectionError> {
    let items = bytes.chunks_exact(REVIEW_BYTES);
    if !items.remainder().is_empty() {
        return Err(ProjectionError::Corrupt(
            "a consent review value cut short".into(),
        ));
    }
    items
        .map(|b| {
            let julian = i32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
            let due = time::Date::from_julian_day(julian)
                .map_err(|_| ProjectionError::Corrupt("a review date out of range".into()))?;
            Ok(Review {
                due: Day(due),
                grant: Uuid::from_slice(&b[4..20]).expect("16 bytes"),
                seq: u64::from_be_bytes(b[20..].try_into().expect("8 bytes")),
            })
        })
        .collect()
}

/// Digests cut short: registry keys to [`KEY_DIGEST`] bytes (the tag makes 17), so a run's
/// chunk holds more entries, and destination digests to [`DESTINATION_DIGEST`] (with the seq,
/// 22), so a key of the latest-destination index holds its people in about 1.5 KB. A chance
/// collision stays far below anything that could matter (2^-128 and 2^-112 a pair).
const KEY_DIGEST: usize = 16;
pub const DESTINATION_DIGEST: usize = 14;

fn digest(parts: &[&[u8]]) -> ring::digest::Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u32).to_be_bytes());
        ctx.update(p);
    }
    ctx.finish()
}

fn digest_key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + KEY_DIGEST);
    k.push(tag);
    k.extend_from_slice(&digest(parts).as_ref()[..KEY_DIGEST]);
    k
}

/// Where the people with identifier `value` of `scheme` (within `scope`) are listed.
pub fn identifier_key(scheme: Scheme, scope: &str, value: &str) -> Vec<u8> {
    digest_key(
        b'x',
        &[&[scheme.code()], scope.as_bytes(), value.as_bytes()],
    )
}

pub fn name_key(dob: Day, name: &str) -> Vec<u8> {
    digest_key(b'n', &[dob.to_string().as_bytes(), name.as_bytes()])
}

/// What an import compares a row with: a digest of the person and the destination's three
/// facts (activity, start, ascertained), so the projections keep no destination in the clear.
pub fn destination_digest(yp: Uuid, activity_code: &str, start: Day, ascertained: Day) -> Vec<u8> {
    digest(&[
        yp.as_bytes(),
        activity_code.as_bytes(),
        &day_bytes(start),
        &day_bytes(ascertained),
    ])
    .as_ref()[..DESTINATION_DIGEST]
        .to_vec()
}

pub fn purges(agency: &str, yp: Uuid) -> Vec<u8> {
    agency_key(b'w', agency, yp.as_bytes())
}

pub fn seq_suffix(key: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&key[key.len() - 8..]);
    u64::from_be_bytes(a)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProjectionError> {
    serde_json::from_slice(bytes).map_err(|e| ProjectionError::Corrupt(e.to_string()))
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("projection records serialise")
}

/// The projections' page cache while serving. sled's default is 1 GiB per database; the
/// projections are read by run and mostly written, so a modest cache serves them. At 32 MiB
/// a million new import rows peaked 35–40 MB lower than at 64 MiB, at the same speed
/// (BENCHMARKS.md, session 16). Once the registry's runs left sled, what a repeated file
/// reads of the projections is small `l` entries, which sled's cache counts at about a third
/// of what they hold: at 16 MiB that pass peaked 55–60 MB lower than at 32, at the same
/// speed, and nothing served slower (session 17). Without huge pages (session 18) 8 MiB
/// took 15-25 MB more off it, at the same speed.
pub const CACHE_BYTES: u64 = 8 << 20;

/// The projections' page cache for `exchange rebuild`, which writes them all at once with
/// the service stopped: at 32 MiB it ran about 8% slower than at this size.
pub const REBUILD_CACHE_BYTES: u64 = 64 << 20;

pub fn open(
    dir: &std::path::Path,
    cache_bytes: u64,
) -> Result<(sled::Db, sled::Tree), ProjectionError> {
    let db = pathway_log::open_sled(
        &sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput),
    )?;
    let tree = db.open_tree("projections")?;
    Ok((db, tree))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registry keys have the registry's one size, however long what they digest; a
    /// destination digest with its seq is a latest-destination record's fixed part.
    #[test]
    fn registry_keys_and_destination_digests_have_their_sizes() {
        let long = "x".repeat(200);
        let day = Day::parse("2026-09-01").unwrap();
        assert_eq!(
            identifier_key(Scheme::NccisId, &long, &long).len(),
            crate::registry::KEY
        );
        assert_eq!(
            identifier_key(Scheme::Uln, "", "1000000001").len(),
            crate::registry::KEY
        );
        assert_eq!(name_key(day, &long).len(), crate::registry::KEY);
        assert_eq!(
            destination_digest(Uuid::new_v4(), "230", day, day).len() + 8,
            crate::latest::STORED
        );
        assert_ne!(
            identifier_key(Scheme::Uln, "", "1000000001"),
            identifier_key(Scheme::Upn, "", "1000000001"),
            "the scheme is part of the key"
        );
    }

    #[test]
    fn review_values_round_trip_and_refuse_a_cut_value() {
        let reviews = vec![
            Review {
                due: Day::parse("2027-09-01").unwrap(),
                grant: Uuid::new_v4(),
                seq: 7,
            },
            Review {
                due: Day::parse("1999-12-31").unwrap(),
                grant: Uuid::new_v4(),
                seq: u64::MAX,
            },
        ];
        let bytes = encode_reviews(reviews.clone());
        assert_eq!(decode_reviews(&bytes).unwrap(), reviews);
        assert!(decode_reviews(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_reviews(&[]).unwrap().is_empty());
    }
}
