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
    pub recorded_by: String,
    pub recipients: Vec<String>,
    pub categories: Vec<Category>,
    pub expires_on: Day,
    /// Set by `disclosure-override.ended`. Ended overrides are kept, not forgotten, so the
    /// end can be told to the recipients the override named.
    pub ended_on: Option<Day>,
}

impl Override {
    /// In force on `day`: not ended and not past its expiry. Expiry needs no event: it is
    /// checked against the date each later event was recorded.
    pub fn in_force(&self, day: Day) -> bool {
        self.ended_on.is_none() && day <= self.expires_on
    }
}

/// A `consent.granted` that is still the basis of at least one (recipient, category) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub recorded_by: String,
    pub review_due: Day,
    /// Where the grant sits in the log, so the consent review can show it without a search.
    #[serde(default)]
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersonState {
    pub registered_by: Option<String>,
    pub date_of_birth: Option<Day>,
    /// Boxed and absent until a consent or override event: most people never have one, and
    /// the projector keeps 100,000 of these in a map whose every slot is this struct's size
    /// (three maps inline made a slot 120 bytes, 16 MB at a large import's peak).
    consent: Option<Box<Consents>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Consents {
    /// recipient → category → the grant that allows it. Nested, so a lookup by `&str`
    /// allocates nothing: policy asks this for every event and every recipient.
    pairs: BTreeMap<String, BTreeMap<Category, Uuid>>,
    /// Grants still in force, for the consent review. A grant leaves when no pair rests on
    /// it any more: withdrawn, or renewed by a later grant for the same pairs.
    grants: BTreeMap<Uuid, Grant>,
    overrides: BTreeMap<Uuid, Override>,
}

static NO_GRANTS: BTreeMap<Uuid, Grant> = BTreeMap::new();
static NO_OVERRIDES: BTreeMap<Uuid, Override> = BTreeMap::new();

/// What one event changed in the consent picture, for the projector to act on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    /// (recipient, category) pairs a withdrawal removed: their consent-based data leaves the
    /// recipient's read model.
    pub withdrawn: Vec<(String, Category)>,
    /// Pairs a grant newly covers (not covered just before): the recipient is brought up to
    /// the current permitted state.
    pub granted: Vec<(String, Category)>,
    /// Grants no pair rests on any more, as they were.
    pub grants_ended: Vec<(Uuid, Grant)>,
}

impl PersonState {
    /// Applies one event and says what it changed.
    pub fn evolve(&mut self, fact: &Fact) -> Change {
        let mut change = Change::default();
        if !Self::changed_by(fact.event_type) {
            return change;
        }
        let Ok(data) = EventData::parse_raw(fact.event_type, fact.data) else {
            return change; // the log holds only validated events; nothing to learn
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
                let held = self.consent.get_or_insert_default();
                let mut replaced = Vec::new();
                for r in &g.recipients {
                    for c in &g.categories {
                        let pairs = held.pairs.entry(r.clone()).or_default();
                        match pairs.insert(*c, fact.id) {
                            None => change.granted.push((r.clone(), *c)),
                            Some(old) if old != fact.id => replaced.push(old),
                            Some(_) => {}
                        }
                    }
                }
                held.grants.insert(
                    fact.id,
                    Grant {
                        recorded_by: fact.source.to_owned(),
                        review_due: g.review_due,
                        seq: fact.seq,
                    },
                );
                change.grants_ended = held.unreferenced(replaced);
            }
            EventData::ConsentWithdrawn(w) => {
                let Some(held) = self.consent.as_mut() else {
                    return change;
                };
                let categories = w.categories.unwrap_or_else(|| Category::ALL.to_vec());
                let mut released = Vec::new();
                for r in &w.recipients {
                    for c in &categories {
                        let granted = held.pairs.get_mut(r);
                        if let Some(grant) = granted.and_then(|g| g.remove(c)) {
                            change.withdrawn.push((r.clone(), *c));
                            released.push(grant);
                        }
                    }
                }
                held.pairs.retain(|_, pairs| !pairs.is_empty());
                change.grants_ended = held.unreferenced(released);
            }
            EventData::DisclosureOverrideRecorded(o) => {
                self.consent.get_or_insert_default().overrides.insert(
                    fact.id,
                    Override {
                        recorded_by: fact.source.to_owned(),
                        recipients: o.recipients,
                        categories: o.categories,
                        expires_on: o.expires_on,
                        ended_on: None,
                    },
                );
            }
            EventData::DisclosureOverrideEnded(e) => {
                let held = self.consent.as_mut().map(|c| &mut c.overrides);
                if let Some(o) = held.and_then(|o| o.get_mut(&e.override_id)) {
                    o.ended_on.get_or_insert(e.date);
                }
            }
            _ => {}
        }
        // Back to nothing held, back to no box: equal states compare equal however reached.
        if self.consent.as_deref() == Some(&Consents::default()) {
            self.consent = None;
        }
        change
    }

    /// Whether events of this type can change the state: only identity and consent do, so
    /// the rest need not be parsed at all.
    pub fn changed_by(ty: EventType) -> bool {
        matches!(
            ty,
            EventType::YoungPersonRegistered | EventType::YoungPersonDetailsCorrected
        ) || ty.category() == Category::Consent
    }

    /// Who registered the person and when they were born, when that is all the state holds
    /// (no consent and no override: most people). A projector holding a million people keeps
    /// those two in a few bytes; every field is named here, so a field added to the state
    /// cannot be silently left out of that packing.
    pub fn into_plain(self) -> Result<(Option<String>, Option<Day>), PersonState> {
        let PersonState {
            registered_by,
            date_of_birth,
            consent,
        } = self;
        match consent {
            None => Ok((registered_by, date_of_birth)),
            Some(consent) => Err(PersonState {
                registered_by,
                date_of_birth,
                consent: Some(consent),
            }),
        }
    }

    /// The state [`PersonState::into_plain`] took apart.
    pub fn plain(registered_by: Option<String>, date_of_birth: Option<Day>) -> PersonState {
        PersonState {
            registered_by,
            date_of_birth,
            consent: None,
        }
    }

    pub fn age_on(&self, day: Day) -> Option<i32> {
        self.date_of_birth.map(|dob| dob.age_on(day))
    }

    pub fn consent_for(&self, recipient: &str, category: Category) -> Option<Uuid> {
        self.consent
            .as_ref()?
            .pairs
            .get(recipient)?
            .get(&category)
            .copied()
    }

    /// Every (recipient, category) pair consent covers now, with its grant.
    pub fn consents(&self) -> impl Iterator<Item = (&str, Category, Uuid)> {
        self.consent
            .iter()
            .flat_map(|c| &c.pairs)
            .flat_map(|(r, pairs)| pairs.iter().map(move |(c, g)| (r.as_str(), *c, *g)))
    }

    /// Grants still in force (the basis of at least one pair).
    pub fn grants(&self) -> &BTreeMap<Uuid, Grant> {
        self.consent.as_ref().map_or(&NO_GRANTS, |c| &c.grants)
    }

    pub fn overrides(&self) -> &BTreeMap<Uuid, Override> {
        self.consent
            .as_ref()
            .map_or(&NO_OVERRIDES, |c| &c.overrides)
    }

    pub fn override_for(&self, recipient: &str, category: Category, on: Day) -> Option<Uuid> {
        self.overrides()
            .iter()
            .find(|(_, o)| {
                o.in_force(on)
                    && o.categories.contains(&category)
                    && o.recipients.iter().any(|r| r == recipient)
            })
            .map(|(id, _)| *id)
    }
}

impl Consents {
    /// Of these grants, those no pair rests on any more; they leave `grants`.
    fn unreferenced(&mut self, mut candidates: Vec<Uuid>) -> Vec<(Uuid, Grant)> {
        candidates.sort();
        candidates.dedup();
        candidates
            .into_iter()
            .filter(|g| {
                !self
                    .pairs
                    .values()
                    .any(|pairs| pairs.values().any(|id| id == g))
            })
            .filter_map(|g| self.grants.remove(&g).map(|grant| (g, grant)))
            .collect()
    }
}
