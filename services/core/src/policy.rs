//! Policy v1: the one function that decides whether a recipient receives an event, which of
//! its fields, and on what basis. Deny by default: every path that does not find a basis
//! ends in a [`Refusal`]. Nothing else in the system decides disclosure.
//!
//! The rule (data standard, "Consent and flows"): recipient R gets event E about Y from
//! source S only when a flow covers S → R for E's category and Y's age, and the flow is
//! statutory, or consent covers R and the category, or an override in force does. Consent
//! events reach the agencies they name.

use crate::agreements::{Agency, Agreements, Flow, FlowBasis};
use crate::person::{Fact, PersonState};
use serde::{Deserialize, Serialize};
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
}

impl Basis {
    pub fn is_consent(&self) -> bool {
        matches!(self, Basis::Consent { .. })
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
        /// The one field policy reads from a consent event; the rest is not parsed.
        #[derive(Deserialize)]
        struct Named {
            recipients: Option<Vec<String>>,
        }
        let named = serde_json::from_str::<Named>(fact.data.get())
            .ok()
            .and_then(|n| n.recipients)
            .is_some_and(|rs| rs.contains(&recipient.id));
        return if named {
            Ok(Disclosure {
                basis: Basis::Named,
                fields: None,
            })
        } else {
            Err(Refusal::NoFlow)
        };
    }
    let Some(source) = agreements.agency(fact.source) else {
        return Err(Refusal::NoFlow);
    };
    let category = ty.category();
    let age = person.age_on(fact.occurred_on);
    let mut refusal = Refusal::NoFlow;
    let mut best: Option<(u8, Disclosure)> = None;
    let candidates = agreements.flows().iter().filter(|f| {
        f.to == recipient.id && f.categories.contains(&category) && f.covers_source(source)
    });
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
