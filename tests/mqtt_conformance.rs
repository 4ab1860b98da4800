//! The transport conformance suite on MQTT, against a real Mosquitto broker.

use spa_dat_test_support as support;
use spa_dat_test_support::conformance;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use support::mosquitto::Mosquitto;

fn mqtt() -> conformance::Transport {
    on(MqttVersion::V311)
}

fn mqtt5() -> conformance::Transport {
    on(MqttVersion::V5)
}

fn on(version: MqttVersion) -> conformance::Transport {
    let broker = Arc::new(Mosquitto::start());
    let mut config = MqttConfig::new("127.0.0.1", broker.port);
    config.version = version;
    // Lower than the default (MQTT's limit, as for incoming): a dead letter of a larger
    // message is forwarded as a summary (hostile_peers).
    config.max_packet_size = 1 << 20;
    let mut big = config.clone();
    big.max_packet_size = 4 << 20;
    let log = Arc::clone(&broker);
    conformance::Transport {
        provider: Arc::new(MqttSocketProvider::new(config).expect("valid config")),
        big: Some(Arc::new(
            MqttSocketProvider::new(big).expect("valid config"),
        )),
        connections_of: Some(Arc::new(move |client_id: &str| {
            let needle = format!(" as {client_id} ");
            log.log()
                .lines()
                .filter(|line| line.contains(&needle))
                .count()
        })),
        patience: Duration::from_secs(30),
        settle: Duration::ZERO,
        separator: "/",
        guard: Some(broker),
    }
}

spa_dat_test_support::conformance_tests!(mqtt());

/// The same suite on MQTT 5: the same contract, headers carried as properties.
mod mqtt5 {
    use super::*;

    spa_dat_test_support::conformance_tests!(mqtt5());
}
