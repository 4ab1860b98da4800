//! Hostile input and badly timed events against MQTT 5, the raw wire format and Kafka's
//! FastStream headers, found by an outside review of the change that brought them (7071b5f):
//! each test failed there, for the defect it names. Real Mosquitto brokers (and the test
//! Kafka, SPA_DAT_KAFKA_BOOTSTRAP); every wait is bounded.

use spa_dat_test_support as support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spa_dat::socket::headers::{CONTENT_TYPE, DEAD_LETTER_REASON, RESPONSE_TOPIC};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::{Connection, Outgoing, SocketOptions, SocketProvider};
use spa_dat::socket::WireFormat;
use spa_dat::{Application, Config, RetryPolicy, Socket, SpaMessage};
use support::mosquitto::Mosquitto;
use support::{joined, start_ready, test_app};

/// How long a run may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(30);

fn config(port: u16, version: MqttVersion, wire: WireFormat) -> MqttConfig {
    MqttConfig {
        version,
        wire,
        reconnect_max_ms: 500,
        ..MqttConfig::new("127.0.0.1", port)
    }
}

fn provider(config: MqttConfig) -> Arc<dyn SocketProvider> {
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

/// Logs to the test's output under RUST_LOG (e.g. `RUST_LOG=spa_dat=warn`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn connect(provider: &Arc<dyn SocketProvider>, id: &str, topics: &[&str]) -> Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        provider.connect(SocketOptions::new(unique(id)).topics(topics.iter().copied())),
    )
    .await
    .expect("connects in time")
    .expect("connects")
}

/// The next delivery of `connection`, acknowledged; `None` after `patience`.
async fn next(
    connection: &mut Connection,
    patience: Duration,
) -> Option<spa_dat::socket::spi::Delivery> {
    match tokio::time::timeout(patience, connection.inbox.recv()).await {
        Ok(Some(delivery)) => {
            let kept = spa_dat::socket::spi::Delivery::new(
                Arc::clone(&delivery.topic),
                delivery.payload.clone(),
            )
            .with_headers(delivery.headers.clone());
            delivery.ack();
            Some(kept)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A retried handler on a `wire = "raw"` bus never gets its message again.
// ---------------------------------------------------------------------------------------------

/// A consumer of `topic` whose handler records each payload in `calls` and fails its first call
/// only; retried quickly, dead letters to `dead_letters`.
fn failing_once(topic: &str, dead_letters: &str, calls: &Arc<Mutex<Vec<String>>>) -> Application {
    let c = Arc::clone(calls);
    Application::consumer("retrier", [topic], move |m: SpaMessage| {
        let c = Arc::clone(&c);
        async move {
            let mut calls = c.lock().expect("calls");
            calls.push(m.payload_str().unwrap_or("<not utf-8>").to_owned());
            if calls.len() == 1 {
                Err::<(), _>(spa_dat::BoxError::from("a passing failure"))
            } else {
                Ok(())
            }
        }
    })
    .retry(RetryPolicy::default().delays(Duration::from_millis(10), Duration::from_millis(20)))
    .dead_letter_topic(dead_letters)
}

/// `Consumer::call_again` (app/engine/consumer.rs) decodes the delivery with
/// `SpaMessage::from_json`, not with the bus's wire format: on a raw bus the first call gets the
/// bare payload, every retry fails to decode it and the handler is never called again — a
/// handler that failed once (a database blip) has its message dead-lettered as "handler failed:
/// … not a spa-dat message".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_message_whose_handler_fails_once_is_handled_on_the_retry() {
    let broker = Mosquitto::start();
    let raw5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Raw));
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&raw5))
        .add_application(failing_once("raw/retry", "raw/retry-dlq", &calls));
    let (shutdown, run) = start_ready(app).await;
    let mut dlq = connect(&raw5, "dlq-watcher", &["raw/retry-dlq"]).await;
    let publisher = connect(&raw5, "raw-publisher", &[]).await;
    let message = SpaMessage::new("raw/retry", "job-1").with_content_type("text/plain");
    publisher
        .socket
        .send(Outgoing::message_as(message, WireFormat::Raw).expect("encodes"))
        .await
        .expect("published");

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut dead_letter = None;
    while Instant::now() < deadline && calls.lock().expect("calls").len() < 2 {
        if let Some(delivery) = next(&mut dlq, Duration::from_millis(100)).await {
            dead_letter = Some(delivery);
            break;
        }
    }
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    let calls = calls.lock().expect("calls").clone();
    assert!(
        dead_letter.is_none() && calls == ["job-1", "job-1"],
        "the retry should call the handler again with the payload; handler calls: {calls:?}, \
         dead-lettered with reason: {:?}",
        dead_letter
            .as_ref()
            .and_then(|d| d.headers.get(DEAD_LETTER_REASON))
    );
}

/// The same on Kafka: a raw bus there retries no better.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_kafka_message_whose_handler_fails_once_is_handled_on_the_retry() {
    use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
    let config = KafkaConfig {
        wire: WireFormat::Raw,
        ..KafkaConfig::new(support::kafka::bootstrap())
    };
    let raw: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config).expect("valid config"));
    let topic = unique("raw-retry");
    let dlq_topic = format!("{topic}-dlq");
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&raw))
        .add_application(failing_once(&topic, &dlq_topic, &calls));
    let (shutdown, run) = start_ready(app).await;
    let publisher = connect(&raw, "raw-publisher", &[]).await;
    let message = SpaMessage::new(topic.as_str(), "job-1").with_content_type("text/plain");
    publisher
        .socket
        .send(Outgoing::message_as(message, WireFormat::Raw).expect("encodes"))
        .await
        .expect("published");
    let c = Arc::clone(&calls);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && c.lock().expect("calls").len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // On the current code the second call never comes: the wait runs out.
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    publisher.socket.close().await.expect("close");
    let calls = calls.lock().expect("calls").clone();
    assert_eq!(
        calls,
        ["job-1", "job-1"],
        "the retry should call the handler again with the payload"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A header value with a control character makes Mosquitto drop an MQTT 5 connection; a
//    dead-letter reason echoes hostile text, so one hostile message stalls a consumer.
// ---------------------------------------------------------------------------------------------

/// MQTT 5 carries headers as UTF-8 string properties, which a broker checks (Mosquitto rejects
/// control characters, U+0001..U+001F and U+007F..U+009F, as malformed UTF-8 and drops the
/// connection; MQTT 5 §1.5.4). spa-dat writes header values unchecked. A dead letter's reason
/// (`spa-dead-letter-reason`) quotes the hostile envelope's ResponseTopic verbatim ("`…` has a
/// wildcard"), so one message whose ResponseTopic is `bad/+\n` makes every dead-letter publish
/// drop the connection; each is refused after 3 drops, the summary too, and the consumer then
/// retries the dead letter forever: no later message is handled, the connection keeps
/// flapping. On MQTT 3.1.1 (no headers) the same message is dead-lettered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_response_topic_with_a_newline_does_not_stall_an_mqtt5_consumer() {
    logs();
    let broker = Mosquitto::start();
    let v5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Envelope));
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = Arc::clone(&handled);
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&v5))
        .add_application(
            Application::consumer("guarded", ["hostile/in"], move |m: SpaMessage| {
                let h = Arc::clone(&h);
                async move {
                    h.lock()
                        .expect("handled")
                        .push(m.payload_str().unwrap_or("?").to_owned());
                }
            })
            .dead_letter_topic("hostile/dlq"),
        );
    let (shutdown, run) = start_ready(app).await;
    let mut dlq = connect(&v5, "dlq-watcher", &["hostile/dlq"]).await;
    // The hostile publisher needs nothing but an envelope (any MQTT version).
    let attacker = connect(
        &provider(config(broker.port, MqttVersion::V311, WireFormat::Envelope)),
        "attacker",
        &[],
    )
    .await;
    let hostile = serde_json::json!({
        "Payload": "x",
        "Topic": "hostile/in",
        "ResponseTopic": "bad/+\nsecond line",
    });
    attacker
        .socket
        .publish_bytes("hostile/in", Bytes::from(hostile.to_string()))
        .await
        .expect("published");
    attacker
        .socket
        .publish(&SpaMessage::new("hostile/in", "after"))
        .await
        .expect("published");

    let dead_letter = next(&mut dlq, Duration::from_secs(20)).await;
    let h = Arc::clone(&handled);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && h.lock().expect("handled").is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    let handled = handled.lock().expect("handled").clone();
    let log = broker.log();
    let drops = log.matches("Malformed UTF-8").count();
    assert!(
        dead_letter.is_some() && handled == ["after"],
        "the hostile message should be dead-lettered and the next one handled; dead letter: \
         {}, handled: {handled:?}, the broker dropped the consumer {drops} times for malformed UTF-8; its log ends:\n{}",
        dead_letter.is_some(),
        log.lines().rev().take(6).collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A header value over 65,535 bytes is written with a wrapped length: its tail becomes MQTT 5
//    properties of the attacker's choosing.
// ---------------------------------------------------------------------------------------------

/// The bytes that, after a string property whose 16-bit length wrapped, the broker reads as
/// properties: a Response Topic `evil/…`, then two user properties filling the rest. Exactly
/// 65,536 bytes, every byte ASCII and none 0 (a valid Rust string that Mosquitto's UTF-8 checks
/// accept).
fn injected_properties() -> String {
    let mut bytes = Vec::with_capacity(65_536);
    // Response Topic (0x08), 257 bytes (0x0101).
    bytes.extend_from_slice(&[0x08, 0x01, 0x01]);
    bytes.extend_from_slice(b"evil/");
    bytes.extend(std::iter::repeat_n(b'x', 257 - 5));
    for value_len in [0x7F7Fu16, 0x7D71] {
        // User Property (0x26): a 257-byte name and a value.
        bytes.extend_from_slice(&[0x26, 0x01, 0x01]);
        bytes.extend(std::iter::repeat_n(b'n', 257));
        bytes.extend_from_slice(&value_len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(b'a', usize::from(value_len)));
    }
    assert_eq!(bytes.len(), 65_536);
    String::from_utf8(bytes).expect("ASCII")
}

/// spa-dat forwards a received message's trace context as headers (`traceparent`,
/// `tracestate`: user properties on MQTT 5), taken from the envelope, which any publisher
/// writes. rumqttc writes an MQTT string's length as `len as u16` (v5/mqttbytes/v5/mod.rs
/// `write_mqtt_bytes`), and spa-dat never checks a header against MQTT 5's 65,535-byte limit:
/// a `tracestate` of 65,536 + 3 bytes goes out with length 3, and its remaining 65,536 bytes
/// are read by the broker as properties. Here a relay forwards what it got (as the docs say a
/// forwarded message stays in its trace), dropping the ResponseTopic; its subscriber still gets
/// a response topic the attacker chose — where a responder would send its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_trace_state_cannot_inject_mqtt5_properties_into_a_forwarded_message() {
    let broker = Mosquitto::start();
    let v5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Envelope));
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&v5))
        .add_application(
            Application::consumer(
                "relay",
                ["relay/in"],
                |m: SpaMessage, socket: Socket| async move {
                    socket
                        .publish(SpaMessage {
                            topic: "relay/out".into(),
                            response_topic: None,
                            ..m
                        })
                        .await
                },
            )
            .retry(RetryPolicy::no_retries()),
        );
    let (shutdown, run) = start_ready(app).await;
    let mut downstream = connect(&v5, "downstream", &["relay/out"]).await;
    let attacker = connect(
        &provider(config(broker.port, MqttVersion::V311, WireFormat::Envelope)),
        "attacker",
        &[],
    )
    .await;
    let hostile = serde_json::json!({
        "Payload": "hello",
        "Topic": "relay/in",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": format!("k=v{}", injected_properties()),
    });
    attacker
        .socket
        .publish_bytes("relay/in", Bytes::from(hostile.to_string()))
        .await
        .expect("published");
    let forwarded = next(&mut downstream, Duration::from_secs(15)).await;
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    let forwarded = forwarded.expect("the relay forwards the message");
    let response_topic = forwarded.headers.get(RESPONSE_TOPIC).map(|t| {
        let end = t.len().min(16);
        t[..end].to_owned()
    });
    assert_eq!(
        response_topic,
        None,
        "the forwarded message carries no response topic, but arrived with one (first bytes \
         shown); tracestate arrived as {:?}",
        forwarded.headers.get("tracestate").map(|s| s.len())
    );
}

// ---------------------------------------------------------------------------------------------
// 4. `wire = "raw"` on MQTT 3.1.1 is accepted, and a request on it can only time out.
// ---------------------------------------------------------------------------------------------

/// A raw message carries its response topic as a header, and MQTT 3.1.1 carries none
/// (`Capabilities::headers` is false there). The configuration is accepted, the request is
/// published without any response topic, the responder drops its reply ("a message without a
/// response topic") and the requester waits out its whole timeout. It should be refused at
/// once (configuration or request), as `WireFormat::Raw`'s docs say it needs headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_raw_mqtt_3_1_1_bus_fails_at_once_or_gets_its_reply() {
    let broker = Mosquitto::start();
    let Ok(raw311) =
        MqttSocketProvider::new(config(broker.port, MqttVersion::V311, WireFormat::Raw))
    else {
        return; // refused as configuration: fine
    };
    let raw311: Arc<dyn SocketProvider> = Arc::new(raw311);
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&raw311))
        .add_consumer("upper", ["rpc/upper"], |m: SpaMessage| async move {
            m.payload_str().map(str::to_uppercase)
        });
    let (shutdown, run) = start_ready(app).await;
    let requester = connect(&raw311, "requester", &[]).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        requester.socket.request(
            SpaMessage::new("rpc/upper", "hi").with_content_type("text/plain"),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("the request ends within its own timeout");
    let took = started.elapsed();
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    match answer {
        Ok(reply) => assert_eq!(reply.payload_str().ok(), Some("HI")),
        Err(error) => assert!(
            took < Duration::from_secs(2),
            "a request that cannot work should fail at once, not after {took:?}: {error}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A raw message's trace context (in its headers) is not read: a relay drops it.
// ---------------------------------------------------------------------------------------------

/// `Delivery::message(WireFormat::Raw)` reads the content type and response topic from the
/// headers, not `traceparent` / `tracestate`: `SpaMessage::trace_context` is `None`, and a
/// message forwarded on a raw bus leaves its trace (with the `opentelemetry` feature off or not
/// enabled), where the same relay on an envelope bus keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_message_forwarded_by_a_relay_stays_in_its_trace() {
    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let broker = Mosquitto::start();
    let raw5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Raw));
    let app = test_app(Config::default())
        .socket_provider(Arc::clone(&raw5))
        .add_application(
            Application::consumer(
                "relay",
                ["trace/in"],
                |m: SpaMessage, socket: Socket| async move {
                    socket
                        .publish(SpaMessage {
                            topic: "trace/out".into(),
                            ..m
                        })
                        .await
                },
            )
            .retry(RetryPolicy::no_retries()),
        );
    let (shutdown, run) = start_ready(app).await;
    let mut downstream = connect(&raw5, "downstream", &["trace/out"]).await;
    let publisher = connect(&raw5, "publisher", &[]).await;
    let mut message = SpaMessage::new("trace/in", "{}").with_content_type("application/json");
    message.trace_context = Some(spa_dat::message::TraceContext {
        traceparent: TRACEPARENT.into(),
        tracestate: None,
    });
    let outgoing = Outgoing::message_as(message, WireFormat::Raw).expect("encodes");
    assert_eq!(outgoing.headers.get("traceparent"), Some(TRACEPARENT));
    publisher.socket.send(outgoing).await.expect("published");
    let forwarded = next(&mut downstream, Duration::from_secs(15)).await;
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    let forwarded = forwarded.expect("forwarded");
    assert_eq!(
        forwarded.headers.get(CONTENT_TYPE),
        Some("application/json")
    );
    assert_eq!(
        forwarded.headers.get("traceparent"),
        Some(TRACEPARENT),
        "the forwarded message keeps its trace context: {:?}",
        forwarded.headers
    );
}

// ---------------------------------------------------------------------------------------------
// 6. QoS 2 with a persistent session: a PUBREL the broker sends again after a reconnect keeps
//    the consumer disconnected for good.
// ---------------------------------------------------------------------------------------------

/// A TCP proxy in front of a broker that, while armed, cuts the connection instead of passing
/// on the first PUBREL the broker sends (the broker then has the client's PUBREC, the client
/// never sees the PUBREL).
struct Proxy {
    port: u16,
    armed: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(upstream: u16) -> Proxy {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("address").port();
    let armed = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (a, n) = (Arc::clone(&armed), Arc::clone(&accepted));
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let armed = Arc::clone(&a);
            connections.spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut broker_read, mut broker_write) = broker.into_split();
                let up = tokio::io::copy(&mut client_read, &mut broker_write);
                let down = async {
                    // Packet by packet: fixed header, remaining length, body.
                    loop {
                        let first = broker_read.read_u8().await?;
                        let mut header = vec![first];
                        let mut remaining = 0usize;
                        let mut shift = 0;
                        loop {
                            let byte = broker_read.read_u8().await?;
                            header.push(byte);
                            remaining |= usize::from(byte & 0x7F) << shift;
                            shift += 7;
                            if byte & 0x80 == 0 {
                                break;
                            }
                        }
                        let mut body = vec![0; remaining];
                        broker_read.read_exact(&mut body).await?;
                        if first >> 4 == 6 && armed.swap(false, Ordering::SeqCst) {
                            return Ok::<(), std::io::Error>(()); // cut, PUBREL not passed on
                        }
                        client_write.write_all(&header).await?;
                        client_write.write_all(&body).await?;
                    }
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    Proxy {
        port,
        armed,
        accepted,
        task,
    }
}

/// rumqttc forgets the packet ids of incoming QoS 2 messages on a connection loss
/// (`MqttState::clean` clears `incoming_pub`), then answers the PUBREL a broker must send
/// again on the resumed session (MQTT 5 §4.4, 3.1.1 §4.4) with `StateError::Unsolicited` — a
/// connection error. The driver reconnects, the broker sends the PUBREL again, and so on: the
/// consumer never stays connected and nothing published afterwards reaches it, as long as the
/// session lives (spa-dat asks MQTT 5 brokers to keep it forever). Nothing in the driver
/// (generic now over both versions) catches it.
async fn a_pubrel_sent_again_after_a_reconnect_is_completed(version: MqttVersion) {
    logs();
    let broker = Mosquitto::start();
    let proxy = proxy(broker.port).await;
    let mut consumer = config(proxy.port, version, WireFormat::Envelope);
    consumer.qos = 2;
    consumer.clean_session = false;
    consumer.client_id = Some(unique("pubrel-consumer"));
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = Arc::clone(&handled);
    let app = test_app(Config::default())
        .socket_provider(provider(consumer))
        .add_consumer("exactly-once", ["qos2/work"], move |m: SpaMessage| {
            let h = Arc::clone(&h);
            async move {
                h.lock()
                    .expect("handled")
                    .push(m.payload_str().unwrap_or("?").to_owned());
            }
        });
    let (shutdown, run) = start_ready(app).await;
    let mut publisher_config = config(broker.port, version, WireFormat::Envelope);
    publisher_config.qos = 2;
    let publisher = connect(&provider(publisher_config), "qos2-publisher", &[]).await;

    proxy.armed.store(true, Ordering::SeqCst);
    publisher
        .socket
        .publish(&SpaMessage::new("qos2/work", "one"))
        .await
        .expect("published");
    let h = Arc::clone(&handled);
    let armed = Arc::clone(&proxy.armed);
    support::wait_until(
        "`one` handled and its PUBREL cut",
        Duration::from_secs(15),
        || !h.lock().expect("handled").is_empty() && !armed.load(Ordering::SeqCst),
    )
    .await;
    publisher
        .socket
        .publish(&SpaMessage::new("qos2/work", "two"))
        .await
        .expect("published");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && handled.lock().expect("handled").len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    publisher.socket.close().await.expect("close");
    let handled = handled.lock().expect("handled").clone();
    let log = broker.log();
    assert_eq!(
        handled,
        ["one", "two"],
        "the consumer should resume after the cut; it connected {} times through the proxy; \
         the broker's log ends:\n{}",
        proxy.accepted.load(Ordering::SeqCst),
        log.lines().rev().take(6).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubrel_sent_again_after_a_reconnect_is_completed_at_mqtt_5() {
    a_pubrel_sent_again_after_a_reconnect_is_completed(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubrel_sent_again_after_a_reconnect_is_completed_at_mqtt_3_1_1() {
    a_pubrel_sent_again_after_a_reconnect_is_completed(MqttVersion::V311).await;
}

// ---------------------------------------------------------------------------------------------
// 7. MQTT 5: a publish over the broker's Maximum Packet Size tears the socket's own connection
//    down three times (losing what a clean-session subscriber was sent meanwhile).
// ---------------------------------------------------------------------------------------------

/// An MQTT 5 broker announces its Maximum Packet Size in CONNACK (Mosquitto: `max_packet_size`),
/// and rumqttc's encoder refuses a larger packet with an error that ends the connection
/// (`OutgoingPacketTooLarge` out of `EventLoop::poll`). spa-dat checks a publish only against its
/// own `max_packet_size` (default: MQTT's limit), so the driver reconnects and sends it again
/// until its poison rule gives up after 3 drops — and blames the broker ("the broker dropped the
/// connection 3 times"). The socket is a clean-session subscriber too: every message published
/// to it while it reconnects is lost. Expected, as for `max_packet_size` in the configuration
/// (`an_oversized_publish_fails_at_once_and_the_socket_keeps_working`): refused at once, the
/// connection kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_over_the_brokers_maximum_packet_size_fails_at_once_and_loses_nothing() {
    const FEED: usize = 200;
    // Started with its limit: a restart could find its port taken by a broker of another test.
    let broker = Mosquitto::start_with("allow_anonymous true\nmax_packet_size 4096\n");
    let v5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Envelope));
    let mut socket = connect(&v5, "big-publisher", &["big/feed"]).await;
    let feeder = connect(&v5, "feeder", &[]).await;
    let fed = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fed);
    let feeding = tokio::spawn(async move {
        for seq in 0..FEED {
            f.fetch_add(1, Ordering::SeqCst);
            feeder
                .socket
                .publish(&SpaMessage::new("big/feed", seq.to_string()))
                .await
                .expect("fed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        feeder.socket.close().await.expect("close");
    });
    // Into the feed, then the oversize publish.
    support::wait_until("the feed under way", Duration::from_secs(10), || {
        fed.load(Ordering::SeqCst) >= 20
    })
    .await;
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        socket
            .socket
            .publish(&SpaMessage::new("big/topic", "x".repeat(10_000))),
    )
    .await
    .expect("the publish ends");
    let took = started.elapsed();
    joined("the feed", Duration::from_secs(30), feeding).await;
    let mut received = 0;
    while next(&mut socket, Duration::from_secs(2)).await.is_some() {
        received += 1;
    }
    let connections = broker.log().matches("as big-publisher").count();
    let error = result.expect_err("refused: larger than the broker takes");
    assert!(
        connections == 1 && received == FEED,
        "refused after {took:?} with: {error}; the socket connected {connections} times and \
         received {received} of the {FEED} messages fed to it meanwhile"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. close() with publishes outstanding on an unresponsive broker: the driver is aborted and
//    the publishes hang on until their own timeout (both versions; not new in this change).
// ---------------------------------------------------------------------------------------------

/// With the broker not answering (here: SIGSTOP), rumqttc's in-flight window fills (MQTT 5:
/// the broker's Receive Maximum, 100 here), its request channel fills behind it, and `close()`'s
/// `try_disconnect` finds no room (its error is ignored). The driver sits in `poll` — it looks
/// at `close_requested` only while its inbox is full or between reconnects — so `close()` waits
/// 5 s and aborts it; the ledger's waiters are never resolved (that code ends `Driver::run`), and
/// every outstanding publish waits out its whole `publish_timeout_ms` (20 s here) and then says
/// "not acknowledged … it may still be delivered", instead of failing with `Closed` as close()
/// ends. The same on MQTT 3.1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_outstanding_at_close_fail_when_close_returns() {
    let broker = Mosquitto::start();
    let mut publisher_config = config(broker.port, MqttVersion::V5, WireFormat::Envelope);
    publisher_config.publish_timeout_ms = 20_000;
    let publisher = connect(&provider(publisher_config), "closer", &[]).await;
    broker.pause();
    let publishes: Vec<_> = (0..300)
        .map(|seq| {
            let socket = Arc::clone(&publisher.socket);
            tokio::spawn(async move {
                let result = socket
                    .publish(&SpaMessage::new("close/outstanding", seq.to_string()))
                    .await;
                (result, Instant::now())
            })
        })
        .collect();
    // Until rumqttc's channel is full behind its window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), publisher.socket.close())
        .await
        .expect("close returns")
        .expect("closed");
    let closed_after = started.elapsed();
    let mut late = 0;
    let mut first_late = None;
    for publish in publishes {
        let (outcome, ended) = tokio::time::timeout(Duration::from_secs(30), publish)
            .await
            .expect("the publish ends")
            .expect("no panic");
        let after = ended.saturating_duration_since(started);
        if after > closed_after + Duration::from_secs(1) {
            late += 1;
            if first_late.is_none() {
                first_late = Some(format!(
                    "{:?} {after:?} after close() was called",
                    outcome.err().map(|e| e.to_string())
                ));
            }
        }
    }
    broker.resume();
    assert_eq!(
        late, 0,
        "close() returned after {closed_after:?}; {late} publishes were still waiting a second \
         later, the first: {first_late:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. MQTT 5's message expiry interval is written from a header but not read back into one.
// ---------------------------------------------------------------------------------------------

/// wire5.rs says headers map to MQTT 5's own properties — `spa-message-expiry-secs` to the
/// message expiry interval — "and received properties map back the same way", but
/// `received_headers` reads the correlation data, response topic and content type only: a
/// consumer never sees the expiry, and a relay or a dead letter re-publishes the message
/// without one (it then never expires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_expiry_interval_comes_back_as_its_header() {
    use spa_dat::socket::headers::MESSAGE_EXPIRY_SECS;
    let broker = Mosquitto::start();
    let v5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Envelope));
    let mut reader = connect(&v5, "expiry-reader", &["expiry/t"]).await;
    let writer = connect(&v5, "expiry-writer", &[]).await;
    let outgoing = Outgoing::message(SpaMessage::new("expiry/t", "soon stale"))
        .expect("encodes")
        .with_header(MESSAGE_EXPIRY_SECS, "600")
        .with_header("tenant", "acme");
    writer.socket.send(outgoing).await.expect("published");
    let delivery = next(&mut reader, Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(delivery.headers.get("tenant"), Some("acme"));
    let expiry = delivery
        .headers
        .get(MESSAGE_EXPIRY_SECS)
        .and_then(|secs| secs.parse::<u32>().ok());
    assert!(
        expiry.is_some_and(|secs| (590..=600).contains(&secs)),
        "the expiry should arrive as `{MESSAGE_EXPIRY_SECS}`; headers: {:?}",
        delivery.headers
    );
}

// ---------------------------------------------------------------------------------------------
// 10. A raw responder answers a Python spa-dat (envelope) request with a bare payload.
// ---------------------------------------------------------------------------------------------

/// `WireFormat::Raw` reads an envelope "as one (a Python spa-dat publisher on the same bus)",
/// and the FastStream interop test keeps Python spa-dat 0.4.0 requesting on the same
/// Mosquitto — but a raw responder answers every request in raw, whatever format it came in:
/// the Python requester gets a bare `GRÜSSE FROM PYTHON`, cannot decode it (its replies must
/// be envelopes) and times out. A reply should go in the format its request came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_responder_answers_a_python_spa_dat_request_in_the_envelope() {
    let broker = Mosquitto::start();
    let raw5 = provider(config(broker.port, MqttVersion::V5, WireFormat::Raw));
    let responder =
        Application::consumer("upper", ["interop/raw-upper"], |m: SpaMessage| async move {
            // Python spa-dat 0.4.0 listens for its reply only once its publish returned: a
            // faster reply is lost (README, "From the Python package"; the same pause as in
            // tests/mqtt_python_interop.rs). Without it this test failed once in a full run.
            tokio::time::sleep(Duration::from_millis(20)).await;
            m.payload_str().map(str::to_uppercase)
        })
        .socket_provider(raw5);
    let (shutdown, running) = support::run_in_background(responder).await;
    let mut command = tokio::process::Command::new(support::python::python());
    command
        .arg(support::python::script("mqtt_requester.py"))
        .args([
            "127.0.0.1".to_owned(),
            broker.port.to_string(),
            "interop/raw-upper".to_owned(),
            "grüße from python".to_owned(),
        ])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the Python requester ends (it waits 20 s at most)")
        .expect("python runs");
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, running).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python spa-dat requester got no reply it could read: {}",
        stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
    let reply = SpaMessage::from_json(String::from_utf8_lossy(&output.stdout).trim().as_bytes())
        .expect("Python printed a spa-dat message");
    assert_eq!(reply.payload_str().ok(), Some("GRÜSSE FROM PYTHON"));
}
