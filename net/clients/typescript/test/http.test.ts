/**
 * The bench's HTTP transport against a fake node (node:http on a loopback port): how calls are
 * coalesced into `POST /v1/batch` requests, how results find their callers, and how a failed
 * request, a malformed answer or silence end the calls it carried.
 */

import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';

import { BATCH_COMMANDS_MAX, BODY_SIZE_MAX_BYTES, HttpBatcher, commandJson } from '../bench/http.js';
import { BookdError, RefusedError, TimeoutError, UnavailableError } from '../src/index.js';
import type { Command } from '../src/index.js';

interface Seen {
  commands: any[];
  bytes: number;
  authorization: string | undefined;
}

type Answer = (commands: any[], response: http.ServerResponse, request: number) => void;

/** By default: each command's result is `{"status": 200, "body": {"id", "n"}}`, except ids starting with `bad`. */
const ECHO: Answer = (commands, response) => {
  const results = commands.map((command, n) =>
    String(command.id).startsWith('bad')
      ? { status: 409, body: { error: 'insufficient_capacity', message: 'no', resource: 'ga', requested: 1, available: 0 } }
      : { status: 200, body: { id: command.id, n } },
  );
  const body = JSON.stringify({ results });
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  response.end(body);
};

/** A fake node answering `POST /v1/batch` with `answer`; records every request. */
async function fakeNode(answer: Answer = ECHO): Promise<{ addr: string; seen: Seen[]; maxInFlight: () => number; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const server = http.createServer((request, response) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    response.on('finish', () => inFlight--);
    response.on('close', () => {
      if (!response.writableFinished) inFlight--;
    });
    const parts: Buffer[] = [];
    request.on('data', (part: Buffer) => parts.push(part));
    request.on('end', () => {
      assert.equal(request.method, 'POST');
      assert.equal(request.url, '/v1/batch');
      const text = Buffer.concat(parts).toString('utf8');
      const commands = JSON.parse(text).commands;
      seen.push({ commands, bytes: Buffer.byteLength(text), authorization: request.headers['authorization'] });
      answer(commands, response, seen.length);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    addr: `127.0.0.1:${port}`,
    seen,
    maxInFlight: () => maxInFlight,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const hold = (id: string): Command => ({ op: 'hold', partition: 'concert-1', id, items: [{ resource: 'ga', quantity: 2 }], ttlMs: 600_000, ref: null });

describe('the bench over HTTP', () => {
  it('writes each command as /v1/batch takes it', () => {
    const cases: [Command, unknown][] = [
      [{ op: 'put_resource', partition: 'p', id: 'r', capacity: 20 }, { op: 'put_resource', partition: 'p', id: 'r', capacity: 20 }],
      [
        { op: 'hold', partition: 'p', id: 'h"1', items: [{ resource: 'a', quantity: 1 }, { resource: 'b', quantity: 3n }], ttlMs: 1000, ref: 'order 7' },
        { op: 'hold', partition: 'p', id: 'h"1', items: [{ resource: 'a', quantity: 1 }, { resource: 'b', quantity: 3 }], ttl_ms: 1000, ref: 'order 7' },
      ],
      [{ op: 'hold', partition: 'p', id: 'h', items: [{ resource: 'a', quantity: 1 }] }, { op: 'hold', partition: 'p', id: 'h', items: [{ resource: 'a', quantity: 1 }] }],
      [{ op: 'confirm', partition: 'p', id: 'h' }, { op: 'confirm', partition: 'p', id: 'h' }],
      [{ op: 'release', partition: 'p', id: 'h' }, { op: 'release', partition: 'p', id: 'h' }],
      [{ op: 'cancel', partition: 'p', id: 'h' }, { op: 'cancel', partition: 'p', id: 'h' }],
      [{ op: 'extend', partition: 'p', id: 'h', ttlMs: 5 }, { op: 'extend', partition: 'p', id: 'h', ttl_ms: 5 }],
      [{ op: 'delete_partition', partition: 'p' }, { op: 'delete_partition', partition: 'p' }],
    ];
    for (const [command, expected] of cases) assert.deepEqual(JSON.parse(commandJson(command)), expected);
    assert.equal(commandJson({ op: 'put_resource', partition: 'p', id: 'r', capacity: 2n ** 60n }).endsWith(`"capacity":${2n ** 60n}}`), true);
    assert.throws(() => commandJson({ op: 'get_resource', partition: 'p', id: 'r' }), (error: unknown) => error instanceof RefusedError && error.code === 'invalid');
  });

  it('coalesces concurrent calls into one batch per connection and gives each caller its own result', async () => {
    const node = await fakeNode();
    const batcher = new HttpBatcher(node.addr, { connections: 2, timeoutMs: 30_000, token: 'sesame' });
    try {
      const calls = Array.from({ length: 100 }, (_, index) => batcher.pinned(index).execute(hold(index === 37 ? 'bad-37' : `h-${index}`)));
      const settled = await Promise.allSettled(calls);
      assert.equal(node.seen.length, 2);
      assert.deepEqual(node.seen.map((request) => request.commands.length), [50, 50]);
      assert.deepEqual(node.seen.map((request) => request.authorization), ['Bearer sesame', 'Bearer sesame']);
      assert.deepEqual(node.seen[0]!.commands[0], { op: 'hold', partition: 'concert-1', id: 'h-0', items: [{ resource: 'ga', quantity: 2 }], ttl_ms: 600_000 });
      settled.forEach((outcome, index) => {
        if (index === 37) {
          assert.equal(outcome.status, 'rejected');
          const error = (outcome as PromiseRejectedResult).reason;
          assert.ok(error instanceof RefusedError, String(error));
          assert.equal(error.code, 'insufficient_capacity');
          assert.equal(error.details.resource, 'ga');
          assert.equal(error.details.available, 0);
        } else {
          assert.equal(outcome.status, 'fulfilled', String((outcome as PromiseRejectedResult).reason));
          // Connection index % 2 carried it, as the (index >> 1)th command of its batch.
          assert.deepEqual((outcome as PromiseFulfilledResult<unknown>).value, { id: `h-${index}`, n: index >> 1 });
        }
      });
      assert.deepEqual(batcher.stats, { requests: 2, commands: 100 });
    } finally {
      batcher.close();
      await node.close();
    }
  });

  it('keeps batches within 1 000 commands and 64 KiB, one request in flight per connection', async () => {
    const node = await fakeNode();
    const batcher = new HttpBatcher(node.addr, { connections: 1, timeoutMs: 30_000 });
    try {
      const long = 'x'.repeat(40);
      const small = await Promise.all(Array.from({ length: 2500 }, (_, index) => batcher.execute({ op: 'confirm', partition: 'p', id: `${index}` })));
      const large = await Promise.all(Array.from({ length: 1200 }, (_, index) => batcher.execute(hold(`${long}-${index}`))));
      assert.deepEqual(
        small.map((body) => (body as { id: string }).id),
        Array.from({ length: 2500 }, (_, index) => `${index}`),
      );
      assert.deepEqual(
        large.map((body) => (body as { id: string }).id),
        Array.from({ length: 1200 }, (_, index) => `${long}-${index}`),
      );
      for (const request of node.seen) {
        assert.ok(request.commands.length <= BATCH_COMMANDS_MAX, `${request.commands.length} commands`);
        assert.ok(request.bytes <= BODY_SIZE_MAX_BYTES, `${request.bytes} bytes`);
      }
      // 2 500 small ones: three batches (1 000, 1 000, 500); the holds: as many as 64 KiB needs.
      assert.deepEqual(node.seen.slice(0, 3).map((request) => request.commands.length), [1000, 1000, 500]);
      const holdBytes = Buffer.byteLength(commandJson(hold(`${long}-1000`))) + 1;
      assert.ok(node.seen.length - 3 <= Math.ceil((1200 * holdBytes) / (BODY_SIZE_MAX_BYTES - 64)) + 1, `${node.seen.length} requests`);
      assert.ok(node.seen.length - 3 >= 2);
      assert.equal(node.maxInFlight(), 1);
    } finally {
      batcher.close();
      await node.close();
    }
  });

  it('sends the next calls of closed-loop callers woken by an answer together with the calls that queued meanwhile', async () => {
    let arrived!: () => void;
    const firstArrived = new Promise<void>((resolve) => (arrived = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const node = await fakeNode((commands, response, request) => {
      if (request !== 1) return ECHO(commands, response, request);
      arrived();
      void released.then(() => ECHO(commands, response, request));
    });
    const batcher = new HttpBatcher(node.addr, { connections: 1, timeoutMs: 30_000 });
    try {
      const group = (name: string) =>
        Array.from({ length: 25 }, async (_, client) => {
          const handle = batcher.pinned(client);
          for (let step = 0; step < 10; step++) await handle.execute({ op: 'confirm', partition: 'p', id: `${name}${client}-${step}` });
        });
      // The first group's calls are in flight when the second group's first calls queue up.
      const first = group('a');
      await firstArrived;
      const second = group('b');
      release();
      await Promise.all([...first, ...second]);
      // Each answer wakes its callers, whose next calls leave with those that waited: 25, then
      // 50 at a time, then the second group's last 25.
      assert.deepEqual(
        node.seen.map((request) => request.commands.length),
        [25, ...Array.from({ length: 9 }, () => 50), 25],
      );
    } finally {
      batcher.close();
      await node.close();
    }
  });

  it('reads chunked answers', async () => {
    const node = await fakeNode((commands, response) => {
      const body = JSON.stringify({ results: commands.map((command) => ({ status: 201, body: { id: command.id } })) });
      response.writeHead(200, { 'content-type': 'application/json' });
      // No content-length and several writes: node:http sends them as chunks.
      for (let at = 0; at < body.length; at += 7) response.write(body.slice(at, at + 7));
      response.end();
    });
    const batcher = new HttpBatcher(node.addr, { connections: 1, timeoutMs: 30_000 });
    try {
      for (let round = 0; round < 3; round++) {
        const bodies = await Promise.all(Array.from({ length: 20 }, (_, index) => batcher.execute({ op: 'release', partition: 'p', id: `r${round}-${index}` })));
        assert.deepEqual(bodies, Array.from({ length: 20 }, (_, index) => ({ id: `r${round}-${index}` })));
      }
      assert.equal(node.seen.length, 3);
    } finally {
      batcher.close();
      await node.close();
    }
  });

  it('fails every call of a request the node refused as a whole, or answered with the wrong results', async () => {
    const node = await fakeNode((commands, response, request) => {
      if (request === 1) {
        response.writeHead(401, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: 'unauthorized', message: 'a token is required' }));
      } else if (request === 2) {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ results: commands.slice(1).map(() => ({ status: 200, body: {} })) }));
      } else {
        ECHO(commands, response, request);
      }
    });
    const batcher = new HttpBatcher(node.addr, { connections: 1, timeoutMs: 30_000 });
    try {
      for (const expected of [/answered 401 unauthorized: a token is required/, /answered 2 results for 3 commands/]) {
        const settled = await Promise.allSettled([0, 1, 2].map((index) => batcher.execute(hold(`h${index}`))));
        for (const outcome of settled) {
          assert.equal(outcome.status, 'rejected');
          const error = (outcome as PromiseRejectedResult).reason;
          assert.ok(error instanceof BookdError && !(error instanceof RefusedError), String(error));
          assert.match(error.message, expected);
        }
      }
      // The connection goes on.
      assert.deepEqual(await batcher.execute(hold('after')), { id: 'after', n: 0 });
    } finally {
      batcher.close();
      await node.close();
    }
  });

  it('times out a request that gets no answer and carries on over a new connection', async () => {
    const node = await fakeNode((commands, response, request) => {
      if (request > 1) ECHO(commands, response, request);
      // The first request is never answered.
    });
    const batcher = new HttpBatcher(node.addr, { connections: 1, timeoutMs: 300 });
    try {
      const settled = await Promise.allSettled([batcher.execute(hold('a')), batcher.execute(hold('b'))]);
      for (const outcome of settled) {
        assert.equal(outcome.status, 'rejected');
        assert.ok((outcome as PromiseRejectedResult).reason instanceof TimeoutError, String((outcome as PromiseRejectedResult).reason));
      }
      assert.deepEqual(await batcher.execute(hold('c')), { id: 'c', n: 0 });
    } finally {
      batcher.close();
      await node.close();
    }
  });

  it('fails calls to an address nothing listens on as unavailable', async () => {
    const node = await fakeNode();
    const addr = node.addr;
    await node.close();
    const batcher = new HttpBatcher(addr, { connections: 1, timeoutMs: 30_000 });
    try {
      const settled = await Promise.allSettled([batcher.execute(hold('a')), batcher.execute(hold('b'))]);
      for (const outcome of settled) {
        assert.equal(outcome.status, 'rejected');
        assert.ok((outcome as PromiseRejectedResult).reason instanceof UnavailableError, String((outcome as PromiseRejectedResult).reason));
      }
    } finally {
      batcher.close();
    }
  });
});
