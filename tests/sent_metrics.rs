//! Everything an application publishes is counted in `messaging_client_sent_messages_total`:
//! its own publishes, the replies its handlers return and the dead letters it forwards — they
//! all go through the one `Socket` handle. Replies are labelled `_reply` (response topics are
//! chosen per request by the requester: as label values they would be unbounded), dead letters
//! by their dead-letter topic. (One test per binary: the metrics recorder is global.)

use spa_dat_test_support as support;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::{Application, Config, RetryPolicy, Socket, SpaMessage};
use support::prometheus::by_destination;
use support::test_app;

const REQUESTS: usize = 20;
const FAILING: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_dead_letters_are_counted_as_sent() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this binary");
    spa_dat::metrics::enable();

    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let requester: Arc<OnceLock<Socket>> = Arc::default();
    let slot = Arc::clone(&requester);
    // The asking producer waits forever: a short grace period ends it at shutdown.
    let app = test_app(Config {
        shutdown_grace_ms: 200,
        ..Config::default()
    })
    .socket_provider(Arc::new(MemorySocketProvider::new(bus)))
    .add_application(
        Application::consumer("answering", ["questions"], |m: SpaMessage| async move {
            let text = m.payload_str()?.to_owned();
            if text == "fail" {
                return Err(spa_dat::BoxError::from("cannot answer"));
            }
            Ok(SpaMessage::new("", format!("answer to {text}")))
        })
        .retry(RetryPolicy::no_retries())
        .dead_letter_topic("questions.dead"),
    )
    .add_application(Application::producer("asking", move |socket: Socket| {
        let slot = Arc::clone(&slot);
        async move {
            let _ = slot.set(socket);
            std::future::pending::<()>().await;
        }
    }));
    let readiness = app.readiness();
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    tokio::time::timeout(Duration::from_secs(30), readiness.ready())
        .await
        .expect("ready within 30 s");
    support::wait_until("the producer's socket", Duration::from_secs(10), || {
        requester.get().is_some()
    })
    .await;
    let socket = requester.get().expect("set");
    for i in 0..REQUESTS {
        let reply = socket
            .request_with_timeout(
                SpaMessage::new("questions", i.to_string()),
                Duration::from_secs(10),
            )
            .await
            .expect("a reply");
        assert_eq!(reply.payload_str().expect("text"), format!("answer to {i}"));
    }
    for _ in 0..FAILING {
        socket
            .publish(SpaMessage::new("questions", "fail"))
            .await
            .expect("published");
    }
    support::wait_until("the dead letters counted", Duration::from_secs(30), || {
        by_destination(
            &prometheus.render(),
            "spa_messages_dead_lettered_total",
            "answering",
        )
        .values()
        .sum::<f64>()
            >= FAILING as f64
    })
    .await;
    let text = prometheus.render();
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");

    let sent = by_destination(&text, "messaging_client_sent_messages_total", "answering");
    assert_eq!(
        sent,
        BTreeMap::from([
            ("_reply".to_owned(), REQUESTS as f64),
            ("questions.dead".to_owned(), FAILING as f64),
        ]),
        "the responder's replies and dead letters, by destination"
    );
    let asked = by_destination(&text, "messaging_client_sent_messages_total", "asking");
    assert_eq!(
        asked,
        BTreeMap::from([("questions".to_owned(), (REQUESTS + FAILING) as f64)]),
        "the requester's requests and publishes"
    );
}
