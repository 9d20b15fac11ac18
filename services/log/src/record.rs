//! One stored entry: the record (what was said, by whom, where in the log) and its place in
//! the hash chain. Stored bytes are `prev_hash ‖ hash ‖ record JSON`, and
//! `hash = SHA-256(prev_hash ‖ record JSON)`: the hash covers the exact stored bytes, so
//! verification never depends on re-serialising JSON the same way.

use crate::error::LogError;
use pathway_core::catalogue::EventType;
use pathway_core::date::Day;
use pathway_core::person::Fact;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub schema_version: u32,
    pub young_person: Uuid,
    pub version: u64,
    pub source: String,
    pub occurred_at: String,
    pub recorded_at: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected_version: Option<u64>,
    /// Kept as the JSON text it was stored as: most readers (the projector above all) never
    /// look inside, and building a value tree for every entry was most of a rebuild's cost.
    pub data: Box<RawValue>,
    /// The sender's Ed25519 signature over its envelope, kept so that who said what can be
    /// proven later (with the envelope rebuilt from this record and the key).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signature: Option<pathway_core::envelope::Signature>,
}

impl Record {
    /// The data as a JSON value, for readers that do look inside.
    pub fn data_value(&self) -> Value {
        serde_json::from_str(self.data.get()).expect("stored data is JSON")
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Record,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    /// The person's key was destroyed: `record.data` is `null`, and nothing of it is left.
    pub erased: bool,
}

pub const GENESIS: [u8; 32] = [0; 32];

/// About what a record takes beyond its data (ids, type, times, source): a guess that
/// only sizes a buffer.
const ENVELOPE_BYTES: usize = 384;

pub fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Entry {
    /// Serialises a record into its stored bytes, chained onto `prev`.
    pub fn encode(record: &Record, prev: &[u8; 32]) -> (Vec<u8>, [u8; 32]) {
        // The body is written in place behind room for the hashes, sized for the data and
        // the envelope's fields, rather than serialised alone and copied: the writer encodes
        // every event it stages.
        let mut out = Vec::with_capacity(64 + ENVELOPE_BYTES + record.data.get().len());
        out.extend_from_slice(prev);
        out.extend_from_slice(&[0; 32]);
        serde_json::to_writer(&mut out, record).expect("records serialise");
        let hash = chain_hash(prev, &out[64..]);
        out[32..64].copy_from_slice(&hash);
        (out, hash)
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, LogError> {
        let corrupt = |reason: String| LogError::Corrupt { seq: 0, reason };
        if bytes.len() < 64 {
            return Err(corrupt("shorter than its hashes".into()));
        }
        let record: Record =
            serde_json::from_slice(&bytes[64..]).map_err(|e| corrupt(e.to_string()))?;
        let mut prev_hash = [0u8; 32];
        let mut hash = [0u8; 32];
        prev_hash.copy_from_slice(&bytes[..32]);
        hash.copy_from_slice(&bytes[32..64]);
        Ok(Entry {
            erased: false,
            record,
            prev_hash,
            hash,
        })
    }

    /// The facts policy and projections read.
    pub fn fact(&self) -> Fact<'_> {
        let r = &self.record;
        let fallback = Day(time::Date::MIN);
        Fact {
            seq: r.seq,
            id: r.id,
            event_type: r.event_type,
            source: &r.source,
            young_person: r.young_person,
            recorded_on: Day::of_instant(&r.recorded_at).unwrap_or(fallback),
            occurred_on: Day::of_instant(&r.occurred_at).unwrap_or(fallback),
            data: &r.data,
        }
    }

    /// The entry as NDJSON export writes it.
    pub fn to_export(&self) -> Value {
        let mut v = serde_json::to_value(&self.record).expect("records serialise");
        v["prev_hash"] = Value::String(hex(&self.prev_hash));
        v["hash"] = Value::String(hex(&self.hash));
        v
    }
}
