//! The librdkafka client context of every client a socket owns (producer, admin, consumers):
//! librdkafka's logs and errors go to `tracing`, errors no retry can fix are kept for
//! `connect` to fail with, and handled offsets are committed before partitions are revoked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, TopicPartitionList};

use super::progress::{Progress, Scope};
use crate::error::Error;
use crate::socket::ReadySignal;

/// How often a listener must hang up on the first request before it counts as a wrong
/// `security.protocol` rather than a broker restarting (librdkafka logs a repeat within 30 s
/// only once).
const PROTOCOL_MISMATCH_REPEATS: u32 = 2;

/// An error librdkafka reported that retrying cannot fix, in words a user can act on.
#[derive(Default)]
pub(super) struct Failures {
    state: Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    permanent: Option<String>,
    protocol_mismatches: u32,
    last: Option<String>,
}

impl Failures {
    fn state(&self) -> std::sync::MutexGuard<'_, FailureState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first error no retry can fix, if one was reported.
    pub(super) fn permanent(&self) -> Option<String> {
        self.state().permanent.clone()
    }

    /// The latest error of any kind, for a timeout's message.
    pub(super) fn last(&self) -> Option<String> {
        self.state().last.clone()
    }

    fn keep(&self, state: &mut FailureState, permanent: Option<String>) -> Option<String> {
        if state.permanent.is_none() {
            state.permanent.clone_from(&permanent);
        }
        permanent
    }

    /// A log line of librdkafka: a listener that hangs up on the first request (ApiVersion)
    /// is a TLS listener reached without TLS. librdkafka reports it at INFO level only, as a
    /// disconnect, so its error callback never sees it.
    fn record_log(&self, facility: &str, message: &str) -> Option<String> {
        if facility != "FAIL" || !message.contains("in state APIVERSION_QUERY") {
            return None;
        }
        let mut state = self.state();
        state.last = Some(message.to_owned());
        state.protocol_mismatches += 1;
        let permanent = (state.protocol_mismatches >= PROTOCOL_MISMATCH_REPEATS).then(|| {
            format!(
                "the broker hung up on every first request: does security.protocol match its listener (SSL or SASL_SSL for a TLS port)? {message}"
            )
        });
        self.keep(&mut state, permanent)
    }

    /// An error of librdkafka's error callback; `group` is the client's consumer group.
    fn record(&self, error: &KafkaError, reason: &str, group: Option<&str>) -> Option<String> {
        let mut state = self.state();
        state.last = Some(reason.to_owned());
        let permanent = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                Some(format!(
                    "authentication failed (check sasl.mechanism, sasl.username and sasl.password): {reason}"
                ))
            }
            Some(RDKafkaErrorCode::SSL) => Some(format!(
                "TLS handshake failed (check ssl.ca.location against the broker's certificate and host name): {reason}"
            )),
            Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                Some(refused_group(group.unwrap_or("?"), reason))
            }
            _ => None,
        };
        self.keep(&mut state, permanent)
    }
}

/// What a user sees when the ACLs refuse this client its consumer group.
pub(super) fn refused_group(group: &str, detail: &str) -> String {
    format!("not authorized to use consumer group `{group}`: grant READ on the group ({detail})")
}

/// The context of a socket's clients.
pub(super) struct SocketContext {
    pub(super) failures: Arc<Failures>,
    /// The group consumer's progress; `None` for the other clients.
    pub(super) handled: Option<Arc<Progress>>,
    pub(super) broker: String,
    /// The consumer group of a consumer client.
    pub(super) group: Option<String>,
    /// The group consumer's readiness: assigned, brokers reachable.
    pub(super) health: Option<Arc<GroupHealth>>,
    /// A transactional socket's commit (see `transaction`), given the consumer's group
    /// metadata and the partitions being revoked (their progress ends with it): its group
    /// consumer's offsets go into transactions, not into commits.
    pub(super) commit_transaction: Option<CommitTransaction>,
}

/// Commits a transactional socket's transaction (see `transaction`).
pub(super) type CommitTransaction = Arc<
    dyn Fn(Option<rdkafka::consumer::ConsumerGroupMetadata>, &TopicPartitionList) + Send + Sync,
>;

/// What makes a group consumer ready: its partitions assigned (rebalances say) and a broker
/// connection up (librdkafka's statistics say, every `properties::STATISTICS_INTERVAL_MS`: a lost
/// broker shows up as transport failures, not as "all brokers down", within seconds).
pub(super) struct GroupHealth {
    assigned: AtomicBool,
    connected: AtomicBool,
    /// A broker was up once: only after that is a loss a lost connection (and its end a
    /// reconnect) rather than a start-up still connecting.
    was_up: AtomicBool,
    ready: ReadySignal,
    /// The bootstrap servers, the `broker` label of a counted reconnect.
    broker: String,
}

/// A group consumer's connection, lost or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionChange {
    Lost,
    Reconnected,
}

impl GroupHealth {
    pub(super) fn new(ready: ReadySignal, broker: &str) -> Self {
        GroupHealth {
            assigned: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            was_up: AtomicBool::new(false),
            ready,
            broker: broker.to_owned(),
        }
    }

    fn assigned(&self, assigned: bool) {
        if assigned {
            // Assigned by its group's coordinator: a broker was up, whether or not statistics
            // said so yet (the first come after `STATISTICS_INTERVAL_MS`; a broker lost before
            // them was not counted as lost, nor its return as a reconnect).
            self.was_up.store(true, Ordering::Release);
        }
        self.assigned.store(assigned, Ordering::Release);
        self.publish();
    }

    /// Whether a broker is up now; says what changed, if anything.
    fn connected(&self, up: bool) -> Option<ConnectionChange> {
        let was_up = if up {
            self.was_up.swap(true, Ordering::AcqRel)
        } else {
            self.was_up.load(Ordering::Acquire)
        };
        if self.connected.swap(up, Ordering::AcqRel) == up {
            return None;
        }
        self.publish();
        let change = match (up, was_up) {
            // Back after losing every broker: what MQTT counts as a reconnect.
            (true, true) => {
                tracing::info!(broker = %self.broker, "Kafka reconnected");
                crate::metrics::reconnected("kafka", &self.broker);
                ConnectionChange::Reconnected
            }
            (false, true) => {
                tracing::warn!(broker = %self.broker, "Kafka: no broker reachable; librdkafka keeps retrying");
                ConnectionChange::Lost
            }
            // Still connecting at start-up.
            _ => return None,
        };
        Some(change)
    }

    fn publish(&self) {
        self.ready
            .set(self.assigned.load(Ordering::Acquire) && self.connected.load(Ordering::Acquire));
    }
}

impl SocketContext {
    pub(super) fn new(failures: &Arc<Failures>, broker: &str) -> Self {
        SocketContext {
            failures: Arc::clone(failures),
            handled: None,
            broker: broker.to_owned(),
            group: None,
            health: None,
            commit_transaction: None,
        }
    }
}

impl ClientContext for SocketContext {
    // Only the group consumer asks for statistics.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(group) = self.group.as_deref() else {
            return;
        };
        if let Some(health) = &self.health {
            // Connected while any broker it talks to is up (librdkafka reconnects to the rest
            // itself); the coordinator's own connection is logical, listed again.
            let mut brokers = statistics
                .brokers
                .values()
                .filter(|broker| broker.source != "logical")
                .peekable();
            if brokers.peek().is_some() {
                health.connected(brokers.any(|broker| broker.state == "UP"));
            }
        }
        if !crate::metrics::enabled() {
            return;
        }
        for (topic, stats) in &statistics.topics {
            for partition in stats.partitions.values() {
                // -1 is librdkafka's "unknown" (nothing committed yet); unassigned partitions
                // are listed too, not desired.
                if partition.partition >= 0 && partition.desired && partition.consumer_lag >= 0 {
                    crate::metrics::kafka_lag(
                        topic,
                        partition.partition,
                        group,
                        partition.consumer_lag,
                    );
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let broker = &self.broker;
        if let Some(permanent) = self.failures.record_log(facility, message) {
            tracing::error!(%broker, "Kafka: {permanent}");
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", %broker, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", %broker, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", %broker, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", %broker, facility, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let broker = &self.broker;
        // Not an error: the read-access check asks for it (enable.partition.eof).
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::trace!(%broker, "Kafka: {reason}");
            return;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if let Some(health) = &self.health {
                health.connected(false);
            }
        }
        match self.failures.record(&error, reason, self.group.as_deref()) {
            Some(permanent) => tracing::error!(%broker, "Kafka: {permanent}"),
            None => tracing::warn!(%broker, %error, "Kafka: {reason}"),
        }
    }
}

impl ConsumerContext for SocketContext {
    // The revoked partitions' offsets and metadata are committed before they go; then their
    // progress ends (records finishing later do not count for the next owner). Asynchronous,
    // so the runtime thread polling the consumer does not wait: librdkafka finishes the
    // assignment change — and reads the next owner's start offsets — only once its
    // outstanding commits are done (`wait_commit_cnt` in rdkafka_assignment.c).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Some(progress), Rebalance::Revoke(revoked)) = (&self.handled, rebalance) {
            if let Some(commit_transaction) = &self.commit_transaction {
                // Synchronously, revoking under the same lock: the next owner reads the
                // offsets once this transaction ends.
                commit_transaction(consumer.group_metadata(), revoked);
            } else {
                if let Err(error) =
                    progress.commit(consumer, CommitMode::Async, Scope::Revoked(revoked))
                {
                    // Partitions lost rather than revoked: their next owner handles those again.
                    tracing::debug!(broker = %self.broker, error = %describe(&error), "offsets of revoked partitions not committed");
                }
                progress.revoke(revoked);
            }
        }
        if let (Some(health), Rebalance::Revoke(_)) = (&self.health, rebalance) {
            health.assigned(false);
        }
    }

    // A commit that failed (the coordinator moved, a rebalance) is sent again at the next
    // periodic commit, also when nothing changed since.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let (Err(error), Some(progress)) = (&result, &self.handled) {
            tracing::debug!(broker = %self.broker, error = %describe(error), "offset commit failed; sent again");
            progress.commit_failed(offsets);
        }
    }

    // Assigned (even no partitions: the group has more members than partitions): ready.
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Some(health), Rebalance::Assign(_)) = (&self.health, rebalance) {
            health.assigned(true);
        }
    }
}

pub(super) fn kafka_error(
    broker: &str,
    operation: &'static str,
    error: impl std::fmt::Display,
) -> Error {
    Error::Transport {
        operation,
        broker: broker.to_owned(),
        reason: error.to_string(),
        source: None,
    }
}

/// A failed operation, keeping librdkafka's error as the cause (users match its code). What no
/// retry can fix — a record larger than the broker or librdkafka takes, an invalid topic
/// name, a topic this user may not write — is [`Error::Refused`].
pub(super) fn kafka_failure(broker: &str, operation: &'static str, error: KafkaError) -> Error {
    let permanent = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    if permanent {
        Error::refused(operation, broker, describe(&error)).caused_by(error)
    } else {
        kafka_error(broker, operation, describe(&error)).caused_by(error)
    }
}

pub(super) fn describe(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{error} ({code:?})"),
        None => error.to_string(),
    }
}

/// The broker's ACLs refused the request.
pub(super) fn is_authorization(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn a_reconnect_is_a_return_after_a_loss_not_the_first_connection() {
        let health = GroupHealth::new(ReadySignal::default(), "kafka://test:9092");
        // Statistics before the first connection was up: start-up, not a loss.
        assert_eq!(health.connected(false), None);
        assert_eq!(health.connected(true), None);
        assert_eq!(health.connected(true), None);
        assert_eq!(health.connected(false), Some(ConnectionChange::Lost));
        assert_eq!(health.connected(false), None);
        assert_eq!(health.connected(true), Some(ConnectionChange::Reconnected));
    }

    #[test]
    fn an_assigned_consumer_was_connected_before_statistics_said_so() {
        let health = GroupHealth::new(ReadySignal::default(), "kafka://test:9092");
        health.assigned(true);
        // The broker lost before the first statistics: a loss, and its return a reconnect.
        assert_eq!(health.connected(false), Some(ConnectionChange::Lost));
        assert_eq!(health.connected(true), Some(ConnectionChange::Reconnected));
    }

    #[test]
    fn authentication_and_tls_errors_are_permanent_at_once() {
        let failures = Failures::default();
        assert!(failures
            .record(
                &global(RDKafkaErrorCode::BrokerTransportFailure),
                "Connection refused",
                None
            )
            .is_none());
        let permanent = failures
            .record(
                &global(RDKafkaErrorCode::Authentication),
                "SASL authentication error",
                None,
            )
            .expect("permanent");
        assert!(
            permanent.starts_with("authentication failed"),
            "{permanent}"
        );
        failures.record(
            &global(RDKafkaErrorCode::SSL),
            "certificate verify failed",
            None,
        );
        assert_eq!(failures.permanent(), Some(permanent), "the first one stays");
        assert_eq!(
            failures.last().as_deref(),
            Some("certificate verify failed")
        );
    }

    #[test]
    fn a_hang_up_on_the_first_request_counts_only_when_it_repeats() {
        let failures = Failures::default();
        let hang_up = "sasl_plaintext://127.0.0.1:9093/bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN (after 1ms in state APIVERSION_QUERY)";
        assert!(failures
            .record_log("FAIL", "Connection refused (after 0ms in state CONNECT)")
            .is_none());
        for _ in 1..PROTOCOL_MISMATCH_REPEATS {
            assert!(failures.record_log("FAIL", hang_up).is_none());
        }
        let permanent = failures
            .record_log("FAIL", hang_up)
            .expect("permanent after repeats");
        assert!(permanent.contains("security.protocol"), "{permanent}");
    }

    #[test]
    fn a_refused_group_is_named() {
        let failures = Failures::default();
        let permanent = failures
            .record(
                &global(RDKafkaErrorCode::GroupAuthorizationFailed),
                "FindCoordinator response error: Group authorization failed.",
                Some("billing"),
            )
            .expect("permanent");
        assert!(permanent.contains("`billing`"), "{permanent}");
    }
}
