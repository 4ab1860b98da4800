//! A consumer that stops cleanly on Ctrl-C or SIGTERM: the message being handled finishes
//! (within `SPA_DAT_SHUTDOWN_GRACE_MS`), it is acknowledged (Kafka: its offset committed), the
//! sockets close, and the process exits 0. Started again, it resumes after the last message it
//! handled: nothing is lost, and at most the message in flight is handled twice.
//!
//! ```text
//! SPA_DAT_URL=kafka://localhost:9092 GRACEFUL_TOPIC=orders cargo run --example graceful_shutdown
//! SPA_DAT_URL='mqtt://localhost:1883?client_id=line-7&clean_session=false' GRACEFUL_TOPIC=orders \
//!     cargo run --example graceful_shutdown
//! ```
//! `GRACEFUL_LOG=path` appends `start {payload}` and `done {payload}` per message;
//! `GRACEFUL_WORK_MS` is how long each message takes (200 ms).

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spa_dat::{Application, DistributedApplication, SpaMessage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let topic = std::env::var("GRACEFUL_TOPIC").unwrap_or_else(|_| "orders".into());
    let work = std::env::var("GRACEFUL_WORK_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_millis(200), Duration::from_millis);
    let log = match std::env::var_os("GRACEFUL_LOG") {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))),
        None => None,
    };
    let note = move |line: String| {
        if let Some(log) = &log {
            let mut file = log.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(file, "{line}");
            let _ = file.flush();
        }
    };
    let report = note.clone();
    let consumer = Application::consumer("graceful", [topic], move |message: SpaMessage| {
        let note = note.clone();
        async move {
            let payload = message.payload_str().unwrap_or("?").to_owned();
            note(format!("start {payload}"));
            tokio::time::sleep(work).await;
            note(format!("done {payload}"));
        }
    });
    let stopped = DistributedApplication::new()
        .without_registered_handlers()
        .add_application(consumer)
        .start()?;
    report(stopped.to_string());
    Ok(())
}
