//! The transport conformance suite on Kafka, against a real Apache Kafka broker.

use spa_dat_test_support as support;
use spa_dat_test_support::conformance;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};

fn kafka() -> conformance::Transport {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = KafkaConfig::new(support::kafka::bootstrap());
    // Members of a group share a topic by its partitions.
    config.topic_partitions = 4;
    conformance::Transport {
        provider: Arc::new(KafkaSocketProvider::new(config).expect("valid config")),
        patience: Duration::from_secs(60),
        settle: Duration::from_secs(3),
        separator: ".",
        guard: None,
        big: None,
        connections_of: None,
    }
}

spa_dat_test_support::conformance_tests!(kafka());
