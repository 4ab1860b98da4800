//! A real 3-broker Kafka cluster (KRaft on loopback, 3 replicas, min.insync.replicas=2) with a
//! broker killed (`kill -9`) and restarted while a spa-dat producer publishes and a consumer
//! group of two spa-dat processes (`examples/graceful_shutdown`) consumes a 4-partition topic:
//! every record published with `Ok` is consumed at least once, none is in the topic twice (the
//! idempotent producer), and consumption never stops for longer than a failover takes.

use spa_dat_test_support as support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::SpaMessage;
use support::example;
use support::kafka::OwnCluster;

const RECORDS: usize = 3_000;
/// Publishing takes about 15 s; the broker dies 3 s in and comes back 6 s later.
const PAUSE: Duration = Duration::from_millis(5);
/// Longest time consumption may stand still while records wait: the dead broker's partitions
/// need new leaders (broker.session.timeout.ms = 3 s) and the group may rebalance.
const LONGEST_STALL: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_loses_and_duplicates_nothing() {
    let cluster = OwnCluster::start();
    let topic = format!(
        "failover.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut config = KafkaConfig::new(cluster.bootstrap.clone());
    config.topic_partitions = 4;
    config.topic_replication = 3;
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config).expect("valid config"));
    support::kafka::create_topic(&provider, &topic).await;

    let dir = std::env::temp_dir().join(format!("spa-dat-failover-{}", &topic[9..]));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("kafka://{}?group={topic}-group", cluster.bootstrap);
    let logs = [dir.join("a.log"), dir.join("b.log")];
    let mut consumers: Vec<_> = logs
        .iter()
        .map(|log| example::start_graceful(&url, &topic, log, 10_000, 1))
        .collect();
    let slowest_publish = Arc::new(Mutex::new(Duration::ZERO));
    let consumed = || -> HashSet<String> {
        logs.iter()
            .flat_map(|log| example::logged(log, "done "))
            .collect()
    };

    let publisher = provider
        .connect(SocketOptions::new("failover-publisher"))
        .await
        .expect("connects");
    let published = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let producing = {
        let (socket, topic) = (Arc::clone(&publisher.socket), topic.clone());
        let (published, failed) = (Arc::clone(&published), Arc::clone(&failed));
        let slowest = Arc::clone(&slowest_publish);
        tokio::spawn(async move {
            for seq in 0..RECORDS {
                let payload = format!("{seq:05}");
                // Not awaited one by one: a publish waiting for a new leader must not hold
                // up the ones behind it, as in a real service.
                let (socket, topic) = (Arc::clone(&socket), topic.clone());
                let (published, failed) = (Arc::clone(&published), Arc::clone(&failed));
                let slowest = Arc::clone(&slowest);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    match socket
                        .publish(&SpaMessage::new(topic, payload.clone()))
                        .await
                    {
                        Ok(()) => {
                            let took = sent.elapsed();
                            let mut slowest = slowest.lock().expect("slowest");
                            *slowest = (*slowest).max(took);
                            published.lock().expect("published").push(payload)
                        }
                        Err(error) => failed
                            .lock()
                            .expect("failed")
                            .push(format!("{payload}: {error}")),
                    }
                });
                tokio::time::sleep(PAUSE).await;
            }
        })
    };

    let started = Instant::now();
    let mut killed = false;
    let mut restarted = false;
    // Per consumer process: how many it handled, and since when it has not handled more.
    let mut progress = [(0, Instant::now()); 2];
    let mut longest_stall = Duration::ZERO;
    let deadline = started + Duration::from_secs(180);
    loop {
        let elapsed = started.elapsed();
        if !killed && elapsed > Duration::from_secs(3) {
            cluster.kill(2);
            killed = true;
        }
        if killed && !restarted && elapsed > Duration::from_secs(9) {
            cluster.restart(2);
            restarted = true;
        }
        let done = consumed();
        let waiting = published.lock().expect("published").len() > done.len();
        for (log, progress) in logs.iter().zip(progress.iter_mut()) {
            let handled = example::logged(log, "done ").len();
            if handled > progress.0 || !waiting {
                *progress = (handled, Instant::now());
            } else {
                longest_stall = longest_stall.max(progress.1.elapsed());
            }
        }
        let all_published = producing.is_finished()
            && published.lock().expect("published").len() + failed.lock().expect("failed").len()
                == RECORDS;
        if restarted && all_published {
            let missing: Vec<String> = published
                .lock()
                .expect("published")
                .iter()
                .filter(|payload| !done.contains(*payload))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} records published with Ok were never consumed, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
        assert!(Instant::now() < deadline, "the test ran out of time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failures = failed.lock().expect("failed").clone();
    println!(
        "{} of {RECORDS} published with Ok, {} failed (e.g. {:?}); slowest publish {:?}; \
         longest a consumer stood still while records waited: {longest_stall:?}",
        published.lock().expect("published").len(),
        failures.len(),
        failures.first(),
        slowest_publish.lock().expect("slowest")
    );
    assert!(
        longest_stall < LONGEST_STALL,
        "consumption stood still for {longest_stall:?}"
    );

    // The topic itself: every record once (the idempotent producer never wrote one twice).
    let reader: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("group.id", format!("{topic}-audit"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[&topic]).expect("subscribe");
    let mut in_topic = Vec::new();
    while let Ok(Ok(record)) = tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
        let message =
            SpaMessage::from_json(record.payload().unwrap_or_default()).expect("a spa-dat message");
        in_topic.push(message.payload_str().expect("utf-8").to_owned());
    }
    let distinct: HashSet<&String> = in_topic.iter().collect();
    assert_eq!(
        distinct.len(),
        in_topic.len(),
        "no record is in the topic twice"
    );
    for payload in published.lock().expect("published").iter() {
        assert!(
            distinct.contains(payload),
            "{payload} published with Ok is in the topic"
        );
    }

    for consumer in &mut consumers {
        let _ = Command::new("kill")
            .args(["-TERM", &consumer.id().to_string()])
            .status();
        let _ = consumer.wait();
    }
    publisher.socket.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
