/**
 * The workloads of docs/WORKLOADS.md, as `bookd bench` runs them: each closed-loop client is a
 * small state machine that yields its next command, is told whether it succeeded, and counts
 * what happened. Commands are rewritten in place, so a step allocates nothing but its id.
 */

import type { Command, HoldCommand, HoldVerbCommand, PutResourceCommand } from '../src/index.js';
import { SplitMix64 } from './rng.js';

export type Workload = 'flash-sale' | 'seat-map' | 'hotel' | 'sell-out';
export const WORKLOADS: readonly Workload[] = ['flash-sale', 'seat-map', 'hotel', 'sell-out'];

export const HOLD_TTL_MS = 600_000;
const SEAT_MAP = { partitions: 100, seats: 10_000, perHoldMax: 4 };
const HOTEL = { partitions: 1000, roomTypes: 5, nights: 365, capacity: 20, stayMax: 7 };
const SELL_OUT = { skus: 100, capacity: 1000 };
/** sell-out: skus `sku-0` .. `sku-99`. */
export const SELL_OUT_SKUS = SELL_OUT.skus;

/** What the workload's success figure counts, per client and added up. */
export interface Counters {
  commands: number;
  holdsGranted: number;
  holdsRefused: number;
  confirmed: number;
  released: number;
  cancelled: number;
  followUpsRefused: number;
}

export function counters(): Counters {
  return { commands: 0, holdsGranted: 0, holdsRefused: 0, confirmed: 0, released: 0, cancelled: 0, followUpsRefused: 0 };
}

export function addCounters(into: Counters, from: Counters): void {
  into.commands += from.commands;
  into.holdsGranted += from.holdsGranted;
  into.holdsRefused += from.holdsRefused;
  into.confirmed += from.confirmed;
  into.released += from.released;
  into.cancelled += from.cancelled;
  into.followUpsRefused += from.followUpsRefused;
}

/** Partitions and resources per partition of each workload's setup. */
function shape(workload: Workload): { partitions: number; resources: number; capacity: number } {
  switch (workload) {
    case 'flash-sale':
      return { partitions: 1, resources: 1, capacity: 100_000_000 };
    case 'seat-map':
      return { partitions: SEAT_MAP.partitions, resources: SEAT_MAP.seats, capacity: 1 };
    case 'hotel':
      return { partitions: HOTEL.partitions, resources: HOTEL.roomTypes * HOTEL.nights, capacity: HOTEL.capacity };
    case 'sell-out':
      return { partitions: 1, resources: SELL_OUT.skus, capacity: SELL_OUT.capacity };
  }
}

export function partitionName(workload: Workload, index: number): string {
  switch (workload) {
    case 'flash-sale':
      return 'concert-1';
    case 'sell-out':
      return 'drop-1';
    case 'seat-map':
      return `event-${index}`;
    case 'hotel':
      return `hotel-${index}`;
  }
}

export function resourceName(workload: Workload, index: number): string {
  switch (workload) {
    case 'flash-sale':
      return 'ga';
    case 'seat-map':
      return `s-${index}`;
    case 'hotel':
      return `rt${Math.floor(index / HOTEL.nights)}@${index % HOTEL.nights}`;
    case 'sell-out':
      return `sku-${index}`;
  }
}

/** How many resources the setup creates. */
export function resourceCount(workload: Workload): number {
  const { partitions, resources } = shape(workload);
  return partitions * resources;
}

/** The setup's `put_resource` number `index` (partition by partition). */
export function setupCommand(workload: Workload, index: number): PutResourceCommand {
  const { resources, capacity } = shape(workload);
  return {
    op: 'put_resource',
    partition: partitionName(workload, Math.floor(index / resources)),
    id: resourceName(workload, index % resources),
    capacity,
  };
}

type Phase = 'hold' | 'confirm' | 'release' | 'cancel';

/** One closed-loop client. */
export class ClientLoop {
  readonly workload: Workload;
  readonly counters: Counters = counters();
  private readonly rng: SplitMix64;
  private readonly prefix: string;
  private sequence = 0;
  private phase: Phase = 'hold';
  private readonly holdCommand: HoldCommand & { items: { resource: string; quantity: number }[] };
  private readonly followUp: HoldVerbCommand;
  private readonly names: { partitions: string[]; resources: string[] };

  constructor(workload: Workload, seed: bigint, client: number, idPrefix: string, names: { partitions: string[]; resources: string[] }) {
    this.workload = workload;
    this.rng = SplitMix64.stream(seed, BigInt(client));
    this.prefix = `${idPrefix}.c${client}-`;
    this.names = names;
    this.holdCommand = { op: 'hold', partition: '', id: '', items: [], ttlMs: HOLD_TTL_MS, ref: null };
    this.followUp = { op: 'confirm', partition: '', id: '' };
  }

  /** The op of the command {@link ClientLoop.next} yields next. */
  get op(): Phase {
    return this.phase;
  }

  /** The next command (rewritten in place: send it before asking again). */
  next(): Command {
    if (this.phase !== 'hold') return this.followUp;
    this.prepareHold();
    return this.holdCommand;
  }

  /** Tells the client whether its last command succeeded. */
  onReply(ok: boolean): void {
    const c = this.counters;
    c.commands++;
    switch (this.phase) {
      case 'hold':
        if (!ok) {
          c.holdsRefused++;
          return;
        }
        c.holdsGranted++;
        this.aim(this.workload === 'seat-map' ? 'release' : 'confirm');
        return;
      case 'confirm':
        if (!ok) break;
        c.confirmed++;
        if (this.workload === 'hotel') {
          this.aim('cancel');
          return;
        }
        this.phase = 'hold';
        return;
      case 'release':
        if (!ok) break;
        c.released++;
        this.phase = 'hold';
        return;
      case 'cancel':
        if (!ok) break;
        c.cancelled++;
        this.phase = 'hold';
        return;
    }
    c.followUpsRefused++;
    this.phase = 'hold';
  }

  /** Starts counting afresh (at the start of the measured window). */
  resetCounters(): void {
    Object.assign(this.counters, counters());
  }

  private aim(phase: Phase): void {
    this.phase = phase;
    this.followUp.op = phase as HoldVerbCommand['op'];
    this.followUp.partition = this.holdCommand.partition;
    this.followUp.id = this.holdCommand.id;
  }

  private setItems(count: number): { resource: string; quantity: number }[] {
    const items = this.holdCommand.items;
    while (items.length < count) items.push({ resource: '', quantity: 1 });
    items.length = count;
    return items;
  }

  private prepareHold(): void {
    const hold = this.holdCommand;
    const rng = this.rng;
    hold.id = this.prefix + this.sequence++;
    switch (this.workload) {
      case 'flash-sale': {
        hold.partition = 'concert-1';
        const item = this.setItems(1)[0]!;
        item.resource = 'ga';
        item.quantity = rng.between(1, 4);
        return;
      }
      case 'sell-out': {
        hold.partition = 'drop-1';
        const item = this.setItems(1)[0]!;
        item.resource = this.names.resources[rng.below(SELL_OUT.skus)]!;
        item.quantity = 1;
        return;
      }
      case 'seat-map': {
        const event = rng.below(SEAT_MAP.partitions);
        const seats = rng.between(1, SEAT_MAP.perHoldMax);
        const first = rng.between(0, SEAT_MAP.seats - SEAT_MAP.perHoldMax);
        hold.partition = this.names.partitions[event]!;
        const items = this.setItems(seats);
        items.forEach((item, index) => {
          item.resource = this.names.resources[first + index]!;
          item.quantity = 1;
        });
        return;
      }
      case 'hotel': {
        const hotel = rng.below(HOTEL.partitions);
        const roomType = rng.below(HOTEL.roomTypes);
        const first = rng.between(0, HOTEL.nights - HOTEL.stayMax);
        const nights = rng.between(1, HOTEL.stayMax);
        hold.partition = this.names.partitions[hotel]!;
        const items = this.setItems(nights);
        const base = roomType * HOTEL.nights + first;
        items.forEach((item, index) => {
          item.resource = this.names.resources[base + index]!;
          item.quantity = 1;
        });
        return;
      }
    }
  }
}

/** Every partition name and the resource ids of one partition, built once. */
export function names(workload: Workload): { partitions: string[]; resources: string[] } {
  const { partitions, resources } = shape(workload);
  return {
    partitions: Array.from({ length: partitions }, (_, index) => partitionName(workload, index)),
    resources: Array.from({ length: resources }, (_, index) => resourceName(workload, index)),
  };
}

/** The workload's success figure: bookings, holds granted, stays booked, units sold. */
export function successes(workload: Workload, c: Counters): number {
  return workload === 'seat-map' ? c.holdsGranted : c.confirmed;
}
