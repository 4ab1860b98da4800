//! spa-dat's metrics scraped by a real Prometheus: the counts a PromQL query returns are the
//! messages the test sent and handled. (One test per binary: the metrics recorder is global.)

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::{Application, Config, Socket, SpaMessage};
use support::prometheus::{free_port, Prometheus};
use support::{test_app, wait_until};

const MESSAGES: usize = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_messages_sent_and_handled() {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let app = test_app(Config {
        metrics_addr: Some(metrics_addr.clone()),
        ..Config::default()
    })
    .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
    .add_application(
        Application::consumer("metered", ["metered"], move |m: SpaMessage| {
            let h = Arc::clone(&h);
            async move {
                if m.payload_str().ok() == Some("fail") {
                    return Err(spa_dat::BoxError::from("refused"));
                }
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .retry(spa_dat::RetryPolicy::no_retries()),
    )
    .add_producer("metering-producer", |socket: Socket| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..MESSAGES {
            let payload = if i % 50 == 0 {
                "fail".to_owned()
            } else {
                i.to_string()
            };
            socket.publish(SpaMessage::new("metered", payload)).await?;
        }
        Ok::<(), spa_dat::Error>(())
    });
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let h = Arc::clone(&handled);
    wait_until("every message handled", Duration::from_secs(30), || {
        h.load(Ordering::SeqCst) >= MESSAGES - MESSAGES / 50
    })
    .await;
    let prometheus = tokio::task::spawn_blocking(move || Prometheus::scraping(&metrics_addr))
        .await
        .expect("prometheus");
    let query = |promql: &'static str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = prometheus.query_number(promql) {
                break value;
            }
            assert!(Instant::now() < deadline, "no value for {promql}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let consumed = query(
        r#"sum(messaging_client_consumed_messages_total{spa_app="metered",messaging_destination_name="metered",messaging_system="memory"})"#,
    );
    let sent = query(r#"sum(messaging_client_sent_messages_total{spa_app="metering-producer"})"#);
    let failed = query(r#"sum(spa_messages_failed_total{spa_app="metered"})"#);
    let observed = query(r#"sum(messaging_process_duration_seconds_count{spa_app="metered"})"#);
    // Each application exports the series of what it does: a producer no consumer series (a
    // zero "consumed" would read as a stalled consumer on a dashboard), a consumer that never
    // publishes no "sent" series.
    let exposition = support::prometheus::http_get(metrics_port, "/metrics").expect("/metrics");
    let exported = |metric: &str, app: &str| {
        exposition
            .lines()
            .any(|line| line.starts_with(metric) && line.contains(&format!("spa_app=\"{app}\"")))
    };
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    for consumer_series in [
        "messaging_client_consumed_messages_total",
        "messaging_process_duration_seconds",
        "spa_messages_failed_total",
        "spa_messages_retried_total",
        "spa_messages_dead_lettered_total",
        "spa_messages_skipped_total",
    ] {
        assert!(
            !exported(consumer_series, "metering-producer"),
            "the producer exports {consumer_series}"
        );
    }
    assert!(
        !exported("messaging_client_sent_messages_total", "metered"),
        "the consumer, which never publishes, exports a sent series"
    );
    assert_eq!(sent, MESSAGES as f64, "sent");
    assert_eq!(consumed, MESSAGES as f64, "consumed, failures included");
    assert_eq!(failed, (MESSAGES / 50) as f64, "failed");
    assert_eq!(observed, MESSAGES as f64, "one duration per message");
}
