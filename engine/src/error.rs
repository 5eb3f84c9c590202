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
        }
    }

    /// The HTTP status the contract gives this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::Invalid { .. } => 422,
            Refusal::ResourceNotFound { .. } | Refusal::HoldNotFound => 404,
            Refusal::Overloaded { .. } => 429,
            Refusal::InsufficientCapacity { .. }
            | Refusal::HoldIdConflict
            | Refusal::HoldExpired
            | Refusal::HoldReleased
            | Refusal::HoldConfirmed
            | Refusal::HoldNotConfirmed
            | Refusal::HoldCancelled
            | Refusal::CapacityBelowUsage { .. } => 409,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: &'static str) -> Refusal {
        Refusal::Invalid { field: field.into(), reason }
    }
}
