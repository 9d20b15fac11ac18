//! The fake SSDA903 samples (reference/samples/ssda903, from the DfE validator's test data)
//! load, and their invalid rows are reported rather than loaded.

use pathway_core::date::Day;
use pathway_core::ssda903::{collection_year_end, events, looked_after};

const HEADER: &str = include_str!("../../../reference/samples/ssda903/header.csv");
const EPISODES: &str = include_str!("../../../reference/samples/ssda903/episodes.csv");
const OC3: &str = include_str!("../../../reference/samples/ssda903/oc3.csv");

#[test]
fn the_fake_samples_load_with_their_invalid_rows_reported() {
    let (children, errors, rows) = looked_after(HEADER, EPISODES, Some(OC3)).unwrap();
    assert_eq!(rows, 100 + 200 + 53);
    // Every header and episode row is valid; OC3 rows with IN_TOUCH=DIED and an activity or
    // accommodation, or an activity code not on the list, are reported.
    assert!(
        errors.iter().all(|e| e.file.as_deref() == Some("oc3")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.line == 2
        && e.column.as_deref() == Some("ACTIV")
        && e.message.contains("DIED")));
    let bad_lines: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.line).collect();
    let oc3_loaded = children.iter().filter(|c| c.oc3.is_some()).count();
    assert_eq!(oc3_loaded + bad_lines.len(), 53);
    // The return is for 2020-21: the OC3 birthdays fall in it.
    let today = Day::parse("2026-11-02").unwrap();
    let year_end = collection_year_end(Some(2021), today);
    let mut kinds = std::collections::BTreeMap::new();
    for c in &children {
        for (ty, _, _) in events(c, today, year_end).unwrap() {
            *kinds.entry(ty.name()).or_insert(0) += 1;
        }
    }
    assert_eq!(kinds["care-leaver.outcome-recorded"], oc3_loaded);
    let in_care = children.iter().filter(|c| !c.episodes.is_empty()).count();
    assert!(
        in_care > 80 && kinds["looked-after.started"] >= in_care,
        "{kinds:?}"
    );
    assert!(kinds["placement.changed"] > kinds["looked-after.started"]);
}
