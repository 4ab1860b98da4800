//! What differs between MQTT 3.1.1 and MQTT 5 (rumqttc's two clients), behind one trait: the
//! connection task, the ledger and the acknowledgements are written once over it, and see each
//! version's packets only as the neutral [`WireEvent`]s and [`RequestView`]s below.
//! `wire311` and `wire5` implement it.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;

use super::config::MqttConfig;
use crate::error::Result;
use crate::socket::headers::Headers;
use crate::socket::Outgoing;

/// One MQTT protocol version, as one of rumqttc's clients speaks it.
pub(super) trait Wire: Send + Sync + Sized + 'static {
    /// rumqttc's client handle (the request channel).
    type Client: Clone + Send + Sync + 'static;
    /// rumqttc's event loop (the connection and its state).
    type EventLoop: Send + 'static;
    /// A request handed to rumqttc: what the ledger keeps to send again.
    type Request: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// rumqttc's connection error.
    type ConnectionError: std::error::Error + Send + Sync + 'static;

    /// "3.1.1" or "5", for logs and errors.
    const VERSION: &'static str;
    /// Whether a publish carries headers (MQTT 5's properties).
    const HEADERS: bool;

    /// A client and its event loop for `config`, as `client_id`, receiving at most
    /// `receive_maximum` unacknowledged messages where the version can say so.
    fn client(
        config: &MqttConfig,
        client_id: &str,
        receive_maximum: u16,
        capacity: usize,
    ) -> Result<(Self::Client, Self::EventLoop)>;

    /// A publish of `message` at `qos`. The 3.1.1 one carries the payload alone. `Err` says
    /// why the message cannot travel as it is (a header MQTT 5 cannot carry).
    fn publish(
        message: Outgoing,
        qos: QoS,
        retain: bool,
    ) -> std::result::Result<Self::Request, String>;
    /// A subscription to `filters` at `qos`.
    fn subscribe(filters: Vec<String>, qos: QoS) -> Self::Request;
    /// An unsubscription from `filter`.
    fn unsubscribe(filter: String) -> Self::Request;
    /// What the ledger and the reconnect need to know of `request`.
    fn view(request: &Self::Request) -> RequestView<'_>;
    /// `request` as new: packet id 0 (rumqttc assigns one), not a duplicate.
    fn renumbered(request: Self::Request) -> Self::Request;
    /// Hands `request` to rumqttc's request channel if it has room.
    fn try_hand_over(client: &Self::Client, request: &Self::Request) -> HandOver;
    /// Hands the acknowledgement of the message `pkid` received at `qos` to rumqttc's request
    /// channel if it has room.
    fn try_ack(client: &Self::Client, pkid: u16, qos: QoS) -> bool;
    /// Asks rumqttc for a clean DISCONNECT; false when its request channel has no room.
    fn try_disconnect(client: &Self::Client) -> bool;

    /// The next event of the connection (connecting first if there is none).
    fn poll(
        eventloop: &mut Self::EventLoop,
    ) -> impl Future<Output = std::result::Result<WireEvent, Self::ConnectionError>> + Send;
    /// The events rumqttc read and has not returned yet, in order.
    fn buffered(eventloop: &mut Self::EventLoop) -> Vec<WireEvent>;
    /// Whether rumqttc holds read events not returned yet.
    fn has_buffered(eventloop: &Self::EventLoop) -> bool;
    /// rumqttc's requests to send first on the next connection.
    fn pending(eventloop: &mut Self::EventLoop) -> &mut std::collections::VecDeque<Self::Request>;
    /// Drops the connection; rumqttc moves what it had in flight into `pending`.
    fn clean(eventloop: &mut Self::EventLoop);
    /// Whether there is a connection.
    fn connected(eventloop: &Self::EventLoop) -> bool;
    /// Writes the acknowledgement of the message `pkid` received at `qos` into the connection
    /// (not flushed). False when there is no connection or it failed.
    fn write_ack(
        eventloop: &mut Self::EventLoop,
        pkid: u16,
        qos: QoS,
    ) -> impl Future<Output = bool> + Send;
    /// Flushes what was written.
    fn flush(eventloop: &mut Self::EventLoop) -> impl Future<Output = bool> + Send;
    /// Writes and flushes a PINGREQ.
    fn ping(eventloop: &mut Self::EventLoop) -> impl Future<Output = ()> + Send;
    /// Reads the connection until the broker closes it, handing each packet read to `handle`
    /// (the acknowledgements of publishes written before the DISCONNECT come this way).
    fn read_until_closed(
        eventloop: &mut Self::EventLoop,
        handle: &mut (dyn FnMut(WireEvent) + Send),
    ) -> impl Future<Output = ()> + Send;
    /// Writes `request` as rumqttc's poll would (its state assigns the packet id and records
    /// it), at most `timeout`: `Ok(true)` written, `Ok(false)` the write failed, `Err` rumqttc's
    /// state refused it.
    fn write_request(
        eventloop: &mut Self::EventLoop,
        request: Self::Request,
        timeout: Duration,
    ) -> impl Future<Output = std::result::Result<bool, String>> + Send;
    /// The keep-alive interval.
    fn keep_alive(eventloop: &Self::EventLoop) -> Duration;
    /// How long a write or a connection attempt may take.
    fn connection_timeout(eventloop: &Self::EventLoop) -> Duration;
    /// A lost or refused connection in words, with what to check.
    fn describe(error: &Self::ConnectionError) -> String;
    /// Whether `error` is a TLS failure.
    fn is_tls(error: &Self::ConnectionError) -> bool;
}

/// The methods of [`Wire`] that read the same in both of rumqttc's clients (their event loops
/// and requests have the same fields and variants under different types), written once. The
/// implementing module provides `event` (an event as a [`WireEvent`]), `ack_packet` and
/// `ping_packet`, and imports its version's `AsyncClient`, `EventLoop`, `Request`,
/// `ConnectionError` and `QoS`.
macro_rules! same_in_both_clients {
    () => {
        fn renumbered(request: Request) -> Request {
            match request {
                Request::Publish(mut publish) => {
                    publish.pkid = 0;
                    publish.dup = false;
                    Request::Publish(publish)
                }
                Request::Subscribe(mut subscribe) => {
                    subscribe.pkid = 0;
                    Request::Subscribe(subscribe)
                }
                Request::Unsubscribe(mut unsubscribe) => {
                    unsubscribe.pkid = 0;
                    Request::Unsubscribe(unsubscribe)
                }
                other => other,
            }
        }

        fn try_disconnect(client: &AsyncClient) -> bool {
            client.try_disconnect().is_ok()
        }

        async fn poll(
            eventloop: &mut EventLoop,
        ) -> std::result::Result<WireEvent, ConnectionError> {
            eventloop.poll().await.map(event)
        }

        fn buffered(eventloop: &mut EventLoop) -> Vec<WireEvent> {
            eventloop.state.events.drain(..).map(event).collect()
        }

        fn has_buffered(eventloop: &EventLoop) -> bool {
            !eventloop.state.events.is_empty()
        }

        fn pending(eventloop: &mut EventLoop) -> &mut std::collections::VecDeque<Request> {
            &mut eventloop.pending
        }

        fn clean(eventloop: &mut EventLoop) {
            eventloop.clean();
        }

        fn connected(eventloop: &EventLoop) -> bool {
            eventloop.network.is_some()
        }

        async fn write_ack(eventloop: &mut EventLoop, pkid: u16, qos: QoS) -> bool {
            match eventloop.network.as_mut() {
                Some(network) => network.write(ack_packet(pkid, qos)).await.is_ok(),
                None => false,
            }
        }

        async fn flush(eventloop: &mut EventLoop) -> bool {
            match eventloop.network.as_mut() {
                Some(network) => network.flush().await.is_ok(),
                None => false,
            }
        }

        async fn ping(eventloop: &mut EventLoop) {
            if let Some(network) = eventloop.network.as_mut() {
                if network.write(ping_packet()).await.is_ok() {
                    let _ = network.flush().await;
                }
            }
        }

        async fn read_until_closed(
            eventloop: &mut EventLoop,
            handle: &mut (dyn FnMut(WireEvent) + Send),
        ) {
            if let Some(network) = eventloop.network.as_mut() {
                while let Ok(packet) = network.read().await {
                    handle(event(Event::Incoming(packet)));
                }
            }
        }

        async fn write_request(
            eventloop: &mut EventLoop,
            request: Request,
            timeout: Duration,
        ) -> std::result::Result<bool, String> {
            match eventloop.state.handle_outgoing_packet(request) {
                Ok(Some(packet)) => match eventloop.network.as_mut() {
                    Some(network) => Ok(tokio::time::timeout(timeout, async {
                        network.write(packet).await.is_ok() && network.flush().await.is_ok()
                    })
                    .await
                    .unwrap_or(false)),
                    None => Ok(false),
                },
                Ok(None) => Ok(true),
                Err(error) => Err(error.to_string()),
            }
        }

        fn is_tls(error: &ConnectionError) -> bool {
            matches!(error, ConnectionError::Tls(_))
        }
    };
}
pub(super) use same_in_both_clients;

/// Whether a request found room in rumqttc's request channel.
pub(super) enum HandOver {
    /// Handed over.
    Done,
    /// The channel is full: try again.
    Full,
    /// The event loop is gone.
    Closed,
}

/// What the connection task needs to know of a request.
pub(super) enum RequestView<'a> {
    /// A publish with its packet id (0 until rumqttc assigned one), topic and size as a packet.
    Publish {
        pkid: u16,
        topic: &'a str,
        size: usize,
    },
    /// A subscription to these filters.
    Subscribe { filters: Vec<&'a str> },
    /// An unsubscription.
    Unsubscribe,
    /// The acknowledgement of a received message (dropped on a reconnect: the broker sends the
    /// message again).
    Ack,
    /// Anything else.
    Other,
}

/// An event of the connection, in either version's terms.
#[derive(Debug)]
pub(super) enum WireEvent {
    /// The broker accepted the connection; MQTT 5 brokers may say the largest packet they
    /// take.
    ConnAck {
        session_present: bool,
        max_packet_size: Option<u32>,
    },
    /// A message arrived.
    Publish(Received),
    /// The broker acknowledged the publish `pkid` (PUBACK, or PUBREC at QoS 2); `refused`
    /// says why not, when it refused it (MQTT 5 reason codes).
    Acknowledged { pkid: u16, refused: Option<Refusal> },
    /// The broker answered the subscription `pkid`: per filter, `None` if granted, else why not.
    SubAck {
        pkid: u16,
        refusals: Vec<Option<String>>,
    },
    /// The broker acknowledged the unsubscription `pkid`.
    UnsubAck { pkid: u16 },
    /// rumqttc wrote a publish (packet id 0 at QoS 0).
    SentPublish(u16),
    /// rumqttc wrote a subscription.
    SentSubscribe(u16),
    /// rumqttc wrote an unsubscription.
    SentUnsubscribe(u16),
    /// rumqttc wrote the acknowledgement (PUBACK or PUBREC) of a received message.
    SentAck(u16),
    /// rumqttc wrote the DISCONNECT the socket asked for.
    SentDisconnect,
    /// Nothing the connection task acts on.
    Other,
}

/// Why the broker refused a publish, and whether sending it again may pass.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) reason: String,
    /// False for a quota exceeded: the same message may pass later.
    pub(super) for_good: bool,
}

/// A message that arrived.
#[derive(Debug)]
pub(super) struct Received {
    /// UTF-8 as the broker checked it (MQTT 3.1.1 and 5 §4.7.3); bytes, not a `String`: MQTT
    /// 5's decoder keeps them without a copy, and the name is shared per topic
    /// ([`crate::socket::TopicNames`]).
    pub(super) topic: Bytes,
    pub(super) payload: Bytes,
    pub(super) qos: QoS,
    pub(super) pkid: u16,
    /// MQTT 5: user properties, correlation data, response topic and content type, as
    /// spa-dat headers (`super::properties`).
    pub(super) headers: Headers,
}
