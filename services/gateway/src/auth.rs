//! Who is calling. Tokens are stored only as SHA-256 digests (hex), so a copy of the
//! configuration lets no one in; a presented token is hashed and compared with every digest
//! in constant time. A token names a principal: a user or service of one agency with a role,
//! or the exchange's own administrator (who belongs to no agency and so sees no one's data).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a principal may do is its role's row in [`crate::permissions::TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An agency's own system (the agency-level tokens): sends events, reads the feed.
    Service,
    MiOfficer,
    PersonalAdviser,
    DesignatedStaff,
    AgencyAdmin,
    /// The exchange's administrator.
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Service,
        Role::MiOfficer,
        Role::PersonalAdviser,
        Role::DesignatedStaff,
        Role::AgencyAdmin,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::MiOfficer => "mi-officer",
            Role::PersonalAdviser => "personal-adviser",
            Role::DesignatedStaff => "designated-staff",
            Role::AgencyAdmin => "agency-admin",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    /// `None` only for the exchange's administrator.
    pub agency: Option<String>,
    pub role: Role,
}

#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

/// Digests, not tokens, and still not printed.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens([{} hidden])", self.entries.len())
    }
}

pub fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

pub fn digest_hex(token: &str) -> String {
    digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal, in time that does not depend on where the first difference is.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// From (principal, token digest in hex) pairs; malformed digests are skipped (the
    /// configuration rejects them first).
    pub fn new(pairs: impl IntoIterator<Item = (Principal, String)>) -> Tokens {
        Tokens {
            entries: pairs
                .into_iter()
                .filter_map(|(p, d)| from_hex(&d.to_ascii_lowercase()).map(|d| (d, p)))
                .collect(),
        }
    }

    /// The principal a presented `Authorization` header value belongs to. Every digest is
    /// compared, whether or not an earlier one matched.
    pub fn principal(&self, header: Option<&str>) -> Option<&Principal> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        let presented = digest(token);
        let mut found = None;
        for (d, p) in &self.entries {
            if same(d, &presented) && found.is_none() {
                found = Some(p);
            }
        }
        found
    }

    /// The agency of the principal, if it belongs to one.
    pub fn agency(&self, header: Option<&str>) -> Option<&str> {
        self.principal(header)?.agency.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_names_the_principal() {
        let p = Principal {
            user: "la-mi".into(),
            agency: Some("demo-la".into()),
            role: Role::MiOfficer,
        };
        let t = Tokens::new([(p.clone(), digest_hex("secret"))]);
        assert_eq!(t.principal(Some("Bearer secret")), Some(&p));
        assert_eq!(t.agency(Some("Bearer secret")), Some("demo-la"));
        assert_eq!(t.principal(Some("Bearer Secret")), None);
        assert_eq!(t.principal(Some("secret")), None);
        assert_eq!(t.principal(None), None);
        assert_eq!(format!("{t:?}"), "Tokens([1 hidden])");
    }
}
