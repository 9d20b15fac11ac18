//! `exchange bench --only registry`: the identity registry alone, at a million people, with
//! no server: how long a repeated file's lookups and an erasure take against its run files.
//!
//! Erasure reads every run for the erased person's entries instead of a list of their keys
//! kept in sled (BENCHMARKS.md, session 17); this is the figure that says what that costs.

use pathway_core::identity::Scheme;
use pathway_projector::registry::{self, Change, Registry};
use pathway_projector::store;
use std::collections::HashSet;
use std::time::Instant;
use uuid::Uuid;

const ROUNDS: usize = 9;

fn person(i: u64) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | i as u128)
}

fn key(i: u64) -> Vec<u8> {
    store::identifier_key(Scheme::Uln, "", &format!("{}", 1_000_000_000 + i))
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[ROUNDS / 2]
}

pub fn run(root: &std::path::Path, people: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(root)?;
    let db = pathway_log::open_sled(&sled::Config::new().path(dir.path()))?;
    let tree = db.open_tree("projections")?;
    let disk = pathway_log::Disk::open(db.clone(), dir.path())?;
    let r = Registry::open(
        tree.clone(),
        disk,
        &dir.path().join(registry::DIR),
        0,
        registry::PER_RUN,
    )?;
    let started = Instant::now();
    let per_step = 10_000;
    for (step, first) in (0..people).step_by(per_step).enumerate() {
        let changes: Vec<Change> = (first..(first + per_step as u64).min(people))
            .map(|i| Change::add(&key(i), person(i)))
            .collect::<Result<_, _>>()?;
        let at = step as u64 + 1;
        for (k, v) in r.journal(at, &changes) {
            tree.insert(k, v)?;
        }
        r.applied(&changes, Vec::new());
        if r.due() {
            r.seal(at)?;
        }
    }
    let filled = started.elapsed().as_secs_f64();
    // A repeated file's chunk of rows: 20,000 people, each found in a sealed run.
    let asked: Vec<Vec<u8>> = (0..20_000u64).map(|i| key(i * (people / 20_000))).collect();
    let lookups = median_ms(|| {
        let found = r.people(&asked).expect("lookups");
        assert!(found.iter().all(|p| p.len() == 1));
    });
    let erased = HashSet::from([person(people / 2)]);
    let erasing = median_ms(|| {
        let (_, edits) = r.erasing(&erased).expect("erasing");
        assert_eq!(edits.len(), 1);
    });
    println!(
        "registry: {people} people filled in {filled:.1} s ({} runs); 20,000 lookups {lookups:.1} ms \
         ({:.0} keys/s); finding one person's entries to erase {erasing:.1} ms",
        r.runs(),
        20_000.0 / lookups * 1e3
    );
    Ok(())
}
