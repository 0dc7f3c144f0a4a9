// Widening f16/bf16 storages to f32 on the CPU backend (src/kernels/cpu/storage.ts readF32, copy.ts copy, and
// rmsnorm.ts's weight): a contiguous run is widened in one pass, a strided view element by element; both must
// give the bits of bf16ToF32 / f16ToF32 of each element (NaNs, infinities, subnormals included), for
// any offset, and a bf16 norm weight the same result as its f32 widening.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CpuStorage, readF32 } from '../src/kernels/cpu/storage.ts';
import { copy } from '../src/kernels/cpu/copy.ts';
import { rmsNorm } from '../src/kernels/cpu/rmsnorm.ts';
import { bf16ToF32, f16ToF32 } from '../src/kernels/dtype.ts';

/** Each element's bits, NaN as one value (a signalling bf16 NaN may come out quieted or not: both are NaN). */
const bitsOf = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length), (b, i) => (Number.isNaN(x[i]) ? 'NaN' : b));
const widenOne = { bf16: bf16ToF32, f16: f16ToF32 } as const;

/** Random half bit patterns (every one: NaNs, ±Infinity, subnormals, ±0), a view's offset and its length. */
const halfCase = fc.tuple(
  fc.constantFrom('bf16' as const, 'f16' as const), fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 80 }), fc.nat(), fc.nat(),
).map(([dtype, bits, a, b]) => {
  const offset = a % bits.length;
  return { dtype, bits, offset, length: b % (bits.length - offset + 1) };
});

describe('widening halves to f32 on the CPU', () => {
  it('readF32 and copy of a contiguous window give each element’s bits (fast-check)', () => {
    fc.assert(fc.property(halfCase, ({ dtype, bits, offset, length }) => {
      const storage = new CpuStorage(dtype, Uint16Array.from(bits));
      const view = { storage, shape: [length], strides: [1], offset };
      const want = bitsOf(Float32Array.from(bits.slice(offset, offset + length), widenOne[dtype]));
      expect(bitsOf(readF32(view, 'test'))).toEqual(want);
      const copied = copy(view, 'f32') as CpuStorage;
      expect(copied.dtype).toBe('f32');
      expect(bitsOf(copied.data as Float32Array)).toEqual(want);
    }), { numRuns: 300 });
  });

  it('a strided view (every other element, [n, 1] with stride 2) widens the same elements', () => {
    fc.assert(fc.property(halfCase, ({ dtype, bits, offset }) => {
      const storage = new CpuStorage(dtype, Uint16Array.from(bits));
      const n = Math.floor((bits.length - offset + 1) / 2);
      const view = { storage, shape: [n, 1], strides: [2, 1], offset };
      const want = bitsOf(Float32Array.from({ length: n }, (_, i) => widenOne[dtype](bits[offset + 2 * i]!)));
      expect(bitsOf(readF32(view, 'test'))).toEqual(want);
      expect(bitsOf((copy(view, 'f32') as CpuStorage).data as Float32Array)).toEqual(want);
    }), { numRuns: 200 });
  });

  it('rmsNorm with a bf16 or f16 weight equals rmsNorm with that weight widened to f32, bit for bit', () => {
    fc.assert(fc.property(
      fc.constantFrom('bf16' as const, 'f16' as const), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 3 }), fc.integer(),
      (dtype, hidden, rows, seed) => {
        let state = seed >>> 0;
        const next = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
        // Finite weights: exponent bits below all ones in both formats.
        const weightBits = Uint16Array.from({ length: hidden }, () => (dtype === 'bf16' ? 0x3c00 + Math.floor(next() * 0x700) : 0x3000 + Math.floor(next() * 0x1000)) | (next() < 0.5 ? 0x8000 : 0));
        const x = new CpuStorage('f32', Float32Array.from({ length: rows * hidden }, () => next() * 4 - 2));
        const half = rmsNorm(x, new CpuStorage(dtype, weightBits), rows, hidden, 1e-6);
        const widened = rmsNorm(x, new CpuStorage('f32', Float32Array.from(weightBits, widenOne[dtype])), rows, hidden, 1e-6);
        expect(bitsOf((half.y as CpuStorage).data as Float32Array)).toEqual(bitsOf((widened.y as CpuStorage).data as Float32Array));
      },
    ), { numRuns: 100 });
  });
});
