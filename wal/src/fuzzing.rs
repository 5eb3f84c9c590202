//! The logic of the `wal_recovery` fuzz target, here so it also runs as an ordinary test over the
//! corpus in `fuzz/corpus/wal_recovery/`.
//!
//! Invariant checked: whatever bytes the segment and snapshot files hold, recovery, verify and dump
//! never panic, never read out of bounds, and never hand out a record that fails its checksum or
//! breaks the LSN order.

use crate::record::{self, Lsn, RecordView};
use crate::recovery::{Replay, ReplayRefusal};
use crate::segment::{decode_header, segment_name};
use crate::snapshot::{snapshot_name, SnapshotReader};
use crate::storage::{Area, MemoryStorage};
use crate::writer::{Options, Wal};

/// Splits `data` into files and runs recovery on them (see the module doc).
///
/// Layout of `data`: byte 0 chooses the number of segment files (`1 + b % 3`) and whether the last
/// piece is a snapshot (`b & 0x80`); the rest is cut into that many equal pieces. A piece whose
/// segment header decodes is named after its first LSN, else after its position.
pub fn recover_from_bytes(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else { return };
    let pieces = 1 + (control % 3) as usize + usize::from(control & 0x80 != 0);
    let piece_len = rest.len().div_ceil(pieces).max(1);
    let storage = MemoryStorage::new();
    for (index, piece) in rest.chunks(piece_len).enumerate() {
        if control & 0x80 != 0 && index + 1 == pieces {
            // Named after the LSN its header claims, so a well-formed snapshot is found valid.
            let mut lsn = [0u8; 8];
            if let Some(b) = piece.get(16..24) {
                lsn.copy_from_slice(b);
            }
            storage.insert(
                Area::Snapshots,
                &snapshot_name(u64::from_le_bytes(lsn)),
                piece.to_vec(),
            );
            continue;
        }
        let name = match decode_header(piece, piece.len() as u64) {
            Ok(header) => segment_name(header.first_lsn),
            Err(_) => segment_name(index as u64 + 1),
        };
        storage.insert(Area::Wal, &name, piece.to_vec());
    }
    let _ = crate::inspect::verify(&mut storage.clone());
    let _ = crate::inspect::dump(&mut storage.clone(), &mut |view, _, _| check_record(view));
    let options = Options { segment_size_bytes: 4096, ..Options::default() };
    let mut checker = Checker { last: None };
    if let Ok((mut wal, _)) = Wal::open(storage, options, &mut checker) {
        // A recovered log must go on working.
        let lsn = wal.append(1, 1, 1, b"after recovery");
        if let Ok(lsn) = lsn {
            assert_eq!(wal.commit().ok(), Some(lsn), "commit after recovery");
            if let Ok(raw) = wal.read_raw(lsn, 1 << 20) {
                assert_eq!(record::decode(&raw).map(|v| v.lsn()), Ok(lsn));
            }
        }
    }
}

fn check_record(view: &RecordView<'_>) {
    let again = record::decode(view.raw);
    assert_eq!(
        again.map(|v| v.lsn()),
        Ok(view.lsn()),
        "a record that fails its checksum was returned"
    );
}

struct Checker {
    last: Option<Lsn>,
}

impl Replay for Checker {
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), ReplayRefusal> {
        let bytes = snapshot.read_to_vec()?;
        assert_eq!(bytes.len() as u64, snapshot.size_bytes(), "snapshot read short");
        self.last = Some(snapshot.lsn());
        Ok(())
    }
    fn record(&mut self, view: &RecordView<'_>) -> Result<(), ReplayRefusal> {
        check_record(view);
        if let Some(last) = self.last {
            assert_eq!(view.lsn(), last + 1, "replay out of order");
        }
        self.last = Some(view.lsn());
        Ok(())
    }
}
