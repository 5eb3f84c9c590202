//! Helpers shared by the integration tests: a replay collector and deterministic payloads.
//!
//! Invariant: `payload_for(lsn)` is a pure function of the LSN and never ends in a zero byte, so a
//! cut inside a payload always damages the record.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bookd_wal::{Lsn, RecordHeader, RecordView, Replay, Snapshot, SnapshotReader};

/// Collects what recovery replays.
#[derive(Debug, Default)]
pub struct Collect {
    pub snapshot: Option<Snapshot>,
    pub records: Vec<(RecordHeader, Vec<u8>)>,
    pub progress_calls: u64,
}

impl Replay for Collect {
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
        let bytes = snapshot.read_to_vec().map_err(|e| e.to_string())?;
        self.snapshot = Some(Snapshot { lsn: snapshot.lsn(), bytes });
        Ok(())
    }
    fn record(&mut self, record: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        self.records.push((record.header, record.payload.to_vec()));
        Ok(())
    }
    fn progress(&mut self, _: bookd_wal::ReplayProgress) {
        self.progress_calls += 1;
    }
}

impl Collect {
    pub fn lsns(&self) -> Vec<Lsn> {
        self.records.iter().map(|(h, _)| h.lsn).collect()
    }
}

/// A payload of 20..=180 bytes derived from the LSN, never ending in zero.
pub fn payload_for(lsn: Lsn) -> Vec<u8> {
    let len = 20 + (lsn.wrapping_mul(2_654_435_761) % 161) as usize;
    let mut p: Vec<u8> =
        (0..len).map(|i| (lsn as u8).wrapping_mul(31).wrapping_add(i as u8)).collect();
    if let Some(last) = p.last_mut() {
        *last |= 1;
    }
    p
}

/// Appends records `next_lsn ..` with `payload_for` until `count` were added.
pub fn append_n<S: bookd_wal::Storage>(wal: &mut bookd_wal::Wal<S>, count: u64) {
    for _ in 0..count {
        let lsn = wal.next_lsn();
        let got =
            wal.append((lsn % 7) as u8, 1, 1_700_000_000_000 + lsn, &payload_for(lsn)).unwrap();
        assert_eq!(got, lsn);
    }
}

/// Checks records are exactly `1..=last` (or `from..=last`) with their expected payloads.
/// Appends and commits one record at a time, asking `has_room` first, until it says no (at most
/// `records_max` records). Returns the last acknowledged LSN.
#[allow(dead_code)]
pub fn fill<S: bookd_wal::Storage>(wal: &mut bookd_wal::Wal<S>, records_max: usize) -> Lsn {
    let mut acknowledged = wal.durable_lsn();
    for _ in 0..records_max {
        let lsn = wal.next_lsn();
        let payload = payload_for(lsn);
        if !wal.has_room(payload.len()) {
            return acknowledged;
        }
        let got = wal.append((lsn % 7) as u8, 1, 1_700_000_000_000 + lsn, &payload);
        assert_eq!(got.unwrap(), lsn, "an append after has_room said true never fails");
        acknowledged = wal.commit().unwrap();
    }
    panic!("has_room never said no on a full disk");
}

pub fn assert_records(collect: &Collect, from: Lsn, last: Lsn) {
    let lsns = collect.lsns();
    let expected: Vec<Lsn> = (from..=last).collect();
    assert_eq!(lsns, expected, "recovered lsns");
    for (h, p) in &collect.records {
        assert_eq!(p, &payload_for(h.lsn), "payload of lsn {}", h.lsn);
        assert_eq!(h.timestamp_ms, 1_700_000_000_000 + h.lsn);
    }
}
