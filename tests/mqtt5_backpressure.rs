//! MQTT back-pressure on MQTT 5: the cases are in `tests/mqtt/backpressure.rs`, run on each version.

/// The MQTT version the cases run on.
const VERSION: spa_dat::socket::mqtt::MqttVersion = spa_dat::socket::mqtt::MqttVersion::V5;

#[path = "mqtt/backpressure.rs"]
mod backpressure;
