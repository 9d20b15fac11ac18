//! The NATS transport. With `--nats URL` the exchange takes envelopes from agencies on NATS
//! as well as HTTP and publishes each agency's disclosures to its own JetStream stream. The
//! embedded bus stays the default; this crate is an adapter around the same recorder
//! ([`pathway_bus::Handler`]) and the same projections.
//!
//! # Layout
//! - [`subjects`]: the subject and stream names partner agencies build against (pure).
//! - [`answer`]: one message to one answer, with HTTP's problem details.
//! - [`ingress`]: request/reply in a queue group, and the ingress stream's durable consumer.
//! - [`outbox`]: feeds out to `OUT_<agency>` streams, resuming from the streams themselves.
//! - [`broker`]: the nats-server permissions that confine each agency to its own subjects.
//!
//! [`Nats::start`] connects in the background and keeps everything running across broker
//! restarts; [`Nats`] is a [`pathway_bus::Health`], so `/readyz` says when it is down.

pub mod answer;
pub mod broker;
pub mod ingress;
pub mod outbox;
pub mod subjects;

use answer::Limits;
use async_nats::{Client, ConnectOptions, ServerAddr};
use pathway_bus::Handler;
use pathway_projector::Projector;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("bad NATS address {0:?}: {1}")]
    Address(String, String),
    #[error(transparent)]
    Projection(#[from] pathway_projector::ProjectionError),
}

impl Error {
    fn nats(e: impl std::fmt::Display) -> Error {
        Error::Nats(e.to_string())
    }
}

/// How to reach the broker, and what to ask of it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// One or more `nats://host:port` addresses (the nodes of a cluster).
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Replicas of every stream the exchange creates: 3 on a three-node cluster.
    pub replicas: usize,
    pub limits: Limits,
}

/// The running transport.
pub struct Nats {
    client: Client,
    streams: Arc<AtomicBool>,
}

impl Nats {
    /// Starts the transport. It does not wait for the broker: the exchange serves HTTP
    /// while NATS is down and joins it when it comes up (ready from then on).
    pub async fn start(
        settings: Settings,
        handler: Arc<dyn Handler>,
        projector: Projector,
        agencies: Vec<String>,
    ) -> Result<Arc<Nats>, Error> {
        let servers = settings
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| Error::Address(s.clone(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut options = ConnectOptions::new()
            .name("pathway-exchange")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .custom_inbox_prefix(subjects::EXCHANGE_INBOX)
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection");
            });
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let client = options.connect(servers).await.map_err(Error::nats)?;
        let nats = Arc::new(Nats {
            client: client.clone(),
            streams: Arc::new(AtomicBool::new(false)),
        });
        let limits = Arc::new(settings.limits.clone());

        let (c, h, l) = (client.clone(), handler.clone(), limits.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = ingress::serve_requests(c.clone(), h.clone(), l.clone()).await {
                    tracing::warn!(error = %e, "NATS request/reply stopped; starting again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });

        let streams = nats.streams.clone();
        let replicas = settings.replicas.max(1);
        tokio::spawn(async move {
            let js = async_nats::jetstream::new(client.clone());
            loop {
                let outbox =
                    outbox::Outbox::open(js.clone(), projector.clone(), agencies.clone(), replicas)
                        .await;
                let failure = match outbox {
                    Ok(outbox) => {
                        streams.store(true, Ordering::Relaxed);
                        tracing::info!("NATS streams ready");
                        tokio::select! {
                            r = ingress::consume_stored(js.clone(), client.clone(), handler.clone(), limits.clone(), replicas) => r.err(),
                            r = outbox.run() => r.err(),
                        }
                    }
                    Err(e) => Some(e),
                };
                streams.store(false, Ordering::Relaxed);
                if let Some(e) = failure {
                    tracing::warn!(error = %e, "NATS streams unavailable; retrying");
                }
                // Retries while the broker is away; the client reconnects by itself.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(nats)
    }
}

impl pathway_bus::Health for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && self.streams.load(Ordering::Relaxed)
    }
}
