//! The one error type of the write-ahead log.
//!
//! Invariant: every error that comes from a damaged log names the file and the byte offset, so an
//! operator can find it; a failed sync is reported as fatal and poisons the writer.

use std::path::PathBuf;

use crate::limits::{segment_size_bytes_max, segment_size_bytes_min, snapshot_size_bytes_max};

/// Everything that can go wrong in the log. Hot paths return it by value; nothing is boxed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed (opening, creating, renaming, mapping, reading a file).
    #[error("wal: {operation} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create segment".
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A sync (fdatasync, msync or fsync) failed. Fatal: the node must stop.
    #[error(
        "wal: FATAL: sync of {path} failed: {source}; durability of the log is unknown \
         (the page cache may have dropped the data), the node must stop"
    )]
    SyncFailed {
        /// The file whose sync failed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The disk has no room for a new segment or a snapshot (or the new file could not be made).
    /// Not fatal: nothing was written, the log is intact and usable, and the same call succeeds
    /// once space is freed.
    #[error(
        "wal: no space: {operation} {path}: {source}; nothing was written, the log is intact, \
         retry once space is freed"
    )]
    NoSpace {
        /// What was being done, e.g. "create segment".
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A previous sync failed; the writer refuses every further call.
    #[error("wal: the writer is poisoned by an earlier failed sync; the node must stop")]
    Poisoned,

    /// The log or a snapshot is damaged: the node must refuse to start.
    #[error("wal: corruption in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file (or, for a missing file, the file where the gap shows).
        path: PathBuf,
        /// Byte offset inside that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A payload larger than the limit or than an empty segment can hold.
    #[error("wal: payload of {size_bytes} bytes is larger than the maximum of {max_bytes} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size_bytes: usize,
        /// The largest payload this log accepts.
        max_bytes: usize,
    },

    /// `append_raw` was given bytes that are not whole valid records continuing the log.
    #[error("wal: raw records refused at byte {offset} of the input: {reason}")]
    RawRecordRefused {
        /// Byte offset inside the given buffer.
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// An argument outside what the call accepts (bad option, snapshot LSN not durable, …).
    #[error("wal: invalid argument: {0}")]
    Invalid(#[from] InvalidArgument),

    /// A record with this LSN is not in the log (before its first retained record, or not yet durable).
    #[error("wal: lsn {lsn} is not available (log holds {first_lsn}..={last_lsn})")]
    LsnUnavailable {
        /// The requested LSN.
        lsn: u64,
        /// First LSN still held.
        first_lsn: u64,
        /// Last durable LSN.
        last_lsn: u64,
    },

    /// The replay callback refused a record or the snapshot (e.g. it failed to decode).
    #[error("wal: replay refused lsn {lsn} ({path} at offset {offset}): {reason}")]
    ReplayRefused {
        /// The record's (or snapshot's) LSN.
        lsn: u64,
        /// The file it came from.
        path: PathBuf,
        /// Its byte offset in that file.
        offset: u64,
        /// The callback's reason.
        reason: String,
    },
}

/// What is wrong with an argument (`WalError::Invalid`), with the values concerned.
#[derive(Debug, thiserror::Error)]
pub enum InvalidArgument {
    /// `Options::segment_size_bytes` outside its range or not a multiple of a page.
    #[error(
        "segment_size_bytes {size_bytes} must be a multiple of 4096 in \
         {segment_size_bytes_min}..={segment_size_bytes_max}"
    )]
    SegmentSize { size_bytes: u64 },
    /// `Options::snapshots_retained` of 0.
    #[error("snapshots_retained must be at least 1")]
    SnapshotsRetained,
    /// A segment larger than this machine's address space.
    #[error("segment too big")]
    SegmentTooBig { size_bytes: u64 },
    /// A directory of the log holds more files than a log may have.
    #[error("{} holds too many files", dir.display())]
    TooManyFiles { dir: PathBuf },
    /// A snapshot at a position the log has not made durable yet.
    #[error("snapshot lsn {lsn} is ahead of the durable log (durable lsn {durable_lsn})")]
    SnapshotAhead { lsn: u64, durable_lsn: u64 },
    /// A snapshot at a position not after the newest snapshot's.
    #[error("snapshot lsn {lsn} is not newer than {newest}")]
    SnapshotNotNewer { lsn: u64, newest: u64 },
    /// A snapshot in memory larger than a snapshot may be.
    #[error("snapshot of {size_bytes} bytes above the limit")]
    SnapshotTooLarge { size_bytes: usize },
    /// A snapshot written past the largest size a snapshot may have.
    #[error("snapshot {} above the limit of {snapshot_size_bytes_max} bytes", path.display())]
    SnapshotOverLimit {
        path: PathBuf,
        /// The write the size limit refused.
        source: std::io::Error,
    },
    /// A snapshot writer finished twice.
    #[error("snapshot already finished")]
    SnapshotFinished,
}

impl WalError {
    /// Builds a `Corrupt` error.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        WalError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }

    /// Builds an `Io` error.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io { operation, path: path.into(), source }
    }

    /// Builds a `NoSpace` error.
    pub fn no_space(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        WalError::NoSpace { operation, path: path.into(), source }
    }

    /// True for a refusal for lack of disk space (see `WalError::NoSpace`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::NoSpace { .. })
    }

    /// True for errors that mean the node must stop (a failed sync, a poisoned writer).
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::SyncFailed { .. } | WalError::Poisoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_argument_says_its_values() {
        let error = WalError::from(InvalidArgument::SegmentSize { size_bytes: 5 });
        assert_eq!(
            error.to_string(),
            format!(
                "wal: invalid argument: segment_size_bytes 5 must be a multiple of 4096 in \
                 {segment_size_bytes_min}..={segment_size_bytes_max}"
            )
        );
        let error = WalError::from(InvalidArgument::SnapshotAhead { lsn: 11, durable_lsn: 10 });
        assert_eq!(
            error.to_string(),
            "wal: invalid argument: snapshot lsn 11 is ahead of the durable log (durable lsn 10)"
        );
    }
}
