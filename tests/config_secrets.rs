//! Secrets never appear in `Debug` output or in configuration errors.

use spa_dat::socket::kafka::KafkaConfig;
use spa_dat::socket::mqtt::MqttConfig;
use spa_dat::{Config, SocketConfig};

const SECRETS: [&str; 4] = [
    "mqtt-pa55",
    "sasl-pa55",
    "oidc-client-s3cret",
    "keystore-pa55",
];

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "`{secret}` shown in: {text}");
    }
}

#[test]
fn debug_output_of_configs_hides_passwords_and_sasl_secrets() {
    let mut mqtt = MqttConfig::new("broker", 8883);
    mqtt.username = Some("user".into());
    mqtt.password = Some("mqtt-pa55".into());
    let text = format!("{mqtt:?}");
    assert_no_secret(&text);
    assert!(text.contains("user") && text.contains("***"), "{text}");

    let mut kafka = KafkaConfig::new("broker:9093");
    for (key, value) in [
        ("sasl.username", "user"),
        ("sasl.password", "sasl-pa55"),
        ("sasl.oauthbearer.client.secret", "oidc-client-s3cret"),
        ("ssl.keystore.password", "keystore-pa55"),
    ] {
        kafka.properties.insert(key.into(), value.into());
    }
    let text = format!("{kafka:?}");
    assert_no_secret(&text);
    assert!(
        text.contains("sasl.username") && text.contains("user"),
        "{text}"
    );

    // Through the whole application config, as a user would log it.
    let config = Config {
        bus: SocketConfig::Kafka(kafka),
        ..Config::default()
    };
    assert_no_secret(&format!("{config:?}"));
    assert_no_secret(&format!("{config:#?}"));
}

#[test]
fn url_errors_hide_passwords_and_sasl_secrets() {
    for url in [
        "mqtts://user:mqtt-pa55@broker:8883?qos=7",
        "mqtt://user:mqtt-pa55@broker?unknown=1",
        "mqtt://user:mqtt-pa55@broker?ca_file=/ca.pem",
        "kafka://broker:9093?sasl.password=sasl-pa55&partitions=many",
        "kafka://broker:9093?sasl.oauthbearer.client.secret=oidc-client-s3cret&nope=1",
        "kafka://?ssl.keystore.password=keystore-pa55",
        "nats://user:mqtt-pa55@broker",
    ] {
        let error = SocketConfig::from_url(url).expect_err(url).to_string();
        assert_no_secret(&error);
        if error.contains("bad bus URL") {
            assert!(error.contains("***"), "the URL is shown redacted: {error}");
        }
    }
}
