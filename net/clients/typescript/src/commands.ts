/**
 * Commands on the wire (docs/protocol.md, "Commands"): `u8 opcode` then its fields. The
 * encoder refuses locally, as `invalid` naming the field, what the wire cannot carry (a name
 * over 255 bytes, more than 255 items, a number that is not a `u64`); everything else, even
 * out of the contract's ranges, goes to the node, which refuses it exactly as over HTTP.
 *
 * @module
 */

import { invalid } from './errors.js';
import type { Command, ItemInput } from './types.js';
import { DecodeError, Reader, type U64, Writer } from './wire.js';

/** Opcodes by command. */
export const OPCODES = {
  put_resource: 1,
  hold: 2,
  confirm: 3,
  release: 4,
  cancel: 5,
  extend: 6,
  get_resource: 7,
  get_hold: 8,
  list_resources: 9,
  delete_partition: 10,
} as const;

/** A command's op name. */
export type Op = keyof typeof OPCODES;

const OPS_BY_CODE: readonly Op[] = Object.keys(OPCODES) as Op[];

/** Whether the op changes state (refused on a standby with `standby_read_only`). */
export function isWrite(op: Op): boolean {
  return op !== 'get_resource' && op !== 'get_hold' && op !== 'list_resources';
}

/** Appends one command. Throws a local `invalid` {@link RefusedError} for what cannot be sent. */
export function encodeCommand(writer: Writer, command: Command): void {
  if (command === null || typeof command !== 'object') throw invalid('command', 'not an object');
  const start = writer.pos;
  try {
    encodeFields(writer, command);
  } catch (error) {
    writer.pos = start;
    throw error;
  }
}

function encodeFields(writer: Writer, command: Command): void {
  switch (command.op) {
    case 'put_resource':
      writer.u8(OPCODES.put_resource);
      writer.str8(command.partition, 'partition');
      writer.str8(command.id, 'id');
      writer.u64(command.capacity, 'capacity');
      return;
    case 'hold':
      writer.u8(OPCODES.hold);
      writer.str8(command.partition, 'partition');
      writer.str8(command.id, 'id');
      encodeItems(writer, command.items);
      if (command.ttlMs === undefined || command.ttlMs === null) {
        writer.u8(0);
      } else {
        writer.u8(1);
        writer.u64(command.ttlMs, 'ttl_ms');
      }
      if (command.ref === undefined || command.ref === null) {
        writer.u8(0);
      } else {
        writer.u8(1);
        writer.str16(command.ref, 'ref');
      }
      return;
    case 'confirm':
    case 'release':
    case 'cancel':
    case 'get_hold':
    case 'get_resource':
      writer.u8(OPCODES[command.op]);
      writer.str8(command.partition, 'partition');
      writer.str8(command.id, 'id');
      return;
    case 'extend':
      writer.u8(OPCODES.extend);
      writer.str8(command.partition, 'partition');
      writer.str8(command.id, 'id');
      writer.u64(command.ttlMs, 'ttl_ms');
      return;
    case 'list_resources':
      writer.u8(OPCODES.list_resources);
      writer.str8(command.partition, 'partition');
      writer.str8(command.prefix ?? '', 'prefix');
      if (command.after === undefined || command.after === null) {
        writer.u8(0);
      } else {
        writer.u8(1);
        writer.str8(command.after, 'after');
      }
      if (command.limit === undefined || command.limit === null) {
        writer.u8(0);
      } else {
        writer.u8(1);
        writer.u64(command.limit, 'limit');
      }
      return;
    case 'delete_partition':
      writer.u8(OPCODES.delete_partition);
      writer.str8(command.partition, 'partition');
      return;
    default:
      throw invalid('op', `unknown op ${JSON.stringify((command as { op?: unknown }).op)}`);
  }
}

function encodeItems(writer: Writer, items: readonly ItemInput[]): void {
  if (!Array.isArray(items)) throw invalid('items', 'not an array');
  if (items.length > 0xff) throw invalid('items', `${items.length} items, more than 255`);
  writer.u8(items.length);
  for (const item of items) {
    if (item === null || typeof item !== 'object') throw invalid('items', 'an item that is not an object');
    writer.str8(item.resource, 'items.resource');
    writer.u64(item.quantity, 'items.quantity');
  }
}

/** Decodes one command (the node's side; for tests and fakes). */
export function decodeCommand(reader: Reader): Command {
  const opcode = reader.u8('opcode');
  const op = OPS_BY_CODE[opcode - 1];
  if (op === undefined) throw new DecodeError(`opcode: unknown value ${opcode}`);
  const partition = reader.str8('partition');
  switch (op) {
    case 'put_resource':
      return { op, partition, id: reader.str8('id'), capacity: reader.u64Any('capacity') };
    case 'hold': {
      const id = reader.str8('id');
      const count = reader.u8('item_count');
      const items: ItemInput[] = [];
      for (let index = 0; index < count; index++) {
        items.push({ resource: reader.str8('items.resource'), quantity: reader.u64Any('items.quantity') });
      }
      const ttlMs: U64 | null = reader.flag('ttl_ms') ? reader.u64Any('ttl_ms') : null;
      const ref = reader.optStr16('ref');
      return { op, partition, id, items, ttlMs, ref };
    }
    case 'confirm':
    case 'release':
    case 'cancel':
    case 'get_hold':
    case 'get_resource':
      return { op, partition, id: reader.str8('id') };
    case 'extend':
      return { op, partition, id: reader.str8('id'), ttlMs: reader.u64Any('ttl_ms') };
    case 'list_resources': {
      const prefix = reader.str8('prefix');
      const after = reader.optStr8('after');
      const limit: U64 | null = reader.flag('limit') ? reader.u64Any('limit') : null;
      return { op, partition, prefix, after, limit };
    }
    case 'delete_partition':
      return { op, partition };
  }
}

/** Decodes a REQUEST payload: `u16 count` (1–1 000), the commands, nothing after. */
export function decodeRequest(payload: Buffer): Command[] {
  const reader = new Reader(payload);
  const count = reader.u16('count');
  if (count === 0 || count > 1000) throw new DecodeError(`count: ${count} commands (1 to 1000)`);
  const commands: Command[] = [];
  for (let index = 0; index < count; index++) commands.push(decodeCommand(reader));
  reader.finish();
  return commands;
}
