//! Every limit of the HTTP layer, units last. Contract values are the public contract's limits
//! ("Names and limits"); the rest are defaults of [`super::HttpConfig`].

use std::time::Duration;

/// Largest request body, in bytes (contract: HTTP body ≤ 64 KiB).
pub const BODY_SIZE_MAX_BYTES: usize = 64 * 1024;
/// Most bytes of an over-long body read and dropped before answering `413`, so the client gets
/// the answer rather than a connection reset; bodies announced as longer are not read at all.
pub const BODY_DRAIN_MAX_BYTES: u64 = 1024 * 1024;
/// Most commands in one `/v1/batch` request (contract: batch ≤ 1 000 commands). A macro too, so
/// the refusal that states it is `concat!`ed from it.
macro_rules! batch_commands_max {
    () => {
        1_000
    };
}
pub(crate) use batch_commands_max;
pub const BATCH_COMMANDS_MAX: usize = batch_commands_max!();
/// Default bound on open connections; the listener stops accepting at the bound.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;
/// Default time a client has to send a request's head, counted from when the connection starts
/// waiting for it, so it is also the keep-alive idle timeout: hyper starts the timer whenever a
/// connection waits for its next request (as read in hyper 1.12; the HTTP test
/// `slow_and_idle_clients_are_disconnected` keeps that true).
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default time a client has to send a request's body once its head has arrived.
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default time a response write may make no progress (a client that does not read) before
/// the connection is closed.
pub const WRITE_STALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) hyper buffers, in bytes.
pub const HEAD_SIZE_MAX_BYTES: usize = 16 * 1024;
/// Most headers in one request.
pub const HEADERS_MAX: usize = 64;
/// Seconds a client is asked to wait after `overloaded` (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 1;

// hyper refuses read buffers smaller than 8 KiB.
const _: () = assert!(HEAD_SIZE_MAX_BYTES >= 8 * 1024);
const _: () = assert!(BATCH_COMMANDS_MAX <= u32::MAX as usize);
const _: () = assert!(BODY_DRAIN_MAX_BYTES >= BODY_SIZE_MAX_BYTES as u64);

// A binary REQUEST frame and an HTTP batch carry the same most commands.
const _: () = assert!(BATCH_COMMANDS_MAX == bookd_protocol::limits::COMMANDS_PER_FRAME_MAX);
