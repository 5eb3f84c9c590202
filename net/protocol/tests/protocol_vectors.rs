//! The protocol's test vectors, docs/protocol-vectors.json, checked against the real encoder and
//! decoder: every vector's hex decodes to its `value`, and its `value` encodes to exactly its hex.
//! The hex blocks of docs/protocol.md ("Test vectors") must be the same vectors with the same
//! bytes, so neither the document nor the file can drift from the code. Every `malformed` frame
//! of the file must be refused. Run with `BOOKD_PRINT_VECTORS=1` to print each vector as the
//! document writes it (from the encoder's bytes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bookd_engine::change::{Change, ChangeOp, ChangedHold, ChangedResource, Removed};
use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, HoldStatus, HoldView, Item, ItemView,
    ListQuery, Op, PutResource, Release, ResourcePage, ResourceView, StorageFullReason,
};
use bookd_protocol::command::{decode_request, put_request_count};
use bookd_protocol::frame::{self, Kind};
use bookd_protocol::limits::{FRAME_SIZE_CAP_BYTES, PROTOCOL_VERSION};
use bookd_protocol::reply::{decode_response, encode_reply};
use bookd_protocol::subscribe::{
    decode_changes_frame, decode_credit, encode_changes, encode_credit, CursorChange, Subscribe,
};
use bookd_protocol::wire::put_u16;
use bookd_protocol::{
    encode_op, Binding, Detail, ErrorCode, ErrorFrame, Hello, HelloOk, PartitionDeleted, Refused,
    Reply, Role, ShardRule,
};
use serde_json::Value;

const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol-vectors.json");
const DOCUMENT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");

fn vectors_file() -> Value {
    let text = std::fs::read_to_string(VECTORS_PATH).unwrap();
    serde_json::from_str(&text).unwrap()
}

// ---- reading the JSON values ----

fn field<'v>(value: &'v Value, name: &str) -> &'v Value {
    value.get(name).unwrap_or_else(|| panic!("missing field {name} in {value}"))
}

fn text(value: &Value, name: &str) -> String {
    field(value, name).as_str().unwrap_or_else(|| panic!("{name} is not a string")).to_string()
}

fn opt_text(value: &Value, name: &str) -> Option<String> {
    let field = field(value, name);
    (!field.is_null()).then(|| field.as_str().unwrap().to_string())
}

fn number(value: &Value, name: &str) -> u64 {
    field(value, name).as_u64().unwrap_or_else(|| panic!("{name} is not a u64 in {value}"))
}

fn opt_number(value: &Value, name: &str) -> Option<u64> {
    let field = field(value, name);
    (!field.is_null()).then(|| field.as_u64().unwrap())
}

fn small(value: &Value, name: &str) -> u32 {
    u32::try_from(number(value, name)).unwrap()
}

fn boolean(value: &Value, name: &str) -> bool {
    field(value, name).as_bool().unwrap_or_else(|| panic!("{name} is not a bool"))
}

fn list<'v>(value: &'v Value, name: &str) -> &'v Vec<Value> {
    field(value, name).as_array().unwrap_or_else(|| panic!("{name} is not a list"))
}

fn hold_status(name: &str) -> HoldStatus {
    HoldStatus::ALL.iter().copied().find(|status| status.as_str() == name).unwrap()
}

fn error_code(name: &str) -> ErrorCode {
    ErrorCode::of_refusal(name).unwrap_or_else(|| panic!("unknown error code {name}"))
}

fn items(value: &Value) -> Vec<(String, u64)> {
    list(value, "items")
        .iter()
        .map(|item| (text(item, "resource"), number(item, "quantity")))
        .collect()
}

fn op_of(command: &Value) -> Op {
    let partition = text(command, "partition");
    let id = || text(command, "id");
    match text(command, "op").as_str() {
        "put_resource" => Op::Command(Command::PutResource(PutResource {
            partition,
            resource: id(),
            capacity: number(command, "capacity"),
        })),
        "hold" => Op::Command(Command::Hold(Hold {
            partition,
            hold: id(),
            items: items(command)
                .into_iter()
                .map(|(resource, quantity)| Item { resource, quantity })
                .collect(),
            ttl_ms: opt_number(command, "ttl_ms"),
            reference: opt_text(command, "ref"),
        })),
        "confirm" => Op::Command(Command::Confirm(Confirm { partition, hold: id() })),
        "release" => Op::Command(Command::Release(Release { partition, hold: id() })),
        "cancel" => Op::Command(Command::Cancel(Cancel { partition, hold: id() })),
        "extend" => Op::Command(Command::Extend(Extend {
            partition,
            hold: id(),
            ttl_ms: number(command, "ttl_ms"),
        })),
        "get_resource" => Op::GetResource { partition, id: id() },
        "get_hold" => Op::GetHold { partition, id: id() },
        "list_resources" => Op::ListResources {
            partition,
            query: ListQuery {
                prefix: text(command, "prefix"),
                after: opt_text(command, "after"),
                limit: opt_number(command, "limit"),
            },
        },
        "delete_partition" => Op::Command(Command::DeletePartition(DeletePartition { partition })),
        other => panic!("unknown op {other}"),
    }
}

fn resource_view(partition: &str, value: &Value) -> ResourceView {
    ResourceView {
        partition: partition.into(),
        id: text(value, "id").into(),
        capacity: number(value, "capacity"),
        held: number(value, "held"),
        confirmed: number(value, "confirmed"),
    }
}

#[allow(clippy::useless_conversion)] // the engine's item list is a vector or a shared slice
fn reply_of(result: &Value) -> Reply {
    if let Some(code) = result.get("error") {
        let code = error_code(code.as_str().unwrap());
        let detail = match code {
            ErrorCode::ResourceNotFound => {
                Detail::Resource { resource: text(result, "resource").into() }
            }
            ErrorCode::InsufficientCapacity => Detail::Capacity {
                resource: text(result, "resource").into(),
                requested: number(result, "requested"),
                available: number(result, "available"),
            },
            ErrorCode::Invalid => {
                Detail::Invalid { field: text(result, "field"), reason: text(result, "reason") }
            }
            ErrorCode::CapacityBelowUsage => {
                Detail::Usage { capacity: number(result, "capacity"), used: number(result, "used") }
            }
            ErrorCode::Overloaded => {
                Detail::Table { table: text(result, "table"), max: small(result, "max") }
            }
            ErrorCode::PartitionHasLiveHolds => Detail::Held { held: small(result, "held") },
            ErrorCode::StorageFull => Detail::Storage {
                reason: match text(result, "reason").as_str() {
                    "memory" => StorageFullReason::Memory,
                    "disk" => StorageFullReason::Disk,
                    other => panic!("unknown storage_full reason {other}"),
                },
            },
            _ => Detail::None,
        };
        return Reply::Refused(Refused { code, detail });
    }
    let partition = text(result, "partition");
    match text(result, "result").as_str() {
        "resource" => Reply::Resource {
            resource: resource_view(&partition, result),
            created: boolean(result, "created"),
        },
        "hold" => Reply::Hold {
            hold: HoldView {
                partition: partition.as_str().into(),
                id: text(result, "id").into(),
                status: hold_status(&text(result, "status")),
                items: items(result)
                    .into_iter()
                    .map(|(resource, quantity)| ItemView {
                        resource: resource.into(),
                        quantity: u32::try_from(quantity).unwrap(),
                    })
                    .collect::<Vec<_>>()
                    .into(),
                expires_at_ms: number(result, "expires_at_ms"),
                reference: opt_text(result, "ref").map(Arc::from),
            },
            existing: boolean(result, "existing"),
        },
        "page" => Reply::Page(ResourcePage {
            resources: list(result, "resources")
                .iter()
                .map(|resource| resource_view(&partition, resource))
                .collect(),
            next: opt_text(result, "next").map(Arc::from),
        }),
        "partition_deleted" => Reply::PartitionDeleted(PartitionDeleted {
            partition: partition.as_str().into(),
            resources: small(result, "resources"),
            holds: small(result, "holds"),
        }),
        other => panic!("unknown result {other}"),
    }
}

fn change_of(value: &Value) -> CursorChange {
    let op_name = text(value, "op");
    let op = ChangeOp::ALL.iter().copied().find(|op| op.as_str() == op_name).unwrap();
    let hold = field(value, "hold");
    let hold = (!hold.is_null()).then(|| ChangedHold {
        id: text(hold, "id"),
        status: hold_status(&text(hold, "status")),
        expires_at_ms: number(hold, "expires_at_ms"),
        reference: opt_text(hold, "ref"),
        items: items(hold)
            .into_iter()
            .map(|(resource, quantity)| (resource, u32::try_from(quantity).unwrap()))
            .collect(),
    });
    let removed = field(value, "removed");
    let removed = (!removed.is_null()).then(|| Removed {
        resources: small(removed, "resources"),
        holds: small(removed, "holds"),
    });
    let resources = list(value, "resources")
        .iter()
        .map(|resource| ChangedResource {
            id: text(resource, "id"),
            capacity: number(resource, "capacity"),
            held: number(resource, "held"),
            confirmed: number(resource, "confirmed"),
        })
        .collect();
    CursorChange {
        cursor: text(value, "cursor"),
        change: Change {
            op,
            at_ms: number(value, "at_ms"),
            partition: text(value, "partition"),
            hold,
            resources,
            removed,
        },
    }
}

fn hello_ok_of(value: &Value) -> HelloOk {
    HelloOk {
        role: match text(value, "role").as_str() {
            "primary" => Role::Primary,
            "standby" => Role::Standby,
            other => panic!("unknown role {other}"),
        },
        epoch: number(value, "epoch"),
        shards: u16::try_from(number(value, "shards")).unwrap(),
        frame_size_max_bytes: small(value, "frame_size_max"),
        commands_per_frame_max: u16::try_from(number(value, "commands_per_frame_max")).unwrap(),
        in_flight_max: small(value, "in_flight_max"),
        binding: value.get("bound_shard").map(|shard| Binding {
            shard: u16::try_from(shard.as_u64().unwrap()).unwrap(),
            rule: match text(value, "shard_rule").as_str() {
                "fnv1a64_mod" => ShardRule::Fnv1a64Mod,
                other => panic!("unknown shard rule {other}"),
            },
        }),
    }
}

/// HELLO's optional `shard`.
fn hello_shard(value: &Value) -> Option<u16> {
    value.get("shard").map(|shard| u16::try_from(shard.as_u64().unwrap()).unwrap())
}

fn kind_of(name: &str) -> Kind {
    match name {
        "HELLO" => Kind::Hello,
        "HELLO_OK" => Kind::HelloOk,
        "REQUEST" => Kind::Request,
        "RESPONSE" => Kind::Response,
        "SUBSCRIBE" => Kind::Subscribe,
        "CHANGES" => Kind::Changes,
        "CREDIT" => Kind::Credit,
        "ERROR" => Kind::Error,
        other => panic!("unknown kind {other}"),
    }
}

// ---- encoding a value, decoding a payload ----

/// The payload the encoder writes for a vector's value.
fn encode_value(kind: Kind, value: &Value) -> Vec<u8> {
    let mut payload = Vec::new();
    match kind {
        Kind::Hello => {
            let token = text(value, "token");
            let name = text(value, "client_name");
            let shard = hello_shard(value);
            Hello { token: token.as_bytes(), client_name: &name, shard }
                .encode(&mut payload)
                .unwrap();
        }
        Kind::HelloOk => hello_ok_of(value).encode(&mut payload),
        Kind::Request => {
            let commands = list(value, "commands");
            put_request_count(&mut payload, commands.len());
            for command in commands {
                encode_op(&op_of(command), &mut payload).unwrap();
            }
        }
        Kind::Response => {
            let results = list(value, "results");
            put_u16(&mut payload, u16::try_from(results.len()).unwrap());
            for result in results {
                encode_reply(&reply_of(result), &mut payload);
            }
        }
        Kind::Error => {
            ErrorFrame { code: error_code(&text(value, "code")), message: text(value, "message") }
                .encode_exact(&mut payload)
                .unwrap()
        }
        Kind::Subscribe => {
            let cursor = text(value, "cursor");
            let partition = opt_text(value, "partition");
            Subscribe {
                cursor: &cursor,
                partition: partition.as_deref(),
                credit: small(value, "credit"),
            }
            .encode(&mut payload)
            .unwrap();
        }
        Kind::Changes => {
            let changes: Vec<CursorChange> = list(value, "changes").iter().map(change_of).collect();
            encode_changes(
                &text(value, "cursor"),
                changes.iter().map(|change| (change.cursor.clone(), &change.change)),
                &mut payload,
            )
            .unwrap();
        }
        Kind::Credit => encode_credit(small(value, "credit"), &mut payload),
        Kind::Replicate => panic!("no REPLICATE vectors"),
    }
    payload
}

/// Decodes a payload and checks it means the vector's value.
fn check_decoded(name: &str, kind: Kind, payload: &[u8], value: &Value) {
    match kind {
        Kind::Hello => {
            let hello = Hello::decode(payload).unwrap();
            assert_eq!(hello.token, text(value, "token").as_bytes(), "{name}: token");
            assert_eq!(hello.client_name, text(value, "client_name"), "{name}: client_name");
            assert_eq!(hello.shard, hello_shard(value), "{name}: shard");
        }
        Kind::HelloOk => {
            assert_eq!(HelloOk::decode(payload).unwrap(), hello_ok_of(value), "{name}")
        }
        Kind::Request => {
            let mut ops = Vec::new();
            decode_request(payload, |command| ops.push(command.to_op())).unwrap();
            let expected: Vec<Op> = list(value, "commands").iter().map(op_of).collect();
            assert_eq!(ops, expected, "{name}");
        }
        Kind::Response => {
            let mut replies = Vec::new();
            decode_response(payload, &mut replies).unwrap();
            let expected: Vec<Reply> = list(value, "results").iter().map(reply_of).collect();
            assert_eq!(replies, expected, "{name}");
        }
        Kind::Error => {
            let error = ErrorFrame::decode(payload).unwrap();
            assert_eq!(error.code, error_code(&text(value, "code")), "{name}: code");
            assert_eq!(error.message, text(value, "message"), "{name}: message");
        }
        Kind::Subscribe => {
            let subscribe = Subscribe::decode(payload).unwrap();
            assert_eq!(subscribe.cursor, text(value, "cursor"), "{name}: cursor");
            assert_eq!(
                subscribe.partition.map(str::to_string),
                opt_text(value, "partition"),
                "{name}: partition"
            );
            assert_eq!(subscribe.credit, small(value, "credit"), "{name}: credit");
        }
        Kind::Changes => {
            let (cursor, changes) = decode_changes_frame(payload).unwrap();
            assert_eq!(cursor, text(value, "cursor"), "{name}: cursor");
            let expected: Vec<CursorChange> =
                list(value, "changes").iter().map(change_of).collect();
            assert_eq!(changes, expected, "{name}");
        }
        Kind::Credit => assert_eq!(decode_credit(payload).unwrap(), small(value, "credit")),
        Kind::Replicate => panic!("no REPLICATE vectors"),
    }
}

/// Whether a payload of `kind` decodes (for the malformed frames).
fn decodes(kind: Kind, payload: &[u8]) -> bool {
    match kind {
        Kind::Hello => Hello::decode(payload).is_ok(),
        Kind::HelloOk => HelloOk::decode(payload).is_ok(),
        Kind::Request => decode_request(payload, |_| {}).is_ok(),
        Kind::Response => decode_response(payload, &mut Vec::new()).is_ok(),
        Kind::Error => ErrorFrame::decode(payload).is_ok(),
        Kind::Subscribe => Subscribe::decode(payload).is_ok(),
        Kind::Changes => decode_changes_frame(payload).is_ok(),
        Kind::Credit => decode_credit(payload).is_ok(),
        Kind::Replicate => true,
    }
}

// ---- hex ----

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd number of hex digits");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every ```hex block preceded by a `<!-- vector: NAME -->` line: (name, bytes). In a block,
/// `#` starts a comment; whitespace is ignored.
fn vectors_in_document() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(DOCUMENT_PATH).unwrap();
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("<!-- vector: ") else { continue };
        let name = name.trim_end_matches("-->").trim().to_string();
        assert_eq!(
            lines.next().map(str::trim),
            Some("```hex"),
            "vector {name}: ```hex must follow"
        );
        let mut hex = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            let data = line.split('#').next().unwrap_or("");
            hex.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
        found.push((name, from_hex(&hex)));
    }
    found
}

/// The vector as the document writes it: header on one line, payload 16 bytes a line.
fn render(name: &str, bytes: &[u8]) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    let mut out = format!("<!-- vector: {name} -->\n```hex\n");
    out += &format!("{}  # frame_len\n", hex(&bytes[..4]));
    out += &format!(
        "{}  {}  {}  {}  # version, kind, reserved, request_id\n",
        hex(&bytes[4..5]),
        hex(&bytes[5..6]),
        hex(&bytes[6..8]),
        hex(&bytes[8..16])
    );
    for chunk in bytes[16..].chunks(16) {
        out += &format!("{}\n", hex(chunk));
    }
    out += "```\n";
    out
}

// ---- the tests ----

#[test]
fn every_vector_decodes_to_its_value_and_its_value_encodes_to_its_bytes() {
    let file = vectors_file();
    assert_eq!(number(&file, "protocol_version"), u64::from(PROTOCOL_VERSION));
    let vectors = list(&file, "vectors");
    assert!(vectors.len() >= 14, "the file lost vectors");
    if std::env::var_os("BOOKD_PRINT_VECTORS").is_some() {
        for vector in vectors {
            let kind = kind_of(&text(vector, "kind"));
            let request_id = number(field(vector, "frame"), "request_id");
            let mut encoded = Vec::new();
            frame::encode(
                &mut encoded,
                kind,
                request_id,
                &encode_value(kind, field(vector, "value")),
            );
            let name = text(vector, "name");
            println!("{}\"{name}\": \"{}\"\n", render(&name, &encoded), to_hex(&encoded));
        }
    }
    for vector in vectors {
        let name = text(vector, "name");
        assert!(!text(vector, "description").is_empty(), "{name}: a description");
        let kind = kind_of(&text(vector, "kind"));
        let direction = text(vector, "direction");
        let expected_direction = match kind {
            Kind::Hello | Kind::Request | Kind::Subscribe | Kind::Credit => "client_to_server",
            _ => "server_to_client",
        };
        assert_eq!(direction, expected_direction, "{name}: direction");
        let header = field(vector, "frame");
        let request_id = number(header, "request_id");
        let value = field(vector, "value");

        // The value, encoded, is exactly the vector's bytes.
        let mut encoded = Vec::new();
        frame::encode(&mut encoded, kind, request_id, &encode_value(kind, value));
        let bytes = from_hex(&text(vector, "hex"));
        assert_eq!(
            to_hex(&bytes),
            to_hex(&encoded),
            "vector {name}: the file's hex and the encoder differ; the encoder writes\n{}",
            render(&name, &encoded)
        );

        // The bytes decode to the vector's header and value.
        let (frame, used) = frame::parse(&bytes, FRAME_SIZE_CAP_BYTES).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "vector {name} is exactly one frame");
        assert_eq!(frame.kind, kind, "{name}: kind");
        assert_eq!(frame.request_id, request_id, "{name}: request_id");
        assert_eq!(number(header, "frame_len"), (bytes.len() - 4) as u64, "{name}: frame_len");
        assert_eq!(number(header, "version"), u64::from(bytes[4]), "{name}: version");
        assert_eq!(number(header, "kind"), u64::from(kind as u8), "{name}: kind byte");
        check_decoded(&name, kind, frame.payload, value);
    }
}

#[test]
fn the_documents_hex_blocks_are_the_files_vectors() {
    let file = vectors_file();
    let vectors = list(&file, "vectors");
    let documented = vectors_in_document();
    let names: Vec<&str> = documented.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<String> = vectors.iter().map(|vector| text(vector, "name")).collect();
    assert_eq!(names, expected, "docs/protocol.md has the file's vectors, in its order");
    for (vector, (name, bytes)) in vectors.iter().zip(&documented) {
        let from_file = from_hex(&text(vector, "hex"));
        assert_eq!(
            to_hex(bytes),
            to_hex(&from_file),
            "vector {name}: docs/protocol.md and docs/protocol-vectors.json differ; the file's \
             bytes are\n{}",
            render(name, &from_file)
        );
    }
}

#[test]
fn every_malformed_frame_is_refused() {
    let file = vectors_file();
    let malformed = list(&file, "malformed");
    assert!(!malformed.is_empty());
    for vector in malformed {
        let name = text(vector, "name");
        assert!(!text(vector, "description").is_empty(), "{name}: a description");
        let bytes = from_hex(&text(vector, "hex"));
        match text(vector, "error").as_str() {
            // Refused from the length prefix or header, whatever follows.
            "frame" => assert!(
                frame::check(&bytes, FRAME_SIZE_CAP_BYTES).is_err(),
                "{name}: the frame header must be refused"
            ),
            // A well-formed frame whose payload does not decode.
            "payload" => {
                let (frame, used) = frame::parse(&bytes, FRAME_SIZE_CAP_BYTES)
                    .unwrap_or_else(|error| panic!("{name}: header refused: {error}"))
                    .unwrap_or_else(|| panic!("{name}: not one whole frame"));
                assert_eq!(used, bytes.len(), "{name} is exactly one frame");
                assert!(!decodes(frame.kind, frame.payload), "{name}: the payload must be refused");
            }
            other => panic!("{name}: unknown error class {other}"),
        }
    }
}

/// The rows `| number | `code` | HTTP | ...` of the document's error code table.
fn error_codes_in_document() -> Vec<(u64, String, u64)> {
    let text = std::fs::read_to_string(DOCUMENT_PATH).unwrap();
    let mut rows = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, number, code, http, ..] = cells.as_slice() else { continue };
        let (Ok(number), Ok(http)) = (number.parse::<u64>(), http.parse::<u64>()) else { continue };
        let Some(code) = code.strip_prefix('`').and_then(|code| code.strip_suffix('`')) else {
            continue;
        };
        rows.push((number, code.to_string(), http));
    }
    rows
}

#[test]
fn the_files_error_codes_are_the_protocols_and_the_documents() {
    let file = vectors_file();
    let codes = list(&file, "error_codes");
    assert_eq!(codes.len(), ErrorCode::ALL.len(), "every error code, once");
    let documented = error_codes_in_document();
    assert_eq!(documented.len(), ErrorCode::ALL.len(), "the document's error code table");
    for ((entry, code), row) in codes.iter().zip(ErrorCode::ALL).zip(&documented) {
        assert_eq!(number(entry, "number"), u64::from(code as u8));
        assert_eq!(text(entry, "code"), code.as_str());
        assert_eq!(
            (number(entry, "number"), text(entry, "code"), number(entry, "http")),
            row.clone(),
            "the file's error codes are the document's table"
        );
    }
}
