/**
 * Results on the wire (docs/protocol.md, "Results"): `u8 status` (0 success, else an error
 * code), then for a success a `u8 tag` and a self-contained body, for an error its code's
 * details. Invariant: whatever {@link decodeResult} accepts, {@link encodeResult} writes back
 * byte for byte; a decoded resource always has `held + confirmed <= capacity`.
 *
 * @module
 */

import { type ErrorCode, errorCodeOf, errorNumberOf } from './codes.js';
import type { ErrorDetails } from './errors.js';
import {
  HOLD_STATUSES,
  type ErrorResult,
  type HoldItem,
  type HoldResult,
  type Resource,
  type Result,
} from './types.js';
import { decodeCounts } from './messages.js';
import { DecodeError, Reader, Writer } from './wire.js';

const TAG_RESOURCE = 1;
const TAG_HOLD = 2;
const TAG_PAGE = 3;
const TAG_PARTITION_DELETED = 4;
const STORAGE_REASONS = ['memory', 'disk'] as const;

/** Decodes one result. */
export function decodeResult(reader: Reader): Result {
  const status = reader.u8('status');
  if (status !== 0) return decodeError(reader, status);
  const tag = reader.u8('tag');
  switch (tag) {
    case TAG_RESOURCE: {
      const created = reader.flag('created');
      const partition = reader.str8('partition');
      const r = decodeCounts(reader, partition, reader.str8('id'));
      return {
        kind: 'resource',
        created,
        partition,
        id: r.id,
        capacity: r.capacity,
        held: r.held,
        confirmed: r.confirmed,
        available: r.available,
      };
    }
    case TAG_HOLD:
      return decodeHold(reader);
    case TAG_PAGE: {
      const partition = reader.str8('partition');
      const count = reader.u16('resources');
      const resources: Resource[] = [];
      for (let index = 0; index < count; index++) resources.push(decodeCounts(reader, partition, reader.str8('id')));
      const next = reader.optStr8('next');
      return { kind: 'page', partition, resources, next };
    }
    case TAG_PARTITION_DELETED: {
      const partition = reader.str8('partition');
      const resources = reader.u32('resources');
      const holds = reader.u32('holds');
      return { kind: 'partition_deleted', partition, resources, holds };
    }
    default:
      throw new DecodeError(`tag: unknown value ${tag}`);
  }
}


function decodeHold(reader: Reader): HoldResult {
  const existing = reader.flag('existing');
  const partition = reader.str8('partition');
  const id = reader.str8('id');
  const statusByte = reader.u8('hold status');
  const status = HOLD_STATUSES[statusByte];
  if (status === undefined) throw new DecodeError(`hold status: unknown value ${statusByte}`);
  const expiresAtMs = reader.u64('expires_at_ms');
  const count = reader.u8('items');
  const items: HoldItem[] = [];
  for (let index = 0; index < count; index++) {
    const resource = reader.str8('items.resource');
    items.push({ resource, quantity: reader.u32('items.quantity') });
  }
  const ref = reader.optStr16('ref');
  return { kind: 'hold', existing, partition, id, status, items, expiresAtMs, ref };
}

function decodeError(reader: Reader, status: number): ErrorResult {
  const code = errorCodeOf(status);
  if (code === undefined) throw new DecodeError(`status: unknown error code ${status}`);
  return { kind: 'error', code, details: decodeDetails(reader, code) };
}

/** The details of error `code` (nothing for codes that have none). */
export function decodeDetails(reader: Reader, code: ErrorCode): ErrorDetails {
  switch (code) {
    case 'resource_not_found':
      return { resource: reader.str8('resource') };
    case 'insufficient_capacity': {
      const resource = reader.str8('resource');
      const requested = reader.u64('requested');
      return { resource, requested, available: reader.u64('available') };
    }
    case 'invalid': {
      const field = reader.str8('field');
      return { field, reason: reader.str8('reason') };
    }
    case 'capacity_below_usage': {
      const capacity = reader.u64('capacity');
      return { capacity, used: reader.u64('used') };
    }
    case 'overloaded': {
      const table = reader.str8('table');
      return { table, max: reader.u32('max') };
    }
    case 'partition_has_live_holds':
      return { held: reader.u32('held') };
    case 'storage_full': {
      const reason = reader.u8('reason');
      const name = STORAGE_REASONS[reason];
      if (name === undefined) throw new DecodeError(`storage_full reason: unknown value ${reason}`);
      return { reason: name };
    }
    default:
      return {};
  }
}

/**
 * Steps over one result without building it: its status (0, or the error code's number).
 * Checks the same framing as {@link decodeResult} but builds no strings.
 */
export function skipResult(reader: Reader): number {
  const status = reader.u8('status');
  if (status !== 0) {
    const code = errorCodeOf(status);
    if (code === undefined) throw new DecodeError(`status: unknown error code ${status}`);
    skipDetails(reader, code);
    return status;
  }
  const tag = reader.u8('tag');
  switch (tag) {
    case TAG_RESOURCE:
      reader.flag('created');
      skip8(reader, 'partition');
      skip8(reader, 'id');
      skipCounts(reader);
      return 0;
    case TAG_HOLD: {
      reader.flag('existing');
      skip8(reader, 'partition');
      skip8(reader, 'id');
      const statusByte = reader.u8('hold status');
      if (statusByte >= HOLD_STATUSES.length) throw new DecodeError(`hold status: unknown value ${statusByte}`);
      reader.u64('expires_at_ms');
      const count = reader.u8('items');
      for (let index = 0; index < count; index++) {
        skip8(reader, 'items.resource');
        reader.skip(4, 'items.quantity');
      }
      if (reader.flag('ref')) reader.skipText(reader.u16('ref'), 'ref');
      return 0;
    }
    case TAG_PAGE: {
      skip8(reader, 'partition');
      const count = reader.u16('resources');
      for (let index = 0; index < count; index++) {
        skip8(reader, 'id');
        skipCounts(reader);
      }
      if (reader.flag('next')) skip8(reader, 'next');
      return 0;
    }
    case TAG_PARTITION_DELETED:
      skip8(reader, 'partition');
      reader.skip(8, 'counts');
      return 0;
    default:
      throw new DecodeError(`tag: unknown value ${tag}`);
  }
}

function skip8(reader: Reader, field: string): void {
  reader.skipText(reader.u8(field), field);
}

/** Steps over a resource's counts, refusing `held + confirmed > capacity`. */
function skipCounts(reader: Reader): void {
  const capacity = reader.u64('capacity');
  const held = reader.u64('held');
  const confirmed = reader.u64('confirmed');
  if (held + confirmed > capacity) {
    throw new DecodeError(`held ${held} + confirmed ${confirmed} exceeds capacity ${capacity}`);
  }
}

function skipDetails(reader: Reader, code: ErrorCode): void {
  switch (code) {
    case 'resource_not_found':
      skip8(reader, 'resource');
      return;
    case 'insufficient_capacity':
      skip8(reader, 'resource');
      reader.u64('requested');
      reader.u64('available');
      return;
    case 'invalid':
      skip8(reader, 'field');
      skip8(reader, 'reason');
      return;
    case 'capacity_below_usage':
      reader.u64('capacity');
      reader.u64('used');
      return;
    case 'overloaded':
      skip8(reader, 'table');
      reader.skip(4, 'max');
      return;
    case 'partition_has_live_holds':
      reader.skip(4, 'held');
      return;
    case 'storage_full': {
      const reason = reader.u8('reason');
      if (reason >= STORAGE_REASONS.length) throw new DecodeError(`storage_full reason: unknown value ${reason}`);
      return;
    }
    default:
      return;
  }
}

/** Decodes a RESPONSE payload: `u16 count`, the results, nothing after. */
export function decodeResponse(payload: Buffer, start = 0, end = payload.length): Result[] {
  const reader = new Reader(payload, start, end);
  const count = reader.u16('count');
  const results: Result[] = [];
  for (let index = 0; index < count; index++) results.push(decodeResult(reader));
  reader.finish();
  return results;
}

/** Appends one result (the node's side; for tests and fakes). */
export function encodeResult(writer: Writer, result: Result): void {
  switch (result.kind) {
    case 'resource':
      writer.u8(0);
      writer.u8(TAG_RESOURCE);
      writer.flag(result.created);
      writer.str8(result.partition, 'partition');
      encodeCounts(writer, result);
      return;
    case 'hold':
      writer.u8(0);
      writer.u8(TAG_HOLD);
      writer.flag(result.existing);
      writer.str8(result.partition, 'partition');
      writer.str8(result.id, 'id');
      writer.u8(HOLD_STATUSES.indexOf(result.status));
      writer.u64(result.expiresAtMs, 'expires_at_ms');
      writer.u8(result.items.length);
      for (const item of result.items) {
        writer.str8(item.resource, 'items.resource');
        writer.u32(item.quantity);
      }
      writer.flag(result.ref !== null);
      if (result.ref !== null) writer.str16(result.ref, 'ref');
      return;
    case 'page':
      writer.u8(0);
      writer.u8(TAG_PAGE);
      writer.str8(result.partition, 'partition');
      writer.u16(result.resources.length);
      for (const resource of result.resources) encodeCounts(writer, resource);
      writer.flag(result.next !== null);
      if (result.next !== null) writer.str8(result.next, 'next');
      return;
    case 'partition_deleted':
      writer.u8(0);
      writer.u8(TAG_PARTITION_DELETED);
      writer.str8(result.partition, 'partition');
      writer.u32(result.resources);
      writer.u32(result.holds);
      return;
    case 'error':
      writer.u8(errorNumberOf(result.code));
      encodeDetails(writer, result.code, result.details);
      return;
  }
}

function encodeCounts(writer: Writer, resource: Resource): void {
  writer.str8(resource.id, 'id');
  writer.u64(resource.capacity, 'capacity');
  writer.u64(resource.held, 'held');
  writer.u64(resource.confirmed, 'confirmed');
}

function encodeDetails(writer: Writer, code: ErrorCode, details: ErrorDetails): void {
  switch (code) {
    case 'resource_not_found':
      writer.str8(details.resource ?? '', 'resource');
      return;
    case 'insufficient_capacity':
      writer.str8(details.resource ?? '', 'resource');
      writer.u64(details.requested ?? 0, 'requested');
      writer.u64(details.available ?? 0, 'available');
      return;
    case 'invalid':
      writer.str8(details.field ?? '', 'field');
      writer.str8(details.reason ?? '', 'reason');
      return;
    case 'capacity_below_usage':
      writer.u64(details.capacity ?? 0, 'capacity');
      writer.u64(details.used ?? 0, 'used');
      return;
    case 'overloaded':
      writer.str8(details.table ?? '', 'table');
      writer.u32(details.max ?? 0);
      return;
    case 'partition_has_live_holds':
      writer.u32(details.held ?? 0);
      return;
    case 'storage_full':
      writer.u8(details.reason === 'disk' ? 1 : 0);
      return;
    default:
      return;
  }
}
