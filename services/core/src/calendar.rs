//! Dates the statutory clocks are counted in: working days (weekends and England and Wales
//! bank holidays skipped, from `reference/bank-holidays-england-wales.csv`), months, and
//! birthdays.

use crate::codes;
use crate::date::Day;
use std::collections::BTreeSet;
use std::sync::OnceLock;
use time::{Duration, Month, Weekday};

fn bank_holidays() -> &'static BTreeSet<Day> {
    static DAYS: OnceLock<BTreeSet<Day>> = OnceLock::new();
    DAYS.get_or_init(|| {
        codes::bank_holidays()
            .codes()
            .filter_map(Day::parse)
            .collect()
    })
}

/// The span the bank holiday list covers. Outside it only weekends are skipped, so a rule
/// counted there may fall on a holiday; the list is the one thing to extend each year.
pub fn bank_holidays_known() -> (Day, Day) {
    let days = bank_holidays();
    (
        *days.first().expect("the list has dates"),
        *days.last().expect("the list has dates"),
    )
}

pub fn is_working_day(day: Day) -> bool {
    !matches!(day.0.weekday(), Weekday::Saturday | Weekday::Sunday)
        && !bank_holidays().contains(&day)
}

/// The `n`th working day after `day` (`day` itself does not count): "within 5 working days
/// of the NEET start date" is due on `add_working_days(start, 5)`.
pub fn add_working_days(day: Day, n: u32) -> Day {
    let mut d = day;
    let mut left = n;
    while left > 0 {
        d = Day(d.0 + Duration::days(1));
        if is_working_day(d) {
            left -= 1;
        }
    }
    d
}

/// The same day of the month `months` later, or the month's last day when it is shorter
/// (31 August plus 6 months is 28 or 29 February).
pub fn add_months(day: Day, months: i32) -> Day {
    let d = day.0;
    let total = d.year() * 12 + (d.month() as i32 - 1) + months;
    let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
    let month = Month::try_from(month0 as u8 + 1).expect("a month");
    let last = time::util::days_in_month(month, year);
    Day(time::Date::from_calendar_date(year, month, d.day().min(last)).expect("a valid date"))
}

/// The day a person born on `dob` reaches `age`. Someone born on 29 February reaches an age
/// on 1 March in years without one (the anniversary's "commencement" in English law).
pub fn birthday(dob: Day, age: i32) -> Day {
    let d = dob.0;
    let year = d.year() + age;
    match time::Date::from_calendar_date(year, d.month(), d.day()) {
        Ok(day) => Day(day),
        Err(_) => Day(time::Date::from_calendar_date(year, Month::March, 1).expect("1 March")),
    }
}

pub fn days(day: Day, n: i64) -> Day {
    Day(day.0 + Duration::days(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn working_days_skip_weekends_and_bank_holidays() {
        // Friday 19 December 2025 + 5 working days: 22, 23, 24, (25, 26 holidays), 29, 30.
        assert_eq!(add_working_days(d("2025-12-19"), 5), d("2025-12-30"));
        // A Monday: the following Monday.
        assert_eq!(add_working_days(d("2026-11-02"), 5), d("2026-11-09"));
        // Easter 2026: Good Friday 3 April, Easter Monday 6 April.
        assert_eq!(add_working_days(d("2026-04-02"), 1), d("2026-04-07"));
        assert!(!is_working_day(d("2026-12-25")));
        assert!(is_working_day(d("2026-12-29")));
    }

    #[test]
    fn months_clamp_and_birthdays_of_leap_days_fall_on_the_first_of_march() {
        assert_eq!(add_months(d("2026-08-31"), 6), d("2027-02-28"));
        assert_eq!(add_months(d("2027-08-31"), 6), d("2028-02-29"));
        assert_eq!(add_months(d("2026-11-15"), -11), d("2025-12-15"));
        assert_eq!(birthday(d("2008-02-29"), 18), d("2026-03-01"));
        assert_eq!(birthday(d("2008-02-29"), 16), d("2024-02-29"));
        assert_eq!(birthday(d("2010-06-15"), 16), d("2026-06-15"));
    }
}
