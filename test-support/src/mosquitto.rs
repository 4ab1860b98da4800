//! A real Mosquitto broker per test: its own port, config and persistence directory, stopped
//! when dropped. A missing `mosquitto` binary fails the test (scripts/test-all.sh installs it).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto process of one test.
pub struct Mosquitto {
    /// The loopback port it listens on.
    pub port: u16,
    /// Its config, persistence and log (removed when dropped unless `SPA_DAT_KEEP_BROKER_DIR`).
    pub dir: PathBuf,
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

    /// A broker with only a TLS listener (the certificates of [`crate::certs`]) and Mosquitto's
    /// dynamic-security plugin for users and ACLs (its `acl_file` never refuses a subscription,
    /// only the delivery of what it forbids; the plugin answers SUBACK 0x80):
    /// - `alice` / `alice-secret`: publishes and subscribes to `secure/#` and `_spa/reply/#`;
    /// - `bob` / `bob-secret`: publishes to `secure/#`, may subscribe to nothing;
    /// - `watcher` / `watcher-secret`: subscribes to everything, publishes nothing.
    pub fn start_secure() -> Self {
        let dir = Self::new_dir();
        let allow = |acltype: &str, topic: &str| serde_json::json!({ "acltype": acltype, "topic": topic, "allow": true });
        let roles = serde_json::json!([
            { "rolename": "secure-rw", "acls": [
                allow("publishClientSend", "secure/#"),
                allow("subscribePattern", "secure/#"),
                allow("publishClientSend", "_spa/reply/#"),
                allow("subscribePattern", "_spa/reply/#"),
            ]},
            { "rolename": "secure-writer", "acls": [allow("publishClientSend", "secure/#")] },
            { "rolename": "watcher", "acls": [allow("subscribePattern", "#")] },
        ]);
        let clients: Vec<serde_json::Value> = [
            ("alice", "alice-secret", "secure-rw"),
            ("bob", "bob-secret", "secure-writer"),
            ("watcher", "watcher-secret", "watcher"),
        ]
        .into_iter()
        .map(|(user, password, role)| {
            // mosquitto_ctrl hashes the password as the plugin expects; keep its client entry.
            let file = dir.join(format!("init-{user}.json"));
            let status = Command::new("mosquitto_ctrl")
                .args(["dynsec", "init"])
                .arg(&file)
                .args([user, password])
                .stdout(Stdio::null())
                .status()
                .expect("mosquitto_ctrl runs");
            assert!(status.success(), "mosquitto_ctrl dynsec init failed");
            let init: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&file).expect("init file")).expect("json");
            let mut client = init["clients"][0].clone();
            client["roles"] = serde_json::json!([{ "rolename": role }]);
            client
        })
        .collect();
        let security = dir.join("dynamic-security.json");
        let config = serde_json::json!({
            "clients": clients,
            "roles": roles,
            "groups": [],
            "defaultACLAccess": {
                "publishClientSend": false,
                "publishClientReceive": true,
                "subscribe": false,
                "unsubscribe": true
            }
        });
        std::fs::write(&security, config.to_string()).expect("dynamic security config");
        // Mosquitto runs as its own user and saves the file when it changes.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&security, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let plugin = [
            "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
            "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
            "/usr/lib/mosquitto_dynamic_security.so",
        ]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("Mosquitto's dynamic-security plugin (Debian's mosquitto package has it)");
        let certs = crate::certs::dir();
        Self::start_in(
            dir,
            &format!(
                "allow_anonymous false\nplugin {plugin}\nplugin_opt_config_file {}\n\
                 cafile {}\ncertfile {}\nkeyfile {}\n",
                security.display(),
                certs.join("ca.crt").display(),
                certs.join("broker.crt").display(),
                certs.join("broker.key").display(),
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

    /// A broker with `extra` lines in its configuration, e.g.
    /// `"allow_anonymous true\nmax_packet_size 1000\n"`.
    pub fn start_with(extra: &str) -> Self {
        Self::start_in(Self::new_dir(), extra)
    }

    fn start_in(dir: PathBuf, extra: &str) -> Self {
        let template = include_str!("../../tests/brokers/mosquitto.conf");
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

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("broker running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the broker again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("mosquitto did not restart on port {}: {log}", self.port);
        }
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("mosquitto.log")).unwrap_or_default())
            .into_owned()
    }

    /// `mqtt://127.0.0.1:{port}`.
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
