//! The `exchange` service as a library: configuration, wiring and the benchmark, so that
//! tests build exactly what the binary runs.

pub mod app;
pub mod bench;
pub mod bench_import;
pub mod bench_nats;
pub mod bench_newcomers;
pub mod bench_packed;
pub mod bench_policy;
pub mod bench_registry;
pub mod bench_stages;
pub mod config;
pub mod housekeeping;
pub mod upload;
