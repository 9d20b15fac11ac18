//! File imports: an agency's own export in, only the changes out as events.
//!
//! Quarterly destinations (careers service, NCCIS layout): each valid row is matched to a
//! young person through the identity registry (the agency's YoungPersonsID, then ULN or UPN,
//! then date of birth and name); an unknown person is registered, a match found another way
//! is linked (`identity.linked`), an ambiguous one is held for review and never guessed. A
//! destination that differs from the latest this agency recorded is appended, with
//! `neet.onset` when the person moves from an EET code to a NEET code; one ascertained before
//! that latest is history (`superseded`), and two for one person on one day in one file are
//! a contradiction (rejected). Every event's id is derived from what it says and what it
//! replaces, so the same file twice appends nothing, while a file that says again what an
//! earlier file said, after the agency said something else in between, is recorded again.
//!
//! Most rows of a quarterly file repeat last quarter's: the projector keeps a digest of each
//! agency's latest destination per person, so such a row costs the identifier lookups and one
//! more, and the person's log stream is read (and decrypted) only for rows that differ.

use crate::problem::{internal, HttpProblem, Problem};
use crate::routes::AppState;
use pathway_bus::Submission;
use pathway_core::codes;
use pathway_core::date::Day;
use pathway_core::events::EventData;
use pathway_core::identity::{self, Match, Scheme};
use pathway_core::imports::{self, DestinationRow, RowError};
use pathway_core::ssda903;
use pathway_core::EventType;
use pathway_log::people::PersonHasher;
use pathway_projector::views::{self, HeldDestination};
use pathway_projector::Projector;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicUsize, Ordering};
use uuid::Uuid;

/// What an import did, row by row in sum.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub rows: usize,
    pub registered: usize,
    pub linked: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Rows ascertained before the latest destination already held for their person: older
    /// news, not recorded.
    pub superseded: usize,
    pub neet_onsets: usize,
    pub held_for_review: Vec<Held>,
    pub rejected: Vec<RowError>,
    /// Problems and holds beyond the first 10,000 of each, counted but not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_problems: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A row whose person could not be told apart from others: a person must decide.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub line: usize,
    pub nccis_id: String,
    pub candidates: usize,
}

/// An id derived from what an event says (SHA-256 of its parts, v4-shaped), so that saying it
/// again is recognised by the log's idempotency: a re-import, or a repeated housekeeping
/// pass, appends nothing.
pub fn derived_id(parts: &[&str]) -> Uuid {
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("\0").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The plan's sets and maps hash with the log's keyed mix ([`PersonHasher`]) rather than
/// SipHash, which was a sixth of planning a repeated file's rows. Keyed, because rows say
/// what they like: an agency must not be able to put every key in one bucket.
type Hashed = BuildHasherDefault<PersonHasher>;
/// `touch` keys: hashes of what rows look people up by.
type Keys = HashSet<u64, Hashed>;
type People = HashSet<Uuid, Hashed>;

/// Who a row is about: someone known, or someone this import registers (by position).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Known(Uuid),
    New(usize),
}

struct Plan {
    /// Identifiers of rows matched without doubt: any earlier hold on them is over.
    resolved: Vec<String>,
    registrations: Vec<Value>,
    links: Vec<Value>,
    /// Destination and NEET events, for whom.
    events: Vec<(Who, Value)>,
    /// Everyone a row matched, changed or not, and what the plan changes: the lookup keys
    /// (`touch`) of rows that register or link someone, and the people it records anything
    /// about. Chunks are planned before the two before them are projected (`Unprojected`,
    /// [`plan_beside`]).
    matched: People,
    touched: Keys,
    changed: People,
    summary: Summary,
}

fn status(code: &str) -> Option<&str> {
    codes::nccis_activity().column(code, "status")
}

fn occurred(day: Day) -> String {
    format!("{day}T00:00:00Z")
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

/// Who a row or child says they are: the agency's own identifier, national ones, the name
/// and date of birth.
struct Claim<'a> {
    own: (Scheme, &'a str),
    national: Vec<(Scheme, &'a str)>,
    names: (Option<&'a str>, Option<&'a str>),
    dob: Option<Day>,
}

/// What the registry says of a claim: the match, the people its identifiers found, and those
/// the agency's own identifier already names (if the match is not among them, the import
/// records the link).
type Identified = (Match, BTreeSet<Uuid>, BTreeSet<Uuid>);

/// What the registry says of each claim, in order. All the claims' identifiers are read in
/// one pass in key order ([`views::lookup_many`]), then the names of those no identifier found.
fn identify_all(
    p: &Projector,
    agency: &str,
    claims: &[Claim],
) -> Result<Vec<Identified>, HttpProblem> {
    let mut asked = Vec::new();
    let mut whose = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        for (n, (scheme, value)) in std::iter::once(&c.own).chain(&c.national).enumerate() {
            asked.push((*scheme, scheme.scope(agency), *value));
            whose.push((i, n == 0));
        }
    }
    let mut by_id = vec![BTreeSet::new(); claims.len()];
    let mut own_known = vec![BTreeSet::new(); claims.len()];
    for ((i, own), people) in whose
        .into_iter()
        .zip(views::lookup_many(p, &asked).map_err(internal)?)
    {
        if own {
            own_known[i] = people.clone();
        }
        by_id[i].extend(people);
    }
    // The name is only consulted when no identifier matched (`identity::decide`): most rows
    // of a repeated file match by identifier, and this saves them a lookup.
    let names: Vec<(usize, Day, String)> = claims
        .iter()
        .enumerate()
        .filter(|(i, _)| by_id[*i].is_empty())
        .filter_map(|(i, c)| {
            let name = identity::normalise_name(c.names.0, c.names.1)?;
            Some((i, c.dob?, name))
        })
        .collect();
    let asked: Vec<(Day, &str)> = names.iter().map(|(_, dob, n)| (*dob, n.as_str())).collect();
    let mut by_name = vec![BTreeSet::new(); claims.len()];
    for ((i, _, _), people) in names
        .iter()
        .zip(views::lookup_names(p, &asked).map_err(internal)?)
    {
        by_name[*i] = people;
    }
    Ok(by_id
        .into_iter()
        .zip(by_name)
        .zip(own_known)
        .map(|((by_id, by_name), own)| (identity::decide(&by_id, &by_name), by_id, own))
        .collect())
}

/// The `identity.linked` event for a match found other than by the agency's own identifier.
fn link(agency: &str, yp: Uuid, ids: Value, how: &str, on: Day) -> Value {
    json!({
        "id": derived_id(&["identity.linked", agency, &yp.to_string(), &ids.to_string()]),
        "type": "identity.linked",
        "young_person": yp,
        "occurred_at": occurred(on),
        "data": {"agency": agency, "identifiers": ids, "match": how},
    })
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

fn plan(
    p: &Projector,
    agency: &str,
    rows: &[DestinationRow],
    mut summary: Summary,
) -> Result<Plan, HttpProblem> {
    let mut plan = Plan {
        resolved: Vec::new(),
        registrations: Vec::new(),
        links: Vec::new(),
        events: Vec::new(),
        matched: People::default(),
        touched: Keys::default(),
        changed: People::default(),
        summary: Summary::default(),
    };
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
                    let mut ids = json!({"nccis_id": row.nccis_id});
                    if let Some(u) = &row.uln {
                        ids["uln"] = json!(u);
                    }
                    if let Some(u) = &row.upn {
                        ids["upn"] = json!(u);
                    }
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
                    candidates: candidates.len(),
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
                    let mut ids = json!({"nccis_id": row.nccis_id});
                    if let Some(u) = &row.uln {
                        ids["uln"] = json!(u);
                    }
                    if let Some(u) = &row.upn {
                        ids["upn"] = json!(u);
                    }
                    let mut data = json!({
                        "date_of_birth": row.date_of_birth,
                        "sex": row.sex,
                        "identifiers": ids,
                        "responsible_authority": la,
                    });
                    if let Some(g) = &row.given_name {
                        data["given_name"] = json!(g);
                    }
                    if let Some(f) = &row.family_name {
                        data["family_name"] = json!(f);
                    }
                    let i = plan.registrations.len();
                    plan.registrations.push(json!({
                        "id": derived_id(&["young-person.registered", agency, &row.nccis_id]),
                        "type": "young-person.registered",
                        "occurred_at": occurred(row.date_ascertained),
                        "data": data,
                    }));
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
        let mut data = json!({
            "activity_code": row.activity_code,
            "start_date": row.start_date,
            "date_ascertained": row.date_ascertained,
        });
        let mut establishment = serde_json::Map::new();
        for (k, v) in [
            ("number", &row.establishment_number),
            ("name", &row.establishment_name),
            ("ukprn", &row.ukprn),
        ] {
            if let Some(v) = v {
                establishment.insert(k.into(), json!(v));
            }
        }
        if !establishment.is_empty() {
            data["establishment"] = Value::Object(establishment);
        }
        if let Some(d) = row.due_to_lapse_date {
            data["due_to_lapse_date"] = json!(d);
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
            json!({
                "id": id,
                "type": "destination.recorded",
                "occurred_at": occurred(row.date_ascertained),
                "data": data,
            }),
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

/// Batches of an import in flight at once. One at a time, the log writer waited while the
/// recorder validated the next batch and the recorder waited for the writer's fsync; two
/// keep both busy, one per core.
pub const IN_FLIGHT: usize = 2;

/// Envelopes an import submits at once.
pub const BATCH: usize = 1000;

/// `items` in batches of `size`, moved rather than copied.
pub fn batches<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut items = items.into_iter().peekable();
    let mut out = Vec::new();
    while items.peek().is_some() {
        out.push(items.by_ref().take(size).collect());
    }
    out
}

/// Appends what an import planned, in order: registrations (as the agency; the exchange mints
/// their ids), then identity links (the exchange's own), then the agency's events, which
/// learn the minted ids. Returns how many registrations and links were new.
///
/// Registrations are independent of each other, so [`IN_FLIGHT`] batches of them go at once
/// (their answers kept in order, for the minted ids). The events go in [`IN_FLIGHT`] lanes
/// split by person, each lane one batch at a time: a person's events stay in the order
/// planned (a destination before the NEET onset it implies), and no event concerns anyone
/// but its own person.
async fn append(
    state: &AppState,
    agency: &str,
    registrations: Vec<Value>,
    links: &[Value],
    events: Vec<(Who, Value)>,
) -> Result<(usize, usize), HttpProblem> {
    // The planned envelopes are handed over, not copied: a copy of each (a map per
    // envelope and per `data`) was a few percent of a new row's time.
    let submit = |envelopes: Vec<Value>| {
        state.ingress.submit(Submission {
            agency: agency.to_owned(),
            envelopes,
            batch: true,
        })
    };
    use futures::{StreamExt, TryStreamExt};
    let (mut registered, mut linked) = (0, 0);
    let mut minted = Vec::new();
    let answered: Vec<_> = futures::stream::iter(batches(registrations, BATCH))
        .map(submit)
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
        .map_err(failed)?;
    for answers in answered {
        registered += answers.iter().filter(|a| !a.duplicate).count();
        minted.extend(answers.iter().map(|a| a.young_person));
    }
    for chunk in links.chunks(BATCH) {
        let answers = state.own.record_own(chunk).await.map_err(failed)?;
        linked += answers.iter().filter(|a| !a.duplicate).count();
    }
    let mut lanes: [Vec<Value>; IN_FLIGHT] = Default::default();
    for (who, mut e) in events {
        let yp = match who {
            Who::Known(yp) => yp,
            Who::New(i) => minted[i],
        };
        e["young_person"] = json!(yp);
        lanes[(yp.as_u128() % IN_FLIGHT as u128) as usize].push(e);
    }
    futures::future::try_join_all(lanes.into_iter().map(|lane| async move {
        for batch in batches(lane, BATCH) {
            submit(batch).await?;
        }
        Ok(())
    }))
    .await
    .map_err(failed)?;
    Ok((registered, linked))
}

/// Brings the projections up to everything appended so far (stepping them here rather
/// than waiting for the live loop): imports match rows against the identity registry,
/// which the projector keeps.
async fn caught_up(state: &AppState) -> Result<(), HttpProblem> {
    caught_up_to(state, state.projector.log().head()).await
}

/// Brings the projections up to `seq` at least.
async fn caught_up_to(state: &AppState, seq: u64) -> Result<(), HttpProblem> {
    while state.projector.checkpoint() < seq {
        let p = state.projector.clone();
        tokio::task::spawn_blocking(move || p.step(4096))
            .await
            .map_err(internal)?
            .map_err(internal)?;
    }
    Ok(())
}

fn failed(mut p: Problem) -> HttpProblem {
    p.detail = format!(
        "{} The import stopped here; correct the problem and send the file again: rows already applied are recognised and not applied twice.",
        p.detail
    )
    .trim()
    .to_owned();
    p.into()
}

fn review_key(agency: &str, id: &str) -> Vec<u8> {
    let mut k = agency.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Keeps the review queue in step with an import: rows held now are queued, rows matched now
/// leave it.
fn record_review(
    state: &AppState,
    agency: &str,
    held: &[Held],
    resolved: &[String],
) -> Result<(), HttpProblem> {
    let tree = state.projector.identity_review().map_err(internal)?;
    let mut batch = sled::Batch::default();
    // Almost always nobody is held: then a file's rows cost no writes here. sled writes a
    // removal to its log even for a key it does not hold.
    let mut writes = held.len();
    if !tree.is_empty() {
        for key in resolved.iter().map(|id| review_key(agency, id)) {
            if tree.contains_key(&key).map_err(internal)? {
                batch.remove(key);
                writes += 1;
            }
        }
    }
    if writes == 0 {
        return Ok(());
    }
    let today = Day(state.projector.log().now().date());
    for h in held {
        let value = json!({"nccis_id": h.nccis_id, "line": h.line, "candidates": h.candidates, "held_on": today});
        batch.insert(
            review_key(agency, &h.nccis_id),
            value.to_string().into_bytes(),
        );
    }
    tree.apply_batch(batch).map_err(internal)
}

/// The agency's rows held for identity review.
pub fn review_queue(state: &AppState, agency: &str) -> Result<Vec<Value>, HttpProblem> {
    let tree = state.projector.identity_review().map_err(internal)?;
    tree.scan_prefix(review_key(agency, ""))
        .map(|kv| {
            let (_, v) = kv.map_err(internal)?;
            serde_json::from_slice(&v).map_err(internal)
        })
        .collect()
}

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
/// Problems listed in a summary; beyond this they are counted (`unlisted_problems`).
const MAX_LISTED: usize = 10_000;

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

/// Adds what a row looks a person up by (its identifiers, and date of birth with name
/// whether or not that is consulted), hashed: equal hashes only make the next chunk wait.
fn touch(keys: &mut Keys, row: &DestinationRow) {
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

fn touched_by(rows: &[DestinationRow]) -> Keys {
    let mut keys = Keys::with_capacity_and_hasher(rows.len() * 3, Default::default());
    for row in rows {
        touch(&mut keys, row);
    }
    keys
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
    record_review(&state, &agency, &summary.held_for_review, &resolved)?;
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

/// Adds to a summary's list up to its limit, counting the rest.
fn list<T>(listed: &mut Vec<T>, more: Vec<T>, unlisted: &mut usize) {
    for item in more {
        if listed.len() < MAX_LISTED {
            listed.push(item);
        } else {
            *unlisted += 1;
        }
    }
}

/// What a looked-after list import did.
#[derive(Debug, Default, Serialize)]
pub struct ListSummary {
    pub rows: usize,
    pub children: usize,
    pub registered: usize,
    pub linked: usize,
    /// Events appended, by type.
    pub appended: std::collections::BTreeMap<String, usize>,
    /// Children whose rows added nothing the exchange did not already hold.
    pub unchanged: usize,
    pub held_for_review: Vec<HeldChild>,
    pub rejected: Vec<RowError>,
}

/// A child whose person could not be told apart from others.
#[derive(Debug, Clone, Serialize)]
pub struct HeldChild {
    pub child: String,
    pub candidates: usize,
}

struct ListPlan {
    registrations: Vec<Value>,
    links: Vec<Value>,
    events: Vec<(Who, Value)>,
    summary: ListSummary,
}

/// The facts (`ssda903::fact_key`) each person's record already holds from this agency,
/// read for all of them at once, in key order ([`pathway_log::Log::each_before`]): a
/// local authority's list names children registered and updated together.
fn held_facts(
    p: &Projector,
    agency: &str,
    people: &[Uuid],
) -> Result<HashMap<Uuid, BTreeSet<String>>, HttpProblem> {
    let asked: Vec<(Uuid, u64)> = people.iter().map(|yp| (*yp, u64::MAX)).collect();
    let mut held = vec![BTreeSet::new(); asked.len()];
    p.log()
        .each_before(&asked, |i, e| {
            if e.record.source == agency {
                held[i].insert(ssda903::fact_key(
                    e.record.event_type,
                    &e.record.data_value(),
                ));
            }
        })
        .map_err(internal)?;
    Ok(people.iter().copied().zip(held).collect())
}

fn plan_list(
    p: &Projector,
    agency: &str,
    la_code: Option<&str>,
    children: Vec<ssda903::Child>,
    today: Day,
    year_end: Day,
    mut summary: ListSummary,
) -> Result<ListPlan, HttpProblem> {
    let mut plan = ListPlan {
        registrations: Vec::new(),
        links: Vec::new(),
        events: Vec::new(),
        summary: ListSummary::default(),
    };
    let reject =
        |summary: &mut ListSummary, file: &str, line: usize, column: &str, message: &str| {
            summary.rejected.push(RowError {
                file: Some(file.to_owned()),
                line,
                column: Some(column.to_owned()),
                value: None,
                message: message.to_owned(),
            });
        };
    let claims: Vec<Claim> = children
        .iter()
        .map(|child| {
            let header = child.header.as_ref();
            Claim {
                own: (Scheme::LaChildId, &child.child),
                national: header
                    .and_then(|h| h.upn.as_deref())
                    .map(|u| (Scheme::Upn, u))
                    .into_iter()
                    .collect(),
                names: (
                    header.and_then(|h| h.given_name.as_deref()),
                    header.and_then(|h| h.family_name.as_deref()),
                ),
                dob: header.map(|h| h.dob).or(child.oc3.as_ref().map(|o| o.dob)),
            }
        })
        .collect();
    let identified = identify_all(p, agency, &claims)?;
    let known: Vec<Uuid> = identified
        .iter()
        .filter_map(|(found, _, _)| match found {
            Match::Exact(yp) | Match::NameAndDateOfBirth(yp) => Some(*yp),
            _ => None,
        })
        .collect();
    let held_by = held_facts(p, agency, &known)?;
    for (child, (found, by_id, own_known)) in children.into_iter().zip(identified) {
        let events = match ssda903::events(&child, today, year_end) {
            Ok(e) => e,
            Err(e) => {
                summary.rejected.push(e);
                continue;
            }
        };
        let header = child.header.as_ref();
        let who = match found {
            Match::Exact(yp) | Match::NameAndDateOfBirth(yp) => {
                if !own_known.contains(&yp) {
                    let how = if by_id.contains(&yp) {
                        "exact-identifier"
                    } else {
                        "date-of-birth-and-name"
                    };
                    let mut ids = json!({"la_child_id": child.child});
                    if let Some(u) = header.and_then(|h| h.upn.as_ref()) {
                        ids["upn"] = json!(u);
                    }
                    plan.links.push(link(agency, yp, ids, how, today));
                }
                Who::Known(yp)
            }
            Match::Ambiguous(candidates) => {
                summary.held_for_review.push(HeldChild {
                    child: child.child.clone(),
                    candidates: candidates.len(),
                });
                continue;
            }
            Match::NotFound => {
                let Some(h) = header else {
                    let (file, line) = match (child.episodes.first(), &child.oc3) {
                        (Some(e), _) => ("episodes", e.line),
                        (None, Some(o)) => ("oc3", o.line),
                        (None, None) => ("header", 1),
                    };
                    reject(
                        &mut summary,
                        file,
                        line,
                        "CHILD",
                        "is not known to the exchange and has no row in header",
                    );
                    continue;
                };
                let Some(code) = la_code else {
                    reject(&mut summary, "header", h.line, "CHILD", "is new to the exchange, and registering needs the authority's la_code in the exchange's configuration");
                    continue;
                };
                let mut ids = json!({"la_child_id": child.child});
                if let Some(u) = &h.upn {
                    ids["upn"] = json!(u);
                }
                let mut data = json!({
                    "date_of_birth": h.dob,
                    "sex": h.sex,
                    "identifiers": ids,
                    "responsible_authority": code,
                });
                if let Some(g) = &h.given_name {
                    data["given_name"] = json!(g);
                }
                if let Some(f) = &h.family_name {
                    data["family_name"] = json!(f);
                }
                plan.registrations.push(json!({
                    "id": derived_id(&["young-person.registered", agency, &child.child]),
                    "type": "young-person.registered",
                    "occurred_at": occurred(today),
                    "data": data,
                }));
                Who::New(plan.registrations.len() - 1)
            }
        };
        let mut held = match who {
            Who::Known(yp) => held_by.get(&yp).cloned().unwrap_or_default(),
            Who::New(_) => BTreeSet::new(),
        };
        let mut added = 0;
        for (ty, on, data) in events {
            let key = ssda903::fact_key(ty, &data);
            if !held.insert(key.clone()) {
                continue;
            }
            plan.events.push((
                who,
                json!({
                    "id": derived_id(&[agency, &child.child, &key]),
                    "type": ty.name(),
                    "occurred_at": occurred(on),
                    "data": data,
                }),
            ));
            *summary.appended.entry(ty.name().to_owned()).or_default() += 1;
            added += 1;
        }
        if added == 0 && matches!(who, Who::Known(_)) {
            summary.unchanged += 1;
        }
    }
    plan.summary = summary;
    Ok(plan)
}

/// Imports a looked-after list (SSDA903 `header`, `episodes`, optional `oc3`) for `agency`.
/// `year` is the collection year's end (2021 for 2020-21), for OC3 birthdays.
pub async fn looked_after(
    state: &AppState,
    agency: &str,
    header: String,
    episodes: String,
    oc3: Option<String>,
    year: Option<i32>,
) -> Result<ListSummary, HttpProblem> {
    let (children, rejected, rows) = ssda903::looked_after(&header, &episodes, oc3.as_deref())
        .map_err(|e| {
            HttpProblem::from(
                Problem::new(422, "unreadable-file", "The files cannot be imported").detail(
                    format!(
                        "{} line {}: {}{}",
                        e.file.unwrap_or_default(),
                        e.line,
                        e.column.map(|c| format!("{c}: ")).unwrap_or_default(),
                        e.message
                    ),
                ),
            )
        })?;
    let summary = ListSummary {
        rows,
        children: children.len(),
        rejected,
        ..ListSummary::default()
    };
    caught_up(state).await?;
    let projector = state.projector.clone();
    let owner = agency.to_owned();
    let la_code = projector
        .agreements()
        .agency(agency)
        .and_then(|a| a.la_code.clone());
    let today = Day(projector.log().now().date());
    let year_end = ssda903::collection_year_end(year, today);
    let mut plan = tokio::task::spawn_blocking(move || {
        plan_list(
            &projector,
            &owner,
            la_code.as_deref(),
            children,
            today,
            year_end,
            summary,
        )
    })
    .await
    .map_err(internal)??;
    let (registered, linked) =
        append(state, agency, plan.registrations, &plan.links, plan.events).await?;
    plan.summary.registered = registered;
    plan.summary.linked = linked;
    // As with destinations: once answered, the list's children can be looked up.
    caught_up(state).await?;
    tracing::info!(
        rows = plan.summary.rows,
        registered = plan.summary.registered,
        rejected = plan.summary.rejected.len(),
        "looked-after list imported"
    );
    Ok(plan.summary)
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
