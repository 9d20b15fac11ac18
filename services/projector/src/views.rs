//! Reading projections back: an agency's feed and its read model of a person, each joined
//! with the log so the caller sees the event as it may see it (minimised to its fields).

use crate::codec;
use crate::store::{self, DisclosureRecord, FeedItem, ProjectionError, Purges};
use crate::Projector;
use pathway_core::policy::minimise;
use pathway_core::readmodel::{fold, Seen};
use pathway_log::Entry;
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

fn entry(p: &Projector, seq: u64) -> Result<Entry, ProjectionError> {
    p.log().get(seq)?.ok_or_else(|| {
        ProjectionError::Corrupt(format!("projection refers to missing entry {seq}"))
    })
}

/// One feed item: the event as this agency may see it, with the basis it was given on.
fn item(e: &Entry, f: &FeedItem) -> Value {
    let rec = &e.record;
    json!({
        "seq": rec.seq,
        "id": rec.id,
        "type": rec.event_type,
        "young_person": rec.young_person,
        "source": rec.source,
        "occurred_at": rec.occurred_at,
        "recorded_at": rec.recorded_at,
        "data": minimise(&rec.data_value(), f.fields.as_deref()),
        "basis": f.basis,
    })
}

/// The agency's disclosures with `seq > after`, in log order.
pub fn feed(
    p: &Projector,
    agency: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Value>, ProjectionError> {
    let prefix = store::feed_prefix(agency);
    let start = store::run_start(
        p.tree(),
        &prefix,
        store::feed_run(agency, after.saturating_add(1)),
    )?;
    let mut out = Vec::new();
    for kv in p.tree().range(start..) {
        let (k, v) = kv?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        let block = codec::decode_feed(&v)?;
        for f in block
            .iter()
            .filter(|f| f.seq > after)
            .take(limit - out.len())
        {
            out.push(item(&entry(p, f.seq)?, f));
        }
    }
    Ok(out)
}

/// The agency's read model of one person, or `None` when it may see nothing of them: its
/// own events about the person, and what was disclosed to it, less what withdrawals purged.
pub fn read_model(p: &Projector, agency: &str, yp: Uuid) -> Result<Option<Value>, ProjectionError> {
    let purges: Purges = match p.tree().get(store::purges(agency, yp))? {
        Some(v) => store::decode(&v)?,
        None => Purges::new(),
    };
    let prefix = store::feed_prefix(agency);
    let mut runs: HashMap<Vec<u8>, Vec<FeedItem>> = HashMap::new();
    let mut seen = Vec::new();
    for e in p.log().read_person(yp)? {
        let rec = e.record;
        let (basis, fields) = if rec.source == agency {
            (None, None)
        } else {
            // The run that would hold this position: the last one starting at or before it.
            let last = p
                .tree()
                .range(prefix.clone()..=store::feed_run(agency, rec.seq))
                .next_back();
            let Some(kv) = last else { continue };
            let (key, value) = kv?;
            let block = match runs.entry(key.to_vec()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(codec::decode_feed(&value)?)
                }
            };
            match block.binary_search_by_key(&rec.seq, |f| f.seq) {
                Ok(i) if !store::purged(&purges, &block[i]) => {
                    (Some(block[i].basis.clone()), block[i].fields.clone())
                }
                _ => continue,
            }
        };
        seen.push(Seen {
            seq: rec.seq,
            event_type: rec.event_type,
            data: minimise(&rec.data_value(), fields.as_deref()),
            source: rec.source,
            occurred_at: rec.occurred_at,
            basis,
        });
    }
    Ok((!seen.is_empty()).then(|| fold(yp, &seen)))
}

/// Disclosure records after a log position, for audit and tests.
pub fn disclosures(
    p: &Projector,
    after: u64,
    limit: usize,
) -> Result<Vec<DisclosureRecord>, ProjectionError> {
    let start = store::run_start(
        p.tree(),
        store::DISCLOSURE_PREFIX,
        store::disclosure_run(after + 1),
    )?;
    let mut out = Vec::new();
    for kv in p.tree().range(start..) {
        let (k, v) = kv?;
        if k[0] != b'd' || out.len() >= limit {
            break;
        }
        let block = codec::decode_disclosures(&v)?;
        out.extend(
            block
                .into_iter()
                .filter(|d| d.seq > after)
                .take(limit - out.len()),
        );
    }
    Ok(out)
}
