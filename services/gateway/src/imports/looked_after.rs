//! A local authority's looked-after list (SSDA903 `header`, `episodes`, optional `oc3`):
//! each child matched as destination rows are, and only the facts the exchange does not
//! already hold from that authority appended (registered, looked-after started or ceased,
//! legal status and placement changes, care-leaver outcomes).

use super::review::{record_review, Hold};
use super::{
    append, caught_up, derived_id, envelope, identifiers, identify_all, link, registration,
    Candidates, Claim, Newcomer, Who,
};
use crate::problem::{internal, HttpProblem, Problem};
use crate::routes::AppState;
use pathway_core::date::Day;
use pathway_core::identity::{Match, Scheme};
use pathway_core::imports::RowError;
use pathway_core::ssda903;
use pathway_projector::Projector;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

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
    #[serde(flatten)]
    pub candidates: Candidates,
}

impl HeldChild {
    fn hold(&self) -> Hold<'_> {
        Hold {
            id: &self.child,
            line: None,
            candidates: &self.candidates,
        }
    }
}

#[derive(Default)]
struct ListPlan {
    /// Children matched or registered without doubt: any earlier hold on them is over.
    resolved: Vec<String>,
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
    let mut plan = ListPlan::default();
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
                    let ids = identifiers(
                        ("la_child_id", &child.child),
                        &[("upn", header.and_then(|h| h.upn.as_ref()))],
                    );
                    plan.links.push(link(agency, yp, ids, how, today));
                }
                Who::Known(yp)
            }
            Match::Ambiguous(candidates) => {
                summary.held_for_review.push(HeldChild {
                    child: child.child.clone(),
                    candidates: Candidates::of(candidates, &by_id),
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
                plan.registrations.push(registration(
                    agency,
                    Newcomer {
                        own_id: &child.child,
                        identifiers: identifiers(
                            ("la_child_id", &child.child),
                            &[("upn", h.upn.as_ref())],
                        ),
                        date_of_birth: h.dob,
                        sex: &h.sex,
                        responsible_authority: code,
                        given_name: h.given_name.as_ref(),
                        family_name: h.family_name.as_ref(),
                    },
                    today,
                ));
                Who::New(plan.registrations.len() - 1)
            }
        };
        plan.resolved.push(child.child.clone());
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
                envelope(
                    derived_id(&[agency, &child.child, &key]),
                    ty.name(),
                    on,
                    data,
                ),
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
    let holds: Vec<_> = plan
        .summary
        .held_for_review
        .iter()
        .map(HeldChild::hold)
        .collect();
    record_review(state, agency, Scheme::LaChildId, &holds, &plan.resolved)?;
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
