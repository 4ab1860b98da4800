//! spa-dat, its Rust peer RustStream 0.7 (ruststream-rdkafka 0.7.1) and raw rdkafka consuming
//! the same records from the same Kafka, in one run (issue 23).
//!
//! ```text
//! cargo run --release --manifest-path peer-bench/Cargo.toml
//! ```
//! Uses `SPA_DAT_KAFKA_BOOTSTRAP`, or starts a broker with `scripts/kafka.sh`. RustStream's
//! method (its docs, "Methodology"): the same records byte for byte, decoded by every loop into
//! the same struct with serde_json, acknowledged after the handler; each consumer attached in a
//! fresh group and reading from the earliest offset; the loops interleaved (raw, spa-dat,
//! RustStream, raw, …) for three rounds after an untimed warm-up; each loop reported as its best
//! round with the median in parentheses, and the worst, so the spread is visible. Each consumer
//! runs in a child process of this binary on a current-thread runtime, so the CPU time
//! (user + system) is its own; the window runs from the first record to the last.

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

/// Records per round: a round lasts a few seconds.
const RECORDS: usize = 200_000;
const ROUNDS: usize = 3;

/// What every loop decodes each record into.
#[derive(Debug, Deserialize)]
pub struct Reading {
    pub sensor: String,
    pub celsius: f64,
    pub seq: u64,
}

/// Every record's value, the same bytes for every record and every loop.
const BODY: &[u8] = br#"{"sensor":"kitchen","celsius":21.5,"seq":123456}"#;

static HANDLED: AtomicUsize = AtomicUsize::new(0);
static ALL_HANDLED: Notify = Notify::const_new();
static FIRST: OnceLock<Instant> = OnceLock::new();
/// The topic and group of this child's RustStream subscriber (its attribute reads them).
static TOPIC: OnceLock<String> = OnceLock::new();
static GROUP: OnceLock<String> = OnceLock::new();

/// What every loop's handler does with a decoded record.
pub fn handled(reading: &Reading) {
    FIRST.get_or_init(Instant::now);
    black_box((reading.sensor.len(), reading.celsius, reading.seq));
    if HANDLED.fetch_add(1, Ordering::Relaxed) + 1 == RECORDS {
        ALL_HANDLED.notify_one();
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
            KafkaBroker::new([bootstrap.to_owned()]).default_group(group.to_owned()),
            |b| {
                b.include(consume);
            },
        );
        let running = app.start().await.expect("RustStream starts");
        super::ALL_HANDLED.notified().await;
        running.shutdown().await.expect("RustStream stops");
    }
}

/// The consumer settings raw rdkafka runs with: spa-dat's group timings, offsets stored after
/// the handler and committed by librdkafka.
fn raw_consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .expect("consumer")
}

/// A child: consumes RECORDS with `kind`; prints `seconds_first_to_last cpu_seconds`.
fn child(kind: &str, bootstrap: &str, topic: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let group = format!("peer-{kind}-{}", uuid::Uuid::new_v4().simple());
    let cpu = cpu_seconds();
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
    let first = FIRST.get().expect("a record");
    // The last record was handled before ALL_HANDLED woke the loop: its end is now-ish; the
    // shutdown after it is outside the window (measured before it for the raw loop).
    println!("{} {}", first.elapsed().as_secs_f64(), cpu_seconds() - cpu);
}

/// User + system CPU seconds of this process, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    let user: f64 = fields[11].parse().expect("utime");
    let system: f64 = fields[12].parse().expect("stime");
    (user + system) / 100.0
}

/// One child's round: (records/s, CPU µs per record).
fn round(kind: &str, bootstrap: &str, topic: &str) -> (f64, f64) {
    let output = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--child", kind, bootstrap, topic])
        .output()
        .expect("child");
    assert!(
        output.status.success(),
        "{kind}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<f64> = line
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    (
        RECORDS as f64 / numbers[0],
        numbers[1] * 1e6 / RECORDS as f64,
    )
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
    let kinds = ["raw", "spa-dat", "ruststream"];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); kinds.len()];
    for _ in 0..ROUNDS {
        for (kind, runs) in kinds.iter().zip(&mut results) {
            runs.push(round(kind, &bootstrap, &topic));
        }
    }
    let column = |runs: &[(f64, f64)], field: fn(&(f64, f64)) -> f64, higher: bool| {
        spread(&runs.iter().map(field).collect::<Vec<_>>(), higher)
    };
    for (name, field, higher) in [
        (
            "consume records/s",
            (|r: &(f64, f64)| r.0) as fn(&(f64, f64)) -> f64,
            true,
        ),
        ("consume CPU µs/record", |r: &(f64, f64)| r.1, false),
    ] {
        println!("\n{name}: best (median) [worst]");
        let mut bests = Vec::new();
        for (kind, runs) in kinds.iter().zip(&results) {
            let (best, median, worst) = column(runs, field, higher);
            bests.push(best);
            println!("  {kind:<11} {best:>12.1} ({median:.1}) [{worst:.1}]");
        }
        println!(
            "  spa-dat / raw {:.2}x, RustStream / raw {:.2}x, spa-dat / RustStream {:.2}x (best rounds)",
            bests[1] / bests[0],
            bests[2] / bests[0],
            bests[1] / bests[2]
        );
    }
}
