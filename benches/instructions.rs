//! Instruction counts of spa-dat's per-message paths, under callgrind (gungraun): unlike
//! wall-clock benches they do not move with a noisy 2-core machine, so a 2 % regression is
//! visible. `scripts/instructions.sh` compares them with the counts checked in under
//! `benches/instructions-baseline/` and fails above 2 %. Per-message paths that run on Tokio
//! (the in-process consumer) run on a current-thread runtime built outside the count, and
//! count a thousand messages, so a path's count is a thousand times its per-message cost plus
//! one wait; `scripts/instructions.sh save` writes
//! new ones (commit them with the reason).
//!
//! ```text
//! scripts/instructions.sh          # the gate (the test command runs it)
//! scripts/instructions.sh save     # after an intended change
//! ```
#![allow(missing_docs, unreachable_pub)]

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gungraun::{
    library_benchmark, library_benchmark_group, main, Callgrind, LibraryBenchmarkConfig,
};
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider, SpaSocket};
use spa_dat::{Application, ApplicationLifeCycle, SpaMessage};
use tokio::sync::Notify;

/// A message with a `size`-byte text payload, as a publisher sends it.
fn message(size: usize) -> SpaMessage {
    let mut message = SpaMessage::new("sensors/kitchen/temperature", "x".repeat(size));
    message.client_id = Some("bench-1".to_owned());
    message.client_name = Some("bench".to_owned());
    message.content_type = Some("text/plain".to_owned());
    message
}

/// `message(size)` on the wire.
fn wire(size: usize) -> Vec<u8> {
    message(size).to_json().expect("encodes")
}

#[library_benchmark]
#[bench::small(wire(64))]
#[bench::large(wire(4096))]
fn decode_envelope(bytes: Vec<u8>) -> (Vec<u8>, SpaMessage) {
    let decoded = SpaMessage::from_json(black_box(&bytes)).expect("decodes");
    (bytes, black_box(decoded))
}

#[library_benchmark]
#[bench::small(message(64))]
#[bench::large(message(4096))]
fn encode_envelope(message: SpaMessage) -> (SpaMessage, Vec<u8>) {
    let encoded = black_box(&message).to_json().expect("encodes");
    (message, black_box(encoded))
}

library_benchmark_group!(name = envelope; benchmarks = decode_envelope, encode_envelope);

/// Messages per count of a Tokio path.
const MESSAGES: usize = 1_000;

static HANDLED: AtomicUsize = AtomicUsize::new(0);
static ALL_HANDLED: Notify = Notify::const_new();

/// The consumer of the in-process path: takes the message, counts it.
async fn sink(message: SpaMessage) {
    black_box(&message);
    if HANDLED.fetch_add(1, Ordering::Relaxed) + 1 == MESSAGES {
        ALL_HANDLED.notify_one();
    }
}

/// A consumer application running on the in-process bus, and a publisher socket.
struct Consuming {
    runtime: tokio::runtime::Runtime,
    publisher: Arc<dyn SpaSocket>,
    message: Bytes,
}

/// Started outside the count: the runtime, the bus, the application set up and running.
fn consuming() -> Consuming {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let publisher = runtime.block_on(async {
        let provider: Arc<dyn SocketProvider> =
            Arc::new(MemorySocketProvider::new(MemoryBus::new("instructions")));
        let mut app = Application::consumer("sink", ["bench/stream"], sink)
            .socket_provider(Arc::clone(&provider));
        app.setup().await.expect("set up");
        tokio::spawn(async move {
            let _ = app.run_async().await;
        });
        let publisher = provider
            .connect(SocketOptions::new("publisher"))
            .await
            .expect("connects");
        publisher.socket
    });
    let message = Bytes::from(
        SpaMessage::new("bench/stream", r#"{"sensor":"kitchen","celsius":21.5}"#)
            .to_json()
            .expect("encodes"),
    );
    Consuming {
        runtime,
        publisher,
        message,
    }
}

/// Publishes `MESSAGES` and waits until the consumer handled every one. Not a closure in the
/// benchmark's body: gungraun counts from its body's functions, and would count a closure
/// there twice.
#[inline(never)]
fn publish_and_handle(consuming: &Consuming) {
    HANDLED.store(0, Ordering::Relaxed);
    consuming.runtime.block_on(publish_all(consuming));
}

async fn publish_all(consuming: &Consuming) {
    let handled = ALL_HANDLED.notified();
    for _ in 0..MESSAGES {
        consuming
            .publisher
            .publish_bytes("bench/stream", consuming.message.clone())
            .await
            .expect("published");
    }
    handled.await;
}

#[library_benchmark]
#[bench::thousand(consuming())]
fn memory_consumer(consuming: Consuming) -> Consuming {
    publish_and_handle(&consuming);
    consuming
}

library_benchmark_group!(name = memory; benchmarks = memory_consumer);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = envelope, memory
);
