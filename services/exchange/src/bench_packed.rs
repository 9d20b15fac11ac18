//! `exchange bench --only packed`: the packed per-person keys alone (`pathway_log::packed`),
//! with no server: what changing a person's value costs when the people a step changes are
//! spread over every key (a typical quarter's file: a fifth of everyone, a few hundred a
//! step) and when they are neighbours (a file of everyone's next quarter, in key order).
//!
//! The first is where a packed key is read, decoded, re-encoded and written for a person or
//! two of the [`packed::PER_KEY`] it holds, so it is the figure that says what the packing
//! costs a changed row (BENCHMARKS.md, session 24).

use crate::bench::{cpu_seconds, median};
use pathway_log::packed;
use std::time::Instant;
use uuid::Uuid;

const TAG: u8 = b'b';
/// A value the size of the projections' latest-destination digest and seq.
const VALUE: usize = 40;
/// People a step changes: an import chunk's changed rows in a typical quarter's file.
const PER_STEP: usize = 500;
/// Steps a round of spread changes takes; the neighbours' rounds take ten times as many,
/// being that much cheaper, so both last long enough to time the CPU in ticks.
const STEPS: usize = 100;
const ROUNDS: usize = 5;

fn person(i: u64) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(i) << 16)
}

/// The `n`th of a fixed scatter over `0..people`: the same people in every run, so runs
/// compare like with like.
fn scattered(n: u64, people: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) % people
}

/// Changes `people` (ascending) to `fill`, as the log's indexer and the projector do.
fn step(tree: &sled::Tree, people: &[Uuid], fill: u8) -> anyhow::Result<()> {
    packed::change::<packed::PackError>(tree, TAG, people.iter().copied(), |_, _| {
        Ok(Some(vec![fill; VALUE]))
    })?;
    Ok(())
}

/// Bytes this process has handed to `write` and its kind so far (`wchar`).
fn written() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What a phase cost a person changed.
#[derive(Clone, Copy)]
struct Cost {
    wall_us: f64,
    /// Every thread's, so sled's own writers count.
    cpu_us: f64,
    written: f64,
}

/// Runs `steps` and flushes sled.
fn phase(db: &sled::Db, tree: &sled::Tree, steps: &[Vec<Uuid>], fill: u8) -> anyhow::Result<Cost> {
    let people = steps.iter().map(Vec::len).sum::<usize>() as f64;
    let (started, cpu, bytes) = (Instant::now(), cpu_seconds(), written());
    for s in steps {
        step(tree, s, fill)?;
    }
    db.flush()?;
    Ok(Cost {
        wall_us: started.elapsed().as_secs_f64() / people * 1e6,
        cpu_us: (cpu_seconds() - cpu) / people * 1e6,
        written: (written() - bytes) / people,
    })
}

pub fn run(root: &std::path::Path, people: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(root)?;
    // The page cache the projections serve with, far smaller than the keys: as in an import,
    // a spread change mostly finds its key's page evicted.
    let config = sled::Config::new()
        .path(dir.path())
        .cache_capacity(16 << 20);
    let db = pathway_log::open_sled(&config)?;
    let tree = db.open_tree("packed")?;
    let everyone: Vec<Uuid> = (0..people).map(person).collect();
    let fill: Vec<Vec<Uuid>> = everyone.chunks(2_500).map(<[Uuid]>::to_vec).collect();
    let filled = phase(&db, &tree, &fill, 0)?;
    let per_step = PER_STEP as u64;
    let spread: Vec<Vec<Uuid>> = (0..STEPS as u64)
        .map(|s| {
            let mut some: Vec<Uuid> = (0..per_step)
                .map(|i| everyone[scattered(s * per_step + i, people) as usize])
                .collect();
            some.sort_unstable();
            some.dedup();
            some
        })
        .collect();
    let neighbours: Vec<Vec<Uuid>> = (0..STEPS as u64 * 10)
        .map(|s| {
            let from = scattered(s, people - per_step) as usize;
            everyone[from..from + PER_STEP].to_vec()
        })
        .collect();
    let keys = tree.len();
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let fill = round as u8 + 1;
        rounds.push((
            phase(&db, &tree, &spread, fill)?,
            phase(&db, &tree, &neighbours, fill)?,
        ));
    }
    let median = |f: &dyn Fn(&(Cost, Cost)) -> f64| median(rounds.iter().map(f).collect());
    println!(
        "packed: {people} people of {VALUE}-byte values in {keys} keys ({} a key), filled at \
         {:.2} µs a person; changing a person, {PER_STEP} a step, medians of {ROUNDS} rounds: \
         spread over every key {:.2} µs ({:.2} µs of CPU, {:.0} bytes written), neighbours \
         {:.2} µs ({:.2} µs of CPU, {:.0} bytes written)",
        people as usize / keys.max(1),
        filled.wall_us,
        median(&|r| r.0.wall_us),
        median(&|r| r.0.cpu_us),
        median(&|r| r.0.written),
        median(&|r| r.1.wall_us),
        median(&|r| r.1.cpu_us),
        median(&|r| r.1.written),
    );
    Ok(())
}
