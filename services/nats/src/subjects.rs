//! The subject and stream names partner agencies build against. Nothing here does I/O.
//!
//! - `exchange.in.<agency>.<type>`: request/reply. The exchange answers once the event is
//!   durable in its log; with no exchange running the publisher hears "no responders" at once.
//! - `exchange.in.<agency>.jetstream.<type>`: the same envelopes through the `EXCHANGE_IN`
//!   stream, for publishers that fire and forget or must go on while the exchange is down.
//!   It needs its own token: a stream capturing the request/reply subjects would answer every
//!   request itself (a JetStream ack, before our log has the event) and there would never be
//!   "no responders". Both sit under `exchange.in.<agency>.>`, the one prefix an agency may
//!   publish to.
//! - `exchange.out.<agency>.<type>`: each disclosure, as that agency may see it, in the
//!   agency's own stream `OUT_<agency>`, so that broker permissions can confine a consumer
//!   to its own stream.
//! - `exchange.accepted.<agency>` and `exchange.rejected.<agency>`: the exchange's answer to
//!   every stream message (a JetStream ack says only that the broker stored it), and every
//!   rejection on either path.

/// Everything agencies publish; the exchange's queue group listens here.
pub const IN_ALL: &str = "exchange.in.>";
/// The queue group, so several exchange instances share the request/reply work.
pub const QUEUE_GROUP: &str = "exchange";
/// The token after the agency that routes a message through the ingress stream.
pub const STORED_TOKEN: &str = "jetstream";
/// The ingress stream and what it captures.
pub const STREAM_IN: &str = "EXCHANGE_IN";
pub const STREAM_IN_SUBJECTS: &str = "exchange.in.*.jetstream.>";
/// The recorder's durable pull consumer on the ingress stream.
pub const RECORDER_CONSUMER: &str = "recorder";
/// The exchange's own reply inboxes. An agency may subscribe only under `_INBOX.<its id>`,
/// and `exchange` is not an agency id, so no agency can read the exchange's replies.
pub const EXCHANGE_INBOX: &str = "_INBOX.exchange";
/// Headers on every answer and every out message.
pub const STATUS_HEADER: &str = "Pathway-Status";
pub const SEQ_HEADER: &str = "Pathway-Seq";
pub const SUBJECT_HEADER: &str = "Pathway-Subject";

/// Where an inbound message came from, read off its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound<'a> {
    pub agency: &'a str,
    pub event_type: &'a str,
    /// Came through the ingress stream rather than request/reply.
    pub stored: bool,
}

/// Reads `exchange.in.<agency>.<type>` or `exchange.in.<agency>.jetstream.<type>`.
/// `None` for anything else (a subject with no type, an empty token).
pub fn parse_in(subject: &str) -> Option<Inbound<'_>> {
    let rest = subject.strip_prefix("exchange.in.")?;
    let (agency, rest) = rest.split_once('.')?;
    if rest == STORED_TOKEN {
        return None;
    }
    let (stored, event_type) = match rest.split_once('.') {
        Some((STORED_TOKEN, t)) => (true, t),
        _ => (false, rest),
    };
    let valid = |s: &str| !s.is_empty() && s.split('.').all(|t| !t.is_empty());
    (valid(agency) && valid(event_type)).then_some(Inbound {
        agency,
        event_type,
        stored,
    })
}

pub fn in_subject(agency: &str, event_type: &str) -> String {
    format!("exchange.in.{agency}.{event_type}")
}

pub fn stored_subject(agency: &str, event_type: &str) -> String {
    format!("exchange.in.{agency}.{STORED_TOKEN}.{event_type}")
}

pub fn out_subject(agency: &str, event_type: &str) -> String {
    format!("exchange.out.{agency}.{event_type}")
}

pub fn out_filter(agency: &str) -> String {
    format!("exchange.out.{agency}.>")
}

pub fn out_stream(agency: &str) -> String {
    format!("OUT_{agency}")
}

pub fn accepted_subject(agency: &str) -> String {
    format!("exchange.accepted.{agency}")
}

pub fn rejected_subject(agency: &str) -> String {
    format!("exchange.rejected.{agency}")
}

/// The reply inbox prefix an agency's client must use (`custom_inbox_prefix` in async-nats,
/// `inbox_prefix` in other clients): its permissions allow no other.
pub fn agency_inbox(agency: &str) -> String {
    format!("_INBOX.{agency}")
}

/// The broker's `Nats-Msg-Id` for an out message: one per agency and log position, so a
/// republish after a crash is dropped by the stream's duplicate window.
pub fn out_msg_id(agency: &str, seq: u64) -> String {
    format!("{agency}:{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reply_subjects_carry_the_agency_and_a_dotted_type() {
        assert_eq!(
            parse_in("exchange.in.demo-la.placement.changed"),
            Some(Inbound {
                agency: "demo-la",
                event_type: "placement.changed",
                stored: false
            })
        );
    }

    #[test]
    fn stream_subjects_are_marked_stored() {
        let s = stored_subject("demo-college", "destination.recorded");
        assert_eq!(s, "exchange.in.demo-college.jetstream.destination.recorded");
        assert_eq!(
            parse_in(&s),
            Some(Inbound {
                agency: "demo-college",
                event_type: "destination.recorded",
                stored: true
            })
        );
    }

    #[test]
    fn subjects_without_a_type_or_with_empty_tokens_are_refused() {
        for s in [
            "exchange.in.demo-la",
            "exchange.in.demo-la.",
            "exchange.in..placement.changed",
            "exchange.in.demo-la.jetstream",
            "exchange.out.demo-la.placement.changed",
            "exchange.in.demo-la.placement..changed",
        ] {
            assert_eq!(parse_in(s), None, "{s}");
        }
    }

    #[test]
    fn names_built_here_parse_back() {
        let s = in_subject("a", "neet.onset");
        assert_eq!(
            parse_in(&s).map(|i| (i.agency, i.event_type)),
            Some(("a", "neet.onset"))
        );
        assert_eq!(out_filter("a"), "exchange.out.a.>");
        assert!(out_subject("a", "neet.onset").starts_with("exchange.out.a."));
    }
}
