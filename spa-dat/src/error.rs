//! The one error type of spa-dat.

use std::time::Duration;

/// A boxed error from user code (handlers, resources).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in spa-dat. Each variant carries what a user needs to act.
///
/// `Debug` prints the same sentence as `Display` (causes included), so an error returned from
/// `main` reads as one; match on the variants for the details.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use spa_dat::{Error, Socket, SpaMessage};
///
/// /// Asks for a price; a missing answer is not fatal, other errors are.
/// async fn price(socket: &Socket, item: &str) -> spa_dat::Result<Option<f64>> {
///     let request = SpaMessage::new("prices", item.to_owned());
///     match socket.request_with_timeout(request, Duration::from_secs(2)).await {
///         Ok(reply) => Ok(Some(reply.payload_json()?)),
///         Err(Error::RequestTimeout { topic, timeout }) => {
///             eprintln!("no price from {topic} within {timeout:?}");
///             Ok(None)
///         }
///         Err(error) => Err(error),
///     }
/// }
/// # let _ = price;
///
/// // Configuration errors say which key is wrong.
/// let error = spa_dat::Config::from_toml("request_timeout_ms = 0").unwrap_err();
/// assert!(matches!(&error, Error::Config(reason) if reason.contains("request_timeout_ms")));
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes on the bus that are not a spa-dat message.
    #[error("not a spa-dat message: {reason}")]
    Decode {
        /// What is wrong with the bytes.
        reason: String,
    },
    /// A message that cannot be written to the wire.
    #[error("cannot encode message for topic `{topic}`: {reason}")]
    Encode {
        /// Topic of the message.
        topic: String,
        /// What is wrong with it.
        reason: String,
        /// The encoder's error (serde_json, UTF-8), if one caused it.
        #[source]
        source: Option<BoxError>,
    },
    /// A payload that does not deserialize into the type a handler asked for.
    #[error("payload on topic `{topic}` is not a valid `{type_name}`: {reason}")]
    Payload {
        /// Topic of the message.
        topic: String,
        /// The Rust type the payload was decoded into.
        type_name: &'static str,
        /// The decoder's complaint.
        reason: String,
        /// The decoder's error (serde_json, UTF-8).
        #[source]
        source: Option<BoxError>,
    },
    /// A message refused as bad input — by a [`crate::handler::Layer`] or a handler: logged
    /// at WARN, dead-lettered if there is a dead-letter topic, never retried.
    #[error("message rejected: {reason}")]
    Rejected {
        /// Why, for the log and the dead letter.
        reason: String,
    },
    /// No reply arrived in time.
    #[error("request on topic `{topic}` got no reply within {timeout:?}")]
    RequestTimeout {
        /// Topic the request was published to.
        topic: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The broker could not be reached or refused us.
    #[error("cannot connect to {broker}: {reason}")]
    Connect {
        /// The broker's address.
        broker: String,
        /// Why, with what to check.
        reason: String,
        /// The client library's error (rdkafka's `KafkaError`, rumqttc's `ConnectionError`),
        /// where one caused it: downcast it to match, e.g., an `RDKafkaErrorCode`.
        #[source]
        source: Option<BoxError>,
    },
    /// A transport operation failed.
    #[error("{operation} failed on {broker}: {reason}")]
    Transport {
        /// What was attempted (publish, subscribe, ...).
        operation: &'static str,
        /// The broker's address.
        broker: String,
        /// Why.
        reason: String,
        /// The client library's error, where one caused it (see [`Error::Connect`]).
        #[source]
        source: Option<BoxError>,
    },
    /// The transport refused a message for a reason no retry can fix: a topic it cannot
    /// publish to (empty, a wildcard, U+0000, too long, not a Kafka topic name), a message
    /// larger than it takes, a topic this user is not authorised for. Failed at once and never
    /// retried (see [`Error::is_permanent`]).
    #[error("{operation} refused by {broker}: {reason}")]
    Refused {
        /// What was attempted (publish, ...).
        operation: &'static str,
        /// The broker's address.
        broker: String,
        /// Why, with the limit or rule that was broken.
        reason: String,
        /// The client library's error, where one caused it (see [`Error::Connect`]).
        #[source]
        source: Option<BoxError>,
    },
    /// The socket was closed; no more operations are possible on it.
    #[error("socket is closed")]
    Closed,
    /// A handler asked for an argument the application cannot provide (found at start-up).
    #[error("handler `{handler}`: {reason}")]
    Handler {
        /// The handler's name.
        handler: String,
        /// What is missing and how to fix it.
        reason: String,
    },
    /// A producer's handler returned an error or panicked.
    #[error("handler `{handler}` failed: {source}")]
    HandlerFailed {
        /// The handler's name.
        handler: String,
        /// The handler's error, or its panic message.
        source: BoxError,
    },
    /// The runtime cannot do what was asked: start Tokio, run an application that is not set
    /// up. Not a configuration problem.
    #[error("{reason}")]
    Runtime {
        /// What went wrong.
        reason: String,
        /// The underlying error (e.g. the I/O error starting Tokio), if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A resource failed to set up or tear down.
    #[error("resource `{resource}` failed to {stage}: {source}")]
    Resource {
        /// The resource's type name.
        resource: &'static str,
        /// `set up` or `tear down`.
        stage: &'static str,
        /// The resource's own error.
        source: BoxError,
    },
    /// Application start-up failed.
    #[error("application `{app}` failed to start: {source}")]
    Startup {
        /// The application's name.
        app: String,
        /// The cause.
        source: Box<Error>,
    },
    /// Several errors at once (e.g. every invalid handler found at start-up).
    #[error("{}", join_errors(.0))]
    Many(Vec<Error>),
    /// Any other error, from user code.
    #[error(transparent)]
    Other(BoxError),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn join_errors(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A message refused as bad input ([`Error::Rejected`]): logged at WARN, dead-lettered if
    /// there is a dead-letter topic, never retried.
    ///
    /// # Examples
    ///
    /// ```
    /// use spa_dat::{Error, Json};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Order { total: i64 }
    ///
    /// async fn record(Json(order): Json<Order>) -> spa_dat::Result<()> {
    ///     if order.total < 0 {
    ///         return Err(Error::rejected("a negative total"));
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = spa_dat::Application::consumer("record", ["orders"], record);
    /// assert!(matches!(Error::rejected("no"), Error::Rejected { reason } if reason == "no"));
    /// ```
    pub fn rejected(reason: impl Into<String>) -> Self {
        Error::Rejected {
            reason: reason.into(),
        }
    }

    pub(crate) fn decode(reason: impl Into<String>) -> Self {
        Error::Decode {
            reason: reason.into(),
        }
    }

    /// One error for many: nested lists flattened, a single error as itself.
    pub(crate) fn from_many(errors: Vec<Error>) -> Self {
        let mut flat = Vec::with_capacity(errors.len());
        for error in errors {
            match error {
                Error::Many(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        if flat.len() == 1 {
            flat.remove(0)
        } else {
            Error::Many(flat)
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::Config(reason.into())
    }

    pub(crate) fn runtime(reason: impl Into<String>) -> Self {
        Error::Runtime {
            reason: reason.into(),
            source: None,
        }
    }

    /// Whether trying the same thing again cannot succeed: a payload of the wrong type, a
    /// rejected message, a message that cannot be encoded, a refused publish
    /// ([`Error::Refused`]), configuration or a handler's missing argument. Transient are
    /// the others: a broker away, a timeout, a closed socket — and bytes that do not decode
    /// ([`Error::Decode`]: a handler's own request may get a proper reply next time; a
    /// delivered message that does not decode is bad input, decided before any handler). Retries of handlers, of dead
    /// letters and of replies, and MQTT's resends, all ask this one question.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use spa_dat::{Config, Error};
    ///
    /// // A bad value stays bad: no retry helps.
    /// let config_error = Config::from_toml("request_timeout_ms = 0").unwrap_err();
    /// assert!(config_error.is_permanent());
    ///
    /// // A missing reply may come next time.
    /// let timeout = Error::RequestTimeout { topic: "prices".into(), timeout: Duration::from_secs(2) };
    /// assert!(!timeout.is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Encode { .. }
            | Error::Payload { .. }
            | Error::Rejected { .. }
            | Error::Refused { .. }
            | Error::Config(_)
            | Error::Handler { .. } => true,
            Error::Decode { .. }
            | Error::RequestTimeout { .. }
            | Error::Connect { .. }
            | Error::Transport { .. }
            | Error::Closed
            | Error::Runtime { .. }
            | Error::Resource { .. } => false,
            Error::Startup { source, .. } => source.is_permanent(),
            Error::Many(errors) => !errors.is_empty() && errors.iter().all(Error::is_permanent),
            Error::HandlerFailed { source, .. } | Error::Other(source) => source
                .downcast_ref::<Error>()
                .is_some_and(Error::is_permanent),
        }
    }

    /// A refused `operation` on `broker` (see [`Error::Refused`]).
    pub(crate) fn refused(
        operation: &'static str,
        broker: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Refused {
            operation,
            broker: broker.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// Keeps `cause` as this error's [`std::error::Error::source`], on the variants that
    /// carry one; others are returned as they are.
    pub(crate) fn caused_by(
        mut self,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        match &mut self {
            Error::Encode { source, .. }
            | Error::Payload { source, .. }
            | Error::Connect { source, .. }
            | Error::Transport { source, .. }
            | Error::Refused { source, .. }
            | Error::Runtime { source, .. } => *source = Some(Box::new(cause)),
            _ => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_returned_from_main_reads_as_a_sentence() {
        let error = Error::Startup {
            app: "kitchen_sensor".into(),
            source: Box::new(Error::Connect {
                broker: "mqtt://broker:1883".into(),
                reason: "connection refused".into(),
                source: None,
            }),
        };
        // `fn main() -> Result<(), Error>` prints the error with `{:?}`.
        assert_eq!(
            format!("{error:?}"),
            "application `kitchen_sensor` failed to start: cannot connect to mqtt://broker:1883: connection refused"
        );
    }

    #[test]
    fn a_transport_error_keeps_the_client_librarys_error_as_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::Transport {
            operation: "publish",
            broker: "kafka://k:9092".into(),
            reason: "refused".into(),
            source: None,
        }
        .caused_by(io);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(
            error.to_string(),
            "publish failed on kafka://k:9092: refused"
        );
    }
}
