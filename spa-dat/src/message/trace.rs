//! W3C trace context as the envelope carries it: the two keys Python spa-dat 0.4.0 ignores
//! and passes on. Which span it names, and when it is read or written, is `crate::telemetry`'s
//! concern; here it is data.

/// The W3C `traceparent` key: in Kafka headers and in the envelope.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` key: in Kafka headers and in the envelope.
pub const TRACESTATE: &str = "tracestate";

/// W3C trace context as a message carries it (see [`crate::telemetry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-{trace id}-{parent span id}-{flags}`.
    pub traceparent: String,
    /// Vendor-specific trace state, if any.
    pub tracestate: Option<String>,
}
