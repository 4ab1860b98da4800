//! Batch handlers: [`Batch<T>`] takes many messages in one call, [`BatchResult`] says which
//! of them failed.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, PoisonError};

use super::describe::Payload;
use super::extract::{FromContext, HandlerContext, HandlerScope};
use super::reply::{HandlerResult, IntoReply};
use crate::error::BoxError;

/// Many messages in one handler call: a consumer declared with `batch = n` (or
/// [`crate::Application::batch`]) takes up to `n` messages at once, each extracted as `T`
/// (`SpaMessage`, `Json<T>`, or any [`FromContext`] type that reads the message).
///
/// A message whose `T` cannot be taken (a payload that is not the JSON asked for) is left out
/// of the batch and dead-lettered as bad input; the rest are in arrival order, and with
/// `ordering = "key"` a key's messages are in order and never in two batches at once.
///
/// The handler returns `()` or `Ok(())` when every message was handled, an error when none
/// was (each message then goes through the retry policy), or a [`BatchResult`] naming the
/// ones that failed: those are retried — as a smaller batch — and dead-lettered one by one
/// as the [`crate::RetryPolicy`] says; the others are acknowledged.
///
/// # Examples
///
/// ```
/// use spa_dat::{consumer, Batch, BatchResult, Json};
///
/// #[derive(serde::Deserialize)]
/// struct Reading { sensor: String, value: f64 }
///
/// // Up to 500 readings per call, or what arrived within 20 ms of the first.
/// #[consumer(topics = ["readings"], batch = 500, batch_wait_ms = 20)]
/// async fn store(readings: Batch<Json<Reading>>) -> BatchResult {
///     let mut result = BatchResult::new();
///     for (index, Json(reading)) in readings.iter().enumerate() {
///         if reading.value.is_nan() {
///             result.fail(index, format!("{}: not a number", reading.sensor));
///         }
///     }
///     result
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Batch<T> {
    items: Vec<T>,
}

impl<T> Batch<T> {
    /// The batch's elements, in arrival order.
    pub fn into_inner(self) -> Vec<T> {
        self.items
    }
}

impl<T> Deref for Batch<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a Batch<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T: FromContext> FromContext for Batch<T> {
    const TAKES_BATCH: bool = true;

    fn payload() -> Option<Payload> {
        T::payload()
    }

    fn check(scope: &HandlerScope<'_>) -> Result<(), String> {
        // Here, not only in the handler's count (`call::batch_arguments`): a Batch nested in
        // another argument (a `Batch<Batch<_>>`, a wrapper of the user's) is refused too.
        if scope.batch.is_none() {
            return Err(format!(
                "`{}` takes a Batch but is not a batch consumer: add `batch = n` (and `batch_wait_ms`) to #[consumer], or `.batch(n, wait)` to the Application",
                scope.app
            ));
        }
        if T::READS_DELIVERY {
            return Err(format!(
                "`{}` takes a Batch of an argument that describes one delivery (`Received`): a batch has many; take `Batch<SpaMessage>` or `Batch<Json<_>>`",
                scope.app
            ));
        }
        // Each element is taken as a single message's argument.
        T::check(&HandlerScope {
            batch: None,
            ..*scope
        })
    }

    fn from_context(context: &mut HandlerContext) -> Result<Self, BoxError> {
        let input = context.batch.take().ok_or(
            "no batch in this call: one Batch argument per handler, and only in a batch consumer",
        )?;
        let mut items = Vec::with_capacity(input.messages.len());
        let mut rejected = Vec::new();
        // One context for every element, its message replaced each time.
        let mut element = HandlerContext {
            app: Arc::clone(&context.app),
            message: None,
            received: None,
            readers_left: 1,
            delivery_readers_left: 0,
            batch: None,
        };
        for (index, message) in input.messages.into_iter().enumerate() {
            element.message = Some(message);
            match T::from_context(&mut element) {
                Ok(item) => items.push(item),
                Err(error) => rejected.push((index, error)),
            }
        }
        let none_left = items.is_empty() && !rejected.is_empty();
        if !rejected.is_empty() {
            input
                .rejected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(rejected);
        }
        if none_left {
            // Each is settled as rejected; the handler is not called with nothing.
            return Err("every message of the batch was rejected".into());
        }
        Ok(Batch { items })
    }
}

/// What a batch handler says of its [`Batch`]: which elements failed, by their index in it.
/// Elements not named were handled and are acknowledged; each named one goes through the
/// retry policy and the dead-letter topic on its own.
///
/// As a handler's result it is an error when any element failed, so that a
/// [`crate::handler::Layer`] sees a partly failed batch as a failed call (the error is this
/// `BatchResult`: downcast it to see which).
///
/// # Examples
///
/// ```
/// use spa_dat::BatchResult;
///
/// let mut result = BatchResult::new();
/// result.fail(3, "constraint violated");
/// assert_eq!(result.failures().map(|(index, _)| index).collect::<Vec<_>>(), [3]);
/// assert!(!result.is_ok());
/// ```
#[derive(Debug, Default)]
pub struct BatchResult {
    failures: Vec<(usize, BoxError)>,
}

impl BatchResult {
    /// Every element handled, until [`BatchResult::fail`] says otherwise.
    pub fn new() -> Self {
        BatchResult::default()
    }

    /// Element `index` of the batch failed with `error`. An index past the batch's end is
    /// ignored, with an error logged.
    pub fn fail(&mut self, index: usize, error: impl Into<BoxError>) {
        self.failures.push((index, error.into()));
    }

    /// [`BatchResult::fail`], as a builder.
    #[must_use]
    pub fn failed(mut self, index: usize, error: impl Into<BoxError>) -> Self {
        self.fail(index, error);
        self
    }

    /// Whether no element failed.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failed elements: index in the batch, and error.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &BoxError)> {
        self.failures.iter().map(|(index, error)| (*index, error))
    }

    /// Takes the failures out, for the engine.
    pub(crate) fn into_failures(self) -> Vec<(usize, BoxError)> {
        self.failures
    }
}

impl fmt::Display for BatchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failures.first() {
            None => f.write_str("every element of the batch was handled"),
            Some((index, error)) => write!(
                f,
                "{} element(s) of the batch failed; the first, #{index}: {error}",
                self.failures.len()
            ),
        }
    }
}

impl std::error::Error for BatchResult {}

impl IntoReply for BatchResult {
    fn reply_payload() -> Option<Payload> {
        None
    }

    fn into_reply(self) -> HandlerResult {
        if self.is_ok() {
            Ok(None)
        } else {
            Err(Box::new(self))
        }
    }
}
