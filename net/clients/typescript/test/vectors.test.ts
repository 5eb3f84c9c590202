/**
 * The protocol's test vectors (docs/protocol-vectors.json), byte for byte both ways: every
 * vector's hex decodes to the value the file gives it, that value encodes back to the same
 * bytes, and every malformed frame is refused by the decoder the file names. The error-code
 * table and the hex blocks of docs/protocol.md must agree with the file.
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import {
  ANY_SHARD,
  type Change,
  type Command,
  ERROR_CODES,
  type HelloOk,
  FrameError,
  HTTP_STATUS,
  Kind,
  type Result,
  Writer,
  beginFrame,
  checkFrame,
  decodeChanges,
  decodeCredit,
  decodeErrorFrame,
  decodeHello,
  decodeHelloOk,
  decodeRequest,
  decodeResponse,
  decodeSubscribe,
  encodeChanges,
  encodeCommand,
  encodeCredit,
  encodeErrorFrame,
  encodeHello,
  encodeHelloOk,
  encodeResult,
  encodeSubscribe,
  errorCodeOf,
  finishFrame,
  requestIdAt,
  skipResult,
  Reader,
  DecodeError,
  PROTOCOL_VERSION,
  RefusedError,
} from '../src/index.js';
import { fromHex, readRepoFile } from './repo.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

interface Vector {
  name: string;
  kind: string;
  direction: string;
  hex: string;
  frame: { frame_len: number; version: number; kind: number; request_id: number };
  value: Json;
}

const file = JSON.parse(readRepoFile('docs/protocol-vectors.json')) as {
  protocol_version: number;
  error_codes: { number: number; code: string; http: number }[];
  vectors: Vector[];
  malformed: { name: string; hex: string; error: 'frame' | 'payload' }[];
};

const KINDS: Record<string, number> = {
  HELLO: Kind.Hello,
  HELLO_OK: Kind.HelloOk,
  REQUEST: Kind.Request,
  RESPONSE: Kind.Response,
  SUBSCRIBE: Kind.Subscribe,
  CHANGES: Kind.Changes,
  CREDIT: Kind.Credit,
  ERROR: Kind.Error,
};

/** The file's command as this package's {@link Command}. */
function command(json: Json): Command {
  switch (json.op) {
    case 'hold':
      return { op: 'hold', partition: json.partition, id: json.id, items: json.items, ttlMs: json.ttl_ms, ref: json.ref };
    case 'extend':
      return { op: 'extend', partition: json.partition, id: json.id, ttlMs: json.ttl_ms };
    case 'list_resources':
      return { op: 'list_resources', partition: json.partition, prefix: json.prefix, after: json.after, limit: json.limit };
    case 'delete_partition':
      return { op: 'delete_partition', partition: json.partition };
    case 'put_resource':
      return { op: 'put_resource', partition: json.partition, id: json.id, capacity: json.capacity };
    default:
      return { op: json.op, partition: json.partition, id: json.id };
  }
}

function resource(partition: string, json: Json) {
  const { id, capacity, held, confirmed } = json;
  return { partition, id, capacity, held, confirmed, available: capacity - held - confirmed };
}

/** The file's result as this package's {@link Result}. */
function result(json: Json): Result {
  if (json.error !== undefined) {
    const { error, ...details } = json;
    return { kind: 'error', code: error, details };
  }
  switch (json.result) {
    case 'resource':
      return { kind: 'resource', created: json.created, ...resource(json.partition, json) };
    case 'hold':
      return {
        kind: 'hold',
        existing: json.existing,
        partition: json.partition,
        id: json.id,
        status: json.status,
        items: json.items,
        expiresAtMs: json.expires_at_ms,
        ref: json.ref,
      };
    case 'page':
      return {
        kind: 'page',
        partition: json.partition,
        resources: json.resources.map((r: Json) => resource(json.partition, r)),
        next: json.next,
      };
    case 'partition_deleted':
      return { kind: 'partition_deleted', partition: json.partition, resources: json.resources, holds: json.holds };
    default:
      throw new Error(`unknown result in the vectors: ${JSON.stringify(json)}`);
  }
}

/** The file's change as this package's {@link Change}. */
function change(json: Json): Change {
  const out: Change = {
    cursor: json.cursor,
    partition: json.partition,
    atMs: json.at_ms,
    op: json.op,
    resources: json.resources.map((r: Json) => resource(json.partition, r)),
  };
  if (json.hold !== null) {
    const h = json.hold;
    out.hold = { partition: json.partition, id: h.id, status: h.status, items: h.items, expiresAtMs: h.expires_at_ms, ref: h.ref };
  }
  if (json.removed !== null) out.removed = json.removed;
  return out;
}

/** Decodes a vector's payload to the file's value, in this package's types. */
function decode(vector: Vector, payload: Buffer): Json {
  switch (vector.kind) {
    case 'HELLO': {
      const hello = decodeHello(payload);
      const value: Json = { token: hello.token, client_name: hello.clientName };
      if (hello.shard !== undefined) value.shard = hello.shard;
      return value;
    }
    case 'HELLO_OK':
      return decodeHelloOk(payload);
    case 'REQUEST':
      return decodeRequest(payload);
    case 'RESPONSE':
      return decodeResponse(payload);
    case 'ERROR':
      return decodeErrorFrame(payload);
    case 'SUBSCRIBE':
      return decodeSubscribe(payload);
    case 'CHANGES':
      return decodeChanges(payload);
    case 'CREDIT':
      return decodeCredit(payload);
    default:
      throw new Error(`no decoder for ${vector.kind}`);
  }
}

/** What the file says the payload means, in this package's types. */
function expected(vector: Vector): Json {
  const v = vector.value;
  switch (vector.kind) {
    case 'HELLO':
      return v;
    case 'HELLO_OK': {
      const hello: HelloOk = {
        role: v.role,
        epoch: v.epoch,
        shards: v.shards,
        frameSizeMaxBytes: v.frame_size_max,
        commandsPerFrameMax: v.commands_per_frame_max,
        inFlightMax: v.in_flight_max,
      };
      if (v.bound_shard !== undefined) hello.binding = { shard: v.bound_shard, rule: v.shard_rule };
      return hello;
    }
    case 'REQUEST':
      return v.commands.map(command);
    case 'RESPONSE':
      return v.results.map(result);
    case 'ERROR':
      return { code: v.code, message: v.message };
    case 'SUBSCRIBE':
      return { cursor: v.cursor, partition: v.partition, credit: v.credit };
    case 'CHANGES':
      return { cursor: v.cursor, changes: v.changes.map(change) };
    case 'CREDIT':
      return v.credit;
    default:
      throw new Error(`no value for ${vector.kind}`);
  }
}

/** Encodes the expected value back into a whole frame. */
function encode(vector: Vector, value: Json): Buffer {
  const writer = new Writer(64);
  const start = beginFrame(writer, KINDS[vector.kind]!, vector.frame.request_id);
  switch (vector.kind) {
    case 'HELLO':
      encodeHello(writer, { token: value.token, clientName: value.client_name, shard: value.shard });
      break;
    case 'HELLO_OK':
      encodeHelloOk(writer, value);
      break;
    case 'REQUEST':
      writer.u16(value.length);
      for (const c of value as Command[]) encodeCommand(writer, c);
      break;
    case 'RESPONSE':
      writer.u16(value.length);
      for (const r of value as Result[]) encodeResult(writer, r);
      break;
    case 'ERROR':
      encodeErrorFrame(writer, value);
      break;
    case 'SUBSCRIBE':
      encodeSubscribe(writer, value);
      break;
    case 'CHANGES':
      encodeChanges(writer, value);
      break;
    case 'CREDIT':
      encodeCredit(writer, value);
      break;
  }
  finishFrame(writer, start);
  return writer.take();
}

describe('protocol vectors (docs/protocol-vectors.json)', () => {
  it('are of protocol version 1, the version this package speaks', () => {
    assert.equal(file.protocol_version, 1);
    assert.ok(file.vectors.length >= 20, `only ${file.vectors.length} vectors`);
  });

  it('are of the version the package version is tied to (1.x for protocol 1)', () => {
    const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
      bookd: { protocolVersion: number };
    };
    assert.equal(Number(manifest.version.split('.')[0]), PROTOCOL_VERSION);
    assert.equal(manifest.bookd.protocolVersion, PROTOCOL_VERSION);
    assert.equal(file.protocol_version, PROTOCOL_VERSION);
  });

  it('name every error code with its number and HTTP status', () => {
    assert.deepEqual(
      file.error_codes.map((entry) => entry.code),
      [...ERROR_CODES],
    );
    for (const entry of file.error_codes) {
      assert.equal(errorCodeOf(entry.number), entry.code);
      assert.equal(HTTP_STATUS[entry.code as keyof typeof HTTP_STATUS], entry.http, entry.code);
    }
  });

  for (const vector of file.vectors) {
    it(`${vector.name}: decodes to its value and encodes back byte for byte`, () => {
      const bytes = fromHex(vector.hex);
      const total = checkFrame(bytes, 0, bytes.length, 16 * 1024 * 1024);
      assert.equal(total, bytes.length, 'one whole frame');
      assert.equal(bytes.readUInt32LE(0), vector.frame.frame_len);
      assert.equal(bytes[4], vector.frame.version);
      assert.equal(bytes[5], vector.frame.kind);
      assert.equal(KINDS[vector.kind], vector.frame.kind);
      assert.equal(requestIdAt(bytes, 0), vector.frame.request_id);
      const value = expected(vector);
      assert.deepStrictEqual(decode(vector, bytes.subarray(16)), value);
      assert.equal(encode(vector, value).toString('hex'), bytes.toString('hex'));
      if (vector.kind === 'RESPONSE') {
        // The statuses-only path agrees with the full decoder.
        const reader = new Reader(bytes, 16);
        const count = reader.u16('count');
        const statuses = Array.from({ length: count }, () => skipResult(reader));
        reader.finish();
        assert.deepEqual(
          statuses.map((status) => (status === 0 ? null : errorCodeOf(status))),
          (value as Result[]).map((r) => (r.kind === 'error' ? r.code : null)),
        );
      }
    });
  }

  for (const vector of file.vectors) {
    it(`${vector.name}: every cut of its payload is refused, but the one without the optional fields`, () => {
      const payload = fromHex(vector.hex).subarray(16);
      // HELLO's `shard` (2 bytes) and HELLO_OK's `bound_shard` and `shard_rule` (3 bytes) may be
      // left off whole, and then the payload is the plain one; no other cut is a payload.
      let optional = 0;
      if (vector.kind === 'HELLO' && vector.value.shard !== undefined) optional = 2;
      if (vector.kind === 'HELLO_OK' && vector.value.bound_shard !== undefined) optional = 3;
      for (let length = 0; length < payload.length; length++) {
        const cut = payload.subarray(0, length);
        if (optional > 0 && length === payload.length - optional) {
          const plain = expected(vector);
          if (vector.kind === 'HELLO') delete plain.shard;
          else delete plain.binding;
          assert.deepStrictEqual(decode(vector, cut), plain, `the first ${length} bytes`);
          continue;
        }
        assert.throws(() => decode(vector, cut), DecodeError, `the first ${length} of ${payload.length} bytes`);
      }
    });
  }

  it('HELLO and HELLO_OK refuse a byte after their optional fields, and an unknown shard_rule', () => {
    for (const name of ['hello', 'hello-bound', 'hello-ok', 'hello-ok-bound']) {
      const vector = file.vectors.find((v) => v.name === name)!;
      const payload = fromHex(vector.hex).subarray(16);
      for (const extra of name === 'hello-ok' ? [[0], [1, 0]] : [[0]]) {
        const longer = Buffer.concat([payload, Buffer.from(extra)]);
        assert.throws(() => decode(vector, longer), DecodeError, `${name} and ${extra.length} more bytes`);
      }
    }
    const bound = fromHex(file.vectors.find((v) => v.name === 'hello-ok-bound')!.hex).subarray(16);
    for (const rule of [0, 2, 0xff]) {
      const unknown = Buffer.from(bound);
      unknown[unknown.length - 1] = rule;
      assert.throws(() => decodeHelloOk(unknown), (error: unknown) => {
        return error instanceof DecodeError && /shard_rule: unknown value/.test(error.message);
      }, `shard_rule ${rule}`);
    }
  });

  it('a HELLO without a shard is encoded as before the field existed, and an out-of-range one is refused', () => {
    const plain = new Writer(64);
    encodeHello(plain, { token: 's3cret', clientName: 'gw-1' });
    assert.equal(plain.take().toString('hex'), file.vectors.find((v) => v.name === 'hello')!.hex.slice(32));
    for (const shard of [-1, 0x10000, 1.5, Number.NaN]) {
      assert.throws(() => encodeHello(new Writer(64), { token: '', clientName: '', shard }), RefusedError, `shard ${shard}`);
    }
    const any = new Writer(64);
    encodeHello(any, { token: '', clientName: '', shard: ANY_SHARD });
    assert.equal(any.take().toString('hex'), '000000ffff');
  });

  for (const malformed of file.malformed) {
    it(`${malformed.name}: is refused by the ${malformed.error} decoder`, () => {
      const bytes = fromHex(malformed.hex);
      if (malformed.error === 'frame') {
        assert.throws(() => checkFrame(bytes, 0, bytes.length, 16 * 1024 * 1024), FrameError);
        return;
      }
      const total = checkFrame(bytes, 0, bytes.length, 16 * 1024 * 1024);
      assert.equal(total, bytes.length, 'the frame itself is whole');
      const payload = bytes.subarray(16);
      const kind = bytes[5]!;
      assert.throws(() => {
        if (kind === Kind.Response) {
          decodeResponse(payload);
        } else if (kind === Kind.HelloOk) {
          decodeHelloOk(payload);
        } else if (kind === Kind.Error) {
          decodeErrorFrame(payload);
        } else if (kind === Kind.Changes) {
          decodeChanges(payload);
        } else {
          throw new Error(`no decoder for kind ${kind}`);
        }
      }, DecodeError);
      if (kind === Kind.Response) {
        const reader = new Reader(payload);
        assert.throws(() => {
          const count = reader.u16('count');
          for (let index = 0; index < count; index++) skipResult(reader);
          reader.finish();
        }, DecodeError, 'the statuses-only decoder refuses it too');
      }
    });
  }

  it('agree with the hex blocks of docs/protocol.md', () => {
    const markdown = readRepoFile('docs/protocol.md');
    const blocks = [...markdown.matchAll(/<!-- vector: ([a-z0-9-]+) -->\s*```hex\n([\s\S]*?)```/g)];
    assert.ok(blocks.length >= 10, `only ${blocks.length} hex blocks`);
    for (const [, name, body] of blocks) {
      const hex = body!.replace(/#[^\n]*/g, '');
      const vector = file.vectors.find((v) => v.name === name);
      assert.ok(vector, `block ${name} has no vector in the file`);
      assert.equal(fromHex(hex).toString('hex'), vector.hex, name);
    }
  });
});
