//! librdkafka calls that block their thread for up to their timeout (metadata, watermarks,
//! committed offsets, a synchronous commit, a flush) run on tokio's blocking threads, never on
//! an async worker; their failures read the same everywhere.

use rdkafka::error::KafkaError;

use super::context::{kafka_error, kafka_failure};
use crate::error::{Error, Result};

/// Runs `call` on a blocking thread. A panic of it comes back as its text.
pub(super) async fn on_blocking_thread<R: Send + 'static>(
    call: impl FnOnce() -> R + Send + 'static,
) -> std::result::Result<R, String> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|join| join.to_string())
}

/// Runs `call` on a blocking thread; its error, or its panic, fails `operation` on `broker`
/// (see [`CallError`]).
pub(super) async fn blocking<T, E>(
    broker: &str,
    operation: &'static str,
    call: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
    E: CallError,
{
    on_blocking_thread(call)
        .await
        .map_err(|panic| kafka_error(broker, operation, panic))?
        .map_err(|error| error.fail(broker, operation))
}

/// The error of a blocking call, as the [`Error`] of `operation` on `broker`.
pub(super) trait CallError: Send + 'static {
    fn fail(self, broker: &str, operation: &'static str) -> Error;
}

/// librdkafka's error stays the cause; its code may make the failure permanent.
impl CallError for KafkaError {
    fn fail(self, broker: &str, operation: &'static str) -> Error {
        kafka_failure(broker, operation, self)
    }
}

/// A reason already written for people (the access check's, a topic not listed in time).
impl CallError for String {
    fn fail(self, broker: &str, operation: &'static str) -> Error {
        kafka_error(broker, operation, self)
    }
}
