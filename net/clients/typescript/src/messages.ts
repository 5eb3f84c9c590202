/**
 * The payloads of every frame but REQUEST and RESPONSE: the handshake (HELLO, HELLO_OK), the
 * ERROR frame, and the change feed (SUBSCRIBE, CHANGES, CREDIT). Each decoder is strict: a
 * truncated field, an unknown value or trailing bytes is a {@link DecodeError}.
 *
 * @module
 */

import { type ErrorCode, errorCodeOf, errorNumberOf } from './codes.js';
import { invalid } from './errors.js';
import { Kind, beginFrame, finishFrame } from './frame.js';
import { TOKEN_SIZE_MAX_BYTES } from './limits.js';
import { CHANGE_OPS, type Change, HOLD_STATUSES, type HelloOk, type Resource, SHARD_RULES } from './types.js';
import { DecodeError, Reader, Writer } from './wire.js';

/** What a client says first. */
export interface Hello {
  /** The node's `--token` (empty when it has none). */
  token: string;
  /** Free text for the node's logs. */
  clientName: string;
  /**
   * Bind the connection to this shard ({@link ANY_SHARD}: the one the node picks); absent: a
   * plain connection, encoded exactly as without the field.
   */
  shard?: number;
}

/** HELLO's `shard` asking the node to pick the shard (the one with the fewest bound connections). */
export const ANY_SHARD = 0xffff;

/** An ERROR frame's payload. */
export interface ErrorFrame {
  /** Why the node closes the connection. */
  code: ErrorCode;
  /** The node's words (at most 1 KiB). */
  message: string;
}

/** A SUBSCRIBE payload. */
export interface Subscribe {
  /** Follow the changes after this cursor; empty: from the feed's current end. */
  cursor: string;
  /** Only this partition's changes (`null`: all). */
  partition: string | null;
  /** Changes the node may send before more credit comes. */
  credit: number;
}

/** A CHANGES payload. */
export interface ChangesFrame {
  /** Where the subscription goes on from. */
  cursor: string;
  /** The changes, each with the cursor just after it. */
  changes: Change[];
}

const NAME_SIZE_MAX_BYTES = 64;
const HOLD_ITEMS_MAX = 64;
const REF_SIZE_MAX_BYTES = 256;

/** Appends a HELLO payload (`shard` after the client name only when the HELLO has one). */
export function encodeHello(writer: Writer, hello: Hello): void {
  const token = Buffer.from(hello.token, 'utf8');
  if (token.length > TOKEN_SIZE_MAX_BYTES) throw invalid('token', `${token.length} bytes, longer than 65535`);
  const shard = hello.shard;
  if (shard !== undefined && !(Number.isInteger(shard) && shard >= 0 && shard <= ANY_SHARD)) {
    throw invalid('shard', 'not an integer in 0 ..= 65535');
  }
  writer.u16(token.length);
  writer.bytes(token);
  writer.str8(hello.clientName, 'client_name');
  if (shard !== undefined) writer.u16(shard);
}

/** Decodes a HELLO payload: it ends after the client name, or after a 2-byte `shard`. */
export function decodeHello(payload: Buffer): Hello {
  const reader = new Reader(payload);
  const token = reader.str16('token');
  const clientName = reader.str8('client_name');
  if (reader.remaining === 0) return { token, clientName };
  const shard = reader.u16('shard');
  reader.finish();
  return { token, clientName, shard };
}

/** A whole HELLO frame (request id 0), ready to write. */
export function helloFrame(hello: Hello): Buffer {
  const writer = new Writer(64);
  const start = beginFrame(writer, Kind.Hello, 0);
  encodeHello(writer, hello);
  finishFrame(writer, start);
  return writer.take();
}

/** Appends a HELLO_OK payload (`bound_shard` and `shard_rule` only when it has a binding). */
export function encodeHelloOk(writer: Writer, hello: HelloOk): void {
  writer.u8(hello.role === 'primary' ? 0 : 1);
  writer.u64(hello.epoch, 'epoch');
  writer.u16(hello.shards);
  writer.u32(hello.frameSizeMaxBytes);
  writer.u16(hello.commandsPerFrameMax);
  writer.u32(hello.inFlightMax);
  if (hello.binding !== undefined) {
    const rule = SHARD_RULES.indexOf(hello.binding.rule);
    if (rule < 0) throw invalid('shard_rule', `unknown rule ${String(hello.binding.rule)}`);
    writer.u16(hello.binding.shard);
    writer.u8(rule + 1);
  }
}

/**
 * Decodes a HELLO_OK payload: it ends after `in_flight_max`, or after `bound_shard` and a known
 * `shard_rule` (3 bytes); refuses limits that allow no request.
 */
export function decodeHelloOk(payload: Buffer, start = 0, end = payload.length): HelloOk {
  const reader = new Reader(payload, start, end);
  const roleByte = reader.u8('role');
  if (roleByte > 1) throw new DecodeError(`role: unknown value ${roleByte}`);
  const epoch = reader.u64('epoch');
  const shards = reader.u16('shards');
  const frameSizeMaxBytes = reader.u32('frame_size_max');
  const commandsPerFrameMax = reader.u16('commands_per_frame_max');
  const inFlightMax = reader.u32('in_flight_max');
  let binding: HelloOk['binding'];
  if (reader.remaining > 0) {
    const shard = reader.u16('bound_shard');
    const ruleByte = reader.u8('shard_rule');
    const rule = SHARD_RULES[ruleByte - 1];
    if (rule === undefined) throw new DecodeError(`shard_rule: unknown value ${ruleByte}`);
    binding = { shard, rule };
  }
  reader.finish();
  if (frameSizeMaxBytes < 12 + 2 + 1 || commandsPerFrameMax === 0 || inFlightMax === 0) {
    throw new DecodeError(
      `HELLO_OK limits that allow no request (frame_size_max ${frameSizeMaxBytes}, ` +
        `commands_per_frame_max ${commandsPerFrameMax}, in_flight_max ${inFlightMax})`,
    );
  }
  const role = roleByte === 0 ? 'primary' : 'standby';
  const hello: HelloOk = { role, epoch, shards, frameSizeMaxBytes, commandsPerFrameMax, inFlightMax };
  if (binding !== undefined) hello.binding = binding;
  return hello;
}

/** Appends an ERROR payload. */
export function encodeErrorFrame(writer: Writer, error: ErrorFrame): void {
  writer.u8(errorNumberOf(error.code));
  writer.str16(error.message, 'message');
}

/** Decodes an ERROR payload (a known code and its message). */
export function decodeErrorFrame(payload: Buffer, start = 0, end = payload.length): ErrorFrame {
  const reader = new Reader(payload, start, end);
  const number = reader.u8('code');
  const code = errorCodeOf(number);
  if (code === undefined) throw new DecodeError(`ERROR code: unknown value ${number}`);
  const message = reader.str16('message');
  reader.finish();
  return { code, message };
}

/** Appends a SUBSCRIBE payload. */
export function encodeSubscribe(writer: Writer, subscribe: Subscribe): void {
  writer.str16(subscribe.cursor, 'cursor');
  if (subscribe.partition === null) {
    writer.u8(0);
  } else {
    writer.u8(1);
    writer.str8(subscribe.partition, 'partition');
  }
  writer.u32(subscribe.credit);
}

/** Decodes a SUBSCRIBE payload. */
export function decodeSubscribe(payload: Buffer): Subscribe {
  const reader = new Reader(payload);
  const cursor = reader.str16('cursor');
  const partition = reader.optStr8('partition');
  const credit = reader.u32('credit');
  reader.finish();
  return { cursor, partition, credit };
}

/** Appends a CREDIT payload: `more` changes the node may send. */
export function encodeCredit(writer: Writer, more: number): void {
  writer.u32(more);
}

/** Decodes a CREDIT payload. */
export function decodeCredit(payload: Buffer): number {
  const reader = new Reader(payload);
  const more = reader.u32('credit');
  reader.finish();
  return more;
}

/** Decodes a CHANGES payload. */
export function decodeChanges(payload: Buffer, start = 0, end = payload.length): ChangesFrame {
  const reader = new Reader(payload, start, end);
  const cursor = reader.str16('cursor');
  const count = reader.u16('count');
  const changes: Change[] = [];
  for (let index = 0; index < count; index++) {
    const after = reader.str16('change cursor');
    const length = reader.u32('change length');
    reader.need(length, 'change');
    const changeEnd = reader.pos + length;
    const inner = new Reader(reader.buf, reader.pos, changeEnd);
    changes.push(decodeChange(inner, after));
    inner.finish();
    reader.pos = changeEnd;
  }
  reader.finish();
  return { cursor, changes };
}

function name(reader: Reader, field: string): string {
  const length = reader.u8(field);
  if (length === 0 || length > NAME_SIZE_MAX_BYTES) {
    throw new DecodeError(`${field}: a name of ${length} bytes (1 to 64)`);
  }
  return reader.text(length, field);
}

/** A resource's counts after its id, checked (`held + confirmed <= capacity`). */
export function decodeCounts(reader: Reader, partition: string, id: string): Resource {
  const capacity = reader.u64('capacity');
  const held = reader.u64('held');
  const confirmed = reader.u64('confirmed');
  if (held + confirmed > capacity) {
    throw new DecodeError(`resource ${id}: held ${held} + confirmed ${confirmed} exceeds capacity ${capacity}`);
  }
  return { partition, id, capacity, held, confirmed, available: capacity - held - confirmed };
}

/** One change in the log's change layout. */
function decodeChange(reader: Reader, cursor: string): Change {
  const opByte = reader.u8('change op');
  const op = CHANGE_OPS[opByte - 1];
  if (op === undefined) throw new DecodeError(`change op: unknown value ${opByte}`);
  const atMs = reader.u64('at_ms');
  const partition = name(reader, 'partition');
  if (op === 'put_resource') {
    const id = name(reader, 'resource');
    return { cursor, partition, atMs, op, resources: [decodeCounts(reader, partition, id)] };
  }
  if (op === 'delete_partition') {
    const resources = reader.u32('resources');
    const holds = reader.u32('holds');
    return { cursor, partition, atMs, op, resources: [], removed: { resources, holds } };
  }
  const id = name(reader, 'hold');
  const statusByte = reader.u8('hold status');
  const status = HOLD_STATUSES[statusByte];
  if (status === undefined) throw new DecodeError(`hold status: unknown value ${statusByte}`);
  const expiresAtMs = reader.u64('expires_at_ms');
  let ref: string | null = null;
  if (reader.flag('ref')) {
    const length = reader.u16('ref');
    if (length > REF_SIZE_MAX_BYTES) throw new DecodeError(`ref: ${length} bytes (0 to 256)`);
    ref = reader.text(length, 'ref');
  }
  const count = reader.u8('items');
  if (count === 0 || count > HOLD_ITEMS_MAX) throw new DecodeError(`items: a hold of ${count} items (1 to 64)`);
  const items = [];
  const resources = [];
  for (let index = 0; index < count; index++) {
    const resource = name(reader, 'items.resource');
    const quantity = reader.u32('items.quantity');
    items.push({ resource, quantity });
    resources.push(decodeCounts(reader, partition, resource));
  }
  return { cursor, partition, atMs, op, hold: { partition, id, status, items, expiresAtMs, ref }, resources };
}

/** Appends a CHANGES payload (the node's side; for tests and fakes). */
export function encodeChanges(writer: Writer, frame: ChangesFrame): void {
  writer.str16(frame.cursor, 'cursor');
  writer.u16(frame.changes.length);
  for (const change of frame.changes) {
    writer.str16(change.cursor, 'change cursor');
    const at = writer.pos;
    writer.u32(0);
    encodeChange(writer, change);
    writer.buf.writeUInt32LE(writer.pos - at - 4, at);
  }
}

function encodeChange(writer: Writer, change: Change): void {
  writer.u8(CHANGE_OPS.indexOf(change.op) + 1);
  writer.u64(change.atMs, 'at_ms');
  writer.str8(change.partition, 'partition');
  const putCounts = (resource: Resource): void => {
    writer.u64(resource.capacity, 'capacity');
    writer.u64(resource.held, 'held');
    writer.u64(resource.confirmed, 'confirmed');
  };
  if (change.op === 'put_resource') {
    const resource = change.resources[0]!;
    writer.str8(resource.id, 'resource');
    putCounts(resource);
    return;
  }
  if (change.op === 'delete_partition') {
    writer.u32(change.removed?.resources ?? 0);
    writer.u32(change.removed?.holds ?? 0);
    return;
  }
  const hold = change.hold!;
  writer.str8(hold.id, 'hold');
  writer.u8(HOLD_STATUSES.indexOf(hold.status));
  writer.u64(hold.expiresAtMs, 'expires_at_ms');
  writer.flag(hold.ref !== null);
  if (hold.ref !== null) writer.str16(hold.ref, 'ref');
  writer.u8(hold.items.length);
  hold.items.forEach((item, index) => {
    writer.str8(item.resource, 'items.resource');
    writer.u32(item.quantity);
    putCounts(change.resources[index]!);
  });
}
