//! Examples run as processes by the tests (`cargo test` builds the examples with the tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary of `examples/{name}.rs`: `cargo test` builds the examples with the tests (a run
/// of one test alone does not: `cargo build --example {name}` first).
pub fn binary(name: &str) -> PathBuf {
    let binary = std::env::current_exe()
        .expect("test binary")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test` without a target filter, or `cargo build --example \
         {name}` first",
        binary.display()
    );
    binary
}

/// Starts `examples/graceful_shutdown` on `topic` (`work_ms` per message, a line per message in
/// `log`) and waits until it runs (its subscriptions are in place).
pub fn start_graceful(url: &str, topic: &str, log: &Path, grace_ms: u64, work_ms: u64) -> Child {
    start_graceful_with(url, topic, log, grace_ms, work_ms, 1)
}

/// [`start_graceful`] with `concurrency` handlers at once.
pub fn start_graceful_with(
    url: &str,
    topic: &str,
    log: &Path,
    grace_ms: u64,
    work_ms: u64,
    concurrency: usize,
) -> Child {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary("graceful_shutdown"))
        .env("GRACEFUL_CONCURRENCY", concurrency.to_string())
        .env("SPA_DAT_URL", url)
        .env("SPA_DAT_SHUTDOWN_GRACE_MS", grace_ms.to_string())
        .env("GRACEFUL_TOPIC", topic)
        .env("GRACEFUL_LOG", log)
        .env("GRACEFUL_WORK_MS", work_ms.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    // tracing's fmt subscriber writes to stdout.
    let mut output = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let read = output.read_line(&mut line).expect("reads its log");
        assert!(read > 0, "the example exited before it ran");
        eprint!("example {}: {line}", child.id());
        if line.contains("spa-dat running") {
            break;
        }
    }
    // Keep reading, so the example never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in output.lines().map_while(Result::ok) {
            eprintln!("example: {line}");
        }
    });
    child
}

/// The payloads a graceful_shutdown log has under `prefix` (`"start "` or `"done "`).
pub fn logged(log: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix(prefix).map(str::to_owned))
        .collect()
}
