/**
 * The settings of a {@link Client} and of a subscription, with their defaults.
 *
 * @module
 */

import { FRAME_SIZE_CAP_BYTES } from './limits.js';

/** Settings of a {@link Client}; every field is optional. */
export interface ClientOptions {
  /** Connections in the pool (default 4, at least 1). */
  connections?: number;
  /** The node's token (`--token`), if it has one. */
  token?: string;
  /** Sent in HELLO; shows up in the node's logs (default `bookd-client-ts`). */
  clientName?: string;
  /** Time to connect and complete the handshake, in ms (default 5 000). */
  connectTimeoutMs?: number;
  /**
   * Time a call may take, resends included, in ms (default 30 000; `null`: no limit). Checked
   * every 100 ms by the connection that holds the call, not by a timer per call.
   */
  callTimeoutMs?: number | null;
  /** How many times a call is resent after a lost connection (default 3). */
  retries?: number;
  /** First pause before a reconnect, in ms; doubles each time up to `backoffMaxMs` (default 20). */
  backoffInitialMs?: number;
  /** Longest pause before a reconnect, in ms (default 1 000). */
  backoffMaxMs?: number;
  /**
   * Most REQUEST frames one connection keeps in flight (default 2; also capped by the node's
   * `in_flight_max`). Calls made while a connection is at this bound wait and leave together in
   * its next frame.
   */
  framesInFlightMax?: number;
  /** Largest frame the client buffers from the node, in bytes (default and at most 16 MiB). */
  frameSizeMaxBytes?: number;
  /**
   * Encoded commands one connection queues while it waits (at the in-flight bound, or
   * reconnecting), in bytes (default 8 MiB). A call beyond it is refused at once as
   * `overloaded` (`local`), nothing sent.
   */
  backlogSizeMaxBytes?: number;
  /** Time a frame the node started sending has to complete, in ms (default 10 000). */
  frameTimeoutMs?: number;
}

/** {@link ClientOptions} with every default filled in. */
export type ResolvedOptions = Required<Omit<ClientOptions, 'token' | 'callTimeoutMs'>> & {
  token: string;
  callTimeoutMs: number | null;
};

function positive(name: string, value: number, min = 1): number {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`${name} must be a number ≥ ${min}, not ${value}`);
  return value;
}

/** Fills in the defaults and checks the values. */
export function resolveOptions(options: ClientOptions = {}): ResolvedOptions {
  const callTimeoutMs = options.callTimeoutMs === undefined ? 30_000 : options.callTimeoutMs;
  return {
    connections: Math.floor(positive('connections', options.connections ?? 4)),
    token: options.token ?? '',
    clientName: options.clientName ?? 'bookd-client-ts',
    connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs ?? 5_000),
    callTimeoutMs: callTimeoutMs === null ? null : positive('callTimeoutMs', callTimeoutMs),
    retries: Math.floor(positive('retries', options.retries ?? 3, 0)),
    backoffInitialMs: positive('backoffInitialMs', options.backoffInitialMs ?? 20, 0),
    backoffMaxMs: positive('backoffMaxMs', options.backoffMaxMs ?? 1_000, 0),
    framesInFlightMax: Math.floor(positive('framesInFlightMax', options.framesInFlightMax ?? 2)),
    frameSizeMaxBytes: Math.min(
      FRAME_SIZE_CAP_BYTES,
      Math.floor(positive('frameSizeMaxBytes', options.frameSizeMaxBytes ?? FRAME_SIZE_CAP_BYTES, 64)),
    ),
    backlogSizeMaxBytes: Math.floor(positive('backlogSizeMaxBytes', options.backlogSizeMaxBytes ?? 8 * 1024 * 1024, 1024)),
    frameTimeoutMs: positive('frameTimeoutMs', options.frameTimeoutMs ?? 10_000),
  };
}

/** The pause before reconnect number `attempt` (1-based). */
export function backoffMs(options: ResolvedOptions, attempt: number): number {
  const factor = 2 ** Math.min(Math.max(attempt - 1, 0), 16);
  return Math.min(options.backoffInitialMs * factor, options.backoffMaxMs);
}

/** A node's address: `"host:port"` (IPv6 as `"[::1]:7070"`) or its parts. */
export type Address = string | { host: string; port: number };

/** Splits an {@link Address}. */
export function parseAddress(address: Address): { host: string; port: number } {
  if (typeof address !== 'string') return address;
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port < 1 || port > 65_535) {
    throw new RangeError(`address ${JSON.stringify(address)} is not host:port`);
  }
  return { host: (match[1] ?? match[2])!, port };
}
