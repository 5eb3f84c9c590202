/**
 * The bench's HTTP/JSON transport: the same calls as the binary client's, coalesced into
 * `POST /v1/batch` requests (docs/API.md) over keep-alive HTTP/1.1 connections.
 *
 * Each connection has one request in flight at a time (HTTP/1.1 without pipelining). Calls made
 * while it waits queue up; once the current callback and the promise continuations it set off
 * are done (`process.nextTick`), an idle connection sends everything queued in one batch, up to
 * 1 000 commands and 64 KiB of body (the API's limits), the rest in the batches after it. That
 * is how the binary client's automatic batching gathers calls into frames, so the two transports
 * differ only in what goes over the wire.
 *
 * Each command's result (`{"status", "body"}`) settles its own call: a success resolves with the
 * body, an error code rejects with a {@link RefusedError} of that code, as the binary client
 * does. A whole request that fails (a lost connection, no answer within the timeout, a status
 * other than 200, a body that is not the batch's results) rejects every call it carried.
 */

import net from 'node:net';

import { BookdError, ERROR_CODES, type ErrorCode, RefusedError, TimeoutError, UnavailableError, invalid } from '../src/index.js';
import type { Command, ItemInput } from '../src/index.js';
import type { U64 } from '../src/wire.js';

/** Most commands in one batch (docs/API.md, "Names and limits"). */
export const BATCH_COMMANDS_MAX = 1000;
/** Largest request body the node reads (docs/API.md, "Names and limits"). */
export const BODY_SIZE_MAX_BYTES = 64 * 1024;
/** Largest response head (status line and headers) read. */
const HEAD_SIZE_MAX_BYTES = 16 * 1024;
/** Largest response body read: 1 000 results of the largest holds fit well within it. */
const RESPONSE_SIZE_MAX_BYTES = 32 * 1024 * 1024;
/** How often each connection looks for a request past its deadline. */
const SWEEP_INTERVAL_MS = 100;
/** Pause before connecting again after a connection failed. */
const RECONNECT_PAUSE_MS = 100;
/** Bytes of `{"commands":[` and `]}` around the commands. */
const ENVELOPE_BYTES = '{"commands":['.length + ']}'.length;

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** Settings of an {@link HttpBatcher}. */
export interface HttpOptions {
  /** Keep-alive connections (at least 1). */
  connections: number;
  /** Time a request may take before its calls fail with {@link TimeoutError}, in ms. */
  timeoutMs: number;
  /** The node's token, if it has one (`Authorization: Bearer`). */
  token?: string | undefined;
}

/** What the batcher sent. */
export interface HttpStats {
  /** `POST /v1/batch` requests written. */
  requests: number;
  /** Commands they carried. */
  commands: number;
}

interface Call {
  json: string;
  bytes: number;
  resolve: (body: unknown) => void;
  reject: (error: Error) => void;
}

/** The JSON text of a number the wire calls `u64` (a bigint keeps every digit). */
function number(value: U64): string {
  return typeof value === 'bigint' ? value.toString() : JSON.stringify(value);
}

function items(list: readonly ItemInput[]): string {
  let out = '[';
  for (let index = 0; index < list.length; index++) {
    const item = list[index]!;
    if (index > 0) out += ',';
    out += `{"resource":${JSON.stringify(item.resource)},"quantity":${number(item.quantity)}}`;
  }
  return out + ']';
}

/** One command as an element of `/v1/batch`'s `commands` (docs/API.md, "Batches"). */
export function commandJson(command: Command): string {
  switch (command.op) {
    case 'put_resource':
      return `{"op":"put_resource","partition":${JSON.stringify(command.partition)},"id":${JSON.stringify(command.id)},"capacity":${number(command.capacity)}}`;
    case 'hold': {
      let out = `{"op":"hold","partition":${JSON.stringify(command.partition)},"id":${JSON.stringify(command.id)},"items":${items(command.items)}`;
      if (command.ttlMs !== undefined && command.ttlMs !== null) out += `,"ttl_ms":${number(command.ttlMs)}`;
      if (command.ref !== undefined && command.ref !== null) out += `,"ref":${JSON.stringify(command.ref)}`;
      return out + '}';
    }
    case 'confirm':
    case 'release':
    case 'cancel':
      return `{"op":"${command.op}","partition":${JSON.stringify(command.partition)},"id":${JSON.stringify(command.id)}}`;
    case 'extend':
      return `{"op":"extend","partition":${JSON.stringify(command.partition)},"id":${JSON.stringify(command.id)},"ttl_ms":${number(command.ttlMs)}}`;
    case 'delete_partition':
      return `{"op":"delete_partition","partition":${JSON.stringify(command.partition)}}`;
    default:
      throw invalid('op', `${JSON.stringify((command as { op?: unknown }).op)} is not a command /v1/batch carries`);
  }
}

/** Settles one call from its element of `results`. */
function settle(call: Call, result: unknown): void {
  if (result === null || typeof result !== 'object') {
    call.reject(new BookdError('the batch answered an element that is not {"status", "body"}'));
    return;
  }
  const { status, body } = result as { status?: unknown; body?: unknown };
  if (typeof status !== 'number') {
    call.reject(new BookdError('the batch answered an element without a status'));
    return;
  }
  if (status >= 200 && status < 300) {
    call.resolve(body);
    return;
  }
  const code = body !== null && typeof body === 'object' ? (body as { error?: unknown }).error : undefined;
  if (typeof code === 'string' && KNOWN_CODES.has(code)) {
    const details = body as Record<string, unknown>;
    const message = typeof details['message'] === 'string' ? `${code}: ${details['message']}` : undefined;
    call.reject(new RefusedError({ code: code as ErrorCode, details }, false, message));
    return;
  }
  call.reject(new BookdError(`the batch answered status ${status} without a known error code`));
}

type ReadState = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'trailer';

/** One keep-alive HTTP/1.1 connection and the calls queued on it. */
export class HttpConnection {
  private readonly host: string;
  private readonly port: number;
  private readonly options: HttpOptions;
  private readonly stats: HttpStats;
  private readonly headPrefix: string;
  private queue: Call[] = [];
  private queueHead = 0;
  private socket: net.Socket | null = null;
  /** Connecting, or a request in flight: nothing more is sent until it ends. */
  private busy = false;
  private flushQueued = false;
  private closed = false;
  private inFlight: Call[] | null = null;
  private deadline = Infinity;
  private retryAt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly sweeper: NodeJS.Timeout;
  // The response being read.
  private state: ReadState = 'head';
  private pending: Buffer = Buffer.alloc(0);
  private status = 0;
  private remaining = 0;
  private bodyParts: Buffer[] = [];
  private bodySize = 0;
  private closeAfter = false;

  constructor(host: string, port: number, options: HttpOptions, stats: HttpStats) {
    this.host = host;
    this.port = port;
    this.options = options;
    this.stats = stats;
    const hostHeader = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    this.headPrefix =
      `POST /v1/batch HTTP/1.1\r\nHost: ${hostHeader}\r\nContent-Type: application/json\r\nAccept: application/json\r\n` +
      (options.token ? `Authorization: Bearer ${options.token}\r\n` : '');
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  /** Queues one command; it leaves in this connection's next batch. */
  execute(command: Command): Promise<unknown> {
    if (this.closed) return Promise.reject(new BookdError('the HTTP transport is closed'));
    let json: string;
    try {
      json = commandJson(command);
    } catch (error) {
      return Promise.reject(error);
    }
    const bytes = Buffer.byteLength(json);
    if (bytes + ENVELOPE_BYTES > BODY_SIZE_MAX_BYTES) {
      return Promise.reject(invalid('command', `${bytes} bytes of JSON: no batch of at most ${BODY_SIZE_MAX_BYTES} bytes carries it`));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ json, bytes, resolve, reject });
      this.wake();
    });
  }

  /** Closes the connection; calls still waiting fail. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.drop(new BookdError('the HTTP transport is closed'));
    this.failQueued(new BookdError('the HTTP transport is closed'));
  }

  private wake(): void {
    if (this.busy || this.flushQueued || this.retryTimer) return;
    this.flushQueued = true;
    process.nextTick(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  /** Sends the next batch if nothing is in flight: everything queued, up to the limits. */
  private flush(): void {
    if (this.busy || this.closed || this.queueHead >= this.queue.length) return;
    const socket = this.socket;
    if (socket === null) {
      this.connect();
      return;
    }
    const calls: Call[] = [];
    let body = '{"commands":[';
    let bytes = ENVELOPE_BYTES;
    while (this.queueHead < this.queue.length && calls.length < BATCH_COMMANDS_MAX) {
      const call = this.queue[this.queueHead]!;
      const more = calls.length > 0 ? call.bytes + 1 : call.bytes;
      if (bytes + more > BODY_SIZE_MAX_BYTES) break;
      if (calls.length > 0) body += ',';
      body += call.json;
      bytes += more;
      calls.push(call);
      this.queueHead++;
    }
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (this.queueHead > 4096) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    body += ']}';
    this.busy = true;
    this.inFlight = calls;
    this.deadline = performance.now() + this.options.timeoutMs;
    this.stats.requests++;
    this.stats.commands += calls.length;
    socket.write(`${this.headPrefix}Content-Length: ${bytes}\r\n\r\n${body}`);
  }

  private connect(): void {
    const wait = this.retryAt - performance.now();
    if (wait > 0) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.flush();
      }, wait);
      return;
    }
    this.busy = true;
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
    this.socket = socket;
    this.deadline = performance.now() + this.options.timeoutMs;
    socket.on('data', (chunk: Buffer) => this.onData(socket, chunk));
    socket.on('error', (error) => this.lost(socket, error));
    socket.on('close', () => this.lost(socket, null));
    socket.once('connect', () => {
      if (this.socket !== socket) return;
      this.busy = false;
      this.deadline = Infinity;
      this.flush();
    });
  }

  /** The socket failed or closed: what it carried fails, and the next batch connects again. */
  private lost(socket: net.Socket, error: Error | null): void {
    if (this.socket !== socket) return;
    const connecting = this.inFlight === null && this.busy;
    const reason = new UnavailableError(
      `${connecting ? 'could not connect to' : 'lost the connection to'} ${this.host}:${this.port}${error ? `: ${error.message}` : ''}`,
      { cause: error },
    );
    this.drop(reason);
    if (connecting) {
      // Nothing answers there: fail what waits rather than hold it, and pause before trying again.
      this.retryAt = performance.now() + RECONNECT_PAUSE_MS;
      this.failQueued(reason);
    } else {
      queueMicrotask(() => this.wake());
    }
  }

  /** Ends the socket and fails the request in flight. */
  private drop(error: Error): void {
    const socket = this.socket;
    this.socket = null;
    socket?.destroy();
    const calls = this.inFlight;
    this.inFlight = null;
    this.busy = false;
    this.deadline = Infinity;
    this.state = 'head';
    this.pending = Buffer.alloc(0);
    this.bodyParts = [];
    this.bodySize = 0;
    if (calls) for (const call of calls) call.reject(error);
  }

  private failQueued(error: Error): void {
    const queued = this.queue.slice(this.queueHead);
    this.queue = [];
    this.queueHead = 0;
    for (const call of queued) call.reject(error);
  }

  private sweep(): void {
    if (performance.now() <= this.deadline) return;
    if (this.inFlight) {
      this.drop(new TimeoutError(`no answer to a batch of ${this.inFlight.length} commands within ${this.options.timeoutMs} ms`));
      this.wake();
    } else if (this.socket) {
      const error = new UnavailableError(`could not connect to ${this.host}:${this.port} within ${this.options.timeoutMs} ms`);
      this.drop(error);
      this.retryAt = performance.now() + RECONNECT_PAUSE_MS;
      this.failQueued(error);
    }
  }

  /** A malformed response: the connection cannot be trusted any more. */
  private broken(message: string): void {
    this.drop(new BookdError(`HTTP response: ${message}`));
    this.wake();
  }

  private onData(socket: net.Socket, chunk: Buffer): void {
    if (this.socket !== socket) return;
    if (this.inFlight === null) {
      this.broken('bytes arrived with no request in flight');
      return;
    }
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.socket === socket && this.inFlight !== null) {
      if (!this.step()) return;
    }
    if (this.socket === socket && this.pending.length > 0) this.broken('bytes arrived after the response');
  }

  /** Reads what it can of the response; false once it needs more bytes (or gave up). */
  private step(): boolean {
    const data = this.pending;
    switch (this.state) {
      case 'head': {
        const end = data.indexOf('\r\n\r\n');
        if (end < 0) {
          if (data.length > HEAD_SIZE_MAX_BYTES) this.broken(`a head over ${HEAD_SIZE_MAX_BYTES} bytes`);
          return false;
        }
        if (end > HEAD_SIZE_MAX_BYTES) {
          this.broken(`a head over ${HEAD_SIZE_MAX_BYTES} bytes`);
          return false;
        }
        const head = data.toString('latin1', 0, end);
        this.pending = data.subarray(end + 4);
        return this.readHead(head);
      }
      case 'length': {
        if (data.length < this.remaining) return false;
        this.bodyParts.push(data.subarray(0, this.remaining));
        this.pending = data.subarray(this.remaining);
        this.finish();
        return true;
      }
      case 'chunk-size': {
        const end = data.indexOf('\r\n');
        if (end < 0) {
          if (data.length > 1024) this.broken('a chunk size line over 1 KiB');
          return false;
        }
        const line = data.toString('latin1', 0, end);
        const text = line.split(';', 1)[0]!.trim();
        if (!/^[0-9a-fA-F]{1,8}$/.test(text)) {
          this.broken(`a chunk size ${JSON.stringify(line.slice(0, 40))}`);
          return false;
        }
        const size = parseInt(text, 16);
        this.pending = data.subarray(end + 2);
        if (size === 0) {
          this.state = 'trailer';
          return true;
        }
        if (this.bodySize + size > RESPONSE_SIZE_MAX_BYTES) {
          this.broken(`a body over ${RESPONSE_SIZE_MAX_BYTES} bytes`);
          return false;
        }
        this.remaining = size;
        this.state = 'chunk-data';
        return true;
      }
      case 'chunk-data': {
        if (data.length < this.remaining + 2) return false;
        if (data[this.remaining] !== 0x0d || data[this.remaining + 1] !== 0x0a) {
          this.broken('a chunk not followed by CRLF');
          return false;
        }
        this.bodyParts.push(data.subarray(0, this.remaining));
        this.bodySize += this.remaining;
        this.pending = data.subarray(this.remaining + 2);
        this.state = 'chunk-size';
        return true;
      }
      case 'trailer': {
        // Trailer fields, if any, then an empty line.
        const end = data.indexOf('\r\n');
        if (end < 0) {
          if (data.length > HEAD_SIZE_MAX_BYTES) this.broken(`trailers over ${HEAD_SIZE_MAX_BYTES} bytes`);
          return false;
        }
        this.pending = data.subarray(end + 2);
        if (end === 0) this.finish();
        return true;
      }
    }
  }

  /** Reads the status line and the headers that frame the body. */
  private readHead(head: string): boolean {
    const lines = head.split('\r\n');
    const match = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]!);
    if (!match) {
      this.broken(`a status line ${JSON.stringify(lines[0]!.slice(0, 80))}`);
      return false;
    }
    this.status = Number(match[1]);
    let length: number | null = null;
    let chunked = false;
    this.closeAfter = lines[0]!.startsWith('HTTP/1.0');
    for (let index = 1; index < lines.length; index++) {
      const line = lines[index]!;
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') {
        if (!/^\d{1,10}$/.test(value)) {
          this.broken(`a content-length ${JSON.stringify(value.slice(0, 40))}`);
          return false;
        }
        length = Number(value);
      } else if (name === 'transfer-encoding') {
        chunked = value.toLowerCase().split(',').map((part) => part.trim()).includes('chunked');
      } else if (name === 'connection') {
        const tokens = value.toLowerCase().split(',').map((part) => part.trim());
        if (tokens.includes('close')) this.closeAfter = true;
        else if (tokens.includes('keep-alive')) this.closeAfter = false;
      }
    }
    this.bodyParts = [];
    this.bodySize = 0;
    if (chunked) {
      this.state = 'chunk-size';
      return true;
    }
    if (length === null) {
      this.broken('a response with neither content-length nor chunked encoding');
      return false;
    }
    if (length > RESPONSE_SIZE_MAX_BYTES) {
      this.broken(`a body of ${length} bytes, over ${RESPONSE_SIZE_MAX_BYTES}`);
      return false;
    }
    this.remaining = length;
    this.state = 'length';
    return true;
  }

  /** The whole response is in: settle its calls, then send what queued meanwhile. */
  private finish(): void {
    const calls = this.inFlight!;
    const body = this.bodyParts.length === 1 ? this.bodyParts[0]! : Buffer.concat(this.bodyParts);
    this.bodyParts = [];
    this.bodySize = 0;
    this.state = 'head';
    this.inFlight = null;
    this.busy = false;
    this.deadline = Infinity;
    if (this.closeAfter) {
      const socket = this.socket;
      this.socket = null;
      socket?.destroy();
      this.pending = Buffer.alloc(0);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      parsed = undefined;
    }
    if (this.status !== 200) {
      const code = parsed !== null && typeof parsed === 'object' ? (parsed as { error?: unknown }).error : undefined;
      const message = parsed !== null && typeof parsed === 'object' ? (parsed as { message?: unknown }).message : undefined;
      const known = typeof code === 'string' && KNOWN_CODES.has(code) ? (code as ErrorCode) : undefined;
      const error = new BookdError(
        `POST /v1/batch answered ${this.status}${typeof code === 'string' ? ` ${code}` : ''}${typeof message === 'string' ? `: ${message}` : ''}`,
        known,
      );
      for (const call of calls) call.reject(error);
    } else {
      const results = parsed !== null && typeof parsed === 'object' ? (parsed as { results?: unknown }).results : undefined;
      if (!Array.isArray(results) || results.length !== calls.length) {
        const error = new BookdError(
          `POST /v1/batch answered ${Array.isArray(results) ? `${results.length} results` : 'no results'} for ${calls.length} commands`,
        );
        for (const call of calls) call.reject(error);
      } else {
        for (let index = 0; index < calls.length; index++) settle(calls[index]!, results[index]);
      }
    }
    // From a microtask: the tick it schedules then runs once the continuations of the calls
    // just settled are done, so the next calls of their callers go in the next batch (a tick
    // scheduled here, in the socket's callback, would run before those continuations).
    queueMicrotask(() => this.wake());
  }
}

/** A handle that sends on one connection. */
export interface HttpHandle {
  execute(command: Command): Promise<unknown>;
}

/** The pool of connections: calls through {@link HttpBatcher.pinned} handles, or round robin. */
export class HttpBatcher {
  readonly stats: HttpStats = { requests: 0, commands: 0 };
  readonly host: string;
  readonly port: number;
  private readonly connections: HttpConnection[];
  private next = 0;

  constructor(addr: string, options: HttpOptions) {
    const match = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:]+):(\d+)$/.exec(addr);
    const port = match ? Number(match[2]) : NaN;
    if (!match || !Number.isInteger(port) || port < 1 || port > 65_535) {
      throw new RangeError(`${JSON.stringify(addr)} is not HOST:PORT`);
    }
    if (!Number.isInteger(options.connections) || options.connections < 1) throw new RangeError('connections must be at least 1');
    this.host = match[1]!;
    this.port = port;
    this.connections = Array.from({ length: options.connections }, () => new HttpConnection(this.host, port, options, this.stats));
  }

  /** A handle on connection `index mod connections` (a closed-loop client's own). */
  pinned(index: number): HttpHandle {
    return this.connections[index % this.connections.length]!;
  }

  /** Runs one command on the next connection (round robin). */
  execute(command: Command): Promise<unknown> {
    const connection = this.connections[this.next]!;
    this.next = (this.next + 1) % this.connections.length;
    return connection.execute(command);
  }

  close(): void {
    for (const connection of this.connections) connection.close();
  }
}
