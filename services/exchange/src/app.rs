//! Wiring: open the log and projections under one data directory, start the recorder behind
//! the embedded bus, the dispatcher, and the HTTP gateway.

use crate::config::Config;
use anyhow::Context;
use pathway_bus::{Egress, Embedded};
use pathway_core::Agreements;
use pathway_gateway::{AppState, Limits, Tokens};
use pathway_log::{Log, LogOptions};
use pathway_projector::Projector;
use pathway_recorder::Recorder;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Paths {
    pub log: PathBuf,
    pub projections: PathBuf,
    pub webhooks: PathBuf,
}

pub fn paths(data: &Path) -> Paths {
    Paths {
        log: data.join("log"),
        projections: data.join("projections"),
        webhooks: data.join("webhooks"),
    }
}

/// The exchange's own Ed25519 signing key (PKCS#8, `data/keys/exchange-ed25519.pk8`), made
/// on first use and readable by its owner only. It signs the log's checkpoints.
pub fn signing_key(data: &Path) -> anyhow::Result<ring::signature::Ed25519KeyPair> {
    use ring::signature::Ed25519KeyPair;
    let path = data.join("keys").join("exchange-ed25519.pk8");
    if !path.exists() {
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("cannot generate the signing key"))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut file, pkcs8.as_ref())?;
        file.sync_all()?;
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ed25519KeyPair::from_pkcs8(&bytes)
        .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key", path.display()))
}

/// The exchange's public key, if it has one yet (for `verify`).
pub fn public_key(data: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    use ring::signature::KeyPair;
    if !data.join("keys").join("exchange-ed25519.pk8").exists() {
        return Ok(None);
    }
    Ok(Some(signing_key(data)?.public_key().as_ref().to_vec()))
}

pub fn open_log(data: &Path) -> anyhow::Result<Log> {
    open_log_with(data, LogOptions::default())
}

pub fn open_log_with(data: &Path, options: LogOptions) -> anyhow::Result<Log> {
    let p = paths(data);
    std::fs::create_dir_all(&p.log)
        .with_context(|| format!("cannot create {}", p.log.display()))?;
    Log::open(&p.log, options).with_context(|| {
        format!(
            "cannot open the log in {} (is another exchange using it?)",
            p.log.display()
        )
    })
}

/// Recreates the projections from the log (what `exchange rebuild` does); returns how many
/// entries were applied. `cache_bytes` sizes the log's page cache: a rebuild reads the whole
/// log once, and a cache smaller than the log makes it fault pages back in as it goes.
pub fn rebuild(agreements: Agreements, data: &Path, cache_bytes: u64) -> anyhow::Result<u64> {
    let log = open_log_for_rebuild(data, cache_bytes)?;
    rebuild_from(log, agreements, data)
}

/// The log as a rebuild opens it. Separate from [`rebuild_from`] so the benchmark can time
/// sled's recovery scan (every open reads the log written since the previous open) apart
/// from the projection itself.
pub fn open_log_for_rebuild(data: &Path, cache_bytes: u64) -> anyhow::Result<Log> {
    open_log_with(
        data,
        LogOptions {
            cache_bytes,
            ..LogOptions::default()
        },
    )
}

/// Clears the projections and projects the whole of an open log again.
pub fn rebuild_from(log: Log, agreements: Agreements, data: &Path) -> anyhow::Result<u64> {
    let dir = paths(data).projections;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let options = pathway_projector::dispatcher::Options {
        cache_bytes: pathway_projector::store::REBUILD_CACHE_BYTES,
        ..Default::default()
    };
    let projector = Projector::open_with(&dir, log, Arc::new(agreements), None, options)?;
    let applied = projector.catch_up()?;
    projector.flush()?;
    Ok(applied)
}

pub struct Running {
    pub webhooks: Arc<pathway_gateway::webhooks::Webhooks>,
    pub state: AppState,
    pub projector: Projector,
    pub log: Log,
    pub recorder: Arc<Recorder>,
}

/// Builds the whole service on the embedded bus.
pub fn build(config: Config, data: &Path) -> anyhow::Result<Running> {
    let options = log_options(&config.service);
    build_with(config, data, options)
}

/// The log's options as the service's settings give them.
pub fn log_options(service: &crate::config::ServiceSettings) -> LogOptions {
    let defaults = LogOptions::default();
    LogOptions {
        cache_bytes: service.log_cache_mib.map_or(defaults.cache_bytes, |mib| {
            mib.max(1).saturating_mul(1 << 20)
        }),
        ..defaults
    }
}

/// [`build`], with the log's options (its clock, in tests).
pub fn build_with(config: Config, data: &Path, options: LogOptions) -> anyhow::Result<Running> {
    pathway_core::envelope::warm_up();
    let log = open_log_with(data, options)?;
    let agreements = Arc::new(config.agreements);
    let recorder = Arc::new(Recorder::new(log.clone(), agreements.clone()));
    let bus = Arc::new(Embedded::new(recorder.clone()));
    let egress: Arc<dyn Egress> = bus.clone();
    let projector = Projector::open(
        &paths(data).projections,
        log.clone(),
        agreements,
        Some(egress),
    )
    .context("cannot open the projections")?;
    let webhooks = Arc::new(
        pathway_gateway::webhooks::Webhooks::open(
            &paths(data).webhooks,
            projector.clone(),
            std::time::Duration::from_secs(30),
        )
        .context("cannot open the webhook registry")?,
    );
    let defaults = Limits::default();
    let state = AppState {
        body_limits: Arc::new(config.body_limits),
        rate: Arc::new(pathway_gateway::ratelimit::RateLimiter::new(
            config.service.rate_per_second.unwrap_or(2000.0),
            config.service.rate_burst.unwrap_or(5000.0),
        )),
        webhooks: webhooks.clone(),
        ingress: bus,
        own: recorder.clone(),
        projector: projector.clone(),
        tokens: Arc::new(Tokens::new(config.tokens)),
        limits: Limits {
            max_body_bytes: config
                .service
                .max_body_bytes
                .unwrap_or(defaults.max_body_bytes),
            max_batch: config.service.max_batch.unwrap_or(defaults.max_batch),
            request_timeout: config
                .service
                .request_timeout_seconds
                .map_or(defaults.request_timeout, std::time::Duration::from_secs),
        },
        health: Vec::new(),
    };
    Ok(Running {
        webhooks,
        state,
        projector,
        log,
        recorder,
    })
}

/// Builds the service and, when the configuration names a broker, starts the NATS transport
/// on it; `/readyz` then reports it. Returns the transport too.
pub async fn build_serving(
    config: Config,
    data: &Path,
) -> anyhow::Result<(Running, Option<Arc<pathway_nats::Nats>>)> {
    let nats = config.nats.settings()?;
    let agencies: Vec<String> = config.agreements.agencies().map(|a| a.id.clone()).collect();
    let mut running = build(config, data)?;
    let Some(mut settings) = nats else {
        return Ok((running, None));
    };
    settings.limits = nats_limits(&running.state);
    let transport = pathway_nats::Nats::start(
        settings,
        running.recorder.clone(),
        running.projector.clone(),
        agencies,
    )
    .await?;
    running.state.health.push(transport.clone());
    Ok((running, Some(transport)))
}

/// The HTTP limits, for NATS messages: the same body and batch sizes whichever way in.
pub fn nats_limits(state: &AppState) -> pathway_nats::answer::Limits {
    pathway_nats::answer::Limits {
        max_bytes: state.limits.max_body_bytes,
        per_agency: (*state.body_limits).clone(),
        max_batch: state.limits.max_batch,
    }
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
