/**
 * Every limit of the binary protocol (docs/protocol.md) that the client relies on, in one
 * place, units last.
 *
 * @module
 */

/** The protocol version this package speaks (byte 4 of every frame). Package 1.x ↔ protocol 1. */
export const PROTOCOL_VERSION = 1;
/** The `u32` length prefix in front of every frame. */
export const LENGTH_PREFIX_SIZE_BYTES = 4;
/** The fixed header after the prefix: version, kind, reserved, request id. */
export const FRAME_HEADER_SIZE_BYTES = 12;
/** Prefix and header together: where a frame's payload starts. */
export const FRAME_PREAMBLE_SIZE_BYTES = LENGTH_PREFIX_SIZE_BYTES + FRAME_HEADER_SIZE_BYTES;
/** No decoder, client or server, buffers a frame larger than this (`frame_len`, bytes). */
export const FRAME_SIZE_CAP_BYTES = 16 * 1024 * 1024;
/** The largest REQUEST a node accepts by default (HELLO_OK says the node's own). */
export const FRAME_SIZE_MAX_BYTES_DEFAULT = 1024 * 1024;
/** Most commands in one REQUEST frame. */
export const COMMANDS_PER_FRAME_MAX = 1000;
/** Longest token in a HELLO (its length is a `u16`). */
export const TOKEN_SIZE_MAX_BYTES = 0xffff;
/** Most changes a subscription may have granted and not yet received (the node's bound). */
export const CREDIT_HELD_MAX = 1 << 20;
/** Largest integer a `number` field carries exactly (capacity is at most this by contract). */
export const SAFE_INTEGER_MAX = Number.MAX_SAFE_INTEGER;
/** How often a connection checks call deadlines and frame timeouts, in milliseconds. */
export const DEADLINE_CHECK_INTERVAL_MS = 100;
