//! The MQTT 5 section: raw rumqttc v5, spa-dat (MQTT 5, raw wire) and RustStream
//! (ruststream-rumqttc 0.7.1) consuming the same messages from one Mosquitto, at QoS 0 and 1.
//! Each consumer subscribes in a child process, says `ready`, and the parent publishes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::{handled, Reading, ALL_HANDLED, BODY};

/// Messages per round.
pub const MESSAGES: usize = 100_000;
const TOPIC: &str = "peer/stream";

/// The QoS of this child's RustStream subscriber (its attribute reads it).
static QOS: AtomicU8 = AtomicU8::new(0);

mod ruststream_side {
    use ruststream_rumqttc::prelude::*;

    use super::{Ordering, QOS, TOPIC};
    use crate::{handled, Reading};

    #[subscriber(MqttTopic::new(TOPIC).qos(if QOS.load(Ordering::Relaxed) == 0 {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    }))]
    pub async fn consume(reading: &Reading) -> HandlerOutcome {
        handled(reading);
        HandlerOutcome::ack()
    }

    /// Started and subscribed; the caller waits for the messages, then shuts it down.
    pub async fn start(port: u16) -> RunningApp {
        RustStream::new(AppInfo::new("peer-bench", "0.0.0"))
            .with_broker(
                MqttBroker::new(format!("mqtt://127.0.0.1:{port}"), "peer-ruststream"),
                |b| {
                    b.include(consume);
                },
            )
            .start()
            .await
            .expect("RustStream starts")
    }
}

/// A child: subscribes with `kind` at `qos`, prints `ready`, takes MESSAGES, prints
/// `seconds_first_to_last cpu_seconds allocations`.
pub fn child(kind: &str, port: u16, qos: u8) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let qos5 = [
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    ][usize::from(qos)];
    runtime.block_on(async {
        match kind {
            "raw" => {
                // As spa-dat and RustStream: a receive window of ~1000, acknowledgements sent
                // after the handler, no Nagle delay.
                let mut options = rumqttc::v5::MqttOptions::new("peer-raw", "127.0.0.1", port);
                options
                    .set_max_packet_size(Some(1 << 20))
                    .set_receive_maximum(Some(1000))
                    .set_manual_acks(true);
                let mut network = options.network_options();
                network.set_tcp_nodelay(true);
                options.set_network_options(network);
                let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1000);
                client.subscribe(TOPIC, qos5).await.expect("subscribe");
                loop {
                    if let rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::SubAck(_)) =
                        eventloop.poll().await.expect("poll")
                    {
                        break;
                    }
                }
                println!("ready");
                let mut count = 0;
                while count < MESSAGES {
                    if let rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::Publish(publish)) =
                        eventloop.poll().await.expect("poll")
                    {
                        let reading: Reading =
                            serde_json::from_slice(&publish.payload).expect("decodes");
                        handled(&reading);
                        client.try_ack(&publish).expect("acknowledged");
                        count += 1;
                    }
                }
            }
            "spa-dat" => {
                use spa_dat::ApplicationLifeCycle;
                let mut config = spa_dat::socket::mqtt::MqttConfig::new("127.0.0.1", port);
                config.version = spa_dat::socket::mqtt::MqttVersion::V5;
                config.qos = qos;
                config.client_id = Some("peer-spa-dat".into());
                config.wire = spa_dat::socket::WireFormat::Raw;
                let provider =
                    spa_dat::socket::mqtt::MqttSocketProvider::new(config).expect("config");
                let mut app = spa_dat::Application::consumer(
                    "peer",
                    [TOPIC],
                    |spa_dat::Json(reading): spa_dat::Json<Reading>| async move {
                        handled(&reading);
                    },
                )
                .socket_provider(Arc::new(provider));
                app.setup().await.expect("set up");
                let shutdown = app.shutdown_handle();
                let run = tokio::spawn(async move {
                    let result = app.run_async().await;
                    app.teardown().await.and(result)
                });
                println!("ready");
                ALL_HANDLED.notified().await;
                shutdown.trigger();
                run.await.expect("join").expect("spa-dat stops");
            }
            "ruststream" => {
                QOS.store(qos, Ordering::Relaxed);
                let running = ruststream_side::start(port).await;
                println!("ready");
                ALL_HANDLED.notified().await;
                running.shutdown().await.expect("RustStream stops");
            }
            other => panic!("no loop {other}"),
        }
    });
    crate::report();
}

/// One round of `kind` at `qos`: (messages/s, CPU µs per message, Rust allocations per
/// message).
pub fn round(kind: &str, port: u16, qos: u8) -> (f64, f64, f64) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--mqtt-child", kind, &port.to_string(), &qos.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().expect("line").expect("read"),
        "ready",
        "{kind}"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut options = MqttOptions::new(format!("peer-publisher-{kind}"), "127.0.0.1", port);
        options
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(1000);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce][usize::from(qos)];
        for _ in 0..MESSAGES {
            client
                .publish_bytes(TOPIC, qos, false, bytes::Bytes::from_static(BODY))
                .await
                .expect("publish");
        }
        let line =
            tokio::task::spawn_blocking(move || lines.next().expect("result").expect("read"))
                .await
                .expect("join");
        let _ = client.disconnect().await;
        driver.abort();
        let _ = child.wait();
        crate::parse(&line, MESSAGES)
    })
}

/// Starts Mosquitto, runs the rounds, prints the tables.
pub fn section() {
    let broker = spa_dat_test_support::mosquitto::Mosquitto::start();
    let started = Instant::now();
    for qos in [0u8, 1] {
        println!(
            "\nMQTT 5 on Mosquitto (loopback), QoS {qos}, {MESSAGES} messages of {} bytes, {} interleaved rounds",
            BODY.len(),
            crate::ROUNDS
        );
        round("raw", broker.port, qos);
        let results = crate::interleaved(|kind| round(kind, broker.port, qos));
        crate::print_tables(&results, "message");
    }
    eprintln!("(MQTT section: {:.0} s)", started.elapsed().as_secs_f64());
}
