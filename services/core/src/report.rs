//! The quarterly review a local authority runs of its young people: everyone reaching 19 in
//! the quarter (in education, employment or training? in touch? suitably housed? plan in
//! date?), the NEET list with the status of each multi-agency meeting, cohort counts by age
//! band and care status (counts only, no individuals), the DfE-style outcome rates at 17, 18
//! and 19 to 21, and the NI 147 and NI 148 figures at 19. Pure: the gateway hands it the
//! histories of the people the authority registered.

use crate::calendar::{add_months, birthday, days};
use crate::care_status::{self, CareStatus};
use crate::codes;
use crate::date::Day;
use crate::events::EventData;
use crate::history::{identity, Happened};
use crate::timeline;
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A calendar quarter, `2026-Q4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarter {
    pub year: i32,
    pub q: u8,
}

impl Quarter {
    pub fn parse(s: &str) -> Option<Quarter> {
        let (year, q) = s.split_once("-Q")?;
        let year: i32 = year.parse().ok().filter(|y| (1900..=9999).contains(y))?;
        let q: u8 = q.parse().ok().filter(|q| (1..=4).contains(q))?;
        Some(Quarter { year, q })
    }

    pub fn containing(day: Day) -> Quarter {
        Quarter {
            year: day.0.year(),
            q: (day.0.month() as u8 - 1) / 3 + 1,
        }
    }

    pub fn first_day(self) -> Day {
        Day::parse(&format!("{:04}-{:02}-01", self.year, (self.q - 1) * 3 + 1)).expect("a date")
    }

    pub fn last_day(self) -> Day {
        days(add_months(self.first_day(), 3), -1)
    }
}

impl std::fmt::Display for Quarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-Q{}", self.year, self.q)
    }
}

/// One person's history, as the report reads it.
pub struct Person<'a> {
    pub id: Uuid,
    pub history: &'a [Happened],
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanStatus {
    pub status: &'static str,
    pub last_review: Option<Day>,
    pub next_review_due: Option<Day>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TurningNineteen {
    pub young_person: Uuid,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub turns_19_on: Day,
    pub care_status: Option<CareStatus>,
    /// `eet`, `neet`, `not-known` or `other`, from the latest destination or NEET onset.
    pub eet_status: &'static str,
    pub activity_code: Option<String>,
    pub in_touch: Option<String>,
    pub accommodation: Option<String>,
    pub accommodation_suitable: Option<bool>,
    pub plan: PlanStatus,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NeetLine {
    pub young_person: Uuid,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub neet_start_date: Day,
    pub activity_code: String,
    pub meeting_due_on: Day,
    /// `met`, `met-late`, `overdue` or `pending`.
    pub meeting: &'static str,
    pub meeting_held_on: Option<Day>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Rates {
    /// Care leavers with an outcome recorded for a birthday in the year to the quarter's end.
    pub cohort: usize,
    pub in_touch: usize,
    pub eet: usize,
    pub suitable_accommodation: usize,
    pub in_touch_rate: Option<f64>,
    pub eet_rate: Option<f64>,
    pub suitable_accommodation_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Indicator {
    pub cohort: usize,
    pub count: usize,
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuarterlyReview {
    pub local_authority: String,
    pub quarter: String,
    pub from: Day,
    pub to: Day,
    pub as_of: Day,
    pub turning_19: Vec<TurningNineteen>,
    pub neet: Vec<NeetLine>,
    /// Age band → care status → count, as of the quarter's end (or today). Counts only.
    pub cohort: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    /// The same counts at the previous quarter's end, for the trend.
    pub cohort_previous_quarter: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    /// `17`, `18`, `19-21` → rates.
    pub rates: BTreeMap<&'static str, Rates>,
    /// NI 147: care leavers at 19 in suitable accommodation.
    pub ni_147: Indicator,
    /// NI 148: care leavers at 19 in education, employment or training.
    pub ni_148: Indicator,
}

fn pct(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| (1000.0 * n as f64 / d as f64).round() / 10.0)
}

fn age_band(age: i32) -> &'static str {
    match age {
        ..=15 => "under-16",
        16 | 17 => "16-17",
        18 => "18",
        19..=21 => "19-21",
        _ => "22-25",
    }
}

struct Latest<'a> {
    names: (Option<String>, Option<String>),
    activity: Option<(String, &'static str, bool)>,
    outcome: Option<&'a crate::events::CareLeaverOutcomeRecorded>,
    plan: Option<&'a crate::events::PathwayPlanReviewed>,
    neet: Option<&'a crate::events::NeetOnset>,
}

fn latest(history: &[Happened]) -> Latest<'_> {
    let mut l = Latest {
        names: (None, None),
        activity: None,
        outcome: None,
        plan: None,
        neet: None,
    };
    for h in history {
        match &h.data {
            EventData::YoungPersonRegistered(r) => {
                l.names = (r.given_name.clone(), r.family_name.clone());
            }
            EventData::YoungPersonDetailsCorrected(c) => {
                if c.given_name.is_some() {
                    l.names.0 = c.given_name.clone();
                }
                if c.family_name.is_some() {
                    l.names.1 = c.family_name.clone();
                }
            }
            EventData::DestinationRecorded(d) => {
                let status = match codes::nccis_activity().column(&d.activity_code, "status") {
                    Some("eet") => "eet",
                    Some("neet") => "neet",
                    Some("not-known") => "not-known",
                    _ => "other",
                };
                l.activity = Some((d.activity_code.clone(), status, false));
                if status != "neet" {
                    l.neet = None;
                }
            }
            EventData::NeetOnset(n) => {
                l.activity = Some((n.activity_code.clone(), "neet", true));
                l.neet = Some(n);
            }
            EventData::CareLeaverOutcomeRecorded(o) => l.outcome = Some(o),
            EventData::PathwayPlanReviewed(p) => l.plan = Some(p),
            _ => {}
        }
    }
    l
}

fn suitable(accommodation: &str) -> bool {
    accommodation.ends_with('1')
}

fn oc3_eet(activity: Option<&str>) -> bool {
    activity.is_some_and(|a| codes::oc3_activity().column(a, "status") == Some("eet"))
}

/// Builds the review. `as_of` is the day it is run: statuses are as of the earlier of it and
/// the quarter's last day.
pub fn quarterly(
    local_authority: &str,
    quarter: Quarter,
    as_of: Day,
    people: &[Person],
) -> QuarterlyReview {
    let (from, to) = (quarter.first_day(), quarter.last_day());
    let on = as_of.min(to);
    let year_start = days(add_months(to, -12), 1);
    let mut review = QuarterlyReview {
        local_authority: local_authority.to_owned(),
        quarter: quarter.to_string(),
        from,
        to,
        as_of,
        turning_19: Vec::new(),
        neet: Vec::new(),
        cohort: BTreeMap::new(),
        cohort_previous_quarter: BTreeMap::new(),
        rates: BTreeMap::new(),
        ni_147: Indicator {
            cohort: 0,
            count: 0,
            rate: None,
        },
        ni_148: Indicator {
            cohort: 0,
            count: 0,
            rate: None,
        },
    };
    for band in ["17", "18", "19-21"] {
        review.rates.insert(band, Rates::default());
    }
    for person in people {
        let (Some(dob), _) = identity(person.history) else {
            continue;
        };
        let l = latest(person.history);
        let episodes = care_status::episodes(person.history);
        let in_education = l
            .activity
            .as_ref()
            .is_some_and(|(code, _, _)| care_status::is_education_or_training(code));
        let status = care_status::status(dob, &episodes, on, in_education);

        if let Some(s) = status {
            *review
                .cohort
                .entry(age_band(dob.age_on(on)))
                .or_default()
                .entry(s.as_str())
                .or_default() += 1;
        }
        let before = days(from, -1);
        if let Some(s) = care_status::status(dob, &episodes, before, in_education) {
            *review
                .cohort_previous_quarter
                .entry(age_band(dob.age_on(before)))
                .or_default()
                .entry(s.as_str())
                .or_default() += 1;
        }

        let at_19 = birthday(dob, 19);
        if (from..=to).contains(&at_19) {
            let plan = match l.plan {
                Some(p) => PlanStatus {
                    status: if p.next_review_due >= on {
                        "in-date"
                    } else {
                        "overdue"
                    },
                    last_review: Some(p.review_date),
                    next_review_due: Some(p.next_review_due),
                },
                None => PlanStatus {
                    status: "none",
                    last_review: None,
                    next_review_due: None,
                },
            };
            review.turning_19.push(TurningNineteen {
                young_person: person.id,
                given_name: l.names.0.clone(),
                family_name: l.names.1.clone(),
                turns_19_on: at_19,
                care_status: status,
                eet_status: l.activity.as_ref().map_or("not-known", |(_, s, _)| *s),
                activity_code: l.activity.as_ref().map(|(c, _, _)| c.clone()),
                in_touch: l.outcome.map(|o| o.in_touch.clone()),
                accommodation: l.outcome.and_then(|o| o.accommodation.clone()),
                accommodation_suitable: l
                    .outcome
                    .and_then(|o| o.accommodation.as_deref().map(suitable)),
                plan,
            });
        }

        if let Some(n) = l.neet {
            let instance = timeline::instances(person.history)
                .into_iter()
                .filter(|i| i.rule == "neet-meeting")
                .find(|i| i.due_on >= n.neet_start_date);
            if let Some(i) = instance {
                let meeting = match i.met {
                    Some((_, held)) if held <= i.due_on => "met",
                    Some(_) => "met-late",
                    None if i.due_on < on => "overdue",
                    None => "pending",
                };
                review.neet.push(NeetLine {
                    young_person: person.id,
                    given_name: l.names.0.clone(),
                    family_name: l.names.1.clone(),
                    neet_start_date: n.neet_start_date,
                    activity_code: n.activity_code.clone(),
                    meeting_due_on: i.due_on,
                    meeting,
                    meeting_held_on: i.met.map(|(_, d)| d),
                });
            }
        }

        // Outcome rates: the latest outcome for each birthday in the year to the quarter's end.
        let mut by_age: BTreeMap<u8, &crate::events::CareLeaverOutcomeRecorded> = BTreeMap::new();
        for h in person.history {
            if let EventData::CareLeaverOutcomeRecorded(o) = &h.data {
                let day = birthday(dob, i32::from(o.birthday_age));
                if (year_start..=to).contains(&day) {
                    by_age.insert(o.birthday_age, o);
                }
            }
        }
        for (age, o) in by_age {
            let band = match age {
                17 => "17",
                18 => "18",
                _ => "19-21",
            };
            let in_touch = o.in_touch == "YES";
            let eet = oc3_eet(o.activity.as_deref());
            let suitable_now = o.accommodation.as_deref().is_some_and(suitable);
            let r = review.rates.get_mut(band).expect("bands are preset");
            r.cohort += 1;
            r.in_touch += usize::from(in_touch);
            r.eet += usize::from(eet);
            r.suitable_accommodation += usize::from(suitable_now);
            if age == 19 {
                review.ni_147.cohort += 1;
                review.ni_147.count += usize::from(suitable_now);
                review.ni_148.cohort += 1;
                review.ni_148.count += usize::from(eet);
            }
        }
    }
    for r in review.rates.values_mut() {
        r.in_touch_rate = pct(r.in_touch, r.cohort);
        r.eet_rate = pct(r.eet, r.cohort);
        r.suitable_accommodation_rate = pct(r.suitable_accommodation, r.cohort);
    }
    review.ni_147.rate = pct(review.ni_147.count, review.ni_147.cohort);
    review.ni_148.rate = pct(review.ni_148.count, review.ni_148.cohort);
    review
        .turning_19
        .sort_by_key(|t| (t.turns_19_on, t.young_person));
    review
        .neet
        .sort_by_key(|n| (n.neet_start_date, n.young_person));
    review
}

/// One section of the review as CSV (`turning-19`, `neet`, `cohort` or `rates`).
pub fn csv(review: &QuarterlyReview, section: &str) -> Option<String> {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    }
    fn opt<T: ToString>(v: &Option<T>) -> String {
        v.as_ref().map(ToString::to_string).unwrap_or_default()
    }
    let mut out = String::new();
    let mut row = |cells: Vec<String>| {
        out.push_str(&cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    };
    match section {
        "turning-19" => {
            row([
                "young_person",
                "given_name",
                "family_name",
                "turns_19_on",
                "care_status",
                "eet_status",
                "activity_code",
                "in_touch",
                "accommodation",
                "accommodation_suitable",
                "plan_status",
                "plan_next_review_due",
            ]
            .map(String::from)
            .to_vec());
            for t in &review.turning_19 {
                row(vec![
                    t.young_person.to_string(),
                    opt(&t.given_name),
                    opt(&t.family_name),
                    t.turns_19_on.to_string(),
                    t.care_status
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    t.eet_status.to_owned(),
                    opt(&t.activity_code),
                    opt(&t.in_touch),
                    opt(&t.accommodation),
                    opt(&t.accommodation_suitable),
                    t.plan.status.to_owned(),
                    opt(&t.plan.next_review_due),
                ]);
            }
        }
        "neet" => {
            row([
                "young_person",
                "given_name",
                "family_name",
                "neet_start_date",
                "activity_code",
                "meeting_due_on",
                "meeting",
                "meeting_held_on",
            ]
            .map(String::from)
            .to_vec());
            for n in &review.neet {
                row(vec![
                    n.young_person.to_string(),
                    opt(&n.given_name),
                    opt(&n.family_name),
                    n.neet_start_date.to_string(),
                    n.activity_code.clone(),
                    n.meeting_due_on.to_string(),
                    n.meeting.to_owned(),
                    opt(&n.meeting_held_on),
                ]);
            }
        }
        "cohort" => {
            row(["age_band", "care_status", "count", "previous_quarter"]
                .map(String::from)
                .to_vec());
            let mut keys: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
            for (band, statuses) in &review.cohort {
                for (status, count) in statuses {
                    keys.entry((band, status)).or_default().0 = *count;
                }
            }
            for (band, statuses) in &review.cohort_previous_quarter {
                for (status, count) in statuses {
                    keys.entry((band, status)).or_default().1 = *count;
                }
            }
            for ((band, status), (now, then)) in keys {
                row(vec![
                    band.to_owned(),
                    status.to_owned(),
                    now.to_string(),
                    then.to_string(),
                ]);
            }
        }
        "rates" => {
            row(["measure", "cohort", "count", "rate_percent"]
                .map(String::from)
                .to_vec());
            for (band, r) in &review.rates {
                for (what, n, rate) in [
                    ("in_touch", r.in_touch, r.in_touch_rate),
                    ("eet", r.eet, r.eet_rate),
                    (
                        "suitable_accommodation",
                        r.suitable_accommodation,
                        r.suitable_accommodation_rate,
                    ),
                ] {
                    row(vec![
                        format!("{what}_at_{band}"),
                        r.cohort.to_string(),
                        n.to_string(),
                        opt(&rate),
                    ]);
                }
            }
            for (name, i) in [("ni_147", &review.ni_147), ("ni_148", &review.ni_148)] {
                row(vec![
                    name.to_owned(),
                    i.cohort.to_string(),
                    i.count.to_string(),
                    opt(&i.rate),
                ]);
            }
        }
        _ => return None,
    }
    Some(out)
}
