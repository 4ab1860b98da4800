//! The transport conformance suite on MQTT, against a real Mosquitto broker.

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use support::mosquitto::Mosquitto;

fn mqtt() -> conformance::Transport {
    let broker = Mosquitto::start();
    let config = MqttConfig::new("127.0.0.1", broker.port);
    conformance::Transport {
        provider: Arc::new(MqttSocketProvider::new(config).expect("valid config")),
        patience: Duration::from_secs(30),
        settle: Duration::ZERO,
        separator: "/",
        guard: Some(Arc::new(broker)),
    }
}

conformance_tests!(mqtt());
