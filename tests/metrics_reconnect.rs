//! spa-dat's metrics across a lost broker, read from its Prometheus endpoint: the connection
//! gauge drops to 0 while Mosquitto is down and comes back to 1, the reconnect is counted, and
//! counters never go backwards. (One test per binary: the metrics recorder is global.)

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spa_dat::metrics::{CONNECTION_UP, CONSUMED, IN_FLIGHT, RECONNECTS};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, Config, SpaMessage};
use support::mosquitto::Mosquitto;
use support::prometheus::{free_port, http_get, sample_sum};
use support::{test_app, wait_until};

const BATCH: usize = 20;

/// One scrape of the endpoint.
async fn scrape(port: u16) -> String {
    tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .expect("join")
        .expect("the metrics endpoint answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_a_reconnect_and_the_connection_gauge_follows_the_broker() {
    let mut broker = Mosquitto::start();
    let metrics_port = free_port();
    let provider: Arc<dyn SocketProvider> = Arc::new(
        MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port)).expect("config"),
    );
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let app = test_app(Config {
        metrics_addr: Some(format!("127.0.0.1:{metrics_port}")),
        shutdown_grace_ms: 200,
        ..Config::default()
    })
    .add_application(
        Application::consumer("steady", ["steady/readings"], move |_: SpaMessage| {
            let h = Arc::clone(&h);
            async move {
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .socket_provider(Arc::clone(&provider)),
    );
    let readiness = app.readiness();
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    tokio::time::timeout(Duration::from_secs(30), readiness.ready())
        .await
        .expect("ready");
    let publisher = provider
        .connect(SocketOptions::new("steady-publisher"))
        .await
        .expect("connect");
    let publish_batch = |first: usize| {
        let socket = Arc::clone(&publisher.socket);
        async move {
            for i in first..first + BATCH {
                let message = SpaMessage::new("steady/readings", i.to_string());
                // The publisher reconnects on its own schedule: retry until it is back.
                let mut attempts = 0;
                while let Err(error) = socket.publish(&message).await {
                    attempts += 1;
                    assert!(attempts < 50, "publish keeps failing: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let app_label = r#"spa_app="steady""#;

    publish_batch(0).await;
    let h = Arc::clone(&handled);
    wait_until("the first batch", Duration::from_secs(30), || {
        h.load(Ordering::SeqCst) >= BATCH
    })
    .await;
    let before = scrape(metrics_port).await;
    assert_eq!(sample_sum(&before, CONNECTION_UP, &[app_label]), Some(1.0));
    assert_eq!(
        sample_sum(&before, CONSUMED, &[app_label]),
        Some(BATCH as f64)
    );

    broker.stop();
    let lost = std::time::Instant::now();
    while readiness.is_ready() {
        assert!(
            lost.elapsed() < Duration::from_secs(2),
            "not ready within 2 s of losing the broker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = scrape(metrics_port).await;
    assert_eq!(
        sample_sum(&down, CONNECTION_UP, &[app_label]),
        Some(0.0),
        "the connection gauge while the broker is down"
    );
    assert_eq!(
        sample_sum(&down, CONSUMED, &[app_label]),
        Some(BATCH as f64),
        "counters keep their value while disconnected"
    );

    broker.restart();
    tokio::time::timeout(Duration::from_secs(30), readiness.ready())
        .await
        .expect("ready again after the broker returned");
    publish_batch(BATCH).await;
    let h = Arc::clone(&handled);
    wait_until("the second batch", Duration::from_secs(30), || {
        h.load(Ordering::SeqCst) >= 2 * BATCH
    })
    .await;
    // The watchdog refreshes the in-flight gauge every 250 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = scrape(metrics_port).await;
    publisher.socket.close().await.expect("close");
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("clean stop");

    assert_eq!(sample_sum(&after, CONNECTION_UP, &[app_label]), Some(1.0));
    assert_eq!(
        sample_sum(&after, CONSUMED, &[app_label]),
        Some((2 * BATCH) as f64),
        "counted on from where it was, not from zero"
    );
    assert_eq!(sample_sum(&after, IN_FLIGHT, &[app_label]), Some(0.0));
    let reconnects = sample_sum(&after, RECONNECTS, &[r#"messaging_system="mqtt""#]);
    assert!(
        reconnects.is_some_and(|n| n >= 1.0),
        "the reconnect is counted: {reconnects:?}"
    );
}
