//! Batch handlers against real brokers: the batch workload (per-element outcomes through
//! retries and dead letters, each key's order, a key never in two batches at once) on Kafka's
//! partitions with its offset map, and on MQTT with its in-order acknowledgement window.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::SocketProvider;
use support::batches::{self, Workload};
use support::mosquitto::Mosquitto;

fn unique(name: &str, separator: &str) -> String {
    format!(
        "{name}{separator}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_hundred_thousand_messages_in_batches_of_500_each_settled_as_its_outcome_said() {
    let mut config = KafkaConfig::new(support::kafka::bootstrap());
    config.topic_partitions = 4;
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config).expect("valid config"));
    let topic = unique("batches", ".");
    let dead = unique("batches-dead", ".");
    support::kafka::create_topic(&provider, &topic).await;
    support::kafka::create_topic(&provider, &dead).await;
    let group = unique("batchers", ".");
    let route_topic = topic.clone();
    batches::run(
        &provider,
        &[topic],
        &dead,
        Some(&group),
        move |key| (route_topic.clone(), Some(key.to_string())),
        Workload {
            messages: 100_000,
            keys: 1_000,
            size: 500,
            wait: Duration::from_millis(20),
            concurrency: 4,
        },
        Duration::from_secs(300),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_batches_keep_each_topics_order_and_acknowledge_in_order() {
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let broker = Mosquitto::start_with("allow_anonymous true\n");
        let config = MqttConfig {
            version,
            ..MqttConfig::new("127.0.0.1", broker.port)
        };
        let provider: Arc<dyn SocketProvider> =
            Arc::new(MqttSocketProvider::new(config).expect("valid config"));
        let base = unique("batches", "/");
        let prefix = base.clone();
        // MQTT has no keys: each key its own topic, ordered by topic. A batch holds its messages
        // unacknowledged, so the broker's in-flight window bounds it where the broker keeps to one.
        batches::run(
            &provider,
            &[format!("{base}/+")],
            &format!("{base}-dead"),
            None,
            move |key| (format!("{prefix}/{key}"), None),
            Workload {
                messages: 20_000,
                keys: 200,
                size: 50,
                wait: Duration::from_millis(20),
                concurrency: 2,
            },
            Duration::from_secs(120),
        )
        .await;
    }
}
