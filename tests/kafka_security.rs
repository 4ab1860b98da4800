//! Kafka security against the test broker's SASL_SSL listener (`scripts/kafka.sh`): TLS with a
//! throw-away CA, SCRAM-SHA-512 and unsecured-JWT OAUTHBEARER users, the StandardAuthorizer with
//! ACLs. alice may do everything on `secure.*` topics and groups; bob may write `secure.*` topics
//! and read `secure.*` groups, but not read the topics.

use spa_dat_test_support as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use spa_dat::socket::kafka::{KafkaConfig, KafkaSocketProvider};
use spa_dat::socket::spi::{SocketOptions, SocketProvider};
use spa_dat::{Config, Error, SpaMessage};
use support::{certs, test_app};

fn provider(config: KafkaConfig) -> Arc<dyn SocketProvider> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Arc::new(KafkaSocketProvider::new(config).expect("valid config"))
}

/// `secure.{name}.{random}`: a name alice's ACLs cover.
fn secure_name(name: &str) -> String {
    format!(
        "secure.{name}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// TLS trusting `ca`, SCRAM-SHA-512 as `user`.
fn scram(user: &str, password: &str, ca: &std::path::Path) -> KafkaConfig {
    let mut config = KafkaConfig::new(support::kafka::secure_bootstrap());
    for (key, value) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", user),
        ("sasl.password", password),
        ("ssl.ca.location", &ca.display().to_string()),
    ] {
        config.properties.insert(key.into(), value.into());
    }
    // Failing fast must not come from a short timeout: errors below arrive long before this.
    config.connect_timeout_ms = 30_000;
    config
}

fn alice() -> KafkaConfig {
    scram("alice", "alice-secret", &certs::ca())
}

/// Connects a socket for `client_id` (subscribed to `topics`), expecting it to fail; returns the
/// error's text and how long failing took.
async fn failed_connect(config: KafkaConfig, topics: &[String], group: &str) -> (String, Duration) {
    let options = SocketOptions::new(secure_name("client"))
        .topics(topics.iter().cloned())
        .group(group);
    support::failed_connect(Duration::from_secs(60), async move {
        provider(config).connect(options).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_scram_publishes_consumes_and_answers_requests() {
    let topic = secure_name("readings");
    let (reader, seen) = support::answering_reader(&topic);
    let consumer = reader
        .group(secure_name("readers"))
        .client_id(secure_name("reader"))
        .socket_provider(provider(alice()));
    let running = support::run_in_background(consumer).await;

    let connection = provider(alice())
        .connect(SocketOptions::new(secure_name("writer")).group(secure_name("writers")))
        .await
        .expect("alice connects over TLS with SCRAM");
    support::publish_and_request_over_tls(
        connection,
        &topic,
        Duration::from_secs(30),
        &seen,
        running,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_run_within_seconds_naming_the_broker_and_authentication() {
    let config = scram("alice", "not-alice-secret", &certs::ca());
    let broker = config.broker();
    let app = test_app(Config::default())
        .socket_provider(provider(config))
        .add_consumer("intruder", [secure_name("readings")], || async {});
    let started = Instant::now();
    let text = support::failed_run(app, Duration::from_secs(60)).await;
    assert!(text.contains(&broker), "names the broker: {text}");
    assert!(
        text.to_lowercase().contains("authentication"),
        "says authentication: {text}"
    );
    assert!(!text.contains("not-alice-secret"), "no password: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_tls_on_the_tls_listener_fails_clearly() {
    let mut config = alice();
    config
        .properties
        .insert("security.protocol".into(), "SASL_PLAINTEXT".into());
    config.properties.remove("ssl.ca.location");
    let (text, took) = failed_connect(config, &[], &secure_name("g")).await;
    assert!(text.contains("security.protocol"), "{text}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_broker_certificate_fails_clearly() {
    let config = scram("alice", "alice-secret", &certs::other_ca());
    let (text, took) = failed_connect(config, &[], &secure_name("g")).await;
    let lower = text.to_lowercase();
    assert!(
        lower.contains("tls") && lower.contains("certificate"),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_read_access_fails_start_up_naming_the_topic() {
    // alice creates the topic; bob may write it but not read it.
    let topic = secure_name("orders");
    let owner = provider(alice())
        .connect(SocketOptions::new(secure_name("owner")).group(secure_name("owners")))
        .await
        .expect("alice connects");
    owner
        .socket
        .publish(&SpaMessage::new(topic.clone(), "exists"))
        .await
        .expect("alice publishes");
    owner.socket.close().await.expect("close");

    let bob = scram("bob", "bob-secret", &certs::ca());
    let (text, took) =
        failed_connect(bob, std::slice::from_ref(&topic), &secure_name("bobs")).await;
    assert!(text.contains(&topic), "names the topic: {text}");
    assert!(text.to_lowercase().contains("authoriz"), "{text}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_access_to_its_group_fails_start_up_naming_the_group() {
    let topic = secure_name("orders");
    let group = format!("elsewhere.{}", secure_name("g"));
    let (text, took) = failed_connect(alice(), std::slice::from_ref(&topic), &group).await;
    assert!(text.contains(&group), "names the group: {text}");
    assert!(text.to_lowercase().contains("authoriz"), "{text}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_acls_refuse_fails_with_an_authorization_error() {
    let connection = provider(alice())
        .connect(SocketOptions::new(secure_name("writer")).group(secure_name("writers")))
        .await
        .expect("alice connects");
    let forbidden = format!("elsewhere.{}", secure_name("t"));
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        connection
            .socket
            .publish(&SpaMessage::new(forbidden.clone(), "no")),
    )
    .await
    .expect("publish does not hang")
    .expect_err("refused");
    let text = error.to_string();
    println!("what the user sees: {text}");
    assert!(text.to_lowercase().contains("authoriz"), "{text}");
    // Refused for good: never retried (a handler failing with it is dead-lettered at once).
    assert!(matches!(error, Error::Refused { .. }), "{error:?}");
    assert!(error.is_permanent());
    connection.socket.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_with_an_unsecured_jwt_publishes_and_consumes() {
    // The URL form, as a user would write it.
    let url = format!(
        "kafka://{}?security.protocol=SASL_SSL&sasl.mechanism=OAUTHBEARER\
         &enable.sasl.oauthbearer.unsecure.jwt=true&sasl.oauthbearer.config=principal%3Dalice\
         &ssl.ca.location={}",
        support::kafka::secure_bootstrap(),
        certs::ca().display()
    );
    let config = KafkaConfig::from_url(&url).expect("valid URL");
    let topic = secure_name("tokens");
    let connection = provider(config)
        .connect(
            SocketOptions::new(secure_name("bearer"))
                .group(secure_name("bearers"))
                .topics([topic.clone()]),
        )
        .await
        .expect("alice connects with a token");
    let mut inbox = connection.inbox;
    connection
        .socket
        .publish(&SpaMessage::new(topic.clone(), "token"))
        .await
        .expect("publish");
    let payloads = support::next_payloads(&mut inbox, 1, Duration::from_secs(30)).await;
    let message = SpaMessage::from_json(&payloads[0]).expect("a spa-dat message");
    assert_eq!(message.payload_str().expect("utf-8"), "token");
    connection.socket.close().await.expect("close");
}
