//! Every size and count limit of the write-ahead log, in one place, with units last.
//!
//! Invariant: the relations between limits are checked at compile time, so a record of the largest
//! payload always fits an empty segment of the default size.

#![allow(non_upper_case_globals)]

/// Largest payload one record may carry (the node stores one rkyv-encoded command batch per record).
pub const record_payload_size_max_bytes: u32 = 1024 * 1024;

/// Size of the fixed record header (see `record.rs` for the byte map).
pub const record_header_size_bytes: u32 = 40;

/// Every record starts and ends on this alignment; the padding is zero bytes.
pub const record_alignment_bytes: u32 = 8;

/// Size of the fixed segment header (see `segment.rs` for the byte map); records start right after it.
pub const segment_header_size_bytes: u32 = 64;

/// Default size of one preallocated segment file.
pub const segment_size_bytes_default: u64 = 64 * 1024 * 1024;

/// Smallest segment size accepted by `Options` (tests use 64 KiB segments).
pub const segment_size_bytes_min: u64 = 4 * 1024;

/// Largest segment size accepted by `Options` (offsets inside a segment fit `u32`).
pub const segment_size_bytes_max: u64 = 1024 * 1024 * 1024;

/// Most segment files one log directory may hold; a longer listing is refused, not truncated.
pub const segments_count_max: usize = 1_000_000;

/// Size of the fixed snapshot file header (see `snapshot.rs` for the byte map).
pub const snapshot_header_size_bytes: u32 = 40;

/// Largest snapshot payload accepted when writing or reading a snapshot file.
pub const snapshot_size_bytes_max: u64 = 16 * 1024 * 1024 * 1024;

/// Default number of newest snapshots kept by retention.
pub const snapshots_retained_default: usize = 2;

/// Default pace of snapshot writing. A snapshot written as fast as the disk takes it fills the
/// disk's queue, and the log's syncs wait behind it: on the reference VM an unpaced 2 GB write
/// made the slowest `fdatasync` 0.5–0.9 s, one paced at 128 MiB/s about 40 ms. At this pace a
/// 2 GB snapshot takes 16 s, in the background.
pub const snapshot_write_bytes_per_s_default: u64 = 128 * 1024 * 1024;

/// Buffer of a streaming snapshot writer and reader (`SnapshotWriter`, `SnapshotReader`), and the
/// chunk the checksum pass over a snapshot reads at a time.
pub const snapshot_io_buffer_size_bytes: u32 = 256 * 1024;

/// First wait before trying again to make a segment that could not be made (disk full); doubles
/// after each failure up to `segment_retry_backoff_max_ms`.
pub const segment_retry_backoff_min_ms: u64 = 100;

/// Longest wait between two attempts to make a segment that could not be made.
pub const segment_retry_backoff_max_ms: u64 = 1000;

/// A lack of disk space is logged at most once per this interval (with the count of the
/// occurrences not logged), however often writes are refused.
pub const no_space_warning_interval_ms: u64 = 10_000;

/// Replay reports progress at least this often (in records), and once at the end.
pub const replay_progress_interval_records: u64 = 1 << 20;

const _: () = assert!(record_header_size_bytes.is_multiple_of(record_alignment_bytes));
const _: () = assert!(segment_header_size_bytes.is_multiple_of(record_alignment_bytes));
const _: () = assert!(
    segment_size_bytes_default
        >= segment_header_size_bytes as u64
            + record_header_size_bytes as u64
            + record_payload_size_max_bytes as u64
            + record_alignment_bytes as u64
);
const _: () = assert!(segment_size_bytes_min <= segment_size_bytes_default);
const _: () = assert!(segment_retry_backoff_min_ms <= segment_retry_backoff_max_ms);
const _: () = assert!(snapshot_io_buffer_size_bytes >= snapshot_header_size_bytes);
const _: () = assert!(segment_size_bytes_default <= segment_size_bytes_max);
const _: () = assert!(segment_size_bytes_max <= u32::MAX as u64);
const _: () = assert!(segment_size_bytes_min.is_multiple_of(record_alignment_bytes as u64));
const _: () =
    assert!(segment_size_bytes_min > (segment_header_size_bytes + record_header_size_bytes) as u64);
