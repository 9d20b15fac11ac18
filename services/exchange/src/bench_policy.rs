//! `exchange bench --only policy`: what deciding disclosure costs, per (event, recipient) and
//! for one event fanned out to 100 agencies, with no consent anywhere against mixed consent.
//!
//! Two levels. `decide` alone (the pure function, as the projector calls it once per agency
//! per event), and the projector step around it (deciding, writing feed items and disclosure
//! records, one atomic batch), replaying a log through a fresh projector as a rebuild does.

use crate::app;
use crate::bench::median;
use pathway_core::agreements::{Agency, AgencyKind, Agreements, Flow, FlowBasis};
use pathway_core::catalogue::{Category, EventType};
use pathway_core::date::Day;
use pathway_core::person::{Fact, PersonState};
use pathway_core::policy::decide;
use pathway_core::samples;
use pathway_projector::Projector;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

const RECIPIENTS: usize = 99;

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// Every flow statutory: no consent to look up.
    Statutory,
    /// Consent flows, and no consent given: every decision is a logged refusal.
    NoConsent,
    /// Consent flows; the person consented for half the recipients, an override covers a
    /// tenth more, the rest refuse.
    Mixed,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Statutory => "statutory (no consent involved)",
            Scenario::NoConsent => "consent flows, none given",
            Scenario::Mixed => "mixed consent and overrides",
        }
    }
}

fn recipient(i: usize) -> String {
    format!("college-{i:03}")
}

/// One local authority and 99 colleges, each with one flow from it.
fn agreements(s: Scenario) -> Agreements {
    let mut agencies = vec![Agency {
        id: "la".into(),
        kind: AgencyKind::LocalAuthority,
        name: String::new(),
        la_code: None,
        signing_keys: Vec::new(),
    }];
    let mut flows = Vec::new();
    for i in 0..RECIPIENTS {
        agencies.push(Agency {
            id: recipient(i),
            kind: AgencyKind::College,
            name: String::new(),
            la_code: None,
            signing_keys: Vec::new(),
        });
        flows.push(Flow {
            id: format!("la-to-{}", recipient(i)),
            from: vec!["la".into()],
            from_kinds: vec![],
            to: recipient(i),
            categories: vec![Category::Support, Category::EducationEmployment],
            fields: BTreeMap::new(),
            purpose: "bench".into(),
            basis: if s == Scenario::Statutory {
                FlowBasis::Statutory
            } else {
                FlowBasis::Consent
            },
            min_age: Some(14),
            max_age: Some(25),
            retention_days: Some(365),
        });
    }
    Agreements::new(agencies, flows).expect("bench agreements are valid")
}

/// The consent events that give the person the scenario's consent picture.
fn consent_events(s: Scenario) -> Vec<(EventType, Value)> {
    if s != Scenario::Mixed {
        return Vec::new();
    }
    let consented: Vec<String> = (0..RECIPIENTS).step_by(2).map(recipient).collect();
    let overridden: Vec<String> = (1..RECIPIENTS).step_by(10).map(recipient).collect();
    let mut grant = samples::data(EventType::ConsentGranted);
    grant["recipients"] = json!(consented);
    grant["categories"] = json!(["support", "education-employment"]);
    let mut ov = samples::data(EventType::DisclosureOverrideRecorded);
    ov["recipients"] = json!(overridden);
    ov["categories"] = json!(["support"]);
    ov["expires_on"] = json!("2030-01-01");
    vec![
        (EventType::ConsentGranted, grant),
        (EventType::DisclosureOverrideRecorded, ov),
    ]
}

/// Nanoseconds to decide one event for every agency (the dispatcher's loop), median of rounds.
fn fan_out(s: Scenario) -> f64 {
    let agreements = agreements(s);
    let mut person = PersonState::default();
    let yp = Uuid::new_v4();
    let day = Day::parse("2026-11-02").unwrap();
    let mut reg = samples::data(EventType::YoungPersonRegistered);
    reg["date_of_birth"] = json!("2008-01-01");
    let mut history = vec![(EventType::YoungPersonRegistered, reg)];
    history.extend(consent_events(s));
    for (seq, (ty, data)) in history.iter().enumerate() {
        let raw = serde_json::value::to_raw_value(data).unwrap();
        person.evolve(&Fact {
            seq: seq as u64 + 1,
            id: Uuid::new_v4(),
            event_type: *ty,
            source: "la",
            young_person: yp,
            recorded_on: day,
            occurred_on: day,
            data: &raw,
        });
    }
    let raw = serde_json::value::to_raw_value(&samples::data(EventType::WorkerAllocated)).unwrap();
    let fact = Fact {
        seq: 10,
        id: Uuid::new_v4(),
        event_type: EventType::WorkerAllocated,
        source: "la",
        young_person: yp,
        recorded_on: day,
        occurred_on: day,
        data: &raw,
    };
    let agencies: Vec<&Agency> = agreements.agencies().collect();
    let iterations = 20_000;
    let rounds = (0..15)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                for a in &agencies {
                    if a.id != fact.source {
                        black_box(decide(&agreements, black_box(&person), &fact, a).is_ok());
                    }
                }
            }
            started.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    median(rounds)
}

/// Events per second a fresh projector applies (decide + feed + disclosure log + batch) when
/// every event fans out to the 99 colleges.
async fn projected(root: &std::path::Path, s: Scenario, people: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir_in(root)?;
    let log = app::open_log(dir.path())?;
    let env = |ty: EventType, data: Value, yp: Option<Uuid>| {
        let mut e = json!({"id": Uuid::new_v4(), "type": ty.name(), "occurred_at": "2026-11-02T10:00:00Z", "data": data});
        if let Some(yp) = yp {
            e["young_person"] = json!(yp);
        }
        crate::bench::new_event(&e, "la")
    };
    let mut reg = samples::data(EventType::YoungPersonRegistered);
    reg["date_of_birth"] = json!("2008-01-01");
    let ids: Vec<Uuid> = log
        .append(
            (0..people)
                .map(|_| env(EventType::YoungPersonRegistered, reg.clone(), None))
                .collect(),
        )
        .await?
        .iter()
        .map(|r| r.young_person)
        .collect();
    let mut setup = Vec::new();
    for yp in &ids {
        for (ty, data) in consent_events(s) {
            setup.push(env(ty, data, Some(*yp)));
        }
    }
    for chunk in setup.chunks(1000) {
        log.append(chunk.to_vec()).await?;
    }
    let before = log.head();
    let per_person = 10;
    for _ in 0..per_person {
        let batch = ids
            .iter()
            .map(|yp| {
                env(
                    EventType::WorkerAllocated,
                    samples::data(EventType::WorkerAllocated),
                    Some(*yp),
                )
            })
            .collect();
        log.append(batch).await?;
    }
    let measured = log.head() - before;
    // Project the set-up first, then time the fan-out events alone.
    let projector = Projector::open(
        &dir.path().join("projections"),
        log.clone(),
        Arc::new(agreements(s)),
        None,
    )?;
    let started = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        while projector.checkpoint() < before {
            let gap = (before - projector.checkpoint()) as usize;
            projector.step(gap.min(4096))?;
        }
        let started = Instant::now();
        projector.catch_up()?;
        Ok(started.elapsed().as_secs_f64())
    })
    .await??;
    Ok(measured as f64 / started)
}

pub async fn run(root: &std::path::Path) -> anyhow::Result<()> {
    let scenarios = [Scenario::Statutory, Scenario::NoConsent, Scenario::Mixed];
    let mut decide_ns = Vec::new();
    for s in scenarios {
        let ns = fan_out(s);
        println!(
            "policy: decide, one event to {} agencies, {}: {:.0} ns per event ({:.1} ns per decision)",
            RECIPIENTS,
            s.name(),
            ns,
            ns / RECIPIENTS as f64
        );
        decide_ns.push(ns);
    }
    println!(
        "policy: decide fan-out, mixed / none: {:.2}x against statutory, {:.2}x against consent-none",
        decide_ns[2] / decide_ns[0],
        decide_ns[2] / decide_ns[1]
    );
    // The projector writes to disk, so its figures are noisier: rounds alternate the
    // scenarios, and the medians are compared.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 0..3 {
        for (i, s) in scenarios.iter().enumerate() {
            let rate = projected(root, *s, 2000).await?;
            println!(
                "policy: round {round}, projector, each event fanned out to {RECIPIENTS} agencies, {}: {rate:.0} events/s",
                s.name()
            );
            samples[i].push(rate);
        }
    }
    let mut rates = Vec::new();
    for (s, rounds) in scenarios.iter().zip(samples) {
        let rate = median(rounds);
        println!(
            "policy: projector median, {}: {:.0} events/s ({:.1} us per event)",
            s.name(),
            rate,
            1e6 / rate
        );
        rates.push(rate);
    }
    println!(
        "policy: projector fan-out cost, mixed / none: {:.2}x against statutory, {:.2}x against consent-none",
        rates[0] / rates[2],
        rates[1] / rates[2]
    );
    Ok(())
}
