//! Retention at recipients: which disclosures have outlived their flow's `retention_days`.
//!
//! This module only finds what is due; the purge itself is an event (`retention.purged`)
//! the exchange appends to the log, and the dispatcher applies it like any other. So the
//! purge is recorded, a rebuild repeats it exactly, and the recipient is told (it must delete
//! its own copies too).
//!
//! A disclosure's age is counted from the day it was made: the `recorded_at` of the log
//! position whose projection made it (a restored event's age starts again at its grant).

use crate::codec;
use crate::store::{self, ProjectionError, Purges};
use crate::Projector;
use pathway_core::date::Day;
use std::collections::BTreeMap;
use uuid::Uuid;

/// One purge to record: on `flow`, what `recipient` got about `young_person` at positions up
/// to `up_to_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub young_person: Uuid,
    pub recipient: String,
    pub flow: String,
    pub up_to_seq: u64,
    pub retention_days: u32,
}

/// The last projected position recorded before `cutoff` (0 if none). The log's clock moves
/// forward, so `recorded_at` is ordered with the sequence and a binary search finds it.
fn last_recorded_before(p: &Projector, cutoff: Day) -> Result<u64, ProjectionError> {
    let (mut lo, mut hi) = (0u64, p.checkpoint());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let before = match p.log().get(mid)? {
            Some(e) => Day::of_instant(&e.record.recorded_at).is_some_and(|d| d < cutoff),
            None => false,
        };
        if before {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Every purge due on `today` that has not been recorded yet.
pub fn due(p: &Projector, today: Day) -> Result<Vec<Due>, ProjectionError> {
    let agreements = p.agreements();
    // Per recipient: each retained flow's bound (positions at or before it are past retention).
    let mut bounds: BTreeMap<&str, BTreeMap<&str, (u64, u32)>> = BTreeMap::new();
    for flow in agreements.flows() {
        let Some(days) = flow.retention_days else {
            continue;
        };
        let cutoff = Day(today.0 - time::Duration::days(i64::from(days)));
        let bound = last_recorded_before(p, cutoff)?;
        if bound > 0 {
            bounds
                .entry(flow.to.as_str())
                .or_default()
                .insert(flow.id.as_str(), (bound, days));
        }
    }
    let mut out = Vec::new();
    for (recipient, flows) in bounds {
        let furthest = flows.values().map(|(b, _)| *b).max().unwrap_or(0);
        let mut latest: BTreeMap<(Uuid, &str), u64> = BTreeMap::new();
        let prefix = store::feed_prefix(recipient);
        for kv in p
            .tree()
            .range(prefix.clone()..=store::feed_run(recipient, furthest))
        {
            let (_, v) = kv?;
            for item in codec::decode_feed(&v)? {
                let given =
                    std::iter::once(&item.basis).chain(item.restored.iter().map(|r| &r.basis));
                for basis in given {
                    let Some((flow, _)) = basis.flow().and_then(|f| flows.get_key_value(f)) else {
                        continue;
                    };
                    if item.seq <= flows[flow].0 {
                        let at = latest.entry((item.young_person, flow)).or_default();
                        *at = (*at).max(item.seq);
                    }
                }
            }
        }
        for ((yp, flow), up_to) in latest {
            let purges: Purges = match p.tree().get(store::purges(recipient, yp))? {
                Some(v) => store::decode(&v)?,
                None => Purges::default(),
            };
            if purges
                .retention
                .get(flow)
                .is_some_and(|done| *done >= up_to)
            {
                continue;
            }
            out.push(Due {
                young_person: yp,
                recipient: recipient.to_owned(),
                flow: flow.to_owned(),
                up_to_seq: up_to,
                retention_days: flows[flow].1,
            });
        }
    }
    Ok(out)
}
