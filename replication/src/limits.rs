//! Every bound of replication, with its unit last. Invariant: every queue, buffer and wait in
//! this crate is sized or timed by a constant here; relations are checked at compile time.

use std::time::Duration;

/// Largest replication message (the payload of one REPLICATE frame), in bytes.
pub const MESSAGE_SIZE_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Records read from a shard's log per RECORDS message (at least one record is always sent).
pub const RECORDS_CHUNK_SIZE_BYTES: usize = 1024 * 1024;
/// Snapshot bytes per SNAPSHOT message (the default and the largest piece; a primary may be set
/// to send smaller ones). A standby writes each piece to disk as it arrives, so neither side
/// holds more of a snapshot than its pieces in flight.
pub const SNAPSHOT_CHUNK_SIZE_BYTES: usize = 1024 * 1024;
/// Bytes of records a primary sends to one standby, per shard, before it waits for acks.
pub const WINDOW_SIZE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// RECORDS messages per shard sent and not yet acknowledged (the lag clock's queue).
pub const IN_FLIGHT_MESSAGES_MAX: usize = 1024;
/// RECORDS or SNAPSHOT messages a standby queues per shard for its applier; the connection
/// stops reading while a shard's queue is full.
pub const APPLY_QUEUE_MESSAGES_MAX: usize = 16;
/// Bytes of queued records a standby appends and syncs at once (one fsync for several messages).
pub const APPLY_BATCH_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Most shards a SUBSCRIBE names (the data directory's shard count is at most 1 024).
pub const SHARDS_MAX: usize = 1024;
/// Messages buffered by the in-memory transport, each way.
pub const MEMORY_TRANSPORT_MESSAGES_MAX: usize = 64;
/// Longest refusal message, in bytes.
pub const REASON_SIZE_MAX_BYTES: usize = 1024;

/// How often a primary looks at its shards' durable positions for new records to send even
/// when no commit woke it (`Runtime::durable_changed`), and retries a full window.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How often a primary sends a HEARTBEAT (positions, time) and refreshes retention.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// A standby that hears nothing from its primary this long reconnects.
pub const PRIMARY_SILENCE_TIMEOUT: Duration = Duration::from_secs(3);
/// A primary that hears nothing from a standby this long drops it.
pub const STANDBY_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handshake message may take to arrive.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before a standby reconnects; doubled after each failure up to the max.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// First pause before a standby whose disk is full offers its primary's records (or asks for
/// a snapshot) again; doubled after each refusal up to the max.
pub const DISK_FULL_RETRY_MIN: Duration = Duration::from_millis(100);
pub const DISK_FULL_RETRY_MAX: Duration = Duration::from_secs(2);

const _: () = assert!(RECORDS_CHUNK_SIZE_BYTES + 64 <= MESSAGE_SIZE_MAX_BYTES);
const _: () = assert!(SNAPSHOT_CHUNK_SIZE_BYTES + 64 <= MESSAGE_SIZE_MAX_BYTES);
const _: () = assert!(SHARDS_MAX * 16 + 64 <= MESSAGE_SIZE_MAX_BYTES);
const _: () = assert!(WINDOW_SIZE_MAX_BYTES >= RECORDS_CHUNK_SIZE_BYTES as u64);
const _: () = assert!(APPLY_BATCH_SIZE_MAX_BYTES >= RECORDS_CHUNK_SIZE_BYTES);
const _: () = assert!(HEARTBEAT_INTERVAL.as_millis() * 10 <= PRIMARY_SILENCE_TIMEOUT.as_millis());
const _: () = assert!(RECONNECT_BACKOFF_MIN.as_millis() < RECONNECT_BACKOFF_MAX.as_millis());
const _: () = assert!(DISK_FULL_RETRY_MIN.as_millis() < DISK_FULL_RETRY_MAX.as_millis());
// A standby waiting for room still answers within the primary's silence timeout.
const _: () = assert!(HEARTBEAT_INTERVAL.as_millis() * 10 <= STANDBY_SILENCE_TIMEOUT.as_millis());
