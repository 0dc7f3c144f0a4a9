import type { ReduceOp, Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';

// reduce: x [outer, size, inner] -> [outer, inner]; sums accumulate in f64 for stable long reductions, each
// output in index order (so the bits do not depend on how the loops below are interleaved).
export function reduce(op: ReduceOp, x: Storage, outer: number, size: number, inner: number): Storage {
  const input = f32Of(x, `reduce ${op}`);
  const out = new Float32Array(outer * inner);
  if (inner === 1) {
    if (op === 'sum') sumRows(input, outer, size, out);
    else maxRows(input, outer, size, out);
    return new CpuStorage('f32', out);
  }
  const sum = op === 'sum';
  for (let o = 0; o < outer; o++) {
    const base = o * size * inner;
    // Strided columns: walk the rows in memory order, a running f64 accumulator per column (reading down a
    // column would jump `inner` elements per read and miss the cache on every one).
    const acc = new Float64Array(inner).fill(sum ? 0 : -Infinity);
    if (sum) sumColumns(input, base, size, inner, acc);
    else {
      for (let s = 0; s < size; s++) {
        const row = base + s * inner;
        for (let i = 0; i < inner; i++) {
          const v = input[row + i]!;
          if (v > acc[i]! || v !== v) acc[i] = v;
        }
      }
    }
    out.set(acc, o * inner);
  }
  return new CpuStorage('f32', out);
}

/**
 * out[r] = Σ_s x[r, s] for contiguous rows [rows, size], in order within each row. Four rows at a time: a
 * single running sum waits on the previous add every element; four independent ones overlap.
 */
function sumRows(x: Float32Array, rows: number, size: number, out: Float32Array): void {
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const b0 = r * size;
    const b1 = b0 + size;
    const b2 = b1 + size;
    const b3 = b2 + size;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    for (let s = 0; s < size; s++) {
      a0 += x[b0 + s]!;
      a1 += x[b1 + s]!;
      a2 += x[b2 + s]!;
      a3 += x[b3 + s]!;
    }
    out[r] = a0;
    out[r + 1] = a1;
    out[r + 2] = a2;
    out[r + 3] = a3;
  }
  for (; r < rows; r++) {
    let acc = 0;
    for (let s = r * size; s < (r + 1) * size; s++) acc += x[s]!;
    out[r] = acc;
  }
}

/** out[r] = max_s x[r, s] (NaN wins) for contiguous rows [rows, size]. */
function maxRows(x: Float32Array, rows: number, size: number, out: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    let acc = -Infinity;
    for (let s = r * size; s < (r + 1) * size; s++) {
      const v = x[s]!;
      if (v > acc || v !== v) acc = v; // v !== v: NaN (a call to Number.isNaN costs more here)
    }
    out[r] = acc;
  }
}

/**
 * acc[i] += Σ_s x[base + s·inner + i], rows in order. Four rows per visit of acc: each column's sum still
 * takes its rows in order, with a quarter of the accumulator loads and stores.
 */
function sumColumns(x: Float32Array, base: number, size: number, inner: number, acc: Float64Array): void {
  let s = 0;
  for (; s + 4 <= size; s += 4) {
    const r0 = base + s * inner;
    const r1 = r0 + inner;
    const r2 = r1 + inner;
    const r3 = r2 + inner;
    for (let i = 0; i < inner; i++) {
      let v = acc[i]!;
      v += x[r0 + i]!;
      v += x[r1 + i]!;
      v += x[r2 + i]!;
      v += x[r3 + i]!;
      acc[i] = v;
    }
  }
  for (; s < size; s++) {
    const row = base + s * inner;
    for (let i = 0; i < inner; i++) acc[i]! += x[row + i]!;
  }
}
