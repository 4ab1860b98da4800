//! A batch consumer: its handler takes up to `size` messages at once ([`crate::Batch`]), a
//! batch cut when it is full or `wait` after it began, whichever comes first; up to `limit`
//! batches run at once.
//!
//! Order: a key's messages (or partition's, or topic's: [`crate::MessageOrder`]) are in
//! arrival order within a batch and never in two batches at once — a key is *claimed* by the
//! batch its messages are in, and its later messages wait until that batch is settled.
//! Acknowledgement stays per message and gap-safe: each element is acknowledged when it is
//! handled, or dead-lettered, through the same [`AckWindow`] as a concurrent consumer's
//! (arrival order for MQTT; Kafka's own offset map).
//!
//! Failures are per element: the handler's [`crate::BatchResult`] names the failed ones
//! (an error or a panic fails them all); each goes through the retry policy and the
//! dead-letter topic on its own, and the ones to retry are called again as a smaller batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering as Atomic;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::concurrent::{AckWindow, OrderKey, Ordering};
use super::consumer::{AfterFailed, Consumer, Failure};
use super::guarded::{run_guarded, Outcome};
use crate::handler::batch::BatchResult;
use crate::handler::extract::{BatchInput, HandlerContext};
use crate::message::SpaMessage;
use crate::metrics::Measure;
use crate::socket::{Arrival, Delivery, Inbox, Staged};
use crate::telemetry::Traced;

/// How a batch consumer cuts its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchShape {
    /// Most messages in one call.
    pub(crate) size: usize,
    /// Longest a batch waits for more messages after its first.
    pub(crate) wait: Duration,
}

/// Messages taken from the inbox at once.
const TAKE: usize = 64;

/// Most messages a batch consumer holds taken and unacknowledged, whatever its batch size.
const MOST_TAKEN: usize = 1 << 20;

/// One message of a batch, from its arrival to its acknowledgement.
struct Element {
    delivery: Delivery,
    /// Decoded on arrival; taken by the first call (a retry decodes it again).
    message: Option<SpaMessage>,
    measure: Option<Measure>,
    /// Its handler calls so far.
    attempt: u32,
}

/// The batch being filled: its id claims the keys of its messages.
struct Forming {
    id: u64,
    elements: Vec<(OrderKey, Element)>,
    /// When its first message came.
    since: Option<Instant>,
}

impl Forming {
    fn new(id: u64) -> Self {
        Forming {
            id,
            elements: Vec::new(),
            since: None,
        }
    }

    fn push(&mut self, key: OrderKey, element: Element) {
        if self.elements.is_empty() {
            self.since = Some(Instant::now());
        }
        self.elements.push((key, element));
    }

    /// When it is cut if it does not fill up first; `None` also for a wait past any instant
    /// (`Duration::MAX`: cut by size only).
    fn deadline(&self, wait: Duration) -> Option<Instant> {
        self.since.and_then(|since| since.checked_add(wait))
    }

    /// Whether to cut it now: full, or waited long enough — or, `draining` at shutdown, as
    /// soon as it holds anything (waiting longer would spend the grace period for nothing).
    fn due(&self, shape: BatchShape, now: Instant, draining: bool) -> bool {
        self.elements.len() >= shape.size
            || self.deadline(shape.wait).is_some_and(|d| d <= now)
            || (draining && !self.elements.is_empty())
    }
}

/// Messages waiting for their key to be free, and which batch claims each key.
#[derive(Default)]
struct Claims {
    keys: HashMap<OrderKey, Claim>,
    /// Keys with messages waiting and no claim, in the order they became so.
    ready: VecDeque<OrderKey>,
    /// Unordered messages that found the forming batch full.
    loose: VecDeque<Element>,
}

#[derive(Default)]
struct Claim {
    /// The batch (forming or running) holding this key's messages.
    by: Option<u64>,
    waiting: VecDeque<Element>,
}

impl Claims {
    /// Puts a message that arrived into the forming batch if its key allows, else in its
    /// key's queue.
    fn arrived(&mut self, key: OrderKey, element: Element, forming: &mut Forming, size: usize) {
        let room = forming.elements.len() < size;
        if let OrderKey::Alone(_) = key {
            if room && self.loose.is_empty() {
                forming.push(key, element);
            } else {
                self.loose.push_back(element);
            }
            return;
        }
        let claim = self.keys.entry(key.clone()).or_default();
        let free = claim.by.is_none() || claim.by == Some(forming.id);
        if room && free && claim.waiting.is_empty() {
            claim.by = Some(forming.id);
            forming.push(key, element);
        } else {
            claim.waiting.push_back(element);
            if claim.by.is_none() && claim.waiting.len() == 1 {
                self.ready.push_back(key);
            }
        }
    }

    /// Fills the forming batch from keys whose messages may go now, then from unordered ones.
    fn fill(&mut self, forming: &mut Forming, size: usize, sequence: &mut u64) {
        while forming.elements.len() < size {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(claim) = self.keys.get_mut(&key) else {
                continue;
            };
            claim.by = Some(forming.id);
            while forming.elements.len() < size {
                let Some(element) = claim.waiting.pop_front() else {
                    break;
                };
                forming.push(key.clone(), element);
            }
            // What did not fit waits for this batch to be settled, its key claimed.
        }
        while forming.elements.len() < size {
            let Some(element) = self.loose.pop_front() else {
                break;
            };
            forming.push(OrderKey::Alone(*sequence), element);
            *sequence += 1;
        }
    }

    /// Batch `id` was settled: its keys' waiting messages may go.
    fn released(&mut self, id: u64, keys: &[OrderKey]) {
        for key in keys {
            let Some(claim) = self.keys.get_mut(key) else {
                continue;
            };
            if claim.by != Some(id) {
                continue;
            }
            claim.by = None;
            if claim.waiting.is_empty() {
                self.keys.remove(key);
            } else {
                self.ready.push_back(key.clone());
            }
        }
    }
}

impl Consumer {
    /// Handles what arrives in `inbox` in batches of `shape`, up to `limit` at once, in
    /// `ordering`, until shutdown or until the socket closes; then waits for the batches still
    /// running (each call gets the shutdown grace period). Messages not yet in a running batch
    /// are left unacknowledged: an at-least-once transport delivers them again.
    pub(crate) async fn run_batches(
        self: Arc<Self>,
        mut inbox: Inbox,
        limit: usize,
        shape: BatchShape,
        ordering: Ordering,
    ) {
        let window = Arc::new(AckWindow::new(self.acks_in_any_order));
        // Room for every running batch, the one forming, and as much again waiting.
        // (At most MOST_TAKEN: a huge `size` is cut by wait, not a licence to buffer without end.)
        let most_unacknowledged = shape
            .size
            .saturating_mul(limit + 1)
            .saturating_mul(2)
            .min(MOST_TAKEN);
        let mut claims = Claims::default();
        let mut forming = Forming::new(0);
        // Each running batch gives back its id and the keys it claimed.
        let mut batches: JoinSet<(u64, Vec<OrderKey>)> = JoinSet::new();
        // Messages that cannot be decoded, being dead-lettered.
        let mut undecodable: JoinSet<()> = JoinSet::new();
        let mut sequence: u64 = 0;
        let mut taken = Vec::with_capacity(TAKE);
        let stop = self.stop_taking();
        tokio::pin!(stop);
        // Wakes the loop once at shutdown, to cut the forming batch while draining.
        let triggered = self.runtime.shutdown.triggered();
        tokio::pin!(triggered);
        let mut draining = false;
        loop {
            // Nothing new starts once the consumer stopped taking messages (the select below
            // may not have seen it yet).
            if self.takes_nothing_more() {
                break;
            }
            while batches.len() < limit && forming.due(shape, Instant::now(), draining) {
                let next = Forming::new(forming.id + 1);
                let full = std::mem::replace(&mut forming, next);
                claims.fill(&mut forming, shape.size, &mut sequence);
                self.start_batch(&mut batches, full);
            }
            let room = window.len() < most_unacknowledged;
            let deadline = forming
                .deadline(shape.wait)
                .filter(|_| batches.len() < limit);
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = &mut triggered, if !draining => draining = true,
                Some(joined) = batches.join_next(), if !batches.is_empty() => match joined {
                    Ok((id, keys)) => {
                        claims.released(id, &keys);
                        claims.fill(&mut forming, shape.size, &mut sequence);
                    }
                    // A batch task catches its own panics (see `start_batch`).
                    Err(error) => tracing::error!(app = %self.runtime.name, %error, "batch task failed"),
                },
                Some(joined) = undecodable.join_next(), if !undecodable.is_empty() => {
                    // The engine's bug: its message is left unacknowledged.
                    if let Err(error) = joined {
                        tracing::error!(app = %self.runtime.name, %error, "dead-letter task failed");
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
                received = inbox.recv_arrivals(&mut taken, TAKE), if room => {
                    if received == 0 {
                        tracing::info!(app = %self.runtime.name, "socket closed; consumer stops");
                        break;
                    }
                    for arrival in taken.drain(..) {
                        match arrival {
                            Arrival::Delivery(delivery) => {
                                let key = OrderKey::of(&delivery, &ordering, sequence);
                                sequence += 1;
                                let delivery = window.track(delivery);
                                if let Some(element) = self.element(delivery, &mut undecodable) {
                                    claims.arrived(key, element, &mut forming, shape.size);
                                }
                            }
                            // Only with handling on arrival, which this consumer does not ask for.
                            Arrival::Started(rest) => rest.await,
                        }
                        inbox.finished();
                    }
                }
            }
        }
        // Nothing new starts; what runs gets its grace period (enforced in each handler call).
        let discarded = inbox.discard();
        drop((forming, claims));
        while batches.join_next().await.is_some() {}
        while undecodable.join_next().await.is_some() {}
        // Every message left unhandled is one the window never saw finish.
        self.report_left(window.unfinished() + discarded);
    }

    /// `delivery` decoded as an element of a batch; a message that cannot be decoded is
    /// dead-lettered on a task of its own in `undecodable`.
    fn element(
        self: &Arc<Self>,
        delivery: Delivery,
        undecodable: &mut JoinSet<()>,
    ) -> Option<Element> {
        let measure = Measure::start(&self.runtime.metrics, &delivery.topic);
        match delivery.message(self.runtime.socket.wire_format()) {
            Ok(message) => Some(Element {
                delivery,
                message: Some(message),
                measure,
                attempt: 1,
            }),
            Err(error) => {
                self.taken.fetch_add(1, Atomic::Relaxed);
                let unfinished = self.undecodable(delivery, measure, &error);
                let consumer = Arc::clone(self);
                undecodable.spawn(async move { consumer.finish(unfinished).await });
                None
            }
        }
    }

    fn start_batch(self: &Arc<Self>, batches: &mut JoinSet<(u64, Vec<OrderKey>)>, batch: Forming) {
        let Forming { id, elements, .. } = batch;
        let mut keys = Vec::new();
        let elements: Vec<Element> = elements
            .into_iter()
            .map(|(key, element)| {
                if !matches!(key, OrderKey::Alone(_)) && keys.last() != Some(&key) {
                    keys.push(key);
                }
                element
            })
            .collect();
        self.taken.fetch_add(elements.len() as u64, Atomic::Relaxed);
        let consumer = Arc::clone(self);
        batches.spawn(async move {
            // Handlers' panics are caught in each call; one here is the engine's own. Its
            // messages stay unacknowledged (an at-least-once transport delivers them again
            // after a restart), and its keys are released so that the rest goes on.
            let run = std::panic::AssertUnwindSafe(consumer.run_batch(elements));
            if let Err(panic) = futures_util::FutureExt::catch_unwind(run).await {
                let reason = super::guarded::panic_message(&*panic);
                tracing::error!(app = %consumer.runtime.name, %reason, "batch task failed; its messages are not acknowledged");
            }
            (id, keys)
        });
    }

    /// Calls the handler with `elements` until each is handled, dead-lettered or skipped —
    /// the failed ones again as the retry policy says — or until shutdown, which leaves the
    /// rest unacknowledged.
    async fn run_batch(&self, elements: Vec<Element>) {
        let span = tracing::debug_span!("batch", app = %self.runtime.name, size = elements.len());
        let spans = self.runtime.socket.spans();
        let mut pending: Vec<(Element, Traced)> = elements
            .into_iter()
            .map(|element| {
                let carried = element
                    .message
                    .as_ref()
                    .and_then(|m| m.trace_context.as_ref());
                let traced = spans.process(&element.delivery, carried);
                (element, traced)
            })
            .collect();
        let together = pending
            .iter()
            .find_map(|(element, _)| element.delivery.staged().map(Staged::sibling));
        loop {
            let Some(verdicts) = self.call_batch(&mut pending, &span).await else {
                tracing::warn!(app = %self.runtime.name, size = pending.len(), left = self.left_behind(), "batch handler did not finish within the shutdown grace period; cancelled");
                return;
            };
            let mut retry = Vec::new();
            let mut pause = Duration::ZERO;
            let mut settled = Vec::with_capacity(pending.len());
            for ((element, traced), verdict) in pending.into_iter().zip(verdicts) {
                if let Some(failure) = verdict {
                    let measure = element.measure.as_ref();
                    let failed = self.failed(
                        &element.delivery,
                        failure,
                        element.attempt,
                        measure,
                        &traced,
                    );
                    // Its dead letter, held with it where the transport stages.
                    let after = match element.delivery.staged() {
                        Some(staged) => staged.clone().scope(failed).await,
                        None => failed.await,
                    };
                    match after {
                        AfterFailed::Settled => {}
                        // Shutdown: what was settled is acknowledged, the rest comes again.
                        AfterFailed::Left => {
                            retry.clear();
                            break;
                        }
                        AfterFailed::RetryAfter(wait) => {
                            pause = pause.max(wait);
                            retry.push((element, traced));
                            continue;
                        }
                    }
                }
                settled.push((element, traced));
            }
            // Acknowledged together: a transaction takes the call's publishes with every
            // message it settled, or none of them.
            let acknowledge = || {
                for (element, traced) in settled {
                    let Element {
                        delivery, measure, ..
                    } = element;
                    delivery.ack();
                    traced.end();
                    self.done.fetch_add(1, Atomic::Relaxed);
                    if let Some(measure) = measure {
                        measure.finished();
                    }
                }
            };
            match &together {
                Some(staged) => staged.settle_together(acknowledge),
                None => acknowledge(),
            }
            if retry.is_empty() {
                return;
            }
            if !self.pause_unless_shutdown(pause).await {
                tracing::warn!(app = %self.runtime.name, failed = retry.len(), left = self.left_behind(), "shutting down with failed batch elements");
                return;
            }
            for (element, _) in &mut retry {
                element.attempt = element.attempt.saturating_add(1);
                if let Some(measure) = &element.measure {
                    measure.topic.retried.increment(1);
                }
            }
            pending = retry;
        }
    }

    /// Calls the handler once with `pending`'s messages: per element, `None` when it was
    /// handled, else how it failed. `None` for the whole when the call was cancelled (shutdown).
    async fn call_batch(
        &self,
        pending: &mut [(Element, Traced)],
        span: &tracing::Span,
    ) -> Option<Vec<Option<Failure>>> {
        let mut verdicts: Vec<Option<Failure>> = vec![None; pending.len()];
        let format = self.runtime.socket.wire_format();
        let mut messages = Vec::with_capacity(pending.len());
        // Which element each message given to the batch is.
        let mut given = Vec::with_capacity(pending.len());
        for (index, (element, _)) in pending.iter_mut().enumerate() {
            // Decoded before: reading it again cannot fail, but a failure is still bad input.
            match element
                .message
                .take()
                .map_or_else(|| element.delivery.message(format), Ok)
            {
                Ok(message) => {
                    messages.push(message);
                    given.push(index);
                }
                Err(error) => {
                    verdicts[index] =
                        Some(Failure::BadInput(format!("not a spa-dat message: {error}")));
                }
            }
        }
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let context = HandlerContext {
            app: Arc::clone(&self.runtime),
            message: None,
            received: None,
            readers_left: 0,
            delivery_readers_left: 0,
            batch: Some(BatchInput {
                messages,
                rejected: Arc::clone(&rejected),
            }),
        };
        let call = self.handler.call(context);
        // A transactional transport's: the call's publishes are held in an area of its own,
        // handed below to a message it settles (see `socket::spi::Staged`).
        let staged = pending
            .iter()
            .find_map(|(element, _)| element.delivery.staged())
            .map(Staged::sibling);
        let guarded = run_guarded(call, span.clone(), &self.runtime.shutdown, self.limits);
        let outcome = match &staged {
            Some(staged) => staged.clone().scope(guarded).await,
            None => guarded.await,
        };
        // Messages whose argument could not be taken were left out of the handler's batch:
        // its index `i` is the `i`-th of the others.
        let rejected =
            std::mem::take(&mut *rejected.lock().unwrap_or_else(PoisonError::into_inner));
        for (position, error) in rejected {
            if let Some(&index) = given.get(position) {
                verdicts[index] = Some(Failure::of(&error));
            }
        }
        given.retain(|&index| verdicts[index].is_none());
        let fail_all = |verdicts: &mut Vec<Option<Failure>>, failure: Failure| {
            for &index in &given {
                verdicts[index] = Some(failure.clone());
            }
        };
        match outcome {
            Outcome::Done(Ok(None)) => {}
            Outcome::Done(Ok(Some(_))) => {
                if !self.warned_unrequested_reply.swap(true, Atomic::Relaxed) {
                    tracing::warn!(app = %self.runtime.name, "a batch handler returned a reply; batch handlers do not reply, and it is dropped (logged once)");
                }
            }
            Outcome::Done(Err(error)) => match error.downcast::<BatchResult>() {
                Ok(result) => {
                    for (position, error) in result.into_failures() {
                        match given.get(position) {
                            Some(&index) => verdicts[index] = Some(Failure::of(&error)),
                            None => {
                                tracing::error!(app = %self.runtime.name, position, size = given.len(), %error, "the batch handler named a failed element past the end of its batch; ignored")
                            }
                        }
                    }
                }
                Err(error) => fail_all(&mut verdicts, Failure::of(&error)),
            },
            Outcome::Panicked(reason) => fail_all(&mut verdicts, Failure::panicked(&reason)),
            Outcome::TimedOut(after) => fail_all(&mut verdicts, Failure::timed_out(after)),
            Outcome::Cancelled => return None,
        }
        // The call's publishes go with the first message it handled (all the batch's
        // acknowledgements reach the transaction together); with none handled, nowhere.
        let handled = verdicts
            .iter()
            .position(Option::is_none)
            .and_then(|index| pending[index].0.delivery.staged());
        if let (Some(staged), Some(handled)) = (staged, handled) {
            for message in staged.take() {
                handled.push(message);
            }
        }
        Some(verdicts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn element(payload: &str) -> Element {
        Element {
            delivery: Delivery::new(Arc::from("t"), Bytes::from(payload.to_owned())),
            message: None,
            measure: None,
            attempt: 1,
        }
    }

    fn key(name: &str) -> OrderKey {
        OrderKey::Key(Bytes::from(name.to_owned()))
    }

    fn payloads(forming: &Forming) -> Vec<String> {
        forming
            .elements
            .iter()
            .map(|(_, e)| String::from_utf8_lossy(&e.delivery.payload).into_owned())
            .collect()
    }

    #[test]
    fn a_keys_messages_never_go_to_two_batches_at_once_and_keep_their_order() {
        let mut claims = Claims::default();
        let mut sequence = 0;
        let mut first = Forming::new(0);
        claims.arrived(key("a"), element("a0"), &mut first, 2);
        claims.arrived(key("b"), element("b0"), &mut first, 2);
        // Full: a1 waits, claimed by the forming batch.
        claims.arrived(key("a"), element("a1"), &mut first, 2);
        let mut second = Forming::new(1);
        claims.fill(&mut second, 2, &mut sequence);
        claims.arrived(key("c"), element("c0"), &mut second, 2);
        // `a` and `b` are claimed by the first batch (running now): they wait for it.
        claims.arrived(key("a"), element("a2"), &mut second, 2);
        claims.arrived(key("b"), element("b1"), &mut second, 2);
        assert_eq!(payloads(&first), ["a0", "b0"]);
        assert_eq!(payloads(&second), ["c0"]);
        let mut third = Forming::new(2);
        claims.fill(&mut third, 2, &mut sequence);
        assert!(third.elements.is_empty(), "a and b are still running");
        claims.released(0, &[key("a"), key("b")]);
        claims.fill(&mut third, 2, &mut sequence);
        assert_eq!(payloads(&third), ["a1", "a2"]);
        let mut fourth = Forming::new(3);
        claims.fill(&mut fourth, 2, &mut sequence);
        // `b` is the fourth's now: its next message joins it directly.
        claims.arrived(key("b"), element("b2"), &mut fourth, 2);
        assert_eq!(payloads(&fourth), ["b1", "b2"]);
        // Released by a batch that no longer claims it: nothing changes.
        claims.released(0, &[key("b")]);
        claims.arrived(key("b"), element("b3"), &mut Forming::new(4), 2);
        assert_eq!(claims.keys.get(&key("b")).map(|c| c.waiting.len()), Some(1));
    }

    #[test]
    fn unordered_messages_fill_any_batch_in_arrival_order() {
        let mut claims = Claims::default();
        let mut sequence = 10;
        let mut first = Forming::new(0);
        for (i, name) in ["u0", "u1", "u2"].into_iter().enumerate() {
            claims.arrived(OrderKey::Alone(i as u64), element(name), &mut first, 2);
        }
        assert_eq!(payloads(&first), ["u0", "u1"]);
        let mut second = Forming::new(1);
        claims.fill(&mut second, 2, &mut sequence);
        claims.arrived(OrderKey::Alone(3), element("u3"), &mut second, 2);
        assert_eq!(payloads(&second), ["u2", "u3"]);
    }
}
