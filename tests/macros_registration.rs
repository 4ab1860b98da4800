//! `#[consumer]` / `#[producer]` register through `inventory`; `DistributedApplication`
//! discovers every one of them and runs them like hand-registered handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::{
    consumer, producer, Config, DistributedApplication, Json, Shutdown, Socket, SpaMessage, State,
};

#[derive(Default)]
struct Counters {
    readings: AtomicUsize,
    grouped: AtomicUsize,
    through_reexport: AtomicUsize,
}

/// A crate that re-exports spa-dat, as a user's platform crate would.
mod platform {
    pub(crate) mod spa_dat {
        pub(crate) use ::spa_dat::*;
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reading {
    value: u32,
}

#[producer(name = "macro-producer", client_name = "macro sensor")]
async fn publish_readings(socket: Socket) -> spa_dat::Result<()> {
    for value in 0..10 {
        socket
            .publish_json("macro/readings", &Reading { value })
            .await?;
    }
    let reply = socket
        .request(SpaMessage::new("macro/echo", "ping"))
        .await?;
    socket
        .publish(SpaMessage::new("macro/done", reply.payload))
        .await
}

#[consumer(
    topics = ["macro/+"],
    name = "macro-counter",
    concurrency = 8,
    ordering = "partition",
    attempts = 2,
    timeout_ms = 5000
)]
async fn count_readings(Json(reading): Json<Reading>, counters: State<Counters>) {
    assert!(reading.value < 10);
    counters.readings.fetch_add(1, Ordering::SeqCst);
}

#[consumer(topics = ["macro/readings"], group = "workers", dead_letter = "macro/dead")]
async fn grouped_worker(message: SpaMessage, counters: State<Counters>) {
    assert_eq!(message.client_name.as_deref(), Some("macro sensor"));
    counters.grouped.fetch_add(1, Ordering::SeqCst);
}

#[consumer(topics = ["macro/readings"], crate = "platform::spa_dat")]
async fn reexported(counters: platform::spa_dat::State<Counters>) {
    counters.through_reexport.fetch_add(1, Ordering::SeqCst);
}

#[consumer(topics = ["macro/echo"])]
async fn echo(message: SpaMessage) -> Vec<u8> {
    message.payload.to_vec()
}

#[consumer(topics = ["macro/done"])]
async fn finish(message: SpaMessage, shutdown: Shutdown, counters: State<Counters>) {
    assert_eq!(message.payload_str().ok(), Some("ping"));
    // The other consumers may still be working through the readings: shutdown drains them
    // (the in-process bus loses nothing published before it), no waiting needed here.
    let _ = &counters;
    shutdown.trigger();
}

/// How many messages `reading_key` gave a key: proves `order_key = ...` reaches the engine.
static KEYS_GIVEN: AtomicUsize = AtomicUsize::new(0);

fn reading_key(delivery: &spa_dat::socket::spi::Delivery) -> Option<bytes::Bytes> {
    KEYS_GIVEN.fetch_add(1, Ordering::SeqCst);
    Some(bytes::Bytes::copy_from_slice(delivery.topic.as_bytes()))
}

#[consumer(
    topics = ["macro/readings"],
    name = "keyed",
    concurrency = 2,
    ordering = "key",
    order_key = reading_key
)]
async fn keyed(_message: SpaMessage) {}

#[test]
fn every_registered_handler_is_discovered() {
    let mut names = DistributedApplication::registered_handlers();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "echo",
            "finish",
            "grouped_worker",
            "keyed",
            "macro-counter",
            "macro-producer",
            "reexported"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_handlers_run_end_to_end() {
    let counters = Arc::new(Counters::default());
    let bus = MemoryBus::new("macros");
    let app = DistributedApplication::new()
        .watch_signals(false)
        .config(Config::default())
        .socket_provider(Arc::new(MemorySocketProvider::new(bus.clone())))
        .state_arc(Arc::clone(&counters));
    tokio::time::timeout(Duration::from_secs(10), app.start_async())
        .await
        .expect("finish handler ends the run")
        .expect("runs");
    assert_eq!(bus.subscription_count(), 0, "every socket closed");
    // Every reading reached the broadcast consumer; the lone group member got them all.
    assert_eq!(counters.readings.load(Ordering::SeqCst), 10);
    assert_eq!(counters.grouped.load(Ordering::SeqCst), 10);
    assert_eq!(counters.through_reexport.load(Ordering::SeqCst), 10);
    assert_eq!(
        KEYS_GIVEN.load(Ordering::SeqCst),
        10,
        "order_key gave each reading its key"
    );
}
