/**
 * Cuts a byte stream into frames. Whole frames inside a chunk are handed over in place (no
 * copy); a frame split across chunks is gathered in a buffer of exactly its size, which is never
 * allocated before the length prefix was checked against the limit.
 *
 * @module
 */

import { performance } from 'node:perf_hooks';

import { checkFrame } from './frame.js';

/** Receives whole frames: `buf[pos .. pos + total)`, prefix included. */
export type FrameHandler = (buf: Buffer, pos: number, total: number) => void;

/** Cuts a byte stream into whole frames, bounded by a frame size limit. */
export class FrameReader {
  private buf: Buffer | null = null;
  private len = 0;
  /** `performance.now()` when the partial frame's first bytes arrived. */
  startedAt = 0;
  private readonly sizeMaxBytes: number;
  private readonly onFrame: FrameHandler;

  constructor(sizeMaxBytes: number, onFrame: FrameHandler) {
    this.sizeMaxBytes = sizeMaxBytes;
    this.onFrame = onFrame;
  }

  /** Bytes of a frame received so far (0: none in progress). */
  get partialBytes(): number {
    return this.len;
  }

  /** The size of the frame in progress, prefix included (0 until its prefix is there). */
  get partialTotal(): number {
    return this.len >= 4 ? 4 + this.buf!.readUInt32LE(0) : 0;
  }

  reset(): void {
    this.buf = null;
    this.len = 0;
  }

  /**
   * Takes a chunk; calls the handler for each whole frame while `alive()` holds. Throws
   * {@link FrameError} for bytes that can never be a frame.
   */
  push(chunk: Buffer, alive: () => boolean): void {
    let pos = 0;
    const end = chunk.length;
    if (this.len > 0) {
      pos = this.fill(chunk);
      if (this.len > 0) return;
    }
    while (pos < end && alive()) {
      const total = checkFrame(chunk, pos, end, this.sizeMaxBytes);
      if (total === 0) {
        this.keep(chunk, pos, end);
        return;
      }
      this.onFrame(chunk, pos, total);
      pos += total;
    }
  }

  /** Adds the start of `chunk` to the partial frame; returns how many bytes it took. */
  private fill(chunk: Buffer): number {
    let taken = 0;
    if (this.len < 4) {
      taken = Math.min(4 - this.len, chunk.length);
      chunk.copy(this.buf!, this.len, 0, taken);
      this.len += taken;
      if (this.len < 4) return taken;
      checkFrame(this.buf!, 0, this.len, this.sizeMaxBytes);
      const total = this.partialTotal;
      const grown = Buffer.allocUnsafe(total);
      this.buf!.copy(grown, 0, 0, this.len);
      this.buf = grown;
    }
    const buf = this.buf!;
    const total = this.partialTotal;
    const take = Math.min(total - this.len, chunk.length - taken);
    chunk.copy(buf, this.len, taken, taken + take);
    this.len += take;
    taken += take;
    checkFrame(buf, 0, this.len, this.sizeMaxBytes);
    if (this.len === total) {
      this.reset();
      this.onFrame(buf, 0, total);
    }
    return taken;
  }

  /** Keeps `chunk[pos .. end)`, the start of a frame (its prefix, if there, was checked). */
  private keep(chunk: Buffer, pos: number, end: number): void {
    const have = end - pos;
    const total = have >= 4 ? 4 + chunk.readUInt32LE(pos) : 4;
    const buf = Buffer.allocUnsafe(total);
    chunk.copy(buf, 0, pos, end);
    this.buf = buf;
    this.len = have;
    this.startedAt = performance.now();
  }
}
