//! The latest-destination index: for each (person, agency), the digest and seq of the last
//! `destination.recorded` the agency sourced about the person, which a destinations import
//! compares a row with (one lookup, nothing decrypted).
//!
//! Many people to a key. sled 0.34 keeps in memory, for every page it holds on disk, a stub
//! with the disk locations of the page's fragments, and a leaf page holds at most 16 keys. A
//! key per (person, agency) made this index a third of those stubs, which grow with people
//! (BENCHMARKS.md, session 20). Here one key holds the records of up to [`PER_KEY`] people,
//! so a million people take about 32,000 keys and a few thousand pages.
//!
//! # Layout
//! - key: `l` ‖ a person's id (16 bytes). The key *covers* the people from that id up to the
//!   next `l` key, and holds the records of those it has, in order;
//! - value: records of `person (16) ‖ agency length (1) ‖ agency ‖ digest and seq (22)`,
//!   ordered by (person, agency). A person's records are never split across keys, so one
//!   key answers for them.
//!
//! The dispatcher is the only writer, a step at a time, so a key is read, changed and written
//! back without a race. A key that fills is split: its records go out in keys of [`PER_KEY`]
//! from the left. People minted in order (UUIDv7) arrive at the right edge, so the full
//! key stays as it was and the newcomers start the next one; nothing moves. Where a split
//! does move stored records (to a new key), its keys are written as one sled batch, so a
//! crash never leaves a record in two keys or none.

use crate::store::ProjectionError;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use uuid::Uuid;

pub const TAG: u8 = b'l';

/// People (not records) a key fills up to before it is split: values of about 1.5 KB, 16
/// of which make a leaf well under the size at which sled stores a page as a blob file.
pub const PER_KEY: usize = 32;

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

pub fn key(yp: Uuid) -> [u8; 17] {
    let mut k = [TAG; 17];
    k[1..].copy_from_slice(yp.as_bytes());
    k
}

pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * (17 + 16 + STORED));
    for r in records {
        out.extend_from_slice(r.young_person.as_bytes());
        let len = u8::try_from(r.agency.len())
            .expect("an agency id is at most 63 bytes (agreements::valid_agency_id)");
        out.push(len);
        out.extend_from_slice(r.agency.as_bytes());
        out.extend_from_slice(&r.stored);
    }
    out
}

pub fn decode(mut bytes: &[u8]) -> Result<Vec<Record>, ProjectionError> {
    let cut = || ProjectionError::Corrupt("a latest-destination record is cut short".into());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (yp, rest) = bytes.split_first_chunk::<16>().ok_or_else(cut)?;
        let (len, rest) = rest.split_first().ok_or_else(cut)?;
        let (agency, rest) = rest.split_at_checked(usize::from(*len)).ok_or_else(cut)?;
        let (stored, rest) = rest.split_first_chunk::<STORED>().ok_or_else(cut)?;
        let agency = std::str::from_utf8(agency).map_err(|_| {
            ProjectionError::Corrupt("a latest-destination agency is not UTF-8".into())
        })?;
        out.push(Record {
            young_person: Uuid::from_bytes(*yp),
            agency: agency.to_owned(),
            stored: *stored,
        });
        bytes = rest;
    }
    Ok(out)
}

/// The key covering `yp` and its records, and the next key (where its cover ends).
struct Covering {
    key: Option<sled::IVec>,
    records: Vec<Record>,
    until: Option<sled::IVec>,
}

impl Covering {
    fn find(tree: &sled::Tree, yp: Uuid) -> Result<Covering, ProjectionError> {
        let at = key(yp);
        let below = tree.range(&[TAG][..]..=&at[..]).next_back().transpose()?;
        let (key, records) = match below {
            Some((k, v)) => (Some(k), decode(&v)?),
            None => (None, Vec::new()),
        };
        let after = key.as_deref().unwrap_or(&at).to_vec();
        let until = tree
            .range((Bound::Excluded(after), Bound::Excluded(vec![TAG + 1])))
            .next()
            .transpose()?
            .map(|(k, _)| k);
        Ok(Covering {
            key,
            records,
            until,
        })
    }

    fn covers(&self, yp: Uuid) -> bool {
        self.until.as_deref().is_none_or(|u| key(yp)[..] < *u)
    }
}

/// Keys to write (`Some`) or remove (`None`) for one stored key's people. `together` when a
/// stored record moves to another key, so they must land at once.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub keys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub together: bool,
}

/// What a step changes: each (person, agency)'s new latest destination (`set`), and people
/// erased (every agency's record goes; an erased person is not set again).
pub fn plan(
    tree: &sled::Tree,
    set: &BTreeMap<(Uuid, String), [u8; STORED]>,
    erased: &BTreeSet<Uuid>,
) -> Result<Vec<Rewrite>, ProjectionError> {
    let people: BTreeSet<Uuid> = set
        .keys()
        .map(|(yp, _)| *yp)
        .chain(erased.iter().copied())
        .collect();
    let mut people = people.into_iter().peekable();
    let mut out = Vec::new();
    while let Some(first) = people.next() {
        let cover = Covering::find(tree, first)?;
        let mut touched = vec![first];
        while let Some(yp) = people.next_if(|yp| cover.covers(*yp)) {
            touched.push(yp);
        }
        let stored: BTreeSet<Uuid> = cover.records.iter().map(|r| r.young_person).collect();
        let mut records: BTreeMap<(Uuid, String), [u8; STORED]> = cover
            .records
            .iter()
            .map(|r| ((r.young_person, r.agency.clone()), r.stored))
            .collect();
        for yp in &touched {
            if erased.contains(yp) {
                records.retain(|(p, _), _| p != yp);
            } else {
                let mine = set
                    .range((*yp, String::new())..)
                    .take_while(|((p, _), _)| p == yp);
                for ((p, agency), value) in mine {
                    records.insert((*p, agency.clone()), *value);
                }
            }
        }
        let records: Vec<Record> = records
            .into_iter()
            .map(|((young_person, agency), stored)| Record {
                young_person,
                agency,
                stored,
            })
            .collect();
        out.push(rewrite(cover.key, &cover.records, &records, &stored, first));
    }
    Ok(out)
}

/// The keys holding `records` once a stored key (`key`, holding `before`) has changed;
/// `first` names a new key when nothing covered the first person touched.
fn rewrite(
    key: Option<sled::IVec>,
    before: &[Record],
    records: &[Record],
    stored: &BTreeSet<Uuid>,
    first: Uuid,
) -> Rewrite {
    let mut chunks: Vec<&[Record]> = Vec::new();
    let mut start = 0;
    let mut people = 0;
    for i in 0..records.len() {
        let new_person = i == start || records[i].young_person != records[i - 1].young_person;
        if new_person {
            if people == PER_KEY {
                chunks.push(&records[start..i]);
                start = i;
                people = 0;
            }
            people += 1;
        }
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    let home = key
        .as_deref()
        .map_or_else(|| self::key(first).to_vec(), <[u8]>::to_vec);
    let mut keys = Vec::new();
    let mut together = false;
    for (i, chunk) in chunks.iter().enumerate() {
        if i == 0 {
            if *chunk != before {
                keys.push((home.clone(), Some(encode(chunk))));
            }
        } else {
            together |= chunk.iter().any(|r| stored.contains(&r.young_person));
            keys.push((
                self::key(chunk[0].young_person).to_vec(),
                Some(encode(chunk)),
            ));
        }
    }
    if chunks.is_empty() && key.is_some() {
        keys.push((home, None));
    }
    Rewrite { keys, together }
}

/// The stored latest destination of each (person, agency), in the order asked. Read in key
/// order and split across the cores: a chunk of import rows asks about thousands of people,
/// far more than sled's cache holds, and in key order each stored key is read once for all
/// the people it covers (BENCHMARKS.md, session 12).
pub fn get_many(
    tree: &sled::Tree,
    asked: &[(Uuid, &str)],
) -> Result<Vec<Option<[u8; STORED]>>, ProjectionError> {
    let mut order: Vec<usize> = (0..asked.len()).collect();
    order.sort_unstable_by_key(|i| asked[*i].0);
    type Found = Vec<(usize, Option<[u8; STORED]>)>;
    let read = |part: &[usize]| -> Result<Found, ProjectionError> {
        let mut cover: Option<Covering> = None;
        let mut out = Vec::with_capacity(part.len());
        for i in part {
            let (yp, agency) = asked[*i];
            // Asked in order, so a key found for an earlier person starts at or before this one.
            let held = match cover.take() {
                Some(c) if c.covers(yp) => cover.insert(c),
                _ => cover.insert(Covering::find(tree, yp)?),
            };
            let found = held
                .records
                .iter()
                .find(|r| r.young_person == yp && r.agency == agency)
                .map(|r| r.stored);
            out.push((*i, found));
        }
        Ok(out)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
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
                .map(|h| {
                    h.join().map_err(|_| {
                        ProjectionError::Corrupt("a projection reader panicked".into())
                    })?
                })
                .collect::<Result<_, _>>()
        })?
    };
    let mut out = vec![None; asked.len()];
    for (i, v) in parts.into_iter().flatten() {
        out[i] = v;
    }
    Ok(out)
}

/// Applies a plan key by key, or as one batch where records move between keys.
pub fn apply(tree: &sled::Tree, rewrites: Vec<Rewrite>) -> Result<(), ProjectionError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::Config::new()
            .path(dir.path())
            .open()
            .unwrap()
            .open_tree("t")
            .unwrap();
        (dir, tree)
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

    fn stored(n: u64) -> [u8; STORED] {
        let mut v = [0u8; STORED];
        v[STORED - 8..].copy_from_slice(&n.to_be_bytes());
        v
    }

    type Model = BTreeMap<(Uuid, String), [u8; STORED]>;

    fn step(
        tree: &sled::Tree,
        model: &mut Model,
        set: Model,
        erased: BTreeSet<Uuid>,
    ) -> Vec<Rewrite> {
        let plan = plan(tree, &set, &erased).unwrap();
        let rewrites = plan
            .iter()
            .map(|r| Rewrite {
                keys: r.keys.clone(),
                together: r.together,
            })
            .collect();
        apply(tree, rewrites).unwrap();
        for (k, v) in set {
            if !erased.contains(&k.0) {
                model.insert(k, v);
            }
        }
        model.retain(|(yp, _), _| !erased.contains(yp));
        plan
    }

    /// Every record lies in the key that covers it, no key is empty or holds more than
    /// [`PER_KEY`] people, and the records are exactly the model's.
    fn check(tree: &sled::Tree, model: &Model, people: &[Uuid]) {
        let keys: Vec<(sled::IVec, Vec<Record>)> = tree
            .scan_prefix([TAG])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k, decode(&v).unwrap())
            })
            .collect();
        let mut all = Model::new();
        for (i, (k, records)) in keys.iter().enumerate() {
            assert!(!records.is_empty(), "an empty key is removed");
            let people: BTreeSet<Uuid> = records.iter().map(|r| r.young_person).collect();
            assert!(people.len() <= PER_KEY, "{} people in a key", people.len());
            for r in records {
                assert!(key(r.young_person)[..] >= k[..], "a record below its key");
                if let Some((next, _)) = keys.get(i + 1) {
                    assert!(
                        key(r.young_person)[..] < next[..],
                        "a record past its cover"
                    );
                }
                all.insert((r.young_person, r.agency.clone()), r.stored);
            }
        }
        assert_eq!(&all, model);
        let agencies = ["careers", "la"];
        let asked: Vec<(Uuid, &str)> = people
            .iter()
            .flat_map(|yp| agencies.iter().map(move |a| (*yp, *a)))
            .rev()
            .collect();
        let got = get_many(tree, &asked).unwrap();
        for ((yp, agency), found) in asked.iter().zip(got) {
            assert_eq!(found, model.get(&(*yp, (*agency).to_owned())).copied());
        }
    }

    #[test]
    fn records_round_trip_and_a_cut_value_is_refused() {
        let records = vec![
            Record {
                young_person: Uuid::from_u128(1),
                agency: "demo-careers".into(),
                stored: stored(7),
            },
            Record {
                young_person: Uuid::from_u128(1),
                agency: "la".into(),
                stored: stored(u64::MAX),
            },
        ];
        let bytes = encode(&records);
        assert_eq!(decode(&bytes).unwrap(), records);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..20]).is_err());
    }

    /// Given a store built by many steps of sets and erasures, at random places and some
    /// at the right edge, when every (person, agency) is looked up, then each finds exactly
    /// the latest set and nothing erased.
    #[test]
    fn lookups_match_a_plain_map_through_random_steps() {
        let (_dir, tree) = tree();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut people: Vec<Uuid> = Vec::new();
        let mut model = Model::new();
        for round in 0..60u64 {
            let mut set = Model::new();
            for _ in 0..rng.below(120) {
                let yp = if people.is_empty() || rng.below(3) == 0 {
                    // Newcomers: mostly random ids, some ascending like minted ones.
                    let id = if rng.below(2) == 0 {
                        Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next()))
                    } else {
                        Uuid::from_u128(
                            u128::MAX / 2 + u128::from(round * 1000 + people.len() as u64),
                        )
                    };
                    people.push(id);
                    id
                } else {
                    people[rng.below(people.len())]
                };
                let agency = ["careers", "la"][rng.below(2)];
                set.insert((yp, agency.to_owned()), stored(rng.next()));
            }
            let mut erased = BTreeSet::new();
            for _ in 0..rng.below(4) {
                if !people.is_empty() {
                    erased.insert(people[rng.below(people.len())]);
                }
            }
            step(&tree, &mut model, set, erased);
            check(&tree, &model, &people);
        }
        assert!(
            model.len() > 1000,
            "the store grew to many keys: {}",
            model.len()
        );
        // Erase everyone: every key goes.
        let all: BTreeSet<Uuid> = people.iter().copied().collect();
        step(&tree, &mut model, Model::new(), all);
        assert_eq!(tree.scan_prefix([TAG]).count(), 0);
    }

    /// People minted in order (UUIDv7) fill keys from the left and start the next one, so
    /// no stored record moves and no step needs a batch.
    #[test]
    fn people_in_order_fill_keys_without_moving_records() {
        let (_dir, tree) = tree();
        let mut model = Model::new();
        let mut people = Vec::new();
        for round in 0..20u128 {
            let mut set = Model::new();
            for i in 0..13 {
                let yp = Uuid::from_u128(round * 100 + i);
                people.push(yp);
                set.insert((yp, "careers".to_owned()), stored(1));
            }
            let plan = step(&tree, &mut model, set, BTreeSet::new());
            assert!(plan.iter().all(|r| !r.together), "round {round}");
        }
        check(&tree, &model, &people);
        let sizes: Vec<usize> = tree
            .scan_prefix([TAG])
            .map(|kv| decode(&kv.unwrap().1).unwrap().len())
            .collect();
        assert_eq!(
            sizes,
            vec![PER_KEY; 8]
                .into_iter()
                .chain([260 - 8 * PER_KEY])
                .collect::<Vec<_>>()
        );
    }

    /// A newcomer in the middle of a full key moves the records after it to a new key, and
    /// the two keys are written together.
    #[test]
    fn a_split_that_moves_records_writes_its_keys_together() {
        let (_dir, tree) = tree();
        let mut model = Model::new();
        let full: Model = (0..PER_KEY as u128)
            .map(|i| ((Uuid::from_u128(i * 2), "careers".to_owned()), stored(1)))
            .collect();
        step(&tree, &mut model, full, BTreeSet::new());
        assert_eq!(tree.scan_prefix([TAG]).count(), 1);
        let middle = Uuid::from_u128(5);
        let set = Model::from([((middle, "careers".to_owned()), stored(2))]);
        let plan = step(&tree, &mut model, set, BTreeSet::new());
        assert_eq!(plan.len(), 1);
        assert!(plan[0].together);
        assert_eq!(plan[0].keys.len(), 2);
        let mut people: Vec<Uuid> = model.keys().map(|(yp, _)| *yp).collect();
        people.push(Uuid::from_u128(1));
        check(&tree, &model, &people);
    }

    /// A person's records for several agencies stay in one key, even at a key's edge.
    #[test]
    fn a_persons_records_are_never_split_across_keys() {
        let (_dir, tree) = tree();
        let mut model = Model::new();
        let mut set = Model::new();
        for i in 0..(PER_KEY as u128 + 5) {
            for agency in ["careers", "la"] {
                set.insert((Uuid::from_u128(i), agency.to_owned()), stored(i as u64));
            }
        }
        step(&tree, &mut model, set, BTreeSet::new());
        let people: Vec<Uuid> = model.keys().map(|(yp, _)| *yp).collect();
        check(&tree, &model, &people);
        for kv in tree.scan_prefix([TAG]) {
            let records = decode(&kv.unwrap().1).unwrap();
            assert_eq!(
                records.len() % 2,
                0,
                "both agencies' records of each person"
            );
        }
    }
}
