//! The statutory timeline: deadlines derived from a person's history by rules, and what the
//! exchange must append (`deadline.set`, `deadline.met`, `deadline.overdue`) to bring the log
//! up to date on a given day.
//!
//! The rules are one table of data ([`RULES`]): what starts a deadline, when it is due, what
//! meets it, whom it alerts. [`evaluate`] is pure: given the history (which includes the
//! deadline events already appended) and today, it returns only what is missing, so running
//! it twice appends nothing twice, and a rebuild sees exactly the decisions the live run made.

use crate::calendar::{add_months, add_working_days, birthday, days};
use crate::care_status::{episodes, looked_after_on};
use crate::catalogue::EventType;
use crate::date::Day;
use crate::events::EventData;
use crate::history::{identity, Happened};
use std::collections::BTreeSet;
use uuid::Uuid;

/// What starts a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Each event of this type starts one.
    Each(EventType),
    /// Being looked after on the day the person reaches `years` and `months` (or starting to
    /// be looked after later, before 18): one deadline, started by that episode.
    InCareAt { years: i32, months: i32 },
    /// Leaving care at 16 or over: one deadline for each birthday from 17 to 21 still ahead.
    CareLeaverBirthdays,
}

/// When it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// This many working days after a date field of the starting event.
    WorkingDaysAfter { field: DateField, days: u32 },
    /// A date field of the starting event.
    On(DateField),
    /// This many months after the clock starts (the age reached, or the episode's start).
    MonthsAfterStart(i32),
    /// This many months after the birthday the deadline is about.
    MonthsAfterBirthday(i32),
}

/// The date fields rules count from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateField {
    NeetStartDate,
    NextReviewDue,
    ReviewDue,
}

/// What meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meets {
    /// A `meeting.held` of this kind, dated on or after the start.
    Meeting(&'static str),
    /// A `worker.allocated` with this role.
    Worker(&'static str),
    /// A later event of one of these types.
    Later(&'static [EventType]),
    /// A `care-leaver.outcome-recorded` for the birthday concerned.
    Outcome,
}

/// Whom it alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// The local authority that registered the person.
    Owner,
    /// The agency whose event started the deadline.
    Source,
    /// The agency that allocated the person's current worker in this role.
    Worker(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub summary: &'static str,
    pub start: Start,
    pub due: Due,
    pub meets: Meets,
    pub alerts: &'static [Alert],
    /// No deadline falls due at or after this age (pathway plan reviews stop at 21).
    pub until_age: Option<i32>,
}

/// The protocols' clocks.
pub const RULES: &[Rule] = &[
    Rule {
        id: "neet-meeting",
        summary: "A multi-agency meeting within 5 working days of the NEET start date",
        start: Start::Each(EventType::NeetOnset),
        due: Due::WorkingDaysAfter {
            field: DateField::NeetStartDate,
            days: 5,
        },
        meets: Meets::Meeting("neet-multi-agency"),
        alerts: &[
            Alert::Worker("named-link"),
            Alert::Worker("leaving-care-personal-adviser"),
            Alert::Source,
            Alert::Owner,
        ],
        until_age: None,
    },
    Rule {
        id: "leaving-care-referral",
        summary: "Referral to the leaving care service (a personal adviser) at 15 and a half",
        start: Start::InCareAt {
            years: 15,
            months: 6,
        },
        due: Due::MonthsAfterStart(0),
        meets: Meets::Worker("leaving-care-personal-adviser"),
        alerts: &[Alert::Owner],
        until_age: Some(18),
    },
    Rule {
        id: "pathway-plan",
        summary: "A pathway plan within 3 months of the 16th birthday",
        start: Start::InCareAt {
            years: 16,
            months: 0,
        },
        due: Due::MonthsAfterStart(3),
        meets: Meets::Later(&[EventType::PathwayPlanReviewed]),
        alerts: &[Alert::Owner, Alert::Worker("leaving-care-personal-adviser")],
        until_age: Some(18),
    },
    Rule {
        id: "pathway-plan-review",
        summary: "The pathway plan reviewed by its next review date (every 6 months) until 21",
        start: Start::Each(EventType::PathwayPlanReviewed),
        due: Due::On(DateField::NextReviewDue),
        meets: Meets::Later(&[EventType::PathwayPlanReviewed]),
        alerts: &[Alert::Owner, Alert::Worker("leaving-care-personal-adviser")],
        until_age: Some(21),
    },
    Rule {
        id: "consent-review",
        summary: "Consent checked by its review date (yearly)",
        start: Start::Each(EventType::ConsentGranted),
        due: Due::On(DateField::ReviewDue),
        meets: Meets::Later(&[EventType::ConsentGranted, EventType::ConsentWithdrawn]),
        alerts: &[Alert::Source],
        until_age: None,
    },
    Rule {
        id: "care-leaver-outcome",
        summary: "Care leaver outcomes recorded around each birthday from 17 to 21",
        start: Start::CareLeaverBirthdays,
        due: Due::MonthsAfterBirthday(2),
        meets: Meets::Outcome,
        alerts: &[Alert::Owner, Alert::Worker("leaving-care-personal-adviser")],
        until_age: None,
    },
];

/// One deadline a history implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The rule's id, with the birthday for per-birthday rules (`care-leaver-outcome.19`).
    pub rule: String,
    pub trigger: Uuid,
    /// From when it exists: before this day it is not set.
    pub starts_on: Day,
    pub due_on: Day,
    /// The event that met it, and when.
    pub met: Option<(Uuid, Day)>,
    pub alerts: Vec<String>,
}

/// What the exchange should append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Set {
        rule: String,
        due_on: Day,
        trigger: Uuid,
        alerts: Vec<String>,
    },
    Met {
        rule: String,
        due_on: Day,
        met_by: Uuid,
        met_on: Day,
    },
    Overdue {
        rule: String,
        due_on: Day,
        alerts: Vec<String>,
    },
}

fn date_field(data: &EventData, field: DateField) -> Option<Day> {
    match (data, field) {
        (EventData::NeetOnset(n), DateField::NeetStartDate) => Some(n.neet_start_date),
        (EventData::PathwayPlanReviewed(p), DateField::NextReviewDue) => Some(p.next_review_due),
        (EventData::ConsentGranted(g), DateField::ReviewDue) => Some(g.review_due),
        _ => None,
    }
}

/// The date an event says it happened on, for "meets" comparisons.
fn event_date(h: &Happened) -> Day {
    match &h.data {
        EventData::MeetingHeld(m) => m.date,
        EventData::WorkerAllocated(w) => w.from_date,
        EventData::PathwayPlanReviewed(p) => p.review_date,
        EventData::CareLeaverOutcomeRecorded(o) => o.recorded_on,
        EventData::ConsentGranted(g) => g.granted_on,
        EventData::ConsentWithdrawn(w) => w.withdrawn_on,
        EventData::NeetOnset(n) => n.neet_start_date,
        _ => h.occurred_on,
    }
}

fn alerts_for(
    rule: &Rule,
    history: &[Happened],
    trigger: &Happened,
    owner: Option<&str>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |a: &str| {
        if a != "exchange" && !out.iter().any(|x| x == a) {
            out.push(a.to_owned());
        }
    };
    for alert in rule.alerts {
        match alert {
            Alert::Owner => {
                if let Some(o) = owner {
                    add(o);
                }
            }
            Alert::Source => add(&trigger.source),
            Alert::Worker(role) => {
                let latest = history
                    .iter()
                    .rev()
                    .find(|h| matches!(&h.data, EventData::WorkerAllocated(w) if w.role == *role));
                if let Some(h) = latest {
                    add(&h.source);
                }
            }
        }
    }
    out
}

/// Whether and when the deadline started by `trigger` (on `start`) was met.
fn met_by(
    rule: &Rule,
    history: &[Happened],
    trigger: &Happened,
    start: Day,
    age: Option<i32>,
) -> Option<(Uuid, Day)> {
    history
        .iter()
        .filter(|h| h.seq > trigger.seq || matches!(rule.meets, Meets::Worker(_) | Meets::Outcome))
        .find(|h| match (&h.data, rule.meets) {
            (EventData::MeetingHeld(m), Meets::Meeting(kind)) => m.kind == kind && m.date >= start,
            (EventData::WorkerAllocated(w), Meets::Worker(role)) => w.role == role,
            (_, Meets::Later(types)) => h.seq > trigger.seq && types.contains(&h.event_type),
            (EventData::CareLeaverOutcomeRecorded(o), Meets::Outcome) => {
                age.is_some_and(|a| i32::from(o.birthday_age) == a)
            }
            _ => false,
        })
        .map(|h| (h.id, event_date(h)))
}

/// Every deadline the history implies, set or not yet started.
pub fn instances(history: &[Happened]) -> Vec<Instance> {
    let (dob, owner) = identity(history);
    let care = episodes(history);
    let mut out = Vec::new();
    for rule in RULES {
        let mut push = |trigger: &Happened, starts_on: Day, due_on: Day, suffix: Option<i32>| {
            if let (Some(limit), Some(dob)) = (rule.until_age, dob) {
                if dob.age_on(due_on) >= limit {
                    return;
                }
            }
            out.push(Instance {
                rule: match suffix {
                    Some(age) => format!("{}.{age}", rule.id),
                    None => rule.id.to_owned(),
                },
                trigger: trigger.id,
                starts_on,
                due_on,
                met: met_by(rule, history, trigger, starts_on, suffix),
                alerts: alerts_for(rule, history, trigger, owner),
            });
        };
        match rule.start {
            Start::Each(ty) => {
                for h in history.iter().filter(|h| h.event_type == ty) {
                    let due = match rule.due {
                        Due::WorkingDaysAfter { field, days } => {
                            date_field(&h.data, field).map(|d| add_working_days(d, days))
                        }
                        Due::On(field) => date_field(&h.data, field),
                        _ => None,
                    };
                    if let Some(due) = due {
                        push(h, event_date(h).min(due), due, None);
                    }
                }
            }
            Start::InCareAt { years, months } => {
                let Some(dob) = dob else { continue };
                let at = add_months(birthday(dob, years), months);
                let adult = birthday(dob, 18);
                // The clock starts at that age if in care then, or when a later episode starts.
                let start = if looked_after_on(&care, at) {
                    Some(at)
                } else {
                    care.iter().map(|e| e.start).find(|s| *s > at && *s < adult)
                };
                let Some(start) = start else { continue };
                // The episode that covers the start is the trigger.
                let trigger = history.iter().rev().find(|h| {
                    matches!(&h.data, EventData::LookedAfterStarted(s) if s.start_date <= start)
                });
                let Some(trigger) = trigger else { continue };
                let Due::MonthsAfterStart(m) = rule.due else {
                    continue;
                };
                push(trigger, start, add_months(start, m), None);
            }
            Start::CareLeaverBirthdays => {
                let Some(dob) = dob else { continue };
                let mut left = history.iter().filter(|h| {
                    matches!(&h.data, EventData::LookedAfterCeased(c) if dob.age_on(c.date) >= 16)
                });
                let Some(trigger) = left.next_back() else {
                    continue;
                };
                let EventData::LookedAfterCeased(c) = &trigger.data else {
                    continue;
                };
                let Due::MonthsAfterBirthday(m) = rule.due else {
                    continue;
                };
                for age in 17..=21 {
                    let day = birthday(dob, age);
                    if day > c.date {
                        push(
                            trigger,
                            days(day, -30).max(c.date),
                            add_months(day, m),
                            Some(age),
                        );
                    }
                }
            }
        }
    }
    out
}

/// What to append on `today` so the log holds every deadline that has started, every one
/// met, and every one overdue.
pub fn evaluate(history: &[Happened], today: Day) -> Vec<Action> {
    let mut set = BTreeSet::new();
    let mut met = BTreeSet::new();
    let mut overdue = BTreeSet::new();
    for h in history {
        match &h.data {
            EventData::DeadlineSet(s) => {
                set.insert((s.rule.clone(), s.trigger_event));
            }
            EventData::DeadlineMet(m) => {
                met.insert((m.rule.clone(), m.due_on));
            }
            EventData::DeadlineOverdue(o) => {
                overdue.insert((o.rule.clone(), o.due_on));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for i in instances(history) {
        if i.starts_on > today {
            continue;
        }
        if set.insert((i.rule.clone(), i.trigger)) {
            out.push(Action::Set {
                rule: i.rule.clone(),
                due_on: i.due_on,
                trigger: i.trigger,
                alerts: i.alerts.clone(),
            });
        }
        let key = (i.rule.clone(), i.due_on);
        let in_time = i.met.is_some_and(|(_, on)| on <= i.due_on);
        if let Some((by, on)) = i.met {
            if on <= today && met.insert(key.clone()) {
                out.push(Action::Met {
                    rule: i.rule.clone(),
                    due_on: i.due_on,
                    met_by: by,
                    met_on: on,
                });
            }
        }
        if !in_time && i.due_on < today && overdue.insert(key) {
            out.push(Action::Overdue {
                rule: i.rule,
                due_on: i.due_on,
                alerts: i.alerts,
            });
        }
    }
    out
}

/// The earliest day after `today` on which [`evaluate`] could return something new for this
/// history without any new event: a deadline starting, or one falling overdue. `None` when
/// nothing is pending.
pub fn next_check(history: &[Happened], today: Day) -> Option<Day> {
    instances(history)
        .iter()
        .filter_map(|i| {
            let in_time = i.met.is_some_and(|(_, on)| on <= i.due_on);
            let starts = (i.starts_on > today).then_some(i.starts_on);
            let falls_due = (!in_time && i.due_on >= today).then(|| days(i.due_on, 1));
            starts.into_iter().chain(falls_due).min()
        })
        .min()
}
