//! In-process bus benchmark: messages/s through a `#[consumer]` (SpaMessage decoding
//! included) and request/reply round trips/s, each against a raw Tokio channel doing the same
//! encoding/decoding in the same run. One core: a current-thread runtime.
//!
//! ```text
//! cargo bench --bench memory_bus
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use spa_dat::config::{SocketConfig, SocketProviderFactory};
use spa_dat::socket::memory::MemoryConfig;
use spa_dat::socket::spi::SocketOptions;
use spa_dat::{consumer, Config, DistributedApplication, SpaMessage};
use tokio::sync::{mpsc, oneshot, Notify};

const MESSAGES: usize = 2_000_000;
const REQUESTS: usize = 300_000;
const IN_FLIGHT: usize = 64;
const ROUNDS: usize = 3;

static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static DONE: Notify = Notify::const_new();

#[consumer(topics = ["bench/stream"])]
async fn sink(message: SpaMessage) {
    std::hint::black_box(&message);
    if RECEIVED.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        DONE.notify_one();
    }
}

#[consumer(topics = ["bench/echo"])]
async fn echo(message: SpaMessage) -> Bytes {
    message.payload
}

fn sample(topic: &str) -> SpaMessage {
    SpaMessage::new(topic, r#"{"sensor":"kitchen","celsius":21.5,"seq":123456}"#)
        .with_content_type("application/json")
        .with_client_id("bench-client")
        .with_client_name("bench")
}

async fn framework_stream(socket: &Arc<dyn spa_dat::socket::spi::SpaSocket>) -> f64 {
    let bytes = Bytes::from(sample("bench/stream").to_json().expect("encodes"));
    RECEIVED.store(0, Ordering::SeqCst);
    TARGET.store(MESSAGES, Ordering::SeqCst);
    let started = Instant::now();
    for _ in 0..MESSAGES {
        socket
            .publish_bytes("bench/stream", bytes.clone())
            .await
            .expect("publish");
    }
    DONE.notified().await;
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

async fn raw_stream() -> f64 {
    let bytes = Bytes::from(sample("bench/stream").to_json().expect("encodes"));
    let (tx, mut rx) = mpsc::channel::<(Arc<str>, Bytes)>(1024);
    let consumer = tokio::spawn(async move {
        let mut count = 0usize;
        while let Some((_topic, payload)) = rx.recv().await {
            let message = SpaMessage::from_json(&payload).expect("decodes");
            std::hint::black_box(&message);
            count += 1;
        }
        count
    });
    let topic: Arc<str> = Arc::from("bench/stream");
    let started = Instant::now();
    for _ in 0..MESSAGES {
        tx.send((Arc::clone(&topic), bytes.clone()))
            .await
            .expect("send");
    }
    drop(tx);
    let count = consumer.await.expect("consumer");
    assert_eq!(count, MESSAGES);
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

async fn framework_requests(socket: &Arc<dyn spa_dat::socket::spi::SpaSocket>) -> f64 {
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < REQUESTS {
        while sent < REQUESTS && in_flight.len() < IN_FLIGHT {
            let socket = Arc::clone(socket);
            in_flight.push(async move {
                socket
                    .request(sample("bench/echo"), Duration::from_secs(10))
                    .await
            });
            sent += 1;
        }
        let reply = in_flight.next().await.expect("in flight").expect("reply");
        std::hint::black_box(&reply);
        done += 1;
    }
    REQUESTS as f64 / started.elapsed().as_secs_f64()
}

async fn raw_requests() -> f64 {
    let (tx, mut rx) = mpsc::channel::<(Bytes, oneshot::Sender<Bytes>)>(1024);
    tokio::spawn(async move {
        while let Some((request, reply_to)) = rx.recv().await {
            let request = SpaMessage::from_json(&request).expect("decodes");
            let reply = SpaMessage::new("reply", request.payload)
                .to_json()
                .expect("encodes");
            let _ = reply_to.send(Bytes::from(reply));
        }
    });
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < REQUESTS {
        while sent < REQUESTS && in_flight.len() < IN_FLIGHT {
            let tx = tx.clone();
            in_flight.push(async move {
                let (reply_tx, reply_rx) = oneshot::channel();
                let request = Bytes::from(sample("bench/echo").to_json().expect("encodes"));
                tx.send((request, reply_tx)).await.expect("send");
                SpaMessage::from_json(&reply_rx.await.expect("reply")).expect("decodes")
            });
            sent += 1;
        }
        std::hint::black_box(in_flight.next().await.expect("in flight"));
        done += 1;
    }
    REQUESTS as f64 / started.elapsed().as_secs_f64()
}

fn best(samples: &mut [f64]) -> f64 {
    samples.iter().copied().fold(0.0, f64::max)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bus = SocketConfig::Memory(MemoryConfig {
            bus: "bench".into(),
            default_subscription_topics: vec![],
        });
        let app = DistributedApplication::new()
            .watch_signals(false)
            .config(Config {
                bus: bus.clone(),
                ..Config::default()
            });
        let shutdown = app.shutdown_handle();
        let run = tokio::spawn(app.start_async());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let client = SocketProviderFactory::from_config(&bus)
            .expect("provider")
            .connect(SocketOptions::new("bench-client"))
            .await
            .expect("client");

        let (mut fw_stream, mut raw_stream_s, mut fw_rr, mut raw_rr) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // SPA_BENCH_ONLY=framework|raw runs one side only (for profiling).
        let only = std::env::var("SPA_BENCH_ONLY").unwrap_or_default();
        for _ in 0..ROUNDS {
            if only != "framework" {
                raw_stream_s.push(raw_stream().await);
                raw_rr.push(raw_requests().await);
            }
            if only != "raw" {
                fw_stream.push(framework_stream(&client.socket).await);
                fw_rr.push(framework_requests(&client.socket).await);
            }
        }
        shutdown.trigger();
        run.await.expect("task").expect("run");

        let (fw_s, raw_s) = (best(&mut fw_stream), best(&mut raw_stream_s));
        let (fw_r, raw_r) = (best(&mut fw_rr), best(&mut raw_rr));
        println!("in-process bus, one core (current-thread runtime), best of {ROUNDS} rounds");
        println!(
            "{:<44} {:>14} {:>14} {:>7}",
            "measure", "spa-dat", "raw channel", "ratio"
        );
        println!(
            "{:<44} {:>14.0} {:>14.0} {:>7.2}",
            format!("consumer messages/s ({MESSAGES} msgs, decoded)"),
            fw_s,
            raw_s,
            fw_s / raw_s
        );
        println!(
            "{:<44} {:>14.0} {:>14.0} {:>7.2}",
            format!("request/reply round trips/s ({IN_FLIGHT} in flight)"),
            fw_r,
            raw_r,
            fw_r / raw_r
        );
    });
}
