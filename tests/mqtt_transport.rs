//! MQTT behaviour beyond the conformance suite on MQTT 3.1.1: the cases are in `tests/mqtt/transport.rs`, run on each version.

/// The MQTT version the cases run on.
const VERSION: spa_dat::socket::mqtt::MqttVersion = spa_dat::socket::mqtt::MqttVersion::V311;

#[path = "mqtt/transport.rs"]
mod transport;

// On MQTT 3.1.1 only: the test's own broker speaks 3.1.1 packets.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spa_dat::{Application, Config, SpaMessage};
use spa_dat_test_support::{joined, test_app, wait_until};

const STOP_LIMIT: Duration = Duration::from_secs(30);

fn provider(
    config: spa_dat::socket::mqtt::MqttConfig,
) -> Arc<dyn spa_dat::socket::spi::SocketProvider> {
    Arc::new(spa_dat::socket::mqtt::MqttSocketProvider::new(config).expect("valid config"))
}

/// A broker of the test's own on a loopback port: accepts one client, acknowledges its
/// subscription, sends it `count` QoS 1 messages on 40 topics and records the packet ids of
/// the PUBACKs it gets back, in the order they come off the wire.
async fn recording_broker(count: u16) -> (u16, Arc<Mutex<Vec<u16>>>) {
    use bytes::BytesMut;
    use rumqttc::{ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubscribeReasonCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&acks);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut input = BytesMut::new();
        loop {
            let packet = match Packet::read(&mut input, 1 << 20) {
                Ok(packet) => packet,
                Err(rumqttc::Error::InsufficientBytes(_)) => {
                    if stream.read_buf(&mut input).await.unwrap_or(0) == 0 {
                        return;
                    }
                    continue;
                }
                Err(error) => panic!("broker: {error:?}"),
            };
            let mut output = BytesMut::new();
            let mut reply = |packet: Packet| {
                packet.write(&mut output, 1 << 20).expect("encode");
            };
            match packet {
                Packet::Connect(_) => reply(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                ))),
                Packet::Subscribe(subscribe) => {
                    let codes = subscribe
                        .filters
                        .iter()
                        .map(|_| SubscribeReasonCode::Success(QoS::AtLeastOnce))
                        .collect();
                    reply(Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
                    for pkid in 1..=count {
                        let message =
                            SpaMessage::new(format!("wire/k{}", pkid % 40), pkid.to_string());
                        let mut publish = Publish::new(
                            message.topic.clone(),
                            QoS::AtLeastOnce,
                            message.to_json().expect("encodes"),
                        );
                        publish.pkid = pkid;
                        reply(Packet::Publish(publish));
                    }
                }
                Packet::PubAck(ack) => recorded.lock().expect("acks").push(ack.pkid),
                Packet::PingReq => reply(Packet::PingResp),
                Packet::Disconnect => return,
                _ => {}
            }
            if !output.is_empty() && stream.write_all(&output).await.is_err() {
                return;
            }
        }
    });
    (port, acks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_leave_in_arrival_order_while_handlers_finish_out_of_order() {
    const MESSAGES: u16 = 500;
    let (port, acks) = recording_broker(MESSAGES).await;
    let finished = Arc::new(Mutex::new(Vec::<u16>::new()));
    let f = Arc::clone(&finished);
    let app = test_app(Config::default()).add_application(
        Application::consumer("out-of-order", ["wire/+"], move |m: SpaMessage| {
            let f = Arc::clone(&f);
            async move {
                let pkid: u16 = m.payload_str().expect("utf-8").parse().expect("number");
                // 0-3 ms, different per message: handlers finish out of order.
                let wait = u64::from(pkid.wrapping_mul(7919) % 4);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                f.lock().expect("finished").push(pkid);
            }
        })
        .socket_provider(provider(transport::mqtt_config("127.0.0.1", port)))
        .concurrency(32),
    );
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let a = Arc::clone(&acks);
    wait_until("every PUBACK", Duration::from_secs(30), || {
        a.lock().expect("acks").len() >= usize::from(MESSAGES)
    })
    .await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    let finished = finished.lock().expect("finished").clone();
    let mut sorted = finished.clone();
    sorted.sort_unstable();
    assert_ne!(finished, sorted, "handlers did finish out of order");
    let expected: Vec<u16> = (1..=MESSAGES).collect();
    assert_eq!(
        *acks.lock().expect("acks"),
        expected,
        "PUBACKs on the wire in the order the PUBLISH packets came (MQTT 3.1.1 §4.6)"
    );
}
