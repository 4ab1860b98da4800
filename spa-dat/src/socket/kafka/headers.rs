//! spa-dat's transport-neutral [`Headers`] as Kafka record headers, and back.
//!
//! Three of them take the names FastStream (and other Kafka frameworks) use, so requests and
//! replies work across them: the response topic travels as `reply_to`, the content type as
//! `content-type`, and the correlation id as `correlation_id` beside spa-dat's own
//! `spa-correlation-id` (which earlier spa-dat versions read).

use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};

use crate::socket::headers::{self, Headers};

/// FastStream's name of the response topic.
const REPLY_TO: &str = "reply_to";
/// FastStream's name of the content type.
const CONTENT_TYPE: &str = "content-type";
/// FastStream's name of the correlation id.
const CORRELATION_ID: &str = "correlation_id";

/// The record header name of the neutral header `name`.
fn record_name(name: &str) -> &str {
    match name {
        headers::RESPONSE_TOPIC => REPLY_TO,
        headers::CONTENT_TYPE => CONTENT_TYPE,
        other => other,
    }
}

/// `headers` as record headers; `None` when there are none (no allocation per record).
pub(super) fn to_record(headers: &Headers) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut record = OwnedHeaders::new_with_capacity(headers.len() + 1);
    for (key, value) in headers.iter() {
        record = record.insert(Header {
            key: record_name(key),
            value: Some(value),
        });
        if key == headers::CORRELATION_ID {
            record = record.insert(Header {
                key: CORRELATION_ID,
                value: Some(value),
            });
        }
    }
    Some(record)
}

/// The headers of a received record. A header whose value is not UTF-8 is left out (logged):
/// spa-dat's headers are text. FastStream's names become the neutral ones; its
/// `correlation_id` only where no `spa-correlation-id` came (both come from spa-dat, with one
/// value).
pub(super) fn of_record<M: Message>(message: &M) -> Headers {
    let Some(record) = message.headers() else {
        return Headers::new();
    };
    let mut headers = Headers::new();
    let mut foreign_correlation = None;
    for header in record.iter() {
        let value = match header.value.map(std::str::from_utf8) {
            None => "",
            Some(Ok(value)) => value,
            Some(Err(_)) => {
                tracing::debug!(
                    topic = message.topic(),
                    header = header.key,
                    "record header with a value that is not UTF-8 left out"
                );
                continue;
            }
        };
        match header.key {
            REPLY_TO => headers.append_static(headers::RESPONSE_TOPIC, value),
            CONTENT_TYPE => headers.append_static(headers::CONTENT_TYPE, value),
            CORRELATION_ID => {
                foreign_correlation.get_or_insert(value);
            }
            key => headers.append(key, value),
        }
    }
    if let Some(id) = foreign_correlation {
        if headers.get(headers::CORRELATION_ID).is_none() {
            headers.append_static(headers::CORRELATION_ID, id);
        }
    }
    headers
}

/// The correlation id a received reply carries (its headers as [`of_record`] reads them), if it
/// is one of spa-dat's: a number (a FastStream responder echoes it as `correlation_id`, which
/// `of_record` reads where no `spa-correlation-id` came).
pub(super) fn correlation_of(headers: &Headers) -> Option<u64> {
    headers.get(headers::CORRELATION_ID)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn record(headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            headers,
        )
    }

    #[test]
    fn response_topic_content_type_and_correlation_travel_under_fast_streams_names_and_back() {
        let sent: Headers = [
            (headers::CORRELATION_ID, "42"),
            (headers::RESPONSE_TOPIC, "replies/a"),
            (headers::CONTENT_TYPE, "text/plain"),
            ("tag", "x"),
        ]
        .into_iter()
        .collect();
        let message = record(to_record(&sent));
        let names: Vec<&str> = message
            .headers()
            .map(|h| h.iter().map(|h| h.key).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            [
                "spa-correlation-id",
                "correlation_id",
                "reply_to",
                "content-type",
                "tag"
            ]
        );
        let received = of_record(&message);
        assert_eq!(received.get(headers::CORRELATION_ID), Some("42"));
        assert_eq!(received.get(headers::RESPONSE_TOPIC), Some("replies/a"));
        assert_eq!(received.get(headers::CONTENT_TYPE), Some("text/plain"));
        assert_eq!(received.len(), 4, "the correlation id once: {received:?}");
        assert_eq!(correlation_of(&of_record(&message)), Some(42));
    }

    #[test]
    fn a_fast_stream_correlation_id_is_read_and_spa_dats_own_wins_over_it() {
        let foreign = OwnedHeaders::new()
            .insert(Header {
                key: "correlation_id",
                value: Some("7"),
            })
            .insert(Header {
                key: "correlation_id",
                value: Some("8"),
            });
        let message = record(Some(foreign));
        assert_eq!(of_record(&message).get(headers::CORRELATION_ID), Some("7"));
        assert_eq!(correlation_of(&of_record(&message)), Some(7));
        let both = OwnedHeaders::new()
            .insert(Header {
                key: "correlation_id",
                value: Some("9"),
            })
            .insert(Header {
                key: "spa-correlation-id",
                value: Some("10"),
            });
        let message = record(Some(both));
        let received = of_record(&message);
        assert_eq!(received.get(headers::CORRELATION_ID), Some("10"));
        assert_eq!(received.len(), 1);
        assert_eq!(correlation_of(&of_record(&message)), Some(10));
        // A FastStream uuid is no spa-dat correlation id: no request of ours waits for it.
        let uuid = OwnedHeaders::new().insert(Header {
            key: "correlation_id",
            value: Some("6f1c2a4e-0000-4000-8000-000000000000"),
        });
        assert_eq!(correlation_of(&of_record(&record(Some(uuid)))), None);
    }
}
