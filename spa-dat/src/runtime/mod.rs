//! The runtime floor: what a running application gives its handlers, between the transports
//! (`socket/`) below and the life cycle and delivery engine (`app/`) above.
//!
//! - [`Socket`]: the handle every message an application sends goes through (stamped, traced,
//!   counted); the encoding of a [`crate::SpaMessage`] into the transports' one primitive,
//!   [`crate::socket::Outgoing`] (`outgoing`);
//! - the handler context: the application's name, socket, state and resources
//!   ([`Extensions`]), and its [`Shutdown`];
//! - the per-consumer policies handlers are registered with ([`MessageOrder`],
//!   [`RetryPolicy`]).
//!
//! It imports the layers below it (socket, message, metrics, telemetry) and nothing above it:
//! `handler/` and `app/` build on it.

mod context;
mod outgoing;
mod policy;
mod shutdown;
mod socket;

pub(crate) use context::AppRuntime;
pub use context::Extensions;
pub(crate) use policy::AfterFailure;
pub use policy::{MessageOrder, RetryPolicy};
pub(crate) use shutdown::on_signal;
pub use shutdown::{Shutdown, Stopped};
pub use socket::{Socket, PUBLISH_BATCH_WINDOW};
