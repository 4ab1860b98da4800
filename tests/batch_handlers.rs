//! Batch handlers on the in-process bus: batches cut by size and by wait, per-element
//! outcomes through retries and dead letters, a key never in two batches at once, and the
//! start-up checks of batch arguments.

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::socket::headers;
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, Batch, BatchResult, Config, Json, RetryPolicy, SpaMessage};
use support::batches::{self, Workload};
use support::{joined, start_ready, test_app, wait_until};

fn bus() -> Arc<dyn SocketProvider> {
    Arc::new(MemorySocketProvider::new(MemoryBus::new(
        uuid::Uuid::new_v4().to_string(),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_messages_in_batches_of_500_each_settled_as_its_outcome_said() {
    let provider = bus();
    let workload = Workload {
        messages: 100_000,
        keys: 1_000,
        size: 500,
        wait: Duration::from_millis(20),
        concurrency: 4,
    };
    let ledger = batches::run(
        &provider,
        &["work".to_owned()],
        "dead",
        None,
        |key| ("work".to_owned(), Some(key.to_string())),
        workload,
        Duration::from_secs(120),
    )
    .await;
    assert!(ledger.largest.load(Ordering::Relaxed) <= 500);
    assert!(
        ledger.calls.load(Ordering::Relaxed) < 100_000 / 10,
        "batched: {} calls",
        ledger.calls.load(Ordering::Relaxed)
    );
}

/// Sizes of the batches a handler was called with.
fn sizes_recorder(
    sizes: &Arc<Mutex<Vec<usize>>>,
) -> impl Fn(Batch<SpaMessage>) -> std::future::Ready<()> + Clone + Send + Sync + 'static {
    let sizes = Arc::clone(sizes);
    move |batch: Batch<SpaMessage>| {
        sizes.lock().expect("sizes").push(batch.len());
        std::future::ready(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_traffic_is_cut_by_wait_and_a_burst_by_size() {
    let provider = bus();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let app = test_app(Config::default()).add_application(
        Application::consumer("batcher", ["work"], sizes_recorder(&sizes))
            .batch(100, Duration::from_millis(50))
            .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    let socket = spa_dat::Socket::new(
        Arc::clone(&publisher.socket),
        spa_dat::MessageBuilder::new(Some("p"), None),
        Duration::from_secs(5),
    );
    let three = (0..3).map(|i| SpaMessage::new("work", format!("thin {i}")));
    assert!(socket.publish_batch(three).await.iter().all(Result::is_ok));
    let s = Arc::clone(&sizes);
    wait_until("the thin batch", Duration::from_secs(5), || {
        !s.lock().expect("sizes").is_empty()
    })
    .await;
    assert_eq!(*sizes.lock().expect("sizes"), [3], "one batch, cut by wait");
    let burst = (0..250).map(|i| SpaMessage::new("work", format!("burst {i}")));
    assert!(socket.publish_batch(burst).await.iter().all(Result::is_ok));
    let s = Arc::clone(&sizes);
    wait_until("the burst", Duration::from_secs(5), || {
        s.lock().expect("sizes").iter().sum::<usize>() == 253
    })
    .await;
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    let sizes = sizes.lock().expect("sizes");
    assert!(
        sizes.iter().all(|&n| n <= 100),
        "never above the size: {sizes:?}"
    );
    assert!(
        sizes.contains(&100),
        "a full batch is cut at once: {sizes:?}"
    );
}

#[derive(serde::Deserialize)]
struct Reading {
    value: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_that_is_not_the_json_asked_for_is_dead_lettered_and_left_out_of_the_batch() {
    let provider = bus();
    let mut watcher = provider
        .connect(SocketOptions::new("watcher").topics(["dead"]))
        .await
        .expect("connect");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, c) = (Arc::clone(&seen), Arc::clone(&calls));
    let app = test_app(Config::default()).add_application(
        Application::consumer("readings", ["work"], move |batch: Batch<Json<Reading>>| {
            let (s, c) = (Arc::clone(&s), Arc::clone(&c));
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                s.lock()
                    .expect("seen")
                    .extend(batch.iter().map(|Json(r)| r.value));
            }
        })
        .batch(10, Duration::from_millis(50))
        .dead_letter_topic("dead")
        .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    for payload in [r#"{"value": 1.5}"#, "not json", r#"{"value": 2.5}"#] {
        let message = SpaMessage::new("work", payload);
        let outgoing = spa_dat::socket::spi::Outgoing::message(message).expect("encodes");
        publisher.socket.send(outgoing).await.expect("publish");
    }
    let dead = tokio::time::timeout(Duration::from_secs(5), watcher.inbox.recv())
        .await
        .expect("dead letter arrives")
        .expect("open");
    let s = Arc::clone(&seen);
    wait_until("the good ones", Duration::from_secs(5), || {
        s.lock().expect("seen").len() == 2
    })
    .await;
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    assert_eq!(*seen.lock().expect("seen"), [1.5, 2.5]);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call, no retry");
    let dead_message = SpaMessage::from_json(&dead.payload).expect("the original bytes");
    assert_eq!(dead_message.payload_str().ok(), Some("not json"));
    assert_eq!(dead.headers.get(headers::DEAD_LETTER_ATTEMPTS), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_is_retried_whole_and_an_index_past_the_end_is_ignored() {
    let provider = bus();
    let calls = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let c = Arc::clone(&calls);
    let app = test_app(Config::default()).add_application(
        Application::consumer("flaky", ["work"], move |batch: Batch<SpaMessage>| {
            let c = Arc::clone(&c);
            async move {
                let payloads: Vec<String> = batch
                    .iter()
                    .map(|m| m.payload_str().expect("utf-8").to_owned())
                    .collect();
                let first = {
                    let mut calls = c.lock().expect("calls");
                    calls.push(payloads);
                    calls.len() == 1
                };
                if first {
                    panic!("first call panics");
                }
                BatchResult::new().failed(99, "no such element")
            }
        })
        .batch(10, Duration::from_millis(50))
        .retry(RetryPolicy::default().delays(Duration::from_millis(10), Duration::from_millis(10)))
        .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    for payload in ["a", "b"] {
        let message = SpaMessage::new("work", payload);
        let outgoing = spa_dat::socket::spi::Outgoing::message(message).expect("encodes");
        publisher.socket.send(outgoing).await.expect("publish");
    }
    let c = Arc::clone(&calls);
    wait_until("the retry", Duration::from_secs(5), || {
        c.lock().expect("calls").len() == 2
    })
    .await;
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    let calls = calls.lock().expect("calls");
    assert_eq!(
        *calls,
        [["a", "b"], ["a", "b"]],
        "retried whole, then settled"
    );
}

async fn start_error(app: Application) -> String {
    let result = test_app(Config::default())
        .socket_provider(bus())
        .add_application(app)
        .start_async();
    let error = tokio::time::timeout(Duration::from_secs(10), result)
        .await
        .expect("in time")
        .expect_err("refused at start");
    error.to_string()
}

#[tokio::test]
async fn batch_arguments_and_batch_consumers_must_go_together() {
    async fn single(message: SpaMessage) {
        let _ = message;
    }
    async fn many(batch: Batch<SpaMessage>) {
        let _ = batch;
    }
    let error = start_error(
        Application::consumer("single", ["t"], single).batch(10, Duration::from_millis(5)),
    )
    .await;
    assert!(error.contains("Batch<SpaMessage>"), "{error}");
    let error = start_error(Application::consumer("many", ["t"], many)).await;
    assert!(error.contains("not a batch consumer"), "{error}");
}
