//! The librdkafka properties of every client a socket creates, built in one place and in one
//! order: the socket's settings, then the user's [`KafkaConfig::properties`] (which override
//! them), then the few settings the socket's own code depends on (which they cannot).

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use super::config::KafkaConfig;

/// How often a group consumer's librdkafka reports statistics: the brokers' states for
/// readiness (not ready within 2 s of losing the brokers), each partition's lag for metrics.
pub(super) const STATISTICS_INTERVAL_MS: &str = "500";

/// A librdkafka client of a socket.
#[derive(Debug, Clone, Copy)]
pub(super) enum Client<'a> {
    /// Publishes; idempotent, `acks=all`.
    Producer,
    /// Publishes in transactions as `transactional_id` (see `transaction`).
    TransactionalProducer { transactional_id: &'a str },
    /// Lists, creates and deletes topics; its client id is `{client_id}-admin`.
    Admin,
    /// The member of `group` whose records feed the inbox (see `offsets`); a transactional
    /// socket's reads only committed records.
    GroupConsumer { group: &'a str, transactional: bool },
    /// Reads replies in `group`, assigned its topics directly (see `replies`); a
    /// transactional socket's reads only committed replies.
    ReplyConsumer { group: &'a str, transactional: bool },
    /// The throw-away consumer that checks read access in `group` (see `access`).
    AccessProbe { group: &'a str },
}

/// The properties of `client` for a socket of `config` named `client_id`.
pub(super) fn client_config(
    config: &KafkaConfig,
    client_id: &str,
    client: Client<'_>,
) -> ClientConfig {
    let mut settings = ClientConfig::new();
    settings.set("bootstrap.servers", &config.bootstrap_servers);
    match client {
        Client::Admin => settings.set("client.id", format!("{client_id}-admin")),
        _ => settings.set("client.id", client_id),
    };
    match client {
        Client::Producer | Client::TransactionalProducer { .. } => {
            settings
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "1")
                .set("message.timeout.ms", config.publish_timeout_ms.to_string());
            if let Client::TransactionalProducer { .. } = client {
                // At least as long as a record may wait for its acknowledgement (librdkafka
                // refuses a message timeout above it); an open transaction of a process killed
                // without a successor of its id holds `read_committed` readers this long.
                settings.set(
                    "transaction.timeout.ms",
                    config.publish_timeout_ms.max(10_000).to_string(),
                );
            }
        }
        Client::Admin => {}
        Client::GroupConsumer { group, .. } | Client::AccessProbe { group } => {
            consumer_settings(&mut settings, group, config);
        }
        Client::ReplyConsumer { group, .. } => {
            consumer_settings(&mut settings, group, config);
            settings.set("enable.auto.commit", "true");
        }
    }
    for (key, value) in &config.properties {
        settings.set(key, value);
    }
    fixed_settings(&mut settings, client);
    // rdkafka derives librdkafka's level from the `log` crate's, which is off unless a
    // `log` logger is installed; the socket context sends the lines to `tracing` and
    // needs INFO to see a listener hang up (see `context::Failures`).
    let level = if config.properties.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Info
    };
    settings.set_log_level(level);
    settings
}

/// What every consumer starts from; the user's properties may change any of it.
fn consumer_settings(settings: &mut ClientConfig, group: &str, config: &KafkaConfig) {
    settings
        .set("group.id", group)
        .set("enable.auto.offset.store", "false")
        // The group consumer commits itself at this interval (see `progress`).
        .set("auto.commit.interval.ms", "5000")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("isolation.level", config.isolation.as_str())
        // librdkafka pauses fetching for a second once its queue passes queued.min.messages;
        // a consumer that drains fast would then sit idle (measured: 0.8 s of 1.25 s).
        .set("fetch.queue.backoff.ms", "10");
}

/// Set after the user's properties: the only ones a user cannot override, because the
/// socket's own code relies on them.
fn fixed_settings(settings: &mut ClientConfig, client: Client<'_>) {
    match client {
        Client::TransactionalProducer { transactional_id } => {
            settings.set("transactional.id", transactional_id);
        }
        // A `transactional.id` of the bus names its transactional sockets' producers only:
        // another client with it would refuse every publish outside a transaction.
        _ => {
            settings.remove("transactional.id");
        }
    }
    match client {
        Client::Producer | Client::Admin | Client::TransactionalProducer { .. } => {}
        Client::GroupConsumer { transactional, .. } => {
            if transactional {
                // Never the input of an aborted transaction, and the committed offsets read at
                // assignment wait for a previous owner's transaction to end (KIP-447).
                settings.set("isolation.level", "read_committed");
            }
            settings
                // Readiness and the lag metrics come from the statistics (see
                // `context::GroupHealth`).
                .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
                // It commits offsets with their metadata itself, every auto.commit.interval.ms:
                // librdkafka's auto-commit skips a partition whose offset did not move, so the
                // metadata of what finished behind a stuck record would never reach the broker.
                .set("enable.auto.commit", "false");
        }
        Client::ReplyConsumer { transactional, .. } => {
            // No handler finishes a reply: each is stored as read.
            settings.set("enable.auto.offset.store", "true");
            if transactional {
                // Never the reply of an aborted transaction (a responder's that is handled
                // again answers again).
                settings.set("isolation.level", "read_committed");
            }
        }
        Client::AccessProbe { group } => {
            settings
                // The group the check is about, whatever `group.id` the user set.
                .set("group.id", group)
                // It never joins the group: it must commit nothing to it.
                .set("enable.auto.commit", "false")
                // The end of a partition counts as a successful fetch.
                .set("enable.partition.eof", "true")
                .set("fetch.wait.max.ms", "10");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        let mut config = KafkaConfig::new("k:9092");
        for (key, value) in [
            ("acks", "1"),
            ("group.id", "theirs"),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
            ("statistics.interval.ms", "60000"),
            ("auto.commit.interval.ms", "1000"),
        ] {
            config.properties.insert(key.into(), value.into());
        }
        config
    }

    #[test]
    fn the_users_properties_override_the_sockets_settings() {
        let config = config();
        let producer = client_config(&config, "app", Client::Producer);
        assert_eq!(producer.get("acks"), Some("1"));
        assert_eq!(producer.get("linger.ms"), Some("1"));
        let group = client_config(
            &config,
            "app",
            Client::GroupConsumer {
                group: "g",
                transactional: false,
            },
        );
        assert_eq!(group.get("group.id"), Some("theirs"));
        assert_eq!(group.get("auto.commit.interval.ms"), Some("1000"));
        let admin = client_config(&config, "app", Client::Admin);
        assert_eq!(admin.get("client.id"), Some("app-admin"));
        assert_eq!(admin.get("acks"), Some("1"));
    }

    #[test]
    fn what_the_sockets_code_relies_on_is_not_overridden() {
        let config = config();
        let group = client_config(
            &config,
            "app",
            Client::GroupConsumer {
                group: "g",
                transactional: false,
            },
        );
        assert_eq!(group.get("enable.auto.commit"), Some("false"));
        assert_eq!(
            group.get("statistics.interval.ms"),
            Some(STATISTICS_INTERVAL_MS)
        );
        let replies = client_config(
            &config,
            "app",
            Client::ReplyConsumer {
                group: "g-r",
                transactional: false,
            },
        );
        assert_eq!(replies.get("enable.auto.offset.store"), Some("true"));
        assert_eq!(replies.get("enable.auto.commit"), Some("true"));
        let probe = client_config(&config, "app", Client::AccessProbe { group: "g" });
        assert_eq!(probe.get("group.id"), Some("g"));
        assert_eq!(probe.get("enable.auto.commit"), Some("false"));
        assert_eq!(probe.get("enable.partition.eof"), Some("true"));
    }

    #[test]
    fn only_a_transactional_socket_s_producer_gets_the_transactional_id() {
        let mut config = config();
        config
            .properties
            .insert("transactional.id".into(), "pod-7".into());
        let producer = client_config(&config, "app", Client::Producer);
        assert_eq!(producer.get("transactional.id"), None);
        let group = client_config(
            &config,
            "app",
            Client::GroupConsumer {
                group: "g",
                transactional: true,
            },
        );
        assert_eq!(group.get("transactional.id"), None);
        assert_eq!(group.get("isolation.level"), Some("read_committed"));
        let transactional = client_config(
            &config,
            "app",
            Client::TransactionalProducer {
                transactional_id: "pod-7",
            },
        );
        assert_eq!(transactional.get("transactional.id"), Some("pod-7"));
    }
}
