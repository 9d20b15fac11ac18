//! Bearer tokens. The service stores only SHA-256 digests of tokens (hex), so a copy of the
//! configuration does not let anyone in. A presented token is hashed and looked up by its
//! digest; comparing digests of a secret leaks nothing useful through timing.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<String, String>,
}

pub fn digest_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    /// From (agency id, token digest in hex) pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Tokens {
        Tokens {
            by_digest: pairs
                .into_iter()
                .map(|(agency, d)| (d.to_ascii_lowercase(), agency))
                .collect(),
        }
    }

    /// The agency a presented `Authorization` header value belongs to.
    pub fn agency(&self, header: Option<&str>) -> Option<&str> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        self.by_digest.get(&digest_hex(token)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_names_the_agency() {
        let t = Tokens::new([("demo-la".to_owned(), digest_hex("secret"))]);
        assert_eq!(t.agency(Some("Bearer secret")), Some("demo-la"));
        assert_eq!(t.agency(Some("Bearer Secret")), None);
        assert_eq!(t.agency(Some("secret")), None);
        assert_eq!(t.agency(None), None);
    }
}
