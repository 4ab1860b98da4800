//! MQTT behaviour beyond the conformance suite on MQTT 5: the cases are in `tests/mqtt/transport.rs`, run on each version.

/// The MQTT version the cases run on.
const VERSION: spa_dat::socket::mqtt::MqttVersion = spa_dat::socket::mqtt::MqttVersion::V5;

#[path = "mqtt/transport.rs"]
mod transport;
