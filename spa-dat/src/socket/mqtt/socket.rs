//! The MQTT socket and its provider: one connection per socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, ConnectionError, Event, Incoming, Publish, Request, Unsubscribe};
use tokio::sync::Notify;

use super::acks::AckPath;
use super::config::{qos_of, MqttConfig};
use super::driver::{Backoff, Driver};
use super::ledger::{Kind, Ledger};
use super::shared::{describe, Shared, REQUEST_CHANNEL_CAPACITY};
use crate::error::{Error, Result};
use crate::socket::{
    Capabilities, Connection, Inbox, Outgoing, PendingReply, RequestMultiplexer, SocketOptions,
    SocketProvider, SpaSocket, TopicNames, TransportConfig,
};

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
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CHANNEL_CAPACITY);
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
            writing_direct: false,
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
