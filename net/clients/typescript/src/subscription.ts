/**
 * The change feed as an async iterator: {@link Subscription} follows a node's feed on a
 * connection of its own (SUBSCRIBE, then CHANGES frames, with CREDIT granted as changes are
 * consumed), and after a lost connection (a node restart, a failover to a standby at the same
 * address) connects again and resumes after the last change it handed out, so its consumer sees
 * each change once, in order.
 *
 * Invariant: at most `creditWindow` changes are ever buffered: the node never sends more than
 * the credit granted, and credit is granted only for changes handed to the consumer (a node
 * that sends more is a protocol error).
 *
 * @module
 */

import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

import { type BookdError, ProtocolError, ServerError, UnavailableError } from './errors.js';
import { Kind, beginFrame, finishFrame, kindName, requestIdAt } from './frame.js';
import { FrameReader } from './frame-reader.js';
import { CREDIT_HELD_MAX, FRAME_PREAMBLE_SIZE_BYTES } from './limits.js';
import { decodeChanges, decodeErrorFrame, decodeHelloOk, encodeCredit, encodeSubscribe, helloFrame } from './messages.js';
import type { ResolvedOptions } from './options.js';
import type { Change, HelloOk } from './types.js';
import { DecodeError, Writer } from './wire.js';

/** What to follow. */
export interface SubscribeOptions {
  /** Follow the changes after this cursor (default: from the feed's current end). */
  cursor?: string;
  /** Only this partition's changes (default: all). */
  partition?: string | null;
  /** Changes the node may send ahead of the consumer (default 1 024, at most 2^20). */
  creditWindow?: number;
  /**
   * Time without any frame (the node sends an empty CHANGES every 5 s) after which the
   * connection is taken for lost and made again, in ms (default 15 000).
   */
  silenceTimeoutMs?: number;
  /** Longest pause between reconnection attempts, in ms (default 2 000). */
  reconnectBackoffMaxMs?: number;
}

/** The request id of the subscription on its connection. */
const SUBSCRIPTION_ID = 1;

type Waiter = { resolve: (result: IteratorResult<Change>) => void; reject: (error: Error) => void };

/**
 * A subscription to a node's change feed: `for await (const change of subscription)`. Errs
 * only when the node refuses the subscription ({@link ServerError} `cursor_expired`: list,
 * then follow from a listing's cursor; `invalid`; `unauthorized`) or breaks the protocol
 * ({@link ProtocolError}); a lost connection is made again.
 */
export class Subscription implements AsyncIterableIterator<Change> {
  private readonly host: string;
  private readonly port: number;
  private readonly options: ResolvedOptions;
  private readonly partition: string | null;
  private readonly creditWindow: number;
  private readonly silenceTimeoutMs: number;
  private readonly reconnectBackoffMaxMs: number;
  private position: string;
  /** The frame cursor to adopt once every change before it is handed out. */
  private frameCursor: string | null = null;
  private readonly ready: Change[] = [];
  private readyHead = 0;
  private waiters: Waiter[] = [];
  private failure: Error | null = null;
  private closed = false;
  private socket: net.Socket | null = null;
  private subscribed = false;
  private frames: FrameReader;
  /** Credit granted on this connection and not yet used by a change received. */
  private credit = 0;
  /** Changes handed out since credit was last granted. */
  private consumed = 0;
  private lastFrameAt = 0;
  private attempt = 0;
  private connectCount = 0;
  private timer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private nodeHello: HelloOk | null = null;

  /** @internal Made by {@link Client.subscribe}. */
  constructor(address: { host: string; port: number }, options: ResolvedOptions, subscribe: SubscribeOptions) {
    this.host = address.host;
    this.port = address.port;
    this.options = options;
    this.partition = subscribe.partition ?? null;
    this.position = subscribe.cursor ?? '';
    this.creditWindow = Math.max(2, Math.min(Math.floor(subscribe.creditWindow ?? 1024), CREDIT_HELD_MAX));
    this.silenceTimeoutMs = subscribe.silenceTimeoutMs ?? 15_000;
    this.reconnectBackoffMaxMs = subscribe.reconnectBackoffMaxMs ?? 2_000;
    this.frames = new FrameReader(options.frameSizeMaxBytes, (buf, pos, total) => this.onFrame(buf, pos, total));
  }

  /** The position after the last change handed out (`""` before any: the feed's end): resume from here. */
  get cursor(): string {
    return this.position;
  }

  /** Connections made so far. */
  get connects(): number {
    return this.connectCount;
  }

  /** The node's handshake on the last connection. */
  get hello(): HelloOk | null {
    return this.nodeHello;
  }

  [Symbol.asyncIterator](): Subscription {
    return this;
  }

  /** The next change (connecting on the first call). */
  next(): Promise<IteratorResult<Change>> {
    if (this.readyHead < this.ready.length) return Promise.resolve({ done: false, value: this.take() });
    if (this.failure) {
      // The error once, then the end.
      const failure = this.failure;
      this.failure = null;
      return Promise.reject(failure);
    }
    if (this.closed) return Promise.resolve({ done: true, value: undefined });
    if (this.socket === null && this.reconnectTimer === null) this.connect();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Ends the subscription (what `break` in a `for await` calls). */
  async return(): Promise<IteratorResult<Change>> {
    this.close();
    return { done: true, value: undefined };
  }

  /** Closes the connection; waiting `next()` calls end with `done`. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.teardown();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.resolve({ done: true, value: undefined });
  }

  /** Hands out the next buffered change, moving the cursor past it (and granting credit). */
  private take(): Change {
    const change = this.ready[this.readyHead++]!;
    this.position = change.cursor;
    if (this.readyHead === this.ready.length) {
      this.ready.length = 0;
      this.readyHead = 0;
      if (this.frameCursor !== null) this.position = this.frameCursor;
      this.frameCursor = null;
    }
    this.consumed++;
    if (this.consumed * 2 >= this.creditWindow && this.subscribed) this.grant();
    return change;
  }

  private grant(): void {
    const socket = this.socket;
    if (socket === null) return;
    const writer = new Writer(32);
    const start = beginFrame(writer, Kind.Credit, SUBSCRIPTION_ID);
    encodeCredit(writer, this.consumed);
    finishFrame(writer, start);
    socket.write(writer.take());
    this.credit += this.consumed;
    this.consumed = 0;
  }

  private connect(): void {
    if (this.closed) return;
    this.reconnectTimer = null;
    this.connectCount++;
    // Whatever was buffered and not handed out comes again after the cursor.
    this.ready.length = 0;
    this.readyHead = 0;
    this.frameCursor = null;
    this.subscribed = false;
    this.consumed = 0;
    this.credit = 0;
    this.frames.reset();
    const socket = net.connect({ host: this.host, port: this.port });
    this.socket = socket;
    socket.setNoDelay(true);
    this.lastFrameAt = performance.now();
    this.timer = setInterval(() => this.tick(), 250);
    socket.on('connect', () => {
      socket.write(helloFrame({ token: this.options.token, clientName: this.options.clientName }));
    });
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.socket) return;
      try {
        this.frames.push(chunk, () => this.socket === socket);
      } catch (error) {
        this.fail(new ProtocolError(error instanceof Error ? error.message : String(error)));
      }
    });
    socket.on('error', (error: Error) => {
      if (socket === this.socket) this.lost(new UnavailableError(`${this.host}:${this.port}: ${error.message}`));
    });
    socket.on('close', () => {
      if (socket === this.socket) this.lost(new UnavailableError(`${this.host}:${this.port} closed the connection`));
    });
  }

  private tick(): void {
    const now = performance.now();
    if (!this.subscribed && now - this.lastFrameAt > this.options.connectTimeoutMs) {
      this.lost(new UnavailableError(`no handshake from ${this.host}:${this.port} within ${this.options.connectTimeoutMs} ms`));
    } else if (now - this.lastFrameAt > this.silenceTimeoutMs) {
      this.lost(new UnavailableError(`nothing from ${this.host}:${this.port} for ${this.silenceTimeoutMs} ms`));
    } else if (this.frames.partialBytes > 0 && now - this.frames.startedAt > this.options.frameTimeoutMs) {
      this.fail(new ProtocolError(`a frame did not complete within ${this.options.frameTimeoutMs} ms`));
    }
  }

  private onFrame(buf: Buffer, pos: number, total: number): void {
    this.lastFrameAt = performance.now();
    const kind = buf[pos + 5]!;
    const requestId = requestIdAt(buf, pos);
    const payload = pos + FRAME_PREAMBLE_SIZE_BYTES;
    const end = pos + total;
    if (kind === Kind.Error) {
      const error = decodeErrorFrame(buf, payload, end);
      const server = new ServerError(error.code, error.message, requestId);
      // A node that is stopping or went idle: connect again; a refusal is the consumer's.
      if (error.code === 'unavailable') this.lost(server);
      else this.fail(server);
      return;
    }
    if (!this.subscribed) {
      if (kind !== Kind.HelloOk) throw new DecodeError(`${kindName(kind)} frame before HELLO_OK`);
      this.nodeHello = decodeHelloOk(buf, payload, end);
      const writer = new Writer(128);
      const start = beginFrame(writer, Kind.Subscribe, SUBSCRIPTION_ID);
      encodeSubscribe(writer, { cursor: this.position, partition: this.partition, credit: this.creditWindow });
      finishFrame(writer, start);
      this.socket!.write(writer.take());
      this.subscribed = true;
      this.credit = this.creditWindow;
      this.attempt = 0;
      return;
    }
    if (kind !== Kind.Changes) throw new DecodeError(`unexpected ${kindName(kind)} frame`);
    if (requestId !== SUBSCRIPTION_ID) throw new DecodeError(`CHANGES for subscription ${requestId}, not ${SUBSCRIPTION_ID}`);
    const frame = decodeChanges(buf, payload, end);
    if (frame.changes.length > this.credit) {
      throw new DecodeError(`${frame.changes.length} changes with credit for ${this.credit}`);
    }
    this.credit -= frame.changes.length;
    for (const change of frame.changes) this.ready.push(change);
    if (this.readyHead < this.ready.length) this.frameCursor = frame.cursor;
    else if (frame.cursor !== '') this.position = frame.cursor;
    this.deliver();
  }

  /** Hands buffered changes to waiting `next()` calls. */
  private deliver(): void {
    while (this.waiters.length > 0 && this.readyHead < this.ready.length) {
      this.waiters.shift()!.resolve({ done: false, value: this.take() });
    }
  }

  /** The connection is gone: connect again with backoff, from the cursor. */
  private lost(_reason: BookdError): void {
    if (this.closed || this.socket === null) return;
    this.teardown();
    this.attempt++;
    const pause = Math.min(10 * 2 ** Math.min(this.attempt - 1, 16), this.reconnectBackoffMaxMs);
    this.reconnectTimer = setTimeout(() => this.connect(), pause);
  }

  /** The node refused the subscription or broke the protocol: the consumer gets the error. */
  private fail(error: Error): void {
    if (this.closed) return;
    this.teardown();
    this.closed = true;
    this.failure = error;
    // Changes already received are still handed out first.
    const waiters = this.waiters;
    this.waiters = [];
    if (waiters.length > 0) this.failure = null;
    for (const waiter of waiters) waiter.reject(error);
  }

  private teardown(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    this.subscribed = false;
    if (socket) socket.destroy();
    this.frames.reset();
  }
}

