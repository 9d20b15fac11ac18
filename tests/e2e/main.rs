//! End-to-end tests across processes: the real `exchange` binary on a random loopback port
//! with its own temporary data directory.

mod broker;
mod nats;
mod privacy;
mod process;
mod support;
mod transports;
