//! Kafka benchmark against a real Apache Kafka: raw rdkafka and spa-dat in one run.
//!
//! ```text
//! cargo bench --bench kafka      # uses SPA_DAT_KAFKA_BOOTSTRAP, or starts a broker with scripts/kafka.sh
//! ```
//! Consumers run in child processes of this binary, so CPU time (user+sys) is their own.
//! Printed, each with the framework/raw ratio: consumer records/s over pre-produced records
//! (first → last record), ms from start to the first record, consumer CPU µs/record, producer
//! records/s awaited one by one and pipelined, request/reply latency p50/p99. Medians of
//! alternating rounds. `cargo bench --bench kafka -- consumer` runs one section
//! (consumer, producer, request).

use spa_dat_test_support::kafka as kafka_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Config, DistributedApplication, SpaMessage};
use tokio::sync::Notify;

const RECORDS: usize = 200_000;
const AWAITED: usize = 3_000;
const PIPELINED: usize = 100_000;
const REQUESTS: usize = 500;
const PRODUCER_ROUNDS: usize = 5;
const CONSUMER_ROUNDS: usize = 3;

/// The envelope both sides send: the framework's publish writes the same bytes.
fn record(topic: &str, seq: usize) -> Vec<u8> {
    SpaMessage::new(topic, format!("{seq}"))
        .to_json()
        .expect("encodes")
}

fn raw_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

fn raw_consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        // The group settings spa-dat uses, so both join the same way.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // And its fetch back-off: librdkafka's default pauses fetching for 1 s once its queue
        // is full, which can leave a fast consumer idle inside the measured window.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer")
}

/// Child: consume RECORDS from `topic`; print `first_to_last start_to_last cpu`.
fn consumer_child(kind: &str, bootstrap: String, topic: String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async move {
        let group = format!("bench-{kind}-{}", uuid::Uuid::new_v4().simple());
        let cpu_start = support::cpu_seconds();
        let start = Instant::now();
        let first = Arc::new(std::sync::OnceLock::<Instant>::new());
        if kind == "raw" {
            let consumer = raw_consumer(&bootstrap, &group);
            // Metadata up front, as spa-dat does when it creates the topic.
            consumer
                .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(10)))
                .expect("metadata");
            consumer.subscribe(&[&topic]).expect("subscribe");
            let mut count = 0;
            while count < RECORDS {
                let message = consumer.recv().await.expect("record");
                first.get_or_init(Instant::now);
                let decoded =
                    SpaMessage::from_json(message.payload().unwrap_or_default()).expect("decodes");
                std::hint::black_box(decoded);
                consumer.store_offset_from_message(&message).expect("store");
                count += 1;
            }
        } else {
            let done = Arc::new(Notify::new());
            let count = Arc::new(AtomicUsize::new(0));
            let (d, c, f) = (Arc::clone(&done), Arc::clone(&count), Arc::clone(&first));
            let mut config = KafkaConfig::new(bootstrap);
            config.group_id = Some(group);
            let app = DistributedApplication::new()
                .without_registered_handlers()
                .watch_signals(false)
                .config(Config::default())
                .socket_provider(Arc::new(KafkaSocketProvider::new(config).expect("config")))
                .add_consumer("bench", [topic], move |message: SpaMessage| {
                    let (d, c, f) = (Arc::clone(&d), Arc::clone(&c), Arc::clone(&f));
                    async move {
                        f.get_or_init(Instant::now);
                        std::hint::black_box(message);
                        if c.fetch_add(1, Ordering::Relaxed) + 1 == RECORDS {
                            d.notify_one();
                        }
                    }
                });
            let shutdown = app.shutdown_handle();
            let run = tokio::spawn(app.start_async());
            done.notified().await;
            println!(
                "{} {} {}",
                first.get().expect("first").elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64(),
                support::cpu_seconds() - cpu_start
            );
            shutdown.trigger();
            run.await.expect("join").expect("run");
            return;
        }
        println!(
            "{} {} {}",
            first.get().expect("first").elapsed().as_secs_f64(),
            start.elapsed().as_secs_f64(),
            support::cpu_seconds() - cpu_start
        );
    });
}

/// One consumer child: (records/s first → last, ms from start to the first record, CPU µs/record).
fn run_consumer(kind: &str, bootstrap: &str, topic: &str) -> (f64, f64, f64) {
    let output = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--consumer-child", kind, bootstrap, topic])
        .output()
        .expect("child");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let parts: Vec<f64> = line
        .split_whitespace()
        .map(|p| p.parse().expect("number"))
        .collect();
    (
        RECORDS as f64 / parts[0],
        (parts[1] - parts[0]) * 1e3,
        parts[2] * 1e6 / RECORDS as f64,
    )
}

async fn raw_produce(producer: &FutureProducer, topic: &str, count: usize, pipelined: bool) -> f64 {
    let started = Instant::now();
    if pipelined {
        for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
            // Encoded inside the future, as the framework's publish does.
            let sends = chunk.iter().map(|seq| async move {
                let payload = record(topic, *seq);
                producer
                    .send(
                        FutureRecord::<(), _>::to(topic).payload(&payload),
                        Timeout::Never,
                    )
                    .await
                    .expect("sent");
            });
            join_all(sends).await;
        }
    } else {
        for seq in 0..count {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(&record(topic, seq)),
                    Timeout::Never,
                )
                .await
                .expect("sent");
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}

async fn framework_produce(
    socket: &Arc<dyn spa_dat::socket::spi::SpaSocket>,
    topic: &str,
    count: usize,
    pipelined: bool,
) -> f64 {
    let started = Instant::now();
    if pipelined {
        for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
            let sends = chunk.iter().map(|seq| async move {
                let message = SpaMessage::new(topic, format!("{seq}"));
                socket.publish(&message).await.expect("sent");
            });
            join_all(sends).await;
        }
    } else {
        for seq in 0..count {
            socket
                .publish(&SpaMessage::new(topic, format!("{seq}")))
                .await
                .expect("sent");
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// `Socket::publish_batch` in batches of 10,000 (as `framework_produce` pipelines).
async fn framework_produce_batches(socket: &spa_dat::Socket, topic: &str, count: usize) -> f64 {
    let started = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
        let batch = chunk
            .iter()
            .map(|seq| SpaMessage::new(topic, format!("{seq}")));
        for result in socket.publish_batch(batch).await {
            result.expect("sent");
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}

async fn raw_round_trips(bootstrap: &str) -> Vec<Duration> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (request_topic, reply_topic) = (format!("raw-rpc-{suffix}"), format!("raw-reply-{suffix}"));
    let producer = raw_producer(bootstrap);
    // Create both topics first so neither side waits for auto-creation.
    for topic in [&request_topic, &reply_topic] {
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&record(topic, 0)),
                Timeout::Never,
            )
            .await
            .expect("create");
    }
    let responder = Arc::new(raw_consumer(bootstrap, &format!("raw-responder-{suffix}")));
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(&request_topic, 0, rdkafka::Offset::End)
        .expect("assign");
    responder.assign(&assignment).expect("assign");
    let responder_producer = producer.clone();
    let responder_task = tokio::spawn(async move {
        loop {
            let message = responder.recv().await.expect("request");
            let request =
                SpaMessage::from_json(message.payload().unwrap_or_default()).expect("decodes");
            let Some(reply_to) = request.response_topic.clone() else {
                continue;
            };
            let id = message
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "id")
                        .and_then(|h| h.value)
                        .map(<[u8]>::to_vec)
                })
                .unwrap_or_default();
            let reply = SpaMessage::new(reply_to.clone(), request.payload)
                .to_json()
                .expect("encodes");
            responder_producer
                .send(
                    FutureRecord::<(), _>::to(&reply_to)
                        .payload(&reply)
                        .headers(OwnedHeaders::new().insert(Header {
                            key: "id",
                            value: Some(&id),
                        })),
                    Timeout::Never,
                )
                .await
                .expect("reply");
        }
    });
    let replies = raw_consumer(bootstrap, &format!("raw-requester-{suffix}"));
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(&reply_topic, 0, rdkafka::Offset::End)
        .expect("assign");
    replies.assign(&assignment).expect("assign");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let started = Instant::now();
        let request = SpaMessage::new(request_topic.as_str(), format!("ping {i}"))
            .with_response_topic(reply_topic.as_str())
            .to_json()
            .expect("encodes");
        let id = i.to_string();
        producer
            .send(
                FutureRecord::<(), _>::to(&request_topic)
                    .payload(&request)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "id",
                        value: Some(&id),
                    })),
                Timeout::Never,
            )
            .await
            .expect("request");
        let reply = replies.recv().await.expect("reply");
        std::hint::black_box(
            SpaMessage::from_json(reply.payload().unwrap_or_default()).expect("decodes"),
        );
        samples.push(started.elapsed());
    }
    responder_task.abort();
    samples
}

async fn framework_round_trips(bootstrap: &str) -> Vec<Duration> {
    let topic = format!("fw-rpc-{}", uuid::Uuid::new_v4().simple());
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(KafkaConfig::new(bootstrap)).expect("config"));
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_consumer(
            "echo",
            [topic.clone()],
            |m: SpaMessage| async move { m.payload },
        );
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let requester = provider
        .connect(SocketOptions::new("fw-requester"))
        .await
        .expect("connect");
    // First request warms up the group join and the reply consumer.
    requester
        .socket
        .request(
            SpaMessage::new(topic.as_str(), "warm-up"),
            Duration::from_secs(60),
        )
        .await
        .expect("warm-up reply");
    let samples = support::request_latencies(&requester.socket, &topic, REQUESTS).await;
    requester.socket.close().await.expect("close");
    shutdown.trigger();
    run.await.expect("join").expect("run");
    samples
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--consumer-child") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
        consumer_child(&args[2], args[3].clone(), args[4].clone());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let (bootstrap, _own) = kafka_support::bootstrap_or_start();
    let runtime = support::runtime();
    runtime.block_on(async {
        let producer = raw_producer(&bootstrap);
        println!(
            "Kafka on loopback, records of {} bytes",
            record("bench-stream-0123456789abcdef0123456789abcdef", 123456).len()
        );
        support::header("raw rdkafka");
        if support::selected("consumer") {
            let topic = format!("bench-stream-{}", uuid::Uuid::new_v4().simple());
            raw_produce(&producer, &topic, RECORDS, true).await;
            // A fresh broker is still compiling its hot paths: one untimed pass first.
            run_consumer("raw", &bootstrap, &topic);
            // Median of alternating rounds (each consumer in a fresh group from the start).
            let (mut raw, mut fw) = (Vec::new(), Vec::new());
            for _ in 0..CONSUMER_ROUNDS {
                raw.push(run_consumer("raw", &bootstrap, &topic));
                fw.push(run_consumer("framework", &bootstrap, &topic));
            }
            let median = |runs: &[(f64, f64, f64)], field: fn(&(f64, f64, f64)) -> f64| {
                support::median(&mut runs.iter().map(field).collect::<Vec<_>>())
            };
            support::row(
                "consumer records/s (first → last)",
                median(&fw, |r| r.0),
                median(&raw, |r| r.0),
            );
            support::row(
                "consumer ms from start to first record",
                median(&fw, |r| r.1),
                median(&raw, |r| r.1),
            );
            support::row(
                "consumer CPU µs/record",
                median(&fw, |r| r.2),
                median(&raw, |r| r.2),
            );
        }
        if support::selected("producer") {
            producer_section(&bootstrap, &producer).await;
        }
        if support::selected("request") {
            request_section(&bootstrap).await;
        }
    });
}

async fn producer_section(bootstrap: &str, producer: &FutureProducer) {
    let provider = KafkaSocketProvider::new(KafkaConfig::new(bootstrap)).expect("config");
    let publisher = provider
        .connect(SocketOptions::new("bench-publisher"))
        .await
        .expect("connect");
    let produce_topic = format!("bench-produce-{}", uuid::Uuid::new_v4().simple());
    raw_produce(producer, &produce_topic, 10, false).await;
    // Median of five rounds, alternating, so that neither side always meets a busier broker
    // (the broker's JIT and log segment rolls make single runs swing by ±20 %).
    let (mut raw_awaited, mut fw_awaited, mut raw_pipelined, mut fw_pipelined) =
        (vec![], vec![], vec![], vec![]);
    let mut fw_batches = vec![];
    let batcher = spa_dat::Socket::new(
        Arc::clone(&publisher.socket),
        spa_dat::MessageBuilder::new(Some("bench-publisher"), None),
        Duration::from_secs(30),
    );
    for _ in 0..PRODUCER_ROUNDS {
        raw_awaited.push(raw_produce(producer, &produce_topic, AWAITED, false).await);
        fw_awaited.push(framework_produce(&publisher.socket, &produce_topic, AWAITED, false).await);
        raw_pipelined.push(raw_produce(producer, &produce_topic, PIPELINED, true).await);
        fw_pipelined
            .push(framework_produce(&publisher.socket, &produce_topic, PIPELINED, true).await);
        fw_batches.push(framework_produce_batches(&batcher, &produce_topic, PIPELINED).await);
    }
    support::row(
        "producer records/s, awaited one by one",
        support::median(&mut fw_awaited),
        support::median(&mut raw_awaited),
    );
    support::row(
        "producer records/s, pipelined",
        support::median(&mut fw_pipelined),
        support::median(&mut raw_pipelined),
    );
    support::row(
        "producer records/s, publish_batch vs raw pipelined",
        support::median(&mut fw_batches),
        support::median(&mut raw_pipelined),
    );
    publisher.socket.close().await.expect("close");
}

async fn request_section(bootstrap: &str) {
    let mut raw = raw_round_trips(bootstrap).await;
    let mut fw = framework_round_trips(bootstrap).await;
    support::row(
        "request/reply p50 µs",
        support::percentile(&mut fw, 0.5),
        support::percentile(&mut raw, 0.5),
    );
    support::row(
        "request/reply p99 µs",
        support::percentile(&mut fw, 0.99),
        support::percentile(&mut raw, 0.99),
    );
}
