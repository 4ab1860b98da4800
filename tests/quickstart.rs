//! The README's first command, `cargo run --example quickstart`, run as a user runs it: a
//! process with nothing configured (the in-process bus), and again with `SPA_DAT_URL` naming a
//! real Mosquitto, as the example's documentation offers. It must print the average of its five
//! readings and exit 0 on its own.

use spa_dat_test_support as support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the quick start with `url` (none: the default bus) and returns what it printed.
fn quickstart(url: Option<&str>) -> String {
    let mut command = Command::new(support::example::binary("quickstart"));
    command
        .env_remove("SPA_DAT_URL")
        .env_remove("SPA_DAT_CONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = url {
        command.env("SPA_DAT_URL", url);
    }
    let mut child = command.spawn().expect("the quick start starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "the quick start did not stop on its own within 30 s:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        status.success(),
        "the quick start exited with {status}:\n{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

fn assert_answered(printed: &str) {
    assert!(
        printed.contains("average of 5 readings: 21.65 °C"),
        "the sensor got the average of its five readings:\n{printed}"
    );
}

#[test]
fn the_quick_start_runs_on_the_in_process_bus_and_stops_by_itself() {
    assert_answered(&quickstart(None));
}

#[cfg(feature = "mqtt")]
#[test]
fn the_quick_start_runs_unchanged_on_mosquitto() {
    let broker = support::mosquitto::Mosquitto::start();
    assert_answered(&quickstart(Some(&format!(
        "mqtt://127.0.0.1:{}",
        broker.port
    ))));
}
