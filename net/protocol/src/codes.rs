//! The contract's error codes as stable one-byte numbers. Invariant: a number, once given to a
//! code, is never reused or changed; 0 is success and is never an error code.

/// Every error code of the contract (the same set as HTTP), with its wire number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ErrorCode {
    BadRequest = 1,
    Unauthorized = 2,
    ResourceNotFound = 3,
    HoldNotFound = 4,
    NotFound = 5,
    InsufficientCapacity = 6,
    HoldIdConflict = 7,
    HoldExpired = 8,
    HoldReleased = 9,
    HoldConfirmed = 10,
    HoldNotConfirmed = 11,
    HoldCancelled = 12,
    CapacityBelowUsage = 13,
    AlreadyPrimary = 14,
    PayloadTooLarge = 15,
    Invalid = 16,
    Overloaded = 17,
    StandbyReadOnly = 18,
    ReplicationTimeout = 19,
    Unavailable = 20,
    PartitionHasLiveHolds = 21,
    StorageFull = 22,
    CursorExpired = 23,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::ResourceNotFound,
        ErrorCode::HoldNotFound,
        ErrorCode::NotFound,
        ErrorCode::InsufficientCapacity,
        ErrorCode::HoldIdConflict,
        ErrorCode::HoldExpired,
        ErrorCode::HoldReleased,
        ErrorCode::HoldConfirmed,
        ErrorCode::HoldNotConfirmed,
        ErrorCode::HoldCancelled,
        ErrorCode::CapacityBelowUsage,
        ErrorCode::AlreadyPrimary,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Invalid,
        ErrorCode::Overloaded,
        ErrorCode::StandbyReadOnly,
        ErrorCode::ReplicationTimeout,
        ErrorCode::Unavailable,
        ErrorCode::PartitionHasLiveHolds,
        ErrorCode::StorageFull,
        ErrorCode::CursorExpired,
    ];

    /// The code with this wire number, if any.
    pub fn from_u8(value: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.get(usize::from(value).checked_sub(1)?).copied()
    }

    /// The contract's name of the code (the `error` of an HTTP error body).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ResourceNotFound => "resource_not_found",
            ErrorCode::HoldNotFound => "hold_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InsufficientCapacity => "insufficient_capacity",
            ErrorCode::HoldIdConflict => "hold_id_conflict",
            ErrorCode::HoldExpired => "hold_expired",
            ErrorCode::HoldReleased => "hold_released",
            ErrorCode::HoldConfirmed => "hold_confirmed",
            ErrorCode::HoldNotConfirmed => "hold_not_confirmed",
            ErrorCode::HoldCancelled => "hold_cancelled",
            ErrorCode::CapacityBelowUsage => "capacity_below_usage",
            ErrorCode::AlreadyPrimary => "already_primary",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StandbyReadOnly => "standby_read_only",
            ErrorCode::ReplicationTimeout => "replication_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::PartitionHasLiveHolds => "partition_has_live_holds",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::CursorExpired => "cursor_expired",
        }
    }

    /// The code of an engine refusal.
    pub fn of_refusal(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|candidate| candidate.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_and_round_trip() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as u8 as usize, index + 1);
            assert_eq!(ErrorCode::from_u8(*code as u8), Some(*code));
            assert_eq!(ErrorCode::of_refusal(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::from_u8(0), None);
        assert_eq!(ErrorCode::from_u8(24), None);
    }
}
