//! The [`Socket`] handle: what handlers publish, request and subscribe through. Every message
//! an application sends — its own, its handlers' replies, its dead letters — goes through it,
//! so each is stamped, traced and counted alike.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::outgoing::round_trip;
use crate::error::Result;
use crate::message::{MessageBuilder, SpaMessage};
use crate::socket::headers;
use crate::socket::{Delivery, Outgoing, SpaSocket};
use crate::topic::validate_topic;

/// The handle handlers use to talk to the bus: publish, request, (un)subscribe.
///
/// Cheap to clone. Messages it publishes get the application's `client_id`/`client_name` when
/// they have none.
#[derive(Clone)]
pub struct Socket {
    inner: Arc<dyn SpaSocket>,
    builder: MessageBuilder,
    request_timeout: Duration,
    metrics: Option<Arc<crate::metrics::AppMetrics>>,
    spans: crate::telemetry::SpanScope,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("builder", &self.builder)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// Wraps a transport socket.
    pub fn new(
        inner: Arc<dyn SpaSocket>,
        builder: MessageBuilder,
        request_timeout: Duration,
    ) -> Self {
        Socket {
            inner,
            builder,
            request_timeout,
            metrics: None,
            spans: crate::telemetry::SpanScope::detached(),
        }
    }

    /// Counts what this socket publishes in `metrics` and traces it in `spans`.
    pub(crate) fn with_telemetry(
        mut self,
        metrics: Arc<crate::metrics::AppMetrics>,
        spans: crate::telemetry::SpanScope,
    ) -> Self {
        self.metrics = Some(metrics);
        self.spans = spans;
        self
    }

    /// The attributes of this socket's spans.
    pub(crate) fn spans(&self) -> &crate::telemetry::SpanScope {
        &self.spans
    }

    /// Publishes `message` (stamped with the sender fields) with `key`, in a `send` span whose
    /// trace context goes along.
    async fn send_message(&self, message: SpaMessage, key: Option<Bytes>) -> Result<()> {
        let message = self.builder.stamp(message);
        let span = self.spans.send(&message.topic, message.payload.len(), None);
        let outgoing = Outgoing {
            key,
            ..span.in_scope(|| Outgoing::traced(&message))?
        };
        span.run(self.send_counted(outgoing, None)).await
    }

    /// Publishes a handler's `reply` (stamped, addressed to the response topic) to `request`,
    /// in a `send` span of the request's conversation; counted as sent to
    /// [`crate::metrics::REPLY_DESTINATION`].
    pub(crate) async fn publish_reply(&self, reply: &SpaMessage, request: &Delivery) -> Result<()> {
        let conversation = request.headers.get(headers::CORRELATION_ID);
        let span = self
            .spans
            .send(&reply.topic, reply.payload.len(), conversation);
        let outgoing = span.in_scope(|| Outgoing::reply(reply, request))?;
        span.run(self.send_counted(outgoing, Some(crate::metrics::REPLY_DESTINATION)))
            .await
    }

    /// Sends `outgoing` as it is (a dead letter), in a `send` span, counted.
    pub(crate) async fn forward(&self, outgoing: Outgoing) -> Result<()> {
        let span = self
            .spans
            .send(&outgoing.topic, outgoing.payload.len(), None);
        span.run(self.send_counted(outgoing, None)).await
    }

    /// Sends `outgoing`, counting it once the transport took it: as sent to `label`, else to its
    /// topic.
    async fn send_counted(&self, outgoing: Outgoing, label: Option<&'static str>) -> Result<()> {
        // A topic the transport will refuse takes no label value (outside clients choose
        // reply topics).
        let counted = self
            .metrics
            .as_ref()
            .filter(|_| crate::metrics::enabled())
            .and_then(|m| match label {
                Some(label) => Some(m.sent(label)),
                None => validate_topic(&outgoing.topic)
                    .is_ok()
                    .then(|| m.sent(&outgoing.topic)),
            });
        self.inner.send(outgoing).await?;
        if let Some(counted) = counted {
            counted.increment(1);
        }
        Ok(())
    }

    /// Publishes a message.
    pub async fn publish(&self, message: SpaMessage) -> Result<()> {
        self.send_message(message, None).await
    }

    /// Publishes a message with a key: consumers ordering by key handle one key's messages in
    /// order (see [`Outgoing::key`]; MQTT has no key and ignores it).
    pub async fn publish_keyed(&self, key: impl Into<Bytes>, message: SpaMessage) -> Result<()> {
        self.send_message(message, Some(key.into())).await
    }

    /// Publishes `value` as a JSON message on `topic`.
    pub async fn publish_json<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        self.send_message(self.builder.json(topic, value)?, None)
            .await
    }

    /// Sends a request and waits for its reply, at most the configured request timeout.
    pub async fn request(&self, message: SpaMessage) -> Result<SpaMessage> {
        self.request_with_timeout(message, self.request_timeout)
            .await
    }

    /// Sends a request and waits for its reply, at most `timeout`.
    pub async fn request_with_timeout(
        &self,
        message: SpaMessage,
        timeout: Duration,
    ) -> Result<SpaMessage> {
        let message = self.builder.stamp(message);
        // The span covers the round trip: the responder's spans are its children.
        let span = self.spans.send(&message.topic, message.payload.len(), None);
        let sent = round_trip(&*self.inner, message, timeout, |request| {
            self.send_counted(request, None)
        });
        span.run(sent).await
    }

    /// Adds subscriptions; their messages reach this application's handler.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner.subscribe(&to_owned(topics)).await
    }

    /// Removes subscriptions.
    pub async fn unsubscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner.unsubscribe(&to_owned(topics)).await
    }

    /// The application's message builder.
    pub fn builder(&self) -> &MessageBuilder {
        &self.builder
    }

    /// The transport socket underneath.
    pub fn transport(&self) -> &Arc<dyn SpaSocket> {
        &self.inner
    }
}

fn to_owned(topics: &[&str]) -> Vec<String> {
    topics.iter().map(|t| (*t).to_owned()).collect()
}
