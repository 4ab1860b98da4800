//! A consumer with a concurrency above 1: handlers run as tasks, at most `limit` at once,
//! messages of one key (or partition, or topic: [`MessageOrder`]) one after the other in
//! arrival order, each key in a FIFO queue of its own — a slow key never holds up another.
//!
//! Acknowledgements go to the transport in arrival order, whatever order handlers finish in
//! ([`AckWindow`]): MQTT requires it (3.1.1 §4.6), and Kafka's stored offset then never passes
//! a record that is still being handled. What is in flight and waiting is bounded: past
//! `limit × BUFFER_FACTOR` messages taken from the inbox and not yet acknowledged, the consumer
//! stops reading, and the transport's own back-pressure takes over (the bounded inbox, the
//! MQTT connection not read, the Kafka consumer not polled).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::consumer::Consumer;
use crate::runtime::MessageOrder;
use crate::socket::{Arrival, Delivery, Inbox};

/// Gives a message its ordering key (see [`crate::Application::order_key`]).
pub(crate) type KeyFn = dyn Fn(&Delivery) -> Option<Bytes> + Send + Sync;

/// Messages taken from the inbox and not yet acknowledged, per handler slot.
const BUFFER_FACTOR: usize = 4;

/// Messages taken from the inbox at once.
const BATCH: usize = 64;

/// What orders a message with others: messages with equal keys run one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum OrderKey {
    Key(Bytes),
    Partition(Arc<str>, i32),
    Topic(Arc<str>),
    /// Unordered: a key no other message has.
    Alone(u64),
}

impl OrderKey {
    pub(super) fn of(delivery: &Delivery, ordering: &Ordering, sequence: u64) -> Self {
        let partition = || match delivery.position {
            Some(position) => OrderKey::Partition(Arc::clone(&delivery.topic), position.partition),
            None => OrderKey::Topic(Arc::clone(&delivery.topic)),
        };
        let key = || match &ordering.key {
            Some(key_of) => key_of(delivery),
            None => delivery.key.clone(),
        };
        match ordering.order {
            MessageOrder::Key => key().map_or_else(partition, OrderKey::Key),
            MessageOrder::KeyElseUnordered => {
                key().map_or(OrderKey::Alone(sequence), OrderKey::Key)
            }
            MessageOrder::Partition => partition(),
            MessageOrder::Unordered => OrderKey::Alone(sequence),
        }
    }
}

/// How a concurrent consumer orders its messages.
pub(crate) struct Ordering {
    pub(crate) order: MessageOrder,
    /// The user's key function, instead of the transport's key.
    pub(crate) key: Option<Arc<KeyFn>>,
}

/// Each key's messages waiting, in arrival order, and which keys may start one.
#[derive(Default)]
struct KeyQueues {
    queues: HashMap<OrderKey, KeyQueue>,
    /// Keys with messages waiting and none running, in the order they became so.
    ready: VecDeque<OrderKey>,
}

#[derive(Default)]
struct KeyQueue {
    waiting: VecDeque<Delivery>,
    running: bool,
}

impl KeyQueues {
    fn arrived(&mut self, key: OrderKey, delivery: Delivery) {
        let queue = self.queues.entry(key.clone()).or_default();
        queue.waiting.push_back(delivery);
        if !queue.running && queue.waiting.len() == 1 {
            self.ready.push_back(key);
        }
    }

    /// The oldest waiting message of the next key that may start; the key is running then.
    fn next_ready(&mut self) -> Option<(OrderKey, Delivery)> {
        while let Some(key) = self.ready.pop_front() {
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            if let Some(delivery) = queue.waiting.pop_front() {
                queue.running = true;
                return Some((key, delivery));
            }
        }
        None
    }

    /// Whether `key` has nothing running and nothing waiting.
    fn is_idle(&self, key: &OrderKey) -> bool {
        !self.queues.contains_key(key)
    }

    /// `key` runs a message that did not pass through its queue.
    fn running(&mut self, key: OrderKey) {
        self.queues.entry(key).or_default().running = true;
    }

    /// `key`'s running message finished: its next one may start.
    fn finished(&mut self, key: OrderKey) {
        let Some(queue) = self.queues.get_mut(&key) else {
            return;
        };
        queue.running = false;
        if queue.waiting.is_empty() {
            self.queues.remove(&key);
        } else {
            self.ready.push_back(key);
        }
    }
}

type TransportAck = Box<dyn FnOnce() + Send + Sync>;

/// Runs the transport's acknowledgements in arrival order: each delivery's own `ack` marks
/// it finished, and the finished prefix of the window is released. For a transport that
/// takes acknowledgements in any order (Kafka keeps its own per-partition gap tracking), they
/// go through at once and the window only counts what is unfinished.
#[derive(Default)]
pub(super) struct AckWindow {
    state: Mutex<WindowState>,
    /// Held from taking a finished prefix out of the window until its acknowledgements ran:
    /// two finishers on two threads release their prefixes one after the other, in order.
    releasing: Mutex<()>,
    any_order: bool,
}

#[derive(Default)]
struct WindowState {
    /// With `any_order`: messages taken and not finished.
    unfinished: usize,
    /// Sequence number of `slots[0]`.
    first: u64,
    /// Per message in arrival order: its transport acknowledgement, and whether it finished.
    slots: VecDeque<(Option<TransportAck>, bool)>,
}

impl AckWindow {
    /// An empty window; `any_order` for a transport that takes acknowledgements in any order.
    pub(super) fn new(any_order: bool) -> Self {
        AckWindow {
            any_order,
            ..AckWindow::default()
        }
    }

    /// Takes `delivery`'s acknowledgement into the window, after every one in it, and gives
    /// it one that marks it finished here.
    pub(super) fn track(self: &Arc<Self>, mut delivery: Delivery) -> Delivery {
        self.adopt(&mut delivery);
        delivery
    }

    /// [`AckWindow::track`] for a delivery in place.
    fn adopt(self: &Arc<Self>, delivery: &mut Delivery) {
        let ack = delivery.take_ack();
        if self.any_order {
            self.lock().unfinished += 1;
            let window = Arc::clone(self);
            delivery.set_ack(move || {
                window.lock().unfinished -= 1;
                if let Some(ack) = ack {
                    ack();
                }
            });
            return;
        }
        let sequence = {
            let mut state = self.lock();
            state.slots.push_back((ack, false));
            state.first + state.slots.len() as u64 - 1
        };
        let window = Arc::clone(self);
        delivery.set_ack(move || window.finished(sequence));
    }

    fn finished(&self, sequence: u64) {
        let _releasing = self
            .releasing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut released = Vec::new();
        {
            let mut state = self.lock();
            let index = (sequence - state.first) as usize;
            if let Some(slot) = state.slots.get_mut(index) {
                slot.1 = true;
            }
            while state.slots.front().is_some_and(|(_, done)| *done) {
                if let Some((ack, _)) = state.slots.pop_front() {
                    released.extend(ack);
                }
                state.first += 1;
            }
        }
        // In order, outside the state lock (a transport's ack takes locks of its own, and
        // tracking new messages must not wait for it), inside `releasing`.
        for ack in released {
            ack();
        }
    }

    /// Messages taken and not yet acknowledged (with `any_order`: not yet finished).
    pub(super) fn len(&self) -> usize {
        let state = self.lock();
        if self.any_order {
            state.unfinished
        } else {
            state.slots.len()
        }
    }

    /// Messages taken and not finished.
    pub(super) fn unfinished(&self) -> usize {
        let state = self.lock();
        if self.any_order {
            state.unfinished
        } else {
            state.slots.iter().filter(|(_, done)| !done).count()
        }
    }

    /// No acknowledgement is held back: one made now is in order.
    fn is_empty(&self) -> bool {
        self.any_order || self.lock().slots.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        // Every change is a push, a flag or a pop: consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Consumer {
    /// Handles what arrives in `inbox` with up to `limit` handlers at once, in `order`, until
    /// shutdown or until the socket closes; then waits for the handlers still running (each
    /// gets the shutdown grace period).
    pub(crate) async fn run_concurrently(
        self: Arc<Self>,
        mut inbox: Inbox,
        limit: usize,
        ordering: Ordering,
    ) {
        let window = Arc::new(AckWindow::new(self.acks_in_any_order));
        let most_unacknowledged = limit * BUFFER_FACTOR;
        let mut keys = KeyQueues::default();
        let mut running: JoinSet<OrderKey> = JoinSet::new();
        let mut sequence: u64 = 0;
        let mut batch = Vec::with_capacity(BATCH);
        let stop = self.stop_taking();
        tokio::pin!(stop);
        loop {
            let room = window.len() < most_unacknowledged;
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    match joined {
                        Ok(key) => keys.finished(key),
                        // The task body catches handlers' panics; this is a bug in the engine,
                        // and that key stays blocked (its messages are not acknowledged).
                        Err(error) => tracing::error!(app = %self.runtime.name, %error, "consumer task failed"),
                    }
                }
                received = inbox.recv_arrivals(&mut batch, BATCH), if room => {
                    if received == 0 {
                        tracing::info!(app = %self.runtime.name, "socket closed; consumer stops");
                        break;
                    }
                    for arrival in batch.drain(..) {
                        match arrival {
                            Arrival::Delivery(delivery) => {
                                let key = OrderKey::of(&delivery, &ordering, sequence);
                                sequence += 1;
                                if running.len() < limit && keys.is_idle(&key) {
                                    // Most handlers finish on their first poll: try it right
                                    // here, with no task and no queue; only what has to wait
                                    // becomes a task.
                                    self.start_here(&window, &mut keys, &mut running, key, delivery);
                                } else {
                                    keys.arrived(key, window.track(delivery));
                                }
                            }
                            // Only with handling on arrival, which this consumer does not ask for.
                            Arrival::Started(rest) => rest.await,
                        }
                        inbox.finished();
                    }
                }
            }
            while running.len() < limit {
                let Some((key, delivery)) = keys.next_ready() else {
                    break;
                };
                self.start(&mut running, key, delivery);
            }
        }
        // Nothing new starts; what runs gets its grace period (enforced in each handler call).
        let discarded = inbox.discard();
        drop(keys);
        while running.join_next().await.is_some() {}
        // Every message left unhandled is one the window never saw finish.
        self.report_left(window.unfinished() + discarded);
    }

    /// Handles `delivery` as far as its handler's first poll on the consumer's own task. With
    /// nothing held back in the window its acknowledgement goes straight to the transport;
    /// a handler that has to wait continues as a task, its key running.
    fn start_here(
        self: &Arc<Self>,
        window: &Arc<AckWindow>,
        keys: &mut KeyQueues,
        running: &mut JoinSet<OrderKey>,
        key: OrderKey,
        delivery: Delivery,
    ) {
        let direct = window.is_empty();
        let delivery = if direct {
            delivery
        } else {
            window.track(delivery)
        };
        let Some(mut unfinished) = self.handle_now(delivery) else {
            return;
        };
        if direct {
            // Later messages may finish first: from now on its acknowledgement waits its turn.
            window.adopt(unfinished.delivery_mut());
        }
        keys.running(key.clone());
        let consumer = Arc::clone(self);
        running.spawn(async move {
            consumer.finish(unfinished).await;
            key
        });
    }

    fn start(self: &Arc<Self>, running: &mut JoinSet<OrderKey>, key: OrderKey, delivery: Delivery) {
        let consumer = Arc::clone(self);
        running.spawn(async move {
            if let Some(unfinished) = consumer.handle_now(delivery) {
                consumer.finish(unfinished).await;
            }
            key
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_finished_on_many_threads_still_leave_in_arrival_order() {
        const MESSAGES: u64 = 20_000;
        const THREADS: u64 = 4;
        let window = Arc::new(AckWindow::default());
        let acked = Arc::new(Mutex::new(Vec::with_capacity(MESSAGES as usize)));
        let mut deliveries: Vec<Option<Delivery>> = (0..MESSAGES)
            .map(|i| {
                let acked = Arc::clone(&acked);
                // A transport's ack takes time (MQTT queues a PUBACK): yield, as it may.
                let delivery = Delivery::new(Arc::from("t"), Bytes::new()).with_ack(move || {
                    std::thread::yield_now();
                    acked.lock().expect("lock").push(i);
                });
                Some(window.track(delivery))
            })
            .collect();
        // Each thread finishes every THREADS-th message: finishes race across threads, as
        // handlers on a multi-threaded runtime do.
        let shares: Vec<Vec<Delivery>> = (0..THREADS)
            .map(|t| {
                (t..MESSAGES)
                    .step_by(THREADS as usize)
                    .filter_map(|i| deliveries[i as usize].take())
                    .collect()
            })
            .collect();
        let threads: Vec<_> = shares
            .into_iter()
            .map(|share| std::thread::spawn(move || share.into_iter().for_each(Delivery::ack)))
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let acked = acked.lock().expect("lock");
        let expected: Vec<u64> = (0..MESSAGES).collect();
        assert_eq!(acked.len(), expected.len());
        let first_out_of_order = acked.iter().zip(&expected).position(|(a, e)| a != e);
        assert_eq!(
            first_out_of_order, None,
            "acknowledged out of arrival order"
        );
    }

    #[test]
    fn acknowledgements_are_released_in_arrival_order() {
        let window = Arc::new(AckWindow::default());
        let acked = Arc::new(Mutex::new(Vec::new()));
        let deliveries: Vec<Delivery> = (0..4u64)
            .map(|i| {
                let acked = Arc::clone(&acked);
                let delivery = Delivery::new(Arc::from("t"), Bytes::new())
                    .with_ack(move || acked.lock().expect("lock").push(i));
                window.track(delivery)
            })
            .collect();
        let mut deliveries: Vec<Option<Delivery>> = deliveries.into_iter().map(Some).collect();
        let mut finish = |i: usize| deliveries[i].take().expect("once").ack();
        finish(2);
        finish(1);
        assert!(acked.lock().expect("lock").is_empty(), "0 is still running");
        finish(0);
        assert_eq!(*acked.lock().expect("lock"), [0, 1, 2]);
        assert_eq!(window.len(), 1);
        finish(3);
        assert_eq!(*acked.lock().expect("lock"), [0, 1, 2, 3]);
    }
}
