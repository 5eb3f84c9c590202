/**
 * The contract's error codes: the same set as the HTTP API, with their stable wire numbers
 * (never reused) and their HTTP statuses.
 *
 * @module
 */

/** Every error code of the contract, in wire-number order (number = index + 1). */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'resource_not_found',
  'hold_not_found',
  'not_found',
  'insufficient_capacity',
  'hold_id_conflict',
  'hold_expired',
  'hold_released',
  'hold_confirmed',
  'hold_not_confirmed',
  'hold_cancelled',
  'capacity_below_usage',
  'already_primary',
  'payload_too_large',
  'invalid',
  'overloaded',
  'standby_read_only',
  'replication_timeout',
  'unavailable',
  'partition_has_live_holds',
  'storage_full',
  'cursor_expired',
] as const;

/** An error code of the contract (`"insufficient_capacity"`, …). */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The HTTP status the HTTP API answers with each code. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  bad_request: 400,
  unauthorized: 401,
  resource_not_found: 404,
  hold_not_found: 404,
  not_found: 404,
  insufficient_capacity: 409,
  hold_id_conflict: 409,
  hold_expired: 409,
  hold_released: 409,
  hold_confirmed: 409,
  hold_not_confirmed: 409,
  hold_cancelled: 409,
  capacity_below_usage: 409,
  already_primary: 409,
  payload_too_large: 413,
  invalid: 422,
  overloaded: 429,
  standby_read_only: 503,
  replication_timeout: 503,
  unavailable: 503,
  partition_has_live_holds: 409,
  storage_full: 507,
  cursor_expired: 410,
};

/** The code with wire number `value`, or `undefined` for 0 (success) and unknown numbers. */
export function errorCodeOf(value: number): ErrorCode | undefined {
  return value >= 1 && value <= ERROR_CODES.length ? ERROR_CODES[value - 1] : undefined;
}

/** The wire number of `code`. */
export function errorNumberOf(code: ErrorCode): number {
  return ERROR_CODES.indexOf(code) + 1;
}
