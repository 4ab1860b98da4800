//! Metric label values stay bounded whatever the topics: a wildcard subscription's series are
//! labelled with its pattern (OpenTelemetry's `messaging.destination.template`), and each
//! metric family holds at most `spa_dat::metrics::DESTINATION_LABEL_CAP` destination values,
//! the rest counted as `_other`. (One test per binary: the metrics recorder is global.)

use spa_dat_test_support as support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::{Application, Config, Socket, SpaMessage};
use support::{test_app, wait_until};

const TOPICS: usize = 5_000;

/// The distinct `messaging_destination_name` values of `metric`'s series of `app`, and the
/// sum of their samples.
fn destinations(text: &str, metric: &str, app: &str) -> (BTreeSet<String>, f64) {
    let values = support::prometheus::by_destination(text, metric, app);
    let sum = values.values().sum();
    (
        values.into_keys().filter(|name| !name.is_empty()).collect(),
        sum,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_many_topics_keep_label_values_bounded() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this binary");
    spa_dat::metrics::enable();

    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let app = test_app(Config::default())
        .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
        .add_application(Application::consumer(
            "devices",
            ["dev/+/t"],
            move |_: SpaMessage| {
                let h = Arc::clone(&h);
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
    let readiness = app.readiness();
    let app = app.add_producer("fleet", move |socket: Socket| {
        let readiness = readiness.clone();
        async move {
            // Publish once the consumer is subscribed (bounded: the test fails on its own wait).
            while !readiness.is_ready() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // First, while the cap has room: a topic of 10,000 bytes (a reply topic an outside client chose, say) is counted,
            // but never becomes a label value.
            socket
                .publish(SpaMessage::new(format!("long/{}", "x".repeat(10_000)), "1"))
                .await?;
            for i in 0..TOPICS {
                socket
                    .publish(SpaMessage::new(format!("dev/{i}/t"), "21.5"))
                    .await?;
            }
            Ok::<(), spa_dat::Error>(())
        }
    });
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let h = Arc::clone(&handled);
    wait_until("every message handled", Duration::from_secs(60), || {
        h.load(Ordering::SeqCst) >= TOPICS
    })
    .await;
    let text = prometheus.render();

    let (consumed, count) =
        destinations(&text, "messaging_client_consumed_messages_total", "devices");
    assert!(
        consumed == BTreeSet::from(["dev/+/t".to_owned()]),
        "one label value, the subscription; got {} values",
        consumed.len()
    );
    assert_eq!(count, TOPICS as f64);

    let (sent, count) = destinations(&text, "messaging_client_sent_messages_total", "fleet");
    assert!(
        sent.len() <= spa_dat::metrics::DESTINATION_LABEL_CAP + 1,
        "{} label values",
        sent.len()
    );
    assert!(sent.contains("_other"), "the rest counted as _other");
    assert!(
        sent.iter().all(|label| label.len() <= 256),
        "a label value of {} bytes",
        sent.iter().map(String::len).max().unwrap_or(0)
    );
    assert_eq!(count, TOPICS as f64 + 1.0, "every message counted");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops")
        .expect("joins")
        .expect("runs");
}
