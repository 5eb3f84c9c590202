/**
 * One pooled connection: its socket, the calls waiting to be sent, the frames in flight and
 * the buffers. Every call enqueued by the same callback and the promise continuations it sets
 * off (and every call enqueued while the connection is at its in-flight bound) leaves in ONE
 * REQUEST frame of up to the
 * node's 1 000 commands and frame size (automatic batching); frames are pipelined by request id
 * and results matched back by id and position. On a lost connection every unanswered call is
 * queued again (up to `retries` times, within its deadline) and the connection is made again
 * with backoff.
 *
 * Invariant: every call enqueued here is settled exactly once: with its result, or an error.
 * Memory is bounded: the backlog by `backlogSizeMaxBytes`, frames in flight by the in-flight
 * bound, the read buffer by one frame of at most `frameSizeMaxBytes`.
 *
 * @module
 */

import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

import { encodeCommand } from './commands.js';
import {
  type BookdError,
  ClosedError,
  ProtocolError,
  RefusedError,
  RequestTooLargeError,
  ServerError,
  TimeoutError,
  UnavailableError,
} from './errors.js';
import { Kind, kindName, requestIdAt, writeRequestId } from './frame.js';
import { FrameReader } from './frame-reader.js';
import { COMMANDS_PER_FRAME_MAX, FRAME_PREAMBLE_SIZE_BYTES, FRAME_HEADER_SIZE_BYTES } from './limits.js';
import { decodeErrorFrame, decodeHelloOk, helloFrame } from './messages.js';
import { backoffMs, type ResolvedOptions } from './options.js';
import { decodeResult, skipResult } from './results.js';
import type { Command, HelloOk, Result } from './types.js';
import { DecodeError, Reader, Writer } from './wire.js';

/** How a call wants its answer. */
export const Mode = {
  /** One command; its result (an error result rejects). */
  One: 0,
  /** Many commands; one result each. */
  Many: 1,
  /** Many commands; one status each (`0` or the error code's number), bodies not decoded. */
  Statuses: 2,
} as const;

/** One of {@link Mode}'s values. */
export type Mode = (typeof Mode)[keyof typeof Mode];

/** A call queued on a connection. */
export interface Call {
  /** Its encoded commands: in the backlog's scratch buffer, then in its frame's buffer. */
  start: number;
  end: number;
  count: number;
  mode: Mode;
  /** Mode.One: the result kind the caller needs (`null`: any). */
  expect: Result['kind'] | null;
  resolve: (value: never) => void;
  reject: (error: Error) => void;
  /** `performance.now()` past which the call is answered with a timeout. */
  deadline: number;
  /** Times the call was lost with a connection. */
  attempts: number;
  done: boolean;
}

/** Counters of a pool (statistics only). */
export interface ClientStats {
  /** REQUEST frames sent. */
  framesSent: number;
  /** Commands in those frames (commands ÷ frames shows how well calls were batched). */
  commandsSent: number;
  /** Socket writes (several frames may share one). */
  writes: number;
  /** Connections made after the first. */
  reconnects: number;
}

interface InFlight {
  buf: Buffer;
  calls: Call[];
}

type State = 'idle' | 'connecting' | 'ready' | 'backoff' | 'closed';

/** Bytes of frames waiting in the socket beyond which no new frame is built. */
const WRITE_BUFFER_SIZE_MAX_BYTES = 1024 * 1024;
/** The scratch buffer's first size; it grows up to the backlog bound. */
const SCRATCH_SIZE_BYTES = 16 * 1024;

let flushQueue: Connection[] = [];
let flushQueued = false;

/**
 * Flushes every connection that asked. Scheduled with `process.nextTick`, it runs once the
 * current callback and every promise continuation it set off are done: the calls they made
 * leave together, and a connection's frame goes out as soon as its callers have made them (not
 * after every other socket's callbacks of the same event-loop turn).
 */
function flushScheduled(): void {
  flushQueued = false;
  const queue = flushQueue;
  flushQueue = [];
  for (const connection of queue) connection.flush();
}

/** One connection of a pool (internal: use {@link Client}). */
export class Connection {
  readonly host: string;
  readonly port: number;
  private readonly options: ResolvedOptions;
  private readonly stats: ClientStats;
  private state: State = 'idle';
  private socket: net.Socket | null = null;
  /** The node's handshake on the current connection, else the last one. */
  hello: HelloOk | null = null;
  private scratch: Writer;
  private backlog: Call[] = [];
  private backlogHead = 0;
  private readonly inFlight = new Map<number, InFlight>();
  private nextRequestId = 1;
  private flushPending = false;
  /** Cuts what the socket reads into frames. */
  private readonly frames: FrameReader;
  private failures = 0;
  private connects = 0;
  private connectTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private waiters: { resolve: (hello: HelloOk) => void; reject: (error: Error) => void }[] = [];

  constructor(host: string, port: number, options: ResolvedOptions, stats: ClientStats) {
    this.host = host;
    this.port = port;
    this.options = options;
    this.stats = stats;
    this.scratch = new Writer(SCRATCH_SIZE_BYTES, options.backlogSizeMaxBytes);
    this.frames = new FrameReader(options.frameSizeMaxBytes, (buf, pos, total) => this.handleFrame(buf, pos, total));
  }

  /** Calls waiting or in flight. */
  get pending(): number {
    let count = this.backlog.length - this.backlogHead;
    for (const frame of this.inFlight.values()) count += frame.calls.length;
    return count;
  }

  /** Connects now (if not connected) and resolves with the node's handshake. */
  open(): Promise<HelloOk> {
    if (this.state === 'ready' && this.hello) return Promise.resolve(this.hello);
    if (this.state === 'closed') return Promise.reject(new ClosedError());
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (this.state === 'idle' || this.state === 'backoff') this.connect();
    });
  }

  /**
   * Queues `commands` as one call (Mode.One: exactly one command). Throws (synchronously) a
   * local refusal when a command cannot be encoded or the backlog is full.
   */
  enqueue(
    commands: Command | readonly Command[],
    mode: Mode,
    expect: Result['kind'] | null,
    timeoutMs: number | null,
    localErrors?: (Error | undefined)[],
  ): Promise<unknown> {
    if (this.state === 'closed') return Promise.reject(new ClosedError());
    const scratch = this.scratch;
    const start = scratch.pos;
    let count = 1;
    try {
      if (mode === Mode.One) {
        encodeCommand(scratch, commands as Command);
      } else {
        // A command that cannot be encoded gets its own local refusal and is not sent.
        const list = commands as readonly Command[];
        count = 0;
        for (let index = 0; index < list.length; index++) {
          try {
            encodeCommand(scratch, list[index]!);
            count++;
          } catch (error) {
            if (!(error instanceof RefusedError) || localErrors === undefined) throw error;
            localErrors[index] = error;
          }
        }
        if (count === 0) return Promise.resolve([]);
      }
    } catch (error) {
      scratch.pos = start;
      if (error instanceof RangeError) {
        return Promise.reject(
          new RefusedError(
            { code: 'overloaded', details: { table: 'client backlog', max: this.options.backlogSizeMaxBytes } },
            true,
            `overloaded: the connection's backlog of ${this.options.backlogSizeMaxBytes} bytes is full; retry later`,
          ),
        );
      }
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const call: Call = {
        start,
        end: scratch.pos,
        count,
        mode,
        expect,
        resolve: resolve as (value: never) => void,
        reject,
        deadline: timeoutMs === null ? Infinity : performance.now() + timeoutMs,
        attempts: 0,
        done: false,
      };
      this.backlog.push(call);
      this.wake();
    });
  }

  /** Makes the connection send what waits: flushes once the current callback is done, or connects. */
  private wake(): void {
    if (this.state === 'ready') {
      if (!this.flushPending) {
        this.flushPending = true;
        flushQueue.push(this);
        if (!flushQueued) {
          flushQueued = true;
          process.nextTick(flushScheduled);
        }
      }
    } else if (this.state === 'idle') {
      this.connect();
    }
  }

  /** Builds and writes frames from the backlog while the in-flight bound allows. */
  flush(): void {
    this.flushPending = false;
    const socket = this.socket;
    const hello = this.hello;
    if (this.state !== 'ready' || socket === null || hello === null) return;
    const inFlightMax = Math.max(1, Math.min(this.options.framesInFlightMax, hello.inFlightMax));
    const frameSizeMax = Math.min(hello.frameSizeMaxBytes, this.options.frameSizeMaxBytes);
    const commandsMax = Math.max(1, Math.min(hello.commandsPerFrameMax, COMMANDS_PER_FRAME_MAX));
    let corked = false;
    while (
      this.backlogHead < this.backlog.length &&
      this.inFlight.size < inFlightMax &&
      socket.writableLength < WRITE_BUFFER_SIZE_MAX_BYTES
    ) {
      const frame = this.buildFrame(frameSizeMax, commandsMax);
      if (frame === null) continue;
      if (!corked) {
        socket.cork();
        corked = true;
      }
      socket.write(frame);
    }
    if (corked) {
      socket.uncork();
      this.stats.writes++;
    }
    this.compactBacklog();
  }

  /** Moves calls from the backlog into one REQUEST frame; `null` if none could go. */
  private buildFrame(frameSizeMax: number, commandsMax: number): Buffer | null {
    const backlog = this.backlog;
    const room = frameSizeMax - FRAME_HEADER_SIZE_BYTES - 2;
    let head = this.backlogHead;
    let count = 0;
    let size = 0;
    const calls: Call[] = [];
    while (head < backlog.length) {
      const call = backlog[head]!;
      if (call.done) {
        head++;
        continue;
      }
      const bytes = call.end - call.start;
      const fits = count + call.count <= commandsMax && size + bytes <= room;
      if (!fits && calls.length > 0) break;
      head++;
      if (!fits) {
        this.settle(
          call,
          new RequestTooLargeError(
            `a call of ${call.count} commands in ${bytes} bytes exceeds the node's limits ` +
              `(${commandsMax} commands, ${room} bytes of commands per frame)`,
          ),
        );
        continue;
      }
      count += call.count;
      size += bytes;
      calls.push(call);
    }
    this.backlogHead = head;
    if (calls.length === 0) return null;
    const requestId = this.nextRequestId++;
    const buf = Buffer.allocUnsafe(FRAME_PREAMBLE_SIZE_BYTES + 2 + size);
    buf.writeUInt32LE(FRAME_HEADER_SIZE_BYTES + 2 + size, 0);
    buf[4] = 1;
    buf[5] = Kind.Request;
    buf[6] = 0;
    buf[7] = 0;
    writeRequestId(buf, 8, requestId);
    buf.writeUInt16LE(count, 16);
    const source = this.scratch.buf;
    let pos = FRAME_PREAMBLE_SIZE_BYTES + 2;
    // Copy runs of adjacent calls at once (usually the whole frame is one run).
    let runStart = calls[0]!.start;
    let runEnd = runStart;
    for (const call of calls) {
      if (call.start !== runEnd) {
        pos += source.copy(buf, pos, runStart, runEnd);
        runStart = call.start;
      }
      runEnd = call.end;
    }
    source.copy(buf, pos, runStart, runEnd);
    // Offsets of each call inside the frame, for a resend.
    let offset = FRAME_PREAMBLE_SIZE_BYTES + 2;
    for (const call of calls) {
      const length = call.end - call.start;
      call.start = offset;
      call.end = offset + length;
      offset += length;
    }
    this.inFlight.set(requestId, { buf, calls });
    this.stats.framesSent++;
    this.stats.commandsSent += count;
    return buf;
  }

  /** Drops the sent part of the backlog; moves what is left to the front of the scratch buffer. */
  private compactBacklog(): void {
    const backlog = this.backlog;
    if (this.backlogHead >= backlog.length) {
      backlog.length = 0;
      this.backlogHead = 0;
      this.scratch.pos = 0;
      return;
    }
    if (this.backlogHead < 1024 && this.backlogHead * 2 < backlog.length) return;
    const rest = backlog.slice(this.backlogHead).filter((call) => !call.done);
    this.backlog = rest;
    this.backlogHead = 0;
    if (rest.length === 0) {
      this.scratch.pos = 0;
      return;
    }
    const from = rest[0]!.start;
    if (from > 0) {
      const scratch = this.scratch;
      scratch.buf.copy(scratch.buf, 0, from, scratch.pos);
      scratch.pos -= from;
      for (const call of rest) {
        call.start -= from;
        call.end -= from;
      }
    }
  }

  private connect(): void {
    if (this.state === 'closed' || this.state === 'connecting' || this.state === 'ready') return;
    if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
    this.state = 'connecting';
    if (this.connects++ > 0) this.stats.reconnects++;
    const socket = net.connect({ host: this.host, port: this.port });
    this.socket = socket;
    socket.setNoDelay(true);
    this.frames.reset();
    this.connectTimer = setTimeout(() => {
      this.connectFailed(new TimeoutError(`no handshake from ${this.host}:${this.port} within ${this.options.connectTimeoutMs} ms`));
    }, this.options.connectTimeoutMs);
    socket.on('connect', () => {
      socket.write(helloFrame({ token: this.options.token, clientName: this.options.clientName }));
    });
    socket.on('data', (chunk: Buffer) => {
      if (socket === this.socket) this.onData(chunk);
    });
    socket.on('error', (error: Error) => {
      if (socket !== this.socket) return;
      this.dropped(new UnavailableError(`${this.host}:${this.port}: ${error.message}`, { cause: error }));
    });
    socket.on('close', () => {
      if (socket !== this.socket) return;
      const got = this.frames.partialBytes;
      const partial = got > 0 ? ` in the middle of a frame (${got} of ${this.frames.partialTotal || '?'} bytes received)` : '';
      this.dropped(new UnavailableError(`${this.host}:${this.port} closed the connection${partial}`));
    });
    socket.on('drain', () => {
      if (socket === this.socket && this.state === 'ready') this.flush();
    });
  }

  /** The socket ended or failed: a failed handshake, or a lost connection. */
  private dropped(reason: BookdError): void {
    if (this.state === 'connecting') this.connectFailed(reason);
    else if (this.state === 'ready') this.lost(reason, null);
  }

  private handshakeDone(hello: HelloOk): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.hello = hello;
    this.state = 'ready';
    this.failures = 0;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.resolve(hello);
    this.flush();
  }

  private connectFailed(error: BookdError): void {
    if (this.state !== 'connecting') return;
    this.teardown();
    this.failures++;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.reject(error);
    // A refusal by the node (a wrong token) is final; anything else costs each call one retry.
    const final = error instanceof ServerError;
    const cause = new UnavailableError(`cannot connect to ${this.host}:${this.port}: ${error.message}`, { cause: error });
    this.chargeBacklog(final ? error : cause, final);
    this.afterLoss();
  }

  /**
   * The connection is gone. In-flight calls fail with `failInFlight` when given (the node broke
   * the protocol or refused the connection); otherwise they are queued again, charged one retry.
   */
  private lost(reason: BookdError, failInFlight: BookdError | null): void {
    if (this.state !== 'ready') return;
    this.teardown();
    this.failures++;
    for (const frame of this.inFlight.values()) {
      for (const call of frame.calls) {
        if (call.done) continue;
        if (failInFlight) this.settle(call, failInFlight);
        else this.requeue(call, frame.buf);
      }
    }
    this.inFlight.clear();
    this.chargeBacklog(new UnavailableError(`${reason.message.replace(/^unavailable: /, '')}; retries exhausted`, { cause: reason }), false);
    this.afterLoss();
  }

  /** Every waiting call is charged one retry: failed when it has none left or no time left. */
  private chargeBacklog(error: BookdError, final: boolean): void {
    const now = performance.now();
    const pause = backoffMs(this.options, this.failures);
    for (let index = this.backlogHead; index < this.backlog.length; index++) {
      const call = this.backlog[index]!;
      if (call.done) continue;
      if (final) {
        this.settle(call, error);
      } else if (++call.attempts > this.options.retries) {
        this.settle(call, error);
      } else if (now + pause >= call.deadline) {
        this.settle(call, new TimeoutError(`timed out while reconnecting to ${this.host}:${this.port}`));
      }
    }
    this.compactBacklog();
  }

  /** Puts an unanswered call's bytes back into the backlog. */
  private requeue(call: Call, buf: Buffer): void {
    const scratch = this.scratch;
    const length = call.end - call.start;
    try {
      scratch.ensure(length);
    } catch {
      this.settle(call, new UnavailableError('connection lost, and the backlog is too full to resend'));
      return;
    }
    buf.copy(scratch.buf, scratch.pos, call.start, call.end);
    call.start = scratch.pos;
    call.end = scratch.pos + length;
    scratch.pos += length;
    this.backlog.push(call);
  }

  private afterLoss(): void {
    if (this.state === 'closed') return;
    if (this.backlogHead < this.backlog.length) {
      this.state = 'backoff';
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, backoffMs(this.options, this.failures));
    } else {
      this.state = 'idle';
    }
  }

  private teardown(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.destroy();
    this.frames.reset();
  }

  /** Settles `call` with an error or a value, once. */
  private settle(call: Call, error: Error | null, value?: unknown): void {
    if (call.done) return;
    call.done = true;
    if (error) call.reject(error);
    else call.resolve(value as never);
  }

  /** Bytes from the socket: whole frames are handled in place, a partial one is kept. */
  private onData(chunk: Buffer): void {
    try {
      this.frames.push(chunk, () => this.socket !== null);
    } catch (error) {
      this.broken(error);
    }
  }

  /** One whole frame at `buf[pos .. pos + total)`. */
  private handleFrame(buf: Buffer, pos: number, total: number): void {
    const kind = buf[pos + 5]!;
    const requestId = requestIdAt(buf, pos);
    const payload = pos + FRAME_PREAMBLE_SIZE_BYTES;
    const end = pos + total;
    if (this.state === 'connecting') {
      if (kind === Kind.HelloOk) {
        this.handshakeDone(decodeHelloOk(buf, payload, end));
      } else if (kind === Kind.Error) {
        const error = decodeErrorFrame(buf, payload, end);
        this.connectFailed(new ServerError(error.code, error.message, requestId));
      } else {
        throw new DecodeError(`${kindName(kind)} frame before HELLO_OK`);
      }
      return;
    }
    if (kind === Kind.Response) {
      this.onResponse(buf, payload, end, requestId);
    } else if (kind === Kind.Error) {
      const error = decodeErrorFrame(buf, payload, end);
      const server = new ServerError(error.code, error.message, requestId);
      // `unavailable` (stopping, idle): nothing in flight was lost for good, send it again.
      this.lost(server, error.code === 'unavailable' ? null : server);
    } else {
      throw new DecodeError(`unexpected ${kindName(kind)} frame`);
    }
  }

  /** Answers the calls of a RESPONSE once every result in it decoded. */
  private onResponse(buf: Buffer, pos: number, end: number, requestId: number): void {
    const frame = this.inFlight.get(requestId);
    if (frame === undefined) throw new DecodeError(`RESPONSE to unknown request ${requestId}`);
    const reader = new Reader(buf, pos, end);
    const count = reader.u16('count');
    let expected = 0;
    for (const call of frame.calls) expected += call.count;
    if (count !== expected) throw new DecodeError(`RESPONSE of ${count} results to a REQUEST of ${expected} commands`);
    const values: unknown[] = new Array(frame.calls.length);
    for (let index = 0; index < frame.calls.length; index++) {
      const call = frame.calls[index]!;
      if (call.mode === Mode.One) {
        values[index] = decodeResult(reader);
      } else if (call.mode === Mode.Statuses) {
        const statuses = new Array<number>(call.count);
        for (let item = 0; item < call.count; item++) statuses[item] = skipResult(reader);
        values[index] = statuses;
      } else {
        const results = new Array<Result>(call.count);
        for (let item = 0; item < call.count; item++) results[item] = decodeResult(reader);
        values[index] = results;
      }
    }
    reader.finish();
    this.inFlight.delete(requestId);
    for (let index = 0; index < frame.calls.length; index++) {
      const call = frame.calls[index]!;
      if (call.done) continue;
      const value = values[index];
      if (call.mode !== Mode.One) {
        this.settle(call, null, value);
        continue;
      }
      const result = value as Result;
      if (result.kind === 'error') this.settle(call, new RefusedError(result));
      else if (call.expect !== null && result.kind !== call.expect) {
        this.settle(call, new ProtocolError(`a ${result.kind} result to a command that answers with a ${call.expect}`));
      } else this.settle(call, null, result);
    }
    if (this.backlogHead < this.backlog.length) this.wake();
  }

  /** The node broke the protocol: calls in flight fail with it; the connection is made again. */
  private broken(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    const protocol = error instanceof ProtocolError ? error : new ProtocolError(message);
    if (this.state === 'connecting') this.connectFailed(protocol);
    else this.lost(protocol, protocol);
  }

  /** The deadline check (every 100 ms): late calls time out, a stalled frame breaks the connection. */
  tick(now: number): void {
    for (let index = this.backlogHead; index < this.backlog.length; index++) {
      const call = this.backlog[index]!;
      if (!call.done && call.deadline <= now) this.settle(call, new TimeoutError());
    }
    for (const frame of this.inFlight.values()) {
      for (const call of frame.calls) {
        if (!call.done && call.deadline <= now) this.settle(call, new TimeoutError());
      }
    }
    const got = this.frames.partialBytes;
    if (got > 0 && this.state === 'ready' && now - this.frames.startedAt > this.options.frameTimeoutMs) {
      this.broken(
        new ProtocolError(
          `a frame of ${this.frames.partialTotal || '?'} bytes did not complete within ${this.options.frameTimeoutMs} ms ` +
            `(${got} bytes received)`,
        ),
      );
    }
  }

  /** Closes the connection: every waiting call fails with {@link ClosedError}. */
  close(): void {
    if (this.state === 'closed') return;
    const closed = new ClosedError();
    this.state = 'closed';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.teardown();
    for (const frame of this.inFlight.values()) for (const call of frame.calls) this.settle(call, closed);
    this.inFlight.clear();
    for (let index = this.backlogHead; index < this.backlog.length; index++) this.settle(this.backlog[index]!, closed);
    this.backlog = [];
    this.backlogHead = 0;
    for (const waiter of this.waiters) waiter.reject(closed);
    this.waiters = [];
  }
}
