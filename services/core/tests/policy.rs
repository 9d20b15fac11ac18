//! Policy v1, given / when / then: given agreements and a person's history, when an event is
//! decided for a recipient, then it is disclosed on a stated basis or refused.

use pathway_core::agreements::{Agency, AgencyKind, Agreements, Flow, FlowBasis};
use pathway_core::catalogue::{Category, EventType};
use pathway_core::date::Day;
use pathway_core::person::{Change, Fact, PersonState};
use pathway_core::policy::{decide, minimise, restore, Basis, Refusal};
use pathway_core::samples;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

fn agency(id: &str, kind: AgencyKind) -> Agency {
    Agency {
        id: id.into(),
        kind,
        name: id.into(),
        la_code: None,
        signing_keys: Vec::new(),
    }
}

fn flow(from: &str, to: &str, cats: &[Category], basis: FlowBasis, min_age: Option<u8>) -> Flow {
    Flow {
        id: format!("{from}>{to}"),
        from: vec![from.into()],
        from_kinds: vec![],
        to: to.into(),
        categories: cats.to_vec(),
        fields: BTreeMap::new(),
        purpose: "support".into(),
        basis,
        min_age,
        max_age: None,
        retention_days: None,
    }
}

fn agreements(flows: Vec<Flow>) -> Agreements {
    Agreements::new(
        vec![
            agency("la", AgencyKind::LocalAuthority),
            agency("cs", AgencyKind::CareersService),
            agency("demo-college", AgencyKind::College),
        ],
        flows,
    )
    .unwrap()
}

struct Given {
    agreements: Agreements,
    person: PersonState,
    seq: u64,
    yp: Uuid,
}

impl Given {
    fn new(flows: Vec<Flow>) -> Given {
        Given {
            agreements: agreements(flows),
            person: PersonState::default(),
            seq: 0,
            yp: Uuid::new_v4(),
        }
    }

    /// Applies an event to the person's state, as the projector would.
    fn event(&mut self, source: &str, ty: EventType, data: Value) -> (Uuid, Change) {
        self.seq += 1;
        let id = Uuid::new_v4();
        let data = raw(&data);
        let fact = fact(self.seq, id, source, ty, self.yp, "2026-10-01", &data);
        (id, self.person.evolve(&fact))
    }

    fn registered(mut self, dob: &str) -> Given {
        let mut d = samples::data(EventType::YoungPersonRegistered);
        d["date_of_birth"] = json!(dob);
        self.event("la", EventType::YoungPersonRegistered, d);
        self
    }

    fn decide(&self, source: &str, ty: EventType, on: &str, to: &str) -> Result<Basis, Refusal> {
        let data = samples::data(ty);
        let data = raw(&data);
        let f = fact(self.seq + 1, Uuid::new_v4(), source, ty, self.yp, on, &data);
        decide(
            &self.agreements,
            &self.person,
            &f,
            self.agreements.agency(to).unwrap(),
        )
        .map(|d| d.basis)
    }
}

/// Event data as the log hands it to policy: JSON text.
fn raw(data: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(data).unwrap()
}

fn fact<'a>(
    seq: u64,
    id: Uuid,
    source: &'a str,
    ty: EventType,
    yp: Uuid,
    on: &str,
    data: &'a RawValue,
) -> Fact<'a> {
    Fact {
        seq,
        id,
        event_type: ty,
        source,
        young_person: yp,
        recorded_on: Day::parse(on).unwrap(),
        occurred_on: Day::parse(on).unwrap(),
        data,
    }
}

#[test]
fn nothing_flows_without_a_flow() {
    let g = Given::new(vec![]).registered("2008-01-01");
    assert_eq!(
        g.decide("la", EventType::PlacementChanged, "2026-10-01", "cs"),
        Err(Refusal::NoFlow)
    );
}

#[test]
fn statutory_flows_respect_the_age_band() {
    let g = Given::new(vec![flow(
        "la",
        "cs",
        &[Category::Care],
        FlowBasis::Statutory,
        Some(14),
    )])
    .registered("2013-06-01");
    assert_eq!(
        g.decide("la", EventType::LookedAfterStarted, "2027-05-31", "cs"),
        Err(Refusal::OutsideAge {
            flow: "la>cs".into()
        })
    );
    assert_eq!(
        g.decide("la", EventType::LookedAfterStarted, "2027-06-01", "cs"),
        Ok(Basis::Statutory {
            flow: "la>cs".into()
        })
    );
}

#[test]
fn consent_flows_need_consent_and_stop_at_withdrawal() {
    let mut g = Given::new(vec![flow(
        "cs",
        "demo-college",
        &[Category::EducationEmployment],
        FlowBasis::Consent,
        None,
    )])
    .registered("2008-01-01");
    let ty = EventType::DestinationRecorded;
    assert_eq!(
        g.decide("cs", ty, "2026-10-01", "demo-college"),
        Err(Refusal::NoConsent {
            flow: "cs>demo-college".into()
        })
    );

    let (grant, _) = g.event(
        "la",
        EventType::ConsentGranted,
        samples::data(EventType::ConsentGranted),
    );
    assert_eq!(
        g.decide("cs", ty, "2026-10-01", "demo-college"),
        Ok(Basis::Consent {
            flow: "cs>demo-college".into(),
            consent: grant
        })
    );

    let mut w = samples::data(EventType::ConsentWithdrawn);
    w["categories"] = json!(["education-employment"]);
    let (_, removed) = g.event("la", EventType::ConsentWithdrawn, w);
    assert_eq!(
        removed.withdrawn,
        vec![("demo-college".to_owned(), Category::EducationEmployment)]
    );
    assert!(g.decide("cs", ty, "2026-10-01", "demo-college").is_err());
    // the other categories of the same grant still stand
    assert!(g
        .person
        .consent_for("demo-college", Category::Support)
        .is_some());
}

#[test]
fn withdrawal_without_categories_withdraws_all() {
    let mut g = Given::new(vec![]).registered("2008-01-01");
    g.event(
        "la",
        EventType::ConsentGranted,
        samples::data(EventType::ConsentGranted),
    );
    let (_, removed) = g.event(
        "la",
        EventType::ConsentWithdrawn,
        samples::data(EventType::ConsentWithdrawn),
    );
    assert_eq!(removed.withdrawn.len(), 3);
    assert_eq!(removed.grants_ended.len(), 1, "no pair rests on the grant");
    assert!(g.person.grants().is_empty());
    assert!(g
        .person
        .consent_for("demo-college", Category::Identity)
        .is_none());
}

/// A person whose every grant was withdrawn holds what one who never gave consent holds, and
/// a person without consent stays small: the projector keeps 100,000 of them in one map.
#[test]
fn withdrawing_everything_leaves_the_state_of_no_consent() {
    let never = Given::new(vec![]).registered("2008-01-01");
    let mut g = Given::new(vec![]).registered("2008-01-01");
    g.event(
        "la",
        EventType::ConsentGranted,
        samples::data(EventType::ConsentGranted),
    );
    assert_ne!(g.person, never.person);
    g.event(
        "la",
        EventType::ConsentWithdrawn,
        samples::data(EventType::ConsentWithdrawn),
    );
    assert_eq!(g.person, never.person);
    assert!(std::mem::size_of::<PersonState>() <= 48);
}

#[test]
fn an_override_allows_what_it_names_until_it_expires_or_ends() {
    let mut g = Given::new(vec![flow(
        "la",
        "demo-college",
        &[Category::Placement, Category::Care],
        FlowBasis::Consent,
        None,
    )])
    .registered("2008-01-01");
    let (ov, _) = g.event(
        "la",
        EventType::DisclosureOverrideRecorded,
        samples::data(EventType::DisclosureOverrideRecorded),
    );
    assert_eq!(
        g.decide(
            "la",
            EventType::PlacementChanged,
            "2026-12-31",
            "demo-college"
        ),
        Ok(Basis::Override {
            flow: "la>demo-college".into(),
            override_id: ov
        })
    );
    // not a category it names
    assert!(g
        .decide(
            "la",
            EventType::LookedAfterStarted,
            "2026-12-31",
            "demo-college"
        )
        .is_err());
    // expired
    assert!(g
        .decide(
            "la",
            EventType::PlacementChanged,
            "2027-01-01",
            "demo-college"
        )
        .is_err());
    // ended
    g.event(
        "la",
        EventType::DisclosureOverrideEnded,
        json!({"override_id": ov, "date": "2026-11-01"}),
    );
    assert!(g
        .decide(
            "la",
            EventType::PlacementChanged,
            "2026-11-02",
            "demo-college"
        )
        .is_err());
}

#[test]
fn consent_events_reach_only_the_recipients_they_name() {
    let g = Given::new(vec![]).registered("2008-01-01");
    assert_eq!(
        g.decide(
            "la",
            EventType::ConsentGranted,
            "2026-10-01",
            "demo-college"
        ),
        Ok(Basis::Named)
    );
    assert_eq!(
        g.decide("la", EventType::ConsentGranted, "2026-10-01", "cs"),
        Err(Refusal::NoFlow)
    );
}

#[test]
fn statutory_basis_is_preferred_over_consent() {
    let mut g = Given::new(vec![
        flow(
            "la",
            "demo-college",
            &[Category::Support],
            FlowBasis::Consent,
            None,
        ),
        {
            let mut f = flow(
                "la",
                "demo-college",
                &[Category::Support],
                FlowBasis::Statutory,
                None,
            );
            f.id = "statutory".into();
            f
        },
    ])
    .registered("2008-01-01");
    g.event(
        "la",
        EventType::ConsentGranted,
        samples::data(EventType::ConsentGranted),
    );
    assert_eq!(
        g.decide(
            "la",
            EventType::WorkerAllocated,
            "2026-10-01",
            "demo-college"
        ),
        Ok(Basis::Statutory {
            flow: "statutory".into()
        })
    );
}

#[test]
fn minimise_keeps_only_listed_fields() {
    let data = samples::data(EventType::PlacementChanged);
    let kept = minimise(
        &data,
        Some(&["start_date".to_owned(), "placement_type".to_owned()]),
    );
    assert_eq!(
        kept,
        json!({"start_date": "2025-03-01", "placement_type": "U1"})
    );
    assert_eq!(minimise(&data, None), data);
}

#[test]
fn overlapping_grants_renew_pairs_and_the_review_follows_the_latest() {
    let mut g = Given::new(vec![]).registered("2008-01-01");
    let mut first = samples::data(EventType::ConsentGranted);
    first["categories"] = json!(["education-employment"]);
    let (a, change) = g.event("la", EventType::ConsentGranted, first);
    assert_eq!(
        change.granted,
        vec![("demo-college".to_owned(), Category::EducationEmployment)]
    );
    let mut second = samples::data(EventType::ConsentGranted);
    second["categories"] = json!(["education-employment", "support"]);
    let (b, change) = g.event("cs", EventType::ConsentGranted, second);
    // Only the pair not covered before is new; the first grant is wholly renewed.
    assert_eq!(
        change.granted,
        vec![("demo-college".to_owned(), Category::Support)]
    );
    assert_eq!(
        change
            .grants_ended
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        vec![a]
    );
    assert_eq!(g.person.grants().keys().collect::<Vec<_>>(), vec![&b]);
    assert_eq!(g.person.grants()[&b].recorded_by, "cs");
    assert_eq!(
        g.person
            .consent_for("demo-college", Category::EducationEmployment),
        Some(b)
    );
}

#[test]
fn overrides_are_told_to_the_owning_local_authority_and_their_end_to_those_named() {
    let mut g = Given::new(vec![]).registered("2008-01-01");
    assert_eq!(
        g.decide(
            "cs",
            EventType::DisclosureOverrideRecorded,
            "2026-10-01",
            "la"
        ),
        Ok(Basis::Owner),
        "the local authority that registered the person sees an override recorded by another"
    );
    assert_eq!(
        g.decide(
            "cs",
            EventType::DisclosureOverrideRecorded,
            "2026-10-01",
            "demo-college"
        ),
        Ok(Basis::Named)
    );
    let (ov, _) = g.event(
        "cs",
        EventType::DisclosureOverrideRecorded,
        samples::data(EventType::DisclosureOverrideRecorded),
    );
    let ended = json!({"override_id": ov, "date": "2026-11-01"});
    g.event("cs", EventType::DisclosureOverrideEnded, ended.clone());
    let data = raw(&ended);
    let f = fact(
        g.seq,
        Uuid::new_v4(),
        "cs",
        EventType::DisclosureOverrideEnded,
        g.yp,
        "2026-11-01",
        &data,
    );
    let to = |id: &str| {
        decide(
            &g.agreements,
            &g.person,
            &f,
            g.agreements.agency(id).unwrap(),
        )
        .map(|d| d.basis)
    };
    assert_eq!(to("demo-college"), Ok(Basis::Named));
    assert_eq!(to("la"), Ok(Basis::Owner));
    assert!(g.person.overrides()[&ov].ended_on.is_some());
}

#[test]
fn a_grant_restores_the_current_state_not_every_past_event() {
    let mut g = Given::new(vec![flow(
        "la",
        "demo-college",
        &[Category::Placement, Category::Support],
        FlowBasis::Consent,
        None,
    )])
    .registered("2008-01-01");
    let mut history = Vec::new();
    let mut push = |g: &mut Given, ty: EventType, data: Value| {
        g.seq += 1;
        history.push((g.seq, ty, raw(&data)));
    };
    push(
        &mut g,
        EventType::PlacementChanged,
        samples::data(EventType::PlacementChanged),
    );
    let mut later = samples::data(EventType::PlacementChanged);
    later["start_date"] = json!("2026-01-01");
    push(&mut g, EventType::PlacementChanged, later);
    let mut pa = samples::data(EventType::WorkerAllocated);
    pa["role"] = json!("personal-adviser");
    push(&mut g, EventType::WorkerAllocated, pa);
    push(
        &mut g,
        EventType::MeetingHeld,
        samples::data(EventType::MeetingHeld),
    );
    push(
        &mut g,
        EventType::LookedAfterStarted,
        samples::data(EventType::LookedAfterStarted),
    );
    let mut grant = samples::data(EventType::ConsentGranted);
    grant["categories"] = json!(["placement", "support", "care"]);
    g.event("la", EventType::ConsentGranted, grant);
    let facts: Vec<Fact> = history
        .iter()
        .map(|(seq, ty, data)| fact(*seq, Uuid::new_v4(), "la", *ty, g.yp, "2026-10-01", data))
        .collect();
    let college = g.agreements.agency("demo-college").unwrap();
    let restored = restore(
        &g.agreements,
        &g.person,
        &facts,
        college,
        &[Category::Placement, Category::Support, Category::Care],
    );
    let seqs: Vec<u64> = restored.iter().map(|r| r.seq).collect();
    // the later placement (not the first), the worker, the meeting; care has no flow
    assert_eq!(seqs, vec![3, 4, 5]);
    assert!(restored.iter().all(|r| r.basis.is_consent()));
}
