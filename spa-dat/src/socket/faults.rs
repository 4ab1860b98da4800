//! A socket provider that injects faults into another one (usually the in-process bus), to test
//! what handlers do when the bus misbehaves — without a broker, and the same way every run.
//!
//! Every fault is decided per message by a seeded hash of the fault, the message (its topic and
//! the payload inside its envelope — not the envelope's timestamp or client id, which differ
//! per run) and how often that message came before: the same seed gives the same faults on the
//! same messages, whatever the timing. Built on the transport interface alone (a wrapper socket and
//! an inbox pump), so it works around any transport.
//!
//! ```
//! use std::sync::Arc;
//! use spa_dat::socket::faults::{Faults, FaultyProvider};
//! use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
//!
//! let bus = MemorySocketProvider::new(MemoryBus::new("test"));
//! let faults = Faults { seed: 7, duplicate: 0.05, lose_ack: 0.02, ..Faults::default() };
//! let provider = FaultyProvider::new(Arc::new(bus), faults);
//! // DistributedApplication::new().socket_provider(Arc::new(provider)) ...
//! ```

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    Capabilities, Connection, Delivery, DrainSlot, Inbox, Outgoing, PendingReply, SocketOptions,
    SocketProvider, SpaSocket,
};
use crate::error::{Error, Result};

/// The faults to inject; each probability is per message, from 0.0 to 1.0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Chooses which messages get which fault: same seed, same faults.
    pub seed: u64,
    /// A delivery arrives twice (at-least-once transports do this).
    pub duplicate: f64,
    /// A handled message's acknowledgement is lost: it is delivered again.
    pub lose_ack: f64,
    /// A handled message's acknowledgement reaches the transport only after `ack_delay`.
    pub delay_ack: f64,
    /// How late a delayed acknowledgement is.
    pub ack_delay: Duration,
    /// A publish fails (the handler's `publish` returns an error) instead of being sent.
    pub fail_publish: f64,
    /// After every this many deliveries, everything delivered and not yet acknowledged is
    /// delivered again — as after a crash or a rebalance. 0: never.
    pub redeliver_every: u64,
}

/// What the faulty provider did, for tests to check against.
#[derive(Debug, Default)]
pub struct FaultLog {
    duplicated: AtomicU64,
    lost_acks: AtomicU64,
    delayed_acks: AtomicU64,
    failed_publishes: AtomicU64,
    redelivered: AtomicU64,
}

impl FaultLog {
    /// Deliveries sent twice.
    pub fn duplicated(&self) -> u64 {
        self.duplicated.load(Ordering::Relaxed)
    }
    /// Acknowledgements lost (their messages delivered again).
    pub fn lost_acks(&self) -> u64 {
        self.lost_acks.load(Ordering::Relaxed)
    }
    /// Acknowledgements delayed.
    pub fn delayed_acks(&self) -> u64 {
        self.delayed_acks.load(Ordering::Relaxed)
    }
    /// Publishes failed.
    pub fn failed_publishes(&self) -> u64 {
        self.failed_publishes.load(Ordering::Relaxed)
    }
    /// Deliveries sent again by `redeliver_every`.
    pub fn redelivered(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }
}

/// Wraps a provider; its sockets inject [`Faults`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use spa_dat::socket::faults::{Faults, FaultyProvider};
/// use spa_dat::socket::memory::{MemoryBus, MemorySocketProvider};
/// use spa_dat::socket::spi::{SocketOptions, SocketProvider};
/// use spa_dat::{MessageBuilder, Socket, SpaMessage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spa_dat::Result<()> {
/// let bus = Arc::new(MemorySocketProvider::new(MemoryBus::new("faults-example")));
/// let provider = FaultyProvider::new(bus, Faults { fail_publish: 1.0, ..Faults::default() });
/// let log = provider.log();
///
/// let connection = provider.connect(SocketOptions::new("flaky")).await?;
/// let socket = Socket::new(connection.socket, MessageBuilder::default(), Duration::from_secs(1));
/// // Does the caller cope with a failed publish?
/// assert!(socket.publish(SpaMessage::new("jobs", "go")).await.is_err());
/// assert_eq!(log.failed_publishes(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FaultyProvider {
    inner: Arc<dyn SocketProvider>,
    faults: Faults,
    dice: Arc<Dice>,
    log: Arc<FaultLog>,
}

impl std::fmt::Debug for FaultyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyProvider")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl FaultyProvider {
    /// `inner` with `faults`.
    pub fn new(inner: Arc<dyn SocketProvider>, faults: Faults) -> Self {
        FaultyProvider {
            inner,
            faults,
            dice: Arc::new(Dice::new(faults.seed)),
            log: Arc::new(FaultLog::default()),
        }
    }

    /// What was injected so far.
    pub fn log(&self) -> Arc<FaultLog> {
        Arc::clone(&self.log)
    }
}

/// Seeded decisions per message: the same (fault, bytes, occurrence) always rolls the same.
struct Dice {
    seed: u64,
    seen: Mutex<HashMap<(u8, u64), u64>>,
}

impl Dice {
    fn new(seed: u64) -> Self {
        Dice {
            seed,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether fault `kind` hits this occurrence of the message `bytes` on `topic`, with
    /// probability `p`.
    fn roll(&self, kind: u8, topic: &str, bytes: &[u8], p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let id = match crate::message::SpaMessage::from_json(bytes) {
            Ok(message) => hash(&(self.seed, topic, &message.payload[..])),
            Err(_) => hash(&(self.seed, topic, bytes)),
        };
        let occurrence = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let count = seen.entry((kind, id)).or_insert(0);
            *count += 1;
            *count
        };
        let roll = hash(&(self.seed, kind, id, occurrence));
        (roll as f64 / u64::MAX as f64) < p
    }
}

fn hash(value: &impl Hash) -> u64 {
    // SipHash with fixed keys: stable within a build, unlike RandomState.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new_with_keys(0x5350_4144, 0x4154_0000);
    value.hash(&mut hasher);
    hasher.finish()
}

struct FaultySocket {
    inner: Arc<dyn SpaSocket>,
    faults: Faults,
    dice: Arc<Dice>,
    log: Arc<FaultLog>,
}

#[async_trait]
impl SpaSocket for FaultySocket {
    async fn send(&self, message: Outgoing) -> Result<()> {
        if self.dice.roll(
            4,
            &message.topic,
            &message.payload,
            self.faults.fail_publish,
        ) {
            self.log.failed_publishes.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Transport {
                operation: "publish",
                broker: "faulty bus".to_owned(),
                reason: format!("injected failure (topic {})", message.topic),
                source: None,
            });
        }
        self.inner.send(message).await
    }

    async fn subscribe(&self, topics: &[String]) -> Result<()> {
        self.inner.subscribe(topics).await
    }

    async fn unsubscribe(&self, topics: &[String]) -> Result<()> {
        self.inner.unsubscribe(topics).await
    }

    async fn reply_route(&self, destination: &str) -> Result<PendingReply> {
        self.inner.reply_route(destination).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    fn wire_format(&self) -> crate::socket::WireFormat {
        self.inner.wire_format()
    }

    fn transactions(&self) -> Option<&dyn super::spi::Transactions> {
        self.inner.transactions()
    }
}

/// A delivery as it can be sent again: everything but the acknowledgement.
#[derive(Clone)]
struct Copy {
    topic: Arc<str>,
    payload: bytes::Bytes,
    headers: super::headers::Headers,
    key: Option<bytes::Bytes>,
    position: Option<super::Position>,
}

impl Copy {
    fn of(delivery: &Delivery) -> Self {
        Copy {
            topic: Arc::clone(&delivery.topic),
            payload: delivery.payload.clone(),
            headers: delivery.headers.clone(),
            key: delivery.key.clone(),
            position: delivery.position,
        }
    }

    fn delivery(&self) -> Delivery {
        let mut delivery = Delivery::new(Arc::clone(&self.topic), self.payload.clone())
            .with_headers(self.headers.clone())
            .with_key(self.key.clone());
        delivery.position = self.position;
        delivery
    }
}

/// Between the inner inbox and the application's: injects the delivery faults.
struct Pump {
    faults: Faults,
    dice: Arc<Dice>,
    log: Arc<FaultLog>,
    outbox: mpsc::Sender<Delivery>,
    /// Delivered and not acknowledged, by delivery number: what a crash would redeliver.
    unacked: Arc<Mutex<HashMap<u64, Copy>>>,
    delivered: u64,
    /// Where the inner transport never delivers a message again: the count the copies this
    /// pump makes (duplicates, redeliveries) join too, so that shutdown drains them as well.
    drain: Option<DrainSlot>,
}

/// `delivery`, counted as the inner transport's own deliveries are (see [`DrainSlot`]).
fn counted(drain: Option<&DrainSlot>, delivery: Delivery) -> Delivery {
    match drain.and_then(|slot| slot.get()) {
        Some(pending) => delivery.counted_in(pending),
        None => delivery,
    }
}

impl Pump {
    async fn run(mut self, mut inbox: Inbox) {
        // Whatever it holds when the application's inbox goes away (a drain cut short by the
        // grace period) is discarded and said, as the application's own inbox's is.
        let held = self.pump(&mut inbox).await;
        let discarded = held + inbox.discard();
        if discarded > 0 && self.drain.as_ref().is_some_and(|slot| slot.get().is_some()) {
            tracing::warn!(
                discarded,
                "shutdown discarded in-process messages not handled within the grace period (held by the fault-injecting bus)"
            );
        }
    }

    /// Forwards what arrives until the application's inbox is gone: how many it held then.
    async fn pump(&mut self, inbox: &mut Inbox) -> usize {
        while let Some(delivery) = inbox.recv().await {
            let copy = Copy::of(&delivery);
            let duplicate = self
                .dice
                .roll(1, &copy.topic, &copy.payload, self.faults.duplicate);
            // Counted before the original goes on: its handling must not empty the count while
            // the copy is still on its way.
            let duplicate = duplicate.then(|| counted(self.drain.as_ref(), copy.delivery()));
            if !self.forward(delivery, copy.clone()).await {
                return 1 + usize::from(duplicate.is_some());
            }
            if let Some(duplicate) = duplicate {
                self.log.duplicated.fetch_add(1, Ordering::Relaxed);
                if !self.forward(duplicate, copy).await {
                    return 1;
                }
            }
            if self.faults.redeliver_every > 0 && self.delivered % self.faults.redeliver_every == 0
            {
                let mut pending: Vec<(u64, Copy)> = self
                    .unacked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(n, c)| (*n, c.clone()))
                    .collect();
                pending.sort_by_key(|(n, _)| *n);
                for (_, copy) in pending {
                    self.log.redelivered.fetch_add(1, Ordering::Relaxed);
                    let again = counted(self.drain.as_ref(), copy.delivery());
                    if !self.forward(again, copy).await {
                        return 1;
                    }
                }
            }
        }
        0
    }

    /// Hands `delivery` on with an acknowledgement that may be lost or delayed; false once the
    /// application's inbox is gone.
    async fn forward(&mut self, mut delivery: Delivery, copy: Copy) -> bool {
        self.delivered += 1;
        let number = self.delivered;
        self.unacked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, copy.clone());
        let inner_ack = delivery.take_ack();
        let lose = self
            .dice
            .roll(2, &copy.topic, &copy.payload, self.faults.lose_ack);
        let delay = self
            .dice
            .roll(3, &copy.topic, &copy.payload, self.faults.delay_ack);
        let (unacked, log, outbox, drain) = (
            Arc::clone(&self.unacked),
            Arc::clone(&self.log),
            self.outbox.clone(),
            self.drain.clone(),
        );
        let ack_delay = self.faults.ack_delay;
        delivery.set_ack(move || {
            unacked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&number);
            if lose {
                // Lost on the way: the transport delivers it again, and the redelivery's
                // acknowledgement carries the original one.
                log.lost_acks.fetch_add(1, Ordering::Relaxed);
                let mut again = counted(drain.as_ref(), copy.delivery());
                if let Some(ack) = inner_ack {
                    again.set_ack(ack);
                }
                tokio::spawn(async move {
                    let _ = outbox.send(again).await;
                });
                return;
            }
            if delay {
                log.delayed_acks.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    tokio::time::sleep(ack_delay).await;
                    if let Some(ack) = inner_ack {
                        ack();
                    }
                });
            } else if let Some(ack) = inner_ack {
                ack();
            }
        });
        self.outbox.send(delivery).await.is_ok()
    }
}

#[async_trait]
impl SocketProvider for FaultyProvider {
    async fn connect(&self, options: SocketOptions) -> Result<Connection> {
        let capacity = options.inbox_capacity;
        let connection = self.inner.connect(options).await?;
        let (outbox, mut inbox) = Inbox::channel(capacity);
        let drain = inbox.drains_as(&connection.inbox);
        let pump = Pump {
            faults: self.faults,
            dice: Arc::clone(&self.dice),
            log: Arc::clone(&self.log),
            outbox,
            unacked: Arc::default(),
            delivered: 0,
            drain,
        };
        tokio::spawn(pump.run(connection.inbox));
        Ok(Connection {
            socket: Arc::new(FaultySocket {
                inner: connection.socket,
                faults: self.faults,
                dice: Arc::clone(&self.dice),
                log: Arc::clone(&self.log),
            }),
            inbox,
        })
    }

    fn rebuild(&self, topics: Vec<String>) -> Arc<dyn SocketProvider> {
        Arc::new(FaultyProvider {
            inner: self.inner.rebuild(topics),
            ..self.clone()
        })
    }

    fn default_topics(&self) -> &[String] {
        self.inner.default_topics()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    fn wire_format(&self) -> crate::socket::WireFormat {
        self.inner.wire_format()
    }
}
