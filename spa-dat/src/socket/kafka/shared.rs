//! What a socket's parts share: its clients, its subscriptions, its tasks; and the checks
//! and settings every part uses.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;

use super::access;
use super::blocking::blocking;
use super::config::KafkaConfig;
use super::context::{Failures, SocketContext};
use super::offsets::GroupConsumer;
use super::properties::{self, Client};
use super::reply_routes::Replies;
use super::transaction::KafkaTransactions;
use crate::error::Result;
use crate::socket::Delivery;

/// One per socket; its tasks and reply routes hold it too.
pub(super) struct Shared {
    /// The socket's readiness (see `context::SocketContext::ready`).
    pub(super) ready: crate::socket::ReadySignal,
    pub(super) config: KafkaConfig,
    /// A deployment check's socket (see [`crate::socket::spi::SocketOptions::probe`]).
    pub(super) probe: bool,
    pub(super) broker: String,
    pub(super) client_id: String,
    pub(super) group_id: String,
    pub(super) producer: FutureProducer<SocketContext>,
    pub(super) admin: AdminClient<SocketContext>,
    /// Errors of this socket's clients that no retry can fix.
    pub(super) failures: Arc<Failures>,
    pub(super) publish_timeout: Duration,
    /// Makes enqueueing with librdkafka first come, first served: a publish waiting for room in
    /// its queue keeps its place, so concurrent publishes (a pipelined batch) keep their order.
    pub(super) enqueue: tokio::sync::Mutex<()>,
    pub(super) inbox: Mutex<Option<mpsc::Sender<Delivery>>>,
    pub(super) consumer: Mutex<Option<Arc<GroupConsumer>>>,
    pub(super) topics: Mutex<BTreeSet<String>>,
    /// Topics known to exist (from the metadata fetched at connect, or created since):
    /// subscribing to them needs no CreateTopics round trip.
    pub(super) existing_topics: Mutex<BTreeSet<String>>,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) replies: Arc<Replies>,
    pub(super) reply_consumer: tokio::sync::OnceCell<Arc<StreamConsumer<SocketContext>>>,
    pub(super) closed: AtomicBool,
    /// A transactional socket's transactions (see `transaction`).
    pub(super) transactions: Option<Arc<KafkaTransactions>>,
    /// Their committer's thread.
    pub(super) committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Locks `mutex`, also one a panic poisoned.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every guarded value is replaced or read whole: still consistent after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// [`crate::error::Error::Closed`] once the socket is closed.
    pub(super) fn ensure_open(&self) -> Result<()> {
        crate::socket::ensure_open(&self.closed)
    }

    /// The librdkafka properties of this socket's `client` (see `properties`).
    pub(super) fn client_config(&self, client: Client<'_>) -> ClientConfig {
        properties::client_config(&self.config, &self.client_id, client)
    }

    /// The context of a client that is no group's consumer.
    pub(super) fn context(&self) -> SocketContext {
        SocketContext::new(&self.failures, &self.broker)
    }

    /// Fails, naming the group or topic, when the ACLs do not let this socket read `topics` in
    /// `group` (see [`access::verify_read_access`]).
    pub(super) async fn verify_read_access(&self, group: &str, topics: &[String]) -> Result<()> {
        let (config, broker) = (
            self.client_config(Client::AccessProbe { group }),
            self.broker.clone(),
        );
        let (group, topics) = (group.to_owned(), topics.to_vec());
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let strict = self.probe;
        blocking(&self.broker, "subscribe", move || {
            let started = Instant::now();
            let checked =
                access::verify_read_access(config, &broker, &group, &topics, timeout, strict);
            tracing::debug!(%group, ?topics, took = ?started.elapsed(), ok = checked.is_ok(), "read access checked");
            checked
        })
        .await
    }
}
