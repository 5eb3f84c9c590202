//! What a shard is asked to do (an [`Op`]) and what it answers (an [`OpResult`]), one result
//! per op, in order.

use crate::command::{Command, Outcome};
use crate::error::Refusal;
use crate::query::ListQuery;
use crate::view::{HoldView, ResourcePage, ResourceView};

/// One operation for the shard that owns `partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A state-changing command: logged and made durable before its result is sent.
    Command(Command),
    GetResource {
        partition: String,
        id: String,
    },
    GetHold {
        partition: String,
        id: String,
    },
    ListResources {
        partition: String,
        query: ListQuery,
    },
}

impl Op {
    /// The partition the op acts on; ops are routed to shards by it.
    pub fn partition(&self) -> &str {
        match self {
            Op::Command(command) => command.partition(),
            Op::GetResource { partition, .. }
            | Op::GetHold { partition, .. }
            | Op::ListResources { partition, .. } => partition,
        }
    }
}

/// The result of one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Command(Result<Outcome, Refusal>),
    Resource(Result<ResourceView, Refusal>),
    Hold(Result<HoldView, Refusal>),
    Page(Result<ResourcePage, Refusal>),
    /// The shard's queue was full; nothing was done. Retry later (HTTP 429).
    Overloaded,
    /// A command sent to a standby; nothing was done (HTTP 503 `standby_read_only`).
    ReadOnly,
    /// The command took effect on the primary, but not enough standbys acknowledged it in time
    /// (HTTP 503 `replication_timeout`). Retrying with the same hold id is safe.
    ReplicationTimeout,
    /// The node could not complete the op (it is stopping, or its log failed). Whether a command
    /// took effect is unknown; retrying with the same hold id is safe.
    Unavailable,
}

impl OpResult {
    /// The refusal, if the op was refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            OpResult::Command(Err(refusal))
            | OpResult::Resource(Err(refusal))
            | OpResult::Hold(Err(refusal))
            | OpResult::Page(Err(refusal)) => Some(refusal),
            _ => None,
        }
    }
}
