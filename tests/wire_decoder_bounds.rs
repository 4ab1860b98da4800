//! Properties of the envelope decoder on any input (issue 10, item 12): no byte string makes
//! `SpaMessage::from_json` panic, overflow the stack or allocate more than a small multiple of
//! its input. What it accepts and rejects is `tests/wire_differential.rs`'s business.
//!
//! The allocation bound is read from an instrumented global allocator, so this file holds one
//! test: the test harness runs tests on several threads and the counters are process-wide.

use std::alloc::System;

use proptest::prelude::*;
use spa_dat::SpaMessage;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The decoder copies each field it keeps once (an escaped string also once into serde_json's
/// scratch buffer, which grows by doubling) and an error message is a line: linear, with room.
fn allocation_bound(input_len: usize) -> usize {
    8 * input_len + 64 * 1024
}

/// Decodes `bytes` and returns how many bytes the decoder allocated (new allocations plus
/// growth by reallocation), result dropped outside the measured region.
fn decode_counting(bytes: &[u8]) -> usize {
    let region = Region::new(GLOBAL);
    let decoded = SpaMessage::from_json(bytes);
    let change = region.change();
    drop(decoded);
    change.bytes_allocated + change.bytes_reallocated.max(0) as usize
}

fn assert_bounded(bytes: &[u8]) -> Result<(), TestCaseError> {
    let allocated = decode_counting(bytes);
    prop_assert!(
        allocated <= allocation_bound(bytes.len()),
        "{allocated} bytes allocated for {} bytes of input: {:?}",
        bytes.len(),
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    Ok(())
}

const VALID: &str = r#"{"Payload":"{\"v\":1}","Topic":"a/b","ContentType":"application/json","ClientId":"c1","ClientName":"n","QualityOfService":1,"ResponseTopic":"r","Timestamp":1700000000}"#;

/// Any JSON value, nested, with the envelope's own keys among the object keys so that known
/// fields get values of every type (and duplicates).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let key = prop_oneof![
        Just("Payload".to_owned()),
        Just("Topic".to_owned()),
        Just("Timestamp".to_owned()),
        Just("QualityOfService".to_owned()),
        Just("traceparent".to_owned()),
        ".{0,12}",
    ];
    leaf.prop_recursive(6, 256, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A valid envelope with a few bytes overwritten, cut short or spliced.
fn mutated_envelope() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(edits, cut)| {
            let mut bytes = VALID.as_bytes().to_vec();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            bytes
        })
}

/// Large inputs of the shapes that could make a decoder allocate more than it reads: long
/// escaped strings, repeated known keys, deep nesting (beyond any recursion limit).
fn large_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (1usize..20_000).prop_map(|n| {
            format!(r#"{{"Payload":"{}","Topic":"t"}}"#, "\\u00e9\\n".repeat(n)).into_bytes()
        }),
        (1usize..5_000).prop_map(|n| {
            let keys = r#""Payload":"\u0041\u0042","Topic":"\"t\"","#.repeat(n);
            format!("{{{keys}\"Timestamp\":\"12.0\"}}").into_bytes()
        }),
        (1usize..200_000).prop_map(|depth| {
            let mut doc = String::from(r#"{"Payload":"p","Topic":"t","deep":"#);
            doc.push_str(&"[".repeat(depth));
            doc.push_str(&"]".repeat(depth));
            doc.push('}');
            doc.into_bytes()
        }),
        (1usize..200_000).prop_map(|depth| "{\"a\":".repeat(depth).into_bytes()),
        (1usize..100_000)
            .prop_map(|n| format!(r#"{{"Timestamp":{}}}"#, "9".repeat(n)).into_bytes()),
    ]
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        mutated_envelope(),
        json_value().prop_map(|value| value.to_string().into_bytes()),
        large_input(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn no_input_makes_the_decoder_panic_or_allocate_beyond_a_multiple_of_its_size(
        bytes in any_input()
    ) {
        assert_bounded(&bytes)?;
    }
}
