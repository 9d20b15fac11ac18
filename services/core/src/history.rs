//! A person's history as the timeline and reports read it: their log entries, parsed into
//! typed data once.

use crate::catalogue::EventType;
use crate::date::Day;
use crate::events::EventData;
use crate::person::Fact;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Happened {
    pub seq: u64,
    pub id: Uuid,
    pub event_type: EventType,
    pub source: String,
    pub recorded_on: Day,
    pub occurred_on: Day,
    pub data: EventData,
}

/// Parses a person's facts, in log order. Entries whose data no longer parses (none should:
/// the log holds validated events) are skipped rather than failing the whole history.
pub fn parse(facts: &[Fact]) -> Vec<Happened> {
    facts
        .iter()
        .filter_map(|f| {
            EventData::parse_raw(f.event_type, f.data)
                .ok()
                .map(|data| Happened {
                    seq: f.seq,
                    id: f.id,
                    event_type: f.event_type,
                    source: f.source.to_owned(),
                    recorded_on: f.recorded_on,
                    occurred_on: f.occurred_on,
                    data,
                })
        })
        .collect()
}

/// The date of birth and the agency that registered the person, from their registration
/// and later corrections.
pub fn identity(history: &[Happened]) -> (Option<Day>, Option<&str>) {
    let mut dob = None;
    let mut owner = None;
    for h in history {
        match &h.data {
            EventData::YoungPersonRegistered(r) => {
                dob = Some(r.date_of_birth);
                owner = Some(h.source.as_str());
            }
            EventData::YoungPersonDetailsCorrected(c) => {
                if let Some(d) = c.date_of_birth {
                    dob = Some(d);
                }
            }
            _ => {}
        }
    }
    (dob, owner)
}
