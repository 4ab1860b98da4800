//! What the workspace's integration tests (`tests/*.rs`) and benchmarks share: real brokers,
//! the Python spa-dat for interop, the transport conformance suite, and the set-ups many tests
//! repeat. Tests name it `support` (`use spa_dat_test_support as support;`).

pub mod batches;
pub mod certs;
pub mod conformance;
pub mod example;
pub mod faststream;
pub mod kafka;
pub mod mosquitto;
pub mod ordering;
pub mod prometheus;
pub mod python;
pub mod recorded;

/// The workspace's root directory (where `scripts/`, `tests/` and `target/` are).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ lies in the workspace")
        .to_path_buf()
}

/// Polls `done` every 20 ms; fails the test naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A distributed application for a test: only the applications the test adds, no signal
/// handling, `config` instead of the environment.
pub fn test_app(config: spa_dat::Config) -> spa_dat::DistributedApplication {
    spa_dat::DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(config)
}

/// The raw bytes of the next `count` deliveries in `inbox` (each acknowledged), waiting at most
/// `patience` for each: for payloads that are not spa-dat messages, such as dead letters.
pub async fn next_payloads(
    inbox: &mut spa_dat::socket::spi::Inbox,
    count: usize,
    patience: std::time::Duration,
) -> Vec<bytes::Bytes> {
    let mut payloads = Vec::with_capacity(count);
    for _ in 0..count {
        let delivery = tokio::time::timeout(patience, inbox.recv())
            .await
            .expect("delivery arrives")
            .expect("inbox open");
        payloads.push(delivery.payload.clone());
        delivery.ack();
    }
    payloads
}

/// Sets `app` up (its subscriptions are in place when this returns) and runs it in a task that
/// tears it down afterwards; trigger the returned shutdown to stop it.
pub async fn run_in_background(
    mut app: spa_dat::Application,
) -> (
    spa_dat::Shutdown,
    tokio::task::JoinHandle<spa_dat::Result<()>>,
) {
    use spa_dat::ApplicationLifeCycle;
    app.setup().await.expect("subscribed");
    let shutdown = app.shutdown_handle();
    let running = tokio::spawn(async move {
        let result = app.run_async().await;
        app.teardown().await.expect("teardown");
        result
    });
    (shutdown, running)
}

/// The number a test message carries as its payload.
pub fn seq_of(message: &spa_dat::SpaMessage) -> usize {
    message
        .payload_str()
        .expect("utf-8")
        .parse()
        .expect("a number")
}

/// Starts `app` in a task and returns once its run is ready — every application set up and
/// every socket subscribed as its transport sees it (memory: at once; MQTT: after the SUBACK;
/// Kafka: partitions assigned) — instead of sleeping for "subscribed". Fails the test if the
/// run ends first or is not ready within 10 s.
pub async fn start_ready(
    app: spa_dat::DistributedApplication,
) -> (
    spa_dat::Shutdown,
    tokio::task::JoinHandle<spa_dat::Result<spa_dat::Stopped>>,
) {
    let shutdown = app.shutdown_handle();
    let readiness = app.readiness();
    let mut run = tokio::spawn(app.start_async());
    tokio::select! {
        ready = tokio::time::timeout(std::time::Duration::from_secs(10), readiness.ready()) => {
            if ready.is_err() {
                panic!("not ready within 10 s: {:?}", readiness.not_ready());
            }
        }
        ended = &mut run => panic!("the run ended before it was ready: {ended:?}"),
    }
    (shutdown, run)
}

/// Awaits `task` (a spawned run), failing the test naming `what` if it has not finished within
/// `limit` (the task is aborted): a hung run fails its own test instead of hanging the whole
/// test binary. A panic in the task is passed on as it was.
pub async fn joined<T>(
    what: &str,
    limit: std::time::Duration,
    mut task: tokio::task::JoinHandle<T>,
) -> T {
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Ok(Err(error)) => panic!("{what}: {error}"),
        Err(_) => {
            task.abort();
            panic!("{what}: not finished within {limit:?}");
        }
    }
}

/// Connects a socket of `provider` as `client_id`, subscribed to nothing, for the test to
/// publish with.
pub async fn connect_publisher(
    provider: &std::sync::Arc<dyn spa_dat::socket::spi::SocketProvider>,
    client_id: impl Into<String>,
) -> spa_dat::socket::spi::Connection {
    provider
        .connect(spa_dat::socket::spi::SocketOptions::new(client_id))
        .await
        .expect("the publisher connects")
}

/// Publishes one message on `topic` for each of `numbers`, its payload the number (read back
/// with [`seq_of`]), one after the other: each publish returns as the transport acknowledges
/// it, and a failed one fails the test.
pub async fn publish_numbered(
    socket: &std::sync::Arc<dyn spa_dat::socket::spi::SpaSocket>,
    topic: &str,
    numbers: std::ops::Range<usize>,
) {
    for number in numbers {
        socket
            .publish(&spa_dat::SpaMessage::new(topic, number.to_string()))
            .await
            .expect("publish");
    }
}

/// A consumer `reader` of `topic` that records each payload it handles and answers a request
/// with `got {payload}`; the records.
pub fn answering_reader(
    topic: &str,
) -> (
    spa_dat::Application,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let handled = std::sync::Arc::clone(&seen);
    let reader =
        spa_dat::Application::consumer("reader", [topic], move |m: spa_dat::SpaMessage| {
            let handled = std::sync::Arc::clone(&handled);
            async move {
                let text = m.payload_str().expect("utf-8").to_owned();
                handled.lock().expect("seen").push(text.clone());
                format!("got {text}")
            }
        });
    (reader, seen)
}

/// The tail of a security test's round trip over TLS, with an [`answering_reader`] of `topic`
/// running (`reader`, from [`run_in_background`]; `seen`, its records): `writer` publishes
/// `one`, then requests `two` and gets `got two` within `patience`; the reader handled both, in
/// that order, within `patience`; then the writer closes and the reader's run ends cleanly.
pub async fn publish_and_request_over_tls(
    writer: spa_dat::socket::spi::Connection,
    topic: &str,
    patience: std::time::Duration,
    seen: &std::sync::Mutex<Vec<String>>,
    reader: (
        spa_dat::Shutdown,
        tokio::task::JoinHandle<spa_dat::Result<()>>,
    ),
) {
    writer
        .socket
        .publish(&spa_dat::SpaMessage::new(topic, "one"))
        .await
        .expect("publish over TLS");
    let reply = writer
        .socket
        .request(spa_dat::SpaMessage::new(topic, "two"), patience)
        .await
        .expect("request over TLS");
    assert_eq!(reply.payload_str().expect("utf-8"), "got two");
    wait_until("both messages handled", patience, || {
        seen.lock().expect("seen").len() == 2
    })
    .await;
    assert_eq!(*seen.lock().expect("seen"), ["one", "two"]);
    writer.socket.close().await.expect("close");
    let (shutdown, running) = reader;
    shutdown.trigger();
    joined("the run", std::time::Duration::from_secs(30), running)
        .await
        .expect("clean run");
}

/// Awaits `connect` (an `async` block, so that the time taken includes building the provider),
/// expecting it to fail within `limit`: the error's text (also printed: what the user sees) and
/// how long failing took.
pub async fn failed_connect(
    limit: std::time::Duration,
    connect: impl std::future::Future<Output = spa_dat::Result<spa_dat::socket::spi::Connection>>,
) -> (String, std::time::Duration) {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(limit, connect)
        .await
        .expect("connect does not hang");
    match result {
        Ok(_) => panic!("connect succeeded"),
        Err(error) => {
            println!("what the user sees: {error}");
            (error.to_string(), started.elapsed())
        }
    }
}

/// Runs `app`, expecting its start to fail within `limit`: the error's text (also printed: what
/// the user sees).
pub async fn failed_run(
    app: spa_dat::DistributedApplication,
    limit: std::time::Duration,
) -> String {
    let error = tokio::time::timeout(limit, app.start_async())
        .await
        .expect("run does not hang")
        .expect_err("run fails");
    let text = error.to_string();
    println!("what the user sees: {text}");
    text
}

/// Whether a finished child process succeeded, and all it printed (standard output, then
/// standard error).
pub fn outcome(output: &std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
