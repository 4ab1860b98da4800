//! Apache Kafka for the tests. The shared broker is the one `scripts/test-all.sh` starts
//! (`SPA_DAT_KAFKA_BOOTSTRAP`); tests that stop the broker start their own with
//! `scripts/kafka.sh`. Without Kafka the tests fail: they never pass without their broker.

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    crate::workspace_root().join("scripts/kafka.sh")
}

/// The shared broker's bootstrap address.
pub fn bootstrap() -> String {
    std::env::var("SPA_DAT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "SPA_DAT_KAFKA_BOOTSTRAP is not set: Kafka tests need a real broker. Run \
             ./scripts/test-all.sh (it starts Apache Kafka), or start one with \
             `scripts/kafka.sh start DIR` and export SPA_DAT_KAFKA_BOOTSTRAP=$(cat DIR/bootstrap)"
        )
    })
}

/// The shared broker's SASL_SSL listener (TLS with the certificates of [`crate::certs`];
/// SCRAM-SHA-512 users and ACLs as `scripts/kafka.sh` describes them).
pub fn secure_bootstrap() -> String {
    std::env::var("SPA_DAT_KAFKA_SECURE_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "SPA_DAT_KAFKA_SECURE_BOOTSTRAP is not set: Kafka security tests need the test \
             broker's SASL_SSL listener. Run ./scripts/test-all.sh, or start one with \
             `scripts/kafka.sh start DIR` and export SPA_DAT_KAFKA_SECURE_BOOTSTRAP=$(cat \
             DIR/secure-bootstrap) SPA_DAT_TEST_CERTS=DIR/certs"
        )
    })
}

/// Creates `topic` as `provider` configures topics (partitions, replicas), by subscribing a
/// socket to it: for tests whose consumer or responder must find it there.
pub async fn create_topic(
    provider: &std::sync::Arc<dyn spa_dat::socket::spi::SocketProvider>,
    topic: &str,
) {
    let setup = provider
        .connect(
            spa_dat::socket::spi::SocketOptions::new(format!(
                "setup-{}",
                uuid::Uuid::new_v4().simple()
            ))
            .topics([topic.to_owned()]),
        )
        .await
        .expect("creates the topic");
    setup.socket.close().await.expect("close");
}

/// The broker a benchmark run by hand uses: `SPA_DAT_KAFKA_BOOTSTRAP` when set, else one of
/// its own, started here and kept (stopped) by the returned guard.
pub fn bootstrap_or_start() -> (String, Option<OwnKafka>) {
    match std::env::var("SPA_DAT_KAFKA_BOOTSTRAP") {
        Ok(bootstrap) => (bootstrap, None),
        Err(_) => {
            let own = OwnKafka::start();
            (own.bootstrap.clone(), Some(own))
        }
    }
}

/// A broker of the test's own, stopped when dropped.
pub struct OwnKafka {
    dir: PathBuf,
    /// Its bootstrap address (`host:port`).
    pub bootstrap: String,
}

impl OwnKafka {
    /// Starts a single-node broker in a new temporary directory (`scripts/kafka.sh start`).
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("spa-dat-kafka-{}", uuid::Uuid::new_v4().simple()));
        let mut kafka = OwnKafka {
            dir,
            bootstrap: String::new(),
        };
        kafka.run("start");
        kafka.bootstrap = std::fs::read_to_string(kafka.dir.join("bootstrap"))
            .expect("bootstrap file")
            .trim()
            .to_owned();
        kafka
    }

    fn run(&self, action: &str) {
        let status = Command::new("bash")
            .arg(script())
            .arg(action)
            .arg(&self.dir)
            .status()
            .expect("scripts/kafka.sh runs");
        assert!(status.success(), "scripts/kafka.sh {action} failed");
    }

    /// Stops the broker, keeping its data.
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Stops the broker and starts it again with its data.
    pub fn restart(&self) {
        self.run("stop");
        self.run("start");
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-node cluster of the test's own (`scripts/kafka.sh cluster-start`: 3 replicas,
/// min.insync.replicas=2), stopped when dropped.
pub struct OwnCluster {
    dir: PathBuf,
    /// The bootstrap addresses of its nodes.
    pub bootstrap: String,
}

impl OwnCluster {
    /// Starts the three nodes in a new temporary directory.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spa-dat-kafka-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut cluster = OwnCluster {
            dir,
            bootstrap: String::new(),
        };
        cluster.run(&["cluster-start"]);
        cluster.bootstrap = std::fs::read_to_string(cluster.dir.join("bootstrap"))
            .expect("bootstrap file")
            .trim()
            .to_owned();
        cluster
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .status()
            .expect("scripts/kafka.sh runs");
        assert!(status.success(), "scripts/kafka.sh {args:?} failed");
    }

    /// `kill -9` of node `n` (1 to 3).
    pub fn kill(&self, n: usize) {
        self.run(&["node-kill", &n.to_string()]);
    }

    /// Starts node `n` again with its data.
    pub fn restart(&self, n: usize) {
        self.run(&["node-start", &n.to_string()]);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("cluster-stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
