//! Agencies' own files, read into rows the exchange can act on: tolerant of how the file is
//! written (see [`crate::table`]), strict about every value. Each problem names the line, the
//! column and the value, so the person who keeps the file can fix it there.
//!
//! Today: the careers service's quarterly destinations in NCCIS layout.

use crate::codes;
use crate::date::Day;
use crate::table::{Cells, Columns, Dates, Reader, Record};

pub use crate::table::RowError;

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

fn destination(columns: &Columns, record: &Record) -> Result<DestinationRow, Vec<RowError>> {
    let mut r = Cells::new(None, columns, record, Dates::Iso);
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
    let name = |r: &mut Cells, c: &str| {
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

/// Reads a destinations file as it arrives: the header first, then rows as each piece
/// completes them, so an upload of any length is read in bounded memory.
#[derive(Default)]
pub struct DestinationReader {
    reader: Reader,
    columns: Option<Columns>,
    records: Vec<Record>,
}

/// What a piece of a file yielded.
#[derive(Debug, Default)]
pub struct Rows {
    pub valid: Vec<DestinationRow>,
    pub rejected: Vec<RowError>,
    /// Rows read, valid or not.
    pub read: usize,
}

impl DestinationReader {
    /// Reads a piece of the file. An error means the file cannot be read at all (no header,
    /// required columns missing, not UTF-8): it is one problem, on its line.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Rows, RowError> {
        self.reader
            .feed_bytes(bytes, &mut self.records)
            .map_err(not_text)?;
        self.rows()
    }

    /// Reads what is left once the whole file has arrived.
    pub fn finish(&mut self) -> Result<Rows, RowError> {
        self.reader.finish(&mut self.records).map_err(not_text)?;
        let rows = self.rows()?;
        if self.columns.is_none() {
            return Err(RowError {
                file: None,
                line: 1,
                column: None,
                value: None,
                message: "the file is empty: expected a header line with NCCIS column names".into(),
            });
        }
        Ok(rows)
    }

    fn rows(&mut self) -> Result<Rows, RowError> {
        let mut records = std::mem::take(&mut self.records).into_iter();
        if self.columns.is_none() {
            let Some(header) = records.next() else {
                return Ok(Rows::default());
            };
            let columns = Columns::new(header.cells);
            let missing = columns.missing(&REQUIRED);
            if !missing.is_empty() {
                return Err(RowError {
                    file: None,
                    line: header.line,
                    column: Some(missing.join(", ")),
                    value: None,
                    message: "required columns are missing from the header".into(),
                });
            }
            self.columns = Some(columns);
        }
        let columns = self.columns.as_ref().expect("read above");
        let mut rows = Rows::default();
        for record in records {
            rows.read += 1;
            match destination(columns, &record) {
                Ok(row) => rows.valid.push(row),
                Err(e) => rows.rejected.extend(e),
            }
        }
        Ok(rows)
    }
}

fn not_text(line: usize) -> RowError {
    RowError {
        file: None,
        line,
        column: None,
        value: None,
        message: "is not UTF-8 text".into(),
    }
}

/// Reads a whole destinations file: its valid rows, and a problem for every invalid one. A
/// file that cannot be read at all (no header, required columns missing) is one problem.
pub fn destinations(text: &str) -> Result<(Vec<DestinationRow>, Vec<RowError>), RowError> {
    let mut reader = DestinationReader::default();
    let mut rows = reader.feed(text.as_bytes())?;
    let rest = reader.finish()?;
    rows.valid.extend(rest.valid);
    rows.rejected.extend(rest.rejected);
    Ok((rows.valid, rows.rejected))
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
