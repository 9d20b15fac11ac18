//! Proof that nothing leaks. Random interleavings of registrations, events of every
//! category, grants, withdrawals, overrides (recorded, ended, expiring as the clock moves),
//! retention passes and rebuilds, over five agencies and eight flows, run through the real
//! recorder, log and projector, and checked against a small reference model written
//! independently of `policy`:
//!
//! - every agency's feed is exactly what the model says it may receive, on the basis the
//!   model gives, and never a field its flow does not list;
//! - anything a grant restores had a basis at the grant;
//! - a withdrawal stops the flow at its position in the log (the feeds match the model
//!   event by event, so nothing after it slips through);
//! - each read model shows exactly the agency's own events plus what it received, less what
//!   withdrawals and retention purged;
//! - the disclosure log records every delivery, and a refusal wherever a flow existed but no
//!   basis did;
//! - a rebuild from the log gives identical feeds, read models and disclosure log.

use exchange::housekeeping::Housekeeper;
use exchange::{app, config};
use pathway_bus::Submission;
use pathway_core::catalogue::{Category, EventType};
use pathway_core::date::Day;
use pathway_core::samples;
use pathway_projector::{views, Projector};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use time::macros::datetime;
use time::OffsetDateTime;
use uuid::Uuid;

const CONFIG: &str = r#"
[[agency]]
id = "la"
kind = "local-authority"
[[agency]]
id = "la2"
kind = "local-authority"
[[agency]]
id = "cs"
kind = "careers-service"
[[agency]]
id = "col1"
kind = "college"
[[agency]]
id = "col2"
kind = "college"

[[flow]]
id = "la-cs-statutory"
from = ["la", "la2"]
to = "cs"
categories = ["identity", "care", "support"]
purpose = "p"
basis = "statutory"
min_age = 14
retention_days = 30

[[flow]]
id = "la-cs-consent"
from = ["la", "la2"]
to = "cs"
categories = ["placement", "plans"]
purpose = "p"
basis = "consent"
min_age = 14
retention_days = 60
[flow.fields]
"placement.changed" = ["start_date", "placement_type"]

[[flow]]
id = "cs-la"
from = ["cs"]
to = "la"
categories = ["education-employment", "support"]
purpose = "p"
basis = "statutory"

[[flow]]
id = "la-col1"
from = ["la"]
to = "col1"
categories = ["identity", "support", "education-employment"]
purpose = "p"
basis = "consent"
max_age = 20
retention_days = 10
[flow.fields]
"young-person.registered" = ["given_name", "family_name", "date_of_birth"]

[[flow]]
id = "cs-col1"
from = ["cs"]
to = "col1"
categories = ["education-employment"]
purpose = "p"
basis = "consent"
retention_days = 45

[[flow]]
id = "cs-col2"
from = ["cs"]
to = "col2"
categories = ["education-employment"]
purpose = "p"
basis = "consent"

[[flow]]
id = "colleges-cs"
from_kinds = ["college"]
to = "cs"
categories = ["education-employment"]
purpose = "p"
basis = "consent"

[[flow]]
id = "col1-la"
from = ["col1"]
to = "la"
categories = ["education-employment"]
purpose = "p"
basis = "consent"
"#;

const AGENCIES: [&str; 5] = ["la", "la2", "cs", "col1", "col2"];

fn kind_of(agency: &str) -> &'static str {
    match agency {
        "la" | "la2" => "local-authority",
        "cs" => "careers-service",
        _ => "college",
    }
}

/// The model's own statement of the agreements: (id, sources, recipient, categories,
/// statutory?, min age, max age, retention days, fields per type).
struct ModelFlow {
    id: &'static str,
    from: &'static [&'static str],
    to: &'static str,
    categories: &'static [&'static str],
    statutory: bool,
    min_age: Option<i32>,
    max_age: Option<i32>,
    retention: Option<i64>,
    fields: &'static [(&'static str, &'static [&'static str])],
}

const FLOWS: &[ModelFlow] = &[
    ModelFlow {
        id: "la-cs-statutory",
        from: &["la", "la2"],
        to: "cs",
        categories: &["identity", "care", "support"],
        statutory: true,
        min_age: Some(14),
        max_age: None,
        retention: Some(30),
        fields: &[],
    },
    ModelFlow {
        id: "la-cs-consent",
        from: &["la", "la2"],
        to: "cs",
        categories: &["placement", "plans"],
        statutory: false,
        min_age: Some(14),
        max_age: None,
        retention: Some(60),
        fields: &[("placement.changed", &["start_date", "placement_type"])],
    },
    ModelFlow {
        id: "cs-la",
        from: &["cs"],
        to: "la",
        categories: &["education-employment", "support"],
        statutory: true,
        min_age: None,
        max_age: None,
        retention: None,
        fields: &[],
    },
    ModelFlow {
        id: "la-col1",
        from: &["la"],
        to: "col1",
        categories: &["identity", "support", "education-employment"],
        statutory: false,
        min_age: None,
        max_age: Some(20),
        retention: Some(10),
        fields: &[(
            "young-person.registered",
            &["given_name", "family_name", "date_of_birth"],
        )],
    },
    ModelFlow {
        id: "cs-col1",
        from: &["cs"],
        to: "col1",
        categories: &["education-employment"],
        statutory: false,
        min_age: None,
        max_age: None,
        retention: Some(45),
        fields: &[],
    },
    ModelFlow {
        id: "cs-col2",
        from: &["cs"],
        to: "col2",
        categories: &["education-employment"],
        statutory: false,
        min_age: None,
        max_age: None,
        retention: None,
        fields: &[],
    },
    ModelFlow {
        id: "colleges-cs",
        from: &["col1", "col2"],
        to: "cs",
        categories: &["education-employment"],
        statutory: false,
        min_age: None,
        max_age: None,
        retention: None,
        fields: &[],
    },
    ModelFlow {
        id: "col1-la",
        from: &["col1"],
        to: "la",
        categories: &["education-employment"],
        statutory: false,
        min_age: None,
        max_age: None,
        retention: None,
        fields: &[],
    },
];

fn flow_named(id: &str) -> &'static ModelFlow {
    FLOWS.iter().find(|f| f.id == id).expect("a model flow")
}

/// The one flow (in this configuration there is at most one) from `source` to `to` for
/// `category`.
fn flow_for(source: &str, to: &str, category: &str) -> Option<&'static ModelFlow> {
    FLOWS
        .iter()
        .find(|f| f.to == to && f.from.contains(&source) && f.categories.contains(&category))
}

/// Agency-sourced event types the generator draws from, covering every category.
const EVENTS: &[EventType] = &[
    EventType::YoungPersonDetailsCorrected,
    EventType::LookedAfterStarted,
    EventType::PlacementChanged,
    EventType::DestinationRecorded,
    EventType::EnrolmentStarted,
    EventType::NeetOnset,
    EventType::WorkerAllocated,
    EventType::MeetingHeld,
    EventType::PathwayPlanReviewed,
    EventType::CareLeaverOutcomeRecorded,
];

const CATEGORIES: [&str; 7] = [
    "identity",
    "care",
    "placement",
    "education-employment",
    "support",
    "plans",
    "outcomes",
];

/// Dates of birth around the age bands' edges as the clock moves (it starts 2026-11-02).
const BIRTHS: [&str; 4] = ["2012-11-20", "2008-01-01", "2006-11-10", "2000-01-01"];

#[derive(Debug, Clone)]
enum Op {
    Register {
        dob: usize,
        by: usize,
    },
    Event {
        person: usize,
        ty: usize,
        source: usize,
    },
    Grant {
        person: usize,
        by: usize,
        to: u8,
        cats: u8,
    },
    Withdraw {
        person: usize,
        by: usize,
        to: u8,
        cats: Option<u8>,
    },
    Override {
        person: usize,
        by: bool,
        to: u8,
        cats: u8,
        days: u8,
    },
    EndOverride {
        person: usize,
        which: usize,
    },
    Advance {
        days: u8,
    },
    Housekeep,
    Project,
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..4usize, 0..3usize).prop_map(|(dob, by)| Op::Register { dob, by }),
        6 => (0..8usize, 0..EVENTS.len(), 0..5usize)
            .prop_map(|(person, ty, source)| Op::Event { person, ty, source }),
        3 => (0..8usize, 0..5usize, 1..32u8, 1..128u8)
            .prop_map(|(person, by, to, cats)| Op::Grant { person, by, to, cats }),
        2 => (0..8usize, 0..5usize, 1..32u8, prop::option::of(1..128u8))
            .prop_map(|(person, by, to, cats)| Op::Withdraw { person, by, to, cats }),
        1 => (0..8usize, any::<bool>(), 1..32u8, 1..128u8, 1..40u8)
            .prop_map(|(person, by, to, cats, days)| Op::Override { person, by, to, cats, days }),
        1 => (0..8usize, 0..4usize).prop_map(|(person, which)| Op::EndOverride { person, which }),
        2 => prop_oneof![Just(1u8), Just(6), Just(25), Just(50)].prop_map(|days| Op::Advance { days }),
        1 => Just(Op::Housekeep),
        2 => Just(Op::Project),
        1 => Just(Op::Rebuild),
    ]
}

fn pick<'a>(mask: u8, from: &[&'a str]) -> Vec<&'a str> {
    from.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect()
}

/// One appended event as the model knows it.
#[derive(Debug, Clone)]
struct Logged {
    seq: u64,
    id: Uuid,
    ty: EventType,
    source: String,
    person: Uuid,
    day: Day,
    data: Value,
}

struct Person {
    id: Uuid,
    dob: Day,
    owner: String,
}

/// A retention pass: the log's head when it ran, and the day.
struct Pass {
    head: u64,
    day: Day,
}

struct World {
    running: app::Running,
    clock: Arc<Mutex<OffsetDateTime>>,
    _dir: tempfile::TempDir,
    people: Vec<Person>,
    logged: Vec<Logged>,
    passes: Vec<Pass>,
    overrides: BTreeMap<Uuid, Vec<Uuid>>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Mutex::new(datetime!(2026-11-02 10:00 UTC)));
        let reading = clock.clone();
        let options = pathway_log::LogOptions {
            clock: Arc::new(move || *reading.lock().unwrap()),
            // Two people at most in each in-memory cache: the proof also covers forgetting
            // and replaying them, which a large exchange does all the time.
            people_cached: 2,
            // And three people's policy states at most, packed or not.
            policy_states: 3,
            // And ids sealed into runs of the id index and merged, every few events.
            ids_per_run: 3,
            ..Default::default()
        };
        let config = config::parse(CONFIG, "proof").unwrap();
        let running = app::build_with(config, dir.path(), options).unwrap();
        World {
            running,
            clock,
            _dir: dir,
            people: Vec::new(),
            logged: Vec::new(),
            passes: Vec::new(),
            overrides: BTreeMap::new(),
        }
    }

    fn today(&self) -> Day {
        Day(self.clock.lock().unwrap().date())
    }

    fn projector(&self) -> &Projector {
        &self.running.projector
    }

    async fn submit(&mut self, agency: &str, ty: EventType, person: Option<usize>, data: Value) {
        let day = self.today();
        let id = Uuid::new_v4();
        let mut env = json!({
            "id": id, "type": ty.name(), "occurred_at": format!("{day}T10:00:00Z"), "data": data,
        });
        if let Some(p) = person {
            env["young_person"] = json!(self.people[p].id);
        }
        let answer = self
            .running
            .state
            .ingress
            .submit(Submission {
                agency: agency.to_owned(),
                envelopes: vec![env],
                batch: false,
            })
            .await
            .unwrap_or_else(|p| panic!("{agency} {ty}: {p:?}"));
        let a = answer[0];
        self.logged.push(Logged {
            seq: a.seq,
            id,
            ty,
            source: agency.to_owned(),
            person: a.young_person,
            day,
            data: env_data(&self.running, a.seq),
        });
        if ty == EventType::YoungPersonRegistered {
            let dob = Day::parse(
                self.logged.last().unwrap().data["date_of_birth"]
                    .as_str()
                    .unwrap(),
            );
            self.people.push(Person {
                id: a.young_person,
                dob: dob.unwrap(),
                owner: agency.to_owned(),
            });
        }
        if ty == EventType::DisclosureOverrideRecorded {
            self.overrides.entry(a.young_person).or_default().push(id);
        }
    }

    async fn apply(&mut self, op: &Op) {
        let person = |p: usize, w: &World| (!w.people.is_empty()).then(|| p % w.people.len());
        match *op {
            Op::Register { dob, by } => {
                let mut d = samples::data(EventType::YoungPersonRegistered);
                d["date_of_birth"] = json!(BIRTHS[dob]);
                self.submit(
                    ["la", "la2", "cs"][by],
                    EventType::YoungPersonRegistered,
                    None,
                    d,
                )
                .await;
            }
            Op::Event {
                person: p,
                ty,
                source,
            } => {
                let Some(p) = person(p, self) else { return };
                let ty = EVENTS[ty];
                let allowed: Vec<&str> = AGENCIES
                    .iter()
                    .copied()
                    .filter(|a| {
                        let kind = serde_json::from_value(json!(kind_of(a))).unwrap();
                        ty.may_be_sourced_by(kind)
                    })
                    .collect();
                let agency = allowed[source % allowed.len()];
                self.submit(agency, ty, Some(p), samples::data(ty)).await;
            }
            Op::Grant {
                person: p,
                by,
                to,
                cats,
            } => {
                let Some(p) = person(p, self) else { return };
                let mut d = samples::data(EventType::ConsentGranted);
                d["recipients"] = json!(pick(to, &AGENCIES));
                d["categories"] = json!(pick(cats, &CATEGORIES));
                self.submit(AGENCIES[by], EventType::ConsentGranted, Some(p), d)
                    .await;
            }
            Op::Withdraw {
                person: p,
                by,
                to,
                cats,
            } => {
                let Some(p) = person(p, self) else { return };
                let mut d = samples::data(EventType::ConsentWithdrawn);
                d["recipients"] = json!(pick(to, &AGENCIES));
                if let Some(cats) = cats {
                    d["categories"] = json!(pick(cats, &CATEGORIES));
                }
                self.submit(AGENCIES[by], EventType::ConsentWithdrawn, Some(p), d)
                    .await;
            }
            Op::Override {
                person: p,
                by,
                to,
                cats,
                days,
            } => {
                let Some(p) = person(p, self) else { return };
                let mut d = samples::data(EventType::DisclosureOverrideRecorded);
                d["recipients"] = json!(pick(to, &AGENCIES));
                d["categories"] = json!(pick(cats, &CATEGORIES));
                let expires = Day(self.today().0 + time::Duration::days(i64::from(days)));
                d["expires_on"] = json!(expires);
                let by = if by { "la" } else { "cs" };
                self.submit(by, EventType::DisclosureOverrideRecorded, Some(p), d)
                    .await;
            }
            Op::EndOverride { person: p, which } => {
                let Some(p) = person(p, self) else { return };
                let Some(ids) = self.overrides.get(&self.people[p].id) else {
                    return;
                };
                let id = ids[which % ids.len()];
                let d = json!({"override_id": id, "date": self.today()});
                self.submit("la", EventType::DisclosureOverrideEnded, Some(p), d)
                    .await;
            }
            Op::Advance { days } => {
                let mut c = self.clock.lock().unwrap();
                *c += time::Duration::days(i64::from(days));
            }
            Op::Housekeep => {
                self.projector().catch_up().unwrap();
                let head = self.running.log.head();
                let keeper =
                    Housekeeper::new(self.projector().clone(), self.running.recorder.clone());
                keeper.step().await.unwrap();
                self.passes.push(Pass {
                    head,
                    day: self.today(),
                });
                // The purges are the exchange's own events: the model learns them from the log.
                for e in self.running.log.read_from(head, usize::MAX).unwrap() {
                    let r = e.record;
                    self.logged.push(Logged {
                        seq: r.seq,
                        id: r.id,
                        ty: r.event_type,
                        source: r.source.clone(),
                        person: r.young_person,
                        day: Day::of_instant(&r.recorded_at).unwrap(),
                        data: r.data_value(),
                    });
                }
            }
            Op::Project => {
                self.projector().catch_up().unwrap();
            }
            Op::Rebuild => self.check_rebuild(),
        }
    }

    fn check_rebuild(&self) {
        self.projector().catch_up().unwrap();
        let other = tempfile::tempdir().unwrap();
        let agreements = Arc::new(config::parse(CONFIG, "proof").unwrap().agreements);
        let rebuilt =
            Projector::open(other.path(), self.running.log.clone(), agreements, None).unwrap();
        rebuilt.catch_up().unwrap();
        assert_eq!(
            rebuilt.dump().unwrap(),
            self.projector().dump().unwrap(),
            "a rebuild must equal the live projections"
        );
        for a in AGENCIES {
            for p in &self.people {
                assert_eq!(
                    views::read_model(&rebuilt, a, p.id).unwrap(),
                    views::read_model(self.projector(), a, p.id).unwrap()
                );
            }
        }
    }
}

fn env_data(running: &app::Running, seq: u64) -> Value {
    running.log.get(seq).unwrap().unwrap().record.data_value()
}

/// What the model says one agency receives of one event: the basis as JSON, except that for
/// an override the id may be any override in force (which one is policy's choice).
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Basis(Value),
    OverrideOf(&'static str, BTreeSet<Uuid>),
    /// A flow existed but no basis did: the disclosure log must say so.
    Refused,
}

/// The model's consent and override picture of one person, built only from earlier events.
#[derive(Default, Clone)]
struct Picture {
    /// (recipient, category) → the latest grant covering it, or none since a withdrawal.
    consent: BTreeMap<(String, String), Uuid>,
    /// override id → (recipients, categories, expires, ended)
    overrides: BTreeMap<Uuid, (Vec<String>, Vec<String>, Day, bool)>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

impl Picture {
    fn evolve(&mut self, e: &Logged) {
        match e.ty {
            EventType::ConsentGranted => {
                for r in strings(&e.data["recipients"]) {
                    for c in strings(&e.data["categories"]) {
                        self.consent.insert((r.clone(), c), e.id);
                    }
                }
            }
            EventType::ConsentWithdrawn => {
                let cats = if e.data.get("categories").is_some() {
                    strings(&e.data["categories"])
                } else {
                    Category::ALL.iter().map(|c| c.to_string()).collect()
                };
                for r in strings(&e.data["recipients"]) {
                    for c in &cats {
                        self.consent.remove(&(r.clone(), c.clone()));
                    }
                }
            }
            EventType::DisclosureOverrideRecorded => {
                let expires = Day::parse(e.data["expires_on"].as_str().unwrap()).unwrap();
                self.overrides.insert(
                    e.id,
                    (
                        strings(&e.data["recipients"]),
                        strings(&e.data["categories"]),
                        expires,
                        false,
                    ),
                );
            }
            EventType::DisclosureOverrideEnded => {
                let id: Uuid = serde_json::from_value(e.data["override_id"].clone()).unwrap();
                if let Some(o) = self.overrides.get_mut(&id) {
                    o.3 = true;
                }
            }
            _ => {}
        }
    }

    fn overrides_for(&self, to: &str, category: &str, day: Day) -> BTreeSet<Uuid> {
        self.overrides
            .iter()
            .filter(|(_, (rs, cs, expires, ended))| {
                !ended
                    && day <= *expires
                    && rs.iter().any(|r| r == to)
                    && cs.iter().any(|c| c == category)
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The model's decision for one event and one recipient (not its source). `picture` is the
/// person's state after the event itself (consent events are told by name, so order within
/// one event does not matter for anything else).
fn expect(
    e: &Logged,
    to: &str,
    person: &Person,
    before: &Picture,
    after: &Picture,
) -> Option<Expect> {
    let category = e.ty.category().to_string();
    if category == "consent" {
        let named = if e.ty == EventType::DisclosureOverrideEnded {
            let id: Uuid = serde_json::from_value(e.data["override_id"].clone()).unwrap();
            after
                .overrides
                .get(&id)
                .map(|o| o.0.clone())
                .unwrap_or_default()
        } else {
            strings(&e.data["recipients"])
        };
        if named.iter().any(|r| r == to) {
            return Some(Expect::Basis(json!({"kind": "named"})));
        }
        let about_override = matches!(
            e.ty,
            EventType::DisclosureOverrideRecorded | EventType::DisclosureOverrideEnded
        );
        if about_override && person.owner == to && kind_of(to) == "local-authority" {
            return Some(Expect::Basis(json!({"kind": "owner"})));
        }
        return None;
    }
    let flow = flow_for(&e.source, to, &category)?;
    let age = person.dob.age_on(e.day);
    if flow.min_age.is_some_and(|m| age < m) || flow.max_age.is_some_and(|m| age > m) {
        return Some(Expect::Refused);
    }
    if flow.statutory {
        return Some(Expect::Basis(json!({"kind": "statutory", "flow": flow.id})));
    }
    // The registration's own consent state is "before"; for everything else the event
    // changes no consent, so before and after agree.
    if let Some(grant) = before.consent.get(&(to.to_owned(), category.clone())) {
        return Some(Expect::Basis(
            json!({"kind": "consent", "flow": flow.id, "consent": grant}),
        ));
    }
    let overrides = before.overrides_for(to, &category, e.day);
    if overrides.is_empty() {
        Some(Expect::Refused)
    } else {
        Some(Expect::OverrideOf(flow.id, overrides))
    }
}

fn fields_ok(flow: Option<&str>, ty: &str, data: &Value) -> bool {
    let Some(flow) = flow else { return true };
    match flow_named(flow).fields.iter().find(|(t, _)| *t == ty) {
        None => true,
        Some((_, allowed)) => data
            .as_object()
            .unwrap()
            .keys()
            .all(|k| allowed.contains(&k.as_str())),
    }
}

/// Something an agency was given: (position, event seq, basis).
type Given = (u64, u64, Value);

impl World {
    /// Checks everything the model can say about the projections now.
    fn check(&self) {
        self.projector().catch_up().unwrap();
        let p = self.projector();
        let by_seq: BTreeMap<u64, &Logged> = self.logged.iter().map(|e| (e.seq, e)).collect();
        let person_of = |id: Uuid| self.people.iter().find(|p| p.id == id).unwrap();

        // The model's decisions, event by event.
        let mut pictures: BTreeMap<Uuid, Picture> = BTreeMap::new();
        let mut expected: BTreeMap<(&str, u64), Expect> = BTreeMap::new();
        let mut after_of: BTreeMap<u64, Picture> = BTreeMap::new();
        for e in &self.logged {
            let before = pictures.entry(e.person).or_default().clone();
            let mut after = before.clone();
            after.evolve(e);
            for to in AGENCIES {
                if to == e.source {
                    continue;
                }
                if let Some(x) = expect(e, to, person_of(e.person), &before, &after) {
                    expected.insert((to, e.seq), x);
                }
            }
            pictures.insert(e.person, after.clone());
            after_of.insert(e.seq, after);
        }

        // Feeds: exactly the expected deliveries, minimised, with restorations that had a basis.
        let mut delivered: BTreeSet<(u64, u64, String, String)> = BTreeSet::new();
        let mut visible_via: BTreeMap<(&str, Uuid), Vec<Given>> = BTreeMap::new();
        for to in AGENCIES {
            let feed = views::feed(p, to, 0, usize::MAX).unwrap();
            let mut got = BTreeMap::new();
            for item in &feed {
                let seq = item["seq"].as_u64().unwrap();
                let e = by_seq[&seq];
                got.insert(seq, item["basis"].clone());
                assert!(
                    fields_ok(item["basis"]["flow"].as_str(), e.ty.name(), &item["data"]),
                    "{to} got fields its flow does not list: {item}"
                );
                delivered.insert((seq, seq, to.to_owned(), item["basis"].to_string()));
                visible_via.entry((to, e.person)).or_default().push((
                    seq,
                    seq,
                    item["basis"].clone(),
                ));
                for r in item["restored"].as_array().into_iter().flatten() {
                    let rseq = r["seq"].as_u64().unwrap();
                    let re = by_seq[&rseq];
                    assert!(rseq < seq && re.person == e.person && re.source != to);
                    assert_eq!(e.ty, EventType::ConsentGranted, "only grants restore");
                    let category = re.ty.category().to_string();
                    let flow = flow_for(&re.source, to, &category)
                        .unwrap_or_else(|| panic!("{to} restored {rseq} with no flow"));
                    let grant = after_of[&seq]
                        .consent
                        .get(&(to.to_owned(), category.clone()));
                    assert!(!flow.statutory);
                    assert_eq!(
                        r["basis"],
                        json!({"kind": "consent", "flow": flow.id, "consent": grant}),
                        "{to} restored {rseq} without consent in force at the grant {seq}"
                    );
                    let age = person_of(re.person).dob.age_on(re.day);
                    assert!(flow.min_age.is_none_or(|m| age >= m));
                    assert!(flow.max_age.is_none_or(|m| age <= m));
                    assert!(fields_ok(Some(flow.id), re.ty.name(), &r["data"]));
                    delivered.insert((seq, rseq, to.to_owned(), r["basis"].to_string()));
                    visible_via.entry((to, e.person)).or_default().push((
                        seq,
                        rseq,
                        r["basis"].clone(),
                    ));
                }
            }
            for e in &self.logged {
                let want = expected.get(&(to, e.seq));
                let have = got.get(&e.seq);
                match (want, have) {
                    (Some(Expect::Basis(b)), Some(h)) => assert_eq!(h, b, "{to} at {}", e.seq),
                    (Some(Expect::OverrideOf(flow, ids)), Some(h)) => {
                        assert_eq!(
                            (h["kind"].as_str(), h["flow"].as_str()),
                            (Some("override"), Some(*flow))
                        );
                        let id: Uuid = serde_json::from_value(h["override_id"].clone()).unwrap();
                        assert!(
                            ids.contains(&id),
                            "{to} at {}: override {id} not in force",
                            e.seq
                        );
                    }
                    (Some(Expect::Refused) | None, None) => {}
                    // A grant an agency recorded naming itself still brings it up to date.
                    (None, Some(h))
                        if e.source == to
                            && e.ty == EventType::ConsentGranted
                            && h["kind"] == "named" => {}
                    (w, h) => panic!(
                        "{to} at {} ({} from {}): model says {w:?}, feed has {h:?}",
                        e.seq, e.ty, e.source
                    ),
                }
            }
        }

        // The disclosure log: every delivery, and a refusal wherever a flow had no basis.
        let records = views::disclosures(p, 0, usize::MAX).unwrap();
        let mut logged_deliveries = BTreeSet::new();
        let mut refusals = BTreeSet::new();
        for r in &records {
            match &r.decision {
                pathway_projector::store::Decision::Disclosed { basis } => {
                    logged_deliveries.insert((
                        r.at,
                        r.seq,
                        r.recipient.clone(),
                        serde_json::to_value(basis).unwrap().to_string(),
                    ));
                }
                pathway_projector::store::Decision::Refused { .. } => {
                    refusals.insert((r.seq, r.recipient.clone()));
                }
            }
        }
        assert_eq!(logged_deliveries, delivered, "disclosure log = deliveries");
        let want_refusals: BTreeSet<(u64, String)> = expected
            .iter()
            .filter(|(_, x)| **x == Expect::Refused)
            .map(|((to, seq), _)| (*seq, (*to).to_owned()))
            .collect();
        assert_eq!(
            refusals, want_refusals,
            "refusals where a flow had no basis"
        );

        // Read models: own events plus what was received, less withdrawals and retention.
        let withdrawn = |to: &str, person: Uuid, category: &str, at: u64| {
            self.logged.iter().any(|w| {
                w.ty == EventType::ConsentWithdrawn
                    && w.person == person
                    && w.seq > at
                    && strings(&w.data["recipients"]).iter().any(|r| r == to)
                    && (w.data.get("categories").is_none()
                        || strings(&w.data["categories"]).iter().any(|c| c == category))
            })
        };
        let expired = |flow: &str, at: u64| {
            let Some(days) = flow_named(flow).retention else {
                return false;
            };
            let given = by_seq[&at].day;
            self.passes
                .iter()
                .any(|pass| pass.head >= at && given < Day(pass.day.0 - time::Duration::days(days)))
        };
        for to in AGENCIES {
            for person in &self.people {
                let mut want: BTreeSet<u64> = self
                    .logged
                    .iter()
                    .filter(|e| e.person == person.id && e.source == to)
                    .map(|e| e.seq)
                    .collect();
                for (at, seq, basis) in visible_via.get(&(to, person.id)).into_iter().flatten() {
                    let category = by_seq[seq].ty.category().to_string();
                    let hidden_by_withdrawal =
                        basis["kind"] == "consent" && withdrawn(to, person.id, &category, *at);
                    let hidden_by_retention =
                        basis["flow"].as_str().is_some_and(|f| expired(f, *at));
                    if !hidden_by_withdrawal && !hidden_by_retention {
                        want.insert(*seq);
                    }
                }
                let have: BTreeSet<u64> = views::read_model(p, to, person.id)
                    .unwrap()
                    .map(|m| {
                        m["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["seq"].as_u64().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(have, want, "{to}'s read model of {}", person.id);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn no_agency_receives_anything_without_a_basis(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut world = World::new();
            // Start with someone registered, so most runs say something about a person.
            world.apply(&Op::Register { dob: 1, by: 0 }).await;
            for op in &ops {
                world.apply(op).await;
            }
            world.check();
            world.check_rebuild();
        });
    }
}
