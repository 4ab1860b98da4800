//! The [`Socket`] handle: what handlers publish, request and subscribe through. Every message
//! an application sends — its own, its handlers' replies, its dead letters — goes through it,
//! so each is stamped, traced and counted alike.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::outgoing::request_on;
use crate::error::Result;
use crate::message::{MessageBuilder, SpaMessage};
use crate::socket::headers;
use crate::socket::{Delivery, Outgoing, SpaSocket};
use crate::topic::validate_topic;

/// The handle handlers use to talk to the bus: publish, request, (un)subscribe.
///
/// Cheap to clone. Messages it publishes get the application's `client_id`/`client_name` when
/// they have none.
///
/// Handlers take it as an argument; the runtime gives each application its own.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{DistributedApplication, Json, Shutdown, Socket, SpaMessage, Stopped};
///
/// async fn double(Json(n): Json<i64>) -> Json<i64> {
///     Json(n * 2)
/// }
///
/// // A producer: asks the doubler, publishes the answer, ends the run.
/// async fn ask(socket: Socket, shutdown: Shutdown) -> spa_dat::Result<()> {
///     let reply = socket.request(SpaMessage::json("double", &21)?).await?;
///     socket.publish_json("answers", &reply.payload_json::<i64>()?).await?;
///     shutdown.trigger();
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let bus = MemorySocketProvider::new(MemoryBus::new("socket-example"));
/// let run = DistributedApplication::new()
///     .socket_provider(Arc::new(bus))
///     .add_consumer("doubler", ["double"], double)
///     .add_producer("asker", ask)
///     .watch_signals(false)
///     .start_async();
/// let stopped = tokio::time::timeout(Duration::from_secs(10), run).await.expect("in time")?;
/// assert_eq!(stopped, Stopped::Requested);
/// # Ok(())
/// # }
/// ```
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

/// How many messages of a [`Socket::publish_batch`] are in flight at once: enough to keep a
/// broker's pipeline full (the Kafka bench pipelines 10,000; MQTT's window is 100 by default),
/// few enough that each gets through within its publish timeout.
pub const PUBLISH_BATCH_WINDOW: usize = 4_096;

impl Socket {
    /// Wraps a transport socket.
    ///
    /// Applications get theirs from the runtime; build one yourself to publish from outside a
    /// handler (a test, a tool).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// use spa_dat::{MessageBuilder, Socket, SpaMessage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// let provider = MemorySocketProvider::new(MemoryBus::new("tool"));
    /// let connection = provider.connect(SocketOptions::new("tool-1")).await?;
    /// let builder = MessageBuilder::new(Some("tool-1"), Some("tool"));
    /// let socket = Socket::new(connection.socket, builder, Duration::from_secs(5));
    /// socket.publish(SpaMessage::new("jobs", "go")).await?;
    /// # Ok(())
    /// # }
    /// ```
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
            ..span.in_scope(|| Outgoing::traced(&message, self.inner.wire_format()))?
        };
        span.run(self.send_counted(outgoing, None)).await
    }

    /// Publishes a handler's `reply` (stamped, addressed to the response topic) to `request`,
    /// in a `send` span of the request's conversation; counted as sent to
    /// [`crate::metrics::REPLY_DESTINATION`].
    pub(crate) async fn publish_reply(
        &self,
        reply: &SpaMessage,
        request: &Delivery,
        format: crate::socket::WireFormat,
    ) -> Result<()> {
        let conversation = request.headers.get(headers::CORRELATION_ID);
        // Named as it is counted: the response topic is the requester's choice, one per
        // request on MQTT — as span names it would be unbounded.
        let destination = crate::metrics::REPLY_DESTINATION;
        let span = self
            .spans
            .send(destination, reply.payload.len(), conversation);
        let outgoing = span.in_scope(|| Outgoing::reply_as(reply, request, format))?;
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// socket.publish(SpaMessage::new("jobs", "resize photo 42")).await?;
    ///
    /// // Subscribers get it in the wire format, stamped with the sender's fields.
    /// let delivery = reader.inbox.recv().await.expect("delivered");
    /// let message = SpaMessage::from_json(&delivery.payload)?;
    /// assert_eq!(message.payload_str()?, "resize photo 42");
    /// assert_eq!(message.client_name.as_deref(), Some("writer"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish(&self, message: SpaMessage) -> Result<()> {
        self.send_message(message, None).await
    }

    /// Publishes `messages` pipelined: each is handed to the transport without waiting for the
    /// broker to acknowledge the one before, in the order given (which the transport keeps per
    /// topic, or per partition on Kafka), and the call returns once every one is acknowledged or
    /// failed — one result per message, in the same order. A message that fails (a topic the
    /// transport refuses, a timeout) fails alone: the others still go.
    ///
    /// Each message is stamped, traced and counted as [`Socket::publish`] does it. At most
    /// [`PUBLISH_BATCH_WINDOW`] are in flight at once, and each one's publish timeout starts
    /// when it enters that window: a batch of any size waits for room, it is not refused for
    /// its size.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("batch-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["rows"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), None), Duration::from_secs(5));
    /// let rows = (0..3).map(|i| SpaMessage::new("rows", format!("row {i}")));
    /// let results = socket.publish_batch(rows.chain([SpaMessage::new("rows/#", "a wildcard")])).await;
    /// assert!(results[..3].iter().all(Result::is_ok));
    /// assert!(results[3].is_err(), "a topic no transport publishes to fails alone");
    /// for i in 0..3 {
    ///     let delivery = reader.inbox.recv().await.expect("delivered in order");
    ///     assert_eq!(SpaMessage::from_json(&delivery.payload)?.payload_str()?, format!("row {i}"));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_batch(
        &self,
        messages: impl IntoIterator<Item = SpaMessage>,
    ) -> Vec<Result<()>> {
        use futures_util::StreamExt;
        let sends = messages
            .into_iter()
            .map(|message| self.send_message(message, None));
        // Started in order, each first polled when it starts: handed to the transport (its
        // ordering lock, its queue) in the order given. A window, not the whole batch at once:
        // a message's publish timeout runs from its start, and a message behind 100,000 others
        // would spend it waiting for room.
        futures_util::stream::iter(sends)
            .buffered(PUBLISH_BATCH_WINDOW)
            .collect()
            .await
    }

    /// Publishes a message with a key: consumers ordering by key handle one key's messages in
    /// order (see [`Outgoing::key`]; MQTT has no key and ignores it).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// // Every reading of one device goes with the device's id: handled in order.
    /// socket.publish_keyed("device-7", SpaMessage::new("readings", "21.5")).await?;
    ///
    /// let delivery = reader.inbox.recv().await.expect("delivered");
    /// assert_eq!(delivery.key.as_deref(), Some(&b"device-7"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_keyed(&self, key: impl Into<Bytes>, message: SpaMessage) -> Result<()> {
        self.send_message(message, Some(key.into())).await
    }

    /// Publishes `value` as a JSON message on `topic`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Reading { sensor: String, celsius: f64 }
    ///
    /// let reading = Reading { sensor: "s1".into(), celsius: 21.5 };
    /// socket.publish_json("readings", &reading).await?;
    ///
    /// let delivery = reader.inbox.recv().await.expect("delivered");
    /// let message = SpaMessage::from_json(&delivery.payload)?;
    /// assert_eq!(message.content_type.as_deref(), Some("application/json"));
    /// assert_eq!(message.payload_json::<Reading>()?.celsius, 21.5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_json<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        self.send_message(self.builder.json(topic, value)?, None)
            .await
    }

    /// Publishes `value` as a JSON message on `topic` with a key: [`Socket::publish_json`]
    /// and [`Socket::publish_keyed`] in one.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc-keyed-json"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["orders"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// #[derive(serde::Serialize)]
    /// struct Order { customer: String, total: u32 }
    ///
    /// let order = Order { customer: "c-7".into(), total: 12 };
    /// // A customer's orders are handled in order by consumers that order by key.
    /// socket.publish_json_keyed("orders", order.customer.clone(), &order).await?;
    ///
    /// let delivery = reader.inbox.recv().await.expect("delivered");
    /// assert_eq!(delivery.key.as_deref(), Some(&b"c-7"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_json_keyed<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: impl Into<Bytes>,
        value: &T,
    ) -> Result<()> {
        self.send_message(self.builder.json(topic, value)?, Some(key.into()))
            .await
    }

    /// Publishes everything `work` publishes on this socket as one Kafka transaction: all of
    /// it, once `work` returns `Ok` and the transaction is committed, or — when `work` fails,
    /// or the commit does — none of it. Returns `work`'s value once committed. A
    /// `read_committed` reader sees the messages together; a `read_uncommitted` one sees them
    /// as they are written.
    ///
    /// Needs a transactional socket ([`crate::Application::transactional`] on a Kafka bus);
    /// elsewhere it fails with [`crate::Error::Config`] before running `work`. Only `work`'s
    /// own task is inside: what a task it spawns publishes is committed on its own. Inside a
    /// transactional consumer's handler the handler's publishes are already one transaction
    /// with its message; a `transaction` there commits its part at once, apart from it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use spa_dat::{Socket, SpaMessage};
    ///
    /// // A producer's order and its lines: a reader sees all of them or none.
    /// async fn place(socket: Socket) -> spa_dat::Result<()> {
    ///     socket
    ///         .transaction(async {
    ///             socket.publish(SpaMessage::new("orders", "order 7")).await?;
    ///             for line in ["line 1", "line 2"] {
    ///                 socket.publish(SpaMessage::new("order-lines", line)).await?;
    ///             }
    ///             Ok(())
    ///         })
    ///         .await
    /// }
    /// ```
    pub async fn transaction<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(transactions) = self.inner.transactions() else {
            return Err(crate::error::Error::Config(
                "`Socket::transaction` needs a transactional socket: `transactional` on a Kafka bus"
                    .to_owned(),
            ));
        };
        let staged = transactions.stage();
        let value = staged.clone().scope(work).await?;
        transactions.commit(staged).await?;
        Ok(value)
    }

    /// Sends a request and waits for its reply, at most the configured request timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{Application, ApplicationLifeCycle, Json, MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = Arc::new(MemorySocketProvider::new(MemoryBus::new("request-doc")));
    /// // A consumer answers: its return value is the reply.
    /// async fn double(Json(n): Json<i64>) -> Json<i64> {
    ///     Json(n * 2)
    /// }
    /// # let mut doubler = Application::consumer("doubler", ["double"], double).socket_provider(provider.clone());
    /// # doubler.setup().await?;
    /// # let stop = doubler.shutdown_handle();
    /// # let answering = tokio::spawn(async move { let run = doubler.run_async().await; doubler.teardown().await.and(run) });
    /// # let asker = provider.connect(SocketOptions::new("asker")).await?;
    /// # let socket = Socket::new(asker.socket, MessageBuilder::new(None, None), Duration::from_secs(5));
    ///
    /// let reply = socket.request(SpaMessage::json("double", &21)?).await?;
    /// assert_eq!(reply.payload_json::<i64>()?, 42);
    /// # stop.trigger();
    /// # answering.await.expect("not panicked")?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(&self, message: SpaMessage) -> Result<SpaMessage> {
        self.request_with_timeout(message, self.request_timeout)
            .await
    }

    /// Sends a request and waits for its reply, at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// use spa_dat::Error;
    ///
    /// // Nobody answers on "nobody/home": the wait ends with `RequestTimeout`.
    /// let asked = SpaMessage::new("nobody/home", "anyone?");
    /// let result = socket.request_with_timeout(asked, Duration::from_millis(50)).await;
    /// assert!(matches!(result, Err(Error::RequestTimeout { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request_with_timeout(
        &self,
        message: SpaMessage,
        timeout: Duration,
    ) -> Result<SpaMessage> {
        let message = self.builder.stamp(message);
        // The span covers the round trip: the responder's spans are its children.
        let span = self.spans.send(&message.topic, message.payload.len(), None);
        let round_trip = async {
            let pending = self.inner.reply_route(&message.topic).await?;
            let (request, destination) = request_on(message, &pending, self.inner.wire_format())?;
            self.send_counted(request, None).await?;
            pending.wait(&destination, timeout).await
        };
        span.run(round_trip).await
    }

    /// Adds subscriptions; their messages reach this application's handler.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// // A consumer's socket takes on more topics at run time (MQTT-style filters).
    /// socket.subscribe(&["alerts/#"]).await?;
    /// socket.publish(SpaMessage::new("alerts/fire", "!")).await?;
    /// # let mut own = writer.inbox;
    /// # let delivery = own.recv().await.expect("delivered");
    /// # assert_eq!(&*delivery.topic, "alerts/fire");
    /// socket.unsubscribe(&["alerts/#"]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner.subscribe(&to_owned(topics)).await
    }

    /// Removes subscriptions.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// socket.subscribe(&["alerts/#"]).await?;
    /// // ...
    /// socket.unsubscribe(&["alerts/#"]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unsubscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner.unsubscribe(&to_owned(topics)).await
    }

    /// The application's message builder.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// # use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    /// # use spa_dat::{MessageBuilder, Socket, SpaMessage};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// # let provider = MemorySocketProvider::new(MemoryBus::new("socket-doc"));
    /// # let mut reader = provider.connect(SocketOptions::new("reader").topics(["jobs", "readings"])).await?;
    /// # let writer = provider.connect(SocketOptions::new("writer")).await?;
    /// # let socket = Socket::new(writer.socket, MessageBuilder::new(Some("w-1"), Some("writer")), Duration::from_secs(5));
    /// // Build a message stamped as this application's without publishing it yet.
    /// let message = socket.builder().build("jobs", "later");
    /// assert_eq!(message.client_id.as_deref(), Some("w-1"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(&self) -> &MessageBuilder {
        &self.builder
    }

    /// The transport socket underneath.
    pub fn transport(&self) -> &Arc<dyn SpaSocket> {
        &self.inner
    }

    /// How messages are written and read on this socket's bus ([`crate::socket::WireFormat`]).
    pub fn wire_format(&self) -> crate::socket::WireFormat {
        self.inner.wire_format()
    }
}

fn to_owned(topics: &[&str]) -> Vec<String> {
    topics.iter().map(|t| (*t).to_owned()).collect()
}
