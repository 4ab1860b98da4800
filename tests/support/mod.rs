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
