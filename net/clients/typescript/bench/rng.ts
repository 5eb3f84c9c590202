/**
 * SplitMix64, the load generator's seeded random numbers (the same generator and the same
 * client streams as `bookd bench`: `stream(seed, client)`, `below(n)` by Lemire's
 * multiply-shift, `between(low, high)`).
 */

const MASK = (1n << 64n) - 1n;
const GAMMA = 0x9e3779b97f4a7c15n;

function mix64(value: bigint): bigint {
  let z = value;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
  return z ^ (z >> 31n);
}

export class SplitMix64 {
  private state: bigint;

  constructor(seed: bigint) {
    this.state = seed & MASK;
  }

  /** Stream `stream` of `seed` (one per client). */
  static stream(seed: bigint, stream: bigint): SplitMix64 {
    return new SplitMix64(mix64(seed ^ mix64((stream + GAMMA) & MASK)));
  }

  nextU64(): bigint {
    this.state = (this.state + GAMMA) & MASK;
    return mix64(this.state);
  }

  /** A number in `0 .. n` (n ≥ 1). */
  below(n: number): number {
    return Number((this.nextU64() * BigInt(n)) >> 64n);
  }

  /** A number in `low ..= high`. */
  between(low: number, high: number): number {
    return low + this.below(high - low + 1);
  }
}
