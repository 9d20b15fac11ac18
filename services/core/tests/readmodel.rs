//! The read model's "current state" rule: folding only the latest event of each slot gives
//! the same read model as folding the whole history. A grant restores exactly that subset,
//! so this is what makes "the current state, not every past event" safe to send.

use pathway_core::catalogue::{Category, EventType};
use pathway_core::readmodel::{fold, slot, Seen};
use pathway_core::samples;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Event types a read model folds (consent events are told by name, never restored).
fn foldable() -> Vec<EventType> {
    EventType::ALL
        .iter()
        .copied()
        .filter(|t| t.category() != Category::Consent)
        .collect()
}

/// A sample event, varied in the fields that pick slots and in one value, so that order
/// matters and a wrong slot shows.
fn event(ty: EventType, variant: u8) -> Value {
    let mut d = samples::data(ty);
    let roles = [
        "leaving-care-personal-adviser",
        "social-worker",
        "careers-adviser",
    ];
    match ty {
        EventType::WorkerAllocated => d["role"] = json!(roles[variant as usize % 3]),
        EventType::CareLeaverOutcomeRecorded => d["birthday_age"] = json!(17 + variant % 3),
        EventType::LookedAfterStarted | EventType::LegalStatusChanged => {
            d["legal_status"] = json!(["C2", "V2", "E1"][variant as usize % 3])
        }
        _ => {}
    }
    if let Value::Object(m) = &mut d {
        m.insert("variant".into(), json!(variant));
    }
    d
}

fn seen(seq: u64, ty: EventType, data: Value) -> Seen {
    Seen {
        seq,
        event_type: ty,
        source: "demo-la".into(),
        occurred_at: "2026-10-01T00:00:00Z".into(),
        data,
        basis: None,
    }
}

/// The read model without its list of sources, which by design names every event folded.
fn state(v: Value) -> Value {
    let mut v = v;
    let m = v.as_object_mut().unwrap();
    m.remove("events");
    m.remove("as_of_seq");
    v
}

proptest! {
    #[test]
    fn the_latest_event_of_each_slot_folds_to_the_whole_history(
        picks in prop::collection::vec((0usize..20, 0u8..6), 1..40)
    ) {
        let types = foldable();
        let all: Vec<Seen> = picks
            .iter()
            .enumerate()
            .map(|(i, (t, v))| {
                let ty = types[t % types.len()];
                seen(i as u64 + 1, ty, event(ty, *v))
            })
            .collect();
        let mut latest: BTreeMap<String, usize> = BTreeMap::new();
        let mut kept = Vec::new();
        for (i, s) in all.iter().enumerate() {
            let raw = serde_json::value::to_raw_value(&s.data).unwrap();
            match slot(s.event_type, &raw) {
                Some(k) => { latest.insert(k, i); }
                None => kept.push(i),
            }
        }
        kept.extend(latest.into_values());
        kept.sort_unstable();
        let subset: Vec<Seen> = kept.iter().map(|&i| all[i].clone()).collect();
        let yp = Uuid::nil();
        prop_assert_eq!(state(fold(yp, &subset)), state(fold(yp, &all)));
    }
}
