// The CPU backend's elementwise maximum (src/kernels/cpu/elementwise.ts), a branchless bit select, against its
// definition x >= y || x is NaN ? x : y, bit for bit: NaN of either side, ±0, ±Infinity, random signs, both
// the same-shape path and one value broadcast over all (a ReLU).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { binary } from '../src/kernels/cpu/elementwise.ts';
import { CpuStorage } from '../src/kernels/cpu/storage.ts';

const definition = (x: number, y: number) => (x >= y || Number.isNaN(x) ? x : y);
const bitsOf = (values: ArrayLike<number>) => Array.from(new Int32Array(Float32Array.from(values).buffer));
const value = fc.oneof(
  { weight: 6, arbitrary: fc.float() },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, Infinity, -Infinity, NaN, 1, -1) },
);
const view = (data: number[], shape: number[], strides: number[]) => ({ storage: new CpuStorage('f32', Float32Array.from(data)), shape, strides, offset: 0 });

describe('cpu binary maximum', () => {
  it('equals x >= y || isNaN(x) ? x : y bit for bit, same shapes (fast-check)', () => {
    fc.assert(fc.property(fc.array(fc.tuple(value, value), { minLength: 1, maxLength: 64 }), (pairs) => {
      const n = pairs.length;
      const out = binary('maximum', view(pairs.map((p) => p[0]), [n], [1]), view(pairs.map((p) => p[1]), [n], [1]), [n]);
      expect(bitsOf((out as CpuStorage).data as Float32Array)).toEqual(bitsOf(pairs.map(([x, y]) => definition(Math.fround(x), Math.fround(y)))));
    }), { numRuns: 500 });
  });

  it('equals the definition bit for bit against one broadcast value (fast-check)', () => {
    fc.assert(fc.property(fc.array(value, { minLength: 1, maxLength: 64 }), value, (xs, y) => {
      const n = xs.length;
      const out = binary('maximum', view(xs, [n], [1]), view([y], [n], [0]), [n]);
      expect(bitsOf((out as CpuStorage).data as Float32Array)).toEqual(bitsOf(xs.map((x) => definition(Math.fround(x), Math.fround(y)))));
    }), { numRuns: 500 });
  });
});
