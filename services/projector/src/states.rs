//! What policy knows of each person the projector has met ([`PersonState`]), most of them
//! packed into 20 bytes.
//!
//! A person whose state the projector does not hold is rebuilt from their log stream before
//! their next event is decided: random reads of the log, about 16 µs of CPU a person. It held
//! 100,000 full states and forgot them all when full, so a quarterly file of a million rows
//! replayed nearly every person it changed: holding everyone made that file about 1.15×
//! faster (BENCHMARKS.md, session 23). A full state in a hash map is about 60 bytes a slot
//! and a string, too much for a million people under the import's memory target; but most
//! people's state is only who registered them and their date of birth, which pack into a
//! `u32`, and a sorted vector holds a person in exactly its 20 bytes, where a hash map's
//! slots average half as much again empty.
//!
//! # Layout
//! - `shards`: (person, packed state) sorted by person, in [`SHARDS`] vectors chosen by the
//!   person's keyed hash, so that a merge rewrites small vectors (no moment with two copies
//!   of everything) and an agency's chosen ids cannot crowd one.
//! - `fresh`: people met since the last merge, packed, in a hash map allocated once; merged
//!   into the shards when it is full.
//! - `full`: the states that do not pack (consent or an override held), bounded by the
//!   caller as the old map was, since they are few and each is larger. A packed slot marked
//!   [`FULL`] sends a reader there; a person so marked and no longer in `full` is not held.
//! - `agencies`: the agencies that registered people, numbered from 1 in the packed form.
//!
//! The projector's thread alone uses it (under the state lock), so nothing here is shared.

use pathway_core::date::Day;
use pathway_core::person::PersonState;
use pathway_log::people::{PersonHasher, PersonMap};
use std::hash::{BuildHasher, BuildHasherDefault};
use uuid::Uuid;

/// Shards of the sorted vectors. With a million people, about 4,000 each: a merge rewrites
/// 80 KB at a time, and a lookup searches a few thousand entries.
const SHARDS: usize = 256;

/// People met between merges: a map of 65,536 slots, about 1.4 MB, allocated once.
pub const FRESH: usize = 1 << 15;

/// The agency part of a packed state that says the state is held in full.
const FULL: u8 = u8::MAX;

/// Agencies a packed state can name (1 to 254; 0 is "not registered").
const AGENCIES: usize = FULL as usize - 1;

/// Bits of the packed date of birth: days after the earliest date `time` can hold, plus one
/// (0 is "no date of birth"). Its whole range, about 7.3 million days, fits.
const DAY_BITS: u32 = 24;

/// See the module's documentation.
pub struct States {
    shards: Vec<Vec<(Uuid, u32)>>,
    fresh: PersonMap<u32>,
    fresh_cap: usize,
    full: PersonMap<PersonState>,
    agencies: Vec<String>,
    /// A string [`States::put`] or [`States::give_back`] took back, for the next
    /// [`States::get`] to fill: a state is read for every event projected, and allocating
    /// its agency's name each time showed in a rebuild.
    spare: Option<String>,
}

impl Default for States {
    fn default() -> Self {
        States::with_fresh(FRESH)
    }
}

impl States {
    /// Merging every `fresh_cap` people met: small in tests, so that a few people exercise
    /// the merges.
    pub fn with_fresh(fresh_cap: usize) -> States {
        let fresh_cap = fresh_cap.max(1);
        States {
            shards: vec![Vec::new(); SHARDS],
            fresh: PersonMap::with_capacity_and_hasher(fresh_cap, Default::default()),
            fresh_cap,
            full: PersonMap::default(),
            agencies: Vec::new(),
            spare: None,
        }
    }

    /// People held, packed or marked as held in full.
    pub fn len(&self) -> usize {
        self.fresh.len() + self.shards.iter().map(Vec::len).sum::<usize>()
    }

    /// People whose state is held in full.
    pub fn full_len(&self) -> usize {
        self.full.len()
    }

    /// Whether the person's state is held: a rebuild is needed for anyone not held who has
    /// a past.
    pub fn holds(&self, yp: &Uuid) -> bool {
        match self.packed(yp) {
            Some(p) if agency_of(p) == FULL => self.full.contains_key(yp),
            Some(_) => true,
            None => false,
        }
    }

    /// The person's state, if held: a copy, which [`States::put`] stores if it changed and
    /// [`States::give_back`] recycles if not.
    pub fn get(&mut self, yp: &Uuid) -> Option<PersonState> {
        let packed = self.packed(yp)?;
        match agency_of(packed) {
            FULL => self.full.get(yp).cloned(),
            0 => Some(PersonState::plain(None, date_of_birth(packed))),
            n => {
                let mut by = self.spare.take().unwrap_or_default();
                by.clear();
                by.push_str(&self.agencies[usize::from(n) - 1]);
                Some(PersonState::plain(Some(by), date_of_birth(packed)))
            }
        }
    }

    /// Holds `state` as the person's.
    pub fn put(&mut self, yp: Uuid, state: PersonState) {
        let packed = match state.into_plain() {
            Ok((by, dob)) => match self.number(by.as_deref()) {
                Some(n) => {
                    self.full.remove(&yp);
                    self.spare = by;
                    pack(n, dob)
                }
                None => {
                    self.full.insert(yp, PersonState::plain(by, dob));
                    pack(FULL, None)
                }
            },
            Err(state) => {
                self.full.insert(yp, state);
                pack(FULL, None)
            }
        };
        let shard = &mut self.shards[shard_of(&yp)];
        if let Ok(at) = shard.binary_search_by(|(k, _)| k.cmp(&yp)) {
            shard[at].1 = packed;
            return;
        }
        if self.fresh.insert(yp, packed).is_none() && self.fresh.len() >= self.fresh_cap {
            self.merge();
        }
    }

    /// A state [`States::get`] gave and that did not change: its string serves the next.
    pub fn give_back(&mut self, state: PersonState) {
        if let Ok((by @ Some(_), _)) = state.into_plain() {
            self.spare = by;
        }
    }

    /// Holds the person no more (erased: their date of birth goes too).
    pub fn forget(&mut self, yp: &Uuid) {
        self.full.remove(yp);
        if self.fresh.remove(yp).is_none() {
            let shard = &mut self.shards[shard_of(yp)];
            if let Ok(at) = shard.binary_search_by(|(k, _)| k.cmp(yp)) {
                shard.remove(at);
            }
        }
    }

    /// Forgets the states held in full; the people they belong to are no longer held.
    pub fn forget_full(&mut self) {
        self.full = PersonMap::default();
    }

    /// Forgets everyone, returning the memory.
    pub fn clear(&mut self) {
        *self = States::with_fresh(self.fresh_cap);
    }

    fn packed(&self, yp: &Uuid) -> Option<u32> {
        if let Some(p) = self.fresh.get(yp) {
            return Some(*p);
        }
        let shard = &self.shards[shard_of(yp)];
        let at = shard.binary_search_by(|(k, _)| k.cmp(yp)).ok()?;
        Some(shard[at].1)
    }

    /// The packed number of the registering agency (0 for none); `None` when the numbers
    /// have run out.
    fn number(&mut self, by: Option<&str>) -> Option<u8> {
        let Some(by) = by else {
            return Some(0);
        };
        let at = match self.agencies.iter().position(|a| *a == by) {
            Some(at) => at,
            None if self.agencies.len() < AGENCIES => {
                self.agencies.push(by.to_owned());
                self.agencies.len() - 1
            }
            None => return None,
        };
        u8::try_from(at + 1).ok()
    }

    /// Moves the fresh people into the shards, each shard with its new people in order.
    fn merge(&mut self) {
        let mut incoming: Vec<Vec<(Uuid, u32)>> = vec![Vec::new(); SHARDS];
        for (yp, packed) in self.fresh.drain() {
            incoming[shard_of(&yp)].push((yp, packed));
        }
        for (shard, mut new) in self.shards.iter_mut().zip(incoming) {
            if new.is_empty() {
                continue;
            }
            new.sort_unstable_by_key(|e| e.0);
            shard.reserve_exact(new.len());
            shard.extend(new);
            // Two sorted runs end to end: the standard library's stable sort finds them and
            // merges them in one pass.
            shard.sort_by_key(|e| e.0);
        }
    }
}

fn shard_of(yp: &Uuid) -> usize {
    let hash = BuildHasherDefault::<PersonHasher>::default().hash_one(yp);
    (hash >> 56) as usize % SHARDS
}

fn pack(agency: u8, dob: Option<Day>) -> u32 {
    let day = dob.map_or(0, |d| {
        let days = d.0.to_julian_day() - time::Date::MIN.to_julian_day() + 1;
        u32::try_from(days).expect("every date lies after the earliest")
    });
    debug_assert!(day < 1 << DAY_BITS);
    u32::from(agency) << DAY_BITS | day
}

fn agency_of(packed: u32) -> u8 {
    (packed >> DAY_BITS) as u8
}

fn date_of_birth(packed: u32) -> Option<Day> {
    let days = packed & ((1 << DAY_BITS) - 1);
    if days == 0 {
        return None;
    }
    let julian = time::Date::MIN.to_julian_day() + days as i32 - 1;
    Some(Day(
        time::Date::from_julian_day(julian).expect("packed from a date")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn day(julian: i32) -> Day {
        Day(time::Date::from_julian_day(julian).unwrap())
    }

    #[test]
    fn dates_of_birth_pack_across_the_whole_calendar() {
        for d in [time::Date::MIN, time::Date::MAX, day(2_461_000).0] {
            for agency in [0, 1, AGENCIES as u8] {
                let p = pack(agency, Some(Day(d)));
                assert_eq!((agency_of(p), date_of_birth(p)), (agency, Some(Day(d))));
            }
        }
        assert_eq!(date_of_birth(pack(3, None)), None);
    }

    #[test]
    fn agencies_past_the_packed_numbers_are_held_in_full() {
        let mut s = States::with_fresh(4);
        let people: Vec<Uuid> = (0..AGENCIES as u128 + 3).map(Uuid::from_u128).collect();
        for (i, yp) in people.iter().enumerate() {
            s.put(*yp, PersonState::plain(Some(format!("agency-{i}")), None));
        }
        assert_eq!(s.full_len(), 3);
        for (i, yp) in people.iter().enumerate() {
            let held = s.get(yp).unwrap();
            assert_eq!(held.registered_by, Some(format!("agency-{i}")));
            s.put(*yp, held);
        }
        s.forget_full();
        assert!(!s.holds(&people[AGENCIES + 1]));
        assert!(s.holds(&people[AGENCIES - 1]));
    }

    /// An operation on the states and on a plain map that models them.
    #[derive(Debug, Clone)]
    enum Op {
        Put {
            who: u8,
            by: Option<u8>,
            dob: Option<i32>,
            consent: bool,
        },
        Get(u8),
        Forget(u8),
        ForgetFull,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), proptest::option::of(0u8..4), proptest::option::of(2_400_000i32..2_470_000), any::<bool>())
                .prop_map(|(who, by, dob, consent)| Op::Put { who, by, dob, consent }),
            4 => any::<u8>().prop_map(Op::Get),
            1 => any::<u8>().prop_map(Op::Forget),
            1 => Just(Op::ForgetFull),
            1 => Just(Op::Clear),
        ]
    }

    /// A state with a consent held, built as the log would build it.
    fn with_consent(by: Option<String>, dob: Option<Day>, who: u8) -> PersonState {
        let mut state = PersonState::plain(by, dob);
        let data = pathway_core::samples::data(pathway_core::EventType::ConsentGranted);
        let data = serde_json::value::to_raw_value(&data).unwrap();
        state.evolve(&pathway_core::person::Fact {
            seq: u64::from(who) + 1,
            id: Uuid::from_u128(u128::from(who) + 1_000),
            event_type: pathway_core::EventType::ConsentGranted,
            source: "la",
            young_person: Uuid::from_u128(u128::from(who)),
            recorded_on: day(2_461_000),
            occurred_on: day(2_461_000),
            data: &data,
        });
        state
    }

    proptest! {
        /// Whatever is put, read, forgotten and merged, the states hold what a map of full
        /// states would, except that forgetting the full ones forgets exactly those people.
        #[test]
        fn states_hold_what_a_map_of_full_states_holds(ops in prop::collection::vec(op(), 1..400)) {
            let mut s = States::with_fresh(7);
            let mut model: HashMap<Uuid, PersonState> = HashMap::new();
            for op in ops {
                match op {
                    Op::Put { who, by, dob, consent } => {
                        let yp = Uuid::from_u128(u128::from(who) << 64 | 0xabc);
                        let by = by.map(|b| format!("agency-{b}"));
                        let dob = dob.map(day);
                        let state = if consent {
                            let st = with_consent(by, dob, who);
                            prop_assert!(st.clone().into_plain().is_err(), "the grant is held");
                            st
                        } else {
                            PersonState::plain(by, dob)
                        };
                        s.put(yp, state.clone());
                        model.insert(yp, state);
                    }
                    Op::Get(who) => {
                        let yp = Uuid::from_u128(u128::from(who) << 64 | 0xabc);
                        prop_assert_eq!(s.holds(&yp), model.contains_key(&yp));
                        let held = s.get(&yp);
                        prop_assert_eq!(&held, &model.get(&yp).cloned());
                        if let Some(state) = held {
                            s.give_back(state);
                        }
                    }
                    Op::Forget(who) => {
                        let yp = Uuid::from_u128(u128::from(who) << 64 | 0xabc);
                        s.forget(&yp);
                        model.remove(&yp);
                    }
                    Op::ForgetFull => {
                        s.forget_full();
                        model.retain(|_, st| st.clone().into_plain().is_ok());
                    }
                    Op::Clear => {
                        s.clear();
                        model.clear();
                    }
                }
                let held = (0..=u8::MAX)
                    .map(|w| Uuid::from_u128(u128::from(w) << 64 | 0xabc))
                    .filter(|yp| s.holds(yp))
                    .count();
                prop_assert_eq!(held, model.len());
            }
        }
    }
}
