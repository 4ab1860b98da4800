//! Exactly-once against at-least-once on the same Kafka pipeline, measured in the same run:
//! a consumer (concurrency 16, ordered by key, 64 keys) reads A and publishes each record to
//! B; a `read_committed`
//! reader of B takes the outputs.
//!
//! - throughput: 20,000 records waiting in A, outputs/s from the pipeline's start to the last
//!   output read;
//! - end-to-end latency: 2,000 records/s offered for 5 s, publish to output read, p50 and p99.
//!
//! Rounds interleave the modes (at-least-once; exactly-once with transactions every 100 ms, the
//! default, and every 20 ms), twice each; the table shows each mode's median and the ratio
//! exactly-once / at-least-once.
//!
//! ```text
//! cargo bench --bench exactly_once
//! ```
//! `SPA_DAT_KAFKA_BOOTSTRAP=host:port`, or a broker is started with scripts/kafka.sh.

use spa_dat_test_support::kafka as kafka_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use spa_dat::socket::kafka::{Isolation, KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::{Outgoing, SocketOptions, SocketProvider};
use spa_dat::{Application, ApplicationLifeCycle, Socket, SpaMessage};

const WAITING: usize = 20_000;
const RATE: usize = 2_000;
const OFFERED_FOR: Duration = Duration::from_secs(5);
const ROUNDS: usize = 2;

fn unique(name: &str) -> String {
    format!(
        "bench.{name}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn micros_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// The pipeline's delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    AtLeastOnce,
    /// Transactions every 100 ms (the default).
    ExactlyOnce,
    /// Transactions every 20 ms.
    ExactlyOnceFast,
}

/// What the reader of B saw: each output's latency, and when the last came.
#[derive(Default)]
struct Outputs {
    latencies: Vec<Duration>,
    last: Option<Instant>,
}

/// A running application, stopped by [`Running::stop`].
struct Running {
    shutdown: spa_dat::Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(mut app: Application) -> Self {
        app.setup().await.expect("setup");
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(async move {
            app.run_async().await.expect("runs");
            app.teardown().await.expect("teardown");
        });
        Running { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.expect("stops");
    }
}

/// The pipeline A → B and the reader of B, started; the reader's outputs.
async fn start(
    bootstrap: &str,
    mode: Mode,
    a: &str,
    b: &str,
) -> (Running, Running, Arc<Mutex<Outputs>>) {
    let mut config = KafkaConfig::new(bootstrap);
    config.topic_partitions = 4;
    let exactly_once = mode != Mode::AtLeastOnce;
    if mode == Mode::ExactlyOnceFast {
        config.transaction_interval_ms = 20;
    }
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config.clone()).expect("config"));
    let out = b.to_owned();
    let pipeline = Running::start(
        Application::consumer(
            "pipeline",
            [a.to_owned()],
            move |message: SpaMessage, socket: Socket| {
                let out = out.clone();
                async move {
                    let payload = message.payload_str()?.to_owned();
                    socket.publish(SpaMessage::new(out.as_str(), payload)).await
                }
            },
        )
        .group(unique("pipeline"))
        .concurrency(16)
        .transactional(exactly_once)
        .socket_provider(provider),
    )
    .await;
    config.isolation = Isolation::ReadCommitted;
    let reader_provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config).expect("config"));
    let outputs = Arc::new(Mutex::new(Outputs::default()));
    let seen = Arc::clone(&outputs);
    let reader = Running::start(
        Application::consumer("reader", [b.to_owned()], move |message: SpaMessage| {
            let seen = Arc::clone(&seen);
            async move {
                let sent: u128 = message.payload_str().unwrap_or("0").parse().unwrap_or(0);
                let latency = Duration::from_micros(
                    u64::try_from(micros_now().saturating_sub(sent)).unwrap_or(u64::MAX),
                );
                let mut seen = seen.lock().expect("outputs");
                seen.latencies.push(latency);
                seen.last = Some(Instant::now());
            }
        })
        .group(unique("reader"))
        .socket_provider(reader_provider),
    )
    .await;
    (pipeline, reader, outputs)
}

async fn wait_for(outputs: &Mutex<Outputs>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while outputs.lock().expect("outputs").latencies.len() < count {
        assert!(
            Instant::now() < deadline,
            "{count} outputs not read within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publisher(bootstrap: &str) -> spa_dat::socket::spi::Connection {
    let provider = KafkaSocketProvider::new(KafkaConfig::new(bootstrap)).expect("config");
    provider
        .connect(SocketOptions::new(unique("publisher")))
        .await
        .expect("connect")
}

/// A record of key `n % 64` (the pipeline orders by key: 16 handlers busy at once).
fn record(topic: &str, n: usize) -> Outgoing {
    Outgoing::message(SpaMessage::new(topic, micros_now().to_string()))
        .expect("encodes")
        .with_key(format!("k{}", n % 64))
}

/// Outputs/s with `WAITING` records in A before the pipeline starts.
async fn throughput(bootstrap: &str, mode: Mode) -> f64 {
    let (a, b) = (unique("a"), unique("b"));
    let input = publisher(bootstrap).await;
    // Creates A with its partitions first: the pipeline's consumer would, but it starts later.
    let setup = KafkaSocketProvider::new(KafkaConfig {
        topic_partitions: 4,
        ..KafkaConfig::new(bootstrap)
    })
    .expect("config")
    .connect(SocketOptions::new(unique("setup")).topics([a.clone(), b.clone()]))
    .await
    .expect("topics");
    setup.socket.close().await.expect("close");
    let sent = futures_util::stream::iter((0..WAITING).map(|n| {
        let socket = Arc::clone(&input.socket);
        let outgoing = record(&a, n);
        async move { socket.send(outgoing).await }
    }))
    .buffered(1_024)
    .collect::<Vec<_>>()
    .await;
    assert!(sent.iter().all(Result::is_ok));
    let started = Instant::now();
    let (pipeline, reader, outputs) = start(bootstrap, mode, &a, &b).await;
    wait_for(&outputs, WAITING).await;
    let last = outputs.lock().expect("outputs").last.expect("outputs");
    pipeline.stop().await;
    reader.stop().await;
    input.socket.close().await.expect("close");
    WAITING as f64 / (last - started).as_secs_f64()
}

/// p50 and p99 of publish-to-output latency, in ms, at `RATE` records/s.
async fn latency(bootstrap: &str, mode: Mode) -> (f64, f64) {
    let (a, b) = (unique("a"), unique("b"));
    let (pipeline, reader, outputs) = start(bootstrap, mode, &a, &b).await;
    let input = publisher(bootstrap).await;
    // Warm: the first output read means both consumers are assigned and caught up.
    input.socket.send(record(&a, 0)).await.expect("published");
    wait_for(&outputs, 1).await;
    outputs.lock().expect("outputs").latencies.clear();
    let count = RATE * OFFERED_FOR.as_secs() as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE as u32);
    let mut sends = Vec::with_capacity(count);
    for n in 0..count {
        tick.tick().await;
        let socket = Arc::clone(&input.socket);
        let outgoing = record(&a, n);
        sends.push(tokio::spawn(async move { socket.send(outgoing).await }));
    }
    for send in sends {
        send.await.expect("sent").expect("published");
    }
    wait_for(&outputs, count).await;
    let mut latencies = std::mem::take(&mut outputs.lock().expect("outputs").latencies);
    pipeline.stop().await;
    reader.stop().await;
    input.socket.close().await.expect("close");
    (
        support::percentile(&mut latencies, 0.50) / 1_000.0,
        support::percentile(&mut latencies, 0.99) / 1_000.0,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = support::runtime();
    let (bootstrap, _own) = kafka_support::bootstrap_or_start();
    println!(
        "A -> consumer (concurrency 16) -> B -> read_committed reader; {WAITING} waiting for throughput, {RATE}/s for {OFFERED_FOR:?} for latency; {ROUNDS} interleaved rounds per mode, medians"
    );
    let modes = [Mode::AtLeastOnce, Mode::ExactlyOnce, Mode::ExactlyOnceFast];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut p50 = [Vec::new(), Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new(), Vec::new()];
    runtime.block_on(async {
        for _ in 0..ROUNDS {
            for (index, mode) in modes.into_iter().enumerate() {
                if support::selected("throughput") {
                    rates[index].push(throughput(&bootstrap, mode).await);
                }
                if support::selected("latency") {
                    let (median, tail) = latency(&bootstrap, mode).await;
                    p50[index].push(median);
                    p99[index].push(tail);
                }
            }
        }
    });
    println!(
        "{:<44} {:>12} {:>12} {:>7}",
        "measure (exactly-once / at-least-once)", "exactly-once", "at-least-once", "ratio"
    );
    for (index, interval) in [(1, "100 ms"), (2, "20 ms")] {
        if !rates[0].is_empty() {
            let alo = support::median(&mut rates[0]);
            let eos = support::median(&mut rates[index]);
            support::row(
                &format!("outputs/s, 20,000 waiting, txn {interval}"),
                eos,
                alo,
            );
        }
        if !p50[0].is_empty() {
            let alo = support::median(&mut p50[0]);
            let eos = support::median(&mut p50[index]);
            support::row(
                &format!("latency p50 ms, 2,000/s, txn {interval}"),
                eos,
                alo,
            );
            let alo = support::median(&mut p99[0]);
            let eos = support::median(&mut p99[index]);
            support::row(
                &format!("latency p99 ms, 2,000/s, txn {interval}"),
                eos,
                alo,
            );
        }
    }
}
