//! The destinations upload, streamed: parsed a chunk ahead of the plan and no further,
//! each chunk planned ([`super::plan`]) while the one before it is appended, and held back
//! when it names anything a chunk beside it changes. A file of any length imports in bounded
//! memory, and a chunk's append is finished before the import answers, even when a later
//! chunk fails.

use super::plan::{plan, touched_by, Plan};
use super::review::record_review;
use super::{append, caught_up, caught_up_to, failed, list, Held, Keys, People, Summary};
use crate::problem::{internal, HttpProblem, Problem};
use crate::routes::AppState;
use pathway_core::identity::Scheme;
use pathway_core::imports::{self, DestinationRow, RowError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Valid rows planned and appended together. The projections catch up behind the chunks, so
/// a chunk finds the people earlier chunks registered through the identity registry (and
/// waits for the two just before it when it names what they change), and nothing about
/// earlier chunks is kept beyond what those two change: memory stays bounded however long
/// the file.
/// A chunk's plan is its envelopes as JSON values, about 2 KB a new row: at 2,500 rows a
/// million new rows peaked 20-25 MB lower than at 5,000, at the same speed (BENCHMARKS.md,
/// session 18).
pub const CHUNK_ROWS: usize = 2_500;

/// Rows planned together after a chunk that appended events for at most a tenth of its rows,
/// as most chunks of a repeated quarterly file do. More reads made together in key order
/// ([`pathway_projector::latest::get_many`]) share more of sled's nodes, and rows that change nothing plan into
/// almost nothing; a chunk of new people, which plans into events, stays at [`CHUNK_ROWS`].
/// 20,000 measured fastest against 5,000 and 50,000 (BENCHMARKS.md, session 12); 10,000
/// reads fewer of sled's leaves at once, 30 MB off a repeated million-row file's peak for
/// about a tenth of its speed, which stays well above its target (sessions 16 and 18).
const QUIET_CHUNK_ROWS: usize = 10_000;

/// What the file's reader hands the importer: a chunk of valid rows, with the count and the
/// problems of the lines read for it; or why the file cannot be read on.
enum Piece {
    Chunk {
        rows: Vec<DestinationRow>,
        read: usize,
        rejected: Vec<RowError>,
    },
    Unreadable(Problem),
    BrokeOff(Problem),
}

/// Problems the reader holds before handing them on, so a file of bad rows stays bounded too.
const REJECTED_PER_PIECE: usize = 1_000;

/// Reads and parses the file into chunks of `chunk_rows` (read afresh for each chunk) until
/// it ends, breaks, or the importer stops taking them.
async fn read_chunks<S, E>(
    mut body: S,
    chunk_rows: &AtomicUsize,
    tx: tokio::sync::mpsc::Sender<Piece>,
) where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let mut reader = imports::DestinationReader::default();
    let (mut pending, mut read, mut rejected) = (Vec::new(), 0, Vec::new());
    loop {
        // Read on only once the importer has taken the chunk handed over last: otherwise a
        // reader faster than the plan (a repeated file) holds a whole chunk more, waiting.
        if tx.reserve().await.is_err() {
            return;
        }
        let piece = body.next().await;
        let done = piece.is_none();
        let parsed = match piece {
            Some(Ok(bytes)) => reader.feed(&bytes),
            Some(Err(e)) => {
                let p = Problem::new(400, "malformed-request", "The upload broke off")
                    .detail(format!("{e}."));
                let _ = tx.send(Piece::BrokeOff(p)).await;
                return;
            }
            None => reader.finish(),
        };
        let rows = match parsed {
            Ok(rows) => rows,
            Err(e) => {
                let p = Problem::new(422, "unreadable-file", "The file cannot be imported").detail(
                    format!(
                        "line {}: {}{}",
                        e.line,
                        e.column.map(|c| format!("{c}: ")).unwrap_or_default(),
                        e.message
                    ),
                );
                let _ = tx.send(Piece::Unreadable(p)).await;
                return;
            }
        };
        read += rows.read;
        rejected.extend(rows.rejected);
        pending.extend(rows.valid);
        loop {
            let size = chunk_rows.load(Ordering::Relaxed);
            if !(done || pending.len() >= size || rejected.len() >= REJECTED_PER_PIECE) {
                break;
            }
            let chunk = Piece::Chunk {
                rows: pending.drain(..pending.len().min(size)).collect(),
                read: std::mem::take(&mut read),
                rejected: std::mem::take(&mut rejected),
            };
            if tx.send(chunk).await.is_err() || (done && pending.is_empty()) {
                return;
            }
        }
    }
}

/// Imports a destinations file for `agency` as it arrives. The file is read and parsed a
/// chunk ahead of the one being planned (two futures of one task: parsing goes on while the
/// plan runs on a blocking thread), and a chunk is planned while the one before it is
/// appended (a task of its own): three chunks are held, one appending, one being planned and
/// one read ahead.
pub async fn destinations<S, E>(
    state: &AppState,
    agency: &str,
    body: S,
) -> Result<Summary, HttpProblem>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let chunk_rows = AtomicUsize::new(CHUNK_ROWS);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let apply = async {
        let mut total = Summary::default();
        let mut started = false;
        let mut beside: VecDeque<Unprojected> = VecDeque::new();
        let mut appending: Option<Appending> = None;
        while let Some(piece) = rx.recv().await {
            let (chunk, read, rejected) = match piece {
                Piece::Chunk {
                    rows,
                    read,
                    rejected,
                } => (rows, read, rejected),
                Piece::Unreadable(p) if !started => return Err(p.into()),
                Piece::Unreadable(p) | Piece::BrokeOff(p) => {
                    if let Some(a) = appending.take() {
                        account(&mut total, a.finish().await?);
                    }
                    return Err(failed(p));
                }
            };
            total.rows += read;
            list(&mut total.rejected, rejected, &mut total.unlisted_problems);
            if chunk.is_empty() {
                continue;
            }
            let rows = chunk.len();
            started = true;
            // Planned while the chunk before is appended; that append is finished before
            // anything else, this plan's failure included, so no chunk is left half done.
            let planned = plan_beside(state, agency, chunk, &beside).await;
            if let Some(a) = appending.take() {
                account(&mut total, a.finish().await?);
            }
            let mut plan = match planned? {
                Planned::Ready(plan) => *plan,
                Planned::Overlaps(rows) => {
                    caught_up(state).await?;
                    beside.clear();
                    plan_rows(state, agency, rows).await?.0
                }
            };
            let appends = plan.registrations.len() + plan.links.len() + plan.summary.changed;
            let next = if appends * 10 <= rows {
                QUIET_CHUNK_ROWS
            } else {
                CHUNK_ROWS
            };
            chunk_rows.store(next, Ordering::Relaxed);
            if !(plan.touched.is_empty() && plan.changed.is_empty()) {
                beside.push_back(Unprojected {
                    after: state.projector.log().head(),
                    keys: std::mem::take(&mut plan.touched),
                    people: std::mem::take(&mut plan.changed),
                });
                if beside.len() > BESIDE {
                    beside.pop_front();
                }
            }
            appending = Some(Appending::start(state, agency, plan));
        }
        if let Some(a) = appending {
            account(&mut total, a.finish().await?);
        }
        Ok::<_, HttpProblem>(total)
    };
    let ((), total) = futures::join!(read_chunks(body, &chunk_rows, tx), apply);
    let total = total?;
    // The answer comes once the file's events are projected too: the agency can look up
    // the people it has just registered as soon as it hears back.
    caught_up(state).await?;
    tracing::info!(
        rows = total.rows,
        registered = total.registered,
        changed = total.changed,
        rejected = total.rejected.len() + total.unlisted_problems,
        "destinations imported"
    );
    Ok(total)
}

/// A chunk appended, or being appended, and perhaps not yet projected: where it starts in
/// the log and what it changes. The chunks after it are planned beside it
/// ([`plan_beside`]), unless they share an identifier, a name or a person with it.
struct Unprojected {
    /// The log's head before the chunk's appends: everything up to it must be projected.
    after: u64,
    /// `touch` keys of the rows that register or link someone.
    keys: Keys,
    /// People it records a destination or link for.
    people: People,
}

/// Chunks a plan may run beside: the one being appended, and the one before it, which the
/// projector may still be applying.
const BESIDE: usize = 2;

/// A chunk's plan, or its rows back when it asks about something a chunk beside it changes.
enum Planned {
    Ready(Box<Plan>),
    Overlaps(Vec<DestinationRow>),
}

/// Plans rows on a blocking thread; the rows come back with the plan, rather than being
/// copied for a second plan that is seldom needed.
async fn plan_rows(
    state: &AppState,
    agency: &str,
    rows: Vec<DestinationRow>,
) -> Result<(Plan, Vec<DestinationRow>), HttpProblem> {
    let projector = state.projector.clone();
    let owner = agency.to_owned();
    tokio::task::spawn_blocking(move || {
        plan(&projector, &owner, &rows, Summary::default()).map(|plan| (plan, rows))
    })
    .await
    .map_err(internal)?
}

/// Plans a chunk while the chunks `beside` it may still be appending or unprojected:
/// everything before them is projected first. Rows that look someone up by what those
/// chunks registered or linked, or that match someone they record anything about, are
/// handed back, to be planned once those chunks are appended and projected.
async fn plan_beside(
    state: &AppState,
    agency: &str,
    rows: Vec<DestinationRow>,
    beside: &VecDeque<Unprojected>,
) -> Result<Planned, HttpProblem> {
    // Worked out only beside a chunk that changed something: most chunks of a repeated
    // file follow chunks that changed nothing, and hashing every row's identifiers and name
    // was a tenth of an unchanged row's time.
    if !beside.is_empty() {
        let touched = touched_by(&rows);
        if beside.iter().any(|u| !u.keys.is_disjoint(&touched)) {
            return Ok(Planned::Overlaps(rows));
        }
    }
    match beside.front() {
        Some(oldest) => caught_up_to(state, oldest.after).await?,
        None => caught_up(state).await?,
    }
    let (plan, rows) = plan_rows(state, agency, rows).await?;
    if beside.iter().any(|u| !plan.matched.is_disjoint(&u.people)) {
        // Someone a chunk beside this one names (found by different identifiers).
        return Ok(Planned::Overlaps(rows));
    }
    Ok(Planned::Ready(Box::new(plan)))
}

/// What appending one chunk's plan did.
struct Appended {
    registered: usize,
    linked: usize,
    summary: Summary,
}

/// Appends a chunk's plan and records its rows held for review; a task of its own, so
/// that the next chunk is planned meanwhile.
async fn append_plan(state: AppState, agency: String, plan: Plan) -> Result<Appended, HttpProblem> {
    let Plan {
        resolved,
        registrations,
        links,
        events,
        summary,
        ..
    } = plan;
    let (registered, linked) = append(&state, &agency, registrations, &links, events).await?;
    let holds: Vec<_> = summary.held_for_review.iter().map(Held::hold).collect();
    record_review(&state, &agency, Scheme::NccisId, &holds, &resolved)?;
    Ok(Appended {
        registered,
        linked,
        summary,
    })
}

/// Adds what a chunk did to `total`.
fn account(total: &mut Summary, done: Appended) {
    let Appended {
        registered,
        linked,
        summary: s,
    } = done;
    total.registered += registered;
    total.linked += linked;
    total.changed += s.changed;
    total.unchanged += s.unchanged;
    total.superseded += s.superseded;
    total.neet_onsets += s.neet_onsets;
    list(
        &mut total.held_for_review,
        s.held_for_review,
        &mut total.unlisted_problems,
    );
    list(
        &mut total.rejected,
        s.rejected,
        &mut total.unlisted_problems,
    );
}

/// A chunk's append running as a task, stopped if the import is dropped (the client went
/// away), as it would be if it ran in the import's own future.
struct Appending(tokio::task::JoinHandle<Result<Appended, HttpProblem>>);

impl Appending {
    fn start(state: &AppState, agency: &str, plan: Plan) -> Appending {
        Appending(tokio::spawn(append_plan(
            state.clone(),
            agency.to_owned(),
            plan,
        )))
    }

    async fn finish(mut self) -> Result<Appended, HttpProblem> {
        (&mut self.0).await.map_err(internal)?
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use futures::StreamExt;
    use std::sync::Arc;

    /// A file whose first piece is the header and one chunk's rows, and each later piece
    /// another chunk's rows; and a count of the pieces taken from it.
    fn pieces(chunks: usize, rows: usize) -> (Vec<bytes::Bytes>, Arc<AtomicUsize>) {
        let row = |n: usize| format!("{:013},2008-05-01,230,2026-09-01,2026-09-20\n", n);
        let mut all = vec![];
        for c in 0..chunks {
            let mut text = if c == 0 {
                "YoungPersonsID,DOB,ActivityCode,StartDate,DateAscertained\n".to_owned()
            } else {
                String::new()
            };
            text.extend((0..rows).map(|r| row(c * rows + r)));
            all.push(bytes::Bytes::from(text));
        }
        (all, Arc::new(AtomicUsize::new(0)))
    }

    #[test]
    fn the_file_is_read_no_more_than_one_chunk_ahead_of_the_importer() {
        let (all, taken) = pieces(4, 10);
        let counted = taken.clone();
        let body = futures::stream::iter(all).map(move |b| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(b)
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let chunk_rows = AtomicUsize::new(10);
        let reading = read_chunks(body, &chunk_rows, tx);
        futures::pin_mut!(reading);
        futures::executor::block_on(async {
            // The importer has taken nothing: one chunk waits to be taken, none is read.
            assert!(futures::poll!(reading.as_mut()).is_pending());
            assert_eq!(taken.load(Ordering::SeqCst), 1);
            // Taking it lets exactly one more be read.
            assert!(matches!(rx.recv().await, Some(Piece::Chunk { rows, .. }) if rows.len() == 10));
            assert!(futures::poll!(reading.as_mut()).is_pending());
            assert_eq!(taken.load(Ordering::SeqCst), 2);
        });
    }
}
