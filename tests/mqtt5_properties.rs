//! What spa-dat puts in MQTT 5 properties and reads from them, seen by a plain rumqttc v5
//! client on a real Mosquitto; message expiry and session expiry end to end.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use spa_dat::socket::headers::{CONTENT_TYPE, CORRELATION_ID, MESSAGE_EXPIRY_SECS, RESPONSE_TOPIC};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::{Outgoing, SocketOptions, SocketProvider};
use spa_dat::socket::WireFormat;
use spa_dat::SpaMessage;
use support::mosquitto::Mosquitto;

const PATIENCE: Duration = Duration::from_secs(10);

fn mqtt5(broker: &Mosquitto, wire: WireFormat) -> MqttConfig {
    MqttConfig {
        version: MqttVersion::V5,
        wire,
        ..MqttConfig::new("127.0.0.1", broker.port)
    }
}

fn provider(config: MqttConfig) -> Arc<dyn SocketProvider> {
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

/// A plain rumqttc v5 client subscribed to `filter`, polled on a task of its own; what it
/// receives comes out of the returned channel.
async fn plain_client(
    broker: &Mosquitto,
    id: &str,
    filter: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
) {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new(id, "127.0.0.1", broker.port), 16);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                // The test ended when nobody receives: the runtime stops this task with it.
                Event::Incoming(Packet::Publish(publish)) => {
                    let _ = tx.send(publish);
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(PATIENCE, subscribed)
        .await
        .expect("SUBACK in time")
        .expect("subscribed");
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spa_dats_headers_are_mqtt_5_properties_on_the_wire_and_back() {
    let broker = Mosquitto::start();
    let (plain, mut seen) = plain_client(&broker, "plain-reader", "props/#").await;

    // spa-dat writes: bare payload, content type, expiry, a header, a correlation id.
    let writer =
        support::connect_publisher(&provider(mqtt5(&broker, WireFormat::Raw)), "spa-writer").await;
    let message = SpaMessage::new("props/out", "21.5")
        .with_content_type("text/plain")
        .with_expiry(Duration::from_millis(59_500));
    let outgoing = Outgoing::message_as(message, WireFormat::Raw)
        .expect("encodes")
        .with_header("tenant", "acme")
        .with_header(CORRELATION_ID, "c-1");
    writer.socket.send(outgoing).await.expect("published");
    let publish = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("in time")
        .expect("received");
    assert_eq!(&publish.payload[..], b"21.5");
    let properties = publish.properties.expect("properties");
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(properties.correlation_data.as_deref(), Some(&b"c-1"[..]));
    let expiry = properties.message_expiry_interval.expect("an expiry");
    assert!(
        (59..=60).contains(&expiry),
        "rounded up to whole seconds: {expiry}"
    );
    assert_eq!(
        properties.user_properties,
        [("tenant".to_owned(), "acme".to_owned())]
    );

    // spa-dat reads: a plain client's properties become headers; its own win over a user
    // property of the same header name.
    let mut reader = provider(mqtt5(&broker, WireFormat::Raw))
        .connect(SocketOptions::new("spa-reader").topics(["props/in"]))
        .await
        .expect("subscribes");
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("props/replies".into()),
        correlation_data: Some(Bytes::from_static(b"native")),
        message_expiry_interval: Some(120),
        user_properties: vec![
            (CORRELATION_ID.into(), "forged".into()),
            (RESPONSE_TOPIC.into(), "elsewhere".into()),
            ("tenant".into(), "acme".into()),
        ],
        ..Default::default()
    };
    plain
        .publish_with_properties(
            "props/in",
            QoS::AtLeastOnce,
            false,
            r#"{"n":1}"#,
            properties,
        )
        .await
        .expect("plain publish");
    let delivery = tokio::time::timeout(PATIENCE, reader.inbox.recv())
        .await
        .expect("in time")
        .expect("delivered");
    assert_eq!(
        delivery.headers.get(CORRELATION_ID),
        Some("native"),
        "{delivery:?}"
    );
    assert_eq!(delivery.headers.get(RESPONSE_TOPIC), Some("props/replies"));
    assert_eq!(delivery.headers.get(CONTENT_TYPE), Some("application/json"));
    assert_eq!(delivery.headers.get("tenant"), Some("acme"));
    let left: u64 = delivery
        .headers
        .get(MESSAGE_EXPIRY_SECS)
        .expect("expiry")
        .parse()
        .expect("number");
    assert!((1..=120).contains(&left), "{left}");
    let message = delivery.message(WireFormat::Raw).expect("bare");
    assert_eq!(message.response_topic.as_deref(), Some("props/replies"));
    assert_eq!(message.expiry, Some(Duration::from_secs(left)));
    delivery.ack();
    reader.socket.close().await.expect("close");
    writer.socket.close().await.expect("close");
}

/// A persistent session (clean_session = false) outlives the connection by its session expiry;
/// a message whose expiry passed while the consumer was away is not delivered, one still
/// valid is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_not_delivered_to_a_returning_persistent_consumer() {
    let broker = Mosquitto::start();
    let mut config = mqtt5(&broker, WireFormat::Envelope);
    config.clean_session = false;
    config.session_expiry_secs = Some(300);
    config.client_id = Some("durable".into());
    let durable = provider(config.clone());
    let first = durable
        .connect(SocketOptions::new("reader").topics(["expiry/t"]))
        .await
        .expect("subscribes");
    first.socket.close().await.expect("away");

    let writer =
        support::connect_publisher(&provider(mqtt5(&broker, WireFormat::Envelope)), "writer").await;
    let short = SpaMessage::new("expiry/t", "short-lived").with_expiry(Duration::from_secs(1));
    let long = SpaMessage::new("expiry/t", "long-lived").with_expiry(Duration::from_secs(300));
    writer.socket.publish(&short).await.expect("published");
    writer.socket.publish(&long).await.expect("published");
    // The behaviour under test is time passing: the short one's expiry.
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let mut back = durable
        .connect(SocketOptions::new("reader").topics(["expiry/t"]))
        .await
        .expect("back");
    let delivery = tokio::time::timeout(PATIENCE, back.inbox.recv())
        .await
        .expect("the session kept the valid one")
        .expect("delivered");
    let message = delivery.message(WireFormat::Envelope).expect("envelope");
    assert_eq!(message.payload_str().expect("text"), "long-lived");
    delivery.ack();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), back.inbox.recv())
            .await
            .is_err(),
        "the expired one never comes"
    );
    back.socket.close().await.expect("close");
    writer.socket.close().await.expect("close");
}

/// Lines logged while the returned guard lives (this thread only: a current-thread runtime
/// runs the connection task here too).
fn capture_logs() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    use tracing_subscriber::util::SubscriberInitExt;
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let guard = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Sink(Arc::clone(&sink)))
        .finish()
        .set_default();
    (logs, guard)
}

/// The broker's DISCONNECT reason is logged. Mosquitto 2.0.11 sends a reason code without
/// properties (`e0 01 95` to a client whose packet exceeded its `max_packet_size`), which
/// rumqttc 0.25.1 could not decode (vendor/rumqttc/PATCHES.md, 3). A peer of the test's own
/// sends exactly those bytes after its CONNACK: Mosquitto never sends them to a well-behaved
/// client (it takes sessions over without a DISCONNECT).
#[tokio::test]
async fn the_brokers_disconnect_reason_is_logged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (logs, _guard) = capture_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut connect = [0u8; 256];
        let _ = stream.read(&mut connect).await;
        // CONNACK: no session, success, no properties; then DISCONNECT 0x95 PacketTooLarge.
        stream
            .write_all(&[0x20, 0x03, 0x00, 0x00, 0x00, 0xE0, 0x01, 0x95])
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    });
    let config = MqttConfig {
        version: MqttVersion::V5,
        ..MqttConfig::new("127.0.0.1", port)
    };
    let spa = provider(config)
        .connect(SocketOptions::new("dropped"))
        .await
        .expect("connects");
    let logged = || String::from_utf8_lossy(&logs.lock().expect("lock")).into_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !logged().contains("the broker closed the connection: PacketTooLarge") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reason logged: {}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spa.socket.close().await.expect("close");
    peer.abort();
}

/// An MQTT 5 broker says in its CONNACK the largest packet it takes: a larger publish fails
/// at once, naming that limit, and the connection stays (rumqttc would otherwise fail the
/// connection over it, and again after each reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_larger_than_the_broker_takes_fails_at_once_at_mqtt_5() {
    let broker = Mosquitto::start_with("allow_anonymous true\nmax_packet_size 1000\n");
    let writer = support::connect_publisher(
        &provider(mqtt5(&broker, WireFormat::Envelope)),
        "big-writer",
    )
    .await;
    let started = std::time::Instant::now();
    let error = writer
        .socket
        .publish(&SpaMessage::new("big/t", vec![b'x'; 2_000]))
        .await
        .expect_err("too large for the broker");
    let text = error.to_string();
    assert!(text.contains("the broker takes at most 1000"), "{text}");
    assert!(error.is_permanent(), "{text}");
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    writer
        .socket
        .publish(&SpaMessage::new("big/t", "small"))
        .await
        .expect("the connection stays");
    writer.socket.close().await.expect("close");
}
