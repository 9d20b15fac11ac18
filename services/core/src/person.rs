//! What policy must know about one young person, evolved event by event from the log: date
//! of birth (for age bands), consent per recipient and category, and overrides in force.
//!
//! Consent is kept as (recipient, category) pairs rather than as grants, because withdrawal
//! speaks in pairs: withdrawing `education-employment` from a college leaves the college's
//! other categories, from whichever grant they came, untouched.

use crate::catalogue::{Category, EventType};
use crate::date::Day;
use crate::events::EventData;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The facts of one logged event that policy and projections read.
#[derive(Debug, Clone, Copy)]
pub struct Fact<'a> {
    pub seq: u64,
    pub id: Uuid,
    pub event_type: EventType,
    pub source: &'a str,
    pub young_person: Uuid,
    /// The date the exchange recorded it: time-dependent rules (override expiry) use this,
    /// so that a rebuild decides exactly as the live run did.
    pub recorded_on: Day,
    /// The date it happened: age bands use this.
    pub occurred_on: Day,
    pub data: &'a RawValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub recipients: Vec<String>,
    pub categories: Vec<Category>,
    pub expires_on: Day,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersonState {
    pub registered_by: Option<String>,
    pub date_of_birth: Option<Day>,
    /// recipient → category → the grant that allows it. Nested, so a lookup by `&str`
    /// allocates nothing: policy asks this for every event and every recipient.
    consent: BTreeMap<String, BTreeMap<Category, Uuid>>,
    overrides: BTreeMap<Uuid, Override>,
}

/// A withdrawal's effect: which (recipient, category) pairs stopped flowing on consent.
pub type Withdrawn = Vec<(String, Category)>;

impl PersonState {
    /// Applies one event. Returns the pairs a withdrawal removed, so the projector can drop
    /// consent-based data from those recipients' read models.
    pub fn evolve(&mut self, fact: &Fact) -> Withdrawn {
        if !Self::changed_by(fact.event_type) {
            return Vec::new();
        }
        let Ok(data) = EventData::parse_raw(fact.event_type, fact.data) else {
            return Vec::new(); // the log holds only validated events; nothing to learn
        };
        match data {
            EventData::YoungPersonRegistered(r) => {
                self.registered_by = Some(fact.source.to_owned());
                self.date_of_birth = Some(r.date_of_birth);
            }
            EventData::YoungPersonDetailsCorrected(c) => {
                if let Some(dob) = c.date_of_birth {
                    self.date_of_birth = Some(dob);
                }
            }
            EventData::ConsentGranted(g) => {
                for r in &g.recipients {
                    for c in &g.categories {
                        self.consent
                            .entry(r.clone())
                            .or_default()
                            .insert(*c, fact.id);
                    }
                }
            }
            EventData::ConsentWithdrawn(w) => {
                let categories = w.categories.unwrap_or_else(|| Category::ALL.to_vec());
                let mut removed = Vec::new();
                for r in &w.recipients {
                    for c in &categories {
                        let granted = self.consent.get_mut(r);
                        if granted.and_then(|g| g.remove(c)).is_some() {
                            removed.push((r.clone(), *c));
                        }
                    }
                }
                return removed;
            }
            EventData::DisclosureOverrideRecorded(o) => {
                self.overrides.insert(
                    fact.id,
                    Override {
                        recipients: o.recipients,
                        categories: o.categories,
                        expires_on: o.expires_on,
                    },
                );
            }
            EventData::DisclosureOverrideEnded(e) => {
                self.overrides.remove(&e.override_id);
            }
            _ => {}
        }
        Vec::new()
    }

    /// Whether events of this type can change the state: only identity and consent do, so
    /// the rest need not be parsed at all.
    pub fn changed_by(ty: EventType) -> bool {
        matches!(
            ty,
            EventType::YoungPersonRegistered | EventType::YoungPersonDetailsCorrected
        ) || ty.category() == Category::Consent
    }

    pub fn age_on(&self, day: Day) -> Option<i32> {
        self.date_of_birth.map(|dob| dob.age_on(day))
    }

    pub fn consent_for(&self, recipient: &str, category: Category) -> Option<Uuid> {
        self.consent.get(recipient)?.get(&category).copied()
    }

    pub fn override_for(&self, recipient: &str, category: Category, on: Day) -> Option<Uuid> {
        self.overrides
            .iter()
            .find(|(_, o)| {
                on <= o.expires_on
                    && o.categories.contains(&category)
                    && o.recipients.iter().any(|r| r == recipient)
            })
            .map(|(id, _)| *id)
    }
}
