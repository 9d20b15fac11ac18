//! Linking agencies' own identifiers to one exchange id. National identifiers (UPN, ULN) mean
//! the same person whoever holds them; an LA child id or an NCCIS YoungPersonsID means
//! something only within the agency that issued it, so those are scoped by agency.
//!
//! Matching is exact identifier first, then date of birth plus normalised name; anything that
//! points at more than one person is ambiguous and goes to a person for review, never to a
//! guess.

use crate::date::Day;
use crate::events::{EventData, Identifiers};
use std::collections::BTreeSet;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    LaChildId,
    Upn,
    Uln,
    NccisId,
}

impl Scheme {
    pub const ALL: [Scheme; 4] = [Scheme::LaChildId, Scheme::Upn, Scheme::Uln, Scheme::NccisId];

    /// The query parameter and identifier field name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::LaChildId => "la_child_id",
            Scheme::Upn => "upn",
            Scheme::Uln => "uln",
            Scheme::NccisId => "nccis_id",
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether the identifier means something only within the agency that holds it.
    pub fn scoped(self) -> bool {
        matches!(self, Scheme::LaChildId | Scheme::NccisId)
    }

    /// The scope a lookup or assertion by `agency` uses.
    pub fn scope(self, agency: &str) -> &str {
        if self.scoped() {
            agency
        } else {
            ""
        }
    }
}

fn pairs(ids: &Identifiers) -> Vec<(Scheme, &str)> {
    [
        (Scheme::LaChildId, ids.la_child_id.as_deref()),
        (Scheme::Upn, ids.upn.as_deref()),
        (Scheme::Uln, ids.uln.as_deref()),
        (Scheme::NccisId, ids.nccis_id.as_deref()),
    ]
    .into_iter()
    .filter_map(|(s, v)| v.map(|v| (s, v)))
    .collect()
}

/// What an event says about who its person is: (scheme, scope, value) identifiers, and a
/// (date of birth, normalised name) key when it carries both.
pub struct Assertions {
    pub identifiers: Vec<(Scheme, String, String)>,
    pub name_key: Option<(Day, String)>,
}

/// The identity an event asserts, for the registry. `None` for events that assert none.
pub fn assertions(source: &str, data: &EventData) -> Option<Assertions> {
    let (agency, ids, given, family, dob) = match data {
        EventData::YoungPersonRegistered(r) => (
            source,
            Some(&r.identifiers),
            r.given_name.as_deref(),
            r.family_name.as_deref(),
            Some(r.date_of_birth),
        ),
        EventData::YoungPersonDetailsCorrected(c) => (
            source,
            c.identifiers.as_ref(),
            c.given_name.as_deref(),
            c.family_name.as_deref(),
            c.date_of_birth,
        ),
        EventData::IdentityLinked(l) => (l.agency.as_str(), Some(&l.identifiers), None, None, None),
        _ => return None,
    };
    let identifiers = ids
        .map(pairs)
        .unwrap_or_default()
        .into_iter()
        .map(|(s, v)| (s, s.scope(agency).to_owned(), v.to_owned()))
        .collect();
    let name_key = match (dob, normalise_name(given, family)) {
        (Some(d), Some(n)) => Some((d, n)),
        _ => None,
    };
    Some(Assertions {
        identifiers,
        name_key,
    })
}

/// Lower case, letters only, accents folded for the common Latin ones, given then family:
/// "  Zoë  O'Brien-Smith " and "ZOE OBRIEN SMITH" match.
pub fn normalise_name(given: Option<&str>, family: Option<&str>) -> Option<String> {
    let fold = |s: &str| -> String {
        s.chars()
            .flat_map(char::to_lowercase)
            .map(|c| match c {
                'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
                'ç' => 'c',
                'è' | 'é' | 'ê' | 'ë' => 'e',
                'ì' | 'í' | 'î' | 'ï' => 'i',
                'ñ' => 'n',
                'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
                'ù' | 'ú' | 'û' | 'ü' => 'u',
                'ý' | 'ÿ' => 'y',
                c => c,
            })
            .filter(char::is_ascii_lowercase)
            .collect()
    };
    let (g, f) = (fold(given?), fold(family?));
    (!g.is_empty() && !f.is_empty()).then(|| format!("{g} {f}"))
}

/// The outcome of matching a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// An identifier the claim carries is already linked to this person (and to no other).
    Exact(Uuid),
    /// No identifier matched; date of birth and name point at exactly this person.
    NameAndDateOfBirth(Uuid),
    /// More than one person could be meant: a person must decide.
    Ambiguous(Vec<Uuid>),
    NotFound,
}

/// Decides from what the identifiers and the name key found.
pub fn decide(by_identifier: &BTreeSet<Uuid>, by_name: &BTreeSet<Uuid>) -> Match {
    match by_identifier.len() {
        1 => Match::Exact(*by_identifier.first().expect("one")),
        n if n > 1 => Match::Ambiguous(by_identifier.iter().copied().collect()),
        _ => match by_name.len() {
            0 => Match::NotFound,
            1 => Match::NameAndDateOfBirth(*by_name.first().expect("one")),
            _ => Match::Ambiguous(by_name.iter().copied().collect()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_across_case_accents_and_punctuation() {
        assert_eq!(
            normalise_name(Some("  Zoë "), Some("O'Brien-Smith")),
            normalise_name(Some("ZOE"), Some("OBRIEN SMITH"))
        );
        assert_eq!(normalise_name(Some("Zoë"), None), None);
        assert_eq!(normalise_name(Some("!!"), Some("Smith")), None);
    }

    #[test]
    fn identifiers_win_and_doubt_goes_to_review() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let set = |v: &[Uuid]| v.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(decide(&set(&[a]), &set(&[b])), Match::Exact(a));
        assert_eq!(decide(&set(&[]), &set(&[b])), Match::NameAndDateOfBirth(b));
        assert!(matches!(
            decide(&set(&[a, b]), &set(&[])),
            Match::Ambiguous(_)
        ));
        assert!(matches!(
            decide(&set(&[]), &set(&[a, b])),
            Match::Ambiguous(_)
        ));
        assert_eq!(decide(&set(&[]), &set(&[])), Match::NotFound);
    }
}
