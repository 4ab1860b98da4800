//! Only for the output of `#[consumer]` / `#[producer]`; not a public API.

pub use inventory;

pub use crate::handler::call::BoxedHandler;
pub use crate::handler::registry::{OrderKeyFn, Registration};
pub use crate::handler::reply::IntoReply;
pub use crate::handler::HandlerKind;
pub use crate::runtime::MessageOrder;

/// Compile-time check, spanned on a handler argument's type.
pub const fn assert_from_context<T: crate::FromContext>() {}

/// Compile-time check, spanned on a handler's return type.
pub const fn assert_into_reply<T: crate::IntoReply>() {}

/// Compile-time check that a handler's future can run on a multi-threaded runtime.
pub fn assert_send_future<F: std::future::Future + Send>(_: &F) {}
