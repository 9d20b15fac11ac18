//! Turning a submitted envelope (JSON, as an agency sent it) into a [`Submitted`] event, or a
//! list of field errors that name each failing field by JSON pointer.
//!
//! Error messages never quote the submitted value: the value may be a name or a date of
//! birth, and errors end up in logs and in other systems' error queues.

use crate::canonical::{canonical_bytes, canonical_with_member};
use crate::catalogue::EventType;
use crate::events::EventData;
use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;
use uuid::Uuid;

/// One failing field: a JSON pointer into the submitted body, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, seen from an enclosing document (`/events/3` + `/data/x`).
    pub fn under(mut self, prefix: &str) -> FieldError {
        self.field = format!("{prefix}{}", self.field);
        self
    }
}

/// A schema-valid event as submitted, before the log gives it a sequence and version.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub id: Uuid,
    pub event_type: EventType,
    pub schema_version: u32,
    /// Absent only on a registration, where the exchange mints one.
    pub young_person: Option<Uuid>,
    pub occurred_at: String,
    pub expected_version: Option<u64>,
    /// The data's JSON text, as serde_json writes it (keys in order, no whitespace): a
    /// slice of the canonical bytes, which are written anyway, so the log's writer seals it
    /// as it is rather than serialising a value tree on its one thread.
    pub data: String,
    /// Canonical bytes of the envelope as sent: idempotency compares their digest.
    pub canonical: Vec<u8>,
    /// The sender's Ed25519 signature, if it signed, and what it signed: the canonical
    /// bytes of the envelope without `signature` (empty when the envelope has none).
    pub signature: Option<Signature>,
    pub signed: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    /// Hex public key.
    pub key: String,
    /// Hex signature.
    pub value: String,
}

struct Validators {
    envelope: Validator,
    data: HashMap<EventType, Validator>,
}

fn compile(text: &str) -> Validator {
    let schema: Value = serde_json::from_str(text).expect("embedded schema is JSON");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("embedded schema compiles")
}

fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| Validators {
        envelope: compile(include_str!("../../../schemas/envelope.v1.json")),
        data: EventType::ALL
            .iter()
            .map(|t| (*t, compile(t.schema_v1())))
            .collect(),
    })
}

/// Compiles every schema now, so the first request does not pay for it.
pub fn warm_up() {
    validators();
}

fn schema_errors(validator: &Validator, instance: &Value, prefix: &str) -> Vec<FieldError> {
    // Most events are valid, and `is_valid` stops at nothing and builds no error values:
    // it costs a fraction of walking `iter_errors` (BENCHMARKS.md, stages).
    if validator.is_valid(instance) {
        return Vec::new();
    }
    validator
        .iter_errors(instance)
        .flat_map(|e| {
            let at = format!("{prefix}{}", e.instance_path().as_str());
            match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                    .iter()
                    .map(|name| FieldError::new(format!("{at}/{name}"), "unknown field"))
                    .collect(),
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    vec![FieldError::new(
                        format!("{at}/{name}"),
                        "required field is missing",
                    )]
                }
                _ => vec![FieldError::new(at, e.masked().to_string())],
            }
        })
        .fold(Vec::new(), |mut out: Vec<FieldError>, e| {
            // A date can fail both `format` and `pattern`: one error per field is clearer.
            if !out.iter().any(|o| o.field == e.field) {
                out.push(e);
            }
            out
        })
}

/// Validates one envelope against the envelope schema and its type's data schema.
pub fn validate(envelope: &Value) -> Result<Submitted, Vec<FieldError>> {
    let v = validators();
    let mut errors = schema_errors(&v.envelope, envelope, "");
    for e in &mut errors {
        if e.field == "/type" && !e.message.starts_with("required") {
            e.message = "unknown event type (see schemas/events/)".into();
        }
    }
    let ty = envelope
        .get("type")
        .and_then(Value::as_str)
        .and_then(EventType::parse);
    let data = envelope.get("data");
    if let (Some(ty), Some(data @ Value::Object(_))) = (ty, data) {
        errors.extend(schema_errors(&v.data[&ty], data, "/data"));
        if errors.is_empty() {
            if let Err(e) = EventData::parse(ty, data) {
                // The schema admits only real-looking dates; serde also knows the calendar.
                errors.push(FieldError::new(
                    "/data",
                    format!("invalid data: {}", strip_value(&e)),
                ));
            }
        }
    }
    if let Some(ty) = ty {
        if ty != EventType::YoungPersonRegistered && envelope.get("young_person").is_none() {
            errors.push(FieldError::new(
                "/young_person",
                "required field is missing",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let ty = ty.expect("schema checked the type");
    let field = |k: &str| envelope.get(k);
    let (canonical, data) = canonical_with_member(envelope, "data");
    let data = match data {
        Some(span) => String::from_utf8(canonical[span].to_vec()).expect("JSON text is UTF-8"),
        None => "null".to_owned(),
    };
    Ok(Submitted {
        id: parse_uuid(field("id")).expect("schema checked the id"),
        event_type: ty,
        schema_version: field("schema_version").and_then(Value::as_u64).unwrap_or(1) as u32,
        young_person: parse_uuid(field("young_person")),
        occurred_at: field("occurred_at")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        expected_version: field("expected_version").and_then(Value::as_u64),
        data,
        canonical,
        signature: field("signature").and_then(|s| serde_json::from_value(s.clone()).ok()),
        // Only a signature needs its own canonical form; the envelope is not copied for
        // the unsigned majority.
        signed: match envelope {
            Value::Object(m) if m.contains_key("signature") => {
                let mut unsigned = m.clone();
                unsigned.remove("signature");
                canonical_bytes(&Value::Object(unsigned))
            }
            _ => Vec::new(),
        },
    })
}

fn parse_uuid(v: Option<&Value>) -> Option<Uuid> {
    v.and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// serde's messages can quote the input (`invalid value: string "Jane"`); keep only the shape.
fn strip_value(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(": ") {
        Some(i) if text.starts_with("invalid") => text[..i].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn destination(data: Value) -> Value {
        json!({
            "id": "6f2c1f0e-8a59-4c1e-9d2a-1b3c4d5e6f70",
            "type": "destination.recorded",
            "young_person": "0b8f7c5e-3d2a-4f1b-8c9d-0e1f2a3b4c5d",
            "occurred_at": "2026-10-01T09:00:00Z",
            "data": data,
        })
    }

    fn fields(e: Vec<FieldError>) -> Vec<String> {
        e.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_destination_passes() {
        let s = validate(&destination(json!({
            "activity_code": "230", "start_date": "2026-09-01", "date_ascertained": "2026-09-20"
        })))
        .unwrap();
        assert_eq!(s.event_type, EventType::DestinationRecorded);
        assert_eq!(s.schema_version, 1);
    }

    #[test]
    fn the_data_recorded_is_its_json_text_as_serde_json_writes_it() {
        let mut data = json!({
            "start_date": "2026-09-01", "activity_code": "230", "date_ascertained": "2026-09-20"
        });
        data["establishment"] = json!({"name": "Zoë's \"College\"", "number": "1234567"});
        let valid = destination(data.clone());
        let s = validate(&valid).unwrap();
        assert_eq!(s.data, serde_json::to_string(&data).unwrap());
        assert_eq!(serde_json::from_str::<Value>(&s.data).unwrap(), data);
    }

    #[test]
    fn a_code_not_on_its_list_names_the_field() {
        let e = validate(&destination(json!({
            "activity_code": "999", "start_date": "2026-09-01", "date_ascertained": "2026-09-20"
        })))
        .unwrap_err();
        assert_eq!(fields(e), vec!["/data/activity_code"]);
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = validate(&destination(json!({
            "activity_code": "230", "start_date": "2026-09-01", "shoe_size": 9
        })))
        .unwrap_err();
        let mut f = fields(e);
        f.sort();
        assert_eq!(f, vec!["/data/date_ascertained", "/data/shoe_size"]);
    }

    #[test]
    fn impossible_dates_are_refused() {
        let e = validate(&destination(json!({
            "activity_code": "230", "start_date": "2026-02-30", "date_ascertained": "2026-09-20"
        })))
        .unwrap_err();
        assert_eq!(fields(e), vec!["/data/start_date"]);
    }

    #[test]
    fn errors_do_not_quote_the_value() {
        let mut env = destination(json!({}));
        env["type"] = json!("young-person.registered");
        env["data"] = json!({"given_name": "Zebedee", "date_of_birth": "Zebedee", "sex": "M",
                             "identifiers": {}, "responsible_authority": "878"});
        let e = validate(&env).unwrap_err();
        assert_eq!(fields(e.clone()), vec!["/data/date_of_birth"]);
        assert!(!format!("{e:?}").contains("Zebedee"), "{e:?}");
    }

    #[test]
    fn an_unknown_type_is_named() {
        let mut env = destination(json!({}));
        env["type"] = json!("pony.delivered");
        let e = validate(&env).unwrap_err();
        assert_eq!(fields(e.clone()), vec!["/type"]);
        assert!(e[0].message.contains("unknown event type"));
    }

    #[test]
    fn young_person_is_required_except_on_registration() {
        let mut env = destination(json!({
            "activity_code": "230", "start_date": "2026-09-01", "date_ascertained": "2026-09-20"
        }));
        env.as_object_mut().unwrap().remove("young_person");
        assert_eq!(fields(validate(&env).unwrap_err()), vec!["/young_person"]);
    }
}
