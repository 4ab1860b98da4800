//! The Kafka transport's settings, from TOML or a `kafka://` URL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::redact::{is_secret_key, REDACTED};
use crate::url::{
    bad_url, check_duration_ms, parse_bool, query_pairs, split_list, unknown_parameter, url_number,
};

/// Configuration of the Kafka transport (the Python package's `KafkaConfig`, extended).
/// `Debug` shows secret properties (`sasl.password`, `*.secret`, …) as `***`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
/// use spa_dat::DistributedApplication;
///
/// let mut config = KafkaConfig::new("kafka-1:9092,kafka-2:9092");
/// config.group_id = Some("billing".into());
/// config.properties.insert("security.protocol".into(), "SASL_SSL".into());
/// config.properties.insert("sasl.password".into(), "s3cret".into());
/// assert!(!format!("{config:?}").contains("s3cret"));
/// let provider = KafkaSocketProvider::new(config)?; // connects nothing yet
/// let app = DistributedApplication::new().socket_provider(Arc::new(provider));
/// # let _ = app;
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// How messages are written and read: in the spa-dat envelope (`envelope`, the default:
    /// what Python spa-dat 0.4.0 speaks) or as bare payloads with their metadata in headers
    /// (`raw`: what FastStream and plain clients speak). See [`crate::socket::WireFormat`].
    pub wire: crate::socket::WireFormat,
    /// Consumer group of every socket; default: `spa-dat-{application name}`.
    pub group_id: Option<String>,
    /// A bus-wide client id, used as a prefix: each socket is `{client_id}-{application}`.
    /// Unset: the application's client id (its name plus a random suffix).
    pub client_id: Option<String>,
    /// Topics a socket subscribes to when its application names none.
    pub default_subscription_topics: Vec<String>,
    /// Create subscription topics that do not exist.
    pub create_topics: bool,
    /// Partitions of topics spa-dat creates.
    pub topic_partitions: i32,
    /// Replication factor of topics spa-dat creates.
    pub topic_replication: i32,
    /// How long connecting (the first metadata request) may take.
    pub connect_timeout_ms: u64,
    /// How long `publish` waits for the broker's acknowledgement.
    pub publish_timeout_ms: u64,
    /// What consumers read of transactional producers' records: everything written
    /// (`read_uncommitted`, the default: the Python package's behaviour) or only committed
    /// transactions (`read_committed`: what a reader of an exactly-once pipeline needs). A
    /// transactional consumer always reads `read_committed`.
    pub isolation: Isolation,
    /// How often a transactional socket commits its transaction: the output and offsets of
    /// every message settled since the last commit go in one (see
    /// [`crate::Application::transactional`]). Shorter: lower latency, more commits.
    pub transaction_interval_ms: u64,
    /// librdkafka properties passed through as they are (SASL, SSL, tuning), e.g.
    /// `"security.protocol" = "SASL_SSL"`. They override spa-dat's own settings, except the
    /// few its code relies on (a group consumer commits offsets itself: its
    /// `enable.auto.commit` stays `false`).
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
            .field("wire", &self.wire)
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
            .field("isolation", &self.isolation)
            .field("transaction_interval_ms", &self.transaction_interval_ms)
            .field("properties", &properties)
            .finish()
    }
}

/// A cluster on `localhost:9092`; missing topics created with 1 partition and replication 1;
/// 10 s to connect, 30 s for an acknowledgement.
impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "localhost:9092".to_owned(),
            wire: crate::socket::WireFormat::Envelope,
            group_id: None,
            client_id: None,
            default_subscription_topics: Vec::new(),
            create_topics: true,
            topic_partitions: 1,
            topic_replication: 1,
            connect_timeout_ms: 10_000,
            publish_timeout_ms: 30_000,
            isolation: Isolation::ReadUncommitted,
            transaction_interval_ms: 100,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// A config for `bootstrap_servers` with every other setting at its default.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::kafka::KafkaConfig;
    ///
    /// let config = KafkaConfig::new("localhost:9092");
    /// assert_eq!(config.broker(), "kafka://localhost:9092");
    /// ```
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            ..KafkaConfig::default()
        }
    }

    /// Parses `kafka://host:9092[,host2:9092]?group=...&client_id=...&topics=a,b&partitions=4`;
    /// parameters with a dot (`security.protocol=SSL`) are librdkafka properties.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::kafka::KafkaConfig;
    ///
    /// let config = KafkaConfig::from_url("kafka://k1:9092,k2:9092?group=billing&security.protocol=SSL")?;
    /// assert_eq!(config.bootstrap_servers, "k1:9092,k2:9092");
    /// assert_eq!(config.group_id.as_deref(), Some("billing"));
    /// assert_eq!(config.properties.get("security.protocol").map(String::as_str), Some("SSL"));
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad_url(url, "not a kafka:// URL"))?;
        let (servers, _) = rest.split_once('?').unwrap_or((rest, ""));
        let servers = servers.trim_end_matches('/');
        if servers.is_empty() {
            return Err(bad_url(url, "no bootstrap server"));
        }
        if servers.contains('@') {
            return Err(bad_url(
                url,
                "a kafka:// URL takes no user:password@ (set sasl.username and sasl.password; percent-encode `?`, `&`, `#` and `@` in them)",
            ));
        }
        let mut config = KafkaConfig::new(servers);
        // The host list is not a URL authority (commas): the query is read on its own.
        for (key, value) in query_pairs(url, rest.split_once('?').map(|(_, query)| query))? {
            match key.as_str() {
                "group" | "group_id" => config.group_id = Some(value),
                "client_id" => config.client_id = Some(value),
                "wire" => config.wire = value.parse().map_err(|e: String| bad_url(url, e))?,
                "topics" => config.default_subscription_topics = split_list(&value),
                "partitions" => config.topic_partitions = url_number(url, &key, &value)?,
                "replication" => config.topic_replication = url_number(url, &key, &value)?,
                "create_topics" => config.create_topics = parse_bool(url, &key, &value)?,
                "connect_timeout_ms" => config.connect_timeout_ms = url_number(url, &key, &value)?,
                "publish_timeout_ms" => config.publish_timeout_ms = url_number(url, &key, &value)?,
                "isolation" => {
                    config.isolation = value.parse().map_err(|e: String| bad_url(url, e))?
                }
                "transaction_interval_ms" => {
                    config.transaction_interval_ms = url_number(url, &key, &value)?
                }
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
                            "wire",
                            "topics",
                            "partitions",
                            "replication",
                            "create_topics",
                            "connect_timeout_ms",
                            "publish_timeout_ms",
                            "isolation",
                            "transaction_interval_ms",
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
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::kafka::KafkaConfig;
    ///
    /// assert!(KafkaConfig::new("localhost:9092").validate().is_ok());
    /// let bad = KafkaConfig { topic_partitions: 0, ..KafkaConfig::new("localhost:9092") };
    /// assert!(bad.validate().is_err());
    /// ```
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
        check_duration_ms("transaction_interval_ms", self.transaction_interval_ms, 1)?;
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
}

/// What a Kafka consumer reads of transactional producers' records (librdkafka's
/// `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Every record written, also of transactions still open or aborted.
    #[default]
    ReadUncommitted,
    /// Only records of committed transactions (and records written outside transactions).
    ReadCommitted,
}

impl Isolation {
    /// librdkafka's name of it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "read_uncommitted" => Ok(Isolation::ReadUncommitted),
            "read_committed" => Ok(Isolation::ReadCommitted),
            other => Err(format!(
                "isolation is `read_uncommitted` or `read_committed`, not `{other}`"
            )),
        }
    }
}
