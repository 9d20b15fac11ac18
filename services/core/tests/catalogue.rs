//! The Rust event types, the JSON Schemas and the code lists agree.

use pathway_core::catalogue::EventType;
use pathway_core::codes;
use pathway_core::events::EventData;
use pathway_core::samples;
use serde_json::Value;
use std::collections::BTreeSet;

fn schema(ty: EventType) -> Value {
    serde_json::from_str(ty.schema_v1()).unwrap()
}

#[test]
fn every_type_in_the_data_standard_is_in_the_catalogue() {
    let standard = include_str!("../../../schemas/envelope.v1.json");
    let envelope: Value = serde_json::from_str(standard).unwrap();
    let listed: BTreeSet<&str> = envelope["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(listed, ours);
    assert_eq!(
        ours.len(),
        25,
        "19 agency types and 6 of the exchange's own"
    );
}

#[test]
fn schema_properties_match_rust_fields() {
    for ty in EventType::ALL {
        let s = schema(*ty);
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{ty}"
        );
        assert_eq!(
            s["additionalProperties"], false,
            "{ty}: unknown fields must be refused"
        );
        let in_schema: BTreeSet<&str> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let in_rust: BTreeSet<&str> = EventData::field_names(*ty).iter().copied().collect();
        assert_eq!(in_schema, in_rust, "{ty}");
    }
}

#[test]
fn samples_satisfy_both_schema_and_rust_type() {
    for ty in EventType::ALL {
        let data = samples::data(*ty);
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema(*ty))
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{ty}: {errors:?}");
        EventData::parse(*ty, &data).unwrap_or_else(|e| panic!("{ty}: {e}"));
    }
}

/// (type, field, code list, only codes whose `status` is...)
const CODED: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "looked-after.started",
        "legal_status",
        "ssda903-legal-status",
        None,
    ),
    (
        "looked-after.started",
        "category_of_need",
        "ssda903-category-of-need",
        None,
    ),
    (
        "legal-status.changed",
        "legal_status",
        "ssda903-legal-status",
        None,
    ),
    (
        "looked-after.ceased",
        "reason",
        "ssda903-reason-episode-ceased",
        None,
    ),
    (
        "placement.changed",
        "placement_type",
        "ssda903-placement-type",
        None,
    ),
    (
        "placement.changed",
        "provider",
        "ssda903-placement-provider",
        None,
    ),
    (
        "placement.changed",
        "reason",
        "ssda903-reason-placement-change",
        None,
    ),
    (
        "destination.recorded",
        "activity_code",
        "nccis-activity-codes",
        None,
    ),
    (
        "neet.onset",
        "activity_code",
        "nccis-activity-codes",
        Some("neet"),
    ),
    (
        "care-leaver.outcome-recorded",
        "in_touch",
        "oc3-in-touch",
        None,
    ),
    (
        "care-leaver.outcome-recorded",
        "activity",
        "oc3-activity",
        None,
    ),
];

#[test]
fn coded_fields_enumerate_exactly_their_code_list() {
    for (ty, field, list, status) in CODED {
        let s = schema(EventType::parse(ty).unwrap());
        let in_schema: BTreeSet<&str> = s["properties"][field]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{ty}.{field} has no enum"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let list = codes::by_name(list).unwrap();
        let in_list: BTreeSet<&str> = list
            .codes()
            .filter(|c| status.is_none_or(|st| list.column(c, "status") == Some(st)))
            .collect();
        assert_eq!(in_schema, in_list, "{ty}.{field}");
    }
}

#[test]
fn accommodation_codes_follow_the_suitability_rule() {
    let s = schema(EventType::CareLeaverOutcomeRecorded);
    let in_schema: BTreeSet<String> = s["properties"]["accommodation"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let list = codes::oc3_accommodation();
    let mut expected = BTreeSet::new();
    for letter in list.codes() {
        expected.insert(format!("{letter}2"));
        if list.column(letter, "suitable_allowed") == Some("yes") {
            expected.insert(format!("{letter}1"));
        }
    }
    assert_eq!(in_schema, expected);
    assert!(!in_schema.contains("S1") && !in_schema.contains("X1"));
}

#[test]
fn project_code_lists_are_the_shared_reference() {
    // The project carries its own copy (a fresh clone must build alone); when the shared
    // reference is beside it, the copy must not have drifted.
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference");
    if !shared.exists() {
        return;
    }
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reference");
    for entry in std::fs::read_dir(&shared).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            let name = path.file_name().unwrap();
            let a = std::fs::read(&path).unwrap();
            let b = std::fs::read(ours.join(name)).unwrap_or_default();
            assert!(
                a == b,
                "reference/{} differs from shared",
                name.to_string_lossy()
            );
        }
    }
}
