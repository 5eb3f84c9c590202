/**
 * bookd-client: the TypeScript client of bookd's binary protocol, version 1
 * (docs/protocol.md). Package versions 1.x speak protocol version 1.
 *
 * - {@link Client}: a pool of pipelined connections; concurrent calls are gathered into
 *   REQUEST frames of up to 1 000 commands (automatic batching); per-call timeouts,
 *   reconnects and safe resends; typed results and typed errors with the contract's codes.
 * - {@link Subscription}: the change feed as an async iterator that resumes after its last
 *   change across reconnects.
 * - The codec (`encodeCommand`, `decodeResult`, …) for tools that speak the protocol directly.
 *
 * @packageDocumentation
 */

export { Client } from './client.js';
export type { BatchEntry, CallOptions, HoldOptions, ListOptions, ResultOf, SuccessResult } from './client.js';
export type { ClientStats } from './connection.js';
export { Subscription } from './subscription.js';
export type { SubscribeOptions } from './subscription.js';
export type { Address, ClientOptions, ResolvedOptions } from './options.js';
export { parseAddress, resolveOptions } from './options.js';
export * from './types.js';
export * from './errors.js';
export { ERROR_CODES, HTTP_STATUS, errorCodeOf, errorNumberOf } from './codes.js';
export type { ErrorCode } from './codes.js';
export * as limits from './limits.js';
export { PROTOCOL_VERSION } from './limits.js';
export { Kind, FrameError, checkFrame, beginFrame, finishFrame, encodeFrame, kindName, requestIdAt } from './frame.js';
export type { KindValue } from './frame.js';
export { FrameReader } from './frame-reader.js';
export type { FrameHandler } from './frame-reader.js';
export { OPCODES, encodeCommand, decodeCommand, decodeRequest, isWrite } from './commands.js';
export type { Op } from './commands.js';
export { decodeResult, decodeResponse, encodeResult, skipResult } from './results.js';
export {
  ANY_SHARD,
  decodeChanges,
  decodeCredit,
  decodeErrorFrame,
  decodeHello,
  decodeHelloOk,
  decodeSubscribe,
  encodeChanges,
  encodeCredit,
  encodeErrorFrame,
  encodeHello,
  encodeHelloOk,
  encodeSubscribe,
} from './messages.js';
export type { ChangesFrame, ErrorFrame, Hello, Subscribe } from './messages.js';
export { DecodeError, Reader, Writer } from './wire.js';
export type { U64 } from './wire.js';
