/**
 * The client against a fake node on loopback: malformed input of every kind (truncated frames,
 * unknown kinds and codes, oversized frames, garbage, frames that never complete, silence) ends
 * each call with a clear typed error within a bound, never a hang; and the client's own
 * mechanics — batching, pipelining out of order, resends after a lost connection, timeouts,
 * bounded buffers, local refusals, the subscription's credit and resume — do what they say.
 */

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  Client,
  type ClientOptions,
  type Command,
  decodeCredit,
  decodeHello,
  decodeRequest,
  decodeSubscribe,
  encodeChanges,
  Kind,
  ProtocolError,
  RefusedError,
  RequestTooLargeError,
  type Result,
  ServerError,
  TimeoutError,
  UnavailableError,
  Writer,
  beginFrame,
  finishFrame,
  type Change,
  BookdError,
} from '../src/index.js';
import { FakeServer, answering, errorFrame, helloOk, holdResult, response, DEFAULT_HELLO } from './fake-server.js';
import { fromHex, readRepoFile } from './repo.js';

const fakes: FakeServer[] = [];
const clients: Client[] = [];
after(async () => {
  for (const client of clients) await client.close();
  for (const fake of fakes) await fake.close();
});

async function fake(options: Parameters<typeof FakeServer.start>[0] = {}): Promise<FakeServer> {
  const server = await FakeServer.start(options);
  fakes.push(server);
  return server;
}

async function connect(server: FakeServer, options: ClientOptions = {}): Promise<Client> {
  const client = await Client.connect(server.address, { connections: 1, ...options });
  clients.push(client);
  return client;
}

/** Waits until `condition()` holds, up to `ms` (polling every 5 ms). */
async function until(what: string, condition: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Asserts `promise` rejects with an instance of `type` whose message matches, within `ms`. */
async function rejectsWithin(
  promise: Promise<unknown>,
  type: new (...args: never[]) => Error,
  message: RegExp,
  ms = 5_000,
): Promise<Error> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms (a hang)`)), ms);
  });
  try {
    await Promise.race([promise, bound]);
  } catch (error) {
    clearTimeout(timer);
    assert.ok(error instanceof type, `expected ${type.name}, got ${(error as Error).name}: ${(error as Error).message}`);
    assert.match((error as Error).message, message);
    return error as Error;
  }
  clearTimeout(timer);
  throw new Error(`expected a ${type.name}, the call succeeded`);
}

const vectors = JSON.parse(readRepoFile('docs/protocol-vectors.json')) as {
  malformed: { name: string; hex: string; error: string }[];
};

/** A frame's bytes with request id `requestId` patched in (when the frame has a header). */
function withRequestId(bytes: Buffer, requestId: number): Buffer {
  const copy = Buffer.from(bytes);
  if (copy.length >= 16) copy.writeUInt32LE(requestId, 8);
  return copy;
}

describe('a fake node that sends malformed input', () => {
  for (const malformed of vectors.malformed.filter((m) => m.name.startsWith('response') || m.name.startsWith('frame'))) {
    it(`${malformed.name}: the call fails with a protocol error, no hang`, async () => {
      const server = await fake({
        onFrame(connection, frame) {
          if (frame.kind === Kind.Request) connection.send(withRequestId(fromHex(malformed.hex), frame.requestId));
        },
      });
      const client = await connect(server, { retries: 0 });
      await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /protocol error: ./);
    });
  }

  for (const name of ['hello-ok-role', 'error-unknown-code']) {
    it(`${name} as the handshake's answer: connect fails with a protocol error`, async () => {
      const bytes = fromHex(vectors.malformed.find((m) => m.name === name)!.hex);
      const server = await fake({ onHello: () => bytes });
      await rejectsWithin(Client.connect(server.address, { connections: 1 }), ProtocolError, /unknown value/);
    });
  }

  it('garbage instead of HELLO_OK: connect fails with a protocol error', async () => {
    const server = await fake({ onHello: () => Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n') });
    await rejectsWithin(Client.connect(server.address, { connections: 1 }), ProtocolError, /frame length .* exceeds|version/);
  });

  it('a RESPONSE before HELLO_OK: connect fails with a protocol error', async () => {
    const server = await fake({ onHello: () => response(0, []) });
    await rejectsWithin(Client.connect(server.address, { connections: 1 }), ProtocolError, /RESPONSE frame before HELLO_OK/);
  });

  it('an ERROR unauthorized at the handshake: connect fails with the code and its HTTP status', async () => {
    const server = await fake({ onHello: () => errorFrame('unauthorized', 'wrong or missing token', 0) });
    const error = (await rejectsWithin(
      Client.connect(server.address, { connections: 1, token: 'nope' }),
      ServerError,
      /unauthorized: wrong or missing token/,
    )) as ServerError;
    assert.equal(error.code, 'unauthorized');
    assert.equal(error.httpStatus, 401);
  });

  it('no HELLO_OK at all: connect fails once the connect timeout passes', async () => {
    const server = await fake({ onHello: () => null });
    await rejectsWithin(Client.connect(server.address, { connections: 1, connectTimeoutMs: 200 }), TimeoutError, /no handshake/);
  });

  it('an unknown frame kind mid-connection: in-flight calls fail with a protocol error', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        const bytes = response(frame.requestId, []);
        bytes[5] = 0x42;
        connection.send(bytes);
      },
    });
    const client = await connect(server, { retries: 0 });
    await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /unknown frame kind 0x42/);
  });

  it('a kind the node must not send (CHANGES on a request connection): a protocol error', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        const writer = new Writer(64);
        const start = beginFrame(writer, Kind.Changes, frame.requestId);
        encodeChanges(writer, { cursor: 'c1.0', changes: [] });
        finishFrame(writer, start);
        connection.send(writer.take());
      },
    });
    const client = await connect(server, { retries: 0 });
    await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /unexpected CHANGES frame/);
  });

  it('a RESPONSE to a request never sent: a protocol error', async () => {
    const server = await fake({ onFrame: (connection, frame) => connection.respond(frame.requestId + 1000, []) });
    const client = await connect(server, { retries: 0 });
    await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /RESPONSE to unknown request/);
  });

  it('a RESPONSE with fewer results than commands: a protocol error', async () => {
    const server = await fake({ onFrame: (connection, frame) => connection.respond(frame.requestId, []) });
    const client = await connect(server, { retries: 0 });
    await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /RESPONSE of 0 results to a REQUEST of 1 commands/);
  });

  it('a frame larger than the client buffers: refused from its length prefix alone', async () => {
    const server = await fake({
      onFrame(connection) {
        const prefix = Buffer.alloc(8);
        prefix.writeUInt32LE(4096, 0);
        prefix[4] = 1;
        prefix[5] = Kind.Response;
        connection.send(prefix);
      },
    });
    const client = await connect(server, { retries: 0, frameSizeMaxBytes: 1024 });
    await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /frame length 4096 exceeds the limit of 1024 bytes/);
  });

  it('a frame that never completes: a protocol error after the frame timeout', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        connection.send(response(frame.requestId, [holdResult({ op: 'get_hold', partition: 'p', id: 'h' })]).subarray(0, 20));
      },
    });
    const client = await connect(server, { retries: 0, frameTimeoutMs: 200, callTimeoutMs: 10_000 });
    await rejectsWithin(client.getHold('p', 'h'), ProtocolError, /did not complete within 200 ms \(20 bytes received\)/);
  });

  it('a frame cut short by the node closing: the call is resent, and with no retries left fails as unavailable', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        connection.send(response(frame.requestId, [holdResult({ op: 'get_hold', partition: 'p', id: 'h' })]).subarray(0, 30));
        setTimeout(() => connection.close(), 20);
      },
    });
    const client = await connect(server, { retries: 2, backoffInitialMs: 5 });
    await rejectsWithin(client.getHold('p', 'h'), UnavailableError, /in the middle of a frame \(30 of \d+ bytes received\).*retries exhausted/);
    assert.equal(server.requests().length, 3, 'sent once and resent twice');
  });

  it('silence: the call times out at its own timeout, and the connection goes on', async () => {
    let answer = false;
    const server = await fake({
      onFrame(connection, frame) {
        if (answer) connection.respond(frame.requestId, [holdResult({ op: 'get_hold', partition: 'p', id: 'h' })]);
      },
    });
    const client = await connect(server);
    const started = Date.now();
    await rejectsWithin(client.getHold('p', 'h', { timeoutMs: 150 }), TimeoutError, /timed out/);
    assert.ok(Date.now() - started >= 140, 'not before its timeout');
    answer = true;
    assert.equal((await client.getHold('p', 'h')).id, 'h');
  });

  it('random garbage as the answer: every call ends with a typed error within its bounds', async () => {
    let state = 0x2545f491;
    const random = (): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 0x1_0000_0000;
    };
    for (let round = 0; round < 40; round++) {
      const length = 1 + Math.floor(random() * 64);
      const garbage = Buffer.alloc(length);
      for (let index = 0; index < length; index++) garbage[index] = Math.floor(random() * 256);
      // Half the rounds: a plausible header, so the garbage reaches the payload decoders.
      if (round % 2 === 0 && length >= 16) {
        garbage.writeUInt32LE(length - 4, 0);
        garbage[4] = 1;
        garbage[5] = Kind.Response;
        garbage[6] = 0;
        garbage[7] = 0;
      }
      const server = await fake({
        onFrame(connection, frame) {
          const bytes = Buffer.from(garbage);
          if (bytes.length >= 16) bytes.writeUInt32LE(frame.requestId, 8);
          connection.send(bytes);
        },
      });
      const client = await connect(server, { retries: 0, frameTimeoutMs: 150, callTimeoutMs: 2_000 });
      try {
        await client.getHold('p', 'h');
        assert.fail(`round ${round}: garbage ${garbage.toString('hex')} was taken for a result`);
      } catch (error) {
        assert.ok(error instanceof BookdError, `round ${round}: ${String(error)}`);
        assert.ok(
          error instanceof ProtocolError || error instanceof TimeoutError || error instanceof RefusedError || error instanceof ServerError,
          `round ${round}: ${error.name}: ${error.message}`,
        );
      }
      await client.close();
      await server.close();
    }
  });

  it('an ERROR bad_request mid-connection: in-flight calls fail with it; later calls go on a new connection', async () => {
    let first = true;
    const server = await fake({
      onFrame(connection, frame) {
        if (first) {
          first = false;
          connection.error('bad_request', 'undecodable REQUEST', frame.requestId);
          connection.close();
        } else {
          connection.respond(frame.requestId, [holdResult({ op: 'get_hold', partition: 'p', id: 'h' })]);
        }
      },
    });
    const client = await connect(server);
    const error = (await rejectsWithin(client.getHold('p', 'h'), ServerError, /bad_request: undecodable REQUEST/)) as ServerError;
    assert.equal(error.code, 'bad_request');
    assert.equal(error.httpStatus, 400);
    assert.equal((await client.getHold('p', 'h')).status, 'held');
    assert.equal(client.stats.reconnects, 1);
  });

  it('a result of the wrong kind: that call fails with a protocol error', async () => {
    const server = await fake(answering(() => ({ kind: 'page', partition: '', resources: [], next: null })));
    const client = await connect(server);
    await rejectsWithin(client.confirm('p', 'h'), ProtocolError, /a page result to a command that answers with a hold/);
  });
});

describe('the client against a fake node', () => {
  it('opens plain connections: its HELLO, on every connection and subscription, carries no shard', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        if (frame.kind === Kind.Subscribe) connection.send(changesFrame('c1', [putChange('c1', 'r1')], frame.requestId));
      },
    });
    const client = await connect(server, { connections: 2, token: 's3cret', clientName: 'gw-1' });
    const subscription = client.subscribe();
    assert.equal((await subscription.next()).value?.cursor, 'c1');
    await subscription.return();
    assert.equal(server.connections.length, 3);
    for (const connection of server.connections) {
      assert.equal(connection.hello?.kind, Kind.Hello);
      // token `s3cret`, client name `gw-1`, and nothing after: the HELLO of the `hello` vector.
      assert.equal(connection.hello.payload.toString('hex'), '06007333637265740467772d31');
      assert.deepEqual(decodeHello(connection.hello.payload), { token: 's3cret', clientName: 'gw-1' });
    }
  });

  it('gathers calls made together into one REQUEST frame', async () => {
    const server = await fake(answering((command) => holdResult(command)));
    const client = await connect(server);
    const holds = await Promise.all(
      Array.from({ length: 300 }, (_, index) => client.hold('p', `h-${index}`, [{ resource: 'r', quantity: 1 }])),
    );
    assert.deepEqual(
      holds.map((hold) => hold.id),
      Array.from({ length: 300 }, (_, index) => `h-${index}`),
    );
    const requests = server.requests();
    assert.equal(requests.length, 1, 'one frame');
    assert.equal(decodeRequest(requests[0]!.payload).length, 300);
    assert.deepEqual({ frames: client.stats.framesSent, commands: client.stats.commandsSent }, { frames: 1, commands: 300 });
  });

  it('splits what waits at the node commands-per-frame limit, and keeps at most frames-in-flight frames out', async () => {
    let inFlight = 0;
    let inFlightMax = 0;
    const server = await fake({
      onHello: () => helloOk({ ...DEFAULT_HELLO, commandsPerFrameMax: 7 }),
      onFrame(connection, frame) {
        inFlight++;
        inFlightMax = Math.max(inFlightMax, inFlight);
        setTimeout(() => {
          inFlight--;
          connection.respond(frame.requestId, decodeRequest(frame.payload).map((c) => holdResult(c)));
        }, 5);
      },
    });
    const client = await connect(server, { framesInFlightMax: 3 });
    await Promise.all(Array.from({ length: 50 }, (_, index) => client.getHold('p', `h-${index}`)));
    const sizes = server.requests().map((r) => decodeRequest(r.payload).length);
    assert.equal(
      sizes.reduce((a, b) => a + b, 0),
      50,
    );
    assert.ok(sizes.every((size) => size <= 7), `${sizes}`);
    assert.ok(inFlightMax <= 3, `${inFlightMax} frames in flight`);
  });

  it('matches responses that come out of order to their requests (pipelining)', async () => {
    const held: { requestId: number; payload: Buffer; connection: import('./fake-server.js').FakeConnection }[] = [];
    const server = await fake({
      onFrame(connection, frame) {
        held.push({ requestId: frame.requestId, payload: frame.payload, connection });
        if (held.length === 4) {
          for (const request of held.reverse()) {
            request.connection.respond(request.requestId, decodeRequest(request.payload).map((c) => holdResult(c)));
          }
        }
      },
    });
    const client = await connect(server, { framesInFlightMax: 4 });
    const calls: Promise<unknown>[] = [];
    for (let index = 0; index < 4; index++) {
      calls.push(client.getHold('p', `h-${index}`));
      await until('the frame went out', () => server.requests().length === index + 1);
    }
    const holds = (await Promise.all(calls)) as { id: string }[];
    assert.deepEqual(
      holds.map((hold) => hold.id),
      ['h-0', 'h-1', 'h-2', 'h-3'],
    );
  });

  it('resends calls lost with a connection (an ERROR unavailable: node stopping) on the next one', async () => {
    let frames = 0;
    const server = await fake({
      onFrame(connection, frame) {
        frames++;
        if (frames === 1) {
          connection.error('unavailable', 'node stopping');
          connection.close();
          return;
        }
        connection.respond(frame.requestId, decodeRequest(frame.payload).map((c) => holdResult(c)));
      },
    });
    const client = await connect(server);
    const holds = await Promise.all([client.getHold('p', 'a'), client.getHold('p', 'b')]);
    assert.deepEqual(
      holds.map((h) => h.id),
      ['a', 'b'],
    );
    assert.equal(server.connections.length, 2);
  });

  it('fails calls with unavailable when the node cannot be reached within the retries', async () => {
    const server = await fake(answering((c) => holdResult(c)));
    const client = await connect(server, { retries: 2, backoffInitialMs: 5 });
    await client.getHold('p', 'h');
    await server.close();
    fakes.splice(fakes.indexOf(server), 1);
    await rejectsWithin(client.getHold('p', 'h'), UnavailableError, /cannot connect to 127\.0\.0\.1:\d+/);
  });

  it('refuses a call no frame can carry, and a batch over the node commands-per-frame limit', async () => {
    const server = await fake({
      onHello: () => helloOk({ ...DEFAULT_HELLO, frameSizeMaxBytes: 64, commandsPerFrameMax: 2 }),
      onFrame: (connection, frame) => connection.respond(frame.requestId, decodeRequest(frame.payload).map((c) => holdResult(c))),
    });
    const client = await connect(server);
    const tooBig = (await rejectsWithin(
      client.getHold('p'.repeat(30), 'h'.repeat(30)),
      RequestTooLargeError,
      /exceeds the node's limits/,
    )) as RequestTooLargeError;
    assert.equal(tooBig.code, 'payload_too_large');
    const commands: Command[] = ['a', 'b', 'c'].map((id) => ({ op: 'get_hold', partition: 'p', id }));
    await rejectsWithin(client.batch(commands), RequestTooLargeError, /3 commands/);
    // What fits still goes.
    assert.equal((await client.getHold('p', 'h')).id, 'h');
    assert.equal(server.requests().length, 1);
  });

  it('refuses calls beyond its backlog bound at once as overloaded, nothing sent', async () => {
    const server = await fake({ onFrame: () => {} });
    const client = await connect(server, { backlogSizeMaxBytes: 4096, framesInFlightMax: 1, callTimeoutMs: 2_000 });
    const first = client.getHold('p', 'x').catch((e: Error) => e);
    await until('the first frame went out', () => server.requests().length === 1);
    const waiting: Promise<unknown>[] = [];
    let refused: RefusedError | undefined;
    for (let index = 0; index < 1000 && refused === undefined; index++) {
      const call = client.getHold('partition-0123456789', `hold-${index}`);
      waiting.push(call.catch((error: Error) => error));
      const settled = await Promise.race([call.then(() => null, (e: Error) => e), sleep(0).then(() => null)]);
      if (settled instanceof RefusedError) refused = settled;
    }
    assert.ok(refused, 'a call was refused');
    assert.equal(refused.code, 'overloaded');
    assert.equal(refused.local, true);
    assert.match(refused.message, /backlog of 4096 bytes is full/);
    await client.close();
    assert.ok((await first) instanceof Error);
  });

  it('refuses locally what the wire cannot carry, as invalid naming the field', async () => {
    const server = await fake(answering((c) => holdResult(c)));
    const client = await connect(server);
    const long = (await rejectsWithin(client.getHold('p', 'h'.repeat(256)), RefusedError, /invalid id: 256 bytes/)) as RefusedError;
    assert.equal(long.local, true);
    assert.equal(long.httpStatus, 422);
    await rejectsWithin(client.getHold('p', 'x'.repeat(10_000_000)), RefusedError, /invalid id: 10000000 bytes, longer than 255/);
    await rejectsWithin(client.putResource('p', 'r', -1), RefusedError, /invalid capacity/);
    await rejectsWithin(client.putResource('p', 'r', 1.5), RefusedError, /invalid capacity/);
    await rejectsWithin(client.putResource('p', 'r', 2n ** 64n), RefusedError, /invalid capacity/);
    await rejectsWithin(client.hold('p', 'h', [{ resource: 'r', quantity: 1 }], { ref: 'x'.repeat(70_000) }), RefusedError, /invalid ref/);
    // In a batch, only that command is refused; the rest are sent and answered.
    const entries = await client.batch([
      { op: 'get_hold', partition: 'p', id: 'ok-1' },
      { op: 'get_hold', partition: 'p'.repeat(300), id: 'bad' },
      { op: 'get_hold', partition: 'p', id: 'ok-2' },
    ]);
    assert.deepEqual(
      entries.map((entry) => (entry.ok ? entry.result.kind : entry.error.code)),
      ['hold', 'invalid', 'hold'],
    );
    assert.equal(decodeRequest(server.requests().at(-1)!.payload).length, 2);
    assert.equal(server.requests().length, 1, 'nothing else was sent');
    await rejectsWithin(client.batch([]), RefusedError, /a batch holds 1 to 1000 commands, not 0/);
  });

  it('turns error results into typed errors with their details, messages and HTTP statuses', async () => {
    const results: Result[] = [
      { kind: 'error', code: 'insufficient_capacity', details: { resource: 'A-2', requested: 1, available: 0 } },
      { kind: 'error', code: 'overloaded', details: { table: '', max: 0 } },
      { kind: 'error', code: 'unavailable', details: {} },
      { kind: 'error', code: 'storage_full', details: { reason: 'disk' } },
    ];
    let next = 0;
    const server = await fake(answering(() => results[next++ % results.length]!));
    const client = await connect(server);
    const capacity = (await rejectsWithin(
      client.hold('p', 'h', [{ resource: 'A-2', quantity: 1 }]),
      RefusedError,
      /^insufficient_capacity: resource A-2: requested 1, available 0$/,
    )) as RefusedError;
    assert.deepEqual(capacity.details, { resource: 'A-2', requested: 1, available: 0 });
    assert.equal(capacity.httpStatus, 409);
    assert.equal(capacity.retryable, false);
    const overloaded = (await rejectsWithin(client.getHold('p', 'h'), RefusedError, /shard queue is full; retry later/)) as RefusedError;
    assert.equal(overloaded.httpStatus, 429);
    assert.equal(overloaded.retryable, true);
    const unavailable = (await rejectsWithin(client.getHold('p', 'h'), RefusedError, /^unavailable: unavailable$/)) as RefusedError;
    assert.equal(unavailable.httpStatus, 503);
    assert.equal(server.requests().length, 3, 'results are never retried');
    const full = (await rejectsWithin(client.getHold('p', 'h'), RefusedError, /storage full \(disk\)/)) as RefusedError;
    assert.equal(full.httpStatus, 507);
    const statuses = await client.batchStatuses([
      { op: 'get_hold', partition: 'p', id: 'a' },
      { op: 'get_hold', partition: 'p', id: 'b' },
    ]);
    assert.deepEqual(statuses, ['insufficient_capacity', 'overloaded']);
  });

  it('fails waiting calls with ClosedError when closed', async () => {
    const server = await fake({ onFrame: () => {} });
    const client = await connect(server);
    const call = client.getHold('p', 'h');
    await until('sent', () => server.requests().length === 1);
    await client.close();
    await rejectsWithin(call, Error, /client closed/);
    await rejectsWithin(client.getHold('p', 'h'), Error, /client closed/);
  });
});

/** A CHANGES frame of `changes`. */
function changesFrame(cursor: string, changes: Change[], requestId = 1): Buffer {
  const writer = new Writer(256);
  const start = beginFrame(writer, Kind.Changes, requestId);
  encodeChanges(writer, { cursor, changes });
  finishFrame(writer, start);
  return writer.take();
}

function putChange(cursor: string, id: string): Change {
  return {
    cursor,
    partition: 'p',
    atMs: 1_700_000_000_000,
    op: 'put_resource',
    resources: [{ partition: 'p', id, capacity: 1, held: 0, confirmed: 0, available: 1 }],
  };
}

describe('a subscription against a fake node', () => {
  it('resumes after a lost connection from the last change handed out, granting credit as changes are consumed', async () => {
    const subscribes: { cursor: string; credit: number }[] = [];
    const credits: number[] = [];
    const server = await fake({
      onFrame(connection, frame) {
        if (frame.kind === Kind.Credit) {
          credits.push(decodeCredit(frame.payload));
          return;
        }
        if (frame.kind !== Kind.Subscribe) return;
        const subscribe = decodeSubscribe(frame.payload);
        subscribes.push(subscribe);
        if (subscribes.length === 1) {
          connection.send(changesFrame('c2', [putChange('c1', 'r1'), putChange('c2', 'r2')], frame.requestId));
          // The third change comes, then the node goes away before the fourth.
          connection.send(changesFrame('c3', [putChange('c3', 'r3')], frame.requestId));
          setTimeout(() => connection.close(), 50);
        } else {
          connection.send(changesFrame('c4', [putChange('c4', 'r4')], frame.requestId));
        }
      },
    });
    const client = await connect(server);
    const subscription = client.subscribe({ cursor: 'c0', creditWindow: 4 });
    const seen: string[] = [];
    for await (const change of subscription) {
      seen.push(change.resources[0]!.id);
      if (seen.length === 3) await sleep(100);
      if (seen.length === 4) break;
    }
    assert.deepEqual(seen, ['r1', 'r2', 'r3', 'r4']);
    assert.deepEqual(
      subscribes.map((s) => s.cursor),
      ['c0', 'c3'],
    );
    assert.equal(subscribes[0]!.credit, 4);
    assert.deepEqual(credits, [2], 'credit for the first half window consumed');
    assert.equal(subscription.cursor, 'c4');
    assert.equal(subscription.connects, 2);
  });

  it('ends with a protocol error when the node sends more changes than the credit', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        if (frame.kind !== Kind.Subscribe) return;
        connection.send(changesFrame('c3', [putChange('c1', 'a'), putChange('c2', 'b'), putChange('c3', 'c')], frame.requestId));
      },
    });
    const client = await connect(server);
    const subscription = client.subscribe({ creditWindow: 2 });
    await rejectsWithin(subscription.next(), ProtocolError, /3 changes with credit for 2/);
    assert.deepEqual(await subscription.next(), { done: true, value: undefined });
  });

  it('ends with the node refusal (cursor_expired) after the changes already received', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        if (frame.kind !== Kind.Subscribe) return;
        connection.send(changesFrame('c1', [putChange('c1', 'a')], frame.requestId));
        connection.error('cursor_expired', 'oldest cursor: c9.0', frame.requestId);
      },
    });
    const client = await connect(server);
    const subscription = client.subscribe({ cursor: 'c0' });
    assert.equal((await subscription.next()).value?.cursor, 'c1');
    const error = (await rejectsWithin(subscription.next(), ServerError, /cursor_expired: oldest cursor: c9\.0/)) as ServerError;
    assert.equal(error.httpStatus, 410);
  });

  it('ends with a protocol error when a CHANGES frame never completes, or is larger than the client takes', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        if (frame.kind === Kind.Subscribe) connection.send(changesFrame('c1', [putChange('c1', 'a')], frame.requestId).subarray(0, 30));
      },
    });
    const client = await connect(server, { frameTimeoutMs: 200 });
    await rejectsWithin(client.subscribe().next(), ProtocolError, /a frame did not complete within 200 ms/);
    const big = await fake({
      onFrame(connection, frame) {
        if (frame.kind === Kind.Subscribe) connection.send(changesFrame('c1', [putChange('c1', 'a'.repeat(60))], frame.requestId));
      },
    });
    const small = await connect(big, { frameSizeMaxBytes: 100 });
    await rejectsWithin(small.subscribe().next(), ProtocolError, /frame length \d+ exceeds the limit of 100 bytes/);
  });

  it('ends with a protocol error on garbage, and reconnects after silence', async () => {
    const server = await fake({
      onFrame(connection, frame) {
        if (frame.kind === Kind.Subscribe) connection.send(Buffer.from([0x0c, 0, 0, 0, 9, 9, 9, 9]));
      },
    });
    const client = await connect(server);
    await rejectsWithin(client.subscribe().next(), ProtocolError, /unsupported protocol version 9/);
    let subscribes = 0;
    const quiet = await fake({
      onFrame(connection, frame) {
        if (frame.kind !== Kind.Subscribe) return;
        if (++subscribes === 2) connection.send(changesFrame('c1', [putChange('c1', 'a')], frame.requestId));
      },
    });
    const other = await connect(quiet);
    const subscription = other.subscribe({ silenceTimeoutMs: 300 });
    const change = await subscription.next();
    assert.equal(change.value?.cursor, 'c1');
    assert.equal(subscription.connects, 2, 'the silent connection was given up and made again');
    subscription.close();
  });
});
