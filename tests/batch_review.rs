//! Outside review of batch handlers (8577fa7): each test shows a defect found by reading
//! spa-dat/src/app/engine/batch.rs and spa-dat/src/handler/batch.rs. In-process bus only.

use spa_dat_test_support as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{Outgoing, SocketOptions, SocketProvider};
use spa_dat::{Application, Batch, Config, Json, SpaMessage};
use support::{joined, start_ready, test_app, wait_until};

fn bus() -> Arc<dyn SocketProvider> {
    Arc::new(MemorySocketProvider::new(MemoryBus::new(
        uuid::Uuid::new_v4().to_string(),
    )))
}

async fn publish(publisher: &spa_dat::socket::spi::Connection, topic: &str, payload: &str) {
    let outgoing = Outgoing::message(SpaMessage::new(topic, payload.to_owned())).expect("encodes");
    publisher.socket.send(outgoing).await.expect("publish");
}

/// `Application::batch(n, Duration::MAX)` ("cut by size only") panics the consumer as soon as
/// a batch holds fewer than `n` messages: `Forming::deadline` computes `since + wait`
/// (engine/batch.rs:83), which overflows `Instant` ("overflow when adding duration to
/// instant") inside `run_batches`. The application's task dies; nothing more is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_wait_of_duration_max_does_not_kill_the_consumer() {
    let provider = bus();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&sizes);
    let app = test_app(Config::default()).add_application(
        Application::consumer("by-size", ["work"], move |batch: Batch<SpaMessage>| {
            s.lock().expect("sizes").push(batch.len());
            std::future::ready(())
        })
        .batch(2, Duration::MAX)
        .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, mut run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    // One message: the forming batch is not full, so its deadline is computed.
    publish(&publisher, "work", "first").await;
    // The run must still be going (it only ends on shutdown).
    if let Ok(ended) = tokio::time::timeout(Duration::from_secs(2), &mut run).await {
        panic!("the run ended by itself after one message: {ended:?}");
    }
    publish(&publisher, "work", "second").await;
    let s = Arc::clone(&sizes);
    wait_until("a full batch of 2", Duration::from_secs(5), || {
        *s.lock().expect("sizes") == [2]
    })
    .await;
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
}

#[derive(serde::Deserialize)]
struct Reading {
    #[allow(dead_code)]
    value: f64,
}

/// When every element of a batch is not the JSON its `Batch<Json<T>>` asks for, the handler
/// is still called — with an empty batch (handler/batch.rs:98-118 returns `Ok(Batch { items:
/// [] })`; engine/batch.rs `call_batch` calls regardless). The docs say such elements are
/// "left out of the batch"; a batch of nothing reaches user code (a bulk insert of no rows,
/// `batch[0]`, an average over zero readings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_every_element_is_bad_json_does_not_call_the_handler_with_nothing() {
    let provider = bus();
    let mut watcher = provider
        .connect(SocketOptions::new("watcher").topics(["dead"]))
        .await
        .expect("connect");
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&sizes);
    let app = test_app(Config::default()).add_application(
        Application::consumer("readings", ["work"], move |batch: Batch<Json<Reading>>| {
            s.lock().expect("sizes").push(batch.len());
            std::future::ready(())
        })
        .batch(10, Duration::from_millis(50))
        .dead_letter_topic("dead")
        .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    for payload in ["not json", "nor this"] {
        publish(&publisher, "work", payload).await;
    }
    support::next_payloads(&mut watcher.inbox, 2, Duration::from_secs(5)).await;
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    let sizes = sizes.lock().expect("sizes");
    assert!(
        !sizes.contains(&0),
        "the handler was called with an empty batch: sizes {sizes:?}"
    );
}

async fn start_error(app: Application) -> Option<String> {
    let result = test_app(Config::default())
        .socket_provider(bus())
        .add_application(app);
    let shutdown = result.shutdown_handle();
    let readiness = result.readiness();
    let run = tokio::spawn(result.start_async());
    tokio::select! {
        ended = tokio::time::timeout(Duration::from_secs(10), run) => {
            let ended = ended.expect("in time").expect("not panicked");
            ended.err().map(|e| e.to_string())
        }
        _ = readiness.ready() => {
            shutdown.trigger();
            None
        }
    }
}

/// The commit promises "a batch consumer must take a Batch"; the check only refuses
/// single-message extractors (extract.rs `needs_message`). A batch consumer whose handler
/// takes no `Batch` at all starts, and every batch is acknowledged as handled without the
/// handler seeing a message.
#[tokio::test]
async fn a_batch_consumer_without_a_batch_argument_is_refused_at_start() {
    let error = start_error(
        Application::consumer("no-batch", ["t"], || async {}).batch(10, Duration::from_millis(5)),
    )
    .await;
    assert!(error.is_some(), "a batch consumer taking no Batch started");
}

/// Two `Batch` arguments pass the start-up check (each `Batch::check` looks only at itself),
/// but the second finds the batch taken ("no batch in this call"): every call fails, and
/// every message goes through retries to the dead-letter topic (or is retried forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_with_two_batch_arguments_is_refused_at_start() {
    async fn two(a: Batch<SpaMessage>, b: Batch<SpaMessage>) {
        let _ = (a, b);
    }
    let error = start_error(
        Application::consumer("two-batches", ["t"], two).batch(10, Duration::from_millis(5)),
    )
    .await;
    assert!(
        error.is_some(),
        "a handler taking two Batch arguments started (each call would fail)"
    );
}
