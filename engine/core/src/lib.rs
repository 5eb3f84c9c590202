//! bookd's booking engine: a deterministic state machine of resources and holds.
//!
//! The engine does no I/O and reads no clock: every command carries its time (Unix ms), so the
//! same commands in the same order give the same results and the same state, byte for byte.
//! That is what makes the write-ahead log, replay and standbys exact.
//!
//! # Layout
//! - [`change`]: what each change of state did, captured for the change feed, and its layout.
//! - [`codec`]: the one byte layout of a command, for the wire and the log alike.
//! - [`lifecycle`]: what each verb does to a hold in each status, as one table.
//! - [`limits`]: every limit, units last, relations checked at compile time.
//! - `name`: validation of partition, resource and hold ids.
//! - `command/`: one file per state-changing verb (validate, execute, tests) and the dispatch.
//! - `state`: the tables (partitions, resources, holds) and the only code that moves units.
//! - `expiry`: the min-heap that expires holds by time, without scanning.
//! - `index`: hash indexes from ids to dense slots: a tag and a slot in one 8-byte bucket.
//! - `key`: names as lookups compare them, short ones inline in the records.
//! - `prefetch`: the hint that lets independent cache misses overlap.
//! - `chunked`: the hold table's storage, which grows without moving records.
//! - `query`: read-only lookups and ordered listing.
//! - `image`: the canonical image of the whole state, to compare engines.
//! - `snapshot_file`: snapshots written streaming from a frozen copy-on-write view, in slot order,
//!   and restored with every check.
//! - `free`: free slots, handed out lowest first.
//! - `op`: what a shard is asked ([`Op`]: a command or a query) and what it answers.
//! - `view`, `error`: what callers get back: views of resources and holds, and refusals.
//! - [`testing`] (feature `testing`): shorthands for tests of this crate and the ones above it.
//!
//! Threads, queues, the log and files are the shard runtime's (`bookd-runtime`), one crate up.
//!
//! # Invariants
//! `held + confirmed <= capacity` for every resource at every instant (asserted where counters
//! change); counters equal the sums over holds ([`Engine::check_invariants`]); time never runs
//! backwards; a refused command changes nothing but the clock.

pub mod change;
mod chunked;
pub mod codec;
mod command;
mod error;
mod expiry;
mod free;
mod image;
mod index;
mod key;
pub mod lifecycle;
pub mod limits;
mod name;
mod op;
mod prefetch;
mod query;
mod snapshot_file;
mod state;
mod view;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use command::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, Item, Outcome, PutResource, Receipt,
    Release, PREFETCH_AHEAD,
};
pub use error::{Refusal, StorageFullReason};
pub use image::{EngineImage, HoldImage, ItemImage, PartitionImage, ResourceImage};
pub use name::{check_name, is_name_byte, name_problem, shard_of};
pub use op::{Op, OpResult};
pub use query::ListQuery;
pub use snapshot_file::{SnapshotError, SnapshotView, SNAPSHOT_FORMAT_VERSION};
pub use state::{Engine, EngineLimits, EngineStats, InvariantViolation};
pub use view::{
    HoldRef, HoldStatus, HoldView, ItemView, OutcomeRef, ResourcePage, ResourceRef, ResourceView,
};
