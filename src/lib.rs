//! Examples, integration tests and benchmarks of spa-dat live in this package; the library is
//! the `spa-dat` crate.
