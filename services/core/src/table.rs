//! Reading the CSV files agencies' systems export, tolerantly: a byte-order mark, CRLF or LF,
//! quoted fields (with commas, quotes and line breaks inside), blank lines, spaces around
//! values, extra columns and any column order. Strictness about values is the importers' job;
//! this only finds the cells and says which line each record started on.

use std::collections::HashMap;

/// One record: the line it starts on (1-based, the header is line 1) and its cells, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub cells: Vec<String>,
}

/// A CSV file's header and records.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column name (as written, trimmed) → position, matched case-insensitively.
    columns: HashMap<String, usize>,
    pub header: Vec<String>,
    pub records: Vec<Record>,
}

fn records(text: &str) -> Vec<Record> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut start) = (false, 1usize, 1usize);
    let mut chars = text.chars().peekable();
    let mut finish = |row: &mut Vec<String>, field: &mut String, start: usize| {
        row.push(std::mem::take(field));
        let cells: Vec<String> = std::mem::take(row)
            .into_iter()
            .map(|c| c.trim().to_owned())
            .collect();
        if cells.iter().any(|c| !c.is_empty()) {
            out.push(Record { line: start, cells });
        }
    };
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, '\n') => {
                line += 1;
                field.push('\n');
            }
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                finish(&mut row, &mut field, start);
                line += 1;
                start = line;
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        finish(&mut row, &mut field, start);
    }
    out
}

impl Table {
    /// Parses a whole file. `None` when it has no header line.
    pub fn parse(text: &str) -> Option<Table> {
        let mut all = records(text).into_iter();
        let header = all.next()?.cells;
        let columns = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.to_ascii_lowercase(), i))
            .collect();
        Some(Table {
            columns,
            header,
            records: all.collect(),
        })
    }

    /// The position of a column, by name, ignoring case.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.get(&name.to_ascii_lowercase()).copied()
    }

    /// Which of `names` the header lacks.
    pub fn missing<'a>(&self, names: &[&'a str]) -> Vec<&'a str> {
        names
            .iter()
            .copied()
            .filter(|n| self.column(n).is_none())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_exports_are_read_whatever_their_habits() {
        let text = "\u{feff}Name , DOB,Extra\r\n\r\n\"Smith, Jo\",2008-01-01,x\r\n  Ann  ,\"2009-\r\n02-02\" ,\r\n\n\"O\"\"Neil\",2010-03-03\n";
        let t = Table::parse(text).unwrap();
        assert_eq!(t.header, vec!["Name", "DOB", "Extra"]);
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
}
