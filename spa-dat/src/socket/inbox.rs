//! The receiving half of a socket, and handling messages on the transport's own task.
//!
//! A transport that reads the network in a task of its own would hand every message to the
//! consumer's task: one wake-up and one queue round trip per message. Most handlers finish on
//! their first poll, so an inbox made with [`Inbox::handled_on_arrival`] lets the consumer
//! handle a message right where it arrived, whenever nothing older is still waiting; what does
//! not finish there is queued in order, as a delivery would be.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::record::Pending;
use super::Delivery;

/// Where a transport that never delivers a message again (the in-process bus) finds the
/// [`Pending`] count its deliveries join: set by the consumer that owns the inbox
/// ([`Inbox::drain_into`]); unset, nothing is counted.
pub(crate) type DrainSlot = Arc<OnceLock<Arc<Pending>>>;

/// Handles deliveries on the transport's task as far as that goes without awaiting.
pub(crate) trait ArrivalHandler: Send + Sync + 'static {
    /// Handles `delivery`; returns what is left to await, which the inbox's owner awaits before
    /// the next delivery.
    fn handle_now(&self, delivery: Delivery) -> Option<BoxFuture<'static, ()>>;
}

/// What the owner of an inbox takes out of it.
pub(crate) enum Arrival {
    /// A delivery nobody touched yet.
    Delivery(Delivery),
    /// A delivery handled on arrival whose handling must be awaited to its end.
    Started(BoxFuture<'static, ()>),
}

/// The receiving half of a socket: deliveries for its subscriptions, in arrival order.
#[derive(Debug)]
pub struct Inbox {
    receiver: Receiver,
    /// Reused by [`Inbox::recv_arrivals`] on bounded inboxes.
    scratch: Vec<Delivery>,
    /// A bounded inbox's sender, for [`Inbox::depth`]; weak, so the inbox still ends when the
    /// transport drops its sender.
    sender: Option<mpsc::WeakSender<Delivery>>,
    /// Only where the transport never delivers a message again: see [`DrainSlot`].
    drain: Option<DrainSlot>,
}

#[derive(Debug)]
enum Receiver {
    Bounded(mpsc::Receiver<Delivery>),
    OnArrival {
        arrivals: mpsc::UnboundedReceiver<Arrival>,
        state: Arc<ArrivalState>,
    },
}

/// Shared by an inbox handled on arrival and its sender.
pub(crate) struct ArrivalState {
    /// Arrivals queued and not yet finished by the inbox's owner: a message may be handled on
    /// arrival only when this is zero, so that messages are handled in order.
    outstanding: AtomicUsize,
    /// Set once by the inbox's owner; handling on arrival ends when the inbox closes.
    handler: OnceLock<Arc<dyn ArrivalHandler>>,
    /// How many arrivals may be outstanding before the transport stops reading.
    capacity: usize,
    /// Told when outstanding arrivals drop below `capacity`.
    room: tokio::sync::Notify,
    /// Deliveries may be handled on the sender's task ([`Inbox::handled_on_arrival`]); false
    /// for [`Inbox::queued`].
    on_arrival: bool,
    /// Deliveries dropped because the inbox had closed.
    refused: AtomicUsize,
}

impl std::fmt::Debug for ArrivalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrivalState")
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ArrivalState {
    fn finished(&self) {
        // Release: whatever the finished handler wrote is visible to the next one to run on
        // the transport's task, which loads this with Acquire.
        if self.outstanding.fetch_sub(1, Ordering::Release) == self.capacity {
            // Every sender waiting for room checks again (several may wait: the bus's
            // publishers); one that started waiting after this saw the room before waiting.
            self.room.notify_waiters();
        }
    }
}

/// The transport's end of an inbox made with [`Inbox::handled_on_arrival`].
#[derive(Debug)]
pub struct ArrivalSender {
    arrivals: mpsc::UnboundedSender<Arrival>,
    state: Arc<ArrivalState>,
    drain: Option<DrainSlot>,
}

impl ArrivalSender {
    /// Hands `delivery` to the inbox's owner: handled right here when the owner handles on
    /// arrival and nothing older is waiting, queued otherwise. Dropped once the inbox closed
    /// (unacknowledged, so an at-least-once transport delivers it again).
    ///
    /// Call it only from the transport's own task: the consumer's handler runs in it until its
    /// first `await`, so it must not be a task the handler may wait for while it holds a lock.
    pub fn send(&self, delivery: Delivery) {
        let delivery = match self.drain.as_ref().and_then(|slot| slot.get()) {
            Some(pending) => delivery.counted_in(pending),
            None => delivery,
        };
        let arrival = match self.handle_now(delivery) {
            Ok(None) => return,
            Ok(Some(rest)) => Arrival::Started(rest),
            Err(delivery) => Arrival::Delivery(delivery),
        };
        self.state.outstanding.fetch_add(1, Ordering::Relaxed);
        if self.arrivals.send(arrival).is_err() {
            // The inbox is gone: nothing will finish this one.
            self.state.outstanding.fetch_sub(1, Ordering::Relaxed);
            self.state.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many deliveries were dropped because the inbox had closed.
    pub(crate) fn refused(&self) -> usize {
        self.state.refused.load(Ordering::Relaxed)
    }

    /// Whether the inbox holds as many arrivals as its capacity: a transport then waits for
    /// [`ArrivalSender::room`] before reading more, so a slow consumer slows the reading (and
    /// the broker's sending) instead of growing memory. False once the inbox is closed: what
    /// is read then is dropped unacknowledged, and waiting would never end.
    pub fn is_full(&self) -> bool {
        self.state.outstanding.load(Ordering::Acquire) >= self.state.capacity
            && !self.arrivals.is_closed()
    }

    /// Whether the inbox holds its capacity and as much again (at least 1,024 more): past
    /// this a transport stops reading even for what it must read otherwise (see the MQTT
    /// driver), so memory stays bounded.
    pub fn is_far_behind(&self) -> bool {
        let capacity = self.state.capacity;
        self.state.outstanding.load(Ordering::Acquire)
            >= capacity.saturating_add(capacity.max(1024))
    }

    /// Whether the inbox holds its capacity and sixteen times as much again (at least 16,384
    /// more): past this a transport that reads on for a publish of its own awaiting the
    /// broker's acknowledgement drops what it may drop (the MQTT driver: QoS 0 messages), so
    /// memory stays bounded even then.
    pub fn is_past_reading_limit(&self) -> bool {
        let capacity = self.state.capacity;
        self.state.outstanding.load(Ordering::Acquire)
            >= capacity.saturating_add(capacity.max(1024).saturating_mul(16))
    }

    /// Waits until the inbox is no longer full (see [`ArrivalSender::is_full`]); returns at
    /// once when the inbox is closed.
    pub async fn room(&self) {
        loop {
            // Registered before the check, so that a notification between the two is not lost.
            let notified = self.state.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.outstanding.load(Ordering::Acquire) < self.state.capacity
                || self.arrivals.is_closed()
            {
                return;
            }
            notified.await;
        }
    }

    /// Handles `delivery` now if allowed; gives it back otherwise.
    // The delivery is handed back as it is: boxing it would allocate per message.
    #[allow(clippy::result_large_err)]
    fn handle_now(&self, delivery: Delivery) -> Result<Option<BoxFuture<'static, ()>>, Delivery> {
        if self.state.outstanding.load(Ordering::Acquire) != 0 || self.arrivals.is_closed() {
            return Err(delivery);
        }
        match self.state.handler.get() {
            Some(handler) => Ok(handler.handle_now(delivery)),
            None => Err(delivery),
        }
    }
}

/// How many deliveries wait in an inbox, readable while its owner holds the inbox.
#[derive(Debug, Clone)]
pub(crate) enum InboxDepth {
    Bounded(mpsc::WeakSender<Delivery>),
    OnArrival(Arc<ArrivalState>),
}

impl InboxDepth {
    /// Deliveries queued and not yet taken (0 once the inbox closed).
    pub(crate) fn queued(&self) -> usize {
        match self {
            InboxDepth::Bounded(sender) => sender
                .upgrade()
                .map_or(0, |sender| sender.max_capacity() - sender.capacity()),
            InboxDepth::OnArrival(state) => state.outstanding.load(Ordering::Relaxed),
        }
    }
}

impl Inbox {
    /// A probe of this inbox's depth (see [`InboxDepth`]); `None` when the transport's sender
    /// is gone.
    pub(crate) fn depth(&self) -> Option<InboxDepth> {
        match &self.receiver {
            Receiver::Bounded(_) => self.sender.as_ref().map(|s| InboxDepth::Bounded(s.clone())),
            Receiver::OnArrival { state, .. } => Some(InboxDepth::OnArrival(Arc::clone(state))),
        }
    }

    /// A bounded inbox and the sender a transport feeds it through: the transport waits
    /// while it is full.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Delivery>, Inbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut inbox = Inbox::new(Receiver::Bounded(rx));
        inbox.sender = Some(tx.downgrade());
        (tx, inbox)
    }

    /// An inbox whose consumer may handle messages on the transport's task (see
    /// [`ArrivalSender::send`]). Sending never waits, so the transport's task never waits on
    /// the application; it holds `capacity` arrivals before [`ArrivalSender::room`] makes the
    /// transport stop reading.
    pub fn handled_on_arrival(capacity: usize) -> (ArrivalSender, Inbox) {
        Inbox::arrivals(capacity, true, None)
    }

    /// An inbox whose sender never waits and never runs the consumer's handler: it queues,
    /// and [`ArrivalSender::room`] tells a sender that should wait while the inbox holds
    /// `capacity` deliveries. For a transport whose senders are other tasks — some of which
    /// must not wait (the in-process bus: a handler publishing into its own subscription).
    /// Such a transport never delivers a message again, so shutdown drains the inbox: its
    /// consumer finishes what it holds, within the grace period.
    pub fn queued(capacity: usize) -> (ArrivalSender, Inbox) {
        Inbox::arrivals(capacity, false, Some(DrainSlot::default()))
    }

    fn arrivals(
        capacity: usize,
        on_arrival: bool,
        drain: Option<DrainSlot>,
    ) -> (ArrivalSender, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ArrivalState {
            outstanding: AtomicUsize::new(0),
            handler: OnceLock::new(),
            capacity: capacity.max(1),
            room: tokio::sync::Notify::new(),
            on_arrival,
            refused: AtomicUsize::new(0),
        });
        let sender = ArrivalSender {
            arrivals: tx,
            state: Arc::clone(&state),
            drain: drain.clone(),
        };
        let receiver = Receiver::OnArrival {
            arrivals: rx,
            state,
        };
        let mut inbox = Inbox::new(receiver);
        inbox.drain = drain;
        (sender, inbox)
    }

    fn new(receiver: Receiver) -> Self {
        Inbox {
            receiver,
            scratch: Vec::new(),
            sender: None,
            drain: None,
        }
    }

    /// Counts what its transport delivers from now on in `pending`, until each delivery is
    /// finished with — where the transport never delivers a message again (see
    /// [`Inbox::queued`]). Returns whether it does: then shutdown drains the inbox.
    pub(crate) fn drain_into(&self, pending: &Arc<Pending>) -> bool {
        match &self.drain {
            Some(slot) => {
                let _ = slot.set(Arc::clone(pending));
                true
            }
            None => false,
        }
    }

    /// Drains as `inner` does (see [`Inbox::drain_into`]): for an inbox fed from `inner` by a
    /// wrapper (the fault-injecting bus). Returns the slot, for what the wrapper delivers of
    /// its own.
    pub(crate) fn drains_as(&mut self, inner: &Inbox) -> Option<DrainSlot> {
        self.drain.clone_from(&inner.drain);
        self.drain.clone()
    }

    /// The next delivery; `None` once the socket is closed.
    pub async fn recv(&mut self) -> Option<Delivery> {
        match &mut self.receiver {
            Receiver::Bounded(rx) => rx.recv().await,
            Receiver::OnArrival { arrivals, state } => loop {
                match arrivals.recv().await? {
                    Arrival::Delivery(delivery) => {
                        state.finished();
                        return Some(delivery);
                    }
                    Arrival::Started(rest) => {
                        rest.await;
                        state.finished();
                    }
                }
            },
        }
    }

    /// Lets `handler` handle deliveries on the transport's task until the inbox closes (the
    /// first handler stays). After each arrival taken with [`Inbox::recv_arrivals`] the owner
    /// calls [`Inbox::finished`]. A bounded inbox ignores the handler.
    pub(crate) fn handle_on_arrival(&self, handler: Arc<dyn ArrivalHandler>) {
        if let Receiver::OnArrival { state, .. } = &self.receiver {
            if state.on_arrival {
                let _ = state.handler.set(handler);
            }
        }
    }

    /// Takes no more deliveries, and nothing more starts on arrival; what is in the inbox can
    /// still be taken.
    pub(crate) fn close(&mut self) {
        match &mut self.receiver {
            Receiver::Bounded(rx) => rx.close(),
            Receiver::OnArrival { arrivals, state } => {
                arrivals.close();
                // A transport waiting for room stops waiting.
                state.room.notify_waiters();
            }
        }
    }

    /// Up to `limit` arrivals at once (at least one unless closed).
    pub(crate) async fn recv_arrivals(&mut self, buffer: &mut Vec<Arrival>, limit: usize) -> usize {
        match &mut self.receiver {
            Receiver::Bounded(rx) => {
                let received = rx.recv_many(&mut self.scratch, limit).await;
                buffer.extend(self.scratch.drain(..).map(Arrival::Delivery));
                received
            }
            Receiver::OnArrival { arrivals, .. } => arrivals.recv_many(buffer, limit).await,
        }
    }

    /// An arrival already waiting, if any.
    pub(crate) fn try_recv_arrival(&mut self) -> Option<Arrival> {
        match &mut self.receiver {
            Receiver::Bounded(rx) => rx.try_recv().ok().map(Arrival::Delivery),
            Receiver::OnArrival { arrivals, .. } => arrivals.try_recv().ok(),
        }
    }

    /// Closes the inbox and drops what is still in it; returns how many messages that was.
    pub(crate) fn discard(&mut self) -> usize {
        self.close();
        let mut discarded = 0;
        while let Some(arrival) = self.try_recv_arrival() {
            drop(arrival);
            self.finished();
            discarded += 1;
        }
        discarded
    }

    /// The owner finished an arrival taken with [`Inbox::recv_arrivals`] or
    /// [`Inbox::try_recv_arrival`].
    pub(crate) fn finished(&self) {
        if let Receiver::OnArrival { state, .. } = &self.receiver {
            state.finished();
        }
    }
}

/// A transport waiting for room in a dropped inbox stops waiting, as after `Inbox::close`.
impl Drop for Inbox {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;

    use super::*;

    /// Records what it handled; leaves work for later when `unfinished` is set.
    #[derive(Default)]
    struct Recorder {
        handled: std::sync::Mutex<Vec<Bytes>>,
        unfinished: AtomicBool,
    }

    impl ArrivalHandler for Arc<Recorder> {
        fn handle_now(&self, delivery: Delivery) -> Option<BoxFuture<'static, ()>> {
            self.handled.lock().expect("handled").push(delivery.payload);
            self.unfinished
                .load(Ordering::SeqCst)
                .then(|| Box::pin(async {}) as BoxFuture<'static, ()>)
        }
    }

    fn delivery(payload: &'static str) -> Delivery {
        Delivery::new(Arc::from("t"), Bytes::from_static(payload.as_bytes()))
    }

    fn handled(recorder: &Recorder) -> Vec<Bytes> {
        recorder.handled.lock().expect("handled").clone()
    }

    fn kinds(arrivals: &[Arrival]) -> Vec<&'static str> {
        arrivals
            .iter()
            .map(|a| match a {
                Arrival::Delivery(_) => "delivery",
                Arrival::Started(_) => "started",
            })
            .collect()
    }

    #[tokio::test]
    async fn an_idle_consumer_handles_on_arrival_and_nothing_is_queued() {
        let (sender, mut inbox) = Inbox::handled_on_arrival(16);
        let recorder = Arc::new(Recorder::default());
        inbox.handle_on_arrival(Arc::new(Arc::clone(&recorder)));
        sender.send(delivery("a"));
        sender.send(delivery("b"));
        assert_eq!(handled(&recorder), ["a", "b"]);
        assert!(inbox.try_recv_arrival().is_none());
    }

    #[tokio::test]
    async fn deliveries_wait_behind_unfinished_handling_in_order() {
        let (sender, mut inbox) = Inbox::handled_on_arrival(16);
        let recorder = Arc::new(Recorder::default());
        inbox.handle_on_arrival(Arc::new(Arc::clone(&recorder)));
        recorder.unfinished.store(true, Ordering::SeqCst);
        sender.send(delivery("a"));
        recorder.unfinished.store(false, Ordering::SeqCst);
        sender.send(delivery("b"));
        assert_eq!(handled(&recorder), ["a"], "b waits for a to finish");

        let mut arrivals = Vec::new();
        assert_eq!(inbox.recv_arrivals(&mut arrivals, 10).await, 2);
        assert_eq!(kinds(&arrivals), ["started", "delivery"]);
        inbox.finished();
        sender.send(delivery("c"));
        assert_eq!(handled(&recorder), ["a"], "b is not finished yet");
        arrivals.clear();
        assert_eq!(inbox.recv_arrivals(&mut arrivals, 10).await, 1);
        inbox.finished();
        inbox.finished();
        sender.send(delivery("d"));
        assert_eq!(
            handled(&recorder),
            ["a", "d"],
            "all finished: d is handled at once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sender_waiting_for_room_gets_it_when_the_inbox_drains() {
        let (sender, mut inbox) = Inbox::queued(1);
        let sender = Arc::new(sender);
        sender.send(delivery("fills it"));
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let sender = Arc::clone(&sender);
                tokio::spawn(async move {
                    sender.room().await;
                    sender.send(delivery("next"));
                })
            })
            .collect();
        for _ in 0..4 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), inbox.recv()).await;
            assert!(
                matches!(next, Ok(Some(_))),
                "a sender waits for room forever"
            );
        }
        for task in waiting {
            task.await.expect("sent");
        }
    }

    #[tokio::test]
    async fn without_a_handler_or_once_closed_deliveries_are_not_handled() {
        let (sender, mut inbox) = Inbox::handled_on_arrival(16);
        let recorder = Arc::new(Recorder::default());
        sender.send(delivery("before"));
        inbox.handle_on_arrival(Arc::new(Arc::clone(&recorder)));
        sender.send(delivery("queued behind"));
        inbox.close();
        assert_eq!(inbox.recv().await.map(|d| d.payload), Some("before".into()));
        assert_eq!(
            inbox.recv().await.map(|d| d.payload),
            Some("queued behind".into())
        );
        sender.send(delivery("after"));
        assert_eq!(inbox.recv().await.map(|d| d.payload), None);
        assert!(handled(&recorder).is_empty());
    }
}
