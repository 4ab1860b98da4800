//! What the runtime sends through any transport, written once over [`SpaSocket::send`]: a
//! message in the wire format with the current trace context, a reply that goes back with its
//! request's correlation id, a request and its wait. Transports never see a [`SpaMessage`]
//! being encoded; they get [`Outgoing`] bytes and headers.

use std::time::Duration;

use bytes::Bytes;

use crate::error::Result;
use crate::message::SpaMessage;
use crate::socket::headers;
use crate::socket::{Delivery, Outgoing, PendingReply, SpaSocket, WireFormat};
use crate::telemetry;

impl Outgoing {
    /// `message` in the wire format, to its own topic. Inside an OpenTelemetry span (feature
    /// `opentelemetry`) its trace context is the current span's, in the envelope and in the
    /// headers; elsewhere it keeps the context it has (a forwarded message stays in its trace).
    pub fn message(message: SpaMessage) -> Result<Self> {
        Outgoing::traced(&message, WireFormat::Envelope)
    }

    /// `message` written as `format` says: in the envelope, or its payload alone with its
    /// content type and response topic as headers ([`WireFormat::Raw`]). Otherwise as
    /// [`Outgoing::message`].
    pub fn message_as(message: SpaMessage, format: WireFormat) -> Result<Self> {
        Outgoing::traced(&message, format)
    }

    /// [`Outgoing::message_as`], borrowing the message.
    pub(crate) fn traced(message: &SpaMessage, format: WireFormat) -> Result<Self> {
        let current = telemetry::current();
        let trace = current.as_ref().or(message.trace_context.as_ref());
        let mut outgoing = match format {
            WireFormat::Envelope => Outgoing::new(message.topic.clone(), message.to_wire(trace)?),
            WireFormat::Raw => {
                let mut bare = Outgoing::new(message.topic.clone(), message.payload.clone());
                if let Some(content_type) = &message.content_type {
                    bare.headers
                        .insert_static(headers::CONTENT_TYPE, content_type.as_str());
                }
                if let Some(response_topic) = &message.response_topic {
                    bare.headers
                        .insert_static(headers::RESPONSE_TOPIC, response_topic.as_str());
                }
                bare
            }
        };
        if let Some(trace) = trace {
            telemetry::write_headers(trace, &mut outgoing.headers);
        }
        if let Some(expiry) = message.expiry {
            // Whole seconds, rounded up: an expiry below one second is not none.
            let secs = expiry
                .as_secs()
                .saturating_add(u64::from(expiry.subsec_nanos() > 0));
            outgoing
                .headers
                .insert_static(headers::MESSAGE_EXPIRY_SECS, secs.max(1).to_string());
        }
        Ok(outgoing)
    }

    /// `reply` to a request that arrived as `request`, in the envelope: the request's
    /// correlation id, if it carried one, goes back with it.
    pub fn reply(reply: &SpaMessage, request: &Delivery) -> Result<Self> {
        Outgoing::reply_as(reply, request, WireFormat::Envelope)
    }

    /// [`Outgoing::reply`], written as `format` says.
    pub fn reply_as(reply: &SpaMessage, request: &Delivery, format: WireFormat) -> Result<Self> {
        let mut outgoing = Outgoing::traced(reply, format)?;
        if let Some(id) = request.headers.get(headers::CORRELATION_ID) {
            outgoing.headers.insert_static(headers::CORRELATION_ID, id);
        }
        Ok(outgoing)
    }
}

/// What every socket does on top of its transport's methods, written once.
impl dyn SpaSocket {
    /// Publishes `message` to its topic, in the socket's wire format.
    pub async fn publish(&self, message: &SpaMessage) -> Result<()> {
        self.send(Outgoing::traced(message, self.wire_format())?)
            .await
    }

    /// Publishes bytes as they are to `topic`.
    pub async fn publish_bytes(&self, topic: &str, payload: Bytes) -> Result<()> {
        self.send(Outgoing::new(topic, payload)).await
    }

    /// Publishes `reply` to a request that arrived as `request`; its correlation id, if it
    /// carried one, goes back with it.
    pub async fn publish_reply(&self, reply: &SpaMessage, request: &Delivery) -> Result<()> {
        self.send(Outgoing::reply_as(reply, request, self.wire_format())?)
            .await
    }

    /// Publishes `message` with a response topic of this socket's and waits for the reply,
    /// at most `timeout`. Concurrent requests each get their own reply.
    pub async fn request(&self, message: SpaMessage, timeout: Duration) -> Result<SpaMessage> {
        let pending = self.reply_route(&message.topic).await?;
        let (request, destination) = request_on(message, &pending, self.wire_format())?;
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
    format: WireFormat,
) -> Result<(Outgoing, String)> {
    message.response_topic = Some(pending.response_topic().to_owned());
    let destination = message.topic.clone();
    let mut request = Outgoing::traced(&message, format)?;
    request
        .headers
        .insert_static(headers::CORRELATION_ID, pending.id().to_string());
    request
        .headers
        .insert_static(headers::RESPONSE_TOPIC, pending.response_topic());
    Ok((request, destination))
}
