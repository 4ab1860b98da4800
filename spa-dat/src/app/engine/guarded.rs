//! A handler call guarded against panics and, after shutdown, against running forever: the
//! first poll inline (most handlers finish there), the rest with the shutdown grace period.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tracing::Instrument;

use crate::handler::CallResult;
use crate::runtime::Shutdown;

/// How a guarded handler call ended.
pub(crate) enum Outcome {
    Done(CallResult),
    Panicked(String),
    /// Ran past the handler timeout; cancelled.
    TimedOut(Duration),
    /// Still running when the shutdown grace period ended; cancelled.
    Cancelled,
}

pub(crate) type HandlerCall = futures_util::future::BoxFuture<'static, CallResult>;
pub(crate) type GuardedCall = futures_util::future::CatchUnwind<AssertUnwindSafe<HandlerCall>>;

/// A handler call after its first poll.
pub(crate) enum FirstPoll {
    Finished(Outcome),
    /// Still running: finish it with [`run_to_end`].
    Running(GuardedCall),
}

/// Polls a handler future once, catching panics, inside `span`. Most handlers finish on their
/// first poll: they need neither the shutdown watch nor an instrumented future.
pub(crate) fn first_poll(call: HandlerCall, span: &tracing::Span) -> FirstPoll {
    let mut call = AssertUnwindSafe(call).catch_unwind();
    let polled = {
        let _entered = span.enter();
        (&mut call).now_or_never()
    };
    match polled {
        Some(result) => FirstPoll::Finished(outcome(result)),
        None => FirstPoll::Running(call),
    }
}

/// How long a handler call may run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// After shutdown is requested, the call gets this much more time.
    pub(crate) grace: Duration,
    /// The call is cancelled after this long (a failed attempt).
    pub(crate) timeout: Option<Duration>,
}

/// Runs a handler future that did not finish on its first poll, catching panics, inside
/// `span`, within `limits`.
pub(crate) async fn run_to_end(
    call: GuardedCall,
    span: tracing::Span,
    shutdown: &Shutdown,
    limits: Limits,
) -> Outcome {
    // One grace period for the whole run, from the moment shutdown was asked for: a call
    // that starts while the in-process bus drains gets what is left of it, not a new one.
    let deadline = async {
        shutdown.triggered().await;
        tokio::time::sleep_until(shutdown.deadline(limits.grace)).await;
    };
    let timeout = async {
        match limits.timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    let guarded = async {
        tokio::select! {
            result = call => outcome(result),
            _ = deadline => Outcome::Cancelled,
            _ = timeout => Outcome::TimedOut(limits.timeout.unwrap_or_default()),
        }
    };
    Box::pin(guarded.instrument(span)).await
}

fn outcome(result: std::thread::Result<CallResult>) -> Outcome {
    match result {
        Ok(result) => Outcome::Done(result),
        Err(panic) => Outcome::Panicked(panic_message(&*panic)),
    }
}

/// Runs a handler future to its end: [`first_poll`], then [`run_to_end`] if needed.
pub(crate) async fn run_guarded(
    call: HandlerCall,
    span: tracing::Span,
    shutdown: &Shutdown,
    limits: Limits,
) -> Outcome {
    match first_poll(call, &span) {
        FirstPoll::Finished(outcome) => outcome,
        FirstPoll::Running(call) => run_to_end(call, span, shutdown, limits).await,
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}
