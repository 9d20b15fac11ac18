//! The typed data of every event type. Unknown fields are refused here as in the schemas, so
//! a field a sender invents never reaches the log.
//!
//! The schema is the first gate at ingest (it gives field paths for errors); these types are
//! the second (real calendar dates) and what policy and read models read. The test
//! `tests/catalogue.rs` checks that field names here and in the schemas are the same.

use crate::catalogue::{Category, EventType};
use crate::date::Day;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Identifiers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub la_child_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uln: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nccis_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoungPersonRegistered {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Day,
    pub sex: String,
    pub identifiers: Identifiers,
    pub responsible_authority: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoungPersonDetailsCorrected {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Option<Day>,
    pub sex: Option<String>,
    pub identifiers: Option<Identifiers>,
    pub responsible_authority: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookedAfterStarted {
    pub start_date: Day,
    pub legal_status: String,
    pub category_of_need: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalStatusChanged {
    pub date: Day,
    pub legal_status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookedAfterCeased {
    pub date: Day,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementChanged {
    pub start_date: Day,
    pub placement_type: String,
    pub provider: Option<String>,
    pub postcode: Option<String>,
    pub host_authority: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerAllocated {
    pub role: String,
    pub name: String,
    pub team: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub from_date: Day,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Establishment {
    pub number: Option<String>,
    pub name: Option<String>,
    pub ukprn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationRecorded {
    pub activity_code: String,
    pub start_date: Day,
    pub date_ascertained: Day,
    pub establishment: Option<Establishment>,
    pub due_to_lapse_date: Option<Day>,
    pub period: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeetOnset {
    pub neet_start_date: Day,
    pub activity_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentStarted {
    pub course: String,
    pub level: Option<String>,
    pub start_date: Day,
    pub expected_end_date: Option<Day>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceAtRisk {
    pub date: Day,
    pub risk: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentEnded {
    pub date: Day,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathwayPlanReviewed {
    pub review_date: Day,
    pub next_review_due: Day,
    pub eet_goal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareLeaverOutcomeRecorded {
    pub birthday_age: u8,
    pub in_touch: String,
    pub activity: Option<String>,
    pub accommodation: Option<String>,
    pub recorded_on: Day,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingHeld {
    pub kind: String,
    pub date: Day,
    pub agencies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentGranted {
    pub recipients: Vec<String>,
    pub categories: Vec<Category>,
    pub purpose: String,
    pub given_by: String,
    pub method: String,
    pub evidence_ref: String,
    pub granted_on: Day,
    pub review_due: Day,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentWithdrawn {
    pub recipients: Vec<String>,
    /// Absent means every category.
    pub categories: Option<Vec<Category>>,
    pub withdrawn_on: Day,
    pub method: String,
    pub evidence_ref: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorisedBy {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureOverrideRecorded {
    pub basis: String,
    pub recipients: Vec<String>,
    pub categories: Vec<Category>,
    pub authorised_by: AuthorisedBy,
    pub justification_ref: String,
    pub expires_on: Day,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureOverrideEnded {
    pub override_id: Uuid,
    pub date: Day,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineSet {
    pub rule: String,
    pub due_on: Day,
    pub trigger_event: Uuid,
    pub alerts: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineMet {
    pub rule: String,
    pub due_on: Day,
    pub met_by_event: Uuid,
    pub met_on: Day,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineOverdue {
    pub rule: String,
    pub due_on: Day,
    pub alerts: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityLinked {
    pub agency: String,
    pub identifiers: Identifiers,
    #[serde(rename = "match")]
    pub match_: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoungPersonErased {
    pub erased_on: Day,
    pub authorised_by: String,
}

/// Retention at a recipient: what it received on `flow`, at positions up to `up_to_seq`,
/// is past `retention_days` and leaves its read model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPurged {
    pub recipients: Vec<String>,
    pub flow: String,
    pub up_to_seq: u64,
    pub retention_days: u32,
}

macro_rules! event_data {
    ($( $variant:ident ),* $(,)?) => {
        /// The typed data of an event, one variant per [`EventType`].
        #[derive(Debug, Clone, PartialEq)]
        pub enum EventData { $( $variant($variant), )* }

        impl EventData {
            /// Parses `data` as the given type's fields.
            pub fn parse(ty: EventType, data: &serde_json::Value) -> Result<EventData, serde_json::Error> {
                Ok(match ty {
                    $( EventType::$variant => EventData::$variant($variant::deserialize(data)?), )*
                })
            }

            /// Parses `data` straight from its JSON text, without building a value tree.
            pub fn parse_raw(ty: EventType, data: &serde_json::value::RawValue) -> Result<EventData, serde_json::Error> {
                Ok(match ty {
                    $( EventType::$variant => EventData::$variant(serde_json::from_str(data.get())?), )*
                })
            }

            /// The field names the Rust type accepts, for the catalogue agreement test.
            pub fn field_names(ty: EventType) -> &'static [&'static str] {
                match ty {
                    $( EventType::$variant => crate::events::fields_of::<$variant>(), )*
                }
            }
        }
    };
}

event_data!(
    YoungPersonRegistered,
    YoungPersonDetailsCorrected,
    LookedAfterStarted,
    LegalStatusChanged,
    LookedAfterCeased,
    PlacementChanged,
    WorkerAllocated,
    DestinationRecorded,
    NeetOnset,
    EnrolmentStarted,
    PlaceAtRisk,
    EnrolmentEnded,
    PathwayPlanReviewed,
    CareLeaverOutcomeRecorded,
    MeetingHeld,
    ConsentGranted,
    ConsentWithdrawn,
    DisclosureOverrideRecorded,
    DisclosureOverrideEnded,
    DeadlineSet,
    DeadlineMet,
    DeadlineOverdue,
    IdentityLinked,
    YoungPersonErased,
    RetentionPurged,
);

/// The serde field names of a struct, read by asking serde itself (a deserializer that only
/// records what `deserialize_struct` is told), so the list cannot drift from the type.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut out = None;
    let _ = T::deserialize(Probe(&mut out));
    out.unwrap_or(&[])
}
