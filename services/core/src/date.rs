//! Calendar dates as the data standard writes them (`YYYY-MM-DD`), and ages.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A calendar date. Parsing rejects impossible dates (30 February), which a pattern cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub time::Date);

impl Day {
    pub fn parse(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let month = time::Month::try_from(digits(5..7)? as u8).ok()?;
        time::Date::from_calendar_date(digits(0..4)? as i32, month, digits(8..10)? as u8)
            .ok()
            .map(Day)
    }

    /// Completed years of age on `on`.
    pub fn age_on(self, on: Day) -> i32 {
        let (b, d) = (self.0, on.0);
        let mut age = d.year() - b.year();
        if (d.month() as u8, d.day()) < (b.month() as u8, b.day()) {
            age -= 1;
        }
        age
    }

    /// The date part of an RFC 3339 instant, in the offset it was written in: its first ten
    /// characters. Instants reaching here were validated as RFC 3339 at ingest.
    pub fn of_instant(s: &str) -> Option<Day> {
        if s.len() < 11 || !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
            return None;
        }
        Day::parse(&s[..10])
    }
}

impl fmt::Display for Day {
    /// Digits placed by hand for the years a file can write (0000–9999): imports format
    /// several dates a row, and the padded formatting machinery showed in their profiles.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.0.to_calendar_date();
        let Ok(y @ 0..=9999) = u16::try_from(year) else {
            return write!(f, "{year:04}-{:02}-{day:02}", month as u8);
        };
        let (m, digit) = (month as u8, |n: u16| b'0' + (n % 10) as u8);
        let text = [
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            b'0' + m / 10,
            b'0' + m % 10,
            b'-',
            b'0' + day / 10,
            b'0' + day % 10,
        ];
        f.write_str(std::str::from_utf8(&text).expect("ASCII digits"))
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Day::parse(&s).ok_or_else(|| serde::de::Error::custom("not a real date (YYYY-MM-DD)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_dates_are_refused() {
        assert!(Day::parse("2025-02-29").is_none());
        assert!(Day::parse("2024-02-29").is_some());
        assert!(Day::parse("2024-2-9").is_none());
        for bad in [
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-0a-01",
            "2024/01/01",
            "+024-01-01",
        ] {
            assert!(Day::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Day::parse("2024-12-31").unwrap().to_string(), "2024-12-31");
    }

    #[test]
    fn every_day_is_written_as_the_standard_writes_it() {
        let mut next = time::Date::from_calendar_date(0, time::Month::January, 1).ok();
        while let Some(d) = next.filter(|d| d.year() <= 9999) {
            let (y, m, day) = d.to_calendar_date();
            let written = Day(d).to_string();
            assert_eq!(written, format!("{y:04}-{:02}-{day:02}", m as u8));
            assert_eq!(Day::parse(&written), Some(Day(d)));
            // Every third day: every day of every month, and every year's digits.
            next = d.checked_add(time::Duration::days(3));
        }
        let before = time::Date::from_calendar_date(-1, time::Month::March, 9).unwrap();
        assert_eq!(
            Day(before).to_string(),
            "-001-03-09",
            "outside 0000–9999 as before"
        );
    }

    #[test]
    fn age_counts_completed_years() {
        let dob = Day::parse("2008-06-15").unwrap();
        assert_eq!(dob.age_on(Day::parse("2022-06-14").unwrap()), 13);
        assert_eq!(dob.age_on(Day::parse("2022-06-15").unwrap()), 14);
    }

    #[test]
    fn instant_date_is_taken_in_its_own_offset() {
        assert_eq!(
            Day::of_instant("2026-01-01T00:30:00+01:00")
                .unwrap()
                .to_string(),
            "2026-01-01"
        );
        assert!(Day::of_instant("yesterday").is_none());
    }
}
