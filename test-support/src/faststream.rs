//! FastStream 0.7 for interop tests: the scripts `tests/python/faststream_*.py`, run with the
//! virtual environment scripts/faststream-venv.sh creates (`target/faststream-venv`) or
//! `SPA_DAT_FASTSTREAM_PYTHON`. Its own environment: FastStream's aiokafka conflicts with the
//! Python spa-dat's.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The Python with FastStream; fails the test if it cannot import FastStream's MQTT and Kafka
/// brokers.
pub fn python() -> PathBuf {
    let python = std::env::var_os("SPA_DAT_FASTSTREAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/faststream-venv/bin/python"));
    let works = std::process::Command::new(&python)
        .args(["-c", "import faststream.mqtt, faststream.kafka"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        works,
        "{} cannot import FastStream: the interop tests need it. Run ./scripts/test-all.sh \
         (it creates target/faststream-venv with scripts/faststream-venv.sh) or set \
         SPA_DAT_FASTSTREAM_PYTHON",
        python.display()
    );
    python
}

/// How long a script may run before the test kills it and fails.
const LIMIT: Duration = Duration::from_secs(90);

/// A running FastStream script whose standard output the test reads line by line.
pub struct Script {
    name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Script {
    /// Starts `tests/python/{name}` with `args`.
    pub fn start(name: &str, args: &[&str]) -> Script {
        let mut child = Command::new(python())
            .arg(crate::python::script(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Script {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Starts the script and waits (at most 60 s) until it prints `ready`.
    pub async fn ready(name: &str, args: &[&str]) -> Script {
        let mut script = Script::start(name, args);
        let line = script.line(Duration::from_secs(60)).await;
        assert_eq!(line, "ready", "{name} did not get ready");
        script
    }

    /// The next line it prints, at most `limit` from now.
    pub async fn line(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.lines.recv()).await {
            Ok(Some(line)) => line.trim().to_owned(),
            Ok(None) => panic!("{} ended without printing the line awaited", self.name),
            Err(_) => panic!("{} printed nothing within {limit:?}", self.name),
        }
    }

    /// The next line it prints, as JSON.
    pub async fn json(&mut self, limit: Duration) -> serde_json::Value {
        let line = self.line(limit).await;
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} printed no JSON ({e}): {line}", self.name))
    }

    /// Waits (at most 90 s) for it to exit, successfully.
    pub async fn finish(mut self) {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still running after {LIMIT:?}: killed", self.name))
            .expect("wait");
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    /// Closes its standard input (a responder's signal to stop) and waits for it to exit.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        self.finish().await;
    }
}

/// Runs a script to completion (at most 120 s, as [`crate::python::run`]) and returns what it
/// printed, trimmed — or fails the test with its standard error.
pub async fn run(name: &str, args: &[&str]) -> String {
    crate::python::run_with(python(), name, args).await
}
