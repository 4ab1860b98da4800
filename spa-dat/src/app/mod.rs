//! Applications and their life cycle.

mod application;
mod distributed;
mod resource;
mod shutdown;

pub use application::{Application, ApplicationLifeCycle};
pub use distributed::DistributedApplication;
pub use resource::Resource;
pub use shutdown::Shutdown;
