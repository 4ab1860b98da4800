//! Kafka's progress gauges, read from a recorder of the test's own: a stuck record with records
//! finished after it shows in `spa_kafka_finished_above_commit`,
//! `spa_kafka_uncommitted_records` and `spa_kafka_consumer_lag`. (One test per binary: the metrics recorder is global.)

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::SocketProvider;
use spa_dat::{Application, Config, SpaMessage};
use support::{recorded, test_app, wait_until};

const AFTER: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_record_shows_in_the_partition_gauges() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder");
    spa_dat::metrics::enable();

    let config = KafkaConfig::new(support::kafka::bootstrap());
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config.clone()).expect("config"));
    let topic = format!(
        "gauged.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    support::kafka::create_topic(&provider, &topic).await;
    let publisher =
        support::connect_publisher(&provider, format!("gauge-publisher-{}", &topic[7..])).await;
    publisher
        .socket
        .publish(&SpaMessage::new(topic.as_str(), "stuck"))
        .await
        .expect("publish");
    support::publish_numbered(&publisher.socket, &topic, 0..AFTER).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let app = test_app(Config {
        shutdown_grace_ms: 200,
        ..Config::default()
    })
    .add_application(
        Application::consumer("gauged", [topic.clone()], move |m: SpaMessage| {
            let h = Arc::clone(&h);
            async move {
                if m.payload_str().ok() == Some("stuck") {
                    std::future::pending::<()>().await;
                }
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .group(format!("{topic}-group"))
        .socket_provider(Arc::clone(&provider))
        .concurrency(8)
        .ordering(spa_dat::MessageOrder::Unordered),
    );
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let h = Arc::clone(&handled);
    wait_until(
        "the records after the stuck one",
        Duration::from_secs(60),
        || h.load(Ordering::SeqCst) >= AFTER,
    )
    .await;
    // Gauges are set every 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // One snapshot for all: reading the debugging recorder resets what it read.
    let snapshot = recorded::read(&snapshotter);
    let of_topic = |name: &str| {
        recorded::values(
            &snapshot,
            name,
            &[
                ("messaging_destination_name", &topic),
                ("spa_app", "gauged"),
            ],
        )
    };
    let finished_above = of_topic(spa_dat::metrics::KAFKA_FINISHED_ABOVE_COMMIT);
    let uncommitted = of_topic(spa_dat::metrics::KAFKA_UNCOMMITTED);
    let consumed: f64 = of_topic(spa_dat::metrics::CONSUMED).into_iter().sum();
    // (After the snapshot above: reading counters resets them.) The lag comes with librdkafka's statistics (every second) once the stuck record's offset
    // is committed (every auto.commit.interval.ms, 5 s): the partition's end (101) minus the commit (0).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lag = loop {
        let lag = recorded::values(
            &recorded::read(&snapshotter),
            spa_dat::metrics::KAFKA_CONSUMER_LAG,
            &[("messaging_destination_name", &topic)],
        )
        .first()
        .copied();
        if lag == Some((AFTER + 1) as f64) || std::time::Instant::now() > deadline {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("clean");
    publisher.socket.close().await.expect("close");
    assert_eq!(
        finished_above,
        [AFTER as f64],
        "finished above the stuck one"
    );
    assert_eq!(uncommitted, [(AFTER + 1) as f64], "read and not committed");
    assert_eq!(
        lag,
        Some((AFTER + 1) as f64),
        "lag: high watermark minus committed"
    );
    assert_eq!(consumed, AFTER as f64, "the stuck one is not consumed yet");
}
