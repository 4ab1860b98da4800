//! What goes onto the bus ([`Outgoing`]) and what comes off it ([`Delivery`]), with the same
//! transport-neutral [`Headers`]. How a reply and a dead letter are addressed and labelled is
//! decided here, once, for every transport.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::headers::{self, Headers};
use crate::message::SpaMessage;
use crate::topic::shortened_to;

/// One message to publish: the single primitive every transport implements
/// ([`super::SpaSocket::send`]).
#[derive(Clone)]
pub struct Outgoing {
    /// Destination topic.
    pub topic: String,
    /// The bytes on the wire, as they are.
    pub payload: Bytes,
    /// Metadata beside the payload, where the transport can carry it.
    pub headers: Headers,
    /// What the message is about (a customer, a device): consumers that order by key handle
    /// one key's messages in order and different keys concurrently. Kafka's record key (it
    /// also picks the partition); carried as it is on the in-process bus; MQTT has none.
    pub key: Option<Bytes>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("topic", &self.topic)
            .field("len", &self.payload.len())
            .field("headers", &self.headers)
            .field("key", &self.key)
            .finish()
    }
}

impl Outgoing {
    /// `payload` for `topic`, without headers.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Outgoing {
            topic: topic.into(),
            payload: payload.into(),
            headers: Headers::new(),
            key: None,
        }
    }

    /// `delivery`, which could not be handled for `reason` in `attempts` handler calls,
    /// unchanged for the dead-letter `topic`: its headers and key are kept, and where it came
    /// from, why (at most [`DEAD_LETTER_REASON_BYTES`]: a reason may quote the bad input)
    /// and after how many attempts are added.
    pub fn dead_letter(topic: &str, delivery: &Delivery, reason: &str, attempts: u32) -> Self {
        Outgoing {
            topic: topic.to_owned(),
            payload: delivery.payload.clone(),
            headers: dead_letter_headers(delivery.headers.clone(), delivery, reason, attempts),
            key: delivery.key.clone(),
        }
    }

    /// The dead letter of `delivery` when [`Outgoing::dead_letter`] is refused as too large:
    /// a spa-dat message (readable by any spa-dat consumer, Python's too) whose payload is a
    /// JSON object with the reason, the original's topic, size, SHA-256 digest and first
    /// [`DEAD_LETTER_EXCERPT_BYTES`] (as text, invalid UTF-8 replaced). The original's
    /// headers and key are not kept: they may be what was too large.
    pub fn dead_letter_summary(
        topic: &str,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&delivery.payload);
        let excerpt = &delivery.payload[..delivery.payload.len().min(DEAD_LETTER_EXCERPT_BYTES)];
        let summary = serde_json::json!({
            "reason": shortened_to(reason, DEAD_LETTER_REASON_BYTES),
            "original_topic": shortened_to(&delivery.topic, DEAD_LETTER_REASON_BYTES),
            "original_size": delivery.payload.len(),
            "original_sha256": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "original_excerpt": String::from_utf8_lossy(excerpt),
        });
        let mut message = SpaMessage::new(topic, summary.to_string());
        message.content_type = Some("application/json".to_owned());
        let mut headers = dead_letter_headers(Headers::new(), delivery, reason, attempts);
        headers.insert_static(
            headers::DEAD_LETTER_ORIGINAL_SIZE,
            delivery.payload.len().to_string(),
        );
        // Encoding a message made of valid UTF-8 text cannot fail; were it to, the bare
        // summary JSON still says what happened.
        let payload = message
            .to_wire(None)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::from(summary.to_string()));
        Outgoing {
            topic: topic.to_owned(),
            payload,
            headers,
            key: None,
        }
    }

    /// Sets the key (see [`Outgoing::key`]).
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds the header `name` = `value` (replacing one of that name).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// The most of a dead letter's reason that is forwarded, in bytes.
pub const DEAD_LETTER_REASON_BYTES: usize = 512;
/// How much of a message too large to dead-letter whole its summary keeps, in bytes.
pub const DEAD_LETTER_EXCERPT_BYTES: usize = 1024;

/// `headers` with where `delivery` came from, why (at most [`DEAD_LETTER_REASON_BYTES`]) and
/// after how many attempts: what every dead letter carries. The sender's own
/// `spa-dead-letter-*` headers go first: a client must not be able to say why its message
/// was dead-lettered, nor from where.
fn dead_letter_headers(
    mut headers: Headers,
    delivery: &Delivery,
    reason: &str,
    attempts: u32,
) -> Headers {
    headers.remove_prefixed(headers::DEAD_LETTER_PREFIX);
    headers.insert_static(
        headers::DEAD_LETTER_REASON,
        shortened_to(&printable(reason), DEAD_LETTER_REASON_BYTES),
    );
    headers.insert_static(headers::DEAD_LETTER_ATTEMPTS, attempts.to_string());
    headers.insert_static(
        headers::DEAD_LETTER_TOPIC,
        shortened_to(&printable(&delivery.topic), DEAD_LETTER_REASON_BYTES),
    );
    if let Some(position) = delivery.position {
        headers.insert_static(
            headers::DEAD_LETTER_PARTITION,
            position.partition.to_string(),
        );
        headers.insert_static(headers::DEAD_LETTER_OFFSET, position.offset.to_string());
    }
    headers
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a reason may quote hostile
/// input, and a header carrying it must be one every transport takes (MQTT 5 refuses control
/// characters in its strings).
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Where a transport keeps a delivered message: a partition and an offset in it (Kafka).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition of its topic.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {} offset {}", self.partition, self.offset)
    }
}

/// A message as the transport delivered it, not yet decoded, with its acknowledgement.
pub struct Delivery {
    /// The topic the transport delivered it on.
    pub topic: Arc<str>,
    /// The raw bytes.
    pub payload: Bytes,
    /// Metadata that came with it (empty where the transport carries none).
    pub headers: Headers,
    /// Where the transport keeps it, if it says (Kafka: partition and offset).
    pub position: Option<Position>,
    /// The key it was published with (see [`Outgoing::key`]), where the transport keeps one.
    pub key: Option<Bytes>,
    ack: Option<Box<dyn FnOnce() + Send + Sync>>,
    staged: Option<Staged>,
    /// Counts it as unfinished on a transport that never delivers it again (see [`Pending`]).
    pending: Option<PendingToken>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("len", &self.payload.len())
            .field("headers", &self.headers)
            .field("position", &self.position)
            .field("key", &self.key)
            .field("needs_ack", &self.ack.is_some())
            .field("staged", &self.staged)
            .finish()
    }
}

impl Delivery {
    /// A delivery that needs no acknowledgement.
    pub fn new(topic: Arc<str>, payload: Bytes) -> Self {
        Delivery {
            topic,
            payload,
            headers: Headers::new(),
            position: None,
            key: None,
            ack: None,
            staged: None,
            pending: None,
        }
    }

    /// Counts it in `pending` until it is dropped: handled, dead-lettered or discarded.
    pub(crate) fn counted_in(mut self, pending: &Arc<Pending>) -> Self {
        pending.count.fetch_add(1, Ordering::AcqRel);
        self.pending = Some(PendingToken(Arc::clone(pending)));
        self
    }

    /// Attaches the metadata that came with it.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Attaches the key it was published with.
    pub fn with_key(mut self, key: Option<Bytes>) -> Self {
        self.key = key;
        self
    }

    /// Attaches where the transport keeps it.
    pub fn at(mut self, position: Position) -> Self {
        self.position = Some(position);
        self
    }

    /// Attaches the acknowledgement the transport runs once the message was handled.
    pub fn with_ack(mut self, ack: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.ack = Some(Box::new(ack));
        self
    }

    /// Attaches the staging area its handler's publishes are held in until it is acknowledged
    /// (a transactional transport's: see [`Staged`]).
    pub fn with_staging(mut self, staged: Staged) -> Self {
        self.staged = Some(staged);
        self
    }

    /// The staging area its handler's publishes are held in, if its transport stages them.
    pub fn staged(&self) -> Option<&Staged> {
        self.staged.as_ref()
    }

    /// Replaces the acknowledgement (the runtime's own, which runs the transport's in order).
    pub(crate) fn set_ack(&mut self, ack: impl FnOnce() + Send + Sync + 'static) {
        self.ack = Some(Box::new(ack));
    }

    /// Takes the transport's acknowledgement out, to run it later (the runtime runs them in
    /// arrival order when handlers finish out of order).
    pub(crate) fn take_ack(&mut self) -> Option<Box<dyn FnOnce() + Send + Sync>> {
        self.ack.take()
    }

    /// Acknowledges the message: called by the runtime after its handler finished (or after it
    /// was dead-lettered), which makes delivery at-least-once.
    pub fn ack(mut self) {
        if let Some(ack) = self.ack.take() {
            ack();
        }
    }
}

/// The messages a transport that never delivers a message again (the in-process bus) has
/// delivered and nobody has finished with yet — queued in an inbox, being handled, waiting for
/// a retry. Shutdown lets consumers take messages until it is empty (within the grace period),
/// so that what was published before shutdown is not lost with the inboxes.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    empty: tokio::sync::Notify,
}

impl Pending {
    /// How many messages are unfinished now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Completes once no message is unfinished.
    pub(crate) async fn emptied(&self) {
        loop {
            // Registered before the check, so that the last drop between the two is not missed.
            let emptied = self.empty.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// One unfinished message of a [`Pending`]; dropping it finishes it.
#[derive(Debug)]
struct PendingToken(Arc<Pending>);

impl Drop for PendingToken {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.empty.notify_waiters();
        }
    }
}

tokio::task_local! {
    static CURRENT: Staged;
}

/// Publishes held back for a transaction: what a handler of a transactional consumer publishes
/// while it handles a message is kept beside the message ([`Delivery::staged`]) and goes to
/// the broker with the message's acknowledgement — all of it in one transaction, or none of it.
/// Cheap to clone (shared).
///
/// The runtime runs each handler call (its retries, its reply, its dead letter) inside the
/// message's staging area ([`Staged::scope`]); a transport that stages (Kafka with
/// `transactional`) asks [`Staged::current`] in its `send` whether the message being sent
/// belongs to one of its own, and if so keeps it there instead of sending it. A failed
/// attempt's publishes are discarded ([`Staged::discard`]), so only the attempt that settled
/// the message counts. A batch handler's call has an area of its own ([`Staged::sibling`]),
/// handed to one of the messages it settled, and the batch's acknowledgements reach the
/// transport together ([`Staged::settle_together`]).
///
/// Only the task that handles the message is inside the area: a task the handler spawns
/// publishes outside it.
#[derive(Clone)]
pub struct Staged {
    inner: Arc<Inner>,
}

struct Inner {
    owner: u64,
    held: Mutex<Vec<Outgoing>>,
    gate: SettleGate,
}

/// What makes acknowledgements reach a transport's next transaction together: acknowledging
/// under [`Staged::settle_together`] holds it shared, and the transport takes what was
/// acknowledged under [`SettleGate::draining`] — never half of a group. A transport that
/// settles a group as one (Kafka: one decision for all of a batch call's messages) sees
/// [`Staged::grouping`] while the group's acknowledgements run, and its `group_end` after.
#[derive(Clone, Default)]
pub struct SettleGate {
    lock: Arc<std::sync::RwLock<()>>,
    group_end: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for SettleGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleGate")
            .field("group_end", &self.group_end.is_some())
            .finish()
    }
}

impl SettleGate {
    /// A gate that calls `group_end` on the acknowledging thread after each group's
    /// acknowledgements, still inside the group.
    pub fn with_group_end(group_end: impl Fn() + Send + Sync + 'static) -> Self {
        SettleGate {
            lock: Arc::default(),
            group_end: Some(Arc::new(group_end)),
        }
    }

    /// Held while the transport takes what was acknowledged: no group is half in.
    pub fn draining(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        // Guards nothing but the moment: poisoning carries no meaning.
        self.lock.write().unwrap_or_else(PoisonError::into_inner)
    }
}

std::thread_local! {
    /// The owner whose group of acknowledgements this thread is running (0: none).
    static GROUPING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("owner", &self.inner.owner)
            .field("held", &self.held().len())
            .finish()
    }
}

/// A new owner id, for a transport's sockets that stage: unique in the process.
pub fn new_owner() -> u64 {
    static OWNERS: AtomicU64 = AtomicU64::new(1);
    OWNERS.fetch_add(1, Ordering::Relaxed)
}

impl Staged {
    /// An empty area whose messages the sockets of `owner` (from [`new_owner`]) hold back,
    /// its acknowledgements grouped by `gate` (the transport's).
    pub fn new(owner: u64, gate: &SettleGate) -> Self {
        Staged {
            inner: Arc::new(Inner {
                owner,
                held: Mutex::new(Vec::new()),
                gate: gate.clone(),
            }),
        }
    }

    /// A new, empty area of the same owner and gate (a batch call's).
    pub fn sibling(&self) -> Self {
        Staged::new(self.inner.owner, &self.inner.gate)
    }

    /// Runs `acknowledge` (acknowledgements of messages of this owner) so that the transport
    /// takes all of them into one transaction, or none of them into it.
    pub fn settle_together<R>(&self, acknowledge: impl FnOnce() -> R) -> R {
        /// Ends the group also when an acknowledgement panics.
        struct Grouping(u64);
        impl Drop for Grouping {
            fn drop(&mut self) {
                GROUPING.with(|grouping| grouping.set(self.0));
            }
        }
        let gate = &self.inner.gate;
        let _together = gate.lock.read().unwrap_or_else(PoisonError::into_inner);
        let result = {
            let _grouping = Grouping(GROUPING.with(|grouping| grouping.replace(self.inner.owner)));
            acknowledge()
        };
        if let Some(group_end) = &gate.group_end {
            group_end();
        }
        result
    }

    /// Whether this thread runs a group of acknowledgements of `owner`'s messages now (see
    /// [`SettleGate`]).
    pub fn grouping(owner: u64) -> bool {
        GROUPING.with(|grouping| grouping.get() == owner)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Outgoing>> {
        // Pushes and takes only: consistent after a panic elsewhere.
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` inside this area: what it publishes on a socket of the owner is held here.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, work)
    }

    /// [`Staged::scope`] for synchronous work (a future's first poll).
    pub fn sync_scope<R>(self, work: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, work)
    }

    /// The area the current task is in, if its owner is `owner`.
    pub fn current(owner: u64) -> Option<Staged> {
        CURRENT
            .try_with(|staged| (staged.inner.owner == owner).then(|| staged.clone()))
            .ok()
            .flatten()
    }

    /// Holds `message` back.
    pub fn push(&self, message: Outgoing) {
        self.held().push(message);
    }

    /// Drops what is held: the publishes of an attempt that failed.
    pub fn discard(&self) {
        self.held().clear();
    }

    /// Takes what is held, in the order published.
    pub fn take(&self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.held())
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.held().len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_carries_its_requests_correlation_and_a_dead_letter_its_origin() {
        let mut request =
            Delivery::new(Arc::from("orders"), Bytes::from_static(b"x")).at(Position {
                partition: 2,
                offset: 41,
            });
        request.headers.insert_static(headers::CORRELATION_ID, "7");
        request.headers.insert("traceparent", "00-abc");
        let reply = Outgoing::reply(&SpaMessage::new("reply/7", "ok"), &request).expect("encodes");
        assert_eq!(reply.topic, "reply/7");
        assert_eq!(reply.headers.get(headers::CORRELATION_ID), Some("7"));
        assert_eq!(
            reply.headers.get("traceparent"),
            None,
            "only the correlation"
        );

        let dead = Outgoing::dead_letter("dlq", &request, "boom", 3);
        assert_eq!(dead.topic, "dlq");
        assert_eq!(&dead.payload[..], b"x");
        assert_eq!(dead.headers.get("traceparent"), Some("00-abc"), "kept");
        assert_eq!(dead.headers.get(headers::DEAD_LETTER_REASON), Some("boom"));
        assert_eq!(dead.headers.get(headers::DEAD_LETTER_ATTEMPTS), Some("3"));
        assert_eq!(dead.headers.get(headers::DEAD_LETTER_TOPIC), Some("orders"));
        assert_eq!(dead.headers.get(headers::DEAD_LETTER_PARTITION), Some("2"));
        assert_eq!(dead.headers.get(headers::DEAD_LETTER_OFFSET), Some("41"));
    }

    #[tokio::test]
    async fn only_the_owners_sockets_see_the_area_and_only_inside_it() {
        let (owner, other) = (new_owner(), new_owner());
        let staged = Staged::new(owner, &SettleGate::default());
        assert!(Staged::current(owner).is_none(), "outside: none");
        staged
            .clone()
            .scope(async move {
                let inside = Staged::current(owner).expect("inside");
                inside.push(Outgoing::new("t", "a"));
                assert!(Staged::current(other).is_none(), "another owner's socket");
                // A spawned task is outside.
                let spawned = tokio::spawn(async move { Staged::current(owner).is_none() });
                assert!(spawned.await.expect("ran"));
            })
            .await;
        assert_eq!(staged.len(), 1);
        staged.discard();
        assert!(staged.is_empty());
        staged.clone().sync_scope(|| {
            Staged::current(owner)
                .expect("inside")
                .push(Outgoing::new("t", "b"))
        });
        let held = staged.take();
        assert_eq!(held.len(), 1);
        assert_eq!(&held[0].payload[..], b"b");
    }

    #[test]
    fn a_drain_takes_a_group_of_acknowledgements_whole_or_not_at_all() {
        let gate = SettleGate::default();
        let staged = Staged::new(new_owner(), &gate);
        let queue: Arc<Mutex<Vec<usize>>> = Arc::default();
        for _round in 0..20 {
            let (group, acknowledging) = (Arc::clone(&queue), staged.clone());
            let (started, first_in) = std::sync::mpsc::channel();
            let acknowledger = std::thread::spawn(move || {
                acknowledging.settle_together(|| {
                    for n in 0..10 {
                        group.lock().expect("queue").push(n);
                        if n == 0 {
                            let _ = started.send(());
                        }
                        // The rest of the group comes while the drain tries to take it.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                })
            });
            first_in.recv().expect("the group began");
            let drained = {
                let _whole = gate.draining();
                std::mem::take(&mut *queue.lock().expect("queue"))
            };
            acknowledger.join().expect("acknowledged");
            let rest = std::mem::take(&mut *queue.lock().expect("queue"));
            assert_eq!(
                (drained.len(), rest.len()),
                (10, 0),
                "the drain waited for the whole group"
            );
        }
    }
}
