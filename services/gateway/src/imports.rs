//! File imports: an agency's own export in, only the changes out as events.
//!
//! Quarterly destinations (careers service, NCCIS layout): each valid row is matched to a
//! young person through the identity registry (the agency's YoungPersonsID, then ULN or UPN,
//! then date of birth and name); an unknown person is registered, a match found another way
//! is linked (`identity.linked`), an ambiguous one is held for review and never guessed. A
//! destination that differs from the latest this agency recorded is appended, with
//! `neet.onset` when the person moves from an EET code to a NEET code. Every event's id is
//! derived from what it says, so the same file twice appends nothing.

use crate::problem::{internal, HttpProblem, Problem};
use crate::routes::AppState;
use pathway_bus::Submission;
use pathway_core::codes;
use pathway_core::date::Day;
use pathway_core::events::EventData;
use pathway_core::identity::{self, Match, Scheme};
use pathway_core::imports::{self, DestinationRow, RowError};
use pathway_core::EventType;
use pathway_projector::{views, Projector};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// What an import did, row by row in sum.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub rows: usize,
    pub registered: usize,
    pub linked: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub neet_onsets: usize,
    pub held_for_review: Vec<Held>,
    pub rejected: Vec<RowError>,
}

/// A row whose person could not be told apart from others: a person must decide.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub line: usize,
    pub nccis_id: String,
    pub candidates: usize,
}

/// An id derived from what an event says (SHA-256, v4-shaped): a re-import appends nothing.
fn derived_id(parts: &[&str]) -> Uuid {
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("\0").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

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
    summary: Summary,
}

fn status(code: &str) -> Option<&str> {
    codes::nccis_activity().column(code, "status")
}

fn occurred(day: Day) -> String {
    format!("{day}T00:00:00Z")
}

/// The latest destination `agency` recorded for a person, from their log stream.
fn latest_destination(
    p: &Projector,
    agency: &str,
    yp: Uuid,
) -> Result<Option<(String, Day, Day)>, HttpProblem> {
    let entries = p.log().read_person(yp).map_err(internal)?;
    let mut latest = None;
    for e in entries.iter().rev() {
        let r = &e.record;
        if r.source != agency || r.event_type != EventType::DestinationRecorded {
            continue;
        }
        if let Ok(EventData::DestinationRecorded(d)) =
            EventData::parse(r.event_type, &r.data_value())
        {
            latest = Some((d.activity_code, d.start_date, d.date_ascertained));
            break;
        }
    }
    Ok(latest)
}

fn plan(
    p: &Projector,
    agency: &str,
    rows: Vec<DestinationRow>,
    mut summary: Summary,
) -> Result<Plan, HttpProblem> {
    let mut plan = Plan {
        resolved: Vec::new(),
        registrations: Vec::new(),
        links: Vec::new(),
        events: Vec::new(),
        summary: Summary::default(),
    };
    // Within one file: people registered by it, and each person's latest destination so far.
    let mut new_by_id: HashMap<String, usize> = HashMap::new();
    let mut latest: HashMap<Who, Option<(String, Day, Day)>> = HashMap::new();
    let mut linked: BTreeSet<(Uuid, String)> = BTreeSet::new();
    for row in rows {
        let mut by_id = BTreeSet::new();
        let mut own_id_known = BTreeSet::new();
        for (scheme, value) in [
            (Scheme::NccisId, Some(&row.nccis_id)),
            (Scheme::Uln, row.uln.as_ref()),
            (Scheme::Upn, row.upn.as_ref()),
        ] {
            if let Some(v) = value {
                let found = views::lookup(p, scheme, scheme.scope(agency), v).map_err(internal)?;
                if scheme == Scheme::NccisId {
                    own_id_known.extend(found.iter().copied());
                }
                by_id.extend(found);
            }
        }
        let by_name =
            match identity::normalise_name(row.given_name.as_deref(), row.family_name.as_deref()) {
                Some(name) => views::lookup_name(p, row.date_of_birth, &name).map_err(internal)?,
                None => BTreeSet::new(),
            };
        let who = match identity::decide(&by_id, &by_name) {
            Match::Exact(yp) | Match::NameAndDateOfBirth(yp) => {
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
                    plan.links.push(json!({
                        "id": derived_id(&["identity.linked", agency, &yp.to_string(), &row.nccis_id]),
                        "type": "identity.linked",
                        "young_person": yp,
                        "occurred_at": occurred(row.date_ascertained),
                        "data": {"agency": agency, "identifiers": ids, "match": how},
                    }));
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
                    Who::New(i)
                }
            },
        };
        plan.resolved.push(row.nccis_id.clone());
        let before = match latest.get(&who) {
            Some(l) => l.clone(),
            None => match who {
                Who::Known(yp) => latest_destination(p, agency, yp)?,
                Who::New(_) => None,
            },
        };
        let now = (
            row.activity_code.clone(),
            row.start_date,
            row.date_ascertained,
        );
        if before.as_ref() == Some(&now) {
            summary.unchanged += 1;
            continue;
        }
        let key = match who {
            Who::Known(yp) => yp.to_string(),
            Who::New(_) => format!("nccis:{}", row.nccis_id),
        };
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
        let parts = [
            "destination.recorded",
            agency,
            &key,
            &row.activity_code,
            &row.start_date.to_string(),
            &row.date_ascertained.to_string(),
        ];
        plan.events.push((
            who,
            json!({
                "id": derived_id(&parts),
                "type": "destination.recorded",
                "occurred_at": occurred(row.date_ascertained),
                "data": data,
            }),
        ));
        summary.changed += 1;
        let was_eet = before
            .as_ref()
            .is_some_and(|(code, _, _)| status(code) == Some("eet"));
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
        latest.insert(who, Some(now));
    }
    plan.summary = summary;
    Ok(plan)
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
    for id in resolved {
        batch.remove(review_key(agency, id));
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

/// Imports a destinations file for `agency`.
pub async fn destinations(
    state: &AppState,
    agency: &str,
    text: String,
) -> Result<Summary, HttpProblem> {
    let (rows, rejected) = imports::destinations(&text).map_err(|e| {
        HttpProblem::from(
            Problem::new(422, "unreadable-file", "The file cannot be imported").detail(format!(
                "line {}: {}{}",
                e.line,
                e.column.map(|c| format!("{c}: ")).unwrap_or_default(),
                e.message
            )),
        )
    })?;
    let summary = Summary {
        rows: rows.len()
            + rejected
                .iter()
                .map(|e| e.line)
                .collect::<BTreeSet<_>>()
                .len(),
        rejected,
        ..Summary::default()
    };
    // The registry must include everything appended so far before rows are matched.
    let head = state.projector.log().head();
    let mut applied = state.projector.watch();
    applied
        .wait_for(|seq| *seq >= head)
        .await
        .map_err(internal)?;
    let projector = state.projector.clone();
    let owner = agency.to_owned();
    let mut plan = tokio::task::spawn_blocking(move || plan(&projector, &owner, rows, summary))
        .await
        .map_err(internal)??;
    let mut minted = Vec::new();
    for chunk in plan.registrations.chunks(1000) {
        let answers = state
            .ingress
            .submit(Submission {
                agency: agency.to_owned(),
                envelopes: chunk.to_vec(),
                batch: true,
            })
            .await
            .map_err(failed)?;
        plan.summary.registered += answers.iter().filter(|a| !a.duplicate).count();
        minted.extend(answers.iter().map(|a| a.young_person));
    }
    for chunk in plan.links.chunks(1000) {
        let answers = state.own.record_own(chunk).await.map_err(failed)?;
        plan.summary.linked += answers.iter().filter(|a| !a.duplicate).count();
    }
    let events: Vec<Value> = plan
        .events
        .into_iter()
        .map(|(who, mut e)| {
            e["young_person"] = json!(match who {
                Who::Known(yp) => yp,
                Who::New(i) => minted[i],
            });
            e
        })
        .collect();
    for chunk in events.chunks(1000) {
        state
            .ingress
            .submit(Submission {
                agency: agency.to_owned(),
                envelopes: chunk.to_vec(),
                batch: true,
            })
            .await
            .map_err(failed)?;
    }
    record_review(state, agency, &plan.summary.held_for_review, &plan.resolved)?;
    tracing::info!(
        rows = plan.summary.rows,
        registered = plan.summary.registered,
        changed = plan.summary.changed,
        rejected = plan.summary.rejected.len(),
        "destinations imported"
    );
    Ok(plan.summary)
}
