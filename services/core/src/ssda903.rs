//! A local authority's looked-after list in SSDA903 layout (`header`, `episodes`, optional
//! `oc3`), read into one record per child and turned into the events it implies. Dates are
//! `dd/mm/yyyy`; SEX is 1/2 before 2024-25 and M/F/U after; `GIVEN_NAME` and `FAMILY_NAME` are
//! optional extras in `header`.
//!
//! A child's rows stand or fall together: if any of them is invalid, none of that child's
//! events are applied and every problem is reported, so a child is never half-loaded.

use crate::calendar::birthday;
use crate::catalogue::EventType;
use crate::codes;
use crate::date::Day;
pub use crate::table::uk_date;
use crate::table::{Cells, Dates, RowError, Table};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRow {
    pub line: usize,
    pub sex: String,
    pub dob: Day,
    pub upn: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeRow {
    pub line: usize,
    pub decom: Day,
    pub rne: String,
    pub ls: String,
    pub cin: Option<String>,
    pub place: String,
    pub provider: Option<String>,
    pub dec: Option<Day>,
    pub rec: Option<String>,
    pub reason_place_change: Option<String>,
    pub pl_post: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oc3Row {
    pub line: usize,
    pub dob: Day,
    pub in_touch: String,
    pub activity: Option<String>,
    pub accommodation: Option<String>,
}

/// Everything the files say about one child (by the authority's CHILD id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Child {
    pub child: String,
    pub header: Option<HeaderRow>,
    pub episodes: Vec<EpisodeRow>,
    pub oc3: Option<Oc3Row>,
}

const HEADER: [&str; 3] = ["CHILD", "SEX", "DOB"];
const EPISODES: [&str; 5] = ["CHILD", "DECOM", "RNE", "LS", "PLACE"];
const OC3: [&str; 3] = ["CHILD", "DOB", "IN_TOUCH"];

fn table(file: &'static str, text: &str, required: &[&str]) -> Result<Table, RowError> {
    let whole = |column: Option<String>, message: &str| RowError {
        file: Some(file.to_owned()),
        line: 1,
        column,
        value: None,
        message: message.to_owned(),
    };
    let t = Table::parse(text)
        .ok_or_else(|| whole(None, "the file is empty: expected a header line"))?;
    let missing = t.missing(required);
    if !missing.is_empty() {
        return Err(whole(
            Some(missing.join(", ")),
            "required columns are missing from the header",
        ));
    }
    Ok(t)
}

fn header_row(c: &mut Cells) -> Option<HeaderRow> {
    let sex = match c.cell("SEX").to_ascii_uppercase().as_str() {
        "1" | "M" => Some("M".to_owned()),
        "2" | "F" => Some("F".to_owned()),
        "U" => Some("U".to_owned()),
        "" => {
            c.fail("SEX", "is required");
            None
        }
        _ => {
            c.fail("SEX", "must be 1 or 2 (before 2024-25), or M, F or U");
            None
        }
    };
    let dob = c.date("DOB", true);
    // UN1 to UN5 say why a UPN is unknown: no UPN, not an error.
    let upn = c.text("UPN", false).filter(|u| !u.starts_with("UN"));
    if let Some(u) = &upn {
        let b = u.as_bytes();
        let ok = b.len() == 13
            && b[0].is_ascii_uppercase()
            && b[1..12].iter().all(u8::is_ascii_digit)
            && (b[12].is_ascii_digit() || b[12].is_ascii_uppercase());
        if !ok {
            c.fail("UPN", "must be a 13-character UPN (or UN1 to UN5)");
        }
    }
    let mut name = |col: &str| {
        let v = c.text(col, false)?;
        if v.chars().count() > 100 {
            c.fail(col, "must be at most 100 characters");
            return None;
        }
        Some(v)
    };
    let given_name = name("GIVEN_NAME");
    let family_name = name("FAMILY_NAME");
    Some(HeaderRow {
        line: c.line(),
        sex: sex?,
        dob: dob?,
        upn,
        given_name,
        family_name,
    })
}

fn episode_row(c: &mut Cells) -> Option<EpisodeRow> {
    let decom = c.date("DECOM", true);
    let rne = c.coded("RNE", codes::ssda903_reason_new_episode(), true);
    let ls = c.coded("LS", codes::ssda903_legal_status(), true);
    let cin = c.coded("CIN", codes::ssda903_category_of_need(), false);
    let place = c.coded("PLACE", codes::ssda903_placement_type(), true);
    let provider = c.coded("PLACE_PROVIDER", codes::ssda903_placement_provider(), false);
    let dec = c.date("DEC", false);
    let rec = c.coded("REC", codes::ssda903_reason_episode_ceased(), false);
    let reason = c.coded(
        "REASON_PLACE_CHANGE",
        codes::ssda903_reason_placement_change(),
        false,
    );
    let pl_post = c.text("PL_POST", false);
    if let (Some(start), Some(end)) = (decom, dec) {
        if end < start {
            c.fail("DEC", "is before DECOM");
        }
    }
    if dec.is_some() && c.cell("REC").is_empty() {
        c.fail("REC", "is required when the episode ceased (DEC)");
    }
    if pl_post.as_ref().is_some_and(|p| p.len() > 8) {
        c.fail("PL_POST", "must be a postcode");
    }
    if !c.errors.is_empty() {
        return None;
    }
    Some(EpisodeRow {
        line: c.line(),
        decom: decom?,
        rne: rne?,
        ls: ls?,
        cin,
        place: place?,
        provider,
        dec,
        rec,
        reason_place_change: reason,
        pl_post,
    })
}

fn oc3_row(c: &mut Cells) -> Option<Oc3Row> {
    let dob = c.date("DOB", true);
    let in_touch = c.coded("IN_TOUCH", codes::oc3_in_touch(), true);
    let activity = c.coded("ACTIV", codes::oc3_activity(), false);
    let accommodation = c.text("ACCOM", false);
    if let Some(a) = &accommodation {
        let mut chars = a.chars();
        let (letter, suit) = (chars.next(), chars.next());
        let allowed = letter
            .and_then(|l| codes::oc3_accommodation().column(&l.to_string(), "suitable_allowed"));
        let ok = chars.next().is_none()
            && matches!(
                (allowed, suit),
                (Some("yes"), Some('1' | '2')) | (Some("no"), Some('2'))
            );
        if !ok {
            c.fail("ACCOM", "must be an OC3 accommodation letter and 1 (suitable) or 2 (unsuitable); S and X only with 2");
        }
    }
    if matches!(in_touch.as_deref(), Some("DIED" | "RHOM")) {
        if activity.as_deref().is_some_and(|a| a != "0") {
            c.fail("ACTIV", "must be blank or 0 when IN_TOUCH is DIED or RHOM");
        }
        if accommodation.as_deref().is_some_and(|a| a != "0") {
            c.fail("ACCOM", "must be blank when IN_TOUCH is DIED or RHOM");
        }
    }
    if !c.errors.is_empty() {
        return None;
    }
    Some(Oc3Row {
        line: c.line(),
        dob: dob?,
        in_touch: in_touch?,
        activity,
        accommodation,
    })
}

/// Reads the files: the children whose rows are all valid, and every problem (a child with
/// any invalid row is left out whole). A file that cannot be read at all is one problem.
pub fn looked_after(
    header: &str,
    episodes: &str,
    oc3: Option<&str>,
) -> Result<(Vec<Child>, Vec<RowError>, usize), RowError> {
    let tables = [
        ("header", Some(table("header", header, &HEADER)?)),
        ("episodes", Some(table("episodes", episodes, &EPISODES)?)),
        ("oc3", oc3.map(|t| table("oc3", t, &OC3)).transpose()?),
    ];
    let mut children: BTreeMap<String, Child> = BTreeMap::new();
    let mut bad: BTreeMap<String, ()> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut rows = 0;
    for (file, t) in &tables {
        let Some(t) = t else { continue };
        for record in &t.records {
            rows += 1;
            let mut c = Cells::new(Some(file), t.columns(), record, Dates::DayMonthYear);
            let Some(id) = c.text("CHILD", true) else {
                errors.extend(c.errors);
                continue;
            };
            if !(1..=20).contains(&id.len())
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-')
            {
                c.fail(
                    "CHILD",
                    "must be the authority's child id: up to 20 letters, digits, / or -",
                );
            }
            let child = children.entry(id.clone()).or_insert_with(|| Child {
                child: id.clone(),
                ..Child::default()
            });
            match *file {
                "header" => match header_row(&mut c) {
                    Some(h) if child.header.is_some() => {
                        let _ = h;
                        c.fail("CHILD", "appears twice in header");
                    }
                    h => child.header = h,
                },
                "episodes" => {
                    if let Some(e) = episode_row(&mut c) {
                        child.episodes.push(e);
                    }
                }
                _ => match oc3_row(&mut c) {
                    Some(_) if child.oc3.is_some() => c.fail("CHILD", "appears twice in oc3"),
                    o => child.oc3 = o,
                },
            }
            if !c.errors.is_empty() {
                bad.insert(id, ());
                errors.extend(c.errors);
            }
        }
    }
    for child in children.values_mut() {
        child.episodes.sort_by_key(|e| e.decom);
        if let (Some(h), Some(o)) = (&child.header, &child.oc3) {
            if h.dob != o.dob {
                errors.push(RowError {
                    file: Some("oc3".into()),
                    line: o.line,
                    column: Some("DOB".into()),
                    value: None,
                    message: "differs from the date of birth in header".into(),
                });
                bad.insert(child.child.clone(), ());
            }
        }
    }
    let good = children
        .into_values()
        .filter(|c| !bad.contains_key(&c.child))
        .collect();
    Ok((good, errors, rows))
}

/// The last day (31 March) of the collection year a return covers: `year` is the year it
/// ends in (2021 for 2020-21); by default the collection year `today` falls in.
pub fn collection_year_end(year: Option<i32>, today: Day) -> Day {
    let year = year.unwrap_or_else(|| {
        let y = today.0.year();
        if today.0.month() as u8 <= 3 {
            y
        } else {
            y + 1
        }
    });
    Day::parse(&format!("{year:04}-03-31")).expect("31 March")
}

/// The events a child's rows imply, in order, as (type, date it happened, data). Episodes
/// that continue a period of care (the one before ceased with X1) are changes of legal
/// status or placement; the others start a period of care. OC3 outcomes are for the
/// birthday the young person had in the collection year ending on `year_end`.
pub fn events(
    child: &Child,
    today: Day,
    year_end: Day,
) -> Result<Vec<(EventType, Day, Value)>, RowError> {
    let mut out = Vec::new();
    let mut previous: Option<&EpisodeRow> = None;
    for e in &child.episodes {
        let continuing = previous.is_some_and(|p| p.rec.as_deref() == Some("X1")) && e.rne != "S";
        let mut placement = json!({"start_date": e.decom, "placement_type": e.place});
        if let Some(p) = &e.provider {
            placement["provider"] = json!(p);
        }
        if let Some(p) = &e.pl_post {
            placement["postcode"] = json!(p);
        }
        if let Some(r) = &e.reason_place_change {
            placement["reason"] = json!(r);
        }
        if continuing {
            let p = previous.expect("continuing follows an episode");
            if p.ls != e.ls {
                out.push((
                    EventType::LegalStatusChanged,
                    e.decom,
                    json!({"date": e.decom, "legal_status": e.ls}),
                ));
            }
            if p.place != e.place || p.provider != e.provider || p.pl_post != e.pl_post {
                out.push((EventType::PlacementChanged, e.decom, placement));
            }
        } else {
            let mut started = json!({"start_date": e.decom, "legal_status": e.ls});
            if let Some(c) = &e.cin {
                started["category_of_need"] = json!(c);
            }
            out.push((EventType::LookedAfterStarted, e.decom, started));
            out.push((EventType::PlacementChanged, e.decom, placement));
        }
        if let (Some(dec), Some(rec)) = (e.dec, &e.rec) {
            if rec != "X1" {
                out.push((
                    EventType::LookedAfterCeased,
                    dec,
                    json!({"date": dec, "reason": rec}),
                ));
            }
        }
        previous = Some(e);
    }
    if let Some(o) = &child.oc3 {
        let age = o.dob.age_on(year_end);
        if !(17..=21).contains(&age) {
            return Err(RowError {
                file: Some("oc3".into()),
                line: o.line,
                column: Some("DOB".into()),
                value: None,
                message: format!(
                    "makes the young person {age} in the collection year ending {year_end}; OC3 outcomes are for ages 17 to 21"
                ),
            });
        }
        let mut data = json!({
            "birthday_age": age,
            "in_touch": o.in_touch,
            "recorded_on": today,
        });
        if let Some(a) = &o.activity {
            data["activity"] = json!(a);
        }
        if let Some(a) = o.accommodation.as_ref().filter(|a| *a != "0") {
            data["accommodation"] = json!(a);
        }
        out.push((
            EventType::CareLeaverOutcomeRecorded,
            birthday(o.dob, age).max(o.dob),
            data,
        ));
    }
    Ok(out)
}

/// What makes two events the same fact, for comparing a file with what is held: the type and
/// the fields that identify it (a placement by its start and type, an outcome by its
/// birthday and values).
pub fn fact_key(ty: EventType, data: &Value) -> String {
    let f = |k: &str| data.get(k).map(Value::to_string).unwrap_or_default();
    match ty {
        EventType::LookedAfterStarted => format!("{ty}|{}", f("start_date")),
        EventType::LegalStatusChanged => format!("{ty}|{}|{}", f("date"), f("legal_status")),
        EventType::PlacementChanged => format!("{ty}|{}|{}", f("start_date"), f("placement_type")),
        EventType::LookedAfterCeased => format!("{ty}|{}", f("date")),
        EventType::CareLeaverOutcomeRecorded => format!(
            "{ty}|{}|{}|{}|{}",
            f("birthday_age"),
            f("in_touch"),
            f("activity"),
            f("accommodation")
        ),
        _ => format!("{ty}|{data}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn uk_dates_are_read_strictly() {
        assert_eq!(uk_date("27/03/2008"), Some(d("2008-03-27")));
        assert_eq!(uk_date("30/02/2008"), None);
        assert_eq!(uk_date("2008-03-27"), None);
        assert_eq!(uk_date("1/3/2008"), None);
    }

    #[test]
    fn episodes_become_periods_of_care_changes_and_cessations() {
        let header = "CHILD,SEX,DOB,UPN,GIVEN_NAME\n1,F,01/05/2008,UN2,Ada\n";
        let episodes =
            "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,PL_POST\n\
            1,14/08/2017,P,C2,N3,U1,PR1,01/03/2020,E8,CARPL,EX1 1AA\n\
            1,15/02/2016,S,C1,N3,U1,PR1,14/08/2017,X1,,EX1 1AA\n";
        let (children, errors, rows) = looked_after(header, episodes, None).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rows, 3);
        assert_eq!(
            children[0].header.as_ref().unwrap().upn,
            None,
            "UN2 is no UPN"
        );
        let kinds: Vec<String> = events(&children[0], d("2026-11-02"), d("2027-03-31"))
            .unwrap()
            .iter()
            .map(|(t, day, _)| format!("{t} {day}"))
            .collect();
        assert_eq!(
            kinds,
            vec![
                "looked-after.started 2016-02-15",
                "placement.changed 2016-02-15",
                "legal-status.changed 2017-08-14",
                "looked-after.ceased 2020-03-01"
            ]
        );
    }

    #[test]
    fn a_child_with_any_bad_row_is_left_out_whole() {
        let header = "CHILD,SEX,DOB\n1,2,01/05/2008\n2,7,01/05/2008\n";
        let episodes = "CHILD,DECOM,RNE,LS,PLACE\n1,01/01/2020,S,C2,U1\n1,01/01/2021,Q,C2,U1\n2,01/01/2020,S,C2,U1\n";
        let (children, errors, _) = looked_after(header, episodes, None).unwrap();
        assert!(children.is_empty());
        let found: Vec<(String, usize, String)> = errors
            .iter()
            .map(|e| (e.file.clone().unwrap(), e.line, e.column.clone().unwrap()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("header".into(), 3, "SEX".into()),
                ("episodes".into(), 3, "RNE".into())
            ]
        );
    }
}
