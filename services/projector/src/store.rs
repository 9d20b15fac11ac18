//! The projections tree. One sled tree with prefixed keys, so one step's writes (including
//! the checkpoint) are one atomic batch: after a crash the projections are exactly those of
//! some prefix of the log, and the dispatcher resumes from there.
//!
//! - `c` → checkpoint (last applied seq)
//! - `p` person → [`PersonState`] JSON
//! - `r` agency 0 person seq → [`Ref`] JSON: the agency's read model of the person
//! - `f` agency 0 seq → [`Ref`] JSON: the agency's feed
//! - `d` seq recipient → [`DisclosureRecord`] JSON: the disclosure log

use pathway_core::catalogue::Category;
use pathway_core::policy::{Basis, Refusal};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error("projection storage: {0}")]
    Storage(String),
    #[error("log: {0}")]
    Log(#[from] pathway_log::LogError),
    #[error("stored projection record is unreadable: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for ProjectionError {
    fn from(e: sled::Error) -> Self {
        ProjectionError::Storage(e.to_string())
    }
}

/// A reference to a log entry that an agency may read, and how much of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ref {
    pub young_person: Uuid,
    pub category: Category,
    /// `None` for the agency's own events.
    pub basis: Option<Basis>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fields: Option<Vec<String>>,
}

/// One line of the disclosure log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisclosureRecord {
    pub seq: u64,
    pub event_id: Uuid,
    pub young_person: Uuid,
    pub recipient: String,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Decision {
    Disclosed { basis: Basis },
    Refused { reason: Refusal },
}

pub const CHECKPOINT: &[u8] = b"c";

pub fn person(yp: Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'p');
    k.extend_from_slice(yp.as_bytes());
    k
}

pub fn read_prefix(agency: &str, yp: Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + agency.len() + 16 + 8);
    k.push(b'r');
    k.extend_from_slice(agency.as_bytes());
    k.push(0);
    k.extend_from_slice(yp.as_bytes());
    k
}

pub fn read_ref(agency: &str, yp: Uuid, seq: u64) -> Vec<u8> {
    let mut k = read_prefix(agency, yp);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn feed_prefix(agency: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + agency.len() + 8);
    k.push(b'f');
    k.extend_from_slice(agency.as_bytes());
    k.push(0);
    k
}

pub fn feed(agency: &str, seq: u64) -> Vec<u8> {
    let mut k = feed_prefix(agency);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn disclosure(seq: u64, recipient: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + recipient.len());
    k.push(b'd');
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(recipient.as_bytes());
    k
}

pub fn seq_suffix(key: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&key[key.len() - 8..]);
    u64::from_be_bytes(a)
}

pub fn open(dir: &std::path::Path) -> Result<(sled::Db, sled::Tree), ProjectionError> {
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let tree = db.open_tree("projections")?;
    Ok((db, tree))
}
