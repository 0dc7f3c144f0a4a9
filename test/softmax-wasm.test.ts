// The CPU backend's vectorised exp and row kernels (src/kernels/cpu/softmax-wasm.ts) against Math.exp and a
// float64 reference, and the softmax op, KL and cross-entropy kernels built on them (src/kernels/cpu/softmax.ts,
// loss.ts): forward,
// backward and the fused forward + backward the chunked loss calls, over awkward vocabularies (not a multiple
// of 4 or 16), masked rows with -100 targets and extreme logits.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  EXP_MAX_INPUT, EXP_MIN_INPUT, ScalarRowKernels, wasmRowKernels, type RowKernels,
} from '../src/kernels/cpu/softmax-wasm.ts';
import { crossEntropy, crossEntropyBackward, crossEntropyWithGrad, klDiv } from '../src/kernels/cpu/loss.ts';
import { softmax } from '../src/kernels/cpu/softmax.ts';
import { CpuStorage } from '../src/kernels/cpu/storage.ts';

const wasm = wasmRowKernels();
if (!wasm) throw new Error('these tests need WebAssembly SIMD (Node 22 and later have it)');

/** Distance in f32 steps between two non-negative finite f32 values. */
function ulpDistance(a: number, b: number): number {
  const bits = new Int32Array(new Float32Array([a, b]).buffer);
  return Math.abs(bits[0]! - bits[1]!);
}

function maxUlpError(xs: Float32Array): { ulps: number; at: number } {
  const got = wasm!.exp(xs);
  let worst = { ulps: 0, at: NaN };
  for (let i = 0; i < xs.length; i++) {
    const ulps = ulpDistance(got[i]!, Math.fround(Math.exp(xs[i]!)));
    if (ulps > worst.ulps) worst = { ulps, at: xs[i]! };
  }
  return worst;
}

describe('vectorised exp', () => {
  it('is within 1 ulp of Math.exp on a dense grid of its whole normal range', () => {
    const n = 2_000_003; // odd, so the grid does not line up with the 16-float steps
    const xs = Float32Array.from({ length: n }, (_, i) => EXP_MIN_INPUT + ((EXP_MAX_INPUT - EXP_MIN_INPUT) * i) / (n - 1));
    expect(maxUlpError(xs).ulps).toBeLessThanOrEqual(1);
  });

  it('is within 2 ulp of Math.exp for any f32 in range (fast-check)', () => {
    fc.assert(fc.property(
      fc.array(fc.float({ min: Math.fround(EXP_MIN_INPUT + 1e-4), max: Math.fround(EXP_MAX_INPUT - 1e-4), noNaN: true }), { minLength: 1, maxLength: 70 }),
      (values) => maxUlpError(Float32Array.from(values)).ulps <= 2,
    ), { numRuns: 300 });
  });

  it('is exactly 1 at 0 and exact at small integers, 0 below the normal range, +Infinity above, NaN for NaN', () => {
    const xs = new Float32Array([0, -0, 1, -1, -87.34, -88, -103, -1e30, -Infinity, 88.03, 89, 1e30, Infinity, NaN]);
    const got = wasm!.exp(xs);
    expect(got[0]).toBe(1);
    expect(got[1]).toBe(1);
    expect(got[2]).toBe(Math.fround(Math.E));
    expect(got[3]).toBe(Math.fround(1 / Math.E));
    expect(Array.from(got.subarray(4, 9))).toEqual([0, 0, 0, 0, 0]);
    expect(Array.from(got.subarray(9, 13))).toEqual([Infinity, Infinity, Infinity, Infinity]);
    expect(got[13]).toBeNaN();
  });

  it('sends every input below the normal range to 0, where Math.exp is under 2⁻¹²⁶ (fast-check)', () => {
    fc.assert(fc.property(fc.array(fc.float({ max: Math.fround(EXP_MIN_INPUT - 1e-3), noNaN: true }), { minLength: 1, maxLength: 40 }), (values) => {
      const got = wasm!.exp(Float32Array.from(values));
      return got.every((v, i) => v === 0 && Math.exp(values[i]!) < 2 ** -126);
    }), { numRuns: 200 });
  });
});

/** A row of logits: moderate values, a few extreme ones, and -Infinity (a masked-out token). */
const logitRow = (vocab: number) => fc.array(
  fc.oneof(
    { weight: 8, arbitrary: fc.float({ min: -30, max: 30, noNaN: true }) },
    { weight: 1, arbitrary: fc.constantFrom(-1e4, 1e4, -Infinity, 85, -85) },
  ),
  { minLength: vocab, maxLength: vocab },
).filter((row) => row.some((v) => v !== -Infinity));

function f64LogSumExp(row: ArrayLike<number>): { max: number; sum: number } {
  let max = -Infinity;
  for (let c = 0; c < row.length; c++) max = Math.max(max, row[c]!);
  let sum = 0;
  for (let c = 0; c < row.length; c++) sum += Math.exp(row[c]! - max);
  return { max, sum };
}

describe.each([['wasm-simd', wasm], ['scalar', new ScalarRowKernels()]] as [string, RowKernels][])('%s row kernels', (_, kernels) => {
  it('max, Σ exp, exp in place and scale agree with float64 for any row length', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 70 }).chain((vocab) => fc.tuple(logitRow(vocab), fc.integer({ min: 0, max: 5 }))), ([row, pad]) => {
      // The row sits inside a longer array, so load must copy exactly [base, base + cols).
      const x = new Float32Array(row.length + 2 * pad).fill(123);
      x.set(row, pad);
      const reference = f64LogSumExp(Float32Array.from(row));
      kernels.load(x, pad, row.length);
      const max = kernels.max();
      expect(max).toBe(reference.max);
      expect(kernels.sumExp(max)).toBeCloseTo(reference.sum, 5);
      expect(Math.abs(kernels.sumExp(max) / reference.sum - 1)).toBeLessThan(1e-6);
      expect(Math.abs(kernels.expInPlace(max) / reference.sum - 1)).toBeLessThan(1e-6);
      const out = new Float32Array(row.length + 2).fill(7);
      kernels.scaleInto(0.5, out, 1);
      expect(out[0]).toBe(7);
      expect(out[row.length + 1]).toBe(7);
      for (let c = 0; c < row.length; c++) {
        const shifted = Math.fround(row[c]!) - reference.max;
        const expected = 0.5 * Math.exp(shifted);
        // 2 ulp of exp, plus rounding x − max to f32 (relative error 2⁻²⁴·|x − max| in the result); exps under
        // 2⁻¹²⁶ may come out 0 (the wasm exp flushes them, Math.exp in f32 keeps a subnormal).
        const tolerance = expected === 0 ? 0 : (2.5e-7 + 6e-8 * Math.abs(shifted)) * expected;
        expect(Math.abs(out[c + 1]! - expected)).toBeLessThanOrEqual(tolerance + 0.5 * 2 ** -126);
      }
    }), { numRuns: 200 });
  });
});

describe.each([['wasm-simd', wasm], ['scalar', new ScalarRowKernels()]] as [string, RowKernels][])('%s klTerms', (_, kernels) => {
  it('Σ exp(p − max) and Σ exp(p − max)·(p − q) equal float64, terms with exp 0 counting 0', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 70 }).chain((vocab) => fc.tuple(logitRow(vocab), logitRow(vocab))), ([p, q]) => {
      const a = Float32Array.from(p);
      const b = Float32Array.from(q);
      kernels.load(a, 0, a.length);
      kernels.loadSecond(b, 0);
      const max = kernels.max();
      // The wasm exp flushes what is under f32's normal range to 0; Math.exp (the scalar kernels) keeps it.
      const smallest = kernels.name === 'scalar' ? 0 : 2 ** -126;
      let sum = 0;
      let dot = 0;
      let tolerance = 1e-30; // per term: exp's ulps, p − max and p − q rounded to f32, the f32 partial sums
      for (let c = 0; c < a.length; c++) {
        const e = Math.exp(a[c]! - max);
        sum += e;
        if (e > smallest) {
          dot += e * (a[c]! - b[c]!);
          tolerance += e * Math.abs(a[c]! - b[c]!) * (4e-7 + 6e-8 * Math.abs(a[c]! - max));
        }
      }
      const got = kernels.klTerms(max);
      expect(Math.abs(got.sum / sum - 1)).toBeLessThan(1e-6);
      if (Number.isFinite(dot)) expect(Math.abs(got.dot - dot)).toBeLessThanOrEqual(tolerance);
      else expect(got.dot).toBe(dot);
    }), { numRuns: 200 });
  });
});

interface CrossEntropyCase { rows: number; vocab: number; logits: Float32Array; targets: Int32Array; mask: Float32Array }

const crossEntropyCase = fc.record({ rows: fc.integer({ min: 1, max: 5 }), vocab: fc.integer({ min: 1, max: 67 }) }).chain(({ rows, vocab }) =>
  fc.record({
    logits: fc.array(logitRow(vocab), { minLength: rows, maxLength: rows }),
    targets: fc.array(fc.integer({ min: 0, max: vocab - 1 }), { minLength: rows, maxLength: rows }),
    mask: fc.array(fc.constantFrom(0, 1, 1, 0.5, 3), { minLength: rows, maxLength: rows }),
  }).map(({ logits, targets, mask }): CrossEntropyCase => ({
    rows, vocab,
    logits: Float32Array.from(logits.flat()),
    // A masked row's target is padding, as the chunked loss hands it over.
    targets: Int32Array.from(targets, (t, r) => (mask[r] === 0 ? -100 : t)),
    mask: Float32Array.from(mask),
  })));

function storages(c: CrossEntropyCase) {
  return [new CpuStorage('f32', c.logits), new CpuStorage('i32', c.targets), new CpuStorage('f32', c.mask)] as const;
}

/** float64 loss and gradient rows from the f32 logits. */
function f64CrossEntropy(c: CrossEntropyCase): { loss: number[]; grad: number[] } {
  const loss: number[] = [];
  const grad: number[] = [];
  for (let r = 0; r < c.rows; r++) {
    const row = c.logits.subarray(r * c.vocab, (r + 1) * c.vocab);
    const w = c.mask[r]!;
    if (w === 0) {
      loss.push(0);
      grad.push(...new Array<number>(c.vocab).fill(0));
      continue;
    }
    const { max, sum } = f64LogSumExp(row);
    loss.push(w * (max + Math.log(sum) - row[c.targets[r]!]!));
    for (let v = 0; v < c.vocab; v++) grad.push(w * (Math.exp(row[v]! - max) / sum - (v === c.targets[r] ? 1 : 0)));
  }
  return { loss, grad };
}

const read = (s: unknown) => Array.from((s as CpuStorage).data as Float32Array);

describe('cross-entropy kernels', () => {
  it('loss and gradient equal float64 within f32 tolerance; fused equals forward + backward bit for bit', () => {
    fc.assert(fc.property(crossEntropyCase, (c) => {
      const [logits, targets, mask] = storages(c);
      const reference = f64CrossEntropy(c);
      const loss = read(crossEntropy(logits, targets, mask, c.rows, c.vocab));
      const grad = read(crossEntropyBackward(logits, targets, mask, c.rows, c.vocab));
      const fused = crossEntropyWithGrad(logits, targets, mask, c.rows, c.vocab);
      loss.forEach((l, r) => {
        const expected = reference.loss[r]!;
        // A target logit of -Infinity costs +Infinity, exactly.
        if (!Number.isFinite(expected)) expect(l).toBe(expected);
        else expect(Math.abs(l - expected)).toBeLessThanOrEqual(2e-6 * Math.abs(expected) + 2e-6 * c.mask[r]!);
      });
      grad.forEach((g, i) => expect(Math.abs(g - reference.grad[i]!)).toBeLessThanOrEqual(1e-6 * 3));
      expect(read(fused.loss)).toEqual(loss);
      expect(read(fused.dlogits)).toEqual(grad);
    }), { numRuns: 300 });
  });

  it('a vocabulary of Qwen width: loss and gradient rows against float64', () => {
    const vocab = 151_936 + 5;
    const rows = 2;
    const logits = Float32Array.from({ length: rows * vocab }, (_, i) => 8 * Math.sin(i * 0.7919) + (i % 1009 === 0 ? 40 : 0));
    const c: CrossEntropyCase = { rows, vocab, logits, targets: Int32Array.from([vocab - 1, 3]), mask: Float32Array.from([1, 0.25]) };
    const [l, t, m] = storages(c);
    const reference = f64CrossEntropy(c);
    const fused = crossEntropyWithGrad(l, t, m, rows, vocab);
    read(fused.loss).forEach((v, r) => expect(v).toBeCloseTo(reference.loss[r]!, 4));
    const grad = read(fused.dlogits);
    let worst = 0;
    grad.forEach((g, i) => { worst = Math.max(worst, Math.abs(g - reference.grad[i]!)); });
    expect(worst).toBeLessThan(1e-7);
  });

  it('names a target outside the vocabulary, in each kernel', () => {
    const c: CrossEntropyCase = { rows: 1, vocab: 3, logits: new Float32Array(3), targets: Int32Array.from([-100]), mask: Float32Array.from([1]) };
    const [l, t, m] = storages(c);
    expect(() => crossEntropy(l, t, m, 1, 3)).toThrow(/crossEntropy: target -100 at row 0 is outside the vocabulary \[0, 3\)/);
    expect(() => crossEntropyBackward(l, t, m, 1, 3)).toThrow(/crossEntropyBackward: target -100 at row 0/);
    expect(() => crossEntropyWithGrad(l, t, m, 1, 3)).toThrow(/crossEntropyWithGrad: target -100 at row 0/);
  });
});

describe('softmax op', () => {
  it('softmax and log-softmax rows equal float64 (fast-check)', () => {
    fc.assert(fc.property(crossEntropyCase, fc.boolean(), (c, log) => {
      const out = read(softmax(new CpuStorage('f32', c.logits), c.rows, c.vocab, log));
      for (let r = 0; r < c.rows; r++) {
        const row = c.logits.subarray(r * c.vocab, (r + 1) * c.vocab);
        const { max, sum } = f64LogSumExp(row);
        for (let v = 0; v < c.vocab; v++) {
          const got = out[r * c.vocab + v]!;
          if (log) {
            const expected = row[v]! - max - Math.log(sum);
            if (!Number.isFinite(expected)) expect(got).toBe(expected);
            else expect(Math.abs(got - expected)).toBeLessThanOrEqual(1e-6 * Math.abs(expected) + 1e-6);
          } else {
            const shifted = row[v]! - max;
            const expected = Math.exp(shifted) / sum;
            // As for the row kernels: exp's ulps and x − max rounded to f32, then the scale by 1 / Σ.
            const tolerance = expected === 0 ? 0 : (4e-7 + 6e-8 * Math.abs(shifted)) * expected;
            expect(Math.abs(got - expected)).toBeLessThanOrEqual(tolerance + 2 ** -126);
          }
        }
      }
    }), { numRuns: 200 });
  });
});

describe('klDiv', () => {
  it('equals float64 KL(softmax(p) ‖ softmax(q)) per row (fast-check)', () => {
    const moderate = fc.float({ min: -20, max: 20, noNaN: true });
    const pair = fc.record({ rows: fc.integer({ min: 1, max: 4 }), vocab: fc.integer({ min: 1, max: 67 }) }).chain(({ rows, vocab }) =>
      fc.tuple(fc.constant(rows), fc.constant(vocab), fc.array(moderate, { minLength: rows * vocab, maxLength: rows * vocab }),
        fc.array(moderate, { minLength: rows * vocab, maxLength: rows * vocab })));
    fc.assert(fc.property(pair, ([rows, vocab, p, q]) => {
      const a = Float32Array.from(p);
      const b = Float32Array.from(q);
      const got = read(klDiv(new CpuStorage('f32', a), new CpuStorage('f32', b), rows, vocab));
      for (let r = 0; r < rows; r++) {
        const pr = a.subarray(r * vocab, (r + 1) * vocab);
        const qr = b.subarray(r * vocab, (r + 1) * vocab);
        const lp = f64LogSumExp(pr);
        const lq = f64LogSumExp(qr);
        let kl = 0;
        for (let v = 0; v < vocab; v++) {
          const logP = pr[v]! - lp.max - Math.log(lp.sum);
          kl += Math.exp(logP) * (logP - (qr[v]! - lq.max - Math.log(lq.sum)));
        }
        expect(Math.abs(got[r]! - kl)).toBeLessThanOrEqual(1e-5 * (1 + kl));
      }
    }), { numRuns: 300 });
  });
});
