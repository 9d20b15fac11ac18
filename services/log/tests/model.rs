//! Model-based test: random sequences of batches (new people, known and unknown people,
//! reused ids with the same or another body, right and wrong expected versions) and reopens
//! of the store, checked against a small in-memory model of what the log must answer.

use pathway_core::envelope::validate;
use pathway_log::{AppendError, Log, LogOptions, NewEvent, Receipt};
use proptest::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Who {
    New(u8),
    Known(u8),
    Unknown,
}

#[derive(Debug, Clone)]
struct Spec {
    id: u8,
    who: Who,
    variant: u8,
    expected: Option<u8>,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Spec>),
    Reopen,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..24,
        prop_oneof![
            (0u8..6).prop_map(Who::New),
            (0u8..6).prop_map(Who::Known),
            Just(Who::Unknown)
        ],
        0u8..2,
        proptest::option::weighted(0.3, 0u8..3),
    )
        .prop_map(|(id, who, variant, expected)| Spec {
            id,
            who,
            variant,
            expected,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![8 => proptest::collection::vec(spec(), 1..5).prop_map(Op::Append), 1 => Just(Op::Reopen)]
}

/// What the log must hold, kept the simple way.
#[derive(Default)]
struct Model {
    entries: Vec<(Uuid, Uuid, u64)>, // (id, person, version), index = seq - 1
    ids: HashMap<Uuid, (u64, u64, Uuid, Vec<u8>)>, // id → (seq, version, person, body)
    versions: HashMap<Uuid, u64>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(Vec<(u64, u64, Uuid, bool)>),
    Conflict(usize),
    Version(usize),
    Unknown(usize),
}

fn person(n: u8) -> Uuid {
    Uuid::from_u128(0xA000 + u128::from(n))
}

fn envelope(s: &Spec, model: &Model) -> serde_json::Value {
    let id = Uuid::from_u128(u128::from(s.id) + 1);
    let occurred = format!("2026-10-0{}T10:00:00Z", s.variant + 1);
    let (ty, yp, data) = match &s.who {
        Who::New(n) => (
            "young-person.registered",
            person(*n),
            pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered),
        ),
        Who::Known(n) => (
            "place.at-risk",
            person(*n),
            json!({"date": "2026-11-01", "risk": "finance"}),
        ),
        Who::Unknown => (
            "place.at-risk",
            Uuid::from_u128(0xDEAD),
            json!({"date": "2026-11-01", "risk": "health"}),
        ),
    };
    let mut e =
        json!({"id": id, "type": ty, "young_person": yp, "occurred_at": occurred, "data": data});
    if let Some(d) = s.expected {
        let current = model.versions.get(&yp).copied().unwrap_or(0);
        e["expected_version"] = json!((current + u64::from(d)).saturating_sub(1));
    }
    e
}

impl Model {
    fn apply(&mut self, batch: &[serde_json::Value]) -> Outcome {
        let mut ids = self.ids.clone();
        let mut versions = self.versions.clone();
        let mut entries = self.entries.clone();
        let mut out = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            let id: Uuid = serde_json::from_value(e["id"].clone()).unwrap();
            let yp: Uuid = serde_json::from_value(e["young_person"].clone()).unwrap();
            let body = pathway_core::canonical::canonical_bytes(e);
            if let Some((seq, v, p, b)) = ids.get(&id) {
                if *b != body {
                    return Outcome::Conflict(i);
                }
                out.push((*seq, *v, *p, true));
                continue;
            }
            let current = versions.get(&yp).copied().unwrap_or(0);
            let registering = e["type"] == "young-person.registered";
            if registering && current > 0 {
                return Outcome::Conflict(i);
            }
            if !registering && current == 0 {
                return Outcome::Unknown(i);
            }
            if let Some(x) = e.get("expected_version").and_then(|v| v.as_u64()) {
                if x != current {
                    return Outcome::Version(i);
                }
            }
            entries.push((id, yp, current + 1));
            let seq = entries.len() as u64;
            ids.insert(id, (seq, current + 1, yp, body));
            versions.insert(yp, current + 1);
            out.push((seq, current + 1, yp, false));
        }
        (self.ids, self.versions, self.entries) = (ids, versions, entries);
        Outcome::Ok(out)
    }
}

/// Runs `ops` against the log and the model. `people_cached` bounds the writer's memory of
/// versions: at 1 it forgets nearly every person after each group, so versions come from
/// what the indexer has not yet written or from the store. `ids_per_run` at 3 seals ids
/// into runs of the id index every group or two and merges them every few groups, on the
/// merger thread, racing the appends; a reopen often finds ids not yet sealed.
fn run(ops: Vec<Op>, people_cached: usize, ids_per_run: usize) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let options = LogOptions {
        people_cached,
        ids_per_run,
        ..LogOptions::default()
    };
    let mut log = Log::open(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Reopen => {
                drop(log);
                log = Log::open(dir.path(), options.clone()).unwrap();
            }
            Op::Append(specs) => {
                let batch: Vec<_> = specs.iter().map(|s| envelope(s, &model)).collect();
                let expected = model.apply(&batch);
                let events = batch
                    .iter()
                    .map(|e| NewEvent {
                        submitted: validate(e).unwrap(),
                        source: "demo-la".into(),
                    })
                    .collect();
                let got = match rt.block_on(log.append(events)) {
                    Ok(r) => Outcome::Ok(
                        r.iter()
                            .map(|r| (r.seq, r.version, r.young_person, r.duplicate))
                            .collect(),
                    ),
                    Err(AppendError::Conflict { index, .. }) => Outcome::Conflict(index),
                    Err(AppendError::VersionMismatch { index, .. }) => Outcome::Version(index),
                    Err(AppendError::UnknownPerson { index }) => Outcome::Unknown(index),
                    Err(e) => panic!("storage error: {e}"),
                };
                assert_eq!(got, expected, "batch {batch:?}");
            }
        }
        let stored: Vec<_> = log
            .read_from(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.record.id, e.record.young_person, e.record.version))
            .collect();
        assert_eq!(stored, model.entries);
        assert_eq!(log.head(), model.entries.len() as u64);
    }
    let report = log.verify(None).unwrap();
    assert_eq!(report.entries, model.entries.len() as u64);
    for n in 0..6 {
        let mine = versions_of(&log, person(n));
        let want = model
            .entries
            .iter()
            .filter(|(_, p, _)| *p == person(n))
            .count() as u64;
        assert_eq!(mine, (1..=want).collect::<Vec<_>>());
        // The newest entry that matches, read from the stream's end and opened like the rest.
        let stream = log.read_person(person(n)).unwrap();
        let latest = |wanted: fn(&pathway_log::Record) -> bool| {
            log.latest_of_person(person(n), wanted)
                .unwrap()
                .map(|e| (e.record.version, e.record.data_value()))
        };
        let newest_odd = stream.iter().rev().find(|e| e.record.version % 2 == 1);
        assert_eq!(
            latest(|r| r.version % 2 == 1),
            newest_odd.map(|e| (e.record.version, e.record.data_value()))
        );
        assert_eq!(latest(|_| true).map(|(v, _)| v), (want > 0).then_some(want));
        assert_eq!(latest(|_| false), None);
    }
    // Many people at once, each up to a bound of their own, read as the whole log read in
    // order shows them; and many positions at once (in any order, repeated, past the head)
    // as each alone.
    let head = log.head();
    let opened = |e: &pathway_log::Entry| (e.record.seq, e.record.data_value());
    let all = log.read_from(0, usize::MAX).unwrap();
    let asked: Vec<(Uuid, u64)> = (0..6u8)
        .map(|n| (person(n), [head + 1, head / 2 + 1, 1][n as usize % 3]))
        .chain([(person(0), head + 1)])
        .collect();
    let mut many = vec![Vec::new(); asked.len()];
    log.each_before(&asked, |i, e| many[i].push(opened(&e)))
        .unwrap();
    for (i, (yp, before)) in asked.iter().enumerate() {
        let theirs: Vec<_> = all
            .iter()
            .filter(|e| e.record.young_person == *yp && e.record.seq < *before)
            .map(opened)
            .collect();
        assert_eq!(many[i], theirs, "person {yp} before {before}");
        let alone: Vec<_> = log
            .read_person_before(*yp, *before)
            .unwrap()
            .iter()
            .map(opened)
            .collect();
        assert_eq!(alone, theirs, "person {yp} alone, before {before}");
    }
    let seqs: Vec<u64> = (0..=head + 1).rev().chain([1, 1]).collect();
    for (seq, e) in seqs.iter().zip(log.get_many(&seqs).unwrap()) {
        let alone = log.get(*seq).unwrap();
        assert_eq!(
            e.as_ref().map(opened),
            alone.as_ref().map(opened),
            "at {seq}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn the_log_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..24)) {
        run(ops, pathway_log::PEOPLE_CACHED, pathway_log::IDS_PER_RUN);
    }

    #[test]
    fn the_log_behaves_like_its_model_remembering_one_person(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        run(ops, 1, pathway_log::IDS_PER_RUN);
    }

    #[test]
    fn the_log_behaves_like_its_model_sealing_and_merging_ids_all_the_time(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        run(ops, pathway_log::PEOPLE_CACHED, 3);
    }
}

/// The versions of a person's entries, in the order the log reads them back.
fn versions_of(log: &Log, yp: Uuid) -> Vec<u64> {
    let entries = log.read_person(yp).unwrap();
    entries.iter().map(|e| e.record.version).collect()
}

/// A new log and a runtime with two worker threads, as the service runs, for tests whose
/// appends race each other.
fn racing() -> (tempfile::TempDir, tokio::runtime::Runtime, Log) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    (dir, rt, log)
}

#[test]
fn concurrent_appends_share_flushes_and_stay_gapless() {
    let (_dir, rt, log) = racing();
    rt.block_on(async {
        let tasks: Vec<_> = (0..200u128)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut d =
                        pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered);
                    d["identifiers"] = json!({});
                    let e = json!({"id": Uuid::from_u128(i + 1), "type": "young-person.registered",
                                   "occurred_at": "2026-10-01T10:00:00Z", "data": d});
                    log.append(vec![NewEvent {
                        submitted: validate(&e).unwrap(),
                        source: "demo-la".into(),
                    }])
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap()[0].seq);
        }
        seqs.sort();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    });
    assert_eq!(log.verify(None).unwrap().entries, 200);
}

#[test]
fn verify_names_the_first_altered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        for i in 0..5u128 {
            let e = json!({"id": Uuid::from_u128(i + 1), "type": "young-person.registered",
                           "occurred_at": "2026-10-01T10:00:00Z",
                           "data": pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered)});
            rt.block_on(log.append(vec![NewEvent {
                submitted: validate(&e).unwrap(),
                source: "demo-la".into(),
            }]))
            .unwrap();
        }
    }
    // Alter entry 3 behind the log's back.
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&3u64.to_be_bytes());
        let mut v = tree.get(&key).unwrap().unwrap().to_vec();
        // The data is sealed; the envelope fields around it are not, and the hash covers both.
        let text = String::from_utf8_lossy(&v[64..]).replace("2026-10-01", "2026-10-02");
        v.truncate(64);
        v.extend_from_slice(text.as_bytes());
        tree.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let err = log.verify(None).unwrap_err();
    assert_eq!(err.seq, 3);
    assert!(err.reason.contains("do not match its hash"), "{err}");
}

#[test]
fn reads_start_mid_run_and_cross_run_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let reg = json!({"id": Uuid::from_u128(1), "type": "young-person.registered", "young_person": person(0),
                     "occurred_at": "2026-10-01T10:00:00Z",
                     "data": pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered)});
    rt.block_on(log.append(vec![NewEvent {
        submitted: validate(&reg).unwrap(),
        source: "demo-la".into(),
    }]))
    .unwrap();
    // One group of 600: stored as runs of 256, 256 and 88 entries.
    let batch = (2..=601u128)
        .map(|i| {
            let e = json!({"id": Uuid::from_u128(i), "type": "place.at-risk", "young_person": person(0),
                           "occurred_at": "2026-10-01T10:00:00Z", "data": {"date": "2026-11-01", "risk": "finance"}});
            NewEvent { submitted: validate(&e).unwrap(), source: "demo-la".into() }
        })
        .collect();
    rt.block_on(log.append(batch)).unwrap();
    let seqs = |after, limit| -> Vec<u64> {
        log.read_from(after, limit)
            .unwrap()
            .iter()
            .map(|e| e.record.seq)
            .collect()
    };
    assert_eq!(seqs(300, 3), vec![301, 302, 303]);
    assert_eq!(seqs(255, 4), vec![256, 257, 258, 259]);
    assert_eq!(seqs(598, 10), vec![599, 600, 601]);
    assert_eq!(seqs(0, 2), vec![1, 2]);
    assert!(seqs(601, 10).is_empty());
    for seq in [1, 2, 257, 258, 513, 514, 601] {
        assert_eq!(log.get(seq).unwrap().unwrap().record.seq, seq);
    }
    assert!(log.get(602).unwrap().is_none());
    assert_eq!(log.read_person(person(0)).unwrap().len(), 601);
    let before: Vec<u64> = log
        .read_person_before(person(0), 258)
        .unwrap()
        .iter()
        .map(|e| e.record.seq)
        .collect();
    assert_eq!(before, (1..=257).collect::<Vec<_>>());
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.head(), 601, "the head is recovered from the last run");
    assert_eq!(log.verify(None).unwrap().entries, 601);
}

/// Signed checkpoints: they verify with the exchange's key, fail with another, and reveal a
/// log cut short after signing (which the chain alone cannot).
#[test]
fn signed_checkpoints_catch_a_foreign_key_and_a_truncated_log() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let key =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let other =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let append = |n: usize| {
        for _ in 0..n {
            let e = json!({"id": Uuid::new_v4(), "type": "young-person.registered",
                "occurred_at": "2026-11-02T10:00:00Z",
                "data": pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered)});
            let ev = NewEvent {
                submitted: validate(&e).unwrap(),
                source: "la".into(),
            };
            rt.block_on(log.append(vec![ev])).unwrap();
        }
    };
    append(3);
    let cp = log.checkpoint(&key).unwrap().expect("a new head is signed");
    assert_eq!(cp.seq, 3);
    assert!(
        log.checkpoint(&key).unwrap().is_none(),
        "the same head is signed once"
    );
    append(2);
    let public = key.public_key().as_ref().to_vec();
    let report = log.verify(Some(&public)).unwrap();
    assert_eq!(
        (report.entries, report.checkpoints, report.last_checkpoint),
        (5, 1, Some(3))
    );
    let err = log.verify(Some(other.public_key().as_ref())).unwrap_err();
    assert_eq!(err.seq, 3);
    assert!(err.reason.contains("not the exchange's"), "{err}");
    // Sign the head (5), then cut the log back to 3 entries: the chain of 1..3 is intact, but
    // the signed checkpoint says there were 5.
    log.checkpoint(&key).unwrap().unwrap();
    drop(log);
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        let mut cut = 0;
        for kv in tree.scan_prefix(b"e") {
            let (k, _) = kv.unwrap();
            let first = u64::from_be_bytes(k[1..9].try_into().unwrap());
            if first > 3 {
                tree.remove(k).unwrap();
                cut += 1;
            }
        }
        assert!(cut > 0);
        db.flush().unwrap();
    }
    // The head key still says 5: the log refuses to open on a head it cannot find.
    match Log::open(dir.path(), LogOptions::default()) {
        Err(pathway_log::LogError::Corrupt { seq: 5, .. }) => {}
        Err(e) => panic!("expected the missing head named, got {e}"),
        Ok(_) => panic!("a log cut below its head opened"),
    }
    // Cut the head key too, as a careful forger would: the log opens at 3, and only the
    // signed checkpoint shows what is missing.
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        tree.remove(b"h").unwrap().expect("the head key");
        db.flush().unwrap();
    }
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.head(), 3);
    let err = log.verify(Some(&public)).unwrap_err();
    assert_eq!(err.seq, 5);
    assert!(err.reason.contains("entries were removed"), "{err}");
}

// Idempotency when appends race each other.

const RACE_PEOPLE: u128 = 8;
const IDS: u64 = 120;
const TASKS: u64 = 48;
const SENDS: u64 = 40;

fn racer(n: u128) -> Uuid {
    Uuid::from_u128(0xB000 + n)
}

/// The event id `k` of the race's pool.
fn race_id(k: u64) -> Uuid {
    Uuid::from_u128(0xC_0000 + u128::from(k))
}

fn race_event(id: Uuid, yp: Uuid, ty: &str, day: u64, data: serde_json::Value) -> NewEvent {
    let e = json!({"id": id, "type": ty, "young_person": yp,
        "occurred_at": format!("2026-10-0{day}T10:00:00Z"), "data": data});
    NewEvent {
        submitted: validate(&e).expect("valid"),
        source: "demo-la".into(),
    }
}

/// The registration of the race's person `n`.
fn racer_registered(n: u128) -> NewEvent {
    let data = pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered);
    let id = Uuid::from_u128(0xD000 + n);
    race_event(id, racer(n), "young-person.registered", 1, data)
}

/// The race's people, registered.
fn racers_registered() -> Vec<NewEvent> {
    (0..RACE_PEOPLE).map(racer_registered).collect()
}

/// Id `k` is always about the same person; `variant` (the day it says it happened) makes a
/// different body under the same id.
fn send(k: u64, variant: u64) -> NewEvent {
    let yp = racer(u128::from(k) % RACE_PEOPLE);
    let data = json!({"date": "2026-11-01", "risk": "finance"});
    race_event(race_id(k), yp, "place.at-risk", 1 + variant, data)
}

enum Got {
    Ok(Receipt),
    Conflict,
}

/// Idempotency under concurrency, the race the model above cannot see (it appends one batch
/// at a time): many tasks send a small pool of event ids at once, some with another body
/// under the same id. Each id is recorded once, with the body that came first; every repeat
/// gets the first answer and every other body a conflict.
#[test]
fn racing_repeats_are_recorded_once_with_the_first_body() {
    let (_dir, rt, log) = racing();
    rt.block_on(async {
        // Arrange: the people exist.
        log.append(racers_registered()).await.unwrap();

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
        for e in &entries[RACE_PEOPLE as usize..] {
            let r = &e.record;
            let before = stored.insert(r.id, (r.seq, r.version, r.occurred_at.clone()));
            assert!(before.is_none(), "id {} appended twice", r.id);
        }
        let mut firsts: HashMap<u64, usize> = HashMap::new();
        for (k, variant, answer) in &answers {
            let (seq, version, occurred) =
                stored.get(&race_id(*k)).expect("every sent id is stored");
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
        for n in 0..RACE_PEOPLE {
            let versions = versions_of(&log, racer(n));
            assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        }
        assert_eq!(log.verify(None).unwrap().entries, entries.len() as u64);
    });
}

// A crash in the middle of a group.

/// A group writes key by key and moves the head key last. A crash before that leaves its
/// runs and id and stream keys past the head; opening the log removes them, so the lost
/// events were never recorded: not read, not in their person's stream, not remembered as
/// ids. Sent again, one is new, at the same place.
#[test]
fn a_group_cut_short_by_a_crash_is_removed_at_open() {
    // Given a log whose last group (seqs 3 and 4, two events about one person) was written
    // but whose head key did not move past 2: the crash
    let (dir, rt, log) = racing();
    let yp = racer(0);
    let at_risk = |k: u64| send(k * RACE_PEOPLE as u64, 0);
    rt.block_on(async {
        log.append(vec![racer_registered(0)]).await.unwrap();
        log.append(vec![at_risk(0)]).await.unwrap();
        let lost = log.append(vec![at_risk(1), at_risk(2)]).await.unwrap();
        assert_eq!((lost[0].seq, lost[1].seq), (3, 4));
    });
    drop(log);
    drop(rt);
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        tree.insert(b"h", &2u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }

    // When the log opens again
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // Then it ends at 2, and the lost events are nowhere
    assert_eq!(log.head(), 2);
    assert_eq!(versions_of(&log, yp), vec![1, 2]);
    assert!(log.get(3).unwrap().is_none());
    assert_eq!(log.read_from(2, 10).unwrap().len(), 0);
    // and sent again, the first is new, with the next seq and version
    let again = rt.block_on(log.append(vec![at_risk(1)])).unwrap();
    assert_eq!(
        (again[0].seq, again[0].version, again[0].duplicate),
        (3, 3, false)
    );
    assert_eq!(versions_of(&log, yp), vec![1, 2, 3]);
    assert_eq!(log.verify(None).unwrap().entries, 3);
}

/// sled 0.34 writes any page over 128 KiB as a blob file of its own and never fsyncs blob
/// files, so a power cut could lose what they hold. The log keeps its runs small enough
/// that no page of it becomes one.
#[test]
fn the_log_keeps_acknowledged_entries_out_of_sleds_unsynced_blob_files() {
    let (dir, rt, log) = racing();
    rt.block_on(async {
        log.append(racers_registered()).await.unwrap();
        for g in 0..6u64 {
            let group = (0..1000).map(|i| send(IDS + g * 1000 + i, 0)).collect();
            log.append(group).await.unwrap();
        }
    });
    log.flush().unwrap();
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "pages of the log were written as blob files");
}

/// The writer leaves a group's stream keys to the indexer thread, and its ids to the id
/// index's memory until they are sealed into a run, with the group's id records stored
/// beside its entries (`x` chunks: per event its id and the 64-byte id record) meanwhile. A
/// crash leaves acknowledged events whose stream keys were never written and whose ids
/// were in no run; opening the log indexes them from the chunks, so they are read in their
/// person's stream, a repeat gets the first answer and a different body under the same id
/// is still a conflict.
#[test]
fn acknowledged_events_the_indexer_had_not_reached_are_indexed_at_open() {
    // Given a log whose last group (seqs 2 and 3) is durable, its ids in no run and its
    // stream keys never written
    let (dir, rt, log) = racing();
    let yp = racer(0);
    let at_risk = |k: u64, variant: u64| send(k * RACE_PEOPLE as u64, variant);
    rt.block_on(async {
        log.append(vec![racer_registered(0)]).await.unwrap();
        let group = log
            .append(vec![at_risk(0, 0), at_risk(1, 0)])
            .await
            .unwrap();
        assert_eq!((group[0].seq, group[1].seq), (2, 3));
    });
    drop(log);
    drop(rt);
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        let mut chunk = vec![b'x'];
        chunk.extend_from_slice(&2u64.to_be_bytes());
        assert!(
            tree.get(&chunk).unwrap().is_some(),
            "the group's id records"
        );
        assert!(run_files(dir.path()).is_empty(), "no run yet");
        // The person's first segment as it stood before the group: seq 1 only.
        let seqs = first_segment(&tree, yp);
        assert_eq!(seqs.len(), 3 * 8);
        set_first_segment(&tree, yp, &seqs[..8]);
        db.flush().unwrap();
    }

    // When the log opens again
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // Then the group is in its person's stream, and its ids are remembered
    assert_eq!(versions_of(&log, yp), vec![1, 2, 3]);
    let again = rt.block_on(log.append(vec![at_risk(1, 0)])).unwrap();
    assert_eq!(
        (again[0].seq, again[0].version, again[0].duplicate),
        (3, 3, true)
    );
    let other = rt.block_on(log.append(vec![at_risk(0, 1)]));
    assert!(
        matches!(other, Err(AppendError::Conflict { index: 0, .. })),
        "{other:?}"
    );
    let next = rt.block_on(log.append(vec![at_risk(2, 0)])).unwrap();
    assert_eq!((next[0].seq, next[0].version), (4, 4));
    assert_eq!(log.verify(None).unwrap().entries, 4);
}

/// Earlier versions of the log kept one `i` key per event id and one `s` key per event.
/// Such a log opens with those ids moved into a run of the id index and those streams into
/// segments: a repeat still gets the first answer, another body under a known id is still
/// a conflict, streams read as before and go on from their versions, and the old keys are
/// gone.
#[test]
fn a_log_with_one_key_per_id_and_per_event_keeps_its_ids_and_streams() {
    // Given a log as an earlier version left it: every id under its own `i` key
    let (dir, rt, log) = racing();
    let first = rt.block_on(async {
        log.append(racers_registered()).await.unwrap();
        let sent: Vec<_> = (0..100).map(|k| send(IDS + k, 0)).collect();
        log.append(sent).await.unwrap()
    });
    drop(log);
    drop(rt);
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        let mut moved = 0;
        for kv in tree.scan_prefix(b"x") {
            let (k, v) = kv.unwrap();
            for record in v.chunks(80) {
                let mut key = vec![b'i'];
                key.extend_from_slice(&record[..16]);
                tree.insert(key, &record[16..]).unwrap();
                moved += 1;
            }
            tree.remove(k).unwrap();
        }
        assert_eq!(moved as u128, RACE_PEOPLE + 100);
        // and every person's stream as one `s` key per event
        let mut events = 0;
        for (k, first) in first_segments_as_keys(&tree) {
            assert_eq!(first, 1);
            let v = tree.remove(&k).unwrap().unwrap();
            for (i, seq) in v.chunks(8).enumerate() {
                let mut key = vec![b's'];
                key.extend_from_slice(&k[1..17]);
                key.extend_from_slice(&(first + i as u64).to_be_bytes());
                tree.insert(key, seq).unwrap();
                events += 1;
            }
        }
        assert_eq!(events as u128, RACE_PEOPLE + 100);
        db.flush().unwrap();
    }

    // When it opens
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // Then every id is known, with its first answer
    let again: Vec<_> = (0..100).map(|k| send(IDS + k, 0)).collect();
    let answers = rt.block_on(log.append(again)).unwrap();
    assert!(answers.iter().all(|r| r.duplicate));
    assert_eq!(
        answers.iter().map(|r| r.seq).collect::<Vec<_>>(),
        first.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    let other = rt.block_on(log.append(vec![send(IDS + 7, 1)]));
    assert!(
        matches!(other, Err(AppendError::Conflict { index: 0, .. })),
        "{other:?}"
    );
    assert_eq!(log.head(), RACE_PEOPLE as u64 + 100);
    // and every person's stream reads as before, and goes on from its version
    let racer_zero: Vec<u64> = (0..100u64)
        .filter(|k| (IDS + k).is_multiple_of(RACE_PEOPLE as u64))
        .map(|k| first[k as usize].seq)
        .collect();
    let mut want = vec![1];
    want.extend(&racer_zero);
    let stream: Vec<u64> = log
        .read_person(racer(0))
        .unwrap()
        .iter()
        .map(|e| e.record.seq)
        .collect();
    assert_eq!(stream, want);
    let next = rt.block_on(log.append(vec![send(IDS + 1000, 0)])).unwrap();
    assert_eq!(next[0].version, want.len() as u64 + 1);
    drop(log);
    let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
    let tree = db.open_tree("log").unwrap();
    assert!(tree.scan_prefix(b"i").next().is_none());
    assert!(tree.scan_prefix(b"s").next().is_none());
}

/// Ids a stop leaves unsealed (in memory and in their `x` chunks) go into the next run the
/// indexer seals, whose sealing removes those chunks: so across a second reopen a repeat
/// still gets the first answer.
#[test]
fn ids_unsealed_at_a_reopen_go_into_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let options = LogOptions {
        ids_per_run: 4,
        ..LogOptions::default()
    };
    let open = || Log::open(dir.path(), options.clone()).unwrap();
    // Given two ids left unsealed by a stop
    let log = open();
    let first = rt.block_on(async {
        log.append(racers_registered()).await.unwrap();
        log.append(vec![send(IDS, 0), send(IDS + 1, 0)])
            .await
            .unwrap()
    });
    drop(log);
    // When, after a reopen, more ids than a run holds are appended, and it stops again
    let log = open();
    for k in 2..8 {
        rt.block_on(log.append(vec![send(IDS + k, 0)])).unwrap();
    }
    drop(log);
    // Then the first two are still known, with their first answers
    let log = open();
    let again = rt
        .block_on(log.append(vec![send(IDS, 0), send(IDS + 1, 0)]))
        .unwrap();
    assert!(again.iter().all(|r| r.duplicate), "{again:?}");
    assert_eq!(
        again.iter().map(|r| r.seq).collect::<Vec<_>>(),
        first.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
}

/// `verify` checks each entry against the indexes idempotency and per-person reads rest on,
/// and names the first entry they have lost: one missing from its person's stream, one whose
/// id the id index no longer knows.
#[test]
fn verify_names_an_entry_its_indexes_lost() {
    // Given a log whose group 9..=13 is recorded and indexed, its ids sealed into a run
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        ids_per_run: 1,
        ..LogOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let group = rt.block_on(async {
        log.append(racers_registered()).await.unwrap();
        log.append((0..5).map(|k| send(IDS + k, 0)).collect())
            .await
            .unwrap()
    });
    assert_eq!((group[0].seq, group[4].seq), (9, 13));
    assert_eq!(log.verify(None).unwrap().entries, 13);
    drop(log);
    let tamper = |change: &dyn Fn(&sled::Tree)| {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        assert!(tree.scan_prefix(b"x").next().is_none(), "every id in a run");
        change(&tree);
        db.flush().unwrap();
    };
    let verified = || {
        Log::open(dir.path(), options.clone())
            .unwrap()
            .verify(None)
            .unwrap_err()
    };

    // When entry 11's person's stream loses it (their segment cut back to their registration)
    let eleventh = racer(u128::from(IDS + 2) % RACE_PEOPLE);
    tamper(&|tree| {
        let seqs = first_segment(tree, eleventh);
        assert_eq!(seqs.len(), 16, "the registration and entry 11");
        set_first_segment(tree, eleventh, &seqs[..8]);
    });
    // Then verify names entry 11
    let err = verified();
    assert_eq!(err.seq, 11, "{err}");
    assert!(err.reason.contains("stream"), "{err}");

    // And when the id index's runs lose their records (zeroed in their files, which still
    // open: their filters and fences are whole)
    let files = run_files(dir.path());
    assert!(!files.is_empty());
    for path in files {
        let mut bytes = std::fs::read(&path).unwrap();
        let footer = bytes.len() - 32;
        let count = u64::from_be_bytes(bytes[footer + 8..footer + 16].try_into().unwrap());
        bytes[..count as usize * 80].fill(0);
        std::fs::write(&path, bytes).unwrap();
    }
    // Then verify names the first entry
    let err = verified();
    assert_eq!(err.seq, 1, "{err}");
    assert!(err.reason.contains("id index"), "{err}");
}

/// A person's first stream segment (their first 64 seqs), packed with others' under `u`.
fn first_segment(tree: &sled::Tree, yp: Uuid) -> Vec<u8> {
    pathway_log::packed::get(tree, b'u', yp)
        .unwrap()
        .expect("the person's first segment")
}

fn set_first_segment(tree: &sled::Tree, yp: Uuid, seqs: &[u8]) {
    use pathway_log::packed;
    let plan = packed::plan::<packed::PackError>(tree, b'u', [yp], |_, _| Ok(Some(seqs.to_vec())))
        .unwrap();
    packed::apply(tree, plan).unwrap();
}

/// Turns the packed first stream segments (`u`) back into a `t` key each, as layout 3 kept
/// them; returns every `t` key with the first version it starts at.
fn first_segments_as_keys(tree: &sled::Tree) -> Vec<(Vec<u8>, u64)> {
    for kv in tree.scan_prefix(b"u") {
        let (k, v) = kv.unwrap();
        for (yp, segment) in pathway_log::packed::decode(&v).unwrap() {
            let mut key = vec![b't'];
            key.extend_from_slice(yp.as_bytes());
            key.extend_from_slice(&1u64.to_be_bytes());
            tree.insert(key, segment).unwrap();
        }
        tree.remove(k).unwrap();
    }
    tree.scan_prefix(b"t")
        .keys()
        .map(|k| {
            let k = k.unwrap().to_vec();
            let first = u64::from_be_bytes(k[17..25].try_into().unwrap());
            (k, first)
        })
        .collect()
}

/// A log in layout 3 (a key for every person's first stream segment and for every person's
/// key) opens with both packed many people to a key: streams read as before (their data
/// unsealed with their keys), later segments stay where they are, appends go on from each
/// person's version, verify passes, and no first segment or person key keeps a key of its
/// own.
#[test]
fn a_log_with_a_key_per_first_segment_opens_with_them_packed() {
    // Given a log whose people have 1 + 200 / 8 = 26 events each, one with 80
    let (dir, rt, log) = racing();
    rt.block_on(async {
        log.append(racers_registered()).await.unwrap();
        let sent: Vec<_> = (0..200).map(|k| send(IDS + k, 0)).collect();
        log.append(sent).await.unwrap();
        let more: Vec<_> = (0..54)
            .map(|k| send(IDS + 1000 + k * RACE_PEOPLE as u64, 0))
            .collect();
        log.append(more).await.unwrap();
    });
    let before: Vec<Vec<u64>> = (0..RACE_PEOPLE)
        .map(|n| versions_of(&log, racer(n)))
        .collect();
    assert_eq!(before[0].len(), 80);
    drop(log);
    drop(rt);
    // as layout 3 kept it
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        let keys = first_segments_as_keys(&tree);
        assert_eq!(
            keys.len() as u128,
            RACE_PEOPLE + 1,
            "racer 0 has a second segment"
        );
        // and every person's key under a key of its own
        for kv in tree.scan_prefix(b"w") {
            let (k, v) = kv.unwrap();
            for (yp, wrapped) in pathway_log::packed::decode(&v).unwrap() {
                let mut key = vec![b'p'];
                key.extend_from_slice(yp.as_bytes());
                tree.insert(key, wrapped).unwrap();
            }
            tree.remove(k).unwrap();
        }
        assert_eq!(tree.scan_prefix(b"p").count() as u128, RACE_PEOPLE);
        tree.insert(b"v", &b"3"[..]).unwrap();
        db.flush().unwrap();
    }

    // When it opens
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();

    // Then every stream reads as before
    for n in 0..RACE_PEOPLE {
        assert_eq!(versions_of(&log, racer(n)), before[n as usize], "racer {n}");
        let entries = log.read_person(racer(n)).unwrap();
        assert!(entries.iter().all(|e| !e.erased), "racer {n}'s data opens");
    }
    // and goes on from its version
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let next = rt
        .block_on(log.append(vec![send(IDS + 5000, 0), send(IDS + 5001, 0)]))
        .unwrap();
    assert_eq!(next[0].version, 81);
    assert_eq!(next[1].version, before[1].len() as u64 + 1);
    log.verify(None).unwrap();
    drop(log);
    let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
    let tree = db.open_tree("log").unwrap();
    let firsts: Vec<u64> = tree
        .scan_prefix(b"t")
        .keys()
        .map(|k| u64::from_be_bytes(k.unwrap()[17..25].try_into().unwrap()))
        .collect();
    assert_eq!(firsts, vec![65], "only racer 0's second segment has a key");
    assert!(
        tree.scan_prefix(b"p").next().is_none(),
        "person keys packed"
    );
    assert_eq!(tree.get(b"v").unwrap().as_deref(), Some(&b"5"[..]));
}

/// A log records its key layout; a build refuses a log in a layout newer than its own,
/// rather than misread it (an id index it could not read would take every repeat for a new
/// event).
#[test]
fn a_log_in_a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), LogOptions::default()).unwrap());
    {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("log").unwrap();
        assert_eq!(tree.get(b"v").unwrap().as_deref(), Some(&b"5"[..]));
        tree.insert(b"v", &b"6"[..]).unwrap();
        db.flush().unwrap();
    }
    let err = match Log::open(dir.path(), LogOptions::default()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a log in a newer layout was opened"),
    };
    assert!(err.contains("newer than this build"), "{err}");
}

/// The id index's run files in a log's directory.
fn run_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir.join("ids")) {
        Err(_) => Vec::new(),
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "run"))
            .collect(),
    }
}
