//! A chunk of destination rows against what the exchange holds: who each row is about
//! (matched, linked, registered or held for review), whether it says anything new, and the
//! events that say it. Reads only: the projections (caught up before the chunk) and, for
//! rows that differ, the log at the position the projections name.

use super::{
    derived_id, envelope, identifiers, identify_all, link, occurred, registration, text,
    Candidates, Claim, Hashed, Held, Identified, Keys, Newcomer, People, Summary, Who,
};
use crate::problem::{internal, HttpProblem};
use pathway_core::codes;
use pathway_core::date::Day;
use pathway_core::events::EventData;
use pathway_core::identity::{self, Match, Scheme};
use pathway_core::imports::{DestinationRow, RowError};
use pathway_core::EventType;
use pathway_projector::views::{self, HeldDestination};
use pathway_projector::Projector;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use uuid::Uuid;

#[derive(Default)]
pub(super) struct Plan {
    /// Identifiers of rows matched without doubt: any earlier hold on them is over.
    pub(super) resolved: Vec<String>,
    pub(super) registrations: Vec<Value>,
    pub(super) links: Vec<Value>,
    /// Destination and NEET events, for whom.
    pub(super) events: Vec<(Who, Value)>,
    /// Everyone a row matched, changed or not, and what the plan changes: the lookup keys
    /// (`touch`) of rows that register or link someone, and the people it records anything
    /// about. Chunks are planned before the two before them are projected (`Unprojected`,
    /// [`plan_beside`]).
    pub(super) matched: People,
    pub(super) touched: Keys,
    pub(super) changed: People,
    pub(super) summary: Summary,
}

fn status(code: &str) -> Option<&str> {
    codes::nccis_activity().column(code, "status")
}

/// Where a destination was said: at a log position, or by an earlier row's event in the same
/// file. Written into the id of the event that replaces it, as the position's digits or the
/// event id's hyphenated form.
#[derive(Clone, Copy)]
enum Said {
    At(u64),
    By(Uuid),
}

impl std::fmt::Display for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Said::At(seq) => seq.fmt(f),
            Said::By(id) => id.fmt(f),
        }
    }
}

/// A person's latest destination from this agency, and where it was said: its log position,
/// or the id of an earlier row's event in the same file.
#[derive(Clone)]
struct Before {
    activity_code: String,
    start: Day,
    ascertained: Day,
    said_at: Said,
    /// The file's line that said it, when it was this file.
    line: Option<usize>,
}

impl Before {
    /// What `row` says, as said at `said_at` by this file.
    fn of(row: &DestinationRow, said_at: Said) -> Before {
        Before {
            activity_code: row.activity_code.clone(),
            start: row.start_date,
            ascertained: row.date_ascertained,
            said_at,
            line: Some(row.line),
        }
    }

    fn is(&self, row: &DestinationRow) -> bool {
        self.activity_code == row.activity_code
            && self.start == row.start_date
            && self.ascertained == row.date_ascertained
    }
}

/// A destinations row's identifiers: its YoungPersonsID, then its ULN and UPN.
fn row_identifiers(row: &DestinationRow) -> Value {
    identifiers(
        ("nccis_id", &row.nccis_id),
        &[("uln", row.uln.as_ref()), ("upn", row.upn.as_ref())],
    )
}

/// The latest destination `agency` recorded for a person, from their log stream.
fn latest_destination(
    p: &Projector,
    agency: &str,
    yp: Uuid,
) -> Result<Option<Before>, HttpProblem> {
    let entry = p
        .log()
        .latest_of_person(yp, |r| {
            r.source == agency && r.event_type == EventType::DestinationRecorded
        })
        .map_err(internal)?;
    Ok(entry.as_ref().and_then(said_before))
}

/// The entries the projections name as the latest destinations `agency` recorded for the
/// people of a chunk's rows that differ from them ([`HeldDestination::Other`]), by log
/// position: read at once, in log order ([`pathway_log::Log::get_many`]). A quarter's
/// changed rows name destinations the last quarter's file appended together.
fn destinations_named(
    p: &Projector,
    looked_up: &[Looked],
) -> Result<HashMap<u64, pathway_log::Entry>, HttpProblem> {
    let seqs: Vec<u64> = looked_up
        .iter()
        .filter_map(|(_, held)| match held {
            HeldDestination::Other(seq) => Some(*seq),
            _ => None,
        })
        .collect();
    let entries = p.log().get_many(&seqs).map_err(internal)?;
    Ok(seqs
        .into_iter()
        .zip(entries)
        .filter_map(|(seq, e)| Some((seq, e?)))
        .collect())
}

/// The destination the projections name as the latest `agency` recorded for the person,
/// as read ([`destinations_named`]). Should the entry not be that destination (the
/// projections and the log disagree, which they must not), their stream is walked.
fn destination_at(
    p: &Projector,
    agency: &str,
    yp: Uuid,
    seq: u64,
    named: &HashMap<u64, pathway_log::Entry>,
) -> Result<Option<Before>, HttpProblem> {
    match named.get(&seq) {
        Some(e)
            if e.record.young_person == yp
                && e.record.source == agency
                && e.record.event_type == EventType::DestinationRecorded =>
        {
            Ok(said_before(e))
        }
        _ => {
            tracing::warn!(
                seq,
                "the latest-destination index names another entry; reading the stream"
            );
            latest_destination(p, agency, yp)
        }
    }
}

/// A recorded destination as the plan compares rows with it.
fn said_before(e: &pathway_log::Entry) -> Option<Before> {
    match EventData::parse(e.record.event_type, &e.record.data_value()) {
        Ok(EventData::DestinationRecorded(d)) => Some(Before {
            activity_code: d.activity_code,
            start: d.start_date,
            ascertained: d.date_ascertained,
            said_at: Said::At(e.record.seq),
            line: None,
        }),
        _ => None,
    }
}

/// What the registry says of a row, and where the agency's latest destination for the
/// matched person is when the row repeats it.
type Looked = (Identified, HeldDestination);

/// Every row's reads, done before the rows are planned in order: they only read the
/// projections (caught up before the chunk, and not written until its plan is appended), so
/// they go in batches, in key order. Planning in order then needs no more reads for the
/// rows of a repeated file, which are most rows.
fn look_up(
    p: &Projector,
    agency: &str,
    rows: &[DestinationRow],
) -> Result<Vec<Looked>, HttpProblem> {
    let claims: Vec<Claim> = rows
        .iter()
        .map(|row| Claim {
            own: (Scheme::NccisId, &row.nccis_id),
            national: [(Scheme::Uln, &row.uln), (Scheme::Upn, &row.upn)]
                .into_iter()
                .filter_map(|(scheme, v)| Some((scheme, v.as_deref()?)))
                .collect(),
            names: (row.given_name.as_deref(), row.family_name.as_deref()),
            dob: Some(row.date_of_birth),
        })
        .collect();
    let identified = identify_all(p, agency, &claims)?;
    let (matched, queries): (Vec<usize>, Vec<views::DestinationQuery>) = identified
        .iter()
        .zip(rows)
        .enumerate()
        .filter_map(|(i, ((found, _, _), row))| match found {
            Match::Exact(yp) | Match::NameAndDateOfBirth(yp) => Some((
                i,
                views::DestinationQuery {
                    young_person: *yp,
                    activity_code: &row.activity_code,
                    start: row.start_date,
                    ascertained: row.date_ascertained,
                },
            )),
            _ => None,
        })
        .unzip();
    // Only rows that found someone are asked about; the others register or are held.
    let mut held = vec![HeldDestination::Nothing; rows.len()];
    for (i, h) in matched
        .into_iter()
        .zip(views::latest_destinations(p, agency, &queries).map_err(internal)?)
    {
        held[i] = h;
    }
    Ok(identified.into_iter().zip(held).collect())
}

pub(super) fn plan(
    p: &Projector,
    agency: &str,
    rows: &[DestinationRow],
    mut summary: Summary,
) -> Result<Plan, HttpProblem> {
    let mut plan = Plan::default();
    // Within one file: people registered by it, and each person's latest destination so far.
    let mut new_by_id: HashMap<String, usize, Hashed> = HashMap::default();
    let mut latest: HashMap<Who, Option<Before>, Hashed> = HashMap::default();
    let mut linked: BTreeSet<(Uuid, String)> = BTreeSet::new();
    let looked_up = look_up(p, agency, rows)?;
    let named = destinations_named(p, &looked_up)?;
    for (row, (identified, held)) in rows.iter().zip(looked_up) {
        let (found, by_id, own_id_known) = identified;
        let who = match found {
            Match::Exact(yp) | Match::NameAndDateOfBirth(yp) => {
                plan.matched.insert(yp);
                let how = if by_id.contains(&yp) {
                    "exact-identifier"
                } else {
                    "date-of-birth-and-name"
                };
                if !own_id_known.contains(&yp) && linked.insert((yp, row.nccis_id.clone())) {
                    let ids = row_identifiers(row);
                    plan.links
                        .push(link(agency, yp, ids, how, row.date_ascertained));
                    touch(&mut plan.touched, row);
                    plan.changed.insert(yp);
                }
                Who::Known(yp)
            }
            Match::Ambiguous(candidates) => {
                summary.held_for_review.push(Held {
                    line: row.line,
                    nccis_id: row.nccis_id.clone(),
                    candidates: Candidates::of(candidates, &by_id),
                });
                continue;
            }
            Match::NotFound => match new_by_id.get(&row.nccis_id) {
                Some(i) => Who::New(*i),
                None => {
                    let Some(la) = &row.lea_code else {
                        summary.rejected.push(RowError {
                            file: None,
                            line: row.line,
                            column: Some("LEACode".into()),
                            value: None,
                            message: "is required to register a young person the exchange does not know yet".into(),
                        });
                        continue;
                    };
                    let i = plan.registrations.len();
                    plan.registrations.push(registration(
                        agency,
                        Newcomer {
                            own_id: &row.nccis_id,
                            identifiers: row_identifiers(row),
                            date_of_birth: row.date_of_birth,
                            sex: &row.sex,
                            responsible_authority: la,
                            given_name: row.given_name.as_ref(),
                            family_name: row.family_name.as_ref(),
                        },
                        row.date_ascertained,
                    ));
                    new_by_id.insert(row.nccis_id.clone(), i);
                    touch(&mut plan.touched, row);
                    Who::New(i)
                }
            },
        };
        plan.resolved.push(row.nccis_id.clone());
        // Most rows of a quarterly file repeat what the agency said last time: the
        // projector's digest of the latest destination (`held`) tells so with one lookup.
        // Only a row that differs reads the log, at the position the index names (for the
        // NEET onset rule and the dates).
        let mut before = match (latest.get(&who), who, held) {
            (Some(l), _, _) => l.clone(),
            (None, Who::Known(_), HeldDestination::Same(seq)) => {
                Some(Before::of(row, Said::At(seq)))
            }
            (None, Who::Known(yp), HeldDestination::Other(seq)) => {
                destination_at(p, agency, yp, seq, &named)?
            }
            (None, Who::Known(_), HeldDestination::Nothing) | (None, Who::New(_), _) => None,
        };
        if let Some(mut b) = before.take_if(|b| b.is(row)) {
            summary.unchanged += 1;
            b.line = Some(row.line);
            latest.insert(who, Some(b));
            continue;
        }
        // A destination is a dated fact: what was ascertained before the latest one held is
        // history, not news, and one day's destination is said once per file.
        if let Some(b) = before.as_ref() {
            if row.date_ascertained < b.ascertained {
                summary.superseded += 1;
                continue;
            }
            if let (true, Some(line)) = (row.date_ascertained == b.ascertained, b.line) {
                summary.rejected.push(RowError {
                    file: None,
                    line: row.line,
                    column: Some("DateAscertained".into()),
                    value: Some(row.date_ascertained.to_string()),
                    message: format!(
                        "line {line} already gives this young person a different destination ascertained on this day"
                    ),
                });
                continue;
            }
        }
        // The agency's own id for the person, whether or not the exchange knew them yet: a
        // row's event id must not change once its person is registered.
        let key = format!("nccis:{}", row.nccis_id);
        let mut data = Map::new();
        data.insert("activity_code".into(), text(row.activity_code.as_str()));
        data.insert("start_date".into(), text(row.start_date.to_string()));
        data.insert(
            "date_ascertained".into(),
            text(row.date_ascertained.to_string()),
        );
        let mut establishment = Map::new();
        for (k, v) in [
            ("number", &row.establishment_number),
            ("name", &row.establishment_name),
            ("ukprn", &row.ukprn),
        ] {
            if let Some(v) = v {
                establishment.insert(k.into(), text(v.as_str()));
            }
        }
        if !establishment.is_empty() {
            data.insert("establishment".into(), Value::Object(establishment));
        }
        if let Some(d) = row.due_to_lapse_date {
            data.insert("due_to_lapse_date".into(), text(d.to_string()));
        }
        // What it replaces is part of the id: a file that says again what an earlier file
        // said, after the agency said something else in between, is a new event, not the
        // first one answered again by the log's idempotency (and so silently not recorded).
        let replaces = before
            .as_ref()
            .map(|b| b.said_at.to_string())
            .unwrap_or_default();
        let id = derived_id(&[
            "destination.recorded",
            agency,
            &key,
            &row.activity_code,
            &row.start_date.to_string(),
            &row.date_ascertained.to_string(),
            &replaces,
        ]);
        if let Who::Known(yp) = who {
            plan.changed.insert(yp);
        }
        plan.events.push((
            who,
            envelope(
                id,
                "destination.recorded",
                row.date_ascertained,
                Value::Object(data),
            ),
        ));
        summary.changed += 1;
        let was_eet = before
            .as_ref()
            .is_some_and(|b| status(&b.activity_code) == Some("eet"));
        if was_eet && status(&row.activity_code) == Some("neet") {
            let start = row.neet_start_date.unwrap_or(row.start_date);
            plan.events.push((
                who,
                json!({
                    "id": derived_id(&["neet.onset", agency, &key, &start.to_string(), &row.activity_code]),
                    "type": "neet.onset",
                    "occurred_at": occurred(start),
                    "data": {"neet_start_date": start, "activity_code": row.activity_code},
                }),
            ));
            summary.neet_onsets += 1;
        }
        latest.insert(who, Some(Before::of(row, Said::By(id))));
    }
    plan.summary = summary;
    Ok(plan)
}

/// Adds what a row looks a person up by (its identifiers, and date of birth with name
/// whether or not that is consulted), hashed: equal hashes only make the next chunk wait.
pub(super) fn touch(keys: &mut Keys, row: &DestinationRow) {
    let hash = |key: (&str, &str, Option<Day>)| Hashed::default().hash_one(key);
    keys.insert(hash(("nccis", &row.nccis_id, None)));
    for (scheme, value) in [("uln", &row.uln), ("upn", &row.upn)] {
        if let Some(v) = value {
            keys.insert(hash((scheme, v, None)));
        }
    }
    if let Some(name) =
        identity::normalise_name(row.given_name.as_deref(), row.family_name.as_deref())
    {
        keys.insert(hash(("name", &name, Some(row.date_of_birth))));
    }
}

pub(super) fn touched_by(rows: &[DestinationRow]) -> Keys {
    let mut keys = Keys::with_capacity_and_hasher(rows.len() * 3, Default::default());
    for row in rows {
        touch(&mut keys, row);
    }
    keys
}
