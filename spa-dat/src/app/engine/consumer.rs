//! The per-message path of a consumer: decode, call the handler, reply, dead-letter, and
//! acknowledge — on the transport's task as messages arrive, or on the consumer's own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::guarded::{
    first_poll, run_guarded, run_to_end, FirstPoll, GuardedCall, HandlerCall, Limits, Outcome,
};
use crate::error::Error;
use crate::handler::call::BoxedHandler;
use crate::handler::extract::{HandlerContext, Received};
use crate::message::SpaMessage;
use crate::metrics::{Measure, TopicMetrics};
use crate::runtime::{AfterFailure, AppRuntime, RetryPolicy};
use crate::socket::{Arrival, ArrivalHandler, Delivery, Inbox, Outgoing, WireFormat};
use crate::telemetry::Traced;
use tracing::Instrument;

/// A message [`Consumer::handle_now`] could not finish without awaiting.
pub(crate) struct Unfinished {
    delivery: Delivery,
    measure: Option<Measure>,
    stage: Stage,
}

/// How far an [`Unfinished`] message got.
enum Stage {
    /// Bad input — not a spa-dat message, or a response topic nobody may publish to: the
    /// handler is not called; dead-letter it, then acknowledge.
    BadInput { reason: String },
    /// The handler finished with a reply, an error or a panic.
    Finished { call: CallSpans, outcome: Outcome },
    /// The handler is still running.
    Running {
        call: CallSpans,
        running: GuardedCall,
    },
}

/// Where a request's reply goes, and in which form: the request's own (an envelope request on a
/// raw bus is answered in the envelope).
struct ReplyTo {
    topic: String,
    format: WireFormat,
}

/// What a message the handler was called for carries to its settlement.
struct CallSpans {
    /// Where its reply goes.
    reply_to: Option<ReplyTo>,
    /// Its log span (app, topic, position).
    span: tracing::Span,
    /// Its `process` span.
    traced: Traced,
}

impl Unfinished {
    /// The delivery being handled.
    pub(crate) fn delivery_mut(&mut self) -> &mut Delivery {
        &mut self.delivery
    }
}

/// The per-message path of a consumer: its application's name, socket and shutdown are the
/// runtime's.
pub(crate) struct Consumer {
    pub(crate) handler: BoxedHandler,
    pub(crate) runtime: Arc<AppRuntime>,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) limits: Limits,
    pub(crate) retry: RetryPolicy,
    /// A reply to a message without a response topic was logged at WARN already.
    pub(crate) warned_unrequested_reply: AtomicBool,
    /// The transport takes acknowledgements in any order ([`crate::socket::Capabilities`]).
    pub(crate) acks_in_any_order: bool,
    /// Messages taken for handling, and messages whose handling ended: the watchdog compares
    /// them ([`Consumer::watch`]).
    pub(crate) taken: AtomicU64,
    pub(crate) done: AtomicU64,
    /// The transport never delivers a message again (the in-process bus): shutdown drains it
    /// ([`Consumer::stop_taking`]).
    pub(crate) drains: bool,
    /// Set when the consumer stopped taking messages.
    pub(crate) stopped: AtomicBool,
    /// Messages [`Consumer::handle_now`] refused because the consumer had stopped.
    pub(crate) left: AtomicU64,
}

/// A consumer handling messages on its transport's task, as they arrive.
struct OnArrival(Arc<Consumer>);

impl ArrivalHandler for OnArrival {
    fn handle_now(&self, delivery: Delivery) -> Option<BoxFuture<'static, ()>> {
        let unfinished = self.0.handle_now(delivery)?;
        let consumer = Arc::clone(&self.0);
        Some(Box::pin(async move { consumer.finish(unfinished).await }))
    }
}

impl Consumer {
    /// Handles what arrives in `inbox` until shutdown or until the socket closes.
    pub(crate) async fn run(self: Arc<Self>, mut inbox: Inbox) {
        inbox.handle_on_arrival(Arc::new(OnArrival(Arc::clone(&self))));
        let mut batch = Vec::with_capacity(64);
        // One shutdown watch for the whole loop: registering a new one per batch costs a lock.
        let stop = self.stop_taking();
        tokio::pin!(stop);
        loop {
            let received = tokio::select! {
                biased;
                _ = &mut stop => break,
                n = inbox.recv_arrivals(&mut batch, 64) => n,
            };
            if received == 0 {
                tracing::info!(app = %self.runtime.name, "socket closed; consumer stops");
                break;
            }
            for arrival in batch.drain(..) {
                match arrival {
                    Arrival::Started(rest) => rest.await,
                    Arrival::Delivery(delivery) => {
                        // Most messages finish without awaiting anything: no per-message future.
                        if let Some(unfinished) = self.handle_now(delivery) {
                            self.finish(unfinished).await;
                        }
                    }
                }
                inbox.finished();
            }
        }
        // Nothing more starts on arrival; what did start there gets its grace period. It can
        // only be first in the inbox: handling starts on arrival only when the inbox is empty.
        inbox.close();
        let mut discarded = 0;
        if let Some(arrival) = inbox.try_recv_arrival() {
            match arrival {
                Arrival::Started(rest) => rest.await,
                Arrival::Delivery(_) => discarded += 1,
            }
            inbox.finished();
        }
        discarded += inbox.discard();
        self.report_left(self.left.load(Ordering::Relaxed) as usize + discarded);
    }

    /// Completes when the consumer stops taking messages: when shutdown is asked for — or, on
    /// a transport that never delivers a message again (the in-process bus), once every
    /// message it delivered is finished with (handlers may publish more meanwhile: those are
    /// handled too), or when the grace period is over, whichever comes first.
    pub(super) async fn stop_taking(&self) {
        let shutdown = &self.runtime.shutdown;
        shutdown.triggered().await;
        if self.drains {
            tokio::select! {
                () = shutdown.pending().emptied() => {}
                () = tokio::time::sleep_until(shutdown.deadline(self.limits.grace)) => {}
            }
        }
        self.stopped.store(true, Ordering::Release);
    }

    /// What becomes of bad input (never retried), for its WARN line.
    fn bad_input_goes(&self) -> &str {
        match &self.dead_letter_topic {
            Some(_) => "dead-lettered",
            None => "dropped: no dead-letter topic",
        }
    }

    /// Whether nothing new may start: shutdown was asked for and no drain goes on (none, or
    /// it ended, or its grace period is over — before the loop that ends it notices).
    pub(super) fn takes_nothing_more(&self) -> bool {
        let shutdown = &self.runtime.shutdown;
        shutdown.is_triggered()
            && (!self.drains
                || self.stopped.load(Ordering::Acquire)
                || tokio::time::Instant::now() >= shutdown.deadline(self.limits.grace))
    }

    /// What a message becomes when shutdown cuts its handling short, for the logs.
    pub(super) fn left_behind(&self) -> &'static str {
        if self.drains {
            "discarded: the in-process bus does not deliver it again"
        } else {
            "not acknowledged, it comes again"
        }
    }

    /// `delivery` is left unfinished by shutdown: said at WARN with what becomes of it, and
    /// counted for [`Consumer::report_left`].
    fn left_at_shutdown(&self, delivery: &Delivery, why: &str) {
        about!(warn, self, delivery, left = self.left_behind(), "{why}");
        self.left.fetch_add(1, Ordering::Relaxed);
    }

    /// Says, once the consumer stopped, that it left `left` messages unhandled: at WARN where
    /// they are lost (the in-process bus), at DEBUG where the broker delivers them again.
    pub(super) fn report_left(&self, left: usize) {
        if left == 0 {
            return;
        }
        if self.drains {
            tracing::warn!(
                app = %self.runtime.name,
                discarded = left,
                grace_ms = self.limits.grace.as_millis() as u64,
                "shutdown discarded in-process messages not handled within the grace period"
            );
        } else {
            tracing::debug!(
                app = %self.runtime.name,
                left,
                "messages left unacknowledged at shutdown; the broker delivers them again"
            );
        }
    }

    /// `delivery`, which is not a message of the bus's wire format: logged, to be dead-lettered.
    pub(super) fn undecodable(
        &self,
        delivery: Delivery,
        measure: Option<Measure>,
        error: &Error,
    ) -> Unfinished {
        about!(warn, self, delivery, size = delivery.payload.len(), %error, then = self.bad_input_goes(), "a message that cannot be decoded, not handled (a publisher that sends bare payloads, as FastStream does, needs `wire = \"raw\"` on the bus)");
        Unfinished {
            delivery,
            measure,
            stage: Stage::BadInput {
                reason: format!("not a spa-dat message: {error}"),
            },
        }
    }

    /// Handles `delivery` as far as it goes without awaiting: decoding, the handler's first
    /// poll, the acknowledgement. Returns what is left to await, if anything. Once shutdown is
    /// requested nothing new starts: unacknowledged, an at-least-once transport delivers the
    /// message again.
    pub(crate) fn handle_now(&self, delivery: Delivery) -> Option<Unfinished> {
        if self.takes_nothing_more() {
            self.left.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
        let measure = Measure::start(&self.runtime.metrics, &delivery.topic);
        let (message, read_as) = match delivery.read(self.runtime.socket.wire_format()) {
            Ok(read) => read,
            Err(error) => return Some(self.undecodable(delivery, measure, &error)),
        };
        // The envelope's ResponseTopic, else the transport's (MQTT 5's response topic
        // property): a requester that is not spa-dat may set only the latter.
        let response_topic = message.response_topic.clone().or_else(|| {
            delivery
                .headers
                .get(crate::socket::headers::RESPONSE_TOPIC)
                .map(str::to_owned)
        });
        // Validated at the edge: the reply would go to a topic chosen by whoever published
        // the request, and an MQTT broker drops the connection of a client publishing to an
        // empty topic, a wildcard or U+0000 (MQTT 3.1.1 §4.7.3).
        if let Some(Err(problem)) = response_topic.as_deref().map(crate::topic::validate_topic) {
            about!(warn, self, delivery, %problem, then = self.bad_input_goes(), "a request whose response topic cannot be published to, not handled");
            return Some(Unfinished {
                delivery,
                measure,
                stage: Stage::BadInput {
                    reason: format!("bad ResponseTopic: {problem}"),
                },
            });
        }
        let reply_to = response_topic.map(|topic| ReplyTo {
            topic,
            format: read_as,
        });
        let traced = self
            .runtime
            .socket
            .spans()
            .process(&delivery, message.trace_context.as_ref());
        let call = self.call(message, &delivery);
        let (span, polled) = traced.in_scope(|| {
            let span = self.log_span(&delivery);
            // A transactional transport's publishes are held with the message (see
            // `socket::spi::Staged`): the handler runs inside its staging area.
            let polled = match delivery.staged() {
                Some(staged) => staged.clone().sync_scope(|| first_poll(call, &span)),
                None => first_poll(call, &span),
            };
            (span, polled)
        });
        match polled {
            FirstPoll::Finished(Outcome::Done(Ok(None))) => {
                delivery.ack();
                traced.end();
                self.done.fetch_add(1, Ordering::Relaxed);
                if let Some(measure) = measure {
                    measure.finished();
                }
                None
            }
            FirstPoll::Finished(outcome) => Some(Unfinished {
                delivery,
                measure,
                stage: Stage::Finished {
                    call: CallSpans {
                        reply_to,
                        span,
                        traced,
                    },
                    outcome,
                },
            }),
            FirstPoll::Running(running) => Some(Unfinished {
                delivery,
                measure,
                stage: Stage::Running {
                    call: CallSpans {
                        reply_to,
                        span,
                        traced,
                    },
                    running,
                },
            }),
        }
    }

    /// Finishes what [`Consumer::handle_now`] left: the rest of the handler, then
    /// [`Consumer::settle`].
    pub(crate) async fn finish(&self, unfinished: Unfinished) {
        // The rest of the handler, its retries, its reply and its dead letter: all inside the
        // message's staging area, where it has one.
        match unfinished.delivery.staged().cloned() {
            Some(staged) => staged.scope(self.finish_counted(unfinished)).await,
            None => self.finish_counted(unfinished).await,
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    async fn finish_counted(&self, unfinished: Unfinished) {
        let Unfinished {
            delivery,
            measure,
            stage,
        } = unfinished;
        let (call, outcome) = match stage {
            Stage::BadInput { reason } => {
                if let Some(measure) = &measure {
                    measure.topic.skipped.increment(1);
                }
                let dead_lettered = self
                    .dead_letter(&delivery, &reason, 0, measure.as_ref())
                    .await;
                if dead_lettered {
                    delivery.ack();
                    if let Some(measure) = measure {
                        measure.finished();
                    }
                }
                return;
            }
            Stage::Finished { call, outcome } => (call, outcome),
            Stage::Running { call, running } => {
                let outcome = call
                    .traced
                    .scoped(run_to_end(
                        running,
                        call.span.clone(),
                        &self.runtime.shutdown,
                        self.limits,
                    ))
                    .await;
                (call, outcome)
            }
        };
        let CallSpans {
            reply_to,
            span,
            traced,
        } = call;
        let settled = self.settle(delivery, reply_to, outcome, span, &traced, measure);
        traced.scoped(settled).await;
        traced.end();
    }

    /// Acts on the outcome of a handler call: the reply and the acknowledgement; or, for a
    /// failed call, the retries of the policy, then the dead letter, skipping or retrying on
    /// (see [`RetryPolicy`]). A message left unacknowledged (shutdown) comes again. `span` is
    /// the message's log span, `traced` its `process` span (current while this runs): retries
    /// and the reply run in both.
    async fn settle(
        &self,
        delivery: Delivery,
        reply_to: Option<ReplyTo>,
        outcome: Outcome,
        span: tracing::Span,
        traced: &Traced,
        measure: Option<Measure>,
    ) {
        let mut outcome = outcome;
        let mut attempt: u32 = 1;
        loop {
            let failure = match outcome {
                Outcome::Done(Ok(None)) => break,
                Outcome::Done(Ok(Some(reply))) => {
                    if !self
                        .reply(
                            &delivery,
                            reply_to,
                            reply.into_message(),
                            attempt,
                            measure.as_ref(),
                        )
                        .instrument(span.clone())
                        .await
                    {
                        return;
                    }
                    break;
                }
                Outcome::Cancelled => {
                    self.left_at_shutdown(
                        &delivery,
                        "handler did not finish within the shutdown grace period; cancelled",
                    );
                    return;
                }
                Outcome::Done(Err(error)) => Failure::of(&error),
                Outcome::Panicked(reason) => Failure::panicked(&reason),
                Outcome::TimedOut(after) => Failure::timed_out(after),
            };
            let pause = match self
                .failed(&delivery, failure, attempt, measure.as_ref(), traced)
                .await
            {
                AfterFailed::Settled => break,
                AfterFailed::Left => return,
                AfterFailed::RetryAfter(pause) => pause,
            };
            if !self.pause_unless_shutdown(pause).await {
                self.left_at_shutdown(&delivery, "shutting down with a failed message");
                return;
            }
            attempt = attempt.saturating_add(1);
            if let Some(measure) = &measure {
                measure.topic.retried.increment(1);
            }
            outcome = self.call_again(&delivery, &span).await;
        }
        delivery.ack();
        if let Some(measure) = measure {
            measure.finished();
        }
    }

    /// Settles attempt `attempt` of `delivery` that failed with `failure`, as the retry policy
    /// says: counted and traced, then dead-lettered or skipped (settled: acknowledge it), or to
    /// be retried after a pause. Bad input is never retried. `Left` when shutdown came while
    /// dead-lettering: not acknowledged, it comes again.
    pub(super) async fn failed(
        &self,
        delivery: &Delivery,
        failure: Failure,
        attempt: u32,
        measure: Option<&Measure>,
        traced: &Traced,
    ) -> AfterFailed {
        // Only the attempt that settles the message publishes: a failed one's publishes, held
        // in a transactional transport's staging area, are dropped.
        if let Some(staged) = delivery.staged() {
            staged.discard();
        }
        let count = |pick: fn(&TopicMetrics) -> &metrics::Counter| {
            if let Some(measure) = measure {
                pick(&measure.topic).increment(1);
            }
        };
        let (failure, permanent) = match failure {
            Failure::BadInput(reason) => {
                // No retry can fix it. WARN, as an undecodable message is.
                about!(warn, self, delivery, %reason, then = self.bad_input_goes(), "the handler cannot take this message (bad payload, or rejected); not retried");
                count(|m| &m.skipped);
                traced.failed(&reason);
                return self
                    .dead_lettered(delivery, &reason, attempt, measure)
                    .await;
            }
            Failure::Failed { reason, permanent } => (reason, permanent),
        };
        count(|m| &m.failed);
        traced.failed(&failure);
        let policy = &self.retry;
        let has_dead_letter = self.dead_letter_topic.is_some();
        match policy.after_failure(attempt, permanent, has_dead_letter) {
            AfterFailure::Retry(pause) => {
                about!(warn, self, delivery, attempt, attempts = policy.attempts, retry_in = ?pause, "{failure}; retrying");
                AfterFailed::RetryAfter(pause)
            }
            AfterFailure::DeadLetter => {
                about!(
                    error,
                    self,
                    delivery,
                    attempts = attempt,
                    "{failure}; dead-lettering"
                );
                self.dead_lettered(delivery, &failure, attempt, measure)
                    .await
            }
            AfterFailure::Skip => {
                about!(
                    error,
                    self,
                    delivery,
                    attempts = attempt,
                    "{failure}; skipped (no dead-letter topic)"
                );
                AfterFailed::Settled
            }
            AfterFailure::Hold(pause) => {
                about!(error, self, delivery, attempts = attempt, retry_in = ?pause, "{failure}; not acknowledged: with no dead-letter topic it is retried until it succeeds");
                AfterFailed::RetryAfter(pause)
            }
        }
    }

    /// [`Consumer::dead_letter`] as an [`AfterFailed`].
    async fn dead_lettered(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
        measure: Option<&Measure>,
    ) -> AfterFailed {
        if self.dead_letter(delivery, reason, attempts, measure).await {
            AfterFailed::Settled
        } else {
            AfterFailed::Left
        }
    }

    /// Calls the handler again for `delivery` (a retry), in its `span`.
    async fn call_again(&self, delivery: &Delivery, span: &tracing::Span) -> Outcome {
        let message = match delivery.message(self.runtime.socket.wire_format()) {
            Ok(message) => message,
            // Decoded before; cannot fail now, but a failure is still a failure.
            Err(error) => return Outcome::Done(Err(Box::new(error))),
        };
        let call = self.call(message, delivery);
        run_guarded(call, span.clone(), &self.runtime.shutdown, self.limits).await
    }

    /// The `tracing` span a message is handled in: log lines get its app and topic.
    pub(super) fn log_span(&self, delivery: &Delivery) -> tracing::Span {
        // DEBUG, as tower-http's request spans: an INFO span per message halves a consumer's
        // throughput under a typical `info` filter (measured on Kafka: 0.62× raw).
        tracing::debug_span!("message", app = %self.runtime.name, topic = %delivery.topic, position = ?delivery.position)
    }

    /// The handler's call for `message`, decoded from `delivery`.
    fn call(&self, message: SpaMessage, delivery: &Delivery) -> HandlerCall {
        let context = HandlerContext {
            app: Arc::clone(&self.runtime),
            message: Some(message),
            // Copied only for a handler that asks (its headers may allocate).
            received: self
                .handler
                .reads_delivery()
                .then(|| Received::of(delivery)),
            readers_left: 0,
            delivery_readers_left: 0,
            batch: None,
        };
        self.handler.call(context)
    }

    /// Publishes the handler's `reply` to the request's response topic; the request is
    /// acknowledged only after that. A reply refused for good (too large, a topic the transport
    /// cannot take) makes the request bad input: dead-lettered, or skipped with an ERROR. One
    /// that fails for a reason that may pass (the broker away) is published again as the
    /// retry policy says — the handler is not called again — and once its attempts are
    /// spent, the request goes where a failed message goes: the dead-letter topic, skipped
    /// if the policy says so, else on being retried every `max_delay`. False when shutdown
    /// came first: the request stays unacknowledged and comes again.
    async fn reply(
        &self,
        delivery: &Delivery,
        reply_to: Option<ReplyTo>,
        reply: SpaMessage,
        attempts: u32,
        measure: Option<&Measure>,
    ) -> bool {
        let Some(ReplyTo { topic, format }) = reply_to else {
            // Once per application at WARN: a handler that answers messages nobody asked is
            // usually a mistake (or a requester that forgot its response topic).
            if !self.warned_unrequested_reply.swap(true, Ordering::Relaxed) {
                about!(warn, self, delivery, "the handler returned a reply to a message without a response topic; the reply is dropped (logged once; later ones at DEBUG)");
            } else {
                about!(
                    debug,
                    self,
                    delivery,
                    "reply to a message without a response topic dropped"
                );
            }
            return true;
        };
        let mut reply = self.runtime.socket.builder().stamp(reply);
        reply.topic = topic;
        let policy = &self.retry;
        let mut tries: u32 = 1;
        loop {
            let publish = self.runtime.socket.publish_reply(&reply, delivery, format);
            let error = match self.before_grace_ends(publish).await {
                Some(Ok(())) => return true,
                Some(Err(error)) => error,
                None => {
                    self.left_at_shutdown(delivery, "shutting down with a reply not confirmed within the grace period (it may still arrive); the request is not acknowledged");
                    return false;
                }
            };
            let reply_topic = crate::topic::shortened(&reply.topic);
            if error.is_permanent() {
                about!(error, self, delivery, %reply_topic, %error, "the reply cannot be published; the request is dead-lettered, or skipped without a dead-letter topic");
                if let Some(measure) = measure {
                    measure.topic.skipped.increment(1);
                }
                let reason = format!("reply refused: {error}");
                return self.dead_letter(delivery, &reason, attempts, measure).await;
            }
            let has_dead_letter = self.dead_letter_topic.is_some();
            let pause = match policy.after_failure(tries, false, has_dead_letter) {
                AfterFailure::Retry(pause) | AfterFailure::Hold(pause) => pause,
                AfterFailure::DeadLetter => {
                    about!(error, self, delivery, %reply_topic, %error, tries, "publishing the reply failed; dead-lettering the request");
                    let reason = format!("reply not published: {error}");
                    return self.dead_letter(delivery, &reason, attempts, measure).await;
                }
                AfterFailure::Skip => {
                    about!(error, self, delivery, %reply_topic, %error, tries, "publishing the reply failed; the request is skipped (no dead-letter topic)");
                    return true;
                }
            };
            about!(warn, self, delivery, %reply_topic, %error, tries, retry_in = ?pause, "publishing the reply failed; the request stays unacknowledged until it is published");
            if !self.pause_unless_shutdown(pause).await {
                self.left_at_shutdown(delivery, "shutting down with a reply not published");
                return false;
            }
            tries = tries.saturating_add(1);
        }
    }

    /// Sleeps `pause`; false when the consumer stopped taking messages first (see
    /// [`Consumer::stop_taking`]).
    pub(super) async fn pause_unless_shutdown(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = self.stop_taking() => false,
        }
    }

    /// Forwards `delivery` to the dead-letter topic, if there is one, retrying until the broker
    /// has it: the message may be acknowledged only then. False when shutdown came first: the
    /// message stays unacknowledged, and an at-least-once transport delivers it again. Later
    /// messages wait meanwhile, as acknowledgements go in order.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
        measure: Option<&Measure>,
    ) -> bool {
        let Some(topic) = self.dead_letter_topic.as_deref() else {
            return true;
        };
        let mut pause = FIRST_PAUSE;
        let mut dead_letter = Outgoing::dead_letter(topic, delivery, reason, attempts);
        let mut summarized = false;
        loop {
            let forward = self.runtime.socket.forward(dead_letter.clone());
            let error = match self.before_grace_ends(forward).await {
                Some(Ok(())) => {
                    if let Some(measure) = measure {
                        measure.topic.dead_lettered.increment(1);
                    }
                    return true;
                }
                Some(Err(error)) => error,
                None => {
                    return self.left_undead(
                        delivery,
                        topic,
                        "shutting down with a message whose dead letter was not confirmed within the grace period (it may still arrive); not acknowledged",
                    )
                }
            };
            if error.is_permanent() && !summarized {
                // Most often too large (an MQTT broker takes larger packets in than out): a
                // summary of it fits, and a retry of the whole never would.
                about!(error, self, delivery, dead_letter_topic = topic, %error, "the dead letter was refused; forwarding a summary instead (reason, size, digest and the first bytes)");
                dead_letter = Outgoing::dead_letter_summary(topic, delivery, reason, attempts);
                summarized = true;
                continue;
            }
            about!(error, self, delivery, dead_letter_topic = topic, %error, retry_in = ?pause, "forwarding to the dead-letter topic failed; the message stays unacknowledged until it succeeds");
            if !self.pause_unless_shutdown(pause).await {
                return self.left_undead(
                    delivery,
                    topic,
                    "shutting down with a message neither handled nor dead-lettered",
                );
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// As `left_at_shutdown`, with the dead-letter topic beside it: false.
    fn left_undead(&self, delivery: &Delivery, topic: &str, why: &str) -> bool {
        about!(
            warn,
            self,
            delivery,
            dead_letter_topic = topic,
            left = self.left_behind(),
            "{why}"
        );
        self.left.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// `publish`'s result, unless the grace period ends first (a publish waiting for room in
    /// an inbox nobody reads any more, a broker that does not answer): `None` then, and the
    /// message it was for stays unfinished.
    async fn before_grace_ends<T>(
        &self,
        publish: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            biased;
            result = publish => Some(result),
            () = self.grace_over() => None,
        }
    }

    /// Completes when shutdown was asked for and its grace period is over.
    async fn grace_over(&self) {
        let shutdown = &self.runtime.shutdown;
        shutdown.triggered().await;
        tokio::time::sleep_until(shutdown.deadline(self.limits.grace)).await;
    }
}

/// How a failed handler call (or a failed element of a batch) is settled.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// A payload that is not the type a `Json<T>` argument asks for, or a message a layer
    /// refused: bad input, not a handler bug, and no retry can fix it — dead-lettered at once.
    BadInput(String),
    /// The handler failed: retried as the policy says; an error no retry can fix (a publish
    /// the broker refused as too large, say) is `permanent` and goes to the dead-letter topic
    /// at once.
    Failed { reason: String, permanent: bool },
}

/// What became of a failed attempt ([`Consumer::failed`]).
pub(super) enum AfterFailed {
    /// Dead-lettered or skipped: acknowledge it.
    Settled,
    /// Call the handler again after this pause.
    RetryAfter(Duration),
    /// Shutdown came first: leave it unacknowledged.
    Left,
}

impl Failure {
    /// A handler call that panicked with `reason`: retried.
    pub(super) fn panicked(reason: &str) -> Self {
        Failure::Failed {
            reason: format!("handler panicked: {reason}"),
            permanent: false,
        }
    }

    /// A handler call cancelled at its timeout, `after` it started: retried.
    pub(super) fn timed_out(after: Duration) -> Self {
        Failure::Failed {
            reason: format!("handler timed out after {after:?}"),
            permanent: false,
        }
    }

    /// How the handler's `error` is settled.
    pub(super) fn of(error: &crate::error::BoxError) -> Self {
        match error.downcast_ref::<Error>() {
            Some(Error::Payload { .. } | Error::Rejected { .. }) => {
                Failure::BadInput(format!("bad payload: {error}"))
            }
            known => Failure::Failed {
                reason: format!("handler failed: {error}"),
                permanent: known.is_some_and(Error::is_permanent),
            },
        }
    }
}

/// The first pause before a reply or a dead letter is published again.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a reply or a dead letter.
const LONGEST_PAUSE: Duration = Duration::from_secs(10);
