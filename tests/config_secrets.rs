//! Secrets never appear in `Debug` output or in configuration errors.

use proptest::strategy::Strategy;
use spa_dat::config::SocketConfig;
use spa_dat::socket::kafka::KafkaConfig;
use spa_dat::socket::mqtt::MqttConfig;
use spa_dat::Config;

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

/// The pieces of `secret` between the characters that end a URL's user info, a query value or
/// a fragment: none of them may be shown, not just the whole.
fn fragments(secret: &str) -> Vec<&str> {
    secret
        .split(['/', '?', '#', '@', ':', '%', '&'])
        .filter(|piece| piece.len() >= 3)
        .collect()
}

fn assert_hidden(secret: &str, shown: &str) {
    assert!(!shown.contains(secret), "`{secret}` shown in: {shown}");
    for piece in fragments(secret) {
        assert!(
            !shown.contains(piece),
            "`{piece}` of `{secret}` shown in: {shown}"
        );
    }
}

#[test]
fn passwords_with_url_delimiters_are_hidden_in_url_errors() {
    for (url, secret) in [
        ("mqtt://user:s3cr/3t-XYZ@host", "s3cr/3t-XYZ"),
        ("mqtt://user:s3cr?3t-XYZ@host", "s3cr?3t-XYZ"),
        ("mqtt://user:s3cr#3t-XYZ@host", "s3cr#3t-XYZ"),
        (
            "mqtts://user:s3c@r/3t?-X#YZ:9@host:8883",
            "s3c@r/3t?-X#YZ:9",
        ),
        ("mqtt://user:s3cr3t-XYZ:1234@host?qos=x", "s3cr3t-XYZ:1234"),
        ("mqtt://user:1234/s3cr3t-XYZ@host", "1234/s3cr3t-XYZ"),
        ("mqtt://user:1234#s3cr3t-XYZ@host", "1234#s3cr3t-XYZ"),
        (
            "mqtt://user:s3cr3t-XYZ@host?client_id=a@b&qos=x",
            "s3cr3t-XYZ",
        ),
        (
            "kafka://broker:9092?sasl.password=s3cr?3t@XYZ&nope=1",
            "s3cr?3t@XYZ",
        ),
        (
            "kafka://broker:9092?sasl.password=s3cr#3t-XYZ&nope=1",
            "s3cr#3t-XYZ",
        ),
        ("kafka://user:s3cr3t-XYZ@broker:9092", "s3cr3t-XYZ"),
        ("user:s3cr3t-XYZ@host:1883", "s3cr3t-XYZ"),
        ("nats://user:s3cr/3t-XYZ@host", "s3cr/3t-XYZ"),
    ] {
        let error = SocketConfig::from_url(url).expect_err(url);
        let (display, debug) = (error.to_string(), format!("{error:?}"));
        assert_hidden(secret, &display);
        assert_hidden(secret, &debug);
        assert!(
            display.contains("bad bus URL"),
            "says what is wrong: {display}"
        );
        assert!(
            display.contains("***"),
            "the URL is shown redacted: {display}"
        );
    }
}

#[test]
fn toml_errors_hide_values_yet_say_what_is_wrong() {
    for (toml, secret, says) in [
        // A syntax error: toml quotes the offending line.
        ("password = s3cr3t-XYZ\n", "s3cr3t-XYZ", "line 1"),
        (
            "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\npassword = s3cr3t-XYZ\n",
            "s3cr3t-XYZ",
            "line 4",
        ),
        (
            "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\npassword = \"s3cr3t-XYZ\n",
            "s3cr3t-XYZ",
            "line 4",
        ),
        // An unknown field that looks secret.
        ("passwd = \"s3cr3t-XYZ\"\n", "s3cr3t-XYZ", "unknown field `passwd`"),
        (
            "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\npasswd = \"s3cr3t-XYZ\"\n",
            "s3cr3t-XYZ",
            "unknown field `passwd`",
        ),
        // A value of the wrong type: serde quotes it.
        (
            "request_timeout_ms = \"s3cr3t-XYZ\"\n",
            "s3cr3t-XYZ",
            "`request_timeout_ms`",
        ),
        (
            "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\npassword = 987654321\n",
            "987654321",
            "invalid type: integer, expected a string",
        ),
        (
            "[bus]\ntransport = \"kafka\"\nbootstrap_servers = \"h\"\n[bus.properties]\n\"sasl.password\" = 987654321\n",
            "987654321",
            "invalid type",
        ),
    ] {
        let error = Config::from_toml(toml).expect_err(toml);
        let (display, debug) = (error.to_string(), format!("{error:?}"));
        assert_hidden(secret, &display);
        assert_hidden(secret, &debug);
        assert!(display.contains(says), "`{says}` missing from: {display}");
        assert!(display.contains("line "), "a position: {display}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 2_000,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Whatever a password holds, an error about its URL never shows it.
    #[test]
    fn url_errors_never_show_a_password(
        pieces in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("zq[0-9]{4}").expect("regex"),
                proptest::sample::select(vec!["/", "?", "#", "@", ":", "%", "%4", "%41", "&", "="])
                    .prop_map(str::to_owned),
            ],
            1..8,
        ),
        scheme in proptest::sample::select(vec!["mqtt", "mqtts", "kafka", "nats"]),
        query in proptest::sample::select(vec!["", "?qos=9", "?nope=1", "?client_id=a@b", "/x?qos=1"]),
    ) {
        let password: String = pieces.concat();
        let url = format!("{scheme}://user:{password}@host:1883{query}");
        let tokens: Vec<&str> = pieces.iter().map(String::as_str).filter(|p| p.starts_with("zq")).collect();
        let shown = match SocketConfig::from_url(&url) {
            Err(error) => format!("{error} {error:?}"),
            Ok(config) => format!("{config:?}"),
        };
        for token in tokens {
            proptest::prop_assert!(!shown.contains(token), "`{}` of `{}` shown in: {}", token, password, shown);
        }
    }
}
