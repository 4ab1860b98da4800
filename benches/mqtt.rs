//! MQTT benchmark against a real Mosquitto: raw rumqttc and spa-dat in one run.
//!
//! ```text
//! cargo bench --bench mqtt
//! ```
//! The parent process starts a broker and publishes; each consumer runs in a child process of
//! this binary (so its CPU time and peak memory are its own, from getrusage). Printed:
//! consumer messages/s at QoS 0 and 1 (first → last message), consumer CPU µs/message
//! (user+sys), peak RSS, and request/reply latency p50/p99 — each with the framework/raw ratio;
//! then the same on MQTT 5 against raw rumqttc v5 (request/reply on `response_topic` and
//! `correlation_data`), and spa-dat on MQTT 5 against spa-dat on 3.1.1 (what the properties
//! cost). `cargo bench --bench mqtt -- v5` runs the MQTT 5 sections alone.

use spa_dat_test_support::mosquitto;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, ApplicationLifeCycle, Config, DistributedApplication, SpaMessage};
use tokio::sync::Notify;

const MESSAGES: usize = 100_000;
const REQUESTS: usize = 2_000;
const CONSUMER_ROUNDS: usize = 5;

fn payload(seq: usize) -> Bytes {
    let message = SpaMessage::new(
        "bench/stream",
        format!(r#"{{"sensor":"kitchen","celsius":21.5,"seq":{seq}}}"#),
    )
    .with_client_id("bench-publisher");
    Bytes::from(message.to_json().expect("encodes"))
}

/// A raw rumqttc consumer subscribed to the stream at `qos`; with `manual_acks` the caller
/// acknowledges, otherwise rumqttc acknowledges each message as it reads it.
async fn raw_subscriber(
    client_id: &str,
    port: u16,
    qos: u8,
    manual_acks: bool,
) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_manual_acks(manual_acks)
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    eventloop.network_options.set_tcp_nodelay(true);
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce][qos as usize];
    client
        .subscribe("bench/stream", qos)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) = eventloop.poll().await.expect("poll") {
            return (client, eventloop);
        }
    }
}

/// Child: consume `count` messages at `qos` with the raw client or the framework; print
/// `ready`, then `elapsed_s cpu_s peak_mb received`.
fn consumer_child(kind: &str, port: u16, qos: u8, count: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async move {
        let received = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Notify::new());
        let first = Arc::new(std::sync::OnceLock::<Instant>::new());
        match kind {
            "raw-handoff" => {
                // Raw rumqttc as spa-dat must use it: the polling task hands each message to
                // a second task (the event loop must never wait on a handler).
                let (client, mut eventloop) =
                    raw_subscriber("raw-handoff-consumer", port, 0, true).await;
                let (handoff, mut handed) = tokio::sync::mpsc::unbounded_channel();
                let (r, d, f) = (Arc::clone(&received), Arc::clone(&done), Arc::clone(&first));
                tokio::spawn(async move {
                    let mut batch: Vec<rumqttc::Publish> = Vec::with_capacity(64);
                    while handed.recv_many(&mut batch, 64).await > 0 {
                        for publish in batch.drain(..) {
                            f.get_or_init(Instant::now);
                            let message = SpaMessage::from_json(&publish.payload).expect("decodes");
                            std::hint::black_box(&message);
                            if r.fetch_add(1, Ordering::Relaxed) + 1 == count {
                                d.notify_one();
                            }
                        }
                    }
                });
                let _keep_open = client.clone();
                tokio::spawn(async move {
                    while let Ok(event) = eventloop.poll().await {
                        if let Event::Incoming(Incoming::Publish(publish)) = event {
                            let _ = handoff.send(publish);
                        }
                    }
                });
                println!("ready");
                let start_cpu = support::cpu_seconds();
                done.notified().await;
                report(&first, start_cpu, count);
            }
            "raw" | "raw-pending" => {
                // "raw": rumqttc's own acknowledgements, written as it reads each message and
                // flushed once per read. "raw-pending": manual acks queued in the event loop
                // from the polling task (awaiting the request channel there would deadlock);
                // rumqttc serves that queue one request per turn while each read brings up to
                // nine messages: ~98,800 of 100,000 acks were still queued at the last message.
                let manual_acks = kind == "raw-pending";
                let (client, mut eventloop) =
                    raw_subscriber("raw-consumer", port, qos, manual_acks).await;
                let _keep_open = &client;
                println!("ready");
                let start_cpu = support::cpu_seconds();
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Incoming::Publish(publish))) => {
                            first.get_or_init(Instant::now);
                            let message = SpaMessage::from_json(&publish.payload).expect("decodes");
                            std::hint::black_box(&message);
                            if manual_acks && publish.qos != QoS::AtMostOnce {
                                eventloop.pending.push_back(rumqttc::Request::PubAck(
                                    rumqttc::PubAck::new(publish.pkid),
                                ));
                            }
                            if received.fetch_add(1, Ordering::Relaxed) + 1 == count {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => panic!("raw consumer: {error}"),
                    }
                }
                report(&first, start_cpu, count);
            }
            "raw5" => {
                // rumqttc v5 with its own acknowledgements, as "raw" above.
                let mut options = rumqttc::v5::MqttOptions::new("raw5-consumer", "127.0.0.1", port);
                options.set_max_packet_size(Some(1 << 20));
                let mut network = options.network_options();
                network.set_tcp_nodelay(true);
                options.set_network_options(network);
                let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
                let qos5 = [
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                ][qos as usize];
                client
                    .subscribe("bench/stream", qos5)
                    .await
                    .expect("subscribe");
                loop {
                    if let rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::SubAck(_)) =
                        eventloop.poll().await.expect("poll")
                    {
                        break;
                    }
                }
                println!("ready");
                let start_cpu = support::cpu_seconds();
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::Publish(
                            publish,
                        ))) => {
                            first.get_or_init(Instant::now);
                            let message = SpaMessage::from_json(&publish.payload).expect("decodes");
                            std::hint::black_box(&message);
                            if received.fetch_add(1, Ordering::Relaxed) + 1 == count {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => panic!("raw v5 consumer: {error}"),
                    }
                }
                report(&first, start_cpu, count);
            }
            _ => {
                let mut config = MqttConfig::new("127.0.0.1", port);
                if kind == "framework5" {
                    config.version = MqttVersion::V5;
                }
                config.qos = qos;
                config.client_id = Some("framework-consumer".into());
                // One shared handle: a handler's future must own what it uses (one clone per
                // message, as with the `State<T>` extractor).
                let progress =
                    Arc::new((Arc::clone(&received), Arc::clone(&done), Arc::clone(&first)));
                let handler = move |message: SpaMessage| {
                    let progress = Arc::clone(&progress);
                    async move {
                        let (received, done, first) = &*progress;
                        first.get_or_init(Instant::now);
                        std::hint::black_box(&message);
                        if received.fetch_add(1, Ordering::Relaxed) + 1 == count {
                            done.notify_one();
                        }
                    }
                };
                let mut app = Application::consumer("bench", ["bench/stream"], handler)
                    .socket_provider(Arc::new(MqttSocketProvider::new(config).expect("config")));
                // Ready once subscribed, as the raw consumers are: a connection that idled
                // before the stream sends ~60 % more TCP ACKs during it (BENCHMARKS.md).
                app.setup().await.expect("setup");
                let shutdown = app.shutdown_handle();
                let run = tokio::spawn(async move {
                    let result = app.run_async().await;
                    app.teardown().await.and(result)
                });
                println!("ready");
                let start_cpu = support::cpu_seconds();
                done.notified().await;
                report(&first, start_cpu, count);
                shutdown.trigger();
                run.await.expect("join").expect("run");
            }
        }
    });
}

fn report(first: &std::sync::OnceLock<Instant>, start_cpu: f64, count: usize) {
    let elapsed = first
        .get()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    let (cpu, peak) = (support::cpu_seconds(), support::peak_rss_mb());
    println!("{elapsed} {} {peak} {count}", cpu - start_cpu);
}

struct ConsumerResult {
    rate: f64,
    cpu_us: f64,
    peak_mb: f64,
}

async fn run_consumer(kind: &str, port: u16, qos: u8) -> ConsumerResult {
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .args([
            "--consumer-child",
            kind,
            &port.to_string(),
            &qos.to_string(),
            &MESSAGES.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("line").expect("read"), "ready");
    let mut options = MqttOptions::new(format!("publisher-{kind}-{qos}"), "127.0.0.1", port);
    options
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    eventloop.network_options.set_tcp_nodelay(true);
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let qos_level = [QoS::AtMostOnce, QoS::AtLeastOnce][qos as usize];
    for seq in 0..MESSAGES {
        client
            .publish_bytes("bench/stream", qos_level, false, payload(seq))
            .await
            .expect("publish");
    }
    let line = tokio::task::spawn_blocking(move || lines.next().expect("result").expect("read"))
        .await
        .expect("join");
    let _ = child.wait();
    let _ = client.disconnect().await;
    driver.abort();
    let parts: Vec<f64> = line
        .split_whitespace()
        .map(|p| p.parse().expect("number"))
        .collect();
    ConsumerResult {
        rate: parts[3] / parts[0],
        cpu_us: parts[1] * 1e6 / parts[3],
        peak_mb: parts[2],
    }
}

async fn raw_round_trips(port: u16) -> Vec<Duration> {
    // Responder and requester on plain rumqttc, QoS 1, the same envelope work as spa-dat.
    let mut options = MqttOptions::new("raw-responder", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (responder, mut responder_loop) = AsyncClient::new(options, 64);
    responder_loop.network_options.set_tcp_nodelay(true);
    responder
        .subscribe("bench/raw-rpc", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let responder_client = responder.clone();
    let responder_task = tokio::spawn(async move {
        while let Ok(event) = responder_loop.poll().await {
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                let request = SpaMessage::from_json(&publish.payload).expect("decodes");
                let Some(reply_to) = request.response_topic.clone() else {
                    continue;
                };
                let reply = SpaMessage::new(reply_to.clone(), request.payload)
                    .to_json()
                    .expect("encodes");
                let client = responder_client.clone();
                tokio::spawn(async move {
                    client
                        .publish(reply_to, QoS::AtLeastOnce, false, reply)
                        .await
                });
            }
        }
    });
    let mut options = MqttOptions::new("raw-requester", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (requester, mut requester_loop) = AsyncClient::new(options, 64);
    requester_loop.network_options.set_tcp_nodelay(true);
    requester
        .subscribe("bench/raw-reply", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let requester_task = tokio::spawn(async move {
        while let Ok(event) = requester_loop.poll().await {
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                let _ = tx.send(SpaMessage::from_json(&publish.payload).expect("decodes"));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let started = Instant::now();
        let request = SpaMessage::new("bench/raw-rpc", format!("ping {i}"))
            .with_response_topic("bench/raw-reply");
        requester
            .publish(
                "bench/raw-rpc",
                QoS::AtLeastOnce,
                false,
                request.to_json().expect("encodes"),
            )
            .await
            .expect("publish");
        let reply = rx.recv().await.expect("reply");
        std::hint::black_box(reply);
        samples.push(started.elapsed());
    }
    responder_task.abort();
    requester_task.abort();
    samples
}

/// Round trips on raw rumqttc v5: the request carries `response_topic` and
/// `correlation_data` properties, the responder answers there echoing the correlation data,
/// the requester matches it. Bare payloads (no envelope), as spa-dat's `wire = "raw"`.
async fn raw5_round_trips(port: u16) -> Vec<Duration> {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let connect = |id: &str| {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        let mut network = options.network_options();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        AsyncClient::new(options, 64)
    };
    let (responder, mut responder_loop) = connect("raw5-responder");
    responder
        .subscribe("bench/raw5-rpc", QoS5::AtLeastOnce)
        .await
        .expect("subscribe");
    let responder_client = responder.clone();
    let responder_task = tokio::spawn(async move {
        while let Ok(event) = responder_loop.poll().await {
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                let Some(properties) = publish.properties else {
                    continue;
                };
                let Some(reply_to) = properties.response_topic else {
                    continue;
                };
                let reply = PublishProperties {
                    correlation_data: properties.correlation_data,
                    ..Default::default()
                };
                let client = responder_client.clone();
                tokio::spawn(async move {
                    client
                        .publish_with_properties(
                            reply_to,
                            QoS5::AtLeastOnce,
                            false,
                            publish.payload,
                            reply,
                        )
                        .await
                });
            }
        }
    });
    let (requester, mut requester_loop) = connect("raw5-requester");
    requester
        .subscribe("bench/raw5-reply", QoS5::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let requester_task = tokio::spawn(async move {
        while let Ok(event) = requester_loop.poll().await {
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                let _ = tx.send(publish);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let started = Instant::now();
        let correlation = Bytes::from(i.to_string());
        let properties = PublishProperties {
            response_topic: Some("bench/raw5-reply".into()),
            correlation_data: Some(correlation.clone()),
            ..Default::default()
        };
        requester
            .publish_with_properties(
                "bench/raw5-rpc",
                QoS5::AtLeastOnce,
                false,
                format!("ping {i}"),
                properties,
            )
            .await
            .expect("publish");
        loop {
            let reply = rx.recv().await.expect("reply");
            if reply.properties.and_then(|p| p.correlation_data) == Some(correlation.clone()) {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    responder_task.abort();
    requester_task.abort();
    samples
}

async fn framework_round_trips(port: u16) -> Vec<Duration> {
    framework_round_trips_with(MqttConfig::new("127.0.0.1", port)).await
}

async fn framework_round_trips_with(config: MqttConfig) -> Vec<Duration> {
    let provider: Arc<dyn SocketProvider> =
        Arc::new(MqttSocketProvider::new(config).expect("config"));
    let app = DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(Config::default())
        .socket_provider(Arc::clone(&provider))
        .add_consumer(
            "echo",
            ["bench/rpc"],
            |m: SpaMessage| async move { m.payload },
        );
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requester = provider
        .connect(SocketOptions::new("fw-requester"))
        .await
        .expect("connect");
    let samples = support::request_latencies(&requester.socket, "bench/rpc", REQUESTS).await;
    requester.socket.close().await.expect("close");
    shutdown.trigger();
    run.await.expect("join").expect("run");
    samples
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--consumer-child") {
        consumer_child(
            &args[2],
            args[3].parse().expect("port"),
            args[4].parse().expect("qos"),
            args[5].parse().expect("count"),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let runtime = support::runtime();
    runtime.block_on(async {
        println!("MQTT against Mosquitto on loopback; {MESSAGES} messages per consumer run, {REQUESTS} sequential requests");
        if ["qos0", "qos1", "request"].iter().any(|s| support::selected(s)) {
            support::header("raw rumqttc");
        }
        // `cargo bench --bench mqtt -- qos1` runs one section (qos0, qos1, request, v5).
        for qos in [0u8, 1] {
            if !support::selected(&format!("qos{qos}")) {
                continue;
            }
            // The second raw variant, for comparison only (see `consumer_child`). Not targets:
            // the floor of a consumer that never blocks the event loop (QoS 0), and a raw
            // consumer whose manual acks fall behind the stream (QoS 1).
            let (other_kind, other) = if qos == 0 {
                ("raw-handoff", "raw + task hand-off")
            } else {
                ("raw-pending", "raw acking via `pending`")
            };
            // Median of alternating rounds: the broker's speed swings between runs.
            let (mut raw, mut fw, mut comparison) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..CONSUMER_ROUNDS {
                raw.push(run_consumer("raw", broker.port, qos).await);
                fw.push(run_consumer("framework", broker.port, qos).await);
                comparison.push(run_consumer(other_kind, broker.port, qos).await);
            }
            let median = |runs: &[ConsumerResult], field: fn(&ConsumerResult) -> f64| {
                support::median(&mut runs.iter().map(field).collect::<Vec<_>>())
            };
            let row = |measure: &str, baseline: &[ConsumerResult], field: fn(&ConsumerResult) -> f64| {
                support::row(&format!("QoS {qos} {measure}"), median(&fw, field), median(baseline, field));
            };
            row("consumer messages/s", &raw, |r| r.rate);
            row("consumer CPU µs/message", &raw, |r| r.cpu_us);
            row("consumer peak RSS MB", &raw, |r| r.peak_mb);
            row(&format!("CPU µs/message vs {other}"), &comparison, |r| r.cpu_us);
            row(&format!("peak RSS MB vs {other}"), &comparison, |r| r.peak_mb);
        }
        if support::selected("request") {
            let mut raw = raw_round_trips(broker.port).await;
            let mut fw = framework_round_trips(broker.port).await;
            support::row("request/reply p50 µs", support::percentile(&mut fw, 0.5), support::percentile(&mut raw, 0.5));
            support::row("request/reply p99 µs", support::percentile(&mut fw, 0.99), support::percentile(&mut raw, 0.99));
        }
        if !support::selected("v5") {
            return;
        }
        support::header("raw rumqttc v5");
        for qos in [0u8, 1] {
            let (mut raw5, mut fw5) = (Vec::new(), Vec::new());
            for _ in 0..CONSUMER_ROUNDS {
                raw5.push(run_consumer("raw5", broker.port, qos).await);
                fw5.push(run_consumer("framework5", broker.port, qos).await);
            }
            let median = |runs: &[ConsumerResult], field: fn(&ConsumerResult) -> f64| {
                support::median(&mut runs.iter().map(field).collect::<Vec<_>>())
            };
            let row = |measure: &str, field: fn(&ConsumerResult) -> f64| {
                support::row(&format!("MQTT 5 QoS {qos} {measure}"), median(&fw5, field), median(&raw5, field));
            };
            row("consumer messages/s", |r| r.rate);
            row("consumer CPU µs/message", |r| r.cpu_us);
            row("consumer peak RSS MB", |r| r.peak_mb);
        }
        let raw_wire = MqttConfig {
            version: MqttVersion::V5,
            wire: spa_dat::socket::WireFormat::Raw,
            ..MqttConfig::new("127.0.0.1", broker.port)
        };
        let mut raw5 = raw5_round_trips(broker.port).await;
        let mut fw5 = framework_round_trips_with(raw_wire).await;
        support::row("MQTT 5 request/reply p50 µs", support::percentile(&mut fw5, 0.5), support::percentile(&mut raw5, 0.5));
        support::row("MQTT 5 request/reply p99 µs", support::percentile(&mut fw5, 0.99), support::percentile(&mut raw5, 0.99));

        // What MQTT 5's properties cost spa-dat: MQTT 5 against 3.1.1, the envelope on both.
        support::header("spa-dat on MQTT 3.1.1");
        for qos in [0u8, 1] {
            let (mut v311, mut v5) = (Vec::new(), Vec::new());
            for _ in 0..CONSUMER_ROUNDS {
                v311.push(run_consumer("framework", broker.port, qos).await);
                v5.push(run_consumer("framework5", broker.port, qos).await);
            }
            let median = |runs: &[ConsumerResult]| {
                support::median(&mut runs.iter().map(|r| r.cpu_us).collect::<Vec<_>>())
            };
            support::row(&format!("spa-dat MQTT 5 / 3.1.1 QoS {qos} CPU µs/message"), median(&v5), median(&v311));
        }
        let envelope5 = MqttConfig {
            version: MqttVersion::V5,
            ..MqttConfig::new("127.0.0.1", broker.port)
        };
        let mut v311 = framework_round_trips(broker.port).await;
        let mut v5 = framework_round_trips_with(envelope5).await;
        support::row("spa-dat MQTT 5 / 3.1.1 request/reply p50 µs", support::percentile(&mut v5, 0.5), support::percentile(&mut v311, 0.5));
    });
}
