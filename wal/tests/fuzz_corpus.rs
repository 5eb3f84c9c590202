//! Runs the `wal_recovery` fuzz target's logic over its checked-in corpus, and can regenerate the
//! generated part of that corpus (`BOOKD_WAL_WRITE_CORPUS=1 cargo test -p bookd-wal --test fuzz_corpus`).
//!
//! Invariant checked: every corpus input runs through recovery, verify and dump without a panic and
//! without a record that fails its checksum.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod common;

use std::path::PathBuf;

use bookd_testkit::SplitMix64;
use bookd_wal::segment::segment_name;
use bookd_wal::snapshot::{encode_header, snapshot_name};
use bookd_wal::{Area, MemoryStorage, Options, Wal};
use common::{append_n, Collect};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wal_recovery")
}

/// The segment files (in LSN order) of a log of `records` records in 4 KiB segments.
fn log_segments(records: u64) -> Vec<Vec<u8>> {
    let storage = MemoryStorage::new();
    let options = Options { segment_size_bytes: 4096, ..Options::default() };
    let (mut wal, _) = Wal::open(storage.clone(), options, &mut Collect::default()).unwrap();
    append_n(&mut wal, records);
    wal.commit().unwrap();
    drop(wal);
    storage.list_names(Area::Wal).iter().map(|n| storage.get(Area::Wal, n).unwrap()).collect()
}

fn input(control: u8, pieces: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![control];
    for p in pieces {
        out.extend_from_slice(p);
    }
    out
}

fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let one = log_segments(12);
    let three = log_segments(70);
    assert!(three.len() >= 3);
    let mut torn = one[0].clone();
    let end = 64 + 12 * 160; // inside or after the last records: garble a window of the tail
    let last = torn[..end.min(4096)].iter().rposition(|&b| b != 0).unwrap();
    torn[last - 20..=last].fill(0xAB);
    let mut flipped = one[0].clone();
    flipped[64 + 50] ^= 0x04;
    let mut bad_header = one[0].clone();
    bad_header[3] ^= 0xFF;
    let mut empty = one[0].clone();
    empty[64..].fill(0);
    let mut random = vec![0u8; 4096];
    let mut rng = SplitMix64::new(42);
    random.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    let payload = vec![7u8; 4096 - 40];
    let mut snapshot = encode_header(5, &payload).to_vec();
    snapshot.extend_from_slice(&payload);
    assert_eq!(snapshot_name(5).len(), 25);
    assert_eq!(segment_name(1).len(), 24);
    vec![
        ("valid-one-segment", input(0, &one)),
        ("valid-two-segments", input(1, &three[..2])),
        ("valid-three-segments", input(2, &three[..3])),
        ("torn-tail", input(0, &[torn])),
        ("bit-flip-middle", input(0, &[flipped])),
        ("lsn-gap-missing-segment", input(1, &[three[0].clone(), three[2].clone()])),
        ("damaged-segment-header", input(0, &[bad_header])),
        ("empty-segment", input(0, &[empty])),
        ("segment-and-snapshot", input(0x80, &[one[0].clone(), snapshot])),
        ("truncated-segment", input(0, &[one[0][..3000].to_vec()])),
        ("random-bytes", input(0, &[random])),
        ("tiny", vec![0x81, 1, 2, 3]),
    ]
}

#[test]
fn corpus_runs_clean() {
    if std::env::var_os("BOOKD_WAL_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, bytes) in generated() {
            std::fs::write(corpus_dir().join(name), bytes).unwrap();
        }
    }
    let mut count = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        bookd_wal::fuzzing::recover_from_bytes(&bytes);
        count += 1;
    }
    assert!(count >= 12, "the corpus holds {count} inputs");
}

#[test]
fn generated_inputs_run_clean_and_valid_ones_recover() {
    for (name, bytes) in generated() {
        bookd_wal::fuzzing::recover_from_bytes(&bytes);
        if name.starts_with("valid") {
            let storage = MemoryStorage::new();
            let pieces = bytes[1..].chunks(4096).count();
            for (i, piece) in bytes[1..].chunks(4096).enumerate() {
                let first = bookd_wal::segment::decode_header(piece, 4096).unwrap().first_lsn;
                storage.insert(Area::Wal, &segment_name(first), piece.to_vec());
                assert!(i < pieces);
            }
            let report = bookd_wal::verify(&mut storage.clone()).unwrap();
            assert!(report.records > 0 && report.torn_tail.is_none(), "{name}: {report:?}");
        }
    }
}

/// A poor man's fuzzer, bounded and seeded: mutates the generated inputs (bit flips, byte
/// overwrites, truncations) and runs each through the target's logic.
#[test]
fn mutated_inputs_run_clean() {
    let rounds: u64 =
        std::env::var("BOOKD_WAL_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let inputs = generated();
    let mut rng = SplitMix64::new(0xF022);
    for _ in 0..rounds {
        let (_, base) = &inputs[rng.next_mod(inputs.len() as u64) as usize];
        let mut bytes = base.clone();
        for _ in 0..1 + rng.next_mod(4) {
            if bytes.len() < 2 {
                break;
            }
            let at = 1 + rng.next_mod(bytes.len() as u64 - 1) as usize;
            match rng.next_mod(4) {
                0 => bytes[at] ^= 1 << rng.next_mod(8),
                1 => bytes[at] = rng.next_u64() as u8,
                2 => bytes.truncate(at),
                _ => bytes[at..].iter_mut().take(rng.next_mod(64) as usize).for_each(|b| *b = 0),
            }
        }
        bookd_wal::fuzzing::recover_from_bytes(&bytes);
    }
}
