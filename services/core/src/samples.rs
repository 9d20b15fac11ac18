//! One valid `data` per event type: fixtures for tests and benchmarks in every crate, kept
//! here so that a schema change breaks one place, loudly (the catalogue test validates them).

use crate::catalogue::EventType;
use serde_json::{json, Value};

pub fn data(ty: EventType) -> Value {
    use EventType as T;
    match ty {
        T::YoungPersonRegistered => json!({
            "given_name": "Ada", "family_name": "Example", "date_of_birth": "2008-05-01", "sex": "F",
            "identifiers": {"la_child_id": "C1001", "upn": "A123456789012", "uln": "1234567890", "nccis_id": "0000000001234"},
            "responsible_authority": "878"
        }),
        T::YoungPersonDetailsCorrected => json!({"family_name": "Sample"}),
        T::LookedAfterStarted => {
            json!({"start_date": "2022-01-10", "legal_status": "C2", "category_of_need": "N1"})
        }
        T::LegalStatusChanged => json!({"date": "2023-01-10", "legal_status": "V2"}),
        T::LookedAfterCeased => json!({"date": "2026-05-01", "reason": "E8"}),
        T::PlacementChanged => {
            json!({"start_date": "2025-03-01", "placement_type": "U1", "provider": "PR1", "postcode": "EX1 1AA", "reason": "CARPL"})
        }
        T::WorkerAllocated => {
            json!({"role": "leaving-care-personal-adviser", "name": "Pat Adviser", "team": "Leaving Care East", "email": "pat@example.org", "phone": "01234 567890", "from_date": "2025-06-01"})
        }
        T::DestinationRecorded => {
            json!({"activity_code": "230", "start_date": "2026-09-01", "date_ascertained": "2026-09-20", "establishment": {"name": "Exe College", "ukprn": "10000001"}, "period": "2026-Q3"})
        }
        T::NeetOnset => json!({"neet_start_date": "2026-10-01", "activity_code": "619"}),
        T::EnrolmentStarted => {
            json!({"course": "Level 3 Engineering", "level": "3", "start_date": "2026-09-01", "expected_end_date": "2028-06-30"})
        }
        T::PlaceAtRisk => json!({"date": "2026-11-01", "risk": "attendance"}),
        T::EnrolmentEnded => json!({"date": "2027-01-15", "reason": "withdrawn"}),
        T::PathwayPlanReviewed => {
            json!({"review_date": "2026-06-01", "next_review_due": "2026-12-01", "eet_goal": "Apprenticeship in engineering"})
        }
        T::CareLeaverOutcomeRecorded => {
            json!({"birthday_age": 18, "in_touch": "YES", "activity": "F2", "accommodation": "U1", "recorded_on": "2026-05-02"})
        }
        T::MeetingHeld => {
            json!({"kind": "neet-multi-agency", "date": "2026-10-05", "agencies": ["demo-la", "demo-careers"]})
        }
        T::ConsentGranted => {
            json!({"recipients": ["demo-college"], "categories": ["identity", "support", "education-employment"], "purpose": "Support with college", "given_by": "young-person", "method": "written", "evidence_ref": "FORM-123", "granted_on": "2026-09-01", "review_due": "2027-09-01"})
        }
        T::ConsentWithdrawn => {
            json!({"recipients": ["demo-college"], "withdrawn_on": "2026-11-01", "method": "written", "evidence_ref": "FORM-124"})
        }
        T::DisclosureOverrideRecorded => {
            json!({"basis": "child-protection", "recipients": ["demo-college"], "categories": ["placement"], "authorised_by": {"name": "Sam Manager", "role": "Team manager"}, "justification_ref": "CP-77", "expires_on": "2026-12-31"})
        }
        T::DisclosureOverrideEnded => {
            json!({"override_id": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "date": "2026-12-01"})
        }
        T::DeadlineSet => {
            json!({"rule": "neet-meeting", "due_on": "2026-10-08", "trigger_event": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "alerts": ["demo-careers"]})
        }
        T::DeadlineMet => {
            json!({"rule": "neet-meeting", "due_on": "2026-10-08", "met_by_event": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "met_on": "2026-10-05"})
        }
        T::DeadlineOverdue => json!({"rule": "neet-meeting", "due_on": "2026-10-08"}),
        T::IdentityLinked => {
            json!({"agency": "demo-careers", "identifiers": {"nccis_id": "0000000001234"}, "match": "exact-identifier"})
        }
        T::YoungPersonErased => json!({"erased_on": "2026-11-20", "authorised_by": "demo-la"}),
        T::RetentionPurged => {
            json!({"recipients": ["demo-college"], "flow": "la-to-college", "up_to_seq": 42, "retention_days": 1095})
        }
    }
}
