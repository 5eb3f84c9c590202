//! Fuzz target: arbitrary bytes become segment (and snapshot) files, and recovery runs on them.
//!
//! Invariant: recovery never panics, never reads out of bounds, and never returns a record that
//! fails its checksum. The logic lives in `bookd_wal::fuzzing` so it also runs as a test over
//! `corpus/wal_recovery/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bookd_wal::fuzzing::recover_from_bytes(data);
});
