//! Examples, integration tests and benchmarks of spa-dat live in this package; the library is
//! the `spa-dat` crate.

/// The README's Rust examples, compiled by `cargo test --doc` so that what a user copies from
/// it builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
