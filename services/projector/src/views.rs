//! Reading projections back: an agency's feed and its read model of a person, each joined
//! with the log so the caller sees the event as it may see it (minimised to its fields).

use crate::store::{self, ProjectionError, Ref};
use crate::Projector;
use pathway_core::policy::minimise;
use pathway_core::readmodel::{fold, Seen};
use pathway_log::Entry;
use serde_json::{json, Value};
use uuid::Uuid;

fn decode_ref(v: &[u8]) -> Result<Ref, ProjectionError> {
    serde_json::from_slice(v).map_err(|e| ProjectionError::Corrupt(e.to_string()))
}

fn entry(p: &Projector, seq: u64) -> Result<Entry, ProjectionError> {
    p.log().get(seq)?.ok_or_else(|| {
        ProjectionError::Corrupt(format!("projection refers to missing entry {seq}"))
    })
}

/// One feed item: the event as this agency may see it, with the basis it was given on.
fn item(e: &Entry, r: &Ref) -> Value {
    let rec = &e.record;
    json!({
        "seq": rec.seq,
        "id": rec.id,
        "type": rec.event_type,
        "young_person": rec.young_person,
        "source": rec.source,
        "occurred_at": rec.occurred_at,
        "recorded_at": rec.recorded_at,
        "data": minimise(&rec.data, r.fields.as_deref()),
        "basis": r.basis,
    })
}

/// The agency's disclosures with `seq > after`, in log order.
pub fn feed(
    p: &Projector,
    agency: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Value>, ProjectionError> {
    let start = store::feed(agency, after.saturating_add(1));
    let prefix = store::feed_prefix(agency);
    let mut out = Vec::new();
    for kv in p.tree().range(start..).take(limit) {
        let (k, v) = kv?;
        if !k.starts_with(&prefix) {
            break;
        }
        let r = decode_ref(&v)?;
        out.push(item(&entry(p, store::seq_suffix(&k))?, &r));
    }
    Ok(out)
}

/// The agency's read model of one person, or `None` when it may see nothing of them.
pub fn read_model(p: &Projector, agency: &str, yp: Uuid) -> Result<Option<Value>, ProjectionError> {
    let mut seen = Vec::new();
    for kv in p.tree().scan_prefix(store::read_prefix(agency, yp)) {
        let (k, v) = kv?;
        let r = decode_ref(&v)?;
        let e = entry(p, store::seq_suffix(&k))?;
        let rec = e.record;
        seen.push(Seen {
            seq: rec.seq,
            event_type: rec.event_type,
            data: minimise(&rec.data, r.fields.as_deref()),
            source: rec.source,
            occurred_at: rec.occurred_at,
            basis: r.basis,
        });
    }
    Ok((!seen.is_empty()).then(|| fold(yp, &seen)))
}

/// Disclosure records of one log position onward, for audit and tests.
pub fn disclosures(
    p: &Projector,
    after: u64,
    limit: usize,
) -> Result<Vec<store::DisclosureRecord>, ProjectionError> {
    let mut start = vec![b'd'];
    start.extend_from_slice(&(after + 1).to_be_bytes());
    let mut out = Vec::new();
    for kv in p.tree().range(start..).take(limit) {
        let (k, v) = kv?;
        if k[0] != b'd' {
            break;
        }
        out.push(serde_json::from_slice(&v).map_err(|e| ProjectionError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}
