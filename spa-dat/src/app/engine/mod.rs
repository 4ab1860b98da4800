//! The delivery engine: how a consumer's messages get from its inbox through its handler to
//! their acknowledgement.
//!
//! - `consumer`: the per-message path — decode, check the envelope, call the handler, reply,
//!   retry and dead-letter as the [`crate::RetryPolicy`] says, acknowledge;
//! - `concurrent`: order keys and key queues — several messages at once while one key's
//!   messages stay in order ([`crate::MessageOrder`]), with the acknowledgement window of a
//!   transport that takes acknowledgements only in arrival order;
//! - `guarded`: a handler call with its limits (timeout, panic, shutdown grace);
//! - `watchdog`: a consumer that makes no progress stops being ready.
//!
//! It builds on the runtime floor and the handlers; the life cycle (`app/application.rs`)
//! starts it, and nothing of the engine imports the life cycle.

pub(crate) mod concurrent;
pub(crate) mod consumer;
pub(crate) mod guarded;
mod watchdog;
