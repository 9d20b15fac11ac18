//! The transport seam. Submissions travel from an adapter that authenticated an agency
//! (HTTP now, NATS later) to the recorder, and disclosure notices travel from the projector
//! to whoever delivers them. The embedded bus does both in-process; a NATS bus implements the
//! same traits with request/reply on `exchange.in.<agency>.<type>` and JetStream
//! `exchange.out.<agency>.<type>`.
//!
//! The wire types here ([`Submission`], [`Answer`], [`Problem`]) are what crosses any
//! transport, so they are plain serde data.

use async_trait::async_trait;
use pathway_core::envelope::FieldError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Envelopes from one authenticated agency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    pub agency: String,
    pub envelopes: Vec<serde_json::Value>,
    /// Whether the sender used the batch form (`{"events": [...]}`), which changes how
    /// field errors are addressed (`/events/3/data/x` rather than `/data/x`).
    pub batch: bool,
}

/// Where one event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub seq: u64,
    pub version: u64,
    pub young_person: Uuid,
    /// Already appended earlier with the same body. Not sent: a retry gets exactly the
    /// first answer; HTTP says it with 200 instead of 201.
    #[serde(skip)]
    pub duplicate: bool,
}

/// An RFC 9457 problem: the one error shape every transport answers with. `code` is stable
/// for programs; `title` and `detail` are for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: u16, code: &str, title: &str) -> Problem {
        Problem {
            type_uri: format!("https://pathway-exchange.example/problems/{code}"),
            title: title.to_owned(),
            status,
            code: code.to_owned(),
            detail: String::new(),
            errors: Vec::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = detail.into();
        self
    }

    pub fn errors(mut self, errors: Vec<FieldError>) -> Problem {
        self.errors = errors;
        self
    }
}

pub type Answer = Result<Vec<Accepted>, Problem>;

/// Reads a submission's body, as every transport receives it: one envelope, or
/// `{"events": [...]}` for an all-or-nothing batch of at most `max_batch`. Returns the
/// envelopes and whether the batch form was used.
#[allow(clippy::result_large_err)] // the same Problem every Answer carries; errors are rare
pub fn read_body(
    bytes: &[u8],
    max_batch: usize,
) -> Result<(Vec<serde_json::Value>, bool), Problem> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(400, "malformed-request", "The request could not be read").errors(vec![
            FieldError::new(
                "",
                format!("malformed JSON at line {}, column {}", e.line(), e.column()),
            ),
        ])
    })?;
    let invalid = |title: &str, errors: Vec<FieldError>| {
        Problem::new(422, "invalid-event", title).errors(errors)
    };
    let (envelopes, batch) = match value {
        Value::Object(mut m) if m.contains_key("events") => {
            let extra: Vec<FieldError> = m
                .keys()
                .filter(|k| *k != "events")
                .map(|k| FieldError::new(format!("/{k}"), "unknown field"))
                .collect();
            match m.remove("events") {
                Some(Value::Array(_)) if !extra.is_empty() => {
                    return Err(invalid("The batch has unknown fields", extra))
                }
                Some(Value::Array(items)) => (items, true),
                _ => {
                    return Err(invalid(
                        "`events` must be a list of envelopes",
                        vec![FieldError::new("/events", "must be an array")],
                    ))
                }
            }
        }
        v @ Value::Object(_) => (vec![v], false),
        _ => {
            return Err(invalid(
                "The body must be an envelope or {\"events\": [...]}",
                vec![FieldError::new("", "must be a JSON object")],
            ))
        }
    };
    if envelopes.len() > max_batch {
        return Err(
            Problem::new(413, "too-large", "The batch has too many events")
                .detail(format!("At most {max_batch} events per batch.")),
        );
    }
    Ok((envelopes, batch))
}

/// Whether a transport the service depends on is usable; `/readyz` reports each one.
pub trait Health: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn ready(&self) -> bool;
}

/// The recorder's side of ingress.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, submission: Submission) -> Answer;
}

/// An adapter's side of ingress: hand over a submission, get the recorder's answer.
#[async_trait]
pub trait Ingress: Send + Sync + 'static {
    async fn submit(&self, submission: Submission) -> Answer;
}

/// That an agency has a new disclosure at `seq` of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub agency: String,
    pub seq: u64,
    pub event_type: String,
}

/// Fan-out of disclosure notices to delivery channels (SSE, webhooks, NATS out).
/// Appending the exchange's own events (identity links, deadlines, retention purges): only
/// the exchange's own types pass, so no agency can reach this path.
#[async_trait]
pub trait OwnEvents: Send + Sync + 'static {
    async fn record_own(&self, envelopes: &[serde_json::Value]) -> Answer;
}

pub trait Egress: Send + Sync + 'static {
    fn publish(&self, notice: Notice);
    fn subscribe(&self) -> broadcast::Receiver<Notice>;
}

/// Everything in one process: the default, with nothing else to install.
pub struct Embedded {
    handler: Arc<dyn Handler>,
    notices: broadcast::Sender<Notice>,
}

impl Embedded {
    pub fn new(handler: Arc<dyn Handler>) -> Embedded {
        Embedded {
            handler,
            notices: broadcast::channel(4096).0,
        }
    }
}

#[async_trait]
impl Ingress for Embedded {
    async fn submit(&self, submission: Submission) -> Answer {
        self.handler.handle(submission).await
    }
}

impl Egress for Embedded {
    fn publish(&self, notice: Notice) {
        // No subscriber is fine: feeds are read from the projections, notices only wake.
        let _ = self.notices.send(notice);
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}
