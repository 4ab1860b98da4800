//! Compile-fail tests: macro misuse is an error on the offending token, with the text pinned
//! in `tests/ui/*.stderr` (regenerate with `TRYBUILD=overwrite cargo test --test macros_ui`).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/ok.rs");
    for case in [
        "not_async",
        "no_topics",
        "bad_option",
        "bad_argument",
        "bad_return",
        "not_send",
        "self_and_generics",
        "bad_order_key",
    ] {
        cases.compile_fail(format!("tests/ui/{case}.rs"));
    }
}
