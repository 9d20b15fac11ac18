//! One inbound message to one answer, the same answer HTTP gives: the recorder decides, this
//! module only checks what only NATS can get wrong (the subject) and renders the result.

use crate::subjects::{Inbound, STATUS_HEADER, SUBJECT_HEADER};
use async_nats::HeaderMap;
use bytes::Bytes;
use pathway_bus::{Answer, Handler, Problem, Submission};
use pathway_core::envelope::FieldError;
use std::collections::HashMap;

/// Size and batch limits, as for HTTP.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_bytes: usize,
    /// Agencies whose limit differs from `max_bytes`.
    pub per_agency: HashMap<String, usize>,
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 1 << 20,
            per_agency: HashMap::new(),
            max_batch: 1000,
        }
    }
}

impl Limits {
    fn for_agency(&self, agency: &str) -> usize {
        self.per_agency
            .get(agency)
            .copied()
            .unwrap_or(self.max_bytes)
    }
}

/// Validates and records one message's envelope (or batch) as `inbound.agency`; returns the
/// answer and whether the batch form was used. The broker's permissions are what make the
/// subject's agency trustworthy: an agency may publish only under `exchange.in.<its id>.>`.
pub async fn decide(
    handler: &dyn Handler,
    limits: &Limits,
    inbound: Inbound<'_>,
    payload: &[u8],
) -> (Answer, bool) {
    let mut batch = false;
    let answer = decide_inner(handler, limits, inbound, payload, &mut batch).await;
    (answer, batch)
}

async fn decide_inner(
    handler: &dyn Handler,
    limits: &Limits,
    inbound: Inbound<'_>,
    payload: &[u8],
    batch_form: &mut bool,
) -> Answer {
    let max = limits.for_agency(inbound.agency);
    if payload.len() > max {
        return Err(Problem::new(413, "too-large", "The message is too large")
            .detail(format!("At most {max} bytes per message; split the batch.")));
    }
    let (envelopes, batch) = pathway_bus::read_body(payload, limits.max_batch)?;
    *batch_form = batch;
    let mismatched: Vec<FieldError> = envelopes
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let t = e.get("type")?.as_str()?;
            (t != inbound.event_type).then(|| {
                let at = if batch {
                    format!("/events/{i}/type")
                } else {
                    "/type".to_owned()
                };
                FieldError::new(
                    at,
                    format!(
                        "is {t:?} but the subject says {:?}: publish each event on exchange.in.<agency>.<its type>",
                        inbound.event_type
                    ),
                )
            })
        })
        .collect();
    if !mismatched.is_empty() {
        return Err(Problem::new(
            422,
            "invalid-event",
            "The event's type differs from its subject",
        )
        .errors(mismatched));
    }
    handler
        .handle(Submission {
            agency: inbound.agency.to_owned(),
            envelopes,
            batch,
        })
        .await
}

/// The status HTTP would have answered with.
pub fn status(answer: &Answer) -> u16 {
    match answer {
        Ok(list) if list.iter().all(|a| a.duplicate) => 200,
        Ok(_) => 201,
        Err(p) => p.status,
    }
}

/// The answer's headers and body: the HTTP body exactly (`{"seq","version","young_person"}`,
/// a list of them for a batch, or the problem), with the status in `Pathway-Status`.
pub fn render(answer: &Answer, batch: bool, subject: &str) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(STATUS_HEADER, status(answer).to_string().as_str());
    headers.insert(SUBJECT_HEADER, subject);
    let body = match answer {
        Ok(list) if batch => serde_json::to_vec(list),
        Ok(list) => serde_json::to_vec(&list[0]),
        Err(p) => {
            headers.insert("Content-Type", "application/problem+json");
            serde_json::to_vec(p)
        }
    }
    .expect("answers serialise");
    (headers, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pathway_bus::Accepted;

    struct Echo;
    #[async_trait::async_trait]
    impl Handler for Echo {
        async fn handle(&self, s: Submission) -> Answer {
            Ok(s.envelopes
                .iter()
                .enumerate()
                .map(|(i, _)| Accepted {
                    seq: i as u64 + 1,
                    version: 1,
                    young_person: Default::default(),
                    duplicate: false,
                })
                .collect())
        }
    }

    fn inbound(t: &str) -> Inbound<'_> {
        Inbound {
            agency: "demo-la",
            event_type: t,
            stored: false,
        }
    }

    #[tokio::test]
    async fn an_event_whose_type_differs_from_the_subject_is_refused_naming_the_field() {
        let body = br#"{"type":"neet.onset","id":"x"}"#;
        let err = decide(
            &Echo,
            &Limits::default(),
            inbound("placement.changed"),
            body,
        )
        .await
        .0
        .unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(err.errors[0].field, "/type");
        assert!(err.errors[0].message.contains("placement.changed"));
    }

    #[tokio::test]
    async fn a_batch_names_the_mismatched_event() {
        let body = br#"{"events":[{"type":"neet.onset"},{"type":"placement.changed"}]}"#;
        let err = decide(&Echo, &Limits::default(), inbound("neet.onset"), body)
            .await
            .0
            .unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].field, "/events/1/type");
    }

    #[tokio::test]
    async fn oversized_and_malformed_messages_get_the_http_problems() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let big = decide(&Echo, &limits, inbound("neet.onset"), &[b' '; 11])
            .await
            .0
            .unwrap_err();
        assert_eq!((big.status, big.code.as_str()), (413, "too-large"));
        let bad = decide(&Echo, &Limits::default(), inbound("neet.onset"), b"{nope")
            .await
            .0
            .unwrap_err();
        assert_eq!((bad.status, bad.code.as_str()), (400, "malformed-request"));
    }

    #[tokio::test]
    async fn answers_render_as_the_http_bodies_with_the_status_in_a_header() {
        let (answer, batch) = decide(
            &Echo,
            &Limits::default(),
            inbound("neet.onset"),
            br#"{"type":"neet.onset"}"#,
        )
        .await;
        assert!(!batch);
        let (headers, body) = render(&answer, batch, "exchange.in.demo-la.neet.onset");
        assert_eq!(headers.get(STATUS_HEADER).unwrap().as_str(), "201");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["seq"], 1);
    }
}
