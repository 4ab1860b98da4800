//! Acknowledgements of received messages (PUBACK, PUBREC), in the order the messages arrived.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rumqttc::QoS;

use super::wire::Wire;

/// Acknowledgements of received messages on their way to the broker, which must get them in the
/// order the messages arrived (MQTT 3.1.1 §4.6; the consumer handles them in that order).
///
/// The connection task writes waiting acknowledgements itself, straight into the connection,
/// before each poll of the event loop, and flushes them once before the poll would wait on the
/// network. Handing each to rumqttc instead would cost a wake-up and a write per message
/// (measured: 2.4× the raw client's CPU per message at QoS 1), and its `pending` queue, served
/// one request per turn while reads bring up to ten messages, fell tens of thousands of
/// acknowledgements behind a fast stream. Only an acknowledgement made while the task waits in
/// a poll travels through rumqttc's request channel, to wake it; the others wait until rumqttc
/// wrote that one — none may overtake it.
pub(super) struct AckPath<W: Wire> {
    client: W::Client,
    queue: Mutex<AckQueue>,
    /// Counts connection losses: an acknowledgement belongs to the connection its message
    /// came on.
    connection: AtomicU64,
    /// The connection task waits in a poll: an acknowledgement must wake it.
    polling: AtomicBool,
}

#[derive(Default)]
struct AckQueue {
    pub(super) waiting: VecDeque<Ack>,
    /// Packet id of the acknowledgement in the request channel.
    pub(super) in_channel: Option<u16>,
}

/// The acknowledgement a received QoS 1 (PUBACK) or QoS 2 (PUBREC) message needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    pub(super) pkid: u16,
    pub(super) qos: QoS,
    /// The connection the message came on (see [`AckPath::ack_for`]).
    connection: u64,
}

impl<W: Wire> AckPath<W> {
    pub(super) fn new(client: W::Client) -> Self {
        AckPath {
            client,
            queue: Mutex::new(AckQueue::default()),
            connection: AtomicU64::new(0),
            polling: AtomicBool::new(false),
        }
    }

    /// The acknowledgement a message just received with `pkid` and `qos` will need.
    pub(super) fn ack_for(&self, pkid: u16, qos: QoS) -> Ack {
        Ack {
            pkid,
            qos,
            connection: self.connection.load(Ordering::Acquire),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, AckQueue> {
        // Each operation leaves the queue consistent: usable even after a panic elsewhere.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `ack`. While the connection task waits in a poll, the oldest queued goes through
    /// the request channel (when none is there), which wakes it.
    pub(super) fn acknowledge(&self, ack: Ack) {
        let mut queue = self.queue();
        // A message of a lost connection: on this one its packet id can be another message's.
        // The broker sends it again (with a session) or it is gone with the session.
        if ack.connection != self.connection.load(Ordering::Acquire) {
            tracing::debug!(
                pkid = ack.pkid,
                "acknowledgement of a lost connection dropped"
            );
            return;
        }
        queue.waiting.push_back(ack);
        if queue.in_channel.is_some() || !self.polling.load(Ordering::Acquire) {
            return;
        }
        let Some(oldest) = queue.waiting.pop_front() else {
            return;
        };
        if W::try_ack(&self.client, oldest.pkid, oldest.qos) {
            queue.in_channel = Some(oldest.pkid);
        } else {
            // The channel is full: the connection task wakes for what fills it and writes this
            // one itself before its next poll. Never handed over from a task of its own: that
            // could enter the channel after the connection was lost, and be written on the
            // next one, acknowledging whatever message has its packet id there.
            queue.waiting.push_front(oldest);
        }
    }

    /// The connection task is about to poll: takes the acknowledgements it writes first, unless
    /// one is still in the request channel (they must not overtake it).
    pub(super) fn before_poll(&self, batch: &mut Vec<Ack>) {
        let mut queue = self.queue();
        self.polling.store(true, Ordering::Release);
        if queue.in_channel.is_none() {
            batch.extend(queue.waiting.drain(..));
        }
    }

    /// The connection task's poll returned: it writes what is acknowledged from now on before
    /// its next poll.
    pub(super) fn after_poll(&self) {
        self.polling.store(false, Ordering::Release);
    }

    /// rumqttc wrote the acknowledgement `pkid`: if it was the one in the channel, the waiting
    /// ones may follow.
    pub(super) fn written(&self, pkid: u16) {
        let mut queue = self.queue();
        if queue.in_channel == Some(pkid) {
            queue.in_channel = None;
        }
    }

    /// The connection is lost: rumqttc dropped the acknowledgements in its channel (the broker
    /// sends those messages again), and so do we.
    pub(super) fn connection_lost(&self) {
        let mut queue = self.queue();
        // Under the queue lock: no acknowledgement of the old connection slips in after this.
        self.connection.fetch_add(1, Ordering::AcqRel);
        queue.waiting.clear();
        queue.in_channel = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::mqtt::wire311::V311;
    use rumqttc::{AsyncClient, MqttOptions};

    fn ack(pkid: u16) -> Ack {
        Ack {
            pkid,
            qos: QoS::AtLeastOnce,
            connection: 0,
        }
    }

    fn before_poll(path: &AckPath<V311>) -> Vec<u16> {
        let mut batch = Vec::new();
        path.before_poll(&mut batch);
        batch.iter().map(|ack| ack.pkid).collect()
    }

    #[test]
    fn the_connection_task_writes_what_was_acknowledged_while_it_was_busy() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::<V311>::new(client);
        for pkid in 1..=3 {
            path.acknowledge(ack(pkid));
        }
        assert_eq!(before_poll(&path), [1, 2, 3]);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        let mut qos2 = Vec::new();
        path.after_poll();
        path.acknowledge(path.ack_for(4, QoS::ExactlyOnce));
        path.before_poll(&mut qos2);
        assert!(matches!(qos2[..], [a] if a.qos == QoS::ExactlyOnce));
    }

    #[test]
    fn acknowledgements_never_overtake_the_one_in_the_request_channel() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::<V311>::new(client);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        // The task waits in a poll: 1 goes through the channel to wake it, 2 and 3 wait.
        for pkid in 1..=3 {
            path.acknowledge(ack(pkid));
        }
        path.after_poll();
        assert_eq!(
            before_poll(&path),
            [] as [u16; 0],
            "1 is still in the channel"
        );
        path.written(3); // not the one in the channel
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        path.written(1);
        assert_eq!(before_poll(&path), [2, 3]);
    }

    #[test]
    fn a_lost_connection_drops_the_waiting_acknowledgements() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::<V311>::new(client);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        path.acknowledge(ack(1)); // into the channel
        path.acknowledge(ack(2));
        path.connection_lost();
        path.after_poll();
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        // Nothing is in the channel any more: the next one while polling goes there.
        path.acknowledge(path.ack_for(7, QoS::AtLeastOnce));
        path.acknowledge(path.ack_for(8, QoS::AtLeastOnce));
        path.after_poll();
        assert_eq!(before_poll(&path), [] as [u16; 0], "8 waits behind 7");
        path.written(7);
        assert_eq!(before_poll(&path), [8]);
    }

    #[test]
    fn an_acknowledgement_that_finds_the_channel_full_never_reaches_a_later_connection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, mut eventloop) =
                AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 1);
            // The request channel is full (a publish of a handler).
            client
                .try_publish("t", QoS::AtLeastOnce, false, "x")
                .expect("room for one");
            let path = AckPath::<V311>::new(client);
            assert_eq!(before_poll(&path), [] as [u16; 0]);
            // The task waits in a poll; a handler finishes a QoS 2 message of this connection.
            path.acknowledge(path.ack_for(5, QoS::ExactlyOnce));
            // The connection is lost: rumqttc empties its channel (clean), we drop ours.
            path.connection_lost();
            eventloop.clean();
            eventloop.pending.clear();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            // Whatever entered the channel since would be written on the next connection.
            eventloop.clean();
            let late: Vec<String> = eventloop.pending.iter().map(|r| format!("{r:?}")).collect();
            assert!(
                late.is_empty(),
                "an acknowledgement of the lost connection entered the channel: {late:?}"
            );
            path.after_poll();
            assert_eq!(
                before_poll(&path),
                [] as [u16; 0],
                "dropped with the connection"
            );
        });
    }

    #[test]
    fn an_acknowledgement_made_for_an_earlier_connection_is_not_written_on_the_next() {
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("acks", "localhost", 1883), 8);
        let path = AckPath::<V311>::new(client);
        let captured = path.ack_for(5, QoS::AtLeastOnce); // a message of the first connection
        path.connection_lost();
        // Its handler finishes after the reconnect: packet id 5 may now be another message.
        path.acknowledge(captured);
        assert_eq!(before_poll(&path), [] as [u16; 0]);
        path.after_poll(); // busy: acknowledgements wait for the task to write them
        path.acknowledge(path.ack_for(5, QoS::AtLeastOnce));
        assert_eq!(before_poll(&path), [5], "this connection's own is written");
    }
}
