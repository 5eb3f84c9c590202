/** The bench's own parts: the seeded generator, the histogram, the workload clients, durations. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Histogram } from '../bench/histogram.js';
import { parseDuration } from '../bench/duration.js';
import { SplitMix64 } from '../bench/rng.js';
import { ClientLoop, names, resourceCount, setupCommand } from '../bench/workloads.js';

describe('the bench', () => {
  it('draws the reference SplitMix64 sequence', () => {
    const rng = new SplitMix64(0n);
    assert.deepEqual(
      [rng.nextU64(), rng.nextU64(), rng.nextU64()],
      [0xe220a8397b1dcdafn, 0x6e789e6aa1b965f4n, 0x06c45d188009454fn],
    );
    const a = SplitMix64.stream(7n, 0n);
    const b = SplitMix64.stream(7n, 1n);
    assert.notEqual(a.nextU64(), b.nextU64());
    // The 32-bit arithmetic against BigInt arithmetic, over many streams and draws.
    const MASK = (1n << 64n) - 1n;
    const mix = (value: bigint): bigint => {
      let z = value;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
      return z ^ (z >> 31n);
    };
    for (const [seed, stream] of [
      [42n, 0n],
      [42n, 1023n],
      [0xffff_ffff_ffff_ffffn, 7n],
      [123456789n, 0xffff_ffff_ffff_fff0n],
    ] as const) {
      let state = mix(seed ^ mix((stream + 0x9e3779b97f4a7c15n) & MASK));
      const rng = SplitMix64.stream(seed, stream);
      const copy = SplitMix64.stream(seed, stream);
      for (let draw = 0; draw < 500; draw++) {
        state = (state + 0x9e3779b97f4a7c15n) & MASK;
        const expected = mix(state);
        assert.equal(rng.nextU64(), expected);
        const n = [4, 100, 9997, 1_000][draw % 4]!;
        assert.equal(copy.below(n), Number((expected * BigInt(n)) >> 64n));
      }
    }
    const dice = SplitMix64.stream(42n, 3n);
    const seen = new Set<number>();
    for (let index = 0; index < 1000; index++) {
      const value = dice.between(1, 4);
      assert.ok(value >= 1 && value <= 4);
      seen.add(value);
    }
    assert.equal(seen.size, 4);
  });

  it('keeps latencies to three significant digits', () => {
    const histogram = new Histogram();
    for (let micros = 1; micros <= 100_000; micros++) histogram.record(micros);
    assert.equal(histogram.count, 100_000);
    assert.equal(histogram.max, 100_000);
    for (const [q, exact] of [
      [0.5, 50_000],
      [0.99, 99_000],
      [0.999, 99_900],
    ] as const) {
      const value = histogram.quantile(q);
      assert.ok(Math.abs(value - exact) / exact < 0.001, `${q}: ${value} vs ${exact}`);
    }
    const small = new Histogram();
    small.record(0.2);
    small.record(1500);
    assert.deepEqual([small.quantile(0.5), small.quantile(1), small.max], [1, 1500, 1500]);
    const huge = new Histogram();
    huge.record(1e12);
    assert.equal(huge.max, 60_000_000);
    assert.equal(new Histogram().quantile(0.99), 0);
  });

  it('runs the flash-sale loop of docs/WORKLOADS.md: hold 1–4 of ga, then confirm', () => {
    assert.equal(resourceCount('flash-sale'), 1);
    assert.deepEqual(setupCommand('flash-sale', 0), { op: 'put_resource', partition: 'concert-1', id: 'ga', capacity: 100_000_000 });
    assert.equal(resourceCount('hotel'), 1_825_000);
    assert.deepEqual(setupCommand('hotel', 1_825_000 - 1), { op: 'put_resource', partition: 'hotel-999', id: 'rt4@364', capacity: 20 });
    assert.deepEqual(setupCommand('seat-map', 10_000), { op: 'put_resource', partition: 'event-1', id: 's-0', capacity: 1 });
    const loop = new ClientLoop('flash-sale', 42n, 5, 'run', names('flash-sale'));
    const hold = loop.next();
    assert.equal(hold.op, 'hold');
    assert.ok(hold.op === 'hold' && hold.id === 'run.c5-0' && hold.partition === 'concert-1');
    const quantity = hold.op === 'hold' ? Number(hold.items[0]!.quantity) : 0;
    assert.ok(quantity >= 1 && quantity <= 4);
    loop.onReply(true);
    assert.deepEqual(loop.next(), { op: 'confirm', partition: 'concert-1', id: 'run.c5-0' });
    loop.onReply(true);
    assert.equal(loop.next().op, 'hold');
    loop.onReply(false);
    assert.deepEqual(
      [loop.counters.holdsGranted, loop.counters.confirmed, loop.counters.holdsRefused, loop.counters.commands],
      [1, 1, 1, 3],
    );
    const hotel = new ClientLoop('hotel', 42n, 0, 'h', names('hotel'));
    const stay = hotel.next();
    assert.ok(stay.op === 'hold' && stay.items.length >= 1 && stay.items.length <= 7);
    hotel.onReply(true);
    assert.equal(hotel.next().op, 'confirm');
    hotel.onReply(true);
    assert.equal(hotel.next().op, 'cancel');
  });

  it('reads durations as bookd bench does', () => {
    assert.equal(parseDuration('20s'), 20_000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('20'), 20_000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('2m'), 120_000);
    for (const bad of ['', 's', '-1s', 'abc', '10h', '2h']) assert.throws(() => parseDuration(bad), bad);
  });
});
