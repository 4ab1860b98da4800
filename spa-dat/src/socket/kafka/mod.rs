//! The Kafka transport (feature `kafka`), on rdkafka.
//!
//! - `publish` returns once the broker acknowledged the record (idempotent producer,
//!   `acks=all`); concurrent publishes on one socket are pipelined by librdkafka.
//! - Each consuming socket is a member of a consumer group (default: derived from the
//!   application's name), so N processes of an application split the partitions.
//! - At least once: a record's offset is stored only after its handler finished (or it was
//!   skipped or dead-lettered); stored offsets are committed every 5 s, on rebalance and on
//!   close, so a restarted application resumes after the last handled record.
//! - Subscription topics are created when missing and never deleted. Request/reply: one reply
//!   consumer per socket, correlation in a header, and a reply topic of the request's own for
//!   responders that do not echo the header (see `reply_routes`).
//!
//! The folder follows the seams; a file imports only files listed before it:
//! - importing nothing of the folder: `config` (settings and `kafka://` URLs), `headers`,
//!   `progress` (what the group consumer finished, as commit metadata) and `reply_routes`
//!   (which topic a request's reply uses, which request a reply answers);
//! - `properties` (every client's librdkafka properties: the user's applied once, last),
//!   `context` (librdkafka's logs and errors), `blocking` (librdkafka's blocking calls, off the
//!   async workers), `transaction` (exactly-once: publishes and offsets in one transaction);
//! - `access` (the read-access check at subscribe), `admin` (topics: listing, creating,
//!   deleting, naming), `offsets` (the group consumer's task and the offsets it stores);
//! - `shared` (what a socket's parts share), `replies` (the reply consumer and reply topics),
//!   `socket` (publish, subscribe, close); the provider is here. `replies` and `socket` add
//!   their parts' methods to `Shared`.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};

use self::admin::{existing_topics, sanitize};
use self::blocking::on_blocking_thread;
use self::context::{Failures, SocketContext};
use self::properties::{client_config, Client};
use self::reply_routes::Replies;
use self::shared::{lock, Shared};
use self::socket::KafkaSocket;
use self::transaction::KafkaTransactions;
use super::{
    Capabilities, Connection, Inbox, RequestMultiplexer, SocketOptions, SocketProvider, SpaSocket,
    TransportConfig,
};
use crate::error::{Error, Result};

mod access;
mod admin;
mod blocking;
mod config;
mod context;
mod headers;
mod offsets;
mod progress;
mod properties;
mod replies;
mod reply_routes;
mod shared;
mod socket;
mod transaction;

pub use config::{Isolation, KafkaConfig};

/// Builds Kafka sockets: a producer each, a group consumer once the socket subscribes, a reply
/// consumer once it sends a request.
#[derive(Debug, Clone)]
pub struct KafkaSocketProvider {
    config: KafkaConfig,
}

impl KafkaSocketProvider {
    /// A provider for the cluster `config` names.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        Ok(KafkaSocketProvider { config })
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }
}

// Beside the provider it builds, so `config` imports nothing of the folder.
impl TransportConfig for KafkaConfig {
    fn validate(&self) -> Result<()> {
        KafkaConfig::validate(self)
    }

    fn provider(&self) -> Result<Arc<dyn SocketProvider>> {
        Ok(Arc::new(KafkaSocketProvider::new(self.clone())?))
    }
}

/// The consumer group of a socket that names none and whose bus names none: one per
/// application (its client name, else its client id).
pub(crate) fn default_group_id(client_name: &str) -> String {
    format!("spa-dat-{}", sanitize(client_name))
}

#[async_trait]
impl SocketProvider for KafkaSocketProvider {
    async fn connect(&self, options: SocketOptions) -> Result<Connection> {
        let config = &self.config;
        let broker = config.broker();
        let client_id = sanitize(&options.client_id_with(config.client_id.as_deref()));
        let group_id = options
            .group
            .clone()
            .or_else(|| config.group_id.clone())
            .unwrap_or_else(|| {
                default_group_id(options.client_name.as_deref().unwrap_or(&options.client_id))
            });
        let failures = Arc::new(Failures::default());
        let cannot_create = |e: rdkafka::error::KafkaError| {
            Error::Connect {
                broker: broker.clone(),
                reason: e.to_string(),
                source: None,
            }
            .caused_by(e)
        };
        // One per process unless the user names it: replicas of one application share their
        // client id, and a shared `transactional.id` fences all but the last started (KIP-447
        // fences a zombie by its group generation whatever the id). An id stable across
        // restarts and unique among replicas (a pod's name) lets a restarted process abort its
        // killed predecessor's open transaction at once instead of after
        // `transaction.timeout.ms`: set `transactional.id` for that.
        // A deployment check begins no transaction: the same id would fence the running one.
        let transactional_id = (options.transactional && !options.probe).then(|| {
            config
                .properties
                .get("transactional.id")
                .cloned()
                .unwrap_or_else(|| {
                    let run = uuid::Uuid::new_v4().simple().to_string();
                    format!("spa-txn-{group_id}-{client_id}-{}", &run[..8])
                })
        });
        let producer_client = match &transactional_id {
            Some(transactional_id) => Client::TransactionalProducer { transactional_id },
            None => Client::Producer,
        };
        let producer_config = client_config(config, &client_id, producer_client);
        let max_record_bytes = producer_config
            .get("message.max.bytes")
            .and_then(|bytes| bytes.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        let producer: FutureProducer<SocketContext> = producer_config
            .create_with_context(SocketContext::new(&failures, &broker))
            .map_err(cannot_create)?;
        let transactions = match transactional_id {
            None => None,
            Some(transactional_id) => {
                let (producer, on_broker) = (producer.clone(), broker.clone());
                let timeout = Duration::from_millis(config.publish_timeout_ms);
                let interval = Duration::from_millis(config.transaction_interval_ms);
                let started = on_blocking_thread(move || {
                    KafkaTransactions::start(
                        producer,
                        &on_broker,
                        interval,
                        timeout,
                        max_record_bytes,
                    )
                })
                .await;
                match started {
                    Ok(Ok(transactions)) => Some(Arc::new(transactions)),
                    Ok(Err(error)) => {
                        return Err(Error::Connect {
                            broker: broker.clone(),
                            reason: format!(
                                "transactions of `{transactional_id}` not started: {}",
                                context::describe(&error)
                            ),
                            source: None,
                        }
                        .caused_by(error))
                    }
                    Err(reason) => {
                        return Err(Error::Connect {
                            broker: broker.clone(),
                            reason,
                            source: None,
                        })
                    }
                }
            }
        };
        let committer = transactions.as_ref().map(|transactions| {
            let transactions = Arc::clone(transactions);
            std::thread::Builder::new()
                .name("spa-kafka-txn".to_owned())
                .spawn(move || transactions.run_committer())
        });
        let committer = match committer {
            Some(Ok(thread)) => Some(thread),
            Some(Err(error)) => {
                return Err(Error::runtime(format!(
                    "the transaction committer's thread not started: {error}"
                )))
            }
            None => None,
        };
        let admin: AdminClient<SocketContext> = client_config(config, &client_id, Client::Admin)
            .create_with_context(SocketContext::new(&failures, &broker))
            .map_err(cannot_create)?;
        let (sender, inbox) = Inbox::channel(options.inbox_capacity);
        let shared = Arc::new(Shared {
            config: config.clone(),
            probe: options.probe,
            broker: broker.clone(),
            replies: Arc::new(Replies::new(&client_id, RequestMultiplexer::new())),
            client_id,
            group_id,
            producer,
            admin,
            failures,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            enqueue: tokio::sync::Mutex::new(()),
            inbox: Mutex::new(Some(sender)),
            consumer: Mutex::new(None),
            topics: Mutex::new(BTreeSet::new()),
            existing_topics: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(Vec::new()),
            reply_consumer: tokio::sync::OnceCell::new(),
            closed: AtomicBool::new(false),
            ready: options.ready.clone(),
            transactions,
            committer: Mutex::new(committer),
        });
        // A consumer app's group consumer starts now and the reachability check below runs on
        // it, so it opens that consumer's connection; opened cold after it, the first record
        // came 55 ms later. Other sockets check on the producer.
        let initial_topics = options.initial_topics(&config.default_subscription_topics);
        let consumer = if initial_topics.is_empty() {
            None
        } else {
            Some(shared.consumer()?)
        };
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let (producer, failures) = (shared.producer.clone(), Arc::clone(&shared.failures));
        let probed = on_blocking_thread(move || match consumer {
            Some(consumer) => existing_topics(consumer.client(), &failures, timeout),
            None => existing_topics(producer.client(), &failures, timeout),
        })
        .await;
        // The probe's reason, or its panic's, is the connect error's.
        let failure = match probed.and_then(std::convert::identity) {
            Ok(topics) => {
                *lock(&shared.existing_topics) = topics;
                None
            }
            Err(reason) => Some(reason),
        };
        let socket = KafkaSocket { shared };
        if let Some(reason) = failure {
            socket.close().await?;
            return Err(Error::Connect {
                broker,
                reason,
                source: None,
            });
        }
        let connection =
            super::subscribe_initial(socket, inbox, &options, &config.default_subscription_topics)
                .await?;
        if initial_topics.is_empty() {
            // No consumer to be assigned: connected is ready.
            options.ready.set(true);
        }
        Ok(connection)
    }

    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider> {
        Arc::new(KafkaSocketProvider {
            config: self.config.overwrite_config(topics),
        })
    }

    fn default_topics(&self) -> &[String] {
        &self.config.default_subscription_topics
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wildcards: false,
            consumer_groups: true,
            ordered_per_publisher: self.config.topic_partitions == 1,
            ordered_per_partition: true,
            subscribe_is_synchronous: false,
            headers: true,
            keys: true,
            acks_in_any_order: true,
        }
    }

    fn describe(&self) -> String {
        self.config.broker()
    }

    fn wire_format(&self) -> crate::socket::WireFormat {
        self.config.wire
    }
}
