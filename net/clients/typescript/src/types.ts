/**
 * The typed views of the API: resources, holds, pages, changes and the commands that make them,
 * the same as the HTTP API's JSON bodies (docs/API.md) with camelCase field names.
 *
 * @module
 */

import type { Refusal } from './errors.js';
import type { U64 } from './wire.js';

/** A hold's state. */
export type HoldStatus = 'held' | 'confirmed' | 'released' | 'expired' | 'cancelled';

/** Hold statuses by wire number. */
export const HOLD_STATUSES: readonly HoldStatus[] = ['held', 'confirmed', 'released', 'expired', 'cancelled'];

/** A resource: `available = capacity − held − confirmed`. */
export interface Resource {
  /** The partition the resource belongs to. */
  partition: string;
  /** The resource id, unique within its partition. */
  id: string;
  /** Units it has (0 ..= 2^53 − 1). */
  capacity: number;
  /** Units in live holds. */
  held: number;
  /** Units of confirmed holds. */
  confirmed: number;
  /** `capacity − held − confirmed`. */
  available: number;
}

/** The result of `put_resource` and `get_resource`. */
export interface ResourceResult extends Resource {
  /** The result's kind. */
  kind: 'resource';
  /** `put_resource` created the resource (HTTP 201) rather than changed it (200); false for reads. */
  created: boolean;
}

/** One item of a hold. */
export interface HoldItem {
  /** The resource id. */
  resource: string;
  /** Units taken of it. */
  quantity: number;
}

/** A hold. */
export interface Hold {
  /** The partition of the hold and of all its items. */
  partition: string;
  /** The hold id (the idempotency key). */
  id: string;
  /** Its state now. */
  status: HoldStatus;
  /** What it takes, in the order it was asked for. */
  items: HoldItem[];
  /** Unix milliseconds (the primary's clock). */
  expiresAtMs: number;
  /** The reference kept with the hold, if any. */
  ref: string | null;
}

/** The result of every hold command and of `get_hold`. */
export interface HoldResult extends Hold {
  /** The result's kind. */
  kind: 'hold';
  /** A `hold` whose id already existed with the same items (HTTP 200 `"existing": true`). */
  existing: boolean;
}

/** A page of `list_resources`: pass `next` as `after` for the next one. */
export interface ResourcePage {
  /** The result's kind. */
  kind: 'page';
  /** The partition (empty when the page is empty). */
  partition: string;
  /** The page's resources in id byte order. */
  resources: Resource[];
  /** The id of the page's last resource when more may follow (the next page's `after`), else null. */
  next: string | null;
}

/** The result of `delete_partition`: what was removed with it. */
export interface PartitionDeleted {
  /** The result's kind. */
  kind: 'partition_deleted';
  /** The partition removed. */
  partition: string;
  /** Resources removed with it. */
  resources: number;
  /** Holds removed with it. */
  holds: number;
}

/** An error result: the contract's code and its details. */
export interface ErrorResult extends Refusal {
  /** The result's kind. */
  kind: 'error';
}

/** One command's result as decoded from a RESPONSE. */
export type Result = ResourceResult | HoldResult | ResourcePage | PartitionDeleted | ErrorResult;

/** An item to hold: `quantity` units of `resource`. */
export interface ItemInput {
  /** The resource id. */
  resource: string;
  /** Units to take (1 ..= 2^32 − 1). */
  quantity: U64;
}

/** Creates or changes a resource. */
export interface PutResourceCommand {
  op: 'put_resource';
  /** The partition (created with its first resource). */
  partition: string;
  /** The resource id. */
  id: string;
  /** Units it has (0 ..= 2^53 − 1). */
  capacity: U64;
}

/** Takes units of 1–64 resources, all or nothing. */
export interface HoldCommand {
  op: 'hold';
  /** The partition of every item. */
  partition: string;
  /** The hold id: yours to choose, the idempotency key. */
  id: string;
  /** 1–64 items, each a different resource. */
  items: readonly ItemInput[];
  /** Time to live; absent or null: 600 000 (10 minutes). */
  ttlMs?: U64 | null;
  /** An order or payment reference kept with the hold. */
  ref?: string | null;
}

/** `confirm`, `release`, `cancel` and `get_hold`: a verb on one hold. */
export interface HoldVerbCommand {
  op: 'confirm' | 'release' | 'cancel' | 'get_hold';
  /** The hold's partition. */
  partition: string;
  /** The hold id. */
  id: string;
}

/** Sets a held hold's expiry to now + `ttlMs`. */
export interface ExtendCommand {
  op: 'extend';
  /** The hold's partition. */
  partition: string;
  /** The hold id. */
  id: string;
  /** The new time to live from now (1 ..= 86 400 000). */
  ttlMs: U64;
}

/** Reads one resource. */
export interface GetResourceCommand {
  op: 'get_resource';
  /** The resource's partition. */
  partition: string;
  /** The resource id. */
  id: string;
}

/** Reads a page of a partition's resources in id order. */
export interface ListResourcesCommand {
  op: 'list_resources';
  /** The partition to list. */
  partition: string;
  /** Only ids that start with this (default: all). */
  prefix?: string;
  /** Only ids after this one (a page's `next`). */
  after?: string | null;
  /** 1–1 000; absent or null: 100. */
  limit?: U64 | null;
}

/** Removes a partition with every resource and hold in it. */
export interface DeletePartitionCommand {
  op: 'delete_partition';
  /** The partition to remove. */
  partition: string;
}

/** Any command or read of the protocol (one element of a batch). */
export type Command =
  | PutResourceCommand
  | HoldCommand
  | HoldVerbCommand
  | ExtendCommand
  | GetResourceCommand
  | ListResourcesCommand
  | DeletePartitionCommand;

/** A change's kind. */
export type ChangeOp =
  | 'put_resource'
  | 'hold'
  | 'confirm'
  | 'release'
  | 'cancel'
  | 'extend'
  | 'expire'
  | 'delete_partition';

/** Change ops by wire number − 1. */
export const CHANGE_OPS: readonly ChangeOp[] = [
  'put_resource',
  'hold',
  'confirm',
  'release',
  'cancel',
  'extend',
  'expire',
  'delete_partition',
];

/** One change of the feed, as `GET /v1/changes` shows it. */
export interface Change {
  /** The cursor just after this change: a position to resume from. */
  cursor: string;
  /** The partition the change happened in. */
  partition: string;
  /** When it took effect, Unix ms (an expiry: the hold's `expiresAtMs`). */
  atMs: number;
  /** What happened. */
  op: ChangeOp;
  /** The hold as after the change (every op but put_resource and delete_partition). */
  hold?: Hold;
  /** The resources the change touched, each as after it (absolute counts). */
  resources: Resource[];
  /** delete_partition: what went with the partition. */
  removed?: {
    /** Resources removed. */
    resources: number;
    /** Holds removed. */
    holds: number;
  };
}

/** How a node maps partitions to shards, as HELLO_OK names it. */
export type ShardRule = 'fnv1a64_mod';

/**
 * Shard rules by wire number − 1. `fnv1a64_mod`: FNV-1a (64-bit) of the partition name's bytes,
 * modulo the shard count.
 */
export const SHARD_RULES: readonly ShardRule[] = ['fnv1a64_mod'];

/** What HELLO_OK adds for a connection whose HELLO asked to be bound to a shard. */
export interface ShardBinding {
  /** The shard the connection is served on. */
  shard: number;
  /** How the node maps partitions to its shards. */
  rule: ShardRule;
}

/** The node's side of the handshake. */
export interface HelloOk {
  /** A standby answers writes with `standby_read_only`. */
  role: 'primary' | 'standby';
  /** The node's epoch (promotion raises it). */
  epoch: number;
  /** The node's shard count. */
  shards: number;
  /** Largest REQUEST `frame_len` the node accepts. */
  frameSizeMaxBytes: number;
  /** Most commands in one REQUEST (1 000). */
  commandsPerFrameMax: number;
  /** REQUEST frames the node works on at once per connection. */
  inFlightMax: number;
  /** Present exactly when the HELLO carried `shard`. */
  binding?: ShardBinding;
}
