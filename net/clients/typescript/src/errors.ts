/**
 * Typed errors. Every error a call can end with is a {@link BookdError}; those that carry one of
 * the contract's error codes (the same as HTTP's) have it in `code`, with its HTTP status in
 * `httpStatus`.
 *
 * - {@link RefusedError}: the node refused the command (a result with an error code and its
 *   details), or the client refused it before sending (`local`: a name over 255 bytes, …).
 * - {@link ServerError}: the node sent an ERROR frame and closed the connection (a wrong
 *   token, a refused subscription, a malformed frame).
 * - {@link UnavailableError}: the node could not be reached (or the connection was lost) within
 *   the retries; whether the command took effect is unknown, and resending it is safe.
 * - {@link TimeoutError}: no answer within the call timeout.
 * - {@link ProtocolError}: the node sent bytes that are not the protocol.
 * - {@link RequestTooLargeError}: a call that no frame the node accepts can carry.
 * - {@link ClosedError}: the client was closed.
 *
 * @module
 */

import { type ErrorCode, HTTP_STATUS } from './codes.js';

/** The details an error result carries, by code (docs/protocol.md, "Results"). */
export interface ErrorDetails {
  /** `resource_not_found`, `insufficient_capacity`: the resource. */
  resource?: string;
  /** `insufficient_capacity`: units asked for. */
  requested?: number;
  /** `insufficient_capacity`: units left. */
  available?: number;
  /** `invalid`: the field that is wrong. */
  field?: string;
  /** `invalid`: why; `storage_full`: `"memory"` or `"disk"`. */
  reason?: string;
  /** `capacity_below_usage`: the capacity asked for. */
  capacity?: number;
  /** `capacity_below_usage`: units held and confirmed. */
  used?: number;
  /** `overloaded`: the full engine table, or `""` for a full shard queue. */
  table?: string;
  /** `overloaded`: the table's size (0 for a queue). */
  max?: number;
  /** `partition_has_live_holds`: the partition's holds in state `held`. */
  held?: number;
}

/** An error result as decoded from the wire: its code and details. */
export interface Refusal {
  /** The contract's error code. */
  readonly code: ErrorCode;
  /** What the code's details say (nothing for codes that have none). */
  readonly details: ErrorDetails;
}

/** The message HTTP puts in `"message"`, derived from the code and details. */
export function refusalMessage(refusal: Refusal): string {
  const d = refusal.details;
  switch (refusal.code) {
    case 'invalid':
      return `invalid ${d.field ?? ''}: ${d.reason ?? ''}`;
    case 'resource_not_found':
      return `resource ${d.resource ?? ''} not found`;
    case 'insufficient_capacity':
      return `resource ${d.resource ?? ''}: requested ${d.requested ?? 0}, available ${d.available ?? 0}`;
    case 'capacity_below_usage':
      return `capacity ${d.capacity ?? 0} below usage ${d.used ?? 0}`;
    case 'overloaded':
      return d.table ? `${d.table} table is full (${d.max ?? 0} entries)` : 'shard queue is full; retry later';
    case 'partition_has_live_holds':
      return `partition has ${d.held ?? 0} held holds`;
    case 'storage_full':
      return `storage full (${d.reason ?? 'memory'})`;
    case 'not_found':
      return 'partition not found';
    default:
      return refusal.code.split('_').join(' ');
  }
}

/** The base of every error this package raises. */
export class BookdError extends Error {
  /** The contract's error code, when the error has one. */
  readonly code: ErrorCode | undefined;

  constructor(message: string, code?: ErrorCode, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }

  /** The HTTP status of {@link BookdError.code} (e.g. 409), when there is a code. */
  get httpStatus(): number | undefined {
    return this.code === undefined ? undefined : HTTP_STATUS[this.code];
  }
}

/** The node refused a command (or the client refused it locally, before sending it). */
export class RefusedError extends BookdError implements Refusal {
  declare readonly code: ErrorCode;
  /** The details of the refusal (`resource`, `requested`, `available`, `field`, …). */
  readonly details: ErrorDetails;
  /** True when the client refused the command without sending it. */
  readonly local: boolean;

  constructor(refusal: Refusal, local = false, message?: string) {
    super(message ?? `${refusal.code}: ${refusalMessage(refusal)}`, refusal.code);
    this.details = refusal.details;
    this.local = local;
  }

  /** Whether the command may succeed if sent again later unchanged (`overloaded`, `unavailable`, `replication_timeout`). */
  get retryable(): boolean {
    return this.code === 'overloaded' || this.code === 'unavailable' || this.code === 'replication_timeout';
  }
}

/** The node sent an ERROR frame (and closes the connection). */
export class ServerError extends BookdError {
  declare readonly code: ErrorCode;
  /** The node's message. */
  readonly serverMessage: string;
  /** The request id the ERROR frame named (0 when it named none). */
  readonly requestId: number;

  constructor(code: ErrorCode, serverMessage: string, requestId: number) {
    super(`node refused the connection: ${code}: ${serverMessage}`, code);
    this.serverMessage = serverMessage;
    this.requestId = requestId;
  }
}

/** The node could not be reached, or the connection was lost, within the retries. */
export class UnavailableError extends BookdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(`unavailable: ${message}`, 'unavailable', options);
  }
}

/** The call got no answer within its timeout; whether it took effect is unknown. */
export class TimeoutError extends BookdError {
  constructor(message = 'timed out') {
    super(message);
  }
}

/** The node sent bytes that are not the protocol (the connection is dropped and made again). */
export class ProtocolError extends BookdError {
  constructor(message: string) {
    super(`protocol error: ${message}`);
  }
}

/** A call larger than any frame the node accepts (its `frame_size_max` or 1 000 commands). */
export class RequestTooLargeError extends BookdError {
  constructor(message: string) {
    super(message, 'payload_too_large');
  }
}

/** The client (or subscription) was closed while the call waited. */
export class ClosedError extends BookdError {
  constructor(message = 'client closed') {
    super(message);
  }
}

/** A local `invalid` refusal naming `field`. */
export function invalid(field: string, reason: string): RefusedError {
  return new RefusedError({ code: 'invalid', details: { field, reason } }, true);
}
