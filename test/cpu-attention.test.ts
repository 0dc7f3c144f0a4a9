// The blocked CPU attention (matmul + row softmax per query block) against the scalar reference it replaced:
// forward (out, lse) and backward (dq, dk, dv) on awkward shapes — GQA ratios 1, 2, 7, head dims 8..128,
// KV-cache offsets, masks that hide whole rows and blocks, custom and negative scales — with both
// implementations of its row passes (WebAssembly SIMD and TypeScript), and those row passes against Math.exp.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { AttentionParams, Storage } from '../src/kernels/backend.ts';
import {
  attention, attentionBackward, attentionBackwardReference, attentionReference,
} from '../src/kernels/cpu/attention.ts';
import { rowKernels, typescriptRowKernels, type RowKernels } from '../src/kernels/cpu/attention-rows.ts';
import { shutdownMatmulWorkers } from '../src/kernels/cpu/matmul.ts';
import { CpuStorage } from '../src/kernels/cpu/storage.ts';
import { Random } from '../src/tensor/random.ts';

/** Data comes from a seed so fast-check shrinks shapes and flags, not arrays of floats. */
function seededUniform(seed: number): () => number {
  const rng = new Random(seed);
  return () => rng.range(-1, 1);
}

function uniform(n: number, random: () => number): Storage {
  return new CpuStorage('f32', Float32Array.from({ length: n }, random));
}

function data(s: Storage): Float32Array {
  return (s as CpuStorage).data as Float32Array;
}

/**
 * Every element within `tolerance` of the reference, relative to the tensor's largest magnitude or to 0.01
 * when every element is smaller (f32 matmuls sum in another order than the f64 reference; an element near
 * zero, or a gradient that vanishes up to rounding, has only absolute accuracy). Infinite values (lse of a
 * fully masked row) must match exactly.
 */
function expectClose(name: string, actual: Float32Array, expected: Float32Array, tolerance = 2e-5): void {
  expect(actual.length, `${name} length`).toBe(expected.length);
  let largest = 0;
  for (const x of expected) if (Number.isFinite(x)) largest = Math.max(largest, Math.abs(x));
  const bound = tolerance * Math.max(largest, 1e-2);
  for (let i = 0; i < expected.length; i++) {
    const want = expected[i]!;
    const got = actual[i]!;
    const ok = Number.isFinite(want) ? Math.abs(got - want) <= bound : got === want;
    if (!ok) throw new Error(`${name}[${i}] = ${got}, reference ${want} (allowed error ${bound.toExponential(2)})`);
  }
}

interface Case {
  p: AttentionParams;
  seed: number;
}

/** The row kernels this runtime picks (wasm SIMD where it validates) and the TypeScript fallback. */
const ROW_KERNELS: RowKernels[] = [...new Set([rowKernels(), typescriptRowKernels])];

function check({ p, seed }: Case, tolerance?: number): void {
  const random = seededUniform(seed);
  const { batch, tq, tk, heads, kvHeads, headDim } = p;
  const q = uniform(batch * tq * heads * headDim, random);
  const k = uniform(batch * tk * kvHeads * headDim, random);
  const v = uniform(batch * tk * kvHeads * headDim, random);
  const dout = uniform(batch * tq * heads * headDim, random);

  const reference = attentionReference(q, k, v, p);
  // Both backwards from the same saved out and lse, so a difference is the backward's own.
  const expected = attentionBackwardReference(q, k, v, reference.out, reference.lse, dout, p);
  for (const kernels of ROW_KERNELS) {
    const fast = attention(q, k, v, p, kernels);
    expectClose(`out (${kernels.name})`, data(fast.out), data(reference.out), tolerance);
    expectClose(`lse (${kernels.name})`, data(fast.lse), data(reference.lse), tolerance);
    const grads = attentionBackward(q, k, v, reference.out, reference.lse, dout, p, kernels);
    expectClose(`dq (${kernels.name})`, data(grads.dq), data(expected.dq), tolerance);
    expectClose(`dk (${kernels.name})`, data(grads.dk), data(expected.dk), tolerance);
    expectClose(`dv (${kernels.name})`, data(grads.dv), data(expected.dv), tolerance);
  }
}

/** Shapes: B 1-2, T 1..70, S >= T, GQA ratios 1, 2, 7, head dims 8, 64, 128, causal or not, default or custom scale. */
const caseArb = fc.record({
  batch: fc.integer({ min: 1, max: 2 }),
  tq: fc.integer({ min: 1, max: 70 }),
  extraKeys: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 })),
  group: fc.constantFrom(1, 2, 7),
  kvHeads: fc.integer({ min: 1, max: 2 }),
  headDim: fc.constantFrom(8, 64, 128),
  causal: fc.boolean(),
  scale: fc.constantFrom<number | null>(null, 0.05, 0.5, -0.3),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
}).map(({ batch, tq, extraKeys, group, kvHeads, headDim, causal, scale, seed }): Case => ({
  p: {
    batch, tq, tk: tq + extraKeys, heads: group * kvHeads, kvHeads, headDim,
    scale: scale ?? headDim ** -0.5,
    causalOffset: causal ? extraKeys : Infinity, // what the ops layer passes: a KV cache of S - T earlier keys
  },
  seed,
}));

describe('blocked CPU attention', () => {
  afterAll(() => shutdownMatmulWorkers());

  it('matches the scalar reference on random shapes, forward and backward', () => {
    fc.assert(fc.property(caseArb, (c) => check(c)), { numRuns: 60 });
  });

  it('matches it across many query blocks (T = 300, 14 heads over 2 key/value heads, head dim 64)', () => {
    const p = { batch: 1, tq: 300, tk: 300, heads: 14, kvHeads: 2, headDim: 64, scale: 0.125, causalOffset: 0 };
    check({ p, seed: 1 });
  });

  it('decodes one token against a long cache, with and without a mask', () => {
    for (const causalOffset of [299, Infinity]) {
      check({ p: { batch: 2, tq: 1, tk: 300, heads: 14, kvHeads: 2, headDim: 64, scale: 0.125, causalOffset }, seed: 2 });
    }
  });

  it('handles offsets that hide whole rows and whole blocks (out 0, lse -Infinity, no gradient)', () => {
    for (const causalOffset of [-1, -5, -40, -80, 2.5]) {
      check({ p: { batch: 2, tq: 70, tk: 50, heads: 4, kvHeads: 2, headDim: 8, scale: 0.4, causalOffset }, seed: 3 });
    }
  });

  it('passes no gradient to q and k through a row that sees a single key', () => {
    const p = { batch: 1, tq: 1, tk: 1, heads: 2, kvHeads: 1, headDim: 64, scale: 0.125, causalOffset: 0 };
    const random = seededUniform(6);
    const [q, k, v, dout] = [uniform(128, random), uniform(64, random), uniform(64, random), uniform(128, random)];
    for (const kernels of ROW_KERNELS) {
      const { out, lse } = attention(q, k, v, p, kernels);
      const { dq, dk, dv } = attentionBackward(q, k, v, out, lse, dout, p, kernels);
      // The golden PyTorch test allows 1e-12 here: the gradient must vanish to rounding, not to f32 noise.
      expect(data(dq).every((x) => Math.abs(x) < 1e-12), kernels.name).toBe(true);
      expect(data(dk).every((x) => Math.abs(x) < 1e-12), kernels.name).toBe(true);
      expectClose('dv', data(dv), data(attentionBackwardReference(q, k, v, out, lse, dout, p).dv));
    }
  });

  it('keeps its accuracy when one score dominates a row (large scale) and when every exp underflows but one', () => {
    check({ p: { batch: 1, tq: 40, tk: 40, heads: 2, kvHeads: 1, headDim: 64, scale: 3, causalOffset: 0 }, seed: 4 });
    // Scores spread over hundreds: most exps underflow. The f32 dot products' rounding (about 1e-7 of
    // sum |q k|) is multiplied by the scale in every exponent, so this case gets a looser tolerance.
    check({ p: { batch: 1, tq: 40, tk: 60, heads: 7, kvHeads: 1, headDim: 128, scale: 40, causalOffset: Infinity }, seed: 5 }, 5e-4);
  });
});

describe.each(ROW_KERNELS.map((kernels) => [kernels.name, kernels] as const))('attention row kernels (%s)', (_, kernels) => {
  /** A row of n values at an odd offset (so quads are unaligned and a 1-3 element tail is left), with guards. */
  const rowArb = fc.record({
    n: fc.integer({ min: 0, max: 70 }),
    at: fc.integer({ min: 0, max: 5 }),
    spread: fc.constantFrom(1, 30, 300),
    scale: fc.constantFrom(1, 0.125, -0.7),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  });
  const GUARD = 7;

  function makeRows({ n, at, spread, seed }: { n: number; at: number; spread: number; seed: number }) {
    const random = seededUniform(seed);
    const x = kernels.workspace(at + 2 * n + GUARD);
    x.fill(Number.NaN);
    for (let i = 0; i < 2 * n; i++) x[at + i] = random() * spread;
    return x;
  }

  it('scaledMax and expShifted: exp(scale x - max) to f32 accuracy, underflow below 2e-38, nothing written past the row', () => {
    fc.assert(fc.property(rowArb, (c) => {
      const x = makeRows(c);
      const values = Array.from(x.subarray(c.at, c.at + c.n), (value) => value * c.scale);
      const neighbour = x[c.at + c.n];
      const max = kernels.scaledMax(x, c.at, c.n, c.scale);
      const expectedMax = values.length ? Math.max(...values) : -Infinity;
      if (values.length === 0) expect(max).toBe(-Infinity);
      else expect(Math.abs(max - expectedMax)).toBeLessThanOrEqual(1.2e-7 * Math.abs(expectedMax));
      const sum = kernels.expShifted(x, c.at, c.n, c.scale, max);
      let expectedSum = 0;
      values.forEach((value, i) => {
        const want = Math.exp(value - max);
        expectedSum += want;
        const got = x[c.at + i]!;
        // The kernels may round scale * x and the difference to f32: an error of ~1.2e-7 of each in the exponent.
        const tolerance = want * (1e-6 + 1.2e-7 * (Math.abs(value) + Math.abs(max)));
        if (want < 2e-38) expect(got, `exp at ${i}`).toBeLessThan(2e-38);
        else expect(Math.abs(got - want), `exp at ${i}: ${got} vs ${want}`).toBeLessThanOrEqual(tolerance);
      });
      expect(Math.abs(sum - expectedSum)).toBeLessThanOrEqual(expectedSum * (1e-6 + 2.4e-7 * c.spread));
      expect(x[c.at + c.n]).toBe(neighbour);
    }), { numRuns: 300 });
  });

  it('dot, softmaxGrad and addInto over unaligned rows with tails', () => {
    fc.assert(fc.property(rowArb, (c) => {
      const x = makeRows(c);
      const p = Array.from(x.subarray(c.at, c.at + c.n));
      const dp = Array.from(x.subarray(c.at + c.n, c.at + 2 * c.n));
      const dot = kernels.dot(x, c.at, c.at + c.n, c.n);
      const expectedDot = p.reduce((sum, value, i) => sum + value * dp[i]!, 0);
      expect(Math.abs(dot - expectedDot)).toBeLessThanOrEqual(1e-12 * c.spread * c.spread * (c.n + 1));

      kernels.softmaxGrad(x, c.at, c.at + c.n, c.n, 0.25, c.scale);
      const ds = p.map((value, i) => value * (dp[i]! - 0.25) * c.scale);
      ds.forEach((want, i) => {
        expect(Math.abs(x[c.at + i]! - want), `dS at ${i}`).toBeLessThanOrEqual(2.4e-7 * c.spread * c.spread);
        expect(x[c.at + c.n + i], `P at ${i}`).toBe(p[i]);
      });

      const before = Array.from(x.subarray(c.at, c.at + c.n));
      kernels.addInto(x, c.at, c.at + c.n, c.n);
      before.forEach((value, i) => expect(x[c.at + i], `sum at ${i}`).toBe(Math.fround(value + p[i]!)));
      expect(Number.isNaN(x[c.at + 2 * c.n]!)).toBe(true);
    }), { numRuns: 300 });
  });

  /**
   * One query against `rows` key rows of n floats, `stride` apart (a KV cache's rows hold every key/value
   * head), at an odd offset: n across the 16- and 32-float blocks, quads and tails of the wasm loops.
   */
  const productArb = fc.record({
    n: fc.integer({ min: 1, max: 80 }),
    rows: fc.integer({ min: 0, max: 12 }),
    extra: fc.integer({ min: 0, max: 9 }),
    at: fc.integer({ min: 0, max: 5 }),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  });

  /** |f32 sum − exact| ≤ (terms + 2)·2⁻²⁴·Σ|terms| whatever the order of summation. */
  const sumBound = (terms: number[]) => (terms.length + 2) * 2 ** -24 * terms.reduce((a, t) => a + Math.abs(t), 0) + 1e-30;

  it('rowDots and weightedRows (a decode step’s q·K and PᵀV) equal float64 for any length, row count and stride', () => {
    fc.assert(fc.property(productArb, ({ n, rows, extra, at, seed }) => {
      const random = seededUniform(seed);
      const stride = n + extra;
      // [q (n) | K rows (rows · stride) | scores (rows) | mix (n)] after `at`, NaN around and between.
      const [q, k, scores, mix] = [at, at + n, at + n + rows * stride, at + n + rows * stride + rows];
      const x = kernels.workspace(mix + n + GUARD);
      x.fill(Number.NaN);
      for (let i = 0; i < n; i++) x[q + i] = random();
      for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) x[k + r * stride + i] = random();
      const before = Float32Array.from(x);
      kernels.rowDots(x, q, k, stride, n, rows, scores);
      for (let r = 0; r < rows; r++) {
        const terms = Array.from({ length: n }, (_, i) => x[q + i]! * x[k + r * stride + i]!);
        const exact = terms.reduce((a, t) => a + t, 0);
        expect(Math.abs(x[scores + r]! - exact), `score ${r}`).toBeLessThanOrEqual(sumBound(terms));
      }
      for (let r = 0; r < rows; r++) x[scores + r] = random(); // weights of any sign
      kernels.weightedRows(x, scores, k, stride, n, rows, mix);
      for (let i = 0; i < n; i++) {
        const terms = Array.from({ length: rows }, (_, r) => x[scores + r]! * x[k + r * stride + i]!);
        const exact = terms.reduce((a, t) => a + t, 0);
        expect(Math.abs(x[mix + i]! - exact), `mix ${i}`).toBeLessThanOrEqual(sumBound(terms));
      }
      // Nothing else written: the inputs, the gaps between rows and the guards keep their bits.
      for (let i = 0; i < x.length; i++) {
        const written = (i >= scores && i < scores + rows) || (i >= mix && i < mix + n);
        if (!written) expect(Object.is(x[i], before[i]), `element ${i}`).toBe(true);
      }
    }), { numRuns: 300 });
  });
});
