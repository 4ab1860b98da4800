//! Configuration: which bus, how to reach it, and the runtime's knobs. Everything here is
//! serde-deserializable, so a TOML file or environment variables can describe it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::socket::memory::MemoryConfig;
use crate::socket::{SocketProvider, TransportConfig};
use crate::url::bad_url;

pub(crate) mod settings;

pub(crate) use settings::Config;

/// Which transport a socket uses, and its settings. In TOML, `transport = "memory"` (or
/// `"mqtt"`, `"kafka"`) selects the variant; the other keys are the variant's fields.
///
/// A new transport is one folder under `socket/` (its config implementing
/// [`TransportConfig`] and `from_url`, its socket and provider), one variant here, one arm in
/// [`SocketConfig::transport`] and one row in the scheme table of [`SocketConfig::from_url`].
///
/// # Examples
///
/// ```
/// use spa_dat::config::SocketConfig;
/// use spa_dat::Config;
///
/// let config = Config::from_toml("[bus]\ntransport = \"mqtt\"\nhost = \"broker\"\nport = 1884")?;
/// match &config.bus {
///     SocketConfig::Mqtt(mqtt) => assert_eq!((mqtt.host.as_str(), mqtt.port), ("broker", 1884)),
///     other => panic!("expected MQTT, got {other:?}"),
/// }
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
#[non_exhaustive]
// A configuration, read once per application: its size costs nothing, a Box would cost every
// user who builds or matches one.
#[allow(clippy::large_enum_variant)]
pub enum SocketConfig {
    /// The in-process bus.
    Memory(MemoryConfig),
    /// An MQTT broker (feature `mqtt`).
    #[cfg(feature = "mqtt")]
    Mqtt(crate::socket::mqtt::MqttConfig),
    /// A Kafka cluster (feature `kafka`).
    #[cfg(feature = "kafka")]
    Kafka(crate::socket::kafka::KafkaConfig),
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig::Memory(MemoryConfig::default())
    }
}

/// Reads a bus URL of one scheme.
type UrlReader = fn(&str) -> Result<SocketConfig>;

/// Every bus URL scheme and how to read it: the one table `from_url` and its errors use.
const SCHEMES: &[(&str, UrlReader)] = &[
    ("memory", |url| {
        MemoryConfig::from_url(url).map(SocketConfig::Memory)
    }),
    ("mqtt", mqtt_from_url),
    ("mqtts", mqtt_from_url),
    ("kafka", kafka_from_url),
];

#[cfg(feature = "mqtt")]
fn mqtt_from_url(url: &str) -> Result<SocketConfig> {
    crate::socket::mqtt::MqttConfig::from_url(url).map(SocketConfig::Mqtt)
}

#[cfg(not(feature = "mqtt"))]
fn mqtt_from_url(url: &str) -> Result<SocketConfig> {
    Err(bad_url(url, "spa-dat was built without the `mqtt` feature"))
}

#[cfg(feature = "kafka")]
fn kafka_from_url(url: &str) -> Result<SocketConfig> {
    crate::socket::kafka::KafkaConfig::from_url(url).map(SocketConfig::Kafka)
}

#[cfg(not(feature = "kafka"))]
fn kafka_from_url(url: &str) -> Result<SocketConfig> {
    Err(bad_url(
        url,
        "spa-dat was built without the `kafka` feature",
    ))
}

/// Builds socket providers from configuration (the Python package's `SocketProviderFactory`).
///
/// # Examples
///
/// ```
/// use spa_dat::config::SocketProviderFactory;
/// use spa_dat::DistributedApplication;
///
/// let provider = SocketProviderFactory::from_url("memory://orders")?;
/// assert!(provider.describe().contains("orders"));
/// let app = DistributedApplication::new().socket_provider(provider);
/// # let _ = app;
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SocketProviderFactory;

impl SocketProviderFactory {
    /// The provider `config` describes.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::config::{SocketConfig, SocketProviderFactory};
    ///
    /// let config = SocketConfig::from_url("memory://billing")?;
    /// let provider = SocketProviderFactory::from_config(&config)?;
    /// # let _ = provider;
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_config(config: &SocketConfig) -> Result<Arc<dyn SocketProvider>> {
        config.transport().provider()
    }

    /// The provider a URL describes:
    /// - `memory://` or `memory://name` — the in-process bus (`?topics=a,b` for default topics);
    /// - `mqtt://user:pass@host:1883?client_id=...&qos=1` — MQTT (feature `mqtt`);
    /// - `kafka://host:9092?group=...` — Kafka (feature `kafka`).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::config::SocketProviderFactory;
    ///
    /// // Building a provider connects nothing: sockets connect when applications start.
    /// let memory = SocketProviderFactory::from_url("memory://")?;
    /// let mqtt = SocketProviderFactory::from_url("mqtt://broker.local:1883?qos=1")?;
    /// assert!(SocketProviderFactory::from_url("amqp://rabbit").is_err()); // unknown scheme
    /// # let _ = (memory, mqtt);
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Arc<dyn SocketProvider>> {
        Self::from_config(&SocketConfig::from_url(url)?)
    }
}

impl SocketConfig {
    /// The transport's own settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::config::SocketConfig;
    ///
    /// let config = SocketConfig::from_url("memory://")?;
    /// assert!(config.transport().validate().is_ok());
    /// let provider = config.transport().provider()?;
    /// # let _ = provider;
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn transport(&self) -> &dyn TransportConfig {
        match self {
            SocketConfig::Memory(config) => config,
            #[cfg(feature = "mqtt")]
            SocketConfig::Mqtt(config) => config,
            #[cfg(feature = "kafka")]
            SocketConfig::Kafka(config) => config,
        }
    }

    /// Checks the transport's values (see [`TransportConfig::validate`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::config::SocketConfig;
    /// use spa_dat::socket::mqtt::MqttConfig;
    ///
    /// assert!(SocketConfig::default().validate().is_ok());
    /// let bad = SocketConfig::Mqtt(MqttConfig { qos: 3, ..MqttConfig::default() });
    /// assert!(bad.validate().is_err()); // MQTT has QoS 0, 1 and 2
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.transport().validate()
    }

    /// Parses a bus URL (see [`SocketProviderFactory::from_url`]) into a config.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::config::SocketConfig;
    ///
    /// let config = SocketConfig::from_url("kafka://localhost:9092?group=billing")?;
    /// match config {
    ///     SocketConfig::Kafka(kafka) => assert_eq!(kafka.group_id.as_deref(), Some("billing")),
    ///     other => panic!("expected Kafka, got {other:?}"),
    /// }
    /// let error = SocketConfig::from_url("localhost:9092").unwrap_err(); // no scheme
    /// assert!(error.to_string().contains("kafka://"));
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let expected = || {
            let schemes: Vec<String> = SCHEMES.iter().map(|(s, _)| format!("{s}://")).collect();
            schemes.join(", ")
        };
        let Some((scheme, _)) = url.split_once("://") else {
            return Err(bad_url(url, format!("expected one of {}", expected())));
        };
        match SCHEMES.iter().find(|(known, _)| *known == scheme) {
            Some((_, parse)) => parse(url),
            None => Err(bad_url(
                url,
                format!("unknown scheme `{scheme}`; expected one of {}", expected()),
            )),
        }
    }
}

/// Environment variable naming a TOML config file.
pub const ENV_CONFIG_FILE: &str = "SPA_DAT_CONFIG";
/// Environment variable holding a bus URL; overrides the file's `[bus]`.
pub const ENV_URL: &str = "SPA_DAT_URL";
/// Environment variable overriding `request_timeout_ms`.
pub const ENV_REQUEST_TIMEOUT_MS: &str = "SPA_DAT_REQUEST_TIMEOUT_MS";
/// Environment variable overriding `shutdown_grace_ms`.
pub const ENV_SHUTDOWN_GRACE_MS: &str = "SPA_DAT_SHUTDOWN_GRACE_MS";
/// Environment variable overriding `dead_letter_topic`.
pub const ENV_DEAD_LETTER_TOPIC: &str = "SPA_DAT_DEAD_LETTER_TOPIC";
/// Environment variable overriding `metrics_addr`.
pub const ENV_METRICS_ADDR: &str = "SPA_DAT_METRICS_ADDR";
/// Environment variable: write the AsyncAPI document to this file (`-`: standard output) and
/// exit instead of running (see [`crate::DistributedApplication::asyncapi`]).
pub const ENV_ASYNCAPI: &str = "SPA_DAT_ASYNCAPI";
/// Environment variable: check the configuration, placeholders, connections and access, and
/// exit, instead of running (`SPA_DAT_CHECK=1`; see [`crate::DistributedApplication::check`]).
pub const ENV_CHECK: &str = "SPA_DAT_CHECK";
/// Environment variable overriding `health_addr`.
pub const ENV_HEALTH_ADDR: &str = "SPA_DAT_HEALTH_ADDR";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::settings::*;
    use super::*;

    #[test]
    #[allow(irrefutable_let_patterns)] // refutable once a broker transport is compiled in
    fn memory_urls() {
        assert_eq!(
            SocketConfig::from_url("memory://").ok(),
            Some(SocketConfig::default())
        );
        let SocketConfig::Memory(named) =
            SocketConfig::from_url("memory://plant?topics=a,b/+").expect("parses")
        else {
            panic!("not memory")
        };
        assert_eq!(named.bus, "plant");
        assert_eq!(named.default_subscription_topics, ["a", "b/+"]);
        let err = SocketConfig::from_url("memory://x?nope=1").expect_err("rejects");
        assert!(err.to_string().contains("`nope`"), "{err}");
        let err = SocketConfig::from_url("amqp://x").expect_err("rejects");
        assert!(err.to_string().contains("unknown scheme"), "{err}");
        assert!(
            err.to_string()
                .contains("memory://, mqtt://, mqtts://, kafka://"),
            "every scheme of the one table, built in or not: {err}"
        );
    }

    #[test]
    fn toml_config() {
        let config = Config::from_toml(
            "request_timeout_ms = 250\n[bus]\ntransport = \"memory\"\nbus = \"x\"\n",
        )
        .expect("parses");
        assert_eq!(config.request_timeout(), Duration::from_millis(250));
        assert_eq!(config.shutdown_grace_ms, 10_000);
        let err = Config::from_toml("request_timeout = 1").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = Config::from_toml("[bus]\ntransport = \"carrier-pigeon\"\n").expect_err("bad");
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn toml_errors_say_where_and_what_without_values() {
        let err = Config::from_toml("\n\nrequest_timeout_ms = \"soon\"\n").expect_err("type");
        assert_eq!(
            err.to_string(),
            "invalid configuration: TOML at line 3, column 22 (key `request_timeout_ms`): invalid type: string, expected u64"
        );
        let err = Config::from_toml("[bus]\ntransport = \"memory\"\nbus = 5\n").expect_err("type");
        assert!(
            err.to_string().contains("line 1, column 1 (table `[bus]`)"),
            "{err}"
        );
        assert_eq!(
            toml_problem("unknown variant `hunter2`, expected `a` or `b`", true),
            "unknown variant ***, expected `a` or `b`"
        );
        assert_eq!(
            key_or_table("hunter2"),
            None,
            "a line that is no key is not shown"
        );
    }
}
