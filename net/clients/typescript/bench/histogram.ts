/**
 * A latency histogram in microseconds with the precision of an HDR histogram of 3 significant
 * digits: values below 2 048 exact, above that 1 024 buckets per power of two (under 0.1 %
 * error), from 1 µs to 60 s. Quantiles are the highest value of their bucket, as HdrHistogram's.
 */

export const LATENCY_US_MAX = 60_000_000;
const SUB_BUCKETS = 2048;
const HALF = 1024;
const BUCKETS = SUB_BUCKETS + 16 * HALF;

function indexOf(value: number): number {
  if (value < SUB_BUCKETS) return value;
  const shift = 31 - Math.clz32(value) - 10;
  return SUB_BUCKETS + (shift - 1) * HALF + ((value >>> shift) - HALF);
}

function highestOf(index: number): number {
  if (index < SUB_BUCKETS) return index;
  const shift = Math.floor((index - SUB_BUCKETS) / HALF) + 1;
  const sub = ((index - SUB_BUCKETS) % HALF) + HALF;
  return ((sub + 1) << shift) - 1;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;
  max = 0;

  /** Records `micros`, clamped to 1 µs .. 60 s. */
  record(micros: number): void {
    const value = Math.min(Math.max(Math.round(micros), 1), LATENCY_US_MAX);
    this.counts[indexOf(value)]!++;
    this.count++;
    if (value > this.max) this.max = value;
  }

  add(other: Histogram): void {
    for (let index = 0; index < BUCKETS; index++) this.counts[index]! += other.counts[index]!;
    this.count += other.count;
    this.max = Math.max(this.max, other.max);
  }

  /** The value at quantile `q` (0 when empty). */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let index = 0; index < BUCKETS; index++) {
      seen += this.counts[index]!;
      if (seen >= rank) return Math.min(highestOf(index), this.max);
    }
    return this.max;
  }
}
