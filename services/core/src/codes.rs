//! Code lists from `reference/*.csv` (copied from the shared reference), embedded at compile
//! time so the binary needs no files beside it and the lists cannot differ between machines.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A code list: its codes in file order, with the other columns of each row.
#[derive(Debug)]
pub struct CodeList {
    pub name: &'static str,
    rows: Vec<BTreeMap<String, String>>,
    key: &'static str,
}

impl CodeList {
    fn load(name: &'static str, text: &'static str, key: &'static str) -> CodeList {
        let mut lines = parse_csv(text).into_iter();
        let header = lines.next().unwrap_or_default();
        let rows = lines
            .filter(|r| r.iter().any(|c| !c.is_empty()))
            .map(|r| header.iter().cloned().zip(r).collect())
            .collect();
        CodeList { name, rows, key }
    }

    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|r| r[self.key].as_str())
    }

    pub fn contains(&self, code: &str) -> bool {
        self.codes().any(|c| c == code)
    }

    /// The value of `column` on the row of `code`.
    pub fn column(&self, code: &str, column: &str) -> Option<&str> {
        self.rows
            .iter()
            .find(|r| r[self.key] == code)
            .and_then(|r| r.get(column))
            .map(String::as_str)
    }

    pub fn rows(&self) -> &[BTreeMap<String, String>] {
        &self.rows
    }
}

macro_rules! lists {
    ($( $fn:ident => $file:literal, $key:literal; )*) => {
        $(
            pub fn $fn() -> &'static CodeList {
                static LIST: OnceLock<CodeList> = OnceLock::new();
                LIST.get_or_init(|| CodeList::load(
                    $file,
                    include_str!(concat!("../../../reference/", $file, ".csv")),
                    $key,
                ))
            }
        )*

        /// Every code list by file name, for checks that walk them all.
        pub fn by_name(name: &str) -> Option<&'static CodeList> {
            match name {
                $( $file => Some($fn()), )*
                _ => None,
            }
        }
    };
}

lists! {
    nccis_activity => "nccis-activity-codes", "code";
    nccis_characteristic => "nccis-characteristic-codes", "code";
    nccis_to_oc3 => "nccis-to-oc3-activity", "nccis_code";
    oc3_accommodation => "oc3-accommodation", "letter";
    oc3_activity => "oc3-activity", "code";
    oc3_in_touch => "oc3-in-touch", "code";
    ssda903_category_of_need => "ssda903-category-of-need", "code";
    ssda903_legal_status => "ssda903-legal-status", "code";
    ssda903_placement_provider => "ssda903-placement-provider", "code";
    ssda903_placement_type => "ssda903-placement-type", "code";
    ssda903_reason_episode_ceased => "ssda903-reason-episode-ceased", "code";
    ssda903_reason_new_episode => "ssda903-reason-new-episode", "code";
    ssda903_reason_placement_change => "ssda903-reason-placement-change", "code";
    bank_holidays => "bank-holidays-england-wales", "date";
}

/// Whether an NCCIS activity code counts as NEET (its `status` column).
pub fn is_neet_activity(code: &str) -> bool {
    nccis_activity().column(code, "status") == Some("neet")
}

/// A small RFC 4180 reader: quoted fields, doubled quotes, CRLF. Enough for the reference
/// lists; the importers (a later issue) bring their own tolerant reader.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_and_crlf_are_read() {
        let rows = parse_csv("a,b\r\n1,\"x, \"\"y\"\"\"\r\n");
        assert_eq!(rows, vec![vec!["a", "b"], vec!["1", "x, \"y\""]]);
    }

    #[test]
    fn neet_status_comes_from_the_list() {
        assert!(is_neet_activity("619"));
        assert!(!is_neet_activity("230"));
        assert!(!is_neet_activity("999"));
    }

    #[test]
    fn every_list_loads_with_codes() {
        for name in [
            "nccis-activity-codes",
            "oc3-accommodation",
            "ssda903-placement-type",
        ] {
            let list = by_name(name).unwrap();
            assert!(list.codes().count() > 5, "{name}");
        }
        assert_eq!(
            oc3_accommodation().column("S", "suitable_allowed"),
            Some("no")
        );
    }
}
