// Tensor semantics: views without copies, memory ownership, scopes, autograd bookkeeping, dtypes and the
// errors a user sees for bad input.
import { describe, expect, it } from 'vitest';
import {
  Random, Tensor, add, backward, cast, contiguous, crossEntropy, detach, embedding, exp, expand, getCpuBackend,
  keep, linear, matmul, mul, noGrad, permute, requireGrad, reshape, slice, sum, tensor, tidy, transpose, zeroGrad,
  zeros,
} from '../src/tensor/index.ts';
import { f32ToBf16, bf16ToF32, f32ToF16, f16ToF32 } from '../src/kernels/dtype.ts';
import { AdamW } from '../src/train/adamw.ts';
import { clipGradNorm } from '../src/train/clip.ts';

const cpu = getCpuBackend();
const arange = (n: number) => Float32Array.from({ length: n }, (_, i) => i);

describe('views share storage', () => {
  it('reshape, transpose, slice and expand allocate nothing', () => {
    tidy(() => {
      const x = tensor(arange(24), [2, 3, 4]);
      const before = cpu.memory().liveStorages;
      const views = [reshape(x, [6, 4]), transpose(x, 0, 2), slice(x, 1, 1, 3), expand(reshape(x, [1, 2, 3, 4]), [5, 2, 3, 4]), permute(x, [2, 0, 1])];
      expect(cpu.memory().liveStorages).toBe(before);
      for (const v of views) expect(v.storage).toBe(x.storage);
      expect(views[2]!.offset).toBe(4);
      expect(views[3]!.strides[0]).toBe(0);
    });
  });

  it('reads strided views in logical order', async () => {
    const x = tensor(arange(6), [2, 3]);
    expect(await transpose(x).toNested()).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(await slice(x, 1, 1, 3).toNested()).toEqual([[1, 2], [4, 5]]);
    expect(await contiguous(transpose(x)).toNested()).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(await reshape(transpose(x), [6]).toNested()).toEqual([0, 3, 1, 4, 2, 5]);
  });
});

describe('memory', () => {
  it('frees a storage only when its last view is disposed', () => {
    const start = cpu.memory().liveStorages;
    const x = tensor(arange(8), [8]);
    const v = reshape(x, [2, 4]);
    x.dispose();
    expect(cpu.memory().liveStorages).toBe(start + 1);
    v.dispose();
    expect(cpu.memory().liveStorages).toBe(start);
  });

  it('names the op and shape on use after dispose', () => {
    const x = tensor([1, 2, 3], [3]);
    x.dispose();
    expect(() => exp(x)).toThrow('exp: tensor [3] was used after dispose');
    expect(() => matmul(x, x)).toThrow(/matmul: tensor \[3\] was used after dispose/);
    x.dispose(); // disposing twice is harmless
  });

  it('tidy disposes intermediates and keeps what is returned or kept', () => {
    const start = cpu.memory().liveStorages;
    let kept!: Tensor;
    const result = tidy(() => {
      const a = tensor([1, 2], [2]);
      const b = exp(a);
      kept = keep(mul(b, 2));
      return { out: add(b, 1) };
    });
    expect(cpu.memory().liveStorages).toBe(start + 2);
    expect(kept.isDisposed).toBe(false);
    expect(result.out.isDisposed).toBe(false);
    result.out.dispose();
    kept.dispose();
    expect(cpu.memory().liveStorages).toBe(start);
  });

  it('keeps tensors saved for backward alive after their scope ends', async () => {
    const w = requireGrad(tensor([0.5, -1, 2], [3]));
    const loss = tidy(() => sum(mul(exp(w), w)));
    backward(loss);
    // d/dw (e^w w) = e^w (1 + w)
    const expected = [0.5, -1, 2].map((v) => Math.exp(v) * (1 + v));
    const grad = Array.from(await w.grad!.toFloat32Array());
    grad.forEach((g, i) => expect(g).toBeCloseTo(expected[i]!, 5));
  });
});

describe('autograd bookkeeping', () => {
  it('accumulates gradients across backward calls until zeroGrad', async () => {
    const w = requireGrad(tensor([1, 2], [2]));
    backward(sum(mul(w, 3)));
    backward(sum(mul(w, 3)));
    expect(Array.from(await w.grad!.toFloat32Array())).toEqual([6, 6]);
    zeroGrad([w]);
    expect(w.grad).toBeNull();
  });

  it('sums gradients where a tensor is used twice', async () => {
    const x = requireGrad(tensor([3], [1]));
    backward(sum(add(mul(x, x), x))); // d/dx (x^2 + x) = 2x + 1
    expect(await x.grad!.item()).toBe(7);
  });

  it('records nothing under noGrad or through detach', () => {
    const w = requireGrad(tensor([1, 2], [2]));
    const y = noGrad(() => mul(w, 2));
    expect(y.requiresGrad).toBe(false);
    expect(detach(w).requiresGrad).toBe(false);
    expect(() => backward(sum(y))).toThrow(/does not require grad/);
  });

  it('refuses a second backward through a freed graph unless retainGraph', async () => {
    const w = requireGrad(tensor([2], [1]));
    const loss = sum(exp(w));
    backward(loss, { retainGraph: true });
    backward(loss);
    expect(await w.grad!.item()).toBeCloseTo(2 * Math.exp(2), 4);
    expect(() => backward(loss)).toThrow(/already freed/);
  });

  it('needs an explicit gradient for non-scalar outputs', () => {
    const w = requireGrad(tensor([1, 2], [2]));
    expect(() => backward(mul(w, 2))).toThrow(/not a scalar/);
  });

  it('refuses gradients for integer and half tensors', () => {
    expect(() => requireGrad(tensor([1, 2], [2], { dtype: 'i32' }))).toThrow(/only f32/);
    expect(() => requireGrad(tensor([1, 2], [2], { dtype: 'bf16' }))).toThrow(/bf16/);
  });
});

describe('bad input names the op and the shapes', () => {
  it('matmul inner dimension', () => {
    expect(() => matmul(zeros([2, 3]), zeros([4, 5]))).toThrow('matmul: inner dimensions differ: a [2, 3] has k=3, b [4, 5] has k=4');
  });
  it('broadcasting', () => {
    expect(() => add(zeros([2, 3]), zeros([4]))).toThrow(/add: shapes \[2, 3\] and \[4\] cannot be broadcast/);
  });
  it('reshape', () => {
    expect(() => reshape(zeros([2, 3]), [4, 2])).toThrow(/reshape: cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\]/);
  });
  it('linear features', () => {
    expect(() => linear(zeros([2, 3]), zeros([4, 5]))).toThrow(/linear: input \[2, 3\] has 3 features, weight \[4, 5\] expects 5/);
  });
  it('embedding ids out of range', () => {
    expect(() => embedding(zeros([4, 2]), tensor([1, 7], [2], { dtype: 'i32' }))).toThrow(/token id 7 at position 1 is outside the vocabulary \[0, 4\)/);
  });
  it('embedding with float ids', () => {
    expect(() => embedding(zeros([4, 2]), tensor([1, 2], [2]))).toThrow(/embedding: expected an i32 tensor of ids, got f32/);
  });
  it('cross-entropy targets shape', () => {
    expect(() => crossEntropy(zeros([2, 3, 5]), tensor([1, 2], [2], { dtype: 'i32' }))).toThrow(/crossEntropy: targets must have shape \[2, 3\], got \[2\]/);
  });
  it('slice bounds', () => {
    expect(() => slice(zeros([2, 3]), 1, 2, 5)).toThrow(/slice: range \[2, 5\) is outside axis 1 of length 3/);
  });
});

describe('half-precision storage', () => {
  it('converts bf16 and f16 with round-to-nearest-even', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(f32ToBf16(1 + 2 ** -8))).toBe(1); // tie rounds to even
    expect(bf16ToF32(f32ToBf16(1 + 3 * 2 ** -9))).toBe(1 + 2 ** -7);
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(f32ToF16(1e-7))).toBeCloseTo(1.1920928955078125e-7, 12); // subnormal
    expect(f16ToF32(f32ToF16(70000))).toBe(Infinity);
  });

  it('keeps bf16 weights packed and widens inside matmul and embedding', async () => {
    const rng = new Random(7);
    const w = Float32Array.from({ length: 12 }, () => rng.range(-1, 1));
    const wBf16 = tensor(w, [4, 3], { dtype: 'bf16' });
    expect(wBf16.dtype).toBe('bf16');
    expect(wBf16.storage.numel).toBe(12);
    const widened = Float32Array.from(w, (v) => bf16ToF32(f32ToBf16(v)));
    const x = tensor([1, 2, 3, -1, 0.5, 2], [2, 3]);
    const viaBf16 = await linear(x, wBf16).toFloat32Array();
    const viaF32 = await linear(x, tensor(widened, [4, 3])).toFloat32Array();
    expect(Array.from(viaBf16)).toEqual(Array.from(viaF32));
    const rows = await embedding(wBf16, tensor([3, 0], [2], { dtype: 'i32' })).toFloat32Array();
    expect(Array.from(rows)).toEqual([...widened.slice(9, 12), ...widened.slice(0, 3)]);
    expect(await cast(wBf16, 'f32').toFloat32Array()).toEqual(widened);
  });
});

describe('AdamW and clipping', () => {
  it('matches a hand-computed AdamW step', async () => {
    const p = requireGrad(tensor([1, -2], [2]));
    const opt = new AdamW([p], { lr: 0.1, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.01 });
    p.grad = keep(tensor([0.5, -0.25], [2]));
    opt.step();
    // step 1: m̂ = g, v̂ = g², update = g/|g| = sign(g); p = p(1 - lr·wd) - lr·sign(g)
    const out = Array.from(await p.toFloat32Array());
    expect(out[0]).toBeCloseTo(1 * (1 - 0.001) - 0.1, 5);
    expect(out[1]).toBeCloseTo(-2 * (1 - 0.001) + 0.1, 5);
    expect(opt.stepCount).toBe(1);
  });

  it('clips the global gradient norm like torch', async () => {
    const a = requireGrad(tensor([0, 0], [2]));
    const b = requireGrad(tensor([0], [1]));
    a.grad = keep(tensor([3, 0], [2]));
    b.grad = keep(tensor([4], [1]));
    const norm = clipGradNorm([a, b], 1)!;
    expect(await norm.item()).toBeCloseTo(5, 5);
    expect(Array.from(await a.grad!.toFloat32Array())[0]).toBeCloseTo(0.6, 5);
    expect(await b.grad!.item()).toBeCloseTo(0.8, 5);
  });

  it('trains a small regression to low loss', async () => {
    const rng = new Random(3);
    const xs = Float32Array.from({ length: 64 * 3 }, () => rng.range(-1, 1));
    const trueW = [0.5, -1.5, 2];
    const ys = Float32Array.from({ length: 64 }, (_, i) => trueW.reduce((s, w, j) => s + w * xs[i * 3 + j]!, 0));
    const x = tensor(xs, [64, 3]);
    const y = tensor(ys, [64, 1]);
    const w = requireGrad(zeros([1, 3]));
    const opt = new AdamW([w], { lr: 0.05, weightDecay: 0 });
    let last = Infinity;
    for (let step = 0; step < 200; step++) {
      const loss = tidy(() => {
        const diff = add(linear(x, w), mul(y, -1));
        return sum(mul(diff, diff));
      });
      if (step === 199) last = await loss.item();
      backward(loss);
      loss.dispose();
      opt.step();
      zeroGrad([w]);
    }
    expect(last).toBeLessThan(1e-3);
    const learned = Array.from(await w.toFloat32Array());
    learned.forEach((v, i) => expect(v).toBeCloseTo(trueW[i]!, 2));
  });
});
