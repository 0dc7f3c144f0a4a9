// Top-k selection as a 0/1 mask: in each of G contiguous groups of N values, the `count` largest get 1, the
// rest 0; among equal values the lower index wins, so exactly min(count, N) ones per group. A BatchTopK sparse
// autoencoder selects over its whole batch (G = 1, N = B·F, count = k·B); its auxiliary loss per row
// (G = B, N = F). O(N) per group: a radix histogram narrows the threshold to one bucket, quickselect finishes
// there, then one pass writes the mask.
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';
import { allocateF32 } from './array-pool.ts';

/**
 * A u32 whose order is the float's: larger float, larger key; NaN below every number (key 0); -0 equals +0.
 * The WebGPU kernel ranks by the same keys, so both backends select the same elements.
 */
function sortKey(bits: number, value: number): number {
  if (value !== value) return 0;
  if (value === 0) return 0x80000000;
  return (bits & 0x80000000) !== 0 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
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

/** Buckets of the radix pass: the top RADIX_BITS of the sort key. */
const RADIX_BITS = 11;
const RADIX_SHIFT = 32 - RADIX_BITS;

/**
 * The key of rank `rank` (0 = largest) among keys[0..n) and how many keys are strictly above it: a histogram
 * of the keys' top bits finds the bucket holding that rank (a linear pass without data-dependent branches),
 * then quickselect runs on that bucket's keys only.
 */
function thresholdOfRank(keys: Uint32Array, n: number, rank: number, histogram: Uint32Array, scratch: Uint32Array): { threshold: number; above: number } {
  histogram.fill(0);
  for (let i = 0; i < n; i++) histogram[keys[i]! >>> RADIX_SHIFT]!++;
  let bucket = histogram.length - 1;
  let aboveBucket = 0;
  while (aboveBucket + histogram[bucket]! <= rank) aboveBucket += histogram[bucket--]!;
  let m = 0;
  for (let i = 0; i < n; i++) if (keys[i]! >>> RADIX_SHIFT === bucket) scratch[m++] = keys[i]!;
  const threshold = keyOfRank(scratch, m, rank - aboveBucket);
  let above = aboveBucket;
  for (let i = 0; i < m; i++) if (scratch[i]! > threshold) above++;
  return { threshold, above };
}

// values [G, N] -> mask [G, N]: 1 at the `count` largest of each group (ties: lower index first)
export function topkMask(values: Storage, groups: number, size: number, count: number): Storage {
  const x = f32Of(values, 'topkMask');
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const mask = allocateF32(groups * size);
  const take = Math.min(count, size);
  if (take <= 0) return new CpuStorage('f32', mask);
  const keys = new Uint32Array(size);
  const scratch = new Uint32Array(size);
  const histogram = new Uint32Array(1 << RADIX_BITS);
  for (let g = 0; g < groups; g++) {
    const base = g * size;
    if (take === size) {
      mask.fill(1, base, base + size);
      continue;
    }
    for (let i = 0; i < size; i++) keys[i] = sortKey(bits[base + i]!, x[base + i]!);
    const { threshold, above } = thresholdOfRank(keys, size, take - 1, histogram, scratch);
    let ties = take - above;
    for (let i = 0; i < size; i++) {
      const key = keys[i]!;
      if (key > threshold) mask[base + i] = 1;
      else if (key === threshold && ties > 0) {
        mask[base + i] = 1;
        ties--;
      }
    }
  }
  return new CpuStorage('f32', mask);
}
