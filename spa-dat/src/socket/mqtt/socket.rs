//! The MQTT socket and its provider: one connection per socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::acks::AckPath;
use super::config::{qos_of, MqttConfig, MqttVersion};
use super::driver::{Backoff, Driver};
use super::ledger::{Kind, Ledger};
use super::shared::{Shared, REQUEST_CHANNEL_CAPACITY};
use super::wire::{Wire, WireEvent};
use super::wire311::V311;
use super::wire5::V5;
use crate::error::{Error, Result};
use crate::socket::{
    Capabilities, Connection, Inbox, Outgoing, PendingReply, RequestMultiplexer, SocketOptions,
    SocketProvider, SpaSocket, TopicNames, TransportConfig,
};

struct MqttSocket<W: Wire> {
    pub(super) shared: Arc<Shared<W>>,
}

#[async_trait]
impl<W: Wire> SpaSocket for MqttSocket<W> {
    /// MQTT 3.1.1 has no headers: the payload goes alone; MQTT 5 carries them as properties
    /// ([`Capabilities::headers`]). Neither has a key.
    async fn send(&self, message: Outgoing) -> Result<()> {
        self.shared.ensure_open()?;
        let publish = W::publish(message, self.shared.qos, self.shared.retain)
            .map_err(|reason| Error::refused("publish", self.shared.broker.clone(), reason))?;
        self.shared.submit(Kind::Publish, publish, "publish").await
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
                .submit(Kind::Unsubscribe, W::unsubscribe(filter), "unsubscribe")
                .await?;
        }
        Ok(())
    }

    async fn reply_route(&self, _destination: &str) -> Result<PendingReply> {
        self.shared.ensure_open()?;
        if self.shared.wire == crate::socket::WireFormat::Raw && !W::HEADERS {
            // A bare request's response topic travels as a header: 3.1.1 would send it
            // without one, and the responder could not answer.
            return Err(Error::config(
                "a request on an MQTT 3.1.1 bus with wire = \"raw\" cannot say where its reply goes (3.1.1 carries no headers): use version = 5, or the envelope",
            ));
        }
        self.shared.ensure_reply_subscription().await?;
        let pending = self.shared.replies.register();
        let topic = format!("{}/{}", self.shared.reply_prefix, pending.id());
        Ok(pending.with_response_topic(topic))
    }

    fn wire_format(&self) -> crate::socket::WireFormat {
        self.shared.wire
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A clean DISCONNECT if the connection is up; the driver stops either way. A full
        // request channel (a broker that stopped answering) leaves no room for one: the driver
        // then gets a second, not five, before it is stopped.
        let queued = W::try_disconnect(&self.shared.client);
        self.shared.close_requested.notify_one();
        let driver = self
            .shared
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut driver) = driver {
            let grace = Duration::from_secs(if queued { 5 } else { 1 });
            if tokio::time::timeout(grace, &mut driver).await.is_err() {
                driver.abort();
            }
        }
        // What the driver did not settle (it was stopped) fails now, not at its own timeout.
        self.shared.fail_pending();
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
        options.refuse_transactions(&self.describe())?;
        match self.config.version {
            MqttVersion::V311 => connect::<V311>(&self.config, options).await,
            MqttVersion::V5 => connect::<V5>(&self.config, options).await,
        }
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
            headers: self.config.version == MqttVersion::V5,
            keys: false,
            acks_in_any_order: false,
        }
    }

    fn describe(&self) -> String {
        self.config.broker()
    }

    fn wire_format(&self) -> crate::socket::WireFormat {
        self.config.wire
    }
}

/// Connects a socket speaking `W` to the broker `config` names.
async fn connect<W: Wire>(config: &MqttConfig, options: SocketOptions) -> Result<Connection> {
    // A check's socket keeps no session.
    let probe_config;
    let config = match options.probe {
        true => {
            probe_config = MqttConfig {
                clean_session: true,
                ..config.clone()
            };
            &probe_config
        }
        false => config,
    };
    // A check subscribes as its group would (a shared subscription, the configured QoS), in a
    // share group of its own: the broker's support and the filter are tried, and the real
    // group's messages are not split with it.
    let group = match (&options.group, options.probe) {
        (Some(group), true) => Some(format!(
            "{group}-check-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )),
        (group, _) => group.clone(),
    };
    let broker = config.broker();
    let client_id = options.client_id_with(config.client_id.as_deref());
    // Never more unacknowledged deliveries than the inbox holds (MQTT 5's Receive Maximum).
    let receive_maximum = u16::try_from(options.inbox_capacity.max(1)).unwrap_or(u16::MAX);
    let (client, mut eventloop) = W::client(
        config,
        &client_id,
        receive_maximum,
        REQUEST_CHANNEL_CAPACITY,
    )?;
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    let connected = tokio::time::timeout(connect_timeout, W::poll(&mut eventloop)).await;
    let broker_max_packet_size = match connected {
        Ok(Ok(WireEvent::ConnAck {
            session_present,
            max_packet_size,
        })) => {
            tracing::info!(broker = %broker, client_id = %client_id, session_present, version = W::VERSION, "MQTT connected");
            max_packet_size.map_or(usize::MAX, |max| max as usize)
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
                reason: describe_first_connect::<W>(&error, config.tls.is_some()),
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
    };
    let (inbox_tx, inbox) = Inbox::handled_on_arrival(options.inbox_capacity);
    let shared = Arc::new(Shared::<W> {
        acks: AckPath::new(client.clone()),
        client,
        broker,
        qos: qos_of(config.qos)?,
        retain: config.retain,
        wire: config.wire,
        publish_timeout: Duration::from_millis(config.publish_timeout_ms),
        max_packet_size: config.max_packet_size,
        broker_max_packet_size: std::sync::atomic::AtomicUsize::new(broker_max_packet_size),
        order: tokio::sync::Mutex::new(()),
        ledger: Mutex::new(Ledger::default()),
        subscriptions: Mutex::new(Vec::new()),
        group,
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
        dropped_qos0: 0,
        dropping_qos0: false,
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

/// Why the first connection failed, with what to check: the errors of a wrong URL, wrong
/// credentials or certificates all surface here.
fn describe_first_connect<W: Wire>(error: &W::ConnectionError, tls: bool) -> String {
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
    let tls_failed = tls && (W::is_tls(error) || io_kind == Some(std::io::ErrorKind::InvalidData));
    if hung_up && !tls {
        format!(
            "the broker hung up before answering CONNECT: if this port expects TLS, use mqtts:// (or [bus.tls]) ({})",
            W::describe(error)
        )
    } else if tls_failed {
        format!(
            "TLS handshake failed (check tls.ca_file against the broker's certificate and host name, and that the port is a TLS listener): {}",
            W::describe(error)
        )
    } else {
        W::describe(error)
    }
}

/// The kind of the I/O error at the root of `error`, however deep rumqttc wrapped it.
fn io_error_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = current.source();
    }
    None
}
