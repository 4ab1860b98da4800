//! The transports — the in-process bus ([`memory`]), MQTT (`mqtt`), Kafka (`kafka`), the
//! fault-injecting decorator ([`faults`]) — the neutral [`headers`] of a message, and the topic
//! rules every transport applies. Handlers talk to the bus through the [`crate::Socket`]
//! handle; what a transport implements is in [`spi`].

pub mod faults;
pub mod headers;
mod inbox;
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub mod kafka;
pub mod memory;
#[cfg(feature = "mqtt")]
#[cfg_attr(docsrs, doc(cfg(feature = "mqtt")))]
pub mod mqtt;
mod ready;
mod record;
mod request;
pub mod spi;
mod wire_format;

use std::sync::Arc;

use crate::error::Result;

pub(crate) use crate::topic::shortened;
pub use crate::topic::{
    topic_matches, validate_filter, validate_topic, MAX_TOPIC_BYTES, MAX_TOPIC_LEVELS,
};
pub(crate) use inbox::{Arrival, ArrivalHandler, DrainSlot, InboxDepth};
pub(crate) use record::Pending;
pub use wire_format::WireFormat;
// The transport interface, by its short paths inside the crate; its public path is `spi`.
pub(crate) use spi::{
    ArrivalSender, Capabilities, Connection, Delivery, Inbox, Outgoing, PendingReply, Position,
    ReadySignal, RequestMultiplexer, SocketOptions, SocketProvider, SpaSocket, Staged,
    TransportConfig, DEFAULT_REQUEST_TIMEOUT,
};

/// Hands a reply that arrived on `{reply prefix}/{correlation id}` to its request. A reply is
/// read in either wire format (a responder that is not spa-dat, e.g. FastStream, answers with
/// a bare payload): it can only have come to this socket's own reply topic.
pub(crate) fn deliver_reply(
    replies: &RequestMultiplexer,
    topic: &str,
    payload: &bytes::Bytes,
    headers: headers::Headers,
) {
    let id = topic
        .rsplit('/')
        .next()
        .and_then(|id| id.parse::<u64>().ok());
    let reply = Delivery::new(Arc::from(topic), payload.clone())
        .with_headers(headers)
        .message(WireFormat::Raw);
    match (id, reply) {
        (Some(id), Ok(reply)) => {
            if !replies.resolve(id, reply) {
                tracing::debug!(topic = %shortened(topic), "reply arrived after its request ended");
            }
        }
        // The topic is the sender's: cut short, or one message could fill a log line with 64 KiB.
        (None, _) => {
            tracing::warn!(topic = %shortened(topic), "reply topic carries no correlation id")
        }
        (_, Err(error)) => {
            tracing::warn!(topic = %shortened(topic), %error, "undecodable reply dropped")
        }
    }
}

/// Finishes a provider's `connect`: subscribes the new socket to the options' topics, or the
/// provider's default topics when the options name none; a socket that cannot subscribe is
/// closed again and the error returned.
pub(crate) async fn subscribe_initial<S: SpaSocket>(
    socket: S,
    inbox: Inbox,
    options: &SocketOptions,
    default_topics: &[String],
) -> Result<Connection> {
    if let Err(error) = socket
        .subscribe(options.initial_topics(default_topics))
        .await
    {
        socket.close().await?;
        return Err(error);
    }
    Ok(Connection {
        socket: Arc::new(socket),
        inbox,
    })
}

/// The topic name of the last delivery, shared with the next one on the same topic: messages
/// mostly arrive in runs on one topic, so a delivery's name is a reference count, not a copy.
#[cfg(any(feature = "mqtt", feature = "kafka"))]
#[derive(Default)]
pub(crate) struct TopicNames {
    last: Option<Arc<str>>,
}

#[cfg(any(feature = "mqtt", feature = "kafka"))]
impl TopicNames {
    /// `topic` as a shared name.
    pub(crate) fn get(&mut self, topic: &str) -> Arc<str> {
        match &self.last {
            Some(last) if **last == *topic => Arc::clone(last),
            _ => Arc::clone(self.last.insert(Arc::from(topic))),
        }
    }
}

/// `Err(Closed)` once a socket's `closed` flag is set.
pub(crate) fn ensure_open(closed: &std::sync::atomic::AtomicBool) -> Result<()> {
    if closed.load(std::sync::atomic::Ordering::Acquire) {
        Err(crate::error::Error::Closed)
    } else {
        Ok(())
    }
}
