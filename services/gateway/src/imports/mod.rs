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
//!
//! # Layout
//! - `plan`: a chunk of destination rows against what the exchange holds.
//! - `chunks`: the destinations upload streamed in chunks, each planned while the one before
//!   is appended.
//! - `looked_after`: the SSDA903 files of a local authority's looked-after list.
//! - `review`: the queue of rows held for identity review.
//! - here: what both importers share: matching claims through the registry, ids derived
//!   from what an event says, appending in batches, the summaries' lists.

use crate::problem::{internal, HttpProblem, Problem};
use crate::routes::AppState;
use pathway_bus::Submission;
use pathway_core::date::Day;
use pathway_core::identity::{self, Match, Scheme};
use pathway_core::imports::RowError;
use pathway_log::people::PersonHasher;
use pathway_projector::views::{self};
use pathway_projector::Projector;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasherDefault;
use uuid::Uuid;

mod chunks;
mod looked_after;
mod plan;
mod review;

pub use chunks::{destinations, CHUNK_ROWS};
pub use looked_after::{looked_after, HeldChild, ListSummary};
pub use review::{decide_review, review_queue, Decision};

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
    #[serde(flatten)]
    pub candidates: Candidates,
}

impl Held {
    fn hold(&self) -> review::Hold<'_> {
        review::Hold {
            id: &self.nccis_id,
            line: Some(self.line),
            candidates: &self.candidates,
        }
    }
}

/// Who a held row could be and why it is in doubt. An import's answer counts the people
/// (`candidates`) and never names them: the agency may see only some of them, and the
/// review queue, which keeps them, lists only those.
#[derive(Debug, Clone, Serialize)]
pub struct Candidates {
    #[serde(rename = "candidates", serialize_with = "count")]
    people: Vec<Uuid>,
    reason: Doubt,
}

impl Candidates {
    /// An ambiguous match's people, and the people its identifiers found.
    fn of(people: Vec<Uuid>, by_identifier: &BTreeSet<Uuid>) -> Candidates {
        Candidates {
            people,
            reason: Doubt::of(by_identifier),
        }
    }
}

fn count<S: serde::Serializer>(people: &[Uuid], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(people.len() as u64)
}

/// Why a match is in doubt: it says whether a reviewer's decision can settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Doubt {
    /// The row's identifiers are linked to different people. The record contradicts
    /// itself, and only the agency can correct it: a reviewed link would be one more
    /// identifier pointing somewhere.
    Identifiers,
    /// No identifier matched, and more than one person has the row's date of birth and
    /// name. A reviewer who knows which one links the agency's identifier to them.
    DateOfBirthAndName,
}

impl Doubt {
    /// The doubt of an ambiguous match, from the people its identifiers found.
    fn of(by_identifier: &BTreeSet<Uuid>) -> Doubt {
        if by_identifier.len() > 1 {
            Doubt::Identifiers
        } else {
            Doubt::DateOfBirthAndName
        }
    }
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

fn occurred(day: Day) -> String {
    format!("{day}T00:00:00Z")
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

/// An import's envelope, its data moved in. `json!` serialises each `Value` it is given
/// into a new one, so building envelopes with it copied every event's data once more (a
/// registration's identifiers twice): 2% of a new row's time.
fn envelope(id: Uuid, event_type: &str, on: Day, data: Value) -> Value {
    let mut e = Map::new();
    e.insert("id".into(), Value::String(id.to_string()));
    e.insert("type".into(), Value::String(event_type.to_owned()));
    e.insert("occurred_at".into(), Value::String(occurred(on)));
    e.insert("data".into(), data);
    Value::Object(e)
}

/// A string for an envelope's data.
fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// The `identity.linked` event for a match found other than by the agency's own identifier.
fn link(agency: &str, yp: Uuid, ids: Value, how: &str, on: Day) -> Value {
    let id = derived_id(&["identity.linked", agency, &yp.to_string(), &ids.to_string()]);
    let mut data = Map::new();
    data.insert("agency".into(), text(agency));
    data.insert("identifiers".into(), ids);
    data.insert("match".into(), text(how));
    let mut e = envelope(id, "identity.linked", on, Value::Object(data));
    e["young_person"] = text(yp.to_string());
    e
}

/// The identifiers an import records for a person: the agency's own (scheme and value),
/// then the national ones its row gives, in that order (a link's id is derived from them).
fn identifiers(own: (&str, &str), national: &[(&str, Option<&String>)]) -> Value {
    let mut ids = Map::new();
    ids.insert(own.0.into(), text(own.1));
    for (scheme, value) in national {
        if let Some(v) = value {
            ids.insert((*scheme).into(), text(v.as_str()));
        }
    }
    Value::Object(ids)
}

/// What a row says of someone new to the exchange.
struct Newcomer<'a> {
    /// The agency's own id for them: the registration's id is derived from it, so the same
    /// file twice registers them once.
    own_id: &'a str,
    identifiers: Value,
    date_of_birth: Day,
    sex: &'a str,
    responsible_authority: &'a str,
    given_name: Option<&'a String>,
    family_name: Option<&'a String>,
}

/// The `young-person.registered` envelope for a newcomer, as of `on`.
fn registration(agency: &str, n: Newcomer, on: Day) -> Value {
    let mut data = Map::new();
    data.insert("date_of_birth".into(), text(n.date_of_birth.to_string()));
    data.insert("sex".into(), text(n.sex));
    data.insert("identifiers".into(), n.identifiers);
    data.insert(
        "responsible_authority".into(),
        text(n.responsible_authority),
    );
    if let Some(g) = n.given_name {
        data.insert("given_name".into(), text(g.as_str()));
    }
    if let Some(f) = n.family_name {
        data.insert("family_name".into(), text(f.as_str()));
    }
    let id = derived_id(&["young-person.registered", agency, n.own_id]);
    envelope(id, "young-person.registered", on, Value::Object(data))
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

/// Problems listed in a summary; beyond this they are counted (`unlisted_problems`).
const MAX_LISTED: usize = 10_000;

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
