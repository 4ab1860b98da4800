//! Batch handlers against real brokers: the batch workload (per-element outcomes through
//! retries and dead letters, each key's order, a key never in two batches at once) on Kafka's
//! partitions with its offset map, and on MQTT with its in-order acknowledgement window.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider, MqttVersion};
use spa_dat::socket::spi::SocketProvider;
use support::batches::{self, Workload};
use support::mosquitto::Mosquitto;

fn unique(name: &str, separator: &str) -> String {
    format!(
        "{name}{separator}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_hundred_thousand_messages_in_batches_of_500_each_settled_as_its_outcome_said() {
    let mut config = KafkaConfig::new(support::kafka::bootstrap());
    config.topic_partitions = 4;
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config).expect("valid config"));
    let topic = unique("batches", ".");
    let dead = unique("batches-dead", ".");
    support::kafka::create_topic(&provider, &topic).await;
    support::kafka::create_topic(&provider, &dead).await;
    let group = unique("batchers", ".");
    let route_topic = topic.clone();
    batches::run(
        &provider,
        &[topic],
        &dead,
        Some(&group),
        move |key| (route_topic.clone(), Some(key.to_string())),
        Workload {
            messages: 100_000,
            keys: 1_000,
            size: 500,
            wait: Duration::from_millis(20),
            concurrency: 4,
        },
        Duration::from_secs(300),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_batches_keep_each_topics_order_and_acknowledge_in_order() {
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let broker = Mosquitto::start_with("allow_anonymous true\n");
        let config = MqttConfig {
            version,
            ..MqttConfig::new("127.0.0.1", broker.port)
        };
        let provider: Arc<dyn SocketProvider> =
            Arc::new(MqttSocketProvider::new(config).expect("valid config"));
        let base = unique("batches", "/");
        let prefix = base.clone();
        // MQTT has no keys: each key its own topic, ordered by topic. A batch holds its messages
        // unacknowledged, so the broker's in-flight window bounds it where the broker keeps to one.
        batches::run(
            &provider,
            &[format!("{base}/+")],
            &format!("{base}-dead"),
            None,
            move |key| (format!("{prefix}/{key}"), None),
            Workload {
                messages: 20_000,
                keys: 200,
                size: 50,
                wait: Duration::from_millis(20),
                concurrency: 2,
            },
            Duration::from_secs(120),
        )
        .await;
    }
}

/// The batch consumer of [`kafka_a_batch_consumer_killed_mid_handler_and_mid_retry_loses_nothing`],
/// in a process of its own so that it can be killed (SIGKILL: no close, no commit on the way
/// out). It reads `SPA_DAT_CRASH_TOPIC` in group `SPA_DAT_CRASH_GROUP` in batches; the batch
/// holding `stuck` never finishes, the one holding `retry` fails it and waits a minute to retry;
/// every message of a batch that finished is appended to `SPA_DAT_CRASH_LOG`, and so are
/// `entered:stuck` and `failed:retry` when those happen. Run otherwise, it
/// does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kafka_a_batch_consumer_killed_mid_handler_and_mid_retry_loses_nothing"]
async fn crash_child_batch_consumer() {
    use std::io::Write;
    use std::sync::Mutex;
    let (Ok(topic), Ok(group), Ok(log)) = (
        std::env::var("SPA_DAT_CRASH_TOPIC"),
        std::env::var("SPA_DAT_CRASH_GROUP"),
        std::env::var("SPA_DAT_CRASH_LOG"),
    ) else {
        return;
    };
    let mut config = KafkaConfig::new(support::kafka::bootstrap());
    config
        .properties
        .insert("auto.commit.interval.ms".to_owned(), "200".to_owned());
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log"),
    ));
    let app = support::test_app(spa_dat::Config::default()).add_application(
        spa_dat::Application::consumer(
            "crash",
            [topic.clone()],
            move |batch: spa_dat::Batch<spa_dat::SpaMessage>| {
                let log = Arc::clone(&log);
                async move {
                    let payloads: Vec<String> = batch
                        .iter()
                        .map(|m| m.payload_str().unwrap_or("?").to_owned())
                        .collect();
                    if payloads.iter().any(|p| p == "stuck") {
                        {
                            let mut file = log.lock().expect("log");
                            writeln!(file, "entered:stuck").expect("log written");
                            file.flush().expect("log flushed");
                        }
                        std::future::pending::<()>().await;
                    }
                    let mut result = spa_dat::BatchResult::new();
                    let mut file = log.lock().expect("log");
                    for (index, payload) in payloads.iter().enumerate() {
                        if payload == "retry" {
                            writeln!(file, "failed:retry").expect("log written");
                            result.fail(index, "fails, to be retried in a minute");
                        } else {
                            writeln!(file, "{payload}").expect("log written");
                        }
                    }
                    file.flush().expect("log flushed");
                    result
                }
            },
        )
        .group(group)
        .batch(50, Duration::from_millis(20))
        .concurrency(2)
        .ordering(spa_dat::MessageOrder::Key)
        .dead_letter_topic(format!("{topic}.dead"))
        .retry(
            spa_dat::RetryPolicy::default()
                .delays(Duration::from_secs(60), Duration::from_secs(60)),
        )
        .socket_provider(Arc::new(KafkaSocketProvider::new(config).expect("config"))),
    );
    // Killed long before; bounded in case its parent died first.
    let _ = tokio::time::timeout(Duration::from_secs(180), app.start_async()).await;
}

/// Killed mid-handler (a batch that never finishes) and mid-retry (a batch waiting to call its
/// failed element again), a batch consumer acknowledged nothing it had not handled: after the
/// restart every message is handled, the two batches' messages included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_batch_consumer_killed_mid_handler_and_mid_retry_loses_nothing() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    const RECORDS: usize = 1_000;
    let provider: Arc<dyn SocketProvider> = Arc::new(
        KafkaSocketProvider::new(KafkaConfig::new(support::kafka::bootstrap())).expect("config"),
    );
    let topic = unique("batch-crash", ".");
    let group = unique("batch-crash-group", ".");
    support::kafka::create_topic(&provider, &topic).await;
    let publisher =
        support::connect_publisher(&provider, unique("batch-crash-publisher", "-")).await;
    let publish = |payloads: Vec<(String, String)>| {
        let socket = Arc::clone(&publisher.socket);
        let topic = topic.clone();
        async move {
            for (key, payload) in payloads {
                let message = spa_dat::SpaMessage::new(topic.as_str(), payload);
                let outgoing = spa_dat::socket::spi::Outgoing::message(message)
                    .expect("encodes")
                    .with_key(key);
                socket.send(outgoing).await.expect("publish");
            }
        }
    };
    let records: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("k{}", i % 20), format!("r{i}")))
        .collect();
    publish(records.clone()).await;
    let log = std::env::temp_dir().join(format!("spa-dat-{topic}.log"));
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_child_batch_consumer",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("SPA_DAT_CRASH_TOPIC", &topic)
        .env("SPA_DAT_CRASH_GROUP", &group)
        .env("SPA_DAT_CRASH_LOG", &log)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the child consumer starts");
    let handled_before = {
        let log = log.clone();
        move || -> HashSet<String> {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    };
    let h = handled_before.clone();
    support::wait_until(
        "the records, before the crash",
        Duration::from_secs(60),
        move || h().len() >= RECORDS,
    )
    .await;
    // Behind everything, one batch at a time: the batch holding `stuck` never ends, then the
    // one holding `retry` waits a minute; a message behind each, on its key.
    let logged = |line: &'static str| {
        let h = handled_before.clone();
        move || h().contains(line)
    };
    publish(vec![("s".to_owned(), "stuck".to_owned())]).await;
    support::wait_until(
        "a batch stuck in its handler",
        Duration::from_secs(30),
        logged("entered:stuck"),
    )
    .await;
    publish(vec![("r".to_owned(), "retry".to_owned())]).await;
    support::wait_until(
        "a batch waiting to retry",
        Duration::from_secs(30),
        logged("failed:retry"),
    )
    .await;
    publish(vec![
        ("r".to_owned(), "behind-retry".to_owned()),
        ("s".to_owned(), "behind-stuck".to_owned()),
    ])
    .await;
    // The crash, with one batch in its handler and one waiting to retry.
    child.kill().expect("kill");
    let _ = child.wait();
    let before = handled_before();
    let _ = std::fs::remove_file(&log);
    assert!(!before.contains("stuck") && !before.contains("retry"));

    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let s = Arc::clone(&seen);
    let second_run = support::test_app(spa_dat::Config::default()).add_application(
        spa_dat::Application::consumer(
            "crash",
            [topic.clone()],
            move |batch: spa_dat::Batch<spa_dat::SpaMessage>| {
                s.lock().expect("seen").extend(
                    batch
                        .iter()
                        .map(|m| m.payload_str().unwrap_or("?").to_owned()),
                );
                std::future::ready(())
            },
        )
        .group(group.clone())
        .batch(50, Duration::from_millis(20))
        .socket_provider(Arc::clone(&provider)),
    );
    let shutdown = second_run.shutdown_handle();
    let run = tokio::spawn(second_run.start_async());
    let everything: HashSet<String> = records
        .iter()
        .map(|(_, payload)| payload.clone())
        .chain(["stuck", "retry", "behind-retry", "behind-stuck"].map(str::to_owned))
        .collect();
    let s = Arc::clone(&seen);
    let handled = before.clone();
    support::wait_until(
        "every message, after the crash",
        Duration::from_secs(60),
        move || {
            let seen = s.lock().expect("seen");
            everything
                .iter()
                .all(|p| handled.contains(p) || seen.contains(p))
        },
    )
    .await;
    shutdown.trigger();
    support::joined("the run", Duration::from_secs(30), run)
        .await
        .expect("runs");
    let seen = seen.lock().expect("seen");
    for unfinished in ["stuck", "retry", "behind-retry", "behind-stuck"] {
        assert!(seen.contains(unfinished), "{unfinished} came again");
    }
}

/// The broker restarts while a batch is in its handler: that batch's acknowledgements belong to
/// the lost connection and are dropped; with a persistent session the broker delivers what was
/// not acknowledged again — the batch's messages among them, so none was acknowledged before it
/// was handled — and every message is handled, on MQTT 3.1.1 and 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_a_broker_restart_mid_batch_loses_nothing() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    const MESSAGES: usize = 200;
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let mut broker = Mosquitto::start_with("allow_anonymous true\n");
        let config = MqttConfig {
            version,
            clean_session: false,
            session_expiry_secs: Some(300),
            reconnect_max_ms: 300,
            publish_timeout_ms: 20_000,
            ..MqttConfig::new("127.0.0.1", broker.port)
        };
        let topic = unique("restart", "/");
        let client_id = unique("durable-batches", "-");
        // Deliveries per message; the first batch's messages.
        let seen = Arc::new(Mutex::new(HashMap::<usize, usize>::new()));
        let first = Arc::new(Mutex::new(Vec::<usize>::new()));
        let entered = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (s, f, e, g) = (
            Arc::clone(&seen),
            Arc::clone(&first),
            Arc::clone(&entered),
            Arc::clone(&gate),
        );
        let app = support::test_app(spa_dat::Config::default()).add_application(
            spa_dat::Application::consumer(
                "durable-batches",
                [topic.clone()],
                move |batch: spa_dat::Batch<spa_dat::SpaMessage>| {
                    let (s, f, e, g) = (
                        Arc::clone(&s),
                        Arc::clone(&f),
                        Arc::clone(&e),
                        Arc::clone(&g),
                    );
                    async move {
                        let seqs: Vec<usize> = batch.iter().map(support::seq_of).collect();
                        if !e.swap(true, Ordering::SeqCst) {
                            // The first batch is in its handler while the broker restarts.
                            f.lock().expect("first").clone_from(&seqs);
                            g.acquire().await.expect("gate").forget();
                        }
                        let mut seen = s.lock().expect("seen");
                        for seq in seqs {
                            *seen.entry(seq).or_default() += 1;
                        }
                    }
                },
            )
            .client_id(client_id.clone())
            .batch(50, Duration::from_millis(20))
            .concurrency(2)
            .socket_provider(Arc::new(
                MqttSocketProvider::new(config.clone()).expect("valid config"),
            )),
        );
        let (shutdown, run) = support::start_ready(app).await;
        let publisher = support::connect_publisher(
            &(Arc::new(MqttSocketProvider::new(config).expect("valid config"))
                as Arc<dyn SocketProvider>),
            unique("restart-publisher", "-"),
        )
        .await;
        for seq in 0..MESSAGES {
            publisher
                .socket
                .publish(&spa_dat::SpaMessage::new(topic.as_str(), seq.to_string()))
                .await
                .expect("publish");
        }
        let e = Arc::clone(&entered);
        support::wait_until(
            "a batch in its handler",
            Duration::from_secs(10),
            move || e.load(Ordering::SeqCst),
        )
        .await;
        broker.restart();
        // The batch finishes once its consumer is connected again: its acknowledgements are
        // the lost connection's.
        let connected = format!(" as {client_id} ");
        support::wait_until("the consumer reconnected", Duration::from_secs(20), || {
            broker.log().matches(connected.as_str()).count() >= 2
        })
        .await;
        gate.add_permits(1);
        let (s, f) = (Arc::clone(&seen), Arc::clone(&first));
        support::wait_until(
            "every message, and the first batch's again",
            Duration::from_secs(60),
            move || {
                let seen = s.lock().expect("seen");
                seen.len() == MESSAGES
                    && f.lock()
                        .expect("first")
                        .iter()
                        .all(|seq| seen.get(seq).copied().unwrap_or(0) >= 2)
            },
        )
        .await;
        shutdown.trigger();
        support::joined("the run", Duration::from_secs(30), run)
            .await
            .expect("runs");
        let _ = publisher.socket.close().await;
    }
}
