//! How a message travels on a bus: in the spa-dat envelope (what the Python package writes) or
//! as its payload alone with its metadata in the transport's headers (what FastStream and plain
//! MQTT or Kafka clients write). A bus's setting ([`WireFormat`]); the runtime encodes with it,
//! and [`Delivery::message`] decodes with it.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

use super::headers;
use super::record::Delivery;
use crate::error::Result;
use crate::message::envelope::SpaMessage;
use crate::message::qos::QualityOfService;
use crate::message::{is_traceparent, is_tracestate, TraceContext, TRACEPARENT, TRACESTATE};

/// How messages are written on a bus, and read.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use spa_dat::socket::headers::{CONTENT_TYPE, RESPONSE_TOPIC};
/// use spa_dat::socket::spi::Delivery;
/// use spa_dat::socket::WireFormat;
/// use spa_dat::SpaMessage;
///
/// // A bare payload, as FastStream publishes it: its metadata in headers.
/// let bare = Delivery::new(Arc::from("orders"), "{\"id\": 7}".into())
///     .with_headers([(CONTENT_TYPE, "application/json"), (RESPONSE_TOPIC, "replies/1")].into_iter().collect());
/// let message = bare.message(WireFormat::Raw)?;
/// assert_eq!(message.topic, "orders");
/// assert_eq!(message.payload_str()?, "{\"id\": 7}");
/// assert_eq!(message.content_type.as_deref(), Some("application/json"));
/// assert_eq!(message.response_topic.as_deref(), Some("replies/1"));
/// // The envelope format refuses it: it is not a spa-dat message.
/// assert!(bare.message(WireFormat::Envelope).is_err());
///
/// // An envelope (Python spa-dat) is read as one in either format.
/// let envelope = SpaMessage::new("orders", "hi").to_json()?;
/// let delivery = Delivery::new(Arc::from("orders"), envelope.into());
/// assert_eq!(delivery.message(WireFormat::Raw)?.payload_str()?, "hi");
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// The spa-dat envelope (`../WIRE.md`: JSON with `Payload`, `Topic`, `ResponseTopic`, …):
    /// what the Python package 0.4.0 writes and reads. A message that is not one is bad input
    /// (dead-lettered). The default.
    #[default]
    Envelope,
    /// The payload alone; the content type, response topic, correlation id and trace context
    /// in the transport's headers (MQTT 5 properties, Kafka headers): what FastStream and plain
    /// clients write. Reading, an envelope is still read as one (a Python spa-dat publisher on
    /// the same bus) unless its headers give a content type; anything else is a bare payload. Needs a transport that carries headers
    /// for requests and replies (MQTT 5, Kafka, the in-process bus).
    Raw,
}

/// `envelope` or `raw`, as in configuration.
impl std::str::FromStr for WireFormat {
    /// What is wrong, in words.
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        match value.trim() {
            "envelope" => Ok(WireFormat::Envelope),
            "raw" => Ok(WireFormat::Raw),
            other => Err(format!("wire must be `envelope` or `raw`, got `{other}`")),
        }
    }
}

impl Delivery {
    /// The message this delivery carries, read as `format` says (see [`WireFormat`]).
    ///
    /// # Errors
    /// [`crate::Error::Decode`] when `format` is [`WireFormat::Envelope`] and the payload is
    /// not a spa-dat envelope.
    pub fn message(&self, format: WireFormat) -> Result<SpaMessage> {
        self.read(format).map(|(message, _)| message)
    }

    /// [`Delivery::message`], with the form it was read in: an envelope on a raw bus is
    /// answered in the envelope (a Python spa-dat requester reads nothing else).
    pub(crate) fn read(&self, format: WireFormat) -> Result<(SpaMessage, WireFormat)> {
        let (mut message, read_as) = self.decode(format)?;
        // What is left of its expiry (MQTT 5): forwarded, it keeps no more than that.
        message.expiry = self
            .headers
            .get(headers::MESSAGE_EXPIRY_SECS)
            .and_then(|secs| secs.trim().parse().ok())
            .map(std::time::Duration::from_secs);
        Ok((message, read_as))
    }

    fn decode(&self, format: WireFormat) -> Result<(SpaMessage, WireFormat)> {
        let bare = || (self.bare_message(), WireFormat::Raw);
        match format {
            WireFormat::Envelope => {
                SpaMessage::from_json(&self.payload).map(|m| (m, WireFormat::Envelope))
            }
            // A content type in the headers says what the payload is: not an envelope (which
            // never travels with one).
            WireFormat::Raw if self.headers.get(headers::CONTENT_TYPE).is_some() => Ok(bare()),
            WireFormat::Raw if !may_be_envelope(&self.payload) => Ok(bare()),
            WireFormat::Raw => Ok(SpaMessage::from_json(&self.payload)
                .map(|m| (m, WireFormat::Envelope))
                .unwrap_or_else(|_| bare())),
        }
    }

    /// The payload as it is, with the metadata its headers carry.
    fn bare_message(&self) -> SpaMessage {
        let mut message = SpaMessage::new(self.topic.to_string(), self.payload.clone());
        message.content_type = self.headers.get(headers::CONTENT_TYPE).map(str::to_owned);
        message.response_topic = self.headers.get(headers::RESPONSE_TOPIC).map(str::to_owned);
        // The transport's guarantee is what it is; the envelope's field has no source here.
        message.quality_of_service = QualityOfService::AtLeastOnce;
        // Its trace context came in the headers (there is no envelope to carry it), if it has
        // the W3C form: a publisher's header is any text.
        message.trace_context = self
            .headers
            .get(TRACEPARENT)
            .filter(|traceparent| is_traceparent(traceparent))
            .map(|traceparent| TraceContext {
                traceparent: traceparent.to_owned(),
                tracestate: self
                    .headers
                    .get(TRACESTATE)
                    .filter(|state| is_tracestate(state))
                    .map(str::to_owned),
            });
        message
    }
}

/// Whether `payload` could be an envelope at all: an envelope has the key `Payload`, written
/// out or with `\u` escapes (no other JSON escape makes a letter). A raw body with neither is
/// not tried as one: the attempt cost a whole JSON parse per message, then failed.
fn may_be_envelope(payload: &[u8]) -> bool {
    // Built once: a finder's set-up costs more than searching a short body.
    static PAYLOAD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"Payload"));
    static UNICODE_ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
    PAYLOAD.find(payload).is_some() || UNICODE_ESCAPE.find(payload).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn read_raw(payload: &'static [u8]) -> (SpaMessage, WireFormat) {
        Delivery::new(Arc::from("t"), Bytes::from_static(payload))
            .read(WireFormat::Raw)
            .expect("reads")
    }

    #[test]
    fn a_raw_body_is_the_payload_and_an_envelope_is_still_read_as_one() {
        let (message, read_as) = read_raw(br#"{"sensor":"kitchen","celsius":21.5}"#);
        assert_eq!(read_as, WireFormat::Raw);
        assert_eq!(
            &message.payload[..],
            br#"{"sensor":"kitchen","celsius":21.5}"#
        );
        let (message, read_as) = read_raw(br#"{"Payload":"21.5","Topic":"readings"}"#);
        assert_eq!(
            (read_as, &message.payload[..]),
            (WireFormat::Envelope, &b"21.5"[..])
        );
        // The key spelled with escapes is the same key to a JSON reader (and to Python).
        let (message, read_as) = read_raw(br#"{"\u0050ayload":"21.5","Topic":"readings"}"#);
        assert_eq!(
            (read_as, &message.payload[..]),
            (WireFormat::Envelope, &b"21.5"[..])
        );
    }
}
