//! The group consumer's task: records into the inbox, and the offsets of handled records into
//! librdkafka's store (committed from there).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::context::{describe, is_authorization, SocketContext};
use super::headers;
use super::socket::lock;
use crate::socket::{Delivery, Position, TopicNames};

/// The socket's group consumer.
pub(super) type GroupConsumer = StreamConsumer<SocketContext>;

/// How often handled offsets are handed to librdkafka's offset store (auto-commit then
/// commits them every `auto.commit.interval.ms`).
const STORE_INTERVAL: Duration = Duration::from_millis(100);

/// Offsets of handled records, by partition, not yet in librdkafka's offset store.
///
/// Storing each record's offset as its handler finishes costs a topic lookup under
/// librdkafka's client lock per record (measured: ~10 % of consumer throughput); these are
/// stored in one call every [`STORE_INTERVAL`], before partitions are revoked, and on close.
/// A partition's records are handled in order, so its latest handled offset covers the rest.
#[derive(Default)]
pub(super) struct HandledOffsets {
    /// Per partition; a consumer owns few, so a scan beats hashing the topic per record.
    latest: Mutex<Vec<HandledOffset>>,
}

struct HandledOffset {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl HandledOffsets {
    fn handled(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        let mut latest = lock(&self.latest);
        let known = latest.iter_mut().find(|h| {
            h.partition == partition && (Arc::ptr_eq(&h.topic, topic) || h.topic == *topic)
        });
        match known {
            Some(handled) => handled.offset = handled.offset.max(offset),
            None => latest.push(HandledOffset {
                topic: Arc::clone(topic),
                partition,
                offset,
            }),
        }
    }

    /// Hands the handled offsets to librdkafka's store: the next offset to read, per partition.
    pub(super) fn store<C: ConsumerContext, K: Consumer<C>>(&self, consumer: &K) {
        let latest = std::mem::take(&mut *lock(&self.latest));
        if latest.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::with_capacity(latest.len());
        for handled in &latest {
            let next = Offset::Offset(handled.offset + 1);
            if let Err(error) = list.add_partition_offset(&handled.topic, handled.partition, next) {
                tracing::debug!(topic = %handled.topic, partition = handled.partition, %error, "offset not stored");
            }
        }
        if let Err(error) = consumer.store_offsets(&list) {
            // Partitions revoked meanwhile: their next owner handles those records again.
            tracing::debug!(%error, "offsets not stored");
        }
    }
}

/// Reads the group consumer into the inbox; the ack records the offset after the handler.
pub(super) async fn consume(
    consumer: Arc<GroupConsumer>,
    handled: Arc<HandledOffsets>,
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
                handled.store(&*consumer);
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
        let handled = Arc::clone(&handled);
        let handled_topic = Arc::clone(&topic);
        let delivery = Delivery::new(topic, payload)
            .with_headers(headers)
            .with_key(key)
            .at(Position { partition, offset })
            .with_ack(move || handled.handled(&handled_topic, partition, offset));
        if inbox.send(delivery).await.is_err() {
            break;
        }
    }
}
