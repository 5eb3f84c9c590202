//! bookd's replication: a primary streams its write-ahead log — the same framed bytes as on its
//! disk — to hot standbys that append, sync and apply them, serve reads, and acknowledge; with
//! `--sync-standbys K` a command is acknowledged only once K standbys have it on disk; an
//! operator promotes a standby, which raises and persists its epoch before accepting writes.
//!
//! Invariants: histories are never mixed (a standby's log is checked against the primary's by
//! position and checksum, or replaced whole by a snapshot); no node follows a primary of a lower
//! epoch; an acknowledgement names only what is on the acknowledging node's disk.
//!
//! # Layout
//! - [`message`]: the messages and their byte encoding (docs/protocol.md, "Replication").
//! - [`transport`]: the `Transport` trait (send/receive messages), an in-memory pair for tests
//!   and a byte-stream implementation (TCP after the binary protocol's handshake).
//! - [`primary`]: per standby and shard, stream records (snapshot first when needed), track
//!   acknowledgements, feed the synchronous gate and retention.
//! - [`standby`]: follow a primary: subscribe, append, apply, acknowledge, reconnect.
//! - [`node`]: the node's role, promotion, status and metrics.
//! - [`metrics`]: the `bookd_replication_*` families, documented once.
//! - [`limits`]: every bound, units last.

pub mod limits;
pub mod message;
pub mod metrics;
pub mod node;
pub mod primary;
pub mod standby;
pub mod transport;

use std::sync::Arc;

use bookd_runtime::{ControlError, DataDirError, InstallRefusal, LogCause};

pub use message::{LogEnd, Message};
pub use node::{PromoteError, ReplicatedNode, Role};
pub use primary::{Primary, SubscribeRefusal};
pub use standby::{follow, FollowConfig, FollowEnd, StandbyState};
pub use transport::{Connector, MemoryTransport, StreamTransport, Transport, TransportError};

/// Persists a raised epoch durably (the data directory's epoch file) before it is used.
pub type EpochStore = Arc<dyn Fn(u64) -> Result<(), DataDirError> + Send + Sync>;

/// Why a replication session ended.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// One side refused the other (divergence, epoch, shard count): final.
    #[error("refused: {0}")]
    Refused(#[source] Refusal),
    /// The peer broke the protocol (a message out of place, of an unknown shard); the text
    /// says which.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The primary's snapshot of `shard` at `lsn` is not what it announced.
    #[error("protocol error: shard {shard}: snapshot {lsn}: {source}")]
    SnapshotRefused { shard: usize, lsn: u64, source: InstallRefusal },
    /// This node's records or snapshot are not as they should be; the text says which.
    #[error("local runtime: {0}")]
    Runtime(String),
    /// A request to this node's shards failed.
    #[error("local runtime: {0}")]
    Shard(#[from] ControlError),
    /// `shard` failed while it took the primary's records.
    #[error("local runtime: shard {shard}: {source}")]
    ShardFailed { shard: usize, source: ControlError },
    /// `shard` failed while it installed the primary's snapshot at `lsn`.
    #[error("local runtime: shard {shard}: snapshot {lsn}: {source}")]
    InstallFailed { shard: usize, lsn: u64, source: ControlError },
    /// This primary's snapshot of `shard` at `lsn` could not be read at `offset`.
    #[error("local runtime: shard {shard}: reading snapshot {lsn} at offset {offset}: {source}")]
    SnapshotRead { shard: usize, lsn: u64, offset: u64, source: std::io::Error },
    /// A blocking task (persisting an epoch, reading a snapshot piece) did not finish.
    #[error("local runtime: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A blocking task of a snapshot install did not finish.
    #[error("local runtime: snapshot install task: {0}")]
    InstallTask(#[source] tokio::task::JoinError),
    /// A raised epoch could not be persisted; it is not used.
    #[error("local runtime: {0}")]
    PersistEpoch(#[source] DataDirError),
    /// This standby's disk has no room for the primary's snapshot of `shard` at `lsn`: retried
    /// after a pause.
    #[error("disk full: shard {shard}: snapshot {lsn}: {source}")]
    DiskFull { shard: usize, lsn: u64, source: LogCause },
}

/// Why one side refused the other ([`ReplicationError::Refused`]); its text is what a
/// standby's status shows, and what a REFUSED message carries.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer's words, as its REFUSED message carried them.
    #[error("{0}")]
    Peer(String),
    /// The primary refused this standby, in its words.
    #[error("the primary refused: {0}")]
    ByPrimary(String),
    /// This primary refused a standby's SUBSCRIBE.
    #[error(transparent)]
    Subscribe(#[from] SubscribeRefusal),
    /// A standby does not follow a primary of an epoch below its own.
    #[error(
        "the primary is at epoch {epoch}, below this node's epoch {own_epoch}: it is a deposed \
         primary; not following it"
    )]
    DeposedPrimary { epoch: u64, own_epoch: u64 },
    /// A standby was asked to serve a standby.
    #[error("this node is a standby, not a primary")]
    NotPrimary,
    /// The primary's records do not continue this standby's log of `shard`.
    #[error(
        "shard {shard}: the primary's records {first_lsn}..={last_lsn} do not continue this \
         node's log: {source}"
    )]
    Diverged { shard: usize, first_lsn: u64, last_lsn: u64, source: LogCause },
}

/// CRC32C of the first framed record in `bytes` (the divergence check's checksum).
pub fn record_crc(bytes: &[u8]) -> Option<u32> {
    let view = bookd_wal::record::decode(bytes).ok()?;
    Some(crc32c::crc32c(view.raw))
}

/// The position of the last whole record in framed `bytes`; `None` if any record is damaged.
pub fn records_last_lsn(mut bytes: &[u8]) -> Option<u64> {
    let mut last = None;
    while !bytes.is_empty() {
        let view = bookd_wal::record::decode(bytes).ok()?;
        last = Some(view.header.lsn);
        bytes = &bytes[view.raw.len()..];
    }
    last
}

/// The framed records in `bytes` after position `lsn` (all of them if the first is after it);
/// `None` if a record is damaged.
pub fn records_after(mut bytes: &[u8], lsn: u64) -> Option<&[u8]> {
    while !bytes.is_empty() {
        let view = bookd_wal::record::decode(bytes).ok()?;
        if view.header.lsn > lsn {
            return Some(bytes);
        }
        bytes = &bytes[view.raw.len()..];
    }
    Some(bytes)
}

/// Resolves once `stop` is true (or its sender is gone); holds no borrow of the value.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The wall clock in Unix ms (status only; never stamps records).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_their_reason_says() {
        let deposed = ReplicationError::Refused(Refusal::DeposedPrimary { epoch: 1, own_epoch: 2 });
        assert_eq!(
            deposed.to_string(),
            "refused: the primary is at epoch 1, below this node's epoch 2: it is a deposed \
             primary; not following it"
        );
        let diverged = Refusal::Diverged {
            shard: 0,
            first_lsn: 3,
            last_lsn: 4,
            source: LogCause::Discontinuous { lsn: 3, expected: 2 },
        };
        assert_eq!(
            diverged.to_string(),
            "shard 0: the primary's records 3..=4 do not continue this node's log: lsn 3 does \
             not continue at 2"
        );
        let peer = ReplicationError::Refused(Refusal::ByPrimary("no".into()));
        assert_eq!(peer.to_string(), "refused: the primary refused: no");
    }
}
