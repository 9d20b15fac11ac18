//! Agencies' own files, read into rows the exchange can act on: tolerant of how the file is
//! written (see [`crate::table`]), strict about every value. Each problem names the line, the
//! column and the value, so the person who keeps the file can fix it there.
//!
//! Today: the careers service's quarterly destinations in NCCIS layout.

use crate::codes;
use crate::date::Day;
use crate::table::{Record, Table};
use serde::Serialize;

/// One problem with a file or a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Which file, when an import has several (`header`, `episodes`, `oc3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub message: String,
}

/// One valid NCCIS destinations row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRow {
    pub line: usize,
    pub nccis_id: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Day,
    pub sex: String,
    pub uln: Option<String>,
    pub upn: Option<String>,
    pub lea_code: Option<String>,
    pub activity_code: String,
    pub start_date: Day,
    pub date_ascertained: Day,
    pub due_to_lapse_date: Option<Day>,
    pub establishment_number: Option<String>,
    pub establishment_name: Option<String>,
    pub ukprn: Option<String>,
    pub neet_start_date: Option<Day>,
}

/// The columns a destinations file must have; the rest of the NCCIS layout is optional.
pub const REQUIRED: [&str; 5] = [
    "YoungPersonsID",
    "DOB",
    "ActivityCode",
    "StartDate",
    "DateAscertained",
];

fn all(s: &str, n: std::ops::RangeInclusive<usize>, ok: impl Fn(u8) -> bool) -> bool {
    n.contains(&s.len()) && s.bytes().all(ok)
}

struct Row<'a> {
    table: &'a Table,
    record: &'a Record,
    errors: Vec<RowError>,
}

impl Row<'_> {
    fn cell(&self, column: &str) -> &str {
        self.record.get(self.table.column(column))
    }

    fn fail(&mut self, column: &str, message: &str) {
        let value = self.cell(column).to_owned();
        self.errors.push(RowError {
            file: None,
            line: self.record.line,
            column: Some(column.to_owned()),
            value: (!value.is_empty()).then_some(value),
            message: message.to_owned(),
        });
    }

    fn text(&mut self, column: &str, required: bool) -> Option<String> {
        let v = self.cell(column);
        if v.is_empty() {
            if required {
                self.fail(column, "is required");
            }
            return None;
        }
        Some(v.to_owned())
    }

    fn date(&mut self, column: &str, required: bool) -> Option<Day> {
        let v = self.text(column, required)?;
        let d = Day::parse(&v);
        if d.is_none() {
            self.fail(column, "is not a real date in the form YYYY-MM-DD");
        }
        d
    }

    fn matching(
        &mut self,
        column: &str,
        ok: impl Fn(&str) -> bool,
        message: &str,
    ) -> Option<String> {
        let v = self.text(column, false)?;
        if ok(&v) {
            Some(v)
        } else {
            self.fail(column, message);
            None
        }
    }
}

fn destination(table: &Table, record: &Record) -> Result<DestinationRow, Vec<RowError>> {
    let mut r = Row {
        table,
        record,
        errors: Vec::new(),
    };
    let nccis_id = r.text("YoungPersonsID", true);
    if nccis_id
        .as_deref()
        .is_some_and(|v| !all(v, 13..=13, |b| b.is_ascii_digit()))
    {
        r.fail(
            "YoungPersonsID",
            "must be the 13-digit NCCIS YoungPersonsID",
        );
    }
    let dob = r.date("DOB", true);
    let activity = r.text("ActivityCode", true);
    if activity
        .as_deref()
        .is_some_and(|a| !codes::nccis_activity().contains(a))
    {
        r.fail("ActivityCode", "is not an NCCIS activity code");
    }
    let start = r.date("StartDate", true);
    let ascertained = r.date("DateAscertained", true);
    let verified = r.date("DateVerified", false);
    if let (Some(s), Some(a)) = (start, ascertained) {
        if s > a {
            r.fail("DateAscertained", "is before StartDate");
        }
    }
    if let (Some(a), Some(v)) = (ascertained, verified) {
        if a > v {
            r.fail("DateVerified", "is before DateAscertained");
        }
    }
    let uln = r.matching(
        "UniqueLearnerNo",
        |v| all(v, 10..=10, |b| b.is_ascii_digit()) && !v.starts_with('0'),
        "must be a 10-digit ULN not starting with 0",
    );
    let upn = r.matching(
        "UniquePupilNumber",
        |v| {
            let b = v.as_bytes();
            b.len() == 13
                && b[0].is_ascii_uppercase()
                && b[1..12].iter().all(u8::is_ascii_digit)
                && (b[12].is_ascii_digit() || b[12].is_ascii_uppercase())
        },
        "must be a 13-character UPN (a capital letter, 11 digits, a digit or capital letter)",
    );
    let sex = match r.cell("Gender").to_ascii_uppercase().as_str() {
        "M" | "1" => "M".to_owned(),
        "F" | "2" => "F".to_owned(),
        "" | "U" | "0" | "9" => "U".to_owned(),
        _ => {
            r.fail("Gender", "must be M, F or U (or 1, 2)");
            "U".to_owned()
        }
    };
    let lea_code = r.matching(
        "LEACode",
        |v| all(v, 3..=3, |b| b.is_ascii_digit()),
        "must be a 3-digit local authority code",
    );
    let due_to_lapse = r.date("DueToLapseDate", false);
    let establishment_number = r.matching(
        "EstablishmentNumber",
        |v| all(v, 4..=8, |b| b.is_ascii_digit()),
        "must be 4 to 8 digits",
    );
    let establishment_name = r.matching(
        "EstablishmentName",
        |v| v.chars().count() <= 120,
        "must be at most 120 characters",
    );
    let ukprn = r.matching(
        "UKProviderReferenceNumber",
        |v| all(v, 8..=8, |b| b.is_ascii_digit()) && v.starts_with('1'),
        "must be an 8-digit UKPRN starting with 1",
    );
    let neet_start = r.date("NEETStartDate", false);
    let name = |r: &mut Row, c: &str| {
        r.matching(
            c,
            |v| v.chars().count() <= 100,
            "must be at most 100 characters",
        )
    };
    let given_name = name(&mut r, "GivenName");
    let family_name = name(&mut r, "FamilyName");
    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    Ok(DestinationRow {
        line: record.line,
        nccis_id: nccis_id.expect("checked"),
        given_name,
        family_name,
        date_of_birth: dob.expect("checked"),
        sex,
        uln,
        upn,
        lea_code,
        activity_code: activity.expect("checked"),
        start_date: start.expect("checked"),
        date_ascertained: ascertained.expect("checked"),
        due_to_lapse_date: due_to_lapse,
        establishment_number,
        establishment_name,
        ukprn,
        neet_start_date: neet_start,
    })
}

/// Reads a destinations file: its valid rows, and a problem for every invalid one. A file
/// that cannot be read at all (no header, required columns missing) is one problem on line 1.
pub fn destinations(text: &str) -> Result<(Vec<DestinationRow>, Vec<RowError>), RowError> {
    let table = Table::parse(text).ok_or_else(|| RowError {
        file: None,
        line: 1,
        column: None,
        value: None,
        message: "the file is empty: expected a header line with NCCIS column names".into(),
    })?;
    let missing = table.missing(&REQUIRED);
    if !missing.is_empty() {
        return Err(RowError {
            file: None,
            line: 1,
            column: Some(missing.join(", ")),
            value: None,
            message: "required columns are missing from the header".into(),
        });
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in &table.records {
        match destination(&table, record) {
            Ok(row) => rows.push(row),
            Err(e) => errors.extend(e),
        }
    }
    Ok((rows, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_strictly_and_reported_by_line_and_column() {
        let file = "\u{feff}ActivityCode,YoungPersonsID,DOB,StartDate,DateAscertained,DateVerified,UniqueLearnerNo,Gender,Extra\r\n\
                    230,0000000001234,2008-05-01,2026-09-01,2026-09-20,2026-09-21,1234567890,2,ignored\r\n\
                    \r\n\
                    999,0000000001235,2008-02-30,2026-10-01,2026-09-20,,0123456789,X,\r\n";
        let (rows, errors) = destinations(file).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sex, "F");
        assert_eq!(rows[0].line, 2);
        let found: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column.as_deref().unwrap()))
            .collect();
        assert_eq!(
            found,
            vec![
                (4, "DOB"),
                (4, "ActivityCode"),
                (4, "DateAscertained"),
                (4, "UniqueLearnerNo"),
                (4, "Gender")
            ]
        );
        assert_eq!(errors[1].value.as_deref(), Some("999"));
    }

    #[test]
    fn a_file_without_the_required_columns_is_refused_whole() {
        let e = destinations("YoungPersonsID,DOB\n1,2\n").unwrap_err();
        assert_eq!(
            e.column.as_deref(),
            Some("ActivityCode, StartDate, DateAscertained")
        );
        assert!(destinations("").is_err());
    }
}
