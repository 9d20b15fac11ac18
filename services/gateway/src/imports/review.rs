//! Rows held for identity review: an ambiguous match is queued, never guessed. A hold ends
//! when a later import matches the row without doubt, or when the agency's reviewer decides
//! who the row is about (`POST /v1/identity/review`): the exchange then records the
//! agency's own identifier as linked to that person (`identity.linked`, match `reviewed`),
//! so the next import of the row finds them by it.
//!
//! The queue keeps who each row could be, but lists to the agency only those of them it
//! may see now (`visible_candidates`): the rest are counted, as the import's answer counts
//! them, and cannot be chosen. Deny by default: a reviewer links to someone they can see.

use super::{caught_up, link, Candidates, Doubt};
use crate::problem::{internal, HttpProblem, Problem};
use crate::routes::AppState;
use pathway_core::date::Day;
use pathway_core::envelope::FieldError;
use pathway_core::identity::Scheme;
use pathway_projector::views;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// A row (or a looked-after list's child) held now, as an importer hands it over.
pub(super) struct Hold<'a> {
    /// The agency's own identifier for the row's person.
    pub id: &'a str,
    /// The row's line, for a destinations file (a list's child spans rows of three files).
    pub line: Option<usize>,
    pub candidates: &'a Candidates,
}

/// One entry of the queue as stored: the agency's identifier under its scheme's name, and
/// who it could be.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    nccis_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    la_child_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    line: Option<usize>,
    candidates: usize,
    /// Absent from entries queued before reasons were kept.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    reason: Option<Doubt>,
    /// Absent from entries queued before the candidates were kept: such a row is decided
    /// by importing it again, which holds it anew with them.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    people: Vec<Uuid>,
    held_on: Day,
}

/// The queue's key for an agency's identifier. Destination rows were the first held, under
/// `agency NUL id`; a looked-after list's children name their scheme as well, so the two
/// never meet. One prefix (`agency NUL`) lists an agency's whole queue.
fn review_key(agency: &str, scheme: Scheme, id: &str) -> Vec<u8> {
    let mut k = agency.as_bytes().to_vec();
    k.push(0);
    if scheme != Scheme::NccisId {
        k.extend_from_slice(scheme.name().as_bytes());
        k.push(0);
    }
    k.extend_from_slice(id.as_bytes());
    k
}

/// Keeps the review queue in step with an import: rows held now are queued, rows matched now
/// (`resolved`, the agency's identifiers under `scheme`) leave it.
pub(super) fn record_review(
    state: &AppState,
    agency: &str,
    scheme: Scheme,
    held: &[Hold],
    resolved: &[String],
) -> Result<(), HttpProblem> {
    let tree = state.projector.identity_review().map_err(internal)?;
    let mut batch = sled::Batch::default();
    // Almost always nobody is held: then a file's rows cost no writes here. sled writes a
    // removal to its log even for a key it does not hold.
    let mut writes = held.len();
    if !tree.is_empty() {
        for key in resolved.iter().map(|id| review_key(agency, scheme, id)) {
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
        let (nccis_id, la_child_id) = match scheme {
            Scheme::NccisId => (Some(h.id.to_owned()), None),
            _ => (None, Some(h.id.to_owned())),
        };
        let stored = Stored {
            nccis_id,
            la_child_id,
            line: h.line,
            candidates: h.candidates.people.len(),
            reason: Some(h.candidates.reason),
            people: h.candidates.people.clone(),
            held_on: today,
        };
        batch.insert(
            review_key(agency, scheme, h.id),
            serde_json::to_vec(&stored).expect("review entries serialise"),
        );
    }
    tree.apply_batch(batch).map_err(internal)
}

/// The agency's rows held for review, each with the candidates it may see now.
pub fn review_queue(state: &AppState, agency: &str) -> Result<Vec<Value>, HttpProblem> {
    let tree = state.projector.identity_review().map_err(internal)?;
    let mut items = Vec::new();
    for kv in tree.scan_prefix(review_key(agency, Scheme::NccisId, "")) {
        let (_, v) = kv.map_err(internal)?;
        let mut stored: Stored = serde_json::from_slice(&v).map_err(internal)?;
        let mut visible = Vec::new();
        for yp in std::mem::take(&mut stored.people) {
            if views::may_see(&state.projector, agency, yp).map_err(internal)? {
                visible.push(yp);
            }
        }
        let mut item = serde_json::to_value(&stored).map_err(internal)?;
        item["visible_candidates"] = json!(visible);
        items.push(item);
    }
    Ok(items)
}

/// A reviewer's decision: the row the agency knows by `nccis_id` (a destinations file) or
/// `la_child_id` (a looked-after list) is about `young_person`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    nccis_id: Option<String>,
    #[serde(default)]
    la_child_id: Option<String>,
    young_person: Uuid,
}

/// What a decision recorded: the link's place in the log, and whether it is new (a
/// decision sent again gets the first answer).
pub struct Decided {
    pub answer: Value,
    pub new: bool,
}

/// Records a reviewer's decision on a held row and ends the hold. The link is appended
/// before the hold is removed, and its id is derived from what it says, so a decision cut
/// short by a failure is completed by sending it again.
pub async fn decide_review(
    state: &AppState,
    agency: &str,
    decision: Decision,
) -> Result<Decided, HttpProblem> {
    let (scheme, id) = match (decision.nccis_id, decision.la_child_id) {
        (Some(id), None) => (Scheme::NccisId, id),
        (None, Some(id)) => (Scheme::LaChildId, id),
        _ => {
            return Err(unprocessable(
                "",
                "give exactly one of nccis_id (a destinations row) or la_child_id (a looked-after child)",
            ))
        }
    };
    let yp = decision.young_person;
    let key = review_key(agency, scheme, &id);
    let (owner, projector) = (agency.to_owned(), state.projector.clone());
    let stored: Stored = tokio::task::spawn_blocking(move || -> Result<Stored, HttpProblem> {
        let tree = projector.identity_review().map_err(internal)?;
        let Some(v) = tree.get(&key).map_err(internal)? else {
            return Err(Problem::new(404, "not-found", "Nothing held for review")
                .detail(format!(
                    "No row with this {} is held for review for your agency (GET /v1/identity/review lists them).",
                    scheme.name()
                ))
                .into());
        };
        let stored: Stored = serde_json::from_slice(&v).map_err(internal)?;
        if stored.reason == Some(Doubt::Identifiers) {
            return Err(Problem::new(409, "conflict", "A review cannot settle this row")
                .detail("The row's identifiers are linked to different people, so one more link would not tell them apart. Correct the identifiers in your records and import the row again.")
                .into());
        }
        if stored.people.is_empty() {
            return Err(Problem::new(409, "conflict", "Import the row again first")
                .detail("This row was held before the exchange kept who it could be. Import it again: it is held anew, and can then be decided.")
                .into());
        }
        // One answer for someone not among the candidates and for a candidate the agency
        // may not see, so that a refusal says nothing of who else the exchange holds.
        if !stored.people.contains(&yp) || !views::may_see(&projector, &owner, yp).map_err(internal)? {
            return Err(unprocessable(
                "/young_person",
                "is not one of the people you may choose for this row (see visible_candidates)",
            ));
        }
        Ok(stored)
    })
    .await
    .map_err(internal)??;
    let today = Day(state.projector.log().now().date());
    let ids = json!({ scheme.name(): id });
    let envelope = link(agency, yp, ids, "reviewed", today);
    let answers = state
        .own
        .record_own(std::slice::from_ref(&envelope))
        .await
        .map_err(HttpProblem::from)?;
    let accepted = answers
        .first()
        .ok_or_else(|| internal("no answer for the link"))?;
    let tree = state.projector.identity_review().map_err(internal)?;
    tree.remove(review_key(agency, scheme, &id))
        .map_err(internal)?;
    // As after an import: once answered, the person is found by the agency's identifier.
    caught_up(state).await?;
    tracing::info!(
        seq = accepted.seq,
        candidates = stored.candidates,
        "identity review decided"
    );
    Ok(Decided {
        answer: json!({
            "young_person": yp,
            "seq": accepted.seq,
            "identifiers": envelope["data"]["identifiers"],
        }),
        new: !accepted.duplicate,
    })
}

fn unprocessable(field: &str, message: &str) -> HttpProblem {
    Problem::new(422, "invalid-decision", "The decision cannot be applied")
        .errors(vec![FieldError::new(field, message)])
        .into()
}
