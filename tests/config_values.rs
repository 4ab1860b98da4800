//! Configuration values out of range are rejected with an error naming the key, in every form a
//! user writes them: URL, TOML, environment.

use spa_dat::config::SocketConfig;
use spa_dat::socket::memory::MemoryConfig;
use spa_dat::Config;

fn url_error(url: &str) -> String {
    match SocketConfig::from_url(url) {
        Ok(config) => panic!("`{url}` accepted as {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn toml_error(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn kafka_url_values_out_of_range_name_their_key() {
    for (url, key) in [
        ("kafka://h:9092?partitions=4294967297", "partitions"),
        ("kafka://h:9092?partitions=0", "partitions"),
        ("kafka://h:9092?replication=-1", "replication"),
        ("kafka://h:9092?connect_timeout_ms=-1", "connect_timeout_ms"),
        (
            "kafka://h:9092?publish_timeout_ms=18446744073709551615",
            "publish_timeout_ms",
        ),
        ("kafka://h:9092?create_topics=maybe", "create_topics"),
    ] {
        let error = url_error(url);
        assert!(error.contains(key), "{url}: {error}");
    }
    let SocketConfig::Kafka(config) =
        SocketConfig::from_url("kafka://h:9092?create_topics=no").expect("valid")
    else {
        panic!("not Kafka")
    };
    assert!(!config.create_topics);
    let SocketConfig::Kafka(config) =
        SocketConfig::from_url("kafka://h:9092?create_topics=yes").expect("valid")
    else {
        panic!("not Kafka")
    };
    assert!(config.create_topics, "`yes` is true, not silently false");
}

#[test]
fn mqtt_url_values_out_of_range_name_their_key() {
    for (url, key) in [
        ("mqtt://h?qos=300", "qos"),
        ("mqtt://h?inflight=70000", "inflight"),
        ("mqtt://h?keepalive=70000", "keepalive"),
        ("mqtt://h?publish_timeout_ms=-5", "publish_timeout_ms"),
        (
            "mqtt://h?connect_timeout_ms=18446744073709551615",
            "connect_timeout_ms",
        ),
        ("mqtt://h?max_packet_size=0", "max_packet_size"),
    ] {
        let error = url_error(url);
        assert!(error.contains(key), "{url}: {error}");
    }
}

#[test]
fn toml_values_out_of_range_name_their_key() {
    for (text, key) in [
        ("[bus]\ntransport = \"kafka\"\nbootstrap_servers = \"h:9092\"\ntopic_partitions = 0", "topic_partitions"),
        ("[bus]\ntransport = \"kafka\"\nbootstrap_servers = \"h:9092\"\nconnect_timeout_ms = 18446744073709551615", "connect_timeout_ms"),
        ("[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nqos = 3", "qos"),
        ("[bus]\ntransport = \"mqtt\"\nhost = \"h\"\npublish_timeout_ms = 0", "publish_timeout_ms"),
        ("[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nkeepalive_secs = 70000", "keepalive"),
        ("request_timeout_ms = 18446744073709551615", "request_timeout_ms"),
        ("shutdown_grace_ms = 18446744073709551615", "shutdown_grace_ms"),
    ] {
        let error = toml_error(text);
        assert!(error.contains(key), "{text}: {error}");
    }
    let config = Config::from_toml(
        "[bus]\ntransport = \"kafka\"\nbootstrap_servers = \"h:9092\"\ntopic_partitions = 4",
    )
    .expect("valid");
    assert!(matches!(config.bus, SocketConfig::Kafka(ref kafka) if kafka.topic_partitions == 4));
    let config =
        Config::from_toml("[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nqos = 2").expect("valid");
    assert!(matches!(config.bus, SocketConfig::Mqtt(ref mqtt) if mqtt.qos == 2));
}

#[test]
fn the_environment_forms_are_checked_too() {
    // One test changes the environment, so the variables do not race with other tests here.
    let set = |key: &str, value: &str| unsafe_free_set(key, value);
    set("SPA_DAT_URL", "kafka://h:9092?partitions=0");
    let error = Config::from_env().expect_err("rejected").to_string();
    assert!(error.contains("partitions"), "{error}");
    set("SPA_DAT_URL", "mqtt://h:1883?qos=1");
    set("SPA_DAT_REQUEST_TIMEOUT_MS", "-1");
    let error = Config::from_env().expect_err("rejected").to_string();
    assert!(error.contains("SPA_DAT_REQUEST_TIMEOUT_MS"), "{error}");
    set("SPA_DAT_REQUEST_TIMEOUT_MS", "18446744073709551615");
    let error = Config::from_env().expect_err("rejected").to_string();
    assert!(error.contains("SPA_DAT_REQUEST_TIMEOUT_MS"), "{error}");
    set("SPA_DAT_REQUEST_TIMEOUT_MS", "2500");
    let config = Config::from_env().expect("valid");
    assert_eq!(config.request_timeout_ms, 2500);
    assert!(matches!(config.bus, SocketConfig::Mqtt(_)));
}

/// `std::env::set_var` is safe on edition 2021; kept in one place for the 2024 edition.
fn unsafe_free_set(key: &str, value: &str) {
    std::env::set_var(key, value);
}

#[test]
fn the_default_memory_config_is_the_bus_memory_urls_name() {
    let SocketConfig::Memory(from_url) = SocketConfig::from_url("memory://").expect("valid") else {
        panic!("not memory")
    };
    assert_eq!(MemoryConfig::default(), from_url);
    assert_eq!(
        Config::from_toml("[bus]\ntransport = \"memory\"")
            .expect("valid")
            .bus,
        SocketConfig::Memory(MemoryConfig::default())
    );
}

#[test]
fn mqtt_5_and_bare_payloads_are_chosen_by_configuration_alone() {
    use spa_dat::socket::mqtt::MqttVersion;
    use spa_dat::socket::WireFormat;
    for text in [
        "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nversion = 5\nwire = \"raw\"",
        "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nversion = \"5.0\"\nwire = \"raw\"",
    ] {
        let config = Config::from_toml(text).expect("valid");
        assert!(
            matches!(config.bus, SocketConfig::Mqtt(ref mqtt) if mqtt.version == MqttVersion::V5 && mqtt.wire == WireFormat::Raw),
            "{text}: {:?}",
            config.bus
        );
    }
    let config =
        Config::from_toml("[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nversion = \"3.1.1\"")
            .expect("valid");
    assert!(
        matches!(config.bus, SocketConfig::Mqtt(ref mqtt) if mqtt.version == MqttVersion::V311 && mqtt.wire == WireFormat::Envelope)
    );
    let config = Config::from_toml(
        "[bus]\ntransport = \"kafka\"\nbootstrap_servers = \"h:9092\"\nwire = \"raw\"",
    )
    .expect("valid");
    assert!(matches!(config.bus, SocketConfig::Kafka(ref kafka) if kafka.wire == WireFormat::Raw));
    for (text, says) in [
        (
            "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nversion = 6",
            "3.1.1 or 5",
        ),
        (
            "[bus]\ntransport = \"mqtt\"\nhost = \"h\"\nwire = \"json\"",
            "`envelope` or `raw`",
        ),
    ] {
        let error = toml_error(text);
        assert!(error.contains(says), "{text}: {error}");
    }
    assert!(url_error("mqtt://h?version=4.5").contains("3.1.1 or 5"));
    assert!(url_error("kafka://h:9092?wire=bare").contains("`envelope` or `raw`"));
}
