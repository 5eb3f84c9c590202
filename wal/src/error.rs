//! The one error type of the write-ahead log.
//!
//! Invariant: every error that comes from a damaged log names the file and the byte offset, so an
//! operator can find it; a failed sync is reported as fatal and poisons the writer.

use std::path::PathBuf;

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
    Invalid(String),

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
