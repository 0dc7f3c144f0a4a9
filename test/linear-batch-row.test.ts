// linear's path for one batch row (src/tensor/ops.ts: x [1, T, in] goes to the matmul as it is, without the
// reshapes to rows [T, in] and back): bit-identical to the rows path, forward and gradients (x, an f32 weight,
// the bias), with and without a bias, with an f32 or a bf16 weight, for contiguous and strided inputs.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createCpuBackend } from '../src/kernels/cpu/index.ts';
import { add, linear, matmul, reshape, sum, mul, tensor, transpose } from '../src/tensor/ops.ts';
import { backward, requireGrad } from '../src/tensor/autograd.ts';
import { Random } from '../src/tensor/random.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

const backend = createCpuBackend();

/** What linear computed before the batch-row path: rows [N, in], their product, the bias, the shape back. */
function linearByRows(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  let y = matmul(reshape(x, [-1, inFeatures]), weight, { transB: true });
  if (bias) y = add(y, bias);
  return reshape(y, [...x.shape.slice(0, -1), outFeatures]);
}

const caseArb = fc.record({
  lead: fc.constantFrom([1], [1, 1], [] as number[]),
  tokens: fc.integer({ min: 1, max: 6 }),
  inFeatures: fc.integer({ min: 1, max: 40 }),
  outFeatures: fc.integer({ min: 1, max: 40 }),
  withBias: fc.boolean(),
  weightDtype: fc.constantFrom('f32' as const, 'bf16' as const),
  transposedInput: fc.boolean(),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

describe('linear on one batch row', () => {
  it('equals the rows path bit for bit, forward and backward (fast-check)', async () => {
    await fc.assert(fc.asyncProperty(caseArb, async ({ lead, tokens, inFeatures, outFeatures, withBias, weightDtype, transposedInput, seed }) => {
      const rng = new Random(seed);
      const values = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
      const xData = values(tokens * inFeatures);
      const wData = values(outFeatures * inFeatures);
      const bData = values(outFeatures);
      const gData = values(tokens * outFeatures);
      const run = async (f: typeof linear) => {
        // A strided x: the transpose of a [..., in, T] tensor.
        const x = requireGrad(transposedInput
          ? tensor(xData, [...lead, inFeatures, tokens], { backend })
          : tensor(xData, [...lead, tokens, inFeatures], { backend }));
        const input = transposedInput ? transpose(x) : x;
        const w = tensor(wData, [outFeatures, inFeatures], { backend, dtype: weightDtype });
        if (weightDtype === 'f32') requireGrad(w);
        const b = withBias ? requireGrad(tensor(bData, [outFeatures], { backend })) : undefined;
        const y = f(input, w, b);
        backward(sum(mul(y, tensor(gData, y.shape, { backend }))));
        return {
          shape: y.shape,
          y: await y.toFloat32Array(),
          dx: await x.grad!.toFloat32Array(),
          dw: weightDtype === 'f32' ? await w.grad!.toFloat32Array() : null,
          db: b ? await b.grad!.toFloat32Array() : null,
        };
      };
      const [got, want] = [await run(linear), await run(linearByRows)];
      expect(got.shape).toEqual([...lead, tokens, outFeatures]);
      expect(got).toEqual(want);
    }), { numRuns: 100 });
  });

  it('still takes the rows path for several batch rows, with the same result as before', async () => {
    const rng = new Random(3);
    const x = tensor(Float32Array.from({ length: 2 * 3 * 5 }, () => rng.normal()), [2, 3, 5], { backend });
    const w = tensor(Float32Array.from({ length: 4 * 5 }, () => rng.normal()), [4, 5], { backend });
    const b = tensor(Float32Array.from({ length: 4 }, () => rng.normal()), [4], { backend });
    const y = linear(x, w, b);
    expect(y.shape).toEqual([2, 3, 4]);
    expect(await y.toFloat32Array()).toEqual(await linearByRows(x, w, b).toFloat32Array());
  });
});
