//! SIGTERM against a real process (`examples/graceful_shutdown.rs`) on real brokers: sent while
//! a stream is being handled, the message in flight finishes, the process exits 0 within the
//! grace period, and a restart handles every message the first run did not finish — nothing
//! lost, at most the one in flight handled twice (Kafka: committed offsets; MQTT: a persistent
//! session and acknowledgements sent before the socket closed).

use spa_dat_test_support as support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::SpaMessage;
use support::example;
use support::mosquitto::Mosquitto;

const MESSAGES: usize = 40;
const GRACE_MS: u64 = 5_000;

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes the stream, SIGTERMs the consumer mid-stream, restarts it, and checks the books.
async fn survives_sigterm(provider: Arc<dyn SocketProvider>, url: &str, topic: &str) {
    let dir = std::env::temp_dir().join(format!(
        "spa-dat-graceful-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let first_log = dir.join("first.log");
    let second_log = dir.join("second.log");

    let mut first = example::start_graceful(url, topic, &first_log, GRACE_MS, 100);
    let publisher = provider
        .connect(SocketOptions::new(format!(
            "graceful-publisher-{}",
            &topic[topic.len() - 6..]
        )))
        .await
        .expect("connects");
    for seq in 0..MESSAGES {
        publisher
            .socket
            .publish(&SpaMessage::new(topic, format!("{seq:03}")))
            .await
            .expect("publish");
    }
    wait_for(
        "the first run to handle a few",
        Duration::from_secs(60),
        || example::logged(&first_log, "done ").len() >= 5,
    )
    .await;
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = first.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(GRACE_MS + 10_000),
            "the process exits within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status 0, got {exit}");
    let started = example::logged(&first_log, "start ");
    let finished = example::logged(&first_log, "done ");
    assert_eq!(
        started, finished,
        "the message in flight finished before the exit"
    );
    assert!(finished.len() < MESSAGES, "stopped mid-stream");
    assert_eq!(
        example::logged(&first_log, "stopped "),
        ["by SIGTERM"],
        "run() says what stopped it"
    );

    let mut second = example::start_graceful(url, topic, &second_log, GRACE_MS, 100);
    wait_for(
        "the restart to handle the rest",
        Duration::from_secs(90),
        || {
            let done: HashSet<String> = example::logged(&first_log, "done ")
                .into_iter()
                .chain(example::logged(&second_log, "done "))
                .collect();
            done.len() == MESSAGES
        },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let _ = second.wait();
    let mut handled: HashMap<String, usize> = HashMap::new();
    for payload in example::logged(&first_log, "done ")
        .into_iter()
        .chain(example::logged(&second_log, "done "))
    {
        *handled.entry(payload).or_default() += 1;
    }
    let twice: Vec<_> = handled.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        twice.len() <= 1,
        "at most the message in flight is handled again: {twice:?}"
    );
    publisher.socket.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_survives_sigterm_mid_stream() {
    let bootstrap = support::kafka::bootstrap();
    let topic = format!(
        "graceful.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let provider: Arc<dyn SocketProvider> = Arc::new(
        KafkaSocketProvider::new(KafkaConfig::new(bootstrap.clone())).expect("valid config"),
    );
    // The topic exists before the first run subscribes, so it reads from the beginning.
    support::kafka::create_topic(&provider, &topic).await;
    let url = format!("kafka://{bootstrap}?group={topic}-group");
    survives_sigterm(provider, &url, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_consumer_survives_sigterm_mid_stream() {
    let broker = Mosquitto::start();
    let provider: Arc<dyn SocketProvider> = Arc::new(
        MqttSocketProvider::new(MqttConfig::new("127.0.0.1", broker.port)).expect("valid config"),
    );
    let id = format!(
        "graceful-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let url = format!(
        "mqtt://127.0.0.1:{}?client_id={id}&clean_session=false&qos=1",
        broker.port
    );
    survives_sigterm(provider, &url, &format!("graceful/{id}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_killed_mid_stream_handles_again_only_what_was_unfinished_or_uncommitted() {
    const STREAM: usize = 3_000;
    let bootstrap = support::kafka::bootstrap();
    let topic = format!(
        "killed.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let provider: Arc<dyn SocketProvider> = Arc::new(
        KafkaSocketProvider::new(KafkaConfig::new(bootstrap.clone())).expect("valid config"),
    );
    support::kafka::create_topic(&provider, &topic).await;
    let publisher = provider
        .connect(SocketOptions::new(format!(
            "killed-publisher-{}",
            &topic[7..]
        )))
        .await
        .expect("connects");
    for chunk in (0..STREAM).collect::<Vec<_>>().chunks(500) {
        let sends = chunk.iter().map(|seq| {
            let message = SpaMessage::new(topic.as_str(), format!("{seq:05}"));
            let socket = &publisher.socket;
            async move { socket.publish(&message).await }
        });
        for result in futures_util::future::join_all(sends).await {
            result.expect("publish");
        }
    }
    let dir = std::env::temp_dir().join(format!("spa-dat-killed-{}", &topic[7..]));
    std::fs::create_dir_all(&dir).expect("dir");
    let (first_log, second_log) = (dir.join("first.log"), dir.join("second.log"));
    // Offsets stored every 100 ms and committed every 100 ms (the default commits every 5 s).
    let url = format!("kafka://{bootstrap}?group={topic}-group&auto.commit.interval.ms=100");
    let mut first = example::start_graceful_with(&url, &topic, &first_log, 5_000, 10, 16);
    wait_for("a third of the stream", Duration::from_secs(60), || {
        example::logged(&first_log, "done ").len() >= STREAM / 3
    })
    .await;
    let status = Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let _ = first.wait();
    let started: HashSet<String> = example::logged(&first_log, "start ").into_iter().collect();
    let done: HashSet<String> = example::logged(&first_log, "done ").into_iter().collect();
    let in_flight = started.difference(&done).count();

    let mut second = example::start_graceful_with(&url, &topic, &second_log, 5_000, 10, 16);
    wait_for("the rest of the stream", Duration::from_secs(120), || {
        let again: HashSet<String> = example::logged(&second_log, "done ").into_iter().collect();
        done.union(&again).count() >= STREAM
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let _ = second.wait();
    publisher.socket.close().await.expect("close");
    let again: HashSet<String> = example::logged(&second_log, "done ").into_iter().collect();
    let twice = done.intersection(&again).count();
    let rate_per_100ms = done.len() / 10; // generous: the first run's whole pace over >= 1 s
    eprintln!(
        "kill -9 after {} of {STREAM} handled: {in_flight} in flight; handled twice after the restart: {twice}",
        done.len()
    );
    assert_eq!(done.union(&again).count(), STREAM, "nothing lost");
    // What finished since the last store and commit (each every 100 ms) comes again, besides
    // what was in flight.
    assert!(
        twice <= in_flight + 3 * rate_per_100ms.max(100),
        "{twice} handled twice, {in_flight} were in flight"
    );
}
