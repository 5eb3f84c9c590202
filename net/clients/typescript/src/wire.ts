/**
 * The primitive field codec: a growable little-endian {@link Writer} and a bounds-checked
 * {@link Reader} over a borrowed buffer. Invariant: the reader never reads past its end (every
 * read past it is a {@link DecodeError} naming the field), never allocates more than the bytes
 * it has, and refuses invalid UTF-8 and flags other than 0 and 1.
 *
 * @module
 */

import { isUtf8 } from 'node:buffer';

import { invalid } from './errors.js';
import { SAFE_INTEGER_MAX } from './limits.js';

const TWO_32 = 0x1_0000_0000;
const U64_MAX = (1n << 64n) - 1n;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes that are not what the protocol says: which field, and why. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

/** A `u64` input: a non-negative safe integer, or a bigint up to 2^64 − 1. */
export type U64 = number | bigint;

/** Appends fields to a buffer that grows as needed (up to `sizeMaxBytes`). */
export class Writer {
  buf: Buffer;
  pos = 0;
  private readonly sizeMaxBytes: number;

  constructor(initialSizeBytes = 256, sizeMaxBytes = 64 * 1024 * 1024) {
    this.buf = Buffer.allocUnsafe(initialSizeBytes);
    this.sizeMaxBytes = sizeMaxBytes;
  }

  /** Makes room for `count` more bytes. */
  ensure(count: number): void {
    const need = this.pos + count;
    if (need <= this.buf.length) return;
    if (need > this.sizeMaxBytes) {
      throw new RangeError(`buffer of ${need} bytes exceeds its limit of ${this.sizeMaxBytes} bytes`);
    }
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const grown = Buffer.allocUnsafe(Math.min(size, this.sizeMaxBytes));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  u8(value: number): void {
    this.ensure(1);
    this.buf[this.pos++] = value;
  }

  flag(value: boolean): void {
    this.u8(value ? 1 : 0);
  }

  u16(value: number): void {
    this.ensure(2);
    this.buf.writeUInt16LE(value, this.pos);
    this.pos += 2;
  }

  u32(value: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(value >>> 0, this.pos);
    this.pos += 4;
  }

  /** A `u64`; `field` names it in the `invalid` refusal of a value that is not one. */
  u64(value: U64, field: string): void {
    this.ensure(8);
    if (typeof value === 'number') {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw invalid(field, 'not an integer in 0 ..= 2^53-1 (pass a bigint for larger values)');
      }
      const buf = this.buf;
      const pos = this.pos;
      const low = value % TWO_32;
      buf.writeUInt32LE(low, pos);
      buf.writeUInt32LE((value - low) / TWO_32, pos + 4);
    } else {
      if (value < 0n || value > U64_MAX) throw invalid(field, 'not an integer in 0 ..= 2^64-1');
      this.buf.writeBigUInt64LE(value, this.pos);
    }
    this.pos += 8;
  }

  /** A `str8`: refused locally as `invalid` when over 255 bytes. */
  str8(value: string, field: string): void {
    if (typeof value !== 'string') throw invalid(field, 'not a string');
    // Every UTF-16 unit is at least one byte: longer strings cannot fit.
    if (value.length > 0xff) throw invalid(field, `${Buffer.byteLength(value)} bytes, longer than 255`);
    const at = this.pos;
    this.ensure(1 + value.length * 3);
    this.pos = at + 1;
    const written = this.text(value);
    if (written > 0xff) {
      this.pos = at;
      throw invalid(field, `${written} bytes, longer than 255`);
    }
    this.buf[at] = written;
  }

  /** A `str16`: refused locally as `invalid` when over `max` bytes (at most 65 535). */
  str16(value: string, field: string, max = 0xffff): void {
    if (typeof value !== 'string') throw invalid(field, 'not a string');
    if (value.length > max) throw invalid(field, `${Buffer.byteLength(value)} bytes, longer than ${max}`);
    const at = this.pos;
    this.ensure(2 + value.length * 3);
    this.pos = at + 2;
    const written = this.text(value);
    if (written > max) {
      this.pos = at;
      throw invalid(field, `${written} bytes, longer than ${max}`);
    }
    this.buf.writeUInt16LE(written, at);
  }

  /** Raw bytes. */
  bytes(value: Uint8Array): void {
    this.ensure(value.length);
    this.buf.set(value, this.pos);
    this.pos += value.length;
  }

  /** A copy of what was written. */
  take(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  /** Writes `value` as UTF-8 at `pos` (room for 3 bytes per UTF-16 unit is there); its size. */
  private text(value: string): number {
    const buf = this.buf;
    let pos = this.pos;
    const length = value.length;
    // Names are short ASCII: a plain loop beats a call into the runtime.
    if (length <= 64) {
      let index = 0;
      for (; index < length; index++) {
        const unit = value.charCodeAt(index);
        if (unit >= 0x80) break;
        buf[pos++] = unit;
      }
      if (index === length) {
        this.pos = pos;
        return length;
      }
      pos = this.pos;
    }
    const written = buf.write(value, pos, 'utf8');
    this.pos = pos + written;
    return written;
  }
}

/** Reads fields from `buf[pos .. end)`. */
export class Reader {
  buf: Buffer;
  pos: number;
  end: number;

  constructor(buf: Buffer, pos = 0, end = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** Bytes left. */
  get remaining(): number {
    return this.end - this.pos;
  }

  need(count: number, field: string): void {
    if (this.pos + count > this.end) throw new DecodeError(`${field}: truncated`);
  }

  u8(field: string): number {
    if (this.pos >= this.end) throw new DecodeError(`${field}: truncated`);
    return this.buf[this.pos++]!;
  }

  flag(field: string): boolean {
    const value = this.u8(field);
    if (value > 1) throw new DecodeError(`${field}: flag of ${value} (0 or 1)`);
    return value === 1;
  }

  u16(field: string): number {
    this.need(2, field);
    const value = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return value;
  }

  u32(field: string): number {
    this.need(4, field);
    const value = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return value;
  }

  /** A `u64` as a number; one above 2^53 − 1 (no count of the contract is) is refused. */
  u64(field: string): number {
    this.need(8, field);
    const low = this.buf.readUInt32LE(this.pos);
    const high = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    const value = high * TWO_32 + low;
    if (value > SAFE_INTEGER_MAX) throw new DecodeError(`${field}: ${this.bigAt(this.pos - 8)} is above 2^53-1`);
    return value;
  }

  /** A `u64` as a number when it is a safe integer, else as a bigint. */
  u64Any(field: string): U64 {
    this.need(8, field);
    const high = this.buf.readUInt32LE(this.pos + 4);
    if (high <= 0x1f_ffff) return this.u64(field);
    const value = this.bigAt(this.pos);
    this.pos += 8;
    return value;
  }

  /** `count` raw bytes, borrowed. */
  bytes(count: number, field: string): Buffer {
    this.need(count, field);
    const bytes = this.buf.subarray(this.pos, this.pos + count);
    this.pos += count;
    return bytes;
  }

  /** Skips `count` bytes. */
  skip(count: number, field: string): void {
    this.need(count, field);
    this.pos += count;
  }

  str8(field: string): string {
    return this.text(this.u8(field), field);
  }

  str16(field: string): string {
    return this.text(this.u16(field), field);
  }

  optStr8(field: string): string | null {
    return this.flag(field) ? this.str8(field) : null;
  }

  optStr16(field: string): string | null {
    return this.flag(field) ? this.str16(field) : null;
  }

  /** Steps over `length` bytes of UTF-8, checking them without building a string. */
  skipText(length: number, field: string): void {
    const start = this.advance(length, field);
    if (!isAscii(this.buf, start, this.pos) && !isUtf8(this.buf.subarray(start, this.pos))) {
      throw new DecodeError(`${field}: not valid UTF-8`);
    }
  }

  /** Refuses bytes after the last field. */
  finish(): void {
    if (this.pos !== this.end) throw new DecodeError(`${this.end - this.pos} trailing bytes after the last field`);
  }

  /** `length` bytes of UTF-8. */
  text(length: number, field: string): string {
    const start = this.advance(length, field);
    const buf = this.buf;
    if (isAscii(buf, start, this.pos)) return buf.toString('latin1', start, this.pos);
    try {
      return utf8.decode(buf.subarray(start, this.pos));
    } catch {
      throw new DecodeError(`${field}: not valid UTF-8`);
    }
  }

  /** Moves past `length` bytes that must be there; where they start. */
  private advance(length: number, field: string): number {
    this.need(length, field);
    const start = this.pos;
    this.pos = start + length;
    return start;
  }

  private bigAt(pos: number): bigint {
    return this.buf.readBigUInt64LE(pos);
  }
}

/** Whether `buf[start..end)` is all ASCII (then it is valid UTF-8 and its latin1 reading). */
function isAscii(buf: Buffer, start: number, end: number): boolean {
  for (let index = start; index < end; index++) {
    if (buf[index]! >= 0x80) return false;
  }
  return true;
}
