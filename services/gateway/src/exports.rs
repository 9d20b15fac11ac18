//! CSV downloads in the shapes agencies already use: for a local authority, its care
//! leavers' latest destinations for a quarter (NCCIS code, and the OC3 activity through the
//! crosswalk); for a careers service, the looked-after list it may see. Both are built from
//! read models, so they hold exactly what the agency may see and nothing more.

use crate::problem::{internal, HttpProblem};
use pathway_core::care_status::CareStatus;
use pathway_core::codes;
use pathway_core::report::Quarter;
use pathway_projector::{views, Projector};
use serde_json::Value;

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str(&cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The local authority's care leavers (and those looked after and 16 or over) with their
/// latest destination ascertained by the quarter's end.
pub fn destinations(p: &Projector, agency: &str, quarter: Quarter) -> Result<String, HttpProblem> {
    let end = quarter.last_day().to_string();
    let mut out = String::new();
    row(
        &mut out,
        &[
            "young_person",
            "la_child_id",
            "given_name",
            "family_name",
            "date_of_birth",
            "care_status",
            "activity_code",
            "oc3_activity",
            "start_date",
            "date_ascertained",
        ]
        .map(String::from),
    );
    for (yp, _) in views::registered_by(p, agency).map_err(internal)? {
        let Some((model, destinations)) =
            views::read_model_and_destinations(p, agency, yp).map_err(internal)?
        else {
            continue;
        };
        let status = model["care"]["status"].as_str().unwrap_or("");
        let counted = [
            CareStatus::Eligible,
            CareStatus::Relevant,
            CareStatus::FormerRelevant,
            CareStatus::Qualifying,
        ]
        .iter()
        .any(|c| c.as_str() == status);
        if !counted {
            continue;
        }
        let latest = latest_destination_by(destinations, &end);
        let id = &model["identity"];
        let (code, start, ascertained) = latest.unwrap_or_default();
        let oc3 = codes::nccis_to_oc3()
            .column(&code, "oc3_activity")
            .unwrap_or("");
        row(
            &mut out,
            &[
                yp.to_string(),
                s(&id["identifiers"]["la_child_id"]),
                s(&id["given_name"]),
                s(&id["family_name"]),
                s(&id["date_of_birth"]),
                status.to_owned(),
                code.clone(),
                oc3.to_owned(),
                start,
                ascertained,
            ],
        );
    }
    Ok(out)
}

/// Of the destinations the agency may see, the latest ascertained on or before `end`
/// (YYYY-MM-DD): activity, start and ascertained.
fn latest_destination_by(destinations: Vec<Value>, end: &str) -> Option<(String, String, String)> {
    destinations
        .into_iter()
        .filter(|d| d["date_ascertained"].as_str().is_some_and(|a| a <= end))
        .max_by(|a, b| s(&a["date_ascertained"]).cmp(&s(&b["date_ascertained"])))
        .map(|d| {
            (
                s(&d["activity_code"]),
                s(&d["start_date"]),
                s(&d["date_ascertained"]),
            )
        })
}

/// The looked-after list a careers service may see: everyone it has received anything about,
/// as its read model shows them.
pub fn looked_after(p: &Projector, agency: &str) -> Result<String, HttpProblem> {
    let mut out = String::new();
    row(
        &mut out,
        &[
            "young_person",
            "la_child_id",
            "upn",
            "given_name",
            "family_name",
            "date_of_birth",
            "looked_after",
            "legal_status",
            "care_status",
            "placement_type",
            "placement_start",
        ]
        .map(String::from),
    );
    for yp in views::people_in_feed(p, agency).map_err(internal)? {
        let Some(m) = views::read_model(p, agency, yp).map_err(internal)? else {
            continue;
        };
        if m.get("care").is_none() {
            continue;
        }
        let id = &m["identity"];
        row(
            &mut out,
            &[
                yp.to_string(),
                s(&id["identifiers"]["la_child_id"]),
                s(&id["identifiers"]["upn"]),
                s(&id["given_name"]),
                s(&id["family_name"]),
                s(&id["date_of_birth"]),
                s(&m["care"]["looked_after"]),
                s(&m["care"]["legal_status"]),
                s(&m["care"]["status"]),
                s(&m["placement"]["placement_type"]),
                s(&m["placement"]["start_date"]),
            ],
        );
    }
    Ok(out)
}
