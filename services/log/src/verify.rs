//! Recomputes the hash chain over every stored entry and names the first one that breaks it;
//! the caller may check each entry against the indexes derived from it as well.

use crate::checkpoint::{self, Checkpoint};
use crate::keys;
use crate::record::{chain_hash, hex, Record, GENESIS};
use crate::runs;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub head_hash: String,
    /// Signed checkpoints checked, and the last position one covers.
    pub checkpoints: usize,
    pub last_checkpoint: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("entry {seq} is bad: {reason}")]
pub struct VerifyError {
    pub seq: u64,
    pub reason: String,
}

/// Checks the chain and every signed checkpoint (with `trusted` as the only acceptable key,
/// when given), and asks `indexed` about each entry's record (whose `Err` names what is
/// wrong with the indexes about it).
pub fn verify(
    tree: &sled::Tree,
    trusted: Option<&[u8]>,
    mut indexed: impl FnMut(&Record) -> Result<(), String>,
) -> Result<VerifyReport, VerifyError> {
    let mut checkpoints = std::collections::BTreeMap::new();
    for kv in tree.scan_prefix(checkpoint::PREFIX) {
        let (k, v) = kv.map_err(|e| VerifyError {
            seq: 0,
            reason: format!("a checkpoint is unreadable: {e}"),
        })?;
        let seq = keys::u64_of(&k[1..]);
        let cp: Checkpoint = serde_json::from_slice(&v).map_err(|e| VerifyError {
            seq,
            reason: format!("its checkpoint is not readable: {e}"),
        })?;
        checkpoints.insert(seq, cp);
    }
    let mut checked = 0;
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
            indexed(&record).map_err(|reason| bad(seq, reason))?;
            prev.copy_from_slice(&v[32..64]);
            if let Some(cp) = checkpoints.get(&seq) {
                checkpoint::check(cp, &prev, trusted)
                    .map_err(|reason| bad(seq, format!("its signed checkpoint fails: {reason}")))?;
                checked += 1;
            }
            expected += 1;
        }
    }
    let entries = expected - 1;
    if let Some((seq, _)) = checkpoints.range(entries + 1..).next() {
        return Err(VerifyError {
            seq: *seq,
            reason: format!(
                "a signed checkpoint covers it, but the log ends at {entries}: entries were removed"
            ),
        });
    }
    Ok(VerifyReport {
        entries,
        head_hash: hex(&prev),
        checkpoints: checked,
        last_checkpoint: checkpoints.keys().next_back().copied(),
    })
}
