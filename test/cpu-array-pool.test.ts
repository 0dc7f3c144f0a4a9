// The CPU backend's reuse of freed f32 output arrays (src/kernels/cpu/array-pool.ts): a reused array reads as
// zeros where a kernel expects a fresh one, only arrays the pool handed out come back (never one a caller
// adopted), and kernels that run on reused, dirty arrays give what they give on fresh ones.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { allocateF32, allocateF32Overwritten, pooledF32Bytes, releaseF32 } from '../src/kernels/cpu/array-pool.ts';
import { createCpuBackend } from '../src/kernels/cpu/index.ts';
import { add, matmul, maskedMatmul, mul, sum, tensor, topkMask } from '../src/tensor/ops.ts';
import { backward, requireGrad } from '../src/tensor/autograd.ts';
import { Random } from '../src/tensor/random.ts';

/** Large enough for the pool (it leaves arrays under 2^16 elements to the allocator). */
const LARGE = 1 << 17;

describe('CPU f32 array pool', () => {
  it('hands a released array out again, zeroed by allocateF32', () => {
    const first = allocateF32(LARGE + 3);
    first.fill(7);
    releaseF32(first);
    const again = allocateF32(LARGE + 3);
    expect(again).toBe(first);
    expect(again.every((v) => v === 0)).toBe(true);
    releaseF32(again);
    expect(allocateF32Overwritten(LARGE + 3)).toBe(first); // same array, contents left as they are
  });

  it('ignores arrays it did not hand out, and small arrays', () => {
    const foreign = new Float32Array(LARGE + 5).fill(3);
    releaseF32(foreign);
    expect(allocateF32(LARGE + 5)).not.toBe(foreign);
    expect(foreign.every((v) => v === 3)).toBe(true);
    const small = allocateF32(100);
    releaseF32(small);
    expect(allocateF32(100)).not.toBe(small);
  });

  it('keeps at most 256 MiB, dropping the lengths longest unused first', () => {
    const length = (i: number) => 12 * 2 ** 20 + i; // 48 MiB each: six overflow the cap
    const arrays = Array.from({ length: 6 }, (_, i) => allocateF32Overwritten(length(i)));
    for (const array of arrays) releaseF32(array);
    expect(pooledF32Bytes()).toBeLessThanOrEqual(256 * 2 ** 20);
    // Identity as booleans: expect() on 48 MiB arrays would format them.
    expect(allocateF32Overwritten(length(5)) === arrays[5]).toBe(true);
    expect(allocateF32Overwritten(length(0)) === arrays[0]).toBe(false);
  });

  it('counts a length as used when one of its arrays is taken or freed, even if another stays kept', () => {
    const hot = 12 * 2 ** 20 + 100; // 48 MiB
    const cold = 12 * 2 ** 20 + 101;
    const kept = [allocateF32Overwritten(hot), allocateF32Overwritten(cold), allocateF32Overwritten(hot)];
    releaseF32(kept[0]!); // hot first in line ...
    releaseF32(kept[1]!);
    releaseF32(kept[2]!); // ... then the cold length, then hot again: hot is the one used last
    for (let step = 0; step < 3; step++) releaseF32(allocateF32Overwritten(hot)); // used every step, one array always left
    // Fill the cap with other lengths: the cold length must go before the hot one.
    const others = Array.from({ length: 3 }, (_, i) => allocateF32Overwritten(12 * 2 ** 20 + 200 + i)); // 5 × 48 MiB + these: one must go
    for (const array of others) releaseF32(array);
    const hotKept = [allocateF32Overwritten(hot), allocateF32Overwritten(hot)];
    expect(hotKept.every((array) => kept.includes(array))).toBe(true);
    expect(allocateF32Overwritten(cold) === kept[1]).toBe(false);
  });

  it('a freed adopted array is never reused by the backend; a freed kernel output is, and memory() counts it as pooled', () => {
    const backend = createCpuBackend();
    const mine = new Float32Array(LARGE + 7).fill(1);
    const adopted = backend.adopt(mine, 'f32');
    const view = { storage: adopted, shape: [LARGE + 7], strides: [1], offset: 0 };
    const output = backend.binary('add', view, view, [LARGE + 7]);
    backend.free(adopted);
    const pooledBefore = backend.memory().pooledBytes;
    backend.free(output);
    expect(backend.memory().pooledBytes).toBe(pooledBefore + (LARGE + 7) * 4);
    const onesView = { storage: backend.full(LARGE + 7, 1, 'f32'), shape: [LARGE + 7], strides: [1], offset: 0 };
    const next = backend.unary('mulScalar', onesView, 5);
    const nextData = (next as unknown as { data: Float32Array }).data;
    expect(nextData).toBe((output as unknown as { data: Float32Array }).data);
    expect(nextData).not.toBe(mine);
    expect(mine.every((v) => v === 1)).toBe(true);
    expect(nextData.every((v) => v === 5)).toBe(true);
  });

  it('kernels on reused dirty arrays give the results they give on fresh ones (fast-check)', async () => {
    await fc.assert(fc.asyncProperty(fc.nat(), async (seed) => {
      const rng = new Random(seed);
      const rows = 64;
      const inner = 2048 + (seed % 5); // [rows, inner] ≥ 2^17 elements: pooled
      const cols = 8;
      const values = Float32Array.from({ length: rows * inner }, () => rng.normal());
      const w = Float32Array.from({ length: inner * cols }, () => rng.normal());
      const wideWeight = Float32Array.from({ length: inner * 1024 }, (_, i) => Math.sin(i));
      const run = async () => {
        const a = requireGrad(tensor(values, [rows, inner]));
        const weight = requireGrad(tensor(w, [inner, cols]));
        const mask = topkMask(a, 3 * rows, 'all');
        const y = maskedMatmul(a, mask, weight);
        const masked = mul(a, mask);
        const dense = matmul(masked, weight);
        const wide = matmul(a, tensor(wideWeight, [inner, 1024])); // [64, 1024]: a pooled matmul output
        const doubled = add(a, a);
        const total = sum(y);
        backward(total); // maskedMatmulBackward's da and dw start from zeroed arrays
        const out = {
          mask: await mask.toFloat32Array(), y: await y.toFloat32Array(), dense: await dense.toFloat32Array(), sum: await doubled.toFloat32Array(),
          da: await a.grad!.toFloat32Array(), dw: await weight.grad!.toFloat32Array(), wide: await wide.toFloat32Array(),
        };
        for (const t of [a, weight, mask, y, masked, dense, wide, doubled, total, a.grad!, weight.grad!]) t.dispose();
        return out;
      };
      const fresh = await run();
      // Dirty the pool with freed outputs of the same sizes, then run again on reused arrays.
      const junk = [tensor(new Float32Array(rows * inner).fill(9), [rows, inner])];
      junk.push(add(junk[0]!, 1), mul(junk[0]!, 2), add(junk[0]!, 3), tensor(new Float32Array(rows * 1024).fill(9), [rows, 1024]));
      junk.push(add(junk[4]!, 1));
      for (const t of junk) t.dispose();
      const reused = await run();
      // The masked product equals the dense one (a float tolerance: the gather sums in another order) ...
      fresh.y.forEach((v, i) => expect(Math.abs(v - fresh.dense[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(v))));
      // ... and every kernel gives the same bits on reused, dirty arrays.
      expect(reused.da).toEqual(fresh.da);
      expect(reused.wide).toEqual(fresh.wide);
      expect(reused.dw).toEqual(fresh.dw);
      expect(reused.mask).toEqual(fresh.mask);
      expect(reused.y).toEqual(fresh.y);
      expect(reused.dense).toEqual(fresh.dense);
      expect(reused.sum).toEqual(fresh.sum);
    }), { numRuns: 5 });
  });
});
