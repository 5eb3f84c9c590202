/**
 * SplitMix64, the load generator's seeded random numbers: the same generator and the same
 * client streams as `bookd bench` (`stream(seed, client)`, `below(n)` by Lemire's
 * multiply-shift, `between(low, high)`). The state is two 32-bit halves and the arithmetic is
 * exact 64-bit arithmetic on them (no BigInt on the hot path).
 */

const TWO_32 = 0x1_0000_0000;

/** The low 64 bits of `(aHi:aLo) × (bHi:bLo)`, as [hi, lo]. */
function mul64(aHi: number, aLo: number, bHi: number, bLo: number): [number, number] {
  const a0 = aLo & 0xffff;
  const a1 = aLo >>> 16;
  const b0 = bLo & 0xffff;
  const b1 = bLo >>> 16;
  const mid = a0 * b1 + a1 * b0;
  const low = a0 * b0 + (mid % 0x1_0000) * 0x1_0000;
  const lo = low >>> 0;
  const carry = Math.floor(low / TWO_32);
  const hi = a1 * b1 + Math.floor(mid / 0x1_0000) + carry + Math.imul(aHi, bLo) + Math.imul(aLo, bHi);
  return [hi >>> 0, lo];
}

/** SplitMix64's output function on [hi, lo]. */
function mix64(hi: number, lo: number): [number, number] {
  // z ^= z >> 30; z *= 0xBF58476D1CE4E5B9
  let l = (lo ^ ((lo >>> 30) | (hi << 2))) >>> 0;
  let h = (hi ^ (hi >>> 30)) >>> 0;
  [h, l] = mul64(h, l, 0xbf58476d, 0x1ce4e5b9);
  // z ^= z >> 27; z *= 0x94D049BB133111EB
  l = (l ^ ((l >>> 27) | (h << 5))) >>> 0;
  h = (h ^ (h >>> 27)) >>> 0;
  [h, l] = mul64(h, l, 0x94d049bb, 0x133111eb);
  // z ^= z >> 31
  l = (l ^ ((l >>> 31) | (h << 1))) >>> 0;
  h = (h ^ (h >>> 31)) >>> 0;
  return [h, l];
}

const GAMMA_HI = 0x9e3779b9;
const GAMMA_LO = 0x7f4a7c15;

function split(value: bigint): [number, number] {
  const masked = BigInt.asUintN(64, value);
  return [Number(masked >> 32n), Number(masked & 0xffff_ffffn)];
}

export class SplitMix64 {
  private hi: number;
  private lo: number;

  constructor(seed: bigint) {
    [this.hi, this.lo] = split(seed);
  }

  /** Stream `stream` of `seed` (one per client): `mix64(seed ^ mix64(stream + GAMMA))`. */
  static stream(seed: bigint, stream: bigint): SplitMix64 {
    const [sh, sl] = split(stream + 0x9e3779b97f4a7c15n);
    const [mh, ml] = mix64(sh, sl);
    const [seedHi, seedLo] = split(seed);
    const [h, l] = mix64((seedHi ^ mh) >>> 0, (seedLo ^ ml) >>> 0);
    return new SplitMix64((BigInt(h) << 32n) | BigInt(l));
  }

  /** The next output as [hi, lo]. */
  private step(): [number, number] {
    const lo = this.lo + GAMMA_LO;
    this.lo = lo >>> 0;
    this.hi = (this.hi + GAMMA_HI + (lo >= TWO_32 ? 1 : 0)) >>> 0;
    return mix64(this.hi, this.lo);
  }

  nextU64(): bigint {
    const [hi, lo] = this.step();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** A number in `0 .. n` (1 ≤ n ≤ 2^20): the high 64 bits of the output × n. */
  below(n: number): number {
    const [hi, lo] = this.step();
    return Math.floor((hi * n + Math.floor((lo * n) / TWO_32)) / TWO_32);
  }

  /** A number in `low ..= high`. */
  between(low: number, high: number): number {
    return low + this.below(high - low + 1);
  }
}
