// Top-k selection as a 0/1 mask: in each of G contiguous groups of N values, the `count` largest get 1, the
// rest 0; among equal values the lower index wins, so exactly min(count, N) ones per group. A BatchTopK sparse
// autoencoder selects over its whole batch (G = 1, N = B·F, count = k·B); its auxiliary loss per row
// (G = B, N = F). O(N) per group: a radix histogram narrows the threshold to one bucket, and a second pass
// writes the ones above that bucket while collecting its keys, among which quickselect finishes. A long group
// of which few are taken (BatchTopK's) goes in one pass: a sample bounds the threshold from below and only the
// keys above the bound are kept and selected.
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';
import { allocateF32 } from './array-pool.ts';

/**
 * A u32 whose order is the float's (from its bits, read as i32): larger float, larger key; NaN below every
 * number (key 0); -0 equals +0. The WebGPU kernel ranks by the same keys, so both backends select the same
 * elements. The sign flip is branch-free (random signs would mispredict half the time); NaN and zero are rare.
 */
function sortKey(bits: number): number {
  const magnitude = bits & 0x7fffffff;
  if (magnitude > 0x7f800000) return 0;
  if (magnitude === 0) return 0x80000000;
  return (bits ^ ((bits >> 31) | 0x80000000)) >>> 0;
}

/** The key of rank `rank` (0 = largest) of keys[0..n), by quickselect on `scratch` (overwritten). */
function keyOfRank(scratch: Uint32Array, n: number, rank: number): number {
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    // Median of three as the pivot keeps sorted and reversed inputs linear.
    const mid = (lo + hi) >>> 1;
    const a = scratch[lo]!;
    const b = scratch[mid]!;
    const c = scratch[hi]!;
    const pivot = a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
    // Three-way partition, descending: [lo, lt) > pivot, [lt, gt] == pivot, (gt, hi] < pivot.
    let lt = lo;
    let gt = hi;
    let i = lo;
    while (i <= gt) {
      const v = scratch[i]!;
      if (v > pivot) {
        scratch[i] = scratch[lt]!;
        scratch[lt++] = v;
        i++;
      } else if (v < pivot) {
        scratch[i] = scratch[gt]!;
        scratch[gt--] = v;
      } else {
        i++;
      }
    }
    if (rank < lt) hi = lt - 1;
    else if (rank > gt) lo = gt + 1;
    else return pivot;
  }
  return scratch[lo]!;
}

/** Radix bits of the histogram: 11 for long groups, 8 for short ones (a row of latents), whose histogram would cost more to clear than to fill. */
const radixBits = (size: number): number => (size >= 1 << 16 ? 11 : 8);

/**
 * Writes ones at the `take` largest of the candidates `keys[0..m)` at mask indices `at[0..m)` (in index order,
 * so among equal keys the lower index wins).
 */
function markLargest(keys: Uint32Array, at: Int32Array, m: number, take: number, mask: Float32Array): void {
  if (take <= 0) return;
  const threshold = keyOfRank(keys.slice(0, m), m, take - 1);
  let ties = take;
  for (let j = 0; j < m; j++) if (keys[j]! > threshold) ties--;
  for (let j = 0; j < m; j++) {
    const key = keys[j]!;
    if (key > threshold) mask[at[j]!] = 1;
    else if (key === threshold && ties > 0) {
      mask[at[j]!] = 1;
      ties--;
    }
  }
}

/**
 * The histogram path: a histogram of the keys' top bits (a linear pass without data-dependent branches) finds
 * the bucket holding rank take − 1; a second pass writes ones for the buckets above it and collects that
 * bucket's keys with their indices, among which quickselect finishes. Keys are recomputed from the bits in
 * each pass rather than stored (a stored copy costs a write and a read of the whole input).
 */
function selectByHistogram(bits: Int32Array, base: number, n: number, take: number, histogram: Uint32Array, mask: Float32Array): void {
  const shift = 32 - radixBits(n);
  const buckets = 1 << (32 - shift);
  histogram.fill(0, 0, buckets);
  const end = base + n;
  for (let i = base; i < end; i++) histogram[sortKey(bits[i]!) >>> shift]!++;
  let bucket = buckets - 1;
  let aboveBucket = 0;
  while (aboveBucket + histogram[bucket]! < take) aboveBucket += histogram[bucket--]!;
  const keys = new Uint32Array(histogram[bucket]!);
  const at = new Int32Array(keys.length);
  let m = 0;
  for (let i = base; i < end; i++) {
    const key = sortKey(bits[i]!);
    const b = key >>> shift;
    if (b > bucket) mask[i] = 1;
    else if (b === bucket) {
      keys[m] = key;
      at[m++] = i;
    }
  }
  markLargest(keys, at, m, take - aboveBucket, mask);
}

/** Keys sampled to bound the threshold from below on the sampled path. */
const SAMPLE = 1 << 14;

/**
 * The sampled path, for a long group of which few are taken (BatchTopK: k·B of B·F, 0.45%): a strided
 * sample puts a lower bound under the threshold (about twice the taken count reach it), one pass collects
 * the keys at or above the bound with their indices, and the selection and the mask's ones come from those
 * alone: one pass over the group instead of two. Writes the group's ones into `mask` and returns true, or
 * returns false with nothing written when the bound missed (fewer than `take` reach it, or more candidates
 * than room: heavy ties, a sample unlike the rest); the histogram path then runs.
 */
export function selectFromSample(bits: Int32Array, base: number, size: number, take: number, mask: Float32Array): boolean {
  const stride = Math.floor(size / SAMPLE);
  if (stride < 8 || take * 8 > size) return false;
  const sample = new Uint32Array(SAMPLE);
  for (let j = 0; j < SAMPLE; j++) sample[j] = sortKey(bits[base + j * stride]!);
  const sampleRank = Math.ceil((2 * take) / stride) + 16;
  if (sampleRank >= SAMPLE) return false;
  const bound = keyOfRank(sample, SAMPLE, sampleRank);
  const room = 4 * take + 4096;
  const keys = new Uint32Array(room);
  const at = new Int32Array(room);
  let m = 0;
  for (let i = base; i < base + size; i++) {
    const key = sortKey(bits[i]!);
    if (key >= bound) {
      if (m === room) return false;
      keys[m] = key;
      at[m++] = i;
    }
  }
  if (m < take) return false;
  markLargest(keys, at, m, take, mask);
  return true;
}

// values [G, N] -> mask [G, N]: 1 at the `count` largest of each group (ties: lower index first)
export function topkMask(values: Storage, groups: number, size: number, count: number): Storage {
  const x = f32Of(values, 'topkMask');
  const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
  const mask = allocateF32(groups * size);
  const take = Math.min(count, size);
  if (take <= 0) return new CpuStorage('f32', mask);
  const histogram = new Uint32Array(1 << radixBits(size));
  for (let g = 0; g < groups; g++) {
    const base = g * size;
    if (take === size) mask.fill(1, base, base + size);
    else if (!selectFromSample(bits, base, size, take, mask)) selectByHistogram(bits, base, size, take, histogram, mask);
  }
  return new CpuStorage('f32', mask);
}
