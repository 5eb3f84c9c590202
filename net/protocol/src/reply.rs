//! Results on the wire: a status byte (0 = ok, else an [`ErrorCode`]) and a body whose layout
//! the status (and, for ok, a tag byte) fixes. Results are self-contained: a hold carries its
//! partition and id, a resource its partition and id, so a client builds the same typed views as
//! HTTP without remembering the request. Invariant: whatever [`decode_reply`] accepts,
//! [`encode_reply`] writes back byte for byte, and decoded counts keep
//! `held + confirmed <= capacity`.

use std::fmt;
use std::sync::Arc;

use bookd_engine::OpResult;
use bookd_engine::{
    HoldStatus, HoldView, ItemView, Outcome, OutcomeRef, Refusal, ResourcePage, ResourceRef,
    ResourceView, StorageFullReason,
};

use super::codes::ErrorCode;
use super::wire::{
    put_flag, put_str16_lossy, put_str8_lossy, put_u16, put_u32, put_u64, put_u8, DecodeError,
    Reader,
};

/// Tag of a successful result's body.
const TAG_RESOURCE: u8 = 1;
const TAG_HOLD: u8 = 2;
const TAG_PAGE: u8 = 3;
const TAG_PARTITION_DELETED: u8 = 4;

/// The `reason` byte of `storage_full`.
const REASON_MEMORY: u8 = 0;
const REASON_DISK: u8 = 1;

/// One command's result as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `put_resource` (`created`: 201 vs 200) and `get_resource` (`created` false).
    Resource { resource: ResourceView, created: bool },
    /// Every hold command; `existing` only for a `hold` whose id existed (HTTP 200).
    Hold { hold: HoldView, existing: bool },
    /// `list_resources`.
    Page(ResourcePage),
    /// `delete_partition`: what was removed.
    PartitionDeleted(PartitionDeleted),
    /// Any error of the contract, with its details.
    Refused(Refused),
}

/// The result of `delete_partition`: the partition and how many resources and holds were
/// removed with it (HTTP `{"partition", "resources", "holds"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDeleted {
    pub partition: Arc<str>,
    pub resources: u32,
    pub holds: u32,
}

/// An error result: the contract's code and the details HTTP puts in the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub detail: Detail,
}

/// The details of an error; which variant goes with which code is fixed (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    None,
    /// `resource_not_found`.
    Resource {
        resource: Arc<str>,
    },
    /// `insufficient_capacity`.
    Capacity {
        resource: Arc<str>,
        requested: u64,
        available: u64,
    },
    /// `invalid`.
    Invalid {
        field: String,
        reason: String,
    },
    /// `capacity_below_usage`.
    Usage {
        capacity: u64,
        used: u64,
    },
    /// `overloaded`: the engine table that is full, or `""` for a shard's full queue.
    Table {
        table: String,
        max: u32,
    },
    /// `partition_has_live_holds`: how many of the partition's holds are held.
    Held {
        held: u32,
    },
    /// `storage_full`: what is full.
    Storage {
        reason: StorageFullReason,
    },
}

impl Refused {
    /// An error without details.
    pub fn plain(code: ErrorCode) -> Refused {
        let detail = match code {
            ErrorCode::Overloaded => Detail::Table { table: String::new(), max: 0 },
            ErrorCode::PartitionHasLiveHolds => Detail::Held { held: 0 },
            ErrorCode::StorageFull => Detail::Storage { reason: StorageFullReason::Memory },
            _ => Detail::None,
        };
        Refused { code, detail }
    }

    /// The error of an engine refusal.
    pub fn from_refusal(refusal: &Refusal) -> Refused {
        let (code, detail) = match refusal {
            Refusal::Invalid { field, reason } => (
                ErrorCode::Invalid,
                Detail::Invalid { field: field.clone(), reason: (*reason).to_string() },
            ),
            Refusal::ResourceNotFound { resource } => {
                (ErrorCode::ResourceNotFound, Detail::Resource { resource: resource.clone() })
            }
            Refusal::HoldNotFound => (ErrorCode::HoldNotFound, Detail::None),
            Refusal::InsufficientCapacity { resource, requested, available } => (
                ErrorCode::InsufficientCapacity,
                Detail::Capacity {
                    resource: resource.clone(),
                    requested: *requested,
                    available: *available,
                },
            ),
            Refusal::HoldIdConflict => (ErrorCode::HoldIdConflict, Detail::None),
            Refusal::HoldExpired => (ErrorCode::HoldExpired, Detail::None),
            Refusal::HoldReleased => (ErrorCode::HoldReleased, Detail::None),
            Refusal::HoldConfirmed => (ErrorCode::HoldConfirmed, Detail::None),
            Refusal::HoldNotConfirmed => (ErrorCode::HoldNotConfirmed, Detail::None),
            Refusal::HoldCancelled => (ErrorCode::HoldCancelled, Detail::None),
            Refusal::CapacityBelowUsage { capacity, used } => {
                (ErrorCode::CapacityBelowUsage, Detail::Usage { capacity: *capacity, used: *used })
            }
            Refusal::Overloaded { table, max } => {
                (ErrorCode::Overloaded, Detail::Table { table: (*table).to_string(), max: *max })
            }
            Refusal::NotFound => (ErrorCode::NotFound, Detail::None),
            Refusal::PartitionHasLiveHolds { held } => {
                (ErrorCode::PartitionHasLiveHolds, Detail::Held { held: *held })
            }
            Refusal::StorageFull { reason } => {
                (ErrorCode::StorageFull, Detail::Storage { reason: *reason })
            }
        };
        Refused { code, detail }
    }
}

impl fmt::Display for Refused {
    /// The same messages as the engine's refusals (HTTP's `message`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.detail) {
            (_, Detail::Invalid { field, reason }) => write!(f, "invalid {field}: {reason}"),
            (_, Detail::Resource { resource }) => write!(f, "resource {resource} not found"),
            (_, Detail::Capacity { resource, requested, available }) => {
                write!(f, "resource {resource}: requested {requested}, available {available}")
            }
            (_, Detail::Usage { capacity, used }) => {
                write!(f, "capacity {capacity} below usage {used}")
            }
            (_, Detail::Table { table, max }) if !table.is_empty() => {
                write!(f, "{table} table is full ({max} entries)")
            }
            (ErrorCode::Overloaded, _) => f.write_str("shard queue is full; retry later"),
            (_, Detail::Held { held }) => write!(f, "partition has {held} held holds"),
            (_, Detail::Storage { reason }) => write!(f, "storage full ({})", reason.as_str()),
            (ErrorCode::NotFound, _) => f.write_str("partition not found"),
            // The code in words: `hold_not_found` reads "hold not found".
            (code, _) => {
                for (index, word) in code.as_str().split('_').enumerate() {
                    if index > 0 {
                        f.write_str(" ")?;
                    }
                    f.write_str(word)?;
                }
                Ok(())
            }
        }
    }
}

impl Reply {
    /// The result's status: success, or its error code.
    pub fn status(&self) -> Status {
        match self {
            Reply::Refused(refused) => Err(refused.code),
            _ => Ok(()),
        }
    }

    /// What a client decodes for an engine op's result (the model the codec tests compare to).
    pub fn from_op_result(result: &OpResult) -> Reply {
        match result {
            OpResult::Command(Ok(Outcome::Resource { resource, created })) => {
                Reply::Resource { resource: resource.clone(), created: *created }
            }
            OpResult::Command(Ok(Outcome::Hold { hold, existing })) => {
                Reply::Hold { hold: hold.clone(), existing: *existing }
            }
            OpResult::Command(Ok(Outcome::PartitionDeleted { partition, resources, holds })) => {
                Reply::PartitionDeleted(PartitionDeleted {
                    partition: partition.clone(),
                    resources: *resources,
                    holds: *holds,
                })
            }
            OpResult::Resource(Ok(resource)) => {
                Reply::Resource { resource: resource.clone(), created: false }
            }
            OpResult::Hold(Ok(hold)) => Reply::Hold { hold: hold.clone(), existing: false },
            OpResult::Page(Ok(page)) => Reply::Page(page.clone()),
            OpResult::Command(Err(refusal))
            | OpResult::Resource(Err(refusal))
            | OpResult::Hold(Err(refusal))
            | OpResult::Page(Err(refusal)) => Reply::Refused(Refused::from_refusal(refusal)),
            OpResult::Overloaded => Reply::Refused(Refused::plain(ErrorCode::Overloaded)),
            OpResult::ReadOnly => Reply::Refused(Refused::plain(ErrorCode::StandbyReadOnly)),
            OpResult::ReplicationTimeout => {
                Reply::Refused(Refused::plain(ErrorCode::ReplicationTimeout))
            }
            OpResult::Unavailable => Reply::Refused(Refused::plain(ErrorCode::Unavailable)),
        }
    }
}

/// Appends the result of one engine op.
pub fn encode_op_result(result: &OpResult, buf: &mut Vec<u8>) {
    match result {
        OpResult::Command(Ok(Outcome::Resource { resource, created })) => {
            put_resource(buf, resource, *created);
        }
        OpResult::Command(Ok(Outcome::Hold { hold, existing })) => put_hold(buf, hold, *existing),
        OpResult::Command(Ok(Outcome::PartitionDeleted { partition, resources, holds })) => {
            put_partition_deleted(buf, partition, *resources, *holds);
        }
        OpResult::Resource(Ok(resource)) => put_resource(buf, resource, false),
        OpResult::Hold(Ok(hold)) => put_hold(buf, hold, false),
        OpResult::Page(Ok(page)) => put_page(buf, page),
        OpResult::Command(Err(refusal))
        | OpResult::Resource(Err(refusal))
        | OpResult::Hold(Err(refusal))
        | OpResult::Page(Err(refusal)) => put_refused(buf, &Refused::from_refusal(refusal)),
        OpResult::Overloaded => put_refused(buf, &Refused::plain(ErrorCode::Overloaded)),
        OpResult::ReadOnly => put_refused(buf, &Refused::plain(ErrorCode::StandbyReadOnly)),
        OpResult::ReplicationTimeout => {
            put_refused(buf, &Refused::plain(ErrorCode::ReplicationTimeout))
        }
        OpResult::Unavailable => put_refused(buf, &Refused::plain(ErrorCode::Unavailable)),
    }
}

/// Appends the result of a command that took effect, read in place from the engine right
/// after it was applied: the same bytes as [`encode_op_result`] of its outcome, without
/// building the outcome's views.
pub fn encode_outcome_ref(outcome: &OutcomeRef<'_>, buf: &mut Vec<u8>) {
    match outcome {
        OutcomeRef::Resource { resource, created } => put_resource_ref(buf, resource, *created),
        OutcomeRef::Hold { hold, existing } => {
            let fields = (hold.partition, hold.id, hold.status, hold.expires_at_ms);
            put_hold_fields(buf, *existing, fields, hold.items(), hold.reference);
        }
        OutcomeRef::PartitionDeleted { partition, resources, holds } => {
            put_partition_deleted(buf, partition, *resources, *holds);
        }
    }
}

/// Appends the refusal of a command or query.
pub fn encode_refusal(refusal: &Refusal, buf: &mut Vec<u8>) {
    put_refused(buf, &Refused::from_refusal(refusal));
}

/// Appends a decoded result again (the inverse of [`decode_reply`]).
pub fn encode_reply(reply: &Reply, buf: &mut Vec<u8>) {
    match reply {
        Reply::Resource { resource, created } => put_resource(buf, resource, *created),
        Reply::Hold { hold, existing } => put_hold(buf, hold, *existing),
        Reply::Page(page) => put_page(buf, page),
        Reply::PartitionDeleted(deleted) => {
            put_partition_deleted(buf, &deleted.partition, deleted.resources, deleted.holds);
        }
        Reply::Refused(refused) => put_refused(buf, refused),
    }
}

fn put_resource(buf: &mut Vec<u8>, resource: &ResourceView, created: bool) {
    put_resource_ref(buf, &resource_ref(resource), created);
}

fn put_resource_ref(buf: &mut Vec<u8>, resource: &ResourceRef<'_>, created: bool) {
    put_u8(buf, 0);
    put_u8(buf, TAG_RESOURCE);
    put_flag(buf, created);
    put_str8_lossy(buf, resource.partition);
    put_resource_counts(buf, resource);
}

fn resource_ref(resource: &ResourceView) -> ResourceRef<'_> {
    ResourceRef {
        partition: &resource.partition,
        id: &resource.id,
        capacity: resource.capacity,
        held: resource.held,
        confirmed: resource.confirmed,
    }
}

fn put_resource_counts(buf: &mut Vec<u8>, resource: &ResourceRef<'_>) {
    put_str8_lossy(buf, resource.id);
    put_u64(buf, resource.capacity);
    put_u64(buf, resource.held);
    put_u64(buf, resource.confirmed);
}

fn put_hold(buf: &mut Vec<u8>, hold: &HoldView, existing: bool) {
    let items = hold.items.iter().map(|item| (&*item.resource, item.quantity));
    let fields = (&*hold.partition, &*hold.id, hold.status, hold.expires_at_ms);
    put_hold_fields(buf, existing, fields, items, hold.reference.as_deref());
}

/// A hold's result from its fields: (partition, id, status, expiry), then items and reference.
fn put_hold_fields<'a>(
    buf: &mut Vec<u8>,
    existing: bool,
    (partition, id, status, expires_at_ms): (&str, &str, HoldStatus, u64),
    items: impl ExactSizeIterator<Item = (&'a str, u32)>,
    reference: Option<&str>,
) {
    put_u8(buf, 0);
    put_u8(buf, TAG_HOLD);
    put_flag(buf, existing);
    put_str8_lossy(buf, partition);
    put_str8_lossy(buf, id);
    put_u8(buf, status as u8);
    put_u64(buf, expires_at_ms);
    // The engine holds at most 64 items; a view never has more than 255.
    let count = items.len().min(u8::MAX as usize);
    put_u8(buf, count as u8);
    for (resource, quantity) in items.take(count) {
        put_str8_lossy(buf, resource);
        put_u32(buf, quantity);
    }
    put_flag(buf, reference.is_some());
    if let Some(reference) = reference {
        put_str16_lossy(buf, reference, u16::MAX as usize);
    }
}

fn put_page(buf: &mut Vec<u8>, page: &ResourcePage) {
    put_u8(buf, 0);
    put_u8(buf, TAG_PAGE);
    let partition = page.resources.first().map_or("", |resource| &resource.partition);
    put_str8_lossy(buf, partition);
    let count = page.resources.len().min(u16::MAX as usize);
    put_u16(buf, count as u16);
    for resource in &page.resources[..count] {
        put_resource_counts(buf, &resource_ref(resource));
    }
    put_flag(buf, page.next.is_some());
    if let Some(next) = &page.next {
        put_str8_lossy(buf, next);
    }
}

fn put_partition_deleted(buf: &mut Vec<u8>, partition: &str, resources: u32, holds: u32) {
    put_u8(buf, 0);
    put_u8(buf, TAG_PARTITION_DELETED);
    put_str8_lossy(buf, partition);
    put_u32(buf, resources);
    put_u32(buf, holds);
}

/// Appends an error result.
pub fn put_refused(buf: &mut Vec<u8>, refused: &Refused) {
    put_u8(buf, refused.code as u8);
    match &refused.detail {
        Detail::None => {}
        Detail::Resource { resource } => put_str8_lossy(buf, resource),
        Detail::Capacity { resource, requested, available } => {
            put_str8_lossy(buf, resource);
            put_u64(buf, *requested);
            put_u64(buf, *available);
        }
        Detail::Invalid { field, reason } => {
            put_str8_lossy(buf, field);
            put_str8_lossy(buf, reason);
        }
        Detail::Usage { capacity, used } => {
            put_u64(buf, *capacity);
            put_u64(buf, *used);
        }
        Detail::Table { table, max } => {
            put_str8_lossy(buf, table);
            put_u32(buf, *max);
        }
        Detail::Held { held } => put_u32(buf, *held),
        Detail::Storage { reason } => put_u8(
            buf,
            match reason {
                StorageFullReason::Memory => REASON_MEMORY,
                StorageFullReason::Disk => REASON_DISK,
            },
        ),
    }
}

/// Decodes one result.
pub fn decode_reply(reader: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    let status = reader.u8("status")?;
    if status != 0 {
        let code = ErrorCode::from_u8(status)
            .ok_or(DecodeError::UnknownValue("status", u64::from(status)))?;
        return Ok(Reply::Refused(Refused { code, detail: decode_detail(code, reader)? }));
    }
    match reader.u8("tag")? {
        TAG_RESOURCE => {
            let created = reader.flag("created")?;
            let partition: Arc<str> = reader.str8("partition")?.into();
            Ok(Reply::Resource { resource: decode_counts(reader, partition)?, created })
        }
        TAG_HOLD => decode_hold(reader),
        TAG_PAGE => {
            let partition: Arc<str> = reader.str8("partition")?.into();
            let count = reader.u16("resources")?;
            // Each resource takes at least 25 bytes: never reserve more than the frame holds.
            let mut resources = Vec::with_capacity(usize::from(count).min(reader.remaining() / 25));
            for _ in 0..count {
                resources.push(decode_counts(reader, partition.clone())?);
            }
            let next = reader.opt_str8("next")?.map(Arc::from);
            Ok(Reply::Page(ResourcePage { resources, next }))
        }
        TAG_PARTITION_DELETED => Ok(Reply::PartitionDeleted(PartitionDeleted {
            partition: reader.str8("partition")?.into(),
            resources: reader.u32("resources")?,
            holds: reader.u32("holds")?,
        })),
        other => Err(DecodeError::UnknownValue("tag", u64::from(other))),
    }
}

fn decode_counts(
    reader: &mut Reader<'_>,
    partition: Arc<str>,
) -> Result<ResourceView, DecodeError> {
    let id = reader.str8("id")?.into();
    let capacity = reader.u64("capacity")?;
    let held = reader.u64("held")?;
    let confirmed = reader.u64("confirmed")?;
    if held.checked_add(confirmed).is_none_or(|used| used > capacity) {
        return Err(DecodeError::Range("held + confirmed exceeds capacity"));
    }
    Ok(ResourceView { partition, id, capacity, held, confirmed })
}

fn decode_hold(reader: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    let existing = reader.flag("existing")?;
    let partition = reader.str8("partition")?.into();
    let id = reader.str8("id")?.into();
    let status = reader.u8("hold status")?;
    let status = HoldStatus::from_u8(status)
        .ok_or(DecodeError::UnknownValue("hold status", u64::from(status)))?;
    let expires_at_ms = reader.u64("expires_at_ms")?;
    let count = reader.u8("items")?;
    let mut items = Vec::with_capacity(usize::from(count).min(reader.remaining() / 5));
    for _ in 0..count {
        let resource = reader.str8("items.resource")?.into();
        items.push(ItemView { resource, quantity: reader.u32("items.quantity")? });
    }
    let reference = reader.opt_str16("ref")?.map(Arc::from);
    // `into`: the view's item list type is the engine's choice (a vector or a shared slice).
    #[allow(clippy::useless_conversion)]
    let hold = HoldView { partition, id, status, items: items.into(), expires_at_ms, reference };
    Ok(Reply::Hold { hold, existing })
}

fn decode_detail(code: ErrorCode, reader: &mut Reader<'_>) -> Result<Detail, DecodeError> {
    Ok(match code {
        ErrorCode::ResourceNotFound => {
            Detail::Resource { resource: reader.str8("resource")?.into() }
        }
        ErrorCode::InsufficientCapacity => Detail::Capacity {
            resource: reader.str8("resource")?.into(),
            requested: reader.u64("requested")?,
            available: reader.u64("available")?,
        },
        ErrorCode::Invalid => Detail::Invalid {
            field: reader.str8("field")?.to_owned(),
            reason: reader.str8("reason")?.to_owned(),
        },
        ErrorCode::CapacityBelowUsage => {
            Detail::Usage { capacity: reader.u64("capacity")?, used: reader.u64("used")? }
        }
        ErrorCode::Overloaded => {
            Detail::Table { table: reader.str8("table")?.to_owned(), max: reader.u32("max")? }
        }
        ErrorCode::PartitionHasLiveHolds => Detail::Held { held: reader.u32("held")? },
        ErrorCode::StorageFull => Detail::Storage {
            reason: match reader.u8("reason")? {
                REASON_MEMORY => StorageFullReason::Memory,
                REASON_DISK => StorageFullReason::Disk,
                other => return Err(DecodeError::UnknownValue("reason", u64::from(other))),
            },
        },
        _ => Detail::None,
    })
}

/// A result reduced to its status: success, or the error code.
pub type Status = Result<(), ErrorCode>;

/// Decodes only the status of each result of a RESPONSE payload, stepping over the bodies
/// without building them (no strings, no allocation): for callers that only need to know what
/// happened, such as the load generator. Checks the same framing as [`decode_response`].
pub fn decode_statuses(payload: &[u8], statuses: &mut Vec<Status>) -> Result<(), DecodeError> {
    let mut reader = Reader::new(payload);
    let count = reader.u16("count")?;
    statuses.reserve(usize::from(count).min(reader.remaining()));
    for _ in 0..count {
        let status = reader.u8("status")?;
        if status != 0 {
            let code = ErrorCode::from_u8(status)
                .ok_or(DecodeError::UnknownValue("status", u64::from(status)))?;
            decode_detail(code, &mut reader)?;
            statuses.push(Err(code));
            continue;
        }
        let skip8 = |reader: &mut Reader<'_>, what| {
            let len = reader.u8(what)?;
            reader.bytes(usize::from(len), what).map(drop)
        };
        match reader.u8("tag")? {
            TAG_RESOURCE => {
                reader.bytes(1, "created")?;
                skip8(&mut reader, "partition")?;
                skip8(&mut reader, "id")?;
                reader.bytes(24, "counts")?;
            }
            TAG_HOLD => {
                reader.bytes(1, "existing")?;
                skip8(&mut reader, "partition")?;
                skip8(&mut reader, "id")?;
                reader.bytes(9, "hold status")?;
                for _ in 0..reader.u8("items")? {
                    skip8(&mut reader, "items.resource")?;
                    reader.bytes(4, "items.quantity")?;
                }
                if reader.flag("ref")? {
                    let len = reader.u16("ref")?;
                    reader.bytes(usize::from(len), "ref")?;
                }
            }
            TAG_PAGE => {
                skip8(&mut reader, "partition")?;
                for _ in 0..reader.u16("resources")? {
                    skip8(&mut reader, "id")?;
                    reader.bytes(24, "counts")?;
                }
                if reader.flag("next")? {
                    skip8(&mut reader, "next")?;
                }
            }
            TAG_PARTITION_DELETED => {
                skip8(&mut reader, "partition")?;
                reader.bytes(8, "counts")?;
            }
            other => return Err(DecodeError::UnknownValue("tag", u64::from(other))),
        }
        statuses.push(Ok(()));
    }
    Ok(reader.finish()?)
}

/// Decodes a RESPONSE payload: `u16 count`, then `count` results, nothing after.
pub fn decode_response(payload: &[u8], replies: &mut Vec<Reply>) -> Result<(), DecodeError> {
    let mut reader = Reader::new(payload);
    let count = reader.u16("count")?;
    replies.reserve(usize::from(count).min(reader.remaining()));
    for _ in 0..count {
        replies.push(decode_reply(&mut reader)?);
    }
    Ok(reader.finish()?)
}
