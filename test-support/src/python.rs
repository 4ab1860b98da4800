//! The Python spa-dat 0.4.0 for interop tests, from the virtual environment that
//! scripts/test-all.sh creates (`target/py-venv`) or `SPA_DAT_PYTHON`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The Python interpreter with the Python spa-dat; fails the test if it cannot import it.
pub fn python() -> PathBuf {
    let python = std::env::var_os("SPA_DAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/py-venv/bin/python"));
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

/// The interop script `tests/python/{name}`.
pub fn script(name: &str) -> PathBuf {
    crate::workspace_root().join("tests/python").join(name)
}

/// How long a script may run (or take to exit when asked to finish) before the test kills it
/// and fails: a Python client stuck on a broker must fail its test, not hang the test run.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs a script to completion (at most `LIMIT`, 120 s) and returns what it printed, trimmed; fails
/// the test with the script's stderr if it fails.
pub async fn run(name: &str, args: Vec<String>) -> String {
    run_with(python(), name, args).await
}

/// [`run`] with another interpreter (FastStream's virtual environment).
pub(crate) async fn run_with(
    python: PathBuf,
    name: &str,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
) -> String {
    let mut command = tokio::process::Command::new(python);
    command.arg(script(name)).args(args).kill_on_drop(true);
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} still running after {LIMIT:?}: killed"))
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
    let Ok(line) = tokio::time::timeout(Duration::from_secs(60), ready).await else {
        stop(child);
        panic!("{name} not ready within 60 s: killed");
    };
    let line = line.expect("join").expect("read");
    assert_eq!(line.trim(), "ready", "{name} did not start");
    child
}

/// Waits (at most `LIMIT`) for a script started with [`start_ready`] to exit successfully.
pub async fn finish(mut child: std::process::Child) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            stop(child);
            panic!("python still running after {LIMIT:?}: killed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "python exited with {status}");
}

/// Stops a script started with [`start_ready`] whose own exit the test does not judge.
pub fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}
