//! The delivery engine: how a consumer's messages get from its inbox through its handler to
//! their acknowledgement.
//!
//! - `consumer`: the per-message path — decode, check the envelope, call the handler, reply,
//!   retry and dead-letter as the [`crate::RetryPolicy`] says, acknowledge;
//! - `concurrent`: order keys and key queues — several messages at once while one key's
//!   messages stay in order ([`crate::MessageOrder`]), with the acknowledgement window of a
//!   transport that takes acknowledgements only in arrival order;
//! - `batch`: a batch consumer — many messages per call, cut by size or wait, a key's
//!   messages never in two batches at once, failures settled per element;
//! - `guarded`: a handler call with its limits (timeout, panic, shutdown grace);
//! - `watchdog`: a consumer that makes no progress stops being ready.
//!
//! It builds on the runtime floor and the handlers; the life cycle (`app/application.rs`)
//! starts it, and nothing of the engine imports the life cycle.

/// Logs at `level` about the message `delivery` being handled by `consumer`: every line
/// names the application, the topic and the position the same way. (Fields, not a span: the
/// per-message span is DEBUG, as an INFO span per message halves throughput, and a WARN line
/// must name its message under an `info` filter.)
macro_rules! about {
    ($level:ident, $consumer:expr, $delivery:expr, $($rest:tt)+) => {
        tracing::$level!(
            app = %$consumer.runtime.name,
            topic = %$delivery.topic,
            // Only where the transport keeps one (Kafka): `position=None` said nothing.
            position = $delivery.position.map(tracing::field::display),
            $($rest)+
        )
    };
}

pub(crate) mod batch;
pub(crate) mod concurrent;
pub(crate) mod consumer;
pub(crate) mod guarded;
mod watchdog;
