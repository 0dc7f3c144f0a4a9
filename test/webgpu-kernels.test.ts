// Every WebGPU kernel against the CPU backend (the reference), on random and awkward shapes: sizes that are
// no tile multiple, T = 1, long k, head dims 8..128, GQA ratios 1/2/7, f16/bf16 weights, broadcast and
// transposed views, and storages above an artificially lowered binding limit.
// Skips with the reason when no WebGPU adapter answers, unless RANK1_REQUIRE_WEBGPU=1 (then it fails).
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { AttentionParams, Backend, BinaryOp, DType, MatmulParams, Storage, UnaryOp, View } from '../src/kernels/backend.ts';
import { createCpuBackend } from '../src/kernels/cpu/index.ts';
import { probeWebGpu, type WebGpuBackend } from '../src/kernels/webgpu/index.ts';
import { narrowFromF32 } from '../src/kernels/dtype.ts';
import { Random } from '../src/tensor/random.ts';
import {
  contiguous, expectClose, expectStoragesClose, probeForTests, randomFloats, randomInts, readAll,
  registerRequiredFailure, uploadBoth,
} from './webgpu-helpers.ts';

const SMALL_BINDING = 1 << 16;

const probe = await probeForTests('webgpu-kernels');
registerRequiredFailure(probe.reason);
// The same device kinds with other kernel choices: the workgroup-tiled matmul (what GPUs run), and a
// binding limit of 64 KiB so modest storages take the split paths.
const tiledProbe = probe.backend ? await probeForTests('webgpu-kernels', { cpuAdapter: false }) : null;
const splitProbe = probe.backend ? await probeForTests('webgpu-kernels', { maxBindingBytes: SMALL_BINDING }) : null;
// Dawn's GLES compatibility adapter, the fallback when no core adapter answers (not required: skipped if absent).
const glesProbe = probe.backend ? await probeWebGpu({ adapter: 'opengles' }) : null;
const gpuGles = glesProbe && 'backend' in glesProbe ? glesProbe.backend : null;

const cpu = createCpuBackend();
const gpu = probe.backend as WebGpuBackend;
const gpuTiled = tiledProbe?.backend as WebGpuBackend;
const gpuSplit = splitProbe?.backend as WebGpuBackend;

afterAll(() => {
  gpuTiled?.destroy();
  gpuSplit?.destroy();
  gpuGles?.destroy();
});

const runs = (numRuns: number, seed: number) => ({ numRuns, seed, endOnFailure: true });

function halves(data: Float32Array, dtype: DType): Float32Array | Uint16Array {
  return dtype === 'f16' || dtype === 'bf16' ? narrowFromF32(data, dtype) : data;
}

// ---- strided views --------------------------------------------------------------------------------

type ViewKind = 'contiguous' | 'permuted' | 'sliced' | 'broadcast' | 'overlapping';

interface ViewLayout {
  shape: number[];
  strides: number[];
  offset: number;
  /** Elements the backing storage needs. */
  numel: number;
}

function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = stride;
    stride *= shape[i]!;
  }
  return strides;
}

/** A view of `shape` laid out as `kind` inside a larger storage. */
function layout(shape: number[], kind: ViewKind, seed: number): ViewLayout {
  const rng = new Random(seed);
  if (kind === 'contiguous') return { shape, strides: contiguousStrides(shape), offset: 0, numel: shape.reduce((a, b) => a * b, 1) };
  if (kind === 'permuted') {
    const perm = shape.map((_, i) => i);
    for (let i = perm.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [perm[i], perm[j]] = [perm[j]!, perm[i]!];
    }
    const baseStrides = contiguousStrides(perm.map((i) => shape[i]!));
    const strides = new Array<number>(shape.length);
    perm.forEach((axis, j) => { strides[axis] = baseStrides[j]!; });
    return { shape, strides, offset: 0, numel: shape.reduce((a, b) => a * b, 1) };
  }
  if (kind === 'sliced') {
    const steps = shape.map(() => 1 + rng.int(2));
    const parent = shape.map((size, i) => size * steps[i]! + rng.int(2));
    const parentStrides = contiguousStrides(parent);
    const offset = rng.int(3);
    return {
      shape, strides: parentStrides.map((s, i) => s * steps[i]!), offset,
      numel: offset + parent.reduce((a, b) => a * b, 1),
    };
  }
  if (kind === 'overlapping') { // sliding windows: every axis steps by one element
    return { shape, strides: shape.map(() => 1), offset: 0, numel: shape.reduce((a, size) => a + size - 1, 1) };
  }
  // broadcast: some axes read one element repeatedly (stride 0)
  const kept = shape.map((size) => size === 1 || rng.uniform() < 0.6);
  const keptStrides = contiguousStrides(shape.map((size, i) => (kept[i] ? size : 1)));
  return {
    shape, strides: keptStrides.map((s, i) => (kept[i] ? s : 0)), offset: 0,
    numel: shape.reduce((a, size, i) => a * (kept[i] ? size : 1), 1),
  };
}

const shapeArb = fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 4 });
const kindArb = fc.constantFrom<ViewKind>('contiguous', 'permuted', 'sliced', 'broadcast', 'overlapping');

function viewOf(storage: Storage, l: ViewLayout): View {
  return { storage, shape: l.shape, strides: l.strides, offset: l.offset };
}

describe.skipIf(!probe.backend)('WebGPU kernels match the CPU backend', () => {
  it('describes its device', () => {
    expect(gpu.name).toBe('webgpu');
    expect(gpu.description).toMatch(/^webgpu \(.+, .+, (core|compatibility)\)$/);
  });

  // ---- memory -----------------------------------------------------------------------------------

  it('uploads, fills and reads back every dtype, raw bits included', async () => {
    const floats = randomFloats(37, 1, 100);
    const ints = randomInts(37, 2, -1000, 1000);
    const bits = Uint16Array.from(randomInts(37, 3, 0, 0x7bff));
    expect(Array.from(await readAll(gpu, gpu.upload(floats, 'f32')))).toEqual(Array.from(floats));
    expect(Array.from(await readAll(gpu, gpu.upload(ints, 'i32')))).toEqual(Array.from(ints));
    for (const dtype of ['f16', 'bf16'] as const) {
      const [c, g] = uploadBoth(cpu, gpu, bits, dtype);
      expect(Array.from(await gpu.readRaw(g))).toEqual(Array.from(bits));
      expect(Array.from(await readAll(gpu, g))).toEqual(Array.from(await readAll(cpu, c)));
    }
    for (const dtype of ['f32', 'i32', 'f16', 'bf16'] as const) {
      for (const numel of [1, 7, 300]) {
        const value = dtype === 'i32' ? -123456789 : -2.71875; // beyond 2^24: i32 must not pass through f32
        expect(Array.from(await gpu.readRaw(gpu.full(numel, value, dtype))))
          .toEqual(Array.from(await cpu.readRaw(cpu.full(numel, value, dtype))));
      }
    }
    await expect(() => gpu.upload(floats, 'bf16')).toThrow(/Uint16Array/);
  });

  it('pools freed buffers, tracks memory and rejects a double free', async () => {
    await gpu.sync();
    const before = gpu.memory();
    const a = gpu.full(1000, 1, 'f32');
    expect(gpu.memory().liveBytes).toBe(before.liveBytes + 4000);
    expect(gpu.memory().peakBytes).toBeGreaterThanOrEqual(before.liveBytes + 4000);
    gpu.free(a);
    await gpu.sync();
    const pooled = gpu.memory().pooledBytes;
    expect(pooled).toBeGreaterThanOrEqual(4000);
    const b = gpu.full(1000, 2, 'f32'); // same bucket: taken from the pool
    expect(gpu.memory().pooledBytes).toBeLessThan(pooled);
    expect(() => gpu.free(a)).toThrow(/double free/);
    gpu.free(b);
    expect(gpu.memory().liveBytes).toBe(before.liveBytes);
  });

  it('does not let an upload reuse a buffer that pending kernels still read', async () => {
    const x = gpu.upload(randomFloats(4096, 4), 'f32');
    const y = gpu.unary('exp', contiguous(x), 0); // recorded, not submitted
    const expected = await readAll(cpu, cpu.unary('exp', contiguous(cpu.upload(randomFloats(4096, 4), 'f32')), 0));
    gpu.free(x);
    const z = gpu.upload(new Float32Array(4096).fill(-1), 'f32'); // same bucket as x
    expectClose(await readAll(gpu, y), expected, { rtol: 1e-5 });
    expect((await readAll(gpu, z))[0]).toBe(-1);
  });

  it('reads strided views of every dtype', async () => {
    const data = randomFloats(60, 5);
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      const [c, g] = uploadBoth(cpu, gpu, halves(data, dtype), dtype);
      const view = { shape: [4, 5], strides: [1, 12], offset: 3 };
      expect(Array.from(await gpu.read({ storage: g, ...view }))).toEqual(Array.from(await cpu.read({ storage: c, ...view })));
    }
  });

  // ---- layout -----------------------------------------------------------------------------------

  it('copy gathers any strided view and casts to every dtype', async () => {
    await fc.assert(fc.asyncProperty(
      shapeArb, kindArb, fc.constantFrom<DType>('f32', 'f16', 'bf16', 'i32'), fc.constantFrom<DType>('f32', 'f16', 'bf16', 'i32'), fc.nat(),
      async (shape, kind, from, to, seed) => {
        const l = layout(shape, kind, seed);
        const data = from === 'i32' ? randomInts(l.numel, seed, -50, 50) : halves(randomFloats(l.numel, seed, 8), from);
        const [c, g] = uploadBoth(cpu, gpu, data, from);
        const out = gpu.copy(viewOf(g, l), to);
        const ref = cpu.copy(viewOf(c, l), to);
        expect(Array.from(await gpu.readRaw(out))).toEqual(Array.from(await cpu.readRaw(ref)));
      },
    ), runs(24, 11));
  });

  it('assign scatters into strided f32 and i32 views in place', async () => {
    await fc.assert(fc.asyncProperty(
      shapeArb, fc.constantFrom<ViewKind>('contiguous', 'permuted', 'sliced'), kindArb, fc.constantFrom<DType>('f32', 'i32'), fc.nat(),
      async (shape, dstKind, srcKind, dtype, seed) => {
        const dstLayout = layout(shape, dstKind, seed);
        const srcLayout = layout(shape, srcKind, seed + 1);
        const make = (n: number, s: number) => (dtype === 'i32' ? randomInts(n, s, -99, 99) : randomFloats(n, s));
        const [cd, gd] = uploadBoth(cpu, gpu, make(dstLayout.numel, seed), dtype);
        const [cs, gs] = uploadBoth(cpu, gpu, make(srcLayout.numel, seed + 2), dtype);
        gpu.assign(viewOf(gd, dstLayout), viewOf(gs, srcLayout));
        cpu.assign(viewOf(cd, dstLayout), viewOf(cs, srcLayout));
        expect(Array.from(await readAll(gpu, gd))).toEqual(Array.from(await readAll(cpu, cd)));
      },
    ), runs(12, 12));
  });

  it('assign from an overlapping view of the same storage reads the source as it was (memmove)', async () => {
    // Both backends read the whole source before writing (snapshot semantics).
    const data = randomFloats(20, 6);
    const expected = Float32Array.from(data);
    expected.set(data.subarray(0, 15), 5);
    for (const backend of [gpu, cpu]) {
      const storage = backend.upload(data, 'f32');
      backend.assign({ storage, shape: [15], strides: [1], offset: 5 }, { storage, shape: [15], strides: [1], offset: 0 });
      expect(Array.from(await readAll(backend, storage)), backend.name).toEqual(Array.from(expected));
    }
  });

  // ---- elementwise ------------------------------------------------------------------------------

  const unaryOps: UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'silu', 'sigmoid', 'abs', 'square', 'pow', 'mulScalar', 'addScalar'];

  it('unary ops on strided views', async () => {
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...unaryOps), shapeArb, kindArb, fc.constantFrom(2, 3, -1, 0.5, 1.7, 0), fc.nat(),
      async (op, shape, kind, param, seed) => {
        const l = layout(shape, kind, seed);
        const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
        const data = randomFloats(l.numel, seed, 4).map((v) => (positive ? Math.abs(v) + 0.01 : v));
        const [c, g] = uploadBoth(cpu, gpu, data, 'f32');
        await expectStoragesClose(gpu, gpu.unary(op, viewOf(g, l), param), cpu, cpu.unary(op, viewOf(c, l), param),
          { rtol: 2e-6, atol: 1e-6 }, `${op}(${param})`);
      },
    ), runs(30, 13));
  });

  it('pow follows Math.pow for negative bases and special exponents', async () => {
    const data = Float32Array.from([-2, -1.5, -0, 0, 0.5, 3]);
    for (const param of [0, 1, 2, 3, -1, -2, 0.5, 2.5]) {
      const [c, g] = uploadBoth(cpu, gpu, data, 'f32');
      await expectStoragesClose(gpu, gpu.unary('pow', contiguous(g), param), cpu, cpu.unary('pow', contiguous(c), param),
        { rtol: 1e-6 }, `pow ${param}`);
    }
  });

  const binaryOps: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'eq', 'gt', 'siluGrad'];

  it('binary ops with broadcasting and transposed operands', async () => {
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...binaryOps), shapeArb, kindArb, kindArb, fc.nat(),
      async (op, shape, kindA, kindB, seed) => {
        const la = layout(shape, kindA, seed);
        const lb = layout(shape, kindB, seed + 7);
        // Few distinct values, so eq and maximum meet ties.
        const a = randomFloats(la.numel, seed).map((v) => Math.round(v * 3) / 2);
        const b = randomFloats(lb.numel, seed + 1).map((v) => Math.round(v * 3) / 2 + (op === 'div' ? 0.25 : 0));
        const [ca, ga] = uploadBoth(cpu, gpu, a, 'f32');
        const [cb, gb] = uploadBoth(cpu, gpu, b, 'f32');
        await expectStoragesClose(gpu, gpu.binary(op, viewOf(ga, la), viewOf(gb, lb), shape), cpu,
          cpu.binary(op, viewOf(ca, la), viewOf(cb, lb), shape), { rtol: 2e-6, atol: 1e-6 }, op);
      },
    ), runs(24, 14));
  });

  // ---- reductions -------------------------------------------------------------------------------

  it('reduce sum and max over [outer, size, inner]', async () => {
    const dims = [[1, 1, 1], [3, 7, 5], [2, 3000, 1], [1, 5000, 3], [7, 3, 1], [4, 300, 200], [5, 1, 9]];
    for (const [outer, size, inner] of dims as [number, number, number][]) {
      const [c, g] = uploadBoth(cpu, gpu, randomFloats(outer * size * inner, outer + size + inner), 'f32');
      for (const op of ['sum', 'max'] as const) {
        await expectStoragesClose(gpu, gpu.reduce(op, g, outer, size, inner), cpu, cpu.reduce(op, c, outer, size, inner),
          { rtol: 1e-5, scaledAtol: 1e-5 }, `${op} [${outer},${size},${inner}]`);
      }
    }
  });

  // ---- matmul -----------------------------------------------------------------------------------

  const matmulArb = fc.record({
    batch: fc.integer({ min: 1, max: 3 }),
    m: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 40 })),
    n: fc.integer({ min: 1, max: 40 }),
    k: fc.integer({ min: 1, max: 40 }),
    transA: fc.boolean(),
    transB: fc.boolean(),
    broadcastA: fc.boolean(),
    broadcastB: fc.boolean(),
    bDtype: fc.constantFrom<DType>('f32', 'f16', 'bf16'),
    aOffset: fc.integer({ min: 0, max: 5 }),
    bOffset: fc.integer({ min: 0, max: 5 }),
    seed: fc.nat(),
  });

  interface MatmulCase {
    batch: number; m: number; n: number; k: number; transA: boolean; transB: boolean;
    broadcastA: boolean; broadcastB: boolean; bDtype: DType; aOffset: number; bOffset: number; seed: number;
  }

  async function checkMatmul(backend: Backend, c: MatmulCase, label: string) {
    const p: MatmulParams = {
      batch: c.batch, m: c.m, n: c.n, k: c.k, transA: c.transA, transB: c.transB,
      aBatchStride: c.broadcastA ? 0 : c.m * c.k, bBatchStride: c.broadcastB ? 0 : c.n * c.k,
    };
    const aNumel = c.aOffset + (p.aBatchStride ? c.batch : 1) * c.m * c.k;
    const bNumel = c.bOffset + (p.bBatchStride ? c.batch : 1) * c.n * c.k;
    const [ca, ga] = uploadBoth(cpu, backend, randomFloats(aNumel, c.seed), 'f32');
    const [cb, gb] = uploadBoth(cpu, backend, halves(randomFloats(bNumel, c.seed + 1), c.bDtype), c.bDtype);
    await expectStoragesClose(backend, backend.matmul(ga, c.aOffset, gb, c.bOffset, p), cpu, cpu.matmul(ca, c.aOffset, cb, c.bOffset, p),
      { rtol: 1e-4, scaledAtol: 1e-5 }, `${label} ${JSON.stringify(c)}`);
  }

  it('matmul (default kernel for this adapter): transposes, batch strides incl. 0, half b, odd sizes', async () => {
    await fc.assert(fc.asyncProperty(matmulArb, (c) => checkMatmul(gpu, c, 'default')), runs(30, 21));
  });

  it('matmul (workgroup-tiled kernel, as on GPUs)', async () => {
    await fc.assert(fc.asyncProperty(matmulArb, (c) => checkMatmul(gpuTiled, c, 'tiled')), runs(20, 22));
  });

  it('matmul with long k, m = 1 (GEMV) and sizes past one tile', async () => {
    const base = { batch: 1, transA: false, broadcastA: false, broadcastB: false, aOffset: 0, bOffset: 0, seed: 3 };
    const cases = [
      { ...base, m: 3, n: 5, k: 3000, transB: false, bDtype: 'f32' as DType },
      { ...base, m: 1, n: 300, k: 777, transB: true, bDtype: 'bf16' as DType },
      { ...base, m: 1, n: 130, k: 64, transB: false, bDtype: 'f16' as DType },
      { ...base, m: 67, n: 140, k: 96, transB: true, bDtype: 'f32' as DType },
      { ...base, m: 33, n: 520, k: 12, transB: false, bDtype: 'bf16' as DType },
    ];
    for (const c of cases) {
      await checkMatmul(gpu, c, 'default');
      await checkMatmul(gpuTiled, c, 'tiled');
    }
  });

  // ---- fused kernels ----------------------------------------------------------------------------

  it('softmax and log-softmax, forward and backward, long rows', async () => {
    for (const [rows, cols] of [[1, 1], [5, 7], [3, 3001], [1, 151936]] as [number, number][]) {
      const x = randomFloats(rows * cols, rows + cols, 8);
      const dy = randomFloats(rows * cols, cols);
      for (const log of [false, true]) {
        const [cx, gx] = uploadBoth(cpu, gpu, x, 'f32');
        const cy = cpu.softmax(cx, rows, cols, log);
        const gy = gpu.softmax(gx, rows, cols, log);
        await expectStoragesClose(gpu, gy, cpu, cy, { rtol: 1e-4, atol: 1e-7 }, `softmax log=${log} [${rows},${cols}]`);
        const [cd, gd] = uploadBoth(cpu, gpu, dy, 'f32');
        await expectStoragesClose(gpu, gpu.softmaxBackward(gy, gd, rows, cols, log), cpu, cpu.softmaxBackward(cy, cd, rows, cols, log),
          { rtol: 1e-4, scaledAtol: 1e-5 }, `softmaxBackward log=${log} [${rows},${cols}]`);
      }
    }
  });

  it('embedding gathers from f32/f16/bf16 tables; the backward scatter-adds repeated ids exactly', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 33 }), fc.integer({ min: 1, max: 40 }),
      fc.constantFrom<DType>('f32', 'f16', 'bf16'), fc.nat(),
      async (vocab, hidden, count, dtype, seed) => {
        const ids = randomInts(count, seed, 0, Math.min(vocab, 6)); // few distinct ids: many repeats
        const [ct, gt] = uploadBoth(cpu, gpu, halves(randomFloats(vocab * hidden, seed), dtype), dtype);
        const [ci, gi] = uploadBoth(cpu, gpu, ids, 'i32');
        expect(Array.from(await readAll(gpu, gpu.embedding(gt, gi, vocab, hidden))))
          .toEqual(Array.from(await readAll(cpu, cpu.embedding(ct, ci, vocab, hidden))));
        const [cd, gd] = uploadBoth(cpu, gpu, randomFloats(count * hidden, seed + 1), 'f32');
        expect(Array.from(await readAll(gpu, gpu.embeddingBackward(gd, gi, vocab, hidden))))
          .toEqual(Array.from(await readAll(cpu, cpu.embeddingBackward(cd, ci, vocab, hidden))));
      },
    ), runs(10, 31));
  });

  it('embedding reads zeros for ids outside the vocabulary', async () => {
    const table = gpu.upload(randomFloats(12, 1), 'f32');
    const ids = gpu.upload(Int32Array.from([-1, 1, 4, 2]), 'i32');
    const out = await readAll(gpu, gpu.embedding(table, ids, 4, 3));
    expect(Array.from(out.slice(0, 3))).toEqual([0, 0, 0]);
    expect(Array.from(out.slice(6, 9))).toEqual([0, 0, 0]);
  });

  it('rmsNorm forward and backward with f32/f16/bf16 weights', async () => {
    for (const [rows, hidden] of [[1, 1], [3, 37], [70, 64], [300, 17]] as [number, number][]) {
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        const [cx, gx] = uploadBoth(cpu, gpu, randomFloats(rows * hidden, rows, 3), 'f32');
        const [cw, gw] = uploadBoth(cpu, gpu, halves(randomFloats(hidden, hidden), dtype), dtype);
        const c = cpu.rmsNorm(cx, cw, rows, hidden, 1e-6);
        const g = gpu.rmsNorm(gx, gw, rows, hidden, 1e-6);
        await expectStoragesClose(gpu, g.y, cpu, c.y, { rtol: 1e-5, atol: 1e-6 }, 'rmsNorm y');
        await expectStoragesClose(gpu, g.rstd, cpu, c.rstd, { rtol: 1e-5 }, 'rmsNorm rstd');
        const [cd, gd] = uploadBoth(cpu, gpu, randomFloats(rows * hidden, 7), 'f32');
        const cb = cpu.rmsNormBackward(cd, cx, cw, c.rstd, rows, hidden);
        const gb = gpu.rmsNormBackward(gd, gx, gw, g.rstd, rows, hidden);
        await expectStoragesClose(gpu, gb.dx, cpu, cb.dx, { rtol: 1e-4, scaledAtol: 1e-5 }, 'rmsNorm dx');
        await expectStoragesClose(gpu, gb.dweight, cpu, cb.dweight, { rtol: 1e-4, scaledAtol: 1e-5 }, 'rmsNorm dweight');
      }
    }
  });

  it('rope forward and inverse', async () => {
    for (const [batch, tokens, heads, headDim] of [[1, 1, 1, 2], [2, 5, 3, 8], [1, 9, 2, 64], [1, 3, 1, 128]]) {
      const [cx, gx] = uploadBoth(cpu, gpu, randomFloats(batch! * tokens! * heads! * headDim!, 1), 'f32');
      const [cc, gc] = uploadBoth(cpu, gpu, randomFloats(tokens! * headDim! / 2, 2), 'f32');
      const [cs, gs] = uploadBoth(cpu, gpu, randomFloats(tokens! * headDim! / 2, 3), 'f32');
      for (const inverse of [false, true]) {
        await expectStoragesClose(gpu, gpu.rope(gx, gc, gs, batch!, tokens!, heads!, headDim!, inverse), cpu,
          cpu.rope(cx, cc, cs, batch!, tokens!, heads!, headDim!, inverse), { rtol: 1e-5, atol: 1e-6 }, 'rope');
      }
    }
  });

  it('attention forward and backward: causal offsets, GQA, head dims 8..128', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        batch: fc.integer({ min: 1, max: 2 }),
        tq: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 20 })),
        extraKeys: fc.integer({ min: 0, max: 12 }),
        kvHeads: fc.integer({ min: 1, max: 2 }),
        ratio: fc.constantFrom(1, 2, 7),
        headDim: fc.constantFrom(8, 16, 64, 128),
        mask: fc.constantFrom('kv-cache', 'none', 'zero', 'negative'),
        seed: fc.nat(),
      }),
      async (c) => {
        const tk = c.tq + c.extraKeys;
        const causalOffset = { 'kv-cache': tk - c.tq, none: Infinity, zero: 0, negative: -1 }[c.mask];
        const p: AttentionParams = {
          batch: c.batch, tq: c.tq, tk, heads: c.kvHeads * c.ratio, kvHeads: c.kvHeads, headDim: c.headDim,
          scale: c.headDim ** -0.5, causalOffset,
        };
        const qn = c.batch * c.tq * p.heads * c.headDim;
        const kn = c.batch * tk * c.kvHeads * c.headDim;
        const [cq, gq] = uploadBoth(cpu, gpu, randomFloats(qn, c.seed, 2), 'f32');
        const [ck, gk] = uploadBoth(cpu, gpu, randomFloats(kn, c.seed + 1, 2), 'f32');
        const [cv, gv] = uploadBoth(cpu, gpu, randomFloats(kn, c.seed + 2), 'f32');
        const [cd, gd] = uploadBoth(cpu, gpu, randomFloats(qn, c.seed + 3), 'f32');
        const cf = cpu.attention(cq, ck, cv, p);
        const gf = gpu.attention(gq, gk, gv, p);
        const tol = { rtol: 1e-3, scaledAtol: 1e-4 };
        const label = JSON.stringify(c);
        await expectStoragesClose(gpu, gf.out, cpu, cf.out, tol, `out ${label}`);
        await expectStoragesClose(gpu, gf.lse, cpu, cf.lse, tol, `lse ${label}`);
        const cb = cpu.attentionBackward(cq, ck, cv, cf.out, cf.lse, cd, p);
        const gb = gpu.attentionBackward(gq, gk, gv, gf.out, gf.lse, gd, p);
        await expectStoragesClose(gpu, gb.dq, cpu, cb.dq, tol, `dq ${label}`);
        await expectStoragesClose(gpu, gb.dk, cpu, cb.dk, tol, `dk ${label}`);
        await expectStoragesClose(gpu, gb.dv, cpu, cb.dv, tol, `dv ${label}`);
      },
    ), runs(14, 41));
  });

  it('swiglu forward and backward', async () => {
    const n = 1001;
    const [cg, gg] = uploadBoth(cpu, gpu, randomFloats(n, 1, 6), 'f32');
    const [cu, gu] = uploadBoth(cpu, gpu, randomFloats(n, 2), 'f32');
    const [cd, gd] = uploadBoth(cpu, gpu, randomFloats(n, 3), 'f32');
    await expectStoragesClose(gpu, gpu.swiglu(gg, gu, n), cpu, cpu.swiglu(cg, cu, n), { rtol: 1e-5, atol: 1e-7 }, 'swiglu');
    const c = cpu.swigluBackward(cg, cu, cd, n);
    const g = gpu.swigluBackward(gg, gu, gd, n);
    await expectStoragesClose(gpu, g.dgate, cpu, c.dgate, { rtol: 1e-5, atol: 1e-7 }, 'dgate');
    await expectStoragesClose(gpu, g.dup, cpu, c.dup, { rtol: 1e-5, atol: 1e-7 }, 'dup');
  });

  it('cross-entropy and KL divergence, forward and backward, masked rows, long vocab', async () => {
    for (const [rows, vocab] of [[1, 2], [6, 3001], [2, 151936]] as [number, number][]) {
      const [cl, gl] = uploadBoth(cpu, gpu, randomFloats(rows * vocab, vocab, 6), 'f32');
      const [cq, gq] = uploadBoth(cpu, gpu, randomFloats(rows * vocab, vocab + 1, 6), 'f32');
      const [ct, gt] = uploadBoth(cpu, gpu, randomInts(rows, rows, 0, vocab), 'i32');
      const mask = Float32Array.from({ length: rows }, (_, r) => (r % 3 === 1 ? 0 : r % 2 ? 0.5 : 1));
      const [cm, gm] = uploadBoth(cpu, gpu, mask, 'f32');
      const tol = { rtol: 1e-4, scaledAtol: 1e-6 };
      await expectStoragesClose(gpu, gpu.crossEntropy(gl, gt, gm, rows, vocab), cpu, cpu.crossEntropy(cl, ct, cm, rows, vocab), tol, 'ce');
      await expectStoragesClose(gpu, gpu.crossEntropyBackward(gl, gt, gm, rows, vocab), cpu,
        cpu.crossEntropyBackward(cl, ct, cm, rows, vocab), tol, 'ce backward');
      await expectStoragesClose(gpu, gpu.klDiv(gl, gq, rows, vocab), cpu, cpu.klDiv(cl, cq, rows, vocab),
        { rtol: 1e-3, scaledAtol: 1e-5 }, 'kl');
      const c = cpu.klDivBackward(cl, cq, cm, rows, vocab);
      const g = gpu.klDivBackward(gl, gq, gm, rows, vocab);
      await expectStoragesClose(gpu, g.dp, cpu, c.dp, { rtol: 1e-3, scaledAtol: 1e-5 }, 'kl dp');
      await expectStoragesClose(gpu, g.dq, cpu, c.dq, tol, 'kl dq');
    }
  });

  it('adamw updates param, m and v in place', async () => {
    const n = 777;
    const params = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 3 };
    const [cp, gp] = uploadBoth(cpu, gpu, randomFloats(n, 1), 'f32');
    const [cg, gg] = uploadBoth(cpu, gpu, randomFloats(n, 2), 'f32');
    const [cm, gm] = uploadBoth(cpu, gpu, randomFloats(n, 3, 0.1), 'f32');
    const [cv, gv] = uploadBoth(cpu, gpu, randomFloats(n, 4, 0.01).map(Math.abs), 'f32');
    cpu.adamwStep(cp, cg, cm, cv, n, params);
    gpu.adamwStep(gp, gg, gm, gv, n, params);
    await expectStoragesClose(gpu, gp, cpu, cp, { rtol: 1e-5, atol: 1e-7 }, 'param');
    // m and v cancel (beta * m + (1 - beta) * g): compare relative to their scale, not elementwise.
    await expectStoragesClose(gpu, gm, cpu, cm, { rtol: 1e-5, scaledAtol: 1e-6 }, 'm');
    await expectStoragesClose(gpu, gv, cpu, cv, { rtol: 1e-5, scaledAtol: 1e-6 }, 'v');
  });

  // ---- storages above the binding limit ---------------------------------------------------------

  describe(`with a ${SMALL_BINDING}-byte binding limit`, () => {
    it('embedding and its backward split a large table by vocab rows', async () => {
      const vocab = 700;
      const hidden = 40; // f32 table: 112 KB; bf16: 56 KB + split at odd rows
      for (const dtype of ['f32', 'bf16'] as const) {
        const [ct, gt] = uploadBoth(cpu, gpuSplit, halves(randomFloats(vocab * hidden, 1), dtype), dtype);
        const ids = Int32Array.from([0, 699, 350, 1, 698, 350, 420, 0]);
        const [ci, gi] = uploadBoth(cpu, gpuSplit, ids, 'i32');
        expect(Array.from(await readAll(gpuSplit, gpuSplit.embedding(gt, gi, vocab, hidden))))
          .toEqual(Array.from(await readAll(cpu, cpu.embedding(ct, ci, vocab, hidden))));
        const [cd, gd] = uploadBoth(cpu, gpuSplit, randomFloats(ids.length * hidden, 2), 'f32');
        expect(Array.from(await readAll(gpuSplit, gpuSplit.embeddingBackward(gd, gi, vocab, hidden))))
          .toEqual(Array.from(await readAll(cpu, cpu.embeddingBackward(cd, ci, vocab, hidden))));
      }
    });

    it('matmul splits b (and a, and out) into pieces', async () => {
      const base = { batch: 1, transA: false, broadcastA: false, broadcastB: false, aOffset: 1, bOffset: 3, seed: 9 };
      const cases = [
        { ...base, m: 9, n: 700, k: 40, transB: true, bDtype: 'bf16' as DType }, // LM head: [V, H] weight
        { ...base, m: 9, n: 700, k: 40, transB: true, bDtype: 'f32' as DType },
        { ...base, m: 1, n: 700, k: 40, transB: true, bDtype: 'f32' as DType }, // decode GEMV
        { ...base, m: 5, n: 40, k: 700, transB: false, bDtype: 'f32' as DType }, // k split, accumulated
        { ...base, m: 500, n: 40, k: 40, transB: false, bDtype: 'f32' as DType, transA: true }, // a and out split
        { ...base, batch: 3, m: 20, n: 300, k: 30, transB: true, bDtype: 'f16' as DType },
      ];
      for (const c of cases) await checkMatmul(gpuSplit, c, 'split');
    });

    it('copy, read, unary and binary on views of a storage above the limit', async () => {
      const rows = 300;
      const cols = 70; // 84 KB of f32
      const data = randomFloats(rows * cols, 3);
      const [c, g] = uploadBoth(cpu, gpuSplit, data, 'f32');
      const transposed = { shape: [cols, rows], strides: [1, cols], offset: 0 };
      expect(Array.from(await gpuSplit.read({ storage: g, ...transposed }))).toEqual(Array.from(await cpu.read({ storage: c, ...transposed })));
      for (const dtype of ['bf16', 'f16', 'f32'] as const) {
        expect(Array.from(await gpuSplit.readRaw(gpuSplit.copy({ storage: g, ...transposed }, dtype))))
          .toEqual(Array.from(await cpu.readRaw(cpu.copy({ storage: c, ...transposed }, dtype))));
      }
      expect(Array.from(await readAll(gpuSplit, g))).toEqual(Array.from(data));
      await expectStoragesClose(gpuSplit, gpuSplit.unary('exp', { storage: g, ...transposed }, 0), cpu,
        cpu.unary('exp', { storage: c, ...transposed }, 0), { rtol: 2e-6 }, 'exp');
      const row = { shape: [cols, rows], strides: [0, 1], offset: 5 };
      await expectStoragesClose(gpuSplit, gpuSplit.binary('mul', { storage: g, ...transposed }, { storage: g, ...row }, [cols, rows]), cpu,
        cpu.binary('mul', { storage: c, ...transposed }, { storage: c, ...row }, [cols, rows]), { rtol: 1e-6 }, 'mul');
      const dst = gpuSplit.full(rows * cols, 0, 'f32');
      const cpuDst = cpu.full(rows * cols, 0, 'f32');
      gpuSplit.assign({ storage: dst, ...transposed }, contiguous(g, [cols, rows]));
      cpu.assign({ storage: cpuDst, ...transposed }, contiguous(c, [cols, rows]));
      expect(Array.from(await readAll(gpuSplit, dst))).toEqual(Array.from(await readAll(cpu, cpuDst)));
    });

    it('row kernels and reductions chunk their rows', async () => {
      const rows = 40;
      const cols = 1000; // 160 KB
      const [cx, gx] = uploadBoth(cpu, gpuSplit, randomFloats(rows * cols, 4, 5), 'f32');
      await expectStoragesClose(gpuSplit, gpuSplit.softmax(gx, rows, cols, true), cpu, cpu.softmax(cx, rows, cols, true),
        { rtol: 1e-5, atol: 1e-6 }, 'logsoftmax');
      const [ct, gt] = uploadBoth(cpu, gpuSplit, randomInts(rows, 5, 0, cols), 'i32');
      const [cm, gm] = uploadBoth(cpu, gpuSplit, new Float32Array(rows).fill(1), 'f32');
      await expectStoragesClose(gpuSplit, gpuSplit.crossEntropy(gx, gt, gm, rows, cols), cpu, cpu.crossEntropy(cx, ct, cm, rows, cols),
        { rtol: 1e-5 }, 'ce');
      for (const [outer, size, inner] of [[1, rows * cols, 1], [rows, cols, 1], [1, rows, cols], [2, 20, cols]]) {
        await expectStoragesClose(gpuSplit, gpuSplit.reduce('sum', gx, outer!, size!, inner!), cpu, cpu.reduce('sum', cx, outer!, size!, inner!),
          { rtol: 1e-5, scaledAtol: 1e-5 }, `reduce [${outer},${size},${inner}]`);
      }
      const [cw, gw] = uploadBoth(cpu, gpuSplit, randomFloats(cols, 6), 'f32');
      const c = cpu.rmsNorm(cx, cw, rows, cols, 1e-6);
      const g = gpuSplit.rmsNorm(gx, gw, rows, cols, 1e-6);
      await expectStoragesClose(gpuSplit, g.y, cpu, c.y, { rtol: 1e-5, atol: 1e-6 }, 'rmsNorm');
      const cb = cpu.rmsNormBackward(cx, cx, cw, c.rstd, rows, cols);
      const gb = gpuSplit.rmsNormBackward(gx, gx, gw, g.rstd, rows, cols);
      await expectStoragesClose(gpuSplit, gb.dweight, cpu, cb.dweight, { rtol: 1e-4, scaledAtol: 1e-5 }, 'dweight');
    });
  });

  describe.skipIf(!gpuGles)('on the GLES compatibility adapter', () => {
    it('runs matmul, attention, softmax and half copies like the core adapter', async () => {
      expect(gpuGles!.description).toMatch(/opengles, compatibility\)$/);
      const base = { batch: 2, transA: false, broadcastA: false, broadcastB: true, aOffset: 0, bOffset: 0, seed: 5 };
      await checkMatmul(gpuGles!, { ...base, m: 20, n: 37, k: 29, transB: true, bDtype: 'bf16' }, 'gles');
      await checkMatmul(gpuGles!, { ...base, m: 1, n: 37, k: 29, transB: false, bDtype: 'f32' }, 'gles');
      const p: AttentionParams = { batch: 1, tq: 9, tk: 13, heads: 4, kvHeads: 2, headDim: 64, scale: 0.125, causalOffset: 4 };
      const [cq, gq] = uploadBoth(cpu, gpuGles!, randomFloats(9 * 4 * 64, 1), 'f32');
      const [ck, gk] = uploadBoth(cpu, gpuGles!, randomFloats(13 * 2 * 64, 2), 'f32');
      const [cv, gv] = uploadBoth(cpu, gpuGles!, randomFloats(13 * 2 * 64, 3), 'f32');
      await expectStoragesClose(gpuGles!, gpuGles!.attention(gq, gk, gv, p).out, cpu, cpu.attention(cq, ck, cv, p).out,
        { rtol: 1e-3, scaledAtol: 1e-4 }, 'attention');
      const [cx, gx] = uploadBoth(cpu, gpuGles!, randomFloats(3 * 500, 4, 5), 'f32');
      await expectStoragesClose(gpuGles!, gpuGles!.softmax(gx, 3, 500, false), cpu, cpu.softmax(cx, 3, 500, false),
        { rtol: 1e-4, atol: 1e-7 }, 'softmax');
      const view = { shape: [25, 60], strides: [1, 25], offset: 0 };
      expect(Array.from(await gpuGles!.readRaw(gpuGles!.copy({ storage: gx, ...view }, 'bf16'))))
        .toEqual(Array.from(await cpu.readRaw(cpu.copy({ storage: cx, ...view }, 'bf16'))));
    });
  });

  // ---- failure modes ----------------------------------------------------------------------------

  it('after device loss every call throws a clear error instead of hanging', async () => {
    const lost = await probeForTests('webgpu-kernels');
    const backend = lost.backend!;
    const x = backend.upload(new Float32Array(4), 'f32');
    backend.destroy();
    expect(() => backend.unary('exp', contiguous(x), 0)).toThrow(/WebGPU device lost/);
    await expect(backend.read(contiguous(x))).rejects.toThrow(/WebGPU device lost/);
    await expect(backend.sync()).rejects.toThrow(/WebGPU device lost/);
  });

  it('refuses a storage of more elements than u32 indexes, naming the bytes', () => {
    expect(() => gpu.full(2 ** 32, 0, 'f32')).toThrow(/17179869184 bytes/);
  });
});
