//! Projections: everything derived from the log. A dispatcher tails the log from a stored
//! checkpoint and, for each entry, asks policy who may receive it, then records
//! disclosures, per-agency feeds and read-model references, and evolves the person state
//! that policy reads.
//!
//! # Layout
//! - [`store`]: the key space of the projections tree and its records.
//! - `codec`: the compact binary form of feed and disclosure runs.
//! - [`dispatcher`]: one step of the tail: read entries, decide, write one atomic batch.
//! - [`views`]: reading feeds and read models back, joined with the log.
//!
//! Derived data holds references to log entries (sequence numbers, bases, field lists),
//! never copies of personal data: a read model is folded from the log on read. That keeps
//! erasure by destroying one person's key possible (see ARCHITECTURE.md), and it makes a
//! rebuild byte-for-byte comparable with the incremental state.

mod codec;
pub mod dispatcher;
pub mod store;
pub mod views;

pub use dispatcher::Projector;
pub use store::ProjectionError;
