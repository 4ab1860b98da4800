//! The group consumer's task: records into the inbox, and the offsets of handled records into
//! librdkafka's store (committed from there).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::context::{describe, is_authorization, SocketContext};
use super::headers;
use super::progress::{Arrival, Progress};
use crate::socket::{Delivery, Position, TopicNames};

/// The socket's group consumer.
pub(super) type GroupConsumer = StreamConsumer<SocketContext>;

/// How often finished offsets are handed to librdkafka's offset store (auto-commit then
/// commits them every `auto.commit.interval.ms`): storing per record would cost a topic
/// lookup under librdkafka's client lock each (measured: ~10 % of consumer throughput).
const STORE_INTERVAL: Duration = Duration::from_millis(100);

/// How long reading a partition's committed offset may take when it is assigned.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the group consumer into the inbox; the ack records the offset as finished (in any
/// order: see `progress`). Records an earlier run finished above its commit are skipped.
pub(super) async fn consume(
    consumer: Arc<GroupConsumer>,
    progress: Arc<Progress>,
    inbox: mpsc::Sender<Delivery>,
    broker: String,
) {
    let mut topic_names = TopicNames::default();
    let mut store_tick = tokio::time::interval(STORE_INTERVAL);
    store_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            biased;
            _ = store_tick.tick() => {
                progress.store(&*consumer);
                continue;
            }
            received = consumer.recv() => received,
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
                    let committed = committed(&consumer, &topic, partition).await;
                    progress.load(
                        &topic,
                        partition,
                        committed.as_ref().map(|(o, m)| (*o, m.as_str())),
                    );
                }
            }
        };
        let Some(ticket) = ticket else {
            tracing::debug!(%topic, partition, offset, "finished in an earlier run; skipped");
            continue;
        };
        let finished = Arc::clone(&progress);
        let finished_topic = Arc::clone(&topic);
        let delivery = Delivery::new(topic, payload)
            .with_headers(headers)
            .with_key(key)
            .at(Position { partition, offset })
            .with_ack(move || finished.finished(&finished_topic, partition, offset, ticket));
        if inbox.send(delivery).await.is_err() {
            break;
        }
    }
}

/// The committed offset and metadata of one partition for the consumer's group; `None` when
/// there is none or it cannot be read (then nothing is skipped: at least once holds).
async fn committed(
    consumer: &Arc<GroupConsumer>,
    topic: &str,
    partition: i32,
) -> Option<(i64, String)> {
    let (consumer, topic) = (Arc::clone(consumer), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&topic, partition);
        let committed = match consumer.committed_offsets(wanted, Timeout::After(COMMITTED_TIMEOUT)) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%topic, partition, error = %describe(&error), "committed offsets not read; records finished above the commit are handled again");
                return None;
            }
        };
        let element = committed.find_partition(&topic, partition)?;
        match element.offset() {
            Offset::Offset(offset) => Some((offset, element.metadata().to_owned())),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten()
}
