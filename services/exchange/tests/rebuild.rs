//! Projections are derived: a rebuild from the log equals the incremental state, and a
//! restart resumes from the checkpoint.

mod helpers;

use axum::http::StatusCode;
use helpers::*;
use pathway_projector::dispatcher::KeyValue;
use pathway_projector::Projector;
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

async fn scenario(app: &TestApp) {
    for dob in ["2008-01-01", "2010-06-01", "2013-03-03"] {
        let yp = app.register(dob).await;
        app.post(LA, &sample("looked-after.started", yp)).await;
        app.drain(); // interleave projection steps with appends
        app.post(LA, &sample("consent.granted", yp)).await;
        app.post(CAREERS, &sample("destination.recorded", yp)).await;
        app.post(LA, &sample("placement.changed", yp)).await;
        app.post(COLLEGE, &sample("enrolment.started", yp)).await;
        app.drain();
        app.post(LA, &sample("consent.withdrawn", yp)).await;
        app.post(CAREERS, &sample("neet.onset", yp)).await;
        app.post(LA, &sample("consent.granted", yp)).await; // restores the current state
    }
    app.drain();
}

/// A second projector of the app's log, in a directory of its own (kept with it), that has
/// projected nothing yet.
fn another_projector(app: &TestApp) -> (tempfile::TempDir, Projector) {
    another_projector_sealing_every(app, pathway_projector::registry::PER_RUN)
}

/// [`another_projector`] whose identity registry seals a run every `per_run` entries.
fn another_projector_sealing_every(
    app: &TestApp,
    per_run: usize,
) -> (tempfile::TempDir, Projector) {
    let other = tempfile::tempdir().unwrap();
    let agreements = Arc::new(
        exchange::config::parse(exchange::config::DEMO, "demo")
            .unwrap()
            .agreements,
    );
    let projector = Projector::open_with(
        other.path(),
        app.log.clone(),
        agreements,
        None,
        pathway_projector::dispatcher::Options {
            registry_per_run: per_run,
            ..Default::default()
        },
    )
    .unwrap();
    (other, projector)
}

/// What a rebuild from the app's log projects, in a directory of its own.
fn rebuilt_from_the_log(app: &TestApp) -> Vec<KeyValue> {
    let (_dir, rebuilt) = another_projector(app);
    rebuilt.catch_up().unwrap();
    rebuilt.dump().unwrap()
}

#[tokio::test]
async fn a_rebuild_equals_the_incremental_projections() {
    let app = spawn_app();
    scenario(&app).await;
    let live = app.projector.dump().unwrap();
    let disclosed = pathway_projector::views::disclosures(&app.projector, 0, usize::MAX).unwrap();
    assert!(
        disclosed.len() > 20,
        "the scenario should produce real projections"
    );

    assert!(
        live.iter().any(|(k, _)| k.first() == Some(&b'l')),
        "the latest-destination index is part of what is compared"
    );
    assert_eq!(rebuilt_from_the_log(&app), live);
}

#[tokio::test]
async fn projections_in_another_layout_are_projected_again_at_open() {
    let app = spawn_app();
    scenario(&app).await;
    let live = app.projector.dump().unwrap();
    let tree = app.projector.tree();
    tree.insert(pathway_projector::store::LAYOUT_KEY, b"1".as_slice())
        .unwrap();
    tree.insert(b"x-stale".as_slice(), b"an older build's key".as_slice())
        .unwrap();
    app.projector.flush().unwrap();

    let app = app.restart();
    assert_eq!(app.projector.checkpoint(), 0, "cleared at open");
    app.drain();
    assert_eq!(app.projector.dump().unwrap(), live);
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    app.drain();
    let checkpoint = app.projector.checkpoint();
    let app = app.restart();
    assert_eq!(
        app.projector.checkpoint(),
        checkpoint,
        "checkpoint survives a restart"
    );
    app.post(LA, &sample("looked-after.started", yp)).await;
    assert_eq!(
        app.projector.step(100).unwrap(),
        1,
        "only the new entry is applied"
    );
    let feed = app.feed(CAREERS).await;
    assert_eq!(
        types_of(&feed),
        vec!["young-person.registered", "looked-after.started"]
    );
}

#[tokio::test]
async fn consent_given_before_a_restart_still_counts_after_it() {
    let app = spawn_app();
    let yp = app.register("2008-01-01").await;
    app.post(LA, &sample("consent.granted", yp)).await;
    app.drain();
    let app = app.restart();
    app.post(CAREERS, &sample("destination.recorded", yp)).await;
    let feed = app.feed(COLLEGE).await;
    assert_eq!(
        types_of(&feed),
        vec!["consent.granted", "destination.recorded"]
    );
    assert_eq!(feed[1]["basis"]["kind"], "consent");

    // and a withdrawal after the restart still stops the flow
    let app = app.restart();
    app.post(LA, &sample("consent.withdrawn", yp)).await;
    app.post(CAREERS, &sample("destination.recorded", yp)).await;
    let feed = app.feed(COLLEGE).await;
    assert_eq!(
        types_of(&feed),
        vec![
            "consent.granted",
            "destination.recorded",
            "consent.withdrawn"
        ]
    );
}

/// A crash after the steps past `checkpoint` wrote their keys but before their checkpoint
/// writes reached the disk: the stored checkpoint goes back to `checkpoint`.
fn lose_checkpoints_after(app: &TestApp, checkpoint: u64) {
    app.projector
        .tree()
        .insert(
            pathway_projector::store::CHECKPOINT,
            &checkpoint.to_be_bytes()[..],
        )
        .unwrap();
    app.projector.flush().unwrap();
}

/// A step writes its keys one by one and moves the checkpoint last. A crash in between
/// leaves runs past the checkpoint; projected again with other step boundaries, those runs
/// would list their items a second time. Opening the projections clears them.
#[tokio::test]
async fn a_step_cut_short_by_a_crash_is_cleared_at_open_and_projected_again() {
    // Given projections up to a checkpoint, then steps of one entry each past it, whose
    // checkpoint write is lost (the crash)
    let app = spawn_app();
    scenario(&app).await;
    let before = app.projector.checkpoint();
    for dob in ["2007-05-05", "2009-09-09"] {
        let yp = app.register(dob).await;
        app.post(LA, &sample("looked-after.started", yp)).await;
        app.post(CAREERS, &sample("destination.recorded", yp)).await;
    }
    while app.projector.step(1).unwrap() > 0 {}
    assert!(app.projector.checkpoint() >= before + 6);
    lose_checkpoints_after(&app, before);

    // When the exchange restarts and projects the rest in one step
    let app = app.restart();
    assert_eq!(app.projector.checkpoint(), before);
    app.drain();

    // Then the projections are exactly a rebuild's: no feed or disclosure item twice
    assert_eq!(app.projector.dump().unwrap(), rebuilt_from_the_log(&app));
}

/// The identity registry, from a dump.
fn registry_of(dump: Vec<KeyValue>) -> Vec<KeyValue> {
    dump.into_iter()
        .filter(|(k, _)| matches!(k.first(), Some(b'x' | b'n')))
        .collect()
}

/// Whether any registry key lists `yp`.
fn names(registry: &[KeyValue], yp: Uuid) -> bool {
    registry
        .iter()
        .any(|(_, people)| people.chunks(16).any(|p| p == yp.as_bytes()))
}

/// After a crash, a step may be projected again in shorter steps than it was, over registry
/// entries that already name the person; erasing them afterwards must still take out every
/// entry any of those steps wrote.
#[tokio::test]
async fn a_person_projected_again_in_shorter_steps_leaves_no_registry_entry_when_erased() {
    // Given a newcomer's registration and a correction naming them anew, projected in one
    // step whose checkpoint write is lost, then again one entry a step
    let app = spawn_app();
    scenario(&app).await;
    let before = app.projector.checkpoint();
    let yp = app.register("2008-04-04").await;
    let corrected = json!({"family_name": "Sample", "date_of_birth": "2008-04-04",
        "identifiers": {"la_child_id": "C2002"}});
    let correction = envelope("young-person.details-corrected", Some(yp), corrected);
    let (status, body) = app.post(LA, &correction).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.drain();
    assert_eq!(app.projector.checkpoint(), before + 2);
    lose_checkpoints_after(&app, before);
    let app = app.restart();
    while app.projector.step(1).unwrap() > 0 {}
    let registry = registry_of(app.projector.dump().unwrap());
    assert!(names(&registry, yp));
    assert_eq!(registry, registry_of(rebuilt_from_the_log(&app)));

    // When they are erased
    app.erase(yp).await;

    // Then no registry key lists them, and the registry is a rebuild's
    let registry = registry_of(app.projector.dump().unwrap());
    assert!(!names(&registry, yp));
    assert_eq!(registry, registry_of(rebuilt_from_the_log(&app)));
}

/// The registry is compared on what it holds, not on how it is stored: a second projector
/// that seals a run at every step of one entry (so runs are merged, and an erasure takes
/// the person out of sealed chunks) holds what the live registry, still all in memory, holds.
#[tokio::test]
async fn a_registry_sealed_at_every_step_holds_what_the_live_one_holds() {
    // Given people registered, and a second projector that sealed them into runs
    let app = spawn_app();
    scenario(&app).await;
    let erased = app.register("2007-07-07").await;
    for dob in ["2011-01-01", "2012-02-02", "2014-04-04"] {
        app.register(dob).await;
    }
    app.drain();
    let (_other, sealed) = another_projector_sealing_every(&app, 1);
    let mut steps = 0;
    while sealed.step(1).unwrap() > 0 {
        steps += 1;
    }
    let listed = |dump: Vec<KeyValue>| names(&registry_of(dump), erased);
    assert!(listed(sealed.dump().unwrap()));
    let runs = sealed.registry().runs();
    assert!(
        runs > 1 && runs < steps / 2,
        "{runs} runs after {steps} steps: merged"
    );

    // When one of them is erased, and both projectors project it
    app.erase(erased).await;
    while sealed.step(1).unwrap() > 0 {}

    // Then neither registry names them, and both hold the same
    let live = app.projector.dump().unwrap();
    assert!(!listed(live.clone()));
    let registry = registry_of(live.clone());
    assert!(
        registry.iter().any(|(k, _)| k[0] == b'x') && registry.iter().any(|(k, _)| k[0] == b'n')
    );
    assert_eq!(sealed.dump().unwrap(), live);
}

/// sled 0.34 writes any page over 128 KiB as a blob file of its own and never fsyncs blob
/// files: projections held there could be silently short after a power cut. Runs are
/// closed by size as well as by count, so no page of the projections becomes one.
#[tokio::test]
async fn projections_stay_out_of_sleds_unsynced_blob_files() {
    let app = spawn_app();
    let people = [
        app.register("2008-01-01").await,
        app.register("2009-02-02").await,
    ];
    for round in 0..8 {
        let events: Vec<Value> = (0..1000)
            .map(|i| sample("worker.allocated", people[(round + i) % 2]))
            .collect();
        let (status, body) = app.post(LA, &json!({ "events": events })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.drain();
    app.projector.flush().unwrap();
    let feed = pathway_projector::views::feed(&app.projector, "demo-careers", 0, 10_000).unwrap();
    assert!(
        feed.len() >= 8000,
        "the careers service sees the allocations"
    );
    let blobs = std::fs::read_dir(app.dir.path().join("projections").join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        blobs, 0,
        "pages of the projections were written as blob files"
    );
}

/// The live loop and an import's catch-up step the same projector at once. Whichever
/// finishes its step last must not publish an older checkpoint than the other's: a
/// checkpoint that went back left `checkpoint() < head` with nothing left to apply, and the
/// import's catch-up stepped in a hot loop for ever (found under a profiler, 2026-12-06).
#[tokio::test]
async fn steps_on_several_threads_reach_the_head_and_never_go_back() {
    let app = spawn_app();
    for i in 0..40 {
        let yp = app.register(&format!("20{:02}-01-01", 8 + i % 5)).await;
        app.post(LA, &sample("looked-after.started", yp)).await;
        app.post(CAREERS, &sample("destination.recorded", yp)).await;
        app.post(LA, &sample("placement.changed", yp)).await;
    }
    let head = app.log.head();
    assert!(head >= 160, "the scenario appended {head} entries");

    for round in 0..50 {
        let (_dir, projector) = another_projector(&app);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let steppers: Vec<_> = (0..4)
            .map(|t| {
                let p = projector.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    // A step that applies nothing while behind the head is allowed while
                    // another thread publishes; thousands in a row mean nobody will.
                    let mut idle = 0;
                    while p.checkpoint() < head {
                        let checkpoint = p.checkpoint();
                        seen.lock().unwrap().push(checkpoint);
                        if p.step(1 + t).unwrap() == 0 {
                            idle += 1;
                            if idle > 100_000 {
                                return Err(checkpoint);
                            }
                            std::thread::yield_now();
                        } else {
                            idle = 0;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for s in steppers {
            let stuck = s.join().unwrap();
            assert_eq!(
                stuck,
                Ok(()),
                "round {round}: a stepper was stuck behind the head"
            );
        }
        assert_eq!(projector.checkpoint(), head, "round {round}");
        assert_eq!(
            projector.step(100).unwrap(),
            0,
            "round {round}: nothing left"
        );
        let seen = seen.lock().unwrap();
        assert!(
            seen.len() >= head as usize / 4,
            "round {round}: the steppers ran"
        );
    }
}
