//! A socket's side of request/reply on Kafka: the reply consumer, created with the first
//! request; each request's own reply topic, created before it is sent and deleted after; the
//! guard that releases a route however its request ends. Which topic a request's reply uses and
//! which request a reply answers is `reply_routes`'.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::util::Timeout;
use rdkafka::Offset;

use super::admin::{create_topics, create_topics_for, delete_topics};
use super::blocking::blocking;
use super::context::{describe, kafka_failure, SocketContext};
use super::headers;
use super::properties::Client;
use super::reply_routes::{Replies, ReplyRoute};
use super::shared::{lock, Shared};
use crate::error::{Error, Result};
use crate::socket::PendingReply;

/// Registers a request to `destination` and opens its reply route: the reply consumer, and
/// for a route of its own, its topic. The route ends with the returned request.
pub(super) async fn open_route(shared: &Arc<Shared>, destination: &str) -> Result<PendingReply> {
    let consumer = shared.reply_consumer().await?;
    let pending = shared.replies.requests().register();
    let route = shared.replies.route(pending.id(), destination);
    // Released however the request ends, also when its caller is cancelled.
    let guard = RouteGuard {
        shared: Arc::clone(shared),
        consumer: Arc::clone(&consumer),
        id: pending.id(),
        route: route.clone(),
    };
    if let ReplyRoute::Own(topic) = &route {
        shared.open_own_reply_topic(&consumer, topic).await?;
    }
    Ok(pending.with_response_topic(route.topic()).holding(guard))
}

/// At close: deletes the reply topics still there, if the socket made any.
pub(super) async fn delete_reply_topics(shared: &Shared) {
    if shared.reply_consumer.initialized() {
        // The reply topics are this socket's alone (Python deletes its own too).
        let mut topics = shared.replies.own_topics();
        topics.push(shared.replies.shared_topic().to_owned());
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(error) = delete_topics(&shared.admin, &names).await {
            tracing::debug!(%error, "reply topics not deleted");
        }
    }
}

impl Shared {
    /// The reply consumer, created with the first request: it reads the shared reply topic from
    /// its end (replies left by an earlier run with the same client id are not this run's) and
    /// is assigned each request's own reply topic while the request waits.
    async fn reply_consumer(self: &Arc<Self>) -> Result<Arc<StreamConsumer<SocketContext>>> {
        self.reply_consumer
            .get_or_try_init(|| async {
                let shared_topic = self.replies.shared_topic().to_owned();
                create_topics(
                    &self.admin,
                    &self.config,
                    std::slice::from_ref(&shared_topic),
                    1,
                )
                .await?;
                let group = format!("{}-replies", self.group_id);
                self.verify_read_access(&group, std::slice::from_ref(&shared_topic))
                    .await?;
                let consumer: StreamConsumer<SocketContext> = self
                    .client_config(Client::ReplyConsumer {
                        group: &group,
                        transactional: self.transactions.is_some(),
                    })
                    .create_with_context(SocketContext {
                        group: Some(group.clone()),
                        ..self.context()
                    })
                    .map_err(|e| kafka_failure(&self.broker, "create reply consumer", e))?;
                // Assigned directly, from the end as a number: no group rebalance to wait for,
                // and nothing older than this run.
                let timeout = Duration::from_millis(self.config.connect_timeout_ms);
                let consumer = Arc::new(consumer);
                let (reader, topic) = (Arc::clone(&consumer), shared_topic.clone());
                let end = blocking(&self.broker, "assign reply topic", move || {
                    reader.fetch_watermarks(&topic, 0, Timeout::After(timeout))
                })
                .await?
                .1;
                let mut assignment = rdkafka::TopicPartitionList::new();
                assignment
                    .add_partition_offset(&shared_topic, 0, Offset::Offset(end))
                    .map_err(|e| kafka_failure(&self.broker, "assign reply topic", e))?;
                consumer
                    .assign(&assignment)
                    .map_err(|e| kafka_failure(&self.broker, "assign reply topic", e))?;
                let task = tokio::spawn(collect_replies(
                    Arc::clone(&consumer),
                    Arc::clone(&self.replies),
                ));
                lock(&self.tasks).push(task);
                Ok::<_, Error>(consumer)
            })
            .await
            .cloned()
    }

    /// Creates a request's own reply topic and has the reply consumer read it.
    async fn open_own_reply_topic(
        &self,
        consumer: &Arc<StreamConsumer<SocketContext>>,
        topic: &str,
    ) -> Result<()> {
        let topics = [topic.to_owned()];
        create_topics_for(
            &self.admin,
            &self.config,
            consumer,
            &topics,
            1,
            "create reply topic",
        )
        .await?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| kafka_failure(&self.broker, "assign reply topic", e))?;
        consumer
            .incremental_assign(&assignment)
            .map_err(|e| kafka_failure(&self.broker, "assign reply topic", e))
    }
}

/// Ends a request's reply route: a request's own reply topic is unassigned and deleted.
struct RouteGuard {
    shared: Arc<Shared>,
    consumer: Arc<StreamConsumer<SocketContext>>,
    id: u64,
    route: ReplyRoute,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.shared.replies.end(self.id, &self.route);
        let ReplyRoute::Own(topic) = &self.route else {
            return;
        };
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition(topic, 0);
        if let Err(error) = self.consumer.incremental_unassign(&assignment) {
            tracing::debug!(%topic, %error, "reply topic not unassigned");
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return; // close() deletes what is left
        }
        let (shared, topic) = (Arc::clone(&self.shared), topic.clone());
        tokio::spawn(async move {
            if let Err(error) = delete_topics(&shared.admin, &[&topic]).await {
                tracing::debug!(%topic, %error, "reply topic not deleted");
            }
        });
    }
}

/// The reply consumer's task: hands each reply to its request.
async fn collect_replies(consumer: Arc<StreamConsumer<SocketContext>>, replies: Arc<Replies>) {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %describe(&error), "Kafka reply consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Either wire format: a responder that is not spa-dat (FastStream) answers with a bare
        // payload and its metadata in headers.
        let delivery = crate::socket::Delivery::new(
            Arc::from(message.topic()),
            bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        )
        .with_headers(headers::of_record(&message));
        let reply = match delivery.message(crate::socket::WireFormat::Raw) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(topic = message.topic(), %error, "undecodable reply dropped");
                continue;
            }
        };
        let correlation = headers::correlation_of(&delivery.headers);
        if !replies.deliver(message.topic(), correlation, reply) {
            tracing::debug!(
                topic = message.topic(),
                ?correlation,
                "reply dropped: no waiting request is its own (it came after its request ended, or cannot be matched)"
            );
        }
    }
}
