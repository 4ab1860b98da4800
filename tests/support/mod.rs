//! Test support: real brokers, the Python spa-dat for interop.

pub mod kafka;
pub mod mosquitto;
pub mod python;

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
