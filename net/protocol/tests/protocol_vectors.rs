//! The hex test vectors of docs/protocol.md, parsed out of the markdown and checked against the
//! real encoder and decoder, so the document and the code cannot drift apart. Run with
//! `BOOKD_PRINT_VECTORS=1` to print the vectors as the document writes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bookd_engine::change::{Change, ChangeOp, ChangedHold, ChangedResource};
use bookd_protocol::subscribe::{
    decode_changes_frame, decode_credit, encode_changes, encode_credit, Subscribe,
};
use std::sync::Arc;

use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Extend, Hold, HoldStatus, HoldView, Item, ItemView,
    ListQuery, Outcome, PutResource, Refusal, Release, ResourcePage, ResourceView,
    StorageFullReason,
};
use bookd_engine::{Op, OpResult};
use bookd_protocol::command::{decode_request, put_request_count};
use bookd_protocol::frame::{self, Kind};
use bookd_protocol::limits::FRAME_SIZE_CAP_BYTES;
use bookd_protocol::reply::{decode_response, encode_op_result, Reply};
use bookd_protocol::wire::put_u16;
use bookd_protocol::Role;
use bookd_protocol::{encode_op, ErrorCode, ErrorFrame, Hello, HelloOk};

/// A vector: its name in the document, its frame bytes, and a check of what it decodes to.
struct Vector {
    name: &'static str,
    bytes: Vec<u8>,
}

fn frame_of(kind: Kind, request_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, kind, request_id, payload);
    bytes
}

fn hello() -> Vec<u8> {
    let mut payload = Vec::new();
    Hello { token: b"s3cret", client_name: "gw-1" }.encode(&mut payload).unwrap();
    frame_of(Kind::Hello, 1, &payload)
}

fn hello_ok_value() -> HelloOk {
    HelloOk {
        role: Role::Primary,
        epoch: 1,
        shards: 2,
        frame_size_max_bytes: 1 << 20,
        commands_per_frame_max: 1000,
        in_flight_max: 256,
    }
}

fn hello_ok() -> Vec<u8> {
    let mut payload = Vec::new();
    hello_ok_value().encode(&mut payload);
    frame_of(Kind::HelloOk, 1, &payload)
}

fn request_ops(name: &str) -> Vec<Op> {
    let p = || "concert-1".to_string();
    let h = || "h-1".to_string();
    match name {
        "request-put-resource" => vec![Op::Command(Command::PutResource(PutResource {
            partition: p(),
            resource: "ga".into(),
            capacity: 100,
        }))],
        "request-hold" => vec![Op::Command(Command::Hold(Hold {
            partition: p(),
            hold: h(),
            items: vec![Item { resource: "ga".into(), quantity: 2 }],
            ttl_ms: Some(600_000),
            reference: Some("order-7".into()),
        }))],
        "request-many" => vec![
            Op::Command(Command::Confirm(Confirm { partition: p(), hold: h() })),
            Op::Command(Command::Release(Release { partition: p(), hold: h() })),
            Op::Command(Command::Cancel(Cancel { partition: p(), hold: h() })),
            Op::Command(Command::Extend(Extend { partition: p(), hold: h(), ttl_ms: 60_000 })),
            Op::GetResource { partition: p(), id: "ga".into() },
            Op::GetHold { partition: p(), id: h() },
            Op::ListResources {
                partition: p(),
                query: ListQuery { prefix: "g".into(), after: None, limit: Some(10) },
            },
            Op::Command(Command::Hold(Hold {
                partition: p(),
                hold: "h-2".into(),
                items: vec![
                    Item { resource: "a".into(), quantity: 1 },
                    Item { resource: "b".into(), quantity: 1 },
                ],
                ttl_ms: None,
                reference: None,
            })),
        ],
        "request-delete-partition" => {
            vec![Op::Command(Command::DeletePartition(DeletePartition { partition: p() }))]
        }
        other => panic!("no request vector {other}"),
    }
}

fn request(name: &str, request_id: u64) -> Vec<u8> {
    let ops = request_ops(name);
    let mut payload = Vec::new();
    put_request_count(&mut payload, ops.len());
    for op in &ops {
        encode_op(op, &mut payload).unwrap();
    }
    frame_of(Kind::Request, request_id, &payload)
}

fn resource(capacity: u64, held: u64, confirmed: u64) -> ResourceView {
    ResourceView { partition: "concert-1".into(), id: "ga".into(), capacity, held, confirmed }
}

#[allow(clippy::useless_conversion)] // the engine's item list is a vector or a shared slice
fn hold_view() -> HoldView {
    HoldView {
        partition: "concert-1".into(),
        id: "h-1".into(),
        status: HoldStatus::Held,
        items: vec![ItemView { resource: "ga".into(), quantity: 2 }].into(),
        expires_at_ms: 1_700_000_600_000,
        reference: Some(Arc::from("order-7")),
    }
}

fn response_results(name: &str) -> Vec<OpResult> {
    match name {
        "response-resource" => vec![OpResult::Command(Ok(Outcome::Resource {
            resource: resource(100, 0, 0),
            created: true,
        }))],
        "response-hold" => {
            vec![OpResult::Command(Ok(Outcome::Hold { hold: hold_view(), existing: false }))]
        }
        "response-many" => vec![
            OpResult::Command(Err(Refusal::InsufficientCapacity {
                resource: "ga".into(),
                requested: 5,
                available: 3,
            })),
            OpResult::Command(Err(Refusal::Invalid { field: "ttl_ms".into(), reason: "range" })),
            OpResult::Command(Err(Refusal::ResourceNotFound { resource: "gb".into() })),
            OpResult::Hold(Err(Refusal::HoldNotFound)),
            OpResult::Command(Err(Refusal::CapacityBelowUsage { capacity: 1, used: 2 })),
            OpResult::Overloaded,
            OpResult::Unavailable,
            OpResult::Resource(Ok(resource(100, 2, 1))),
            OpResult::Page(Ok(ResourcePage {
                resources: vec![resource(100, 2, 1)],
                next: Some("ga".into()),
            })),
        ],
        "response-delete-partition" => vec![
            OpResult::Command(Ok(Outcome::PartitionDeleted {
                partition: "concert-1".into(),
                resources: 3,
                holds: 7,
            })),
            OpResult::Command(Err(Refusal::NotFound)),
            OpResult::Command(Err(Refusal::PartitionHasLiveHolds { held: 2 })),
            OpResult::Command(Err(Refusal::StorageFull { reason: StorageFullReason::Memory })),
            OpResult::Command(Err(Refusal::StorageFull { reason: StorageFullReason::Disk })),
        ],
        other => panic!("no response vector {other}"),
    }
}

fn response(name: &str, request_id: u64) -> Vec<u8> {
    let results = response_results(name);
    let mut payload = Vec::new();
    put_u16(&mut payload, results.len() as u16);
    for result in &results {
        encode_op_result(result, &mut payload);
    }
    frame_of(Kind::Response, request_id, &payload)
}

fn error_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    ErrorFrame { code: ErrorCode::Unauthorized, message: "wrong or missing token".into() }
        .encode(&mut payload);
    frame_of(Kind::Error, 1, &payload)
}

fn subscribe_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    Subscribe { cursor: "c5.0_3.0", partition: Some("concert-1"), credit: 1000 }
        .encode(&mut payload)
        .unwrap();
    frame_of(Kind::Subscribe, 11, &payload)
}

fn credit_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    encode_credit(500, &mut payload);
    frame_of(Kind::Credit, 11, &payload)
}

fn change_value() -> Change {
    Change {
        op: ChangeOp::Confirm,
        at_ms: 1_700_000_000_000,
        partition: "concert-1".into(),
        hold: Some(ChangedHold {
            id: "h-1".into(),
            status: HoldStatus::Confirmed,
            expires_at_ms: 1_700_000_600_000,
            reference: None,
            items: vec![("ga".into(), 2)],
        }),
        resources: vec![ChangedResource { id: "ga".into(), capacity: 100, held: 0, confirmed: 2 }],
        removed: None,
    }
}

fn changes_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    let change = change_value();
    encode_changes("c6.1_3.0", std::iter::once(("c6.1_3.0".to_string(), &change)), &mut payload)
        .unwrap();
    frame_of(Kind::Changes, 11, &payload)
}

fn vectors() -> Vec<Vector> {
    vec![
        Vector { name: "hello", bytes: hello() },
        Vector { name: "hello-ok", bytes: hello_ok() },
        Vector { name: "request-put-resource", bytes: request("request-put-resource", 7) },
        Vector { name: "request-hold", bytes: request("request-hold", 8) },
        Vector { name: "request-many", bytes: request("request-many", 9) },
        Vector { name: "request-delete-partition", bytes: request("request-delete-partition", 10) },
        Vector { name: "response-resource", bytes: response("response-resource", 7) },
        Vector { name: "response-hold", bytes: response("response-hold", 8) },
        Vector { name: "response-many", bytes: response("response-many", 9) },
        Vector {
            name: "response-delete-partition",
            bytes: response("response-delete-partition", 10),
        },
        Vector { name: "error", bytes: error_frame() },
        Vector { name: "subscribe", bytes: subscribe_frame() },
        Vector { name: "changes", bytes: changes_frame() },
        Vector { name: "credit", bytes: credit_frame() },
    ]
}

/// Every ```hex block preceded by a `<!-- vector: NAME -->` line: (name, bytes). In a block,
/// `#` starts a comment; whitespace is ignored.
fn vectors_in_document() -> Vec<(String, Vec<u8>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let text = std::fs::read_to_string(path).unwrap();
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
        assert!(hex.len().is_multiple_of(2), "vector {name}: odd number of hex digits");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        found.push((name, bytes));
    }
    found
}

/// The vector as the document writes it: header on one line, payload 16 bytes a line.
fn render(vector: &Vector) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    let mut out = format!("<!-- vector: {} -->\n```hex\n", vector.name);
    out += &format!("{}  # frame_len\n", hex(&vector.bytes[..4]));
    out += &format!(
        "{} | {} | {} | {}  # version, kind, reserved, request_id\n",
        hex(&vector.bytes[4..5]),
        hex(&vector.bytes[5..6]),
        hex(&vector.bytes[6..8]),
        hex(&vector.bytes[8..16])
    )
    .replace(" | ", "  ");
    for chunk in vector.bytes[16..].chunks(16) {
        out += &format!("{}\n", hex(chunk));
    }
    out += "```\n";
    out
}

#[test]
fn the_documents_vectors_are_what_the_code_encodes_and_decodes() {
    let ours = vectors();
    if std::env::var_os("BOOKD_PRINT_VECTORS").is_some() {
        for vector in &ours {
            println!("{}", render(vector));
        }
    }
    let documented = vectors_in_document();
    let names: Vec<&str> = documented.iter().map(|(name, _)| name.as_str()).collect();
    let expected: Vec<&str> = ours.iter().map(|vector| vector.name).collect();
    assert_eq!(names, expected, "docs/protocol.md has exactly these vectors, in this order");
    for (vector, (_, bytes)) in ours.iter().zip(&documented) {
        assert_eq!(
            &vector.bytes,
            bytes,
            "vector {}: the document and the encoder differ; the encoder writes\n{}",
            vector.name,
            render(vector)
        );
        check_decodes(vector.name, bytes);
    }
}

/// Decodes a documented vector and checks it means what the document says.
fn check_decodes(name: &str, bytes: &[u8]) {
    let (frame, used) = frame::parse(bytes, FRAME_SIZE_CAP_BYTES).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "vector {name} is exactly one frame");
    match name {
        "hello" => {
            let hello = Hello::decode(frame.payload).unwrap();
            assert_eq!((hello.token, hello.client_name), (&b"s3cret"[..], "gw-1"));
        }
        "hello-ok" => assert_eq!(HelloOk::decode(frame.payload).unwrap(), hello_ok_value()),
        "error" => {
            let error = ErrorFrame::decode(frame.payload).unwrap();
            assert_eq!(
                (error.code, error.message.as_str()),
                (ErrorCode::Unauthorized, "wrong or missing token")
            );
        }
        "subscribe" => {
            let subscribe = Subscribe::decode(frame.payload).unwrap();
            assert_eq!(
                (subscribe.cursor, subscribe.partition, subscribe.credit),
                ("c5.0_3.0", Some("concert-1"), 1000)
            );
        }
        "credit" => assert_eq!(decode_credit(frame.payload).unwrap(), 500),
        "changes" => {
            let (cursor, changes) = decode_changes_frame(frame.payload).unwrap();
            assert_eq!(cursor, "c6.1_3.0");
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].change, change_value());
        }
        request if request.starts_with("request-") => {
            let mut ops = Vec::new();
            decode_request(frame.payload, |command| ops.push(command.to_op())).unwrap();
            assert_eq!(ops, request_ops(request));
        }
        response => {
            let mut replies = Vec::new();
            decode_response(frame.payload, &mut replies).unwrap();
            let expected: Vec<Reply> =
                response_results(response).iter().map(Reply::from_op_result).collect();
            assert_eq!(replies, expected);
        }
    }
}
