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
