/**
 * The client against the real node (`BOOKD_BIN`; the tests fail without it): every command and
 * read, each error code a node can return over the binary protocol (results, ERROR frames, a
 * standby, synchronous standbys, a memory budget, a feed that no longer keeps a cursor),
 * batches, pipelining with automatic batching, the change feed and its resume after the node
 * restarts (SIGKILL and SIGTERM), and the bench's JSON object.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import {
  type Change,
  Client,
  type Command,
  type ErrorCode,
  FrameReader,
  Kind,
  RefusedError,
  ServerError,
  Writer,
  beginFrame,
  decodeErrorFrame,
  decodeHelloOk,
  encodeHello,
  finishFrame,
} from '../src/index.js';
import { Bookd, removeTemp, tempDir } from './bookd.js';

const TOKEN = 's3cret';

/** Waits until `condition()` resolves true, polling, up to `ms`. */
async function until(what: string, condition: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Asserts that `promise` rejects with a refusal of `code` (and these details, when given). */
async function refused(promise: Promise<unknown>, code: ErrorCode, details?: Record<string, unknown>): Promise<RefusedError> {
  try {
    const value = await promise;
    assert.fail(`expected ${code}, got ${JSON.stringify(value)}`);
  } catch (error) {
    if (!(error instanceof RefusedError)) throw error;
    assert.equal(error.code, code, error.message);
    assert.equal(error.local, false);
    if (details) assert.deepEqual(error.details, details);
    return error;
  }
}

/** A raw protocol connection (the codec over a socket) for what the client never sends. */
class Raw {
  private readonly socket: net.Socket;
  private readonly frames: { kind: number; payload: Buffer }[] = [];
  private closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    const reader = new FrameReader(16 * 1024 * 1024, (buf, pos, total) => {
      this.frames.push({ kind: buf[pos + 5]!, payload: Buffer.from(buf.subarray(pos + 16, pos + total)) });
    });
    socket.on('data', (chunk: Buffer) => reader.push(chunk, () => true));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => (this.closed = true));
  }

  static async connect(address: string): Promise<Raw> {
    const [host, port] = address.split(':');
    const socket = net.connect({ host: host!, port: Number(port) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new Raw(socket);
  }

  /** Connects and completes the handshake with `token`. */
  static async hello(address: string, token: string): Promise<Raw> {
    const raw = await Raw.connect(address);
    const writer = new Writer(64);
    const start = beginFrame(writer, Kind.Hello, 1);
    encodeHello(writer, { token, clientName: 'raw' });
    finishFrame(writer, start);
    raw.send(writer.take());
    const frame = await raw.next();
    assert.equal(frame.kind, Kind.HelloOk);
    decodeHelloOk(frame.payload);
    return raw;
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  async next(ms = 20_000): Promise<{ kind: number; payload: Buffer }> {
    await until('a frame from the node', () => this.frames.length > 0 || this.closed, ms);
    const frame = this.frames.shift();
    if (!frame) throw new Error('the node closed the connection without a frame');
    return frame;
  }

  /** The node's ERROR frame, then its close. */
  async expectError(code: ErrorCode): Promise<string> {
    const frame = await this.next();
    assert.equal(frame.kind, Kind.Error, `expected ERROR, got kind ${frame.kind}`);
    const error = decodeErrorFrame(frame.payload);
    assert.equal(error.code, code, error.message);
    await until('the node closes', () => this.closed);
    return error.message;
  }

  close(): void {
    this.socket.destroy();
  }
}

describe('a real node', () => {
  let dir = '';
  let node: Bookd;
  let client: Client;

  before(async () => {
    dir = tempDir();
    node = await Bookd.serve(`${dir}/main`, ['--token', TOKEN, '--shards', '2']);
    client = await Client.connect(node.binary, { connections: 4, token: TOKEN, retries: 20, backoffMaxMs: 200 });
  });

  after(async () => {
    await client?.close();
    await node?.kill9();
    removeTemp(dir);
  });

  it('runs the worked example: three seats, a hold, a refused overlap, a confirm', async () => {
    for (const seat of ['A-1', 'A-2', 'A-3']) {
      const put = await client.putResource('concert-1', seat, 1);
      assert.deepEqual(put, {
        kind: 'resource',
        created: true,
        partition: 'concert-1',
        id: seat,
        capacity: 1,
        held: 0,
        confirmed: 0,
        available: 1,
      });
    }
    const items = [
      { resource: 'A-1', quantity: 1 },
      { resource: 'A-2', quantity: 1 },
    ];
    const hold = await client.hold('concert-1', 'order-1001', items, { ttlMs: 60_000, ref: 'cart-77' });
    assert.equal(hold.status, 'held');
    assert.equal(hold.existing, false);
    assert.equal(hold.ref, 'cart-77');
    assert.deepEqual(hold.items, items);
    assert.ok(Math.abs(hold.expiresAtMs - (Date.now() + 60_000)) < 10_000);
    // Retrying the same hold is safe: it answers the existing one.
    assert.equal((await client.hold('concert-1', 'order-1001', items, { ttlMs: 60_000, ref: 'cart-77' })).existing, true);
    const overlap = await refused(
      client.hold('concert-1', 'order-1002', [
        { resource: 'A-2', quantity: 1 },
        { resource: 'A-3', quantity: 1 },
      ]),
      'insufficient_capacity',
      { resource: 'A-2', requested: 1, available: 0 },
    );
    assert.equal(overlap.message, 'insufficient_capacity: resource A-2: requested 1, available 0');
    assert.equal(overlap.httpStatus, 409);
    // Nothing was taken by the refused hold.
    assert.equal((await client.getResource('concert-1', 'A-3')).available, 1);
    const confirmed = await client.confirm('concert-1', 'order-1001');
    assert.equal(confirmed.status, 'confirmed');
    assert.deepEqual(
      (await client.listResources('concert-1')).resources.map((r) => [r.id, r.held, r.confirmed, r.available]),
      [
        ['A-1', 0, 1, 0],
        ['A-2', 0, 1, 0],
        ['A-3', 0, 0, 1],
      ],
    );
  });

  it('answers every command and read with its typed result', async () => {
    const p = 'every-command';
    assert.equal((await client.putResource(p, 'r', 10)).created, true);
    const changed = await client.putResource(p, 'r', 12);
    assert.equal(changed.created, false);
    assert.equal(changed.capacity, 12);
    await client.putResource(p, 's', 5);
    const held = await client.hold(p, 'h1', [{ resource: 'r', quantity: 3 }]);
    assert.ok(Math.abs(held.expiresAtMs - (Date.now() + 600_000)) < 10_000, 'the default ttl is 10 minutes');
    assert.equal(held.ref, null);
    const extended = await client.extend(p, 'h1', 1_000_000);
    assert.ok(extended.expiresAtMs > held.expiresAtMs);
    assert.equal((await client.getHold(p, 'h1')).status, 'held');
    assert.deepEqual((await client.getResource(p, 'r')).held, 3);
    assert.equal((await client.release(p, 'h1')).status, 'released');
    assert.equal((await client.release(p, 'h1')).status, 'released', 'a repeat changes nothing and succeeds');
    await client.hold(p, 'h2', [
      { resource: 'r', quantity: 2 },
      { resource: 's', quantity: 1 },
    ]);
    assert.equal((await client.confirm(p, 'h2')).status, 'confirmed');
    assert.equal((await client.cancel(p, 'h2')).status, 'cancelled');
    const resource = await client.getResource(p, 'r');
    assert.deepEqual([resource.held, resource.confirmed, resource.available], [0, 0, 12]);
    // Listing in pages: next goes into after.
    for (const id of ['t-1', 't-2', 't-3']) await client.putResource(p, id, 1);
    const first = await client.listResources(p, { prefix: 't-', limit: 2 });
    assert.deepEqual(
      first.resources.map((r) => r.id),
      ['t-1', 't-2'],
    );
    assert.equal(first.next, 't-2');
    const second = await client.listResources(p, { prefix: 't-', after: first.next, limit: 2 });
    assert.deepEqual(
      second.resources.map((r) => r.id),
      ['t-3'],
    );
    assert.equal(second.next, null);
    const empty = await client.listResources(p, { prefix: 'zzz' });
    assert.deepEqual([empty.resources, empty.next], [[], null]);
    const deleted = await client.deletePartition(p);
    assert.deepEqual(deleted, { kind: 'partition_deleted', partition: p, resources: 5, holds: 2 });
    // execute() is the same as the named methods.
    const put = await client.execute({ op: 'put_resource', partition: p, id: 'again', capacity: 1 });
    assert.equal(put.created, true);
    assert.equal((await client.execute({ op: 'get_resource', partition: p, id: 'again' })).capacity, 1);
  });

  it('refuses commands with every error code a command result can carry, with their details', async () => {
    const p = 'errors';
    await client.putResource(p, 'r', 2);
    await refused(client.hold(p, 'h', [{ resource: 'nope', quantity: 1 }]), 'resource_not_found', { resource: 'nope' });
    await refused(client.getResource(p, 'nope'), 'resource_not_found', { resource: 'nope' });
    await refused(client.confirm(p, 'nope'), 'hold_not_found');
    await refused(client.getHold(p, 'nope'), 'hold_not_found');
    await refused(client.deletePartition('no-such-partition'), 'not_found');
    await refused(client.hold(p, 'big', [{ resource: 'r', quantity: 3 }]), 'insufficient_capacity', {
      resource: 'r',
      requested: 3,
      available: 2,
    });
    await client.hold(p, 'h', [{ resource: 'r', quantity: 1 }]);
    await refused(client.hold(p, 'h', [{ resource: 'r', quantity: 2 }]), 'hold_id_conflict');
    await refused(client.cancel(p, 'h'), 'hold_not_confirmed');
    await refused(client.putResource(p, 'r', 0), 'capacity_below_usage', { capacity: 0, used: 1 });
    const live = await refused(client.deletePartition(p), 'partition_has_live_holds', { held: 1 });
    assert.equal(live.httpStatus, 409);
    await client.release(p, 'h');
    await refused(client.confirm(p, 'h'), 'hold_released');
    await client.hold(p, 'c', [{ resource: 'r', quantity: 1 }]);
    await client.confirm(p, 'c');
    await refused(client.release(p, 'c'), 'hold_confirmed');
    await client.cancel(p, 'c');
    await refused(client.confirm(p, 'c'), 'hold_cancelled');
    await client.hold(p, 'short', [{ resource: 'r', quantity: 1 }], { ttlMs: 1 });
    await until('the hold expires', async () => (await client.getHold(p, 'short')).status === 'expired');
    await refused(client.confirm(p, 'short'), 'hold_expired');
    await refused(client.extend(p, 'short', 1000), 'hold_expired');
    const invalid = await refused(client.hold(p, 'zero', [{ resource: 'r', quantity: 0 }]), 'invalid');
    assert.equal(invalid.details.field?.includes('quantity'), true, invalid.message);
    assert.equal(invalid.httpStatus, 422);
    await refused(client.hold(p, 'ttl', [{ resource: 'r', quantity: 1 }], { ttlMs: 86_400_001 }), 'invalid');
    await refused(client.putResource(p, 'x'.repeat(65), 1), 'invalid');
    await refused(client.putResource(p, 'bad name', 1), 'invalid');
    await refused(client.putResource(p, 'huge', 2n ** 53n), 'invalid');
    await refused(client.listResources(p, { limit: 1001 }), 'invalid');
  });

  it('refuses a wrong token with unauthorized', async () => {
    for (const token of ['wrong', '']) {
      try {
        await Client.connect(node.binary, { connections: 1, token });
        assert.fail('connected with a wrong token');
      } catch (error) {
        assert.ok(error instanceof ServerError, String(error));
        assert.equal(error.code, 'unauthorized');
        assert.equal(error.httpStatus, 401);
      }
    }
  });

  it('answers what breaks the protocol with ERROR bad_request or payload_too_large', async () => {
    const garbage = await Raw.connect(node.binary);
    garbage.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await garbage.expectError('payload_too_large');
    const noHello = await Raw.connect(node.binary);
    const writer = new Writer(64);
    const start = beginFrame(writer, Kind.Request, 5);
    writer.u16(1);
    writer.u8(8);
    writer.str8('p', 'partition');
    writer.str8('h', 'id');
    finishFrame(writer, start);
    noHello.send(writer.take());
    assert.match(await noHello.expectError('bad_request'), /HELLO/);
    const badVersion = await Raw.hello(node.binary, TOKEN);
    badVersion.send(Buffer.from([12, 0, 0, 0, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    await badVersion.expectError('bad_request');
    const oversized = await Raw.hello(node.binary, TOKEN);
    const prefix = Buffer.alloc(16);
    prefix.writeUInt32LE(2_000_000, 0);
    prefix[4] = 1;
    prefix[5] = Kind.Request;
    oversized.send(prefix);
    assert.match(await oversized.expectError('payload_too_large'), /2000000/);
    const badSubscribe = await Raw.hello(node.binary, TOKEN);
    const sub = new Writer(64);
    const subStart = beginFrame(sub, Kind.Subscribe, 3);
    sub.str16('nonsense', 'cursor');
    sub.u8(0);
    sub.u32(10);
    finishFrame(sub, subStart);
    badSubscribe.send(sub.take());
    await badSubscribe.expectError('invalid');
    // Through the client: a malformed cursor ends the subscription with the node's refusal.
    try {
      await client.subscribe({ cursor: 'nonsense' }).next();
      assert.fail('a malformed cursor was accepted');
    } catch (error) {
      assert.ok(error instanceof ServerError, String(error));
      assert.equal(error.code, 'invalid');
      assert.equal(error.httpStatus, 422);
    }
  });

  it('runs a batch of 1 000 commands as one frame, each with its own result', async () => {
    const p = 'batch';
    await client.putResource(p, 'r', 500);
    const commands: Command[] = Array.from({ length: 1000 }, (_, index) => ({
      op: 'hold',
      partition: p,
      id: `b-${index}`,
      items: [{ resource: 'r', quantity: 1 }],
    }));
    const pinned = client.pinned(0);
    const framesBefore = client.stats.framesSent;
    const entries = await pinned.batch(commands);
    assert.equal(client.stats.framesSent - framesBefore, 1, 'one REQUEST frame');
    assert.equal(entries.length, 1000);
    assert.equal(entries.filter((e) => e.ok).length, 500);
    const refusedEntries = entries.filter((e) => !e.ok);
    assert.ok(refusedEntries.every((e) => !e.ok && e.error.code === 'insufficient_capacity'));
    assert.ok(entries.slice(0, 500).every((e) => e.ok && e.result.kind === 'hold' && e.result.status === 'held'));
    // Statuses only: the same outcomes without the bodies.
    const statuses = await pinned.batchStatuses(commands.map((c, index) => (index < 2 ? c : { op: 'confirm', partition: p, id: `b-${index}` })));
    assert.deepEqual(statuses.slice(0, 3), [null, null, null]);
    assert.equal(statuses.filter((s) => s === 'hold_not_found').length, 500);
    await assert.rejects(
      pinned.batch([...commands, commands[0]!]),
      (error: unknown) => error instanceof RefusedError && error.code === 'invalid' && error.local,
    );
  });

  it('pipelines concurrent calls, gathering them into frames', async () => {
    const p = 'pipelined';
    await client.putResource(p, 'r', 1_000_000);
    const before = { ...client.stats };
    const calls: Promise<unknown>[] = [];
    for (let index = 0; index < 4000; index++) {
      calls.push(client.hold(p, `p-${index}`, [{ resource: 'r', quantity: 1 }]).then((hold) => client.confirm(p, hold.id)));
    }
    const results = (await Promise.all(calls)) as { status: string }[];
    assert.ok(results.every((result) => result.status === 'confirmed'));
    const frames = client.stats.framesSent - before.framesSent;
    const commands = client.stats.commandsSent - before.commandsSent;
    assert.equal(commands, 8000);
    assert.ok(frames * 20 < commands, `${frames} frames for ${commands} commands`);
    assert.equal((await client.getResource(p, 'r')).confirmed, 4000);
  });

  it('resends calls in flight when the node is killed, and every acknowledged hold survives the restart', async () => {
    const p = 'resend';
    await client.putResource(p, 'r', 1_000_000);
    let stop = false;
    const acknowledged: string[] = [];
    const failures: string[] = [];
    let next = 0;
    // Closed loops that keep holds in flight through the SIGKILL and the restart.
    const loops = Array.from({ length: 64 }, async (_, loop) => {
      const handle = client.pinned(loop);
      while (!stop) {
        const id = `k-${next++}`;
        try {
          const hold = await handle.hold(p, id, [{ resource: 'r', quantity: 1 }]);
          assert.equal(hold.status, 'held');
          acknowledged.push(id);
        } catch (error) {
          failures.push(`${id}: ${(error as Error).name}: ${(error as Error).message}`);
        }
      }
    });
    await until('holds before the kill', () => acknowledged.length >= 500);
    await node.kill9();
    const beforeRestart = acknowledged.length;
    await node.restart();
    await until('holds after the restart', () => acknowledged.length >= beforeRestart + 500);
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(failures, [], 'every call lost with the connection was resent and answered');
    const resource = await client.getResource(p, 'r');
    assert.equal(resource.held, acknowledged.length, 'every acknowledged hold is there, once');
    const sample = acknowledged.filter((_, index) => index % 50 === 0);
    for (const id of sample) assert.equal((await client.getHold(p, id)).status, 'held', id);
  });

  it('follows the change feed and resumes after the node restarts (SIGKILL and SIGTERM), without a gap or a repeat', async () => {
    const p = 'feed';
    const listed = await node.request('GET', `/v1/partitions/${p}/resources`, undefined, TOKEN);
    assert.equal(listed.status, 200, JSON.stringify(listed.json));
    const subscription = client.subscribe({ cursor: listed.json.cursor, partition: p, creditWindow: 8 });
    const seen: Change[] = [];
    const consume = (async () => {
      for await (const change of subscription) {
        seen.push(change);
        if (seen.length === 30) break;
      }
    })();
    for (let index = 0; index < 10; index++) await client.putResource(p, `r-${index}`, index + 1);
    await until('the first changes', () => seen.length === 10);
    await node.kill9();
    await node.restart();
    for (let index = 10; index < 20; index++) await client.putResource(p, `r-${index}`, index + 1);
    await until('the changes after a SIGKILL', () => seen.length === 20);
    // A clean stop: connections get ERROR unavailable ("node stopping"), then it comes back.
    const raw = await Raw.hello(node.binary, TOKEN);
    await node.terminate();
    assert.match(await raw.expectError('unavailable'), /stopping/);
    await node.restart();
    await client.hold(p, 'h', [{ resource: 'r-0', quantity: 1 }]);
    await client.confirm(p, 'h');
    for (let index = 20; index < 28; index++) await client.putResource(p, `r-${index}`, index + 1);
    await consume;
    assert.deepEqual(
      seen.map((change) => (change.op === 'put_resource' ? change.resources[0]!.id : `${change.op}:${change.hold!.id}`)),
      [...Array.from({ length: 20 }, (_, index) => `r-${index}`), 'hold:h', 'confirm:h', ...Array.from({ length: 8 }, (_, i) => `r-${20 + i}`)],
    );
    const confirm = seen[21]!;
    assert.deepEqual(confirm.resources, [{ partition: p, id: 'r-0', capacity: 1, held: 0, confirmed: 1, available: 0 }]);
    assert.equal(confirm.hold?.status, 'confirmed');
    assert.ok(subscription.connects >= 3, `${subscription.connects} connections`);
    // The cursor resumes exactly: a new subscription from it sees only what comes next.
    const next = client.subscribe({ cursor: subscription.cursor, partition: p });
    await client.putResource(p, 'last', 1);
    const after = await next.next();
    assert.equal(after.value?.resources[0]?.id, 'last');
    next.close();
  });
});

describe('special nodes', () => {
  const dir = tempDir();
  const nodes: Bookd[] = [];
  const clients: Client[] = [];
  after(async () => {
    for (const client of clients) await client.close();
    for (const node of nodes) await node.kill9();
    removeTemp(dir);
  });

  async function start(name: string, args: string[], subcommand = 'serve'): Promise<{ node: Bookd; client: Client }> {
    const node = await Bookd.start(subcommand, `${dir}/${name}`, args);
    nodes.push(node);
    const client = await Client.connect(node.binary, { connections: 1 });
    clients.push(client);
    return { node, client };
  }

  it('a standby refuses writes with standby_read_only and serves reads', async () => {
    const primary = await start('primary', ['--shards', '1']);
    await primary.client.putResource('p', 'r', 3);
    const standby = await start('standby', ['--primary', primary.node.binary, '--shards', '1'], 'standby');
    assert.equal(standby.client.hello.role, 'standby');
    await until('the standby has the resource', async () =>
      standby.client.getResource('p', 'r').then(
        () => true,
        () => false,
      ),
    );
    const error = await refused(standby.client.putResource('p', 'r', 4), 'standby_read_only');
    assert.equal(error.httpStatus, 503);
    await refused(standby.client.hold('p', 'h', [{ resource: 'r', quantity: 1 }]), 'standby_read_only');
    assert.equal((await standby.client.getResource('p', 'r')).capacity, 3);
  });

  it('a primary whose synchronous standby is missing answers replication_timeout', async () => {
    const { client } = await start('sync', ['--shards', '1', '--sync-standbys', '1', '--replication-timeout-ms', '200']);
    const error = await refused(client.putResource('p', 'r', 1), 'replication_timeout');
    assert.equal(error.httpStatus, 503);
    assert.equal(error.retryable, true);
  });

  it('a node past its memory budget answers storage_full (memory)', async () => {
    const { client } = await start('memory', ['--shards', '1', '--memory-max', '1']);
    const error = await refused(client.putResource('p', 'r', 1), 'storage_full', { reason: 'memory' });
    assert.equal(error.httpStatus, 507);
  });

  it('a cursor older than the feed keeps is refused with cursor_expired', async () => {
    const { node, client } = await start('feed', ['--shards', '1', '--segment-size', '64KiB', '--feed-retention', '0s']);
    await client.putResource('p', 'r', 10_000_000);
    const listed = await node.request('GET', '/v1/partitions/p/resources');
    const oldCursor = listed.json.cursor as string;
    const holds = async (prefix: string, count: number): Promise<void> => {
      for (let batch = 0; batch < count / 500; batch++) {
        const commands: Command[] = Array.from({ length: 500 }, (_, index) => ({
          op: 'hold',
          partition: 'p',
          id: `${prefix}-${batch}-${index}`,
          items: [{ resource: 'r', quantity: 1 }],
          ref: 'x'.repeat(100),
        }));
        const entries = await client.batch(commands);
        assert.ok(entries.every((entry) => entry.ok));
      }
    };
    await holds('a', 5000);
    assert.equal((await node.request('POST', '/admin/checkpoint')).status, 200);
    await holds('b', 500);
    assert.equal((await node.request('POST', '/admin/checkpoint')).status, 200);
    await holds('c', 500);
    try {
      await client.subscribe({ cursor: oldCursor }).next();
      assert.fail('an expired cursor was served');
    } catch (error) {
      assert.ok(error instanceof ServerError, String(error));
      assert.equal(error.code, 'cursor_expired');
      assert.equal(error.httpStatus, 410);
      assert.match(error.serverMessage, /oldest cursor: c/);
    }
  });
});

describe('npm run bench', () => {
  it('prints the same JSON object as bookd bench --json', async () => {
    const dir = tempDir();
    const node = await Bookd.serve(`${dir}/bench`, ['--shards', '1']);
    try {
      const main = fileURLToPath(new URL('../bench/main.js', import.meta.url));
      const args = [main, '--addr', node.binary, '--workload', 'flash-sale', '--clients', '32', '--connections', '4'];
      args.push('--duration', '1s', '--warmup', '0.2s', '--json');
      const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 60_000 });
      const report = JSON.parse(stdout);
      assert.deepEqual(Object.keys(report).sort(), [
        'by_op',
        'clients',
        'commands',
        'commands_per_s',
        'connections',
        'duration_s',
        'latency_us',
        'success',
        'transport',
        'unanswered',
        'windows',
        'workload',
      ]);
      assert.equal(report.workload, 'flash-sale');
      assert.equal(report.transport, 'binary');
      assert.deepEqual([report.clients, report.connections, report.duration_s], [32, 4, 1]);
      assert.ok(report.commands > 0 && report.commands_per_s > 0, stdout);
      assert.deepEqual(Object.keys(report.latency_us).sort(), ['max', 'p50', 'p99', 'p999']);
      assert.deepEqual(Object.keys(report.by_op).sort(), ['confirm', 'hold']);
      assert.deepEqual(Object.keys(report.by_op.hold).sort(), ['count', 'ok', 'p50_us', 'p99_us', 'refused']);
      assert.equal(report.by_op.hold.refused, 0);
      assert.ok(report.success.bookings > 0);
      assert.deepEqual([report.success.errors, report.success.follow_ups_refused, report.unanswered], [0, 0, 0]);
      assert.equal(report.windows.length, 1);
      assert.deepEqual(Object.keys(report.windows[0]).sort(), ['commands', 'max_us', 'p99_us', 't_s']);
      const resource = await node.request('GET', '/v1/partitions/concert-1/resources/ga');
      assert.ok(resource.json.confirmed >= report.success.bookings, JSON.stringify(resource.json));
    } finally {
      await node.kill9();
      removeTemp(dir);
    }
  });

  it('runs the same loops over HTTP/JSON batches with --transport http', async () => {
    const dir = tempDir();
    const node = await Bookd.serve(`${dir}/bench-http`, ['--shards', '1', '--token', 'bench-token']);
    try {
      const main = fileURLToPath(new URL('../bench/main.js', import.meta.url));
      const args = [main, '--transport', 'http', '--http-addr', node.http, '--token', 'bench-token', '--workload', 'flash-sale'];
      args.push('--clients', '32', '--connections', '4', '--duration', '1s', '--warmup', '0.2s', '--json');
      const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 60_000 });
      const report = JSON.parse(stdout);
      assert.equal(report.transport, 'http');
      assert.equal(report.workload, 'flash-sale');
      assert.deepEqual([report.clients, report.connections, report.duration_s], [32, 4, 1]);
      assert.ok(report.commands > 0 && report.commands_per_s > 0, stdout);
      assert.deepEqual(Object.keys(report.by_op).sort(), ['confirm', 'hold']);
      assert.equal(report.by_op.hold.count + report.by_op.confirm.count, report.commands);
      assert.ok(report.by_op.hold.ok > 0 && report.success.bookings > 0, stdout);
      assert.equal(report.success.bookings, report.by_op.confirm.ok);
      assert.deepEqual([report.success.errors, report.success.follow_ups_refused, report.unanswered], [0, 0, 0]);
      const resource = await node.request('GET', '/v1/partitions/concert-1/resources/ga', undefined, 'bench-token');
      assert.ok(resource.json.confirmed >= report.success.bookings, JSON.stringify(resource.json));
      // Without the token every command fails, and says so.
      const refused = await promisify(execFile)(
        process.execPath,
        [main, '--transport', 'http', '--http-addr', node.http, '--workload', 'flash-sale', '--clients', '2', '--connections', '1', '--duration', '0.2s', '--warmup', '0s', '--json'],
        { timeout: 60_000 },
      ).then(
        () => null,
        (error: { code?: number; stderr?: string }) => error,
      );
      assert.ok(refused && refused.code === 1 && /401/.test(refused.stderr ?? ''), JSON.stringify(refused));
    } finally {
      await node.kill9();
      removeTemp(dir);
    }
  });
});
