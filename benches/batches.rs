//! Batch handlers against one message per call, measured in the same run: a handler with a
//! fixed cost per call (1 ms of async waiting, as a bulk insert's round trip), 5,000 messages
//! already waiting, messages/s from the first handler start to the last handler end. The ratio
//! should approach the batch size until the transport bounds it.
//!
//! ```text
//! cargo bench --bench batches              # every section
//! cargo bench --bench batches -- kafka     # one: memory | kafka
//! ```
//! Kafka: `SPA_DAT_KAFKA_BOOTSTRAP=host:port`, or a broker is started with scripts/kafka.sh.

use spa_dat_test_support::kafka as kafka_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{Outgoing, SocketOptions, SocketProvider};
use spa_dat::{Application, ApplicationLifeCycle, Batch, SpaMessage};

const MESSAGES: usize = 5_000;
const BATCH: usize = 500;
const CALL_COST: Duration = Duration::from_millis(1);

/// When handling started and ended, and how many messages were handled.
#[derive(Default)]
struct Span {
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    handled: AtomicUsize,
}

impl Span {
    fn started(&self) {
        self.first
            .lock()
            .expect("first")
            .get_or_insert_with(Instant::now);
    }

    fn ended(&self, messages: usize) {
        *self.last.lock().expect("last") = Some(Instant::now());
        self.handled.fetch_add(messages, Ordering::SeqCst);
    }

    fn rate(&self) -> f64 {
        let first = self.first.lock().expect("first").expect("started");
        let last = self.last.lock().expect("last").expect("ended");
        self.handled.load(Ordering::SeqCst) as f64 / (last - first).as_secs_f64()
    }
}

async fn publish(provider: &Arc<dyn SocketProvider>, topic: &str) {
    let publisher = provider
        .connect(SocketOptions::new(format!(
            "bench-publisher-{}",
            uuid::Uuid::new_v4().simple()
        )))
        .await
        .expect("connect");
    let sends = futures_util::stream::iter((0..MESSAGES).map(|i| {
        let socket = Arc::clone(&publisher.socket);
        let outgoing = Outgoing::message(SpaMessage::new(topic, i.to_string())).expect("encodes");
        async move { socket.send(outgoing).await }
    }))
    .buffered(256)
    .collect::<Vec<_>>()
    .await;
    assert!(sends.iter().all(Result::is_ok));
    publisher.socket.close().await.expect("close");
}

/// Messages/s of one consumer over `MESSAGES` messages on a fresh topic; `batch`: per call.
async fn rate(provider: &Arc<dyn SocketProvider>, separator: &str, batch: bool) -> f64 {
    let topic = format!(
        "bench{separator}batches{separator}{}",
        uuid::Uuid::new_v4().simple()
    );
    let group = format!("bench-batches-{}", uuid::Uuid::new_v4().simple());
    let span = Arc::new(Span::default());
    let s = Arc::clone(&span);
    let mut app = if batch {
        Application::consumer(
            "batched",
            [topic.clone()],
            move |messages: Batch<SpaMessage>| {
                let s = Arc::clone(&s);
                async move {
                    s.started();
                    tokio::time::sleep(CALL_COST).await;
                    s.ended(messages.len());
                }
            },
        )
        .batch(BATCH, Duration::from_millis(20))
    } else {
        Application::consumer("single", [topic.clone()], move |_message: SpaMessage| {
            let s = Arc::clone(&s);
            async move {
                s.started();
                tokio::time::sleep(CALL_COST).await;
                s.ended(1);
            }
        })
    }
    .group(group)
    .socket_provider(Arc::clone(provider));
    app.setup().await.expect("setup");
    let shutdown = app.shutdown_handle();
    let running = tokio::spawn(async move {
        app.run_async().await.expect("runs");
        app.teardown().await.expect("teardown");
    });
    // Kafka keeps what was published before the consumer was assigned its partition (the
    // group starts at the earliest offset); the in-process bus delivers to subscribers only,
    // subscribed once set up.
    publish(provider, &topic).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while span.handled.load(Ordering::SeqCst) < MESSAGES {
        assert!(Instant::now() < deadline, "not handled within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    running.await.expect("stops");
    span.rate()
}

async fn compare(name: &str, provider: Arc<dyn SocketProvider>, separator: &str) {
    let single = rate(&provider, separator, false).await;
    let batched = rate(&provider, separator, true).await;
    support::row(
        &format!("{name}: messages/s, batch {BATCH} / 1"),
        batched,
        single,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = support::runtime();
    println!(
        "{MESSAGES} messages waiting, a handler costing {CALL_COST:?} per call; batch {BATCH} (cut at 20 ms) against one message per call"
    );
    support::header("one per call");
    runtime.block_on(async {
        if support::selected("memory") {
            let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
            compare("memory", Arc::new(MemorySocketProvider::new(bus)), "/").await;
        }
        if support::selected("kafka") {
            let (bootstrap, _own) = kafka_support::bootstrap_or_start();
            let provider = KafkaSocketProvider::new(KafkaConfig::new(bootstrap)).expect("config");
            compare("kafka", Arc::new(provider), ".").await;
        }
    });
}
