//! bookd's binary protocol for gateway services: TCP, little-endian, length-prefixed frames,
//! versioned, pipelined by request id, up to 1 000 commands per frame, the same commands,
//! results and error codes as HTTP. The byte layout is docs/protocol.md; its test vectors
//! (docs/protocol-vectors.json) are checked against this code by
//! net/protocol/tests/protocol_vectors.rs. No tokio and no I/O here:
//! the server (`bookd-server`) and the client (`bookd-client`) bring their own sockets.
//!
//! Invariant: the protocol only decodes shapes. A frame or field that does not decode is a
//! protocol error (ERROR frame, connection closed); every name, limit and business rule is
//! the engine's, so an out-of-range value gets the same `invalid` refusal as over HTTP.
//!
//! # Layout
//! - [`limits`]: every limit, units last.
//! - [`wire`]: the bounds-checked field reader and the field writers.
//! - [`frame`]: length prefix and header: check a frame is complete, then parse it.
//! - [`codes`]: error codes as stable numbers.
//! - [`handshake`]: HELLO, HELLO_OK, ERROR.
//! - [`command`]: commands (decoded borrowing the frame), REQUEST payloads.
//! - [`reply`]: results, RESPONSE payloads.
//! - [`subscribe`]: the change feed: SUBSCRIBE, CHANGES, CREDIT.
//! - [`fuzzing`]: the fuzz targets' logic, also run as tests over fuzz/corpus/.

pub mod codes;
pub mod command;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod limits;
pub mod reply;
pub mod subscribe;
pub mod wire;

pub use codes::ErrorCode;
pub use command::{encode_op, CommandRef, Opcode};
pub use frame::{Frame, FrameError, Kind};
pub use handshake::{Binding, ErrorFrame, Hello, HelloOk, Role, ShardRule, ANY_SHARD};
pub use reply::{Detail, PartitionDeleted, Refused, Reply};
pub use wire::{DecodeError, EncodeError};
