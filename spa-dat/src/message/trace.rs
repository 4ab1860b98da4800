//! W3C trace context as the envelope carries it: the two keys Python spa-dat 0.4.0 ignores
//! and passes on. Which span it names, and when it is read or written, is `crate::telemetry`'s
//! concern; here it is data.

/// The W3C `traceparent` key: in Kafka headers and in the envelope.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` key: in Kafka headers and in the envelope.
pub const TRACESTATE: &str = "tracestate";

/// W3C trace context as a message carries it (see [`crate::telemetry`]).
///
/// # Examples
///
/// ```
/// use spa_dat::message::TraceContext;
/// use spa_dat::SpaMessage;
///
/// // On the wire as the envelope's extra keys `traceparent` and `tracestate`.
/// let wire = br#"{"Payload":"hi","Topic":"t","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;
/// let message = SpaMessage::from_json(wire)?;
/// let trace: &TraceContext = message.trace_context.as_ref().expect("carried");
/// assert!(trace.traceparent.starts_with("00-4bf92f35"));
/// assert_eq!(trace.tracestate, None);
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-{trace id}-{parent span id}-{flags}`.
    pub traceparent: String,
    /// Vendor-specific trace state, if any.
    pub tracestate: Option<String>,
}

/// `version-traceid-parentid-flags` in lowercase hex (W3C Trace Context §3.2), 55 characters
/// for version 00 (later versions may append fields).
pub(crate) fn is_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    value.len() >= 55
        && value.len() <= 256
        && fields.len() >= 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&fields)
            .all(|(len, field)| field.len() == *len)
        && value
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// At most 512 printable ASCII characters (W3C Trace Context §3.3: a list of at most 32
/// members, which vendors may cut at 512 characters).
pub(crate) fn is_tracestate(value: &str) -> bool {
    value.len() <= 512 && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}
