//! Reading projections back: an agency's feed and its read model of a person, each joined
//! with the log so the caller sees the event as it may see it (minimised to its fields).

use crate::codec;
use crate::latest;
use crate::store::{self, Decision, DisclosureRecord, FeedItem, ProjectionError, Purges};
use crate::Projector;
use pathway_core::date::Day;
use pathway_core::history::{self, Happened};
use pathway_core::identity::Scheme;
use pathway_core::person::PersonState;
use pathway_core::policy::{minimise, Basis};
use pathway_core::readmodel::{add_care_status, fold, Seen};
use pathway_core::EventType;
use pathway_log::Entry;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::collections::HashMap;
use uuid::Uuid;

fn entry(p: &Projector, seq: u64) -> Result<Entry, ProjectionError> {
    p.log().get(seq)?.ok_or_else(|| missing(seq))
}

fn missing(seq: u64) -> ProjectionError {
    ProjectionError::Corrupt(format!("projection refers to missing entry {seq}"))
}

/// An event as an agency may see it (minimised to `fields`), with the basis it was given on.
fn seen_event(e: &Entry, basis: &Basis, fields: Option<&[String]>) -> Value {
    let rec = &e.record;
    json!({
        "seq": rec.seq,
        "id": rec.id,
        "type": rec.event_type,
        "young_person": rec.young_person,
        "source": rec.source,
        "occurred_at": rec.occurred_at,
        "recorded_at": rec.recorded_at,
        "data": minimise(&rec.data_value(), fields),
        "basis": basis,
    })
}

/// One feed item. A grant's item also carries the earlier events it restored, so the feed
/// keeps one item per log position and its cursor stays a plain sequence number.
fn item(p: &Projector, e: &Entry, f: &FeedItem) -> Result<Value, ProjectionError> {
    let mut v = seen_event(e, &f.basis, f.fields.as_deref());
    if !f.restored.is_empty() {
        let restored = f
            .restored
            .iter()
            .map(|r| Ok(seen_event(&entry(p, r.seq)?, &r.basis, r.fields.as_deref())))
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        v["restored"] = Value::Array(restored);
    }
    Ok(v)
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
    // A step writes its runs before it moves the checkpoint: nothing past it is served.
    let checkpoint = p.checkpoint();
    let mut out = Vec::new();
    for kv in p.tree().range(start..) {
        let (k, v) = kv?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        let block = codec::decode_feed(&v)?;
        let mut rest: Vec<&FeedItem> = block
            .iter()
            .filter(|f| f.seq > after && f.seq <= checkpoint)
            .collect();
        // As many at a time as the page still wants, their entries read at once in log
        // order: a feed's items sit mostly in runs of consecutive positions, and the NATS
        // outbox reads the feeds as fast as events arrive.
        while !rest.is_empty() && out.len() < limit {
            let now: Vec<&FeedItem> = rest.drain(..rest.len().min(limit - out.len())).collect();
            let seqs: Vec<u64> = now.iter().map(|f| f.seq).collect();
            for (f, e) in now.into_iter().zip(p.log().get_many(&seqs)?) {
                let e = e.ok_or_else(|| missing(f.seq))?;
                // An erased person's events are gone from every feed.
                if !e.erased {
                    out.push(item(p, &e, f)?);
                }
            }
        }
    }
    Ok(out)
}

/// For each of a person's entries (in order), the agency's feed item at that position, if
/// any. Runs are looked up by position and decoded once each.
fn feed_items(
    p: &Projector,
    agency: &str,
    entries: &[Entry],
) -> Result<Vec<Option<FeedItem>>, ProjectionError> {
    let prefix = store::feed_prefix(agency);
    let mut runs: HashMap<Vec<u8>, Vec<FeedItem>> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let seq = e.record.seq;
        // The run that would hold this position: the last one starting at or before it.
        let last = p
            .tree()
            .range(prefix.clone()..=store::feed_run(agency, seq))
            .next_back();
        let Some(kv) = last else {
            out.push(None);
            continue;
        };
        let (key, value) = kv?;
        let block = match runs.entry(key.to_vec()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(codec::decode_feed(&value)?),
        };
        out.push(
            block
                .binary_search_by_key(&seq, |f| f.seq)
                .ok()
                .map(|i| block[i].clone()),
        );
    }
    Ok(out)
}

fn purges_of(p: &Projector, agency: &str, yp: Uuid) -> Result<Purges, ProjectionError> {
    match p.tree().get(store::purges(agency, yp))? {
        Some(v) => store::decode(&v),
        None => Ok(Purges::default()),
    }
}

/// The agency's read model of one person, or `None` when it may see nothing of them: its
/// own events about the person, and what was disclosed to it (directly, or restored by a
/// grant), less what withdrawals and retention purged.
pub fn read_model(p: &Projector, agency: &str, yp: Uuid) -> Result<Option<Value>, ProjectionError> {
    Ok(seen_of(p, agency, yp)?.map(|seen| model_of(p, yp, &seen)))
}

/// [`read_model`], and every destination the agency may see of the person (not only the
/// latest, as it may see each), from one read of their stream: the local authority's
/// destinations export wants both for each of its care leavers.
pub fn read_model_and_destinations(
    p: &Projector,
    agency: &str,
    yp: Uuid,
) -> Result<Option<(Value, Vec<Value>)>, ProjectionError> {
    Ok(seen_of(p, agency, yp)?.map(|seen| {
        let model = model_of(p, yp, &seen);
        let destinations = seen
            .into_iter()
            .filter(|s| s.event_type == EventType::DestinationRecorded)
            .map(|s| s.data)
            .collect();
        (model, destinations)
    }))
}

/// Whether the agency may see anything of the person now (the test [`read_model`] applies
/// before it answers 404), without folding what it sees.
pub fn may_see(p: &Projector, agency: &str, yp: Uuid) -> Result<bool, ProjectionError> {
    Ok(seen_of(p, agency, yp)?.is_some())
}

/// What of a person's stream the agency may see, or `None` for nothing.
fn seen_of(p: &Projector, agency: &str, yp: Uuid) -> Result<Option<Vec<Seen>>, ProjectionError> {
    let entries = p.log().read_person(yp)?;
    let seen = visible(p, agency, yp, &entries)?;
    Ok((!seen.is_empty()).then_some(seen))
}

fn model_of(p: &Projector, yp: Uuid, seen: &[Seen]) -> Value {
    let mut model = fold(yp, seen);
    add_care_status(&mut model, seen, Day(p.log().now().date()));
    model
}

/// What of a person's entries the agency may see now, as it may see them.
/// Whether the person was erased: nothing about them is shown anywhere.
pub fn erased(entries: &[Entry]) -> bool {
    entries
        .iter()
        .any(|e| e.erased || e.record.event_type == EventType::YoungPersonErased)
}

fn visible(
    p: &Projector,
    agency: &str,
    yp: Uuid,
    entries: &[Entry],
) -> Result<Vec<Seen>, ProjectionError> {
    if erased(entries) {
        return Ok(Vec::new());
    }
    let purges = purges_of(p, agency, yp)?;
    let items = feed_items(p, agency, entries)?;
    // Restorations come after the events they restore: collect them first.
    let mut restored: HashMap<u64, (Basis, Option<Vec<String>>)> = HashMap::new();
    for item in items.iter().flatten() {
        for r in &item.restored {
            if !store::purged(&purges, r.category, &r.basis, item.seq) {
                restored.insert(r.seq, (r.basis.clone(), r.fields.clone()));
            }
        }
    }
    let mut seen = Vec::new();
    for (e, item) in entries.iter().zip(items) {
        let rec = &e.record;
        let (basis, fields) = if rec.source == agency {
            (None, None)
        } else {
            match item {
                Some(f) if !store::purged(&purges, f.category, &f.basis, f.seq) => {
                    (Some(f.basis), f.fields)
                }
                _ => match restored.remove(&rec.seq) {
                    Some((basis, fields)) => (Some(basis), fields),
                    None => continue,
                },
            }
        };
        seen.push(Seen {
            seq: rec.seq,
            event_type: rec.event_type,
            data: minimise(&rec.data_value(), fields.as_deref()),
            source: rec.source.clone(),
            occurred_at: rec.occurred_at.clone(),
            basis,
        });
    }
    Ok(seen)
}

/// The local authority that registered the person: the owner of their record here.
pub fn owner(entries: &[Entry]) -> Option<&str> {
    entries
        .iter()
        .find(|e| e.record.event_type == EventType::YoungPersonRegistered)
        .map(|e| e.record.source.as_str())
}

/// One disclosure-log line as the API shows it, joined with the log for type and dates.
fn record_json(r: &DisclosureRecord, event: Option<&Entry>, decided: Option<&Entry>) -> Value {
    json!({
        "at": r.at,
        "seq": r.seq,
        "event_id": r.event_id,
        "type": event.map(|e| e.record.event_type),
        "young_person": r.young_person,
        "recipient": r.recipient,
        "decision": r.decision,
        "occurred_at": event.map(|e| &e.record.occurred_at),
        "decided_at": decided.map(|e| &e.record.recorded_at),
    })
}

/// Every disclosure-log line about a person (deliveries and the refusals that mattered), in
/// log order, as JSON. `recipient` narrows it to one recipient's.
pub fn person_disclosures(
    p: &Projector,
    entries: &[Entry],
    recipient: Option<&str>,
) -> Result<Vec<Value>, ProjectionError> {
    let by_seq: HashMap<u64, &Entry> = entries.iter().map(|e| (e.record.seq, e)).collect();
    let mut runs: HashMap<Vec<u8>, Vec<DisclosureRecord>> = HashMap::new();
    let mut out = Vec::new();
    for e in entries {
        let at = e.record.seq;
        let last = p
            .tree()
            .range(store::DISCLOSURE_PREFIX.to_vec()..=store::disclosure_run(at))
            .next_back();
        let Some(kv) = last else { continue };
        let (key, value) = kv?;
        let block = match runs.entry(key.to_vec()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(codec::decode_disclosures(&value)?)
            }
        };
        for r in block.iter().filter(|r| r.at == at) {
            if recipient.is_none_or(|who| who == r.recipient) {
                out.push(record_json(r, by_seq.get(&r.seq).copied(), Some(e)));
            }
        }
    }
    Ok(out)
}

/// The disclosures made to an agency at positions `> after`, from its feed (refusals are
/// not in it: an agency is not told what it did not get). `limit` counts positions: a
/// grant's restored events come on the same page as the grant, so paging by `at` is exact.
pub fn received(
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
    let mut positions = 0;
    'runs: for kv in p.tree().range(start..) {
        let (k, v) = kv?;
        if !k.starts_with(&prefix) {
            break;
        }
        for f in codec::decode_feed(&v)?
            .into_iter()
            .filter(|f| f.seq > after)
        {
            if positions >= limit {
                break 'runs;
            }
            positions += 1;
            let e = entry(p, f.seq)?;
            let mut lines = vec![(f.seq, e.record.id, f.basis.clone(), Some(&e))];
            let restored: Vec<Entry> = f
                .restored
                .iter()
                .map(|r| entry(p, r.seq))
                .collect::<Result<_, _>>()?;
            for (r, re) in f.restored.iter().zip(&restored) {
                lines.push((r.seq, r.id, r.basis.clone(), Some(re)));
            }
            for (seq, event_id, basis, event) in lines {
                let r = DisclosureRecord {
                    at: f.seq,
                    seq,
                    event_id,
                    young_person: f.young_person,
                    recipient: agency.to_owned(),
                    decision: Decision::Disclosed { basis },
                };
                out.push(record_json(&r, event, Some(&e)));
            }
        }
    }
    Ok(out)
}

/// Consent grants recorded by `agency`, still in force, whose review date is before `today`.
pub fn consent_review(
    p: &Projector,
    agency: &str,
    today: Day,
) -> Result<Vec<Value>, ProjectionError> {
    let mut due = Vec::new();
    for kv in p.tree().scan_prefix(store::review_prefix(agency)) {
        let (key, value) = kv?;
        let yp = Uuid::from_slice(&key[key.len() - 16..])
            .map_err(|_| ProjectionError::Corrupt("a consent review key cut short".into()))?;
        for r in store::decode_reviews(&value)? {
            if r.due < today {
                due.push((r.due, yp, r.grant, r.seq));
            }
        }
    }
    // By review date, as the review works through them.
    due.sort_unstable();
    let mut out = Vec::new();
    for (_, _, _, seq) in due {
        let e = entry(p, seq)?;
        let rec = &e.record;
        let data = rec.data_value();
        out.push(json!({
            "young_person": rec.young_person,
            "grant": rec.id,
            "seq": rec.seq,
            "recipients": data["recipients"],
            "categories": data["categories"],
            "granted_on": data["granted_on"],
            "review_due": data["review_due"],
        }));
    }
    Ok(out)
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
                .filter(|d| d.at > after)
                .take(limit - out.len()),
        );
    }
    Ok(out)
}

/// Everything held about one person, for a subject access request: every event in the log
/// (in full), what each agency's read model shows, every disclosure and refusal with its
/// basis, and the consent and overrides as they stand on `today`. `None` when the exchange
/// holds nothing about them.
pub fn subject_access(
    p: &Projector,
    yp: Uuid,
    today: Day,
) -> Result<Option<Value>, ProjectionError> {
    let entries = p.log().read_person(yp)?;
    if entries.is_empty() || erased(&entries) {
        return Ok(None);
    }
    let mut person = PersonState::default();
    let held: Vec<Value> = entries
        .iter()
        .map(|e| {
            person.evolve(&e.fact());
            let rec = &e.record;
            json!({
                "seq": rec.seq,
                "id": rec.id,
                "type": rec.event_type,
                "category": rec.event_type.category(),
                "source": rec.source,
                "occurred_at": rec.occurred_at,
                "recorded_at": rec.recorded_at,
                "data": rec.data_value(),
            })
        })
        .collect();
    let (shared, withheld): (Vec<Value>, Vec<Value>) = person_disclosures(p, &entries, None)?
        .into_iter()
        .partition(|r| r["decision"]["outcome"] == "disclosed");
    let mut read_models = serde_json::Map::new();
    for agency in p.agreements().agencies() {
        let seen = visible(p, &agency.id, yp, &entries)?;
        if !seen.is_empty() {
            let mut model = fold(yp, &seen);
            add_care_status(&mut model, &seen, today);
            read_models.insert(agency.id.clone(), model);
        }
    }
    let consents: Vec<Value> = person
        .consents()
        .map(|(recipient, category, grant)| {
            json!({ "recipient": recipient, "category": category, "grant": grant })
        })
        .collect();
    let grants: Vec<Value> = person
        .grants()
        .iter()
        .map(|(id, g)| {
            json!({ "grant": id, "recorded_by": g.recorded_by, "review_due": g.review_due })
        })
        .collect();
    let overrides: Vec<Value> = person
        .overrides()
        .iter()
        .map(|(id, o)| {
            json!({
                "override": id,
                "recorded_by": o.recorded_by,
                "recipients": o.recipients,
                "categories": o.categories,
                "expires_on": o.expires_on,
                "ended_on": o.ended_on,
                "in_force": o.in_force(today),
            })
        })
        .collect();
    Ok(Some(json!({
        "young_person": yp,
        "generated_on": today,
        "registered_by": owner(&entries),
        "held": held,
        "shared": shared,
        "withheld": withheld,
        "read_models": read_models,
        "consent": { "in_force": consents, "grants": grants },
        "overrides": overrides,
    })))
}

/// The people `agency` registered, with their histories parsed, for reports. Reads the whole
/// log once to find the registrations (a quarterly job; an index would be the next step if
/// it ever shows up in a profile).
pub fn registered_by(
    p: &Projector,
    agency: &str,
) -> Result<Vec<(Uuid, Vec<Happened>)>, ProjectionError> {
    let mut people = Vec::new();
    let mut after = 0;
    loop {
        let entries = p.log().read_from(after, 4096)?;
        let Some(last) = entries.last() else { break };
        after = last.record.seq;
        people.extend(
            entries
                .iter()
                .filter(|e| {
                    e.record.event_type == EventType::YoungPersonRegistered
                        && e.record.source == agency
                })
                .map(|e| e.record.young_person),
        );
    }
    let mut out = Vec::with_capacity(people.len());
    for yp in people {
        let entries = p.log().read_person(yp)?;
        if erased(&entries) {
            continue;
        }
        let facts: Vec<_> = entries.iter().map(|e| e.fact()).collect();
        out.push((yp, history::parse(&facts)));
    }
    Ok(out)
}

/// The people an identifier (within its scope) is registered to.
pub fn lookup(
    p: &Projector,
    scheme: Scheme,
    scope: &str,
    value: &str,
) -> Result<BTreeSet<Uuid>, ProjectionError> {
    Ok(lookup_many(p, &[(scheme, scope, value)])?
        .pop()
        .unwrap_or_default())
}

/// Where the latest destination `agency` recorded about the person is, if it is exactly
/// this one (activity, start, ascertained): one lookup, nothing decrypted.
pub fn latest_destination_if(
    p: &Projector,
    agency: &str,
    yp: Uuid,
    activity_code: &str,
    start: Day,
    ascertained: Day,
) -> Result<Option<u64>, ProjectionError> {
    let query = DestinationQuery {
        young_person: yp,
        activity_code,
        start,
        ascertained,
    };
    Ok(
        match latest_destinations(p, agency, std::slice::from_ref(&query))?.pop() {
            Some(HeldDestination::Same(seq)) => Some(seq),
            _ => None,
        },
    )
}

/// [`lookup`] for many identifiers (scheme, scope, value) at once, in the order asked.
pub fn lookup_many(
    p: &Projector,
    identifiers: &[(Scheme, &str, &str)],
) -> Result<Vec<BTreeSet<Uuid>>, ProjectionError> {
    let keys: Vec<Vec<u8>> = identifiers
        .iter()
        .map(|(scheme, scope, value)| store::identifier_key(*scheme, scope, value))
        .collect();
    p.registry().people(&keys)
}

/// The people registered with each (date of birth, normalised name), in the order asked.
pub fn lookup_names(
    p: &Projector,
    names: &[(Day, &str)],
) -> Result<Vec<BTreeSet<Uuid>>, ProjectionError> {
    let keys: Vec<Vec<u8>> = names
        .iter()
        .map(|(dob, name)| store::name_key(*dob, name))
        .collect();
    p.registry().people(&keys)
}

/// A destination to compare with the latest an agency recorded about a person.
pub struct DestinationQuery<'a> {
    pub young_person: Uuid,
    pub activity_code: &'a str,
    pub start: Day,
    pub ascertained: Day,
}

/// What the projections hold of the latest destination an agency recorded about a person,
/// against the one asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldDestination {
    /// The agency has recorded no destination for the person.
    Nothing,
    /// The latest is the one asked about, at this log position.
    Same(u64),
    /// The latest is another, at this log position: one read of the log tells what it was,
    /// with no walk along the person's stream.
    Other(u64),
}

/// For each query, in the order asked, how the latest destination its agency recorded
/// compares: one read of the latest-destination index for all of them, nothing decrypted.
pub fn latest_destinations(
    p: &Projector,
    agency: &str,
    queries: &[DestinationQuery],
) -> Result<Vec<HeldDestination>, ProjectionError> {
    let asked: Vec<(Uuid, &str)> = queries.iter().map(|q| (q.young_person, agency)).collect();
    Ok(latest::get_many(p.tree(), &asked)?
        .into_iter()
        .zip(queries)
        .map(|(stored, q)| {
            let Some(stored) = stored else {
                return HeldDestination::Nothing;
            };
            let digest =
                store::destination_digest(q.young_person, q.activity_code, q.start, q.ascertained);
            let (held, seq) = stored.split_at(store::DESTINATION_DIGEST);
            let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
            if held == digest.as_slice() {
                HeldDestination::Same(seq)
            } else {
                HeldDestination::Other(seq)
            }
        })
        .collect())
}

/// The people an agency has received anything about, from its feed.
pub fn people_in_feed(p: &Projector, agency: &str) -> Result<BTreeSet<Uuid>, ProjectionError> {
    let prefix = store::feed_prefix(agency);
    let mut out = BTreeSet::new();
    for kv in p.tree().scan_prefix(&prefix) {
        let (_, v) = kv?;
        out.extend(codec::decode_feed(&v)?.into_iter().map(|f| f.young_person));
    }
    Ok(out)
}
