//! A real Mosquitto broker per test: its own port, config and persistence directory, stopped
//! when dropped. A missing `mosquitto` binary fails the test (scripts/test-all.sh installs it).

#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO_BIN") {
        return path.into();
    }
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "Mosquitto is not installed: MQTT tests need a real broker. Run ./scripts/test-all.sh \
         (it installs Debian's mosquitto) or set MOSQUITTO_BIN"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Mosquitto {
    /// An anonymous broker with persistence on.
    pub fn start() -> Self {
        Self::start_with("allow_anonymous true\n")
    }

    /// A broker that only accepts `user` / `secret`.
    pub fn start_with_password() -> Self {
        let dir = Self::new_dir();
        let passwd = dir.join("passwd");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args(["user", "secret"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success(), "mosquitto_passwd failed");
        Self::start_in(
            dir,
            &format!(
                "allow_anonymous false\npassword_file {}\n",
                passwd.display()
            ),
        )
    }

    fn new_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "spa-dat-mosquitto-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("broker dir");
        // Started as root, mosquitto drops to its own user: it must still write its database.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        dir
    }

    fn start_with(extra: &str) -> Self {
        Self::start_in(Self::new_dir(), extra)
    }

    fn start_in(dir: PathBuf, extra: &str) -> Self {
        let template = include_str!("../brokers/mosquitto.conf");
        let mut broker = Mosquitto {
            port: 0,
            dir,
            child: None,
        };
        // A free port can be taken by another test's broker between our probe and
        // mosquitto's bind: then try another (connecting would reach the other broker).
        for _ in 0..5 {
            broker.port = free_port();
            let config = template
                .replace("{port}", &broker.port.to_string())
                .replace("{dir}", &broker.dir.display().to_string())
                + extra;
            std::fs::write(broker.dir.join("mosquitto.conf"), config).expect("config");
            match broker.launch() {
                Ok(()) => return broker,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("mosquitto exited: {log}"),
            }
        }
        panic!("mosquitto found no free port in 5 attempts");
    }

    /// Starts mosquitto and waits until it says it runs; `Err(its log)` if it exits first.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("mosquitto.log");
        let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let this_run = || {
            let log = std::fs::read(&log_path).unwrap_or_default();
            String::from_utf8_lossy(log.get(log_start..).unwrap_or_default()).into_owned()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("({status}) {}", this_run()));
                }
            }
            // "running" is logged once its listener is bound: our broker, not another's.
            if this_run().contains(" running")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM, so it saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("mosquitto did not restart on port {}: {log}", self.port);
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("SPA_DAT_KEEP_BROKER_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
