//! Every limit of the engine, in one place, with units last. Relations between limits are checked
//! at compile time; the values are the public contract's ("Names and limits").
//!
//! A limit that a refusal message states is written once as a macro that expands to its literal,
//! so the message is `concat!`ed from it and cannot drift from the constant.

macro_rules! hold_items_max {
    () => {
        64
    };
}
macro_rules! hold_ttl_ms_min {
    () => {
        1
    };
}
macro_rules! hold_ttl_ms_max {
    () => {
        86_400_000
    };
}
macro_rules! list_limit_max {
    () => {
        1_000
    };
}
pub(crate) use {hold_items_max, hold_ttl_ms_max, hold_ttl_ms_min, list_limit_max};

/// Longest partition, resource or hold id, in bytes.
pub const NAME_SIZE_MAX_BYTES: usize = 64;
/// Largest capacity of a resource: 2^53 − 1, so every count is exact in a JSON number.
pub const CAPACITY_MAX: u64 = (1 << 53) - 1;
/// Largest quantity of one item of a hold.
pub const QUANTITY_MAX: u64 = u32::MAX as u64;
/// Most items in one hold.
pub const HOLD_ITEMS_MAX: usize = hold_items_max!();
/// Shortest and longest hold time to live, in milliseconds.
pub const HOLD_TTL_MS_MIN: u64 = hold_ttl_ms_min!();
pub const HOLD_TTL_MS_MAX: u64 = hold_ttl_ms_max!();
/// Time to live of a hold created without `ttl_ms`.
pub const HOLD_TTL_MS_DEFAULT: u64 = 600_000;
/// Longest `ref` stored with a hold, in bytes.
pub const HOLD_REF_SIZE_MAX_BYTES: usize = 256;
/// Most resources a listing page returns, and its default.
pub const LIST_LIMIT_MAX: usize = list_limit_max!();
pub const LIST_LIMIT_DEFAULT: usize = 100;

/// How long a released, expired or cancelled hold is kept after it ended, by default: 24 h.
pub const HOLD_RETENTION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// The shortest hold retention: 1 s.
pub const HOLD_RETENTION_MS_MIN: u64 = 1000;

/// The latest time the engine accepts, in Unix ms (about the year 146 million). A later stamp
/// counts as this one, so `now + ttl` never overflows and a new expiry is always in the future.
pub const CLOCK_MS_MAX: u64 = 1 << 62;

/// Default bounds of one engine (one shard). Every table that input can grow is bounded; a
/// command that would grow a full table is refused with `overloaded` and changes nothing.
/// The memory budget (`--memory-max`) is the bound that matters in practice; these only keep
/// slots within their 32-bit indices.
pub const ENGINE_RESOURCES_MAX_DEFAULT: u32 = 1 << 30;
pub const ENGINE_HOLDS_MAX_DEFAULT: u32 = 1 << 31;
pub const ENGINE_PARTITIONS_MAX_DEFAULT: u32 = 1024 * 1024;

/// What the memory budget counts per record: the record, its share of its index (at most half
/// full, 8-byte buckets), and for resources their ordered-listing entry and shared id header;
/// names and other variable parts are added at their length. An estimate kept exact for the
/// engine's own accounting (what is added is what is removed), close to what the allocator uses.
pub const HOLD_MEMORY_BYTES: u64 = 80 + 16 + 16;
pub const RESOURCE_MEMORY_BYTES: u64 = 64 + 16 + 64 + 16;
pub const PARTITION_MEMORY_BYTES: u64 = 256;

/// The expiry queue is rebuilt when stale entries (holds confirmed, released or extended since
/// they were queued) outnumber live ones by this factor, so it stays O(live holds).
pub const EXPIRY_QUEUE_STALE_FACTOR: usize = 2;
/// ... but never while it is smaller than this, to avoid rebuilding tiny queues.
pub const EXPIRY_QUEUE_COMPACT_LEN_MIN: usize = 4096;

const _: () =
    assert!(HOLD_TTL_MS_MIN <= HOLD_TTL_MS_DEFAULT && HOLD_TTL_MS_DEFAULT <= HOLD_TTL_MS_MAX);
const _: () = assert!(LIST_LIMIT_DEFAULT <= LIST_LIMIT_MAX);
// now + ttl never overflows for any wall-clock time this millennium and any allowed ttl.
const _: () = assert!(HOLD_TTL_MS_MAX < u64::MAX / 2);
// A hold's units fit the counters: 64 items × u32::MAX ≪ u64::MAX; per resource one quantity.
const _: () = assert!(QUANTITY_MAX <= u32::MAX as u64);
const _: () = assert!(CAPACITY_MAX < u64::MAX / 2);
const _: () = assert!(CLOCK_MS_MAX.checked_add(HOLD_TTL_MS_MAX).is_some());
