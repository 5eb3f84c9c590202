//! Fuzz target: arbitrary bytes as a REQUEST payload (and as a bare sequence of commands).
//!
//! Invariant: the command decoder never panics, whatever decodes re-encodes to the same bytes,
//! converts to the same engine op the client would encode, and passes through the engine's
//! validation without panicking. The logic lives in `bookd_protocol::fuzzing` so it also
//! runs as a test over `corpus/protocol_command/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bookd_protocol::fuzzing::command(data);
});
