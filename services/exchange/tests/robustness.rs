//! No panic reachable from input: arbitrary bytes and near-valid mutations fed to every
//! parser that reads what agencies send (envelopes, the two CSV importers, the SSDA903
//! reader, the configuration), checked to answer with errors, never to panic.
//!
//! This is property-based fuzzing with proptest, run in the ordinary test suite. It is not
//! coverage-guided: `cargo fuzz` needs a nightly toolchain this machine does not have (see
//! BENCHMARKS.md, "Fuzzing").

use pathway_core::{envelope, imports, ssda903};
use proptest::prelude::*;

/// Valid inputs, to mutate from: the parsers see mostly-plausible input, not only noise.
fn seeds() -> Vec<String> {
    vec![
        serde_json::json!({"id": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "type": "destination.recorded",
            "young_person": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4e", "occurred_at": "2026-11-02T10:00:00Z",
            "data": pathway_core::samples::data(pathway_core::EventType::DestinationRecorded)})
        .to_string(),
        "YoungPersonsID,DOB,ActivityCode,StartDate,DateAscertained\n0000000000001,2008-05-01,230,2026-09-01,2026-09-20\n".into(),
        include_str!("../../../reference/samples/ssda903/header.csv")[..400].into(),
        include_str!("../../../reference/samples/ssda903/episodes.csv")[..400].into(),
        exchange::config::DEMO[..600].into(),
    ]
}

fn mutated() -> impl Strategy<Value = String> {
    (
        0..seeds().len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 0..8),
    )
        .prop_map(|(i, edits)| {
            let mut chars: Vec<char> = seeds()[i].chars().collect();
            for (at, c, kind) in edits {
                if chars.is_empty() {
                    chars.push(c);
                    continue;
                }
                let at = at.index(chars.len());
                match kind {
                    0 => chars[at] = c,
                    1 => chars.insert(at, c),
                    _ => {
                        chars.remove(at);
                    }
                }
            }
            chars.into_iter().collect()
        })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        mutated(),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn envelopes_answer_with_errors_not_panics(text in any_text()) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = envelope::validate(&value);
        }
    }

    #[test]
    fn destination_files_answer_with_errors_not_panics(text in any_text()) {
        let _ = imports::destinations(&text);
    }

    #[test]
    fn looked_after_files_answer_with_errors_not_panics(a in any_text(), b in any_text(), c in any_text()) {
        if let Ok((children, _, _)) = ssda903::looked_after(&a, &b, Some(&c)) {
            let today = pathway_core::date::Day::parse("2026-11-02").unwrap();
            for child in &children {
                let _ = ssda903::events(child, today, ssda903::collection_year_end(None, today));
            }
        }
    }

    #[test]
    fn configurations_answer_with_errors_not_panics(text in any_text()) {
        let _ = exchange::config::parse(&text, "fuzz");
    }
}
