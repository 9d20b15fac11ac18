//! A compact binary form for feed and disclosure runs. They are most of what a projection
//! step writes, and as JSON (field names, UUIDs as text) encoding them took a quarter of a
//! rebuild; this form is about a third of the size and needs no parsing of names.
//!
//! Layout: a version byte, an item count (8 bytes), then the items. Within a run:
//! - positions are LEB128 varints, each the difference from the run's previous position
//!   (wrapping, so any order decodes), which is a byte or two where it was eight;
//! - a string (agency, flow, field name) is written in full the first time a run uses it
//!   (`0xFF`, varint length, bytes) and as its one-byte index after that: a run names a
//!   handful of agencies and flows thousands of times;
//! - UUIDs are 16 bytes.
//!
//! Runs are most of the bytes a projection step gives sled, and sled's cost of a write grows
//! with the bytes of the leaf it rewrites (session 11: splits and consolidations were half of
//! the projector's writing), so this form is about half of version 2's. Person state and
//! purge markers stay JSON: they are small and rare.

use crate::store::{Decision, DisclosureRecord, FeedItem, ProjectionError};
use pathway_core::catalogue::Category;
use pathway_core::policy::{Basis, Refusal, Restored};
use uuid::Uuid;

const VERSION: u8 = 3;

/// Marks a string written in full; indices of interned strings are below it.
const LITERAL: u8 = 0xFF;

#[derive(Default)]
struct Out {
    bytes: Vec<u8>,
    /// Strings this run has written in full, by their index.
    strings: std::collections::HashMap<String, u8>,
    /// The previous position written, which the next is written relative to.
    last: u64,
}

impl Out {
    fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.bytes.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }
    /// A position, as its difference from the previous one.
    fn position(&mut self, v: u64) {
        self.varint(v.wrapping_sub(self.last));
        self.last = v;
    }
    fn uuid(&mut self, v: &Uuid) {
        self.bytes.extend_from_slice(v.as_bytes());
    }
    fn str(&mut self, v: &str) {
        if let Some(&i) = self.strings.get(v) {
            self.u8(i);
            return;
        }
        self.u8(LITERAL);
        self.varint(v.len() as u64);
        self.bytes.extend_from_slice(v.as_bytes());
        let next = self.strings.len();
        if next < usize::from(LITERAL) {
            self.strings.insert(v.to_owned(), next as u8);
        }
    }
    fn basis(&mut self, b: &Basis) {
        match b {
            Basis::Statutory { flow } => {
                self.u8(0);
                self.str(flow);
            }
            Basis::Consent { flow, consent } => {
                self.u8(1);
                self.str(flow);
                self.uuid(consent);
            }
            Basis::Override { flow, override_id } => {
                self.u8(2);
                self.str(flow);
                self.uuid(override_id);
            }
            Basis::Named => self.u8(3),
            Basis::Owner => self.u8(4),
        }
    }
    fn fields(&mut self, fields: Option<&[String]>) {
        match fields {
            None => self.u8(0),
            Some(fields) => {
                self.u8(1);
                self.varint(fields.len() as u64);
                for name in fields {
                    self.str(name);
                }
            }
        }
    }
}

struct In<'a> {
    bytes: &'a [u8],
    strings: Vec<String>,
    last: u64,
}

fn corrupt() -> ProjectionError {
    ProjectionError::Corrupt("a stored run is truncated or malformed".into())
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProjectionError> {
        if self.bytes.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProjectionError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, ProjectionError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn uuid(&mut self) -> Result<Uuid, ProjectionError> {
        Ok(Uuid::from_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    fn varint(&mut self) -> Result<u64, ProjectionError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt())
    }
    fn position(&mut self) -> Result<u64, ProjectionError> {
        self.last = self.last.wrapping_add(self.varint()?);
        Ok(self.last)
    }
    fn str(&mut self) -> Result<String, ProjectionError> {
        let i = self.u8()?;
        if i != LITERAL {
            return self
                .strings
                .get(usize::from(i))
                .cloned()
                .ok_or_else(corrupt);
        }
        let len = usize::try_from(self.varint()?).map_err(|_| corrupt())?;
        let s = String::from_utf8(self.take(len)?.to_vec()).map_err(|_| corrupt())?;
        if self.strings.len() < usize::from(LITERAL) {
            self.strings.push(s.clone());
        }
        Ok(s)
    }
    fn basis(&mut self) -> Result<Basis, ProjectionError> {
        Ok(match self.u8()? {
            0 => Basis::Statutory { flow: self.str()? },
            1 => Basis::Consent {
                flow: self.str()?,
                consent: self.uuid()?,
            },
            2 => Basis::Override {
                flow: self.str()?,
                override_id: self.uuid()?,
            },
            3 => Basis::Named,
            4 => Basis::Owner,
            _ => return Err(corrupt()),
        })
    }
    fn fields(&mut self) -> Result<Option<Vec<String>>, ProjectionError> {
        Ok(match self.u8()? {
            0 => None,
            _ => {
                let count = usize::try_from(self.varint()?).map_err(|_| corrupt())?;
                Some((0..count).map(|_| self.str()).collect::<Result<_, _>>()?)
            }
        })
    }
}

fn category_code(c: Category) -> u8 {
    Category::ALL
        .iter()
        .position(|x| *x == c)
        .expect("a category") as u8
}

fn category_of(code: u8) -> Result<Category, ProjectionError> {
    Category::ALL
        .get(code as usize)
        .copied()
        .ok_or_else(corrupt)
}

/// A decision as the dispatcher holds it, borrowed: nothing is cloned to store it.
pub enum DecisionRef<'a> {
    Disclosed(&'a Basis),
    Refused(&'a Refusal),
}

/// A run being written: items are encoded as they come, the count is patched in at the end.
pub struct RunWriter {
    out: Out,
    count: u64,
}

impl Default for RunWriter {
    fn default() -> Self {
        let mut out = Out {
            bytes: Vec::with_capacity(4096),
            ..Out::default()
        };
        out.u8(VERSION);
        out.bytes.extend_from_slice(&0u64.to_le_bytes());
        RunWriter { out, count: 0 }
    }
}

impl RunWriter {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Encoded size so far.
    pub fn bytes(&self) -> usize {
        self.out.bytes.len()
    }

    pub fn feed(
        &mut self,
        seq: u64,
        young_person: &Uuid,
        category: Category,
        basis: &Basis,
        fields: Option<&[String]>,
        restored: &[Restored],
    ) {
        let out = &mut self.out;
        out.position(seq);
        out.uuid(young_person);
        out.u8(category_code(category));
        out.basis(basis);
        out.fields(fields);
        out.varint(restored.len() as u64);
        for r in restored {
            // An earlier event: written in full, so the next item's position stays relative
            // to this one's.
            out.varint(r.seq);
            out.uuid(&r.id);
            out.u8(category_code(r.category));
            out.basis(&r.basis);
            out.fields(r.fields.as_deref());
        }
        self.count += 1;
    }

    pub fn disclosure(
        &mut self,
        at: u64,
        seq: u64,
        event_id: &Uuid,
        young_person: &Uuid,
        recipient: &str,
        decision: DecisionRef,
    ) {
        let out = &mut self.out;
        // Most records are decided at the event's own position: one byte says so.
        out.position(at);
        if at == seq {
            out.u8(0);
        } else {
            out.u8(1);
            out.varint(at.wrapping_sub(seq));
        }
        out.uuid(event_id);
        out.uuid(young_person);
        out.str(recipient);
        match decision {
            DecisionRef::Disclosed(basis) => {
                out.u8(0);
                out.basis(basis);
            }
            DecisionRef::Refused(Refusal::NoFlow) => out.u8(1),
            DecisionRef::Refused(Refusal::OutsideAge { flow }) => {
                out.u8(2);
                out.str(flow);
            }
            DecisionRef::Refused(Refusal::NoConsent { flow }) => {
                out.u8(3);
                out.str(flow);
            }
        }
        self.count += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.bytes[1..9].copy_from_slice(&self.count.to_le_bytes());
        self.out.bytes
    }
}

fn items(bytes: &[u8]) -> Result<(In<'_>, usize), ProjectionError> {
    let mut r = In {
        bytes,
        strings: Vec::new(),
        last: 0,
    };
    if r.u8()? != VERSION {
        return Err(corrupt());
    }
    let n = r.u64()? as usize;
    Ok((r, n))
}

/// Whole-run encoding, for the round-trip tests; the dispatcher writes through [`RunWriter`].
#[cfg(test)]
pub fn encode_feed(run: &[FeedItem]) -> Vec<u8> {
    let mut w = RunWriter::default();
    for f in run {
        w.feed(
            f.seq,
            &f.young_person,
            f.category,
            &f.basis,
            f.fields.as_deref(),
            &f.restored,
        );
    }
    w.finish()
}

pub fn decode_feed(bytes: &[u8]) -> Result<Vec<FeedItem>, ProjectionError> {
    let (mut r, n) = items(bytes)?;
    let mut run = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let seq = r.position()?;
        let young_person = r.uuid()?;
        let category = category_of(r.u8()?)?;
        let basis = r.basis()?;
        let fields = r.fields()?;
        let count = usize::try_from(r.varint()?).map_err(|_| corrupt())?;
        let mut restored = Vec::with_capacity(count.min(256));
        for _ in 0..count {
            restored.push(Restored {
                seq: r.varint()?,
                id: r.uuid()?,
                category: category_of(r.u8()?)?,
                basis: r.basis()?,
                fields: r.fields()?,
            });
        }
        run.push(FeedItem {
            seq,
            young_person,
            category,
            basis,
            fields,
            restored,
        });
    }
    Ok(run)
}

#[cfg(test)]
pub fn encode_disclosures(run: &[DisclosureRecord]) -> Vec<u8> {
    let mut w = RunWriter::default();
    for d in run {
        let decision = match &d.decision {
            Decision::Disclosed { basis } => DecisionRef::Disclosed(basis),
            Decision::Refused { reason } => DecisionRef::Refused(reason),
        };
        w.disclosure(
            d.at,
            d.seq,
            &d.event_id,
            &d.young_person,
            &d.recipient,
            decision,
        );
    }
    w.finish()
}

pub fn decode_disclosures(bytes: &[u8]) -> Result<Vec<DisclosureRecord>, ProjectionError> {
    let (mut r, n) = items(bytes)?;
    let mut run = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let at = r.position()?;
        let seq = match r.u8()? {
            0 => at,
            1 => at.wrapping_sub(r.varint()?),
            _ => return Err(corrupt()),
        };
        let event_id = r.uuid()?;
        let young_person = r.uuid()?;
        let recipient = r.str()?;
        let decision = match r.u8()? {
            0 => Decision::Disclosed { basis: r.basis()? },
            1 => Decision::Refused {
                reason: Refusal::NoFlow,
            },
            2 => Decision::Refused {
                reason: Refusal::OutsideAge { flow: r.str()? },
            },
            3 => Decision::Refused {
                reason: Refusal::NoConsent { flow: r.str()? },
            },
            _ => return Err(corrupt()),
        };
        run.push(DisclosureRecord {
            at,
            seq,
            event_id,
            young_person,
            recipient,
            decision,
        });
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases() -> Vec<Basis> {
        vec![
            Basis::Statutory {
                flow: "la-to-careers".into(),
            },
            Basis::Consent {
                flow: "la-to-college".into(),
                consent: Uuid::new_v4(),
            },
            Basis::Override {
                flow: "x".into(),
                override_id: Uuid::new_v4(),
            },
            Basis::Named,
            Basis::Owner,
        ]
    }

    #[test]
    fn feed_runs_round_trip() {
        let run: Vec<FeedItem> = bases()
            .into_iter()
            .enumerate()
            .map(|(i, basis)| FeedItem {
                seq: 1000 + i as u64,
                young_person: Uuid::new_v4(),
                category: Category::ALL[i],
                basis,
                fields: (i % 2 == 1)
                    .then(|| vec!["start_date".to_owned(), "placement_type".to_owned()]),
                restored: if i == 0 {
                    vec![Restored {
                        seq: 3,
                        id: Uuid::new_v4(),
                        category: Category::Placement,
                        basis: Basis::Named,
                        fields: Some(vec!["start_date".to_owned()]),
                    }]
                } else {
                    Vec::new()
                },
            })
            .collect();
        assert_eq!(decode_feed(&encode_feed(&run)).unwrap(), run);
    }

    fn disclosed(at: u64, recipient: String, flow: String) -> DisclosureRecord {
        DisclosureRecord {
            at,
            seq: at,
            event_id: Uuid::new_v4(),
            young_person: Uuid::new_v4(),
            recipient,
            decision: Decision::Disclosed {
                basis: Basis::Statutory { flow },
            },
        }
    }

    #[test]
    fn a_run_names_each_agency_and_flow_in_full_once() {
        let run: Vec<DisclosureRecord> = (0..100)
            .map(|i| {
                let k = i % 3;
                disclosed(
                    1_000_000 + i * 3,
                    format!("agency-with-a-long-name-{k}"),
                    format!("a-flow-between-two-agencies-{k}"),
                )
            })
            .collect();
        let bytes = encode_disclosures(&run);
        assert_eq!(decode_disclosures(&bytes).unwrap(), run);
        // Two UUIDs (32 bytes), a one-byte position difference, the flag, the recipient's and
        // the flow's indices, the decision and the basis: 38 bytes a record, plus the names
        // once each and the header. Written in full every time, they would be over 90.
        assert!(bytes.len() < 100 * 40 + 3 * 80, "{} bytes", bytes.len());
    }

    #[test]
    fn a_run_with_more_names_than_indices_still_round_trips() {
        // 300 distinct names (past the 255 a run indexes), then the first ones again: those
        // that were indexed come back as indices, the rest in full.
        let run: Vec<DisclosureRecord> = (0..600)
            .map(|i| {
                let k = i % 300;
                disclosed(i + 1, format!("agency-{k}"), format!("flow-{}", k % 7))
            })
            .collect();
        assert_eq!(decode_disclosures(&encode_disclosures(&run)).unwrap(), run);
    }

    #[test]
    fn disclosure_runs_round_trip() {
        let mut decisions: Vec<Decision> = bases()
            .into_iter()
            .map(|basis| Decision::Disclosed { basis })
            .collect();
        decisions.push(Decision::Refused {
            reason: Refusal::NoFlow,
        });
        decisions.push(Decision::Refused {
            reason: Refusal::OutsideAge { flow: "a".into() },
        });
        decisions.push(Decision::Refused {
            reason: Refusal::NoConsent { flow: "b".into() },
        });
        let run: Vec<DisclosureRecord> = decisions
            .into_iter()
            .enumerate()
            .map(|(i, decision)| DisclosureRecord {
                at: i as u64 + 1 + (i as u64 % 2) * 10,
                seq: i as u64 + 1,
                event_id: Uuid::new_v4(),
                young_person: Uuid::new_v4(),
                recipient: format!("agency-{i}"),
                decision,
            })
            .collect();
        assert_eq!(decode_disclosures(&encode_disclosures(&run)).unwrap(), run);
    }

    #[test]
    fn truncated_runs_are_reported_not_misread() {
        let run = vec![FeedItem {
            seq: 7,
            young_person: Uuid::new_v4(),
            category: Category::Care,
            basis: Basis::Named,
            fields: None,
            restored: Vec::new(),
        }];
        let bytes = encode_feed(&run);
        for cut in 0..bytes.len() {
            assert!(decode_feed(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
