//! `exchange bench --only stages`: the CPU cost of each step an event takes from request body
//! to stored bytes, one at a time on one thread, with no server, disk or other load.
//!
//! The end-to-end runs cannot say which step costs what: on two shared cores every step
//! competes with every other. This run times each in isolation over the batched run's own
//! body (1,000 `worker.allocated` events), so a change to one step shows against that step's
//! figure rather than against the machine's ±30% noise. sled is left out on purpose: its
//! cost is measured where it runs (the writer thread, BENCHMARKS.md).

use crate::bench::env;
use pathway_core::canonical::canonical_bytes;
use pathway_core::envelope::validate;
use pathway_core::events::EventData;
use pathway_core::EventType;
use pathway_log::vault::Vault;
use pathway_log::{Entry, Record};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;
use uuid::Uuid;

const EVENTS: usize = 1000;
const ROUNDS: usize = 31;

/// Median nanoseconds per event of `step`, which handles the whole batch once per round.
fn per_event(mut step: impl FnMut()) -> f64 {
    step(); // warm caches and lazily built validators
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_nanos() as f64 / EVENTS as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[ROUNDS / 2]
}

pub fn run() {
    let people: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| env(EventType::WorkerAllocated, Some(people[i % people.len()])))
        .collect();
    let body = serde_json::to_vec(&json!({ "events": events })).expect("serialises");
    let (envelopes, _) = pathway_bus::read_body(&body, EVENTS).expect("the bench body reads");
    let submitted: Vec<_> = envelopes
        .iter()
        .map(|e| validate(e).expect("the bench's events are valid"))
        .collect();
    let key = [7u8; 32];
    let data: Vec<Value> = envelopes.iter().map(|e| e["data"].clone()).collect();
    let records: Vec<Record> = submitted
        .iter()
        .enumerate()
        .map(|(i, s)| Record {
            seq: i as u64 + 1,
            id: s.id,
            event_type: s.event_type,
            schema_version: s.schema_version,
            young_person: s.young_person.expect("present"),
            version: 1,
            source: "demo-la".into(),
            occurred_at: s.occurred_at.clone(),
            recorded_at: "2026-12-05T10:00:00Z".into(),
            expected_version: None,
            data: Vault::seal(&key, i as u64 + 1, s.data.as_bytes()),
            signature: None,
        })
        .collect();

    let stages: Vec<(&str, f64)> = vec![
        (
            "read body (JSON parse of the batch)",
            per_event(|| {
                black_box(pathway_bus::read_body(black_box(&body), EVENTS).expect("reads"));
            }),
        ),
        (
            "validate (schemas, typed parse, canonical forms)",
            per_event(|| {
                for e in &envelopes {
                    black_box(validate(black_box(e)).expect("valid"));
                }
            }),
        ),
        (
            "  of which: canonical bytes of the envelope",
            per_event(|| {
                for e in &envelopes {
                    black_box(canonical_bytes(black_box(e)));
                }
            }),
        ),
        (
            "  of which: typed parse of data",
            per_event(|| {
                for (s, d) in submitted.iter().zip(&data) {
                    black_box(EventData::parse(s.event_type, black_box(d)).expect("ok"));
                }
            }),
        ),
        (
            "writer: seal data (AES-256-GCM)",
            per_event(|| {
                for (i, s) in submitted.iter().enumerate() {
                    black_box(Vault::seal(&key, i as u64, black_box(s.data.as_bytes())));
                }
            }),
        ),
        (
            "writer: encode record and chain (SHA-256)",
            per_event(|| {
                let mut prev = [0u8; 32];
                for r in &records {
                    let (bytes, hash) = Entry::encode(black_box(r), &prev);
                    black_box(bytes);
                    prev = hash;
                }
            }),
        ),
    ];
    println!("stages: CPU per event, one thread, median of {ROUNDS} rounds of {EVENTS} events");
    for (name, ns) in stages {
        println!("stages: {name:<52} {:>8.2} µs", ns / 1000.0);
    }
}
