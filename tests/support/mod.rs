//! Test support: real brokers started per test, the Python spa-dat for interop.

pub mod mosquitto;
pub mod python;
