// maskedMatmul, the SAE decoder's product: (a ⊙ mask) w and its gradients, on the CPU kernel's two paths (the
// per-entry gather for very sparse masks, the column-compressed dense product otherwise) against the dense
// composition matmul(mul(a, mask), w). The small-shape gradient checks live in the op specs.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { maskedMatmulPath } from '../src/kernels/cpu/sparse.ts';
import { matmul, maskedMatmul, mul, sum, tensor } from '../src/tensor/ops.ts';
import { backward, requireGrad } from '../src/tensor/autograd.ts';
import { Random } from '../src/tensor/random.ts';
import type { Tensor } from '../src/tensor/tensor.ts';
import type { Storage } from '../src/kernels/backend.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';

async function productAndGrads(run: (a: Tensor, m: Tensor, w: Tensor) => Tensor, a: Float32Array, mask: Float32Array, w: Float32Array, rows: number, inner: number, cols: number, dy: Float32Array) {
  const at = requireGrad(tensor(a, [rows, inner]));
  const mt = tensor(mask, [rows, inner]);
  const wt = requireGrad(tensor(w, [inner, cols]));
  const y = run(at, mt, wt);
  backward(sum(mul(y, tensor(dy, [rows, cols]))));
  return { y: await y.toFloat32Array(), da: await at.grad!.toFloat32Array(), dw: await wt.grad!.toFloat32Array() };
}

function expectClose(actual: Float32Array, expected: Float32Array, what: string): void {
  expect(actual.length, what).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / (1 + Math.abs(expected[i]!)));
  expect(worst, what).toBeLessThan(1e-5);
}

describe('maskedMatmul (CPU)', () => {
  // mode: 'gather' (one entry in a few rows of many columns), 'compressed' (dense within a few columns, as the
  // aux loss's dead latents), 'mixed' (random density).
  it('equals matmul(mul(a, mask), w), forward and both gradients, on both kernel paths (fast-check)', async () => {
    await fc.assert(fc.asyncProperty(
      fc.constantFrom('gather', 'compressed', 'mixed'), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 60, max: 400 }), fc.integer({ min: 1, max: 9 }), fc.nat(),
      async (mode, someRows, someInner, cols, seed) => {
        // The gather path needs a mask sparse within the columns it uses: at most one entry per row, over many
        // rows and columns (as BatchTopK's k·B of B·F).
        const rows = mode === 'gather' ? 100 + someRows : someRows;
        const inner = mode === 'gather' ? 200 + someInner : someInner;
        const rng = new Random(seed);
        const a = Float32Array.from({ length: rows * inner }, () => rng.normal());
        const w = Float32Array.from({ length: inner * cols }, () => rng.normal());
        const dy = Float32Array.from({ length: rows * cols }, () => rng.normal());
        const mask = new Float32Array(rows * inner);
        const few = Array.from({ length: 1 + rng.int(5) }, () => rng.int(inner));
        for (let r = 0; r < rows; r++) {
          if (mode === 'gather') { if (rng.uniform() < 0.7) mask[r * inner + rng.int(inner)] = 1; }
          else if (mode === 'compressed') { for (const k of few) if (rng.uniform() < 0.8) mask[r * inner + k] = 1; }
          else for (let k = 0; k < inner; k++) mask[r * inner + k] = rng.uniform() < 0.03 ? 1 : 0;
        }
        // The mode reaches the kernel path it is meant to test (mixed may land on either).
        const selected = mask.reduce((n, m) => n + m, 0);
        const used = Array.from({ length: inner }, (_, k) => mask.some((_, i) => i % inner === k && mask[i] === 1)).filter(Boolean).length;
        if (selected > 0 && mode !== 'mixed') expect(maskedMatmulPath(selected, rows, used)).toBe(mode);
        const got = await productAndGrads(maskedMatmul, a, mask, w, rows, inner, cols, dy);
        const want = await productAndGrads((x, m, v) => matmul(mul(x, m), v), a, mask, w, rows, inner, cols, dy);
        expectClose(got.y, want.y, `${mode} y`);
        expectClose(got.da, want.da, `${mode} da`);
        expectClose(got.dw, want.dw, `${mode} dw`);
      },
    ), { numRuns: 40, seed: 11 });
  });

  it('the gather path, several entries per row, equals the entry-by-entry definition value for value (fast-check)', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 11 }), fc.integer({ min: 1, max: 9 }), fc.nat(), (perRow, cols, seed) => {
      // Distinct columns for every entry over 60 rows keep the mask sparse within its columns: the gather path.
      const rows = 60;
      const inner = rows * perRow + 7;
      const rng = new Random(seed);
      const normal = () => (rng.uniform() < 0.1 ? 0 : rng.normal()); // zeros: the forward skips them
      const a = Float32Array.from({ length: rows * inner }, normal);
      const w = Float32Array.from({ length: inner * cols }, normal);
      const dy = Float32Array.from({ length: rows * cols }, normal);
      const mask = new Float32Array(rows * inner);
      for (let r = 0; r < rows; r++) for (let j = 0; j < perRow; j++) if (rng.uniform() < 0.9) mask[r * inner + r * perRow + j] = 1;
      const selected = mask.reduce((n, m) => n + m, 0);
      if (selected > 0) expect(maskedMatmulPath(selected, rows, selected)).toBe('gather');
      // The definition: entries in column order, out rounded to f32 after every add, dot products in f64 in order.
      const y = new Float32Array(rows * cols);
      const da = new Float32Array(rows * inner);
      const dw = new Float32Array(inner * cols);
      for (let r = 0; r < rows; r++) {
        for (let k = 0; k < inner; k++) {
          if (mask[r * inner + k] !== 1) continue;
          const v = a[r * inner + k]!;
          let dot = 0;
          for (let n = 0; n < cols; n++) {
            if (v !== 0) y[r * cols + n] = y[r * cols + n]! + v * w[k * cols + n]!;
            dot += dy[r * cols + n]! * w[k * cols + n]!;
            dw[k * cols + n] = dw[k * cols + n]! + v * dy[r * cols + n]!;
          }
          da[r * inner + k] = dot;
        }
      }
      const cpu = getCpuBackend();
      const [as, ms, ws, gs] = [a, mask, w, dy].map((x) => cpu.upload(x, 'f32'));
      const data = (storage: unknown) => Array.from((storage as { data: Float32Array }).data);
      expect(data(cpu.maskedMatmul(as!, ms!, ws!, rows, inner, cols))).toEqual(Array.from(y));
      const back = cpu.maskedMatmulBackward(as!, ms!, ws!, gs!, rows, inner, cols);
      expect(data(back.da)).toEqual(Array.from(da));
      expect(data(back.dw)).toEqual(Array.from(dw));
    }), { numRuns: 60 });
  });

  // The in-place writers of backend.ts's contract: assign, and adamwStep (here on its first moment m: with
  // beta1 = 0 the step sets m to the gradient exactly).
  const writers: [string, (cpu: ReturnType<typeof getCpuBackend>, target: Storage, values: Float32Array) => void][] = [
    ['assign', (cpu, target, values) => cpu.assign({ storage: target, shape: [values.length], strides: [1], offset: 0 }, { storage: cpu.upload(values, 'f32'), shape: [values.length], strides: [1], offset: 0 })],
    ['adamwStep on m', (cpu, target, values) => {
      const zeros = () => cpu.upload(new Float32Array(values.length), 'f32');
      cpu.adamwStep(zeros(), cpu.upload(values, 'f32'), target, zeros(), values.length, { lr: 1e-3, beta1: 0, beta2: 0.9, eps: 1e-8, weightDecay: 0, step: 1 });
    }],
  ];
  it.each(writers)('a mask written in place (%s) between forward and backward is read again, not its old selection', (_, write) => {
    const cpu = getCpuBackend();
    const [rows, inner, cols] = [120, 300, 5];
    const rng = new Random(3);
    const up = (n: number, f: () => number) => cpu.upload(Float32Array.from({ length: n }, f), 'f32');
    const [a, w, dy] = [up(rows * inner, () => rng.normal()), up(inner * cols, () => rng.normal()), up(rows * cols, () => rng.normal())];
    const maskOf = (column: number) => Float32Array.from({ length: rows * inner }, (_, i) => (i % inner === (Math.floor(i / inner) * 7 + column) % inner ? 1 : 0));
    const data = (storage: unknown) => Array.from((storage as { data: Float32Array }).data);
    const mask = cpu.upload(maskOf(0), 'f32');
    cpu.maskedMatmul(a, mask, w, rows, inner, cols); // selects mask 0
    write(cpu, mask, maskOf(1));
    const fresh = cpu.upload(maskOf(1), 'f32');
    expect(data(cpu.maskedMatmul(a, mask, w, rows, inner, cols))).toEqual(data(cpu.maskedMatmul(a, fresh, w, rows, inner, cols)));
    const [got, want] = [cpu.maskedMatmulBackward(a, mask, w, dy, rows, inner, cols), cpu.maskedMatmulBackward(a, fresh, w, dy, rows, inner, cols)];
    expect(data(got.da)).toEqual(data(want.da));
    expect(data(got.dw)).toEqual(data(want.dw));
  });

  it('rejects a mask that holds values other than 0 and 1, naming the element', () => {
    const a = tensor(new Float32Array(6), [2, 3]);
    const w = tensor(new Float32Array(6), [3, 2]);
    expect(() => maskedMatmul(a, tensor(Float32Array.from([0, 1, 0.5, 0, 0, 0]), [2, 3]), w)).toThrow(/mask must hold only 0 and 1, found 0.5 at element 2/);
    expect(() => maskedMatmul(a, tensor(new Float32Array(4), [2, 2]), w)).toThrow(/mask must have shape \[2, 3\]/);
    expect(() => maskedMatmul(a, tensor(new Float32Array(6), [2, 3]), tensor(new Float32Array(8), [4, 2]))).toThrow(/inner dimensions differ/);
  });
});
