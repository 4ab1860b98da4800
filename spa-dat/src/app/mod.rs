//! Applications and their life cycle.

mod application;
mod concurrent;
mod consumer;
mod distributed;
mod guarded;
#[cfg(any(feature = "probes", feature = "prometheus"))]
mod http;
mod placeholders;
#[cfg(feature = "probes")]
mod probes;
mod readiness;
mod resource;

pub use application::{Application, ApplicationLifeCycle};
pub use distributed::DistributedApplication;
pub use readiness::Readiness;
pub use resource::Resource;
