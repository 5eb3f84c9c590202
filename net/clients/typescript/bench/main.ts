/**
 * `npm run bench -- --addr ADDR --workload flash-sale [--clients N] [--connections M]
 * [--duration D] [--warmup W] [--interval I] [--timeout T] [--seed S] [--token T]
 * [--transport binary|http] [--http-addr HOST:PORT] [--json]`: the closed-loop load generator
 * of `bookd bench`, driven through this package's client.
 *
 * Each of N clients is a closed loop (one command, await its result, the next) with a handle
 * pinned to connection `i mod M`, so the clients of a connection wake together and their next
 * commands leave together in one frame (the client's automatic batching). With `--transport
 * http` the same loops run over the node's HTTP/JSON API instead: their calls are coalesced the
 * same way into `POST /v1/batch` requests over M keep-alive connections (bench/http.ts).
 * `--json` prints the same object as `bookd bench --json` (keys in the same, sorted, order),
 * plus `"transport"`.
 */

import { performance } from 'node:perf_hooks';

import { Client, RefusedError, TimeoutError } from '../src/index.js';
import type { Command } from '../src/index.js';
import { UsageError, parseDuration } from './duration.js';
import { Histogram } from './histogram.js';
import { HttpBatcher } from './http.js';
import {
  ClientLoop,
  type Counters,
  SELL_OUT_SKUS,
  WORKLOADS,
  type Workload,
  addCounters,
  counters,
  names,
  resourceCount,
  setupCommand,
  successes,
} from './workloads.js';

type Transport = 'binary' | 'http';

interface Args {
  transport: Transport;
  /** The binary address (binary) or the HTTP address (http). */
  addr: string;
  workload: Workload;
  clients: number;
  connections: number;
  durationMs: number;
  warmupMs: number;
  intervalMs: number;
  timeoutMs: number;
  seed: bigint;
  token: string | undefined;
  json: boolean;
}

const USAGE = `usage: npm run bench -- --addr HOST:PORT --workload flash-sale|seat-map|hotel|sell-out
  [--clients N (1024)] [--connections M (64)] [--duration D (20s)] [--warmup W (5s)]
  [--interval I (10s)] [--timeout T (30s)] [--seed S (42)] [--token T] [--json]
  [--transport binary|http (binary)] [--http-addr HOST:PORT (with --transport http)]
durations: 20s, 500ms, 2m or seconds; --addr and --token also from BOOKD_ADDR and BOOKD_TOKEN
--transport http: the same client loops over the node's HTTP API at --http-addr (BOOKD_HTTP),
  their calls coalesced into POST /v1/batch requests over M keep-alive connections`;

function parseArgs(argv: string[]): Args {
  const values = new Map<string, string>();
  let json = false;
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index]!;
    if (arg === '--json') {
      json = true;
      continue;
    }
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const [name, inline] = arg.split('=', 2) as [string, string | undefined];
    const known = [
      '--addr',
      '--http-addr',
      '--transport',
      '--workload',
      '--clients',
      '--connections',
      '--duration',
      '--warmup',
      '--interval',
      '--timeout',
      '--seed',
      '--token',
    ];
    if (!known.includes(name)) throw new UsageError(`unknown flag ${arg}`);
    const value = inline ?? argv[++index];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    values.set(name, value);
  }
  const transport = values.get('--transport') ?? 'binary';
  if (transport !== 'binary' && transport !== 'http') throw new UsageError(`unknown transport ${JSON.stringify(transport)}: binary or http`);
  let addr: string | undefined;
  if (transport === 'binary') {
    if (values.has('--http-addr')) throw new UsageError('--http-addr goes with --transport http');
    addr = values.get('--addr') ?? process.env['BOOKD_ADDR'];
    if (!addr) throw new UsageError('--addr is required (the node binary protocol address, e.g. 127.0.0.1:7070)');
  } else {
    if (values.has('--addr')) throw new UsageError('--transport http takes the node HTTP address as --http-addr, not --addr');
    addr = values.get('--http-addr') ?? process.env['BOOKD_HTTP'];
    if (!addr) throw new UsageError('--http-addr is required with --transport http (the node HTTP address, e.g. 127.0.0.1:8080)');
  }
  const workload = values.get('--workload');
  if (!workload) throw new UsageError('--workload is required');
  if (!WORKLOADS.includes(workload as Workload)) {
    throw new UsageError(`unknown workload ${JSON.stringify(workload)}: flash-sale, seat-map, hotel or sell-out`);
  }
  const integer = (name: string, fallback: number, max: number): number => {
    const text = values.get(name);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1 || value > max) throw new UsageError(`${name} must be an integer in 1..=${max}`);
    return value;
  };
  const args: Args = {
    transport,
    addr,
    workload: workload as Workload,
    clients: integer('--clients', 1024, 65_536),
    connections: integer('--connections', 64, 1024),
    durationMs: parseDuration(values.get('--duration') ?? '20s'),
    warmupMs: parseDuration(values.get('--warmup') ?? '5s'),
    intervalMs: parseDuration(values.get('--interval') ?? '10s'),
    timeoutMs: parseDuration(values.get('--timeout') ?? '30s'),
    seed: BigInt(values.get('--seed') ?? '42'),
    token: values.get('--token') ?? process.env['BOOKD_TOKEN'],
    json,
  };
  if (args.intervalMs <= 0) throw new UsageError('--interval must be longer than zero');
  if (args.timeoutMs <= 0) throw new UsageError('--timeout must be longer than zero');
  args.intervalMs = Math.min(args.intervalMs, args.durationMs);
  if (args.durationMs > 0 && Math.round(args.durationMs * 1000) % Math.round(args.intervalMs * 1000) !== 0) {
    throw new UsageError(
      `--duration ${args.durationMs} ms is not a whole number of --interval ${args.intervalMs} ms windows (make the duration a multiple of the interval)`,
    );
  }
  return args;
}

const OPS = ['hold', 'confirm', 'release', 'cancel'] as const;
type Op = (typeof OPS)[number];

interface OpStats {
  latency: Histogram;
  ok: number;
  refused: number;
  failed: number;
}

interface Window {
  latency: Histogram;
  commands: number;
  holdsRefused: number;
}

/**
 * The sell-out's run-wide figures (warm-up included): units sold, when the last hold was
 * granted, and which skus refused a hold for capacity (such a sku is sold out for good, every
 * hold being confirmed).
 */
class SellOut {
  unitsSold = 0;
  /** ms from the run's start to the last granted hold; -1: none yet. */
  lastGrantMs = -1;
  readonly refused = new Set<string>();

  note(op: Op, resource: string | undefined, sinceStartMs: number, outcome: string, code: string | undefined): void {
    if (op === 'hold' && outcome === 'ok') this.lastGrantMs = Math.max(this.lastGrantMs, sinceStartMs);
    else if (op === 'hold' && code === 'insufficient_capacity' && resource !== undefined) this.refused.add(resource);
    else if (op === 'confirm' && outcome === 'ok') this.unitsSold++;
  }
}

/** What the run measured. */
class Recorder {
  readonly ops = new Map<Op, OpStats>();
  readonly windows: Window[];
  unanswered = 0;
  firstFailure: string | null = null;
  readonly start: number;
  readonly measureFrom: number;
  readonly end: number;
  readonly sellOut: SellOut | null;
  private readonly intervalMs: number;

  constructor(args: Args, start: number) {
    this.start = start;
    this.sellOut = args.workload === 'sell-out' ? new SellOut() : null;
    this.measureFrom = start + args.warmupMs;
    this.end = this.measureFrom + args.durationMs;
    this.intervalMs = args.intervalMs;
    const count = args.durationMs === 0 ? 0 : Math.round(args.durationMs / args.intervalMs);
    this.windows = Array.from({ length: count }, () => ({ latency: new Histogram(), commands: 0, holdsRefused: 0 }));
    for (const op of OPS) this.ops.set(op, { latency: new Histogram(), ok: 0, refused: 0, failed: 0 });
  }

  record(op: Op, finished: number, micros: number, outcome: 'ok' | 'refused' | 'failed'): void {
    const stats = this.ops.get(op)!;
    stats.latency.record(micros);
    stats[outcome]++;
    const index = Math.min(Math.floor((finished - this.measureFrom) / this.intervalMs), this.windows.length - 1);
    const window = this.windows[index];
    if (window) {
      window.latency.record(micros);
      window.commands++;
      if (op === 'hold' && outcome === 'refused') window.holdsRefused++;
    }
  }
}

/** A closed-loop client's handle: one command, its result (a refusal rejects with {@link RefusedError}). */
interface Handle {
  execute(command: Command): Promise<unknown>;
}

/** What the bench runs over: the binary client, or the same calls batched over HTTP. */
interface Target {
  /** The handle of client `index`: pinned to connection `index mod M`. */
  handle(index: number): Handle;
  /** The capacity of a resource, or null when there is no such resource. */
  capacityOf(partition: string, id: string): Promise<number | null>;
  /** Runs up to 1 000 setup commands; each must succeed. */
  runAll(commands: Command[]): Promise<void>;
  /** Starts counting frames (or requests) afresh: the setup's are not the workload's. */
  markStart(): void;
  /** How the calls were gathered since {@link Target.markStart}, for the table. */
  gathering(): string;
  close(): Promise<void>;
}

async function binaryTarget(args: Args): Promise<Target> {
  const client = await Client.connect(args.addr, {
    connections: args.connections,
    clientName: 'bookd-bench-ts',
    callTimeoutMs: args.timeoutMs + 1000,
    ...(args.token ? { token: args.token } : {}),
  });
  let start = { ...client.stats };
  return {
    handle: (index) => client.pinned(index % args.connections),
    async capacityOf(partition, id) {
      try {
        return (await client.getResource(partition, id)).capacity;
      } catch (error) {
        if (error instanceof RefusedError && error.code === 'resource_not_found') return null;
        throw error;
      }
    },
    async runAll(commands) {
      for (const entry of await client.batch(commands)) {
        if (!entry.ok) throw new Error(`setup: ${entry.error.message}`);
      }
    },
    markStart() {
      start = { ...client.stats };
    },
    gathering() {
      const commands = client.stats.commandsSent - start.commandsSent;
      return `${(commands / Math.max(client.stats.framesSent - start.framesSent, 1)).toFixed(1)} commands per frame`;
    },
    close: () => client.close(),
  };
}

function httpTarget(args: Args): Target {
  const batcher = new HttpBatcher(args.addr, { connections: args.connections, timeoutMs: args.timeoutMs + 1000, token: args.token });
  const headers: Record<string, string> = args.token ? { authorization: `Bearer ${args.token}` } : {};
  let start = { ...batcher.stats };
  return {
    handle: (index) => batcher.pinned(index),
    async capacityOf(partition, id) {
      const path = `/v1/partitions/${encodeURIComponent(partition)}/resources/${encodeURIComponent(id)}`;
      const response = await fetch(`http://${args.addr}${path}`, { headers });
      const text = await response.text();
      if (response.status === 404) return null;
      if (response.status !== 200) throw new Error(`GET ${path} answered ${response.status}: ${text.slice(0, 200)}`);
      const capacity = (JSON.parse(text) as { capacity?: unknown }).capacity;
      if (typeof capacity !== 'number') throw new Error(`GET ${path} answered no capacity: ${text.slice(0, 200)}`);
      return capacity;
    },
    async runAll(commands) {
      try {
        await Promise.all(commands.map((command) => batcher.execute(command)));
      } catch (error) {
        throw new Error(`setup: ${error instanceof Error ? error.message : String(error)}`);
      }
    },
    markStart() {
      start = { ...batcher.stats };
    },
    gathering() {
      const commands = batcher.stats.commands - start.commands;
      return `${(commands / Math.max(batcher.stats.requests - start.requests, 1)).toFixed(1)} commands per POST /v1/batch`;
    },
    close: async () => batcher.close(),
  };
}

/** Creates the workload's resources in batches of 1 000, 16 in flight, unless they are there. */
async function setup(target: Target, workload: Workload): Promise<number> {
  const total = resourceCount(workload);
  const last = setupCommand(workload, total - 1);
  if ((await target.capacityOf(last.partition, last.id)) === last.capacity) return 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total - 1) {
      const batch: Command[] = [];
      while (batch.length < 1000 && next < total - 1) batch.push(setupCommand(workload, next++));
      await target.runAll(batch);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  // The last resource last: seeing it means everything is there.
  await target.runAll([last]);
  return total;
}

/** One closed-loop client until the end of the run; its counters of the measured window. */
async function closedClient(handle: Handle, loop: ClientLoop, recorder: Recorder): Promise<Counters> {
  let measuring = false;
  for (;;) {
    const started = performance.now();
    if (started >= recorder.end) break;
    const op = loop.op;
    const command = loop.next();
    let outcome: 'ok' | 'refused' | 'failed';
    let code: string | undefined;
    const resource = command.op === 'hold' ? command.items[0]?.resource : undefined;
    try {
      await handle.execute(command);
      outcome = 'ok';
    } catch (error) {
      if (error instanceof RefusedError) {
        outcome = 'refused';
        code = error.code;
      } else {
        outcome = 'failed';
        if (error instanceof TimeoutError) recorder.unanswered++;
        recorder.firstFailure ??= error instanceof Error ? error.message : String(error);
      }
    }
    const finished = performance.now();
    recorder.sellOut?.note(op, resource, finished - recorder.start, outcome, code);
    if (finished >= recorder.end) break;
    if (finished >= recorder.measureFrom) {
      if (!measuring) {
        loop.resetCounters();
        measuring = true;
      }
      recorder.record(op, finished, (finished - started) * 1000, outcome);
    }
    loop.onReply(outcome === 'ok');
  }
  return measuring ? loop.counters : counters();
}

const round3 = (value: number): number => Math.round(value * 1000) / 1000;

/** The sell-out's success figures, as `bookd bench` reports them. */
function sellOutFigures(args: Args, recorder: Recorder, totals: Counters, perS: (count: number) => number): Record<string, unknown> {
  const sellOut = recorder.sellOut!;
  const soldOut = sellOut.refused.size === SELL_OUT_SKUS;
  const soldOutAtS = soldOut ? Math.max(sellOut.lastGrantMs, 0) / 1000 : null;
  let refusalsAfter: number | null = null;
  if (soldOutAtS !== null) {
    const after = recorder.windows.filter((_, index) => (args.warmupMs + index * args.intervalMs) / 1000 >= soldOutAtS);
    const spanS = (after.length * args.intervalMs) / 1000;
    if (spanS > 0) refusalsAfter = round3(after.reduce((sum, w) => sum + w.holdsRefused, 0) / spanS);
  }
  return {
    units: SELL_OUT_SKUS * 1000,
    units_sold: sellOut.unitsSold,
    sold_out_at_s: soldOutAtS === null ? null : round3(soldOutAtS),
    refusals_per_s_after_sell_out: refusalsAfter,
    holds_refused: totals.holdsRefused,
    holds_refused_per_s: perS(totals.holdsRefused),
  };
}

/** The `bookd bench --json` object. */
function report(args: Args, recorder: Recorder, totals: Counters): Record<string, unknown> {
  const durationS = args.durationMs / 1000;
  const perS = (count: number): number => round3(count / Math.max(durationS, 1e-9));
  const all = new Histogram();
  const byOp: Record<string, unknown> = {};
  for (const [op, stats] of recorder.ops) {
    if (stats.latency.count === 0) continue;
    all.add(stats.latency);
    byOp[op] = {
      count: stats.ok + stats.refused + stats.failed,
      ok: stats.ok,
      refused: stats.refused,
      p50_us: stats.latency.quantile(0.5),
      p99_us: stats.latency.quantile(0.99),
    };
  }
  const failed = [...recorder.ops.values()].reduce((sum, stats) => sum + stats.failed, 0);
  const success: Record<string, unknown> =
    args.workload === 'flash-sale'
      ? { bookings: totals.confirmed, bookings_per_s: perS(totals.confirmed) }
      : args.workload === 'hotel'
        ? { stays_booked: totals.confirmed, stays_booked_per_s: perS(totals.confirmed) }
        : args.workload === 'sell-out'
          ? sellOutFigures(args, recorder, totals, perS)
          : {
            holds_granted: totals.holdsGranted,
            holds_refused: totals.holdsRefused,
            holds_granted_per_s: perS(totals.holdsGranted),
            holds_refused_per_s: perS(totals.holdsRefused),
          };
  success['follow_ups_refused'] = totals.followUpsRefused;
  success['errors'] = failed;
  return {
    transport: args.transport,
    workload: args.workload,
    clients: args.clients,
    connections: args.connections,
    duration_s: round3(durationS),
    commands: all.count,
    commands_per_s: perS(all.count),
    latency_us: { p50: all.quantile(0.5), p99: all.quantile(0.99), p999: all.quantile(0.999), max: all.max },
    by_op: byOp,
    success,
    windows: recorder.windows.map((window, index) => ({
      t_s: round3((index * args.intervalMs) / 1000),
      commands: window.commands,
      p99_us: window.latency.quantile(0.99),
      max_us: window.latency.max,
    })),
    unanswered: recorder.unanswered,
  };
}

/** JSON with every object's keys sorted, as serde_json prints a map. */
function sortedJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) return inner;
    return Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  });
}

/** The report for a person. */
function table(args: Args, object: Record<string, any>, gathering: string, cpuUsPerCommand: number): string {
  const over = args.transport === 'http' ? ' HTTP/JSON' : '';
  const lines = [
    `bookd (TypeScript client) ${args.workload}: closed loop, ${args.clients} clients over ${args.connections}${over} connections, ` +
      `${args.durationMs / 1000} s after ${args.warmupMs / 1000} s warm-up`,
    `  commands       ${String(object.commands).padStart(12)}  ${object.commands_per_s.toFixed(0).padStart(12)}/s`,
  ];
  const success = successes(args.workload, {
    ...counters(),
    confirmed: object.success.bookings ?? object.success.stays_booked ?? object.success.units_sold ?? 0,
    holdsGranted: object.success.holds_granted ?? 0,
  });
  const name =
    args.workload === 'flash-sale' ? 'bookings' : args.workload === 'hotel' ? 'stays booked' : args.workload === 'sell-out' ? 'units sold' : 'holds granted';
  lines.push(`  ${name.padEnd(14)} ${String(success).padStart(12)}  ${(success / (args.durationMs / 1000)).toFixed(0).padStart(12)}/s`);
  const l = object.latency_us;
  lines.push(`  latency µs     p50 ${l.p50}  p99 ${l.p99}  p99.9 ${l.p999}  max ${l.max}`);
  lines.push(`  ${'op'.padEnd(8)} ${'count'.padStart(10)} ${'ok'.padStart(10)} ${'refused'.padStart(10)} ${'p50 µs'.padStart(8)} ${'p99 µs'.padStart(8)}`);
  for (const [op, s] of Object.entries(object.by_op as Record<string, any>)) {
    lines.push(
      `  ${op.padEnd(8)} ${String(s.count).padStart(10)} ${String(s.ok).padStart(10)} ${String(s.refused).padStart(10)} ${String(s.p50_us).padStart(8)} ${String(s.p99_us).padStart(8)}`,
    );
  }
  for (const w of object.windows as any[]) {
    lines.push(`  window ${w.t_s.toFixed(1).padStart(6)} s  ${(w.commands / (args.intervalMs / 1000)).toFixed(0).padStart(10)}/s  p99 ${w.p99_us} µs  max ${w.max_us} µs`);
  }
  lines.push(`  unanswered     ${String(object.unanswered).padStart(12)}`);
  lines.push(`  client: ${gathering}, ${cpuUsPerCommand.toFixed(2)} µs of this process's CPU per command`);
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const target = args.transport === 'http' ? httpTarget(args) : await binaryTarget(args);
  try {
    const started = performance.now();
    const written = await setup(target, args.workload);
    if (!args.json) {
      console.error(`bookd: set up ${written} resources in ${((performance.now() - started) / 1000).toFixed(1)} s${written === 0 ? ' (already there)' : ''}`);
    }
    target.markStart();
    const shared = names(args.workload);
    const idPrefix = `t${Date.now()}`;
    const recorder = new Recorder(args, performance.now());
    // This process's CPU over the measured window (user + system), per command.
    let cpuAtStart: NodeJS.CpuUsage | null = null;
    let cpuInWindow: NodeJS.CpuUsage | null = null;
    const cpuStart = setTimeout(() => (cpuAtStart = process.cpuUsage()), args.warmupMs);
    const cpuEnd = setTimeout(() => cpuAtStart && (cpuInWindow = process.cpuUsage(cpuAtStart)), args.warmupMs + args.durationMs);
    const runs: Promise<Counters>[] = [];
    for (let index = 0; index < args.clients; index++) {
      const loop = new ClientLoop(args.workload, args.seed, index, idPrefix, shared);
      runs.push(closedClient(target.handle(index), loop, recorder));
    }
    const totals = counters();
    for (const run of await Promise.all(runs)) addCounters(totals, run);
    clearTimeout(cpuStart);
    clearTimeout(cpuEnd);
    const cpu = cpuInWindow as NodeJS.CpuUsage | null;
    const object = report(args, recorder, totals);
    if (args.json) {
      process.stdout.write(sortedJson(object) + '\n');
    } else {
      const cpuUs = cpu ? cpu.user + cpu.system : 0;
      const commands = object['commands'] as number;
      process.stdout.write(table(args, object, target.gathering(), cpuUs / Math.max(commands, 1)));
      if (recorder.firstFailure) console.error(`  the first failure: ${recorder.firstFailure}`);
    }
  } finally {
    await target.close();
  }
}

main().catch((error: unknown) => {
  if (error instanceof UsageError) {
    console.error(`bench: ${error.message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  console.error(`bench: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
