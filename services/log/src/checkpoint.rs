//! Signed checkpoints: every so often the exchange signs (Ed25519, its own key) the hash of
//! the entry at the durable head. The chain proves no entry was altered relative to the ones
//! around it; a signed checkpoint proves the chain itself was not rebuilt or cut short after
//! the fact, by someone without the key. `verify` checks both.
//!
//! Stored in the log tree under `k` + seq, as JSON.

use crate::record::hex;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    /// The entry hash at `seq`, hex.
    pub hash: String,
    pub signed_at: String,
    /// The signer's Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 over [`message`], hex.
    pub signature: String,
}

pub const PREFIX: &[u8] = b"k";

pub fn key(seq: u64) -> [u8; 9] {
    crate::keys::at_seq(b'k', seq)
}

/// What is signed: a domain tag, the position, and the entry hash.
pub fn message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"pathway-exchange checkpoint v1\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

pub fn sign(key: &Ed25519KeyPair, seq: u64, hash: &[u8; 32], signed_at: String) -> Checkpoint {
    Checkpoint {
        seq,
        hash: hex(hash),
        signed_at,
        public_key: hex(key.public_key().as_ref()),
        signature: hex(key.sign(&message(seq, hash)).as_ref()),
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len()
        .is_multiple_of(2)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect()
        })
        .flatten()
}

/// Whether the checkpoint's signature holds for `hash` (the chain's hash at its position),
/// and, when `trusted` is given, was made with that public key.
pub fn check(cp: &Checkpoint, hash: &[u8; 32], trusted: Option<&[u8]>) -> Result<(), String> {
    if cp.hash != hex(hash) {
        return Err("the chain's hash there differs from the signed one".into());
    }
    let public = unhex(&cp.public_key).ok_or("its public key is not hex")?;
    if trusted.is_some_and(|t| t != public.as_slice()) {
        return Err("it was signed with a key that is not the exchange's".into());
    }
    let signature = unhex(&cp.signature).ok_or("its signature is not hex")?;
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(&message(cp.seq, hash), &signature)
        .map_err(|_| "its signature does not verify".to_owned())
}
