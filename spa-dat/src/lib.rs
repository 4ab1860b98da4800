#![doc = include_str!("../README.md")]
//!
//! # Layers
//!
//! The crate's modules form layers; each imports only the layers below it
//! (`scripts/check-layers.py`, run by the test command, fails on an import against this
//! direction and on any import circle between files):
//!
//! ```text
//!  testing       an application run inside a test (TestRun)
//!  app/          life cycle (Application, DistributedApplication, resources)
//!                ├─ engine/  the delivery engine: per-message path, order keys, retries,
//!                │           dead letters, guarded calls, watchdog
//!                └─ health/  readiness, probes, the HTTP server of probes and metrics
//!  handler/      what handlers take (FromContext) and return (IntoReply); layers; registry
//!  runtime/      the floor handlers stand on: the Socket handle, the encoding of messages
//!                for transports, the handler context, Shutdown, MessageOrder, RetryPolicy
//!  config, telemetry
//!                settings that build transports; spans over what transports deliver
//!  socket/       the transport interface (SpaSocket, SocketProvider, Outgoing, Delivery,
//!                Inbox) and the transports: memory, mqtt/, kafka/, faults
//!  message/, metrics
//!                the envelope (SpaMessage, its wire format, trace context); metric handles
//!  error, topic, url, redact
//!                foundation: errors, topic grammar, URL parsing, secrets kept out of logs
//! ```
//!
//! The engine and health never import the life cycle, nor each other.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod app;
pub mod config;
mod error;
pub mod handler;
pub mod message;
pub mod metrics;
mod redact;
mod runtime;
pub mod socket;
pub mod telemetry;
pub mod testing;
mod topic;
mod url;

#[doc(hidden)]
pub mod __private;

pub use app::{Application, ApplicationLifeCycle, DistributedApplication, Readiness, Resource};
pub use config::settings::Config;
pub use error::{BoxError, Error, Result};
pub use handler::batch::{Batch, BatchResult};
pub use handler::call::Handler;
pub use handler::extract::{FromContext, HandlerContext, Json, Received, Res, State};
pub use handler::reply::IntoReply;
pub use message::envelope::{MessageBuilder, SpaMessage};
pub use message::qos::QualityOfService;
pub use runtime::{
    Extensions, MessageOrder, RetryPolicy, Shutdown, Socket, Stopped, PUBLISH_BATCH_WINDOW,
};

/// Registers an async fn as a consumer: called for every message on its topics.
///
/// ```no_run
/// use spa_dat::{consumer, Json, Socket};
///
/// #[derive(serde::Deserialize)]
/// struct Reading { celsius: f64 }
///
/// #[consumer(topics = ["sensors/${SITE}/+/temp"], group = "thermo")]
/// async fn on_reading(Json(reading): Json<Reading>, socket: Socket) -> spa_dat::Result<()> {
///     socket.publish_json("sensors/seen", &reading.celsius).await
/// }
/// ```
///
/// Options: `topics = [...]` (required), `name`, `group`, `client_id`, `client_name`,
/// `dead_letter`; `concurrency = n` (handlers at once, default 1), `ordering = "key"` (or
/// `"key-else-none"`, `"partition"`, `"none"`), `attempts = n` (handler calls per message, default 3),
/// `timeout_ms = n` (a longer call is cancelled and counts as failed); and
/// `crate = "path::to::spa_dat"` for a crate that re-exports spa-dat.
/// `${NAME}` in `topics`, `group` or `dead_letter` is taken from the environment when the
/// application starts (a missing variable fails the start, naming it); a topic that is a
/// placeholder alone may name several topics, comma-separated.
pub use spa_dat_macros::consumer;

/// Registers an async fn as a producer: called once when the application starts.
///
/// ```no_run
/// use spa_dat::{producer, Socket, SpaMessage};
///
/// #[producer(name = "starter")]
/// async fn start(socket: Socket) -> spa_dat::Result<()> {
///     socket.publish(SpaMessage::new("jobs", "go")).await
/// }
/// ```
///
/// Options: `name`, `client_id`, `client_name`, `crate`.
pub use spa_dat_macros::producer;
