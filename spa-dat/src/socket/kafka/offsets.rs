//! The group consumer's task: records into the inbox, and the offsets of handled records
//! committed, with the finished-offset map as metadata.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::blocking::on_blocking_thread;
use super::context::{describe, is_authorization, SocketContext};
use super::headers;
use super::progress::{Arrival, Progress, Scope};
use super::transaction::{Finished, KafkaTransactions, Settle};
use crate::socket::{Delivery, Position, TopicNames};

/// The socket's group consumer.
pub(super) type GroupConsumer = StreamConsumer<SocketContext>;

/// How often the per-partition progress gauges are set (when metrics are enabled).
const GAUGE_INTERVAL: Duration = Duration::from_millis(100);

/// How long reading a partition's committed offset may take when it is assigned.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the group consumer into the inbox; the ack records the offset as finished (in any
/// order: see `progress`). Records an earlier run finished above its commit are skipped.
/// Every `commit_interval` the partitions whose commit offset or metadata changed are
/// committed (asynchronously; a failure is sent again at the next one).
///
/// Back-pressure: while the inbox is full the consumer is not read. If it stays full for
/// `pause_after` (handlers stuck: a database down, a message retried without a dead-letter
/// topic), the assignment is paused and the consumer polled on, so that librdkafka does not
/// leave the group at `max.poll.interval.ms` (which would hand the partitions to another
/// member, to be stuck there too, and the records in flight to be read twice); it resumes
/// once the inbox takes records again.
pub(super) async fn consume(
    consumer: Arc<GroupConsumer>,
    progress: Arc<Progress>,
    transactions: Option<Arc<KafkaTransactions>>,
    inbox: mpsc::Sender<Delivery>,
    broker: String,
    pause_after: Duration,
    commit_interval: Duration,
) {
    let mut topic_names = TopicNames::default();
    let mut gauge_tick = tokio::time::interval(GAUGE_INTERVAL);
    gauge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commit_tick = tokio::time::interval(commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Records read and not yet taken by the inbox, oldest first: one, or a few more read while
    // paused (a partition assigned since, or records librdkafka had already queued).
    let mut held: VecDeque<Delivery> = VecDeque::new();
    let mut paused = false;
    // When the inbox was first found full, while not paused.
    let mut full_since: Option<tokio::time::Instant> = None;
    loop {
        if let Some(transactions) = &transactions {
            if transactions.fatal().is_some() {
                leave_group(&consumer, &broker).await;
                return;
            }
            if transactions.must_rewind() {
                // Read before the abort: handled again once read again from the commit.
                held.clear();
                if rewind(&consumer, &broker).await {
                    // Whatever arrived while the abort was under way counts for nothing:
                    // everything from here on is read after the seek.
                    progress.forget_all();
                    transactions.rewound();
                } else {
                    // Nothing is delivered, nor committed, until it succeeds; the consumer is
                    // polled meanwhile (what it reads is dropped), or a rebalance waiting for
                    // the poll would never be served and the group's next assignment would
                    // stay here unread.
                    poll_dropping(&consumer, &broker, Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        while let Some(delivery) = held.pop_front() {
            match inbox.try_send(delivery) {
                Ok(()) => {}
                Err(TrySendError::Full(delivery)) => {
                    held.push_front(delivery);
                    break;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if held.is_empty() {
            full_since = None;
            if paused {
                paused = !set_paused(&consumer, false, &broker);
            }
        }
        // Holding a record: wait for room. Not paused, read nothing meanwhile, until
        // `pause_after` has passed; paused, go on polling the consumer.
        let waiting = !held.is_empty();
        let pause_at = (waiting && !paused)
            .then(|| *full_since.get_or_insert_with(tokio::time::Instant::now) + pause_after);
        let received = tokio::select! {
            biased;
            _ = commit_tick.tick(), if transactions.is_none() => {
                if let Err(error) = progress.commit(&*consumer, CommitMode::Async, Scope::Changed) {
                    // Not in a group right now (a rebalance): committed once it is.
                    tracing::debug!(%broker, error = %describe(&error), "offsets not committed");
                }
                continue;
            }
            _ = gauge_tick.tick() => {
                progress.gauge();
                continue;
            }
            room = inbox.reserve(), if waiting => {
                let Ok(permit) = room else { return };
                if let Some(delivery) = held.pop_front() {
                    permit.send(delivery);
                }
                full_since = None;
                continue;
            }
            // An async block: no timer is made on the per-record path, where it is disabled.
            () = async { if let Some(at) = pause_at { tokio::time::sleep_until(at).await } },
                if pause_at.is_some() => {
                paused = set_paused(&consumer, true, &broker);
                if !paused {
                    // Try again after another while, not in a loop.
                    full_since = Some(tokio::time::Instant::now());
                }
                continue;
            }
            received = consumer.recv(), if !waiting || paused => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) if is_authorization(&error) => {
                tracing::error!(broker = %broker, error = %describe(&error), "Kafka consumer not authorized: check the ACLs of its topics and group");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(broker = %broker, error = %describe(&error), "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if transactions.as_ref().is_some_and(|t| t.must_rewind()) {
            // Read before the seek back: read again after it.
            continue;
        }
        let topic = topic_names.get(message.topic());
        let (partition, offset) = (message.partition(), message.offset());
        let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let headers = headers::of_record(&message);
        let key = message.key().map(Bytes::copy_from_slice);
        drop(message);
        let ticket = loop {
            match progress.arrived(&topic, partition, offset) {
                Arrival::Deliver(ticket) => break Some(ticket),
                Arrival::Skip => break None,
                // First record of this assignment: read what an earlier run finished.
                Arrival::Unloaded => {
                    let (committed, log_end) = loop {
                        match committed(&consumer, &topic, partition).await {
                            Ok(read) => break read,
                            // At least once: handled again is the worst that can happen.
                            Err(()) if transactions.is_none() => break (None, i64::MIN),
                            // Exactly once: what an earlier run finished and committed must
                            // not be handled again, its output committed twice.
                            Err(()) => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    };
                    progress.load(
                        &topic,
                        partition,
                        committed.as_ref().map(|(o, m)| (*o, m.as_str())),
                        log_end,
                    );
                }
            }
        };
        let Some(ticket) = ticket else {
            tracing::debug!(%topic, partition, offset, "finished in an earlier run; skipped");
            continue;
        };
        let delivery = Delivery::new(Arc::clone(&topic), payload)
            .with_headers(headers)
            .with_key(key)
            .at(Position { partition, offset });
        let delivery = match &transactions {
            None => {
                let finished = Arc::clone(&progress);
                delivery.with_ack(move || {
                    finished.finished(&topic, partition, offset, ticket);
                })
            }
            Some(transactions) => {
                if transactions.must_rewind() {
                    continue;
                }
                // Its handler's publishes are held with it and go into the transaction that
                // marks it finished.
                let staged = transactions.staging_area();
                let settled = (Arc::clone(transactions), staged.clone());
                delivery.with_staging(staged).with_ack(move || {
                    let (transactions, staged) = settled;
                    transactions.settled(Settle {
                        output: staged.take(),
                        finished: vec![Finished {
                            topic,
                            partition,
                            offset,
                            ticket,
                        }],
                        done: None,
                    });
                })
            }
        };
        if paused {
            // From a partition assigned while paused: pause it too.
            set_paused(&consumer, true, &broker);
        }
        held.push_back(delivery);
    }
}

/// Pauses (or resumes) fetching from the consumer's whole assignment; true when done.
fn set_paused(consumer: &GroupConsumer, pause: bool, broker: &str) -> bool {
    let result = consumer.assignment().and_then(|assignment| {
        if pause {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        }
    });
    match result {
        Ok(()) if pause => {
            tracing::warn!(%broker, "Kafka consumer paused: its handlers took nothing for a while (the inbox is full); it stays in its group and resumes when they do");
            true
        }
        Ok(()) => {
            tracing::info!(%broker, "Kafka consumer resumed");
            true
        }
        Err(error) => {
            tracing::warn!(%broker, error = %describe(&error), pause, "pausing or resuming the Kafka consumer failed");
            false
        }
    }
}

/// The committed offset and metadata of one partition for the consumer's group (`None` when
/// there is none), and the partition's end read after it: what the metadata may claim lies
/// below that end. `Err` when either cannot be read (logged): then no metadata is trusted.
async fn committed(
    consumer: &Arc<GroupConsumer>,
    topic: &str,
    partition: i32,
) -> Result<(Option<(i64, String)>, i64), ()> {
    let (consumer, topic) = (Arc::clone(consumer), topic.to_owned());
    on_blocking_thread(move || {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&topic, partition);
        let committed = match consumer.committed_offsets(wanted, Timeout::After(COMMITTED_TIMEOUT)) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%topic, partition, error = %describe(&error), "committed offsets not read");
                return Err(());
            }
        };
        let committed = committed
            .find_partition(&topic, partition)
            .and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some((offset, element.metadata().to_owned())),
                _ => None,
            });
        let log_end = match consumer.fetch_watermarks(&topic, partition, Timeout::After(COMMITTED_TIMEOUT)) {
            Ok((_, high)) => high,
            Err(error) => {
                tracing::warn!(%topic, partition, error = %describe(&error), "the partition's end not read");
                return Err(());
            }
        };
        Ok((committed, log_end))
    })
    .await
    .unwrap_or(Err(()))
}

/// After a failure no abort can fix: out of the group, so that its partitions go to a member
/// that can commit them, polling until the revocation is done (it runs in a poll) and the
/// assignment is empty; the socket is no longer ready then. Whatever is read meanwhile is
/// dropped: the next owner reads it.
async fn leave_group(consumer: &Arc<GroupConsumer>, broker: &str) {
    consumer.unsubscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(true)
        {
            return;
        }
        poll_dropping(consumer, broker, Duration::from_millis(100)).await;
    }
}

/// Polls `consumer` for `period`, dropping what it reads: it serves the rebalances that wait
/// for a poll while nothing may be delivered. An error is logged and polled past after a pause.
async fn poll_dropping(consumer: &GroupConsumer, broker: &str, period: Duration) {
    let until = tokio::time::Instant::now() + period;
    while let Ok(read) = tokio::time::timeout_at(until, consumer.recv()).await {
        if let Err(error) = read {
            tracing::debug!(%broker, error = %describe(&error), "Kafka consumer error while not delivering");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Seeks every assigned partition back to its committed offset (the beginning where none is
/// committed), after an aborted transaction: what was read since is read again. librdkafka
/// drops what it had fetched from before the seek. False when it failed (logged): the caller
/// tries again, delivering nothing meanwhile.
async fn rewind(consumer: &Arc<GroupConsumer>, broker: &str) -> bool {
    let (consumer, broker) = (Arc::clone(consumer), broker.to_owned());
    let rewound = on_blocking_thread(move || {
        let assignment = consumer.assignment()?;
        if assignment.count() == 0 {
            // Nothing read that could be read again (librdkafka refuses to seek no partition).
            return Ok(());
        }
        let committed =
            consumer.committed_offsets(assignment, Timeout::After(COMMITTED_TIMEOUT))?;
        let mut to = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => Offset::Offset(offset),
                _ => Offset::Beginning,
            };
            to.add_partition_offset(element.topic(), element.partition(), offset)?;
        }
        let sought = consumer.seek_partitions(to, Timeout::After(COMMITTED_TIMEOUT))?;
        // Each partition's own result: one that failed is not where it must be.
        for element in sought.elements() {
            element.error()?;
        }
        tracing::info!(%broker, "Kafka consumer rewound to its committed offsets after an aborted transaction");
        Ok::<(), rdkafka::error::KafkaError>(())
    })
    .await;
    match rewound {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(error = %describe(&error), "rewinding after an aborted transaction failed; tried again in a second");
            false
        }
        Err(panic) => {
            tracing::warn!(%panic, "rewinding after an aborted transaction failed; tried again in a second");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;

    /// A group consumer that never reaches a broker (nothing listens on port 9).
    fn unassigned_consumer() -> Arc<GroupConsumer> {
        let context = SocketContext::new(&Arc::default(), "kafka://127.0.0.1:9");
        let consumer: GroupConsumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "rewind-test")
            .create_with_context(context)
            .expect("consumer");
        Arc::new(consumer)
    }

    /// An abort that comes while the consumer holds no partition (they were lost — a member
    /// stopped longer than its session — and the next assignment has not come): nothing to
    /// read again, so the rewind is done. It failed for ever (librdkafka refuses to seek an
    /// empty list), and the consume task, retrying it, never polled the consumer again: it
    /// kept the partitions the group gave it next and handled none of them.
    #[tokio::test]
    async fn a_consumer_without_partitions_is_rewound_at_once() {
        let consumer = unassigned_consumer();
        let rewound = tokio::time::timeout(Duration::from_secs(5), rewind(&consumer, "test"))
            .await
            .expect("at once");
        assert!(rewound, "nothing to seek: rewound");
    }
}
