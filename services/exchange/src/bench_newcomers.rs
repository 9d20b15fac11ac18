//! `exchange bench --only newcomers`: the log alone taking what a destinations import of new
//! people appends, to know the ceiling the import's new rows run under.
//!
//! A new row is two events at least (the person's registration, then their destination),
//! and the import's own work (HTTP, parsing, planning, validation, projection) comes on
//! top. This run leaves all of that out: envelopes are built and validated before the clock
//! starts, and each chunk goes straight to [`Log::append`] as the import hands it over
//! (registrations in batches of 1,000, two at once, then the destinations naming the minted
//! ids). The clock stops once the log's indexer has taken the last person's stream, so its
//! work counts as the import's would. Whatever rate this reaches, the import cannot beat.

use crate::bench::{cpu_seconds_of, new_event, registration};
use pathway_core::EventType;
// The import's own chunk and batch sizes, so that this run follows it.
use pathway_gateway::imports::{batches, BATCH, CHUNK_ROWS, IN_FLIGHT};
use pathway_log::{Log, NewEvent};
use std::time::Instant;
use uuid::Uuid;

/// Appends `events` in batches of [`BATCH`], [`IN_FLIGHT`] at once; their receipts' people,
/// in order.
async fn append(log: &Log, events: Vec<NewEvent>) -> anyhow::Result<Vec<Uuid>> {
    use futures::{StreamExt, TryStreamExt};
    let answered: Vec<_> = futures::stream::iter(batches(events, BATCH))
        .map(|b| log.append(b))
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(answered
        .into_iter()
        .flatten()
        .map(|r| r.young_person)
        .collect())
}

pub async fn run(root: &std::path::Path, rows: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(root)?;
    let log = crate::app::open_log(dir.path())?;
    // Built and validated before the clock starts; a destination's person is filled in
    // once its registration has minted one (its canonical bytes keep a placeholder of the
    // same length, which only the idempotency digest reads).
    let placeholder = Uuid::nil();
    let chunks: Vec<(Vec<NewEvent>, Vec<NewEvent>)> = (0..rows)
        .step_by(CHUNK_ROWS)
        .map(|start| {
            let end = (start + CHUNK_ROWS).min(rows);
            let registrations = (start..end)
                .map(|n| new_event(&registration(n), "demo-careers"))
                .collect();
            let destinations = (start..end)
                .map(|_| {
                    let e = crate::bench::env(EventType::DestinationRecorded, Some(placeholder));
                    new_event(&e, "demo-careers")
                })
                .collect();
            (registrations, destinations)
        })
        .collect();
    let (started, cpu) = (Instant::now(), cpu_seconds_of("self"));
    let mut last = None;
    for (registrations, mut destinations) in chunks {
        let people = append(&log, registrations).await?;
        for (d, yp) in destinations.iter_mut().zip(&people) {
            d.submitted.young_person = Some(*yp);
        }
        append(&log, destinations).await?;
        last = people.last().copied();
    }
    let appended = started.elapsed().as_secs_f64();
    if let Some(yp) = last {
        // Waits for the indexer to have taken the last person's stream.
        let stream = tokio::task::spawn_blocking({
            let log = log.clone();
            move || log.read_person(yp)
        })
        .await??;
        anyhow::ensure!(stream.len() == 2, "the last person has both events");
    }
    let (secs, cpu) = (
        started.elapsed().as_secs_f64(),
        cpu_seconds_of("self") - cpu,
    );
    println!(
        "newcomers, the log alone: {rows} new people, {} events in {secs:.2} s \
         (appended in {appended:.2} s): {:.0} rows/s, {:.0} events/s; CPU {cpu:.1} s, \
         {:.0} µs a row",
        rows * 2,
        rows as f64 / secs,
        (rows * 2) as f64 / secs,
        cpu * 1e6 / rows as f64
    );
    Ok(())
}
