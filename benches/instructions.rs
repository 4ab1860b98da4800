//! Instruction counts of spa-dat's per-message paths, under callgrind (gungraun): unlike
//! wall-clock benches they do not move with a noisy 2-core machine, so a 2 % regression is
//! visible. `scripts/instructions.sh` compares them with the counts checked in under
//! `benches/instructions-baseline/` and fails above 2 %; `scripts/instructions.sh save` writes
//! new ones (commit them with the reason).
//!
//! ```text
//! scripts/instructions.sh          # the gate (the test command runs it)
//! scripts/instructions.sh save     # after an intended change
//! ```
#![allow(missing_docs, unreachable_pub)]

use std::hint::black_box;

use gungraun::{
    library_benchmark, library_benchmark_group, main, Callgrind, LibraryBenchmarkConfig,
};
use spa_dat::SpaMessage;

/// A message with a `size`-byte text payload, as a publisher sends it.
fn message(size: usize) -> SpaMessage {
    let mut message = SpaMessage::new("sensors/kitchen/temperature", "x".repeat(size));
    message.client_id = Some("bench-1".to_owned());
    message.client_name = Some("bench".to_owned());
    message.content_type = Some("text/plain".to_owned());
    message
}

/// `message(size)` on the wire.
fn wire(size: usize) -> Vec<u8> {
    message(size).to_json().expect("encodes")
}

#[library_benchmark]
#[bench::small(wire(64))]
#[bench::large(wire(4096))]
fn decode_envelope(bytes: Vec<u8>) -> (Vec<u8>, SpaMessage) {
    let decoded = SpaMessage::from_json(black_box(&bytes)).expect("decodes");
    (bytes, black_box(decoded))
}

#[library_benchmark]
#[bench::small(message(64))]
#[bench::large(message(4096))]
fn encode_envelope(message: SpaMessage) -> (SpaMessage, Vec<u8>) {
    let encoded = black_box(&message).to_json().expect("encodes");
    (message, black_box(encoded))
}

library_benchmark_group!(name = envelope; benchmarks = decode_envelope, encode_envelope);

main!(
    config = LibraryBenchmarkConfig::default().tool(Callgrind::with_args(["--cache-sim=no"]));
    library_benchmark_groups = envelope
);
