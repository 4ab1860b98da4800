//! Test support: real brokers, the Python spa-dat for interop.

pub mod kafka;
pub mod mosquitto;
pub mod python;
