//! Rows held for identity review: an ambiguous match is queued, never guessed, and leaves
//! the queue when a later import matches it without doubt.

use super::Held;
use crate::problem::{internal, HttpProblem};
use crate::routes::AppState;
use pathway_core::date::Day;
use serde_json::{json, Value};

fn review_key(agency: &str, id: &str) -> Vec<u8> {
    let mut k = agency.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Keeps the review queue in step with an import: rows held now are queued, rows matched now
/// leave it.
pub(super) fn record_review(
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
