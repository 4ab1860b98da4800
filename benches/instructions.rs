//! Instruction and allocation counts of spa-dat's per-message paths, under callgrind and DHAT
//! (gungraun): unlike wall-clock benches they do not move with a noisy 2-core machine, so a
//! 2 % regression is visible. `scripts/instructions.sh` compares them with the counts checked
//! in under `benches/instructions-baseline/` and fails above 2 % more instructions, or any
//! more allocations; `scripts/instructions.sh save` writes new ones (commit them with the
//! reason); `scripts/instructions.sh table` prints the cost per message of each path and its
//! ratio to the raw channel.
//!
//! A path that runs on Tokio runs on a current-thread runtime (one thread: one order of
//! execution, the same count on every run) built with the application outside the count, and
//! is counted twice: over [`MESSAGES`] messages and over twice as many. What happens once per
//! count (the wait for the last message, a first allocation) is in both totals, so the
//! difference divided by [`MESSAGES`] is the steady cost of one message (RustStream's method).
//!
//! ```text
//! scripts/instructions.sh          # the gate (the test command runs it)
//! scripts/instructions.sh save     # after an intended change
//! scripts/instructions.sh table    # the cost per message, from the last run
//! ```
#![allow(missing_docs, unreachable_pub)]

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gungraun::{
    library_benchmark, library_benchmark_group, main, Callgrind, Dhat, LibraryBenchmarkConfig,
};
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider, SpaSocket};
use spa_dat::{Application, ApplicationLifeCycle, SpaMessage};
use tokio::sync::{mpsc, oneshot, Notify};

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

/// Messages of the shorter count of a Tokio path; the longer one is twice as many.
const MESSAGES: usize = 1_000;

/// What the handler of every consuming path does: takes the message, counts it, wakes the
/// count's wait at the last one (one wake per count, not one per message).
static HANDLED: AtomicUsize = AtomicUsize::new(0);
static EXPECTED: AtomicUsize = AtomicUsize::new(usize::MAX);
static ALL_HANDLED: Notify = Notify::const_new();

fn handled(message: &SpaMessage) {
    black_box(message);
    if HANDLED.fetch_add(1, Ordering::Relaxed) + 1 == EXPECTED.load(Ordering::Relaxed) {
        ALL_HANDLED.notify_one();
    }
}

async fn sink(message: SpaMessage) {
    handled(&message);
}

/// The wire form every consuming path reads: a JSON reading as its payload.
fn reading() -> Bytes {
    Bytes::from(
        SpaMessage::new("bench/stream", r#"{"sensor":"kitchen","celsius":21.5}"#)
            .to_json()
            .expect("encodes"),
    )
}

/// What a consuming path is, besides the consumer: the switches of the process.
#[derive(Clone, Copy)]
enum Observed {
    /// Metrics and tracing off (the default).
    Nothing,
    /// spa-dat's metrics recorded into a Prometheus recorder.
    Metrics,
    /// spa-dat's spans made, with an OpenTelemetry sampler that samples none.
    UnsampledTraces,
}

/// A current-thread runtime, and the count of messages to take through it.
struct Path {
    runtime: tokio::runtime::Runtime,
    count: usize,
    publisher: Option<Arc<dyn SpaSocket>>,
    raw: Option<mpsc::Sender<(Arc<str>, Bytes)>>,
    message: Bytes,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn observe(observed: Observed) {
    match observed {
        Observed::Nothing => {}
        Observed::Metrics => {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder");
            spa_dat::metrics::enable();
        }
        Observed::UnsampledTraces => {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
                .build();
            opentelemetry::global::set_tracer_provider(provider);
            spa_dat::telemetry::enable();
        }
    }
}

/// The application `app` makes, set up and running on a new in-process bus, and a socket of
/// another client on that bus.
async fn running_with_a_client(
    app: impl FnOnce(Arc<dyn SocketProvider>) -> Application,
) -> Arc<dyn SpaSocket> {
    let provider: Arc<dyn SocketProvider> =
        Arc::new(MemorySocketProvider::new(MemoryBus::new("instructions")));
    let mut app = app(Arc::clone(&provider));
    app.setup().await.expect("set up");
    tokio::spawn(async move {
        let _ = app.run_async().await;
    });
    provider
        .connect(SocketOptions::new("client"))
        .await
        .expect("connects")
        .socket
}

/// Set up outside the count: a consumer application running on the in-process bus, a
/// publisher socket, the switches.
fn consumer(count: usize, observed: Observed) -> Path {
    observe(observed);
    let runtime = runtime();
    let publisher = runtime.block_on(running_with_a_client(|provider| {
        Application::consumer("sink", ["bench/stream"], sink).socket_provider(provider)
    }));
    Path {
        runtime,
        count,
        publisher: Some(publisher),
        raw: None,
        message: reading(),
    }
}

/// The same consumer without spa-dat: a Tokio channel into a task that decodes each message
/// and hands it to the same handler — what the in-process bus is measured against.
fn raw_channel(count: usize) -> Path {
    let runtime = runtime();
    let raw = runtime.block_on(async {
        let (sender, mut receiver) = mpsc::channel::<(Arc<str>, Bytes)>(1024);
        tokio::spawn(async move {
            while let Some((_topic, payload)) = receiver.recv().await {
                let message = SpaMessage::from_json(&payload).expect("decodes");
                handled(&message);
            }
        });
        sender
    });
    Path {
        runtime,
        count,
        publisher: None,
        raw: Some(raw),
        message: reading(),
    }
}

/// Publishes the path's count of messages and waits until the handler took every one. Not a
/// closure in the benchmark's body: gungraun counts from its body's functions, and would count
/// a closure there twice.
#[inline(never)]
fn publish_and_handle(path: &Path) {
    HANDLED.store(0, Ordering::Relaxed);
    EXPECTED.store(path.count, Ordering::Relaxed);
    path.runtime.block_on(publish_all(path));
}

async fn publish_all(path: &Path) {
    let all_handled = ALL_HANDLED.notified();
    let topic: Arc<str> = Arc::from("bench/stream");
    for _ in 0..path.count {
        if let Some(publisher) = &path.publisher {
            publisher
                .publish_bytes("bench/stream", path.message.clone())
                .await
                .expect("published");
        } else if let Some(raw) = &path.raw {
            raw.send((Arc::clone(&topic), path.message.clone()))
                .await
                .expect("sent");
        }
    }
    all_handled.await;
}

#[library_benchmark]
#[bench::base(consumer(MESSAGES, Observed::Nothing))]
#[bench::twice(consumer(2 * MESSAGES, Observed::Nothing))]
fn memory_consumer(path: Path) -> Path {
    publish_and_handle(&path);
    path
}

#[library_benchmark]
#[bench::base(raw_channel(MESSAGES))]
#[bench::twice(raw_channel(2 * MESSAGES))]
fn raw_channel_consumer(path: Path) -> Path {
    publish_and_handle(&path);
    path
}

#[library_benchmark]
#[bench::base(consumer(MESSAGES, Observed::Metrics))]
#[bench::twice(consumer(2 * MESSAGES, Observed::Metrics))]
fn memory_consumer_metrics(path: Path) -> Path {
    publish_and_handle(&path);
    path
}

#[library_benchmark]
#[bench::base(consumer(MESSAGES, Observed::UnsampledTraces))]
#[bench::twice(consumer(2 * MESSAGES, Observed::UnsampledTraces))]
fn memory_consumer_unsampled_traces(path: Path) -> Path {
    publish_and_handle(&path);
    path
}

library_benchmark_group!(
    name = memory;
    benchmarks = memory_consumer, raw_channel_consumer, memory_consumer_metrics,
        memory_consumer_unsampled_traces
);

/// Round trips of a requester and a replier: spa-dat's request/reply on the in-process bus, or
/// the same encoding and decoding over a Tokio channel and a oneshot per request.
struct RoundTrips {
    runtime: tokio::runtime::Runtime,
    count: usize,
    requester: Option<Arc<dyn SpaSocket>>,
    raw: Option<mpsc::Sender<(Bytes, oneshot::Sender<Bytes>)>>,
}

fn request_message() -> SpaMessage {
    SpaMessage::new("bench/echo", r#"{"sensor":"kitchen","celsius":21.5}"#)
}

async fn echo(message: SpaMessage) -> Bytes {
    message.payload
}

fn memory_round_trips(count: usize) -> RoundTrips {
    let runtime = runtime();
    let requester = runtime.block_on(running_with_a_client(|provider| {
        Application::consumer("echo", ["bench/echo"], echo).socket_provider(provider)
    }));
    RoundTrips {
        runtime,
        count,
        requester: Some(requester),
        raw: None,
    }
}

fn raw_round_trips(count: usize) -> RoundTrips {
    let runtime = runtime();
    let raw = runtime.block_on(async {
        let (sender, mut receiver) = mpsc::channel::<(Bytes, oneshot::Sender<Bytes>)>(1024);
        tokio::spawn(async move {
            while let Some((request, reply_to)) = receiver.recv().await {
                let request = SpaMessage::from_json(&request).expect("decodes");
                let reply = SpaMessage::new("reply", request.payload)
                    .to_json()
                    .expect("encodes");
                let _ = reply_to.send(Bytes::from(reply));
            }
        });
        sender
    });
    RoundTrips {
        runtime,
        count,
        requester: None,
        raw: Some(raw),
    }
}

/// One request at a time, each reply decoded.
#[inline(never)]
fn request_all(round_trips: &RoundTrips) {
    round_trips.runtime.block_on(async {
        for _ in 0..round_trips.count {
            let reply = if let Some(requester) = &round_trips.requester {
                requester
                    .request(request_message(), Duration::from_secs(10))
                    .await
                    .expect("reply")
            } else if let Some(raw) = &round_trips.raw {
                let (reply_to, reply) = oneshot::channel();
                let request = Bytes::from(request_message().to_json().expect("encodes"));
                raw.send((request, reply_to)).await.expect("sent");
                SpaMessage::from_json(&reply.await.expect("reply")).expect("decodes")
            } else {
                unreachable!("a requester or a channel")
            };
            black_box(reply);
        }
    });
}

#[library_benchmark]
#[bench::base(memory_round_trips(MESSAGES))]
#[bench::twice(memory_round_trips(2 * MESSAGES))]
fn memory_request_reply(round_trips: RoundTrips) -> RoundTrips {
    request_all(&round_trips);
    round_trips
}

#[library_benchmark]
#[bench::base(raw_round_trips(MESSAGES))]
#[bench::twice(raw_round_trips(2 * MESSAGES))]
fn raw_channel_request_reply(round_trips: RoundTrips) -> RoundTrips {
    request_all(&round_trips);
    round_trips
}

library_benchmark_group!(
    name = request_reply;
    benchmarks = memory_request_reply, raw_channel_request_reply
);

main!(
    config = LibraryBenchmarkConfig::default()
        .tool(Callgrind::with_args(["--cache-sim=no"]))
        // Deep stacks: an allocation in a handler's task is far below the benchmark's frame.
        .tool(Dhat::with_args(["--num-callers=128"]));
    library_benchmark_groups = envelope, memory, request_reply
);
