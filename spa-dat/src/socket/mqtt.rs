//! The MQTT transport (feature `mqtt`), on rumqttc.
//!
//! One connection per socket; its event loop is polled by one task that never waits on the
//! application: a consumer's handler runs there as its message arrives until it would wait, and
//! on the consumer's task from then on ([`Inbox::handled_on_arrival`]). Guarantees:
//! - `publish` returns once the broker acknowledged the message (PUBACK at QoS 1, PUBREC at
//!   QoS 2; written to the socket at QoS 0), or fails after `publish_timeout_ms`.
//! - Incoming messages at QoS ≥ 1 are acknowledged only after their handler finished
//!   (manual acks): at-least-once.
//! - On a lost connection: reconnect with exponential backoff and jitter; after a reconnect
//!   without a session on the broker, every subscription is renewed and every publish the
//!   broker never acknowledged is sent again (rumqttc itself drops them).
//! - Consumer groups map to shared subscriptions: `$share/{group}/{filter}`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions,
    Outgoing, Packet, PubAck, PubRec, Publish, QoS, Request, SubAck, Subscribe, SubscribeFilter,
    SubscribeReasonCode, Unsubscribe,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use super::{
    ArrivalSender, Capabilities, Connection, Delivery, Inbox, PendingReply, RequestMultiplexer,
    SocketOptions, SocketProvider, SpaSocket, TopicNames,
};
use crate::config::{
    bad_url, check_duration_ms, parse_bool, query_pairs, split_list, unknown_parameter, url_decode,
    url_number,
};
use crate::error::{Error, Result};
use crate::redact::redacted_option;

/// Configuration of the MQTT transport (the Python package's `MqttConfig`, extended).
/// `Debug` shows the password as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// A bus-wide client id, used as a prefix: each socket is `{client_id}-{application}` (the
    /// application's explicit client id, else its name), the same in every run, so persistent
    /// sessions resume. Unset: the application's client id (its name plus a random suffix).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive interval in seconds.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// QoS of publishes and subscriptions: 0, 1 (default: at least once) or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish with the retain flag.
    #[serde(default)]
    pub retain: bool,
    /// `true`: a new session on every connect. `false`: a persistent session, so messages
    /// published while the consumer was away are delivered when it returns (needs a stable
    /// `client_id`).
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// TLS (rustls); absent = plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTls>,
    /// Unacknowledged outgoing publishes at once.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Largest packet this client sends, in bytes (a larger publish fails at once). Incoming
    /// packets are accepted up to MQTT's own limit: the broker's limit bounds them.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Topics a socket subscribes to when its application names none.
    #[serde(default)]
    pub default_subscription_topics: Vec<String>,
    /// How long the first connection may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long `publish` waits for the broker's acknowledgement.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Longest pause between reconnect attempts.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &redacted_option(&self.password))
            .field("keepalive_secs", &self.keepalive_secs)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("clean_session", &self.clean_session)
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

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file with the CA certificates to trust; default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

fn default_port() -> u16 {
    1883
}
fn default_keepalive() -> u64 {
    60
}
fn default_qos() -> u8 {
    1
}
fn default_true() -> bool {
    true
}
fn default_inflight() -> u16 {
    100
}
/// The largest packet MQTT 3.1.1 can carry (a 4-byte remaining length, plus its header).
const MQTT_MAX_PACKET_SIZE: usize = 268_435_455 + 5;

fn default_max_packet_size() -> usize {
    1024 * 1024
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_publish_timeout_ms() -> u64 {
    10_000
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}

impl MqttConfig {
    /// A config for `host:port` with every other setting at its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttConfig {
            host: host.into(),
            port,
            client_id: None,
            username: None,
            password: None,
            keepalive_secs: default_keepalive(),
            qos: default_qos(),
            retain: false,
            clean_session: true,
            tls: None,
            inflight: default_inflight(),
            max_packet_size: default_max_packet_size(),
            default_subscription_topics: Vec::new(),
            connect_timeout_ms: default_connect_timeout_ms(),
            publish_timeout_ms: default_publish_timeout_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
        }
    }

    /// Parses `mqtt://user:pass@host:1883?client_id=...&qos=1&clean_session=false&topics=a,b`
    /// (`mqtts://` for TLS with the system's CA certificates).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| bad_url(url, e))?;
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
        let mut config = MqttConfig::new(host, parsed.port().unwrap_or(1883));
        config.tls = tls;
        if !parsed.username().is_empty() {
            config.username = Some(url_decode(&parsed, parsed.username())?);
        }
        if let Some(password) = parsed.password() {
            config.password = Some(url_decode(&parsed, password)?);
        }
        for (key, value) in query_pairs(&parsed)? {
            match key.as_str() {
                "client_id" => config.client_id = Some(value),
                "qos" => config.qos = url_number(url, &key, &value)?,
                "keepalive" | "keepalive_secs" => {
                    config.keepalive_secs = url_number(url, &key, &value)?
                }
                "retain" => config.retain = parse_bool(url, &key, &value)?,
                "clean_session" => config.clean_session = parse_bool(url, &key, &value)?,
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

    /// `host:port`, for logs and errors.
    pub fn broker(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
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

fn qos_of(qos: u8) -> Result<QoS> {
    match qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(Error::config(format!(
            "MQTT qos must be 0, 1 or 2, got {other}"
        ))),
    }
}

impl MqttTls {
    fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_pem_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(Error::config(
                        "TLS: no system CA certificates found; set tls.ca_file",
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_pem_certs(cert)?;
                use rustls_pki_types::pem::PemObject;
                let key_der = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Error::config(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| Error::config(format!("TLS client certificate: {e}")))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(Error::config(
                "TLS: client_cert_file and client_key_file go together",
            )),
        }
    }
}

fn read_pem_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Publish,
    Subscribe,
    Unsubscribe,
}

/// A request handed to rumqttc, waiting for its packet to be sent and then acknowledged.
struct Pending {
    kind: Kind,
    /// `None` for the transport's own requests (re-subscriptions after a reconnect).
    waiter: Option<oneshot::Sender<Result<()>>>,
    /// What to send again if the broker lost it.
    request: Request,
}

impl Pending {
    fn resolve(self, result: Result<()>) {
        if let Some(waiter) = self.waiter {
            let _ = waiter.send(result);
        }
    }
}

/// Where each request is: handed to rumqttc but not yet sent (`unsent`, in order), or sent
/// and waiting for the broker's acknowledgement (`unacked`, by packet id).
#[derive(Default)]
struct Ledger {
    unsent: VecDeque<Pending>,
    unacked: HashMap<(Kind, u16), Pending>,
}

/// Acknowledgements of received messages on their way to the broker, which must get them in the
/// order the messages arrived (MQTT 3.1.1 §4.6; the consumer handles them in that order).
///
/// The connection task writes waiting acknowledgements itself, straight into the connection,
/// before each poll of the event loop, and flushes them once before the poll would wait on the
/// network. Handing each to rumqttc instead would cost a wake-up and a write per message
/// (measured: 2.4× the raw client's CPU per message at QoS 1), and its `pending` queue, served
/// one request per turn while reads bring up to ten messages, fell tens of thousands of
/// acknowledgements behind a fast stream. Only an acknowledgement made while the task waits in
/// a poll travels through rumqttc's request channel, to wake it; the others wait until rumqttc
/// wrote that one — none may overtake it.
struct AckPath {
    client: AsyncClient,
    queue: Mutex<AckQueue>,
    /// Counts connection losses: an acknowledgement belongs to the connection its message
    /// came on.
    connection: AtomicU64,
    /// The connection task waits in a poll: an acknowledgement must wake it.
    polling: AtomicBool,
}

#[derive(Default)]
struct AckQueue {
    waiting: VecDeque<Ack>,
    /// Packet id of the acknowledgement in the request channel.
    in_channel: Option<u16>,
}

/// The acknowledgement a received QoS 1 (PUBACK) or QoS 2 (PUBREC) message needs.
#[derive(Debug, Clone, Copy)]
struct Ack {
    pkid: u16,
    qos: QoS,
    /// The connection the message came on (see [`AckPath::ack_for`]).
    connection: u64,
}

impl Ack {
    fn packet(self) -> Packet {
        match self.qos {
            QoS::ExactlyOnce => Packet::PubRec(PubRec::new(self.pkid)),
            _ => Packet::PubAck(PubAck::new(self.pkid)),
        }
    }

    /// What rumqttc's `try_ack` takes: a publish carrying the packet id and QoS.
    fn as_publish(self) -> Publish {
        let mut publish = Publish::new("", self.qos, Vec::new());
        publish.pkid = self.pkid;
        publish
    }
}

impl AckPath {
    fn new(client: AsyncClient) -> Self {
        AckPath {
            client,
            queue: Mutex::new(AckQueue::default()),
            connection: AtomicU64::new(0),
            polling: AtomicBool::new(false),
        }
    }

    /// The acknowledgement a message just received with `pkid` and `qos` will need.
    fn ack_for(&self, pkid: u16, qos: QoS) -> Ack {
        Ack {
            pkid,
            qos,
            connection: self.connection.load(Ordering::Acquire),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, AckQueue> {
        // Each operation leaves the queue consistent: usable even after a panic elsewhere.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `ack`. While the connection task waits in a poll, the oldest queued goes through
    /// the request channel (when none is there), which wakes it.
    fn acknowledge(&self, ack: Ack) {
        let mut queue = self.queue();
        // A message of a lost connection: on this one its packet id can be another message's.
        // The broker sends it again (with a session) or it is gone with the session.
        if ack.connection != self.connection.load(Ordering::Acquire) {
            tracing::debug!(
                pkid = ack.pkid,
                "acknowledgement of a lost connection dropped"
            );
            return;
        }
        queue.waiting.push_back(ack);
        if queue.in_channel.is_some() || !self.polling.load(Ordering::Acquire) {
            return;
        }
        let Some(oldest) = queue.waiting.pop_front() else {
            return;
        };
        queue.in_channel = Some(oldest.pkid);
        let publish = oldest.as_publish();
        if let Err(rumqttc::ClientError::TryRequest(_)) = self.client.try_ack(&publish) {
            // The channel is momentarily full: hand it over from a task instead of waiting.
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = client.ack(&publish).await;
            });
        }
    }

    /// The connection task is about to poll: takes the acknowledgements it writes first, unless
    /// one is still in the request channel (they must not overtake it).
    fn before_poll(&self, batch: &mut Vec<Ack>) {
        let mut queue = self.queue();
        self.polling.store(true, Ordering::Release);
        if queue.in_channel.is_none() {
            batch.extend(queue.waiting.drain(..));
        }
    }

    /// The connection task's poll returned: it writes what is acknowledged from now on before
    /// its next poll.
    fn after_poll(&self) {
        self.polling.store(false, Ordering::Release);
    }

    /// rumqttc wrote the acknowledgement `pkid`: if it was the one in the channel, the waiting
    /// ones may follow.
    fn written(&self, pkid: u16) {
        let mut queue = self.queue();
        if queue.in_channel == Some(pkid) {
            queue.in_channel = None;
        }
    }

    /// The connection is lost: rumqttc dropped the acknowledgements in its channel (the broker
    /// sends those messages again), and so do we.
    fn connection_lost(&self) {
        let mut queue = self.queue();
        // Under the queue lock: no acknowledgement of the old connection slips in after this.
        self.connection.fetch_add(1, Ordering::AcqRel);
        queue.waiting.clear();
        queue.in_channel = None;
    }
}

/// Acknowledgements the connection task writes itself (see [`AckPath`]).
#[derive(Default)]
struct AckWriter {
    batch: Vec<Ack>,
    /// Written but not flushed yet.
    unflushed: bool,
}

impl AckWriter {
    /// Writes what [`AckPath::before_poll`] took into the connection, in order, and flushes
    /// once the next poll would wait on the network. On a broken connection they are dropped:
    /// the next poll reports the loss, and the broker sends the messages again.
    async fn write(&mut self, eventloop: &mut EventLoop) {
        let Some(network) = eventloop.network.as_mut() else {
            self.batch.clear();
            return;
        };
        for ack in self.batch.drain(..) {
            if network.write(ack.packet()).await.is_err() {
                return; // dropping the drain drops the rest
            }
            self.unflushed = true;
        }
        if self.unflushed && eventloop.state.events.is_empty() {
            self.unflushed = false;
            let _ = network.flush().await;
        }
    }
}

struct Shared {
    client: AsyncClient,
    broker: String,
    qos: QoS,
    retain: bool,
    publish_timeout: Duration,
    /// Largest packet the broker is sent (rumqttc drops the connection for a larger one).
    max_packet_size: usize,
    /// Makes "record in the ledger, hand to rumqttc" one step: the ledger's order is the
    /// order rumqttc sends in.
    order: tokio::sync::Mutex<()>,
    ledger: Mutex<Ledger>,
    acks: AckPath,
    /// Current subscriptions as sent (with `$share/...`), renewed after a clean reconnect.
    subscriptions: Mutex<Vec<String>>,
    group: Option<String>,
    replies: Arc<RequestMultiplexer>,
    reply_prefix: String,
    reply_subscription: tokio::sync::OnceCell<()>,
    closed: AtomicBool,
    close_requested: Notify,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Each ledger operation is a single push/pop/insert: consistent even after a panic.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ensure_open(&self) -> Result<()> {
        super::ensure_open(&self.closed)
    }

    fn transport_error(&self, operation: &'static str, reason: impl Into<String>) -> Error {
        Error::Transport {
            operation,
            broker: self.broker.clone(),
            reason: reason.into(),
        }
    }

    /// Records `request`, hands it to rumqttc, and waits for the broker's acknowledgement.
    ///
    /// Cancel-safe: the hand-over to rumqttc and the ledger entry happen in one step, with no
    /// await between, so a caller dropped while waiting for room in rumqttc's request channel
    /// leaves nothing behind. Waiting for the order lock and for room counts against
    /// `publish_timeout`; a request not handed over by then was never sent.
    async fn submit(&self, kind: Kind, request: Request, operation: &'static str) -> Result<()> {
        self.ensure_open()?;
        if let Request::Publish(publish) = &request {
            // rumqttc would drop the connection over it, and reconnect, and drop it again.
            if publish.size() > self.max_packet_size {
                return Err(self.transport_error(
                    operation,
                    format!(
                        "message too large: {} bytes as a packet, max_packet_size is {} (topic {})",
                        publish.size(),
                        self.max_packet_size,
                        publish.topic
                    ),
                ));
            }
        }
        let deadline = Instant::now() + self.publish_timeout;
        let not_sent = || {
            self.transport_error(
                operation,
                format!(
                    "not sent: no room in the connection's queue within {:?}",
                    self.publish_timeout
                ),
            )
        };
        let (waiter, acknowledged) = oneshot::channel();
        let entry = Pending {
            kind,
            waiter: Some(waiter),
            request,
        };
        {
            let _order = tokio::time::timeout_at(deadline.into(), self.order.lock())
                .await
                .map_err(|_| not_sent())?;
            let mut pause = Duration::from_millis(1);
            loop {
                {
                    // Handed over and recorded under the ledger lock: the driver records what
                    // rumqttc sent under the same lock, so it always finds this entry.
                    let mut ledger = self.ledger();
                    match self.try_hand_over(&entry.request) {
                        Ok(()) => {
                            ledger.unsent.push_back(entry);
                            break;
                        }
                        Err(rumqttc::ClientError::TryRequest(_)) if Instant::now() < deadline => {}
                        Err(_) => return Err(not_sent()),
                    }
                }
                self.ensure_open()?;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
        match tokio::time::timeout(self.publish_timeout, acknowledged).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(self.transport_error(
                operation,
                format!(
                    "not acknowledged within {:?}; it may still be delivered (it was sent, and is sent again after a reconnect)",
                    self.publish_timeout
                ),
            )),
        }
    }

    /// Hands `request` to rumqttc's request channel if it has room. rumqttc's `try_*` take
    /// owned values, so the topic and payload are copied (the ledger keeps the request for a
    /// resend); `publish_bytes`, which takes `Bytes`, is only an await, and a caller cancelled
    /// in it leaves no trace of whether the request was sent.
    fn try_hand_over(&self, request: &Request) -> std::result::Result<(), rumqttc::ClientError> {
        match request {
            Request::Publish(publish) => self.client.try_publish(
                publish.topic.as_str(),
                publish.qos,
                publish.retain,
                publish.payload.to_vec(),
            ),
            Request::Subscribe(subscribe) => self
                .client
                .try_subscribe_many(subscribe.filters.iter().cloned()),
            Request::Unsubscribe(unsubscribe) => match unsubscribe.topics.last() {
                Some(topic) => self.client.try_unsubscribe(topic.as_str()),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn shared_filter(&self, filter: &str) -> String {
        match &self.group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_owned(),
        }
    }

    async fn subscribe_filters(&self, filters: Vec<String>) -> Result<()> {
        if filters.is_empty() {
            return Ok(());
        }
        for filter in &filters {
            super::validate_filter(filter).map_err(Error::Config)?;
        }
        {
            let mut current = self.subscriptions();
            for filter in &filters {
                if !current.contains(filter) {
                    current.push(filter.clone());
                }
            }
        }
        let subscribe = Subscribe::new_many(
            filters
                .into_iter()
                .map(|path| SubscribeFilter::new(path, self.qos)),
        );
        self.submit(Kind::Subscribe, Request::Subscribe(subscribe), "subscribe")
            .await
    }

    async fn ensure_reply_subscription(&self) -> Result<()> {
        self.reply_subscription
            .get_or_try_init(|| self.subscribe_filters(vec![format!("{}/+", self.reply_prefix)]))
            .await
            .map(|_| ())
    }
}

struct MqttSocket {
    shared: Arc<Shared>,
}

#[async_trait]
impl SpaSocket for MqttSocket {
    /// MQTT 3.1.1 has no headers: the payload goes alone ([`Capabilities::headers`]).
    async fn send(&self, message: super::Outgoing) -> Result<()> {
        let mut publish = Publish::from_bytes(message.topic, self.shared.qos, message.payload);
        publish.retain = self.shared.retain;
        self.shared
            .submit(Kind::Publish, Request::Publish(publish), "publish")
            .await
    }

    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        let filters = topics
            .iter()
            .map(|t| self.shared.shared_filter(t))
            .collect();
        self.shared.subscribe_filters(filters).await
    }

    async fn unsubscribe(&self, topics: &[String]) -> Result<()> {
        for topic in topics {
            let filter = self.shared.shared_filter(topic);
            self.shared.subscriptions().retain(|f| *f != filter);
            self.shared
                .submit(
                    Kind::Unsubscribe,
                    Request::Unsubscribe(Unsubscribe::new(filter)),
                    "unsubscribe",
                )
                .await?;
        }
        Ok(())
    }

    async fn reply_route(&self, _destination: &str) -> Result<PendingReply> {
        self.shared.ensure_open()?;
        self.shared.ensure_reply_subscription().await?;
        let pending = self.shared.replies.register();
        let topic = format!("{}/{}", self.shared.reply_prefix, pending.id());
        Ok(pending.with_response_topic(topic))
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A clean DISCONNECT if the connection is up; the driver stops either way.
        let _ = self.shared.client.try_disconnect();
        self.shared.close_requested.notify_one();
        let driver = self
            .shared
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut driver) = driver {
            if tokio::time::timeout(Duration::from_secs(5), &mut driver)
                .await
                .is_err()
            {
                driver.abort();
            }
        }
        self.shared.replies.close();
        Ok(())
    }
}

/// Builds MQTT sockets: one connection each.
#[derive(Debug, Clone)]
pub struct MqttSocketProvider {
    config: MqttConfig,
}

impl MqttSocketProvider {
    /// A provider for the broker `config` names.
    pub fn new(config: MqttConfig) -> Result<Self> {
        config.validate()?;
        Ok(MqttSocketProvider { config })
    }

    /// The configuration.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
        .collect()
}

#[async_trait]
impl SocketProvider for MqttSocketProvider {
    async fn connect(&self, options: SocketOptions) -> Result<Connection> {
        let config = &self.config;
        let broker = config.broker();
        let client_id = options.client_id_with(config.client_id.as_deref());
        let mqtt_options = config.build_client_config(&client_id)?;
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, 64);
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        eventloop
            .network_options
            .set_connection_timeout(connect_timeout.as_secs().max(1));
        // Small packets (acks, requests, replies) must not wait for Nagle and delayed ACK:
        // without this a request/reply round trip on loopback takes ~88 ms instead of < 1 ms.
        eventloop.network_options.set_tcp_nodelay(true);
        let connected = tokio::time::timeout(connect_timeout, eventloop.poll()).await;
        match connected {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                tracing::info!(broker = %broker, client_id = %client_id, session_present = ack.session_present, "MQTT connected");
            }
            Ok(Ok(other)) => {
                return Err(Error::Connect {
                    broker,
                    reason: format!("expected CONNACK, got {other:?}"),
                })
            }
            Ok(Err(error)) => {
                return Err(Error::Connect {
                    broker,
                    reason: describe_first_connect(&error, config.tls.is_some()),
                })
            }
            Err(_) => {
                return Err(Error::Connect {
                    broker,
                    reason: format!("no CONNACK within {connect_timeout:?}"),
                })
            }
        }
        let (inbox_tx, inbox) = Inbox::handled_on_arrival(options.inbox_capacity);
        let shared = Arc::new(Shared {
            acks: AckPath::new(client.clone()),
            client,
            broker,
            qos: qos_of(config.qos)?,
            retain: config.retain,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            max_packet_size: config.max_packet_size,
            order: tokio::sync::Mutex::new(()),
            ledger: Mutex::new(Ledger::default()),
            subscriptions: Mutex::new(Vec::new()),
            group: options.group.clone(),
            replies: RequestMultiplexer::new(),
            reply_prefix: format!("_spa/reply/{}", sanitize(&client_id)),
            reply_subscription: tokio::sync::OnceCell::new(),
            closed: AtomicBool::new(false),
            close_requested: Notify::new(),
            driver: Mutex::new(None),
        });
        let driver = Driver {
            shared: Arc::clone(&shared),
            inbox: inbox_tx,
            held: Vec::new(),
            topic_names: TopicNames::default(),
            backoff: Backoff::new(Duration::from_millis(config.reconnect_max_ms.max(100))),
        };
        let handle = tokio::spawn(driver.run(eventloop));
        *shared.driver.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        let socket = MqttSocket { shared };
        super::subscribe_initial(socket, inbox, &options, &config.default_subscription_topics).await
    }

    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider> {
        let mut config = self.config.clone();
        config.default_subscription_topics = topics;
        Arc::new(MqttSocketProvider { config })
    }

    fn default_topics(&self) -> &[String] {
        &self.config.default_subscription_topics
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wildcards: true,
            consumer_groups: true,
            ordered_per_publisher: true,
            ordered_per_partition: true,
            subscribe_is_synchronous: true,
            headers: false,
        }
    }

    fn describe(&self) -> String {
        self.config.broker()
    }
}

/// Why the first connection failed, with what to check: the errors of a wrong URL, wrong
/// credentials or certificates all surface here.
fn describe_first_connect(error: &ConnectionError, tls: bool) -> String {
    let io_kind = io_error_kind(error);
    let hung_up = matches!(
        io_kind,
        Some(
            std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof
        )
    );
    // rustls reports certificate and protocol failures as `InvalidData` I/O errors.
    let tls_failed = tls
        && (matches!(error, ConnectionError::Tls(_))
            || io_kind == Some(std::io::ErrorKind::InvalidData));
    if hung_up && !tls {
        format!(
            "the broker hung up before answering CONNECT: if this port expects TLS, use mqtts:// (or [bus.tls]) ({})",
            describe(error)
        )
    } else if tls_failed {
        format!(
            "TLS handshake failed (check tls.ca_file against the broker's certificate and host name, and that the port is a TLS listener): {}",
            describe(error)
        )
    } else {
        describe(error)
    }
}

/// The kind of the I/O error at the root of `error`, however deep rumqttc wrapped it.
fn io_error_kind(error: &ConnectionError) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = current.source();
    }
    None
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "authentication failed: wrong user name or password (CONNACK: bad user name or password)".to_owned()
        }
        // Mosquitto answers a wrong password at MQTT 3.1.1 with "not authorized".
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "not authorized: wrong user name or password, or this user or client id is not allowed (CONNACK: not authorized)".to_owned()
        }
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection ({code:?}); check the credentials and client id"
            )
        }
        ConnectionError::Io(io) => format!("{io}"),
        ConnectionError::NetworkTimeout => "connection timed out".to_owned(),
        other => other.to_string(),
    }
}

/// Exponential backoff with jitter between reconnect attempts.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The pause before the next attempt: the current step with ±50 % jitter.
    fn pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.5 + fastrand::f64())
    }
}

/// Polls the event loop, delivers messages, settles the ledger, reconnects.
struct Driver {
    shared: Arc<Shared>,
    inbox: ArrivalSender,
    /// Requests taken out of rumqttc after a connection loss, put back after the reconnect.
    held: Vec<Request>,
    backoff: Backoff,
    topic_names: TopicNames,
}

impl Driver {
    async fn run(mut self, mut eventloop: EventLoop) {
        let mut acks = AckWriter::default();
        loop {
            self.shared.acks.before_poll(&mut acks.batch);
            acks.write(&mut eventloop).await;
            // A consumer that fell `inbox_capacity` messages behind: read nothing more until it
            // catches up (QoS 0 has no broker-side flow control to bound it). Acknowledgements
            // made meanwhile are written on the next turn.
            if self.inbox.is_full() {
                tokio::select! {
                    biased;
                    _ = self.shared.close_requested.notified() => break,
                    _ = self.inbox.room() => {}
                }
            }
            let polled = eventloop.poll().await;
            self.shared.acks.after_poll();
            match polled {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    // The broker closes the connection once it has processed the DISCONNECT:
                    // wait for that (briefly), so when close() returns the broker has let this
                    // client go — its shared-subscription membership too, which otherwise still
                    // took messages meant for the group's other members.
                    // Read from the connection itself: polling rumqttc again would reconnect.
                    if let Some(network) = eventloop.network.as_mut() {
                        let closed = async { while network.read().await.is_ok() {} };
                        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                    }
                    break;
                }
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    tracing::info!(broker = %self.shared.broker, session_present = ack.session_present, "MQTT reconnected");
                    self.backoff.reset();
                    self.restore(&mut eventloop, ack.session_present);
                }
                Ok(event) => self.handle(event),
                Err(error) => {
                    if self.shared.closed.load(Ordering::Acquire) {
                        break;
                    }
                    // rumqttc moved its unacknowledged and unsent requests into `pending` and
                    // would drop them on a reconnect without session: keep them ourselves.
                    let buffered: Vec<Event> = eventloop.state.events.drain(..).collect();
                    for event in buffered {
                        self.handle(event);
                    }
                    self.held.extend(eventloop.pending.drain(..));
                    self.shared.acks.connection_lost();
                    let pause = self.backoff.pause();
                    tracing::warn!(broker = %self.shared.broker, error = %describe(&error), retry_in = ?pause, "MQTT connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shared.close_requested.notified() => break,
                    }
                }
            }
        }
        tracing::debug!(broker = %self.shared.broker, "MQTT connection closed");
        let ledger = std::mem::take(&mut *self.shared.ledger());
        for pending in ledger
            .unsent
            .into_iter()
            .chain(ledger.unacked.into_values())
        {
            pending.resolve(Err(Error::Closed));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Incoming(Incoming::Publish(publish)) => self.deliver(publish),
            Event::Incoming(Incoming::PubAck(ack)) => {
                self.acknowledged(Kind::Publish, ack.pkid, Ok(()))
            }
            Event::Incoming(Incoming::PubRec(ack)) => {
                self.acknowledged(Kind::Publish, ack.pkid, Ok(()))
            }
            Event::Incoming(Incoming::SubAck(ack)) => self.subscribed(&ack),
            Event::Incoming(Incoming::UnsubAck(ack)) => {
                self.acknowledged(Kind::Unsubscribe, ack.pkid, Ok(()))
            }
            Event::Outgoing(Outgoing::PubAck(pkid) | Outgoing::PubRec(pkid)) => {
                self.shared.acks.written(pkid)
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.sent(Kind::Publish, pkid),
            Event::Outgoing(Outgoing::Subscribe(pkid)) => self.sent(Kind::Subscribe, pkid),
            Event::Outgoing(Outgoing::Unsubscribe(pkid)) => self.sent(Kind::Unsubscribe, pkid),
            _ => {}
        }
    }

    /// rumqttc wrote a packet: the oldest unsent request of the ledger, unless it is the
    /// retransmission of one still waiting for its acknowledgement.
    fn sent(&mut self, kind: Kind, pkid: u16) {
        let mut ledger = self.shared.ledger();
        if pkid != 0 && ledger.unacked.contains_key(&(kind, pkid)) {
            return;
        }
        let Some(pending) = ledger.unsent.pop_front() else {
            tracing::error!(broker = %self.shared.broker, ?kind, pkid, "MQTT sent a packet the ledger does not know");
            return;
        };
        if pending.kind != kind {
            tracing::error!(broker = %self.shared.broker, expected = ?pending.kind, sent = ?kind, "MQTT ledger out of step");
        }
        if kind == Kind::Publish && pkid == 0 {
            drop(ledger);
            pending.resolve(Ok(()));
        } else {
            ledger.unacked.insert((kind, pkid), pending);
        }
    }

    /// A SUBACK: a filter the broker refused (0x80: its ACL, or no shared subscriptions) fails
    /// the subscription, naming the filter.
    fn subscribed(&mut self, ack: &SubAck) {
        let Some(pending) = self
            .shared
            .ledger()
            .unacked
            .remove(&(Kind::Subscribe, ack.pkid))
        else {
            return;
        };
        let filters: &[SubscribeFilter] = match &pending.request {
            Request::Subscribe(subscribe) => &subscribe.filters,
            _ => &[],
        };
        let refused: Vec<String> = ack
            .return_codes
            .iter()
            .zip(filters)
            .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
            .map(|(_, filter)| format!("`{}`", filter.path))
            .collect();
        if refused.is_empty() {
            pending.resolve(Ok(()));
            return;
        }
        // Not renewed after a reconnect: the broker would refuse it again.
        self.shared
            .subscriptions()
            .retain(|current| !refused.iter().any(|r| r.trim_matches('`') == current));
        tracing::error!(broker = %self.shared.broker, filters = %refused.join(", "), "MQTT subscription refused");
        pending.resolve(Err(self.shared.transport_error(
            "subscribe",
            format!(
                "the broker refused the subscription to {} (SUBACK 0x80: its ACL does not let this user read it, or it does not support shared subscriptions)",
                refused.join(", ")
            ),
        )));
    }

    fn acknowledged(&mut self, kind: Kind, pkid: u16, result: Result<()>) {
        let pending = self.shared.ledger().unacked.remove(&(kind, pkid));
        if let Some(pending) = pending {
            pending.resolve(result);
        }
    }

    fn deliver(&mut self, publish: Publish) {
        let ack = (publish.qos != QoS::AtMostOnce)
            .then(|| self.shared.acks.ack_for(publish.pkid, publish.qos));
        if publish.topic.starts_with(&self.shared.reply_prefix) {
            super::deliver_reply(&self.shared.replies, &publish.topic, &publish.payload);
            if let Some(ack) = ack {
                self.shared.acks.acknowledge(ack);
            }
            return;
        }
        let topic = self.topic_names.get(&publish.topic);
        let mut delivery = Delivery::new(topic, publish.payload);
        if let Some(ack) = ack {
            let shared = Arc::clone(&self.shared);
            delivery = delivery.with_ack(move || shared.acks.acknowledge(ack));
        }
        // Handled right here when the consumer is idle: no hand-off to its task. If the
        // consumer is gone (shutting down) it stays unacknowledged; the broker redelivers.
        self.inbox.send(delivery);
    }

    /// After a reconnect: put back what was held. Without a session on the broker, also renew
    /// every subscription and resend every unacknowledged publish as new.
    fn restore(&mut self, eventloop: &mut EventLoop, session_present: bool) {
        let held = std::mem::take(&mut self.held);
        let mut ledger = self.shared.ledger();
        let mut requests: Vec<Request> = Vec::new();
        let mut front: Vec<Pending> = Vec::new();
        if !session_present {
            for filter in self.shared.subscriptions().iter() {
                let subscribe = Subscribe::new(filter.clone(), self.shared.qos);
                requests.push(Request::Subscribe(subscribe.clone()));
                front.push(Pending {
                    kind: Kind::Subscribe,
                    waiter: None,
                    request: Request::Subscribe(subscribe),
                });
            }
        }
        // rumqttc never retransmits (un)subscriptions: send again those not acknowledged.
        let keys: Vec<(Kind, u16)> = ledger
            .unacked
            .keys()
            .filter(|(kind, _)| *kind != Kind::Publish)
            .copied()
            .collect();
        let mut unacked_subscriptions: Vec<((Kind, u16), Pending)> = keys
            .into_iter()
            .filter_map(|key| ledger.unacked.remove(&key).map(|pending| (key, pending)))
            .collect();
        unacked_subscriptions.sort_by_key(|((_, pkid), _)| *pkid);
        for (_, pending) in unacked_subscriptions {
            requests.push(renumbered(pending.request.clone()));
            front.push(pending);
        }
        for request in held {
            match request {
                Request::Publish(publish) if publish.pkid != 0 => {
                    if session_present {
                        requests.push(Request::Publish(publish));
                        continue;
                    }
                    // Lost with the session: send it again as a new publish.
                    let pending = ledger
                        .unacked
                        .remove(&(Kind::Publish, publish.pkid))
                        .unwrap_or(Pending {
                            kind: Kind::Publish,
                            waiter: None,
                            request: Request::Publish(publish.clone()),
                        });
                    requests.push(renumbered(Request::Publish(publish)));
                    front.push(pending);
                }
                // Unsent requests keep their place at the front of the ledger's unsent queue.
                request @ (Request::Publish(_)
                | Request::Subscribe(_)
                | Request::Unsubscribe(_)) => requests.push(request),
                // Acknowledgements of messages the broker sends again (rumqttc drops them too).
                Request::PubAck(_) | Request::PubRec(_) => {}
                other if session_present => requests.push(other),
                _ => {}
            }
        }
        for pending in front.into_iter().rev() {
            ledger.unsent.push_front(pending);
        }
        drop(ledger);
        eventloop.pending.extend(requests);
    }
}

/// A request as new: packet id 0 (rumqttc assigns one), not a duplicate.
fn renumbered(request: Request) -> Request {
    match request {
        Request::Publish(mut publish) => {
            publish.pkid = 0;
            publish.dup = false;
            Request::Publish(publish)
        }
        Request::Subscribe(mut subscribe) => {
            subscribe.pkid = 0;
            Request::Subscribe(subscribe)
        }
        Request::Unsubscribe(mut unsubscribe) => {
            unsubscribe.pkid = 0;
            Request::Unsubscribe(unsubscribe)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(pkid: u16) -> Ack {
        Ack {
            pkid,
            qos: QoS::AtLeastOnce,
            connection: 0,
        }
    }

    fn before_poll(path: &AckPath) -> Vec<u16> {
        let mut batch = Vec::new();
        path.before_poll(&mut batch);
        batch.iter().map(|ack| ack.pkid).collect()
    }

    #[test]
    fn the_connection_task_writes_what_was_acknowledged_while_it_was_busy() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::new(client);
        for pkid in 1..=3 {
            path.acknowledge(ack(pkid));
        }
        assert_eq!(before_poll(&path), [1, 2, 3]);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        let mut qos2 = Vec::new();
        path.after_poll();
        path.acknowledge(path.ack_for(4, QoS::ExactlyOnce));
        path.before_poll(&mut qos2);
        assert!(matches!(qos2[..], [a] if matches!(a.packet(), Packet::PubRec(_))));
    }

    #[test]
    fn acknowledgements_never_overtake_the_one_in_the_request_channel() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::new(client);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        // The task waits in a poll: 1 goes through the channel to wake it, 2 and 3 wait.
        for pkid in 1..=3 {
            path.acknowledge(ack(pkid));
        }
        path.after_poll();
        assert_eq!(
            before_poll(&path),
            [] as [u16; 0],
            "1 is still in the channel"
        );
        path.written(3); // not the one in the channel
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        path.written(1);
        assert_eq!(before_poll(&path), [2, 3]);
    }

    #[test]
    fn a_lost_connection_drops_the_waiting_acknowledgements() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::new(client);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        path.acknowledge(ack(1)); // into the channel
        path.acknowledge(ack(2));
        path.connection_lost();
        path.after_poll();
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        // Nothing is in the channel any more: the next one while polling goes there.
        path.acknowledge(path.ack_for(7, QoS::AtLeastOnce));
        path.acknowledge(path.ack_for(8, QoS::AtLeastOnce));
        path.after_poll();
        assert_eq!(before_poll(&path), [] as [u16; 0], "8 waits behind 7");
        path.written(7);
        assert_eq!(before_poll(&path), [8]);
    }

    #[test]
    fn an_acknowledgement_made_for_an_earlier_connection_is_not_written_on_the_next() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::new(client);
        let captured = path.ack_for(5, QoS::AtLeastOnce); // a message of the first connection
        path.connection_lost();
        // Its handler finishes after the reconnect: packet id 5 may now be another message.
        path.acknowledge(captured);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        path.after_poll(); // busy: acknowledgements wait for the task to write them
        path.acknowledge(path.ack_for(5, QoS::AtLeastOnce));
        assert_eq!(before_poll(&path), [5], "this connection's own is written");
    }
}
