//! The event catalogue: every event type of data standard v1, with its category, who may
//! source it and its JSON Schema. One table, so that adding a type is one line here plus a
//! schema file, and the agreement test in `tests/catalogue.rs` notices anything missing.

use crate::agreements::AgencyKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What an event is about. Consent and agreements speak in categories, never in types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Identity,
    Care,
    Placement,
    EducationEmployment,
    Support,
    Plans,
    Outcomes,
    Consent,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Identity,
        Category::Care,
        Category::Placement,
        Category::EducationEmployment,
        Category::Support,
        Category::Plans,
        Category::Outcomes,
        Category::Consent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Identity => "identity",
            Category::Care => "care",
            Category::Placement => "placement",
            Category::EducationEmployment => "education-employment",
            Category::Support => "support",
            Category::Plans => "plans",
            Category::Outcomes => "outcomes",
            Category::Consent => "consent",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may source an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Agencies of these kinds.
    Kinds(&'static [AgencyKind]),
    /// Any agency.
    Any,
    /// Only the exchange itself (deadlines, identity links, erasure).
    Exchange,
}

use AgencyKind::{CareersService as CS, College as CO, LocalAuthority as LA};

macro_rules! catalogue {
    ($( $variant:ident => $name:literal, $cat:ident, $sources:expr; )*) => {
        /// Every event type of data standard v1.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventType { $( $variant, )* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant, )* ];

            pub fn name(self) -> &'static str {
                match self { $( EventType::$variant => $name, )* }
            }

            pub fn category(self) -> Category {
                match self { $( EventType::$variant => Category::$cat, )* }
            }

            pub fn sources(self) -> Sources {
                match self { $( EventType::$variant => $sources, )* }
            }

            /// The JSON Schema (draft 2020-12) of the type's `data`, version 1.
            pub fn schema_v1(self) -> &'static str {
                match self {
                    $( EventType::$variant => include_str!(concat!("../../../schemas/events/", $name, ".v1.json")), )*
                }
            }
        }
    };
}

catalogue! {
    YoungPersonRegistered => "young-person.registered", Identity, Sources::Kinds(&[LA, CS]);
    YoungPersonDetailsCorrected => "young-person.details-corrected", Identity, Sources::Kinds(&[LA, CS]);
    LookedAfterStarted => "looked-after.started", Care, Sources::Kinds(&[LA]);
    LegalStatusChanged => "legal-status.changed", Care, Sources::Kinds(&[LA]);
    LookedAfterCeased => "looked-after.ceased", Care, Sources::Kinds(&[LA]);
    PlacementChanged => "placement.changed", Placement, Sources::Kinds(&[LA]);
    WorkerAllocated => "worker.allocated", Support, Sources::Kinds(&[LA, CS, CO]);
    DestinationRecorded => "destination.recorded", EducationEmployment, Sources::Kinds(&[CS]);
    NeetOnset => "neet.onset", EducationEmployment, Sources::Kinds(&[CS, LA, CO]);
    EnrolmentStarted => "enrolment.started", EducationEmployment, Sources::Kinds(&[CO]);
    PlaceAtRisk => "place.at-risk", EducationEmployment, Sources::Kinds(&[CO, CS, LA]);
    EnrolmentEnded => "enrolment.ended", EducationEmployment, Sources::Kinds(&[CO]);
    PathwayPlanReviewed => "pathway-plan.reviewed", Plans, Sources::Kinds(&[LA]);
    CareLeaverOutcomeRecorded => "care-leaver.outcome-recorded", Outcomes, Sources::Kinds(&[LA]);
    MeetingHeld => "meeting.held", Support, Sources::Any;
    ConsentGranted => "consent.granted", Consent, Sources::Any;
    ConsentWithdrawn => "consent.withdrawn", Consent, Sources::Any;
    DisclosureOverrideRecorded => "disclosure-override.recorded", Consent, Sources::Kinds(&[LA, CS]);
    DisclosureOverrideEnded => "disclosure-override.ended", Consent, Sources::Kinds(&[LA, CS]);
    DeadlineSet => "deadline.set", Support, Sources::Exchange;
    DeadlineMet => "deadline.met", Support, Sources::Exchange;
    DeadlineOverdue => "deadline.overdue", Support, Sources::Exchange;
    IdentityLinked => "identity.linked", Identity, Sources::Exchange;
    YoungPersonErased => "young-person.erased", Identity, Sources::Exchange;
    RetentionPurged => "retention.purged", Consent, Sources::Exchange;
}

impl EventType {
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// Whether an agency of this kind may send this type. The exchange's own types are never
    /// accepted from outside, whatever the configuration says.
    pub fn may_be_sourced_by(self, kind: AgencyKind) -> bool {
        match self.sources() {
            Sources::Any => true,
            Sources::Kinds(kinds) => kinds.contains(&kind),
            Sources::Exchange => false,
        }
    }

    /// Consent-category events speak about recipients by name; policy sends them to those.
    pub fn names_recipients(self) -> bool {
        self.category() == Category::Consent
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventType::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type `{s}`")))
    }
}
