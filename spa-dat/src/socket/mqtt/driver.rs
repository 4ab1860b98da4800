//! The connection task: polls rumqttc's event loop, delivers messages, settles the ledger,
//! writes acknowledgements, reconnects.
//!
//! Written once for both MQTT versions, over [`Wire`]; what it needs of rumqttc's internals —
//! the connection (acknowledgements, and pings while the connection reads nothing, written
//! straight into it; waiting for the broker to close it after DISCONNECT), its state's
//! outgoing packets (what handlers publish while reading is paused far behind), its buffered
//! events and pending requests (requests rumqttc would drop on a reconnect without session) —
//! is read in `wire311` and `wire5` only. They are public fields but not a stable API, so the
//! workspace pins rumqttc to an exact version; check them on every upgrade.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;

use super::acks::Ack;
use super::ledger::{Kind, Pending};
use super::shared::{Shared, REQUEST_CHANNEL_CAPACITY};
use super::wire::{Received, RequestView, Wire, WireEvent};
use crate::error::{Error, Result};
use crate::socket::{ArrivalSender, Delivery, TopicNames};

/// Acknowledgements the connection task writes itself (see [`AckPath`]).
#[derive(Default)]
struct AckWriter {
    pub(super) batch: Vec<Ack>,
    /// Written but not flushed yet.
    pub(super) unflushed: bool,
}

impl AckWriter {
    /// Writes what [`AckPath::before_poll`] took into the connection, in order, and flushes
    /// once the next poll would wait on the network. On a broken connection they are dropped:
    /// the next poll reports the loss, and the broker sends the messages again.
    pub(super) async fn write<W: Wire>(&mut self, eventloop: &mut W::EventLoop) {
        if !W::connected(eventloop) {
            self.batch.clear();
            return;
        }
        for ack in self.batch.drain(..) {
            if !W::write_ack(eventloop, ack.pkid, ack.qos).await {
                return; // dropping the drain drops the rest
            }
            self.unflushed = true;
        }
        if self.unflushed && !W::has_buffered(eventloop) {
            self.unflushed = false;
            let _ = W::flush(eventloop).await;
        }
    }
}

/// Exponential backoff with jitter between reconnect attempts.
pub(super) struct Backoff {
    pub(super) next: Duration,
    pub(super) max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    pub(super) fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The pause before the next attempt: the current step with ±50 % jitter.
    pub(super) fn pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.5 + fastrand::f64())
    }
}

/// Polls the event loop, delivers messages, settles the ledger, reconnects.
pub(super) struct Driver<W: Wire> {
    pub(super) shared: Arc<Shared<W>>,
    pub(super) inbox: ArrivalSender,
    /// Requests taken out of rumqttc after a connection loss, put back after the reconnect.
    pub(super) held: Vec<W::Request>,
    pub(super) backoff: Backoff,
    pub(super) topic_names: TopicNames,
    /// Re-subscriptions sent after a reconnect and not yet acknowledged: the socket is ready
    /// again only when they are all in place (messages published before that are not ours).
    pub(super) resubscribing: usize,
    /// When the current connection was made (its CONNACK); `None` while there is none.
    pub(super) connected_at: Option<std::time::Instant>,
    /// Packet ids of the publishes written on the current connection that no acknowledgement
    /// has passed yet, in the order written: the broker reads in order, so an acknowledgement
    /// of one clears it and every one before it.
    pub(super) written: std::collections::VecDeque<u16>,
    /// `Ledger::direct` is `Some`: only the driver switches it, so every turn can know without
    /// taking the ledger's lock.
    pub(super) writing_direct: bool,
    /// QoS 0 messages dropped past the inbox's reading limit, since the socket opened.
    pub(super) dropped_qos0: u64,
    /// The last message received was such a drop.
    pub(super) dropping_qos0: bool,
}

/// While QoS 0 messages are being dropped, one in this many is logged.
const DROPPED_QOS0_LOGGED_EVERY: u64 = 10_000;

/// A publish that was the oldest one unacknowledged each time the broker dropped the
/// connection, this many times, is taken to be why (a broker drops the connection over a
/// packet it finds malformed: a topic it does not allow, a packet over its limit) and is
/// dropped, failing its caller as refused, instead of being sent again forever.
const POISON_AFTER: u8 = 3;

impl<W: Wire> Driver<W> {
    pub(super) async fn run(mut self, mut eventloop: W::EventLoop) {
        let mut acks = AckWriter::default();
        'driving: loop {
            self.shared.acks.before_poll(&mut acks.batch);
            acks.write::<W>(&mut eventloop).await;
            // A consumer that fell `inbox_capacity` messages behind: read nothing more until it
            // catches up (QoS 0 has no broker-side flow control to bound it). Acknowledgements
            // made meanwhile are written on the next turn. What the handlers publish is still
            // sent, and its acknowledgement read: polling for them reads more, where waiting
            // would hold the handler — a dead letter, a reply — and so the room, until its
            // publish timed out. At QoS 1 and 2 the broker's in-flight window bounds that
            // overshoot; at QoS 0 nothing does, so reading stops at twice the capacity (at least
            // 1,024 more) anyway — and what handlers publish meanwhile the driver writes
            // itself, without a poll (`Ledger::direct`), or a handler waiting for its publish
            // would hold the inbox far behind until its publish timed out.
            // Only at QoS 0: at QoS 1 and 2 a direct write would bypass rumqttc's own in-flight
            // window. There, while a publish awaits the broker's acknowledgement, reading goes
            // on even far behind: the acknowledgement comes after what the broker sent before
            // it, and a broker need not keep to its in-flight window (Mosquitto 2.0.11 sent a
            // slow consumer three times its Receive Maximum) — stopping would leave the
            // publish, and the consumer waiting on it, stuck. Past the inbox's reading limit a
            // message that came at QoS 0 is dropped (`deliver`); QoS 1 and 2 deliveries are
            // bounded by the broker's window only — which it may overshoot.
            while self.inbox.is_full() {
                if self.inbox.is_far_behind() && self.shared.qos == QoS::AtMostOnce {
                    if !self.writing_direct {
                        self.shared.ledger().direct = Some(Default::default());
                        self.writing_direct = true;
                    }
                    // What is already with rumqttc is written by a poll (nothing new goes
                    // there now, so the polls until then are few: at most its channel's 64).
                    if !self.write_direct(&mut eventloop).await {
                        break;
                    }
                } else if self.shared.ledger().awaits_broker() {
                    break;
                }
                let ping_every = W::keep_alive(&eventloop) / 2;
                tokio::select! {
                    biased;
                    _ = self.shared.close_requested.notified() => break 'driving,
                    _ = self.inbox.room() => {}
                    _ = self.shared.handed_over.notified() => {}
                    // A driver that reads nothing (the inbox is full) and sends nothing would
                    // otherwise be dropped by the broker after 1.5 × keepalive — and with it, on
                    // a clean session, what the broker still held for it. The PINGRESP is read
                    // (rumqttc ignores one it did not ask for) once reading resumes.
                    () = tokio::time::sleep(ping_every), if !ping_every.is_zero() => {
                        W::ping(&mut eventloop).await;
                    }
                }
            }
            // A closed inbox is never full, and its count may stay far behind for good.
            if !(self.inbox.is_full() && self.inbox.is_far_behind()) {
                self.end_direct(&mut eventloop).await;
            }
            let polled = W::poll(&mut eventloop).await;
            self.shared.acks.after_poll();
            match polled {
                Ok(WireEvent::SentDisconnect) => {
                    // The broker closes the connection once it has processed the DISCONNECT:
                    // wait for that (briefly), so when close() returns the broker has let this
                    // client go — its shared-subscription membership too, which otherwise still
                    // took messages meant for the group's other members.
                    // Read from the connection itself: polling rumqttc again would reconnect.
                    // The acknowledgements of what was written before the DISCONNECT settle
                    // their publishes; a message arriving now is left to the broker (its
                    // acknowledgement could not be written any more).
                    for event in W::buffered(&mut eventloop) {
                        self.handle(event);
                    }
                    let mut settle = |event: WireEvent| {
                        if matches!(
                            event,
                            WireEvent::Acknowledged { .. }
                                | WireEvent::SubAck { .. }
                                | WireEvent::UnsubAck { .. }
                        ) {
                            self.handle(event);
                        }
                    };
                    let closed = W::read_until_closed(&mut eventloop, &mut settle);
                    let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                    break;
                }
                Ok(WireEvent::ConnAck {
                    session_present,
                    max_packet_size,
                }) => {
                    self.shared.learn_max_packet_size(max_packet_size);
                    tracing::info!(broker = %self.shared.broker, session_present, "MQTT reconnected");
                    if crate::metrics::enabled() {
                        crate::metrics::reconnected("mqtt", &self.shared.broker);
                    }
                    self.connected_at = Some(std::time::Instant::now());
                    self.written.clear();
                    self.resubscribing = self.restore(&mut eventloop, session_present);
                    if self.resubscribing == 0 {
                        self.shared.ready.set(true);
                    }
                }
                Ok(event) => self.handle(event),
                Err(error) => {
                    if self.shared.closed.load(Ordering::Acquire) {
                        break;
                    }
                    // rumqttc moved its unacknowledged and unsent requests into `pending` and
                    // would drop them on a reconnect without session: keep them ourselves.
                    for event in W::buffered(&mut eventloop) {
                        self.handle(event);
                    }
                    self.held.extend(W::pending(&mut eventloop).drain(..));
                    self.shared.ready.set(false);
                    self.resubscribing = 0;
                    self.shared.acks.connection_lost();
                    if let Some(connected_at) = self.connected_at.take() {
                        // An acknowledgement handed to rumqttc as the connection broke may
                        // have entered its channel after it was emptied: out with it, or it
                        // would be written on the next connection (`restore` drops
                        // acknowledgements). Only after a connection, not a failed attempt:
                        // during an outage the full channel is what refuses new requests.
                        W::clean(&mut eventloop);
                        self.held.extend(W::pending(&mut eventloop).drain(..));
                        self.strike_oldest_unacknowledged();
                        // The backoff restarts only after a connection that lasted: a broker
                        // that accepts and then drops it at once is not hammered.
                        if connected_at.elapsed() >= self.backoff.max {
                            self.backoff.reset();
                        }
                    }
                    let pause = self.backoff.pause();
                    tracing::warn!(broker = %self.shared.broker, error = %W::describe(&error), retry_in = ?pause, "MQTT connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shared.close_requested.notified() => break,
                    }
                }
            }
        }
        tracing::debug!(broker = %self.shared.broker, "MQTT connection closed");
        self.shared.fail_pending();
    }

    pub(super) fn handle(&mut self, event: WireEvent) {
        match event {
            WireEvent::Publish(publish) => self.deliver(publish),
            WireEvent::Acknowledged { pkid, refused } => {
                self.passed(pkid);
                let result = match refused {
                    None => Ok(()),
                    Some(refusal) if refusal.for_good => Err(Error::refused(
                        "publish",
                        self.shared.broker.clone(),
                        refusal.reason,
                    )),
                    Some(refusal) => Err(self.shared.transport_error("publish", refusal.reason)),
                };
                self.acknowledged(Kind::Publish, pkid, result)
            }
            WireEvent::SubAck { pkid, refusals } => self.subscribed(pkid, &refusals),
            WireEvent::UnsubAck { pkid } => self.acknowledged(Kind::Unsubscribe, pkid, Ok(())),
            WireEvent::SentAck(pkid) => self.shared.acks.written(pkid),
            WireEvent::SentPublish(pkid) => {
                // rumqttc never writes one packet id twice on one connection (it retransmits
                // only after a reconnect, when `written` starts empty).
                if pkid != 0 {
                    self.written.push_back(pkid);
                }
                self.sent(Kind::Publish, pkid)
            }
            WireEvent::SentSubscribe(pkid) => self.sent(Kind::Subscribe, pkid),
            WireEvent::SentUnsubscribe(pkid) => self.sent(Kind::Unsubscribe, pkid),
            WireEvent::ConnAck { .. } | WireEvent::SentDisconnect | WireEvent::Other => {}
        }
    }

    /// The broker acknowledged the publish `pkid`: it read every packet before it too.
    fn passed(&mut self, pkid: u16) {
        if let Some(at) = self.written.iter().position(|p| *p == pkid) {
            self.written.drain(..=at);
        }
    }

    /// The broker dropped the connection: the oldest publish written on it and not passed by
    /// an acknowledgement may be why; it gets a strike (see [`POISON_AFTER`]).
    fn strike_oldest_unacknowledged(&mut self) {
        let oldest = std::mem::take(&mut self.written).pop_front();
        if let Some(pkid) = oldest {
            if let Some(pending) = self.shared.ledger().unacked.get_mut(&(Kind::Publish, pkid)) {
                pending.strikes = pending.strikes.saturating_add(1);
            }
        }
    }

    /// Writes the requests kept in `Ledger::direct`, in order, as rumqttc's poll would (its
    /// state assigns the packet id and records the request), without reading — once nothing
    /// handed to rumqttc earlier is still waiting to be written (its channel, its pending
    /// requests, the driver's held ones): the ledger matches what is written to it in order.
    /// False when a poll must come first: the connection is gone or a write failed (the poll
    /// reconnects), or rumqttc has earlier requests to write.
    async fn write_direct(&mut self, eventloop: &mut W::EventLoop) -> bool {
        let timeout = W::connection_timeout(eventloop);
        // At most a channel's worth per call: the driver goes on to read and to see a close.
        for _ in 0..REQUEST_CHANNEL_CAPACITY {
            let pending = {
                let mut ledger = self.shared.ledger();
                let ledger = &mut *ledger;
                // Whatever is kept, what rumqttc has comes first: a poll writes it.
                if !W::connected(eventloop)
                    || !ledger.unsent.is_empty()
                    || !W::pending(eventloop).is_empty()
                    || !self.held.is_empty()
                {
                    return ledger.direct.is_none();
                }
                let Some(direct) = ledger.direct.as_mut().filter(|d| !d.is_empty()) else {
                    return true;
                };
                let Some(pending) = direct.pop_front() else {
                    return true;
                };
                let request = pending.request.clone();
                // Recorded as rumqttc's hand-over is: the Outgoing event below settles it.
                ledger.unsent.push_back(pending);
                request
            };
            let written = match W::write_request(eventloop, pending, timeout).await {
                Ok(written) => written,
                Err(error) => {
                    // Not written and no event will settle it: out of the ledger, failed.
                    if let Some(pending) = self.shared.ledger().unsent.pop_back() {
                        pending.resolve(Err(self
                            .shared
                            .transport_error("publish", format!("not sent: {error}"))));
                    }
                    true
                }
            };
            for event in W::buffered(eventloop) {
                self.handle(event);
            }
            if !written {
                return false;
            }
        }
        true
    }

    /// Ends the direct writing of [`Driver::write_direct`] once the inbox is no longer far
    /// behind: what is still kept is written first (after what rumqttc has, and after a
    /// reconnect if the connection is gone), then requests go to rumqttc again.
    async fn end_direct(&mut self, eventloop: &mut W::EventLoop) {
        // A request kept after the last write and before the end (a handler publishing right
        // then) is written on the next round: the end is decided under the ledger's lock.
        // A few rounds: publishes arriving faster than they are written do not hold the
        // driver here (the next turn goes on).
        for _ in 0..4 {
            if !self.writing_direct || !self.write_direct(eventloop).await {
                return;
            }
            let mut ledger = self.shared.ledger();
            if ledger
                .direct
                .as_ref()
                .is_some_and(|direct| direct.is_empty())
            {
                ledger.direct = None;
                self.writing_direct = false;
                return;
            }
        }
    }

    /// rumqttc wrote a packet: the oldest unsent request of the ledger, unless it is the
    /// retransmission of one still waiting for its acknowledgement.
    pub(super) fn sent(&mut self, kind: Kind, pkid: u16) {
        let mut ledger = self.shared.ledger();
        if pkid != 0 && ledger.unacked.contains_key(&(kind, pkid)) {
            return;
        }
        let Some(pending) = ledger.unsent.pop_front() else {
            tracing::error!(broker = %self.shared.broker, ?kind, pkid, "MQTT sent a packet the ledger does not know");
            return;
        };
        if pending.kind != kind {
            tracing::error!(broker = %self.shared.broker, expected = ?pending.kind, sent = ?kind, "MQTT ledger out of step");
        }
        if kind == Kind::Publish && pkid == 0 {
            drop(ledger);
            pending.resolve(Ok(()));
        } else {
            ledger.unacked.insert((kind, pkid), pending);
        }
    }

    /// A SUBACK: a filter the broker refused (its ACL, no shared subscriptions, …) fails the
    /// subscription, naming the filter and why.
    pub(super) fn subscribed(&mut self, pkid: u16, refusals: &[Option<String>]) {
        if self.resubscribing > 0 {
            self.resubscribing -= 1;
            if self.resubscribing == 0 {
                self.shared.ready.set(true);
            }
        }
        let Some(pending) = self
            .shared
            .ledger()
            .unacked
            .remove(&(Kind::Subscribe, pkid))
        else {
            return;
        };
        let filters = match W::view(&pending.request) {
            RequestView::Subscribe { filters } => filters,
            _ => Vec::new(),
        };
        let refused: Vec<(&str, &str)> = refusals
            .iter()
            .zip(filters)
            .filter_map(|(refusal, filter)| refusal.as_deref().map(|why| (filter, why)))
            .collect();
        if refused.is_empty() {
            pending.resolve(Ok(()));
            return;
        }
        let described = refused
            .iter()
            .map(|(filter, why)| format!("`{filter}` ({why})"))
            .collect::<Vec<_>>()
            .join(", ");
        // Not renewed after a reconnect: the broker would refuse it again.
        self.shared
            .subscriptions()
            .retain(|current| !refused.iter().any(|(filter, _)| filter == current));
        tracing::error!(broker = %self.shared.broker, filters = %described, "MQTT subscription refused");
        let error = self.shared.transport_error(
            "subscribe",
            format!("the broker refused the subscription to {described}"),
        );
        pending.resolve(Err(error));
    }

    pub(super) fn acknowledged(&mut self, kind: Kind, pkid: u16, result: Result<()>) {
        let pending = self.shared.ledger().unacked.remove(&(kind, pkid));
        if let Some(pending) = pending {
            pending.resolve(result);
        }
    }

    pub(super) fn deliver(&mut self, publish: Received) {
        let ack = (publish.qos != QoS::AtMostOnce)
            .then(|| self.shared.acks.ack_for(publish.pkid, publish.qos));
        // The broker checked the topic is UTF-8; one that did not gets its bytes replaced, not
        // a panic. (`from_utf8` first: `from_utf8_lossy` walks valid text chunk by chunk, ~3×
        // the instructions.)
        let topic = match std::str::from_utf8(&publish.topic) {
            Ok(topic) => std::borrow::Cow::Borrowed(topic),
            Err(_) => String::from_utf8_lossy(&publish.topic),
        };
        if topic.starts_with(&self.shared.reply_prefix) {
            crate::socket::deliver_reply(
                &self.shared.replies,
                &topic,
                &publish.payload,
                publish.headers,
            );
            if let Some(ack) = ack {
                self.shared.acks.acknowledge(ack);
            }
            return;
        }
        if publish.qos == QoS::AtMostOnce && self.inbox.is_past_reading_limit() {
            // Read only to reach the acknowledgement of a publish of ours behind it (see `run`;
            // replies, above, go to their requesters, not the inbox): at most once is what it
            // was sent with, and keeping it would let a flood fill memory.
            self.dropped_qos0 += 1;
            // Each time dropping starts, and every so many while it goes on.
            if !self.dropping_qos0 || self.dropped_qos0 % DROPPED_QOS0_LOGGED_EVERY == 0 {
                tracing::warn!(broker = %self.shared.broker, dropped_since_open = self.dropped_qos0, "the consumer is far behind and a publish of ours awaits the broker's acknowledgement behind what it sent: QoS 0 messages read on the way are dropped");
            }
            self.dropping_qos0 = true;
            return;
        }
        if self.dropping_qos0 {
            self.dropping_qos0 = false;
            tracing::warn!(broker = %self.shared.broker, dropped_since_open = self.dropped_qos0, "QoS 0 messages are no longer dropped");
        }
        let topic = self.topic_names.get(&topic);
        let mut delivery = Delivery::new(topic, publish.payload).with_headers(publish.headers);
        if let Some(ack) = ack {
            let shared = Arc::clone(&self.shared);
            delivery = delivery.with_ack(move || shared.acks.acknowledge(ack));
        }
        // Handled right here when the consumer is idle: no hand-off to its task. If the
        // consumer is gone (shutting down) it stays unacknowledged; the broker redelivers.
        self.inbox.send(delivery);
    }

    /// After a reconnect: put back what was held. Without a session on the broker, also renew
    /// every subscription and resend every unacknowledged publish as new.
    /// Returns how many subscriptions it sends again: the socket is ready once the broker
    /// acknowledged them.
    pub(super) fn restore(&mut self, eventloop: &mut W::EventLoop, session_present: bool) -> usize {
        let held = std::mem::take(&mut self.held);
        let mut ledger = self.shared.ledger();
        let mut requests: Vec<W::Request> = Vec::new();
        let mut front: Vec<Pending<W>> = Vec::new();
        if !session_present {
            for filter in self.shared.subscriptions().iter() {
                let subscribe = W::subscribe(vec![filter.clone()], self.shared.qos);
                requests.push(subscribe.clone());
                front.push(Pending {
                    kind: Kind::Subscribe,
                    waiter: None,
                    request: subscribe,
                    strikes: 0,
                });
            }
        }
        // rumqttc never retransmits (un)subscriptions: send again those not acknowledged.
        let keys: Vec<(Kind, u16)> = ledger
            .unacked
            .keys()
            .filter(|(kind, _)| *kind != Kind::Publish)
            .copied()
            .collect();
        let mut unacked_subscriptions: Vec<((Kind, u16), Pending<W>)> = keys
            .into_iter()
            .filter_map(|key| ledger.unacked.remove(&key).map(|pending| (key, pending)))
            .collect();
        unacked_subscriptions.sort_by_key(|((_, pkid), _)| *pkid);
        for (_, pending) in unacked_subscriptions {
            requests.push(W::renumbered(pending.request.clone()));
            front.push(pending);
        }
        for request in held {
            let publish_pkid = match W::view(&request) {
                RequestView::Publish { pkid, .. } => Some(pkid),
                // Acknowledgements of messages the broker sends again (rumqttc drops them too).
                RequestView::Ack => continue,
                // Unsent requests keep their place at the front of the ledger's unsent queue.
                RequestView::Subscribe { .. } | RequestView::Unsubscribe => None,
                RequestView::Other if session_present => None,
                RequestView::Other => continue,
            };
            let Some(pkid) = publish_pkid.filter(|pkid| *pkid != 0) else {
                requests.push(request);
                continue;
            };
            let poisoned = ledger
                .unacked
                .get(&(Kind::Publish, pkid))
                .is_some_and(|pending| pending.strikes >= POISON_AFTER);
            if poisoned {
                if let RequestView::Publish { topic, size, .. } = W::view(&request) {
                    tracing::error!(broker = %self.shared.broker, topic = %crate::socket::shortened(topic), size, "the broker dropped the connection {POISON_AFTER} times with this publish unacknowledged and oldest; it is dropped, not sent again");
                }
                if let Some(pending) = ledger.unacked.remove(&(Kind::Publish, pkid)) {
                    pending.resolve(Err(Error::refused(
                        "publish",
                        self.shared.broker.clone(),
                        format!(
                            "the broker dropped the connection {POISON_AFTER} times while this was the oldest publish it had not acknowledged; not sent again"
                        ),
                    )));
                }
            } else if session_present {
                requests.push(request);
            } else {
                // Lost with the session: send it again as a new publish.
                let pending = ledger
                    .unacked
                    .remove(&(Kind::Publish, pkid))
                    .unwrap_or_else(|| Pending {
                        kind: Kind::Publish,
                        waiter: None,
                        request: request.clone(),
                        strikes: 0,
                    });
                requests.push(W::renumbered(request));
                front.push(pending);
            }
        }
        for pending in front.into_iter().rev() {
            ledger.unsent.push_front(pending);
        }
        drop(ledger);
        let subscriptions = requests
            .iter()
            .filter(|request| matches!(W::view(request), RequestView::Subscribe { .. }))
            .count();
        W::pending(eventloop).extend(requests);
        subscriptions
    }
}
