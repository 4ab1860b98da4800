//! One application: what it is ([`Application`], built once and not changed by running it),
//! what a run gives it ([`RunDefaults`]), and what it holds while it runs
//! ([`RunningApplication`]: its socket, runtime and resources), with the Python package's life
//! cycle ([`ApplicationLifeCycle`]) as a thin layer over them.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::asyncapi::AppContract;
use super::engine::batch::BatchShape;
use super::engine::concurrent::{KeyFn, Ordering};
use super::engine::consumer::Consumer;
use super::engine::guarded::{run_guarded, Limits, Outcome};
use super::placeholders;
use super::resource::{ActiveResources, Resource, ResourceSet};
use crate::config::{Config, SocketProviderFactory};
use crate::error::{Error, Result};
use crate::handler::call::{BoxedHandler, Handler};
use crate::handler::extract::{HandlerContext, HandlerScope};
use crate::handler::{HandlerKind, Layer};
use crate::message::MessageBuilder;
use crate::metrics::AppMetrics;
use crate::runtime::{AppRuntime, Extensions, MessageOrder, RetryPolicy, Shutdown, Socket};
use crate::socket::{Inbox, ReadySignal, SocketOptions, SocketProvider, SpaSocket};
use crate::telemetry::SpanScope;

/// The life cycle of an application, as in the Python package: `setup`, `run_async`,
/// `teardown`, and `start_async` / `start` doing all three.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{Application, ApplicationLifeCycle, Socket};
///
/// async fn announce(socket: Socket) -> spa_dat::Result<()> {
///     socket.publish_json("announcements", "up").await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let provider = Arc::new(MemorySocketProvider::new(MemoryBus::new("life-cycle-doc")));
/// let mut app = Application::producer("announcer", announce).socket_provider(provider);
///
/// // Step by step (a producer's run ends when its handler returns)...
/// app.setup().await?;
/// app.run_async().await?;
/// app.teardown().await?;
///
/// // ...or all three at once, teardown included whatever happened before.
/// tokio::time::timeout(Duration::from_secs(10), app.start_async()).await.expect("in time")?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait ApplicationLifeCycle: Send {
    /// Checks the handler, connects the socket, sets up resources. What it did is undone by
    /// [`ApplicationLifeCycle::teardown`], also when it failed half-way.
    async fn setup(&mut self) -> Result<()>;

    /// Runs the handler: once for a producer, per message until shutdown for a consumer.
    async fn run_async(&mut self) -> Result<()>;

    /// Tears down resources in reverse order, then closes the socket. Idempotent.
    async fn teardown(&mut self) -> Result<()>;

    /// `setup`, `run_async`, `teardown`; teardown runs whatever happened before it.
    async fn start_async(&mut self) -> Result<()> {
        let result = match self.setup().await {
            Ok(()) => self.run_async().await,
            Err(error) => Err(error),
        };
        let teardown = self.teardown().await;
        result.and(teardown)
    }

    /// [`ApplicationLifeCycle::start_async`] on a new Tokio runtime; blocks until done.
    fn start(&mut self) -> Result<()> {
        block_on_new_runtime(self.start_async())?
    }
}

/// Runs `future` on a new multi-threaded Tokio runtime, blocking until it is done.
pub(crate) fn block_on_new_runtime<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the Tokio runtime: {e}")).caused_by(e))?;
    Ok(runtime.block_on(future))
}

/// What a run gives every application it starts: the default bus, the runtime settings of its
/// [`Config`], shared state and resources, and the run's shutdown. A distributed application
/// makes one from the configuration it read; an application started on its own makes its own
/// ([`RunDefaults::standalone`]) — nothing reads the environment behind the caller's back.
#[derive(Clone)]
pub(crate) struct RunDefaults {
    pub(crate) provider: Arc<dyn SocketProvider>,
    pub(crate) settings: Settings,
    pub(crate) state: Extensions,
    pub(crate) resources: Extensions,
    pub(crate) shutdown: Shutdown,
}

impl RunDefaults {
    /// The defaults of `app` run on its own: [`Config::default`] (the in-process bus, unless
    /// the application names its own provider), its own shutdown.
    fn standalone(app: &AppSpec) -> Result<Self> {
        if app.provider.is_none() {
            // Read only to warn: a bus configured for DistributedApplication is not this one's.
            let configured = [crate::config::ENV_URL, crate::config::ENV_CONFIG_FILE]
                .into_iter()
                .filter(|name| std::env::var_os(name).is_some())
                .collect::<Vec<_>>();
            if !configured.is_empty() {
                tracing::warn!(app = %app.name, ignored = ?configured, "an application run alone runs on the in-process bus: the environment configures DistributedApplication; give the application a socket_provider, or run it in a DistributedApplication");
            }
        }
        let config = Config::default();
        let provider = match &app.provider {
            Some(provider) => Arc::clone(provider),
            None => SocketProviderFactory::from_config(&config.bus)?,
        };
        Ok(RunDefaults {
            provider,
            settings: Settings::from(&config),
            state: Extensions::default(),
            resources: Extensions::default(),
            shutdown: app.shutdown.clone(),
        })
    }
}

/// Runtime settings an application takes from its [`Config`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) dead_letter_topic: Option<String>,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            request_timeout: config.request_timeout(),
            shutdown_grace: config.shutdown_grace(),
            dead_letter_topic: config.dead_letter_topic.clone(),
        }
    }
}

/// One application: a consumer (handler per message) or a producer (handler once).
///
/// Build one with [`Application::consumer`] / [`Application::producer`]; run it alone through
/// [`ApplicationLifeCycle`] or with others in a [`crate::DistributedApplication`]. Running
/// does not change what was built: a run gives it its defaults (the bus, timeouts, shared
/// state and resources) — a distributed application those of the configuration it read, an
/// application run alone [`Config::default`]'s (the in-process bus, unless
/// [`Application::socket_provider`] names another). Only `DistributedApplication` reads the
/// environment.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use spa_dat::{Application, DistributedApplication, Json, MessageOrder, RetryPolicy, Socket};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// async fn ship(Json(order): Json<Order>, socket: Socket) -> spa_dat::Result<()> {
///     socket.publish_json("shipments", &order.id).await
/// }
///
/// let shipping = Application::consumer("shipping", ["orders/created"], ship)
///     .group("shipping")
///     .concurrency(4)
///     .ordering(MessageOrder::Key)
///     .retry(RetryPolicy::default().attempts(5))
///     .handler_timeout(Duration::from_secs(30))
///     .dead_letter_topic("orders/dead");
/// assert_eq!(shipping.name(), "shipping");
/// let run = DistributedApplication::new().add_application(shipping);
/// # let _ = run;
/// ```
pub struct Application {
    spec: AppSpec,
    /// Set between [`ApplicationLifeCycle::setup`] and [`ApplicationLifeCycle::teardown`].
    running: Option<RunningApplication>,
}

/// What an application is: set while it is built, never changed by running it.
struct AppSpec {
    name: String,
    kind: HandlerKind,
    topics: Vec<String>,
    group: Option<String>,
    client_id: Option<String>,
    client_name: Option<String>,
    dead_letter_topic: Option<String>,
    /// Topics it publishes to, as declared for the AsyncAPI document.
    sends: Vec<String>,
    concurrency: usize,
    /// A batch consumer's batches (`None`: one message per call).
    batch: Option<BatchShape>,
    /// Publishes and consumed offsets in Kafka transactions ([`Application::transactional`]).
    transactional: bool,
    order: MessageOrder,
    order_key: Option<Arc<KeyFn>>,
    retry: RetryPolicy,
    handler_timeout: Option<Duration>,
    provider: Option<Arc<dyn SocketProvider>>,
    state: Extensions,
    resources: ResourceSet,
    handler: BoxedHandler,
    shutdown: Shutdown,
    /// Its socket's readiness, set by the transport.
    ready: ReadySignal,
    /// False while the consumer makes no progress with messages in hand ([`Application::stall_after`]).
    progressing: ReadySignal,
    stall_after: Duration,
}

/// What an application is called on the bus, placeholders filled in.
struct BusNames {
    topics: Vec<String>,
    group: Option<String>,
    dead_letter_topic: Option<String>,
}

/// An application while it runs: made by starting an [`Application`] with a run's
/// [`RunDefaults`]; what it holds is undone by [`RunningApplication::teardown`].
pub(crate) struct RunningApplication {
    runtime: Arc<AppRuntime>,
    transport: Arc<dyn SpaSocket>,
    /// Taken by the consumer's run.
    inbox: Option<Inbox>,
    resources: Option<ActiveResources>,
    settings: Settings,
    /// The dead-letter topic, placeholders filled in, else the configuration's.
    dead_letter_topic: Option<String>,
    acks_in_any_order: bool,
    /// Its deliveries count for the shutdown drain (a consumer on the in-process bus).
    drains: bool,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("name", &self.spec.name)
            .field("kind", &self.spec.kind)
            .field("topics", &self.spec.topics)
            .field("group", &self.spec.group)
            .finish_non_exhaustive()
    }
}

impl Application {
    fn new(name: String, kind: HandlerKind, topics: Vec<String>, handler: BoxedHandler) -> Self {
        Application {
            spec: AppSpec {
                name,
                kind,
                topics,
                group: None,
                client_id: None,
                client_name: None,
                dead_letter_topic: None,
                sends: Vec::new(),
                concurrency: 1,
                batch: None,
                transactional: false,
                order: MessageOrder::default(),
                order_key: None,
                retry: RetryPolicy::default(),
                handler_timeout: None,
                provider: None,
                state: Extensions::default(),
                resources: ResourceSet::default(),
                handler,
                shutdown: Shutdown::new(),
                ready: ReadySignal::default(),
                progressing: {
                    let progressing = ReadySignal::default();
                    progressing.set(true);
                    progressing
                },
                stall_after: Duration::from_secs(60),
            },
            running: None,
        }
    }

    /// A consumer: `handler` is called for every message on `topics`.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{Application, SpaMessage};
    ///
    /// async fn log(message: SpaMessage) {
    ///     println!("{}: {:?}", message.topic, message.payload_str());
    /// }
    ///
    /// // MQTT-style filters; `${SITE}` is filled in from the environment at start.
    /// let app = Application::consumer("log", ["sensors/${SITE}/+/temp", "alerts/#"], log);
    /// assert_eq!(app.name(), "log");
    /// ```
    pub fn consumer<H, Args, I, S>(name: impl Into<String>, topics: I, handler: H) -> Self
    where
        H: Handler<Args>,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_boxed(
            name,
            HandlerKind::Consumer,
            topics.into_iter().map(Into::into).collect(),
            BoxedHandler::new(handler),
        )
    }

    /// A producer: `handler` is called once when the application starts.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{Application, Socket, SpaMessage};
    ///
    /// async fn seed(socket: Socket) -> spa_dat::Result<()> {
    ///     for n in 1..=3 {
    ///         socket.publish(SpaMessage::new("jobs", format!("job {n}"))).await?;
    ///     }
    ///     Ok(())
    /// }
    ///
    /// let app = Application::producer("seed", seed);
    /// # let _ = app;
    /// ```
    pub fn producer<H: Handler<Args>, Args>(name: impl Into<String>, handler: H) -> Self {
        Self::from_boxed(
            name,
            HandlerKind::Producer,
            Vec::new(),
            BoxedHandler::new(handler),
        )
    }

    /// An application around an already erased handler.
    pub(crate) fn from_boxed(
        name: impl Into<String>,
        kind: HandlerKind,
        topics: Vec<String>,
        handler: BoxedHandler,
    ) -> Self {
        Self::new(name.into(), kind, topics, handler)
    }

    /// Consumer group: instances in one group share the messages.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// // Three replicas of this service share the orders instead of each getting all of them.
    /// let app = Application::consumer("billing", ["orders"], handle).group("billing");
    /// # let _ = app;
    /// ```
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.spec.group = Some(group.into());
        self
    }

    /// Client id on the bus (default: the name plus a random suffix).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// let app = Application::consumer("billing", ["orders"], handle).client_id("billing-eu-1");
    /// # let _ = app;
    /// ```
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.spec.client_id = Some(client_id.into());
        self
    }

    /// Client name stamped on published messages (default: the application's name).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// let app = Application::consumer("billing", ["orders"], handle).client_name("Billing service");
    /// # let _ = app;
    /// ```
    pub fn client_name(mut self, client_name: impl Into<String>) -> Self {
        self.spec.client_name = Some(client_name.into());
        self
    }

    /// Where messages this consumer cannot decode or fails to handle are forwarded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// // After its retries, a failed order goes to `orders/dead` with the reason in its headers.
    /// let app = Application::consumer("billing", ["orders"], handle).dead_letter_topic("orders/dead");
    /// # let _ = app;
    /// ```
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.spec.dead_letter_topic = Some(topic.into());
        self
    }

    /// Declares topics its handler publishes to (`#[producer(sends = [...])]`): the AsyncAPI
    /// document ([`crate::DistributedApplication::asyncapi`]) lists a send operation on each.
    /// Publishing is not limited to them.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, Socket};
    /// async fn announce(socket: Socket) -> spa_dat::Result<()> {
    ///     socket.publish_json("announcements", "hello").await
    /// }
    /// let app = Application::producer("announce", announce).sends(["announcements"]);
    /// # let _ = app;
    /// ```
    pub fn sends<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.sends = topics.into_iter().map(Into::into).collect();
        self
    }

    /// What the AsyncAPI document says of it.
    pub(crate) fn contract(&self) -> AppContract<'_> {
        let spec = &self.spec;
        AppContract {
            name: &spec.name,
            kind: spec.kind,
            topics: &spec.topics,
            group: spec.group.as_deref(),
            client_id: spec.client_id.as_deref(),
            client_name: spec.client_name.as_deref(),
            dead_letter_topic: spec.dead_letter_topic.as_deref(),
            sends: &spec.sends,
            batch: spec.batch.map(|shape| shape.size),
            shape: spec.handler.shape(),
            schemas: spec.handler.schemas(),
            provider: spec.provider.as_ref(),
        }
    }

    /// How many messages a consumer handles at once (default 1: one after the other, in
    /// arrival order). Which of them may run together is [`Application::ordering`]'s to say;
    /// acknowledgements go to the broker in arrival order whatever order handlers finish in.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// // Up to 16 handler calls at once (e.g. each waiting on a database).
    /// let app = Application::consumer("index", ["documents"], handle).concurrency(16);
    /// # let _ = app;
    /// ```
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.spec.concurrency = limit.max(1);
        self
    }

    /// Makes this a batch consumer: its handler takes up to `size` messages per call as a
    /// [`crate::Batch`], a batch cut when it is full or `wait` after its first message,
    /// whichever comes first. With [`Application::concurrency`], that many batches run at
    /// once; with [`MessageOrder::Key`] a key's messages are in order within a batch and never
    /// in two batches at once. Each message is acknowledged on its own once handled or
    /// dead-lettered (see [`crate::BatchResult`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use spa_dat::{Application, Batch, SpaMessage};
    ///
    /// // One bulk insert per 500 events, or per 20 ms when traffic is thin.
    /// async fn insert(events: Batch<SpaMessage>) {
    ///     println!("inserting {} events", events.len());
    /// }
    ///
    /// let app = Application::consumer("insert", ["events"], insert)
    ///     .batch(500, Duration::from_millis(20));
    /// # let _ = app;
    /// ```
    pub fn batch(mut self, size: usize, wait: Duration) -> Self {
        self.spec.batch = Some(BatchShape {
            size: size.max(1),
            wait,
        });
        self
    }

    /// Makes the application exactly-once on Kafka: what a consumer's handler publishes — its
    /// messages, its reply, a dead letter — goes to the broker with the consumed message's
    /// offset in one Kafka transaction, so a `read_committed` reader sees each consumed
    /// message's output once, however often the consumer crashes. Publishes are held until
    /// the message is settled and committed at most every `transaction_interval_ms` (Kafka
    /// setting, default 100 ms), with every other message settled meanwhile; a producer
    /// groups related publishes with [`crate::Socket::transaction`]. A batch consumer's call
    /// publishes in the transaction that takes every message the call settled. Needs a Kafka
    /// bus (other buses refuse to connect). Side effects outside Kafka stay at-least-once: see
    /// the README's "Exactly once".
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, Json, Socket};
    /// // Every order in, one invoice out: never two, whatever crashes.
    /// async fn invoice(Json(order): Json<serde_json::Value>, socket: Socket) -> spa_dat::Result<()> {
    ///     socket.publish_json("invoices", &order).await
    /// }
    ///
    /// let app = Application::consumer("invoicing", ["orders"], invoice)
    ///     .concurrency(16)
    ///     .transactional(true);
    /// # let _ = app;
    /// ```
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.spec.transactional = transactional;
        self
    }

    /// Which messages may be handled at the same time with a concurrency above 1 (default:
    /// [`MessageOrder::Key`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    /// use spa_dat::MessageOrder;
    ///
    /// // Metrics samples: order does not matter, throughput does.
    /// let app = Application::consumer("samples", ["metrics/#"], handle)
    ///     .concurrency(8)
    ///     .ordering(MessageOrder::Unordered);
    /// # let _ = app;
    /// ```
    pub fn ordering(mut self, order: MessageOrder) -> Self {
        self.spec.order = order;
        self
    }

    /// Gives each message its ordering key (for [`MessageOrder::Key`]) instead of the
    /// transport's: e.g. a device id read from the payload on MQTT, which has no keys. `None`:
    /// the message has no key.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    /// use bytes::Bytes;
    ///
    /// // MQTT has no keys: order by the device in `devices/{id}/...` instead.
    /// let app = Application::consumer("devices", ["devices/+/state"], handle)
    ///     .concurrency(8)
    ///     .order_key(|delivery| {
    ///         let device = delivery.topic.split('/').nth(1)?;
    ///         Some(Bytes::copy_from_slice(device.as_bytes()))
    ///     });
    /// # let _ = app;
    /// ```
    pub fn order_key(
        mut self,
        key_of: impl Fn(&crate::socket::Delivery) -> Option<bytes::Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.spec.order_key = Some(Arc::new(key_of));
        self
    }

    /// What happens when the handler fails (default: [`RetryPolicy::default`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    /// use std::time::Duration;
    ///
    /// use spa_dat::RetryPolicy;
    ///
    /// let policy = RetryPolicy::default()
    ///     .attempts(10)
    ///     .delays(Duration::from_millis(500), Duration::from_secs(30));
    /// let app = Application::consumer("sync", ["changes"], handle).retry(policy);
    /// # let _ = app;
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.spec.retry = policy;
        self
    }

    /// Puts `layer` around the handler (see [`crate::handler::Layer`]). The last layer added
    /// runs first.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    /// use std::time::Instant;
    ///
    /// use spa_dat::handler::layer_fn;
    ///
    /// // Logs how long each call takes.
    /// let timing = layer_fn(|context, next| async move {
    ///     let started = Instant::now();
    ///     let result = next.run(context).await;
    ///     println!("handled in {:?}", started.elapsed());
    ///     result
    /// });
    /// let app = Application::consumer("timed", ["jobs"], handle).layer(timing);
    /// # let _ = app;
    /// ```
    pub fn layer(mut self, layer: impl Layer) -> Self {
        self.spec.handler = self.spec.handler.layered(Arc::new(layer));
        self
    }

    /// Cancels a handler call that runs longer than `timeout`; it counts as a failed attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use std::time::Duration;
    ///
    /// let app = Application::consumer("render", ["pages"], handle).handler_timeout(Duration::from_secs(5));
    /// # let _ = app;
    /// ```
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.spec.handler_timeout = Some(timeout);
        self
    }

    /// The socket provider of this application (default: the distributed application's).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use std::sync::Arc;
    ///
    /// use spa_dat::config::SocketProviderFactory;
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    ///
    /// // This application on the in-process bus, the others on the configured broker.
    /// let local = Arc::new(MemorySocketProvider::new(MemoryBus::named("local")));
    /// let app = Application::consumer("cache", ["cache/invalidate"], handle).socket_provider(local);
    /// # let _ = app;
    /// // Or any provider, e.g. one built from a URL:
    /// let remote = SocketProviderFactory::from_url("mqtt://broker:1883")?;
    /// let app = Application::consumer("audit", ["audit/#"], handle).socket_provider(remote);
    /// # let _ = app;
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn socket_provider(mut self, provider: Arc<dyn SocketProvider>) -> Self {
        self.spec.provider = Some(provider);
        self
    }

    /// Adds state for this application's handler ([`crate::State<T>`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{Application, SpaMessage, State};
    ///
    /// struct Limits { max_bytes: usize }
    ///
    /// async fn check(message: SpaMessage, limits: State<Limits>) -> Result<(), String> {
    ///     match message.payload.len() <= limits.max_bytes {
    ///         true => Ok(()),
    ///         false => Err("too large".to_owned()),
    ///     }
    /// }
    ///
    /// let app = Application::consumer("check", ["uploads"], check).state(Limits { max_bytes: 1024 });
    /// # let _ = app;
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.spec.state.insert(Arc::new(value));
        self
    }

    /// Adds state the caller keeps a handle to (e.g. metrics read in `main` after the run).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// use spa_dat::{Application, State};
    ///
    /// async fn count(seen: State<AtomicU64>) {
    ///     seen.fetch_add(1, Ordering::Relaxed);
    /// }
    ///
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let app = Application::consumer("count", ["events"], count).state_arc(Arc::clone(&seen));
    /// # let _ = app;
    /// // ... after the run:
    /// println!("{} events", seen.load(Ordering::Relaxed));
    /// ```
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.spec.state.insert(value);
        self
    }

    /// Adds a resource for this application ([`crate::Res<T>`]), set up after its socket
    /// connects and torn down before it closes.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{Application, Res, Resource, SpaMessage};
    ///
    /// struct Store { path: String }
    /// impl Resource for Store {} // nothing to set up or tear down
    ///
    /// async fn save(message: SpaMessage, store: Res<Store>) {
    ///     println!("saving {} to {}", message.topic, store.path);
    /// }
    ///
    /// let app = Application::consumer("save", ["documents"], save)
    ///     .resource(Store { path: "/var/lib/docs".into() });
    /// # let _ = app;
    /// ```
    pub fn resource<T: Resource>(mut self, resource: T) -> Self {
        self.spec.resources.add(resource);
        self
    }

    /// The shutdown handle of this application when it runs alone (through
    /// [`ApplicationLifeCycle`]); in a [`crate::DistributedApplication`] the run's handle
    /// ([`crate::DistributedApplication::shutdown_handle`]) stops it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// let app = Application::consumer("log", ["events"], handle);
    /// let shutdown = app.shutdown_handle();
    /// // e.g. from another task: stop the consumer, run alone, once some condition holds.
    /// shutdown.trigger();
    /// assert!(shutdown.is_triggered());
    /// ```
    pub fn shutdown_handle(&self) -> Shutdown {
        self.spec.shutdown.clone()
    }

    /// Whether its socket is ready, as the transport sees it.
    pub fn ready_signal(&self) -> &ReadySignal {
        &self.spec.ready
    }

    /// Whether the consumer makes progress (see [`Application::stall_after`]); always ready
    /// for a producer.
    pub fn progress_signal(&self) -> &ReadySignal {
        &self.spec.progressing
    }

    /// A consumer with messages in hand that finishes none for longer than `after` (a hung
    /// handler, a key stuck retrying) makes the run not ready (default 60 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # use spa_dat::{Application, SpaMessage};
    /// # async fn handle(message: SpaMessage) { let _ = message; }
    ///
    /// use std::time::Duration;
    ///
    /// // Readiness probes fail once no message finished for 5 minutes while some wait.
    /// let app = Application::consumer("import", ["files"], handle).stall_after(Duration::from_secs(300));
    /// # let _ = app;
    /// ```
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.spec.stall_after = after;
        self
    }

    /// The application's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

impl AppSpec {
    /// Its resources and the run's shared ones, its own first.
    fn all_resources(&self, defaults: &RunDefaults) -> Extensions {
        let mut all = self.resources.by_type().clone();
        all.merge_missing(&defaults.resources);
        all
    }

    /// Its state and the run's shared state, its own first.
    fn all_state(&self, defaults: &RunDefaults) -> Extensions {
        let mut all = self.state.clone();
        all.merge_missing(&defaults.state);
        all
    }

    /// The socket provider it connects with: its own, else the run's.
    fn provider_in<'a>(&'a self, defaults: &'a RunDefaults) -> &'a Arc<dyn SocketProvider> {
        self.provider.as_ref().unwrap_or(&defaults.provider)
    }

    /// Checks every handler argument against what the application offers in a run with
    /// `defaults`.
    pub(crate) fn check(&self, defaults: &RunDefaults) -> Result<()> {
        let resources = self.all_resources(defaults);
        let state = self.all_state(defaults);
        let scope = HandlerScope {
            app: &self.name,
            kind: self.kind,
            state: &state,
            resources: &resources,
            batch: self.batch.map(|shape| shape.size),
        };
        let mut problems = Vec::new();
        if self.kind == HandlerKind::Consumer
            && self.topics.is_empty()
            && self.provider_in(defaults).default_topics().is_empty()
        {
            problems.push("a consumer needs topics: none given and the bus has no default subscription topics".to_owned());
        }
        if let Err(found) = self.handler.check(&scope) {
            problems.extend(found);
        }
        let mut errors: Vec<Error> = problems
            .into_iter()
            .map(|reason| Error::Handler {
                handler: self.name.clone(),
                reason,
            })
            .collect();
        if let Err(problem) = self.bus_names() {
            errors.push(problem);
        }
        match errors.len() {
            0 => Ok(()),
            _ => Err(Error::from_many(errors)),
        }
    }

    /// Topics, group and dead-letter topic with their `${NAME}` placeholders filled in from
    /// the environment (see `placeholders`).
    fn bus_names(&self) -> Result<BusNames> {
        let names = || -> std::result::Result<BusNames, String> {
            Ok(BusNames {
                topics: placeholders::expand_topics(&self.topics)?,
                group: self
                    .group
                    .as_deref()
                    .map(placeholders::expand)
                    .transpose()?,
                dead_letter_topic: self
                    .dead_letter_topic
                    .as_deref()
                    .map(placeholders::expand)
                    .transpose()?,
            })
        };
        names().map_err(|problem| Error::config(format!("application `{}`: {problem}", self.name)))
    }

    fn startup_error(&self, source: Error) -> Error {
        Error::Startup {
            app: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// Connects its socket in a run with `defaults`: a running application, its resources
    /// not yet set up.
    async fn connect(&self, defaults: &RunDefaults, probe: bool) -> Result<RunningApplication> {
        let provider = Arc::clone(self.provider_in(defaults));
        self.check(defaults)?;
        let suffix = || uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let client_id = match (&self.client_id, probe) {
            // A deployment check never takes a running instance's id.
            (Some(id), true) => format!("{id}-check-{}", suffix()),
            (None, true) => format!("{}-check-{}", self.name, suffix()),
            (Some(id), false) => id.clone(),
            (None, false) => format!("{}-{}", self.name, suffix()),
        };
        let client_name = self
            .client_name
            .clone()
            .unwrap_or_else(|| self.name.clone());
        let stable_id = self.client_id.clone().unwrap_or_else(|| self.name.clone());
        let mut options = SocketOptions::new(client_id.clone()).stable_id(stable_id);
        options.client_name = Some(client_name.clone());
        options.ready = self.ready.clone();
        options.transactional = self.transactional;
        options.probe = probe;
        let names = self.bus_names()?;
        options.group = names.group.clone();
        let mut subscriptions = Vec::new();
        if self.kind == HandlerKind::Consumer {
            subscriptions.clone_from(&names.topics);
            options.topics = names.topics;
        }
        tracing::debug!(app = %self.name, bus = %provider.describe(), "connecting");
        let connection = provider.connect(options).await?;
        let builder = MessageBuilder::new(Some(&client_id), Some(&client_name));
        let name: Arc<str> = Arc::from(self.name.as_str());
        let system = crate::metrics::system_of(&provider.describe());
        let metrics =
            Arc::new(AppMetrics::new(Arc::clone(&name), system).subscribed(&subscriptions));
        let spans = SpanScope::new(
            Arc::clone(&name),
            system,
            &client_id,
            names.group.as_deref(),
        );
        let socket = Socket::new(
            Arc::clone(&connection.socket),
            builder,
            defaults.settings.request_timeout,
        )
        .with_telemetry(Arc::clone(&metrics), spans);
        let runtime = Arc::new(AppRuntime {
            name,
            metrics,
            socket,
            state: self.all_state(defaults),
            resources: self.all_resources(defaults),
            shutdown: defaults.shutdown.clone(),
        });
        // A consumer's deliveries count for the shutdown drain (and `TestRun::settled`) from
        // the moment it is connected: before the run says it is ready, not once its task runs.
        let drains = self.kind == HandlerKind::Consumer
            && connection.inbox.drain_into(defaults.shutdown.pending());
        Ok(RunningApplication {
            drains,
            runtime,
            transport: connection.socket,
            inbox: Some(connection.inbox),
            resources: None,
            settings: defaults.settings.clone(),
            dead_letter_topic: names
                .dead_letter_topic
                .or_else(|| defaults.settings.dead_letter_topic.clone()),
            acks_in_any_order: provider.capabilities().acks_in_any_order,
        })
    }

    async fn consume(&self, running: &RunningApplication, inbox: Inbox) {
        let consumer = Arc::new(Consumer {
            handler: self.handler.clone(),
            runtime: Arc::clone(&running.runtime),
            dead_letter_topic: running.dead_letter_topic.clone(),
            limits: Limits {
                grace: running.settings.shutdown_grace,
                timeout: self.handler_timeout,
            },
            retry: self.retry,
            warned_unrequested_reply: AtomicBool::new(false),
            acks_in_any_order: running.acks_in_any_order,
            taken: AtomicU64::new(0),
            done: AtomicU64::new(0),
            drains: running.drains,
            stopped: AtomicBool::new(false),
            left: AtomicU64::new(0),
        });
        let watchdog = tokio::spawn(Arc::clone(&consumer).watch(
            self.progressing.clone(),
            self.stall_after,
            inbox.depth(),
        ));
        let ordering = Ordering {
            order: self.order,
            key: self.order_key.clone(),
        };
        if let Some(shape) = self.batch {
            consumer
                .run_batches(inbox, self.concurrency, shape, ordering)
                .await;
        } else if self.concurrency > 1 {
            consumer
                .run_concurrently(inbox, self.concurrency, ordering)
                .await;
        } else {
            consumer.run(inbox).await;
        }
        watchdog.abort();
    }

    async fn produce(&self, running: &RunningApplication) -> Result<()> {
        let context = HandlerContext {
            app: Arc::clone(&running.runtime),
            message: None,
            received: None,
            readers_left: 0,
            delivery_readers_left: 0,
            batch: None,
        };
        let span = tracing::info_span!("producer", app = %self.name);
        let limits = Limits {
            grace: running.settings.shutdown_grace,
            timeout: None,
        };
        let shutdown = &running.runtime.shutdown;
        let outcome = run_guarded(self.handler.call(context), span, shutdown, limits).await;
        match outcome {
            Outcome::Done(Ok(_)) => Ok(()),
            Outcome::Done(Err(error)) => {
                tracing::error!(app = %self.name, %error, "producer failed");
                Err(Error::HandlerFailed {
                    handler: self.name.clone(),
                    source: error,
                })
            }
            Outcome::Panicked(reason) => {
                tracing::error!(app = %self.name, panic = %reason, "producer panicked");
                Err(Error::HandlerFailed {
                    handler: self.name.clone(),
                    source: format!("panicked: {reason}").into(),
                })
            }
            Outcome::TimedOut(_) | Outcome::Cancelled => {
                tracing::warn!(app = %self.name, "producer did not finish within the shutdown grace period; cancelled");
                Ok(())
            }
        }
    }
}

impl Application {
    /// Checks every handler argument against what a run with `defaults` offers.
    pub(crate) fn check(&self, defaults: &RunDefaults) -> Result<()> {
        self.spec.check(defaults)
    }

    /// Sets the application up in a run with `defaults`: connects its socket, then sets up its
    /// resources. What it did is undone by teardown, also when it failed half-way.
    /// Connects its socket as a run would (subscriptions and access checked by the
    /// transport), then closes it: the configuration check.
    pub(crate) async fn check_connection(&self, defaults: &RunDefaults) -> Result<()> {
        let running = self
            .spec
            .connect(defaults, true)
            .await
            .map_err(|e| self.spec.startup_error(e))?;
        tracing::info!(app = %self.spec.name, "connected: check passed");
        running.teardown().await
    }

    pub(crate) async fn setup_in(&mut self, defaults: &RunDefaults) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let running = self
            .spec
            .connect(defaults, false)
            .await
            .map_err(|e| self.spec.startup_error(e))?;
        let running = self.running.insert(running);
        match self.spec.resources.setup().await {
            Ok(active) => {
                running.resources = Some(active);
                Ok(())
            }
            Err(error) => Err(Error::Startup {
                app: self.spec.name.clone(),
                source: Box::new(error),
            }),
        }
    }
}

#[async_trait]
impl ApplicationLifeCycle for Application {
    async fn setup(&mut self) -> Result<()> {
        let defaults =
            RunDefaults::standalone(&self.spec).map_err(|e| self.spec.startup_error(e))?;
        self.setup_in(&defaults).await
    }

    async fn run_async(&mut self) -> Result<()> {
        let Some(running) = self.running.as_mut() else {
            return Err(Error::runtime(format!(
                "application `{}` must be set up before it runs",
                self.spec.name
            )));
        };
        let inbox = running.inbox.take();
        let running = &*running;
        let connection_gauge = crate::metrics::enabled().then(|| {
            let (app, system) = (
                Arc::clone(&running.runtime.name),
                running.runtime.metrics.system(),
            );
            let ready = self.spec.ready.clone();
            tokio::spawn(async move { super::health::follow_connection(&app, system, ready).await })
        });
        let result = match (self.spec.kind, inbox) {
            (HandlerKind::Producer, _) => self.spec.produce(running).await,
            (HandlerKind::Consumer, Some(inbox)) => {
                self.spec.consume(running, inbox).await;
                Ok(())
            }
            (HandlerKind::Consumer, None) => Err(Error::runtime(format!(
                "consumer `{}` already ran; set it up again",
                self.spec.name
            ))),
        };
        if let Some(gauge) = connection_gauge {
            gauge.abort();
        }
        result
    }

    async fn teardown(&mut self) -> Result<()> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let result = running.teardown().await;
        tracing::debug!(app = %self.spec.name, "torn down");
        result
    }
}

impl RunningApplication {
    /// Tears its resources down in reverse order, then closes its socket.
    async fn teardown(mut self) -> Result<()> {
        let resources = match self.resources.as_mut() {
            Some(active) => active.teardown().await,
            None => Ok(()),
        };
        let socket = self.transport.close().await;
        resources.and(socket)
    }
}
