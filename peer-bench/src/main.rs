//! spa-dat, its Rust peer RustStream 0.7 and the raw client consuming the same messages from the
//! same broker, in one run (issue 23): Kafka (raw rdkafka, ruststream-rdkafka 0.7.1) and MQTT 5
//! at QoS 0 and 1 (raw rumqttc v5, ruststream-rumqttc 0.7.1, see `mqtt.rs`).
//!
//! ```text
//! cargo run --release --manifest-path peer-bench/Cargo.toml            # both sections
//! cargo run --release --manifest-path peer-bench/Cargo.toml -- mqtt    # one (kafka, mqtt)
//! ```
//! Kafka: `SPA_DAT_KAFKA_BOOTSTRAP`, or a broker started with `scripts/kafka.sh`; MQTT: a
//! Mosquitto of its own. RustStream's method (its docs, "Methodology"): the same messages byte
//! for byte, decoded by every loop into the same struct with serde_json, acknowledged after the
//! handler; each consumer attached in a fresh group (Kafka, from the earliest offset) or
//! subscribed before the first publish (MQTT); the loops interleaved (raw, spa-dat,
//! RustStream, raw, …) for three rounds after an untimed warm-up; each loop reported as its
//! best round with the median in parentheses and the worst in brackets. Each consumer runs in a
//! child process of this binary on a current-thread runtime; the window runs from the first
//! message to the last, and the CPU time (user + system, from /proc) and the Rust heap
//! allocations (a counting global allocator; librdkafka's C allocations are not counted) are
//! read at both ends.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;
use spa_dat_test_support::kafka as kafka_support;
use tokio::sync::Notify;

mod mqtt;
// The broker benchmarks' CPU clock and helpers, shared rather than copied.
#[path = "../../benches/support/mod.rs"]
mod support;

use support::cpu_seconds;

/// spa-dat's consumers' `fetch.queue.backoff.ms`, given to the other two loops as well.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// Records per round: a round lasts a few seconds.
const RECORDS: usize = 200_000;
pub(crate) const ROUNDS: usize = 3;

/// What every loop decodes each record into.
#[derive(Debug, Deserialize)]
pub struct Reading {
    pub sensor: String,
    pub celsius: f64,
    pub seq: u64,
}

/// Every record's value, the same bytes for every record and every loop.
pub(crate) const BODY: &[u8] = br#"{"sensor":"kitchen","celsius":21.5,"seq":123456}"#;

/// The Rust heap allocations of this process (librdkafka's own, made in C, are not counted).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations counted when the first record was handled, and when the last was.
static ALLOCATIONS_AT_FIRST: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS_AT_LAST: AtomicUsize = AtomicUsize::new(0);

static HANDLED: AtomicUsize = AtomicUsize::new(0);
/// How many messages this child takes.
static EXPECTED: AtomicUsize = AtomicUsize::new(RECORDS);
pub(crate) static ALL_HANDLED: Notify = Notify::const_new();
pub(crate) static FIRST: OnceLock<Instant> = OnceLock::new();
/// When the last message was handled, and the CPU seconds then and at the first.
static LAST: OnceLock<Instant> = OnceLock::new();
static CPU_AT_FIRST: OnceLock<f64> = OnceLock::new();
static CPU_AT_LAST: OnceLock<f64> = OnceLock::new();
/// The topic and group of this child's RustStream subscriber (its attribute reads them).
static TOPIC: OnceLock<String> = OnceLock::new();
static GROUP: OnceLock<String> = OnceLock::new();

/// What every loop's handler does with a decoded record.
/// The window is the first message to the last: CPU time and allocations read at both ends.
pub fn handled(reading: &Reading) {
    FIRST.get_or_init(|| {
        CPU_AT_FIRST.get_or_init(cpu_seconds);
        ALLOCATIONS_AT_FIRST.store(ALLOCATIONS.load(Ordering::Relaxed), Ordering::Relaxed);
        Instant::now()
    });
    black_box((reading.sensor.len(), reading.celsius, reading.seq));
    if HANDLED.fetch_add(1, Ordering::Relaxed) + 1 == EXPECTED.load(Ordering::Relaxed) {
        ALLOCATIONS_AT_LAST.store(ALLOCATIONS.load(Ordering::Relaxed), Ordering::Relaxed);
        CPU_AT_LAST.get_or_init(cpu_seconds);
        LAST.get_or_init(Instant::now);
        ALL_HANDLED.notify_one();
    }
}

/// A child's result line: `seconds_first_to_last cpu_seconds allocations`.
pub(crate) fn report() {
    let (Some(first), Some(last)) = (FIRST.get(), LAST.get()) else {
        panic!("not every message arrived");
    };
    let cpu = CPU_AT_LAST.get().copied().unwrap_or_default()
        - CPU_AT_FIRST.get().copied().unwrap_or_default();
    let allocations =
        ALLOCATIONS_AT_LAST.load(Ordering::Relaxed) - ALLOCATIONS_AT_FIRST.load(Ordering::Relaxed);
    println!("{} {cpu} {allocations}", (*last - *first).as_secs_f64());
}

/// A child's result line as (messages/s, CPU µs per message, Rust allocations per message).
pub(crate) fn parse(line: &str, count: usize) -> (f64, f64, f64) {
    let numbers: Vec<f64> = line
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    // The window holds count - 1 messages after the first.
    let after_first = (count - 1) as f64;
    (
        after_first / numbers[0],
        numbers[1] * 1e6 / after_first,
        numbers[2] / after_first,
    )
}

/// The loops of a run, in order.
pub(crate) const KINDS: [&str; 3] = ["raw", "spa-dat", "ruststream"];

/// ROUNDS rounds of every loop, interleaved: raw, spa-dat, RustStream, raw, …
pub(crate) fn interleaved(
    mut round: impl FnMut(&str) -> (f64, f64, f64),
) -> Vec<Vec<(f64, f64, f64)>> {
    let mut results = vec![Vec::new(); KINDS.len()];
    for _ in 0..ROUNDS {
        for (kind, runs) in KINDS.iter().zip(&mut results) {
            runs.push(round(kind));
        }
    }
    results
}

/// Each measure's best (median) [worst] per loop, and the ratios of the best rounds.
pub(crate) fn print_tables(results: &[Vec<(f64, f64, f64)>], unit: &str) {
    type Field = fn(&(f64, f64, f64)) -> f64;
    let fields: [(String, Field, bool); 3] = [
        (format!("consume {unit}s/s"), |r| r.0, true),
        (format!("consume CPU µs per {unit}"), |r| r.1, false),
        (format!("Rust allocations per {unit}"), |r| r.2, false),
    ];
    for (name, field, higher) in fields {
        println!("{name}: best (median) [worst]");
        let mut bests = Vec::new();
        for (kind, runs) in KINDS.iter().zip(results) {
            let (best, median, worst) = spread(&runs.iter().map(field).collect::<Vec<_>>(), higher);
            bests.push(best);
            println!("  {kind:<11} {best:>12.2} ({median:.2}) [{worst:.2}]");
        }
        println!(
            "  spa-dat / raw {:.2}x, RustStream / raw {:.2}x, spa-dat / RustStream {:.2}x (best rounds)",
            bests[1] / bests[0],
            bests[2] / bests[0],
            bests[1] / bests[2]
        );
    }
}

mod ruststream_side {
    use ruststream_rdkafka::prelude::*;

    use super::{handled, Reading, GROUP, TOPIC};

    #[subscriber(
        KafkaTopic::new(TOPIC.get().expect("topic").as_str())
            .group(GROUP.get().expect("group").as_str())
            .start(StartOffset::Earliest)
            .commit(Commit::Tracked)
    )]
    pub async fn consume(reading: &Reading) -> HandlerOutcome {
        handled(reading);
        HandlerOutcome::ack()
    }

    /// The RustStream service a user writes, with the one subscriber.
    pub async fn run(bootstrap: &str, group: &str) {
        let app = RustStream::new(AppInfo::new("peer-bench", "0.0.0")).with_broker(
            KafkaBroker::new([bootstrap.to_owned()])
                .default_group(group.to_owned())
                .config("fetch.queue.backoff.ms", super::FETCH_QUEUE_BACKOFF_MS),
            |b| {
                b.include(consume);
            },
        );
        let running = app.start().await.expect("RustStream starts");
        super::ALL_HANDLED.notified().await;
        running.shutdown().await.expect("RustStream stops");
    }
}

/// The consumer settings raw rdkafka runs with: spa-dat's group timings and fetch back-off
/// (librdkafka's default 1 s pause once its queue is full left a fast consumer idle inside the
/// window), offsets stored after the handler and committed by librdkafka. spa-dat's consumer
/// also reads statistics every 500 ms and commits itself (its finished-offset map).
fn raw_consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .create()
        .expect("consumer")
}

/// A child: consumes RECORDS with `kind`; prints its [`report`].
fn child(kind: &str, bootstrap: &str, topic: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let group = format!("peer-{kind}-{}", uuid::Uuid::new_v4().simple());
    runtime.block_on(async {
        match kind {
            "raw" => {
                let consumer = raw_consumer(bootstrap, &group);
                consumer.subscribe(&[topic]).expect("subscribe");
                for _ in 0..RECORDS {
                    let record = consumer.recv().await.expect("record");
                    let reading: Reading =
                        serde_json::from_slice(record.payload().unwrap_or_default())
                            .expect("decodes");
                    handled(&reading);
                    consumer.store_offset_from_message(&record).expect("store");
                }
            }
            "spa-dat" => {
                let mut config = spa_dat::socket::kafka::KafkaConfig::new(bootstrap);
                config.group_id = Some(group.clone());
                // The record's value is the body, as RustStream and the raw loop read it.
                config.wire = spa_dat::socket::WireFormat::Raw;
                let provider =
                    spa_dat::socket::kafka::KafkaSocketProvider::new(config).expect("config");
                let app = spa_dat::DistributedApplication::new()
                    .without_registered_handlers()
                    .watch_signals(false)
                    .config(spa_dat::Config::default())
                    .socket_provider(Arc::new(provider))
                    .add_consumer(
                        "peer",
                        [topic.to_owned()],
                        |spa_dat::Json(reading): spa_dat::Json<Reading>| async move {
                            handled(&reading);
                        },
                    );
                let shutdown = app.shutdown_handle();
                let run = tokio::spawn(app.start_async());
                ALL_HANDLED.notified().await;
                shutdown.trigger();
                run.await.expect("join").expect("spa-dat stops");
            }
            "ruststream" => {
                TOPIC.set(topic.to_owned()).expect("once");
                GROUP.set(group.clone()).expect("once");
                ruststream_side::run(bootstrap, &group).await;
            }
            other => panic!("no loop {other}"),
        }
    });
    report();
}

/// One child's round: (records/s, CPU µs per record, Rust allocations per record).
fn round(kind: &str, bootstrap: &str, topic: &str) -> (f64, f64, f64) {
    let output = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--child", kind, bootstrap, topic])
        .output()
        .expect("child");
    assert!(
        output.status.success(),
        "{kind}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&String::from_utf8_lossy(&output.stdout), RECORDS)
}

/// Best, median and worst of `values`, `higher_is_better` saying which end is best.
fn spread(values: &[f64], higher_is_better: bool) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if higher_is_better {
        sorted.reverse();
    }
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], &args[3], &args[4]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--mqtt-child") {
        EXPECTED.store(mqtt::MESSAGES, Ordering::Relaxed);
        mqtt::child(
            &args[2],
            args[3].parse().expect("port"),
            args[4].parse().expect("qos"),
        );
        return;
    }
    // `kafka` or `mqtt` runs that section alone (`kafka --produce`: see kafka_section).
    let named = |section: &str| args.iter().any(|a| a == section);
    let only = |section: &str| named(section) || !(named("kafka") || named("mqtt"));
    if only("kafka") {
        kafka_section(&args);
    }
    if only("mqtt") {
        mqtt::section();
    }
}

fn kafka_section(args: &[String]) {
    let (bootstrap, _own_broker) = kafka_support::bootstrap_or_start();
    let topic = format!("peer-{}", uuid::Uuid::new_v4().simple());
    // `--produce`: only fill a topic and name it, to profile one child on it
    // (`valgrind --tool=callgrind … --child spa-dat BOOTSTRAP TOPIC`).
    let produce_only = args.iter().any(|a| a == "--produce");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let mut sent = Vec::with_capacity(1_000);
        for i in 0..RECORDS {
            let key = format!("k{}", i % 64);
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(BODY))
                .map_err(|(error, _)| error)
                .expect("queued");
            sent.push(delivery);
            if sent.len() == 1_000 {
                for delivery in sent.drain(..) {
                    delivery.await.expect("delivered").expect("acknowledged");
                }
            }
        }
        for delivery in sent {
            delivery.await.expect("delivered").expect("acknowledged");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    });
    if produce_only {
        println!("{topic}");
        return;
    }
    println!(
        "Kafka on loopback ({bootstrap}), {RECORDS} records of {} bytes, {ROUNDS} interleaved rounds",
        BODY.len()
    );
    // Untimed: a fresh broker still compiles its hot paths.
    round("raw", &bootstrap, &topic);
    print_tables(
        &interleaved(|kind| round(kind, &bootstrap, &topic)),
        "record",
    );
}
