//! spa-dat's metrics, through the `metrics` facade: nothing is recorded until a recorder is
//! installed — spa-dat installs a Prometheus exporter when `metrics_addr` is configured
//! (feature `prometheus`), or an application installs its own.
//!
//! Names follow the OpenTelemetry messaging conventions (v1.41) mapped to Prometheus (dots to
//! underscores, `_total` on counters, the unit in histogram names); spa-dat's own are
//! `spa_*`. Labels: `spa_app`, `messaging_system`, `messaging_destination_name` (the topic; on
//! the consumer side the wildcard subscription that matched it, such as `dev/+/t`; at most
//! [`DESTINATION_LABEL_CAP`] values per family, the rest `_other`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Histogram};

/// Messages published (`messaging.client.sent.messages`).
pub const SENT: &str = "messaging_client_sent_messages_total";
/// Messages handled, whatever the outcome (`messaging.client.consumed.messages`).
pub const CONSUMED: &str = "messaging_client_consumed_messages_total";
/// How long handling a message took, retries included (`messaging.process.duration`).
pub const PROCESS_DURATION: &str = "messaging_process_duration_seconds";
/// Handler calls that failed (error, panic or timeout).
pub const FAILED: &str = "spa_messages_failed_total";
/// Handler calls made again after a failure.
pub const RETRIED: &str = "spa_messages_retried_total";
/// Messages forwarded to the dead-letter topic.
pub const DEAD_LETTERED: &str = "spa_messages_dead_lettered_total";
/// Messages skipped as bad input (undecodable, a payload the handler cannot take, rejected).
pub const SKIPPED: &str = "spa_messages_skipped_total";
/// Broker connections re-established after a loss.
pub const RECONNECTS: &str = "spa_reconnects_total";
/// Kafka: records read from a partition and not yet committed (in flight, or finished above
/// an unfinished one); what a crash now would deliver again, at most.
pub const KAFKA_UNCOMMITTED: &str = "spa_kafka_uncommitted_records";
/// Kafka: records finished above the lowest unfinished one, kept in the commit metadata.
pub const KAFKA_FINISHED_ABOVE_COMMIT: &str = "spa_kafka_finished_above_commit";
/// Kafka: bytes of the finished-offset map in a partition's last commit metadata (spa-dat
/// writes at most 4,000; Kafka keeps 4,096 by default). Near the limit: what finished above
/// the part that fits is handled again after a restart.
pub const KAFKA_COMMIT_METADATA_BYTES: &str = "spa_kafka_commit_metadata_bytes";

/// Kafka: records between a partition's end (high watermark) and the group's committed
/// offset, from librdkafka's statistics (every second).
pub const KAFKA_CONSUMER_LAG: &str = "spa_kafka_consumer_lag";
/// Messages a consumer took from its inbox and has not finished (handler running, retrying,
/// or waiting for a dead-letter publish).
pub const IN_FLIGHT: &str = "spa_messages_in_flight";
/// Messages delivered by the transport and waiting in the consumer's inbox.
pub const BUFFERED: &str = "spa_messages_buffered";
/// 1 while an application's socket works — connected and subscribed (MQTT, memory), its
/// partitions assigned and its brokers reachable (Kafka) — else 0.
pub const CONNECTION_UP: &str = "spa_connection_up";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Records spa-dat's metrics from now on, into whatever recorder the `metrics` crate has
/// (call it after installing your own; spa-dat calls it when it serves Prometheus). Until
/// then the per-message path does not even read the clock for them.
///
/// # Examples
///
/// ```
/// // Install a recorder first — your own through the `metrics` crate, or let spa-dat serve
/// // Prometheus with `metrics_addr` in its Config (it then calls this itself).
/// spa_dat::metrics::enable();
/// assert!(spa_dat::metrics::enabled());
///
/// // What spa-dat records, e.g. to declare it to an exporter:
/// assert!(spa_dat::metrics::ALL.contains(&spa_dat::metrics::CONSUMED));
/// ```
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Every metric spa-dat records, for documentation and for exporters that want them declared.
pub const ALL: &[&str] = &[
    SENT,
    CONSUMED,
    PROCESS_DURATION,
    FAILED,
    RETRIED,
    DEAD_LETTERED,
    SKIPPED,
    RECONNECTS,
    KAFKA_UNCOMMITTED,
    KAFKA_FINISHED_ABOVE_COMMIT,
    KAFKA_COMMIT_METADATA_BYTES,
    KAFKA_CONSUMER_LAG,
    IN_FLIGHT,
    BUFFERED,
    CONNECTION_UP,
];

/// The labels of one application's series on one topic.
fn topic_labels(app: &str, system: &'static str, topic: &str) -> [(&'static str, String); 3] {
    [
        ("spa_app", app.to_owned()),
        ("messaging_system", system.to_owned()),
        ("messaging_destination_name", topic.to_owned()),
    ]
}

/// The most distinct `messaging_destination_name` values a metric family holds: beyond them a
/// new destination is counted as [`OTHER_DESTINATION`] (logged at WARN once per family), so a
/// registry and every scrape stay bounded whatever the topics (replies to outside-chosen
/// response topics, a wildcard's topics where no subscription is known).
pub const DESTINATION_LABEL_CAP: usize = 1_000;
/// The longest destination kept as a label value, in bytes; longer ones count as `_other`.
const DESTINATION_LABEL_BYTES: usize = 256;
/// The destination label of what is beyond [`DESTINATION_LABEL_CAP`].
pub const OTHER_DESTINATION: &str = "_other";
/// The destination label of replies: their response topics are chosen per request by the
/// requester (OpenTelemetry's temporary destinations), so as label values they would be
/// unbounded.
pub const REPLY_DESTINATION: &str = "_reply";

/// The destination label values one metric family has handed out, up to the cap.
struct DestinationLabels {
    family: &'static str,
    known: Mutex<std::collections::HashSet<Arc<str>>>,
    warned: AtomicBool,
}

impl DestinationLabels {
    fn new(family: &'static str) -> Self {
        DestinationLabels {
            family,
            known: Mutex::new(std::collections::HashSet::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// `destination` if it is known or there is room for it, else [`OTHER_DESTINATION`].
    fn label<'a>(&self, destination: &'a str) -> &'a str {
        // Outside clients choose reply topics: a cap on values alone would still hold up to
        // 1,000 topics of 64 KiB each, in memory and in every scrape.
        if destination.len() > DESTINATION_LABEL_BYTES {
            return OTHER_DESTINATION;
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.contains(destination) {
            return destination;
        }
        if known.len() < DESTINATION_LABEL_CAP {
            known.insert(Arc::from(destination));
            return destination;
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                family = self.family,
                cap = DESTINATION_LABEL_CAP,
                "more distinct destinations than the metrics keep apart; the rest are counted as `{OTHER_DESTINATION}` (logged once)"
            );
        }
        OTHER_DESTINATION
    }
}

/// The destination labels of the consumer families (consumed, duration, failed, retried,
/// dead-lettered, skipped: registered together, so one set) and of the sent family.
fn consumer_destinations() -> &'static DestinationLabels {
    static LABELS: std::sync::OnceLock<DestinationLabels> = std::sync::OnceLock::new();
    LABELS.get_or_init(|| DestinationLabels::new(CONSUMED))
}

fn sent_destinations() -> &'static DestinationLabels {
    static LABELS: std::sync::OnceLock<DestinationLabels> = std::sync::OnceLock::new();
    LABELS.get_or_init(|| DestinationLabels::new(SENT))
}

/// A consumer's metric handles for one topic: registered once, then each record is an atomic
/// add (the per-message path never builds a label set). Registered only by consumers, so a
/// producer exports no zero "consumed" series that would read as a stalled consumer.
pub(crate) struct TopicMetrics {
    pub(crate) consumed: Counter,
    pub(crate) duration: Histogram,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) skipped: Counter,
}

impl TopicMetrics {
    fn new(app: &str, system: &'static str, topic: &str) -> Self {
        let labels = topic_labels(app, system, topic);
        TopicMetrics {
            consumed: metrics::counter!(CONSUMED, &labels),
            duration: metrics::histogram!(PROCESS_DURATION, &labels),
            failed: metrics::counter!(FAILED, &labels),
            retried: metrics::counter!(RETRIED, &labels),
            dead_lettered: metrics::counter!(DEAD_LETTERED, &labels),
            skipped: metrics::counter!(SKIPPED, &labels),
        }
    }
}

/// Handles by topic, the latest few kept (messages mostly come in runs on one topic; wildcard
/// subscriptions can bring many).
struct ByTopic<T>(Mutex<Vec<(Arc<str>, Arc<T>)>>);

impl<T> ByTopic<T> {
    fn new() -> Self {
        ByTopic(Mutex::new(Vec::new()))
    }

    fn get(&self, topic: &str, register: impl FnOnce() -> T) -> Arc<T> {
        let mut by_topic = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, handles)) = by_topic
            .iter()
            .rev()
            .find(|(known, _)| std::ptr::eq(known.as_ptr(), topic.as_ptr()) || &**known == topic)
        {
            return Arc::clone(handles);
        }
        let handles = Arc::new(register());
        if by_topic.len() >= 64 {
            by_topic.remove(0);
        }
        by_topic.push((Arc::from(topic), Arc::clone(&handles)));
        handles
    }
}

/// Metric handles by topic for one application: what it sends, what it consumes.
pub(crate) struct AppMetrics {
    app: Arc<str>,
    system: &'static str,
    /// The consumer's subscriptions with a wildcard (`+`, `#`): a topic one of them matches
    /// is labelled with the pattern (OpenTelemetry's `messaging.destination.template`).
    patterns: Vec<String>,
    sent: ByTopic<Counter>,
    consumed: ByTopic<TopicMetrics>,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppMetrics")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl AppMetrics {
    /// The messaging system the application's socket is on.
    pub(crate) fn system(&self) -> &'static str {
        self.system
    }

    pub(crate) fn new(app: Arc<str>, system: &'static str) -> Self {
        AppMetrics {
            app,
            system,
            patterns: Vec::new(),
            sent: ByTopic::new(),
            consumed: ByTopic::new(),
        }
    }

    /// Labels what a consumer subscribed to `subscriptions` receives by the wildcard pattern
    /// that matched it, not by its topic.
    pub(crate) fn subscribed(mut self, subscriptions: &[String]) -> Self {
        self.patterns = subscriptions
            .iter()
            .filter(|s| s.contains(['+', '#']))
            .cloned()
            .collect();
        self
    }

    /// The consumer handles of `topic`: those of the wildcard subscription it matched, else
    /// its own (within [`DESTINATION_LABEL_CAP`]).
    pub(crate) fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        let destination = self
            .patterns
            .iter()
            .find(|pattern| crate::topic::topic_matches(pattern, topic))
            .map_or(topic, String::as_str);
        self.consumed.get(destination, || {
            let label = consumer_destinations().label(destination);
            TopicMetrics::new(&self.app, self.system, label)
        })
    }

    /// The count of messages sent to `topic` (within [`DESTINATION_LABEL_CAP`]).
    pub(crate) fn sent(&self, topic: &str) -> Arc<Counter> {
        self.sent.get(topic, || {
            let label = sent_destinations().label(topic);
            metrics::counter!(SENT, &topic_labels(&self.app, self.system, label))
        })
    }
}

/// A reconnect of `system`'s connection to `broker`.
#[cfg(any(feature = "mqtt", feature = "kafka"))]
pub(crate) fn reconnected(system: &'static str, broker: &str) {
    metrics::counter!(RECONNECTS, "messaging_system" => system, "broker" => broker.to_owned())
        .increment(1);
}

/// A Kafka partition's progress (see [`KAFKA_UNCOMMITTED`]).
#[cfg(feature = "kafka")]
pub(crate) fn kafka_progress(topic: &str, partition: i32, uncommitted: i64, finished_above: usize) {
    let labels = [
        ("messaging_destination_name", topic.to_owned()),
        ("messaging_destination_partition_id", partition.to_string()),
    ];
    metrics::gauge!(KAFKA_UNCOMMITTED, &labels).set(uncommitted as f64);
    metrics::gauge!(KAFKA_FINISHED_ABOVE_COMMIT, &labels).set(finished_above as f64);
}

/// The size of a Kafka partition's commit metadata (see [`KAFKA_COMMIT_METADATA_BYTES`]).
#[cfg(feature = "kafka")]
pub(crate) fn kafka_commit_metadata(topic: &str, partition: i32, bytes: usize) {
    if !enabled() {
        return;
    }
    metrics::gauge!(
        KAFKA_COMMIT_METADATA_BYTES,
        "messaging_destination_name" => topic.to_owned(),
        "messaging_destination_partition_id" => partition.to_string(),
    )
    .set(bytes as f64);
}

/// A Kafka partition's lag (see [`KAFKA_CONSUMER_LAG`]).
#[cfg(feature = "kafka")]
pub(crate) fn kafka_lag(topic: &str, partition: i32, group: &str, lag: i64) {
    metrics::gauge!(
        KAFKA_CONSUMER_LAG,
        "messaging_destination_name" => topic.to_owned(),
        "messaging_destination_partition_id" => partition.to_string(),
        "messaging_consumer_group_name" => group.to_owned(),
    )
    .set(lag as f64);
}

/// The [`CONNECTION_UP`] gauge of one application.
pub(crate) struct ConnectionGauge(metrics::Gauge);

impl ConnectionGauge {
    pub(crate) fn new(app: &str, system: &'static str) -> Self {
        ConnectionGauge(
            metrics::gauge!(CONNECTION_UP, "spa_app" => app.to_owned(), "messaging_system" => system),
        )
    }

    /// Whether the application's socket is connected.
    pub(crate) fn set(&self, up: bool) {
        self.0.set(if up { 1.0 } else { 0.0 });
    }
}

/// A consumer's [`IN_FLIGHT`] and [`BUFFERED`] gauges.
pub(crate) struct ConsumerGauges {
    in_flight: metrics::Gauge,
    buffered: metrics::Gauge,
}

impl ConsumerGauges {
    pub(crate) fn new(app: &str) -> Self {
        ConsumerGauges {
            in_flight: metrics::gauge!(IN_FLIGHT, "spa_app" => app.to_owned()),
            buffered: metrics::gauge!(BUFFERED, "spa_app" => app.to_owned()),
        }
    }

    pub(crate) fn set(&self, in_flight: u64, buffered: usize) {
        self.in_flight.set(in_flight as f64);
        self.buffered.set(buffered as f64);
    }
}

/// The messaging system a bus description (`mqtt://…`) names.
pub(crate) fn system_of(bus: &str) -> &'static str {
    match bus.split_once("://").map(|(scheme, _)| scheme) {
        Some("mqtt" | "mqtts") => "mqtt",
        Some("kafka") => "kafka",
        Some("memory") => "memory",
        _ => "other",
    }
}

/// Histogram buckets for handler durations, in seconds: 100 µs to 30 s.
#[cfg(feature = "prometheus")]
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs a Prometheus recorder for spa-dat's metrics and enables them; the endpoint
/// `metrics_addr` (named in errors) serves its [`render`] output through spa-dat's own HTTP
/// server (`app/http.rs`), which bounds connections as the exporter's listener does not.
///
/// [`render`]: metrics_exporter_prometheus::PrometheusHandle::render
#[cfg(feature = "prometheus")]
pub(crate) fn install_prometheus(
    addr: &str,
) -> crate::error::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PROCESS_DURATION.to_owned()), DURATION_BUCKETS)
        .map_err(|e| crate::error::Error::config(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| {
            crate::error::Error::runtime(format!(
                "cannot serve metrics on {addr}: {e} (another recorder installed)"
            ))
        })?;
    enable();
    Ok(handle)
}

/// How long a handler took, as the histogram takes it.
pub(crate) fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// One message's metrics while it is handled: its topic's handles and when it started.
pub(crate) struct Measure {
    pub(crate) topic: Arc<TopicMetrics>,
    // quanta: two clock reads per message are a visible share of a fast consumer's time with
    // clock_gettime (measured: ~2.6 % of the in-process bench's samples), less with the TSC.
    started: quanta::Instant,
}

impl Measure {
    /// Starts measuring a message on `topic`, if metrics are enabled.
    pub(crate) fn start(metrics: &AppMetrics, topic: &str) -> Option<Self> {
        enabled().then(|| Measure {
            topic: metrics.topic(topic),
            started: quanta::Instant::now(),
        })
    }

    /// The message is done with (acknowledged): consumed, and how long it took.
    pub(crate) fn finished(self) {
        self.topic.consumed.increment(1);
        self.topic.duration.record(seconds(self.started.elapsed()));
    }
}
