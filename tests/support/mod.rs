//! Test support: real brokers started per test.

pub mod mosquitto;
