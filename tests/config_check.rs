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
    // A record waits on the topic before the check; the check uses the group (no join).
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
    spa_dat_test_support::outcome(&output)
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

// --- From an outside attack: the check takes no running instance's place ---

fn bus(url: &str) -> Config {
    Config {
        bus: spa_dat::config::SocketConfig::from_url(url).expect("a bus URL"),
        ..Config::default()
    }
}

/// With a bus-wide client id (persistent sessions), the check's MQTT connection has an id of
/// its own: the broker never closes the running service's connection for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_never_takes_the_running_services_mqtt_client_id() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}?client_id=svc", broker.port);
    let running = test_app(bus(&url)).add_consumer("orders", ["orders"], nothing);
    let run = TestRunning::start(running).await;
    check(test_app(bus(&url)).add_consumer("orders", ["orders"], nothing))
        .await
        .expect("the check passes");
    run.stop().await;
    assert!(
        !broker
            .log()
            .contains("already connected, closing old connection"),
        "the check took the running service's client id:\n{}",
        broker.log()
    );
}

/// An application with a group is a shared subscription on MQTT: the check's is in a share
/// group of its own, so the broker hands it none of the group's messages to lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_takes_no_message_of_an_mqtt_group() {
    const N: usize = 1_000;
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}?version=5&qos=1", broker.port);
    let provider = || -> Arc<dyn SocketProvider> {
        Arc::new(MqttSocketProvider::new(MqttConfig::from_url(&url).expect("URL")).expect("config"))
    };
    let live = provider()
        .connect(
            SocketOptions::new("live-worker")
                .topics(["jobs"])
                .group("workers"),
        )
        .await
        .expect("the live worker connects");
    let mut inbox = live.inbox;
    let received = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < N {
            match tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
                Ok(Some(delivery)) => {
                    seen.insert(delivery.payload.clone());
                    delivery.ack();
                }
                _ => break,
            }
        }
        seen.len()
    });
    let publisher = provider()
        .connect(SocketOptions::new("publisher"))
        .await
        .expect("the publisher connects");
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            publisher
                .socket
                .publish(&SpaMessage::new("jobs", format!("job-{i}")))
                .await
                .expect("published");
        }
        publisher.socket.close().await.expect("closed");
    });
    // Checks of the same group while the stream flows.
    for _ in 0..3 {
        check(
            test_app(bus(&url)).add_application(
                Application::consumer("worker", ["jobs"], nothing).group("workers"),
            ),
        )
        .await
        .expect("the check passes");
    }
    publishing.await.expect("published all");
    let got = received.await.expect("the worker's count");
    live.socket.close().await.expect("closed");
    assert_eq!(
        got, N,
        "the checks took messages of the group and dropped them"
    );
}

/// With `transactional.id` set, the check begins no transaction: the running producer of that
/// id is not fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_does_not_fence_the_running_transactional_producer() {
    let transactional_id = unique("check-txn");
    let topic = unique("check.fence");
    let url = format!(
        "kafka://{}?transactional.id={transactional_id}",
        support::kafka::bootstrap()
    );
    let provider: Arc<dyn SocketProvider> = Arc::new(
        KafkaSocketProvider::new(KafkaConfig::from_url(&url).expect("URL")).expect("config"),
    );
    let live = provider
        .connect(SocketOptions::new("live").transactional(true))
        .await
        .expect("the live producer connects");
    live.socket
        .publish(&SpaMessage::new(topic.clone(), "before"))
        .await
        .expect("published before the check");
    async fn produce() {}
    check(
        test_app(bus(&url))
            .add_application(Application::producer("p", produce).transactional(true)),
    )
    .await
    .expect("the check passes");
    let after = live.socket.publish(&SpaMessage::new(topic, "after")).await;
    live.socket.close().await.expect("closed");
    after.expect("the running producer publishes after the check: not fenced");
}

/// Every problem at once: one application's unset placeholder and another's unreachable
/// broker, in one error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_a_placeholder_and_an_unreachable_broker_at_once() {
    let port = support::prometheus::free_port();
    let unreachable: Arc<dyn SocketProvider> = Arc::new(
        MqttSocketProvider::new(
            MqttConfig::from_url(&format!("mqtt://127.0.0.1:{port}")).expect("URL"),
        )
        .expect("config"),
    );
    let error = check(
        test_app(Config::default())
            .add_consumer("placeholder", ["x/${CHECK_TEST_UNSET_PLACE}"], nothing)
            .add_application(
                Application::consumer("unreachable", ["y"], nothing).socket_provider(unreachable),
            ),
    )
    .await
    .expect_err("two problems")
    .to_string();
    assert!(error.contains("CHECK_TEST_UNSET_PLACE"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
}

/// A port the health probes cannot be served on fails the check, as it would fail the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_a_health_address_that_cannot_be_served() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let config = Config {
        health_addr: Some(addr.clone()),
        ..Config::default()
    };
    let error = check(test_app(config).add_consumer("reader", ["r"], nothing))
        .await
        .expect_err("the port is taken")
        .to_string();
    assert!(
        error.contains("health_addr") && error.contains(&addr),
        "{error}"
    );
}

/// A Kafka consumer's check creates no topic: a misspelt one is not made on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_creates_no_kafka_topic() {
    let topic = unique("check.typo");
    let url = format!("kafka://{}", support::kafka::bootstrap());
    check(test_app(bus(&url)).add_consumer("reader", [topic.clone()], nothing))
        .await
        .expect("the check passes");
    let bootstrap = support::kafka::bootstrap();
    let listed = topic.clone();
    let exists = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("a metadata client");
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(20))
            .expect("metadata");
        metadata.topics().iter().any(|t| t.name() == listed)
    })
    .await;
    assert!(!exists.expect("listed"), "the check created `{topic}`");
}

/// A run on a thread of its own, stopped by the test.
struct TestRunning {
    shutdown: spa_dat::Shutdown,
    task: tokio::task::JoinHandle<spa_dat::Result<Stopped>>,
}

impl TestRunning {
    async fn start(app: DistributedApplication) -> Self {
        let (shutdown, readiness) = (app.shutdown_handle(), app.readiness());
        let task = tokio::spawn(app.start_async());
        tokio::time::timeout(Duration::from_secs(30), readiness.ready())
            .await
            .expect("the run is ready");
        TestRunning { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        support::joined("the run", Duration::from_secs(30), self.task)
            .await
            .expect("a clean run");
    }
}

/// An access check that cannot finish within `connect_timeout_ms` fails the check: a run
/// subscribes anyway and says so at WARN, a check must not pass what it could not confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_does_not_pass_what_it_could_not_confirm_in_time() {
    for timeout_ms in [60, 150] {
        let mut config = KafkaConfig::new(support::kafka::secure_bootstrap());
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "alice-secret"),
            ("ssl.ca.location", &certs::ca().display().to_string()),
        ] {
            config.properties.insert(key.into(), value.into());
        }
        config.connect_timeout_ms = timeout_ms;
        let provider: Arc<dyn SocketProvider> =
            Arc::new(KafkaSocketProvider::new(config).expect("valid config"));
        let app = test_app(Config::default()).add_application(
            Application::consumer("kafka-reader", [unique("secure.orders")], nothing)
                .group(format!("elsewhere.{}", unique("g")))
                .socket_provider(provider),
        );
        let result = check(app).await;
        assert!(
            result.is_err(),
            "connect_timeout_ms = {timeout_ms}: a group the ACLs refuse passed the check"
        );
    }
}

// --- From a second outside review ---

/// The check subscribes as the group would: a group name a shared subscription cannot carry
/// fails the check as it fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_subscribes_as_its_mqtt_group_would() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}?version=5", broker.port);
    let app = test_app(bus(&url))
        .add_application(Application::consumer("billing", ["orders"], nothing).group("billing+eu"));
    let error = check(app)
        .await
        .expect_err("no shared subscription of `billing+eu`")
        .to_string();
    assert!(error.contains("billing+eu"), "{error}");
}

/// Two HTTP addresses on one port that the run could not both bind fail the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_holds_each_address_while_it_tries_the_next() {
    let port = support::prometheus::free_port();
    let config = Config {
        health_addr: Some(format!("0.0.0.0:{port}")),
        metrics_addr: Some(format!("127.0.0.1:{port}")),
        ..Config::default()
    };
    let error = check(test_app(config).add_consumer("reader", ["r"], nothing))
        .await
        .expect_err("the second address is in use by the first")
        .to_string();
    assert!(error.contains("metrics_addr"), "{error}");
}

/// A topic that does not exist, on a bus that does not create topics: a run would wait for
/// it for ever, so the check fails naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_a_missing_topic_no_run_would_create() {
    let topic = unique("check.absent");
    let url = format!(
        "kafka://{}?create_topics=false",
        support::kafka::bootstrap()
    );
    let error = check(test_app(bus(&url)).add_consumer("reader", [topic.clone()], nothing))
        .await
        .expect_err("the topic does not exist")
        .to_string();
    assert!(error.contains(&topic), "{error}");
}
