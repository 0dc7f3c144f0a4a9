// The CPU matmul (wasm SIMD kernel, worker threads, scalar fallback) against a naive triple loop, over
// transposes, batch broadcast, offsets, edge sizes, long K, f16/bf16 weights and 1 or 2 threads, for both
// micro-kernels (mul+add, and relaxed SIMD's fma: skipped with the reason on a runtime without relaxed SIMD,
// unless RANK1_REQUIRE_RELAXED_SIMD=1, as in CI, where that is a failure) and both micro-tiles (4x8, 6x8);
// resident half-precision b operands (reuse, eviction, identity, in-place updates).
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MatmulParams } from '../src/kernels/backend.ts';
import {
  forgetResidentOperand, matmulDescription, matmulInto, matmulPoolStats, residentStats, shutdownMatmulWorkers,
} from '../src/kernels/cpu/matmul.ts';
import { matmulScalarInto } from '../src/kernels/cpu/matmul-scalar.ts';
import { preferredTileRows, relaxedSimdSupported } from '../src/kernels/cpu/matmul-wasm.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/kernels/dtype.ts';
import { Random } from '../src/tensor/random.ts';

type BDtype = 'f32' | 'f16' | 'bf16';
type MatmulFn = typeof matmulInto;

/** Data comes from a seed so fast-check shrinks sizes and flags, not arrays of floats. */
function seededUniform(seed: number): () => number {
  const rng = new Random(seed);
  return () => rng.range(-1, 1);
}

interface Case {
  p: MatmulParams;
  dtype: BDtype;
  aOffset: number;
  bOffset: number;
  seed: number;
}

interface Operands {
  a: Float32Array;
  /** What the kernel gets: f32 values or f16/bf16 bits. */
  b: Float32Array | Uint16Array;
  /** The value b[index] stands for (what the reference multiplies). */
  bValue: (index: number) => number;
}

function makeOperands({ p, dtype, aOffset, bOffset, seed }: Case): Operands {
  const random = seededUniform(seed);
  const a = new Float32Array(aOffset + (p.batch - 1) * p.aBatchStride + p.m * p.k);
  for (let i = 0; i < a.length; i++) a[i] = random();
  const bLength = bOffset + (p.batch - 1) * p.bBatchStride + p.k * p.n;
  if (dtype === 'f32') {
    const b = new Float32Array(bLength);
    for (let i = 0; i < bLength; i++) b[i] = random();
    return { a, b, bValue: (index) => b[index]! };
  }
  const narrow = dtype === 'bf16' ? f32ToBf16 : f32ToF16;
  const widen = dtype === 'bf16' ? bf16ToF32 : f16ToF32;
  const b = new Uint16Array(bLength);
  // A weight the size of an lm_head repeats a random prefix (of a length no row length divides).
  const fresh = Math.min(bLength, 1_000_003);
  for (let i = 0; i < fresh; i++) b[i] = narrow(random());
  for (let i = fresh; i < bLength; i += fresh) b.copyWithin(i, 0, Math.min(fresh, bLength - i));
  return { a, b, bValue: (index) => widen(b[index]!) };
}

/**
 * Naive triple loop in f64 over the elements `rows` x `cols` of every batch (default: all). Rows of op(a)
 * and columns of op(b) are gathered first so the innermost loop is a plain dot product.
 */
function reference(
  { p, aOffset, bOffset }: Case, { a, bValue }: Operands,
  rows: readonly number[] = range(p.m), cols: readonly number[] = range(p.n),
): Map<number, number> {
  const { m, n, k, transA, transB, aBatchStride, bBatchStride } = p;
  const out = new Map<number, number>();
  const column = new Float64Array(k);
  for (let bi = 0; bi < p.batch; bi++) {
    const aRows = rows.map((i) => Float64Array.from({ length: k }, (_, q) =>
      a[aOffset + bi * aBatchStride + (transA ? q * m + i : i * k + q)]!));
    for (const j of cols) {
      for (let q = 0; q < k; q++) column[q] = bValue(bOffset + bi * bBatchStride + (transB ? j * k + q : q * n + j));
      rows.forEach((i, r) => {
        const aRow = aRows[r]!;
        let sum = 0;
        for (let q = 0; q < k; q++) sum += aRow[q]! * column[q]!;
        out.set((bi * m + i) * n + j, sum);
      });
    }
  }
  return out;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Operands lie in [-1, 1], so every product does too: error relative to that scale, grown by sqrt(K). */
function expectClose(c: Case, out: Float32Array, expected: Map<number, number>): void {
  const tolerance = 1e-4 * Math.sqrt(c.p.k) + 1e-6;
  for (const [index, value] of expected) {
    const error = Math.abs(out[index]! - value);
    if (!(error <= tolerance)) {
      throw new Error(`${JSON.stringify(c)}: out[${index}] = ${out[index]}, expected ${value} (error ${error})`);
    }
  }
}

function check(c: Case, matmul: MatmulFn = matmulInto, rows: readonly number[] = range(c.p.m)): void {
  const operands = makeOperands(c);
  const out = new Float32Array(c.p.batch * c.p.m * c.p.n).fill(Number.NaN);
  matmul(operands.a, c.aOffset, operands.b, c.dtype, c.bOffset, out, c.p);
  expectClose(c, out, reference(c, operands, rows));
}

function params(
  batch: number, m: number, n: number, k: number, transA: boolean, transB: boolean,
  broadcastA = false, broadcastB = false,
): MatmulParams {
  return { batch, m, n, k, transA, transB, aBatchStride: broadcastA ? 0 : m * k, bBatchStride: broadcastB ? 0 : k * n };
}

const caseArb = (maxDim: number, maxBatch: number) =>
  fc.record({
    batch: fc.integer({ min: 1, max: maxBatch }),
    m: fc.integer({ min: 1, max: maxDim }),
    n: fc.integer({ min: 1, max: maxDim }),
    k: fc.integer({ min: 1, max: maxDim }),
    transA: fc.boolean(),
    transB: fc.boolean(),
    broadcastA: fc.boolean(),
    broadcastB: fc.boolean(),
    dtype: fc.constantFrom<BDtype>('f32', 'f16', 'bf16'),
    aOffset: fc.integer({ min: 0, max: 9 }),
    bOffset: fc.integer({ min: 0, max: 9 }),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  }).map(({ batch, m, n, k, transA, transB, broadcastA, broadcastB, ...rest }): Case => ({
    ...rest, p: params(batch, m, n, k, transA, transB, broadcastA, broadcastB),
  }));

const transposes = [[false, false], [false, true], [true, false], [true, true]] as const;

const relaxedSimd = relaxedSimdSupported();
const relaxedRequired = process.env['RANK1_REQUIRE_RELAXED_SIMD'] === '1';
const noRelaxedSimd = relaxedSimd ? '' : `Node ${process.versions.node} has no WebAssembly relaxed SIMD`;
if (noRelaxedSimd && !relaxedRequired) console.warn(`[cpu-matmul] skipping the relaxed-SIMD kernel: ${noRelaxedSimd}`);

describe.runIf(relaxedRequired && noRelaxedSimd)('relaxed SIMD is required (RANK1_REQUIRE_RELAXED_SIMD=1)', () => {
  it('has relaxed SIMD', () => {
    expect.fail(noRelaxedSimd);
  });
});

/** Restores (or deletes) an environment variable to what `saved` held. */
function restoreEnv(name: string, saved: string | undefined): void {
  if (saved === undefined) delete process.env[name];
  else process.env[name] = saved;
}

/** In a describe block: after its tests, stop the engine and give these variables back their values. */
function restoreEnvAfterAll(...names: string[]): void {
  const saved = names.map((name) => process.env[name]);
  afterAll(() => {
    shutdownMatmulWorkers();
    names.forEach((name, i) => restoreEnv(name, saved[i]));
  });
}

/** The two micro-kernels, forced through RANK1_WASM_RELAXED_SIMD (read when the engine starts). */
const kernels = [
  { kernel: 'mul+add', env: '0', skipped: '' },
  { kernel: 'relaxed fma', env: '1', skipped: noRelaxedSimd },
];
/** The two micro-tiles, forced through RANK1_MATMUL_TILE (read when the engine starts). */
const tiles = ['4x8', '6x8'] as const;

for (const { kernel, env: forced, skipped } of kernels) for (const tile of tiles) {
  describe.skipIf(!!skipped)(`the ${kernel} kernel, ${tile} tile${skipped ? ` (skipped: ${skipped})` : ''}`, () => {
    const savedKernel = process.env.RANK1_WASM_RELAXED_SIMD;
    const savedTile = process.env.RANK1_MATMUL_TILE;
    beforeAll(() => {
      shutdownMatmulWorkers(); // the engine reads the kernel and tile choice when it starts
      process.env.RANK1_WASM_RELAXED_SIMD = forced;
      process.env.RANK1_MATMUL_TILE = tile;
    });
    afterAll(() => {
      shutdownMatmulWorkers();
      restoreEnv('RANK1_WASM_RELAXED_SIMD', savedKernel);
      restoreEnv('RANK1_MATMUL_TILE', savedTile);
    });

    describe.each([1, 2])('matmulInto with %i thread(s)', (threads) => {
      const saved = process.env.RANK1_CPU_THREADS;
      beforeAll(() => {
        shutdownMatmulWorkers(); // the pool reads the thread count when it starts
        process.env.RANK1_CPU_THREADS = String(threads);
      });
      afterAll(() => {
        shutdownMatmulWorkers();
        if (saved === undefined) delete process.env.RANK1_CPU_THREADS;
        else process.env.RANK1_CPU_THREADS = saved;
      });

      it('describes itself', () => {
        check({ p: params(1, 64, 64, 64, false, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 1 });
        expect(matmulDescription()).toContain(`${tile} matmul (${kernel}), ${threads} thread`);
      });

      it('handles row counts around the tile and the packed row block, packed from rows and from columns', () => {
        // M one either side of 1, 2 and 3 tiles and of the row block (256 rows of A; 252 for the 6-row tile);
        // K with every remainder mod 4 (the packers go 4 K at a time).
        const ms = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 17, 18, 19, 251, 252, 253, 255, 256, 257];
        for (const [i, m] of ms.entries()) {
          for (const transA of [false, true]) {
            const k = 9 + (i % 4);
            check({ p: params(1, m, 21, k, transA, i % 2 === 0), dtype: 'f32', aOffset: i % 3, bOffset: 1, seed: 40 + i });
          }
        }
        // Full-depth K panels (768 = 2 x 384) under a whole row block: the packed block must fit its buffer.
        for (const transA of [false, true]) {
          const c: Case = { p: params(1, 257, 24, 768, transA, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 60 };
          check(c, matmulInto, [0, 1, 250, 251, 252, 253, 255, 256]);
        }
      });

      it('matches the triple loop on random sizes 1..70, transposes, broadcast batches, offsets and dtypes', () => {
        fc.assert(fc.property(caseArb(70, 3), (c) => check(c)), { numRuns: 120 });
      });

      it('handles m = 1 (the GEMV path), n = 1 and k = 1 with every transpose and dtype', () => {
        for (const [transA, transB] of transposes) {
          for (const dtype of ['f32', 'f16', 'bf16'] as const) {
            for (const [m, n, k] of [[1, 300, 200], [1, 301, 203], [300, 1, 200], [200, 300, 1], [1, 1, 500]] as const) {
              check({ p: params(2, m, n, k, transA, transB), dtype, aOffset: 3, bOffset: 5, seed: m + n + k });
            }
          }
        }
      });

      it('runs the GEMV (m = 1, transB, f32/bf16) on n and k around its 10-row strided passes and 8-element steps', () => {
        // Batches lift tiny products past the scalar cutoff (2048 multiply-adds), so the wasm GEMV runs them.
        // n < 10 runs one-row passes only; 10 <= n < 20 one strided pass (stride 1) and the rest; 20 and up
        // strided passes whose rows j + r s interleave, then the n % 10 rows after them.
        const ns = [1, 3, 9, 10, 11, 17, 19, 20, 21, 29, 31, 47];
        const ks = [1, 3, 7, 8, 9, 15, 17, 31, 33, 896];
        for (const dtype of ['f32', 'bf16'] as const) {
          for (const [i, n] of ns.entries()) {
            for (const [q, k] of ks.entries()) {
              const batch = Math.ceil(2049 / (n * k));
              const p = params(batch, 1, n, k, (i + q) % 2 === 0, true, false, batch > 2);
              check({ p, dtype, aOffset: q % 3, bOffset: i % 3, seed: 100 * i + q });
            }
          }
        }
      });

      it('handles sizes that are no multiple of any tile (257 x 129 x 1000)', () => {
        check({ p: params(1, 257, 129, 1000, false, false), dtype: 'f32', aOffset: 1, bOffset: 2, seed: 7 });
        check({ p: params(1, 257, 129, 1000, true, true), dtype: 'f32', aOffset: 1, bOffset: 2, seed: 7 });
        check({ p: params(1, 257, 129, 1000, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 8 });
        check({ p: params(1, 257, 129, 1000, true, false), dtype: 'f16', aOffset: 0, bOffset: 0, seed: 9 });
      });

      it('accumulates long K (4096) across K panels', () => {
        check({ p: params(1, 37, 45, 4096, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 10 });
        check({ p: params(1, 37, 45, 4096, true, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 11 });
      });

      it('spans several row blocks, N panels and K panels (520 x 2100 x 270)', () => {
        // Every column, and rows either side of each 256-row (or 252-row) block and 128-row task boundary.
        const rows = [
          0, 1, 126, 127, 128, 129, 251, 252, 253, 255, 256, 257, 258, 259, 260, 383, 384, 385, 503, 504, 505, 511, 512,
          518, 519,
        ];
        check({ p: params(1, 520, 2100, 270, false, true), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 12 }, matmulInto, rows);
      });

      it('splits matrices into task grids for every transpose and dtype (520 x 20 x 300, batch 3)', () => {
        for (const [transA, transB] of transposes) {
          for (const dtype of ['f32', 'f16', 'bf16'] as const) {
            check({ p: params(3, 520, 20, 300, transA, transB, transA, false), dtype, aOffset: 3, bOffset: 1, seed: 21 });
          }
        }
      });

      it('hands whole matrices of a batch to the threads', () => {
        check({ p: params(4, 100, 90, 110, false, true), dtype: 'bf16', aOffset: 2, bOffset: 3, seed: 22 });
        check({ p: params(18, 40, 50, 60, true, false, false, true), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 23 });
      });

      it('broadcasts one matrix over many batches', () => {
        check({ p: params(7, 30, 20, 50, false, true, true, false), dtype: 'f32', aOffset: 4, bOffset: 0, seed: 13 });
        check({ p: params(7, 30, 20, 50, true, false, false, true), dtype: 'bf16', aOffset: 0, bOffset: 4, seed: 14 });
      });

      it('gives bit-identical results whatever the thread count', () => {
        // A batch split into row tasks, one matrix split into a grid, and GEMVs split into one block of rows
        // per thread (2 001 x 600: 1 008 + 993 rows; 4 864 x 896, decode's gate: 2 x 2 432).
        for (const p of [
          params(3, 131, 97, 300, false, true), params(1, 700, 300, 200, false, true),
          params(1, 1, 2001, 600, false, true), params(1, 1, 4864, 896, false, true),
        ]) {
          const c: Case = { p, dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 15 };
          const operands = makeOperands(c);
          const { a, b } = operands;
          const out = new Float32Array(p.batch * p.m * p.n);
          matmulInto(a, 0, b, 'bf16', 0, out, p);
          shutdownMatmulWorkers();
          process.env.RANK1_CPU_THREADS = '1';
          const single = new Float32Array(out.length);
          matmulInto(a, 0, b, 'bf16', 0, single, p);
          shutdownMatmulWorkers();
          process.env.RANK1_CPU_THREADS = String(threads);
          expect(Buffer.compare(Buffer.from(out.buffer), Buffer.from(single.buffer))).toBe(0);
          if (p.m === 1) expectClose(c, out, reference(c, operands));
        }
      });

      it('tiles over M and N when a problem exceeds the memory budget', () => {
        const savedBudget = process.env.RANK1_MATMUL_MEMORY_MB;
        const savedResident = process.env.RANK1_MATMUL_RESIDENT_MB;
        shutdownMatmulWorkers();
        process.env.RANK1_MATMUL_MEMORY_MB = '1';
        process.env.RANK1_MATMUL_RESIDENT_MB = '0'; // a resident b would skip the tiling under test
        try {
          for (const [transA, transB] of transposes) {
            check({ p: params(1, 110, 300, 600, transA, transB), dtype: 'bf16', aOffset: 1, bOffset: 1, seed: 16 });
          }
          check({ p: params(3, 20, 300, 500, false, false, true, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 17 });
        } finally {
          shutdownMatmulWorkers();
          if (savedBudget === undefined) delete process.env.RANK1_MATMUL_MEMORY_MB;
          else process.env.RANK1_MATMUL_MEMORY_MB = savedBudget;
          if (savedResident === undefined) delete process.env.RANK1_MATMUL_RESIDENT_MB;
          else process.env.RANK1_MATMUL_RESIDENT_MB = savedResident;
        }
      });
    });
  });
}

describe('choosing the kernel (RANK1_WASM_RELAXED_SIMD)', () => {
  const saved = process.env.RANK1_WASM_RELAXED_SIMD;
  afterAll(() => {
    shutdownMatmulWorkers();
    restoreEnv('RANK1_WASM_RELAXED_SIMD', saved);
  });

  /** out = a b for one f32 [64, 1000] x [1000, 96] problem with the kernel `forced` picks. */
  function runWith(forced: string, c: Case, operands: Operands): Float32Array {
    shutdownMatmulWorkers();
    process.env.RANK1_WASM_RELAXED_SIMD = forced;
    const out = new Float32Array(c.p.m * c.p.n);
    matmulInto(operands.a, 0, operands.b, 'f32', 0, out, c.p);
    return out;
  }

  it('rejects anything but 0 or 1', () => {
    shutdownMatmulWorkers();
    process.env.RANK1_WASM_RELAXED_SIMD = 'yes';
    expect(() => matmulDescription()).toThrow(/RANK1_WASM_RELAXED_SIMD must be 0 \(mul\+add\) or 1/);
  });

  it.runIf(!relaxedSimd)('says clearly that 1 needs a runtime with relaxed SIMD', () => {
    shutdownMatmulWorkers();
    process.env.RANK1_WASM_RELAXED_SIMD = '1';
    expect(() => matmulDescription()).toThrow(/RANK1_WASM_RELAXED_SIMD=1, but Node .* has no WebAssembly relaxed SIMD/);
  });

  it.runIf(relaxedSimd)('gives results that differ in the last bits between the kernels, both within tolerance', () => {
    // relaxed_madd fuses on x86-64 with FMA3 and on arm64 (one rounding per step against mul+add's two).
    const c: Case = { p: params(1, 64, 96, 1000, false, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 70 };
    const operands = makeOperands(c);
    const expected = reference(c, operands);
    const mulAdd = runWith('0', c, operands);
    const fused = runWith('1', c, operands);
    expectClose(c, mulAdd, expected);
    expectClose(c, fused, expected);
    const differing = mulAdd.filter((value, i) => value !== fused[i]).length;
    expect(differing).toBeGreaterThan(0);
    expect(runWith('', c, operands)).toEqual(fused); // unset: relaxed where the runtime has it
  });
});

describe('the numeric environment variables (read when the engine starts)', () => {
  const cases = [
    { name: 'RANK1_CPU_THREADS', bad: ['0', '1.5', 'many'], says: 'a positive integer' },
    { name: 'RANK1_CPU_SPIN_US', bad: ['-1', 'fast', '2e6'], says: 'microseconds in \\[0, 1000000\\] \\(how long' },
    { name: 'RANK1_MATMUL_MEMORY_MB', bad: ['0', '2000', 'lots'], says: 'a number of megabytes in \\[1, 1536\\]' },
    { name: 'RANK1_MATMUL_RESIDENT_MB', bad: ['-1', 'Infinity', 'all'], says: 'a non-negative number of megabytes' },
    { name: 'RANK1_TEST_MATMUL_WORKER_DELAY_MS', bad: ['-5', '70000', 'soon'], says: 'milliseconds in \\[0, 60000\\]' },
  ];
  restoreEnvAfterAll(...cases.map(({ name }) => name));

  it.each(cases)('rejects a bad $name by name, and only when the engine starts', ({ name, bad, says }) => {
    const c: Case = { p: params(1, 300, 300, 300, false, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 80 };
    const { a, b } = makeOperands(c);
    for (const value of bad) {
      shutdownMatmulWorkers();
      process.env[name] = value;
      if (name !== 'RANK1_CPU_THREADS') expect(() => matmulDescription()).not.toThrow();
      expect(() => matmulInto(a, 0, b, 'f32', 0, new Float32Array(300 * 300), c.p)).toThrow(new RegExp(`${name} must be ${says}.*got "${value}"`));
    }
    delete process.env[name];
  });
});

describe('idle matmul threads poll, then sleep (RANK1_CPU_SPIN_US)', () => {
  restoreEnvAfterAll('RANK1_CPU_SPIN_US', 'RANK1_CPU_THREADS');

  /** CPU milliseconds the whole process uses over 300 ms of idling, 100 ms after its last matmul. */
  async function idleCpuMs(): Promise<number> {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const before = process.cpuUsage();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const used = process.cpuUsage(before);
    return (used.user + used.system) / 1000;
  }

  it('polls only after GEMVs: after a GEMM the worker sleeps at once', async () => {
    shutdownMatmulWorkers();
    process.env.RANK1_CPU_THREADS = '2';
    process.env.RANK1_CPU_SPIN_US = '1000000'; // a GEMM that polled would keep the worker busy for 1 s
    const c: Case = { p: params(1, 300, 300, 300, false, false), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 82 };
    const operands = makeOperands(c);
    const out = new Float32Array(300 * 300);
    matmulInto(operands.a, 0, operands.b, 'f32', 0, out, c.p);
    expect(matmulDescription()).toMatch(/2 threads/);
    expect(await idleCpuMs()).toBeLessThan(150);
  });

  it('gives the same bits whether threads poll or sleep at once, and a polling worker goes to sleep', async () => {
    const c: Case = { p: params(1, 1, 3000, 700, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 81 };
    const operands = makeOperands(c);
    const { a, b } = operands;
    const run = (spin: string) => {
      shutdownMatmulWorkers();
      process.env.RANK1_CPU_THREADS = '2';
      process.env.RANK1_CPU_SPIN_US = spin;
      const out = new Float32Array(3000);
      for (let i = 0; i < 3; i++) matmulInto(a, 0, b, 'bf16', 0, out, c.p);
      return out;
    };
    const asleep = run('0');
    const polling = run('20000'); // 20 ms of polling after each job, then the worker must sleep
    expect(polling).toEqual(asleep);
    expectClose(c, polling, reference(c, operands));
    // Idle for 300 ms after the polling window: a worker that never slept would burn ~300 ms of CPU.
    expect(await idleCpuMs()).toBeLessThan(150);
  });
});

describe('the main thread never waits for a worker that has not joined', () => {
  restoreEnvAfterAll('RANK1_TEST_MATMUL_WORKER_DELAY_MS', 'RANK1_CPU_THREADS');

  /** GEMVs and GEMMs big enough for two threads, each with its operands. */
  const jobs = [
    { p: params(1, 1, 3000, 700, false, true), dtype: 'bf16' as const },
    { p: params(1, 300, 300, 300, false, false), dtype: 'f32' as const },
    { p: params(1, 1, 1500, 900, false, true), dtype: 'f32' as const },
    { p: params(2, 130, 70, 400, true, true), dtype: 'bf16' as const },
  ].map((job, i) => {
    const c: Case = { ...job, aOffset: 0, bOffset: 0, seed: 90 + i };
    return { c, operands: makeOperands(c) };
  });

  /** Every job `rounds` times in turn with `threads` threads; the outputs of the last round. */
  function runAll(threads: string, rounds: number): Float32Array[] {
    shutdownMatmulWorkers();
    process.env.RANK1_CPU_THREADS = threads;
    let outs: Float32Array[] = [];
    for (let r = 0; r < rounds; r++) {
      outs = jobs.map(({ c, operands }) => {
        const out = new Float32Array(c.p.batch * c.p.m * c.p.n);
        matmulInto(operands.a, 0, operands.b, c.dtype, 0, out, c.p);
        return out;
      });
    }
    return outs;
  }

  it('runs every task itself when the worker comes late, with the same bits', () => {
    delete process.env.RANK1_TEST_MATMUL_WORKER_DELAY_MS;
    const single = runAll('1', 1);
    process.env.RANK1_TEST_MATMUL_WORKER_DELAY_MS = '300'; // the worker sleeps 300 ms before it joins a job
    const late = runAll('2', 2);
    expect(matmulDescription()).toMatch(/2 threads/);
    // Waiting for the worker would make each job take 300 ms; none did: the main thread ran them all alone.
    expect(matmulPoolStats()).toEqual({ jobs: 8, finishedAlone: 8 });
    late.forEach((out, i) => expect(Buffer.compare(Buffer.from(out.buffer), Buffer.from(single[i]!.buffer))).toBe(0));
  });

  it('gives the same bits over many jobs in a row with a worker that joins when it can', () => {
    delete process.env.RANK1_TEST_MATMUL_WORKER_DELAY_MS;
    const single = runAll('1', 1);
    const shared = runAll('2', 50);
    expect(matmulPoolStats().jobs).toBe(200);
    shared.forEach((out, i) => expect(Buffer.compare(Buffer.from(out.buffer), Buffer.from(single[i]!.buffer))).toBe(0));
  });
});

describe('choosing the micro-tile (RANK1_MATMUL_TILE)', () => {
  const savedTile = process.env.RANK1_MATMUL_TILE;
  const savedKernel = process.env.RANK1_WASM_RELAXED_SIMD;
  afterAll(() => {
    shutdownMatmulWorkers();
    restoreEnv('RANK1_MATMUL_TILE', savedTile);
    restoreEnv('RANK1_WASM_RELAXED_SIMD', savedKernel);
  });

  /** out = op(a) op(b) with the tile `tile` forces ('' = the runtime's choice). */
  function runWith(tile: string, c: Case, operands: Operands): Float32Array {
    shutdownMatmulWorkers();
    process.env.RANK1_MATMUL_TILE = tile;
    const out = new Float32Array(c.p.batch * c.p.m * c.p.n);
    matmulInto(operands.a, 0, operands.b, c.dtype, 0, out, c.p);
    return out;
  }

  it('rejects anything but 4x8 or 6x8', () => {
    shutdownMatmulWorkers();
    process.env.RANK1_MATMUL_TILE = '8x8';
    expect(() => matmulDescription()).toThrow(/RANK1_MATMUL_TILE must be 4x8 or 6x8 .*got "8x8"/);
  });

  it('takes 6x8 only for the fused kernel on V8 13 or later (Turboshaft keeps the kernel order)', () => {
    expect(preferredTileRows(false)).toBe(4);
    const v8Major = Number.parseInt(process.versions.v8, 10);
    expect(preferredTileRows(true)).toBe(v8Major >= 13 ? 6 : 4);
  });

  for (const { kernel, env: forced, skipped } of kernels) {
    it.skipIf(!!skipped)(`gives the same bits with either tile (${kernel}; each element sums K in the same order)`, () => {
      process.env.RANK1_WASM_RELAXED_SIMD = forced;
      for (const [transA, transB] of transposes) {
        const c: Case = { p: params(2, 77, 45, 530, transA, transB), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 71 };
        const operands = makeOperands(c);
        const four = runWith('4x8', c, operands);
        const six = runWith('6x8', c, operands);
        expectClose(c, six, reference(c, operands));
        expect(Buffer.compare(Buffer.from(four.buffer), Buffer.from(six.buffer))).toBe(0);
        expect(runWith('', c, operands)).toEqual(preferredTileRows(forced === '1') === 6 ? six : four);
      }
    });
  }
});

describe('matmulInto on Qwen tied lm_head shapes', () => {
  afterAll(() => shutdownMatmulWorkers());

  it('multiplies by a [151936, 896] bf16 weight (transB) within the memory budget', () => {
    const c: Case = { p: params(1, 3, 151936, 896, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 18 };
    const operands = makeOperands(c);
    const out = new Float32Array(3 * 151936).fill(Number.NaN);
    matmulInto(operands.a, 0, operands.b, 'bf16', 0, out, c.p);
    const random = seededUniform(19);
    const columns = Array.from({ length: 300 }, () => Math.floor(((random() + 1) / 2) * 151936));
    expectClose(c, out, reference(c, operands, range(3), [0, 151935, ...columns]));
  });
});

describe('resident half-precision b operands', () => {
  const savedResident = process.env.RANK1_MATMUL_RESIDENT_MB;
  afterAll(() => {
    shutdownMatmulWorkers();
    if (savedResident === undefined) delete process.env.RANK1_MATMUL_RESIDENT_MB;
    else process.env.RANK1_MATMUL_RESIDENT_MB = savedResident;
  });

  /** Runs a matmul into a fresh output. */
  function run(a: Float32Array, b: Float32Array | Uint16Array, dtype: BDtype, bOffset: number, p: MatmulParams): Float32Array {
    const out = new Float32Array(p.batch * p.m * p.n).fill(Number.NaN);
    matmulInto(a, 0, b, dtype, bOffset, out, p);
    return out;
  }

  function bitEqual(x: Float32Array, y: Float32Array): boolean {
    return Buffer.compare(Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(y.buffer, y.byteOffset, y.byteLength)) === 0;
  }

  it('reuses a bf16/f16 b across calls with results identical to a fresh computation', () => {
    shutdownMatmulWorkers();
    delete process.env.RANK1_MATMUL_RESIDENT_MB;
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const [m, transB] of [[1, true], [1, false], [5, true], [40, false]] as const) {
        const c: Case = { p: params(1, m, 300, 200, false, transB), dtype, aOffset: 0, bOffset: 3, seed: 30 + m };
        const operands = makeOperands(c);
        const first = run(operands.a, operands.b, dtype, 3, c.p);
        expectClose(c, first, reference(c, operands));
        const hits = residentStats().hits;
        // Again, and with a different a: the cached b must give exactly what a fresh copy of b gives.
        const again = run(operands.a, operands.b, dtype, 3, c.p);
        expect(residentStats().hits).toBe(hits + 1);
        expect(bitEqual(again, first)).toBe(true);
        const other = makeOperands({ ...c, seed: c.seed + 100 });
        const second = run(other.a, operands.b, dtype, 3, c.p);
        expect(bitEqual(second, run(other.a, operands.b.slice(), dtype, 3, c.p))).toBe(true);
        expectClose(c, second, reference(c, { ...operands, a: other.a }));
      }
    }
    expect(residentStats().operands).toBeGreaterThan(0);
  });

  it('keeps operands of one array at different offsets apart', () => {
    const p = params(1, 1, 64, 64, false, true);
    const c0: Case = { p, dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 40 };
    const operands = makeOperands({ ...c0, p: { ...p, k: 128 } }); // b holds two [64, 64] matrices
    for (const bOffset of [0, 4096, 0, 4096]) {
      const c = { ...c0, bOffset };
      expectClose(c, run(operands.a, operands.b, 'bf16', bOffset, p), reference(c, operands));
    }
  });

  it('does not confuse a different array of the same length, with the same or other contents', () => {
    const c: Case = { p: params(1, 1, 256, 128, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 41 };
    const operands = makeOperands(c);
    const first = run(operands.a, operands.b, 'bf16', 0, c.p);
    const twin = operands.b.slice() as Uint16Array;
    expect(bitEqual(run(operands.a, twin, 'bf16', 0, c.p), first)).toBe(true);
    // Same length, other contents: must not be served the first array's bits.
    const changed = twin.map((bits) => bits ^ 0x8000); // negated
    const negated = run(operands.a, changed, 'bf16', 0, c.p);
    for (let i = 0; i < first.length; i++) expect(negated[i]).toBe(-first[i]!);
  });

  it('never keeps f32 operands: an f32 b updated in place (as AdamW does) is seen at once', () => {
    const c: Case = { p: params(1, 1, 256, 128, false, true), dtype: 'f32', aOffset: 0, bOffset: 0, seed: 42 };
    const operands = makeOperands(c);
    const b = operands.b as Float32Array;
    run(operands.a, b, 'f32', 0, c.p);
    for (let i = 0; i < b.length; i++) b[i] = b[i]! * 0.5 - 0.25;
    expectClose(c, run(operands.a, b, 'f32', 0, c.p), reference(c, operands));
  });

  it('rereads a half-precision b rewritten in place after forgetResidentOperand', () => {
    const c: Case = { p: params(1, 1, 256, 128, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 43 };
    const operands = makeOperands(c);
    const b = operands.b as Uint16Array;
    run(operands.a, b, 'bf16', 0, c.p);
    forgetResidentOperand(b);
    for (let i = 0; i < b.length; i++) b[i] = f32ToBf16(bf16ToF32(b[i]!) * -0.5);
    expectClose(c, run(operands.a, b, 'bf16', 0, c.p), reference(c, operands));
  });

  it('evicts least recently used operands under a small budget and stays right', () => {
    shutdownMatmulWorkers();
    process.env.RANK1_MATMUL_RESIDENT_MB = '1';
    try {
      // Six 256 KiB weights through a 1 MiB region (three fit with padding), in an order that hits and evicts.
      const p = params(1, 1, 512, 256, false, true);
      const cases = Array.from({ length: 6 }, (_, i): Case => ({ p, dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 50 + i }));
      const operands = cases.map((c) => makeOperands(c));
      const expected = cases.map((c, i) => reference(c, operands[i]!));
      for (const i of [0, 1, 2, 0, 3, 4, 0, 5, 1, 2, 3, 0, 5, 4]) {
        expectClose(cases[i]!, run(operands[0]!.a, operands[i]!.b, 'bf16', 0, p), reference(cases[i]!, { ...operands[i]!, a: operands[0]!.a }));
      }
      for (let i = 0; i < 6; i++) expectClose(cases[i]!, run(operands[i]!.a, operands[i]!.b, 'bf16', 0, p), expected[i]!);
      const stats = residentStats();
      expect(stats.capacity).toBe(2 ** 20);
      expect(stats.evictions).toBeGreaterThan(0);
      expect(stats.hits).toBeGreaterThan(0);
      expect(stats.bytes).toBeLessThanOrEqual(stats.capacity);
      // A b bigger than the whole budget is copied per call as before.
      const big: Case = { p: params(1, 2, 2100, 300, false, true), dtype: 'bf16', aOffset: 0, bOffset: 0, seed: 60 };
      const bigOperands = makeOperands(big);
      expectClose(big, run(bigOperands.a, bigOperands.b, 'bf16', 0, big.p), reference(big, bigOperands));
      // Off entirely.
      shutdownMatmulWorkers();
      process.env.RANK1_MATMUL_RESIDENT_MB = '0';
      expectClose(cases[0]!, run(operands[0]!.a, operands[0]!.b, 'bf16', 0, p), expected[0]!);
      expect(residentStats().operands).toBe(0);
    } finally {
      shutdownMatmulWorkers();
      delete process.env.RANK1_MATMUL_RESIDENT_MB;
    }
  });
});

describe('matmulScalarInto (small problems, no-SIMD fallback)', () => {
  it('matches the triple loop', () => {
    fc.assert(fc.property(caseArb(40, 3), (c) => check(c, matmulScalarInto)), { numRuns: 100 });
    check({ p: params(1, 5, 130, 70, true, true), dtype: 'f16', aOffset: 2, bOffset: 3, seed: 20 }, matmulScalarInto);
  });
});

describe('matmulInto arguments', () => {
  it('treats k = 0 as a zero matrix and empty outputs as nothing to do', () => {
    const out = new Float32Array(6).fill(1);
    matmulInto(new Float32Array(0), 0, new Float32Array(0), 'f32', 0, out, params(1, 2, 3, 0, false, false));
    expect([...out]).toEqual([0, 0, 0, 0, 0, 0]);
    matmulInto(new Float32Array(0), 0, new Float32Array(0), 'f32', 0, out, params(1, 0, 3, 5, false, false));
  });

  it('rejects short inputs and a b of the wrong array type', () => {
    const p = params(1, 4, 4, 4, false, false);
    expect(() => matmulInto(new Float32Array(15), 0, new Float32Array(16), 'f32', 0, new Float32Array(16), p))
      .toThrow(/a is too short/);
    expect(() => matmulInto(new Float32Array(16), 0, new Float32Array(16), 'bf16', 0, new Float32Array(16), p))
      .toThrow(/Uint16Array/);
  });
});
