//! Refusals: every way a command can be turned down, one variant per error code of the contract.
//! A refusal is a value returned to the caller, never a panic, and a refused command changes nothing.

use std::sync::Arc;

/// Why a command or query was refused. Each variant maps 1:1 to a contract error code
/// ([`Refusal::code`]) and HTTP status ([`Refusal::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A well-typed value outside the contract's limits (422 `invalid`).
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: &'static str },
    /// The partition or resource does not exist (404 `resource_not_found`).
    #[error("resource {resource} not found")]
    ResourceNotFound { resource: Arc<str> },
    /// No hold with this id in this partition (404 `hold_not_found`).
    #[error("hold not found")]
    HoldNotFound,
    /// One item of a hold asks for more units than are available (409 `insufficient_capacity`).
    #[error("resource {resource}: requested {requested}, available {available}")]
    InsufficientCapacity { resource: Arc<str>, requested: u64, available: u64 },
    /// The hold id exists with other items or quantities (409 `hold_id_conflict`).
    #[error("hold id already used with other items or quantities")]
    HoldIdConflict,
    /// The hold expired before this command (409 `hold_expired`).
    #[error("hold expired")]
    HoldExpired,
    /// The hold was released (409 `hold_released`).
    #[error("hold released")]
    HoldReleased,
    /// The hold is confirmed; release or extend does not apply (409 `hold_confirmed`).
    #[error("hold is confirmed")]
    HoldConfirmed,
    /// Cancel of a hold that is not confirmed (409 `hold_not_confirmed`).
    #[error("hold is not confirmed")]
    HoldNotConfirmed,
    /// The hold was cancelled (409 `hold_cancelled`).
    #[error("hold cancelled")]
    HoldCancelled,
    /// The new capacity is below the units held and confirmed (409 `capacity_below_usage`).
    #[error("capacity {capacity} below usage {used}")]
    CapacityBelowUsage { capacity: u64, used: u64 },
    /// No partition of this name (404 `not_found`): `delete_partition` of a missing partition.
    #[error("partition not found")]
    NotFound,
    /// The partition still has held holds (409 `partition_has_live_holds`).
    #[error("partition has {held} held holds")]
    PartitionHasLiveHolds { held: u32 },
    /// The memory budget or the data directory's disk is full (507 `storage_full`). Nothing
    /// changed; commands that free or keep units still work, and growth resumes by itself once
    /// there is room.
    #[error("storage full ({})", reason.as_str())]
    StorageFull { reason: StorageFullReason },
    /// A bounded table of the engine is full (429 `overloaded`).
    #[error("{table} table is full ({max} entries)")]
    Overloaded { table: &'static str, max: u32 },
}

impl Refusal {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid { .. } => "invalid",
            Refusal::ResourceNotFound { .. } => "resource_not_found",
            Refusal::HoldNotFound => "hold_not_found",
            Refusal::InsufficientCapacity { .. } => "insufficient_capacity",
            Refusal::HoldIdConflict => "hold_id_conflict",
            Refusal::HoldExpired => "hold_expired",
            Refusal::HoldReleased => "hold_released",
            Refusal::HoldConfirmed => "hold_confirmed",
            Refusal::HoldNotConfirmed => "hold_not_confirmed",
            Refusal::HoldCancelled => "hold_cancelled",
            Refusal::CapacityBelowUsage { .. } => "capacity_below_usage",
            Refusal::Overloaded { .. } => "overloaded",
            Refusal::NotFound => "not_found",
            Refusal::PartitionHasLiveHolds { .. } => "partition_has_live_holds",
            Refusal::StorageFull { .. } => "storage_full",
        }
    }

    /// The HTTP status the contract gives this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::Invalid { .. } => 422,
            Refusal::ResourceNotFound { .. } | Refusal::HoldNotFound | Refusal::NotFound => 404,
            Refusal::StorageFull { .. } => 507,
            Refusal::Overloaded { .. } => 429,
            Refusal::InsufficientCapacity { .. }
            | Refusal::HoldIdConflict
            | Refusal::HoldExpired
            | Refusal::HoldReleased
            | Refusal::HoldConfirmed
            | Refusal::HoldNotConfirmed
            | Refusal::HoldCancelled
            | Refusal::CapacityBelowUsage { .. }
            | Refusal::PartitionHasLiveHolds { .. } => 409,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: &'static str) -> Refusal {
        Refusal::Invalid { field: field.into(), reason }
    }
}

/// What is full when a command is refused with `storage_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFullReason {
    /// The state's memory budget (`--memory-max`).
    Memory,
    /// The data directory's disk: no room for the next log segment.
    Disk,
}

impl StorageFullReason {
    /// The contract's `reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageFullReason::Memory => "memory",
            StorageFullReason::Disk => "disk",
        }
    }
}
