#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod error;
pub mod handler;
pub mod message;
mod redact;
pub mod socket;
mod url;

#[doc(hidden)]
pub mod __private;

pub use app::{Application, ApplicationLifeCycle, DistributedApplication, Resource, Shutdown};
pub use config::{Config, SocketConfig, SocketProviderFactory};
pub use error::{BoxError, Error, Result};
pub use handler::{FromContext, Handler, HandlerContext, IntoReply, Json, Res, State};
pub use message::{MessageBuilder, QualityOfService, SpaMessage};
pub use socket::{Socket, SocketOptions, SocketProvider, SpaSocket};

/// Registers an async fn as a consumer: called for every message on its topics.
///
/// ```ignore
/// #[spa_dat::consumer(topics = ["sensors/+/temp"], group = "thermo")]
/// async fn on_reading(Json(reading): Json<Reading>, socket: Socket) -> spa_dat::Result<()> { ... }
/// ```
///
/// Options: `topics = [...]` (required), `name`, `group`, `client_id`, `client_name`,
/// `dead_letter`.
pub use spa_dat_macros::consumer;

/// Registers an async fn as a producer: called once when the application starts.
///
/// Options: `name`, `client_id`, `client_name`.
pub use spa_dat_macros::producer;
