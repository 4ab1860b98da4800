//! The MQTT transport (feature `mqtt`), on rumqttc.
//!
//! One connection per socket; its event loop is polled by one task that never waits on the
//! application: a consumer's handler runs there as its message arrives until it would wait, and
//! on the consumer's task from then on ([`crate::socket::Inbox::handled_on_arrival`]). Guarantees:
//! - `publish` returns once the broker acknowledged the message (PUBACK at QoS 1, PUBREC at
//!   QoS 2; written to the socket at QoS 0), or fails after `publish_timeout_ms`.
//! - Incoming messages at QoS ≥ 1 are acknowledged only after their handler finished
//!   (manual acks): at-least-once.
//! - On a lost connection: reconnect with exponential backoff and jitter; after a reconnect
//!   without a session on the broker, every subscription is renewed and every publish the
//!   broker never acknowledged is sent again (rumqttc itself drops them).
//! - Consumer groups map to shared subscriptions: `$share/{group}/{filter}`.
//!
//! The folder follows the seams; a file imports only files listed before it: `tls`, `config`
//! (settings and `mqtt://` URLs), `ledger` (requests handed to rumqttc until the broker
//! acknowledges them), `acks` (acknowledgements of received messages, in arrival order),
//! `shared` (the state a socket and its connection task share, and how requests are handed to
//! rumqttc), `driver` (the connection task: the only place that reads rumqttc's internals) and
//! `socket` (the socket and its provider).

mod acks;
mod config;
mod driver;
mod ledger;
mod shared;
mod socket;
mod tls;
mod wire;
mod wire311;
mod wire5;

pub use config::{MqttConfig, MqttVersion, MQTT_MAX_PACKET_SIZE};
pub use socket::MqttSocketProvider;
pub use tls::MqttTls;
