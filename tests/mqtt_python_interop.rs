//! Rust and the Python spa-dat 0.4.0 on one Mosquitto broker: request/reply both ways.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::{Application, ApplicationLifeCycle, SocketOptions, SocketProvider, SpaMessage};
use support::mosquitto::Mosquitto;
use support::python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requester_gets_its_reply_from_a_rust_consumer() {
    let broker = Mosquitto::start();
    let provider = Arc::new(
        MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port)).expect("config"),
    );
    let mut responder = Application::consumer(
        "rust-responder",
        ["interop/upper"],
        |m: SpaMessage| async move { m.payload_str().map(str::to_uppercase) },
    )
    .socket_provider(provider);
    responder.setup().await.expect("subscribed");
    let shutdown = responder.shutdown_handle();
    let running = tokio::spawn(async move {
        let result = responder.run_async().await;
        responder.teardown().await.expect("teardown");
        result
    });

    let python = python::python();
    let script = python::script("mqtt_requester.py");
    let port = broker.port.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["127.0.0.1", &port, "interop/upper", "grüße from python"])
            .output()
            .expect("python runs")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply = SpaMessage::from_json(String::from_utf8_lossy(&output.stdout).trim().as_bytes())
        .expect("Python printed a spa-dat message");
    assert_eq!(reply.payload_str().expect("utf-8"), "GRÜSSE FROM PYTHON");
    assert_eq!(reply.client_name.as_deref(), Some("rust-responder"));
    shutdown.trigger();
    running.await.expect("join").expect("consumer ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_request_gets_its_reply_from_a_python_responder() {
    let broker = Mosquitto::start();
    let mut child = Command::new(python::python())
        .arg(python::script("mqtt_responder.py"))
        .args([
            "127.0.0.1",
            &broker.port.to_string(),
            "interop/reverse",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python starts");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("python responder ready in time")
        .expect("join")
        .expect("read");
    assert_eq!(line.trim(), "ready");

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
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success());
}
