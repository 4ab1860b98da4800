//! [`Config`], the whole configuration of a distributed application: from TOML, a file or the
//! environment (read once, where `DistributedApplication` builds it). At the crate root.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SocketConfig;
use super::{
    ENV_CONFIG_FILE, ENV_DEAD_LETTER_TOPIC, ENV_HEALTH_ADDR, ENV_METRICS_ADDR,
    ENV_REQUEST_TIMEOUT_MS, ENV_SHUTDOWN_GRACE_MS, ENV_URL,
};
use crate::error::{Error, Result};
use crate::socket::DEFAULT_REQUEST_TIMEOUT;
use crate::url::check_duration_ms;

/// The whole configuration of a [`crate::DistributedApplication`].
///
/// # Examples
///
/// ```toml
/// request_timeout_ms = 5000
/// shutdown_grace_ms = 10000
/// dead_letter_topic = "dead-letters"
///
/// [bus]
/// transport = "memory"
/// bus = "default"
/// ```
///
/// Read from a file ([`Config::from_file`]), the environment ([`Config::from_env`]) or text:
///
/// ```
/// use spa_dat::{Config, DistributedApplication};
///
/// let config = Config::from_toml(r#"
///     request_timeout_ms = 5000
///     dead_letter_topic = "dead-letters"
///
///     [bus]
///     transport = "memory"
///     bus = "default"
/// "#)?;
/// assert_eq!(config.request_timeout().as_secs(), 5);
/// let app = DistributedApplication::new().config(config); // instead of the environment
/// # let _ = app;
/// # Ok::<(), spa_dat::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The default bus for every application.
    pub bus: SocketConfig,
    /// How long `request` waits for a reply by default, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long in-flight handlers may run on after shutdown was requested, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Where consumers forward messages they cannot decode or whose handler failed. `None`:
    /// such messages are logged and skipped.
    pub dead_letter_topic: Option<String>,
    /// `host:port` to serve Prometheus metrics on (`/metrics`; feature `prometheus`). `None`:
    /// no endpoint.
    pub metrics_addr: Option<String>,
    /// `host:port` to serve the health probes on (`/health/live`, `/health/ready`; feature
    /// `probes`). `None`: no probes. The same address as `metrics_addr`: one server for both.
    pub health_addr: Option<String>,
    /// How long the HTTP endpoints (probes, metrics) wait for a request's whole header, from
    /// a connection's start and between requests on a kept-alive one, before closing it, in
    /// milliseconds.
    pub http_timeout_ms: u64,
    /// How many connections each HTTP endpoint serves at once; more wait in the kernel's
    /// accept queue, holding no file descriptor of the process.
    pub http_max_connections: usize,
}

/// The in-process bus, 30 s request timeout, 10 s shutdown grace, no dead-letter topic, no
/// HTTP endpoints (a 5 s header timeout and 64 connections each when configured).
impl Default for Config {
    fn default() -> Self {
        Config {
            bus: SocketConfig::default(),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT.as_millis() as u64,
            shutdown_grace_ms: 10_000,
            dead_letter_topic: None,
            metrics_addr: None,
            health_addr: None,
            http_timeout_ms: 5_000,
            http_max_connections: 64,
        }
    }
}

impl Config {
    /// Parses a TOML document and checks its values.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::config::SocketConfig;
    /// use spa_dat::{Config, Error};
    ///
    /// let config = Config::from_toml("shutdown_grace_ms = 2000\n[bus]\ntransport = \"memory\"")?;
    /// assert_eq!(config.shutdown_grace().as_millis(), 2000);
    /// assert_eq!(config.bus, SocketConfig::default());
    ///
    /// // Errors say where, and name the key.
    /// let error = Config::from_toml("request_timeout_ms = \"soon\"").unwrap_err();
    /// assert!(matches!(&error, Error::Config(text) if text.contains("request_timeout_ms")));
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would only fail later, naming the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::Config;
    ///
    /// let mut config = Config::default();
    /// assert!(config.validate().is_ok());
    /// config.health_addr = Some("not an address".into());
    /// let error = config.validate().unwrap_err();
    /// assert!(error.to_string().contains("health_addr"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_duration_ms("request_timeout_ms", self.request_timeout_ms, 1)?;
        check_duration_ms("shutdown_grace_ms", self.shutdown_grace_ms, 0)?;
        check_duration_ms("http_timeout_ms", self.http_timeout_ms, 1)?;
        if self.http_max_connections == 0 {
            return Err(Error::config(
                "`http_max_connections` = 0: the HTTP endpoints could serve no one",
            ));
        }
        if let Some(addr) = &self.metrics_addr {
            if cfg!(not(feature = "prometheus")) {
                return Err(Error::config(format!(
                    "metrics_addr = `{addr}`, but spa-dat was built without the `prometheus` feature"
                )));
            }
            addr.parse::<std::net::SocketAddr>().map_err(|e| {
                Error::config(format!("metrics_addr `{addr}` is not host:port: {e}"))
            })?;
        }
        if let Some(addr) = &self.health_addr {
            if cfg!(not(feature = "probes")) {
                return Err(Error::config(format!(
                    "health_addr = `{addr}`, but spa-dat was built without the `probes` feature"
                )));
            }
            addr.parse::<std::net::SocketAddr>().map_err(|e| {
                Error::config(format!("health_addr `{addr}` is not host:port: {e}"))
            })?;
        }
        self.bus.validate()
    }

    /// Reads a TOML file.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::Config;
    ///
    /// let path = std::env::temp_dir().join("spa-dat-doc-config.toml");
    /// std::fs::write(&path, "request_timeout_ms = 1500\n")?;
    /// let config = Config::from_file(&path)?;
    /// assert_eq!(config.request_timeout_ms, 1500);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    /// The configuration the environment describes: the file named by `SPA_DAT_CONFIG` (if
    /// any), then `SPA_DAT_URL`, `SPA_DAT_REQUEST_TIMEOUT_MS`, `SPA_DAT_SHUTDOWN_GRACE_MS` and
    /// `SPA_DAT_DEAD_LETTER_TOPIC` on top. Nothing set: the in-process bus.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use spa_dat::config::{ENV_REQUEST_TIMEOUT_MS, ENV_URL};
    /// use spa_dat::Config;
    ///
    /// // e.g. SPA_DAT_URL=mqtt://broker:1883 SPA_DAT_REQUEST_TIMEOUT_MS=5000 ./service
    /// let config = Config::from_env()?;
    /// println!("bus from {ENV_URL}: {:?}", config.bus);
    /// println!("{ENV_REQUEST_TIMEOUT_MS}: {:?}", config.request_timeout());
    /// # Ok::<(), spa_dat::Error>(())
    /// ```
    pub fn from_env() -> Result<Self> {
        let mut config = match std::env::var_os(ENV_CONFIG_FILE) {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        if let Some(url) = env_var(ENV_URL)? {
            config.bus = SocketConfig::from_url(&url)?;
        }
        if let Some(ms) = env_var(ENV_REQUEST_TIMEOUT_MS)? {
            config.request_timeout_ms = parse_ms(ENV_REQUEST_TIMEOUT_MS, &ms)?;
        }
        if let Some(ms) = env_var(ENV_SHUTDOWN_GRACE_MS)? {
            config.shutdown_grace_ms = parse_ms(ENV_SHUTDOWN_GRACE_MS, &ms)?;
        }
        if let Some(topic) = env_var(ENV_DEAD_LETTER_TOPIC)? {
            config.dead_letter_topic = Some(topic);
        }
        if let Some(addr) = env_var(ENV_METRICS_ADDR)? {
            config.metrics_addr = Some(addr);
        }
        if let Some(addr) = env_var(ENV_HEALTH_ADDR)? {
            config.health_addr = Some(addr);
        }
        config.validate()?;
        Ok(config)
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// A TOML error as spa-dat shows it: where (line, column, the key or table there) and what,
/// built from the parts of `error`, never from the text: toml's own `Display` quotes the
/// offending line (`password = s3cret` unquoted is a syntax error showing the password), and
/// serde's messages quote values (`invalid type: string "s3cret", expected u64`).
fn toml_error(text: &str, error: &toml::de::Error) -> Error {
    let mut place = String::new();
    let mut secret_key = false;
    if let Some(start) = error.span().map(|span| span.start.min(text.len())) {
        if let Some(before) = text.get(..start) {
            let line_start = before.rfind('\n').map_or(0, |at| at + 1);
            let line = before.matches('\n').count() + 1;
            let column = before[line_start..].chars().count() + 1;
            place = format!(" at line {line}, column {column}");
            let line_text = text[line_start..].lines().next().unwrap_or_default().trim();
            if let Some((name, secret)) = key_or_table(line_text) {
                place.push_str(&format!(" ({name})"));
                secret_key = secret;
            }
        }
    }
    Error::config(format!(
        "TOML{place}: {}",
        toml_problem(error.message(), secret_key)
    ))
}

/// The key (`key `password``) or table header (`table `[bus]``) a line of TOML starts with,
/// and whether it names a secret; `None` when the line is neither (its text is not shown).
pub(super) fn key_or_table(line: &str) -> Option<(String, bool)> {
    let is_name = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
    };
    if let Some(header) = line.strip_prefix('[') {
        let header = header.trim_start_matches('[');
        let name = header.split(']').next()?.trim();
        return is_name(name).then(|| (format!("table `[{name}]`"), false));
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    is_name(key).then(|| {
        let secret = crate::redact::is_secret_key(&key.replace(['"', '\''], ""));
        (format!("key `{key}`"), secret)
    })
}

/// toml's message without the values serde quotes: `invalid type: string "x", expected u64`
/// becomes `invalid type: string, expected u64`; an unknown variant of a secret key is hidden.
pub(super) fn toml_problem(message: &str, secret_key: bool) -> String {
    let message = message.trim().replace('\n', "; ");
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (unexpected, expected) = match rest.split_once(", expected ") {
                Some((unexpected, expected)) => (unexpected, Some(expected)),
                None => (rest, None),
            };
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or_default()
                .trim();
            return match expected {
                Some(expected) => format!("{prefix}{kind}, expected {expected}"),
                None => format!("{prefix}{kind}"),
            };
        }
    }
    match message.strip_prefix("unknown variant ") {
        Some(rest) if secret_key => match rest.split_once(", expected ") {
            Some((_, expected)) => format!(
                "unknown variant {}, expected {expected}",
                crate::redact::REDACTED
            ),
            None => format!("unknown variant {}", crate::redact::REDACTED),
        },
        _ => message,
    }
}

fn env_var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::config(format!("{name} is not valid UTF-8")))
        }
    }
}

fn parse_ms(name: &str, value: &str) -> Result<u64> {
    let ms = value
        .trim()
        .parse()
        .map_err(|_| Error::config(format!("{name}=`{value}` is not a number of milliseconds")))?;
    check_duration_ms(name, ms, 0)?;
    Ok(ms)
}
