//! spa-dat's transport-neutral [`Headers`] as Kafka record headers, and back.

use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};

use crate::socket::headers::{self, Headers};

/// `headers` as record headers; `None` when there are none (no allocation per record).
pub(super) fn to_record(headers: &Headers) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let record = headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |record, (key, value)| {
            record.insert(Header {
                key,
                value: Some(value),
            })
        },
    );
    Some(record)
}

/// The headers of a received record. A header whose value is not UTF-8 is left out (logged):
/// spa-dat's headers are text.
pub(super) fn of_record<M: Message>(message: &M) -> Headers {
    let Some(record) = message.headers() else {
        return Headers::new();
    };
    let mut headers = Headers::new();
    for header in record.iter() {
        match header.value.map(std::str::from_utf8) {
            None => headers.append(header.key, ""),
            Some(Ok(value)) => headers.append(header.key, value),
            Some(Err(_)) => tracing::debug!(
                topic = message.topic(),
                header = header.key,
                "record header with a value that is not UTF-8 left out"
            ),
        }
    }
    headers
}

/// The correlation id a received reply carries, if it is one of spa-dat's.
pub(super) fn correlation_of<M: Message>(message: &M) -> Option<u64> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == headers::CORRELATION_ID)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}
