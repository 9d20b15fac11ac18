//! Idempotency under concurrency: many tasks send a small pool of event ids at once, some
//! with another body under the same id. Each id is recorded once, with the body that came
//! first; every repeat gets the first answer and every other body a conflict. The model test
//! (`model.rs`) appends one batch at a time; this is the race it cannot see, kept for any
//! change that moves work off the single writer thread (BENCHMARKS.md, next steps).

use pathway_core::envelope::validate;
use pathway_log::{AppendError, Log, LogOptions, NewEvent, Receipt};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

const PEOPLE: u128 = 8;
const IDS: u64 = 120;
const TASKS: u64 = 48;
const SENDS: u64 = 40;

fn person(n: u128) -> Uuid {
    Uuid::from_u128(0xB000 + n)
}

fn event(id: Uuid, yp: Uuid, ty: &str, day: u64, data: serde_json::Value) -> NewEvent {
    let e = json!({"id": id, "type": ty, "young_person": yp,
        "occurred_at": format!("2026-10-0{day}T10:00:00Z"), "data": data});
    NewEvent {
        submitted: validate(&e).expect("valid"),
        source: "demo-la".into(),
    }
}

/// Id `k` is always about the same person; `variant` (the day it says it happened) makes a
/// different body under the same id.
fn send(k: u64, variant: u64) -> NewEvent {
    let yp = person(u128::from(k) % PEOPLE);
    let id = Uuid::from_u128(0xC000 + u128::from(k));
    let data = json!({"date": "2026-11-01", "risk": "finance"});
    event(id, yp, "place.at-risk", 1 + variant, data)
}

enum Got {
    Ok(Receipt),
    Conflict,
}

#[test]
fn racing_repeats_are_recorded_once_with_the_first_body() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    rt.block_on(async {
        // Arrange: the people exist.
        let registrations = (0..PEOPLE)
            .map(|n| {
                let data =
                    pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered);
                let id = Uuid::from_u128(0xD000 + n);
                event(id, person(n), "young-person.registered", 1, data)
            })
            .collect();
        log.append(registrations).await.unwrap();

        // Act: many tasks send ids from a small pool, one send in seven with another body.
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..SENDS {
                        let k = (t * 7919 + i * 104_729) % IDS;
                        let variant = u64::from((t + i) % 7 == 0);
                        let answer = match log.append(vec![send(k, variant)]).await {
                            Ok(r) => Got::Ok(r[0]),
                            Err(AppendError::Conflict { .. }) => Got::Conflict,
                            Err(e) => panic!("unexpected: {e}"),
                        };
                        got.push((k, variant, answer));
                    }
                    got
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.extend(t.await.unwrap());
        }

        // Assert: each id is in the log once, and every answer agrees with what is stored.
        let entries = log.read_from(0, usize::MAX).unwrap();
        let mut stored: HashMap<Uuid, (u64, u64, String)> = HashMap::new();
        for e in &entries[PEOPLE as usize..] {
            let r = &e.record;
            let before = stored.insert(r.id, (r.seq, r.version, r.occurred_at.clone()));
            assert!(before.is_none(), "id {} appended twice", r.id);
        }
        let mut firsts: HashMap<u64, usize> = HashMap::new();
        for (k, variant, answer) in &answers {
            let id = Uuid::from_u128(0xC000 + u128::from(*k));
            let (seq, version, occurred) = stored.get(&id).expect("every sent id is stored");
            let same_body = occurred.starts_with(&format!("2026-10-0{}", 1 + variant));
            match answer {
                Got::Ok(r) => {
                    assert!(same_body, "id {k}: another body was answered as a repeat");
                    assert_eq!(
                        (r.seq, r.version),
                        (*seq, *version),
                        "id {k}: another answer"
                    );
                    if !r.duplicate {
                        *firsts.entry(*k).or_default() += 1;
                    }
                }
                Got::Conflict => assert!(!same_body, "id {k}: its own body was refused"),
            }
        }
        assert_eq!(firsts.len(), stored.len(), "every stored id was first once");
        assert!(firsts.values().all(|n| *n == 1), "{firsts:?}");
        // Versions stay gapless per person, and the chain holds.
        for n in 0..PEOPLE {
            let versions: Vec<u64> = log
                .read_person(person(n))
                .unwrap()
                .iter()
                .map(|e| e.record.version)
                .collect();
            assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        }
        assert_eq!(log.verify(None).unwrap().entries, entries.len() as u64);
    });
}
