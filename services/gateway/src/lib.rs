//! The HTTP adapter. It authenticates agencies by bearer token, turns bodies into
//! submissions for the recorder (through the bus, never the log directly), and serves
//! feeds, live streams and read models from the projections.
//!
//! # Layout
//! - [`auth`]: bearer tokens (stored only as SHA-256 digests) naming a principal and role.
//! - [`permissions`]: the one table of which roles may call which endpoint.
//! - [`ratelimit`]: a token bucket per agency (429 with Retry-After).
//! - [`problem`]: the `application/problem+json` response.
//! - [`exports`]: CSV downloads (an LA's care leavers' destinations, the looked-after list).
//! - [`imports`]: agencies' own files (NCCIS destinations) in, only the changes out as events.
//! - [`pages`]: printable HTML pages for people (subject access).
//! - [`webhooks`]: pushing an agency's feed to its URL, signed, retried, dead-lettered.
//! - [`routes`]: the handlers and [`router`].

pub mod auth;
pub mod exports;
pub mod imports;
pub mod pages;
pub mod permissions;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod webhooks;

pub use auth::Tokens;
pub use routes::{router, AppState, Limits};
