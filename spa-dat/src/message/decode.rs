//! Decoding the envelope as Python spa-dat 0.4.0 does (`SpaMessage(**json.loads(raw))` with
//! pydantic's lax mode), proven case by case against the real package by
//! `tests/wire_differential.rs`:
//!
//! - the document is one JSON object in UTF-8 (a byte-order mark is skipped); anything else
//!   is rejected (Python fails with a `TypeError` there);
//! - a key given twice counts with its last value, as Python's `dict` keeps it;
//! - `Payload` and `Topic` are required strings; `ContentType`, `ClientId`, `ClientName`,
//!   `ResponseTopic` are strings or `null`;
//! - `QualityOfService` is 0, 1 or 2, also written `1.0` or `true`; not `null`, not `"1"`;
//! - `Timestamp` is an integer, also written `1.0`, `1e3`, `true`, `" 1_000 "` or `"12.0"`;
//!   not `null`, not `"1e3"`;
//! - unknown keys are ignored;
//! - `traceparent` and `tracestate` (W3C trace context, see `crate::telemetry`; Python
//!   ignores them) are read when they are strings and ignored otherwise: trace context never
//!   makes a message undecodable.
//!
//! Errors name the field. Deliberate differences are listed in the test.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;

use super::qos::QualityOfService;

/// The envelope's fields as read, borrowing the input where it holds no escapes.
pub(super) struct Envelope<'a> {
    pub(super) payload: Cow<'a, str>,
    pub(super) topic: Cow<'a, str>,
    pub(super) content_type: Option<Cow<'a, str>>,
    pub(super) client_id: Option<Cow<'a, str>>,
    pub(super) client_name: Option<Cow<'a, str>>,
    pub(super) quality_of_service: Option<QualityOfService>,
    pub(super) response_topic: Option<Cow<'a, str>>,
    pub(super) timestamp: Option<i64>,
    pub(super) traceparent: Option<Cow<'a, str>>,
    pub(super) tracestate: Option<Cow<'a, str>>,
}

/// Decodes `bytes` into an envelope; the error names the field at fault.
pub(super) fn envelope(bytes: &[u8]) -> Result<Envelope<'_>, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    // Python decodes the whole document first: invalid UTF-8 anywhere, even in a key it then
    // ignores, rejects it.
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let fields = deserializer
        .deserialize_map(EnvelopeVisitor)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    fields.finish()
}

/// A known field's last value, as read: checked once the whole object is read, so a key given
/// twice counts with its last value whatever the first was.
#[derive(Default)]
struct Fields<'a> {
    payload: Option<Raw<'a>>,
    topic: Option<Raw<'a>>,
    content_type: Option<Raw<'a>>,
    client_id: Option<Raw<'a>>,
    client_name: Option<Raw<'a>>,
    quality_of_service: Option<Raw<'a>>,
    response_topic: Option<Raw<'a>>,
    timestamp: Option<Raw<'a>>,
    traceparent: Option<Raw<'a>>,
    tracestate: Option<Raw<'a>>,
}

impl<'a> Fields<'a> {
    fn finish(self) -> Result<Envelope<'a>, String> {
        let required = |raw: Option<Raw<'a>>, field: &str| match raw {
            Some(raw) => raw.text(field),
            None => Err(format!("missing field `{field}`")),
        };
        let optional = |raw: Option<Raw<'a>>, field: &str| match raw {
            None | Some(Raw::Null) => Ok(None),
            Some(raw) => raw.text(field).map(Some),
        };
        let lenient = |raw: Option<Raw<'a>>| match raw {
            Some(Raw::Text(text)) => Some(text),
            _ => None,
        };
        Ok(Envelope {
            payload: required(self.payload, "Payload")?,
            topic: required(self.topic, "Topic")?,
            content_type: optional(self.content_type, "ContentType")?,
            client_id: optional(self.client_id, "ClientId")?,
            client_name: optional(self.client_name, "ClientName")?,
            quality_of_service: self
                .quality_of_service
                .map(Raw::quality_of_service)
                .transpose()?,
            response_topic: optional(self.response_topic, "ResponseTopic")?,
            timestamp: self.timestamp.map(Raw::timestamp).transpose()?,
            traceparent: lenient(self.traceparent),
            tracestate: lenient(self.tracestate),
        })
    }
}

/// One JSON value, as read; an array or object is skipped, only its kind is kept.
enum Raw<'a> {
    Text(Cow<'a, str>),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    Bool(bool),
    Null,
    Array,
    Object,
}

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Quoted, and cut short: the error reaches logs and dead-letter headers, and the
            // text is whatever an outside client sent.
            Raw::Text(text) => write!(f, "the string {:?}", crate::topic::shortened(text)),
            Raw::Signed(number) => write!(f, "the number {number}"),
            Raw::Unsigned(number) => write!(f, "the number {number}"),
            Raw::Float(number) => write!(f, "the number {number}"),
            Raw::Bool(value) => write!(f, "{value}"),
            Raw::Null => f.write_str("null"),
            Raw::Array => f.write_str("an array"),
            Raw::Object => f.write_str("an object"),
        }
    }
}

impl<'a> Raw<'a> {
    fn text(self, field: &str) -> Result<Cow<'a, str>, String> {
        match self {
            Raw::Text(text) => Ok(text),
            other => Err(format!("`{field}` must be a string, not {other}")),
        }
    }

    /// 0, 1, 2 as integers, floats without a fraction or booleans (pydantic's lax mode).
    fn quality_of_service(self) -> Result<QualityOfService, String> {
        let level = match &self {
            Raw::Signed(number) => Some(i128::from(*number)),
            Raw::Unsigned(number) => Some(i128::from(*number)),
            Raw::Float(number) => whole(*number).map(i128::from),
            Raw::Bool(value) => Some(i128::from(*value)),
            _ => None,
        };
        match level {
            Some(0) => Ok(QualityOfService::AtMostOnce),
            Some(1) => Ok(QualityOfService::AtLeastOnce),
            Some(2) => Ok(QualityOfService::ExactlyOnce),
            _ => Err(format!("`QualityOfService` must be 0, 1 or 2, not {self}")),
        }
    }

    /// An integer as pydantic's lax mode takes one: integers, floats without a fraction,
    /// booleans, and strings as [`integer_text`] reads them.
    fn timestamp(self) -> Result<i64, String> {
        let seconds = match &self {
            Raw::Signed(number) => Some(*number),
            Raw::Unsigned(number) => i64::try_from(*number).ok(),
            Raw::Float(number) => whole(*number),
            Raw::Bool(value) => Some(i64::from(*value)),
            Raw::Text(text) => integer_text(text),
            _ => None,
        };
        seconds.ok_or_else(|| format!("`Timestamp` must be a whole number of seconds, not {self}"))
    }
}

/// A string holding an integer as pydantic reads one: surrounding whitespace, a sign, ASCII
/// digits with single underscores between them, and a fraction of zeros only (`" 1_000.00 "`);
/// no exponent, no other digits.
fn integer_text(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, fraction) = match unsigned.split_once('.') {
        Some((digits, fraction)) => (digits, Some(fraction)),
        None => (unsigned, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b == b'0')) {
        return None;
    }
    let bytes = digits.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.first()?.is_ascii_digit()
        && bytes.last()?.is_ascii_digit()
        && bytes.iter().all(|b| b.is_ascii_digit() || *b == b'_')
        && !digits.contains("__");
    if !well_formed {
        return None;
    }
    let mut value: i64 = 0;
    for digit in bytes.iter().filter(|b| b.is_ascii_digit()) {
        let digit = i64::from(digit - b'0');
        value = value
            .checked_mul(10)?
            .checked_add(if negative { -digit } else { digit })?;
    }
    Some(value)
}

/// `value` as an i64 when it is a whole number in range.
fn whole(value: f64) -> Option<i64> {
    // 2^63 is exactly a float; i64::MAX is not. -2^63 is left out as well: serde_json reads an
    // integer below i64::MIN as a float, and it rounds to -2^63.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (value.is_finite() && value.fract() == 0.0 && value > -LIMIT && value < LIMIT)
        .then_some(value as i64)
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a spa-dat envelope (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<RawKey<'de>>()? {
            let slot = match key.0.as_ref() {
                "Payload" => &mut fields.payload,
                "Topic" => &mut fields.topic,
                "ContentType" => &mut fields.content_type,
                "ClientId" => &mut fields.client_id,
                "ClientName" => &mut fields.client_name,
                "QualityOfService" => &mut fields.quality_of_service,
                "ResponseTopic" => &mut fields.response_topic,
                "Timestamp" => &mut fields.timestamp,
                super::TRACEPARENT => &mut fields.traceparent,
                super::TRACESTATE => &mut fields.tracestate,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<Raw<'de>>().map_err(|error| {
                de::Error::custom(format_args!("`{}`: {}", key.0, without_position(&error)))
            })?;
            *slot = Some(value);
        }
        Ok(fields)
    }
}

/// serde_json appends the position to an error, and again when it passes through it.
fn without_position(error: &impl fmt::Display) -> String {
    let text = error.to_string();
    match text.split_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => text,
    }
}

/// An object key, borrowed from the input when it holds no escapes.
struct RawKey<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for RawKey<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => Ok(RawKey(text)),
            _ => Err(de::Error::custom("an object key must be a string")),
        }
    }
}

impl<'de> de::Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Raw::Text(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Raw::Text(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Raw::Text(Cow::Owned(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Raw::Signed(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Raw::Unsigned(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Raw::Float(value))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Raw::Bool(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Raw::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::integer_text;

    #[test]
    fn integers_in_text_are_read_as_pydantic_reads_them() {
        for (text, expected) in [
            ("1.0", Some(1)),
            ("1.00", Some(1)),
            ("+5", Some(5)),
            ("-0", Some(0)),
            ("1_000", Some(1000)),
            (" 12 ", Some(12)),
            ("12\n", Some(12)),
            ("00012", Some(12)),
            ("-1.0", Some(-1)),
            ("9223372036854775807.0", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("1.", None),
            (".0", None),
            ("0x10", None),
            ("\u{661}\u{662}", None),
            ("1e3", None),
            ("1.5", None),
            ("1.0000000001", None),
            ("5.0e0", None),
            ("-", None),
            ("", None),
            ("1 2", None),
            ("_1", None),
            ("1__0", None),
            ("1_", None),
        ] {
            assert_eq!(integer_text(text), expected, "{text:?}");
        }
    }
}
