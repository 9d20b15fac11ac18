//! Policy v1: the one function that decides whether a recipient receives an event, which of
//! its fields, and on what basis. Deny by default: every path that does not find a basis
//! ends in a [`Refusal`]. Nothing else in the system decides disclosure.
//!
//! The rule (data standard, "Consent and flows"): recipient R gets event E about Y from
//! source S only when a flow covers S → R for E's category and Y's age, and the flow is
//! statutory, or consent covers R and the category, or an override in force does. Consent
//! events reach the agencies they name.

use crate::agreements::{Agency, AgencyKind, Agreements, Flow, FlowBasis, EXCHANGE};
use crate::catalogue::{Category, EventType};
use crate::person::{Fact, PersonState};
use crate::readmodel::slot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Why a disclosure was allowed. Stored with every delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Basis {
    Statutory {
        flow: String,
    },
    Consent {
        flow: String,
        consent: Uuid,
    },
    Override {
        flow: String,
        override_id: Uuid,
    },
    /// A consent-category event addressed to this recipient.
    Named,
    /// An override about a person, told to the local authority that registered them: the
    /// corporate parent must know when their data moved without consent.
    Owner,
}

impl Basis {
    pub fn is_consent(&self) -> bool {
        matches!(self, Basis::Consent { .. })
    }

    /// The agreement flow the disclosure travelled on, if any.
    pub fn flow(&self) -> Option<&str> {
        match self {
            Basis::Statutory { flow }
            | Basis::Consent { flow, .. }
            | Basis::Override { flow, .. } => Some(flow),
            Basis::Named | Basis::Owner => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    pub basis: Basis,
    /// The only data fields that may leave; `None` means the whole event.
    pub fields: Option<Vec<String>>,
}

/// Why a disclosure was refused. `NoConsent` and `OutsideAge` matter (a flow exists and
/// something stopped it), so the disclosure log records them; `NoFlow` is the silent default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    NoFlow,
    OutsideAge { flow: String },
    NoConsent { flow: String },
}

impl Refusal {
    pub fn matters(&self) -> bool {
        !matches!(self, Refusal::NoFlow)
    }
}

pub type Decision = Result<Disclosure, Refusal>;

/// Decides one (event, recipient) pair.
pub fn decide(
    agreements: &Agreements,
    person: &PersonState,
    fact: &Fact,
    recipient: &Agency,
) -> Decision {
    let ty = fact.event_type;
    if ty.names_recipients() {
        return decide_consent_event(person, fact, recipient);
    }
    let source_kind = match agreements.agency(fact.source) {
        Some(a) => Some(a.kind),
        None if fact.source == EXCHANGE => None,
        None => return Err(Refusal::NoFlow),
    };
    let category = ty.category();
    let age = person.age_on(fact.occurred_on);
    let mut refusal = Refusal::NoFlow;
    let mut best: Option<(u8, Disclosure)> = None;
    let candidates = agreements
        .flows_to(&recipient.id)
        .filter(|f| f.categories.contains(&category) && f.covers(fact.source, source_kind));
    for flow in candidates {
        if !flow.covers_age(age) {
            if refusal == Refusal::NoFlow {
                refusal = Refusal::OutsideAge {
                    flow: flow.id.clone(),
                };
            }
            continue;
        }
        let found = match flow.basis {
            FlowBasis::Statutory => Some((
                0,
                Basis::Statutory {
                    flow: flow.id.clone(),
                },
            )),
            FlowBasis::Consent => person
                .consent_for(&recipient.id, category)
                .map(|consent| {
                    (
                        1,
                        Basis::Consent {
                            flow: flow.id.clone(),
                            consent,
                        },
                    )
                })
                .or_else(|| {
                    person
                        .override_for(&recipient.id, category, fact.recorded_on)
                        .map(|override_id| {
                            (
                                2,
                                Basis::Override {
                                    flow: flow.id.clone(),
                                    override_id,
                                },
                            )
                        })
                }),
        };
        match found {
            // Prefer the strongest basis: statutory, then consent, then an override.
            Some((rank, basis)) if best.as_ref().is_none_or(|(r, _)| rank < *r) => {
                best = Some((
                    rank,
                    Disclosure {
                        basis,
                        fields: fields_for(flow, ty.name()),
                    },
                ));
            }
            Some(_) => {}
            None => {
                refusal = Refusal::NoConsent {
                    flow: flow.id.clone(),
                }
            }
        }
    }
    best.map(|(_, d)| d).ok_or(refusal)
}

/// Consent events go by name: grants and withdrawals to the recipients they name, overrides
/// to theirs and to the owning local authority, an override's end to whoever the override
/// named. The rest of the event is not parsed.
fn decide_consent_event(person: &PersonState, fact: &Fact, recipient: &Agency) -> Decision {
    #[derive(Deserialize)]
    struct Named {
        recipients: Option<Vec<String>>,
        override_id: Option<Uuid>,
    }
    let named = serde_json::from_str::<Named>(fact.data.get()).ok();
    let recipients = named
        .as_ref()
        .and_then(|n| match (&n.recipients, n.override_id) {
            (Some(rs), _) => Some(rs.as_slice()),
            (None, Some(id)) => person.overrides().get(&id).map(|o| o.recipients.as_slice()),
            (None, None) => None,
        });
    let basis = if recipients.is_some_and(|rs| rs.contains(&recipient.id)) {
        Basis::Named
    } else if matches!(
        fact.event_type,
        EventType::DisclosureOverrideRecorded | EventType::DisclosureOverrideEnded
    ) && recipient.kind == AgencyKind::LocalAuthority
        && person.registered_by.as_deref() == Some(recipient.id.as_str())
    {
        Basis::Owner
    } else {
        return Err(Refusal::NoFlow);
    };
    Ok(Disclosure {
        basis,
        fields: None,
    })
}

/// What a recipient receives when a grant newly covers some of its categories: the events
/// that make up the person's current state in those categories (the latest placement, the
/// latest destination...), each decided as it would be now. Not every past event: a read
/// model after a re-grant shows what is permitted now, and the feed is not flooded with
/// history.
///
/// `history` is the person's events before the grant, in log order. Only consent-based
/// disclosures are restored: statutory ones were never withdrawn.
pub fn restore(
    agreements: &Agreements,
    person: &PersonState,
    history: &[Fact],
    recipient: &Agency,
    categories: &[Category],
) -> Vec<Restored> {
    let mut latest: BTreeMap<Slot, Restored> = BTreeMap::new();
    for fact in history {
        let category = fact.event_type.category();
        if !categories.contains(&category) || fact.source == recipient.id {
            continue;
        }
        let Ok(d) = decide(agreements, person, fact, recipient) else {
            continue;
        };
        if !d.basis.is_consent() {
            continue;
        }
        let slot = match slot(fact.event_type, fact.data) {
            Some(s) => Slot::Replaced(s),
            None => Slot::Kept(fact.seq),
        };
        latest.insert(
            slot,
            Restored {
                seq: fact.seq,
                id: fact.id,
                category,
                basis: d.basis,
                fields: d.fields,
            },
        );
    }
    let mut out: Vec<_> = latest.into_values().collect();
    out.sort_by_key(|r| r.seq);
    out
}

/// An earlier event disclosed again when a grant restores the current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub seq: u64,
    pub id: Uuid,
    pub category: Category,
    pub basis: Basis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Replaced(String),
    Kept(u64),
}

fn fields_for(flow: &Flow, ty: &str) -> Option<Vec<String>> {
    flow.fields.get(ty).cloned()
}

/// Keeps only the permitted fields of an event's data.
pub fn minimise(data: &serde_json::Value, fields: Option<&[String]>) -> serde_json::Value {
    match (fields, data) {
        (Some(fields), serde_json::Value::Object(map)) => serde_json::Value::Object(
            map.iter()
                .filter(|(k, _)| fields.iter().any(|f| f == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => data.clone(),
    }
}
