//! Maps keyed by young person, for the caches that hold up to `people_cached` people (the
//! vault's unwrapped keys, the projector's policy states) and the indexer's versions; and,
//! with the same hasher, the writer's maps of event ids and the import plan's sets.
//!
//! SipHash, the default, showed in profiles of paths that meet many people (rebuilds), so
//! these maps hash a person's id with one multiply-and-shift mix a word. The mix is keyed
//! with secrets drawn once per process: an agency may choose a person's id (a registration
//! can carry one), and with an unkeyed hash it could register thousands of ids that all
//! land in one bucket, making every lookup in these maps a walk of all of them.

use crate::sorted::mix;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::OnceLock;
use uuid::Uuid;

/// A map from person to `V`, hashed by [`PersonHasher`].
pub type PersonMap<V> = HashMap<Uuid, V, BuildHasherDefault<PersonHasher>>;

/// This process's secret for [`PersonHasher`], from the standard library's random keys.
fn secret() -> u64 {
    static SECRET: OnceLock<u64> = OnceLock::new();
    *SECRET.get_or_init(|| RandomState::new().hash_one("pathway-exchange people"))
}

pub struct PersonHasher {
    state: u64,
    secret: u64,
}

impl Default for PersonHasher {
    fn default() -> PersonHasher {
        PersonHasher {
            state: 0,
            secret: secret(),
        }
    }
}

impl Hasher for PersonHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = mix(self.state.rotate_left(29) ^ u64::from_le_bytes(word) ^ self.secret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(yp: Uuid) -> u64 {
        BuildHasherDefault::<PersonHasher>::default().hash_one(yp)
    }

    #[test]
    fn minted_people_spread_over_a_tables_buckets() {
        // Ids minted within one millisecond share their first 48 bits: the rest must reach
        // the low bits a table indexes by.
        let buckets: std::collections::HashSet<u64> =
            (0..4096).map(|_| hash(Uuid::now_v7()) & 1023).collect();
        assert!(buckets.len() > 900, "{} of 1024 buckets", buckets.len());
    }

    /// Ids chosen so that an unkeyed fold of their words (what the projector used) gives
    /// them all one hash: a registration may carry any id.
    fn crafted(n: u64) -> Vec<Uuid> {
        let fold = |words: [u64; 3]| words.iter().fold(0u64, |h, w| h.rotate_left(29) ^ w);
        (0..n)
            .map(|w0| {
                // The length prefix (16), then the two halves as little-endian words.
                let w1 = fold([16, w0, 0]) ^ 0xdead_beef;
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&w0.to_le_bytes());
                bytes[8..].copy_from_slice(&w1.to_le_bytes());
                assert_eq!(fold([16, w0, w1]), 0xdead_beef);
                Uuid::from_bytes(bytes)
            })
            .collect()
    }

    #[test]
    fn ids_chosen_to_collide_under_an_unkeyed_fold_spread() {
        let buckets: std::collections::HashSet<u64> = crafted(4096)
            .into_iter()
            .map(|yp| hash(yp) & 1023)
            .collect();
        assert!(buckets.len() > 900, "{} of 1024 buckets", buckets.len());
    }
}
