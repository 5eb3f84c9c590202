//! The logic of the fuzz targets in fuzz/ (`protocol_frame`, `protocol_command`), kept here so
//! the same checks also run as ordinary tests over fuzz/corpus/. Invariant checked: decoding
//! arbitrary bytes never panics, never reads past the input, and whatever decodes re-encodes to
//! exactly the bytes it came from.

use super::command::{decode_request, CommandRef};
use super::frame::{self, Kind};
use super::handshake::{ErrorFrame, Hello, HelloOk};
use super::limits::FRAME_SIZE_CAP_BYTES;
use super::reply::{decode_response, encode_reply, Reply};
use super::wire::{put_u16, Reader};

/// Frames: split `data` into frames as a connection would, decode each payload by its kind,
/// and check every decoded frame re-encodes to its own bytes.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    loop {
        let parsed = frame::parse(rest, FRAME_SIZE_CAP_BYTES);
        let Ok(Some((parsed, used))) = parsed else {
            // Incomplete or invalid: a verdict that more bytes would not change for Err.
            if let Err(_) | Ok(None) = frame::check(rest, FRAME_SIZE_CAP_BYTES) {
                return;
            }
            unreachable!("check and parse disagree");
        };
        assert!(used <= rest.len() && used >= 16, "frame length out of bounds");
        let mut again = Vec::new();
        let start = frame::begin(&mut again, parsed.kind, parsed.request_id);
        match parsed.kind {
            Kind::Hello => {
                if let Ok(hello) = Hello::decode(parsed.payload) {
                    assert!(hello.encode(&mut again).is_ok());
                } else {
                    again.extend_from_slice(parsed.payload);
                }
            }
            Kind::HelloOk => match HelloOk::decode(parsed.payload) {
                Ok(hello) => hello.encode(&mut again),
                Err(_) => again.extend_from_slice(parsed.payload),
            },
            Kind::Error => match ErrorFrame::decode(parsed.payload) {
                Ok(error) => assert!(error.encode_exact(&mut again).is_ok()),
                Err(_) => again.extend_from_slice(parsed.payload),
            },
            Kind::Request => request_payload(parsed.payload, &mut again),
            Kind::Response => response_payload(parsed.payload, &mut again),
            // Replication messages are checked by bookd-replication's own tests.
            Kind::Replicate => again.extend_from_slice(parsed.payload),
            Kind::Subscribe => match crate::subscribe::Subscribe::decode(parsed.payload) {
                Ok(subscribe) => assert!(subscribe.encode(&mut again).is_ok()),
                Err(_) => again.extend_from_slice(parsed.payload),
            },
            Kind::Credit => match crate::subscribe::decode_credit(parsed.payload) {
                Ok(more) => crate::subscribe::encode_credit(more, &mut again),
                Err(_) => again.extend_from_slice(parsed.payload),
            },
            Kind::Changes => {
                let _ = crate::subscribe::decode_changes_frame(parsed.payload);
                again.extend_from_slice(parsed.payload);
            }
        }
        frame::finish(&mut again, start);
        assert_eq!(again, &rest[..used], "frame did not re-encode to its bytes");
        rest = &rest[used..];
    }
}

/// Commands: `data` is a REQUEST payload (and, on its own, a sequence of commands); every
/// command that decodes re-encodes to its bytes and converts to an engine op without panicking.
pub fn command(data: &[u8]) {
    let mut again = Vec::new();
    request_payload(data, &mut again);
    assert_eq!(again, data, "request did not re-encode to its bytes");
    let mut reader = Reader::new(data);
    while reader.remaining() > 0 {
        let before = reader.clone();
        let Ok(command) = CommandRef::decode(&mut reader) else {
            return;
        };
        let used = before.remaining() - reader.remaining();
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        assert_eq!(bytes.len(), used);
        let op = command.to_op();
        let mut from_op = Vec::new();
        assert!(super::command::encode_op(&op, &mut from_op).is_ok());
        assert_eq!(from_op, bytes, "engine op encodes differently from its wire form");
        // The engine's own validation must not panic either.
        if let bookd_engine::Op::Command(command) = &op {
            let _ = command.validate();
        }
    }
    let mut replies = Vec::new();
    let _ = decode_response(data, &mut replies);
}

/// Re-encodes a REQUEST payload, or copies it if it does not decode.
fn request_payload(payload: &[u8], out: &mut Vec<u8>) {
    let mut encoded = Vec::new();
    let mut count = 0usize;
    let decoded = decode_request(payload, |command| {
        count += 1;
        command.encode(&mut encoded);
    });
    match decoded {
        Ok(n) => {
            assert_eq!(n, count);
            put_u16(out, count as u16);
            out.extend_from_slice(&encoded);
        }
        Err(_) => out.extend_from_slice(payload),
    }
}

/// Re-encodes a RESPONSE payload, or copies it if it does not decode.
fn response_payload(payload: &[u8], out: &mut Vec<u8>) {
    let mut replies: Vec<Reply> = Vec::new();
    match decode_response(payload, &mut replies) {
        Ok(()) => {
            put_u16(out, replies.len() as u16);
            for reply in &replies {
                encode_reply(reply, out);
            }
        }
        Err(_) => out.extend_from_slice(payload),
    }
}
