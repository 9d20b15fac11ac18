//! Which identity-registry keys may exist, held in memory as a Bloom filter.
//!
//! A file of new people asks the registry about identifiers and names it has never held:
//! three random reads a row for the import's plan, and as many again when the projector
//! adds the people. Each read of an absent key walks sled's tree like any other (about a
//! tenth of a new-rows import's CPU, BENCHMARKS.md session 13). The filter answers "not
//! there" for almost all of them without touching sled.
//!
//! It never answers "not there" for a key that is: every key is added before the step that
//! writes it publishes its checkpoint, and a thread started at open adds every key stored,
//! until which it answers "maybe" for every key (about 2.5 s at a million people, which
//! opening would otherwise wait for). Keys removed by erasure stay in it, which only costs
//! a read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// 2^25 bits (4 MiB). With three probes, at three million keys (about a million people)
/// about 1.3% of absent keys read sled anyway; with more keys that share rises, and the
/// answers stay right.
const BITS: usize = 1 << 25;
const PROBES: usize = 3;

pub struct RegistryFilter {
    words: Box<[AtomicU64]>,
    /// Every key stored when the store was opened has been added.
    filled: AtomicBool,
}

impl Default for RegistryFilter {
    /// An empty filter that answers "maybe" until [`RegistryFilter::filled`] is called.
    fn default() -> Self {
        RegistryFilter {
            words: (0..BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            filled: AtomicBool::new(false),
        }
    }
}

impl RegistryFilter {
    /// The bits a key sets. Registry keys are a tag and digest bytes, so their bytes are
    /// already uniform: no hashing needed. A key too short to probe has none, and is
    /// always reported as maybe present.
    fn probes(key: &[u8]) -> Option<[usize; PROBES]> {
        let digest = key.get(1..1 + 4 * PROBES)?;
        let mut probes = [0; PROBES];
        for (p, bytes) in probes.iter_mut().zip(digest.chunks_exact(4)) {
            let word = u32::from_le_bytes(bytes.try_into().expect("four bytes"));
            *p = word as usize % BITS;
        }
        Some(probes)
    }

    pub fn insert(&self, key: &[u8]) {
        for p in Self::probes(key).into_iter().flatten() {
            self.words[p / 64].fetch_or(1 << (p % 64), Ordering::Release);
        }
    }

    /// Says that every key stored before the filter was made has been inserted.
    pub fn filled(&self) {
        self.filled.store(true, Ordering::Release);
    }

    /// False only for a key that was never inserted, once filled.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        if !self.filled.load(Ordering::Acquire) {
            return true;
        }
        Self::probes(key).is_none_or(|probes| {
            probes
                .iter()
                .all(|p| self.words[p / 64].load(Ordering::Acquire) & (1 << (p % 64)) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;
    use pathway_core::identity::Scheme;

    #[test]
    fn every_key_added_may_be_there_and_almost_no_other() {
        let filter = RegistryFilter::default();
        filter.filled();
        let added: Vec<Vec<u8>> = (0..50_000)
            .map(|i| store::identifier_key(Scheme::Uln, "", &format!("{}", 1_000_000_000 + i)))
            .collect();
        for k in &added {
            filter.insert(k);
        }
        assert!(added.iter().all(|k| filter.may_contain(k)));
        let absent = (0..50_000)
            .map(|i| store::identifier_key(Scheme::Upn, "", &format!("A{i:012}")))
            .filter(|k| filter.may_contain(k))
            .count();
        assert!(
            absent < 50,
            "{absent} of 50,000 absent keys reported as maybe there"
        );
    }

    #[test]
    fn until_filled_every_key_may_be_there() {
        let filter = RegistryFilter::default();
        let key = store::identifier_key(Scheme::Uln, "", "1000000001");
        assert!(filter.may_contain(&key));
        filter.filled();
        assert!(!filter.may_contain(&key));
    }

    #[test]
    fn a_key_too_short_to_probe_is_always_maybe_there() {
        let filter = RegistryFilter::default();
        filter.filled();
        assert!(filter.may_contain(b"x"));
        filter.insert(b"x");
        assert!(filter.may_contain(b"x"));
    }
}
