//! Reading the CSV files agencies' systems export, tolerantly: a byte-order mark, CRLF or LF,
//! quoted fields (with commas, quotes and line breaks inside), blank lines, spaces around
//! values, extra columns and any column order. Strictness about values is the importers' job;
//! this only finds the cells and says which line each record started on.

use crate::date::Day;
use serde::Serialize;

/// A problem with one value of one row: where it is (file, line, column), what it was, and
/// why it cannot be accepted.
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

/// One record: the line it starts on (1-based, the header is line 1) and its cells, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub cells: Vec<String>,
}

/// The header's column names (as written, trimmed), matched case-insensitively.
///
/// Searched rather than hashed: an importer asks for a dozen columns on every row, and
/// lower-casing each name into a fresh string to look it up was a tenth of reading a row.
/// A header has a few dozen columns; comparing lengths first rules out nearly all of them.
#[derive(Debug, Clone)]
pub struct Columns(Vec<String>);

impl Columns {
    pub fn new(header: Vec<String>) -> Columns {
        Columns(header)
    }

    /// The position of a column, by name, ignoring ASCII case. Of two columns with the same
    /// name, the later counts.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.0
            .iter()
            .rposition(|h| h.len() == name.len() && h.eq_ignore_ascii_case(name))
    }

    /// Which of `names` the header lacks.
    pub fn missing<'a>(&self, names: &[&'a str]) -> Vec<&'a str> {
        names
            .iter()
            .copied()
            .filter(|n| self.get(n).is_none())
            .collect()
    }
}

/// A CSV file's header and records.
#[derive(Debug, Clone)]
pub struct Table {
    /// The header, as read: its column names.
    columns: Columns,
    pub records: Vec<Record>,
}

/// Reads records as the text arrives, in pieces of any size (a streamed upload), holding
/// only the record in progress. Feeding a whole file at once is the same as feeding it in
/// pieces.
#[derive(Debug)]
pub struct Reader {
    row: Vec<String>,
    field: String,
    quoted: bool,
    /// A quote inside a quoted field, not yet known to be the end or the first of `""`.
    quote: bool,
    line: usize,
    start: usize,
    begun: bool,
    /// The bytes of a UTF-8 character split between two pieces.
    partial: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader {
            row: Vec::new(),
            field: String::new(),
            quoted: false,
            quote: false,
            line: 1,
            start: 1,
            begun: false,
            partial: Vec::new(),
        }
    }
}

impl Reader {
    /// Reads a piece of bytes; `Err(line)` where they are not UTF-8.
    pub fn feed_bytes(&mut self, bytes: &[u8], out: &mut Vec<Record>) -> Result<(), usize> {
        let joined;
        let bytes = if self.partial.is_empty() {
            bytes
        } else {
            let mut b = std::mem::take(&mut self.partial);
            b.extend_from_slice(bytes);
            joined = b;
            &joined[..]
        };
        let (text, rest) = match std::str::from_utf8(bytes) {
            Ok(t) => (t, &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (ok, rest) = bytes.split_at(e.valid_up_to());
                (std::str::from_utf8(ok).expect("checked"), rest)
            }
            Err(e) => {
                let ok = std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("checked");
                return Err(self.line + ok.matches('\n').count());
            }
        };
        self.feed(text, out);
        self.partial = rest.to_vec();
        Ok(())
    }

    /// Reads a piece of text, appending the records it completes to `out`.
    pub fn feed(&mut self, text: &str, out: &mut Vec<Record>) {
        let text = if self.begun {
            text
        } else if text.is_empty() {
            return;
        } else {
            self.begun = true;
            text.strip_prefix('\u{feff}').unwrap_or(text)
        };
        // Runs of ordinary characters are copied whole: only `"`, `,`, CR and LF (all ASCII,
        // so never inside a multi-byte character) change the state.
        let bytes = text.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            if self.quote {
                self.quote = false;
                if bytes[at] == b'"' {
                    self.field.push('"');
                    at += 1;
                    continue;
                }
                self.quoted = false;
            }
            let special = |b: &u8| {
                if self.quoted {
                    matches!(b, b'"' | b'\n')
                } else {
                    matches!(b, b'"' | b',' | b'\r' | b'\n')
                }
            };
            let end = bytes[at..]
                .iter()
                .position(special)
                .map_or(bytes.len(), |n| at + n);
            self.field.push_str(&text[at..end]);
            let Some(&b) = bytes.get(end) else { break };
            at = end + 1;
            match (self.quoted, b) {
                (true, b'"') => self.quote = true,
                (true, _) => {
                    self.line += 1;
                    self.field.push('\n');
                }
                (false, b'"') if self.field.trim().is_empty() => {
                    self.field.clear();
                    self.quoted = true;
                }
                (false, b'"') => self.field.push('"'),
                (false, b',') => self.row.push(std::mem::take(&mut self.field)),
                (false, b'\r') => {}
                (false, _) => {
                    self.complete(out);
                    self.line += 1;
                    self.start = self.line;
                }
            }
        }
    }

    /// The last record, if the text did not end with a line break. `Err(line)` if a
    /// character was cut off at the end.
    pub fn finish(&mut self, out: &mut Vec<Record>) -> Result<(), usize> {
        if !self.partial.is_empty() {
            return Err(self.line);
        }
        if self.quote {
            self.quote = false;
            self.quoted = false;
        }
        if !self.field.is_empty() || !self.row.is_empty() {
            self.complete(out);
        }
        Ok(())
    }

    fn complete(&mut self, out: &mut Vec<Record>) {
        self.row.push(std::mem::take(&mut self.field));
        let cells: Vec<String> = std::mem::take(&mut self.row)
            .into_iter()
            .map(|c| match c.trim() {
                t if t.len() == c.len() => c,
                t => t.to_owned(),
            })
            .collect();
        if cells.iter().any(|c| !c.is_empty()) {
            out.push(Record {
                line: self.start,
                cells,
            });
        }
    }
}

fn records(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut reader = Reader::default();
    reader.feed(text, &mut out);
    reader.finish(&mut out).expect("text is whole characters");
    out
}

impl Table {
    /// Parses a whole file. `None` when it has no header line.
    pub fn parse(text: &str) -> Option<Table> {
        let mut all = records(text).into_iter();
        Some(Table {
            columns: Columns::new(all.next()?.cells),
            records: all.collect(),
        })
    }

    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The header's column names, as written (trimmed).
    pub fn header(&self) -> &[String] {
        &self.columns.0
    }

    /// The position of a column, by name, ignoring case.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.get(name)
    }

    /// Which of `names` the header lacks.
    pub fn missing<'a>(&self, names: &[&'a str]) -> Vec<&'a str> {
        self.columns.missing(names)
    }
}

impl Record {
    /// The cell in a column (by position), or "" when the record is short.
    pub fn get(&self, column: Option<usize>) -> &str {
        column
            .and_then(|i| self.cells.get(i))
            .map_or("", String::as_str)
    }
}

/// How a file writes its dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dates {
    /// `YYYY-MM-DD` (NCCIS).
    Iso,
    /// `dd/mm/yyyy` (SSDA903).
    DayMonthYear,
}

/// Reads `dd/mm/yyyy`.
pub fn uk_date(s: &str) -> Option<Day> {
    let mut parts = s.split('/');
    let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || d.len() != 2 || m.len() != 2 || y.len() != 4 {
        return None;
    }
    Day::parse(&format!("{y}-{m}-{d}"))
}

/// One record's cells read by column name, collecting every problem with where it is, so
/// that a row is reported whole rather than stopping at its first bad value.
pub struct Cells<'a> {
    file: Option<&'static str>,
    columns: &'a Columns,
    record: &'a Record,
    dates: Dates,
    pub errors: Vec<RowError>,
}

impl<'a> Cells<'a> {
    pub fn new(
        file: Option<&'static str>,
        columns: &'a Columns,
        record: &'a Record,
        dates: Dates,
    ) -> Cells<'a> {
        Cells {
            file,
            columns,
            record,
            dates,
            errors: Vec::new(),
        }
    }

    pub fn cell(&self, column: &str) -> &str {
        self.record.get(self.columns.get(column))
    }

    /// The line the record starts on.
    pub fn line(&self) -> usize {
        self.record.line
    }

    pub fn fail(&mut self, column: &str, message: &str) {
        let value = self.cell(column).to_owned();
        self.errors.push(RowError {
            file: self.file.map(str::to_owned),
            line: self.record.line,
            column: Some(column.to_owned()),
            value: (!value.is_empty()).then_some(value),
            message: message.to_owned(),
        });
    }

    pub fn text(&mut self, column: &str, required: bool) -> Option<String> {
        let v = self.cell(column);
        if v.is_empty() {
            if required {
                self.fail(column, "is required");
            }
            return None;
        }
        Some(v.to_owned())
    }

    pub fn date(&mut self, column: &str, required: bool) -> Option<Day> {
        let v = self.cell(column);
        if v.is_empty() {
            if required {
                self.fail(column, "is required");
            }
            return None;
        }
        let (d, form) = match self.dates {
            Dates::Iso => (Day::parse(v), "YYYY-MM-DD"),
            Dates::DayMonthYear => (uk_date(v), "dd/mm/yyyy"),
        };
        if d.is_none() {
            self.fail(column, &format!("is not a real date in the form {form}"));
        }
        d
    }

    pub fn matching(
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

    pub fn coded(
        &mut self,
        column: &str,
        list: &crate::codes::CodeList,
        required: bool,
    ) -> Option<String> {
        let v = self.text(column, required)?;
        if list.contains(&v) {
            Some(v)
        } else {
            self.fail(column, &format!("is not on the {} code list", list.name));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_whatever_their_case() {
        let long = "A".repeat(80);
        let header: Vec<String> = ["ActivityCode", "dob", &long, "Ünïcode"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        let c = Columns::new(header);
        assert_eq!(c.get("activitycode"), Some(0));
        assert_eq!(c.get("ACTIVITYCODE"), Some(0));
        assert_eq!(c.get("DOB"), Some(1));
        assert_eq!(c.get(&long.to_lowercase()), Some(2));
        assert_eq!(c.get("ÜNÏCODE"), None, "only ASCII letters fold, as before");
        assert_eq!(c.get("Ünïcode"), Some(3));
        assert_eq!(c.get("StartDate"), None);
    }

    #[test]
    fn real_exports_are_read_whatever_their_habits() {
        let text = "\u{feff}Name , DOB,Extra\r\n\r\n\"Smith, Jo\",2008-01-01,x\r\n  Ann  ,\"2009-\r\n02-02\" ,\r\n\n\"O\"\"Neil\",2010-03-03\n";
        let t = Table::parse(text).unwrap();
        assert_eq!(t.header(), vec!["Name", "DOB", "Extra"]);
        assert_eq!(t.column("dob"), Some(1));
        let lines: Vec<usize> = t.records.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 7]);
        assert_eq!(t.records[0].cells, vec!["Smith, Jo", "2008-01-01", "x"]);
        assert_eq!(t.records[1].cells[0], "Ann");
        assert_eq!(t.records[2].get(t.column("Name")), "O\"Neil");
        assert_eq!(
            t.records[2].get(t.column("Extra")),
            "",
            "short records read as empty"
        );
        assert_eq!(t.missing(&["name", "ULN"]), vec!["ULN"]);
    }

    #[test]
    fn pieces_of_any_size_read_as_the_whole() {
        let text = "\u{feff}Name , DOB\r\n\"Sm\"\"ith, Jo\",2008-01-01\r\n\"Zoë\nAnn\",\"\"\"\"\r\nlast,row";
        let whole = records(text);
        for size in 1..text.len() {
            let mut out = Vec::new();
            let mut reader = Reader::default();
            for piece in text.as_bytes().chunks(size) {
                reader.feed_bytes(piece, &mut out).unwrap();
            }
            reader.finish(&mut out).unwrap();
            assert_eq!(out, whole, "pieces of {size} bytes");
        }
        assert_eq!(whole[1].cells, vec!["Sm\"ith, Jo", "2008-01-01"]);
        assert_eq!(whole[2].cells, vec!["Zoë\nAnn", "\""]);
    }

    proptest::proptest! {
        /// Text made of the characters that change the reader's state, and one that takes
        /// two bytes, cut anywhere: the runs copied whole must end where the state changes.
        #[test]
        fn any_text_in_any_pieces_reads_as_the_whole(
            text in "[a \",\r\né\u{feff}]{0,40}",
            size in 1usize..8,
        ) {
            let whole = records(&text);
            let mut out = Vec::new();
            let mut reader = Reader::default();
            for piece in text.as_bytes().chunks(size) {
                reader.feed_bytes(piece, &mut out).unwrap();
            }
            reader.finish(&mut out).unwrap();
            proptest::prop_assert_eq!(out, whole);
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_their_line() {
        let mut reader = Reader::default();
        let mut out = Vec::new();
        assert_eq!(reader.feed_bytes(b"a,b\nc,\xff\n", &mut out), Err(2));
    }
}
