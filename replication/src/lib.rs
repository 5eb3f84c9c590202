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

use bookd_runtime::{ControlError, DataDirError};

pub use message::{LogEnd, Message};
pub use node::{PromoteError, ReplicatedNode, Role};
pub use primary::Primary;
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
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("local runtime: {0}")]
    Runtime(String),
    /// A request to this node's shards failed.
    #[error("local runtime: {0}")]
    Shard(#[from] ControlError),
    /// A raised epoch could not be persisted; it is not used.
    #[error("local runtime: {0}")]
    PersistEpoch(#[source] DataDirError),
    /// This standby's disk has no room for what the primary sends: retried after a pause.
    #[error("disk full: {0}")]
    DiskFull(String),
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
