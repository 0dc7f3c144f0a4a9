// The CPU backend's per-row broadcast path in binary (src/kernels/cpu/elementwise.ts): a [.., R, C] op b [.., R, 1]
// (W / ‖W‖, along · W), b on either side for add and mul, against the definition element by element, bit for
// bit: random and special values, batched leading axes, a per-row operand that is itself a strided view.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { binary } from '../src/kernels/cpu/elementwise.ts';
import { CpuStorage } from '../src/kernels/cpu/storage.ts';

const definitions = {
  add: (x: number, y: number) => x + y,
  sub: (x: number, y: number) => x - y,
  mul: (x: number, y: number) => x * y,
  div: (x: number, y: number) => x / y,
};
const bitsOf = (values: ArrayLike<number>) => Array.from(new Int32Array(Float32Array.from(values).buffer));
const value = fc.oneof(
  { weight: 6, arbitrary: fc.float() },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, Infinity, -Infinity, NaN, 1, -1) },
);

describe('cpu binary with one value per row', () => {
  it('equals the definition bit for bit, the per-row operand on either side, rows stored with a stride (fast-check)', () => {
    fc.assert(fc.property(
      fc.constantFrom('add', 'sub', 'mul', 'div') as fc.Arbitrary<keyof typeof definitions>, fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 2, max: 9 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.array(value, { minLength: 3 * 6 * 9, maxLength: 3 * 6 * 9 }), fc.array(value, { minLength: 3 * 6 * 3, maxLength: 3 * 6 * 3 }),
      (op, batch, rows, cols, rowStride, perRowFirst, fullValues, rowValues) => {
        const shape = [batch, rows, cols];
        const full = { storage: new CpuStorage('f32', Float32Array.from(fullValues)), shape, strides: [rows * cols, cols, 1], offset: 0 };
        // The per-row operand: one value per (batch, row), `rowStride` apart (a strided view, as a sliced norm).
        const perRow = { storage: new CpuStorage('f32', Float32Array.from(rowValues)), shape, strides: [rows * rowStride, rowStride, 0], offset: 0 };
        const [a, b] = perRowFirst ? [perRow, full] : [full, perRow];
        const out = (binary(op, a, b, shape) as CpuStorage).data as Float32Array;
        const expected: number[] = [];
        const f32 = (x: number) => Math.fround(x);
        for (let t = 0; t < batch; t++) {
          for (let r = 0; r < rows; r++) {
            const v = f32(rowValues[(t * rows + r) * rowStride]!);
            for (let c = 0; c < cols; c++) {
              const x = f32(fullValues[(t * rows + r) * cols + c]!);
              expected.push(perRowFirst ? definitions[op](v, x) : definitions[op](x, v));
            }
          }
        }
        expect(bitsOf(out)).toEqual(bitsOf(expected));
      }), { numRuns: 500 });
  });
});
