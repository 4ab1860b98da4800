//! The Python spa-dat 0.4.0 for interop tests, from the virtual environment that
//! scripts/test-all.sh creates (`target/py-venv`) or `SPA_DAT_PYTHON`.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

pub fn python() -> PathBuf {
    let python = std::env::var_os("SPA_DAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python")
        });
    let works = Command::new(&python)
        .args(["-c", "import spa_dat.socket.kafka, spa_dat.socket.mqtt"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        works,
        "{} cannot import the Python spa-dat: interop tests need it. Run ./scripts/test-all.sh \
         (it creates target/py-venv with spa-dat==0.4.0) or set SPA_DAT_PYTHON",
        python.display()
    );
    python
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs a script to completion and returns what it printed, trimmed; fails the test with the
/// script's stderr if it fails.
pub async fn run(name: &str, args: Vec<String>) -> String {
    let (python, script) = (python(), script(name));
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).args(args).output())
            .await
            .expect("join")
            .expect("python runs");
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Starts a script and waits (at most 60 s) until it prints `ready`.
pub async fn start_ready(name: &str, args: Vec<String>) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(python())
        .arg(script(name))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python starts");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), ready)
        .await
        .unwrap_or_else(|_| panic!("{name} not ready within 60 s"))
        .expect("join")
        .expect("read");
    assert_eq!(line.trim(), "ready", "{name} did not start");
    child
}

/// Waits for a script started with [`start_ready`] to exit successfully.
pub async fn finish(mut child: std::process::Child) {
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "python exited with {status}");
}

/// Stops a script started with [`start_ready`] whose own exit the test does not judge.
pub fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}
