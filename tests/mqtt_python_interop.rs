//! Rust and the Python spa-dat 0.4.0 on one Mosquitto broker: request/reply both ways.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, SpaMessage};
use support::mosquitto::Mosquitto;
use support::python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requester_gets_its_reply_from_a_rust_consumer() {
    let broker = Mosquitto::start();
    let provider = Arc::new(
        MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port)).expect("config"),
    );
    let responder = Application::consumer(
        "rust-responder",
        ["interop/upper"],
        |m: SpaMessage| async move {
            // Python spa-dat 0.4.0 starts listening for the reply only after its own publish
            // returned: a reply faster than that is lost (measured here: one run in four without
            // this pause, none in twelve with 3 ms). See README, "From the Python package".
            tokio::time::sleep(Duration::from_millis(20)).await;
            m.payload_str().map(str::to_uppercase)
        },
    )
    .socket_provider(provider);
    let (shutdown, running) = support::run_in_background(responder).await;

    let printed = python::run(
        "mqtt_requester.py",
        vec![
            "127.0.0.1".into(),
            broker.port.to_string(),
            "interop/upper".into(),
            "grüße from python".into(),
        ],
    )
    .await;
    let reply =
        SpaMessage::from_json(printed.as_bytes()).expect("Python printed a spa-dat message");
    assert_eq!(reply.payload_str().expect("utf-8"), "GRÜSSE FROM PYTHON");
    assert_eq!(reply.client_name.as_deref(), Some("rust-responder"));
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), running)
        .await
        .expect("consumer ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_request_gets_its_reply_from_a_python_responder() {
    let broker = Mosquitto::start();
    let child = python::start_ready(
        "mqtt_responder.py",
        vec![
            "127.0.0.1".into(),
            broker.port.to_string(),
            "interop/reverse".into(),
            "3".into(),
        ],
    )
    .await;

    let provider =
        MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port)).expect("config");
    let connection = provider
        .connect(SocketOptions::new("rust-requester"))
        .await
        .expect("connects");
    let requests = ["one", "two", "three"].map(|body| {
        let socket = Arc::clone(&connection.socket);
        async move {
            socket
                .request(
                    SpaMessage::new("interop/reverse", body),
                    Duration::from_secs(20),
                )
                .await
                .map(|reply| (body, reply))
        }
    });
    for result in futures_util::future::join_all(requests).await {
        let (body, reply) = result.expect("python answered");
        let expected: String = body.chars().rev().collect();
        assert_eq!(reply.payload_str().expect("utf-8"), expected);
        assert_eq!(reply.client_name.as_deref(), Some("python-responder"));
    }
    connection.socket.close().await.expect("close");
    python::finish(child).await;
}
