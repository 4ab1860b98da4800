//! Exactly-once: a transactional socket's publishes and its group consumer's offsets — with
//! the finished-offset map of `progress` as their metadata — committed in one Kafka
//! transaction.
//!
//! A handler's publishes are held with its message (`socket::spi::Staged`) and handed over only
//! when the message is settled (its acknowledgement): as one [`Settle`] in a queue. Every
//! `transaction_interval_ms` the committer, on a thread of its own, drains the queue: it
//! produces each settled message's records, marks its offset finished, sends the offsets to
//! the transaction with the consumer's group metadata (KIP-447: a member that lost its
//! partitions is fenced) and commits. So a transaction holds whole messages only — never the
//! half of a handler's output that was published before a commit — and no lock is taken on
//! the per-message path but the queue's.
//!
//! A failed commit is aborted: the records and offsets of every message in it are dropped,
//! what the consumer finished since the last commit is forgotten, and the consumer reads
//! again from the committed offsets (the consume task rewinds before it delivers anything
//! more). Messages in flight meanwhile belong to the forgotten assignment: their output is
//! dropped when they settle, and they are handled again when read again. An error no abort can
//! fix (this producer fenced by another with its `transactional.id`) stops the socket's
//! consumer: it is logged, the socket is no longer ready, and nothing more is committed.
//!
//! Revoked partitions are committed in the rebalance callback, synchronously, before they go;
//! close commits the rest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::TopicPartitionList;
use tokio::sync::oneshot;

use super::context::{describe, SocketContext};
use super::headers;
use super::progress::{Member, Progress, Scope, Settling, Ticket};
use crate::error::{Error, Result};
use crate::socket::spi::SettleGate;
use crate::socket::{Outgoing, Staged};

/// The socket's group consumer (`offsets::GroupConsumer`, which imports this file).
type GroupConsumer = StreamConsumer<SocketContext>;

/// Locks `mutex`, also one a panic poisoned: every value here is replaced or drained whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A settled message's part of the next transaction — or a batch call's: its records, and
/// the offsets to mark finished, all or none (none for a producer's
/// [`crate::Socket::transaction`] or a publish outside any handler); `done` hears how the
/// commit went.
pub(super) struct Settle {
    pub(super) output: Vec<Outgoing>,
    pub(super) finished: Vec<Finished>,
    pub(super) done: Option<oneshot::Sender<Result<()>>>,
}

std::thread_local! {
    /// The settles of the group of acknowledgements this thread runs (see `SettleGate`).
    static GROUP: std::cell::RefCell<Vec<Settle>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The settles of the group just acknowledged on this thread, as one.
fn merged_group() -> Option<Settle> {
    let members = GROUP.with(|group| std::mem::take(&mut *group.borrow_mut()));
    if members.is_empty() {
        return None;
    }
    let mut merged = Settle {
        output: Vec::new(),
        finished: Vec::new(),
        done: None,
    };
    for member in members {
        merged.output.extend(member.output);
        merged.finished.extend(member.finished);
    }
    Some(merged)
}

/// A consumed record that was settled.
pub(super) struct Finished {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) ticket: Ticket,
}

/// A transactional socket's transactions.
pub(super) struct KafkaTransactions {
    /// Its staging areas' owner id.
    pub(super) owner: u64,
    /// Its staging areas' gate: a batch's acknowledgements come into one transaction.
    pub(super) gate: SettleGate,
    broker: String,
    producer: FutureProducer<SocketContext>,
    /// Settled since the last commit; shared with the gate's group end.
    queue: Arc<Mutex<Vec<Settle>>>,
    /// Held while a transaction is committed (by the committer, a rebalance, close).
    committing: Mutex<Group>,
    /// After an abort: the consume task must seek back to the committed offsets before it
    /// delivers more; nothing is committed until it has.
    rewind: AtomicBool,
    /// A failure no abort can fix: nothing more is committed.
    fatal: Mutex<Option<String>>,
    interval: Duration,
    timeout: Duration,
    /// The largest record librdkafka takes (`message.max.bytes`): a larger one is refused when
    /// it is published, not when its transaction is committed (which would abort every other
    /// message's output with it, again and again).
    max_record_bytes: usize,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    /// Records the broker refused for good, by the message that published them (see
    /// [`KafkaTransactions::remember_refused`]).
    refused: Mutex<HashMap<SettledAt, Vec<Fingerprint>>>,
}

/// The most refused publishes remembered (a message settles again soon after its refusal,
/// unless its partition moved to another member).
const MOST_REMEMBERED_REFUSALS: usize = 10_000;

/// Where a settled message was read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SettledAt {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl SettledAt {
    fn of(finished: &Finished) -> Self {
        SettledAt {
            topic: Arc::clone(&finished.topic),
            partition: finished.partition,
            offset: finished.offset,
        }
    }
}

/// What a refusal remembers of a record: its topic, and — when it was refused for its size —
/// the size from which records to that topic are refused. A missing or forbidden topic refuses
/// every record; a size limit only those as large (a message's envelope differs each time it is
/// handled, its timestamp and id, so the record itself cannot be recognised).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Fingerprint {
    topic: String,
    /// `None`: every record to the topic.
    from_size: Option<usize>,
}

impl Fingerprint {
    /// `record` as it would be remembered if refused for its size.
    fn of(record: &Outgoing) -> Self {
        Fingerprint {
            topic: record.topic.clone(),
            from_size: Some(record_size(record)),
        }
    }

    /// Whether a refusal remembered as `self` refuses `record` too.
    fn refuses(&self, record: &Outgoing) -> bool {
        self.topic == record.topic
            && self
                .from_size
                .is_none_or(|from| record_size(record) >= from)
    }
}

/// librdkafka's `RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`: a record's framing at its largest.
const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
/// The longest varint of a header's length.
const VARINT_MAX: usize = 5;

/// A record's size as librdkafka bounds it (`rd_kafka_msg_max_wire_size`): its largest
/// framing, key, payload, and each header's name and value with their varint lengths.
fn record_size(record: &Outgoing) -> usize {
    RECORD_OVERHEAD
        + record.payload.len()
        + record.key.as_ref().map_or(0, |k| k.len())
        + record
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 2 * VARINT_MAX)
            .sum::<usize>()
}

/// The group consumer whose offsets go into the transactions, once it exists.
#[derive(Default)]
struct Group {
    consumer: Option<(Weak<GroupConsumer>, Arc<Progress>)>,
}

impl KafkaTransactions {
    /// Starts transactions on `producer` (created with a `transactional.id`): waits for the
    /// broker to fence an earlier producer of the same id and abort its open transaction.
    /// Blocking.
    pub(super) fn start(
        producer: FutureProducer<SocketContext>,
        broker: &str,
        interval: Duration,
        timeout: Duration,
        max_record_bytes: usize,
    ) -> std::result::Result<Self, KafkaError> {
        producer.init_transactions(timeout)?;
        producer.begin_transaction()?;
        let queue: Arc<Mutex<Vec<Settle>>> = Arc::default();
        let group_queue = Arc::clone(&queue);
        Ok(KafkaTransactions {
            owner: crate::socket::spi::new_owner(),
            // A batch call's messages settle as one: their offsets and the call's output.
            gate: SettleGate::with_group_end(move || {
                if let Some(merged) = merged_group() {
                    lock(&group_queue).push(merged);
                }
            }),
            broker: broker.to_owned(),
            producer,
            queue,
            committing: Mutex::new(Group::default()),
            rewind: AtomicBool::new(false),
            fatal: Mutex::new(None),
            interval,
            timeout,
            max_record_bytes,
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            refused: Mutex::new(HashMap::new()),
        })
    }

    /// A new staging area of this socket's.
    pub(super) fn staging_area(&self) -> Staged {
        Staged::new(self.owner, &self.gate)
    }

    /// The group consumer whose offsets go into the transactions from now on.
    pub(super) fn attach(&self, consumer: &Arc<GroupConsumer>, progress: &Arc<Progress>) {
        lock(&self.committing).consumer = Some((Arc::downgrade(consumer), Arc::clone(progress)));
    }

    /// The failure that stopped the transactions, if one did.
    pub(super) fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    /// The consume task must rewind before it delivers more.
    pub(super) fn must_rewind(&self) -> bool {
        self.rewind.load(Ordering::Acquire)
    }

    /// The consume task rewound: commits go on.
    pub(super) fn rewound(&self) {
        self.rewind.store(false, Ordering::Release);
    }

    /// `message` held in `staged` for its message's transaction; refused at once when no
    /// transaction could take it.
    pub(super) fn stage(&self, staged: &Staged, message: Outgoing) -> Result<()> {
        self.check(&message)?;
        staged.push(message);
        Ok(())
    }

    /// Refuses what could never be committed: a closed socket's, a record librdkafka refuses
    /// for its size, anything once the transactions stopped.
    fn check(&self, message: &Outgoing) -> Result<()> {
        if let Some(reason) = self.fatal() {
            return Err(Error::Transport {
                operation: "publish",
                broker: self.broker.clone(),
                reason: format!("transactions stopped: {reason}"),
                source: None,
            });
        }
        let size = record_size(message);
        if size > self.max_record_bytes {
            return Err(Error::refused(
                "publish",
                self.broker.clone(),
                format!(
                    "a record of {size} bytes is larger than message.max.bytes ({})",
                    self.max_record_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A settled message's part of the next transaction.
    pub(super) fn settled(&self, settle: Settle) {
        if Staged::grouping(self.owner) {
            // Queued with the rest of its group, at the group's end.
            GROUP.with(|group| group.borrow_mut().push(settle));
            return;
        }
        let waited_for = settle.done.is_some();
        lock(&self.queue).push(settle);
        if waited_for {
            self.wake_committer();
        }
    }

    /// Publishes `message` in a transaction of its own (with whatever else is settled
    /// meanwhile); returns once it is committed.
    pub(super) async fn publish_alone(&self, message: Outgoing) -> Result<()> {
        self.check(&message)?;
        self.commit_output(vec![message]).await
    }

    /// Commits `output` in the next transaction and waits for it.
    async fn commit_output(&self, output: Vec<Outgoing>) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (done, committed) = oneshot::channel();
        self.settled(Settle {
            output,
            finished: Vec::new(),
            done: Some(done),
        });
        match tokio::time::timeout(self.timeout + self.interval, committed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err(Error::Closed),
            Err(_) => Err(Error::Transport {
                operation: "commit transaction",
                broker: self.broker.clone(),
                reason: format!(
                    "not committed within {:?}; it may still be",
                    self.timeout + self.interval
                ),
                source: None,
            }),
        }
    }

    fn wake_committer(&self) {
        let (woken, signal) = &self.wake;
        *lock(woken) = true;
        signal.notify_one();
    }

    /// The committer's loop, on a thread of its own, until [`KafkaTransactions::stop`].
    pub(super) fn run_committer(self: Arc<Self>) {
        loop {
            {
                let (woken, signal) = &self.wake;
                let guard = lock(woken);
                let (mut guard, _) = signal
                    .wait_timeout_while(guard, self.interval, |woken| {
                        !*woken && !self.stop.load(Ordering::Acquire)
                    })
                    .unwrap_or_else(PoisonError::into_inner);
                *guard = false;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            // A failure is logged and acted on where it happened.
            let _ = self.commit(None, None);
        }
    }

    /// Ends the committer's loop (close commits the rest).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake_committer();
    }

    /// Commits what was settled since the last commit: the queued records, and the offsets
    /// of every partition whose progress changed; then ends the progress of the `revoked`
    /// partitions, if any (a rebalance). `group` is the consumer's group metadata where the
    /// caller has it (a rebalance callback); else it is read from the consumer. Blocking. On
    /// failure the transaction is aborted (see the module's docs); the error says why.
    pub(super) fn commit(
        &self,
        group: Option<ConsumerGroupMetadata>,
        revoked: Option<&TopicPartitionList>,
    ) -> std::result::Result<(), String> {
        let state = lock(&self.committing);
        let committed = self.commit_locked(&state, group);
        if let (Some(revoked), Some((_, progress))) = (revoked, &state.consumer) {
            // Under the lock: no commit of the next generation sees these partitions.
            progress.revoke(revoked);
        }
        committed
    }

    fn commit_locked(
        &self,
        state: &Group,
        group: Option<ConsumerGroupMetadata>,
    ) -> std::result::Result<(), String> {
        if let Some(reason) = self.fatal() {
            let queued = std::mem::take(&mut *lock(&self.queue));
            self.fail_waiters(queued, "transactions stopped");
            return Err(reason);
        }
        if self.must_rewind() {
            // What was settled before the consumer rewound belongs to the forgotten
            // assignment: it counts for nothing (its ticket is stale) and is read again.
            return Ok(());
        }
        // Read before the queue is drained: the offsets sent are those of this member's
        // generation.
        let (consumer, progress) = match &state.consumer {
            Some((consumer, progress)) => (consumer.upgrade(), Some(progress)),
            None => (None, None),
        };
        let group = group.or_else(|| consumer.as_deref().and_then(Consumer::group_metadata));
        let settles: Vec<Settle> = {
            let _whole_groups = self.gate.draining();
            std::mem::take(&mut *lock(&self.queue))
        };
        let mut waiters = Vec::new();
        let mut deferred = Vec::new();
        // Partitions with a deferred settle in this drain: their later settles wait too, so
        // that a key's outputs keep their order.
        let mut waiting: HashSet<(Arc<str>, i32)> = HashSet::new();
        let mut deliveries: Vec<(Vec<SettledAt>, Fingerprint, DeliveryFuture)> = Vec::new();
        let mut failure = None;
        for mut settle in settles {
            if failure.is_some() {
                waiters.extend(settle.done.take());
                continue;
            }
            if let (false, Some(progress)) = (settle.finished.is_empty(), progress) {
                if settle
                    .finished
                    .iter()
                    .any(|f| waiting.contains(&(Arc::clone(&f.topic), f.partition)))
                {
                    deferred.push(settle);
                    continue;
                }
                let members: Vec<Member<'_>> = settle
                    .finished
                    .iter()
                    .map(|f| Member {
                        topic: &f.topic,
                        partition: f.partition,
                        offset: f.offset,
                        ticket: f.ticket,
                    })
                    .collect();
                match progress.finish_in_transaction(&members) {
                    // Revoked or forgotten since: the output is dropped, and whoever owns the
                    // partitions now handles the messages again.
                    Settling::Stale { partly: false } => continue,
                    // A batch that crossed a rebalance: the rest of it is in flight, and only
                    // a rewind reads it again — the abort's.
                    Settling::Stale { partly: true } => {
                        tracing::warn!(broker = %self.broker, "a batch's messages were settled across a rebalance: the transaction is aborted and they are read again");
                        failure = Some(KafkaError::ConsumerCommit(RDKafkaErrorCode::State));
                        continue;
                    }
                    // The offset map cannot say they are finished yet: committed later.
                    Settling::Deferred => {
                        waiting.extend(
                            settle
                                .finished
                                .iter()
                                .map(|f| (Arc::clone(&f.topic), f.partition)),
                        );
                        deferred.push(settle);
                        continue;
                    }
                    Settling::Finished => {}
                }
            }
            waiters.extend(settle.done.take());
            let at: Vec<SettledAt> = settle.finished.iter().map(SettledAt::of).collect();
            let refused: Vec<Fingerprint> = {
                let mut remembered = lock(&self.refused);
                at.iter()
                    .filter_map(|at| remembered.remove(at))
                    .flatten()
                    .collect()
            };
            for record in settle.output {
                let fingerprint = Fingerprint::of(&record);
                if refused.iter().any(|refusal| refusal.refuses(&record)) {
                    tracing::error!(broker = %self.broker, topic = %crate::socket::shortened(&record.topic), input = ?at, "a publish the broker refused for good in an earlier transaction is dropped, so that the rest of the message's output and its offset can be committed");
                    continue;
                }
                match self.produce(record) {
                    Ok(delivery) => deliveries.push((at.clone(), fingerprint, delivery)),
                    // Refused before it was sent (librdkafka knows the topic is not there or
                    // not ours): nothing of it is in the transaction. A message's output goes
                    // on without it; a producer's transaction fails whole.
                    Err(error) if is_refused_for_good(&error) && !at.is_empty() => {
                        tracing::error!(broker = %self.broker, topic = %crate::socket::shortened(&fingerprint.topic), input = ?at, error = %describe(&error), "a publish refused for good is dropped, so that the rest of the message's output and its offset can be committed");
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
        }
        if !deferred.is_empty() {
            let mut queue = lock(&self.queue);
            deferred.append(&mut queue);
            *queue = deferred;
        }
        let offsets = progress.map(|progress| progress.commits(&Scope::Changed));
        let has_offsets = offsets.as_ref().is_some_and(|o| o.count() > 0);
        if failure.is_none() && deliveries.is_empty() && !has_offsets {
            // Nothing to commit: the open transaction stays empty.
            self.notify(waiters, Ok(()));
            return Ok(());
        }
        let result = match failure {
            Some(error) => Err(error),
            None => self.send_and_commit(offsets.as_ref().filter(|_| has_offsets), group),
        };
        match result {
            Ok(()) => {
                tracing::trace!(broker = %self.broker, records = deliveries.len(), "transaction committed");
                self.notify(waiters, Ok(()));
                if let Err(error) = self.retried(|_| self.producer.begin_transaction()) {
                    self.stopped_for(&error);
                }
                Ok(())
            }
            Err(error) => {
                if let (Some(progress), Some(offsets)) = (progress, &offsets) {
                    progress.commit_failed(offsets);
                }
                self.remember_refused(deliveries);
                let reason = describe(&error);
                self.abort(&error, progress.map(Arc::as_ref));
                let reason = format!("aborted, nothing of it was published: {reason}");
                self.notify(waiters, Err(&reason));
                Err(reason)
            }
        }
    }

    /// After a failed commit: which settled messages' records the broker refused for good (a
    /// topic that does not exist or may not be written, a record too large for it). When such
    /// a message settles again — it is read and handled again — those records are dropped
    /// (logged), or it would abort every transaction it is in, for ever.
    fn remember_refused(&self, deliveries: Vec<(Vec<SettledAt>, Fingerprint, DeliveryFuture)>) {
        if deliveries.is_empty() {
            return;
        }
        // The delivery reports of a failed transaction's records, each final by now or soon.
        let _ = self.producer.flush(Duration::from_secs(5));
        let mut refused = lock(&self.refused);
        for (at, fingerprint, delivery) in deliveries {
            if at.is_empty() {
                continue;
            }
            let Some(Ok(Err((error, _)))) = delivery.now_or_never() else {
                continue;
            };
            if is_refused_for_good(&error) {
                tracing::warn!(broker = %self.broker, topic = %crate::socket::shortened(&fingerprint.topic), input = ?at, error = %describe(&error), "a publish of a transaction was refused for good; dropped when its message settles again");
                let fingerprint = if is_refused_for_size(&error) {
                    fingerprint
                } else {
                    Fingerprint {
                        from_size: None,
                        ..fingerprint
                    }
                };
                if refused.len() >= MOST_REMEMBERED_REFUSALS {
                    refused.clear();
                }
                // Under each message of the group: a batch may form otherwise next time.
                for at in at {
                    refused.entry(at).or_default().push(fingerprint.clone());
                }
            }
        }
    }

    /// Hands one record to librdkafka, waiting for room in its queue.
    fn produce(&self, record: Outgoing) -> std::result::Result<DeliveryFuture, KafkaError> {
        let headers: Option<OwnedHeaders> = headers::to_record(&record.headers);
        let mut future: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).payload(&record.payload[..]);
        if let Some(key) = record.key.as_deref() {
            future = future.key(key);
        }
        if let Some(headers) = headers {
            future = future.headers(headers);
        }
        let started = Instant::now();
        loop {
            match self.producer.send_result(future) {
                // A record that fails fails the commit.
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if started.elapsed() < self.timeout =>
                {
                    future = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Sends `offsets` to the transaction (when there are any) and commits it; each call
    /// repeated while librdkafka says a repeat may pass (a timeout, a coordinator moving).
    fn send_and_commit(
        &self,
        offsets: Option<&TopicPartitionList>,
        group: Option<ConsumerGroupMetadata>,
    ) -> std::result::Result<(), KafkaError> {
        if let Some(offsets) = offsets {
            // Without the group's metadata (the consumer closed) the offsets cannot go: the
            // transaction is aborted and its messages come again.
            let group = group.ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::State))?;
            self.retried(|timeout| {
                self.producer
                    .send_offsets_to_transaction(offsets, &group, timeout)
            })?;
        }
        // librdkafka's commit flushes first, and its flush waited about 100 ms for
        // acknowledgements that came within a few (measured: 100 ms of every commit; rdkafka
        // serves delivery reports on a thread of its own, and the flush's wait for the last
        // one is not woken by it). Waiting here first, the commit takes 1 to 3 ms.
        let started = Instant::now();
        while self.producer.in_flight_count() > 0 && started.elapsed() < self.timeout {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.retried(|timeout| self.producer.commit_transaction(timeout))
    }

    /// Calls `call` until it succeeds or fails in a way a repeat cannot fix: librdkafka keeps
    /// a timed-out transaction call current, and only the same call may follow it.
    fn retried(
        &self,
        call: impl Fn(Duration) -> std::result::Result<(), KafkaError>,
    ) -> std::result::Result<(), KafkaError> {
        let started = Instant::now();
        let mut repeats: u32 = 0;
        loop {
            let left = self
                .timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            match call(left) {
                // Within the publish timeout, and not closing: once it is spent the transaction
                // is aborted (or, when even that cannot be done, the socket stops consuming and
                // leaves its group) — never repeated for ever while holding its partitions.
                Err(KafkaError::Transaction(error))
                    if error.is_retriable()
                        && !self.stop.load(Ordering::Acquire)
                        && started.elapsed() < self.timeout =>
                {
                    repeats = repeats.saturating_add(1);
                    if repeats % 10 == 1 {
                        tracing::warn!(broker = %self.broker, %error, repeats, "a transaction call is repeated until the brokers answer");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Aborts the open transaction after `error`, forgets what the consumer finished since the
    /// last commit and asks the consume task to rewind; stops for good when no abort can fix
    /// it.
    fn abort(&self, error: &KafkaError, progress: Option<&Progress>) {
        if is_fatal(error) {
            self.stopped_for(error);
            return;
        }
        tracing::warn!(broker = %self.broker, error = %describe(error), "transaction aborted: its messages are read and handled again");
        if let Some(progress) = progress {
            // First: from now on the consume task delivers nothing until it has rewound.
            self.rewind.store(true, Ordering::Release);
            progress.forget_all();
        }
        let aborted = self
            .retried(|timeout| self.producer.abort_transaction(timeout))
            .and_then(|()| self.retried(|_| self.producer.begin_transaction()));
        if let Err(error) = aborted {
            self.stopped_for(&error);
        }
    }

    fn stopped_for(&self, error: &KafkaError) {
        let reason = describe(error);
        tracing::error!(broker = %self.broker, error = %reason, "Kafka transactions stopped (another producer with this transactional.id fenced this one, or the producer failed for good): this socket's consumer stops; restart the process");
        lock(&self.fatal).get_or_insert(reason);
    }

    fn fail_waiters(&self, settles: Vec<Settle>, why: &str) {
        self.notify(
            settles.into_iter().filter_map(|s| s.done).collect(),
            Err(why),
        );
    }

    /// Tells those waiting for a commit how it went.
    fn notify(
        &self,
        waiters: Vec<oneshot::Sender<Result<()>>>,
        outcome: std::result::Result<(), &str>,
    ) {
        for waiter in waiters {
            let _ = waiter.send(outcome.map_err(|reason| Error::Transport {
                operation: "commit transaction",
                broker: self.broker.clone(),
                reason: reason.to_owned(),
                source: None,
            }));
        }
    }
}

/// The broker will never take this record: retrying its transaction cannot pass.
fn is_refused_for_good(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::PolicyViolation
        )
    )
}

/// Refused for its size: a smaller record to the same topic may pass.
fn is_refused_for_size(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

/// No abort can fix it: the producer was fenced, or failed for good.
fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(error) => error.is_fatal(),
        _ => matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            )
        ),
    }
}

/// The socket's side of [`crate::Socket::transaction`].
#[async_trait]
impl crate::socket::spi::Transactions for KafkaTransactions {
    fn stage(&self) -> Staged {
        self.staging_area()
    }

    async fn commit(&self, staged: Staged) -> Result<()> {
        let output = staged.take();
        if output.is_empty() {
            return Ok(());
        }
        self.commit_output(output).await
    }
}
