/**
 * Frames: `u32 frame_len` (bytes after the prefix), a 12-byte header (`u8 version`, `u8 kind`,
 * `u16 reserved = 0`, `u64 request_id`) and a payload.
 *
 * Invariant: {@link checkFrame} looks only at the prefix (and the header once it is there) and
 * says whether a whole frame is buffered, more bytes are needed, or the bytes can never become a
 * valid frame: an oversized length is refused from the prefix alone, before any of the body is
 * buffered.
 *
 * @module
 */

import { FRAME_HEADER_SIZE_BYTES, LENGTH_PREFIX_SIZE_BYTES, PROTOCOL_VERSION } from './limits.js';
import { DecodeError, Writer } from './wire.js';

/** Frame kinds (docs/protocol.md, "Frames"). */
export const Kind = {
  Hello: 0x01,
  HelloOk: 0x02,
  Request: 0x03,
  Response: 0x04,
  Subscribe: 0x05,
  Changes: 0x06,
  Credit: 0x07,
  Replicate: 0x10,
  Error: 0xff,
} as const;

/** A frame kind's number. */
export type KindValue = (typeof Kind)[keyof typeof Kind];

const KIND_NAMES: Record<number, string> = {
  0x01: 'HELLO',
  0x02: 'HELLO_OK',
  0x03: 'REQUEST',
  0x04: 'RESPONSE',
  0x05: 'SUBSCRIBE',
  0x06: 'CHANGES',
  0x07: 'CREDIT',
  0x10: 'REPLICATE',
  0xff: 'ERROR',
};

/** The protocol's name of a kind (`RESPONSE`), or its number in hex when unknown. */
export function kindName(kind: number): string {
  return KIND_NAMES[kind] ?? `0x${kind.toString(16).padStart(2, '0')}`;
}

/** Bytes that can never become a valid frame. */
export class FrameError extends DecodeError {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/**
 * Whether `buf[pos .. end)` starts with a whole frame: its size with the prefix, or 0 when more
 * bytes are needed. Throws {@link FrameError} when no more bytes can make it valid (a length
 * under 12 or over `sizeMaxBytes`, a wrong version, an unknown kind, non-zero reserved bytes);
 * the header is checked as soon as its bytes are there.
 */
export function checkFrame(buf: Uint8Array, pos: number, end: number, sizeMaxBytes: number): number {
  const have = end - pos;
  if (have < LENGTH_PREFIX_SIZE_BYTES) return 0;
  const len = (buf[pos]! | (buf[pos + 1]! << 8) | (buf[pos + 2]! << 16)) + buf[pos + 3]! * 0x100_0000;
  if (len < FRAME_HEADER_SIZE_BYTES) {
    throw new FrameError(`frame length ${len} is shorter than the 12-byte header`);
  }
  if (len > sizeMaxBytes) {
    throw new FrameError(`frame length ${len} exceeds the limit of ${sizeMaxBytes} bytes`);
  }
  if (have >= 5 && buf[pos + 4] !== PROTOCOL_VERSION) {
    throw new FrameError(`unsupported protocol version ${buf[pos + 4]} (this client speaks version 1)`);
  }
  if (have >= 6 && KIND_NAMES[buf[pos + 5]!] === undefined) {
    throw new FrameError(`unknown frame kind ${kindName(buf[pos + 5]!)}`);
  }
  if (have >= 8 && (buf[pos + 6] !== 0 || buf[pos + 7] !== 0)) {
    const reserved = buf[pos + 6]! | (buf[pos + 7]! << 8);
    throw new FrameError(`reserved header bytes must be zero, found 0x${reserved.toString(16).padStart(4, '0')}`);
  }
  const total = LENGTH_PREFIX_SIZE_BYTES + len;
  return have >= total ? total : 0;
}

/** The request id of the frame at `pos` (whose header is buffered). */
export function requestIdAt(buf: Buffer, pos: number): number {
  return buf.readUInt32LE(pos + 8) + buf.readUInt32LE(pos + 12) * 0x1_0000_0000;
}

/** Appends a frame's prefix and header; returns where the frame starts (for {@link finishFrame}). */
export function beginFrame(writer: Writer, kind: number, requestId: number): number {
  const start = writer.pos;
  writer.ensure(16);
  const buf = writer.buf;
  buf.writeUInt32LE(0, start);
  buf[start + 4] = PROTOCOL_VERSION;
  buf[start + 5] = kind;
  buf[start + 6] = 0;
  buf[start + 7] = 0;
  writeRequestId(buf, start + 8, requestId);
  writer.pos = start + 16;
  return start;
}

/** Patches the length prefix of the frame begun at `start`; returns its `frame_len`. */
export function finishFrame(writer: Writer, start: number): number {
  const len = writer.pos - start - LENGTH_PREFIX_SIZE_BYTES;
  writer.buf.writeUInt32LE(len, start);
  return len;
}

/** Writes a request id (a safe integer) as a `u64`. */
export function writeRequestId(buf: Buffer, at: number, requestId: number): void {
  const low = requestId % 0x1_0000_0000;
  buf.writeUInt32LE(low, at);
  buf.writeUInt32LE((requestId - low) / 0x1_0000_0000, at + 4);
}

/** One whole frame with `payload`. */
export function encodeFrame(kind: number, requestId: number, payload: Uint8Array): Buffer {
  const writer = new Writer(16 + payload.length);
  const start = beginFrame(writer, kind, requestId);
  writer.bytes(payload);
  finishFrame(writer, start);
  return writer.take();
}
