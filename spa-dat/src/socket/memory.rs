//! The in-process bus (`memory://`): a real transport behind [`SpaSocket`] for the quick start,
//! for tests and for applications whose handlers live in one process.
//!
//! Semantics follow MQTT: `+`/`#` filters; every subscribing socket gets each message once;
//! sockets in the same group share messages round-robin; per-publisher order is kept; a
//! publish waits while a subscriber's inbox is full (back-pressure instead of loss) — except
//! where the room it would wait for can only be made by the publisher itself: a socket
//! publishing into its own subscription, or into one whose socket waits (directly or through
//! others) for room in the publisher's inbox, queues beyond the capacity instead of waiting
//! (a handler publishing to itself, or a cycle A → B → A, would deadlock). The bus keeps the
//! graph of who waits for whom to decide it; the MQTT transport follows the same rule.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use super::{
    topic_matches, validate_filter, ArrivalSender, Capabilities, Connection, Delivery, Inbox,
    Outgoing, PendingReply, RequestMultiplexer, SocketOptions, SocketProvider, SpaSocket,
    TransportConfig,
};
use crate::error::{Error, Result};
use crate::url::{bad_url, query_pairs, split_list, unknown_parameter};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Prefix of reply topics; each socket owns `_spa/reply/{socket}/+`.
const REPLY_PREFIX: &str = "_spa/reply";

/// Configuration of the in-process bus.
///
/// # Examples
///
/// ```
/// use spa_dat::config::SocketConfig;
/// use spa_dat::socket::memory::MemoryConfig;
///
/// let config = MemoryConfig::from_url("memory://tests?topics=jobs,alerts/%2B")?;
/// assert_eq!(config.bus, "tests");
/// assert_eq!(config.default_subscription_topics, ["jobs", "alerts/+"]);
///
/// // In a TOML config, as the `[bus]` table:
/// let config: SocketConfig = toml::from_str("transport = \"memory\"\nbus = \"tests\"").unwrap();
/// assert!(matches!(config, SocketConfig::Memory(m) if m.bus == "tests"));
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Name of the bus: sockets on the same name in one process talk to each other.
    pub bus: String,
    /// Topics a socket subscribes to when its application names none.
    pub default_subscription_topics: Vec<String>,
}

/// The bus `memory://` names.
impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            bus: "default".to_owned(),
            default_subscription_topics: Vec::new(),
        }
    }
}

impl MemoryConfig {
    /// Parses `memory://` or `memory://name`, with `?topics=a,b` for default topics.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::memory::MemoryConfig;
    ///
    /// assert_eq!(MemoryConfig::from_url("memory://")?, MemoryConfig::default());
    /// assert_eq!(MemoryConfig::from_url("memory://orders")?.bus, "orders");
    /// assert!(MemoryConfig::from_url("memory://orders?group=x").is_err()); // unknown parameter
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = ::url::Url::parse(url).map_err(|e| bad_url(url, e))?;
        if parsed.scheme() != "memory" {
            return Err(bad_url(url, "not a memory:// URL"));
        }
        let mut config = MemoryConfig::default();
        if let Some(name) = parsed.host_str().filter(|name| !name.is_empty()) {
            config.bus = name.to_owned();
        }
        for (key, value) in query_pairs(url, parsed.query())? {
            match key.as_str() {
                "topics" => config.default_subscription_topics = split_list(&value),
                other => return Err(unknown_parameter(url, other, &["topics"])),
            }
        }
        Ok(config)
    }
}

impl TransportConfig for MemoryConfig {
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn provider(&self) -> Result<Arc<dyn SocketProvider>> {
        Ok(Arc::new(MemorySocketProvider::from_config(self)))
    }
}

/// An in-process message bus. Cheap to clone; clones are the same bus.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{DistributedApplication, SpaMessage};
///
/// async fn log(message: SpaMessage) {
///     println!("{}", message.topic);
/// }
///
/// // A private bus per test: runs in parallel tests do not see each other's messages.
/// let bus = MemoryBus::new("orders-test");
/// let app = DistributedApplication::new()
///     .socket_provider(Arc::new(MemorySocketProvider::new(bus.clone())))
///     .add_consumer("log", ["orders/#"], log);
/// # let _ = app;
/// assert_eq!(bus.subscription_count(), 0); // nothing connected yet
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct BusInner {
    name: String,
    /// Copy-on-write: publishers take a snapshot and send without holding a lock.
    routes: RwLock<Arc<Vec<Route>>>,
    groups: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    next_socket: AtomicU64,
    /// Who waits for room in whose inbox: (publishing socket, subscribed socket), one entry
    /// per waiting publish.
    waits: Mutex<Vec<(u64, u64)>>,
}

/// A publish waiting for room, in the bus's wait graph until dropped.
struct Waiting<'a> {
    bus: &'a BusInner,
    edge: (u64, u64),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waits = self
            .bus
            .waits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = waits.iter().position(|edge| *edge == self.edge) {
            waits.swap_remove(at);
        }
    }
}

#[derive(Clone)]
enum Target {
    Inbox(Arc<ArrivalSender>),
    Replies(Arc<RequestMultiplexer>),
}

/// A group with routes matching a topic: its name, round-robin cursor and member routes.
type GroupMatch<'a> = (&'a str, &'a AtomicUsize, SmallVec<[usize; 4]>);

#[derive(Clone)]
struct Route {
    socket: u64,
    /// Shared so that a message on exactly this topic reuses it instead of allocating.
    filter: Arc<str>,
    /// The filter has no wildcard: plain string equality decides.
    exact: bool,
    /// Length of the filter's part before its first wildcard.
    literal_prefix: usize,
    group: Option<(Arc<str>, Arc<AtomicUsize>)>,
    target: Target,
}

impl MemoryBus {
    /// A new, private bus.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::memory::MemoryBus;
    ///
    /// let a = MemoryBus::new("test");
    /// let b = MemoryBus::new("test"); // same name, still another bus
    /// assert_eq!(a.name(), b.name());
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        MemoryBus {
            inner: Arc::new(BusInner {
                name: name.into(),
                routes: RwLock::new(Arc::new(Vec::new())),
                groups: Mutex::new(HashMap::new()),
                next_socket: AtomicU64::new(1),
                waits: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The process-wide bus called `name` (`memory://name`); created on first use.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::memory::{MemoryBus, MemoryConfig, MemorySocketProvider};
    ///
    /// // The bus a `memory://shared` URL names: reach it from anywhere in the process.
    /// let bus = MemoryBus::named("shared");
    /// let provider = MemorySocketProvider::from_config(&MemoryConfig::from_url("memory://shared")?);
    /// assert_eq!(provider.bus().name(), bus.name());
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn named(name: &str) -> Self {
        static BUSES: OnceLock<Mutex<HashMap<String, MemoryBus>>> = OnceLock::new();
        let buses = BUSES.get_or_init(Default::default);
        let mut buses = buses.lock().unwrap_or_else(PoisonError::into_inner);
        buses
            .entry(name.to_owned())
            .or_insert_with(|| MemoryBus::new(name))
            .clone()
    }

    /// The bus's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Number of live subscriptions (for tests and diagnostics).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    /// use spa_dat::socket::spi::{SocketOptions, SocketProvider};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> spa_dat::Result<()> {
    /// let bus = MemoryBus::new("count");
    /// let provider = MemorySocketProvider::new(bus.clone());
    /// assert_eq!(bus.subscription_count(), 0);
    /// let connection = provider.connect(SocketOptions::new("c").topics(["a", "b/#"])).await?;
    /// assert!(bus.subscription_count() >= 2); // its topics (and its route for replies)
    /// connection.socket.close().await?;
    /// assert_eq!(bus.subscription_count(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscription_count(&self) -> usize {
        self.read_routes().len()
    }

    fn read_routes(&self) -> Arc<Vec<Route>> {
        // Routes are replaced whole: a panic elsewhere cannot leave them half-written.
        Arc::clone(
            &self
                .inner
                .routes
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Replaces the routes with `change` applied to a copy of them.
    fn change_routes(&self, change: impl FnOnce(&mut Vec<Route>)) {
        let mut routes = self
            .inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next: Vec<Route> = routes.iter().cloned().collect();
        change(&mut next);
        *routes = Arc::new(next);
    }

    fn group_cursor(&self, group: &str) -> Arc<AtomicUsize> {
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(groups.entry(group.to_owned()).or_default())
    }

    /// Indices (into `routes`) of the routes a message on `topic` goes to: every matching
    /// socket once, and one member of each matching group; plus the topic as a shared string.
    fn targets(routes: &[Route], topic: &str) -> (Option<Arc<str>>, SmallVec<[usize; 4]>) {
        let mut shared_topic: Option<Arc<str>> = None;
        let mut targets: SmallVec<[usize; 4]> = SmallVec::new();
        let mut groups: SmallVec<[GroupMatch<'_>; 2]> = SmallVec::new();
        for (index, route) in routes.iter().enumerate() {
            if !route.matches(topic) {
                continue;
            }
            if shared_topic.is_none() && route.exact {
                shared_topic = Some(Arc::clone(&route.filter));
            }
            let same_socket = |i: &usize| routes[*i].socket == route.socket;
            match &route.group {
                None => {
                    if !targets.iter().any(same_socket) {
                        targets.push(index);
                    }
                }
                Some((name, cursor)) => match groups.iter_mut().find(|(g, _, _)| *g == &**name) {
                    Some((_, _, members)) => {
                        if !members.iter().any(same_socket) {
                            members.push(index);
                        }
                    }
                    None => groups.push((name, cursor, smallvec::smallvec![index])),
                },
            }
        }
        for (_, cursor, members) in groups {
            targets.push(members[cursor.fetch_add(1, Ordering::Relaxed) % members.len()]);
        }
        (shared_topic, targets)
    }

    /// Enters `publisher` waiting for room in `subscriber`'s inbox into the wait graph —
    /// unless that room could only be made by `publisher` itself: the same socket, or one that
    /// already waits, through any chain, for `publisher`. `None`: do not wait.
    fn wait_for(&self, publisher: u64, subscriber: u64) -> Option<Waiting<'_>> {
        let mut waits = self
            .inner
            .waits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut reached = vec![subscriber];
        let mut next = 0;
        while let Some(&socket) = reached.get(next) {
            if socket == publisher {
                return None;
            }
            for &(from, to) in waits.iter() {
                if from == socket && !reached.contains(&to) {
                    reached.push(to);
                }
            }
            next += 1;
        }
        waits.push((publisher, subscriber));
        Some(Waiting {
            bus: &self.inner,
            edge: (publisher, subscriber),
        })
    }

    /// Delivers `message` from the socket `publisher` to every matching subscriber, waiting
    /// while an inbox is full unless that could deadlock (see the module docs).
    async fn publish(&self, message: Outgoing, publisher: u64) {
        let Outgoing {
            topic,
            payload,
            mut headers,
            key,
        } = message;
        let topic = topic.as_str();
        let routes = self.read_routes();
        let (shared_topic, targets) = Self::targets(&routes, topic);
        if targets.is_empty() {
            tracing::trace!(bus = %self.inner.name, topic, "no subscriber");
            return;
        }
        let topic: Arc<str> = shared_topic.unwrap_or_else(|| Arc::from(topic));
        let last = targets.len() - 1;
        for (n, index) in targets.into_iter().enumerate() {
            // The last target takes the headers; the others get copies.
            let headers = if n == last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            match &routes[index].target {
                Target::Inbox(inbox) => {
                    // A closed inbox is a socket going away: its routes are being removed.
                    let delivery = Delivery::new(Arc::clone(&topic), payload.clone())
                        .with_headers(headers)
                        .with_key(key.clone());
                    if inbox.is_full() {
                        if let Some(_waiting) = self.wait_for(publisher, routes[index].socket) {
                            inbox.room().await;
                        }
                    }
                    inbox.send(delivery);
                }
                Target::Replies(replies) => {
                    super::deliver_reply(replies, &topic, &payload, headers)
                }
            }
        }
    }

    fn add_route(&self, socket: u64, filter: &str, group: Option<&str>, target: Target) {
        let group = group.map(|g| (Arc::from(g), self.group_cursor(g)));
        self.change_routes(|routes| {
            if !routes
                .iter()
                .any(|r| r.socket == socket && &*r.filter == filter)
            {
                routes.push(Route::new(socket, filter, group, target));
            }
        });
    }

    fn remove_routes(&self, socket: u64, filter: Option<&str>) {
        self.change_routes(|routes| {
            routes.retain(|r| r.socket != socket || filter.is_some_and(|f| f != &*r.filter))
        });
    }
}

impl Route {
    fn new(
        socket: u64,
        filter: &str,
        group: Option<(Arc<str>, Arc<AtomicUsize>)>,
        target: Target,
    ) -> Self {
        let literal_prefix = match filter.find(['+', '#']) {
            // `a/#` also matches `a` itself: the separator is not part of the prefix.
            Some(at) if filter[at..].starts_with('#') => at.saturating_sub(1),
            Some(at) => at,
            None => filter.len(),
        };
        Route {
            socket,
            filter: Arc::from(filter),
            exact: !filter.contains(['+', '#']),
            literal_prefix,
            group,
            target,
        }
    }

    fn matches(&self, topic: &str) -> bool {
        if self.exact {
            return &*self.filter == topic;
        }
        // Cheap rejection before the level-by-level match.
        topic
            .as_bytes()
            .starts_with(&self.filter.as_bytes()[..self.literal_prefix])
            && topic_matches(&self.filter, topic)
    }
}

struct MemorySocket {
    bus: MemoryBus,
    id: u64,
    group: Option<String>,
    inbox: Mutex<Option<Arc<ArrivalSender>>>,
    replies: Arc<RequestMultiplexer>,
    reply_prefix: String,
    closed: AtomicBool,
    /// Taken by each publish, first come first served: publishes started in order are
    /// delivered in that order, also when an earlier one waits for room in a full inbox and
    /// a later one would find room first.
    publishing: tokio::sync::Mutex<()>,
}

impl MemorySocket {
    fn inbox(&self) -> Result<Arc<ArrivalSender>> {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::Closed)
    }

    fn ensure_open(&self) -> Result<()> {
        super::ensure_open(&self.closed)
    }
}

#[async_trait]
impl SpaSocket for MemorySocket {
    async fn send(&self, message: Outgoing) -> Result<()> {
        self.ensure_open()?;
        // The same rule as MQTT's, so that an application behaves alike on both.
        if let Err(reason) = super::validate_topic(&message.topic) {
            return Err(Error::refused(
                "publish",
                format!("memory://{}", self.bus.name()),
                reason,
            ));
        }
        let _turn = self.publishing.lock().await;
        self.bus.publish(message, self.id).await;
        Ok(())
    }

    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        let inbox = self.inbox()?;
        for topic in topics {
            validate_filter(topic).map_err(Error::Config)?;
        }
        for topic in topics {
            self.bus.add_route(
                self.id,
                topic,
                self.group.as_deref(),
                Target::Inbox(inbox.clone()),
            );
        }
        Ok(())
    }

    async fn unsubscribe(&self, topics: &[String]) -> Result<()> {
        self.ensure_open()?;
        for topic in topics {
            self.bus.remove_routes(self.id, Some(topic));
        }
        Ok(())
    }

    async fn reply_route(&self, _destination: &str) -> Result<PendingReply> {
        self.ensure_open()?;
        let pending = self.replies.register();
        // Sized once (`/` and a u64's 20 digits): `format!` grew it twice per request.
        let mut topic = String::with_capacity(self.reply_prefix.len() + 21);
        topic.push_str(&self.reply_prefix);
        let _ = write!(topic, "/{}", pending.id());
        Ok(pending.with_response_topic(topic))
    }

    /// The in-process bus carries headers as they are: either format works; the envelope
    /// keeps every field of a message.
    fn wire_format(&self) -> crate::socket::WireFormat {
        crate::socket::WireFormat::Envelope
    }

    async fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.bus.remove_routes(self.id, None);
            let inbox = self
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // Published after the consumer stopped (after the shutdown drain): lost, as the
            // bus never delivers a message again.
            if let Some(refused) = inbox.map(|inbox| inbox.refused()).filter(|n| *n > 0) {
                tracing::warn!(bus = %self.bus.inner.name, socket = self.id, discarded = refused, "messages published after their consumer had stopped were discarded");
            }
            self.replies.close();
        }
        Ok(())
    }
}

/// Builds sockets on a [`MemoryBus`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::{Application, SpaMessage};
///
/// async fn log(message: SpaMessage) {
///     println!("{}", message.topic);
/// }
///
/// let provider = Arc::new(MemorySocketProvider::new(MemoryBus::new("app-bus")));
/// let app = Application::consumer("log", ["events"], log).socket_provider(provider.clone());
/// # let _ = app;
/// assert_eq!(provider.bus().name(), "app-bus");
/// ```
#[derive(Debug, Clone)]
pub struct MemorySocketProvider {
    bus: MemoryBus,
    default_topics: Vec<String>,
}

impl MemorySocketProvider {
    /// A provider for `bus`.
    pub fn new(bus: MemoryBus) -> Self {
        MemorySocketProvider {
            bus,
            default_topics: Vec::new(),
        }
    }

    /// A provider for the process-wide bus the config names.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::memory::{MemoryConfig, MemorySocketProvider};
    ///
    /// let provider = MemorySocketProvider::from_config(&MemoryConfig::default());
    /// assert_eq!(provider.bus().name(), "default"); // the bus `memory://` names
    /// ```
    pub fn from_config(config: &MemoryConfig) -> Self {
        MemorySocketProvider {
            bus: MemoryBus::named(&config.bus),
            default_topics: config.default_subscription_topics.clone(),
        }
    }

    /// The bus this provider connects to.
    pub fn bus(&self) -> &MemoryBus {
        &self.bus
    }
}

#[async_trait]
impl SocketProvider for MemorySocketProvider {
    async fn connect(&self, options: SocketOptions) -> Result<Connection> {
        options.refuse_transactions(&self.describe())?;
        let id = self.bus.inner.next_socket.fetch_add(1, Ordering::Relaxed);
        let (sender, inbox) = Inbox::queued(options.inbox_capacity);
        let replies = RequestMultiplexer::new();
        let reply_prefix = format!("{REPLY_PREFIX}/{id}");
        self.bus.add_route(
            id,
            &format!("{reply_prefix}/+"),
            None,
            Target::Replies(Arc::clone(&replies)),
        );
        let socket = MemorySocket {
            bus: self.bus.clone(),
            id,
            group: options.group.clone(),
            inbox: Mutex::new(Some(Arc::new(sender))),
            replies,
            reply_prefix,
            closed: AtomicBool::new(false),
            publishing: tokio::sync::Mutex::new(()),
        };
        let connection =
            super::subscribe_initial(socket, inbox, &options, &self.default_topics).await?;
        // Subscriptions on the in-process bus take effect at once, and it never disconnects.
        options.ready.set(true);
        Ok(connection)
    }

    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider> {
        Arc::new(MemorySocketProvider {
            bus: self.bus.clone(),
            default_topics: topics,
        })
    }

    fn default_topics(&self) -> &[String] {
        &self.default_topics
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wildcards: true,
            consumer_groups: true,
            ordered_per_publisher: true,
            ordered_per_partition: true,
            subscribe_is_synchronous: true,
            headers: true,
            keys: true,
            acks_in_any_order: false,
        }
    }

    fn describe(&self) -> String {
        format!("memory://{}", self.bus.name())
    }
}
