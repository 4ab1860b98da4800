//! MQTT security against a real Mosquitto with only a TLS listener (a throw-away CA) and its
//! dynamic-security plugin (`Mosquitto::start_secure`): alice reads and writes `secure/#`, bob
//! may only write there, the watcher may read everything.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::mqtt::{MqttConfig, MqttSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Config, SpaMessage};
use support::mosquitto::Mosquitto;
use support::{certs, test_app};

fn provider(config: MqttConfig) -> Arc<dyn SocketProvider> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Arc::new(MqttSocketProvider::new(config).expect("valid config"))
}

/// `mqtts://user:password@localhost:port?ca_file=...`, the URL form a user writes.
fn tls_url(broker: &Mosquitto, user: &str, password: &str, ca: &std::path::Path) -> MqttConfig {
    MqttConfig::from_url(&format!(
        "mqtts://{user}:{password}@localhost:{}?ca_file={}",
        broker.port,
        ca.display()
    ))
    .expect("valid URL")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Connects (subscribed to `topics`), expecting failure: the error's text and how long it took.
async fn failed_connect(config: MqttConfig, topics: &[&str]) -> (String, Duration) {
    let options = SocketOptions::new(unique("client")).topics(topics.iter().copied());
    support::failed_connect(Duration::from_secs(30), async move {
        provider(config).connect(options).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_password_publishes_consumes_and_answers_requests() {
    let broker = Mosquitto::start_secure();
    let (reader, seen) = support::answering_reader("secure/readings");
    let consumer = reader
        .client_id(unique("reader"))
        .socket_provider(provider(tls_url(
            &broker,
            "alice",
            "alice-secret",
            &certs::ca(),
        )));
    let running = support::run_in_background(consumer).await;

    let connection = provider(tls_url(&broker, "alice", "alice-secret", &certs::ca()))
        .connect(SocketOptions::new(unique("writer")))
        .await
        .expect("alice connects over TLS");
    // The request's reply comes back only because the ACL lets alice use her reply topics.
    support::publish_and_request_over_tls(
        connection,
        "secure/readings",
        Duration::from_secs(10),
        &seen,
        running,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_run_at_once_naming_the_broker() {
    let broker = Mosquitto::start_secure();
    let config = tls_url(&broker, "alice", "not-alice-secret", &certs::ca());
    let address = config.broker();
    let app = test_app(Config::default())
        .socket_provider(provider(config))
        .add_consumer("intruder", ["secure/readings"], || async {});
    let started = Instant::now();
    let text = support::failed_run(app, Duration::from_secs(30)).await;
    assert!(text.contains(&address), "names the broker: {text}");
    assert!(
        text.contains("user name or password"),
        "says what is wrong: {text}"
    );
    assert!(!text.contains("not-alice-secret"), "no password: {text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_fails_at_once() {
    let broker = Mosquitto::start_secure();
    let config = tls_url(&broker, "alice", "alice-secret", &certs::other_ca());
    let (text, took) = failed_connect(config, &[]).await;
    assert!(
        text.contains("TLS") && text.contains("certificate"),
        "{text}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_on_the_tls_port_fails_at_once_suggesting_tls() {
    let broker = Mosquitto::start_secure();
    let config = MqttConfig::from_url(&format!(
        "mqtt://alice:alice-secret@localhost:{}",
        broker.port
    ))
    .expect("valid URL");
    let (text, took) = failed_connect(config, &[]).await;
    assert!(text.contains("mqtts://"), "suggests TLS: {text}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_acl_refuses_fails_start_up_naming_the_topic() {
    let broker = Mosquitto::start_secure();
    let config = tls_url(&broker, "bob", "bob-secret", &certs::ca());
    let app = test_app(Config::default())
        .socket_provider(provider(config))
        .add_consumer(
            "reader",
            ["secure/orders", "secure/allowed-for-writing-only"],
            || async {},
        );
    let text = support::failed_run(app, Duration::from_secs(30)).await;
    assert!(
        text.contains("`secure/allowed-for-writing-only`"),
        "names the topic: {text}"
    );
    assert!(text.contains("refused"), "{text}");
}

/// MQTT 3.1.1 has no way to refuse a PUBLISH: Mosquitto acknowledges one its ACL forbids and
/// drops it. The README says so; this test fails if that ever changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_acl_refuses_is_acknowledged_and_dropped_at_mqtt_3_1_1() {
    let broker = Mosquitto::start_secure();
    let watcher = provider(tls_url(&broker, "watcher", "watcher-secret", &certs::ca()))
        .connect(SocketOptions::new(unique("watcher")).topics(["elsewhere/#", "secure/#"]))
        .await
        .expect("the watcher subscribes");
    let mut inbox = watcher.inbox;
    let alice = provider(tls_url(&broker, "alice", "alice-secret", &certs::ca()))
        .connect(SocketOptions::new(unique("alice")))
        .await
        .expect("alice connects");
    alice
        .socket
        .publish(&SpaMessage::new("elsewhere/forbidden", "dropped"))
        .await
        .expect("acknowledged although the ACL refuses it");
    alice
        .socket
        .publish(&SpaMessage::new("secure/allowed", "kept"))
        .await
        .expect("an allowed publish");
    // Published after the refused one on the same connection: once it arrives, the refused
    // one would have been delivered before it.
    let payloads = support::next_payloads(&mut inbox, 1, Duration::from_secs(10)).await;
    let first = SpaMessage::from_json(&payloads[0]).expect("a spa-dat message");
    assert_eq!(
        first.topic, "secure/allowed",
        "the refused publish was dropped"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), inbox.recv())
            .await
            .is_err(),
        "nothing else arrives"
    );
    alice.socket.close().await.expect("close");
    watcher.socket.close().await.expect("close");
}

/// `config` on MQTT 5.
fn v5(mut config: MqttConfig) -> MqttConfig {
    config.version = spa_dat::socket::mqtt::MqttVersion::V5;
    config
}

/// MQTT 5 can refuse a PUBLISH: the caller gets "not authorised", at QoS 1 (PUBACK 0x87) and
/// QoS 2 (PUBREC 0x87), and the connection goes on. More refusals than the in-flight window
/// holds: rumqttc 0.25.1 kept a refused QoS 2 publish's slot, and sent nothing more once they
/// filled the window (vendor/rumqttc/PATCHES.md, 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_acl_refuses_fails_as_not_authorised_at_mqtt_5() {
    let broker = Mosquitto::start_secure();
    for qos in [1, 2] {
        let mut config = v5(tls_url(&broker, "alice", "alice-secret", &certs::ca()));
        config.qos = qos;
        config.inflight = 2;
        config.publish_timeout_ms = 5_000;
        let alice = provider(config)
            .connect(SocketOptions::new(unique("alice")))
            .await
            .expect("alice connects");
        for attempt in 0..4 {
            let error = alice
                .socket
                .publish(&SpaMessage::new("elsewhere/forbidden", "refused"))
                .await
                .expect_err("the ACL refuses it");
            let text = error.to_string();
            assert!(
                text.contains("not authorised") && text.contains("0x87"),
                "QoS {qos}, attempt {attempt}: {text}"
            );
            assert!(error.is_permanent(), "a refusal is not retried: {text}");
        }
        alice
            .socket
            .publish(&SpaMessage::new("secure/allowed", "kept"))
            .await
            .unwrap_or_else(|e| panic!("QoS {qos}: an allowed publish after the refusals: {e}"));
        alice.socket.close().await.expect("close");
    }
    assert!(broker.log().contains("(p5,"), "the clients spoke MQTT 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_acl_refuses_names_the_topic_and_the_reason_at_mqtt_5() {
    let broker = Mosquitto::start_secure();
    let config = v5(tls_url(&broker, "bob", "bob-secret", &certs::ca()));
    let (text, _) = failed_connect(config, &["secure/allowed-for-writing-only"]).await;
    assert!(
        text.contains("`secure/allowed-for-writing-only`") && text.contains("not authorised"),
        "names the topic and why: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_at_mqtt_5() {
    let broker = Mosquitto::start_secure();
    let config = v5(tls_url(&broker, "alice", "wrong", &certs::ca()));
    let (text, took) = failed_connect(config, &[]).await;
    assert!(
        text.contains("user name or password") || text.contains("not authorised"),
        "{text}"
    );
    assert!(
        text.contains("version=5"),
        "names the broker as configured: {text}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
