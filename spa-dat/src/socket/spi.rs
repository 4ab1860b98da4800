//! The transport author's interface: what a transport implements ([`SpaSocket`],
//! [`SocketProvider`], [`TransportConfig`]) and the types it moves ([`Outgoing`],
//! [`Delivery`], [`Inbox`], [`PendingReply`], [`ReadySignal`]).
//!
//! # Write a transport
//!
//! The in-process bus (`socket/memory.rs`, about 500 lines) is the worked example; MQTT
//! (`socket/mqtt/`) and Kafka (`socket/kafka/`) follow the same shape.
//!
//! 1. **Settings** — a config type implementing [`TransportConfig`]: `validate` names the key
//!    of a bad value, `provider` builds the provider. Add a variant to
//!    [`crate::config::SocketConfig`] and a row to its URL schemes.
//! 2. **Provider** — [`SocketProvider::connect`] connects one socket for
//!    [`SocketOptions`] (client id, group, subscriptions, the inbox's capacity, the
//!    [`ReadySignal`] to set), subscribes it, and returns it with its [`Inbox`]: a
//!    [`Connection`]. Declare what the transport can do in [`Capabilities`]; the conformance
//!    suite (the workspace's `test-support` crate) tests each claim.
//! 3. **Socket** — six methods and nothing hidden. `send` publishes an [`Outgoing`] (bytes,
//!    neutral headers, a key) and returns once the transport's guarantee is met.
//!    `subscribe`/`unsubscribe` take topic filters. `reply_route` registers a request with a
//!    [`RequestMultiplexer`] and says where its reply must be published; the transport hands a
//!    reply to [`RequestMultiplexer::resolve`] when it arrives. `close` is idempotent.
//!    Everything else — encoding, requests, replies, dead letters, tracing, metrics — the
//!    runtime writes once over these methods.
//! 4. **Deliveries** — push each received message into the inbox through its
//!    [`ArrivalSender`] as a [`Delivery`] carrying an acknowledgement: the runtime calls
//!    [`Delivery::ack`] once the message is handled or safely dead-lettered, never before.
//!
//! ```
//! use std::sync::Arc;
//!
//! use spa_dat::socket::spi::{Inbox, SocketOptions, SocketProvider, SpaSocket};
//! use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> spa_dat::Result<()> {
//! // The runtime's view of any transport: a provider, a socket, an inbox.
//! let provider: Arc<dyn SocketProvider> =
//!     Arc::new(MemorySocketProvider::new(MemoryBus::new("spi-example")));
//! let mut reader = provider.connect(SocketOptions::new("reader").topics(["t"])).await?;
//! let writer = provider.connect(SocketOptions::new("writer")).await?;
//! let socket: &Arc<dyn SpaSocket> = &writer.socket;
//! socket.publish_bytes("t", "raw bytes".into()).await?;
//! let inbox: &mut Inbox = &mut reader.inbox;
//! let delivery = inbox.recv().await.expect("delivered");
//! assert_eq!(&delivery.payload[..], b"raw bytes");
//! delivery.ack();
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;

pub use super::inbox::{ArrivalSender, Inbox};
pub use super::ready::ReadySignal;
pub use super::record::{new_owner, SettleGate, Staged};
pub use super::record::{
    Delivery, Outgoing, Position, DEAD_LETTER_EXCERPT_BYTES, DEAD_LETTER_REASON_BYTES,
};
pub use super::request::{PendingReply, RequestMultiplexer, DEFAULT_REQUEST_TIMEOUT};
use super::wire_format::WireFormat;

/// One connection to a bus: the Python package's `SpaSocket`, async.
///
/// A transport is these six methods and nothing hidden: everything else a socket does —
/// encoding, requests, replies, dead letters — is written once over them (the methods on
/// `dyn SpaSocket` below), so a wrapper that forwards them (metrics, tracing, fault injection)
/// sees every message and drops no metadata.
///
/// Messages for the socket's subscriptions arrive in the [`Inbox`] returned with it by
/// [`SocketProvider::connect`]. Implementations must be cheap to share: handlers call them
/// concurrently through [`crate::Socket`].
#[async_trait]
pub trait SpaSocket: Send + Sync + 'static {
    /// Publishes `message`: its payload as it is, its headers where the transport can carry
    /// them ([`Capabilities::headers`]). Returns once the transport's delivery guarantee for the
    /// socket's QoS is met (see each transport's docs).
    async fn send(&self, message: Outgoing) -> Result<()>;

    /// Adds subscriptions (MQTT-style filters where the transport supports them).
    async fn subscribe(&self, topics: &[String]) -> Result<()>;

    /// Removes subscriptions made with [`SpaSocket::subscribe`].
    async fn unsubscribe(&self, topics: &[String]) -> Result<()>;

    /// Prepares the way back for one request to `destination`: registers it with the socket's
    /// [`RequestMultiplexer`] and returns it with the response topic its reply must be
    /// published to. The reply is matched by that topic (MQTT, memory: the id is its last
    /// level) or by the [`super::headers::CORRELATION_ID`] header the runtime adds to the request
    /// (Kafka). Whatever the route holds is released when the [`PendingReply`] is dropped.
    async fn reply_route(&self, destination: &str) -> Result<PendingReply>;

    /// Closes the connection: pending requests fail, the inbox ends. Idempotent.
    async fn close(&self) -> Result<()>;

    /// How the runtime writes and reads messages on this socket's bus (a setting of the
    /// bus; a wrapper forwards its inner socket's).
    fn wire_format(&self) -> WireFormat;

    /// The socket's transactions, where it has them (a Kafka socket connected with
    /// [`SocketOptions::transactional`]); a wrapper forwards its inner socket's.
    fn transactions(&self) -> Option<&dyn Transactions> {
        None
    }
}

/// A transport's transactions (see [`SpaSocket::transactions`]): what
/// [`crate::Socket::transaction`] publishes as one.
#[async_trait]
pub trait Transactions: Send + Sync {
    /// A new, empty staging area of this transport's.
    fn stage(&self) -> Staged;

    /// Sends what `staged` holds in one transaction; returns once it is committed, or fails
    /// having sent none of it.
    async fn commit(&self, staged: Staged) -> Result<()>;
}

/// What a transport can do, declared so that tests and applications need not guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// MQTT-style wildcard filters (`+`, `#`) in subscriptions.
    pub wildcards: bool,
    /// Competing consumers: members of one group share the messages.
    pub consumer_groups: bool,
    /// Messages of one publisher on one topic arrive in the order sent.
    pub ordered_per_publisher: bool,
    /// Messages of one publisher on one partition of a topic arrive in the order sent (Kafka
    /// with several partitions; true wherever `ordered_per_publisher` is).
    pub ordered_per_partition: bool,
    /// A message published right after `subscribe` returned is delivered.
    pub subscribe_is_synchronous: bool,
    /// [`Outgoing::headers`] arrive as [`Delivery::headers`] (Kafka, memory); where false
    /// (MQTT 3.1.1) they are not sent.
    pub headers: bool,
    /// [`Outgoing::key`] arrives as [`Delivery::key`] (Kafka's record key, memory); where false
    /// (MQTT) a consumer ordering by key orders by topic.
    pub keys: bool,
    /// [`Delivery::ack`] may be called in any order and the transport still never commits
    /// past an unfinished message (Kafka tracks the gaps per partition); where false (MQTT,
    /// memory) the runtime acknowledges in arrival order.
    pub acks_in_any_order: bool,
}

/// What an application asks of its socket.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Client id on the bus (MQTT client id, Kafka client.id); unique per socket.
    pub client_id: String,
    /// Unique within the program and the same in every run: the application's explicit client
    /// id, else its name. With a bus-wide client id configured (a prefix), the socket's id is
    /// `{bus id}-{stable_id}` (see [`SocketOptions::client_id_with`]).
    pub stable_id: String,
    /// Human-readable name.
    pub client_name: Option<String>,
    /// Topics to subscribe to on connect; when empty, the provider's default topics.
    pub topics: Vec<String>,
    /// Consumer group: members of one group share the messages (Kafka group, MQTT
    /// `$share/{group}/...`). `None` = every socket gets every message, except on Kafka, where
    /// the provider derives a group.
    pub group: Option<String>,
    /// How many undelivered messages the inbox holds before the transport waits.
    pub inbox_capacity: usize,
    /// Set by the transport as the socket becomes ready (subscribed, connected, assigned) or
    /// stops being so.
    pub ready: ReadySignal,
    /// Publish in transactions: what a handler publishes goes to the broker with the consumed
    /// offsets in one transaction (Kafka's exactly-once); a transport without transactions
    /// refuses to connect.
    pub transactional: bool,
    /// A deployment check's socket ([`crate::DistributedApplication::check`]): it connects and
    /// checks access as a run's would, and takes no running instance's place — its client id
    /// is its own (`client_id`, even with a bus-wide id), MQTT subscriptions are not kept (a
    /// clean session) and a group's is shared in a share group of its own
    /// (`{group}-check-{random}`), Kafka joins no group, creates no topic, begins
    /// no transaction (the running producer's transactional id is not fenced), and an access
    /// check that cannot finish in time is an error, not a warning.
    pub probe: bool,
}

impl SocketOptions {
    /// Options for a socket with this client id and no subscriptions.
    pub fn new(client_id: impl Into<String>) -> Self {
        let client_id = client_id.into();
        SocketOptions {
            stable_id: client_id.clone(),
            client_id,
            client_name: None,
            topics: Vec::new(),
            group: None,
            inbox_capacity: 1024,
            ready: ReadySignal::default(),
            transactional: false,
            probe: false,
        }
    }

    /// Sets the subscriptions.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the id that stays the same in every run (see [`SocketOptions::stable_id`]).
    pub fn stable_id(mut self, stable_id: impl Into<String>) -> Self {
        self.stable_id = stable_id.into();
        self
    }

    /// The socket's client id on a bus whose configuration may set a bus-wide id: that id is a
    /// prefix, so the sockets of one program never share an id (an MQTT broker disconnects the
    /// older of two connections with one id; on Kafka they would share a reply topic).
    pub fn client_id_with(&self, bus_client_id: Option<&str>) -> String {
        match (bus_client_id, self.probe) {
            (Some(prefix), false) => format!("{prefix}-{}", self.stable_id),
            // A check's socket never takes the id a running instance uses.
            (Some(prefix), true) => format!("{prefix}-{}", self.client_id),
            (None, _) => self.client_id.clone(),
        }
    }

    /// Asks for a transactional socket (see [`SocketOptions::transactional`]).
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Fails, naming the bus, when these options ask for transactions of a transport that has
    /// none.
    pub fn refuse_transactions(&self, bus: &str) -> Result<()> {
        if self.transactional {
            return Err(crate::error::Error::Config(format!(
                "`transactional` needs a Kafka bus; {bus} has no transactions"
            )));
        }
        Ok(())
    }

    /// Sets the consumer group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The topics a new socket subscribes to: these options' own, or else the provider's
    /// `default_topics`.
    pub fn initial_topics<'a>(&'a self, default_topics: &'a [String]) -> &'a [String] {
        if self.topics.is_empty() {
            default_topics
        } else {
            &self.topics
        }
    }
}

/// A connected socket and its inbox.
pub struct Connection {
    /// The sending side, shareable.
    pub socket: Arc<dyn SpaSocket>,
    /// Deliveries for the socket's subscriptions.
    pub inbox: Inbox,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// A transport's settings, as [`crate::config::SocketConfig`] holds them: each transport
/// implements it in its folder.
pub trait TransportConfig: std::fmt::Debug + Send + Sync {
    /// Checks values that would only fail later, naming the key.
    fn validate(&self) -> Result<()>;

    /// A provider of sockets on the bus these settings describe.
    fn provider(&self) -> Result<Arc<dyn SocketProvider>>;
}

/// Builds sockets for applications (the Python package's `SocketProvider`).
#[async_trait]
pub trait SocketProvider: Send + Sync + 'static {
    /// Connects a socket and subscribes it to `options.topics` (or the default topics).
    /// Fails with a clear error naming the broker when it cannot be reached.
    async fn connect(&self, options: SocketOptions) -> Result<Connection>;

    /// A provider like this one whose default subscriptions are `topics` (the Python package's
    /// `rebuild` / `overwrite_config`).
    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider>;

    /// Topics a socket subscribes to when its options name none.
    fn default_topics(&self) -> &[String];

    /// What this transport can do.
    fn capabilities(&self) -> Capabilities;

    /// The bus, for logs and errors (`memory://default`, `mqtt://host:1883`, ...).
    fn describe(&self) -> String;

    /// How its sockets write and read messages (the AsyncAPI document says so); the envelope
    /// unless the transport's configuration says otherwise.
    fn wire_format(&self) -> WireFormat {
        WireFormat::Envelope
    }
}
