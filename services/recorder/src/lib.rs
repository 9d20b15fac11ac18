//! The recorder: what happens between "an agency sent this" and "it is in the log". It
//! validates every envelope, checks the agency may source each type, and appends the lot
//! atomically. Transports (HTTP, NATS) authenticate and hand it a [`Submission`]; they never
//! touch the log themselves.

use async_trait::async_trait;
use pathway_bus::{Accepted, Answer, Handler, OwnEvents, Problem, Submission};
use pathway_core::catalogue::Sources;
use pathway_core::envelope::{validate, FieldError};
use pathway_core::Agreements;
use pathway_log::{AppendError, Log, NewEvent};
use std::sync::Arc;

pub struct Recorder {
    log: Log,
    agreements: Arc<Agreements>,
}

/// The source name of events the exchange itself originates.
pub const EXCHANGE: &str = "exchange";

impl Recorder {
    pub fn new(log: Log, agreements: Arc<Agreements>) -> Recorder {
        Recorder { log, agreements }
    }

    /// Appends events the exchange originates (retention purges, deadlines, identity links),
    /// all or none. They pass the same validation as an agency's, and only the exchange's own
    /// types are accepted here, so this path cannot forge an agency's event.
    pub async fn record_own(&self, envelopes: &[serde_json::Value]) -> Answer {
        let mut events = Vec::with_capacity(envelopes.len());
        let mut invalid = Vec::new();
        for (i, env) in envelopes.iter().enumerate() {
            let prefix = pointer(true, i, "");
            match validate(env) {
                Err(errors) => invalid.extend(errors.into_iter().map(|e| e.under(&prefix))),
                Ok(sub) if sub.event_type.sources() != Sources::Exchange => {
                    invalid.push(FieldError::new(
                        pointer(true, i, "/type"),
                        "not one of the exchange's own types",
                    ))
                }
                Ok(sub) => events.push(NewEvent {
                    submitted: sub,
                    source: EXCHANGE.to_owned(),
                }),
            }
        }
        if !invalid.is_empty() {
            return Err(
                Problem::new(422, "invalid-event", "The exchange's own event is invalid")
                    .errors(invalid),
            );
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match self.log.append(events).await {
            Ok(receipts) => Ok(receipts.into_iter().map(accepted).collect()),
            Err(e) => Err(problem(&e, true)),
        }
    }
}

fn accepted(r: pathway_log::Receipt) -> Accepted {
    Accepted {
        seq: r.seq,
        version: r.version,
        young_person: r.young_person,
        duplicate: r.duplicate,
    }
}

fn pointer(batch: bool, index: usize, field: &str) -> String {
    if batch {
        format!("/events/{index}{field}")
    } else {
        field.to_owned()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, s: Submission) -> Answer {
        let Some(agency) = self.agreements.agency(&s.agency) else {
            return Err(Problem::new(401, "unauthenticated", "Unknown agency"));
        };
        if s.envelopes.is_empty() {
            return Err(
                Problem::new(422, "invalid-event", "The batch is empty").errors(vec![
                    FieldError::new("/events", "at least one event is required"),
                ]),
            );
        }
        let mut events = Vec::with_capacity(s.envelopes.len());
        let mut invalid = Vec::new();
        let mut forbidden = Vec::new();
        let mut unsigned = Vec::new();
        for (i, env) in s.envelopes.into_iter().enumerate() {
            let prefix = pointer(s.batch, i, "");
            // The envelope is dropped here, on the caller's task, once validated: what the
            // log needs of it, its data's text included, is in the `Submitted`.
            match validate(&env) {
                Err(errors) => invalid.extend(errors.into_iter().map(|e| e.under(&prefix))),
                Ok(sub) if !sub.event_type.may_be_sourced_by(agency.kind) => {
                    forbidden.push(FieldError::new(
                        pointer(s.batch, i, "/type"),
                        format!("a {} may not send {}", agency.kind, sub.event_type),
                    ))
                }
                Ok(sub) => match check_signature(agency, &sub) {
                    Ok(()) => events.push(NewEvent {
                        submitted: sub,
                        source: agency.id.clone(),
                    }),
                    Err(message) => {
                        unsigned.push(FieldError::new(pointer(s.batch, i, "/signature"), message))
                    }
                },
            }
        }
        if !unsigned.is_empty() {
            return Err(Problem::new(
                401,
                "bad-signature",
                "The submission's signature is missing or does not verify",
            )
            .detail("Nothing was appended.")
            .errors(unsigned));
        }
        if !invalid.is_empty() {
            return Err(Problem::new(
                422,
                "invalid-event",
                "The event does not match the data standard",
            )
            .detail("Nothing was appended.")
            .errors(invalid));
        }
        if !forbidden.is_empty() {
            return Err(Problem::new(
                403,
                "not-a-permitted-source",
                "This agency may not send this event type",
            )
            .detail("Nothing was appended.")
            .errors(forbidden));
        }
        match self.log.append(events).await {
            Ok(receipts) => Ok(receipts.into_iter().map(accepted).collect()),
            Err(e) => Err(problem(&e, s.batch)),
        }
    }
}

/// Signed submissions: an agency with registered keys must sign every envelope; a signature
/// must be by one of its keys and verify over the envelope without `signature`.
fn check_signature(
    agency: &pathway_core::Agency,
    sub: &pathway_core::Submitted,
) -> Result<(), &'static str> {
    let Some(sig) = &sub.signature else {
        return if agency.signing_keys.is_empty() {
            Ok(())
        } else {
            Err("required: this agency signs its submissions")
        };
    };
    if !agency.signing_keys.contains(&sig.key) {
        return Err("not by a key registered for this agency");
    }
    let unhex = |s: &str| -> Option<Vec<u8>> {
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect()
    };
    let (Some(key), Some(value)) = (unhex(&sig.key), unhex(&sig.value)) else {
        return Err("is not hex");
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(&sub.signed, &value)
        .map_err(|_| "does not verify over this envelope")
}

fn problem(e: &AppendError, batch: bool) -> Problem {
    let nothing = "Nothing was appended.";
    match e {
        AppendError::Conflict {
            index,
            field,
            message,
        } => Problem::new(409, "conflict", "The event conflicts with the log")
            .detail(nothing)
            .errors(vec![FieldError::new(
                pointer(batch, *index, &format!("/{field}")),
                message.clone(),
            )]),
        AppendError::VersionMismatch {
            index,
            expected,
            actual,
        } => Problem::new(
            409,
            "version-mismatch",
            "The young person's record has moved on",
        )
        .detail(nothing)
        .errors(vec![FieldError::new(
            pointer(batch, *index, "/expected_version"),
            format!("expected version {expected}, but the current version is {actual}"),
        )]),
        AppendError::UnknownPerson { index } => Problem::new(
            422,
            "unknown-young-person",
            "The young person is not known to the exchange",
        )
        .detail(nothing)
        .errors(vec![FieldError::new(
            pointer(batch, *index, "/young_person"),
            "no young person with this id is registered; register them first",
        )]),
        AppendError::Storage(_) | AppendError::Closed => {
            tracing::error!(error = %e, "append failed");
            Problem::new(503, "log-unavailable", "The log could not record the event")
                .detail("Nothing was acknowledged; retry later.")
        }
    }
}

#[async_trait]
impl OwnEvents for Recorder {
    async fn record_own(&self, envelopes: &[serde_json::Value]) -> Answer {
        Recorder::record_own(self, envelopes).await
    }
}
