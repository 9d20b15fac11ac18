//! Projections: everything derived from the log. A dispatcher tails the log from a stored
//! checkpoint and, for each entry, asks policy who may receive it, then records the
//! decision in the disclosure log and the agency's feed, and evolves (in memory) the person
//! state that policy reads.
//!
//! # Layout
//! - [`store`]: the key space of the projections tree and its records.
//! - `codec`: the compact binary form of feed and disclosure runs.
//! - [`dispatcher`]: one step of the tail: read entries, decide, write the step's keys and
//!   then its checkpoint.
//! - [`views`]: reading feeds, read models and the disclosure log back, joined with the log.
//! - [`retention`]: finding disclosures past their flow's retention (purged by an event).
//! - [`registry`]: the identity registry, as sorted runs with their filters in memory.
//! - [`latest`]: the latest-destination index, many people to a key.
//! - `states`: what policy knows of each person met, most of them packed in 20 bytes.
//!
//! Derived data holds references to log entries (sequence numbers, bases, field lists),
//! never copies of personal data: a read model is folded on read from the person's log
//! stream, the agency's feed and any purge markers. That keeps erasure by destroying one
//! person's key possible (see ARCHITECTURE.md), and it makes a rebuild comparable, item for
//! item, with the incremental state.

mod codec;
pub mod dispatcher;
pub mod latest;
pub mod registry;
pub mod retention;
mod states;
pub mod store;
pub mod views;

pub use dispatcher::Projector;
pub use store::ProjectionError;
