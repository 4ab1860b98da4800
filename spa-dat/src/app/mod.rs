//! Applications and their life cycle.

mod application;
mod concurrent;
mod consumer;
mod distributed;
mod guarded;
#[cfg(any(feature = "probes", feature = "prometheus"))]
mod http;
mod placeholders;
mod policy;
#[cfg(feature = "probes")]
mod probes;
mod readiness;
mod resource;
mod runtime;
mod shutdown;

pub use application::{Application, ApplicationLifeCycle};
pub use distributed::DistributedApplication;
pub use policy::{MessageOrder, RetryPolicy};
pub use readiness::Readiness;
pub use resource::Resource;
pub(crate) use runtime::AppRuntime;
pub use runtime::Extensions;
pub use shutdown::{Shutdown, Stopped};
