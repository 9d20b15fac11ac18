//! The legal category of a young person who is or was looked after, as the Children (Leaving
//! Care) Act 2000 and its regulations define it, derived from their care episodes and age:
//!
//! - **eligible**: 16 or 17, still looked after, and looked after for at least 13 weeks (91
//!   days, in total) since the age of 14, a period ending at or after 16;
//! - **relevant**: 16 or 17, met that test, and no longer looked after;
//! - **former relevant**: 18 to 20 (to 24 while in education or training) and was eligible
//!   or relevant;
//! - **qualifying**: 16 to 20 (to 24 in education), looked after at or after 16 without
//!   meeting the 13-week test;
//! - **looked after**: looked after and none of the above (under 16, or under 13 weeks).
//!
//! Short breaks and detention are not modelled: the episodes are what the log holds.

use crate::calendar::{birthday, days};
use crate::date::Day;
use crate::events::EventData;
use crate::history::Happened;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CareStatus {
    LookedAfter,
    Eligible,
    Relevant,
    FormerRelevant,
    Qualifying,
}

impl CareStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CareStatus::LookedAfter => "looked-after",
            CareStatus::Eligible => "eligible",
            CareStatus::Relevant => "relevant",
            CareStatus::FormerRelevant => "former-relevant",
            CareStatus::Qualifying => "qualifying",
        }
    }

    /// Care leavers in the statutory sense (entitled to leaving care support).
    pub fn is_care_leaver(self) -> bool {
        matches!(
            self,
            CareStatus::Relevant | CareStatus::FormerRelevant | CareStatus::Qualifying
        )
    }
}

/// One period of being looked after: from its start to the day it ceased (open if still).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    pub start: Day,
    pub end: Option<Day>,
}

/// The episodes in a history: a start opens one (closing any still open at that date), a
/// cessation closes the open one.
pub fn episodes(history: &[Happened]) -> Vec<Episode> {
    episodes_of(history.iter().map(|h| &h.data))
}

/// [`episodes`], from any sequence of event data in log order.
pub fn episodes_of<'a>(data: impl Iterator<Item = &'a EventData>) -> Vec<Episode> {
    let mut out: Vec<Episode> = Vec::new();
    for d in data {
        match d {
            EventData::LookedAfterStarted(s) => {
                if let Some(open) = out.last_mut().filter(|e| e.end.is_none()) {
                    open.end = Some(s.start_date);
                }
                out.push(Episode {
                    start: s.start_date,
                    end: None,
                });
            }
            EventData::LookedAfterCeased(c) => {
                if let Some(open) = out.last_mut().filter(|e| e.end.is_none()) {
                    open.end = Some(c.date);
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether an NCCIS activity code is education or training (care leaver support extends to
/// 25 for those in it).
pub fn is_education_or_training(activity_code: &str) -> bool {
    matches!(
        crate::codes::nccis_activity().column(activity_code, "group"),
        Some("education" | "training")
    )
}

/// Days looked after within `[from, to]` (a cessation day does not count as a care day).
fn days_between(episodes: &[Episode], from: Day, to: Day) -> i64 {
    episodes
        .iter()
        .map(|e| {
            let start = e.start.max(from);
            let end = e.end.map_or(days(to, 1), |x| x.min(days(to, 1)));
            (end.0 - start.0).whole_days().max(0)
        })
        .sum()
}

pub fn looked_after_on(episodes: &[Episode], day: Day) -> bool {
    episodes
        .iter()
        .any(|e| e.start <= day && e.end.is_none_or(|end| day < end))
}

/// The status on `on`, or `None` for someone never looked after or past every category.
pub fn status(dob: Day, episodes: &[Episode], on: Day, in_education: bool) -> Option<CareStatus> {
    if episodes.is_empty() {
        return None;
    }
    let age = dob.age_on(on);
    let at_16 = birthday(dob, 16);
    let since_14 = days_between(episodes, birthday(dob, 14), on);
    let after_16 = days_between(episodes, at_16, on) > 0;
    let thirteen_weeks = since_14 >= 91 && after_16;
    let upper = if in_education { 24 } else { 20 };
    if looked_after_on(episodes, on) {
        return Some(if (16..=17).contains(&age) && thirteen_weeks {
            CareStatus::Eligible
        } else {
            CareStatus::LookedAfter
        });
    }
    match age {
        16 | 17 if thirteen_weeks => Some(CareStatus::Relevant),
        18.. if thirteen_weeks && age <= upper => Some(CareStatus::FormerRelevant),
        16.. if after_16 && age <= upper => Some(CareStatus::Qualifying),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    fn ep(start: &str, end: Option<&str>) -> Episode {
        Episode {
            start: d(start),
            end: end.map(d),
        }
    }

    #[test]
    fn the_thirteen_week_test_decides_eligible_relevant_and_former_relevant() {
        let dob = d("2009-06-01");
        let long = [ep("2022-01-01", None)];
        assert_eq!(
            status(dob, &long, d("2025-05-31"), false),
            Some(CareStatus::LookedAfter)
        );
        assert_eq!(
            status(dob, &long, d("2025-06-01"), false),
            Some(CareStatus::Eligible)
        );
        let left = [ep("2022-01-01", Some("2026-01-01"))];
        assert_eq!(
            status(dob, &left, d("2026-02-01"), false),
            Some(CareStatus::Relevant)
        );
        assert_eq!(
            status(dob, &left, d("2027-06-01"), false),
            Some(CareStatus::FormerRelevant)
        );
        assert_eq!(
            status(dob, &left, d("2030-06-01"), false),
            None,
            "21, not in education"
        );
        assert_eq!(
            status(dob, &left, d("2030-06-01"), true),
            Some(CareStatus::FormerRelevant),
            "to 25 in education"
        );
    }

    #[test]
    fn under_thirteen_weeks_after_sixteen_is_qualifying() {
        let dob = d("2009-06-01");
        // 60 days in care, all after 16
        let short = [ep("2025-07-01", Some("2025-08-30"))];
        assert_eq!(
            status(dob, &short, d("2025-08-01"), false),
            Some(CareStatus::LookedAfter)
        );
        assert_eq!(
            status(dob, &short, d("2025-09-01"), false),
            Some(CareStatus::Qualifying)
        );
        // In care only before 16: not a care leaver
        let young = [ep("2020-01-01", Some("2024-01-01"))];
        assert_eq!(status(dob, &young, d("2026-01-01"), false), None);
    }
}
