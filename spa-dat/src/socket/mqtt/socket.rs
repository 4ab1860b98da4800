//! The MQTT socket and its provider: one connection per socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, Incoming, Publish, QoS, Request,
    Subscribe, SubscribeFilter, Unsubscribe,
};
use tokio::sync::{oneshot, Notify};

use super::acks::AckPath;
use super::config::{qos_of, MqttConfig};
use super::driver::{Backoff, Driver};
use super::ledger::{Kind, Ledger, Pending};
use crate::error::{Error, Result};
use crate::socket::{
    Capabilities, Connection, Inbox, Outgoing, PendingReply, RequestMultiplexer, SocketOptions,
    SocketProvider, SpaSocket, TopicNames, TransportConfig,
};

pub(super) struct Shared {
    /// Set false when the connection is lost, true when it is back.
    pub(super) ready: crate::socket::ReadySignal,
    pub(super) client: AsyncClient,
    pub(super) broker: String,
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) publish_timeout: Duration,
    /// Largest packet the broker is sent (rumqttc drops the connection for a larger one).
    pub(super) max_packet_size: usize,
    /// Makes "record in the ledger, hand to rumqttc" one step: the ledger's order is the
    /// order rumqttc sends in.
    pub(super) order: tokio::sync::Mutex<()>,
    pub(super) ledger: Mutex<Ledger>,
    pub(super) acks: AckPath,
    /// Current subscriptions as sent (with `$share/...`), renewed after a clean reconnect.
    pub(super) subscriptions: Mutex<Vec<String>>,
    pub(super) group: Option<String>,
    pub(super) replies: Arc<RequestMultiplexer>,
    pub(super) reply_prefix: String,
    pub(super) reply_subscription: tokio::sync::OnceCell<()>,
    pub(super) closed: AtomicBool,
    pub(super) close_requested: Notify,
    /// Told when a request was handed to rumqttc: a driver that stopped reading (the inbox is
    /// full) must still send it, or a handler publishing it would wait for a reading that waits
    /// for the handler.
    pub(super) handed_over: Notify,
    pub(super) driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    pub(super) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Each ledger operation is a single push/pop/insert: consistent even after a panic.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ensure_open(&self) -> Result<()> {
        crate::socket::ensure_open(&self.closed)
    }

    pub(super) fn transport_error(
        &self,
        operation: &'static str,
        reason: impl Into<String>,
    ) -> Error {
        Error::Transport {
            operation,
            broker: self.broker.clone(),
            reason: reason.into(),
            source: None,
        }
    }

    /// Records `request`, hands it to rumqttc, and waits for the broker's acknowledgement.
    ///
    /// Cancel-safe: the hand-over to rumqttc and the ledger entry happen in one step, with no
    /// await between, so a caller dropped while waiting for room in rumqttc's request channel
    /// leaves nothing behind. Waiting for the order lock and for room counts against
    /// `publish_timeout`; a request not handed over by then was never sent.
    pub(super) async fn submit(
        &self,
        kind: Kind,
        request: Request,
        operation: &'static str,
    ) -> Result<()> {
        self.ensure_open()?;
        if let Request::Publish(publish) = &request {
            self.check_publish(publish, operation)?;
        }
        let deadline = Instant::now() + self.publish_timeout;
        let not_sent = || {
            self.transport_error(
                operation,
                format!(
                    "not sent: no room in the connection's queue within {:?}",
                    self.publish_timeout
                ),
            )
        };
        let (waiter, acknowledged) = oneshot::channel();
        let entry = Pending {
            kind,
            waiter: Some(waiter),
            request,
            strikes: 0,
        };
        {
            let _order = tokio::time::timeout_at(deadline.into(), self.order.lock())
                .await
                .map_err(|_| not_sent())?;
            let mut pause = Duration::from_millis(1);
            loop {
                {
                    // Handed over and recorded under the ledger lock: the driver records what
                    // rumqttc sent under the same lock, so it always finds this entry.
                    let mut ledger = self.ledger();
                    match self.try_hand_over(&entry.request) {
                        Ok(()) => {
                            ledger.unsent.push_back(entry);
                            self.handed_over.notify_one();
                            break;
                        }
                        Err(rumqttc::ClientError::TryRequest(_)) if Instant::now() < deadline => {}
                        Err(_) => return Err(not_sent()),
                    }
                }
                self.ensure_open()?;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
        match tokio::time::timeout(self.publish_timeout, acknowledged).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(self.transport_error(
                operation,
                format!(
                    "not acknowledged within {:?}; it may still be delivered (it was sent, and is sent again after a reconnect)",
                    self.publish_timeout
                ),
            )),
        }
    }

    /// Refuses at once, as permanent, a publish the broker or rumqttc would refuse: a topic
    /// the broker drops the connection for (MQTT 3.1.1 §4.7.3; rumqttc's own check would be
    /// read as a full queue), or a packet larger than `max_packet_size` (rumqttc would drop
    /// the connection over it, and reconnect, and drop it again).
    fn check_publish(&self, publish: &Publish, operation: &'static str) -> Result<()> {
        if let Err(reason) = crate::socket::validate_topic(&publish.topic) {
            return Err(Error::refused(operation, self.broker.clone(), reason));
        }
        if publish.size() > self.max_packet_size {
            return Err(Error::refused(
                operation,
                self.broker.clone(),
                format!(
                    "message too large: {} bytes as a packet, max_packet_size is {} (topic {})",
                    publish.size(),
                    self.max_packet_size,
                    crate::socket::shortened(&publish.topic)
                ),
            ));
        }
        Ok(())
    }

    /// Hands `request` to rumqttc's request channel if it has room. rumqttc's `try_*` take
    /// owned values, so the topic and payload are copied (the ledger keeps the request for a
    /// resend); `publish_bytes`, which takes `Bytes`, is only an await, and a caller cancelled
    /// in it leaves no trace of whether the request was sent.
    pub(super) fn try_hand_over(
        &self,
        request: &Request,
    ) -> std::result::Result<(), rumqttc::ClientError> {
        match request {
            Request::Publish(publish) => self.client.try_publish(
                publish.topic.as_str(),
                publish.qos,
                publish.retain,
                publish.payload.to_vec(),
            ),
            Request::Subscribe(subscribe) => self
                .client
                .try_subscribe_many(subscribe.filters.iter().cloned()),
            Request::Unsubscribe(unsubscribe) => match unsubscribe.topics.last() {
                Some(topic) => self.client.try_unsubscribe(topic.as_str()),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    pub(super) fn shared_filter(&self, filter: &str) -> String {
        match &self.group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_owned(),
        }
    }

    pub(super) async fn subscribe_filters(&self, filters: Vec<String>) -> Result<()> {
        if filters.is_empty() {
            return Ok(());
        }
        for filter in &filters {
            crate::socket::validate_filter(filter).map_err(Error::Config)?;
        }
        {
            let mut current = self.subscriptions();
            for filter in &filters {
                if !current.contains(filter) {
                    current.push(filter.clone());
                }
            }
        }
        let subscribe = Subscribe::new_many(
            filters
                .into_iter()
                .map(|path| SubscribeFilter::new(path, self.qos)),
        );
        self.submit(Kind::Subscribe, Request::Subscribe(subscribe), "subscribe")
            .await
    }

    pub(super) async fn ensure_reply_subscription(&self) -> Result<()> {
        self.reply_subscription
            .get_or_try_init(|| self.subscribe_filters(vec![format!("{}/+", self.reply_prefix)]))
            .await
            .map(|_| ())
    }
}

struct MqttSocket {
    pub(super) shared: Arc<Shared>,
}

#[async_trait]
impl SpaSocket for MqttSocket {
    /// MQTT 3.1.1 has no headers and no key: the payload goes alone ([`Capabilities::headers`]).
    async fn send(&self, message: Outgoing) -> Result<()> {
        let mut publish = Publish::from_bytes(message.topic, self.shared.qos, message.payload);
        publish.retain = self.shared.retain;
        self.shared
            .submit(Kind::Publish, Request::Publish(publish), "publish")
            .await
    }

    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        let filters = topics
            .iter()
            .map(|t| self.shared.shared_filter(t))
            .collect();
        self.shared.subscribe_filters(filters).await
    }

    async fn unsubscribe(&self, topics: &[String]) -> Result<()> {
        for topic in topics {
            let filter = self.shared.shared_filter(topic);
            self.shared.subscriptions().retain(|f| *f != filter);
            self.shared
                .submit(
                    Kind::Unsubscribe,
                    Request::Unsubscribe(Unsubscribe::new(filter)),
                    "unsubscribe",
                )
                .await?;
        }
        Ok(())
    }

    async fn reply_route(&self, _destination: &str) -> Result<PendingReply> {
        self.shared.ensure_open()?;
        self.shared.ensure_reply_subscription().await?;
        let pending = self.shared.replies.register();
        let topic = format!("{}/{}", self.shared.reply_prefix, pending.id());
        Ok(pending.with_response_topic(topic))
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A clean DISCONNECT if the connection is up; the driver stops either way.
        let _ = self.shared.client.try_disconnect();
        self.shared.close_requested.notify_one();
        let driver = self
            .shared
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut driver) = driver {
            if tokio::time::timeout(Duration::from_secs(5), &mut driver)
                .await
                .is_err()
            {
                driver.abort();
            }
        }
        self.shared.replies.close();
        Ok(())
    }
}

/// Builds MQTT sockets: one connection each.
#[derive(Debug, Clone)]
pub struct MqttSocketProvider {
    pub(super) config: MqttConfig,
}

impl MqttSocketProvider {
    /// A provider for the broker `config` names.
    pub fn new(config: MqttConfig) -> Result<Self> {
        config.validate()?;
        Ok(MqttSocketProvider { config })
    }

    /// The configuration.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }
}

// Beside the provider it builds, so `config` imports nothing of the folder but `tls`.
impl TransportConfig for MqttConfig {
    fn validate(&self) -> Result<()> {
        MqttConfig::validate(self)
    }

    fn provider(&self) -> Result<Arc<dyn SocketProvider>> {
        Ok(Arc::new(MqttSocketProvider::new(self.clone())?))
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
        .collect()
}

#[async_trait]
impl SocketProvider for MqttSocketProvider {
    async fn connect(&self, options: SocketOptions) -> Result<Connection> {
        let config = &self.config;
        let broker = config.broker();
        let client_id = options.client_id_with(config.client_id.as_deref());
        let mqtt_options = config.build_client_config(&client_id)?;
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, 64);
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        eventloop
            .network_options
            .set_connection_timeout(connect_timeout.as_secs().max(1));
        // Small packets (acks, requests, replies) must not wait for Nagle and delayed ACK:
        // without this a request/reply round trip on loopback takes ~88 ms instead of < 1 ms.
        eventloop.network_options.set_tcp_nodelay(true);
        let connected = tokio::time::timeout(connect_timeout, eventloop.poll()).await;
        match connected {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                tracing::info!(broker = %broker, client_id = %client_id, session_present = ack.session_present, "MQTT connected");
            }
            Ok(Ok(other)) => {
                return Err(Error::Connect {
                    broker,
                    reason: format!("expected CONNACK, got {other:?}"),
                    source: None,
                })
            }
            Ok(Err(error)) => {
                return Err(Error::Connect {
                    broker,
                    reason: describe_first_connect(&error, config.tls.is_some()),
                    source: None,
                }
                .caused_by(error))
            }
            Err(_) => {
                return Err(Error::Connect {
                    broker,
                    reason: format!("no CONNACK within {connect_timeout:?}"),
                    source: None,
                })
            }
        }
        let (inbox_tx, inbox) = Inbox::handled_on_arrival(options.inbox_capacity);
        let shared = Arc::new(Shared {
            acks: AckPath::new(client.clone()),
            client,
            broker,
            qos: qos_of(config.qos)?,
            retain: config.retain,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            max_packet_size: config.max_packet_size,
            order: tokio::sync::Mutex::new(()),
            ledger: Mutex::new(Ledger::default()),
            subscriptions: Mutex::new(Vec::new()),
            group: options.group.clone(),
            replies: RequestMultiplexer::new(),
            reply_prefix: format!("_spa/reply/{}", sanitize(&client_id)),
            reply_subscription: tokio::sync::OnceCell::new(),
            closed: AtomicBool::new(false),
            close_requested: Notify::new(),
            handed_over: Notify::new(),
            driver: Mutex::new(None),
            ready: options.ready.clone(),
        });
        let driver = Driver {
            shared: Arc::clone(&shared),
            inbox: inbox_tx,
            held: Vec::new(),
            topic_names: TopicNames::default(),
            resubscribing: 0,
            connected_at: Some(std::time::Instant::now()),
            written: std::collections::VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(config.reconnect_max_ms.max(100))),
        };
        let handle = tokio::spawn(driver.run(eventloop));
        *shared.driver.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        let socket = MqttSocket { shared };
        let connection = crate::socket::subscribe_initial(
            socket,
            inbox,
            &options,
            &config.default_subscription_topics,
        )
        .await?;
        // Connected and subscribed; the driver follows the connection from here.
        options.ready.set(true);
        Ok(connection)
    }

    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider> {
        let mut config = self.config.clone();
        config.default_subscription_topics = topics;
        Arc::new(MqttSocketProvider { config })
    }

    fn default_topics(&self) -> &[String] {
        &self.config.default_subscription_topics
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wildcards: true,
            consumer_groups: true,
            ordered_per_publisher: true,
            ordered_per_partition: true,
            subscribe_is_synchronous: true,
            headers: false,
            keys: false,
            acks_in_any_order: false,
        }
    }

    fn describe(&self) -> String {
        self.config.broker()
    }
}

/// Why the first connection failed, with what to check: the errors of a wrong URL, wrong
/// credentials or certificates all surface here.
fn describe_first_connect(error: &ConnectionError, tls: bool) -> String {
    let io_kind = io_error_kind(error);
    let hung_up = matches!(
        io_kind,
        Some(
            std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof
        )
    );
    // rustls reports certificate and protocol failures as `InvalidData` I/O errors.
    let tls_failed = tls
        && (matches!(error, ConnectionError::Tls(_))
            || io_kind == Some(std::io::ErrorKind::InvalidData));
    if hung_up && !tls {
        format!(
            "the broker hung up before answering CONNECT: if this port expects TLS, use mqtts:// (or [bus.tls]) ({})",
            describe(error)
        )
    } else if tls_failed {
        format!(
            "TLS handshake failed (check tls.ca_file against the broker's certificate and host name, and that the port is a TLS listener): {}",
            describe(error)
        )
    } else {
        describe(error)
    }
}

/// The kind of the I/O error at the root of `error`, however deep rumqttc wrapped it.
fn io_error_kind(error: &ConnectionError) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = current.source();
    }
    None
}

pub(super) fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "authentication failed: wrong user name or password (CONNACK: bad user name or password)".to_owned()
        }
        // Mosquitto answers a wrong password at MQTT 3.1.1 with "not authorized".
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "not authorized: wrong user name or password, or this user or client id is not allowed (CONNACK: not authorized)".to_owned()
        }
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection ({code:?}); check the credentials and client id"
            )
        }
        ConnectionError::Io(io) => format!("{io}"),
        ConnectionError::NetworkTimeout => "connection timed out".to_owned(),
        other => other.to_string(),
    }
}
