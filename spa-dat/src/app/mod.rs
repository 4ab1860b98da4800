//! Applications: their life cycle (`application`, `distributed`, `resource`, `placeholders`),
//! their contract as a document (`asyncapi`),
//! the delivery engine that runs a consumer's messages (`engine/`), and health (`health/`).
//!
//! The top layer: it imports everything below (the runtime floor, handlers, sockets, config)
//! and nothing imports it but the crate root.

mod application;
pub(crate) mod asyncapi;
mod distributed;
mod engine;
mod health;
mod placeholders;
mod resource;

pub use application::{Application, ApplicationLifeCycle};
pub use distributed::DistributedApplication;
pub use health::Readiness;
pub use resource::Resource;
