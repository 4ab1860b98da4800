//! MQTT behaviour beyond the conformance suite, against real Mosquitto brokers: scale-out with
//! shared subscriptions, at-least-once across a broker restart, bad input, bad config.

use spa_dat_test_support as support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Application, Config, Error, RetryPolicy, Shutdown, Socket, SpaMessage};
use support::mosquitto::Mosquitto;
use support::{joined, start_ready, test_app, wait_until};

/// `MqttConfig::new(host, port)` on the MQTT version this suite runs on (`crate::VERSION`).
pub(crate) fn mqtt_config(host: impl Into<String>, port: u16) -> MqttConfig {
    MqttConfig {
        version: crate::VERSION,
        ..MqttConfig::new(host, port)
    }
}

/// How long a run may take to stop once shut down (the default grace period is 10 s).
const STOP_LIMIT: Duration = Duration::from_secs(30);

fn provider(config: MqttConfig) -> Arc<dyn SocketProvider> {
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

/// Runs a consumer `name` of `topic` on `config` until its handler has the message `job` (it
/// then shuts down; `what` names the wait, at most 20 s): how many times the handler saw it.
async fn run_until_job(config: MqttConfig, name: &str, topic: &str, what: &str) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&done);
    let run = test_app(Config::default())
        .socket_provider(provider(config))
        .add_consumer(name, [topic], move |m: SpaMessage, shutdown: Shutdown| {
            let d = Arc::clone(&d);
            async move {
                assert_eq!(m.payload_str().ok(), Some("job"));
                d.fetch_add(1, Ordering::SeqCst);
                shutdown.trigger();
            }
        });
    tokio::time::timeout(Duration::from_secs(20), run.start_async())
        .await
        .expect(what)
        .expect("clean");
    done.load(Ordering::SeqCst)
}

/// A socket on `broker` for the test to publish with.
async fn publisher(broker: &Mosquitto, client_id: &str) -> spa_dat::socket::spi::Connection {
    support::connect_publisher(&provider(mqtt_config("127.0.0.1", broker.port)), client_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_group_splits_the_stream() {
    const MESSAGES: usize = 10_000;
    let broker = Mosquitto::start();
    let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
    let per_member = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut app = test_app(Config::default())
        .socket_provider(provider(mqtt_config("127.0.0.1", broker.port)));
    for member in 0..2 {
        let (seen, per_member) = (Arc::clone(&seen), Arc::clone(&per_member));
        app = app.add_application(
            Application::consumer(
                format!("worker-{member}"),
                ["jobs/+"],
                move |m: SpaMessage| {
                    let (seen, per_member) = (Arc::clone(&seen), Arc::clone(&per_member));
                    async move {
                        per_member[member].fetch_add(1, Ordering::SeqCst);
                        seen.lock().expect("seen").push(support::seq_of(&m));
                    }
                },
            )
            .group("workers"),
        );
    }
    let app = app.add_producer("feeder", |socket: spa_dat::Socket| async move {
        for seq in 0..MESSAGES {
            socket
                .publish(SpaMessage::new(
                    format!("jobs/{}", seq % 7),
                    seq.to_string(),
                ))
                .await?;
        }
        Ok::<(), Error>(())
    });
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let s = Arc::clone(&seen);
    wait_until("10,000 jobs", Duration::from_secs(60), || {
        s.lock().expect("seen").len() >= MESSAGES
    })
    .await;
    // A quiet window: a message handled twice would show up in it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean run");
    let seen = seen.lock().expect("seen").clone();
    let unique: HashSet<usize> = seen.iter().copied().collect();
    assert_eq!(unique.len(), MESSAGES, "none lost");
    assert_eq!(seen.len(), MESSAGES, "none handled twice");
    let (a, b) = (
        per_member[0].load(Ordering::SeqCst),
        per_member[1].load(Ordering::SeqCst),
    );
    assert!(
        a > MESSAGES / 4 && b > MESSAGES / 4,
        "both members work: {a} / {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_at_least_once_across_a_broker_restart() {
    const MESSAGES: usize = 10_000;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut broker = Mosquitto::start();
    let port = broker.port;
    let mut consumer_config = mqtt_config("127.0.0.1", port);
    consumer_config.clean_session = false;
    consumer_config.client_id = Some("restart-consumer".into());
    consumer_config.reconnect_max_ms = 500;
    let seen = Arc::new(Mutex::new(HashSet::<usize>::new()));
    let handled = Arc::new(AtomicUsize::new(0));
    let (s, h) = (Arc::clone(&seen), Arc::clone(&handled));
    let app = test_app(Config::default())
        .socket_provider(provider(consumer_config))
        .add_consumer("durable", ["stream/qos1"], move |m: SpaMessage| {
            let (s, h) = (Arc::clone(&s), Arc::clone(&h));
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                s.lock().expect("seen").insert(support::seq_of(&m));
            }
        });
    let (shutdown, run) = start_ready(app).await;

    let mut publisher_config = mqtt_config("127.0.0.1", port);
    publisher_config.reconnect_max_ms = 500;
    publisher_config.publish_timeout_ms = 20_000;
    let publisher = provider(publisher_config)
        .connect(SocketOptions::new("restart-publisher"))
        .await
        .expect("publisher connects");
    let socket = Arc::clone(&publisher.socket);
    let publishing = tokio::spawn(async move {
        let mut retried = 0;
        for seq in 0..MESSAGES {
            // Each publish returns once the broker has it; a failed one is published again.
            while let Err(error) = socket
                .publish(&SpaMessage::new("stream/qos1", seq.to_string()))
                .await
            {
                retried += 1;
                assert!(retried < 1000, "publishing keeps failing: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        retried
    });
    let s = Arc::clone(&seen);
    wait_until("a third of the stream", Duration::from_secs(60), || {
        s.lock().expect("seen").len() >= MESSAGES / 3
    })
    .await;
    broker.restart();
    let retried = joined("the publisher", Duration::from_secs(120), publishing).await;
    let s = Arc::clone(&seen);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.lock().expect("seen").len() < MESSAGES {
        if Instant::now() > deadline {
            let seen = s.lock().expect("seen");
            let missing: Vec<usize> = (0..MESSAGES)
                .filter(|i| !seen.contains(i))
                .take(20)
                .collect();
            panic!(
                "{} of {MESSAGES} handled; first missing: {missing:?}",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    publisher.socket.close().await.expect("close");
    assert_eq!(seen.lock().expect("seen").len(), MESSAGES);
    eprintln!(
        "handled {} deliveries for {MESSAGES} messages; {retried} publishes retried by the test",
        handled.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_handler_did_not_finish_is_delivered_again() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.clean_session = false;
    config.client_id = Some("at-least-once".into());
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let first = test_app(Config {
        shutdown_grace_ms: 100,
        ..Config::default()
    })
    .socket_provider(provider(config.clone()))
    .add_consumer("slow", ["work/once"], move |shutdown: Shutdown| {
        let a = Arc::clone(&a);
        async move {
            a.fetch_add(1, Ordering::SeqCst);
            shutdown.trigger();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
    let (_shutdown, run) = start_ready(first).await;
    let publisher = publisher(&broker, "once-publisher").await;
    publisher
        .socket
        .publish(&SpaMessage::new("work/once", "job"))
        .await
        .expect("publish");
    // The handler triggers the shutdown: a message that never arrived would hang this forever.
    joined("the first run", STOP_LIMIT, run)
        .await
        .expect("first run ends after the grace period");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);

    let done = run_until_job(config, "slow", "work/once", "redelivered").await;
    assert_eq!(done, 1, "the unacknowledged message came back");
    publisher.socket.close().await.expect("close");
}

/// Without a dead-letter topic, a message whose handler keeps failing past the policy's attempts
/// is not dropped: it is never acknowledged, so the broker hands it over again to the next run
/// of the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_topic_an_exhausted_message_is_not_acknowledged_and_comes_back() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.clean_session = false;
    config.client_id = Some("exhausted".into());
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let first = test_app(Config {
        shutdown_grace_ms: 100,
        ..Config::default()
    })
    .socket_provider(provider(config.clone()))
    .add_application(
        Application::consumer("failing", ["work/exhausted"], move |_m: SpaMessage| {
            let a = Arc::clone(&a);
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(spa_dat::BoxError::from("not now"))
            }
        })
        .retry(RetryPolicy::default().delays(Duration::from_millis(10), Duration::from_millis(20))),
    );
    let (shutdown, run) = start_ready(first).await;
    let publisher = publisher(&broker, "exhausted-publisher").await;
    publisher
        .socket
        .publish(&SpaMessage::new("work/exhausted", "job"))
        .await
        .expect("publish");
    let a = Arc::clone(&attempts);
    wait_until(
        "attempts past the policy's 3",
        Duration::from_secs(10),
        || a.load(Ordering::SeqCst) >= 5,
    )
    .await;
    shutdown.trigger();
    joined("the first run", STOP_LIMIT, run)
        .await
        .expect("clean");

    let done = run_until_job(config, "failing", "work/exhausted", "delivered again").await;
    assert_eq!(done, 1, "the broker still held it");
    publisher.socket.close().await.expect("close");
}

/// Most handlers finish on the connection's task as their message arrives; the others finish on
/// the consumer's task. Either way a consumer handles one message at a time, in order, and a
/// panic on the connection's task does not stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_one_at_a_time_in_arrival_order_wherever_they_finish() {
    const MESSAGES: usize = 2_000;
    let broker = Mosquitto::start();
    let events = Arc::new(Mutex::new(Vec::<(usize, &'static str)>::new()));
    let e = Arc::clone(&events);
    let app = test_app(Config::default())
        .socket_provider(provider(mqtt_config("127.0.0.1", broker.port)))
        .add_application(
            Application::consumer("ordered", ["ordered"], move |m: SpaMessage| {
                let e = Arc::clone(&e);
                async move {
                    let seq = support::seq_of(&m);
                    e.lock().expect("events").push((seq, "start"));
                    if seq.is_multiple_of(13) {
                        panic!("message {seq} is poison");
                    }
                    if seq.is_multiple_of(5) {
                        // Messages keep arriving meanwhile: none may start before this one ends.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    e.lock().expect("events").push((seq, "end"));
                }
            })
            // One call per message: the poison ones are skipped, not retried.
            .retry(RetryPolicy::no_retries()),
        );
    let (shutdown, run) = start_ready(app).await;
    let publisher = publisher(&broker, "ordered-publisher").await;
    support::publish_numbered(&publisher.socket, "ordered", 0..MESSAGES).await;
    let expected: Vec<(usize, &str)> = (0..MESSAGES)
        .flat_map(|seq| {
            let end = (!seq.is_multiple_of(13)).then_some((seq, "end"));
            std::iter::once((seq, "start")).chain(end)
        })
        .collect();
    let e = Arc::clone(&events);
    wait_until("every message handled", Duration::from_secs(60), || {
        e.lock().expect("events").len() >= expected.len()
    })
    .await;
    assert_eq!(*events.lock().expect("events"), expected);
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    publisher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_started_on_arrival_gets_the_grace_period_at_shutdown() {
    let broker = Mosquitto::start();
    let finished = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&finished);
    let app = test_app(Config {
        shutdown_grace_ms: 5_000,
        ..Config::default()
    })
    .socket_provider(provider(mqtt_config("127.0.0.1", broker.port)))
    .add_consumer("graceful", ["work/graceful"], move |shutdown: Shutdown| {
        let f = Arc::clone(&f);
        async move {
            // Starts on the connection's task; shutdown arrives before it ends.
            shutdown.trigger();
            tokio::time::sleep(Duration::from_millis(50)).await;
            f.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (_shutdown, run) = start_ready(app).await;
    let publisher = publisher(&broker, "graceful-publisher").await;
    publisher
        .socket
        .publish(&SpaMessage::new("work/graceful", "job"))
        .await
        .expect("publish");
    joined("the run", Duration::from_secs(10), run)
        .await
        .expect("clean");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the handler ran to its end"
    );
    publisher.socket.close().await.expect("close");
}

/// QoS 2 end to end: publishes return after the broker's PUBREC, the consumer answers each
/// message with PUBREC after its handler (more than the broker's 100 in flight: a missing one
/// stalls the stream), and each message is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_2_stream_is_handled_once_each() {
    const MESSAGES: usize = 1_000;
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.qos = 2;
    let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
    let s = Arc::clone(&seen);
    let app = test_app(Config::default())
        .socket_provider(provider(config.clone()))
        .add_consumer("exactly", ["exactly/once"], move |m: SpaMessage| {
            let s = Arc::clone(&s);
            async move {
                s.lock().expect("seen").push(support::seq_of(&m));
            }
        });
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider(config), "exactly-publisher").await;
    support::publish_numbered(&publisher.socket, "exactly/once", 0..MESSAGES).await;
    let s = Arc::clone(&seen);
    wait_until("every QoS 2 message", Duration::from_secs(30), || {
        s.lock().expect("seen").len() >= MESSAGES
    })
    .await;
    // A quiet window: a message handled twice would show up in it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *seen.lock().expect("seen"),
        (0..MESSAGES).collect::<Vec<_>>()
    );
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    publisher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_do_not_stop_the_consumer() {
    let broker = Mosquitto::start();
    let good = Arc::new(AtomicUsize::new(0));
    let g = Arc::clone(&good);
    let app = test_app(Config {
        dead_letter_topic: Some("dead/letters".into()),
        ..Config::default()
    })
    .socket_provider(provider(mqtt_config("127.0.0.1", broker.port)))
    .add_consumer("robust", ["input"], move |_m: SpaMessage| {
        let g = Arc::clone(&g);
        async move {
            g.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (shutdown, run) = start_ready(app).await;
    let watcher_provider = provider(mqtt_config("127.0.0.1", broker.port));
    let mut watcher = watcher_provider
        .connect(SocketOptions::new("dead-watcher").topics(["dead/letters"]))
        .await
        .expect("connects");
    let raw = watcher.socket.clone();
    raw.publish_bytes("input", Bytes::from_static(b"\x00\x01 garbage"))
        .await
        .expect("publish");
    raw.publish_bytes("input", Bytes::from_static(br#"{"Topic":"input"}"#))
        .await
        .expect("publish");
    for _ in 0..5 {
        raw.publish(&SpaMessage::new("input", "fine"))
            .await
            .expect("publish");
    }
    let g = Arc::clone(&good);
    wait_until("five good messages", Duration::from_secs(20), || {
        g.load(Ordering::SeqCst) == 5
    })
    .await;
    let dead = support::next_payloads(&mut watcher.inbox, 2, Duration::from_secs(10)).await;
    assert_eq!(
        dead,
        [
            Bytes::from_static(b"\x00\x01 garbage"),
            Bytes::from_static(br#"{"Topic":"input"}"#)
        ]
    );
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    watcher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_beyond_rumqttc_default_packet_size_pass() {
    let broker = Mosquitto::start();
    let provider = provider(mqtt_config("127.0.0.1", broker.port));
    let mut sub = provider
        .connect(SocketOptions::new("big-sub").topics(["big"]))
        .await
        .expect("connects");
    let publisher = provider
        .connect(SocketOptions::new("big-pub"))
        .await
        .expect("connects");
    let body = "x".repeat(200 * 1024);
    publisher
        .socket
        .publish(&SpaMessage::new("big", body.clone()))
        .await
        .expect("publish");
    let delivery = tokio::time::timeout(Duration::from_secs(10), sub.inbox.recv())
        .await
        .expect("arrives")
        .expect("open");
    let message = SpaMessage::from_json(&delivery.payload).expect("decodes");
    assert_eq!(message.payload.len(), body.len());
    delivery.ack();
}

async fn connect_error(config: MqttConfig) -> Error {
    let started = Instant::now();
    let result = provider(config)
        .connect(SocketOptions::new("bad-config"))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast, no hang"
    );
    match result {
        Ok(_) => panic!("connected with a bad config"),
        Err(error) => error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_with_a_clear_error_naming_the_broker() {
    // Refused: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let error = connect_error(mqtt_config("127.0.0.1", port)).await;
    let text = error.to_string();
    assert!(matches!(error, Error::Connect { .. }), "{text}");
    assert!(
        text.contains(&format!("mqtt://127.0.0.1:{port}")) && text.contains("refused"),
        "{text}"
    );

    // Unknown host.
    let error = connect_error(mqtt_config("no-such-host.invalid", 1883)).await;
    let text = error.to_string();
    assert!(text.contains("mqtt://no-such-host.invalid:1883"), "{text}");

    // Wrong credentials.
    let broker = Mosquitto::start_with_password();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.username = Some("user".into());
    config.password = Some("wrong".into());
    let error = connect_error(config.clone()).await;
    let text = error.to_string();
    assert!(
        text.contains("wrong user name or password") && text.contains(&broker.url()),
        "{text}"
    );
    config.password = Some("secret".into());
    let ok = provider(config)
        .connect(SocketOptions::new("good-creds"))
        .await
        .expect("right credentials work");
    ok.socket.close().await.expect("close");

    // A whole application with an unreachable broker: run() fails, naming it.
    let app = test_app(Config::default())
        .socket_provider(provider(mqtt_config("127.0.0.1", port)))
        .add_consumer("stranded", ["x"], || async {});
    let error = tokio::time::timeout(Duration::from_secs(15), app.start_async())
        .await
        .expect("no hang")
        .expect_err("fails");
    assert!(
        error.to_string().contains("stranded") && error.to_string().contains("refused"),
        "{error}"
    );
}

#[test]
fn urls_and_config_are_validated() {
    let config = MqttConfig::from_url("mqtt://u%40x:p%3Aw@broker.local:1884?client_id=c1&qos=2&clean_session=false&topics=a/+,b/%23")
        .expect("parses");
    assert_eq!(config.host, "broker.local");
    assert_eq!(config.port, 1884);
    assert_eq!(config.username.as_deref(), Some("u@x"));
    assert_eq!(config.password.as_deref(), Some("p:w"));
    assert_eq!(config.client_id.as_deref(), Some("c1"));
    assert_eq!(config.qos, 2);
    assert!(!config.clean_session);
    assert_eq!(config.default_subscription_topics, ["a/+", "b/#"]);
    for (url, needle) in [
        ("mqtt://h?qos=3", "qos must be 0, 1 or 2"),
        ("mqtt://h?bogus=1", "unknown parameter `bogus`"),
        ("mqtt://h?clean_session=maybe", "not true or false"),
        ("mqtt://h?keepalive=2", "keepalive"),
    ] {
        let error = MqttConfig::from_url(url).expect_err(url);
        assert!(error.to_string().contains(needle), "{url}: {error}");
    }
    let via_factory = spa_dat::config::SocketProviderFactory::from_url("mqtt://localhost:1883")
        .expect("provider");
    assert_eq!(via_factory.describe(), "mqtt://localhost:1883");
    let rebuilt = via_factory.rebuild(vec!["x/#".into()]);
    assert_eq!(rebuilt.default_topics(), ["x/#"]);
    let options = mqtt_config("h", 1)
        .build_client_config("client-9")
        .expect("options");
    assert_eq!(options.client_id(), "client-9");
    let mut tls = mqtt_config("h", 8883);
    tls.tls = Some(spa_dat::socket::mqtt::MqttTls {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..Default::default()
    });
    let error = tls.build_client_config("c").expect_err("missing CA file");
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_wide_client_id_gives_each_application_a_connection_of_its_own() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.client_id = Some("plant".into());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let consumer = |name: &str, topic: &str| {
        let seen = Arc::clone(&seen);
        Application::consumer(name, [topic], move |m: SpaMessage| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().expect("seen").insert(m.topic.clone());
            }
        })
    };
    let app = test_app(Config::default())
        .socket_provider(provider(config))
        .add_application(consumer("line-a", "plant/a"))
        .add_application(consumer("line-b", "plant/b"));
    let (shutdown, running) = start_ready(app).await;
    let publisher = publisher(&broker, "plant-publisher").await;
    for topic in ["plant/a", "plant/b"] {
        publisher
            .socket
            .publish(&SpaMessage::new(topic, "x"))
            .await
            .expect("publish");
    }
    let s = Arc::clone(&seen);
    wait_until("both applications receive", Duration::from_secs(10), || {
        s.lock().expect("seen").len() == 2
    })
    .await;
    let log = broker.log();
    assert!(
        !log.contains("already connected"),
        "the applications' connections kicked each other off: {log}"
    );
    assert!(
        log.contains("plant-line-a") && log.contains("plant-line-b"),
        "{log}"
    );
    shutdown.trigger();
    joined("the run", STOP_LIMIT, running).await.expect("clean");
    publisher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_publish_fails_at_once_and_the_socket_keeps_working() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.max_packet_size = 10_000;
    let mut watcher = publisher(&broker, "oversize-watcher").await;
    watcher
        .socket
        .subscribe(&["big/#".to_owned()])
        .await
        .expect("subscribe");
    let socket = provider(config)
        .connect(SocketOptions::new("oversize-publisher"))
        .await
        .expect("connects")
        .socket;
    let started = Instant::now();
    let error = socket
        .publish_bytes("big/one", Bytes::from(vec![b'x'; 20_000]))
        .await
        .expect_err("too large");
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    assert!(error.to_string().contains("too large"), "{error}");
    for i in 0..5 {
        tokio::time::timeout(
            Duration::from_secs(2),
            socket.publish(&SpaMessage::new("big/small", i.to_string())),
        )
        .await
        .expect("no wedged socket")
        .expect("a normal publish goes through");
    }
    let payloads = support::next_payloads(&mut watcher.inbox, 5, Duration::from_secs(5)).await;
    assert_eq!(payloads.len(), 5);
    assert_eq!(
        broker.log().matches("New client connected").count(),
        2,
        "no reconnects: {}",
        broker.log()
    );
    socket.close().await.expect("close");
    watcher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_timed_out_says_it_may_still_be_delivered() {
    let broker = Mosquitto::start();
    let mut watcher = publisher(&broker, "timeout-watcher").await;
    watcher
        .socket
        .subscribe(&["slow/#".to_owned()])
        .await
        .expect("subscribe");
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.publish_timeout_ms = 500;
    config.keepalive_secs = 60;
    let socket = provider(config)
        .connect(SocketOptions::new("timeout-publisher"))
        .await
        .expect("connects")
        .socket;
    broker.pause();
    let error = socket
        .publish(&SpaMessage::new("slow/one", "once"))
        .await
        .expect_err("times out");
    broker.resume();
    let text = error.to_string();
    assert!(text.contains("may still be delivered"), "{text}");
    // It was: exactly once.
    let payloads = support::next_payloads(&mut watcher.inbox, 1, Duration::from_secs(10)).await;
    let message = SpaMessage::from_json(&payloads[0]).expect("a spa-dat message");
    assert_eq!(message.payload_str().expect("utf-8"), "once");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watcher.inbox.recv())
            .await
            .is_err(),
        "delivered once"
    );
    socket.close().await.expect("close");
    watcher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_cancelled_while_waiting_for_room_leaves_the_acknowledgements_in_step() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    // One message in flight: while the broker is frozen the rest wait in rumqttc's request
    // channel (64 places), and the publish after them waits for room.
    config.inflight = 1;
    config.publish_timeout_ms = 30_000;
    let socket = provider(config)
        .connect(SocketOptions::new("cancel-publisher"))
        .await
        .expect("connects")
        .socket;
    broker.pause();
    let waiting: Vec<_> = (0..65)
        .map(|i| {
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                socket
                    .publish(&SpaMessage::new("cancel/queued", i.to_string()))
                    .await
            })
        })
        .collect();
    // Time for the 65 to be handed over and fill the channel: nothing outside the socket tells
    // when they have (the assertion below checks the last publish did wait for room).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A caller that gives up while its publish waits for room (a handler timing out).
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        socket.publish(&SpaMessage::new("cancel/given-up", "x")),
    )
    .await;
    assert!(cancelled.is_err(), "it was waiting");
    broker.resume();
    for publish in waiting {
        joined("a queued publish", Duration::from_secs(35), publish)
            .await
            .expect("every earlier publish is acknowledged");
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        socket.publish(&SpaMessage::new("cancel/after", "y")),
    )
    .await
    .expect("a later publish gets its own acknowledgement")
    .expect("acknowledged");
    socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_message_larger_than_max_packet_size_is_delivered_and_loses_nothing() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.max_packet_size = 10_000;
    let mut consumer = provider(config)
        .connect(SocketOptions::new("small-consumer").topics(["large/#"]))
        .await
        .expect("connects");
    let publisher = publisher(&broker, "large-publisher").await;
    publisher
        .socket
        .publish(&SpaMessage::new("large/one", "x".repeat(50_000)))
        .await
        .expect("a large publish");
    support::publish_numbered(&publisher.socket, "large/small", 0..5).await;
    let payloads = support::next_payloads(&mut consumer.inbox, 6, Duration::from_secs(10)).await;
    let first = SpaMessage::from_json(&payloads[0]).expect("decodes");
    assert_eq!(first.payload.len(), 50_000);
    assert_eq!(
        broker.log().matches("New client connected").count(),
        2,
        "no reconnect: {}",
        broker.log()
    );
    consumer.socket.close().await.expect("close");
    publisher.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handlers_keep_each_topics_order_over_a_thousand_topics() {
    const MESSAGES: usize = 100_000;
    const TOPICS: u32 = 1_000;
    let broker = Mosquitto::start();
    let checker = Arc::new(support::ordering::OrderChecker::default());
    let app = test_app(Config::default())
        .socket_provider(provider(mqtt_config("127.0.0.1", broker.port)))
        .add_application(
            support::ordering::checked_consumer("ordered-topics", ["order/+"], &checker, 5_000)
                .concurrency(64)
                .ordering(spa_dat::MessageOrder::Key),
        );
    let (shutdown, run) = start_ready(app).await;
    let publisher = publisher(&broker, "order-publisher").await;
    let work = support::ordering::workload(MESSAGES, TOPICS, 5);
    let started = Instant::now();
    // Pipelined in chunks: one publisher, so each topic's messages go out in order.
    for chunk in work.chunks(200) {
        let sends = chunk.iter().map(|(key, seq)| {
            let message = SpaMessage::new(
                format!("order/{key}"),
                support::ordering::payload(*key, *seq),
            );
            let socket = &publisher.socket;
            async move { socket.publish(&message).await }
        });
        for result in futures_util::future::join_all(sends).await {
            result.expect("publish");
        }
    }
    checker
        .wait_handled(MESSAGES, Duration::from_secs(300))
        .await;
    eprintln!(
        "MQTT: {MESSAGES} messages over {TOPICS} topics, 0-5 ms each, concurrency 64: {:?}, at most {} at once",
        started.elapsed(),
        checker.max_in_flight.load(Ordering::SeqCst)
    );
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    publisher.socket.close().await.expect("close");
    checker.assert_each_once_in_order(MESSAGES, "per-topic order");
    assert!(
        checker.max_in_flight.load(Ordering::SeqCst) > 1,
        "ran concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_connection() {
    let mut broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.reconnect_max_ms = 300;
    let app = test_app(Config::default())
        .socket_provider(provider(config))
        .add_consumer("watched", ["ready/+"], |_m: SpaMessage| async {});
    let readiness = app.readiness();
    assert!(!readiness.is_ready(), "not ready before the run");
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    tokio::time::timeout(Duration::from_secs(10), readiness.ready())
        .await
        .expect("ready once subscribed");
    broker.stop();
    let lost = Instant::now();
    let r = readiness.clone();
    wait_until(
        "not ready after the broker stopped",
        Duration::from_secs(2),
        || !r.is_ready(),
    )
    .await;
    eprintln!("not ready {:?} after the broker stopped", lost.elapsed());
    assert_eq!(readiness.not_ready(), ["watched"]);
    broker.restart();
    tokio::time::timeout(Duration::from_secs(10), readiness.ready())
        .await
        .expect("ready again once reconnected");
    shutdown.trigger();
    joined("the run", STOP_LIMIT, run).await.expect("clean");
    assert!(!readiness.is_ready(), "not ready once stopped");
}

/// A consumer that publishes from its handler (a forwarder) keeps going when it falls behind:
/// with its inbox full the connection still sends what its handlers publish. QoS 0 (no broker
/// flow control, so the inbox can fill), a small inbox so that it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_consumer_that_falls_behind_keeps_forwarding() {
    // Enough to fall far behind (the inbox's capacity and 1,024 more), where the driver stops
    // reading and writes what handlers publish itself.
    const MESSAGES: usize = 5_000;
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.qos = 0;
    // Bounded, so that a forwarder stuck behind its own full inbox fails here; long enough
    // for a loaded 2-core machine (2 s failed there now and then, on the code before too).
    config.publish_timeout_ms = 10_000;
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let f = Arc::clone(&failures);
    let app = test_app(Config::default())
        .socket_provider(provider(config.clone()))
        .add_application(
            Application::consumer(
                "forwarder",
                ["incoming"],
                move |m: SpaMessage, socket: Socket| {
                    let f = Arc::clone(&f);
                    async move {
                        // Slower than the publisher (~100 µs of work each): the inbox fills.
                        let busy_until = Instant::now() + Duration::from_micros(100);
                        while Instant::now() < busy_until {
                            std::hint::spin_loop();
                        }
                        let sent = socket
                            .publish(SpaMessage::new("forwarded", m.payload.clone()))
                            .await;
                        if let Err(error) = &sent {
                            f.lock().expect("failures").push(error.to_string());
                        }
                        sent
                    }
                },
            )
            .retry(RetryPolicy::no_retries()),
        );
    let (shutdown, run) = start_ready(app).await;
    let mut watcher = provider(config.clone())
        .connect(SocketOptions::new("forward-watcher").topics(["forwarded"]))
        .await
        .expect("connects");
    let publisher = support::connect_publisher(&provider(config), "forward-publisher").await;
    support::publish_numbered(&publisher.socket, "incoming", 0..MESSAGES).await;
    let mut forwarded = 0;
    while forwarded < MESSAGES {
        match tokio::time::timeout(Duration::from_secs(10), watcher.inbox.recv()).await {
            Ok(Some(delivery)) => {
                delivery.ack();
                forwarded += 1;
            }
            _ => break,
        }
    }
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    publisher.socket.close().await.expect("close");
    let failures = failures.lock().expect("failures").clone();
    assert!(
        failures.is_empty(),
        "{} forwards failed, the first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(
        forwarded, MESSAGES,
        "every message forwarded (QoS 0 on loopback)"
    );
}

/// A consumer stuck longer than the keepalive allows keeps its connection: with its inbox full
/// it reads nothing, but still pings the broker. QoS 0 (nothing bounds what is in flight, so the
/// inbox fills), keepalive 5 s: the broker drops a silent client after 7.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_keeps_its_connection_alive() {
    const MESSAGES: usize = 3_000;
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.qos = 0;
    config.keepalive_secs = 5;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let r = Arc::clone(&release);
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let app = test_app(Config::default())
        .socket_provider(provider(config.clone()))
        .add_consumer("stuck", ["stuck"], move |_m: SpaMessage| {
            let (r, h) = (Arc::clone(&r), Arc::clone(&h));
            async move {
                let _ = r.acquire().await.map(|permit| permit.forget());
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
    let readiness = app.readiness();
    let (shutdown, run) = start_ready(app).await;
    let publisher = support::connect_publisher(&provider(config), "stuck-publisher").await;
    support::publish_numbered(&publisher.socket, "stuck", 0..MESSAGES).await;
    // Stuck for 12 s, well past 1.5 x keepalive: the broker must not have dropped it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = std::fs::read_to_string(broker.dir.join("mosquitto.log")).expect("broker log");
    assert!(
        !log.contains("exceeded timeout"),
        "the broker dropped the stuck consumer:\n{log}"
    );
    release.add_permits(MESSAGES);
    // Unstuck, it reads on (the PINGRESPs it asked for included) on the same connection.
    let h = Arc::clone(&handled);
    wait_until("what the inbox held", Duration::from_secs(30), || {
        h.load(Ordering::SeqCst) >= 1_000
    })
    .await;
    assert!(readiness.is_ready(), "still connected");
    let log = std::fs::read_to_string(broker.dir.join("mosquitto.log")).expect("broker log");
    assert_eq!(
        log.matches("New client connected").count(),
        2,
        "no reconnect:\n{log}"
    );
    shutdown.trigger();
    let _ = joined("the run", STOP_LIMIT, run).await;
    publisher.socket.close().await.expect("close");
}

/// Issue 19, item 0, at its root: a socket whose inbox is full still reads the broker's PUBACK
/// of what it publishes meanwhile (a dead letter, a reply). It used to stop reading once its
/// publish was written, so the acknowledgement was never read and the publish timed out — and
/// the handler waiting on it never made the room the reading waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_with_a_full_inbox_still_reads_the_acknowledgement_of_its_publish() {
    let broker = Mosquitto::start();
    let mut config = mqtt_config("127.0.0.1", broker.port);
    config.qos = 1;
    config.publish_timeout_ms = 3_000;
    let mut options = SocketOptions::new("full-inbox").topics(["fill"]);
    options.inbox_capacity = 4;
    let full = provider(config.clone())
        .connect(options)
        .await
        .expect("connects");
    let filler = publisher(&broker, "filler").await;
    support::publish_numbered(&filler.socket, "fill", 0..8).await;
    // Nothing is taken from the inbox: it holds its 4 and the driver stops reading. Each of
    // these publishes must still be acknowledged, one after the other.
    for seq in 0..3 {
        let started = Instant::now();
        full.socket
            .publish(&SpaMessage::new("dead-letters", seq.to_string()))
            .await
            .unwrap_or_else(|e| panic!("publish {seq} with a full inbox: {e}"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    full.socket.close().await.expect("close");
    filler.socket.close().await.expect("close");
}
