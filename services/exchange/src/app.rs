//! Wiring: open the log and projections under one data directory, start the recorder behind
//! the embedded bus, the dispatcher, and the HTTP gateway.

use crate::config::Config;
use anyhow::Context;
use pathway_bus::{Egress, Embedded};
use pathway_gateway::{AppState, Limits, Tokens};
use pathway_log::{Log, LogOptions};
use pathway_projector::Projector;
use pathway_recorder::Recorder;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub struct Paths {
    pub log: PathBuf,
    pub projections: PathBuf,
}

pub fn paths(data: &Path) -> Paths {
    Paths {
        log: data.join("log"),
        projections: data.join("projections"),
    }
}

pub fn open_log(data: &Path) -> anyhow::Result<Log> {
    let p = paths(data);
    std::fs::create_dir_all(&p.log)
        .with_context(|| format!("cannot create {}", p.log.display()))?;
    Log::open(&p.log, LogOptions::default()).with_context(|| {
        format!(
            "cannot open the log in {} (is another exchange using it?)",
            p.log.display()
        )
    })
}

pub struct Running {
    pub state: AppState,
    pub projector: Projector,
    pub log: Log,
}

/// Builds the whole service on the embedded bus.
pub fn build(config: Config, data: &Path) -> anyhow::Result<Running> {
    pathway_core::envelope::warm_up();
    let log = open_log(data)?;
    let agreements = Arc::new(config.agreements);
    let recorder = Arc::new(Recorder::new(log.clone(), agreements.clone()));
    let bus = Arc::new(Embedded::new(recorder));
    let egress: Arc<dyn Egress> = bus.clone();
    let projector = Projector::open(
        &paths(data).projections,
        log.clone(),
        agreements,
        Some(egress),
    )
    .context("cannot open the projections")?;
    let defaults = Limits::default();
    let state = AppState {
        ingress: bus,
        projector: projector.clone(),
        tokens: Arc::new(Tokens::new(config.tokens)),
        limits: Limits {
            max_body_bytes: config
                .service
                .max_body_bytes
                .unwrap_or(defaults.max_body_bytes),
            max_batch: config.service.max_batch.unwrap_or(defaults.max_batch),
        },
        ready: Arc::new(AtomicBool::new(true)),
    };
    Ok(Running {
        state,
        projector,
        log,
    })
}

/// Accepted connections with Nagle's algorithm off. A live feed writes small frames, and
/// with Nagle on each waits for the client's delayed ACK: measured, it added a uniform
/// 0–25 ms to every event's trip from POST to the recipient's stream.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    })
}
