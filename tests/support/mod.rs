//! Test support: real brokers, the Python spa-dat for interop.

pub mod certs;
pub mod example;
pub mod kafka;
pub mod mosquitto;
pub mod ordering;
pub mod prometheus;
pub mod python;
pub mod recorded;

/// Polls `done` every 20 ms; fails the test naming `what` after `limit`.
#[allow(dead_code, unreachable_pub)]
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
#[allow(dead_code, unreachable_pub)]
pub fn test_app(config: spa_dat::Config) -> spa_dat::DistributedApplication {
    spa_dat::DistributedApplication::new()
        .without_registered_handlers()
        .watch_signals(false)
        .config(config)
}

/// The raw bytes of the next `count` deliveries in `inbox` (each acknowledged), waiting at most
/// `patience` for each: for payloads that are not spa-dat messages, such as dead letters.
#[allow(dead_code, unreachable_pub)]
pub async fn next_payloads(
    inbox: &mut spa_dat::socket::Inbox,
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
#[allow(dead_code, unreachable_pub)]
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
#[allow(dead_code, unreachable_pub)]
pub fn seq_of(message: &spa_dat::SpaMessage) -> usize {
    message
        .payload_str()
        .expect("utf-8")
        .parse()
        .expect("a number")
}
