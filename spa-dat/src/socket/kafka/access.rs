//! Checks at subscription time that the broker lets this client use its consumer group and read
//! each topic. Without it a consumer the ACLs refuse joins its group and then sits idle while
//! librdkafka retries the refused fetches: the error surfaces only in logs, after start-up.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use std::sync::Arc;

use super::context::is_authorization;
use super::context::{refused_group, Failures, SocketContext};

const POLL: Duration = Duration::from_millis(50);

/// Fails with a message naming the group or topic the broker refuses this client; `Ok` also when
/// the check could not finish within `timeout` (the consumer then reports what it finds) unless
/// `strict` (a deployment check: not confirmed is a failure).
///
/// A throw-away consumer of `group` that never joins it: fetching the group's committed offsets
/// needs the group's DESCRIBE (implied by READ), and one fetch at the end of partition 0 needs
/// the topic's READ (ACLs are per topic, so one partition answers for all). Topics are checked
/// one at a time because librdkafka's fetch errors do not name their topic. `config` is the
/// probe's (`properties::Client::AccessProbe`).
pub(super) fn verify_read_access(
    config: ClientConfig,
    broker: &str,
    group: &str,
    topics: &[String],
    timeout: Duration,
    strict: bool,
) -> Result<(), String> {
    // Its own failures: what it finds is about this group and these topics only.
    let failures = Arc::new(Failures::default());
    let context = SocketContext {
        group: Some(group.to_owned()),
        ..SocketContext::new(&failures, broker)
    };
    let probe: BaseConsumer<SocketContext> = config
        .create_with_context(context)
        .map_err(|e| format!("checking access: {e}"))?;
    let checked = check(&probe, &failures, group, topics, timeout, strict);
    // Closing a client waits for its threads (~100 ms): not on the caller's time.
    std::thread::spawn(move || drop(probe));
    checked
}

fn check(
    probe: &BaseConsumer<SocketContext>,
    failures: &Failures,
    group: &str,
    topics: &[String],
    timeout: Duration,
    strict: bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        partitions.add_partition(topic, 0);
    }
    // A refused group fails FindCoordinator, which librdkafka retries until the call times
    // out and reports through the error callback: short calls, checking it between them.
    loop {
        // A consumer's error callbacks run when it is polled; nothing is assigned yet.
        let _ = probe.poll(Duration::ZERO);
        if let Some(permanent) = failures.permanent() {
            return Err(permanent);
        }
        match probe.committed_offsets(partitions.clone(), POLL * 4) {
            Ok(list) => {
                for element in list.elements() {
                    if let Err(error) = element.error() {
                        if is_authorization(&error) {
                            return Err(refused_topic(element.topic(), &error));
                        }
                    }
                }
                break;
            }
            Err(error) if is_authorization(&error) => {
                return Err(refused_group(group, &code_of(&error)));
            }
            Err(error) if Instant::now() >= deadline && strict => {
                return Err(format!(
                    "access to consumer group `{group}` not confirmed within {timeout:?} (connect_timeout_ms): {error}"
                ));
            }
            Err(error) if Instant::now() >= deadline => {
                tracing::warn!(%group, %error, "consumer group access not confirmed within {timeout:?}; subscribing anyway");
                return Ok(());
            }
            Err(_) => {}
        }
    }
    for topic in topics {
        // The end as a number: assigned as `Offset::End`, librdkafka resolves it on a timer and
        // the first fetch came a second later (measured: 1.07 s against 64 ms).
        let end = match probe.fetch_watermarks(topic, 0, timeout) {
            Ok((_, high)) => Offset::Offset(high),
            Err(error) if is_authorization(&error) => return Err(refused_topic(topic, &error)),
            Err(_) => Offset::End,
        };
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, end)
            .map_err(|e| format!("checking access to `{topic}`: {e}"))?;
        probe
            .assign(&assignment)
            .map_err(|e| format!("checking access to `{topic}`: {e}"))?;
        loop {
            if let Some(permanent) = failures.permanent() {
                return Err(permanent);
            }
            if Instant::now() >= deadline && strict {
                return Err(format!(
                    "read access to `{topic}` not confirmed within {timeout:?} (connect_timeout_ms)"
                ));
            }
            if Instant::now() >= deadline {
                tracing::warn!(%topic, "read access not confirmed within {timeout:?}; subscribing anyway");
                return Ok(());
            }
            match probe.poll(POLL) {
                // Data or the end of the partition: a fetch succeeded.
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(error)) if is_authorization(&error) => {
                    return Err(refused_topic(topic, &error));
                }
                Some(Err(error))
                    if error.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    // Not there yet (create_topics = false): nothing to check until it is.
                    break;
                }
                Some(Err(error)) => tracing::debug!(%topic, %error, "access check"),
                None => {}
            }
        }
    }
    Ok(())
}

fn code_of(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => error.to_string(),
    }
}

fn refused_topic(topic: &str, error: &KafkaError) -> String {
    format!(
        "not authorized to read topic `{topic}` ({}): grant READ on the topic to this client's principal",
        code_of(error)
    )
}
