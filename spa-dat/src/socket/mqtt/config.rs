//! The MQTT transport's settings, from TOML or an `mqtt://` / `mqtts://` URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, QoS};
use serde::{Deserialize, Serialize};

use super::tls::MqttTls;
use crate::error::{Error, Result};
use crate::redact::redacted_option;
use crate::url::{
    bad_url, check_duration_ms, parse_bool, query_pairs, split_list, unknown_parameter, url_decode,
    url_number,
};

/// Configuration of the MQTT transport (the Python package's `MqttConfig`, extended).
/// `Debug` shows the password as `***`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
/// use spa_dat::DistributedApplication;
///
/// let config = MqttConfig {
///     username: Some("svc".into()),
///     password: Some("s3cret".into()),
///     qos: 1,
///     ..MqttConfig::new("broker.local", 1883)
/// };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// let provider = MqttSocketProvider::new(config)?; // connects nothing yet
/// let app = DistributedApplication::new().socket_provider(Arc::new(provider));
/// # let _ = app;
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The protocol version: MQTT 3.1.1 (the default, as the Python package speaks) or MQTT 5
    /// (headers as user properties, request/reply on response topic and correlation data,
    /// refusals with reason codes). `version = 5` in TOML, `?version=5` in a URL.
    pub version: MqttVersion,
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// How messages are written and read: in the spa-dat envelope (`envelope`, the default:
    /// what Python spa-dat 0.4.0 speaks) or as bare payloads with their metadata in headers
    /// (`raw`: what FastStream and plain clients speak). See [`crate::socket::WireFormat`].
    pub wire: crate::socket::WireFormat,
    /// A bus-wide client id, used as a prefix: each socket is `{client_id}-{application}` (the
    /// application's explicit client id, else its name), the same in every run, so persistent
    /// sessions resume. Unset: the application's client id (its name plus a random suffix).
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep-alive interval in seconds.
    pub keepalive_secs: u64,
    /// QoS of publishes and subscriptions: 0, 1 (default: at least once) or 2.
    pub qos: u8,
    /// Publish with the retain flag.
    pub retain: bool,
    /// `true`: a new session on every connect. `false`: a persistent session, so messages
    /// published while the consumer was away are delivered when it returns (needs a stable
    /// `client_id`). MQTT 5: a clean start, and the session kept `session_expiry_secs`.
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps a persistent session (`clean_session = false`) after
    /// the connection ends, in seconds. Unset: as long as it can (as MQTT 3.1.1 does).
    /// Ignored with a clean session (it ends with the connection) and on MQTT 3.1.1.
    pub session_expiry_secs: Option<u32>,
    /// TLS (rustls); absent = plain TCP.
    pub tls: Option<MqttTls>,
    /// Unacknowledged outgoing publishes at once.
    pub inflight: u16,
    /// Largest packet this client sends, in bytes (a larger publish fails at once, as
    /// refused). By default MQTT's own limit, the same as for incoming packets, so whatever
    /// could arrive can also be forwarded to a dead-letter topic; the broker's limit
    /// (Mosquitto: `message_size_limit`) bounds both. Set lower, a dead letter that does not
    /// fit is forwarded as a summary.
    pub max_packet_size: usize,
    /// Topics a socket subscribes to when its application names none.
    pub default_subscription_topics: Vec<String>,
    /// How long the first connection may take.
    pub connect_timeout_ms: u64,
    /// How long `publish` waits for the broker's acknowledgement.
    pub publish_timeout_ms: u64,
    /// Longest pause between reconnect attempts.
    pub reconnect_max_ms: u64,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("version", &self.version)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("wire", &self.wire)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &redacted_option(&self.password))
            .field("keepalive_secs", &self.keepalive_secs)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("clean_session", &self.clean_session)
            .field("session_expiry_secs", &self.session_expiry_secs)
            .field("tls", &self.tls)
            .field("inflight", &self.inflight)
            .field("max_packet_size", &self.max_packet_size)
            .field(
                "default_subscription_topics",
                &self.default_subscription_topics,
            )
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .finish()
    }
}

/// An MQTT protocol version. In TOML and URLs: `3.1.1` (or `3`, `4`: its protocol level) and
/// `5` (or `5.0`).
///
/// # Examples
///
/// ```
/// use spa_dat::socket::mqtt::{MqttConfig, MqttVersion};
///
/// let config = MqttConfig::from_url("mqtt://broker.local?version=5")?;
/// assert_eq!(config.version, MqttVersion::V5);
/// assert_eq!(MqttConfig::new("broker.local", 1883).version, MqttVersion::V311);
/// assert!(MqttConfig::from_url("mqtt://broker.local?version=6").is_err());
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1: what the Python package speaks; no headers.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

/// `3.1.1` (or `3`, `4`, `311`) or `5` (or `5.0`).
impl std::str::FromStr for MqttVersion {
    /// What is wrong, in words.
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        match value.trim() {
            "3.1.1" | "3" | "4" | "311" => Ok(MqttVersion::V311),
            "5" | "5.0" => Ok(MqttVersion::V5),
            other => Err(format!("MQTT version must be 3.1.1 or 5, got `{other}`")),
        }
    }
}

impl std::fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        })
    }
}

impl Serialize for MqttVersion {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MqttVersion::V311 => serializer.serialize_str("3.1.1"),
            MqttVersion::V5 => serializer.serialize_u8(5),
        }
    }
}

impl<'de> Deserialize<'de> for MqttVersion {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Text(String),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Number(number) => number.to_string(),
            Written::Text(text) => text,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The largest packet MQTT 3.1.1 can carry (a 4-byte remaining length, plus its header).
pub const MQTT_MAX_PACKET_SIZE: usize = 268_435_455 + 5;

/// A broker on `localhost:1883`, QoS 1, clean sessions, packets up to MQTT's limit both ways
/// (the broker's own limit applies), 5 s to connect, 10 s
/// for an acknowledgement, reconnect pauses up to 10 s.
impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            version: MqttVersion::V311,
            host: "localhost".to_owned(),
            port: 1883,
            wire: crate::socket::WireFormat::Envelope,
            client_id: None,
            username: None,
            password: None,
            keepalive_secs: 60,
            qos: 1,
            retain: false,
            clean_session: true,
            session_expiry_secs: None,
            tls: None,
            inflight: 100,
            max_packet_size: MQTT_MAX_PACKET_SIZE,
            default_subscription_topics: Vec::new(),
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 10_000,
            reconnect_max_ms: 10_000,
        }
    }
}

impl MqttConfig {
    /// A config for `host:port` with every other setting at its default.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::mqtt::MqttConfig;
    ///
    /// let config = MqttConfig::new("broker.local", 1883);
    /// assert_eq!(config.broker(), "mqtt://broker.local:1883");
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttConfig {
            host: host.into(),
            port,
            ..MqttConfig::default()
        }
    }

    /// Parses `mqtt://user:pass@host:1883?client_id=...&qos=1&clean_session=false&topics=a,b`
    /// (`mqtts://` for TLS with the system's CA certificates).
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::mqtt::MqttConfig;
    ///
    /// let config = MqttConfig::from_url("mqtts://svc:s3cret@broker.local:8883?qos=1&client_id=billing")?;
    /// assert_eq!((config.host.as_str(), config.port, config.qos), ("broker.local", 8883, 1));
    /// assert_eq!(config.username.as_deref(), Some("svc"));
    /// assert!(config.tls.is_some()); // mqtts://
    /// assert!(MqttConfig::from_url("mqtt://broker?qos=5").is_err());
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = ::url::Url::parse(url).map_err(|e| bad_url(url, e))?;
        let tls = match parsed.scheme() {
            "mqtt" => None,
            "mqtts" => Some(MqttTls::default()),
            other => {
                return Err(Error::config(format!(
                    "`{other}` is not an MQTT URL scheme"
                )))
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad_url(url, "no host"))?;
        // A `/`, `?` or `#` in an unencoded password ends the authority early; what follows
        // would be read as a path or fragment (and the password's start as the port).
        if !matches!(parsed.path(), "" | "/") || parsed.fragment().is_some() {
            return Err(bad_url(
                url,
                "an MQTT URL has no path or fragment (percent-encode `/`, `?`, `#` and `@` in a password)",
            ));
        }
        let mut config = MqttConfig::new(host, parsed.port().unwrap_or(1883));
        config.tls = tls;
        if !parsed.username().is_empty() {
            config.username = Some(url_decode(url, parsed.username())?);
        }
        if let Some(password) = parsed.password() {
            config.password = Some(url_decode(url, password)?);
        }
        for (key, value) in query_pairs(url, parsed.query())? {
            match key.as_str() {
                "client_id" => config.client_id = Some(value),
                "qos" => config.qos = url_number(url, &key, &value)?,
                "keepalive" | "keepalive_secs" => {
                    config.keepalive_secs = url_number(url, &key, &value)?
                }
                "retain" => config.retain = parse_bool(url, &key, &value)?,
                "clean_session" => config.clean_session = parse_bool(url, &key, &value)?,
                "wire" => config.wire = value.parse().map_err(|e: String| bad_url(url, e))?,
                "version" => config.version = value.parse().map_err(|e: String| bad_url(url, e))?,
                "session_expiry_secs" => {
                    config.session_expiry_secs = Some(url_number(url, &key, &value)?)
                }
                "inflight" => config.inflight = url_number(url, &key, &value)?,
                "max_packet_size" => config.max_packet_size = url_number(url, &key, &value)?,
                "topics" => config.default_subscription_topics = split_list(&value),
                "connect_timeout_ms" => config.connect_timeout_ms = url_number(url, &key, &value)?,
                "publish_timeout_ms" => config.publish_timeout_ms = url_number(url, &key, &value)?,
                "reconnect_max_ms" => config.reconnect_max_ms = url_number(url, &key, &value)?,
                "ca_file" | "client_cert_file" | "client_key_file" => {
                    let tls = config
                        .tls
                        .as_mut()
                        .ok_or_else(|| bad_url(url, format!("`{key}` needs TLS: use mqtts://")))?;
                    let path = Some(PathBuf::from(value));
                    match key.as_str() {
                        "ca_file" => tls.ca_file = path,
                        "client_cert_file" => tls.client_cert_file = path,
                        _ => tls.client_key_file = path,
                    }
                }
                other => {
                    return Err(unknown_parameter(
                        url,
                        other,
                        &[
                            "client_id",
                            "qos",
                            "keepalive",
                            "retain",
                            "clean_session",
                            "version",
                            "wire",
                            "session_expiry_secs",
                            "inflight",
                            "max_packet_size",
                            "topics",
                            "connect_timeout_ms",
                            "publish_timeout_ms",
                            "reconnect_max_ms",
                            "ca_file",
                            "client_cert_file",
                            "client_key_file",
                        ],
                    ))
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would only fail later, at connect time.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::socket::mqtt::MqttConfig;
    ///
    /// assert!(MqttConfig::new("broker", 1883).validate().is_ok());
    /// let bad = MqttConfig { qos: 3, ..MqttConfig::new("broker", 1883) };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        qos_of(self.qos)?;
        if self.host.trim().is_empty() {
            return Err(Error::config("MQTT host is empty"));
        }
        if self.inflight == 0 {
            return Err(Error::config("MQTT inflight must be at least 1"));
        }
        // MQTT carries the keep-alive as a 16-bit number of seconds.
        if self.keepalive_secs != 0 && !(5..=u64::from(u16::MAX)).contains(&self.keepalive_secs) {
            return Err(Error::config(format!(
                "MQTT `keepalive_secs` must be 0 (off) or 5 to 65535 seconds, got {}",
                self.keepalive_secs
            )));
        }
        if self.max_packet_size < 64 {
            return Err(Error::config(format!(
                "MQTT `max_packet_size` must be at least 64 bytes, got {}",
                self.max_packet_size
            )));
        }
        check_duration_ms("connect_timeout_ms", self.connect_timeout_ms, 1)?;
        check_duration_ms("publish_timeout_ms", self.publish_timeout_ms, 1)?;
        check_duration_ms("reconnect_max_ms", self.reconnect_max_ms, 1)
    }

    /// `mqtt://host:port` (`mqtts://` with TLS), for logs and errors; `?version=5` on MQTT 5.
    pub fn broker(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        match self.version {
            MqttVersion::V311 => format!("{scheme}://{}:{}", self.host, self.port),
            MqttVersion::V5 => format!("{scheme}://{}:{}?version=5", self.host, self.port),
        }
    }

    /// The rumqttc options for a client with this id (the Python package's
    /// `build_client_config`). Manual acknowledgements are on: the runtime acknowledges a
    /// message after its handler finished.
    pub fn build_client_config(&self, client_id: &str) -> Result<MqttOptions> {
        self.validate()?;
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options
            .set_keep_alive(Duration::from_secs(self.keepalive_secs))
            .set_clean_session(self.clean_session)
            .set_inflight(self.inflight)
            // Incoming: the largest packet MQTT allows. rumqttc drops the connection over a
            // larger one than its limit, losing what the broker sent meanwhile (with a clean
            // session); the broker's own limit (Mosquitto: message_size_limit) bounds it.
            .set_max_packet_size(MQTT_MAX_PACKET_SIZE, self.max_packet_size)
            .set_manual_acks(true);
        if let Some(username) = &self.username {
            options.set_credentials(username.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls.client_config()?)),
            ));
        }
        Ok(options)
    }
}

pub(super) fn qos_of(qos: u8) -> Result<QoS> {
    match qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(Error::config(format!(
            "MQTT qos must be 0, 1 or 2, got {other}"
        ))),
    }
}
