// The CPU backend's sum and max reductions (src/kernels/cpu/reduce.ts) against their definition, value for value (±0 told apart):
// each output summed in f64 in index order (the kernel interleaves rows and columns for speed, never the order
// of one output's terms), max with NaN winning; shapes with sizes that are not multiples of the unrolling.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { reduce } from '../src/kernels/cpu/reduce.ts';
import { CpuStorage } from '../src/kernels/cpu/storage.ts';

/** The f32 values (NaN equals NaN, whatever its bits; +0 and -0 differ, as toEqual compares them). */
const f32s = (values: ArrayLike<number>) => Array.from(Float32Array.from(values));
const value = fc.oneof(
  { weight: 8, arbitrary: fc.float({ noNaN: true }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, 1e30, -1e30, 1e-30, NaN, Infinity, -Infinity) },
);

function definition(op: 'sum' | 'max', x: Float32Array, outer: number, size: number, inner: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let acc = op === 'sum' ? 0 : -Infinity;
      for (let s = 0; s < size; s++) {
        const v = x[(o * size + s) * inner + i]!;
        if (op === 'sum') acc += v;
        else if (v > acc || Number.isNaN(v)) acc = v;
      }
      out.push(acc);
    }
  }
  return out;
}

describe('cpu reduce', () => {
  // outer up to 9: with inner = 1 the rows are summed four at a time, so 4-9 rows reach that block and its tail.
  it('sum and max equal the in-order definition bit for bit (fast-check)', () => {
    fc.assert(fc.property(
      fc.constantFrom('sum', 'max') as fc.Arbitrary<'sum' | 'max'>, fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 11 }), fc.integer({ min: 1, max: 7 }), fc.array(value, { minLength: 693, maxLength: 693 }),
      (op, outer, size, inner, values) => {
        const x = Float32Array.from(values.slice(0, outer * size * inner));
        const out = (reduce(op, new CpuStorage('f32', x), outer, size, inner) as CpuStorage).data as Float32Array;
        expect(f32s(out)).toEqual(f32s(definition(op, x, outer, size, inner)));
      }), { numRuns: 1000 });
  });
});
