//! Exactly-once on real Kafka: a transactional consumer's publishes and its consumed offsets
//! (with the finished-offset map) in one transaction. A pipeline A → (transactional consumer,
//! concurrency 16) → B killed with SIGKILL again and again; a second instance of the same
//! identity fencing the first; a failed attempt's publishes dropped; a producer's
//! `Socket::transaction`; and the refusals (no transactions off Kafka, a record too large).
//! Each reads B as a `read_committed` consumer, to its end, and counts every record.

use spa_dat_test_support as support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::{Outgoing, SocketProvider};
use spa_dat::{Application, Socket, SpaMessage};

const PARTITIONS: i32 = 4;

fn unique(name: &str) -> String {
    format!(
        "{name}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn config() -> KafkaConfig {
    let mut config = KafkaConfig::new(support::kafka::bootstrap());
    config.topic_partitions = PARTITIONS;
    config
}

fn provider() -> Arc<dyn SocketProvider> {
    Arc::new(KafkaSocketProvider::new(config()).expect("valid config"))
}

/// A provider whose transactional sockets are `transactional.id` (one per process by
/// default): stable across restarts, as a pod's name would be.
fn provider_as(transactional_id: &str) -> Arc<dyn SocketProvider> {
    let mut config = config();
    config
        .properties
        .insert("transactional.id".to_owned(), transactional_id.to_owned());
    Arc::new(KafkaSocketProvider::new(config).expect("valid config"))
}

/// Publishes `records` (key, payload) to `topic`, each as a spa-dat message.
async fn publish(provider: &Arc<dyn SocketProvider>, topic: &str, records: &[(String, String)]) {
    let publisher = support::connect_publisher(provider, unique("eos-publisher")).await;
    for (key, payload) in records {
        let message = SpaMessage::new(topic, payload.clone());
        let outgoing = Outgoing::message(message)
            .expect("encodes")
            .with_key(key.clone());
        publisher.socket.send(outgoing).await.expect("published");
    }
    publisher.socket.close().await.expect("closed");
}

/// Every committed record of `topic` (its payload, per key in offset order), read by a
/// `read_committed` consumer from the beginning to the end of each partition — the last
/// stable offset: no transaction may still be open.
fn read_committed(topic: &str) -> BTreeMap<String, Vec<String>> {
    read_committed_from(&support::kafka::bootstrap(), topic)
}

/// [`read_committed`] on the cluster at `bootstrap`.
fn read_committed_from(bootstrap: &str, topic: &str) -> BTreeMap<String, Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("eos-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let partitions = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata")
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "{topic} exists");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assigned");
    let mut at_end = std::collections::HashSet::new();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} read to its end within a minute"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(record)) => {
                at_end.remove(&record.partition());
                let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
                let message =
                    SpaMessage::from_json(record.payload().unwrap_or_default()).expect("spa-dat");
                by_key
                    .entry(key)
                    .or_default()
                    .push(message.payload_str().expect("text").to_owned());
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
        }
    }
    by_key
}

/// Asserts that `read` holds each of `inputs` exactly once, each key's in the order published.
fn assert_exactly_once_in_order(inputs: &[(String, String)], read: &BTreeMap<String, Vec<String>>) {
    assert_exactly_once_in_order_but(inputs, read, |_| false);
}

/// [`assert_exactly_once_in_order`], the inputs `out_of_order` picks (retried after their
/// key's later messages) only exactly once.
fn assert_exactly_once_in_order_but(
    inputs: &[(String, String)],
    read: &BTreeMap<String, Vec<String>>,
    out_of_order: impl Fn(&str) -> bool,
) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for payload in read.values().flatten() {
        *counts.entry(payload.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        duplicated.is_empty(),
        "in the output more than once: {duplicated:?}"
    );
    let missing: Vec<_> = inputs
        .iter()
        .filter(|(_, payload)| !counts.contains_key(payload.as_str()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "not in the output: {missing:?}");
    let total: usize = read.values().map(Vec::len).sum();
    assert_eq!(total, inputs.len(), "every input's output, once");
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, payload) in inputs.iter().filter(|(_, p)| !out_of_order(p)) {
        expected.entry(key).or_default().push(payload);
    }
    for (key, payloads) in &expected {
        let seen: Vec<&str> = read
            .get(*key)
            .map(|all| {
                all.iter()
                    .map(String::as_str)
                    .filter(|p| !out_of_order(p))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(at) = (0..payloads.len()).find(|&i| seen.get(i) != payloads.get(i)) {
            panic!(
                "key {key}'s outputs out of order at {at}: {:?} where {:?} was published",
                seen.get(at),
                payloads.get(at)
            );
        }
    }
}

/// The tests that start processes of their own (a cluster, children to kill) take turns: on 2
/// cores their timing would suffer from each other.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pipeline's transactional consumer of `input`: each record's payload published to
/// `output` with the record's key; `log` (when given) gets each payload as it is handled.
fn pipeline(
    input: &str,
    output: &str,
    group: &str,
    client_id: &str,
    log: Option<std::path::PathBuf>,
    handled: Arc<AtomicUsize>,
    batched: bool,
) -> Application {
    pipeline_on(
        provider_as(client_id),
        input,
        output,
        group,
        client_id,
        log,
        handled,
        batched,
    )
}

/// [`pipeline`] on `provider`.
/// [`pipeline`] on `provider`; `batched`: a batch consumer (100 per call, 4 calls at once)
/// whose every 50th input fails once (without publishing).
#[allow(clippy::too_many_arguments)]
fn pipeline_on(
    provider: Arc<dyn SocketProvider>,
    input: &str,
    output: &str,
    group: &str,
    client_id: &str,
    log: Option<std::path::PathBuf>,
    handled: Arc<AtomicUsize>,
    batched: bool,
) -> Application {
    let output = output.to_owned();
    let log = log.map(|path| {
        Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log"),
        ))
    });
    if batched {
        let failed_once = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        return Application::consumer(
            "eos-pipeline",
            [input.to_owned()],
            move |batch: spa_dat::Batch<SpaMessage>, socket: Socket| {
                let (output, log, handled) = (output.clone(), log.clone(), Arc::clone(&handled));
                let failed_once = Arc::clone(&failed_once);
                async move {
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2_000))).await;
                    let mut result = spa_dat::BatchResult::new();
                    let mut lines = Vec::new();
                    for (index, message) in batch.iter().enumerate() {
                        let payload = message.payload_str()?.to_owned();
                        let number: usize = payload
                            .rsplit('r')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        // A call's publishes go with the messages it settled: an element it
                        // fails publishes nothing (its retry does).
                        if number % 50 == 7 && failed_once.lock().expect("failed").insert(number) {
                            result.fail(index, "fails once");
                            continue;
                        }
                        let key = payload.split('/').next().unwrap_or_default().to_owned();
                        socket
                            .publish_keyed(key, SpaMessage::new(output.as_str(), payload.clone()))
                            .await?;
                        lines.push(payload);
                    }
                    if let Some(log) = &log {
                        use std::io::Write;
                        let mut file = log.lock().expect("log");
                        for line in &lines {
                            writeln!(file, "{line}").expect("logged");
                        }
                        file.flush().expect("flushed");
                    }
                    handled.fetch_add(lines.len(), Ordering::Relaxed);
                    spa_dat::Result::<spa_dat::BatchResult>::Ok(result)
                }
            },
        )
        .group(group)
        .client_id(client_id)
        .batch(100, Duration::from_millis(20))
        .concurrency(4)
        .ordering(spa_dat::MessageOrder::Key)
        .retry(
            spa_dat::RetryPolicy::default()
                .attempts(3)
                .delays(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .transactional(true)
        .socket_provider(provider);
    }
    Application::consumer(
        "eos-pipeline",
        [input.to_owned()],
        move |message: SpaMessage, socket: Socket| {
            let (output, log, handled) = (output.clone(), log.clone(), Arc::clone(&handled));
            async move {
                // Handlers overlap: the transaction takes whole messages only.
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2_000))).await;
                // `key/payload`: handlers get no record key (yet).
                let payload = message.payload_str()?.to_owned();
                let key = payload.split('/').next().unwrap_or_default().to_owned();
                socket
                    .publish_keyed(key, SpaMessage::new(output.as_str(), payload.clone()))
                    .await?;
                if let Some(log) = &log {
                    use std::io::Write;
                    let mut file = log.lock().expect("log");
                    writeln!(file, "{payload}").expect("logged");
                    file.flush().expect("flushed");
                }
                handled.fetch_add(1, Ordering::Relaxed);
                spa_dat::Result::<()>::Ok(())
            }
        },
    )
    .group(group)
    .client_id(client_id)
    .concurrency(16)
    .ordering(spa_dat::MessageOrder::Key)
    .transactional(true)
    .socket_provider(provider)
}

/// Starts [`eos_child_pipeline`] in a process of its own, logging what it handles to `log`.
fn spawn_pipeline(
    input: &str,
    output: &str,
    group: &str,
    worker: &str,
    batched: bool,
    log: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "eos_child_pipeline",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("SPA_DAT_EOS_INPUT", input)
        .env("SPA_DAT_EOS_OUTPUT", output)
        .env("SPA_DAT_EOS_GROUP", group)
        .env("SPA_DAT_EOS_WORKER", worker)
        .env(
            if batched {
                "SPA_DAT_EOS_BATCH"
            } else {
                "SPA_DAT_EOS_SINGLE"
            },
            "1",
        )
        .env("SPA_DAT_EOS_LOG", log)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the pipeline starts")
}

/// The number of lines in `log`.
fn lines_in(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// A zombie: the pipeline's process is stopped (SIGSTOP) with transactions open, its group
/// gives its partitions to a second instance (another `transactional.id`: only the group
/// generation can fence the first, KIP-447), and the first wakes up (SIGCONT) and tries to
/// commit what it had. The output holds each input once, in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_that_wakes_after_losing_its_partitions_commits_nothing_twice() {
    const RECORDS: usize = 3_000;
    let _turn = HEAVY.lock().await;
    let provider = provider();
    let (input, output, group) = (unique("eos-a"), unique("eos-b"), unique("eos-group"));
    support::kafka::create_topic(&provider, &input).await;
    support::kafka::create_topic(&provider, &output).await;
    let inputs: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("k{}", i % 40), format!("k{}/r{i}", i % 40)))
        .collect();
    publish(&provider, &input, &inputs).await;
    let mut children = Children::default();
    let zombie_log = std::env::temp_dir().join(format!("spa-dat-{output}-zombie.log"));
    let zombie = spawn_pipeline(
        &input,
        &output,
        &group,
        &unique("eos-zombie"),
        false,
        &zombie_log,
    );
    let pid = zombie.id().to_string();
    children.0.push((zombie, zombie_log.clone()));
    support::wait_until(
        "the first instance handling",
        Duration::from_secs(90),
        move || lines_in(&zombie_log) >= 300,
    )
    .await;
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    let successor_log = std::env::temp_dir().join(format!("spa-dat-{output}-successor.log"));
    let successor = spawn_pipeline(
        &input,
        &output,
        &group,
        &unique("eos-successor"),
        false,
        &successor_log,
    );
    children.0.push((successor, successor_log.clone()));
    // The successor gets the partitions once the group gave up on the stopped one (its
    // session times out) and handles some; then the zombie wakes.
    support::wait_until(
        "the successor handling",
        Duration::from_secs(90),
        move || lines_in(&successor_log) >= 300,
    )
    .await;
    signal("-CONT");
    assert_exactly_once_in_order(
        &inputs,
        &wait_for_output(&output, RECORDS, Duration::from_secs(150)).await,
    );
    // The zombie woke and met the fence: its transaction was aborted, or it stopped for good.
    let zombie_trace =
        std::fs::read_to_string(format!("{}.trace", children.0[0].1.display())).unwrap_or_default();
    assert!(
        zombie_trace.contains("transaction aborted")
            || zombie_trace.contains("Kafka transactions stopped"),
        "the woken zombie should have found its transaction fenced; its warnings and errors are printed below"
    );
    children.kill_all();
    // Nothing more once both are gone (a transaction a killed process left open ends at its
    // timeout; until then a `read_committed` reader stops before it).
    assert_exactly_once_in_order(
        &inputs,
        &wait_for_output(&output, RECORDS, Duration::from_secs(60)).await,
    );
}

/// Pipelines in processes of their own ([`spawn_pipeline`]) and their logs: killed when the
/// test ends, also when it fails — and then their traces (`{log}.trace`) kept, their last
/// warnings printed.
#[derive(Default)]
struct Children(Vec<(std::process::Child, std::path::PathBuf)>);

impl Children {
    /// Each process, killed (SIGKILL) and reaped.
    fn kill_all(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
        for (_, log) in &self.0 {
            let trace = std::path::PathBuf::from(format!("{}.trace", log.display()));
            let _ = std::fs::remove_file(log);
            if std::thread::panicking() {
                // Kept for a closer look; the warnings and errors shown.
                let text = std::fs::read_to_string(&trace).unwrap_or_default();
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
                    .collect();
                eprintln!("--- warnings and errors of {} ---", trace.display());
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            } else {
                let _ = std::fs::remove_file(&trace);
            }
        }
    }
}

/// `topic` as a `read_committed` reader sees it once it holds `count` records, read again every
/// half second; fails naming how far it got when that takes longer than `limit`.
async fn wait_for_output(
    topic: &str,
    count: usize,
    limit: Duration,
) -> BTreeMap<String, Vec<String>> {
    wait_for_output_on(&support::kafka::bootstrap(), topic, count, limit).await
}

/// [`wait_for_output`] on the cluster at `bootstrap`.
async fn wait_for_output_on(
    bootstrap: &str,
    topic: &str,
    count: usize,
    limit: Duration,
) -> BTreeMap<String, Vec<String>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (bootstrap, read_topic) = (bootstrap.to_owned(), topic.to_owned());
        let read =
            tokio::task::spawn_blocking(move || read_committed_from(&bootstrap, &read_topic))
                .await
                .expect("read");
        let seen: usize = read.values().map(Vec::len).sum();
        if seen >= count {
            return read;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{seen} of {count} outputs committed after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pipeline of [`sigkilled_again_and_again_the_pipeline_outputs_each_input_once_in_key_order`]
/// in a process of its own, so that it can be killed: reads `SPA_DAT_EOS_INPUT`, writes
/// `SPA_DAT_EOS_OUTPUT`, logs what it handled to `SPA_DAT_EOS_LOG`. Run otherwise, it does
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigkilled_again_and_again_the_pipeline_outputs_each_input_once_in_key_order"]
async fn eos_child_pipeline() {
    let (Ok(input), Ok(output), Ok(group), Ok(worker), Ok(log)) = (
        std::env::var("SPA_DAT_EOS_INPUT"),
        std::env::var("SPA_DAT_EOS_OUTPUT"),
        std::env::var("SPA_DAT_EOS_GROUP"),
        std::env::var("SPA_DAT_EOS_WORKER"),
        std::env::var("SPA_DAT_EOS_LOG"),
    ) else {
        return;
    };
    // What the socket did, for a failing parent to show: `{log}.trace`.
    let trace = std::fs::File::create(format!("{log}.trace")).expect("trace file");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,spa_dat=debug"))
        .with_writer(std::sync::Mutex::new(trace))
        .with_ansi(false)
        .try_init();
    let app = support::test_app(spa_dat::Config::default()).add_application(pipeline(
        &input,
        &output,
        &group,
        &worker,
        Some(log.into()),
        Arc::default(),
        std::env::var("SPA_DAT_EOS_BATCH").is_ok(),
    ));
    // Killed by its parent; ends by itself only when the parent died first. Not a deadline:
    // the clock runs on while the process is stopped (SIGSTOP), and a woken zombie that had
    // outlived one would end instead of testing anything.
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        while std::os::unix::process::parent_id() == parent {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = app.start_async() => {}
        () = orphaned => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_again_and_again_the_pipeline_outputs_each_input_once_in_key_order() {
    sigkilled_again_and_again(false, 3_000, 3).await;
}

/// The same with a batch consumer (100 per call, 4 calls at once, every 50th input failing
/// once and retried in a later call): a call's publishes and the offsets of every message it
/// settled go in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_again_and_again_the_batch_pipeline_outputs_each_input_once_in_key_order() {
    sigkilled_again_and_again(true, 3_000, 2).await;
}

/// Kills the pipeline's process `kills` times mid-stream, then finishes the stream in this
/// process and reads the output.
async fn sigkilled_again_and_again(batched: bool, records: usize, kills: usize) {
    let _turn = HEAVY.lock().await;
    let provider = provider();
    let (input, output, group) = (unique("eos-a"), unique("eos-b"), unique("eos-group"));
    let worker = unique("eos-worker");
    support::kafka::create_topic(&provider, &input).await;
    support::kafka::create_topic(&provider, &output).await;
    let inputs: Vec<(String, String)> = (0..records)
        .map(|i| (format!("k{}", i % 40), format!("k{}/r{i}", i % 40)))
        .collect();
    publish(&provider, &input, &inputs).await;

    for run in 0..kills {
        let log = std::env::temp_dir().join(format!("spa-dat-{output}-{run}.log"));
        let mut child = spawn_pipeline(&input, &output, &group, &worker, batched, &log);
        // Mid-stream: a few hundred handled, transactions open and committed.
        let handling = log.clone();
        support::wait_until(
            "the pipeline handling",
            Duration::from_secs(90),
            move || lines_in(&handling) >= 400,
        )
        .await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = std::fs::remove_file(&log);
    }

    // The last run, in this process: it fences the killed runs' producer (its transactional
    // id is theirs) and finishes the stream.
    let handled = Arc::new(AtomicUsize::new(0));
    let app = support::test_app(spa_dat::Config::default()).add_application(pipeline(
        &input,
        &output,
        &group,
        &worker,
        None,
        Arc::clone(&handled),
        batched,
    ));
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let out = output.clone();
    let complete = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let read = read_committed(&out);
            if read.values().map(Vec::len).sum::<usize>() >= records
                || std::time::Instant::now() > deadline
            {
                return read;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(150), complete)
        .await
        .expect("the output completes in time");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops in time")
        .expect("not panicked")
        .expect("stops cleanly");
    let out = output.clone();
    let read = tokio::task::spawn_blocking(move || read_committed(&out))
        .await
        .expect("read");
    // A batch element failed and retried comes after its key's later messages that succeeded
    // (README, "Batches").
    assert_exactly_once_in_order_but(&inputs, &read, |payload| {
        batched
            && payload
                .rsplit('r')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n % 50 == 7)
    });
}

/// Runs `apps` until `done` holds (checked every 20 ms, at most `limit`), then stops them.
async fn run_until(
    app: spa_dat::DistributedApplication,
    limit: Duration,
    what: &str,
    done: impl FnMut() -> bool,
) {
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    support::wait_until(what, limit, done).await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops in time")
        .expect("not panicked")
        .expect("stops cleanly");
}

async fn read_committed_async(topic: &str) -> BTreeMap<String, Vec<String>> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_committed(&topic))
        .await
        .expect("read")
}

/// A failed attempt's publishes are dropped, a panicked one's too; a message that never
/// succeeds is dead-lettered — in the transaction, once — and its attempts publish nothing;
/// a publish larger than librdkafka takes is refused at once (the handler sees it), not at
/// commit, where it would abort everyone else's output with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_attempt_that_settles_a_message_publishes() {
    let provider = provider();
    let (input, output, dead) = (unique("eos-in"), unique("eos-out"), unique("eos-dead"));
    for topic in [&input, &output, &dead] {
        support::kafka::create_topic(&provider, topic).await;
    }
    let inputs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("k{}", i % 8), format!("k{}/r{i}", i % 8)))
        .collect();
    let mut all = inputs.clone();
    all.push(("p".to_owned(), "p/poison".to_owned()));
    all.push(("o".to_owned(), "o/oversize".to_owned()));
    publish(&provider, &input, &all).await;
    let attempts = Arc::new(std::sync::Mutex::new(HashMap::<String, u32>::new()));
    let settled = Arc::new(AtomicUsize::new(0));
    let (out, seen, counted) = (output.clone(), Arc::clone(&attempts), Arc::clone(&settled));
    let app = support::test_app(spa_dat::Config::default()).add_application(
        Application::consumer(
            "eos-retries",
            [input.clone()],
            move |message: SpaMessage, socket: Socket| {
                let (out, seen, counted) = (out.clone(), Arc::clone(&seen), Arc::clone(&counted));
                async move {
                    let payload = message.payload_str()?.to_owned();
                    let key = payload.split('/').next().unwrap_or_default().to_owned();
                    let attempt = {
                        let mut seen = seen.lock().expect("attempts");
                        let attempt = seen.entry(payload.clone()).or_default();
                        *attempt += 1;
                        *attempt
                    };
                    let body = if payload.ends_with("oversize") {
                        "x".repeat(2_000_000)
                    } else {
                        payload.clone()
                    };
                    let published = socket
                        .publish_keyed(key, SpaMessage::new(out.as_str(), body))
                        .await;
                    if payload.ends_with("oversize") {
                        let error = published.expect_err("refused at once");
                        assert!(error.is_permanent(), "{error}");
                        counted.fetch_add(1, Ordering::Relaxed);
                        return Err(error);
                    }
                    published?;
                    if payload.ends_with("poison") {
                        counted.fetch_add(usize::from(attempt == 3), Ordering::Relaxed);
                        return Err(spa_dat::Error::RequestTimeout {
                            topic: "poison".to_owned(),
                            timeout: Duration::ZERO,
                        });
                    }
                    match attempt {
                        1 if payload.ends_with('0') => panic!("the first attempt panics"),
                        1 => Err(spa_dat::Error::RequestTimeout {
                            topic: "the first attempt fails".to_owned(),
                            timeout: Duration::ZERO,
                        }),
                        _ => {
                            counted.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                    }
                }
            },
        )
        .concurrency(16)
        .transactional(true)
        .retry(
            spa_dat::RetryPolicy::default()
                .attempts(3)
                .delays(Duration::from_millis(5), Duration::from_millis(5)),
        )
        .dead_letter_topic(dead.clone())
        .socket_provider(Arc::clone(&provider)),
    );
    let (done, expected) = (Arc::clone(&settled), inputs.len() + 2);
    run_until(
        app,
        Duration::from_secs(60),
        "every message settled",
        move || done.load(Ordering::Relaxed) >= expected,
    )
    .await;
    assert_exactly_once_in_order(&inputs, &read_committed_async(&output).await);
    let dead_letters = read_committed_async(&dead).await;
    let dead: Vec<&String> = dead_letters.values().flatten().collect();
    assert_eq!(dead.len(), 2, "poison and oversize, once each: {dead:?}");
}

/// `Socket::transaction` in a producer: all of it or none of it, seen by a `read_committed`
/// reader; a publish outside any transaction is committed on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_transaction_is_seen_whole_or_not_at_all() {
    let provider = provider();
    let topic = unique("eos-producer");
    support::kafka::create_topic(&provider, &topic).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let (t, done) = (topic.clone(), Arc::clone(&finished));
    let app = support::test_app(spa_dat::Config::default()).add_application(
        Application::producer("eos-producer", move |socket: Socket| {
            let (t, done) = (t.clone(), Arc::clone(&done));
            async move {
                let message = |text: &str| SpaMessage::new(t.as_str(), format!("k/{text}"));
                let committed = socket
                    .transaction(async {
                        for n in 0..3 {
                            socket
                                .publish_keyed("k", message(&format!("whole {n}")))
                                .await?;
                        }
                        Ok(7)
                    })
                    .await?;
                assert_eq!(committed, 7, "the work's value once committed");
                let aborted: spa_dat::Result<()> = socket
                    .transaction(async {
                        socket.publish_keyed("k", message("never 1")).await?;
                        socket.publish_keyed("k", message("never 2")).await?;
                        Err(spa_dat::Error::Config("changed its mind".to_owned()))
                    })
                    .await;
                assert!(aborted.is_err());
                socket.publish_keyed("k", message("alone")).await?;
                done.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
                spa_dat::Result::<()>::Ok(())
            }
        })
        .transactional(true)
        .socket_provider(Arc::clone(&provider)),
    );
    let done = Arc::clone(&finished);
    run_until(
        app,
        Duration::from_secs(60),
        "the producer done",
        move || done.load(Ordering::Relaxed) == 1,
    )
    .await;
    let read = read_committed_async(&topic).await;
    let expected: Vec<String> = ["whole 0", "whole 1", "whole 2", "alone"]
        .iter()
        .map(|text| format!("k/{text}"))
        .collect();
    assert_eq!(read.get("k"), Some(&expected));
}

/// A second instance with the same identity (client id and group: its `transactional.id`)
/// fences the first: the first commits nothing more and leaves its group, the second finishes
/// the stream, and the output holds each input once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_of_the_same_identity_fences_the_first() {
    const RECORDS: usize = 1_500;
    let provider = provider();
    let (input, output, group) = (unique("eos-a"), unique("eos-b"), unique("eos-group"));
    let twin = unique("eos-twin");
    support::kafka::create_topic(&provider, &input).await;
    support::kafka::create_topic(&provider, &output).await;
    let inputs: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("k{}", i % 30), format!("k{}/r{i}", i % 30)))
        .collect();
    publish(&provider, &input, &inputs).await;
    let first_handled = Arc::new(AtomicUsize::new(0));
    let first = support::test_app(spa_dat::Config::default()).add_application(pipeline(
        &input,
        &output,
        &group,
        &twin,
        None,
        Arc::clone(&first_handled),
        false,
    ));
    let first_shutdown = first.shutdown_handle();
    let first_run = tokio::spawn(first.start_async());
    let handled = Arc::clone(&first_handled);
    support::wait_until(
        "the first instance handling",
        Duration::from_secs(60),
        move || handled.load(Ordering::Relaxed) >= 200,
    )
    .await;
    let second = support::test_app(spa_dat::Config::default()).add_application(pipeline(
        &input,
        &output,
        &group,
        &twin,
        None,
        Arc::default(),
        false,
    ));
    let out = output.clone();
    let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let complete = Arc::clone(&complete);
        tokio::spawn(async move {
            loop {
                let read = read_committed_async(&out).await;
                if read.values().map(Vec::len).sum::<usize>() >= RECORDS {
                    complete.store(true, Ordering::Release);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let done = Arc::clone(&complete);
    run_until(
        second,
        Duration::from_secs(120),
        "the output complete",
        move || done.load(Ordering::Acquire),
    )
    .await;
    checker.abort();
    first_shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(60), first_run).await;
    assert_exactly_once_in_order(&inputs, &read_committed_async(&output).await);
}

/// What cannot be transactional says so at start-up: a bus without transactions;
/// `Socket::transaction` on a socket that is not transactional fails before its work runs.
#[tokio::test]
async fn transactions_where_there_are_none_are_refused_with_the_reason() {
    use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
    let memory: Arc<dyn SocketProvider> =
        Arc::new(MemorySocketProvider::new(MemoryBus::new("eos-refusals")));
    let refused = support::test_app(spa_dat::Config::default())
        .add_application(
            Application::consumer("eos-memory", ["t"], |_: SpaMessage| async {})
                .transactional(true)
                .socket_provider(Arc::clone(&memory)),
        )
        .start_async()
        .await
        .expect_err("refused");
    assert!(
        format!("{refused}").contains("needs a Kafka bus"),
        "{refused}"
    );

    let connection = memory
        .connect(spa_dat::socket::spi::SocketOptions::new("eos-plain"))
        .await
        .expect("connects");
    let socket = Socket::new(
        connection.socket,
        spa_dat::MessageBuilder::new(None, None),
        Duration::from_secs(5),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let result = socket
        .transaction(async move {
            r.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .await;
    assert!(
        matches!(result, Err(spa_dat::Error::Config(_))),
        "{result:?}"
    );
    assert_eq!(ran.load(Ordering::Relaxed), 0, "the work never ran");
}

/// A publish the broker refuses for good at commit — larger than its topic's
/// `max.message.bytes`, which librdkafka cannot know when it is published — aborts the
/// transaction it is in once: the consumer rewinds, handles everything in it again, drops that
/// one publish (logged) and goes on. Every other output is there exactly once, in key order,
/// although an abort came mid-stream with 16 handlers in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_at_commit_aborts_once_and_the_stream_goes_on_exactly_once() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    const RECORDS: usize = 2_000;
    const POISON: usize = 700;
    let provider = provider();
    let (input, output, small) = (unique("eos-a"), unique("eos-b"), unique("eos-small"));
    support::kafka::create_topic(&provider, &input).await;
    support::kafka::create_topic(&provider, &output).await;
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", support::kafka::bootstrap())
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(&small, 1, TopicReplication::Fixed(1))
                .set("max.message.bytes", "2048")],
            &AdminOptions::new(),
        )
        .await
        .expect("created");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let inputs: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("k{}", i % 40), format!("k{}/r{i}", i % 40)))
        .collect();
    publish(&provider, &input, &inputs).await;
    let poison = inputs[POISON].1.clone();
    let handled = Arc::new(AtomicUsize::new(0));
    let (out, too_small, counted) = (output.clone(), small.clone(), Arc::clone(&handled));
    let app = support::test_app(spa_dat::Config::default()).add_application(
        Application::consumer(
            "eos-poison",
            [input.clone()],
            move |message: SpaMessage, socket: Socket| {
                let (out, too_small, counted, poison) = (
                    out.clone(),
                    too_small.clone(),
                    Arc::clone(&counted),
                    poison.clone(),
                );
                async move {
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..1_000))).await;
                    let payload = message.payload_str()?.to_owned();
                    let key = payload.split('/').next().unwrap_or_default().to_owned();
                    if payload == poison {
                        socket
                            .publish(SpaMessage::new(too_small.as_str(), "x".repeat(4_096)))
                            .await?;
                    }
                    socket
                        .publish_keyed(key, SpaMessage::new(out.as_str(), payload.clone()))
                        .await?;
                    counted.fetch_add(1, Ordering::Relaxed);
                    spa_dat::Result::<()>::Ok(())
                }
            },
        )
        .concurrency(16)
        .transactional(true)
        .socket_provider(Arc::clone(&provider)),
    );
    let out = output.clone();
    let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let complete = Arc::clone(&complete);
        tokio::spawn(async move {
            loop {
                let read = read_committed_async(&out).await;
                if read.values().map(Vec::len).sum::<usize>() >= RECORDS {
                    complete.store(true, Ordering::Release);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let done = Arc::clone(&complete);
    run_until(
        app,
        Duration::from_secs(120),
        "the output complete",
        move || done.load(Ordering::Acquire),
    )
    .await;
    checker.abort();
    assert!(
        handled.load(Ordering::Relaxed) > RECORDS,
        "the aborted transaction's messages were handled again"
    );
    assert_exactly_once_in_order(&inputs, &read_committed_async(&output).await);
    assert!(
        read_committed_async(&small).await.is_empty(),
        "the refused publish dropped"
    );
}

/// A 3-broker cluster (3 replicas, min.insync.replicas 2) loses a broker (`kill -9`) while the
/// pipeline commits its transactions, and gets it back: the output holds each input once, in
/// key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_transaction_loses_and_duplicates_nothing() {
    const RECORDS: usize = 3_000;
    let _turn = HEAVY.lock().await;
    let cluster = support::kafka::OwnCluster::start();
    let mut config = KafkaConfig::new(cluster.bootstrap.clone());
    config.topic_partitions = PARTITIONS;
    config.topic_replication = 3;
    let worker = unique("eos-cluster-worker");
    config
        .properties
        .insert("transactional.id".to_owned(), worker.clone());
    let provider: Arc<dyn SocketProvider> =
        Arc::new(KafkaSocketProvider::new(config).expect("valid config"));
    let (input, output, group) = (unique("eos-a"), unique("eos-b"), unique("eos-group"));
    support::kafka::create_topic(&provider, &input).await;
    support::kafka::create_topic(&provider, &output).await;
    let inputs: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("k{}", i % 40), format!("k{}/r{i}", i % 40)))
        .collect();
    publish(&provider, &input, &inputs).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let app = support::test_app(spa_dat::Config::default()).add_application(pipeline_on(
        Arc::clone(&provider),
        &input,
        &output,
        &group,
        &worker,
        None,
        Arc::clone(&handled),
        false,
    ));
    let shutdown = app.shutdown_handle();
    let run = tokio::spawn(app.start_async());
    let h = Arc::clone(&handled);
    support::wait_until(
        "the pipeline handling",
        Duration::from_secs(120),
        move || h.load(Ordering::Relaxed) >= 500,
    )
    .await;
    cluster.kill(2);
    // Back once the pipeline made progress without it, or after a while if it could not.
    let h = Arc::clone(&handled);
    let resumed = tokio::time::timeout(
        Duration::from_secs(20),
        support::wait_until(
            "progress without a broker",
            Duration::from_secs(60),
            move || h.load(Ordering::Relaxed) >= 1_500,
        ),
    )
    .await;
    cluster.restart(2);
    wait_for_output_on(
        &cluster.bootstrap,
        &output,
        RECORDS,
        Duration::from_secs(150),
    )
    .await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops in time")
        .expect("not panicked")
        .expect("stops cleanly");
    let (bootstrap, out) = (cluster.bootstrap.clone(), output.clone());
    let read = tokio::task::spawn_blocking(move || read_committed_from(&bootstrap, &out))
        .await
        .expect("read");
    assert_exactly_once_in_order(&inputs, &read);
    eprintln!("progress while a broker was down: {}", resumed.is_ok());
}
