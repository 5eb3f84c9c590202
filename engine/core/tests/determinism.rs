//! Determinism and snapshots, on random histories: the same history gives the same results and
//! the same snapshot bytes; snapshot → restore at any point gives an equal engine that then
//! behaves exactly like the original; a damaged snapshot is refused or restores a consistent
//! engine, and never panics.

// Test helpers outside #[test] functions may unwrap too (clippy.toml covers only the latter).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bookd_engine::{Engine, EngineLimits};
use common::{engine_resolve, engine_step, fixed_history, history, run_engine, Profile, Step, T0};
use proptest::prelude::*;
use proptest::sample::Index;

/// Runs `steps` on both engines from `now_ms`, resolving each step on `a`, and requires the
/// same result from both at every step and the same image every few steps and at the end.
fn lockstep(a: &mut Engine, b: &mut Engine, mut now_ms: u64, steps: &[Step]) -> Result<(), String> {
    for (index, step) in steps.iter().enumerate() {
        let (now, action) = engine_resolve(a, now_ms, step);
        now_ms = now;
        let got_a = engine_step(a, now_ms, &action);
        let got_b = engine_step(b, now_ms, &action);
        if got_a != got_b {
            return Err(format!("step {index} {action:?}: {got_a:?} but {got_b:?}"));
        }
        if index % 16 == 0 && a.image() != b.image() {
            return Err(format!("step {index} {action:?}: the engines' images differ"));
        }
    }
    if a.image() != b.image() {
        return Err("the engines' images differ at the end".into());
    }
    Ok(())
}

/// Damages `bytes`: truncated, bytes flipped, or both.
fn damage(bytes: &[u8], cut: Option<Index>, flips: &[(Index, u8)]) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    for (position, mask) in flips {
        if !damaged.is_empty() {
            let at = position.index(damaged.len());
            damaged[at] ^= mask;
        }
    }
    if let Some(cut) = cut {
        damaged.truncate(cut.index(bytes.len()));
    }
    damaged
}

/// A damaged snapshot must be refused, or restore to an engine that is consistent and keeps
/// working (consistent after every further step).
fn restore_damaged(damaged: &[u8], more: &[Step]) -> Result<bool, TestCaseError> {
    let Ok(mut engine) = Engine::from_snapshot_bytes(damaged, EngineLimits::default()) else {
        return Ok(false);
    };
    prop_assert_eq!(engine.check_invariants(), Ok(()));
    let now_ms = engine.clock_ms();
    run_engine(&mut engine, now_ms, more);
    prop_assert_eq!(engine.check_invariants(), Ok(()));
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// (a) The same history on two fresh engines: the same results, the same bytes.
    #[test]
    fn same_history_gives_same_results_and_bytes(steps in history(100..400, Profile::Mixed)) {
        let mut a = Engine::default();
        let mut b = Engine::default();
        if let Err(problem) = lockstep(&mut a, &mut b, T0, &steps) {
            prop_assert!(false, "{}", problem);
        }
        prop_assert_eq!(a.to_snapshot_bytes(), b.to_snapshot_bytes());
        prop_assert_eq!(a.check_invariants(), Ok(()));
    }

    /// (b) Snapshot at a random point, restore: an equal engine, canonical bytes, and the rest
    /// of the history gives the same results on the original and the restored engine.
    #[test]
    fn snapshot_restore_gives_an_engine_that_behaves_the_same(
        steps in history(100..400, Profile::Mixed),
        cut in any::<Index>(),
    ) {
        let cut = cut.index(steps.len() + 1);
        let mut original = Engine::default();
        let (_, now_ms) = run_engine(&mut original, T0, &steps[..cut]);
        let bytes = original.to_snapshot_bytes();
        let mut restored = Engine::from_snapshot_bytes(&bytes, EngineLimits::default())
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(restored.image(), original.image());
        prop_assert_eq!(restored.to_snapshot_bytes(), bytes, "snapshots are canonical");
        prop_assert_eq!(restored.clock_ms(), original.clock_ms());
        // The expiry queue's stale entries are not state: everything else must be equal.
        let (r, o) = (restored.stats(), original.stats());
        prop_assert_eq!(
            (r.partitions, r.resources, r.holds, r.holds_live, r.clock_ms),
            (o.partitions, o.resources, o.holds, o.holds_live, o.clock_ms)
        );
        prop_assert!(r.expiry_queue_len >= r.holds_live as usize);
        prop_assert_eq!(restored.check_invariants(), Ok(()));
        if let Err(problem) = lockstep(&mut original, &mut restored, now_ms, &steps[cut..]) {
            prop_assert!(false, "after restoring at step {}: {}", cut, problem);
        }
        prop_assert_eq!(restored.to_snapshot_bytes(), original.to_snapshot_bytes());
    }

    /// (c) A damaged snapshot (truncated, bytes flipped) never panics: it is refused, or it
    /// restores an engine whose invariants hold and that keeps working.
    #[test]
    fn damaged_snapshot_is_refused_or_consistent(
        steps in history(20..200, Profile::Mixed),
        more in history(0..50, Profile::Mixed),
        cut in proptest::option::weighted(0.3, any::<Index>()),
        flips in proptest::collection::vec((any::<Index>(), 1..=255u8), 0..6),
    ) {
        let mut engine = Engine::default();
        run_engine(&mut engine, T0, &steps);
        let bytes = engine.to_snapshot_bytes();
        let damaged = damage(&bytes, cut, &flips);
        let restored = restore_damaged(&damaged, &more)?;
        if damaged == bytes {
            prop_assert!(restored, "an undamaged snapshot must restore");
        }
    }

    /// (c) Arbitrary bytes are not a snapshot, or are a consistent one.
    #[test]
    fn arbitrary_bytes_are_refused_or_consistent(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        more in history(0..20, Profile::Mixed),
    ) {
        restore_damaged(&bytes, &more)?;
    }
}

/// Every single-byte flip and every truncation of one snapshot, exhaustively.
#[test]
fn every_flip_and_cut_of_a_snapshot_is_refused_or_consistent() {
    let steps = fixed_history(150, Profile::Mixed);
    let mut engine = Engine::default();
    run_engine(&mut engine, T0, &steps);
    assert!(engine.stats().holds > 0, "the sample history makes holds");
    let bytes = engine.to_snapshot_bytes();
    let mut accepted = 0;
    for position in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[position] ^= mask;
            if let Ok(restored) = Engine::from_snapshot_bytes(&damaged, EngineLimits::default()) {
                assert_eq!(restored.check_invariants(), Ok(()), "flip {mask:#x} at {position}");
                accepted += 1;
            }
        }
    }
    for len in 0..bytes.len() {
        if let Ok(restored) = Engine::from_snapshot_bytes(&bytes[..len], EngineLimits::default()) {
            assert_eq!(restored.check_invariants(), Ok(()), "cut at {len}");
        }
    }
    eprintln!("{} bytes, {accepted} of {} flips restored", bytes.len(), bytes.len() * 3);
}
