/**
 * {@link Client}: a pool of connections to one node with automatic batching, pipelining,
 * per-call timeouts, reconnects and resends, typed results and typed errors.
 *
 * Every command is safe to resend after a lost connection, so calls lost with one are resent
 * (`retries` times, with backoff, within the call timeout): a hold is idempotent by its id (a
 * resent hold that had taken effect answers `existing: true`), confirm, release and cancel are
 * idempotent by the contract, put_resource sets a value, reads read; a resent extend sets the
 * expiry to now + ttl again; a resent delete_partition that had taken effect answers
 * `not_found`. Results, including `overloaded` and `unavailable`, are returned to the caller,
 * never retried.
 *
 * @module
 */

import { performance } from 'node:perf_hooks';

import { type ErrorCode, errorCodeOf } from './codes.js';
import { Connection, type ClientStats, Mode } from './connection.js';
import { type BookdError, ClosedError, RefusedError, invalid } from './errors.js';
import { COMMANDS_PER_FRAME_MAX, DEADLINE_CHECK_INTERVAL_MS } from './limits.js';
import { type Address, type ClientOptions, parseAddress, type ResolvedOptions, resolveOptions } from './options.js';
import { Subscription, type SubscribeOptions } from './subscription.js';
import type {
  Command,
  DeletePartitionCommand,
  ErrorResult,
  ExtendCommand,
  GetResourceCommand,
  HelloOk,
  HoldCommand,
  HoldResult,
  HoldVerbCommand,
  ItemInput,
  ListResourcesCommand,
  PartitionDeleted,
  PutResourceCommand,
  ResourcePage,
  ResourceResult,
  Result,
} from './types.js';
import type { U64 } from './wire.js';

/** Per-call settings. */
export interface CallOptions {
  /** This call's timeout in ms, instead of the client's `callTimeoutMs` (`null`: none). */
  timeoutMs?: number | null;
}

/** Optional fields of a hold. */
export interface HoldOptions extends CallOptions {
  /** Time to live (default 600 000 ms). */
  ttlMs?: U64;
  /** An order or payment reference kept with the hold. */
  ref?: string;
}

/** A page's position and size. */
export interface ListOptions extends CallOptions {
  /** Only ids that start with this. */
  prefix?: string;
  /** Only ids after this one (the previous page's `next`). */
  after?: string | null;
  /** Resources per page, 1–1 000 (default 100). */
  limit?: U64;
}

/** A successful result. */
export type SuccessResult = Exclude<Result, ErrorResult>;

/** The result a command answers with. */
export type ResultOf<C extends Command> = C extends PutResourceCommand | GetResourceCommand
  ? ResourceResult
  : C extends HoldCommand | HoldVerbCommand | ExtendCommand
    ? HoldResult
    : C extends ListResourcesCommand
      ? ResourcePage
      : C extends DeletePartitionCommand
        ? PartitionDeleted
        : SuccessResult;

/** One command's outcome in a batch. */
export type BatchEntry =
  | {
      /** The command succeeded. */
      ok: true;
      /** Its result. */
      result: SuccessResult;
    }
  | {
      /** The command was refused (by the node, or locally). */
      ok: false;
      /** Why: a {@link RefusedError} with the code and details. */
      error: BookdError;
    };

/** The result kind each op answers with. */
const EXPECT: Readonly<Record<Command['op'], Result['kind']>> = {
  put_resource: 'resource',
  get_resource: 'resource',
  hold: 'hold',
  confirm: 'hold',
  release: 'hold',
  cancel: 'hold',
  extend: 'hold',
  get_hold: 'hold',
  list_resources: 'page',
  delete_partition: 'partition_deleted',
};

/** The connections, their settings and the deadline timer, shared by every handle. */
class Pool {
  readonly connections: Connection[];
  readonly stats: ClientStats = { framesSent: 0, commandsSent: 0, writes: 0, reconnects: 0 };
  readonly options: ResolvedOptions;
  readonly host: string;
  readonly port: number;
  next = 0;
  closed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(host: string, port: number, options: ResolvedOptions) {
    this.host = host;
    this.port = port;
    this.options = options;
    this.connections = [];
    for (let index = 0; index < options.connections; index++) {
      this.connections.push(new Connection(host, port, options, this.stats));
    }
    this.timer = setInterval(() => {
      const now = performance.now();
      for (const connection of this.connections) connection.tick(now);
    }, DEADLINE_CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const connection of this.connections) connection.close();
  }
}

/**
 * A pool of connections to one node. Calls made on one connection by the same callback and the
 * promise continuations it sets off leave together in one REQUEST frame (and so do calls made
 * while the connection is at its in-flight bound); frames are pipelined.
 *
 * @example
 * ```ts
 * const client = await Client.connect('127.0.0.1:7070');
 * await client.putResource('concert-1', 'A-1', 1);
 * const hold = await client.hold('concert-1', 'order-1001', [{ resource: 'A-1', quantity: 1 }], { ttlMs: 60_000 });
 * await client.confirm('concert-1', hold.id);
 * await client.close();
 * ```
 */
export class Client {
  private readonly pool: Pool;
  /** The connection this handle sends on ({@link Client.pinned}); `-1`: round robin. */
  private readonly pin: number;

  private constructor(pool: Pool, pin: number) {
    this.pool = pool;
    this.pin = pin;
  }

  /**
   * Connects `options.connections` connections to the node at `address` (`"host:port"`, its
   * binary port) and completes each handshake. Rejects if any cannot be made or is refused
   * (a wrong token: {@link ServerError} `unauthorized`).
   */
  static async connect(address: Address, options: ClientOptions = {}): Promise<Client> {
    const { host, port } = parseAddress(address);
    const pool = new Pool(host, port, resolveOptions(options));
    try {
      await Promise.all(pool.connections.map((connection) => connection.open()));
    } catch (error) {
      pool.close();
      throw error;
    }
    return new Client(pool, -1);
  }

  /**
   * A handle on the same pool whose calls all go to connection `index % connections`. Give each
   * closed-loop caller of a gateway its own pinned handle: the callers of one connection then
   * wake together when a RESPONSE arrives and their next calls leave together in one frame.
   */
  pinned(index: number): Client {
    const count = this.pool.connections.length;
    return new Client(this.pool, ((Math.floor(index) % count) + count) % count);
  }

  /** What the node said in its handshake (role, epoch, shards, limits). */
  get hello(): HelloOk {
    for (const connection of this.pool.connections) if (connection.hello) return connection.hello;
    throw new ClosedError('no connection was ever made');
  }

  /** Counters of the pool (frames, commands, writes, reconnects). */
  get stats(): Readonly<ClientStats> {
    return this.pool.stats;
  }

  /** The settings in force, defaults filled in. */
  get options(): Readonly<ResolvedOptions> {
    return this.pool.options;
  }

  /** Creates or changes a resource (`created`: HTTP 201 vs 200). */
  putResource(partition: string, id: string, capacity: U64, options?: CallOptions): Promise<ResourceResult> {
    return this.execute({ op: 'put_resource', partition, id, capacity }, options);
  }

  /** Takes `quantity` units of each item, all or nothing (refused as a whole with `insufficient_capacity`). */
  hold(partition: string, id: string, items: readonly ItemInput[], options?: HoldOptions): Promise<HoldResult> {
    const command: HoldCommand = { op: 'hold', partition, id, items, ttlMs: options?.ttlMs ?? null, ref: options?.ref ?? null };
    return this.execute(command, options);
  }

  /** Confirms a held hold (its units become confirmed). */
  confirm(partition: string, id: string, options?: CallOptions): Promise<HoldResult> {
    return this.execute({ op: 'confirm', partition, id }, options);
  }

  /** Releases a held hold (its units come back). */
  release(partition: string, id: string, options?: CallOptions): Promise<HoldResult> {
    return this.execute({ op: 'release', partition, id }, options);
  }

  /** Cancels a confirmed hold (its units come back). */
  cancel(partition: string, id: string, options?: CallOptions): Promise<HoldResult> {
    return this.execute({ op: 'cancel', partition, id }, options);
  }

  /** Sets a held hold's expiry to now + `ttlMs`. */
  extend(partition: string, id: string, ttlMs: U64, options?: CallOptions): Promise<HoldResult> {
    return this.execute({ op: 'extend', partition, id, ttlMs }, options);
  }

  /** Reads one resource. */
  getResource(partition: string, id: string, options?: CallOptions): Promise<ResourceResult> {
    return this.execute({ op: 'get_resource', partition, id }, options);
  }

  /** Reads one hold. */
  getHold(partition: string, id: string, options?: CallOptions): Promise<HoldResult> {
    return this.execute({ op: 'get_hold', partition, id }, options);
  }

  /** A page of a partition's resources in id order; pass `next` as `after` for the next one. */
  listResources(partition: string, options: ListOptions = {}): Promise<ResourcePage> {
    const command: ListResourcesCommand = {
      op: 'list_resources',
      partition,
      prefix: options.prefix ?? '',
      after: options.after ?? null,
      limit: options.limit ?? null,
    };
    return this.execute(command, options);
  }

  /**
   * Removes a partition with every resource and hold in it: refused with
   * `partition_has_live_holds` while any of its holds is held, `not_found` if there is none.
   */
  deletePartition(partition: string, options?: CallOptions): Promise<PartitionDeleted> {
    return this.execute({ op: 'delete_partition', partition }, options);
  }

  /** Runs any one command; an error result rejects with {@link RefusedError}. */
  execute<C extends Command>(command: C, options?: CallOptions): Promise<ResultOf<C>> {
    const connection = this.connection();
    if (connection === null) return Promise.reject(new ClosedError());
    const expect = EXPECT[command.op] ?? null;
    return connection.enqueue(command, Mode.One, expect, this.timeout(options)) as Promise<ResultOf<C>>;
  }

  /**
   * Sends 1–1 000 commands as ONE REQUEST frame and resolves with one entry per command, in
   * order. The commands are independent, like `POST /v1/batch`: each has its own result or
   * error. A command that cannot be encoded gets its own local `invalid` and is not sent.
   */
  async batch(commands: readonly Command[], options?: CallOptions): Promise<BatchEntry[]> {
    checkBatch(commands);
    const connection = this.connection();
    if (connection === null) throw new ClosedError();
    const local: (Error | undefined)[] = new Array(commands.length);
    const results = (await connection.enqueue(commands, Mode.Many, null, this.timeout(options), local)) as Result[];
    const entries: BatchEntry[] = new Array(commands.length);
    let next = 0;
    for (let index = 0; index < commands.length; index++) {
      const error = local[index];
      if (error !== undefined) {
        entries[index] = { ok: false, error: error as BookdError };
        continue;
      }
      const result = results[next++]!;
      entries[index] = result.kind === 'error' ? { ok: false, error: new RefusedError(result) } : { ok: true, result };
    }
    return entries;
  }

  /**
   * {@link Client.batch} when only the outcome matters: one status per command, `null` for
   * success or the error code, the results' bodies stepped over without being built. What a
   * load generator needs, at a fraction of the cost per command.
   */
  async batchStatuses(commands: readonly Command[], options?: CallOptions): Promise<(ErrorCode | null)[]> {
    checkBatch(commands);
    const connection = this.connection();
    if (connection === null) throw new ClosedError();
    const local: (Error | undefined)[] = new Array(commands.length);
    const numbers = (await connection.enqueue(commands, Mode.Statuses, null, this.timeout(options), local)) as number[];
    const statuses: (ErrorCode | null)[] = new Array(commands.length);
    let next = 0;
    for (let index = 0; index < commands.length; index++) {
      const error = local[index];
      if (error !== undefined) {
        statuses[index] = (error as BookdError).code ?? 'invalid';
        continue;
      }
      const number = numbers[next++]!;
      statuses[index] = number === 0 ? null : (errorCodeOf(number) ?? 'bad_request');
    }
    return statuses;
  }

  /**
   * Follows the node's change feed on a connection of its own, as an async iterator of changes
   * that resumes after its last change across reconnects and node restarts.
   */
  subscribe(options: SubscribeOptions = {}): Subscription {
    const pool = this.pool;
    if (pool.closed) throw new ClosedError();
    return new Subscription({ host: pool.host, port: pool.port }, pool.options, options);
  }

  /** Closes every connection; calls still waiting fail with {@link ClosedError}. */
  async close(): Promise<void> {
    this.pool.close();
  }

  private connection(): Connection | null {
    const pool = this.pool;
    if (pool.closed) return null;
    const connections = pool.connections;
    if (this.pin >= 0) return connections[this.pin]!;
    const connection = connections[pool.next]!;
    pool.next = (pool.next + 1) % connections.length;
    return connection;
  }

  private timeout(options: CallOptions | undefined): number | null {
    if (options !== undefined && options.timeoutMs !== undefined) return options.timeoutMs;
    return this.pool.options.callTimeoutMs;
  }
}

function checkBatch(commands: readonly Command[]): void {
  if (!Array.isArray(commands) || commands.length === 0 || commands.length > COMMANDS_PER_FRAME_MAX) {
    const length = Array.isArray(commands) ? commands.length : 0;
    throw invalid('commands', `a batch holds 1 to ${COMMANDS_PER_FRAME_MAX} commands, not ${length}`);
  }
}

