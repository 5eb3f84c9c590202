//! bookd's write-ahead log: every acknowledged command lives in a checksummed record of a
//! preallocated, memory-mapped segment, made durable by one sync per group of records.
//!
//! Invariant: a record is acknowledged (its LSN ≤ `durable_lsn()`) only after a sync covering it
//! returned `Ok`; recovery keeps every such record or refuses to start, naming file and offset.
//!
//! The log knows nothing of the engine: a record carries an opaque payload plus `lsn`, `epoch`,
//! `timestamp_ms` and `kind`. One log per directory, written by one thread.
//!
//! # Layout
//!
//! - `limits.rs`: every size and count limit, checked against each other at compile time.
//! - `record.rs`: record framing and its byte map; encode, check, decode.
//! - `segment.rs`: segment file names and the segment header's byte map.
//! - `storage.rs`: the narrow `Storage` trait and its backends: `MmapStorage` (real files),
//!   `MemoryStorage`, and `CrashStorage` (live and durable images, for in-process crash tests).
//! - `writer.rs`: `Wal`: open (recovery), append, group commit, segment roll, room checks
//!   (`has_room`: a full disk is a refusal, never a crash), snapshots, retention.
//! - `reader.rs`: `Wal::read_raw`, framed records by LSN for replication.
//! - `recovery.rs`: the recovery decision table, the scan, the snapshot choice, replay.
//! - `snapshot.rs`: snapshot files and their byte map; the streaming `SnapshotWriter` and
//!   `SnapshotReader`.
//! - `inspect.rs`: `verify` and `dump` for the `bookd wal` commands.
//! - `fuzzing.rs`: the fuzz target's logic, also run as a test over the corpus.
//! - `error.rs`: `WalError`.
//!
//! On disk, a log directory holds `wal/<first lsn, 20 digits>.seg` and
//! `snapshots/<lsn, 20 digits>.snap`; see docs/ARCHITECTURE.md.

pub mod error;
pub mod fuzzing;
pub mod inspect;
pub mod limits;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod storage;
pub mod writer;

pub use error::{InvalidArgument, WalError};
pub use inspect::{dump, dump_dir, verify, verify_dir, VerifyReport};
pub use record::{Lsn, RecordHeader, RecordView};
pub use recovery::{Replay, ReplayProgress, ReplayRefusal};
pub use snapshot::{Snapshot, SnapshotDone, SnapshotReader, SnapshotWriter};
pub use storage::{
    Area, CrashStorage, CrashTail, FileReader, FileSink, MemoryStorage, MmapStorage, SegmentFile,
    Storage, SyncHandle, SyncMethod,
};
pub use writer::{Options, RecoveryReport, SyncPolicy, Wal};
