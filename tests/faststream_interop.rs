//! spa-dat and FastStream 0.7 (the Python framework, `tests/python/faststream_*.py`) on one
//! bus: FastStream as publisher, consumer, requester and responder, over MQTT 5 on a real
//! Mosquitto and over a real Kafka (SPA_DAT_KAFKA_BOOTSTRAP), with spa-dat's sockets set to
//! `wire = "raw"` (bare payloads, metadata in MQTT 5 properties and Kafka headers). On the same
//! Mosquitto, in the same test, the Python spa-dat 0.4.0 keeps talking MQTT 3.1.1 in the
//! envelope.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::headers::CORRELATION_ID;
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::{Outgoing, SocketOptions, SocketProvider};
use spa_dat::socket::WireFormat;
use spa_dat::{Application, SpaMessage};
use support::faststream::{self, Script};
use support::mosquitto::Mosquitto;

/// How long anything here may take to arrive.
const PATIENCE: Duration = Duration::from_secs(30);

fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// spa-dat on `broker` speaking MQTT 5 with bare payloads.
fn mqtt5_raw(broker: &Mosquitto) -> Arc<dyn SocketProvider> {
    let config = MqttConfig {
        version: MqttVersion::V5,
        wire: WireFormat::Raw,
        ..MqttConfig::new("127.0.0.1", broker.port)
    };
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

/// spa-dat on the test Kafka with bare payloads.
fn kafka_raw() -> (Arc<dyn SocketProvider>, String) {
    let bootstrap = support::kafka::bootstrap();
    let config = KafkaConfig {
        wire: WireFormat::Raw,
        ..KafkaConfig::new(bootstrap.clone())
    };
    (
        Arc::new(KafkaSocketProvider::new(config).expect("valid config")),
        bootstrap,
    )
}

/// An application whose one consumer answers each request on `topic` with its payload in
/// capitals, as text.
fn upper_responder(name: &str, topic: &str, provider: Arc<dyn SocketProvider>) -> Application {
    Application::consumer(name, [topic], |m: SpaMessage| async move {
        m.payload_str().map(str::to_uppercase)
    })
    .socket_provider(provider)
}

/// FastStream publishes, spa-dat consumes: the bare body, its content type, FastStream's
/// headers and correlation id.
async fn fast_stream_publishes_to_spa_dat(
    provider: Arc<dyn SocketProvider>,
    transport: &str,
    address: &str,
) {
    let topic = unique("fs-to-spa");
    let mut reader = provider
        .connect(SocketOptions::new(unique("reader")).topics([topic.as_str()]))
        .await
        .expect("spa-dat subscribes");
    let printed = faststream::run(
        "faststream_publish.py",
        &[
            transport,
            address,
            &topic,
            r#"{"order": 7, "note": "grüße"}"#,
            "--json",
            "--header",
            "tenant=acme",
            "--correlation-id",
            "corr-1",
        ],
    )
    .await;
    assert_eq!(printed, "sent");
    let delivery = tokio::time::timeout(PATIENCE, reader.inbox.recv())
        .await
        .expect("arrives in time")
        .expect("delivered");
    assert_eq!(delivery.headers.get("tenant"), Some("acme"), "{delivery:?}");
    assert_eq!(delivery.headers.get(CORRELATION_ID), Some("corr-1"));
    let message = delivery.message(WireFormat::Raw).expect("a bare payload");
    assert_eq!(message.topic, topic);
    assert_eq!(message.content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = message.payload_json().expect("JSON");
    assert_eq!(body, serde_json::json!({"order": 7, "note": "grüße"}));
    // The envelope format refuses it, saying why.
    assert!(delivery.message(WireFormat::Envelope).is_err());
    reader.socket.close().await.expect("close");
}

/// spa-dat publishes, FastStream consumes: the bare payload, the content type, the headers.
async fn spa_dat_publishes_to_fast_stream(
    provider: Arc<dyn SocketProvider>,
    transport: &str,
    address: &str,
) {
    let topic = unique("spa-to-fs");
    let mut consumer =
        Script::ready("faststream_consume.py", &[transport, address, &topic, "1"]).await;
    let writer = support::connect_publisher(&provider, unique("writer")).await;
    let message = SpaMessage::new(topic.as_str(), r#"{"reading": 21.5}"#)
        .with_content_type("application/json");
    let outgoing = Outgoing::message_as(message, WireFormat::Raw)
        .expect("encodes")
        .with_header("tenant", "acme");
    writer.socket.send(outgoing).await.expect("published");
    let seen = consumer.json(PATIENCE).await;
    assert_eq!(seen["body"], r#"{"reading": 21.5}"#, "{seen}");
    assert_eq!(seen["content_type"], "application/json", "{seen}");
    assert_eq!(seen["headers"]["tenant"], "acme", "{seen}");
    consumer.finish().await;
    writer.socket.close().await.expect("close");
}

/// FastStream requests, spa-dat answers: FastStream matches the reply by its correlation id.
async fn fast_stream_requests_from_spa_dat(
    provider: Arc<dyn SocketProvider>,
    transport: &str,
    address: &str,
) {
    let topic = unique("fs-asks");
    let (shutdown, running) =
        support::run_in_background(upper_responder("spa-responder", &topic, provider)).await;
    let printed = faststream::run(
        "faststream_request.py",
        &[
            transport,
            address,
            &topic,
            "hello from faststream",
            "--timeout",
            "20",
        ],
    )
    .await;
    let reply: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(reply["body"], "HELLO FROM FASTSTREAM", "{reply}");
    shutdown.trigger();
    support::joined("the responder", PATIENCE, running)
        .await
        .expect("ran");
}

/// spa-dat requests, FastStream answers: spa-dat matches the reply to its request.
async fn spa_dat_requests_from_fast_stream(
    provider: Arc<dyn SocketProvider>,
    transport: &str,
    address: &str,
) {
    let topic = unique("spa-asks");
    let responder = Script::ready("faststream_respond.py", &[transport, address, &topic]).await;
    let requester = support::connect_publisher(&provider, unique("requester")).await;
    let socket = spa_dat::Socket::new(
        Arc::clone(&requester.socket),
        spa_dat::MessageBuilder::new(Some("spa-requester"), None),
        PATIENCE,
    );
    for word in ["first", "second"] {
        let reply = socket
            .request(SpaMessage::new(topic.as_str(), word).with_content_type("text/plain"))
            .await
            .expect("FastStream answers");
        assert_eq!(reply.payload_str().expect("text"), word.to_uppercase());
    }
    requester.socket.close().await.expect("close");
    responder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_5_fast_stream_and_spa_dat_publish_consume_request_and_answer_both_ways() {
    let broker = Mosquitto::start();
    let address = format!("127.0.0.1:{}", broker.port);
    fast_stream_publishes_to_spa_dat(mqtt5_raw(&broker), "mqtt", &address).await;
    spa_dat_publishes_to_fast_stream(mqtt5_raw(&broker), "mqtt", &address).await;
    fast_stream_requests_from_spa_dat(mqtt5_raw(&broker), "mqtt", &address).await;
    spa_dat_requests_from_fast_stream(mqtt5_raw(&broker), "mqtt", &address).await;

    // The Python spa-dat 0.4.0, on the same broker in the same run, at MQTT 3.1.1 in the
    // envelope, with a spa-dat responder of the default settings.
    let topic = unique("python-asks");
    let envelope = Arc::new(
        MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port)).expect("config"),
    );
    let responder = Application::consumer(
        "rust-responder",
        [topic.as_str()],
        |m: SpaMessage| async move {
            // Python spa-dat 0.4.0 listens for the reply only once its publish returned (see
            // tests/mqtt_python_interop.rs).
            tokio::time::sleep(Duration::from_millis(20)).await;
            m.payload_str().map(str::to_uppercase)
        },
    )
    .socket_provider(envelope);
    let (shutdown, running) = support::run_in_background(responder).await;
    let printed = support::python::run(
        "mqtt_requester.py",
        vec![
            "127.0.0.1".into(),
            broker.port.to_string(),
            topic.clone(),
            "from python".into(),
        ],
    )
    .await;
    let reply = SpaMessage::from_json(printed.as_bytes()).expect("an envelope");
    assert_eq!(reply.payload_str().expect("text"), "FROM PYTHON");
    shutdown.trigger();
    support::joined("the responder", PATIENCE, running)
        .await
        .expect("ran");
    let log = broker.log();
    assert!(
        // Mosquitto logs the protocol as p2 (3.1.1) or p5.
        log.contains("(p5,") && log.contains("(p2,"),
        "MQTT 5 and 3.1.1 clients on one broker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_fast_stream_and_spa_dat_publish_consume_request_and_answer_both_ways() {
    let (provider, bootstrap) = kafka_raw();
    fast_stream_publishes_to_spa_dat(Arc::clone(&provider), "kafka", &bootstrap).await;
    spa_dat_publishes_to_fast_stream(Arc::clone(&provider), "kafka", &bootstrap).await;
    fast_stream_requests_from_spa_dat(Arc::clone(&provider), "kafka", &bootstrap).await;
    spa_dat_requests_from_fast_stream(provider, "kafka", &bootstrap).await;
}
