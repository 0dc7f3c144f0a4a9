import type { ReduceOp, Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';

// reduce: x [outer, size, inner] -> [outer, inner]; sums accumulate in f64 for stable long reductions.
export function reduce(op: ReduceOp, x: Storage, outer: number, size: number, inner: number): Storage {
  const input = f32Of(x, `reduce ${op}`);
  const out = new Float32Array(outer * inner);
  const sum = op === 'sum';
  for (let o = 0; o < outer; o++) {
    const base = o * size * inner;
    if (inner === 1) {
      // Contiguous rows: one pass down each.
      let acc = sum ? 0 : -Infinity;
      if (sum) for (let s = 0; s < size; s++) acc += input[base + s]!;
      else {
        for (let s = 0; s < size; s++) {
          const v = input[base + s]!;
          if (v > acc || Number.isNaN(v)) acc = v;
        }
      }
      out[o] = acc;
      continue;
    }
    // Strided columns: walk the rows in memory order, a running f64 accumulator per column (reading down a
    // column would jump `inner` elements per read and miss the cache on every one).
    const acc = new Float64Array(inner).fill(sum ? 0 : -Infinity);
    for (let s = 0; s < size; s++) {
      const row = base + s * inner;
      if (sum) for (let i = 0; i < inner; i++) acc[i]! += input[row + i]!;
      else {
        for (let i = 0; i < inner; i++) {
          const v = input[row + i]!;
          if (v > acc[i]! || Number.isNaN(v)) acc[i] = v;
        }
      }
    }
    out.set(acc, o * inner);
  }
  return new CpuStorage('f32', out);
}
