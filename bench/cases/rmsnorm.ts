// RMSNorm forward over rows of x [R, H]: R = 1024 tokens, H = 896 (Qwen2-0.5B) or 3584 (Qwen2-7B).
import { Random, randomNormalArray, rmsNorm, tensor, type Backend } from '../../src/tensor/index.ts';
import type { CaseSpec } from '../harness.ts';
import { opRunnable, rank1Implementation } from './rank1.ts';

export const rmsNormRows = 1024;
const eps = 1e-6;

export function rank1RmsNormCase(backend: Backend, hidden: number): CaseSpec {
  const rows = rmsNormRows;
  const rng = new Random(3000 + hidden);
  const xData = randomNormalArray(rows * hidden, rng);
  const wData = randomNormalArray(hidden, rng);
  let sumSquares = 0;
  for (let i = 0; i < hidden; i++) sumSquares += xData[i]! ** 2;
  const y0 = (wData[0]! * xData[0]!) / Math.sqrt(sumSquares / hidden + eps);
  return {
    group: 'rmsnorm',
    name: `rmsNorm fwd ${rows}×${hidden}`,
    size: hidden,
    impl: rank1Implementation(backend),
    // Memory-bound: read x, write y (f32), read w once. About 4 flops per element, reported as GB/s.
    bytes: (2 * rows * hidden + hidden) * 4,
    expected: { value: y0, tolerance: 1e-4 * Math.abs(y0) + 1e-6 },
    async setup() {
      const x = tensor(xData, [rows, hidden], { backend });
      const w = tensor(wData, [hidden], { backend });
      return opRunnable([x, w], () => rmsNorm(x, w, eps));
    },
  };
}
