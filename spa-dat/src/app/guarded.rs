//! A handler call guarded against panics and, after shutdown, against running forever: the
//! first poll inline (most handlers finish there), the rest with the shutdown grace period.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tracing::Instrument;

use super::shutdown::Shutdown;
use crate::handler::CallResult;

/// How a guarded handler call ended.
pub(super) enum Outcome {
    Done(CallResult),
    Panicked(String),
    Cancelled,
}

pub(super) type HandlerCall = futures_util::future::BoxFuture<'static, CallResult>;
pub(super) type GuardedCall = futures_util::future::CatchUnwind<AssertUnwindSafe<HandlerCall>>;

/// A handler call after its first poll.
pub(super) enum FirstPoll {
    Finished(Outcome),
    /// Still running: finish it with [`run_to_end`].
    Running(GuardedCall),
}

/// Polls a handler future once, catching panics, inside `span`. Most handlers finish on their
/// first poll: they need neither the shutdown watch nor an instrumented future.
pub(super) fn first_poll(call: HandlerCall, span: &tracing::Span) -> FirstPoll {
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

/// Runs a handler future that did not finish on its first poll, catching panics; once
/// shutdown is requested it gets `grace` more time before it is dropped. Runs inside `span`.
pub(super) async fn run_to_end(
    call: GuardedCall,
    span: tracing::Span,
    shutdown: &Shutdown,
    grace: Duration,
) -> Outcome {
    let deadline = async {
        shutdown.triggered().await;
        tokio::time::sleep(grace).await;
    };
    let guarded = async {
        tokio::select! {
            result = call => Some(result),
            _ = deadline => None,
        }
    };
    match Box::pin(guarded.instrument(span)).await {
        Some(result) => outcome(result),
        None => Outcome::Cancelled,
    }
}

fn outcome(result: std::thread::Result<CallResult>) -> Outcome {
    match result {
        Ok(result) => Outcome::Done(result),
        Err(panic) => Outcome::Panicked(panic_message(&*panic)),
    }
}

/// Runs a handler future to its end: [`first_poll`], then [`run_to_end`] if needed.
pub(super) async fn run_guarded(
    call: HandlerCall,
    span: tracing::Span,
    shutdown: &Shutdown,
    grace: Duration,
) -> Outcome {
    match first_poll(call, &span) {
        FirstPoll::Finished(outcome) => outcome,
        FirstPoll::Running(call) => run_to_end(call, span, shutdown, grace).await,
    }
}

pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}
