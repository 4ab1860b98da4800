//! A slow MQTT consumer at QoS 0 stays within a memory bound while a fast stream runs: the
//! connection stops reading while the consumer's inbox is full (its own test binary, so no other
//! test's memory is counted).

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, SpaMessage};
use support::mosquitto::Mosquitto;

/// `MqttConfig::new(host, port)` on the MQTT version this suite runs on (`crate::VERSION`).
fn mqtt_config(host: impl Into<String>, port: u16) -> MqttConfig {
    MqttConfig {
        version: crate::VERSION,
        ..MqttConfig::new(host, port)
    }
}

/// Resident memory of this process, from /proc.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_qos0_consumer_stays_within_a_memory_bound() {
    const MESSAGES: usize = 20_000;
    const SIZE: usize = 10_000; // 200 MB in all
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.qos = 0;
    let provider: Arc<dyn SocketProvider> =
        Arc::new(MqttSocketProvider::new(config).expect("valid config"));
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let consumer = Application::consumer("slow", ["flood/#"], move |_m: SpaMessage| {
        let counter = Arc::clone(&counter);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    })
    .socket_provider(Arc::clone(&provider));
    let (shutdown, running) = support::run_in_background(consumer).await;
    let before = resident_bytes();

    let publisher = provider
        .connect(SocketOptions::new("flood-publisher"))
        .await
        .expect("connects");
    let body = "x".repeat(SIZE);
    for i in 0..MESSAGES {
        let message = SpaMessage::new("flood/data", body.clone()).with_client_id(i.to_string());
        publisher
            .socket
            .publish_bytes(
                "flood/data",
                Bytes::from(message.to_json().expect("encodes")),
            )
            .await
            .expect("publish");
    }
    // The broker has sent what the consumer's connection would read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = resident_bytes().saturating_sub(before);
    let handled = handled.load(Ordering::Relaxed);
    println!(
        "handled {handled} of {MESSAGES}; resident memory grew {} MB",
        grown / 1_000_000
    );
    assert!(
        handled < MESSAGES / 2,
        "the consumer is slow: {handled} handled"
    );
    assert!(
        grown < 60_000_000,
        "resident memory grew {} MB while the consumer fell behind",
        grown / 1_000_000
    );
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
    publisher.socket.close().await.expect("close");
}
