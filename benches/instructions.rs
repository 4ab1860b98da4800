//! Instruction and allocation counts of spa-dat's per-message paths, under callgrind and DHAT
//! (gungraun): unlike wall-clock benches they do not move with a noisy 2-core machine, so a
//! 2 % regression is visible. `scripts/instructions.sh` compares them with the counts checked
//! in under `benches/instructions-baseline/` and fails above 2 % more instructions or 1 % more
//! allocations (one more per message is more than that on every path);
//! `scripts/instructions.sh save` writes new ones (commit them with the reason);
//! `scripts/instructions.sh table` prints the cost per message of each path and its ratio to
//! the raw client: a Tokio channel for the in-process bus, rumqttc for MQTT.
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

use bytes::{Bytes, BytesMut};
use gungraun::{
    library_benchmark, library_benchmark_group, main, Callgrind, Dhat, LibraryBenchmarkConfig,
};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Packet, PingResp, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::{SocketOptions, SocketProvider, SpaSocket};
use spa_dat::{Application, ApplicationLifeCycle, SpaMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The MQTT 5 delivery path, per message, against a replayed stream: a listener on loopback
/// answers the client's CONNECT and SUBSCRIBE as a broker would, then writes the count's
/// PUBLISH packets, encoded before the count, [`REPLAYED_AT_ONCE`] at a time, each time once
/// the handler took the ones before. Everything runs on the count's one thread and each read
/// finds exactly one write's bytes (loopback delivers a write before it returns), so the count
/// does not move with the machine as a real broker's would (one write of everything did: the
/// kernel's window decides how much each read finds). The raw rumqttc client reads the same
/// bytes.
struct MqttPath {
    runtime: tokio::runtime::Runtime,
    count: usize,
    replay: mpsc::Sender<Vec<Bytes>>,
    stream: Vec<Bytes>,
}

/// Messages per write of the replayed stream: ~10 KiB, well inside a socket's buffers.
const REPLAYED_AT_ONCE: usize = 50;

const MQTT_TOPIC: &str = "bench/stream";

/// `count` PUBLISH packets of `reading()` on `MQTT_TOPIC` at `qos` (packet ids 1, 2, ...), in
/// writes of [`REPLAYED_AT_ONCE`].
fn publishes(count: usize, qos: QoS) -> Vec<Bytes> {
    (0..count)
        .step_by(REPLAYED_AT_ONCE)
        .map(|first| encoded(first..count.min(first + REPLAYED_AT_ONCE), qos))
        .collect()
}

fn encoded(ids: std::ops::Range<usize>, qos: QoS) -> Bytes {
    let mut stream = BytesMut::new();
    for id in ids {
        let mut publish = Publish::new(MQTT_TOPIC, qos, reading(), None);
        if qos != QoS::AtMostOnce {
            publish.pkid = u16::try_from(id % usize::from(u16::MAX) + 1).expect("fits");
        }
        Packet::Publish(publish)
            .write(&mut stream, None)
            .expect("encodes");
    }
    stream.freeze()
}

/// A loopback listener that acts as the broker of one client: CONNACK for its CONNECT, SUBACK
/// for each SUBSCRIBE (telling `subscribed`), then writes every stream it is handed.
async fn replayer(subscribed: oneshot::Sender<()>) -> (u16, mpsc::Sender<Vec<Bytes>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("address").port();
    let (replay, mut streams) = mpsc::channel::<Vec<Bytes>>(1);
    tokio::spawn(async move {
        let (mut connection, _) = listener.accept().await.expect("accepts");
        connection.set_nodelay(true).expect("nodelay");
        let mut subscribed = Some(subscribed);
        let mut read = BytesMut::with_capacity(64 * 1024);
        loop {
            tokio::select! {
                stream = streams.recv() => {
                    let Some(stream) = stream else { return };
                    let mut written = 0;
                    for write in stream {
                        connection.write_all(&write).await.expect("replays");
                        written += REPLAYED_AT_ONCE;
                        let expected = written.min(EXPECTED.load(Ordering::Relaxed));
                        while HANDLED.load(Ordering::Relaxed) < expected {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                bytes = connection.read_buf(&mut read) => {
                    if bytes.expect("reads") == 0 {
                        return;
                    }
                    while let Ok(packet) = Packet::read(&mut read, None) {
                        let answer = match packet {
                            Packet::Connect(..) => Packet::ConnAck(ConnAck {
                                session_present: false,
                                code: ConnectReturnCode::Success,
                                properties: None,
                            }),
                            Packet::Subscribe(subscribe) => {
                                let codes = subscribe
                                    .filters
                                    .iter()
                                    .map(|filter| SubscribeReasonCode::Success(filter.qos))
                                    .collect();
                                if let Some(subscribed) = subscribed.take() {
                                    let _ = subscribed.send(());
                                }
                                Packet::SubAck(SubAck {
                                    pkid: subscribe.pkid,
                                    return_codes: codes,
                                    properties: None,
                                })
                            }
                            Packet::PingReq(_) => Packet::PingResp(PingResp),
                            _ => continue,
                        };
                        let mut out = BytesMut::new();
                        answer.write(&mut out, None).expect("encodes");
                        connection.write_all(&out).await.expect("answers");
                    }
                }
            }
        }
    });
    (port, replay)
}

/// Set up outside the count: the replayer, spa-dat's MQTT 5 consumer at `qos` connected and
/// subscribed to it, the count's stream encoded.
fn mqtt_consumer(count: usize, qos: u8) -> MqttPath {
    let runtime = runtime_with_io();
    let replay = runtime.block_on(async {
        let (subscribed, is_subscribed) = oneshot::channel();
        let (port, replay) = replayer(subscribed).await;
        let mut config = MqttConfig::new("127.0.0.1", port);
        config.version = MqttVersion::V5;
        config.qos = qos;
        config.client_id = Some("instructions".into());
        let provider = MqttSocketProvider::new(config).expect("config");
        let mut app =
            Application::consumer("sink", [MQTT_TOPIC], sink).socket_provider(Arc::new(provider));
        app.setup().await.expect("set up");
        tokio::spawn(async move {
            let _ = app.run_async().await;
        });
        is_subscribed.await.expect("subscribed");
        replay
    });
    MqttPath {
        runtime,
        count,
        replay,
        stream: publishes(count, mqtt_qos(qos)),
    }
}

/// The same path in raw rumqttc (MQTT 5): the event loop polled in a task, each message
/// decoded and handed to the same handler, acknowledged after it at QoS 1 (as spa-dat does).
fn raw_mqtt_consumer(count: usize, qos: u8) -> MqttPath {
    let runtime = runtime_with_io();
    let replay = runtime.block_on(async {
        let (subscribed, is_subscribed) = oneshot::channel();
        let (port, replay) = replayer(subscribed).await;
        let mut options = MqttOptions::new("instructions-raw", "127.0.0.1", port);
        options.set_manual_acks(true);
        // Room for every acknowledgement of the count: `try_ack` never finds it full.
        let (client, mut eventloop) = AsyncClient::new(options, 4 * MESSAGES);
        client
            .subscribe(MQTT_TOPIC, mqtt_qos(qos))
            .await
            .expect("subscribes");
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(publish)) = event {
                    let message = SpaMessage::from_json(&publish.payload).expect("decodes");
                    handled(&message);
                    client.try_ack(&publish).expect("acknowledged");
                }
            }
        });
        is_subscribed.await.expect("subscribed");
        replay
    });
    MqttPath {
        runtime,
        count,
        replay,
        stream: publishes(count, mqtt_qos(qos)),
    }
}

fn mqtt_qos(qos: u8) -> QoS {
    if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn runtime_with_io() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Replays the path's stream and waits until the handler took every message.
#[inline(never)]
fn replay_and_handle(path: &MqttPath) {
    HANDLED.store(0, Ordering::Relaxed);
    EXPECTED.store(path.count, Ordering::Relaxed);
    path.runtime.block_on(async {
        let all_handled = ALL_HANDLED.notified();
        path.replay
            .send(path.stream.clone())
            .await
            .expect("replayer runs");
        all_handled.await;
    });
}

#[library_benchmark]
#[bench::base(mqtt_consumer(MESSAGES, 0))]
#[bench::twice(mqtt_consumer(2 * MESSAGES, 0))]
fn mqtt_qos0_consumer(path: MqttPath) -> MqttPath {
    replay_and_handle(&path);
    path
}

#[library_benchmark]
#[bench::base(raw_mqtt_consumer(MESSAGES, 0))]
#[bench::twice(raw_mqtt_consumer(2 * MESSAGES, 0))]
fn raw_mqtt_qos0_consumer(path: MqttPath) -> MqttPath {
    replay_and_handle(&path);
    path
}

#[library_benchmark]
#[bench::base(mqtt_consumer(MESSAGES, 1))]
#[bench::twice(mqtt_consumer(2 * MESSAGES, 1))]
fn mqtt_qos1_consumer(path: MqttPath) -> MqttPath {
    replay_and_handle(&path);
    path
}

#[library_benchmark]
#[bench::base(raw_mqtt_consumer(MESSAGES, 1))]
#[bench::twice(raw_mqtt_consumer(2 * MESSAGES, 1))]
fn raw_mqtt_qos1_consumer(path: MqttPath) -> MqttPath {
    replay_and_handle(&path);
    path
}

library_benchmark_group!(
    name = mqtt;
    benchmarks = mqtt_qos0_consumer, raw_mqtt_qos0_consumer, mqtt_qos1_consumer,
        raw_mqtt_qos1_consumer
);

main!(
    config = LibraryBenchmarkConfig::default()
        .tool(Callgrind::with_args(["--cache-sim=no"]))
        // Deep stacks: an allocation in a handler's task is far below the benchmark's frame.
        .tool(Dhat::with_args(["--num-callers=128"]));
    library_benchmark_groups = envelope, memory, request_reply, mqtt
);
