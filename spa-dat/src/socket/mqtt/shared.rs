//! The state a socket and its connection task (`driver`) share: the rumqttc client, the
//! ledger of requests the broker has not acknowledged, the subscriptions to renew, and how
//! requests are handed to rumqttc.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::sync::{oneshot, Notify};

use super::acks::AckPath;
use super::ledger::{Kind, Ledger, Pending};
use super::wire::{HandOver, RequestView, Wire};
use crate::error::{Error, Result};
use crate::socket::RequestMultiplexer;

/// Requests rumqttc's channel holds (and `Ledger::direct` while the driver writes itself).
pub(super) const REQUEST_CHANNEL_CAPACITY: usize = 64;

/// One per connection: the socket's half and the driver's half hold it.
pub(super) struct Shared<W: Wire> {
    /// Set false when the connection is lost, true when it is back.
    pub(super) ready: crate::socket::ReadySignal,
    pub(super) client: W::Client,
    pub(super) broker: String,
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) wire: crate::socket::WireFormat,
    pub(super) publish_timeout: Duration,
    /// Largest packet the broker is sent (rumqttc drops the connection for a larger one).
    pub(super) max_packet_size: usize,
    /// The largest packet the broker said it takes (MQTT 5's CONNACK), `usize::MAX` if it did
    /// not say; updated on every connection.
    pub(super) broker_max_packet_size: std::sync::atomic::AtomicUsize,
    /// Makes "record in the ledger, hand to rumqttc" one step: the ledger's order is the
    /// order rumqttc sends in.
    pub(super) order: tokio::sync::Mutex<()>,
    pub(super) ledger: Mutex<Ledger<W>>,
    pub(super) acks: AckPath<W>,
    /// Current subscriptions as sent (with `$share/...`), renewed after a clean reconnect.
    pub(super) subscriptions: Mutex<Vec<String>>,
    pub(super) group: Option<String>,
    pub(super) replies: Arc<RequestMultiplexer>,
    pub(super) reply_prefix: String,
    pub(super) reply_subscription: tokio::sync::OnceCell<()>,
    pub(super) closed: AtomicBool,
    pub(super) close_requested: Notify,
    /// Told when a request was handed to rumqttc: a driver that stopped reading (the inbox is
    /// full) must still send it, or a handler publishing it would wait for a reading that waits
    /// for the handler.
    pub(super) handed_over: Notify,
    pub(super) driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<W: Wire> Shared<W> {
    pub(super) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger<W>> {
        // Each ledger operation is a single push/pop/insert: consistent even after a panic.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection is closing: fails every request the ledger holds. One never sent fails
    /// as [`Error::Closed`]; one sent and not acknowledged says it may have been delivered (its
    /// acknowledgement may have been on the way when the connection closed), so that a caller
    /// does not take it for lost.
    pub(super) fn fail_pending(&self) {
        let ledger = std::mem::take(&mut *self.ledger());
        let unsent = ledger
            .unsent
            .into_iter()
            .chain(ledger.direct.into_iter().flatten());
        for pending in unsent {
            pending.resolve(Err(Error::Closed));
        }
        for pending in ledger.unacked.into_values() {
            let operation = match pending.kind {
                Kind::Publish => "publish",
                Kind::Subscribe => "subscribe",
                Kind::Unsubscribe => "unsubscribe",
            };
            let error = self.transport_error(
                operation,
                "the socket closed before the broker acknowledged it; it may have been delivered",
            );
            pending.resolve(Err(error));
        }
    }

    /// Takes the largest packet the broker said it takes (or that it said none).
    pub(super) fn learn_max_packet_size(&self, max_packet_size: Option<u32>) {
        let max = max_packet_size.map_or(usize::MAX, |max| max as usize);
        self.broker_max_packet_size
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn ensure_open(&self) -> Result<()> {
        crate::socket::ensure_open(&self.closed)
    }

    pub(super) fn transport_error(
        &self,
        operation: &'static str,
        reason: impl Into<String>,
    ) -> Error {
        Error::Transport {
            operation,
            broker: self.broker.clone(),
            reason: reason.into(),
            source: None,
        }
    }

    /// Records `request`, hands it to rumqttc, and waits for the broker's acknowledgement.
    ///
    /// Cancel-safe: the hand-over to rumqttc and the ledger entry happen in one step, with no
    /// await between, so a caller dropped while waiting for room in rumqttc's request channel
    /// leaves nothing behind. Waiting for the order lock and for room counts against
    /// `publish_timeout`; a request not handed over by then was never sent.
    pub(super) async fn submit(
        &self,
        kind: Kind,
        request: W::Request,
        operation: &'static str,
    ) -> Result<()> {
        self.ensure_open()?;
        if let RequestView::Publish { topic, size, .. } = W::view(&request) {
            self.check_publish(topic, size, operation)?;
        }
        let deadline = Instant::now() + self.publish_timeout;
        let not_sent = || {
            self.transport_error(
                operation,
                format!(
                    "not sent: no room in the connection's queue within {:?}",
                    self.publish_timeout
                ),
            )
        };
        let (waiter, acknowledged) = oneshot::channel();
        let entry = Pending {
            kind,
            waiter: Some(waiter),
            request,
            strikes: 0,
        };
        {
            let _order = tokio::time::timeout_at(deadline.into(), self.order.lock())
                .await
                .map_err(|_| not_sent())?;
            let mut pause = Duration::from_millis(1);
            loop {
                {
                    // Handed over and recorded under the ledger lock: the driver records what
                    // rumqttc sent under the same lock, so it always finds this entry.
                    let mut ledger = self.ledger();
                    if let Some(direct) = ledger.direct.as_mut() {
                        // The driver reads nothing now and writes the request itself; as
                        // bounded as rumqttc's channel.
                        if direct.len() < REQUEST_CHANNEL_CAPACITY {
                            direct.push_back(entry);
                            self.handed_over.notify_one();
                            break;
                        }
                    } else {
                        match W::try_hand_over(&self.client, &entry.request) {
                            HandOver::Done => {
                                ledger.unsent.push_back(entry);
                                self.handed_over.notify_one();
                                break;
                            }
                            HandOver::Full => {}
                            HandOver::Closed => return Err(not_sent()),
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(not_sent());
                    }
                }
                self.ensure_open()?;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
        match tokio::time::timeout(self.publish_timeout, acknowledged).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(self.transport_error(
                operation,
                format!(
                    "not acknowledged within {:?}; it may still be delivered (it was sent, and is sent again after a reconnect)",
                    self.publish_timeout
                ),
            )),
        }
    }

    /// Refuses at once, as permanent, a publish the broker or rumqttc would refuse: a topic
    /// the broker drops the connection for (MQTT 3.1.1 §4.7.3; rumqttc's own check would be
    /// read as a full queue), or a packet larger than `max_packet_size` (rumqttc would drop
    /// the connection over it, and reconnect, and drop it again).
    fn check_publish(&self, topic: &str, size: usize, operation: &'static str) -> Result<()> {
        if let Err(reason) = crate::socket::validate_topic(topic) {
            return Err(Error::refused(operation, self.broker.clone(), reason));
        }
        if size > self.max_packet_size {
            return Err(Error::refused(
                operation,
                self.broker.clone(),
                format!(
                    "message too large: {size} bytes as a packet, max_packet_size is {} (topic {})",
                    self.max_packet_size,
                    crate::socket::shortened(topic)
                ),
            ));
        }
        let broker_max = self
            .broker_max_packet_size
            .load(std::sync::atomic::Ordering::Relaxed);
        if size > broker_max {
            return Err(Error::refused(
                operation,
                self.broker.clone(),
                format!(
                    "message too large: {size} bytes as a packet, the broker takes at most {broker_max} (its CONNACK; topic {})",
                    crate::socket::shortened(topic)
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn shared_filter(&self, filter: &str) -> String {
        match &self.group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_owned(),
        }
    }

    pub(super) async fn subscribe_filters(&self, filters: Vec<String>) -> Result<()> {
        if filters.is_empty() {
            return Ok(());
        }
        for filter in &filters {
            crate::socket::validate_filter(filter).map_err(Error::Config)?;
        }
        {
            let mut current = self.subscriptions();
            for filter in &filters {
                if !current.contains(filter) {
                    current.push(filter.clone());
                }
            }
        }
        self.submit(
            Kind::Subscribe,
            W::subscribe(filters, self.qos),
            "subscribe",
        )
        .await
    }

    pub(super) async fn ensure_reply_subscription(&self) -> Result<()> {
        self.reply_subscription
            .get_or_try_init(|| self.subscribe_filters(vec![format!("{}/+", self.reply_prefix)]))
            .await
            .map(|_| ())
    }
}
