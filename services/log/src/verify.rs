//! Recomputes the hash chain over every stored entry and names the first one that breaks it.

use crate::keys;
use crate::record::{chain_hash, hex, Record, GENESIS};
use crate::runs;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub head_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("entry {seq} is bad: {reason}")]
pub struct VerifyError {
    pub seq: u64,
    pub reason: String,
}

pub fn verify(tree: &sled::Tree) -> Result<VerifyReport, VerifyError> {
    let mut prev = GENESIS;
    let mut expected = 1u64;
    for kv in tree.scan_prefix(keys::ENTRY_PREFIX) {
        let bad = |seq: u64, reason: String| VerifyError { seq, reason };
        let (k, v) = kv.map_err(|e| bad(expected, format!("unreadable: {e}")))?;
        let first = runs::first_seq(&k);
        if first != expected {
            return Err(bad(
                expected,
                format!("missing; the next stored entry is {first}"),
            ));
        }
        for bytes in runs::split(&v) {
            let seq = expected;
            let v = bytes.map_err(|_| bad(seq, "its run is truncated".into()))?;
            if v.len() < 64 {
                return Err(bad(seq, "shorter than its hashes".into()));
            }
            if v[..32] != prev {
                return Err(bad(
                    seq,
                    "its previous-hash does not match the entry before it".into(),
                ));
            }
            if chain_hash(&prev, &v[64..])[..] != v[32..64] {
                return Err(bad(seq, "its contents do not match its hash".into()));
            }
            let record: Record = serde_json::from_slice(&v[64..])
                .map_err(|e| bad(seq, format!("not a record: {e}")))?;
            if record.seq != seq {
                return Err(bad(seq, format!("stored as {seq} but says {}", record.seq)));
            }
            prev.copy_from_slice(&v[32..64]);
            expected += 1;
        }
    }
    Ok(VerifyReport {
        entries: expected - 1,
        head_hash: hex(&prev),
    })
}
