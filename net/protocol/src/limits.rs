//! Every limit of the binary protocol, in one place, units last. Contract values come from
//! public contract ("Names and limits"); the rest are defaults of
//! [`super::BinaryConfig`]. Relations between limits are checked at compile time.
//!
//! A limit that a `&'static str` refusal states is written once as a macro that expands to its
//! literal, so the refusal is `concat!`ed from it and cannot drift from the constant.

use std::time::Duration;

macro_rules! commands_per_frame_max {
    () => {
        1_000
    };
}
pub(crate) use commands_per_frame_max;

/// The only protocol version this build speaks (byte 0 of every frame header).
pub const PROTOCOL_VERSION: u8 = 1;
/// The `u32` length prefix in front of every frame.
pub const LENGTH_PREFIX_SIZE_BYTES: usize = 4;
/// The fixed frame header: version, kind, reserved, request id.
pub const FRAME_HEADER_SIZE_BYTES: usize = 12;
/// Default largest frame a server accepts (the length prefix's value), in bytes.
pub const FRAME_SIZE_MAX_BYTES_DEFAULT: usize = 1024 * 1024;
/// Absolute cap: no decoder, client or server, buffers a frame larger than this, in bytes.
/// Response frames may be larger than the request limit (a page is larger than its query).
pub const FRAME_SIZE_CAP_BYTES: usize = 16 * 1024 * 1024;
/// Most commands in one REQUEST frame (contract: batch ≤ 1 000 commands).
pub const COMMANDS_PER_FRAME_MAX: usize = commands_per_frame_max!();
/// Longest token in a HELLO, in bytes (its length is a `u16`).
pub const TOKEN_SIZE_MAX_BYTES: usize = u16::MAX as usize;
/// Longest message in an ERROR frame, in bytes (longer ones are cut at a char boundary).
pub const ERROR_MESSAGE_SIZE_MAX_BYTES: usize = 1024;

/// Default most REQUEST frames in flight on one connection; the server stops reading there.
pub const IN_FLIGHT_REQUESTS_MAX_DEFAULT: usize = 256;
/// Default bytes of encoded responses a connection buffers for a slow reader before it stops
/// reading requests (the bound that keeps a client that stops reading from growing memory).
pub const WRITE_BUFFER_SIZE_MAX_BYTES_DEFAULT: usize = 1024 * 1024;
/// Default bound on open binary connections; the listener stops accepting at the bound.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;
/// Default time a client has to send HELLO after connecting.
pub const HELLO_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default time a started frame has to arrive completely.
pub const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default time a connection may stay without any request in flight or arriving.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Default time buffered responses may wait without the socket taking a byte: a client that
/// stops reading is disconnected after it.
pub const WRITE_STALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How often a connection checks its timeouts (the granularity of every timeout above).
pub const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes a connection reads per `read` call at most (its read buffer grows to a frame only
/// when a frame is that large).
pub const READ_CHUNK_SIZE_BYTES: usize = 64 * 1024;

/// After an ERROR frame or at shutdown: how long the peer's remaining bytes are read and
/// dropped after our side is shut (so the close does not reset away the ERROR frame).
pub const LINGER: Duration = Duration::from_secs(2);
/// ... and at most this many bytes.
pub const LINGER_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Client: encoded frames waiting for the socket beyond which a connection builds no new frame.
pub const CLIENT_WRITE_BUFFER_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// Client: how often a connection answers `Timeout` to calls past their deadline.
pub const CLIENT_DEADLINE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

const _: () = assert!(FRAME_SIZE_MAX_BYTES_DEFAULT <= FRAME_SIZE_CAP_BYTES);
const _: () = assert!(FRAME_SIZE_CAP_BYTES <= u32::MAX as usize);
const _: () = assert!(COMMANDS_PER_FRAME_MAX <= u16::MAX as usize);
// A HELLO with the longest token and client name fits the smallest frame limit we allow.
const _: () = assert!(
    FRAME_HEADER_SIZE_BYTES + 2 + TOKEN_SIZE_MAX_BYTES + 1 + 255 <= FRAME_SIZE_MAX_BYTES_DEFAULT
);
