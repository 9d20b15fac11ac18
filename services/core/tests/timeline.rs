//! The statutory timeline, given / when / then: given a person's history, when the timeline
//! is evaluated on a day, then these deadlines are set, met or overdue. Scenarios from the
//! guidance's cases.

use pathway_core::catalogue::EventType;
use pathway_core::date::Day;
use pathway_core::history::{self, Happened};
use pathway_core::person::Fact;
use pathway_core::report::{quarterly, Person, Quarter, QuarterlyReview};
use pathway_core::samples;
use pathway_core::timeline::{evaluate, next_check, Action};
use serde_json::{json, Value};
use uuid::Uuid;

fn d(s: &str) -> Day {
    Day::parse(s).unwrap()
}

/// A history being written, with what the exchange appended folded back in, as the log
/// would hold it.
struct Given {
    events: Vec<(
        u64,
        Uuid,
        EventType,
        String,
        Day,
        Box<serde_json::value::RawValue>,
    )>,
}

impl Given {
    fn new() -> Given {
        Given { events: Vec::new() }
    }

    fn event(&mut self, source: &str, ty: EventType, on: &str, data: Value) -> Uuid {
        let id = Uuid::new_v4();
        let seq = self.events.len() as u64 + 1;
        self.events.push((
            seq,
            id,
            ty,
            source.to_owned(),
            d(on),
            serde_json::value::to_raw_value(&data).unwrap(),
        ));
        id
    }

    fn registered(mut self, dob: &str) -> Given {
        let mut r = samples::data(EventType::YoungPersonRegistered);
        r["date_of_birth"] = json!(dob);
        self.event("la", EventType::YoungPersonRegistered, "2020-01-01", r);
        self
    }

    fn history(&self) -> Vec<Happened> {
        let facts: Vec<Fact> = self
            .events
            .iter()
            .map(|(seq, id, ty, source, on, data)| Fact {
                seq: *seq,
                id: *id,
                event_type: *ty,
                source,
                young_person: Uuid::nil(),
                recorded_on: *on,
                occurred_on: *on,
                data,
            })
            .collect();
        history::parse(&facts)
    }

    /// Evaluates on `today` and appends what the exchange would, returning it.
    fn run(&mut self, today: &str) -> Vec<Action> {
        let actions = evaluate(&self.history(), d(today));
        for a in &actions {
            let (ty, data) = match a {
                Action::Set {
                    rule,
                    due_on,
                    trigger,
                    alerts,
                } => (
                    EventType::DeadlineSet,
                    json!({"rule": rule, "due_on": due_on, "trigger_event": trigger, "alerts": alerts}),
                ),
                Action::Met {
                    rule,
                    due_on,
                    met_by,
                    met_on,
                } => (
                    EventType::DeadlineMet,
                    json!({"rule": rule, "due_on": due_on, "met_by_event": met_by, "met_on": met_on}),
                ),
                Action::Overdue {
                    rule,
                    due_on,
                    alerts,
                } => (
                    EventType::DeadlineOverdue,
                    json!({"rule": rule, "due_on": due_on, "alerts": alerts}),
                ),
            };
            self.event("exchange", ty, today, data);
        }
        actions
    }
}

/// The person's lines in the quarterly review run on `today`.
fn review(g: &Given, quarter: &str, today: &str) -> QuarterlyReview {
    let history = g.history();
    let people = [Person {
        id: Uuid::nil(),
        history: &history,
    }];
    quarterly("la", Quarter::parse(quarter).unwrap(), d(today), &people)
}

fn summary(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Set { rule, due_on, .. } => format!("set {rule} due {due_on}"),
            Action::Met { rule, met_on, .. } => format!("met {rule} on {met_on}"),
            Action::Overdue { rule, due_on, .. } => format!("overdue {rule} due {due_on}"),
        })
        .collect()
}

fn neet(g: &mut Given, start: &str) -> Uuid {
    let mut n = samples::data(EventType::NeetOnset);
    n["neet_start_date"] = json!(start);
    g.event("cs", EventType::NeetOnset, start, n)
}

fn meeting(g: &mut Given, on: &str) -> Uuid {
    let mut m = samples::data(EventType::MeetingHeld);
    m["date"] = json!(on);
    m["kind"] = json!("neet-multi-agency");
    g.event("cs", EventType::MeetingHeld, on, m)
}

fn worker(g: &mut Given, source: &str, role: &str, on: &str) {
    let mut w = samples::data(EventType::WorkerAllocated);
    w["role"] = json!(role);
    w["from_date"] = json!(on);
    g.event(source, EventType::WorkerAllocated, on, w);
}

#[test]
fn a_care_leaver_becomes_neet_and_the_meeting_is_held_on_day_4() {
    let mut g = Given::new().registered("2007-03-01");
    worker(&mut g, "la", "leaving-care-personal-adviser", "2024-01-01");
    worker(&mut g, "cs", "named-link", "2024-01-01");
    // Monday 2 November 2026: due on Monday 9 November.
    neet(&mut g, "2026-11-02");
    let set = g.run("2026-11-02");
    assert_eq!(summary(&set), vec!["set neet-meeting due 2026-11-09"]);
    let Action::Set { alerts, .. } = &set[0] else {
        unreachable!()
    };
    assert_eq!(
        alerts,
        &vec!["cs".to_owned(), "la".to_owned()],
        "named link, then the PA"
    );
    // Day 4 (Thursday 5 November): the meeting is held.
    meeting(&mut g, "2026-11-05");
    assert_eq!(
        summary(&g.run("2026-11-05")),
        vec!["met neet-meeting on 2026-11-05"]
    );
    assert!(g.run("2026-11-20").is_empty(), "met in time: never overdue");
    assert_eq!(next_check(&g.history(), d("2026-11-20")), None);
    let r = review(&g, "2026-Q4", "2026-11-20");
    assert_eq!(
        (r.neet.len(), r.neet[0].meeting, r.neet[0].meeting_held_on),
        (1, "met", Some(d("2026-11-05")))
    );
}

#[test]
fn a_care_leaver_becomes_neet_and_no_meeting_is_held() {
    let mut g = Given::new().registered("2007-03-01");
    // Friday 18 December 2026: five working days skip Christmas and Boxing Day (Monday 28th).
    neet(&mut g, "2026-12-18");
    assert_eq!(
        summary(&g.run("2026-12-18")),
        vec!["set neet-meeting due 2026-12-29"]
    );
    assert_eq!(
        next_check(&g.history(), d("2026-12-18")),
        Some(d("2026-12-30"))
    );
    assert!(
        g.run("2026-12-29").is_empty(),
        "due today is not yet overdue"
    );
    assert_eq!(
        summary(&g.run("2026-12-30")),
        vec!["overdue neet-meeting due 2026-12-29"]
    );
    assert!(g.run("2027-01-05").is_empty(), "overdue is said once");
    let r = review(&g, "2027-Q1", "2027-01-05");
    assert_eq!(r.neet[0].meeting, "overdue");
    assert_eq!(r.neet[0].meeting_due_on, d("2026-12-29"));
    // Held late: met, but it stays overdue.
    meeting(&mut g, "2027-01-06");
    assert_eq!(
        summary(&g.run("2027-01-06")),
        vec!["met neet-meeting on 2027-01-06"]
    );
}

#[test]
fn natalie_turns_16_in_care() {
    let mut g = Given::new().registered("2010-12-10");
    let mut la = samples::data(EventType::LookedAfterStarted);
    la["start_date"] = json!("2022-05-01");
    g.event("la", EventType::LookedAfterStarted, "2022-05-01", la);
    // At 15 and a half (10 June 2026) the referral to the leaving care service falls due.
    assert_eq!(
        summary(&g.run("2026-06-10")),
        vec!["set leaving-care-referral due 2026-06-10"]
    );
    assert_eq!(
        summary(&g.run("2026-06-11")),
        vec!["overdue leaving-care-referral due 2026-06-10"]
    );
    worker(&mut g, "la", "leaving-care-personal-adviser", "2026-06-20");
    assert_eq!(
        summary(&g.run("2026-06-20")),
        vec!["met leaving-care-referral on 2026-06-20"]
    );
    // Nothing about the pathway plan before her 16th birthday...
    assert_eq!(
        next_check(&g.history(), d("2026-06-20")),
        Some(d("2026-12-10"))
    );
    assert!(g.run("2026-12-09").is_empty());
    // ...then a plan is due within 3 months.
    assert_eq!(
        summary(&g.run("2026-12-10")),
        vec!["set pathway-plan due 2027-03-10"]
    );
    let mut plan = samples::data(EventType::PathwayPlanReviewed);
    plan["review_date"] = json!("2027-02-01");
    plan["next_review_due"] = json!("2027-08-01");
    g.event("la", EventType::PathwayPlanReviewed, "2027-02-01", plan);
    assert_eq!(
        summary(&g.run("2027-02-01")),
        vec![
            "met pathway-plan on 2027-02-01",
            "set pathway-plan-review due 2027-08-01"
        ]
    );
    assert_eq!(
        summary(&g.run("2027-08-02")),
        vec!["overdue pathway-plan-review due 2027-08-01"]
    );
    // In the review: looked after (15) at the end of Q3 2026, eligible at 16 by the end of Q4.
    let r = review(&g, "2026-Q4", "2027-01-02");
    assert_eq!(r.cohort["16-17"]["eligible"], 1);
    assert_eq!(r.cohort_previous_quarter["under-16"]["looked-after"], 1);
}

#[test]
fn mary_moves_placement_and_school_and_leaves_care_at_17() {
    let mut g = Given::new().registered("2009-09-15");
    let mut la = samples::data(EventType::LookedAfterStarted);
    la["start_date"] = json!("2021-01-10");
    g.event("la", EventType::LookedAfterStarted, "2021-01-10", la);
    worker(&mut g, "la", "leaving-care-personal-adviser", "2025-03-01");
    let mut plan = samples::data(EventType::PathwayPlanReviewed);
    plan["review_date"] = json!("2025-10-01");
    plan["next_review_due"] = json!("2026-04-01");
    g.event("la", EventType::PathwayPlanReviewed, "2025-10-01", plan);
    // She moves placement and school: neither starts a clock of its own.
    g.event(
        "la",
        EventType::PlacementChanged,
        "2026-01-05",
        samples::data(EventType::PlacementChanged),
    );
    g.event(
        "col",
        EventType::EnrolmentStarted,
        "2026-01-06",
        samples::data(EventType::EnrolmentStarted),
    );
    let mut plan = samples::data(EventType::PathwayPlanReviewed);
    plan["review_date"] = json!("2026-03-20");
    plan["next_review_due"] = json!("2026-09-20");
    g.event("la", EventType::PathwayPlanReviewed, "2026-03-20", plan);
    let mut ceased = samples::data(EventType::LookedAfterCeased);
    ceased["date"] = json!("2027-01-31");
    g.event("la", EventType::LookedAfterCeased, "2027-01-31", ceased);
    let first = summary(&g.run("2027-02-01"));
    assert_eq!(
        first,
        vec![
            "set leaving-care-referral due 2025-03-15",
            "met leaving-care-referral on 2025-03-01",
            "set pathway-plan due 2025-12-15",
            "met pathway-plan on 2025-10-01",
            "set pathway-plan-review due 2026-04-01",
            "met pathway-plan-review on 2026-03-20",
            "set pathway-plan-review due 2026-09-20",
            "overdue pathway-plan-review due 2026-09-20",
        ]
    );
    // Her 18th-birthday outcome clock starts a month before the birthday.
    assert_eq!(
        summary(&g.run("2027-08-16")),
        vec!["set care-leaver-outcome.18 due 2027-11-15"]
    );
    // In the review she is a relevant child (17, left care) in Q1 2027, and reaches 19 in
    // Q3 2028 with no outcome or destination recorded and her plan overdue.
    assert_eq!(
        review(&g, "2027-Q1", "2027-03-31").cohort["16-17"]["relevant"],
        1
    );
    let r = review(&g, "2028-Q3", "2028-09-30");
    let line = &r.turning_19[0];
    assert_eq!(
        (line.turns_19_on, line.eet_status, line.plan.status),
        (d("2028-09-15"), "not-known", "overdue")
    );
    assert_eq!(
        line.care_status.map(|s| s.as_str()),
        Some("former-relevant")
    );
}
