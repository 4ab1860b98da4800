//! The Kafka transport (feature `kafka`), on rdkafka.
//!
//! - `publish` returns once the broker acknowledged the record (idempotent producer,
//!   `acks=all`); concurrent publishes on one socket are pipelined by librdkafka.
//! - Each consuming socket is a member of a consumer group (default: derived from the
//!   application's name), so N processes of an application split the partitions.
//! - At least once: a record's offset is stored only after its handler finished (or it was
//!   skipped or dead-lettered); stored offsets are committed every 5 s, on rebalance and on
//!   close, so a restarted application resumes after the last handled record.
//! - Subscription topics are created when missing and never deleted. Request/reply: one reply
//!   consumer per socket, correlation in a header, and a reply topic of the request's own for
//!   responders that do not echo the header (see `replies`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::context::{Failures, SocketContext};
use self::replies::{Replies, ReplyRoute};
use super::{
    Capabilities, Connection, Delivery, Inbox, Outgoing, PendingReply, Position,
    RequestMultiplexer, SocketOptions, SocketProvider, SpaSocket, TopicNames,
};
use crate::config::{
    bad_url, check_duration_ms, parse_bool, query_pairs, split_list, unknown_parameter, url_number,
};
use crate::error::{Error, Result};
use crate::message::SpaMessage;
use crate::redact::{is_secret_key, REDACTED};

mod access;
mod context;
mod headers;
mod replies;

/// Configuration of the Kafka transport (the Python package's `KafkaConfig`, extended).
/// `Debug` shows secret properties (`sasl.password`, `*.secret`, …) as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Consumer group of every socket; default: `spa-dat-{application name}`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// A bus-wide client id, used as a prefix: each socket is `{client_id}-{application}`.
    /// Unset: the application's client id (its name plus a random suffix).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topics a socket subscribes to when its application names none.
    #[serde(default)]
    pub default_subscription_topics: Vec<String>,
    /// Create subscription topics that do not exist.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics spa-dat creates.
    #[serde(default = "default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of topics spa-dat creates.
    #[serde(default = "default_replication")]
    pub topic_replication: i32,
    /// How long connecting (the first metadata request) may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long `publish` waits for the broker's acknowledgement.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// librdkafka properties passed through as they are (SASL, SSL, tuning), e.g.
    /// `"security.protocol" = "SASL_SSL"`. They override spa-dat's own settings.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_key(key) { REDACTED } else { value };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("client_id", &self.client_id)
            .field(
                "default_subscription_topics",
                &self.default_subscription_topics,
            )
            .field("create_topics", &self.create_topics)
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication", &self.topic_replication)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("properties", &properties)
            .finish()
    }
}

fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    1
}
fn default_replication() -> i32 {
    1
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_publish_timeout_ms() -> u64 {
    30_000
}

impl KafkaConfig {
    /// A config for `bootstrap_servers` with every other setting at its default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: None,
            client_id: None,
            default_subscription_topics: Vec::new(),
            create_topics: true,
            topic_partitions: default_partitions(),
            topic_replication: default_replication(),
            connect_timeout_ms: default_connect_timeout_ms(),
            publish_timeout_ms: default_publish_timeout_ms(),
            properties: BTreeMap::new(),
        }
    }

    /// Parses `kafka://host:9092[,host2:9092]?group=...&client_id=...&topics=a,b&partitions=4`;
    /// parameters with a dot (`security.protocol=SSL`) are librdkafka properties.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad_url(url, "not a kafka:// URL"))?;
        let (servers, _) = rest.split_once('?').unwrap_or((rest, ""));
        let servers = servers.trim_end_matches('/');
        if servers.is_empty() {
            return Err(bad_url(url, "no bootstrap server"));
        }
        let mut config = KafkaConfig::new(servers);
        // The host list is not a URL authority (commas): parse the query on its own.
        let parsed = url::Url::parse(&format!(
            "kafka://query/?{}",
            rest.split_once('?').map_or("", |(_, q)| q)
        ))
        .map_err(|e| bad_url(url, e))?;
        for (key, value) in query_pairs(&parsed)? {
            match key.as_str() {
                "group" | "group_id" => config.group_id = Some(value),
                "client_id" => config.client_id = Some(value),
                "topics" => config.default_subscription_topics = split_list(&value),
                "partitions" => config.topic_partitions = url_number(url, &key, &value)?,
                "replication" => config.topic_replication = url_number(url, &key, &value)?,
                "create_topics" => config.create_topics = parse_bool(url, &key, &value)?,
                "connect_timeout_ms" => config.connect_timeout_ms = url_number(url, &key, &value)?,
                "publish_timeout_ms" => config.publish_timeout_ms = url_number(url, &key, &value)?,
                property if property.contains('.') => {
                    config.properties.insert(key.clone(), value);
                }
                other => {
                    return Err(unknown_parameter(
                        url,
                        other,
                        &[
                            "group",
                            "client_id",
                            "topics",
                            "partitions",
                            "replication",
                            "create_topics",
                            "connect_timeout_ms",
                            "publish_timeout_ms",
                            "<librdkafka.property>",
                        ],
                    ))
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would only fail later.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config("Kafka bootstrap_servers is empty"));
        }
        for (key, value) in [
            ("topic_partitions (URL: partitions)", self.topic_partitions),
            (
                "topic_replication (URL: replication)",
                self.topic_replication,
            ),
        ] {
            if value < 1 {
                return Err(Error::config(format!(
                    "Kafka `{key}` must be at least 1, got {value}"
                )));
            }
        }
        check_duration_ms("connect_timeout_ms", self.connect_timeout_ms, 1)?;
        check_duration_ms("publish_timeout_ms", self.publish_timeout_ms, 1)
    }

    /// `kafka://servers`, for logs and errors.
    pub fn broker(&self) -> String {
        format!("kafka://{}", self.bootstrap_servers)
    }

    /// A config for another set of default topics (the Python package's `overwrite_config`).
    pub fn overwrite_config(&self, topics: Vec<String>) -> Self {
        KafkaConfig {
            default_subscription_topics: topics,
            ..self.clone()
        }
    }

    fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        // rdkafka derives librdkafka's level from the `log` crate's, which is off unless a
        // `log` logger is installed; the socket context sends the lines to `tracing` and
        // needs INFO to see a listener hang up (see `context::Failures`).
        let level = if self.properties.contains_key("debug") {
            RDKafkaLogLevel::Debug
        } else {
            RDKafkaLogLevel::Info
        };
        config.set_log_level(level);
        config
    }
}

/// The topics of the cluster `client` reaches, fetched within `timeout`; fails as soon as
/// librdkafka reports an error no retry can fix (credentials, certificates, protocol).
fn existing_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    failures: &Failures,
    timeout: Duration,
) -> std::result::Result<BTreeSet<String>, String> {
    // Short attempts first, so a permanent error ends the wait within moments instead of at
    // the timeout; each one twice as long as the last (up to 2 s), so a slow (remote, TLS)
    // cluster whose answer takes longer than the first still gets one.
    let mut attempt = Duration::from_millis(250);
    let deadline = Instant::now() + timeout;
    loop {
        attempt = attempt.min(deadline.saturating_duration_since(Instant::now()));
        match client.fetch_metadata(None, Timeout::After(attempt)) {
            Ok(metadata) => {
                return Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.name().to_owned())
                    .collect())
            }
            Err(error) => {
                if let Some(permanent) = failures.permanent() {
                    return Err(permanent);
                }
                if Instant::now() >= deadline {
                    let last = failures
                        .last()
                        .map_or_else(String::new, |l| format!("; last error: {l}"));
                    return Err(format!(
                        "no answer within {timeout:?}: {}{last}",
                        describe(&error)
                    ));
                }
                attempt = (attempt * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Waits until `client`'s metadata lists every one of `topics` with its partitions.
fn await_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
    timeout: Duration,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    for topic in topics {
        loop {
            let listed = client
                .fetch_metadata(Some(topic), Timeout::After(timeout))
                .map_err(|e| format!("{topic}: {}", describe(&e)))?
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if listed {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{topic}: created, but not listed by the cluster within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// A Kafka topic name may only use `[a-zA-Z0-9._-]`.
fn validate_topic(topic: &str) -> Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Error::config(format!(
            "`{topic}` is not a Kafka topic name: use letters, digits, `.`, `_`, `-` (Kafka has no `+`/`#` wildcards)"
        )))
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn kafka_error(broker: &str, operation: &'static str, error: impl std::fmt::Display) -> Error {
    Error::Transport {
        operation,
        broker: broker.to_owned(),
        reason: error.to_string(),
    }
}

/// Creates `topics` when missing; one already there is fine.
async fn create_topics(
    admin: &AdminClient<SocketContext>,
    config: &KafkaConfig,
    topics: &[String],
    partitions: i32,
) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let broker = config.broker();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                partitions,
                TopicReplication::Fixed(config.topic_replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| kafka_error(&broker, "create topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka_error(
                    &broker,
                    "create topics",
                    format!("{topic}: {code}"),
                ))
            }
        }
    }
    Ok(())
}

struct Shared {
    config: KafkaConfig,
    broker: String,
    client_id: String,
    group_id: String,
    producer: FutureProducer<SocketContext>,
    admin: AdminClient<SocketContext>,
    /// Errors of this socket's clients that no retry can fix.
    failures: Arc<Failures>,
    publish_timeout: Duration,
    inbox: Mutex<Option<mpsc::Sender<Delivery>>>,
    consumer: Mutex<Option<Arc<GroupConsumer>>>,
    topics: Mutex<BTreeSet<String>>,
    /// Topics known to exist (from the metadata fetched at connect, or created since):
    /// subscribing to them needs no CreateTopics round trip.
    existing_topics: Mutex<BTreeSet<String>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    replies: Arc<Replies>,
    reply_consumer: tokio::sync::OnceCell<Arc<StreamConsumer<SocketContext>>>,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every guarded value is replaced or read whole: still consistent after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn ensure_open(&self) -> Result<()> {
        super::ensure_open(&self.closed)
    }

    /// Enqueues the record with librdkafka and waits for the broker's acknowledgement.
    ///
    /// `send_result` enqueues without rdkafka's retry loop, whose future is several times
    /// larger and sleeps 100 ms whenever librdkafka's queue is full; many concurrent publishes
    /// (pipelining) pay for every byte of future state.
    async fn send(&self, topic: &str, payload: &[u8], headers: Option<OwnedHeaders>) -> Result<()> {
        self.ensure_open()?;
        let mut record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let mut queue_full_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(1);
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if queue_full_since.get_or_insert_with(Instant::now).elapsed()
                        < self.publish_timeout =>
                {
                    record = returned;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err((error, _)) => {
                    return Err(kafka_error(&self.broker, "publish", describe(&error)))
                }
            }
        };
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(kafka_error(&self.broker, "publish", describe(&error))),
            // The producer was dropped with the record still queued: the socket closed.
            Err(_canceled) => Err(Error::Closed),
        }
    }

    fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.config.client_config(&self.client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "5000")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("isolation.level", "read_uncommitted")
            // librdkafka pauses fetching for a second once its queue passes queued.min.messages;
            // a consumer that drains fast would then sit idle (measured: 0.8 s of 1.25 s).
            .set("fetch.queue.backoff.ms", "10");
        for (key, value) in &self.config.properties {
            config.set(key, value);
        }
        config
    }

    /// The socket's group consumer, created on first subscription; its task feeds the inbox.
    fn consumer(self: &Arc<Self>) -> Result<Arc<GroupConsumer>> {
        let mut slot = lock(&self.consumer);
        if let Some(consumer) = slot.as_ref() {
            return Ok(Arc::clone(consumer));
        }
        let inbox = lock(&self.inbox).clone().ok_or(Error::Closed)?;
        let handled = Arc::new(HandledOffsets::default());
        let consumer: GroupConsumer = self
            .consumer_config(&self.group_id)
            .create_with_context(SocketContext {
                handled: Some(Arc::clone(&handled)),
                group: Some(self.group_id.clone()),
                ..self.context()
            })
            .map_err(|e| kafka_error(&self.broker, "create consumer", e))?;
        tracing::debug!(broker = %self.broker, group = %self.group_id, client_id = %self.client_id, "Kafka consumer created");
        let consumer = Arc::new(consumer);
        let task = tokio::spawn(consume(
            Arc::clone(&consumer),
            handled,
            inbox,
            self.broker.clone(),
        ));
        lock(&self.tasks).push(task);
        *slot = Some(Arc::clone(&consumer));
        Ok(consumer)
    }

    fn context(&self) -> SocketContext {
        SocketContext::new(&self.failures, &self.broker)
    }

    /// Fails, naming the group or topic, when the ACLs do not let this socket read `topics` in
    /// `group` (see [`access::verify_read_access`]).
    async fn verify_read_access(&self, group: &str, topics: &[String]) -> Result<()> {
        let (config, broker) = (self.consumer_config(group), self.broker.clone());
        let (group, topics) = (group.to_owned(), topics.to_vec());
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let checked = access::verify_read_access(config, &broker, &group, &topics, timeout);
            tracing::debug!(%group, ?topics, took = ?started.elapsed(), ok = checked.is_ok(), "read access checked");
            checked
        })
        .await
        .map_err(|e| kafka_error(&self.broker, "subscribe", e))?
        .map_err(|reason| kafka_error(&self.broker, "subscribe", reason))
    }

    /// The reply consumer, created with the first request: it reads the shared reply topic from
    /// its end (replies left by an earlier run with the same client id are not this run's) and
    /// is assigned each request's own reply topic while the request waits.
    async fn reply_consumer(self: &Arc<Self>) -> Result<Arc<StreamConsumer<SocketContext>>> {
        self.reply_consumer
            .get_or_try_init(|| async {
                let shared_topic = self.replies.shared_topic().to_owned();
                create_topics(
                    &self.admin,
                    &self.config,
                    std::slice::from_ref(&shared_topic),
                    1,
                )
                .await?;
                let group = format!("{}-replies", self.group_id);
                self.verify_read_access(&group, std::slice::from_ref(&shared_topic))
                    .await?;
                let consumer: StreamConsumer<SocketContext> = self
                    .consumer_config(&group)
                    .set("enable.auto.offset.store", "true")
                    .create_with_context(SocketContext {
                        group: Some(group.clone()),
                        ..self.context()
                    })
                    .map_err(|e| kafka_error(&self.broker, "create reply consumer", e))?;
                // Assigned directly, from the end as a number: no group rebalance to wait for,
                // and nothing older than this run.
                let timeout = Duration::from_millis(self.config.connect_timeout_ms);
                let consumer = Arc::new(consumer);
                let (reader, topic) = (Arc::clone(&consumer), shared_topic.clone());
                let end = tokio::task::spawn_blocking(move || {
                    reader.fetch_watermarks(&topic, 0, Timeout::After(timeout))
                })
                .await
                .map_err(|e| kafka_error(&self.broker, "assign reply topic", e))?
                .map_err(|e| kafka_error(&self.broker, "assign reply topic", describe(&e)))?
                .1;
                let mut assignment = rdkafka::TopicPartitionList::new();
                assignment
                    .add_partition_offset(&shared_topic, 0, Offset::Offset(end))
                    .map_err(|e| kafka_error(&self.broker, "assign reply topic", e))?;
                consumer
                    .assign(&assignment)
                    .map_err(|e| kafka_error(&self.broker, "assign reply topic", e))?;
                let task = tokio::spawn(collect_replies(
                    Arc::clone(&consumer),
                    Arc::clone(&self.replies),
                ));
                lock(&self.tasks).push(task);
                Ok::<_, Error>(consumer)
            })
            .await
            .cloned()
    }

    /// Creates a request's own reply topic and has the reply consumer read it.
    async fn open_own_reply_topic(
        &self,
        consumer: &Arc<StreamConsumer<SocketContext>>,
        topic: &str,
    ) -> Result<()> {
        create_topics(&self.admin, &self.config, &[topic.to_owned()], 1).await?;
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let (watcher, names) = (Arc::clone(consumer), vec![topic.to_owned()]);
        tokio::task::spawn_blocking(move || await_topics(watcher.client(), &names, timeout))
            .await
            .map_err(|e| kafka_error(&self.broker, "create reply topic", e))?
            .map_err(|e| kafka_error(&self.broker, "create reply topic", e))?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| kafka_error(&self.broker, "assign reply topic", e))?;
        consumer
            .incremental_assign(&assignment)
            .map_err(|e| kafka_error(&self.broker, "assign reply topic", e))
    }
}

fn describe(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{error} ({code:?})"),
        None => error.to_string(),
    }
}

/// The broker's ACLs refused the request.
fn is_authorization(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// The socket's group consumer.
type GroupConsumer = StreamConsumer<SocketContext>;

/// How often handled offsets are handed to librdkafka's offset store (auto-commit then
/// commits them every `auto.commit.interval.ms`).
const STORE_INTERVAL: Duration = Duration::from_millis(100);

/// Offsets of handled records, by partition, not yet in librdkafka's offset store.
///
/// Storing each record's offset as its handler finishes costs a topic lookup under
/// librdkafka's client lock per record (measured: ~10 % of consumer throughput); these are
/// stored in one call every [`STORE_INTERVAL`], before partitions are revoked, and on close.
/// A partition's records are handled in order, so its latest handled offset covers the rest.
#[derive(Default)]
pub(super) struct HandledOffsets {
    /// Per partition; a consumer owns few, so a scan beats hashing the topic per record.
    latest: Mutex<Vec<HandledOffset>>,
}

struct HandledOffset {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl HandledOffsets {
    fn handled(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        let mut latest = lock(&self.latest);
        let known = latest.iter_mut().find(|h| {
            h.partition == partition && (Arc::ptr_eq(&h.topic, topic) || h.topic == *topic)
        });
        match known {
            Some(handled) => handled.offset = handled.offset.max(offset),
            None => latest.push(HandledOffset {
                topic: Arc::clone(topic),
                partition,
                offset,
            }),
        }
    }

    /// Hands the handled offsets to librdkafka's store: the next offset to read, per partition.
    pub(super) fn store<C: ConsumerContext, K: Consumer<C>>(&self, consumer: &K) {
        let latest = std::mem::take(&mut *lock(&self.latest));
        if latest.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::with_capacity(latest.len());
        for handled in &latest {
            let next = Offset::Offset(handled.offset + 1);
            if let Err(error) = list.add_partition_offset(&handled.topic, handled.partition, next) {
                tracing::debug!(topic = %handled.topic, partition = handled.partition, %error, "offset not stored");
            }
        }
        if let Err(error) = consumer.store_offsets(&list) {
            // Partitions revoked meanwhile: their next owner handles those records again.
            tracing::debug!(%error, "offsets not stored");
        }
    }
}

/// Reads the group consumer into the inbox; the ack records the offset after the handler.
async fn consume(
    consumer: Arc<GroupConsumer>,
    handled: Arc<HandledOffsets>,
    inbox: mpsc::Sender<Delivery>,
    broker: String,
) {
    let mut topic_names = TopicNames::default();
    let mut store_tick = tokio::time::interval(STORE_INTERVAL);
    store_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            biased;
            _ = store_tick.tick() => {
                handled.store(&*consumer);
                continue;
            }
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) if is_authorization(&error) => {
                tracing::error!(broker = %broker, error = %describe(&error), "Kafka consumer not authorized: check the ACLs of its topics and group");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(broker = %broker, error = %describe(&error), "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let topic = topic_names.get(message.topic());
        let (partition, offset) = (message.partition(), message.offset());
        let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let headers = headers::of_record(&message);
        drop(message);
        let handled = Arc::clone(&handled);
        let handled_topic = Arc::clone(&topic);
        let delivery = Delivery::new(topic, payload)
            .with_headers(headers)
            .at(Position { partition, offset })
            .with_ack(move || handled.handled(&handled_topic, partition, offset));
        if inbox.send(delivery).await.is_err() {
            break;
        }
    }
}

async fn collect_replies(consumer: Arc<StreamConsumer<SocketContext>>, replies: Arc<Replies>) {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %describe(&error), "Kafka reply consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let reply = match SpaMessage::from_json(message.payload().unwrap_or_default()) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(topic = message.topic(), %error, "undecodable reply dropped");
                continue;
            }
        };
        let correlation = headers::correlation_of(&message);
        if !replies.deliver(message.topic(), correlation, reply) {
            tracing::debug!(
                topic = message.topic(),
                ?correlation,
                "reply dropped: no waiting request is its own (it came after its request ended, or cannot be matched)"
            );
        }
    }
}

struct KafkaSocket {
    shared: Arc<Shared>,
}

#[async_trait]
impl SpaSocket for KafkaSocket {
    // librdkafka copies the payload and headers; one boxed future per record (measured:
    // pipelined publishing ran at 0.75× raw rdkafka with a second one, 0.9× without).
    async fn send(&self, message: Outgoing) -> Result<()> {
        let headers = headers::to_record(&message.headers);
        self.shared
            .send(&message.topic, &message.payload, headers)
            .await
    }

    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        self.shared.ensure_open()?;
        for topic in topics {
            validate_topic(topic)?;
        }
        if topics.is_empty() {
            return Ok(());
        }
        let consumer = self.shared.consumer()?;
        if self.shared.config.create_topics {
            let missing: Vec<String> = {
                let existing = lock(&self.shared.existing_topics);
                topics
                    .iter()
                    .filter(|t| !existing.contains(*t))
                    .cloned()
                    .collect()
            };
            if !missing.is_empty() {
                create_topics(
                    &self.shared.admin,
                    &self.shared.config,
                    &missing,
                    self.shared.config.topic_partitions,
                )
                .await?;
                // The consumer may hold metadata from before the topics existed; subscribed on
                // it, librdkafka reports them missing until its next refresh, minutes later.
                let timeout = Duration::from_millis(self.shared.config.connect_timeout_ms);
                let (watcher, names) = (Arc::clone(&consumer), missing.clone());
                tokio::task::spawn_blocking(move || {
                    await_topics(watcher.client(), &names, timeout)
                })
                .await
                .map_err(|e| kafka_error(&self.shared.broker, "create topics", e))?
                .map_err(|e| kafka_error(&self.shared.broker, "create topics", e))?;
                lock(&self.shared.existing_topics).extend(missing);
            }
        }
        let unchecked: Vec<String> = {
            let current = lock(&self.shared.topics);
            topics
                .iter()
                .filter(|t| !current.contains(*t))
                .cloned()
                .collect()
        };
        if !unchecked.is_empty() {
            self.shared
                .verify_read_access(&self.shared.group_id, &unchecked)
                .await?;
        }
        let all: Vec<String> = {
            let mut current = lock(&self.shared.topics);
            current.extend(topics.iter().cloned());
            current.iter().cloned().collect()
        };
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| kafka_error(&self.shared.broker, "subscribe", e))
    }

    async fn unsubscribe(&self, topics: &[String]) -> Result<()> {
        self.shared.ensure_open()?;
        let rest: Vec<String> = {
            let mut current = lock(&self.shared.topics);
            for topic in topics {
                current.remove(topic);
            }
            current.iter().cloned().collect()
        };
        let consumer = lock(&self.shared.consumer).clone();
        if let Some(consumer) = consumer {
            if rest.is_empty() {
                consumer.unsubscribe();
            } else {
                let names: Vec<&str> = rest.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&names)
                    .map_err(|e| kafka_error(&self.shared.broker, "unsubscribe", e))?;
            }
        }
        Ok(())
    }

    async fn reply_route(&self, destination: &str) -> Result<PendingReply> {
        self.shared.ensure_open()?;
        let consumer = self.shared.reply_consumer().await?;
        let pending = self.shared.replies.requests().register();
        let route = self.shared.replies.route(pending.id(), destination);
        // Released however the request ends, also when its caller is cancelled.
        let guard = RouteGuard {
            shared: Arc::clone(&self.shared),
            consumer: Arc::clone(&consumer),
            id: pending.id(),
            route: route.clone(),
        };
        if let ReplyRoute::Own(topic) = &route {
            self.shared.open_own_reply_topic(&consumer, topic).await?;
        }
        Ok(pending.with_response_topic(route.topic()).holding(guard))
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let tasks: Vec<_> = lock(&self.shared.tasks).drain(..).collect();
        for task in tasks {
            task.abort();
            // Its future holds the consumer: gone before the consumer is closed below.
            let _ = task.await;
        }
        lock(&self.shared.inbox).take();
        let consumer = lock(&self.shared.consumer).take();
        let mut commit_failure = None;
        if let Some(consumer) = consumer {
            // Offsets of everything handled so far: committed now, not at the next interval.
            let commit = tokio::task::spawn_blocking(move || {
                if let Some(handled) = &consumer.context().handled {
                    handled.store(&*consumer);
                }
                let committed = match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {
                        tracing::debug!("offsets committed on close");
                        None
                    }
                    Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => None,
                    Err(error) => {
                        tracing::warn!(%error, "committing offsets on close failed");
                        Some(describe(&error))
                    }
                };
                // The last handle: dropping it closes the consumer and leaves the group now,
                // instead of holding partitions until the session times out.
                if let Ok(consumer) = Arc::try_unwrap(consumer) {
                    drop(consumer);
                } else {
                    tracing::warn!("Kafka consumer still referenced at close; it leaves the group when released");
                }
                committed
            });
            commit_failure = commit.await.unwrap_or_else(|join| Some(join.to_string()));
        }
        if self.shared.reply_consumer.initialized() {
            // The reply topics are this socket's alone (Python deletes its own too).
            let mut topics = self.shared.replies.own_topics();
            topics.push(self.shared.replies.shared_topic().to_owned());
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
            if let Err(error) = self.shared.admin.delete_topics(&names, &options).await {
                tracing::debug!(%error, "reply topics not deleted");
            }
        }
        let producer = self.shared.producer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            producer.flush(Timeout::After(Duration::from_secs(5)))
        })
        .await;
        self.shared.replies.requests().close();
        // Reported after everything else is closed: the records handled since the last commit
        // are delivered again to the group's next member.
        match commit_failure {
            Some(reason) => Err(kafka_error(
                &self.shared.broker,
                "commit offsets on close",
                format!("{reason}; what was handled since the last commit is delivered again"),
            )),
            None => Ok(()),
        }
    }
}

/// Ends a request's reply route: a request's own reply topic is unassigned and deleted.
struct RouteGuard {
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer<SocketContext>>,
    id: u64,
    route: ReplyRoute,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.shared.replies.end(self.id, &self.route);
        let ReplyRoute::Own(topic) = &self.route else {
            return;
        };
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition(topic, 0);
        if let Err(error) = self.consumer.incremental_unassign(&assignment) {
            tracing::debug!(%topic, %error, "reply topic not unassigned");
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return; // close() deletes what is left
        }
        let (shared, topic) = (Arc::clone(&self.shared), topic.clone());
        tokio::spawn(async move {
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
            if let Err(error) = shared.admin.delete_topics(&[&topic], &options).await {
                tracing::debug!(%topic, %error, "reply topic not deleted");
            }
        });
    }
}

/// Builds Kafka sockets: a producer each, a group consumer once the socket subscribes, a reply
/// consumer once it sends a request.
#[derive(Debug, Clone)]
pub struct KafkaSocketProvider {
    config: KafkaConfig,
}

impl KafkaSocketProvider {
    /// A provider for the cluster `config` names.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        Ok(KafkaSocketProvider { config })
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }
}

#[async_trait]
impl SocketProvider for KafkaSocketProvider {
    async fn connect(&self, options: SocketOptions) -> Result<Connection> {
        let config = &self.config;
        let broker = config.broker();
        let client_id = sanitize(&options.client_id_with(config.client_id.as_deref()));
        let group_id = options
            .group
            .clone()
            .or_else(|| config.group_id.clone())
            .unwrap_or_else(|| {
                format!(
                    "spa-dat-{}",
                    sanitize(options.client_name.as_deref().unwrap_or(&options.client_id))
                )
            });
        let mut producer_config = config.client_config(&client_id);
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", config.publish_timeout_ms.to_string());
        for (key, value) in &config.properties {
            producer_config.set(key, value);
        }
        let failures = Arc::new(Failures::default());
        let producer: FutureProducer<SocketContext> = producer_config
            .create_with_context(SocketContext::new(&failures, &broker))
            .map_err(|e| Error::Connect {
                broker: broker.clone(),
                reason: e.to_string(),
            })?;
        let admin: AdminClient<SocketContext> = config
            .client_config(&format!("{client_id}-admin"))
            .create_with_context(SocketContext::new(&failures, &broker))
            .map_err(|e| Error::Connect {
                broker: broker.clone(),
                reason: e.to_string(),
            })?;
        let (sender, inbox) = Inbox::channel(options.inbox_capacity);
        let shared = Arc::new(Shared {
            config: config.clone(),
            broker: broker.clone(),
            replies: Arc::new(Replies::new(&client_id, RequestMultiplexer::new())),
            client_id,
            group_id,
            producer,
            admin,
            failures,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            inbox: Mutex::new(Some(sender)),
            consumer: Mutex::new(None),
            topics: Mutex::new(BTreeSet::new()),
            existing_topics: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(Vec::new()),
            reply_consumer: tokio::sync::OnceCell::new(),
            closed: AtomicBool::new(false),
        });
        // A consumer app's group consumer starts now and the reachability check below runs on
        // it, so it opens that consumer's connection; opened cold after it, the first record
        // came 55 ms later. Other sockets check on the producer.
        let initial_topics = options.initial_topics(&config.default_subscription_topics);
        let consumer = if initial_topics.is_empty() {
            None
        } else {
            Some(shared.consumer()?)
        };
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let (producer, failures) = (shared.producer.clone(), Arc::clone(&shared.failures));
        let probed = tokio::task::spawn_blocking(move || match consumer {
            Some(consumer) => existing_topics(consumer.client(), &failures, timeout),
            None => existing_topics(producer.client(), &failures, timeout),
        })
        .await;
        let failure = match probed {
            Ok(Ok(topics)) => {
                *lock(&shared.existing_topics) = topics;
                None
            }
            Ok(Err(reason)) => Some(reason),
            Err(join_error) => Some(join_error.to_string()),
        };
        let socket = KafkaSocket { shared };
        if let Some(reason) = failure {
            socket.close().await?;
            return Err(Error::Connect { broker, reason });
        }
        super::subscribe_initial(socket, inbox, &options, &config.default_subscription_topics).await
    }

    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider> {
        Arc::new(KafkaSocketProvider {
            config: self.config.overwrite_config(topics),
        })
    }

    fn default_topics(&self) -> &[String] {
        &self.config.default_subscription_topics
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wildcards: false,
            consumer_groups: true,
            ordered_per_publisher: self.config.topic_partitions == 1,
            ordered_per_partition: true,
            subscribe_is_synchronous: false,
            headers: true,
        }
    }

    fn describe(&self) -> String {
        self.config.broker()
    }
}
