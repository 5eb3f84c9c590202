//! JSON in and out: request bodies parsed into engine commands, and replies encoded.
//!
//! Invariant: parsing checks shapes only. Malformed JSON, invalid UTF-8, a missing field, an
//! unknown field or a value of the wrong type is `bad_request` (400); names and limits are left
//! to the engine, which refuses them as `invalid` (422) naming the field, exactly as it does for
//! every other client. An integer outside `u64` (negative, or ≥ 2^64) is well-typed but out of
//! range: it is passed on as `u64::MAX`, which every limit of the contract refuses.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bookd_engine::OpResult;
use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, HoldView, Item, Outcome, PutResource,
    Refusal, Release, ResourcePage, ResourceView,
};
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::limits::BATCH_COMMANDS_MAX;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error reply: `{"error": code, "message": text, ...details}` with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub detail: Detail,
}

/// The details an error carries besides its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    None,
    /// `invalid`: the field that was refused.
    Field(String),
    /// `resource_not_found`: the resource.
    Resource(Arc<str>),
    /// `insufficient_capacity`: the first item that did not fit.
    Insufficient {
        resource: Arc<str>,
        requested: u64,
        available: u64,
    },
    /// `capacity_below_usage`: the capacity asked for and the units in use.
    CapacityBelowUsage {
        capacity: u64,
        used: u64,
    },
    /// `partition_has_live_holds`: how many of the partition's holds are held.
    Held(u32),
    /// `storage_full`: what is full (`memory` or `disk`).
    Storage(&'static str),
    /// `cursor_expired`: the oldest cursor the feed can serve.
    Oldest(String),
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError { status, code, message: message.into(), detail: Detail::None }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(400, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "unauthorized", "missing or wrong bearer token")
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(404, "not_found", message)
    }

    pub fn payload_too_large() -> Self {
        ApiError::new(413, "payload_too_large", "request body larger than 65536 bytes")
    }

    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError {
            status: 422,
            code: "invalid",
            message: format!("invalid {field}: {reason}").into(),
            detail: Detail::Field(field),
        }
    }

    pub fn overloaded() -> Self {
        ApiError::new(429, "overloaded", "the node is overloaded; retry later")
    }

    /// 405 `method_not_allowed`: the path exists, the method does not (the `Allow` header lists
    /// those that do).
    pub fn method_not_allowed(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(405, "method_not_allowed", message)
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(503, "unavailable", message)
    }

    pub fn replication_timeout() -> Self {
        ApiError::new(
            503,
            "replication_timeout",
            "the command took effect here but not enough standbys acknowledged it in time; \
             retry with the same hold id",
        )
    }

    pub fn standby_read_only() -> Self {
        ApiError::new(
            503,
            "standby_read_only",
            "this node is a standby: send writes to the primary",
        )
    }

    pub fn already_primary() -> Self {
        ApiError::new(409, "already_primary", "this node is already the primary")
    }

    /// The contract's reply to an engine refusal.
    pub fn from_refusal(refusal: Refusal) -> Self {
        let status = refusal.http_status();
        let code = refusal.code();
        let message = refusal.to_string().into();
        let detail = match refusal {
            Refusal::Invalid { field, .. } => Detail::Field(field),
            Refusal::ResourceNotFound { resource } => Detail::Resource(resource),
            Refusal::InsufficientCapacity { resource, requested, available } => {
                Detail::Insufficient { resource, requested, available }
            }
            Refusal::CapacityBelowUsage { capacity, used } => {
                Detail::CapacityBelowUsage { capacity, used }
            }
            Refusal::PartitionHasLiveHolds { held } => Detail::Held(held),
            Refusal::StorageFull { reason } => Detail::Storage(reason.as_str()),
            _ => Detail::None,
        };
        ApiError { status, code, message, detail }
    }
}

impl Serialize for ApiError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("error", self.code)?;
        map.serialize_entry("message", &self.message)?;
        match &self.detail {
            Detail::None => {}
            Detail::Field(field) => map.serialize_entry("field", field)?,
            Detail::Resource(resource) => map.serialize_entry("resource", &**resource)?,
            Detail::Insufficient { resource, requested, available } => {
                map.serialize_entry("resource", &**resource)?;
                map.serialize_entry("requested", requested)?;
                map.serialize_entry("available", available)?;
            }
            Detail::CapacityBelowUsage { capacity, used } => {
                map.serialize_entry("capacity", capacity)?;
                map.serialize_entry("used", used)?;
            }
            Detail::Held(held) => map.serialize_entry("held", held)?,
            Detail::Storage(reason) => map.serialize_entry("reason", reason)?,
            Detail::Oldest(cursor) => map.serialize_entry("oldest", cursor)?,
        }
        map.end()
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// A JSON integer where the contract wants one (`capacity`, `quantity`, `ttl_ms`). Integers
/// outside `u64` become `u64::MAX` (refused by every limit, so the engine names the field); a
/// number with a fraction, or any other JSON type, is a wrong type (`bad_request`). An
/// integral number written with a fraction or exponent (`5.0`, `1e3`) is that integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonU64(pub u64);

impl<'de> Deserialize<'de> for JsonU64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntegerVisitor;
        impl Visitor<'_> for IntegerVisitor {
            type Value = JsonU64;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an integer")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<JsonU64, E> {
                Ok(JsonU64(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<JsonU64, E> {
                Ok(JsonU64(u64::try_from(value).unwrap_or(u64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<JsonU64, E> {
                if !value.is_finite() || value.fract() != 0.0 {
                    return Err(E::invalid_type(de::Unexpected::Float(value), &self));
                }
                // 2^64 as f64 is exact; every integral f64 below it converts exactly.
                if (0.0..18_446_744_073_709_551_616.0).contains(&value) {
                    Ok(JsonU64(value as u64))
                } else {
                    Ok(JsonU64(u64::MAX))
                }
            }
        }
        deserializer.deserialize_any(IntegerVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutResourceBody {
    capacity: JsonU64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemBody {
    resource: String,
    quantity: JsonU64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    id: String,
    items: Vec<ItemBody>,
    ttl_ms: Option<JsonU64>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    ttl_ms: JsonU64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    commands: Vec<&'a RawValue>,
}

/// `/v1/batch` when every element is well-formed: parsed in one pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedBatchBody<'a> {
    #[serde(borrow)]
    commands: Vec<BatchCommand<'a>>,
}

/// One element of `/v1/batch`: `op`, `partition`, `id` and the fields of its single-command body.
/// `id` is required by every op but `delete_partition`, which names no id and ignores one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCommand<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    partition: String,
    id: Option<String>,
    capacity: Option<JsonU64>,
    items: Option<Vec<ItemBody>>,
    ttl_ms: Option<JsonU64>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// Parses a whole body as `T`: UTF-8 first, then JSON; either failing is `bad_request`.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let text = utf8(body)?;
    if !objects_only(text) {
        return Err(not_objects("request body"));
    }
    parse_text(text, "malformed request body")
}

fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|error| ApiError::bad_request(format!("body is not valid UTF-8: {error}")))
}

fn parse_text<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|error| ApiError::bad_request(format!("{what}: {error}")))
}

fn not_objects(what: &str) -> ApiError {
    ApiError::bad_request(format!("a {what} is a JSON object, and every array in it holds objects"))
}

/// Whether the JSON `text` is an object in which every array holds only objects: the shape of
/// every request body and batch command. serde alone would also read a struct from an array of
/// its fields in order (`[5]` as `{"capacity": 5}`), which no schema of this API allows. A
/// single pass over the bytes, no allocation but the nesting stack; malformed JSON is left for
/// the parser to name.
pub fn objects_only(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Per open container: whether it is an array.
    let mut arrays: Vec<bool> = Vec::new();
    // The next value must be an object: first the whole text, then each element of an array.
    let mut want_object = true;
    // An array was just opened: `]` may close it empty.
    let mut may_close = false;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        at += 1;
        if byte.is_ascii_whitespace() {
            continue;
        }
        if want_object {
            match byte {
                b'{' => {}
                b']' if may_close => {}
                _ => return false,
            }
            want_object = false;
        }
        may_close = false;
        match byte {
            b'"' => {
                while at < bytes.len() {
                    match bytes[at] {
                        b'\\' => at += 2,
                        b'"' => break,
                        _ => at += 1,
                    }
                }
                at += 1;
            }
            b'{' => arrays.push(false),
            b'[' => {
                arrays.push(true);
                (want_object, may_close) = (true, true);
            }
            b']' | b'}' => {
                arrays.pop();
            }
            b',' if arrays.last() == Some(&true) => want_object = true,
            _ => {}
        }
    }
    true
}

fn items(items: Vec<ItemBody>) -> Vec<Item> {
    items
        .into_iter()
        .map(|item| Item { resource: item.resource, quantity: item.quantity.0 })
        .collect()
}

/// `PUT /v1/partitions/{p}/resources/{r}` with `{"capacity": n}`.
pub fn put_resource(partition: String, resource: String, body: &[u8]) -> Result<Command, ApiError> {
    let PutResourceBody { capacity } = parse(body)?;
    Ok(Command::PutResource(PutResource { partition, resource, capacity: capacity.0 }))
}

/// `POST /v1/partitions/{p}/holds` with `{"id","items","ttl_ms"?,"ref"?}`.
pub fn hold(partition: String, body: &[u8]) -> Result<Command, ApiError> {
    let HoldBody { id, items: body_items, ttl_ms, reference } = parse(body)?;
    Ok(Command::Hold(Hold {
        partition,
        hold: id,
        items: items(body_items),
        ttl_ms: ttl_ms.map(|ttl| ttl.0),
        reference,
    }))
}

/// `POST /v1/partitions/{p}/holds/{h}/extend` with `{"ttl_ms": n}`.
pub fn extend(partition: String, hold: String, body: &[u8]) -> Result<Command, ApiError> {
    let ExtendBody { ttl_ms } = parse(body)?;
    Ok(Command::Extend(Extend { partition, hold, ttl_ms: ttl_ms.0 }))
}

/// The body of a route that takes none (confirm, release, cancel, delete, admin): empty, or `{}`.
pub fn no_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    parse::<EmptyBody>(body).map(|_| ())
}

/// The refusal of a batch over [`BATCH_COMMANDS_MAX`].
const TOO_MANY_COMMANDS: &str =
    concat!("at most ", super::limits::batch_commands_max!(), " commands in a batch");

/// `POST /v1/batch`: at most [`BATCH_COMMANDS_MAX`] commands, each parsed on its own, so an
/// element that is not a valid command gets its own error and the others still run.
///
/// The common case, every element well-formed, is parsed in one pass; otherwise the body is
/// parsed again element by element so each malformed one gets its own error.
pub fn batch(body: &[u8]) -> Result<Vec<Result<Command, ApiError>>, ApiError> {
    let too_many = || ApiError::invalid("commands", TOO_MANY_COMMANDS);
    if let Ok(TypedBatchBody { commands }) = parse(body) {
        if commands.len() > BATCH_COMMANDS_MAX {
            return Err(too_many());
        }
        return Ok(commands.into_iter().map(batch_command).collect());
    }
    batch_by_element(body)
}

/// [`batch`] one element at a time: the path for bodies with a malformed element. The body
/// must be an object; each element is checked on its own, shape included.
fn batch_by_element(body: &[u8]) -> Result<Vec<Result<Command, ApiError>>, ApiError> {
    let too_many = || ApiError::invalid("commands", TOO_MANY_COMMANDS);
    let text = utf8(body)?;
    if !text.trim_start().starts_with('{') {
        return Err(not_objects("request body"));
    }
    let BatchBody { commands } = parse_text(text, "malformed request body")?;
    if commands.len() > BATCH_COMMANDS_MAX {
        return Err(too_many());
    }
    Ok(commands
        .into_iter()
        .map(|raw| {
            if !objects_only(raw.get()) {
                return Err(not_objects("command"));
            }
            parse_text(raw.get(), "malformed command").and_then(batch_command)
        })
        .collect())
}

const OPS_EXPECTED: &str =
    "must be one of put_resource, hold, confirm, release, cancel, extend, delete_partition";

/// The command a well-formed batch element names, or why it names none.
fn batch_command(element: BatchCommand<'_>) -> Result<Command, ApiError> {
    let BatchCommand { op, partition, id, capacity, items: body_items, ttl_ms, reference } =
        element;
    let present = [
        ("capacity", capacity.is_some()),
        ("items", body_items.is_some()),
        ("ttl_ms", ttl_ms.is_some()),
        ("ref", reference.is_some()),
    ];
    let allowed: &[&str] = match &*op {
        "put_resource" => &["capacity"],
        "hold" => &["items", "ttl_ms", "ref"],
        "confirm" | "release" | "cancel" => &[],
        "extend" => &["ttl_ms"],
        "delete_partition" => &[],
        _ => return Err(ApiError::invalid("op", OPS_EXPECTED)),
    };
    if let Some((field, _)) =
        present.iter().find(|(field, present)| *present && !allowed.contains(field))
    {
        return Err(ApiError::bad_request(format!("unknown field `{field}` for op `{op}`")));
    }
    let missing =
        |field: &str| ApiError::bad_request(format!("missing field `{field}` for op `{op}`"));
    if op == "delete_partition" {
        return Ok(Command::DeletePartition(DeletePartition { partition }));
    }
    let hold = id.ok_or_else(|| missing("id"))?;
    Ok(match &*op {
        "put_resource" => Command::PutResource(PutResource {
            partition,
            resource: hold,
            capacity: capacity.ok_or_else(|| missing("capacity"))?.0,
        }),
        "hold" => Command::Hold(Hold {
            partition,
            hold,
            items: items(body_items.ok_or_else(|| missing("items"))?),
            ttl_ms: ttl_ms.map(|ttl| ttl.0),
            reference,
        }),
        "confirm" => Command::Confirm(Confirm { partition, hold }),
        "release" => Command::Release(Release { partition, hold }),
        "cancel" => Command::Cancel(Cancel { partition, hold }),
        _ => Command::Extend(Extend {
            partition,
            hold,
            ttl_ms: ttl_ms.ok_or_else(|| missing("ttl_ms"))?.0,
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// What one command or query answers: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Resource {
        status: u16,
        resource: ResourceView,
    },
    /// `existing` is shown only in replies to `hold`.
    Hold {
        status: u16,
        hold: HoldView,
        existing: Option<bool>,
    },
    /// A listing, with the feed's cursor from just before it was read.
    Page(ResourcePage, Option<String>),
    /// `delete_partition`: the partition and what was removed with it.
    PartitionDeleted {
        partition: Arc<str>,
        resources: u32,
        holds: u32,
    },
    Error(ApiError),
}

impl Reply {
    /// The reply to `result`; `is_hold` says whether the op was a `hold` command (201 when new,
    /// 200 with `"existing": true` when the id existed).
    pub fn of(result: OpResult, is_hold: bool) -> Reply {
        match result {
            OpResult::Command(Ok(Outcome::Resource { resource, created })) => {
                Reply::Resource { status: if created { 201 } else { 200 }, resource }
            }
            OpResult::Command(Ok(Outcome::Hold { hold, existing })) if is_hold => Reply::Hold {
                status: if existing { 200 } else { 201 },
                hold,
                existing: Some(existing),
            },
            OpResult::Command(Ok(Outcome::PartitionDeleted { partition, resources, holds })) => {
                Reply::PartitionDeleted { partition, resources, holds }
            }
            OpResult::Command(Ok(Outcome::Hold { hold, .. })) | OpResult::Hold(Ok(hold)) => {
                Reply::Hold { status: 200, hold, existing: None }
            }
            OpResult::Resource(Ok(resource)) => Reply::Resource { status: 200, resource },
            OpResult::Page(Ok(page)) => Reply::Page(page, None),
            OpResult::Command(Err(refusal))
            | OpResult::Resource(Err(refusal))
            | OpResult::Hold(Err(refusal))
            | OpResult::Page(Err(refusal)) => Reply::Error(ApiError::from_refusal(refusal)),
            OpResult::Overloaded => Reply::Error(ApiError::overloaded()),
            OpResult::ReadOnly => Reply::Error(ApiError::standby_read_only()),
            OpResult::ReplicationTimeout => Reply::Error(ApiError::replication_timeout()),
            OpResult::Unavailable => Reply::Error(ApiError::unavailable(
                "the node could not complete the command (stopping or log failure); \
                 retrying with the same hold id is safe",
            )),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Reply::Resource { status, .. } | Reply::Hold { status, .. } => *status,
            Reply::Page(..) | Reply::PartitionDeleted { .. } => 200,
            Reply::Error(error) => error.status,
        }
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reply::Resource { resource, .. } => ResourceJson(resource).serialize(serializer),
            Reply::Hold { hold, existing, .. } => {
                HoldJson { hold, existing: *existing }.serialize(serializer)
            }
            Reply::Page(page, cursor) => {
                PageJson { page, cursor: cursor.as_deref() }.serialize(serializer)
            }
            Reply::PartitionDeleted { partition, resources, holds } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("partition", &**partition)?;
                map.serialize_entry("resources", resources)?;
                map.serialize_entry("holds", holds)?;
                map.end()
            }
            Reply::Error(error) => error.serialize(serializer),
        }
    }
}

/// `{"partition","id","capacity","held","confirmed","available"}`.
#[derive(Debug)]
pub struct ResourceJson<'a>(pub &'a ResourceView);

impl Serialize for ResourceJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let resource = self.0;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("partition", &*resource.partition)?;
        map.serialize_entry("id", &*resource.id)?;
        map.serialize_entry("capacity", &resource.capacity)?;
        map.serialize_entry("held", &resource.held)?;
        map.serialize_entry("confirmed", &resource.confirmed)?;
        map.serialize_entry("available", &resource.available())?;
        map.end()
    }
}

/// `{"partition","id","status","items":[{"resource","quantity"}],"expires_at_ms","ref","existing"?}`.
#[derive(Debug)]
pub struct HoldJson<'a> {
    pub hold: &'a HoldView,
    pub existing: Option<bool>,
}

impl Serialize for HoldJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Items<'a>(&'a [bookd_engine::ItemView]);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for item in self.0 {
                    seq.serialize_element(&ItemJson(item))?;
                }
                seq.end()
            }
        }
        struct ItemJson<'a>(&'a bookd_engine::ItemView);
        impl Serialize for ItemJson<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("resource", &*self.0.resource)?;
                map.serialize_entry("quantity", &self.0.quantity)?;
                map.end()
            }
        }
        let hold = self.hold;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("partition", &*hold.partition)?;
        map.serialize_entry("id", &*hold.id)?;
        map.serialize_entry("status", hold.status.as_str())?;
        map.serialize_entry("items", &Items(&hold.items))?;
        map.serialize_entry("expires_at_ms", &hold.expires_at_ms)?;
        map.serialize_entry("ref", &hold.reference.as_deref())?;
        if let Some(existing) = self.existing {
            map.serialize_entry("existing", &existing)?;
        }
        map.end()
    }
}

/// `{"resources":[…], "next": id or null, "cursor"?}`.
#[derive(Debug)]
pub struct PageJson<'a> {
    pub page: &'a ResourcePage,
    pub cursor: Option<&'a str>,
}

impl Serialize for PageJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Resources<'a>(&'a [ResourceView]);
        impl Serialize for Resources<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for resource in self.0 {
                    seq.serialize_element(&ResourceJson(resource))?;
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("resources", &Resources(&self.page.resources))?;
        map.serialize_entry("next", &self.page.next.as_deref())?;
        if let Some(cursor) = self.cursor {
            map.serialize_entry("cursor", cursor)?;
        }
        map.end()
    }
}

/// `{"results":[{"status": n, "body": …}]}`, in request order.
#[derive(Debug)]
pub struct BatchJson<'a>(pub &'a [Reply]);

impl Serialize for BatchJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Element<'a>(&'a Reply);
        impl Serialize for Element<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("status", &self.0.status())?;
                map.serialize_entry("body", self.0)?;
                map.end()
            }
        }
        struct Results<'a>(&'a [Reply]);
        impl Serialize for Results<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for reply in self.0 {
                    seq.serialize_element(&Element(reply))?;
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("results", &Results(self.0))?;
        map.end()
    }
}

/// The error body sent when encoding itself fails (it cannot for these types: every map key
/// is a string and every value finite). Kept so no reply path can panic.
const ENCODING_FAILED: &[u8] =
    br#"{"error":"unavailable","message":"the reply could not be encoded"}"#;

/// Encodes `value` as JSON bytes, sized from `capacity_hint`.
pub fn encode<T: Serialize + ?Sized>(value: &T, capacity_hint: usize) -> Bytes {
    let mut buffer = Vec::with_capacity(capacity_hint);
    match serde_json::to_writer(&mut buffer, value) {
        Ok(()) => Bytes::from(buffer),
        Err(_) => Bytes::from_static(ENCODING_FAILED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_objects_whose_arrays_hold_objects() {
        for good in [
            "{}",
            " {\"capacity\": 5}",
            r#"{"id":"h","items":[{"resource":"a","quantity":1},{"resource":"b","quantity":2}]}"#,
            r#"{"items":[],"ref":"[1, 2] and \"[x]\" in a string"}"#,
            r#"{"commands":[{"op":"hold","items":[{"resource":"a","quantity":1}]},{}]}"#,
        ] {
            assert!(objects_only(good), "{good}");
        }
        for bad in [
            "[]",
            "[5]",
            "5",
            "\"x\"",
            r#"{"items":[["a",1]]}"#,
            r#"{"items":[{"resource":"a","quantity":1}, 7]}"#,
            r#"{"commands":[{"items":[{}, ["a"]]}]}"#,
        ] {
            assert!(!objects_only(bad), "{bad}");
        }
        // serde alone would read these as structs from arrays of their fields.
        assert!(put_resource("p".into(), "r".into(), b"[5]").is_err());
        assert!(no_body(b"[]").is_err());
        assert!(hold("p".into(), br#"{"id":"h","items":[["a",1]]}"#).is_err());
        let results = batch(br#"{"commands":[[],{"op":"delete_partition","partition":"p"}]}"#);
        let results = results.unwrap();
        assert!(results[0].as_ref().is_err_and(|error| error.status == 400));
        assert!(results[1].is_ok(), "the other command still runs");
        assert!(batch(b"[]").is_err());
    }

    fn int(text: &str) -> Result<u64, String> {
        serde_json::from_str::<JsonU64>(text).map(|int| int.0).map_err(|error| error.to_string())
    }

    #[test]
    fn integers_in_range_pass_and_out_of_range_saturate() {
        assert_eq!(int("0"), Ok(0));
        assert_eq!(int("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(int("18446744073709551616"), Ok(u64::MAX));
        assert_eq!(int("-1"), Ok(u64::MAX));
        assert!(int("1e400").is_err());
        assert_eq!(int("5.0"), Ok(5));
        assert_eq!(int("1e3"), Ok(1000));
        assert_eq!(int("-1e30"), Ok(u64::MAX));
    }

    #[test]
    fn non_integers_are_wrong_types() {
        for text in ["1.5", "\"5\"", "null", "true", "[1]", "{}"] {
            assert!(int(text).is_err(), "{text} must be refused");
        }
    }

    #[test]
    fn shapes_are_bad_request_and_names_are_left_to_the_engine() {
        let bad = |body: &str| put_resource("p".into(), "r".into(), body.as_bytes()).unwrap_err();
        assert_eq!(bad("").code, "bad_request");
        assert_eq!(bad("{").code, "bad_request");
        assert_eq!(bad("{}").code, "bad_request");
        assert_eq!(bad(r#"{"capacity":"5"}"#).code, "bad_request");
        assert_eq!(bad(r#"{"capacity":5,"x":1}"#).code, "bad_request");
        assert_eq!(bad(r#"{"capacity":5,"capacity":6}"#).code, "bad_request");
        let invalid_utf8 =
            put_resource("p".into(), "r".into(), b"{\"capacity\":\xff}").unwrap_err();
        assert_eq!(invalid_utf8.code, "bad_request");
        let command = put_resource("a b".into(), "r".into(), br#"{"capacity":5}"#).unwrap();
        assert_eq!(command.validate().unwrap_err().code(), "invalid");
    }

    #[test]
    fn batch_elements_fail_on_their_own() {
        let body = br#"{"commands":[
            {"op":"put_resource","partition":"p","id":"r","capacity":1},
            {"op":"hold","partition":"p","id":"h"},
            {"op":"nope","partition":"p","id":"h"},
            {"op":"confirm","partition":"p","id":"h","capacity":1},
            7,
            {"op":"extend","partition":"p","id":"h","ttl_ms":5}
        ]}"#;
        let parsed = batch(body).unwrap();
        let codes: Vec<&str> =
            parsed.iter().map(|r| r.as_ref().map_or_else(|e| e.code, |_| "ok")).collect();
        assert_eq!(codes, ["ok", "bad_request", "invalid", "bad_request", "bad_request", "ok"]);
    }

    #[test]
    fn both_batch_paths_agree_on_well_formed_batches() {
        let body = br#"{"commands":[
            {"op":"put_resource","partition":"p","id":"r","capacity":1},
            {"op":"hold","partition":"p","id":"h","items":[{"resource":"r","quantity":2}],"ttl_ms":null,"ref":"x"},
            {"op":"nope","partition":"p","id":"h"},
            {"op":"confirm","partition":"p","id":"h","capacity":1},
            {"op":"extend","partition":"p","id":"h"},
            {"op":"release","partition":"p","id":"h"}
        ]}"#;
        assert_eq!(batch(body).unwrap(), batch_by_element(body).unwrap());
        let many = format!(
            r#"{{"commands":[{}]}}"#,
            vec![r#"{"op":"cancel","partition":"p","id":"h"}"#; 1001].join(",")
        );
        assert_eq!(batch(many.as_bytes()).unwrap_err().code, "invalid");
        assert_eq!(batch_by_element(many.as_bytes()).unwrap_err().code, "invalid");
    }

    #[test]
    fn error_json_carries_its_details() {
        let error = ApiError::from_refusal(Refusal::InsufficientCapacity {
            resource: "A-1".into(),
            requested: 3,
            available: 2,
        });
        let value: serde_json::Value = serde_json::from_slice(&encode(&error, 64)).unwrap();
        assert_eq!(value["error"], "insufficient_capacity");
        assert_eq!(value["resource"], "A-1");
        assert_eq!(value["requested"], 3);
        assert_eq!(value["available"], 2);
        assert!(value["message"].is_string());

        let error = ApiError::from_refusal(Refusal::PartitionHasLiveHolds { held: 4 });
        assert_eq!((error.status, error.code), (409, "partition_has_live_holds"));
        let value: serde_json::Value = serde_json::from_slice(&encode(&error, 64)).unwrap();
        assert_eq!(value["held"], 4);
        for (reason, name) in [
            (bookd_engine::StorageFullReason::Memory, "memory"),
            (bookd_engine::StorageFullReason::Disk, "disk"),
        ] {
            let error = ApiError::from_refusal(Refusal::StorageFull { reason });
            assert_eq!((error.status, error.code), (507, "storage_full"));
            let value: serde_json::Value = serde_json::from_slice(&encode(&error, 64)).unwrap();
            assert_eq!(value["reason"], name);
            assert_eq!(value["message"], format!("storage full ({name})"));
        }
        let error = ApiError::from_refusal(Refusal::NotFound);
        assert_eq!((error.status, error.code), (404, "not_found"));
    }

    #[test]
    fn batch_delete_partition_needs_no_id_and_ignores_one() {
        let body = br#"{"commands":[
            {"op":"delete_partition","partition":"p"},
            {"op":"delete_partition","partition":"p","id":"x"},
            {"op":"delete_partition","partition":"p","id":null},
            {"op":"delete_partition","partition":"p","ttl_ms":5},
            {"op":"delete_partition"},
            {"op":"cancel","partition":"p"},
            {"op":"cancel","partition":"p","id":null}
        ]}"#;
        let parsed = batch(body).unwrap();
        assert_eq!(parsed, batch_by_element(body).unwrap());
        let delete = Ok(Command::DeletePartition(DeletePartition { partition: "p".into() }));
        assert_eq!(parsed[0], delete);
        assert_eq!(parsed[1], delete);
        assert_eq!(parsed[2], delete);
        for element in &parsed[3..] {
            assert_eq!(element.as_ref().unwrap_err().code, "bad_request", "{element:?}");
        }
    }
}
