//! Parallel Consumer's published workload on every transport: 10,000 messages, 1,000 keys,
//! 0–5 ms of async work each (seeded, the same every run), one publisher, one partition;
//! key-ordered with `concurrency = 64` against the sequential consumer (`concurrency = 1`)
//! measured in the same run. Then the cost of the engine for handlers that do not wait: CPU per
//! message at concurrency 64 against 1 on the in-process bus.
//!
//! ```text
//! cargo bench --bench concurrency              # every section
//! cargo bench --bench concurrency -- kafka     # one: memory | mqtt | kafka | cpu
//! ```
//! Kafka: `SPA_DAT_KAFKA_BOOTSTRAP=host:port`, or a broker is started with scripts/kafka.sh.

use spa_dat_test_support::kafka as kafka_support;
use spa_dat_test_support::mosquitto;
use spa_dat_test_support::ordering;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::Outgoing;
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, ApplicationLifeCycle, MessageOrder, SpaMessage};

const MESSAGES: usize = 10_000;
const KEYS: u32 = 1_000;
const MAX_WORK_US: u64 = 5_000;
const CPU_MESSAGES: usize = 200_000;

/// First handler start to last handler end, and what the handler saw.
struct Timing {
    elapsed: Duration,
    most_at_once: usize,
}

/// Where the workload is published, and how.
#[derive(Clone, Copy)]
enum Transport {
    Memory,
    Mqtt,
    Kafka,
}

fn topic_of(transport: Transport, base: &str, key: u32) -> String {
    match transport {
        // MQTT has no keys: a topic per key, ordered by topic.
        Transport::Mqtt => format!("{base}/k{key}"),
        Transport::Memory | Transport::Kafka => base.to_owned(),
    }
}

async fn publish(
    provider: &Arc<dyn SocketProvider>,
    transport: Transport,
    base: &str,
    work: &[(u32, u32)],
) {
    let publisher = provider
        .connect(SocketOptions::new(format!(
            "bench-publisher-{}",
            uuid::Uuid::new_v4().simple()
        )))
        .await
        .expect("connect");
    // Concurrent publishes of one socket keep their order on MQTT (one ordered queue) and
    // Kafka (librdkafka's queue); on the in-process bus they race for the inbox: one by one.
    let chunk = match transport {
        Transport::Memory => 1,
        Transport::Mqtt | Transport::Kafka => 500,
    };
    for chunk in work.chunks(chunk) {
        let sends = chunk.iter().map(|(key, seq)| {
            let message = SpaMessage::new(
                topic_of(transport, base, *key),
                ordering::payload(*key, *seq),
            );
            let outgoing = Outgoing::message(message)
                .expect("encodes")
                .with_key(key.to_string());
            let socket = &publisher.socket;
            async move { socket.send(outgoing).await }
        });
        for result in futures_util::future::join_all(sends).await {
            result.expect("publish");
        }
    }
    publisher.socket.close().await.expect("close");
}

/// Runs the workload through a consumer with `limit` handlers at once.
async fn run_workload(
    provider: Arc<dyn SocketProvider>,
    transport: Transport,
    limit: usize,
    work: &[(u32, u32)],
) -> Timing {
    let base = format!(
        "bench-pc-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let filter = match transport {
        Transport::Mqtt => format!("{base}/+"),
        Transport::Memory | Transport::Kafka => base.clone(),
    };
    let checker = Arc::new(ordering::OrderChecker::default());
    let first_start: Arc<Mutex<Option<Instant>>> = Arc::default();
    let last_end: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (c, f, l) = (
        Arc::clone(&checker),
        Arc::clone(&first_start),
        Arc::clone(&last_end),
    );
    let mut app = Application::consumer("pc-workload", [filter], move |m: SpaMessage| {
        let (c, f, l) = (Arc::clone(&c), Arc::clone(&f), Arc::clone(&l));
        async move {
            f.lock().expect("lock").get_or_insert_with(Instant::now);
            c.handle(m.payload_str().expect("utf-8"), MAX_WORK_US).await;
            *l.lock().expect("lock") = Some(Instant::now());
        }
    })
    .group(format!("bench-group-{}", uuid::Uuid::new_v4().simple()))
    .socket_provider(Arc::clone(&provider))
    .concurrency(limit)
    .ordering(MessageOrder::Key);
    let shutdown = app.shutdown_handle();
    if let Transport::Kafka = transport {
        // Kafka keeps the records: publish first, so the consumer starts on a full topic.
        publish(&provider, transport, &base, work).await;
    }
    app.setup().await.expect("setup");
    let running = tokio::spawn(async move {
        let _ = app.run_async().await;
        let _ = app.teardown().await;
    });
    if !matches!(transport, Transport::Kafka) {
        publish(&provider, transport, &base, work).await;
    }
    while checker.handled.load(Ordering::SeqCst) < work.len() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.trigger();
    let _ = running.await;
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
    let first = first_start.lock().expect("lock").expect("started");
    let last = last_end.lock().expect("lock").expect("ended");
    Timing {
        elapsed: last - first,
        most_at_once: checker.max_in_flight.load(Ordering::SeqCst),
    }
}

async fn compare(name: &str, provider: Arc<dyn SocketProvider>, transport: Transport) {
    let work = ordering::workload(MESSAGES, KEYS, 42);
    let concurrent = run_workload(Arc::clone(&provider), transport, 64, &work).await;
    let sequential = run_workload(provider, transport, 1, &work).await;
    println!(
        "{name:<8} key-ordered, concurrency 64: {:>8.3} s (at most {} at once) | sequential: {:>8.3} s | ratio {:.3}",
        concurrent.elapsed.as_secs_f64(),
        concurrent.most_at_once,
        sequential.elapsed.as_secs_f64(),
        concurrent.elapsed.as_secs_f64() / sequential.elapsed.as_secs_f64()
    );
}

/// CPU seconds per message of a consumer whose handler does not wait, at `limit`.
async fn cpu_per_message(limit: usize) -> f64 {
    let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
    let provider: Arc<dyn SocketProvider> = Arc::new(MemorySocketProvider::new(bus));
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let mut app = Application::consumer("cpu", ["cpu"], move |m: SpaMessage| {
        let h = Arc::clone(&h);
        async move {
            std::hint::black_box(m);
            h.fetch_add(1, Ordering::Relaxed);
        }
    })
    .socket_provider(Arc::clone(&provider))
    .concurrency(limit);
    let shutdown = app.shutdown_handle();
    app.setup().await.expect("setup");
    let running = tokio::spawn(async move {
        let _ = app.run_async().await;
        let _ = app.teardown().await;
    });
    let publisher = provider
        .connect(SocketOptions::new("cpu-publisher"))
        .await
        .expect("connect");
    let bytes = SpaMessage::new("cpu", "x".repeat(100))
        .to_json()
        .expect("encodes");
    let started = support::cpu_seconds();
    for i in 0..CPU_MESSAGES {
        let outgoing = Outgoing::new("cpu", bytes.clone()).with_key((i % 1000).to_string());
        publisher.socket.send(outgoing).await.expect("publish");
    }
    while handled.load(Ordering::Relaxed) < CPU_MESSAGES {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cpu = support::cpu_seconds() - started;
    shutdown.trigger();
    let _ = running.await;
    cpu / CPU_MESSAGES as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = support::runtime();
    println!(
        "{MESSAGES} messages, {KEYS} keys, 0-{} ms of async work each (seeded), one publisher, one partition",
        MAX_WORK_US / 1000
    );
    runtime.block_on(async {
        if support::selected("memory") {
            let bus = MemoryBus::new(uuid::Uuid::new_v4().to_string());
            compare("memory", Arc::new(MemorySocketProvider::new(bus)), Transport::Memory).await;
        }
        if support::selected("mqtt") {
            let broker = mosquitto::Mosquitto::start();
            let provider = MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port))
                .expect("config");
            compare("mqtt", Arc::new(provider), Transport::Mqtt).await;
        }
        if support::selected("kafka") {
            let (bootstrap, _own) = kafka_support::bootstrap_or_start();
            let provider = KafkaSocketProvider::new(KafkaConfig::new(bootstrap)).expect("config");
            compare("kafka", Arc::new(provider), Transport::Kafka).await;
        }
        if support::selected("cpu") {
            // Alternating rounds, medians: the machine's noise is larger than the effect.
            let (mut one, mut many) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                one.push(cpu_per_message(1).await * 1e6);
                many.push(cpu_per_message(64).await * 1e6);
            }
            println!(
                "handlers that do not wait, in-process bus, {CPU_MESSAGES} messages: CPU µs/message at concurrency 64: {:.2} | at 1: {:.2} | ratio {:.3}",
                support::median(&mut many),
                support::median(&mut one),
                support::median(&mut many) / support::median(&mut one)
            );
        }
    });
}
