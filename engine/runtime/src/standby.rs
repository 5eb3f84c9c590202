//! What a standby's shard takes from its primary besides the records' bytes: the refusals of
//! [`super::Runtime::replicate`], and a snapshot received piece by piece into the log's staging
//! area ([`SnapshotInstall`]), checked end to end and restored into an engine before it replaces
//! the shard's log and state ([`super::Runtime::install_snapshot`]).
//!
//! Invariant: nothing of a shard's log or state changes until a snapshot has arrived whole, its
//! checksum matches the one the primary's snapshot file carries, and the engine restored from
//! the staged file passed every check; a refused, abandoned or dropped install leaves no staging
//! behind. Memory stays bounded by a piece (plus the engine being built), whatever the size.

use bookd_wal::limits::snapshot_header_size_bytes;
use bookd_wal::snapshot::{decode_header, SnapshotHeader};

use super::log::{InstallSink, LogCause, LogError, Staged};
use super::ControlError;
use bookd_engine::{Engine, EngineLimits, SnapshotError};

const HEADER: usize = snapshot_header_size_bytes as usize;

/// Why [`super::Runtime::replicate`] did not take a primary's records.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The records are damaged or do not continue this log: nothing appended.
    #[error("records refused: {0}")]
    Refused(#[source] LogCause),
    /// The disk is full: the records up to `durable_lsn` are on disk and applied, none after
    /// (offer them again once there is room).
    #[error("no room on the disk (records kept up to position {durable_lsn}): {reason}")]
    NoSpace {
        durable_lsn: u64,
        #[source]
        reason: LogCause,
    },
    /// The shard stopped, or its log failed (the node stops).
    #[error("{0}")]
    Failed(#[source] ControlError),
}

/// Why a snapshot was not installed. In every case the shard's log and state are as before
/// and the staging is gone.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// No room on this node's disk for the snapshot.
    #[error("no room on the disk for the snapshot: {0}")]
    NoSpace(#[source] LogCause),
    /// What arrived is not the snapshot announced: pieces out of order or past the end, a
    /// header or checksum that does not match, a state that does not restore.
    #[error("snapshot refused: {0}")]
    Refused(#[source] InstallRefusal),
    /// The shard stopped, or its log failed.
    #[error("{0}")]
    Failed(#[source] ControlError),
}

/// Why a snapshot was refused ([`InstallError::Refused`]), with the values concerned.
#[derive(Debug, thiserror::Error)]
pub enum InstallRefusal {
    /// The log refused it (a checksum or size that differ, an install already under way, …).
    #[error("{0}")]
    Log(#[from] LogCause),
    /// A file too short to hold even its header.
    #[error("a snapshot of {total_bytes} bytes is shorter than its file's header")]
    TooShort { total_bytes: u64 },
    /// A piece that does not start where the last one ended.
    #[error("snapshot piece at offset {offset}, expected {expected}")]
    OutOfOrder { offset: u64, expected: u64 },
    /// A piece that runs past the size announced.
    #[error("snapshot piece of {bytes} bytes at {offset} runs past its end ({total_bytes})")]
    PastEnd { bytes: usize, offset: u64, total_bytes: u64 },
    /// A damaged file header, or one of another position or size.
    #[error("snapshot file header, offset {at}: {reason}")]
    Header { at: u64, reason: &'static str },
    /// Finished before every byte arrived.
    #[error("snapshot at {lsn} incomplete: {received_bytes} of {total_bytes} bytes")]
    Incomplete { lsn: u64, received_bytes: u64, total_bytes: u64 },
    /// A state whose checksums pass but that does not restore into an engine.
    #[error("snapshot at {lsn}: {source}")]
    Restore { lsn: u64, source: SnapshotError },
    /// A snapshot of shard `snapshot` handed to shard `shard`.
    #[error("a snapshot of shard {snapshot} given to shard {shard}")]
    OtherShard { snapshot: usize, shard: usize },
    /// A snapshot of a shard this node does not have.
    #[error("a snapshot of shard {shard}, which is not here")]
    Absent { shard: usize },
}

impl InstallError {
    /// An error of the log, as a refusal of the install.
    pub(crate) fn from_log(error: LogError) -> InstallError {
        match error {
            LogError::NoSpace(reason) => InstallError::NoSpace(reason),
            LogError::Refused(reason) => InstallError::Refused(InstallRefusal::Log(reason)),
            other => InstallError::Failed(ControlError::Log(std::sync::Arc::new(other))),
        }
    }
}

/// A snapshot of one shard's state at `lsn` being received from a primary: the bytes of the
/// primary's snapshot file (header, then the state), written as they arrive into the log's
/// staging area. `Send`: written on a blocking thread, off the shard and the async runtime.
/// Dropped before [`SnapshotInstall::finish`], it removes the staging.
pub struct SnapshotInstall {
    shard: usize,
    lsn: u64,
    total_bytes: u64,
    received_bytes: u64,
    /// The file's header as far as it has arrived (it may span pieces).
    head: Vec<u8>,
    header: Option<SnapshotHeader>,
    sink: Box<dyn InstallSink>,
    limits: EngineLimits,
}

impl std::fmt::Debug for SnapshotInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotInstall")
            .field("shard", &self.shard)
            .field("lsn", &self.lsn)
            .field("total_bytes", &self.total_bytes)
            .field("received_bytes", &self.received_bytes)
            .finish_non_exhaustive()
    }
}

impl SnapshotInstall {
    /// An install of a file of `total_bytes` (header included) into `sink`; the engine will be
    /// restored with `limits`.
    pub(crate) fn new(
        shard: usize,
        lsn: u64,
        total_bytes: u64,
        sink: Box<dyn InstallSink>,
        limits: EngineLimits,
    ) -> SnapshotInstall {
        SnapshotInstall {
            shard,
            lsn,
            total_bytes,
            received_bytes: 0,
            head: Vec::with_capacity(HEADER),
            header: None,
            sink,
            limits,
        }
    }

    /// The size of a snapshot file holding `total_bytes`, or why it cannot be one.
    pub(crate) fn payload_bytes(total_bytes: u64) -> Result<u64, InstallError> {
        total_bytes
            .checked_sub(HEADER as u64)
            .ok_or(InstallError::Refused(InstallRefusal::TooShort { total_bytes }))
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Bytes of the whole file, header included.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Whether every byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.received_bytes == self.total_bytes
    }

    /// Writes the piece of the file at `offset`, which must be where the last one ended. The
    /// header is checked once it is whole (its checksum, the position it names, the size).
    /// Blocking I/O: call it off the async runtime.
    pub fn write(&mut self, offset: u64, mut bytes: &[u8]) -> Result<(), InstallError> {
        if offset != self.received_bytes {
            let expected = self.received_bytes;
            return Err(InstallError::Refused(InstallRefusal::OutOfOrder { offset, expected }));
        }
        let end = offset.checked_add(bytes.len() as u64).filter(|&end| end <= self.total_bytes);
        let Some(end) = end else {
            return Err(InstallError::Refused(InstallRefusal::PastEnd {
                bytes: bytes.len(),
                offset,
                total_bytes: self.total_bytes,
            }));
        };
        if self.header.is_none() {
            let take = (HEADER - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() == HEADER {
                let mut head = [0u8; HEADER];
                head.copy_from_slice(&self.head);
                let header =
                    decode_header(&head, self.lsn, self.total_bytes).map_err(|(at, reason)| {
                        InstallError::Refused(InstallRefusal::Header { at, reason })
                    })?;
                self.header = Some(header);
            }
        }
        if !bytes.is_empty() {
            self.sink.write(bytes).map_err(InstallError::from_log)?;
        }
        self.received_bytes = end;
        Ok(())
    }

    /// Once every byte has arrived: checks the state's checksum against the header's, makes
    /// the staged log durable, and restores an engine from the staged file as it streams.
    /// Blocking I/O and the whole restore: call it off the async runtime and off the shard.
    pub fn finish(self) -> Result<StagedSnapshot, InstallError> {
        let SnapshotInstall {
            shard, lsn, total_bytes, received_bytes, header, sink, limits, ..
        } = self;
        let Some(header) = header.filter(|_| received_bytes == total_bytes) else {
            return Err(InstallError::Refused(InstallRefusal::Incomplete {
                lsn,
                received_bytes,
                total_bytes,
            }));
        };
        let (mut reader, staged) = sink
            .finish(header.payload_size_bytes, header.payload_checksum)
            .map_err(InstallError::from_log)?;
        // A state that does not restore drops `staged`, which removes the staging.
        let engine = Engine::read_snapshot(&mut reader, limits)
            .map_err(|source| InstallError::Refused(InstallRefusal::Restore { lsn, source }))?;
        Ok(StagedSnapshot { shard, lsn, engine, staged })
    }
}

/// A received snapshot: its staged log, durable beside the shard's log, and the engine restored
/// from it; [`super::Runtime::install_snapshot`] swaps both in. Dropped unused, the staging goes.
pub struct StagedSnapshot {
    shard: usize,
    lsn: u64,
    pub(crate) engine: Engine,
    pub(crate) staged: Staged,
}

impl std::fmt::Debug for StagedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedSnapshot")
            .field("shard", &self.shard)
            .field("lsn", &self.lsn)
            .finish_non_exhaustive()
    }
}

impl StagedSnapshot {
    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn lsn(&self) -> u64 {
        self.lsn
    }
}
