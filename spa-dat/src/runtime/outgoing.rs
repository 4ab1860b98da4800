//! What the runtime sends through any transport, written once over [`SpaSocket::send`]: a
//! message in the wire format with the current trace context, a reply that goes back with its
//! request's correlation id, a request and its wait. Transports never see a [`SpaMessage`]
//! being encoded; they get [`Outgoing`] bytes and headers.

use std::time::Duration;

use bytes::Bytes;

use crate::error::Result;
use crate::message::SpaMessage;
use crate::socket::headers;
use crate::socket::{Delivery, Outgoing, PendingReply, SpaSocket};
use crate::telemetry;

impl Outgoing {
    /// `message` in the wire format, to its own topic. Inside an OpenTelemetry span (feature
    /// `opentelemetry`) its trace context is the current span's, in the envelope and in the
    /// headers; elsewhere it keeps the context it has (a forwarded message stays in its trace).
    pub fn message(message: SpaMessage) -> Result<Self> {
        Outgoing::traced(&message)
    }

    /// [`Outgoing::message`], borrowing the message.
    pub(crate) fn traced(message: &SpaMessage) -> Result<Self> {
        let current = telemetry::current();
        let trace = current.as_ref().or(message.trace_context.as_ref());
        let mut outgoing = Outgoing::new(message.topic.clone(), message.to_wire(trace)?);
        if let Some(trace) = trace {
            telemetry::write_headers(trace, &mut outgoing.headers);
        }
        Ok(outgoing)
    }

    /// `reply` to a request that arrived as `request`: the request's correlation id, if it
    /// carried one, goes back with it.
    pub fn reply(reply: &SpaMessage, request: &Delivery) -> Result<Self> {
        let mut outgoing = Outgoing::traced(reply)?;
        if let Some(id) = request.headers.get(headers::CORRELATION_ID) {
            outgoing.headers.insert(headers::CORRELATION_ID, id);
        }
        Ok(outgoing)
    }
}

/// What every socket does on top of its transport's methods, written once.
impl dyn SpaSocket {
    /// Publishes `message` to its topic, in the wire format.
    pub async fn publish(&self, message: &SpaMessage) -> Result<()> {
        self.send(Outgoing::traced(message)?).await
    }

    /// Publishes bytes as they are to `topic`.
    pub async fn publish_bytes(&self, topic: &str, payload: Bytes) -> Result<()> {
        self.send(Outgoing::new(topic, payload)).await
    }

    /// Publishes `reply` to a request that arrived as `request`; its correlation id, if it
    /// carried one, goes back with it.
    pub async fn publish_reply(&self, reply: &SpaMessage, request: &Delivery) -> Result<()> {
        self.send(Outgoing::reply(reply, request)?).await
    }

    /// Publishes `message` with a response topic of this socket's and waits for the reply,
    /// at most `timeout`. Concurrent requests each get their own reply.
    pub async fn request(&self, message: SpaMessage, timeout: Duration) -> Result<SpaMessage> {
        let pending = self.reply_route(&message.topic).await?;
        let (request, destination) = request_on(message, &pending)?;
        self.send(request).await?;
        pending.wait(&destination, timeout).await
    }
}

/// A request, written once: `message` carrying the response topic and correlation id of its
/// reply route `pending`, with the destination its reply is awaited from. (Not an async fn
/// taking the send: a request's future nested in another cost 8 % of the in-process bus's
/// request/reply throughput, BENCHMARKS.md.)
pub(super) fn request_on(
    mut message: SpaMessage,
    pending: &PendingReply,
) -> Result<(Outgoing, String)> {
    message.response_topic = Some(pending.response_topic().to_owned());
    let destination = message.topic.clone();
    let request = Outgoing::message(message)?
        .with_header(headers::CORRELATION_ID, pending.id().to_string())
        .with_header(headers::RESPONSE_TOPIC, pending.response_topic());
    Ok((request, destination))
}
