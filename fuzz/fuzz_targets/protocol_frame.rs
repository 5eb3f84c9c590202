//! Fuzz target: arbitrary bytes as a stream of binary-protocol frames.
//!
//! Invariant: the frame decoder (and each kind's payload decoder) never panics and never reads
//! past its input, and every frame that decodes re-encodes to exactly its bytes. The logic lives
//! in `bookd_protocol::fuzzing` so it also runs as a test over `corpus/protocol_frame/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bookd_protocol::fuzzing::frame(data);
});
