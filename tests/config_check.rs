//! The configuration check (`DistributedApplication::check`, `SPA_DAT_CHECK=1`): against a
//! real Mosquitto with ACLs and the test Kafka's SASL_SSL listener with ACLs, it passes where a
//! run could start, names every problem at once where it could not, and takes nothing off the
//! bus.

use spa_dat_test_support as support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{consumer, Application, Config, DistributedApplication, SpaMessage, Stopped};
use support::mosquitto::Mosquitto;
use support::{certs, test_app};

const LIMIT: Duration = Duration::from_secs(90);

fn unique(name: &str) -> String {
    format!(
        "{name}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn mqtt_as(broker: &Mosquitto, user: &str) -> Arc<dyn SocketProvider> {
    let config = MqttConfig::from_url(&format!(
        "mqtts://{user}:{user}-secret@localhost:{}?ca_file={}",
        broker.port,
        certs::ca().display()
    ))
    .expect("valid URL");
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

fn kafka_as(user: &str) -> Arc<dyn SocketProvider> {
    let mut config = KafkaConfig::new(support::kafka::secure_bootstrap());
    for (key, value) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", user),
        ("sasl.password", &format!("{user}-secret")),
        ("ssl.ca.location", &certs::ca().display().to_string()),
    ] {
        config.properties.insert(key.into(), value.into());
    }
    config.connect_timeout_ms = 30_000;
    Arc::new(KafkaSocketProvider::new(config).expect("valid config"))
}

async fn nothing(message: SpaMessage) {
    let _ = message;
}

async fn check(app: DistributedApplication) -> spa_dat::Result<()> {
    tokio::time::timeout(LIMIT, app.check())
        .await
        .expect("the check ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_passes_where_a_run_could_start_and_takes_nothing_off_the_bus() {
    let broker = Mosquitto::start_secure();
    let topic = unique("secure.checked");
    let group = unique("secure.checkers");
    // A record waits on the topic before the check; the check's consumer joins the group.
    let owner = kafka_as("alice")
        .connect(SocketOptions::new(unique("owner")))
        .await
        .expect("alice connects");
    owner
        .socket
        .publish(&SpaMessage::new(topic.clone(), "waiting"))
        .await
        .expect("published");
    owner.socket.close().await.expect("closed");

    let app = test_app(Config::default())
        .add_application(
            Application::consumer("orders", ["secure/orders"], nothing)
                .socket_provider(mqtt_as(&broker, "alice")),
        )
        .add_application(
            Application::consumer("billing", [topic.clone()], nothing)
                .group(group.clone())
                .socket_provider(kafka_as("alice")),
        );
    check(app).await.expect("the check passes");

    // The record is still there for the group: the check committed nothing.
    let connection = kafka_as("alice")
        .connect(
            SocketOptions::new(unique("reader"))
                .topics([topic.clone()])
                .group(group),
        )
        .await
        .expect("the group's reader connects");
    let mut inbox = connection.inbox;
    let payloads = support::next_payloads(&mut inbox, 1, Duration::from_secs(60)).await;
    assert!(
        payloads[0].windows(7).any(|w| w == b"waiting"),
        "the waiting record: {:?}",
        payloads[0]
    );
    connection.socket.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_every_refused_subscription_topic_and_group_at_once() {
    let broker = Mosquitto::start_secure();
    let refused_group = format!("elsewhere.{}", unique("g"));
    let app = test_app(Config::default())
        // bob may only write secure/#: his subscription is refused.
        .add_application(
            Application::consumer("mqtt-reader", ["secure/allowed-for-writing-only"], nothing)
                .socket_provider(mqtt_as(&broker, "bob")),
        )
        // alice may not use groups outside secure.*.
        .add_application(
            Application::consumer("kafka-reader", [unique("secure.orders")], nothing)
                .group(refused_group.clone())
                .socket_provider(kafka_as("alice")),
        )
        // and one that is fine.
        .add_application(
            Application::consumer("fine", ["secure/orders"], nothing)
                .socket_provider(mqtt_as(&broker, "alice")),
        );
    let error = check(app).await.expect_err("the check fails").to_string();
    println!("what the user sees: {error}");
    assert!(
        error.contains("mqtt-reader"),
        "names the application: {error}"
    );
    assert!(
        error.contains("`secure/allowed-for-writing-only`"),
        "names the topic: {error}"
    );
    assert!(
        error.contains("kafka-reader"),
        "names the application: {error}"
    );
    assert!(error.contains(&refused_group), "names the group: {error}");
    assert!(
        !error.contains("`fine`"),
        "blames the application that is fine: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_and_an_unset_placeholder_fail_the_check_naming_them() {
    let port = support::prometheus::free_port();
    let config = Config {
        bus: spa_dat::config::SocketConfig::from_url(&format!("mqtt://127.0.0.1:{port}"))
            .expect("a bus URL"),
        ..Config::default()
    };
    let app = test_app(config.clone()).add_consumer("reader", ["plant/temp"], nothing);
    let error = check(app).await.expect_err("nothing listens").to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{port}")),
        "names the broker: {error}"
    );

    let app = test_app(config).add_consumer("reader", ["plant/${CHECK_TEST_UNSET_SITE}"], nothing);
    let error = check(app)
        .await
        .expect_err("the variable is unset")
        .to_string();
    assert!(
        error.contains("CHECK_TEST_UNSET_SITE"),
        "names the variable: {error}"
    );
}

/// A registered consumer, for the child process below (the other tests leave registered
/// handlers out).
#[consumer(topics = ["check/${CHECK_TEST_SITE}/orders"])]
async fn registered_reader(message: SpaMessage) {
    let _ = message;
}

const CHILD_ENV: &str = "SPA_DAT_TEST_CHECK_CHILD";

/// What a deployment pipeline runs: the service's own `main`, with `SPA_DAT_CHECK=1`.
#[test]
#[ignore = "run by its parent test"]
fn child_main() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let stopped = DistributedApplication::run().expect("the check passes");
    assert_eq!(stopped, Stopped::Checked);
}

fn run_child(environment: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["--ignored", "--exact", "child_main", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("SPA_DAT_CHECK", "1")
        .env_remove("SPA_DAT_URL")
        .env_remove("SPA_DAT_CONFIG")
        .env_remove("CHECK_TEST_SITE");
    for (key, value) in environment {
        command.env(key, value);
    }
    let output = command.output().expect("the child runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn spa_dat_check_exits_0_when_fine_and_names_the_problem_when_not() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let (passed, said) = run_child(&[("SPA_DAT_URL", &url), ("CHECK_TEST_SITE", "lyon")]);
    assert!(passed, "the check failed:\n{said}");

    let (passed, said) = run_child(&[("SPA_DAT_URL", &url)]);
    assert!(
        !passed,
        "a check with CHECK_TEST_SITE unset passed:\n{said}"
    );
    assert!(
        said.contains("CHECK_TEST_SITE"),
        "names the variable:\n{said}"
    );

    let (passed, said) = run_child(&[
        ("SPA_DAT_URL", "mqtt+ws://broker:1883"),
        ("CHECK_TEST_SITE", "lyon"),
    ]);
    assert!(!passed, "a check of an unknown scheme passed:\n{said}");
    assert!(said.contains("mqtt+ws"), "names the URL's scheme:\n{said}");
}
