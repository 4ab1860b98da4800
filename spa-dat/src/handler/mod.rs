//! Handlers: async functions whose arguments are extracted from the application
//! ([`crate::FromContext`]) and whose return value may be a reply ([`crate::IntoReply`]).
//! This module holds what goes beyond writing a handler: middleware around handlers
//! ([`Layer`], [`layer_fn`]), the result of a call as layers see it ([`CallResult`],
//! [`Reply`]), and what an argument type checks at start-up ([`HandlerScope`]).

pub(crate) mod batch;
pub(crate) mod call;
pub(crate) mod describe;
pub(crate) mod extract;
mod layer;
pub(crate) mod registry;
pub(crate) mod reply;

use std::fmt;

pub use describe::{Payload, PayloadSchema, PayloadSchemas};
pub use extract::HandlerScope;
pub use layer::{layer_fn, Layer, Next};
pub use reply::{CallResult, HandlerResult, Reply};

/// Whether a handler runs per message or once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// Called for every message on its topics.
    Consumer,
    /// Called once when the application starts.
    Producer,
}

impl fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandlerKind::Consumer => "consumer",
            HandlerKind::Producer => "producer",
        })
    }
}
