// topkMask, BatchTopK's selection: the CPU kernel against a full sort (ties, NaN, ±0, infinities, every count),
// the op's contract, and the WebGPU radix select against the CPU kernel on random and awkward shapes.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/kernels/cpu/index.ts';
import { selectFromSample } from '../src/kernels/cpu/select.ts';
import type { WebGpuBackend } from '../src/kernels/webgpu/index.ts';
import { tensor, topkMask } from '../src/tensor/ops.ts';
import { Random } from '../src/tensor/random.ts';
import { probeForTests, readAll, registerRequiredFailure, uploadBoth } from './webgpu-helpers.ts';

const cpu = createCpuBackend();

/** The reference: sort indices by value descending (NaN below -Infinity), ties by index; the first `count` get 1. */
function referenceMask(values: Float32Array, groups: number, size: number, count: number): number[] {
  const mask = new Array<number>(groups * size).fill(0);
  for (let g = 0; g < groups; g++) {
    const order = Array.from({ length: size }, (_, i) => i);
    const value = (i: number) => values[g * size + i]!;
    const ranksAbove = (a: number, b: number) => { // a before b?
      const x = value(a);
      const y = value(b);
      if (Number.isNaN(x) !== Number.isNaN(y)) return Number.isNaN(y);
      if (!Number.isNaN(x) && x !== y) return x > y;
      return a < b;
    };
    order.sort((a, b) => (ranksAbove(a, b) ? -1 : 1));
    for (const i of order.slice(0, Math.min(count, size))) mask[g * size + i] = 1;
  }
  return mask;
}

/** Values drawn from a small set (many ties), sometimes with NaN, ±0 and infinities. */
function awkwardValues(n: number, seed: number, distinct: number): Float32Array {
  const rng = new Random(seed);
  const specials = [NaN, 0, -0, Infinity, -Infinity];
  return Float32Array.from({ length: n }, () => (rng.uniform() < 0.05 ? specials[rng.int(specials.length)]! : (rng.int(distinct) - distinct / 2) / 4));
}

describe('topkMask on the CPU', () => {
  it('equals a full sort, ties to the lower index, NaN last (fast-check)', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 45 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 1 << 30 }),
      async (groups, size, count, distinct, seed) => {
        const values = awkwardValues(groups * size, seed, distinct);
        const out = await readAll(cpu, cpu.topkMask(cpu.upload(values, 'f32'), groups, size, count));
        expect(Array.from(out)).toEqual(referenceMask(values, groups, size, count));
      }), { numRuns: 300 });
  });

  it('long groups with few taken (the sampled path, and its fallback on heavy ties) equal a full sort (fast-check)', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1 << 17, max: (1 << 17) + 5000 }), fc.integer({ min: 1, max: 3000 }), fc.constantFrom(3, 50, 1 << 20), fc.integer({ min: 0, max: 1 << 30 }),
      async (size, count, distinct, seed) => {
        const values = awkwardValues(size, seed, distinct);
        const out = await readAll(cpu, cpu.topkMask(cpu.upload(values, 'f32'), 1, size, count));
        expect(Array.from(out)).toEqual(referenceMask(values, 1, size, count));
      }), { numRuns: 6 });
  });

  it('the sampled path takes a long random group itself, and gives a tied one back untouched', () => {
    // The property above cannot tell which path ran (both give the full sort's answer); this pins both outcomes.
    const size = (1 << 17) + 11;
    const take = 1500;
    const random = awkwardValues(size, 5, 1 << 20);
    const bits = (values: Float32Array) => new Int32Array(values.buffer);
    const mask = new Float32Array(size);
    expect(selectFromSample(bits(random), 0, size, take, mask)).toBe(true);
    expect(Array.from(mask)).toEqual(referenceMask(random, 1, size, take));
    const tied = new Float32Array(size).fill(1.5); // every key reaches the bound: more candidates than room
    const untouched = new Float32Array(size);
    expect(selectFromSample(bits(tied), 0, size, take, untouched)).toBe(false);
    expect(untouched.every((v) => v === 0)).toBe(true);
  });

  it('as an op: over the whole tensor or per row, exactly min(count, n) ones, and a constant', async () => {
    const x = tensor(Float32Array.from([3, 1, 2, 2, 5, 0]), [2, 3], { backend: cpu });
    expect(Array.from(await topkMask(x, 3).toFloat32Array())).toEqual([1, 0, 1, 0, 1, 0]);
    expect(Array.from(await topkMask(x, 1, 'row').toFloat32Array())).toEqual([1, 0, 0, 0, 1, 0]);
    expect(Array.from(await topkMask(x, 9).toFloat32Array())).toEqual([1, 1, 1, 1, 1, 1]);
    expect(Array.from(await topkMask(x, 0, 'row').toFloat32Array())).toEqual([0, 0, 0, 0, 0, 0]);
    expect(() => topkMask(x, -1)).toThrow(/count must be a non-negative integer/);
  });
});

const probe = await probeForTests('select');
registerRequiredFailure(probe.reason);
const gpu = probe.backend as WebGpuBackend;
const splitProbe = probe.backend ? await probeForTests('select', { maxBindingBytes: 1 << 16 }) : null;
const gpuSplit = splitProbe?.backend as WebGpuBackend;
afterAll(() => gpuSplit?.destroy());

describe.skipIf(!probe.backend)('topkMask on WebGPU matches the CPU', () => {
  async function check(backend: WebGpuBackend, values: Float32Array, groups: number, size: number, count: number): Promise<void> {
    const [c, g] = uploadBoth(cpu, backend, values, 'f32');
    const expected = await readAll(cpu, cpu.topkMask(c, groups, size, count));
    const actual = await readAll(backend, backend.topkMask(g, groups, size, count));
    expect(Array.from(actual), `groups ${groups}, size ${size}, count ${count}`).toEqual(Array.from(expected));
  }

  it('random and awkward shapes: sizes around the workgroup, one long group, many short ones, heavy ties, NaN', async () => {
    const cases: [number, number, number][] = [
      [1, 1, 1], [1, 7, 3], [3, 255, 17], [2, 256, 128], [2, 257, 256], [1, 1000, 999], [5, 300, 0], [4, 33, 40],
      [1, 70_000, 16 * 136], [64, 448, 16], [512, 36, 5],
    ];
    let seed = 1;
    for (const [groups, size, count] of cases) {
      await check(gpu, awkwardValues(groups * size, seed++, 7), groups, size, count); // many ties
      const rng = new Random(seed++);
      await check(gpu, Float32Array.from({ length: groups * size }, () => rng.normal()), groups, size, count); // distinct
    }
  });

  it('splits groups across bindings above the binding limit', async () => {
    await check(gpuSplit, awkwardValues(40 * 500, 3, 9), 40, 500, 37);
  });
});
