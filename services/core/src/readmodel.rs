//! What an agency reads about a young person: the events it may see, folded into the current
//! state (latest placement, current workers, latest destination...) plus where each came
//! from. Pure, so the projector can keep only references to log entries on disk and fold on
//! read: no plaintext copy of personal data outlives the log (see ARCHITECTURE.md, erasure).

use crate::care_status;
use crate::catalogue::EventType;
use crate::date::Day;
use crate::events::EventData;
use crate::policy::Basis;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// One event as the reading agency may see it (data already minimised).
#[derive(Debug, Clone)]
pub struct Seen {
    pub seq: u64,
    pub event_type: EventType,
    pub source: String,
    pub occurred_at: String,
    pub data: Value,
    /// `None` for the agency's own events.
    pub basis: Option<Basis>,
}

fn section<'a>(root: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    root.entry(name)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("sections are objects")
}

fn merge(into: &mut Map<String, Value>, from: &Value) {
    if let Value::Object(m) = from {
        for (k, v) in m {
            match (into.get_mut(k), v) {
                (Some(Value::Object(existing)), Value::Object(_)) => merge(existing, v),
                _ => {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

fn list<'a>(root: &'a mut Map<String, Value>, name: &str) -> &'a mut Vec<Value> {
    root.entry(name)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .expect("lists are arrays")
}

/// Which part of the read model an event sets, when a later event of the same slot replaces
/// it wholly; `None` when it adds to what is there (identity corrections, meetings, consent
/// and deadline lists) and so is always part of the current state. Kept beside [`fold`], whose
/// rules it restates: a test proves folding only the latest event of each slot gives the
/// same read model as folding everything.
pub fn slot(ty: EventType, data: &RawValue) -> Option<String> {
    use EventType as T;
    #[derive(Deserialize)]
    struct Keys {
        role: Option<String>,
        birthday_age: Option<Value>,
    }
    let keys = || serde_json::from_str::<Keys>(data.get()).ok();
    let fixed = match ty {
        T::LookedAfterStarted => "care.started",
        T::LegalStatusChanged => "care.legal-status",
        T::LookedAfterCeased => "care.ceased",
        T::PlacementChanged => "placement",
        T::DestinationRecorded => "destination",
        T::NeetOnset => "neet",
        T::EnrolmentStarted => "enrolment.started",
        T::EnrolmentEnded => "enrolment.ended",
        T::PlaceAtRisk => "at-risk",
        T::PathwayPlanReviewed => "pathway-plan",
        T::WorkerAllocated => {
            let role = keys().and_then(|k| k.role);
            return Some(format!(
                "worker:{}",
                role.as_deref().unwrap_or("unspecified")
            ));
        }
        T::CareLeaverOutcomeRecorded => {
            let age = keys().and_then(|k| k.birthday_age);
            return Some(format!(
                "outcome:{}",
                age.map(|a| a.to_string()).unwrap_or_default()
            ));
        }
        _ => return None,
    };
    Some(fixed.to_owned())
}

/// Adds the legal care status (eligible, relevant, former relevant, qualifying, looked after)
/// on `today` to a folded read model, when the reader may see both the date of birth and the
/// care episodes it rests on.
pub fn add_care_status(model: &mut Value, seen: &[Seen], today: Day) {
    let Some(dob) = model["identity"]["date_of_birth"]
        .as_str()
        .and_then(Day::parse)
    else {
        return;
    };
    let data: Vec<EventData> = seen
        .iter()
        .filter(|s| {
            matches!(
                s.event_type,
                EventType::LookedAfterStarted | EventType::LookedAfterCeased
            )
        })
        .filter_map(|s| EventData::parse(s.event_type, &s.data).ok())
        .collect();
    let episodes = care_status::episodes_of(data.iter());
    let in_education = model["education_employment"]["destination"]["activity_code"]
        .as_str()
        .is_some_and(care_status::is_education_or_training);
    if let Some(status) = care_status::status(dob, &episodes, today, in_education) {
        if let Some(care) = model.get_mut("care").and_then(Value::as_object_mut) {
            care.insert("status".into(), json!(status));
            care.insert("status_on".into(), json!(today));
        }
    }
}

/// Folds the seen events (in log order) into the read model document.
pub fn fold(young_person: Uuid, seen: &[Seen]) -> Value {
    use EventType as T;
    let mut root = Map::new();
    let mut sources = Vec::new();
    for s in seen {
        let d = &s.data;
        let with_date = || {
            let mut v = d.clone();
            if let Value::Object(m) = &mut v {
                m.insert("seq".into(), json!(s.seq));
                m.insert("source".into(), json!(s.source));
            }
            v
        };
        match s.event_type {
            T::YoungPersonRegistered | T::YoungPersonDetailsCorrected => {
                merge(section(&mut root, "identity"), d)
            }
            T::IdentityLinked => {
                if let Some(ids) = d.get("identifiers") {
                    merge(
                        section(&mut root, "identity"),
                        &json!({ "identifiers": ids }),
                    );
                }
            }
            T::LookedAfterStarted => {
                let care = section(&mut root, "care");
                care.insert("looked_after".into(), json!(true));
                care.insert("episode".into(), with_date());
                care.remove("ceased");
                if let Some(ls) = d.get("legal_status") {
                    care.insert("legal_status".into(), ls.clone());
                }
            }
            T::LegalStatusChanged => {
                if let Some(ls) = d.get("legal_status") {
                    section(&mut root, "care").insert("legal_status".into(), ls.clone());
                }
            }
            T::LookedAfterCeased => {
                let care = section(&mut root, "care");
                care.insert("looked_after".into(), json!(false));
                care.insert("ceased".into(), with_date());
            }
            T::PlacementChanged => {
                root.insert("placement".into(), with_date());
            }
            T::WorkerAllocated => {
                let role = d
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("unspecified")
                    .to_owned();
                section(&mut root, "workers").insert(role, with_date());
            }
            T::DestinationRecorded => {
                section(&mut root, "education_employment")
                    .insert("destination".into(), with_date());
            }
            T::NeetOnset => {
                section(&mut root, "education_employment").insert("neet".into(), with_date());
            }
            T::EnrolmentStarted => {
                let ee = section(&mut root, "education_employment");
                ee.insert("enrolment".into(), with_date());
                ee.remove("enrolment_ended");
            }
            T::EnrolmentEnded => {
                section(&mut root, "education_employment")
                    .insert("enrolment_ended".into(), with_date());
            }
            T::PlaceAtRisk => {
                section(&mut root, "education_employment").insert("at_risk".into(), with_date());
            }
            T::PathwayPlanReviewed => {
                section(&mut root, "plans").insert("pathway_plan".into(), with_date());
            }
            T::CareLeaverOutcomeRecorded => {
                let age = d
                    .get("birthday_age")
                    .map(ToString::to_string)
                    .unwrap_or_default();
                section(&mut root, "outcomes").insert(age, with_date());
            }
            T::MeetingHeld => list(&mut root, "meetings").push(with_date()),
            T::ConsentGranted
            | T::ConsentWithdrawn
            | T::DisclosureOverrideRecorded
            | T::DisclosureOverrideEnded => {
                list(&mut root, "consent").push(
                    json!({ "type": s.event_type, "seq": s.seq, "source": s.source, "data": d }),
                );
            }
            T::DeadlineSet | T::DeadlineMet | T::DeadlineOverdue => {
                list(&mut root, "deadlines")
                    .push(json!({ "type": s.event_type, "seq": s.seq, "data": d }));
            }
            T::YoungPersonErased => {}
            T::RetentionPurged => {
                list(&mut root, "retention")
                    .push(json!({ "type": s.event_type, "seq": s.seq, "data": d }));
            }
        }
        sources.push(json!({
            "seq": s.seq,
            "type": s.event_type,
            "source": s.source,
            "occurred_at": s.occurred_at,
            "basis": s.basis.as_ref().map_or(json!({ "kind": "own" }), |b| json!(b)),
        }));
    }
    root.insert("young_person".into(), json!(young_person));
    root.insert("as_of_seq".into(), json!(seen.last().map_or(0, |s| s.seq)));
    root.insert("events".into(), Value::Array(sources));
    Value::Object(root)
}
