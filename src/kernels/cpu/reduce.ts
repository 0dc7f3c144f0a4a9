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
    for (let i = 0; i < inner; i++) {
      let acc = sum ? 0 : -Infinity;
      if (sum) for (let s = 0; s < size; s++) acc += input[base + s * inner + i]!;
      else {
        for (let s = 0; s < size; s++) {
          const v = input[base + s * inner + i]!;
          if (v > acc || Number.isNaN(v)) acc = v;
        }
      }
      out[o * inner + i] = acc;
    }
  }
  return new CpuStorage('f32', out);
}
