//! The latest-destination index: for each (person, agency), the digest and seq of the last
//! `destination.recorded` the agency sourced about the person, which a destinations import
//! compares a row with (one lookup, nothing decrypted).
//!
//! Packed many people to a key (`pathway_log::packed`, tag `l`): a key per (person, agency)
//! made this index a third of the stubs sled keeps in memory for its pages, which grow with
//! people (BENCHMARKS.md, session 20). A person's value is their records, `agency length
//! (1) ‖ agency ‖ digest and seq (22)`, ordered by agency. The dispatcher is the only writer.

use crate::store::ProjectionError;
use pathway_log::packed;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub const TAG: u8 = b'l';

/// The digest of a destination (`store::destination_digest`) and the seq that recorded it.
pub const STORED: usize = 22;

/// One (person, agency)'s latest destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub young_person: Uuid,
    pub agency: String,
    /// The destination's digest, then its seq.
    pub stored: [u8; STORED],
}

fn encode(agencies: &BTreeMap<String, [u8; STORED]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(agencies.len() * 40);
    for (agency, stored) in agencies {
        let len = u8::try_from(agency.len())
            .expect("an agency id is at most 63 bytes (agreements::valid_agency_id)");
        out.push(len);
        out.extend_from_slice(agency.as_bytes());
        out.extend_from_slice(stored);
    }
    out
}

/// A person's records, by agency.
fn decode(bytes: &[u8]) -> Result<BTreeMap<String, [u8; STORED]>, ProjectionError> {
    entries(bytes)
        .map(|e| e.map(|(agency, stored)| (agency.to_owned(), stored)))
        .collect()
}

/// A person's records, read in place: an import's lookup finds its agency's without
/// allocating.
fn entries(
    mut bytes: &[u8],
) -> impl Iterator<Item = Result<(&str, [u8; STORED]), ProjectionError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let entry = (|| {
            let cut =
                || ProjectionError::Corrupt("a latest-destination record is cut short".into());
            let (len, rest) = bytes.split_first().ok_or_else(cut)?;
            let (agency, rest) = rest.split_at_checked(usize::from(*len)).ok_or_else(cut)?;
            let (stored, rest) = rest.split_first_chunk::<STORED>().ok_or_else(cut)?;
            let agency = std::str::from_utf8(agency).map_err(|_| {
                ProjectionError::Corrupt("a latest-destination agency is not UTF-8".into())
            })?;
            bytes = rest;
            Ok((agency, *stored))
        })();
        if entry.is_err() {
            bytes = &[];
        }
        Some(entry)
    })
}

/// Every record a stored key's value holds (for tests and audits).
pub fn records(value: &[u8]) -> Result<Vec<Record>, ProjectionError> {
    let mut out = Vec::new();
    for (young_person, value) in packed::decode(value)? {
        for (agency, stored) in decode(&value)? {
            out.push(Record {
                young_person,
                agency,
                stored,
            });
        }
    }
    Ok(out)
}

/// Writes what a step changes: each (person, agency)'s new latest destination (`set`), and
/// people erased (every agency's record goes; an erased person is not set again). A step
/// erases few people, so `erased` is a plain list.
pub fn change(
    tree: &sled::Tree,
    set: &BTreeMap<(Uuid, String), [u8; STORED]>,
    erased: &[Uuid],
) -> Result<(), ProjectionError> {
    let people: BTreeSet<Uuid> = set
        .keys()
        .map(|(yp, _)| *yp)
        .chain(erased.iter().copied())
        .collect();
    packed::change(tree, TAG, people, |yp, stored| {
        if erased.contains(&yp) {
            return Ok(None);
        }
        let mut agencies = stored.map(decode).transpose()?.unwrap_or_default();
        let mine = set
            .range((yp, String::new())..)
            .take_while(|((p, _), _)| *p == yp);
        for ((_, agency), value) in mine {
            agencies.insert(agency.clone(), *value);
        }
        Ok(Some(encode(&agencies)))
    })
}

/// The stored latest destination of each (person, agency), in the order asked.
pub fn get_many(
    tree: &sled::Tree,
    asked: &[(Uuid, &str)],
) -> Result<Vec<Option<[u8; STORED]>>, ProjectionError> {
    let people: Vec<Uuid> = asked.iter().map(|(yp, _)| *yp).collect();
    packed::get_many(tree, TAG, &people)?
        .into_iter()
        .zip(asked)
        .map(|(value, (_, agency))| {
            let Some(v) = value else { return Ok(None) };
            for entry in entries(&v) {
                let (held, stored) = entry?;
                if held == *agency {
                    return Ok(Some(stored));
                }
            }
            Ok(None)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stored(n: u64) -> [u8; STORED] {
        let mut v = [0u8; STORED];
        v[STORED - 8..].copy_from_slice(&n.to_be_bytes());
        v
    }

    /// One of a pool of people, spread over the id space as agencies' and minted ids are.
    fn person(n: u8) -> Uuid {
        Uuid::from_u128(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    const AGENCIES: [&str; 2] = ["careers", "la"];

    #[test]
    fn a_persons_records_round_trip_and_a_cut_value_is_refused() {
        let agencies = BTreeMap::from([
            ("demo-careers".to_owned(), stored(7)),
            ("la".to_owned(), stored(u64::MAX)),
        ]);
        let bytes = encode(&agencies);
        assert_eq!(decode(&bytes).unwrap(), agencies);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..5]).is_err());
    }

    proptest! {
        /// Given steps of destinations from two agencies and erasures, when every (person,
        /// agency) is looked up, then each finds the last one set, per agency, and nothing of
        /// the erased; the keys hold exactly those records.
        #[test]
        fn lookups_match_a_plain_map_through_any_steps(
            steps in proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..200, 0usize..2, any::<u64>()), 0..80),
                    proptest::collection::vec(0u8..200, 0..3),
                ),
                1..12,
            )
        ) {
            let tree = sled::Config::new().temporary(true).open().unwrap().open_tree("t").unwrap();
            let mut model: BTreeMap<(Uuid, String), [u8; STORED]> = BTreeMap::new();
            for (sets, erasures) in steps {
                let set: BTreeMap<(Uuid, String), [u8; STORED]> = sets
                    .into_iter()
                    .map(|(n, a, v)| ((person(n), AGENCIES[a].to_owned()), stored(v)))
                    .collect();
                let erased: BTreeSet<Uuid> = erasures.into_iter().map(person).collect();
                let listed: Vec<Uuid> = erased.iter().copied().collect();
                change(&tree, &set, &listed).unwrap();
                model.extend(set);
                model.retain(|(yp, _), _| !erased.contains(yp));
            }
            let asked: Vec<(Uuid, &str)> = (0..200u8)
                .flat_map(|n| AGENCIES.map(|a| (person(n), a)))
                .collect();
            for ((yp, agency), found) in asked.iter().zip(get_many(&tree, &asked).unwrap()) {
                prop_assert_eq!(found, model.get(&(*yp, (*agency).to_owned())).copied());
            }
            let held: BTreeMap<(Uuid, String), [u8; STORED]> = tree
                .scan_prefix([TAG])
                .flat_map(|kv| records(&kv.unwrap().1).unwrap())
                .map(|r| ((r.young_person, r.agency), r.stored))
                .collect();
            prop_assert_eq!(held, model);
        }
    }
}
