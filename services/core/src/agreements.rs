//! Agencies and information-sharing flows: the configuration policy reads. Validated as a
//! whole when the service starts, so a typo in a flow stops the start instead of silently
//! sharing nothing (or, worse, something).

use crate::catalogue::{Category, EventType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub type AgencyId = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgencyKind {
    LocalAuthority,
    CareersService,
    College,
    Other,
}

impl fmt::Display for AgencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgencyKind::LocalAuthority => "local-authority",
            AgencyKind::CareersService => "careers-service",
            AgencyKind::College => "college",
            AgencyKind::Other => "other",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub id: AgencyId,
    pub kind: AgencyKind,
    #[serde(default)]
    pub name: String,
    /// A local authority's 3-digit DfE code: the `responsible_authority` of the young people
    /// its imported looked-after lists register.
    #[serde(default)]
    pub la_code: Option<String>,
    /// Ed25519 public keys (hex) the agency signs its submissions with. When there are any,
    /// every envelope it sends must carry a signature by one of them.
    #[serde(default)]
    pub signing_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowBasis {
    /// A statutory duty (public task): flows without consent.
    Statutory,
    /// Flows only while the young person's consent covers the recipient and category.
    Consent,
}

/// One line of an information-sharing agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Names the flow in disclosure records; defaults to `<from>-to-<to>-<n>`.
    #[serde(default)]
    pub id: String,
    /// Source agencies by id.
    #[serde(default)]
    pub from: Vec<AgencyId>,
    /// Source agencies by kind (any agency of that kind).
    #[serde(default)]
    pub from_kinds: Vec<AgencyKind>,
    pub to: AgencyId,
    pub categories: Vec<Category>,
    /// Data minimisation: per event type, the only data fields that may leave.
    #[serde(default)]
    pub fields: BTreeMap<String, Vec<String>>,
    pub purpose: String,
    pub basis: FlowBasis,
    pub min_age: Option<u8>,
    pub max_age: Option<u8>,
    /// How long the recipient keeps what it receives.
    pub retention_days: Option<u32>,
}

/// The exchange itself, as a source in flows (`from = ["exchange"]`): deadlines and alerts it
/// appends reach agencies only through flows, like anything else.
pub const EXCHANGE: &str = "exchange";

impl Flow {
    /// Whether events from `id` (an agency of `kind`, or the exchange with no kind) use it.
    pub fn covers(&self, id: &str, kind: Option<AgencyKind>) -> bool {
        self.from.iter().any(|f| f == id) || kind.is_some_and(|k| self.from_kinds.contains(&k))
    }

    pub fn covers_age(&self, age: Option<i32>) -> bool {
        match (age, self.min_age, self.max_age) {
            (_, None, None) => true,
            (None, _, _) => false,
            (Some(a), min, max) => {
                min.is_none_or(|m| a >= i32::from(m)) && max.is_none_or(|m| a <= i32::from(m))
            }
        }
    }
}

/// A configuration mistake, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct ConfigError {
    pub place: String,
    pub message: String,
}

/// The validated set of agencies and flows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agreements {
    agencies: BTreeMap<AgencyId, Agency>,
    flows: Vec<Flow>,
    /// Recipient → its flows' positions in `flows`: policy runs for every event and every
    /// agency, and must not scan every flow each time.
    by_recipient: BTreeMap<AgencyId, Vec<usize>>,
}

fn valid_agency_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl Agreements {
    pub fn new(
        agencies: Vec<Agency>,
        mut flows: Vec<Flow>,
    ) -> Result<Agreements, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |place: String, message: String| errors.push(ConfigError { place, message });
        let mut by_id = BTreeMap::new();
        for (i, a) in agencies.into_iter().enumerate() {
            let place = format!("agency[{i}] `{}`", a.id);
            if !valid_agency_id(&a.id) || a.id == "exchange" {
                err(
                    place.clone(),
                    "id must be lowercase letters, digits and hyphens (and not `exchange`)".into(),
                );
            }
            if let Some(code) = &a.la_code {
                if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    err(
                        place.clone(),
                        "la_code must be the 3-digit DfE local authority code".into(),
                    );
                }
            }
            for k in &a.signing_keys {
                if k.len() != 64
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    err(
                        place.clone(),
                        "signing_keys must be Ed25519 public keys, 64 lowercase hex digits".into(),
                    );
                }
            }
            if by_id.insert(a.id.clone(), a).is_some() {
                err(place, "duplicate agency id".into());
            }
        }
        let mut ids = BTreeSet::new();
        for (i, f) in flows.iter_mut().enumerate() {
            let place = format!("flow[{i}]");
            if f.id.is_empty() {
                let from = f.from.first().map(String::as_str).unwrap_or("any");
                f.id = format!("{from}-to-{}-{}", f.to, i + 1);
            }
            if !ids.insert(f.id.clone()) {
                err(place.clone(), format!("duplicate flow id `{}`", f.id));
            }
            if !by_id.contains_key(&f.to) {
                err(
                    place.clone(),
                    format!("`to` names unknown agency `{}`", f.to),
                );
            }
            for s in &f.from {
                if !by_id.contains_key(s) && s != EXCHANGE {
                    err(place.clone(), format!("`from` names unknown agency `{s}`"));
                }
                if *s == f.to {
                    err(
                        place.clone(),
                        "an agency cannot be both source and recipient".into(),
                    );
                }
            }
            if f.from.is_empty() && f.from_kinds.is_empty() {
                err(place.clone(), "needs `from` or `from_kinds`".into());
            }
            if f.categories.is_empty() {
                err(place.clone(), "needs at least one category".into());
            }
            if f.purpose.trim().is_empty() {
                err(place.clone(), "needs a purpose".into());
            }
            if let (Some(min), Some(max)) = (f.min_age, f.max_age) {
                if min > max {
                    err(place.clone(), "min_age is above max_age".into());
                }
            }
            for (ty, fields) in &f.fields {
                match EventType::parse(ty) {
                    None => err(
                        place.clone(),
                        format!("`fields` names unknown event type `{ty}`"),
                    ),
                    Some(t) if !f.categories.contains(&t.category()) => err(
                        place.clone(),
                        format!("`fields` lists `{ty}`, whose category the flow does not share"),
                    ),
                    Some(t) => {
                        let known = crate::events::EventData::field_names(t);
                        for name in fields {
                            if !known.contains(&name.as_str()) {
                                err(place.clone(), format!("`{ty}` has no field `{name}`"));
                            }
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            let mut by_recipient: BTreeMap<AgencyId, Vec<usize>> = BTreeMap::new();
            for (i, f) in flows.iter().enumerate() {
                by_recipient.entry(f.to.clone()).or_default().push(i);
            }
            Ok(Agreements {
                agencies: by_id,
                flows,
                by_recipient,
            })
        } else {
            Err(errors)
        }
    }

    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies.get(id)
    }

    pub fn agencies(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.values()
    }

    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// The flows whose recipient is `to`.
    pub fn flows_to<'a>(&'a self, to: &str) -> impl Iterator<Item = &'a Flow> + 'a {
        self.by_recipient
            .get(to)
            .into_iter()
            .flatten()
            .map(|&i| &self.flows[i])
    }

    pub fn flow(&self, id: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(id: &str, kind: AgencyKind) -> Agency {
        Agency {
            id: id.into(),
            kind,
            name: String::new(),
            la_code: None,
            signing_keys: Vec::new(),
        }
    }

    fn flow(from: &str, to: &str) -> Flow {
        Flow {
            id: String::new(),
            from: vec![from.into()],
            from_kinds: vec![],
            to: to.into(),
            categories: vec![Category::Care],
            fields: BTreeMap::new(),
            purpose: "support".into(),
            basis: FlowBasis::Statutory,
            min_age: None,
            max_age: None,
            retention_days: None,
        }
    }

    #[test]
    fn unknown_agencies_and_bad_fields_are_reported_together() {
        let mut f = flow("la", "nobody");
        f.fields
            .insert("placement.changed".into(), vec!["postcode".into()]);
        f.fields
            .insert("looked-after.started".into(), vec!["shoe_size".into()]);
        let errors =
            Agreements::new(vec![agency("la", AgencyKind::LocalAuthority)], vec![f]).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("unknown agency `nobody`"));
        assert!(text.iter().any(|t| t.contains("no field `shoe_size`")));
        assert!(text
            .iter()
            .any(|t| t.contains("category the flow does not share")));
    }

    #[test]
    fn flows_get_ids_and_age_bounds_apply() {
        let mut f = flow("la", "cs");
        f.min_age = Some(14);
        let a = Agreements::new(
            vec![
                agency("la", AgencyKind::LocalAuthority),
                agency("cs", AgencyKind::CareersService),
            ],
            vec![f],
        )
        .unwrap();
        let f = &a.flows()[0];
        assert_eq!(f.id, "la-to-cs-1");
        assert!(!f.covers_age(Some(13)));
        assert!(f.covers_age(Some(14)));
        assert!(!f.covers_age(None));
    }
}
