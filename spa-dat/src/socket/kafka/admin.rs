//! Topics: which exist, creating the missing ones, deleting reply topics, and what a Kafka topic
//! name may be.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;

use super::blocking::blocking;
use super::config::KafkaConfig;
use super::context::{describe, kafka_error, kafka_failure, Failures, SocketContext};
use crate::error::{Error, Result};

/// The topics of the cluster `client` reaches, fetched within `timeout`; fails as soon as
/// librdkafka reports an error no retry can fix (credentials, certificates, protocol).
pub(super) fn existing_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    failures: &Failures,
    timeout: Duration,
) -> std::result::Result<BTreeSet<String>, String> {
    // Short attempts first, so a permanent error ends the wait within moments instead of at
    // the timeout; each one twice as long as the last (up to 2 s), so a slow (remote, TLS)
    // cluster whose answer takes longer than the first still gets one.
    let mut attempt = Duration::from_millis(250);
    let deadline = Instant::now() + timeout;
    loop {
        attempt = attempt.min(deadline.saturating_duration_since(Instant::now()));
        match client.fetch_metadata(None, Timeout::After(attempt)) {
            Ok(metadata) => {
                return Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.name().to_owned())
                    .collect())
            }
            Err(error) => {
                if let Some(permanent) = failures.permanent() {
                    return Err(permanent);
                }
                if Instant::now() >= deadline {
                    let last = failures
                        .last()
                        .map_or_else(String::new, |l| format!("; last error: {l}"));
                    return Err(format!(
                        "no answer within {timeout:?}: {}{last}",
                        describe(&error)
                    ));
                }
                attempt = (attempt * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Waits until `client`'s metadata lists every one of `topics` with its partitions.
fn await_topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
    timeout: Duration,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    for topic in topics {
        loop {
            let listed = client
                .fetch_metadata(Some(topic), Timeout::After(timeout))
                .map_err(|e| format!("{topic}: {}", describe(&e)))?
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if listed {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{topic}: created, but not listed by the cluster within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// A Kafka topic name may only use `[a-zA-Z0-9._-]`, at most 249 of them.
pub(super) fn validate_topic(topic: &str) -> Result<()> {
    topic_name_problem(topic).map_or(Ok(()), |reason| Err(Error::config(reason)))
}

/// Why `topic` is not a Kafka topic name, if it is not.
pub(super) fn topic_name_problem(topic: &str) -> Option<String> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!valid).then(|| {
        format!(
            "`{}` is not a Kafka topic name: use at most 249 letters, digits, `.`, `_`, `-` (Kafka has no `+`/`#` wildcards)",
            crate::socket::shortened(&topic.escape_debug().to_string())
        )
    })
}

pub(super) fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Creates `topics` when missing; one already there is fine.
pub(super) async fn create_topics(
    admin: &AdminClient<SocketContext>,
    config: &KafkaConfig,
    topics: &[String],
    partitions: i32,
) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let broker = config.broker();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                partitions,
                TopicReplication::Fixed(config.topic_replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| kafka_failure(&broker, "create topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka_error(
                    &broker,
                    "create topics",
                    format!("{topic}: {code}"),
                ))
            }
        }
    }
    Ok(())
}

/// Creates `topics` when missing, then waits until `consumer`'s metadata lists them: a consumer
/// may hold metadata from before they existed, and librdkafka reports them missing to it until
/// its next refresh, minutes later. Not listed in time fails `operation`.
pub(super) async fn create_topics_for(
    admin: &AdminClient<SocketContext>,
    config: &KafkaConfig,
    consumer: &Arc<StreamConsumer<SocketContext>>,
    topics: &[String],
    partitions: i32,
    operation: &'static str,
) -> Result<()> {
    create_topics(admin, config, topics, partitions).await?;
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let (watcher, names) = (Arc::clone(consumer), topics.to_vec());
    blocking(&config.broker(), operation, move || {
        await_topics(watcher.client(), &names, timeout)
    })
    .await
}

/// Deletes `topics` (reply topics: only the socket that created them uses them), waiting up to
/// 5 s for the broker.
pub(super) async fn delete_topics(
    admin: &AdminClient<SocketContext>,
    topics: &[&str],
) -> std::result::Result<(), KafkaError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    admin.delete_topics(topics, &options).await.map(drop)
}
