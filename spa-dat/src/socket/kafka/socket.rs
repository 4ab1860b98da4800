//! The Kafka socket: publishing on its producer, its group consumer (created on the first
//! subscription), subscribing, and close; its reply side is `replies`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::admin::{create_topics_for, topic_name_problem, validate_topic};
use super::blocking::on_blocking_thread;
use super::context::{
    describe, kafka_error, kafka_failure, CommitTransaction, GroupHealth, SocketContext,
};
use super::headers;
use super::offsets::{consume, GroupConsumer};
use super::progress::{Progress, Scope};
use super::properties::Client;
use super::replies;
use super::shared::{lock, Shared};
use crate::error::{Error, Result};
use crate::socket::{Outgoing, PendingReply, SpaSocket, Staged};

impl Shared {
    /// Enqueues the record with librdkafka and waits for the broker's acknowledgement.
    ///
    /// `send_result` enqueues without rdkafka's retry loop, whose future is several times
    /// larger and sleeps 100 ms whenever librdkafka's queue is full; many concurrent publishes
    /// (pipelining) pay for every byte of future state.
    pub(super) async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        self.ensure_open()?;
        // librdkafka would create or look up any name; a response topic an outside client
        // chose may be anything.
        if let Some(reason) = topic_name_problem(topic) {
            return Err(Error::refused("publish", self.broker.clone(), reason));
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let started = Instant::now();
        // Uncontended (nobody waits for room): no timer.
        let in_turn = match self.enqueue.try_lock() {
            Ok(in_turn) => Ok(in_turn),
            Err(_) => tokio::time::timeout(self.publish_timeout, self.enqueue.lock()).await,
        };
        let Ok(in_turn) = in_turn else {
            return Err(Error::Transport {
                operation: "publish",
                broker: self.broker.clone(),
                reason: format!(
                    "not sent: no room in librdkafka's queue within {:?}",
                    self.publish_timeout
                ),
                source: None,
            });
        };
        // Closed while it waited for its turn: not sent.
        self.ensure_open()?;
        let mut backoff = Duration::from_millis(1);
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if started.elapsed() < self.publish_timeout =>
                {
                    record = returned;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err((error, _)) => return Err(kafka_failure(&self.broker, "publish", error)),
            }
        };
        drop(in_turn);
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(kafka_failure(&self.broker, "publish", error)),
            // The producer was dropped with the record still queued: the socket closed.
            Err(_canceled) => Err(Error::Closed),
        }
    }

    /// The socket's group consumer, created on first subscription; its task feeds the inbox.
    pub(super) fn consumer(self: &Arc<Self>) -> Result<Arc<GroupConsumer>> {
        let mut slot = lock(&self.consumer);
        if let Some(consumer) = slot.as_ref() {
            return Ok(Arc::clone(consumer));
        }
        let inbox = lock(&self.inbox).clone().ok_or(Error::Closed)?;
        let handled = Arc::new(Progress::default());
        // Its auto-commit is off: it commits offsets with their metadata itself, every
        // auto.commit.interval.ms (see `properties`).
        let config = self.client_config(Client::GroupConsumer {
            group: &self.group_id,
            transactional: self.transactions.is_some(),
        });
        let commit_interval = config
            .get("auto.commit.interval.ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .unwrap_or(5_000);
        let consumer: GroupConsumer = config
            .create_with_context(SocketContext {
                handled: Some(Arc::clone(&handled)),
                group: Some(self.group_id.clone()),
                health: Some(Arc::new(GroupHealth::new(self.ready.clone(), &self.broker))),
                commit_transaction: self.transactions.clone().map(|transactions| {
                    Arc::new(move |group, revoked: &rdkafka::TopicPartitionList| {
                        // A failure is logged and acted on where it happened.
                        let _ = transactions.commit(group, Some(revoked));
                    }) as CommitTransaction
                }),
                ..self.context()
            })
            .map_err(|e| kafka_failure(&self.broker, "create consumer", e))?;
        tracing::debug!(broker = %self.broker, group = %self.group_id, client_id = %self.client_id, "Kafka consumer created");
        // Stuck this long with a full inbox, the consumer pauses its partitions and goes on
        // polling, so the group keeps it (half of max.poll.interval.ms: a consumer that is
        // merely busy never pauses, as a pause throws librdkafka's prefetched records away).
        let max_poll_interval = config
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .unwrap_or(300_000);
        let consumer = Arc::new(consumer);
        if let Some(transactions) = &self.transactions {
            transactions.attach(&consumer, &handled);
        }
        let task = tokio::spawn(consume(
            Arc::clone(&consumer),
            handled,
            self.transactions.clone(),
            inbox,
            self.broker.clone(),
            Duration::from_millis(max_poll_interval / 2),
            Duration::from_millis(commit_interval),
        ));
        lock(&self.tasks).push(task);
        *slot = Some(Arc::clone(&consumer));
        Ok(consumer)
    }
}

pub(super) struct KafkaSocket {
    pub(super) shared: Arc<Shared>,
}

#[async_trait]
impl SpaSocket for KafkaSocket {
    // librdkafka copies the payload and headers; one boxed future per record (measured:
    // pipelined publishing ran at 0.75× raw rdkafka with a second one, 0.9× without).
    async fn send(&self, message: Outgoing) -> Result<()> {
        if let Some(transactions) = &self.shared.transactions {
            self.shared.ensure_open()?;
            if let Some(reason) = topic_name_problem(&message.topic) {
                return Err(Error::refused(
                    "publish",
                    self.shared.broker.clone(),
                    reason,
                ));
            }
            // A request is never held: its reply is awaited. (What the runtime's `request`
            // sends carries both; a forwarded message or a reply at most one of them.)
            let request = [
                crate::socket::headers::RESPONSE_TOPIC,
                crate::socket::headers::CORRELATION_ID,
            ]
            .iter()
            .all(|name| message.headers.get(name).is_some());
            return match Staged::current(transactions.owner).filter(|_| !request) {
                Some(staged) => transactions.stage(&staged, message),
                None => transactions.publish_alone(message).await,
            };
        }
        let headers = headers::to_record(&message.headers);
        self.shared
            .send(
                &message.topic,
                message.key.as_deref(),
                &message.payload,
                headers,
            )
            .await
    }

    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        self.shared.ensure_open()?;
        for topic in topics {
            validate_topic(topic)?;
        }
        if topics.is_empty() {
            return Ok(());
        }
        let consumer = self.shared.consumer()?;
        // A deployment check creates nothing and joins no group: access is all it asks, of
        // the topics there are (a run creates the others, or waits for them).
        if self.shared.probe {
            let existing: Vec<String> = {
                let known = lock(&self.shared.existing_topics);
                topics
                    .iter()
                    .filter(|t| known.contains(*t))
                    .cloned()
                    .collect()
            };
            let missing: Vec<&str> = topics
                .iter()
                .filter(|t| !existing.contains(*t))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() && !self.shared.config.create_topics {
                return Err(Error::config(format!(
                    "no such topic: {} (create_topics = false: a run would wait for it)",
                    missing.join(", ")
                )));
            }
            if !missing.is_empty() {
                tracing::warn!(topics = %missing.join(", "), "the check leaves topics that do not exist yet as they are: a run creates them (create_topics)");
            }
            return self
                .shared
                .verify_read_access(&self.shared.group_id, &existing)
                .await;
        }
        if self.shared.config.create_topics {
            let missing: Vec<String> = {
                let existing = lock(&self.shared.existing_topics);
                topics
                    .iter()
                    .filter(|t| !existing.contains(*t))
                    .cloned()
                    .collect()
            };
            if !missing.is_empty() {
                create_topics_for(
                    &self.shared.admin,
                    &self.shared.config,
                    &consumer,
                    &missing,
                    self.shared.config.topic_partitions,
                    "create topics",
                )
                .await?;
                lock(&self.shared.existing_topics).extend(missing);
            }
        }
        let unchecked: Vec<String> = {
            let current = lock(&self.shared.topics);
            topics
                .iter()
                .filter(|t| !current.contains(*t))
                .cloned()
                .collect()
        };
        if !unchecked.is_empty() {
            self.shared
                .verify_read_access(&self.shared.group_id, &unchecked)
                .await?;
        }
        let all: Vec<String> = {
            let mut current = lock(&self.shared.topics);
            current.extend(topics.iter().cloned());
            current.iter().cloned().collect()
        };
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| kafka_failure(&self.shared.broker, "subscribe", e))
    }

    async fn unsubscribe(&self, topics: &[String]) -> Result<()> {
        self.shared.ensure_open()?;
        let rest: Vec<String> = {
            let mut current = lock(&self.shared.topics);
            for topic in topics {
                current.remove(topic);
            }
            current.iter().cloned().collect()
        };
        let consumer = lock(&self.shared.consumer).clone();
        if let Some(consumer) = consumer {
            if rest.is_empty() {
                consumer.unsubscribe();
            } else {
                let names: Vec<&str> = rest.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&names)
                    .map_err(|e| kafka_failure(&self.shared.broker, "unsubscribe", e))?;
            }
        }
        Ok(())
    }

    async fn reply_route(&self, destination: &str) -> Result<PendingReply> {
        self.shared.ensure_open()?;
        replies::open_route(&self.shared, destination).await
    }

    fn wire_format(&self) -> crate::socket::WireFormat {
        self.shared.config.wire
    }

    fn transactions(&self) -> Option<&dyn crate::socket::spi::Transactions> {
        self.shared
            .transactions
            .as_deref()
            .map(|t| t as &dyn crate::socket::spi::Transactions)
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let committer = lock(&self.shared.committer).take();
        if let (Some(transactions), Some(committer)) = (&self.shared.transactions, committer) {
            transactions.stop();
            let _ = on_blocking_thread(move || committer.join()).await;
        }
        let tasks: Vec<_> = lock(&self.shared.tasks).drain(..).collect();
        for task in tasks {
            task.abort();
            // Its future holds the consumer: gone before the consumer is closed below.
            let _ = task.await;
        }
        lock(&self.shared.inbox).take();
        let mut last_transaction = Ok(());
        if let Some(transactions) = self.shared.transactions.clone() {
            // The last transaction: what was settled since the one before.
            last_transaction = on_blocking_thread(move || transactions.commit(None, None))
                .await
                .and_then(std::convert::identity);
        }
        let consumer = lock(&self.shared.consumer).take();
        let mut commit_failure = None;
        if let Some(consumer) = consumer {
            // Offsets of everything handled so far: committed now, not at the next interval.
            let transactional = self.shared.transactions.is_some();
            let commit = on_blocking_thread(move || {
                let result = match (transactional, &consumer.context().handled) {
                    // Committed in the last transaction, above.
                    (true, _) | (false, None) => Ok(()),
                    (false, Some(handled)) => {
                        handled.commit(&*consumer, CommitMode::Sync, Scope::All)
                    }
                };
                let committed = match result {
                    Ok(()) => {
                        tracing::debug!("offsets committed on close");
                        None
                    }
                    Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => None,
                    Err(error) => {
                        tracing::warn!(%error, "committing offsets on close failed");
                        Some(describe(&error))
                    }
                };
                // The last handle: dropping it closes the consumer and leaves the group now,
                // instead of holding partitions until the session times out.
                if let Ok(consumer) = Arc::try_unwrap(consumer) {
                    drop(consumer);
                } else {
                    tracing::warn!("Kafka consumer still referenced at close; it leaves the group when released");
                }
                committed
            });
            commit_failure = commit.await.unwrap_or_else(Some);
        }
        replies::delete_reply_topics(&self.shared).await;
        let producer = self.shared.producer.clone();
        let _ = on_blocking_thread(move || producer.flush(Timeout::After(Duration::from_secs(5))))
            .await;
        self.shared.replies.requests().close();
        // Reported after everything else is closed: the records handled since the last commit
        // are delivered again to the group's next member.
        if let Err(reason) = last_transaction {
            return Err(kafka_error(
                &self.shared.broker,
                "commit the last transaction on close",
                format!("{reason}; what was handled since the last commit is handled again"),
            ));
        }
        match commit_failure {
            Some(reason) => Err(kafka_error(
                &self.shared.broker,
                "commit offsets on close",
                format!("{reason}; what was handled since the last commit is delivered again"),
            )),
            None => Ok(()),
        }
    }
}
