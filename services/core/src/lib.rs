//! The pure domain core of Pathway Exchange.
//!
//! Everything here is deterministic and free of I/O: no tokio, sled, axum, NATS or ring. The
//! adapters (log, projector, gateway, binary) call into it, so the rules that decide what a
//! young person's data may do live in one place and are tested without a disk or a socket.
//!
//! # Layout
//! - [`catalogue`]: the event types, their categories, who may source them, and their schemas.
//! - [`codes`]: the code lists, embedded from `reference/*.csv`.
//! - [`events`]: the typed data of every event type.
//! - [`envelope`]: turning a submitted JSON envelope into a validated event, or field errors.
//! - [`agreements`]: agencies and information-sharing flows (configuration, validated).
//! - [`person`]: the per-person state policy needs (age, consent, overrides), evolved by events.
//! - [`policy`]: the one function that decides who receives what, and on what basis.
//! - [`readmodel`]: folding the events an agency may see into what it reads.

pub mod agreements;
pub mod calendar;
pub mod canonical;
pub mod care_status;
pub mod catalogue;
pub mod codes;
pub mod date;
pub mod envelope;
pub mod events;
pub mod history;
pub mod identity;
pub mod imports;
pub mod person;
pub mod policy;
pub mod readmodel;
pub mod report;
pub mod samples;
pub mod ssda903;
pub mod table;
pub mod timeline;

pub use agreements::{Agency, AgencyId, AgencyKind, Agreements, Flow, FlowBasis};
pub use catalogue::{Category, EventType};
pub use envelope::{FieldError, Submitted};
