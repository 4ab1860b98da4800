//! Batch handlers on the in-process bus: batches cut by size and by wait, per-element
//! outcomes through retries and dead letters, a key never in two batches at once, and the
//! start-up checks of batch arguments.

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::socket::headers;
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{Connection, Outgoing, SocketOptions, SocketProvider};
use spa_dat::{Application, Batch, BatchResult, Config, Json, RetryPolicy, SpaMessage};
use support::batches::{self, Workload};
use support::{joined, start_ready, test_app, wait_until};

fn bus() -> Arc<dyn SocketProvider> {
    Arc::new(MemorySocketProvider::new(MemoryBus::new(
        uuid::Uuid::new_v4().to_string(),
    )))
}

async fn publish(publisher: &Connection, topic: &str, payload: &str) {
    let outgoing = Outgoing::message(SpaMessage::new(topic, payload.to_owned())).expect("encodes");
    publisher.socket.send(outgoing).await.expect("publish");
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
        publish(&publisher, "work", payload).await;
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
        publish(&publisher, "work", payload).await;
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

/// Why a run of `app` was refused at start; `None` if it started.
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
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("Batch<SpaMessage>")),
        "{error:?}"
    );
    let error = start_error(Application::consumer("many", ["t"], many)).await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("not a batch consumer")),
        "{error:?}"
    );
    // A Batch inside a Batch: each element would find no batch to take, every call fail.
    async fn nested(batch: Batch<Batch<SpaMessage>>) {
        let _ = batch;
    }
    let error = start_error(
        Application::consumer("nested", ["t"], nested).batch(10, Duration::from_millis(5)),
    )
    .await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("not a batch consumer")),
        "{error:?}"
    );
}

// -------------------------------------------------------------------------------------------
// Found by an outside review of 8577fa7; each failed there.
// -------------------------------------------------------------------------------------------

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
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    // One message: the forming batch is not full, so its deadline is computed.
    publish(&publisher, "work", "first").await;
    publish(&publisher, "work", "second").await;
    // Only a consumer that survived the first message cuts a batch of two.
    let s = Arc::clone(&sizes);
    wait_until("a full batch of 2", Duration::from_secs(5), || {
        *s.lock().expect("sizes") == [2]
    })
    .await;
    assert!(!run.is_finished(), "the run ended by itself");
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_to_a_batch_consumer_is_dead_lettered_alone_and_the_rest_handled() {
    let provider = bus();
    let mut watcher = provider
        .connect(SocketOptions::new("watcher").topics(["dead"]))
        .await
        .expect("connect");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let app = test_app(Config::default()).add_application(
        Application::consumer("hostile", ["work"], move |batch: Batch<SpaMessage>| {
            s.lock().expect("seen").extend(
                batch
                    .iter()
                    .map(|m| m.payload_str().unwrap_or("?").to_owned()),
            );
            std::future::ready(())
        })
        .batch(10, Duration::from_millis(20))
        .dead_letter_topic("dead")
        .socket_provider(Arc::clone(&provider)),
    );
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider, "publisher").await;
    // Not envelopes at all: bare text, invalid UTF-8, nothing, 1 MiB of noise.
    let bare: [&[u8]; 4] = [b"bare text", &[0xff, 0xfe, 0x00], b"", &[b'{'; 1 << 20]];
    for payload in bare {
        let outgoing = Outgoing::new("work", bytes::Bytes::copy_from_slice(payload));
        publisher.socket.send(outgoing).await.expect("publish");
    }
    // Envelopes whose fields are hostile: the handler gets them (a batch handler never replies,
    // so a response topic nobody may publish to harms nothing).
    let mut wildcard = SpaMessage::new("work", "wildcard reply");
    wildcard.response_topic = Some("#".to_owned());
    let mut nul = SpaMessage::new("work", "nul reply");
    nul.response_topic = Some("a\u{0}b".to_owned());
    for message in [wildcard, nul, SpaMessage::new("work", "plain")] {
        let outgoing = Outgoing::message(message).expect("encodes");
        publisher.socket.send(outgoing).await.expect("publish");
    }
    let dead = support::next_payloads(&mut watcher.inbox, 4, Duration::from_secs(10)).await;
    let s = Arc::clone(&seen);
    wait_until("the envelopes", Duration::from_secs(5), || {
        s.lock().expect("seen").len() == 3
    })
    .await;
    shutdown.trigger();
    joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    assert_eq!(
        *seen.lock().expect("seen"),
        ["wildcard reply", "nul reply", "plain"]
    );
    assert_eq!(dead.len(), 4, "each bare payload dead-lettered once");
    assert!(
        dead.iter().any(|payload| payload.len() == 1 << 20),
        "the original bytes, whole"
    );
    // The run has stopped: all it dead-lettered is in the watcher's inbox already.
    let more = tokio::time::timeout(Duration::ZERO, watcher.inbox.recv()).await;
    assert!(more.is_err(), "nothing else dead-lettered: {more:?}");
}
