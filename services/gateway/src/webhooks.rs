//! Webhooks: an agency's feed pushed to a URL it registers, so college staff hear about their
//! students without asking. Each delivery is one feed item (the event as the agency may see
//! it, exactly as `GET /v1/feed` gives it), signed with HMAC-SHA256 over
//! `timestamp + "." + body` with the webhook's own secret:
//!
//! ```text
//! X-Pathway-Timestamp: 1793606400
//! X-Pathway-Signature: sha256=<hex>
//! X-Pathway-Delivery: <seq>
//! ```
//!
//! Deliveries keep feed order. A failure is retried with exponential backoff; after
//! [`MAX_ATTEMPTS`] the item goes to the dead letters, which the agency can list, and delivery
//! moves on. Registrations, cursors and dead letters live in their own sled database
//! (`data/webhooks`): operational state, not derived from the log, so a rebuild keeps them.
//!
//! The worker is a step function ([`Webhooks::step`]) that tests call directly; the service
//! runs it in a loop woken by the projector.

use crate::problem::{bad_request, internal, HttpProblem, Problem};
use pathway_projector::{views, Projector};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// Attempts before an item is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 6;

#[derive(Clone, Serialize, Deserialize)]
struct Hook {
    id: Uuid,
    agency: String,
    url: String,
    /// Hex; shown once, at registration.
    secret: String,
    created_at: String,
    /// The last feed position delivered (or dead-lettered).
    cursor: u64,
    /// Failed attempts at the item after `cursor`.
    failures: u32,
    /// Unix seconds before which no attempt is made.
    next_attempt: i64,
    last_error: Option<String>,
}

/// Secrets stay out of logs and debug output.
impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("id", &self.id)
            .field("agency", &self.agency)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Hook {
    fn public(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "created_at": self.created_at,
            "delivered_through": self.cursor,
            "failures": self.failures,
            "last_error": self.last_error,
        })
    }
}

/// The webhook registry and its delivery worker.
pub struct Webhooks {
    hooks: sled::Tree,
    dead: sled::Tree,
    /// Flushed durably once a registration is answered.
    disk: pathway_log::Disk,
    projector: Projector,
    client: reqwest::Client,
    /// The first retry's delay; doubled on each failure.
    backoff: Duration,
}

fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a delivery's signature, as a receiver would.
pub fn verify(secret: &str, timestamp: &str, body: &str, header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, format!("{ts}.{body}").as_bytes(), &tag).is_ok()
}

fn dead_key(agency: &str, hook: Uuid, seq: u64) -> Vec<u8> {
    let mut k = agency.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(hook.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Webhooks {
    pub fn open(
        dir: &std::path::Path,
        projector: Projector,
        backoff: Duration,
    ) -> Result<Webhooks, pathway_log::LogError> {
        let db = pathway_log::open_sled(&sled::Config::new().path(dir).cache_capacity(8 << 20))?;
        Ok(Webhooks {
            hooks: db.open_tree("hooks")?,
            dead: db.open_tree("dead")?,
            disk: pathway_log::Disk::open(db, dir)?,
            projector,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            backoff,
        })
    }

    fn now(&self) -> time::OffsetDateTime {
        self.projector.log().now()
    }

    fn load(&self) -> Result<Vec<Hook>, HttpProblem> {
        self.hooks
            .iter()
            .map(|kv| {
                let (_, v) = kv.map_err(internal)?;
                serde_json::from_slice(&v).map_err(internal)
            })
            .collect()
    }

    fn save(&self, hook: &Hook) -> Result<(), HttpProblem> {
        self.hooks
            .insert(
                hook.id.as_bytes(),
                serde_json::to_vec(hook).expect("hooks serialise"),
            )
            .map_err(internal)?;
        Ok(())
    }

    /// Registers a URL for `agency`; the answer carries the secret, once. Delivery starts
    /// from now (`from` = the feed position to start after, default the current checkpoint).
    pub fn register(
        &self,
        agency: &str,
        url: &str,
        from: Option<u64>,
    ) -> Result<Value, HttpProblem> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| bad_request("/url", "must be an absolute http or https URL".into()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(bad_request(
                "/url",
                "must be an absolute http or https URL".into(),
            ));
        }
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| internal("no randomness"))?;
        let hook = Hook {
            id: Uuid::new_v4(),
            agency: agency.to_owned(),
            url: url.to_owned(),
            secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            created_at: self
                .now()
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(internal)?,
            cursor: from.unwrap_or_else(|| self.projector.checkpoint()),
            failures: 0,
            next_attempt: 0,
            last_error: None,
        };
        self.save(&hook)?;
        self.disk.flush().map_err(internal)?;
        let mut answer = hook.public();
        answer["secret"] = json!(hook.secret);
        Ok(answer)
    }

    pub fn list(&self, agency: &str) -> Result<Vec<Value>, HttpProblem> {
        Ok(self
            .load()?
            .iter()
            .filter(|h| h.agency == agency)
            .map(Hook::public)
            .collect())
    }

    pub fn remove(&self, agency: &str, id: Uuid) -> Result<(), HttpProblem> {
        match self.hooks.get(id.as_bytes()).map_err(internal)? {
            Some(v) if serde_json::from_slice::<Hook>(&v).map_err(internal)?.agency == agency => {
                self.hooks.remove(id.as_bytes()).map_err(internal)?;
                Ok(())
            }
            _ => Err(Problem::new(404, "not-found", "No such webhook of yours").into()),
        }
    }

    pub fn dead_letters(&self, agency: &str) -> Result<Vec<Value>, HttpProblem> {
        let mut prefix = agency.as_bytes().to_vec();
        prefix.push(0);
        self.dead
            .scan_prefix(prefix)
            .map(|kv| {
                let (_, v) = kv.map_err(internal)?;
                serde_json::from_slice(&v).map_err(internal)
            })
            .collect()
    }

    /// Attempts every delivery that is due. Returns how many items were delivered.
    pub async fn step(&self) -> Result<usize, HttpProblem> {
        let mut delivered = 0;
        for mut hook in self.load()? {
            let now = self.now().unix_timestamp();
            if hook.next_attempt > now {
                continue;
            }
            let items = {
                let p = self.projector.clone();
                let (agency, cursor) = (hook.agency.clone(), hook.cursor);
                tokio::task::spawn_blocking(move || views::feed(&p, &agency, cursor, 100))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?
            };
            for item in items {
                let seq = item["seq"].as_u64().unwrap_or(hook.cursor);
                let body = item.to_string();
                let timestamp = self.now().unix_timestamp();
                let sent = self
                    .client
                    .post(&hook.url)
                    .header("content-type", "application/json")
                    .header("x-pathway-timestamp", timestamp.to_string())
                    .header(
                        "x-pathway-signature",
                        format!("sha256={}", signature(&hook.secret, timestamp, &body)),
                    )
                    .header("x-pathway-delivery", seq.to_string())
                    .body(body)
                    .send()
                    .await;
                let error = match sent {
                    Ok(res) if res.status().is_success() => None,
                    Ok(res) => Some(format!("the receiver answered {}", res.status())),
                    Err(e) if e.is_timeout() => {
                        Some("the receiver did not answer in time".to_owned())
                    }
                    Err(_) => Some("the receiver could not be reached".to_owned()),
                };
                match error {
                    None => {
                        hook.cursor = seq;
                        hook.failures = 0;
                        hook.last_error = None;
                        delivered += 1;
                        self.save(&hook)?;
                    }
                    Some(e) => {
                        hook.failures += 1;
                        hook.last_error = Some(e.clone());
                        if hook.failures >= MAX_ATTEMPTS {
                            let letter = json!({
                                "webhook": hook.id, "seq": seq, "attempts": hook.failures,
                                "last_error": e, "dead_lettered_at": timestamp,
                            });
                            self.dead
                                .insert(
                                    dead_key(&hook.agency, hook.id, seq),
                                    letter.to_string().into_bytes(),
                                )
                                .map_err(internal)?;
                            tracing::warn!(webhook = %hook.id, seq, "webhook delivery dead-lettered");
                            hook.cursor = seq;
                            hook.failures = 0;
                            self.save(&hook)?;
                            continue;
                        }
                        let delay = self
                            .backoff
                            .saturating_mul(1 << (hook.failures - 1).min(16));
                        hook.next_attempt = now + delay.as_secs().max(1) as i64;
                        self.save(&hook)?;
                        break;
                    }
                }
            }
        }
        Ok(delivered)
    }

    /// Delivers as the feed grows, until the runtime stops.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut applied = self.projector.watch();
        loop {
            if let Err(e) = self.step().await {
                tracing::error!(error = ?e.0.title, "webhook pass failed");
            }
            // Woken by new projections, or after a second to retry what is due.
            let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
        }
    }
}
