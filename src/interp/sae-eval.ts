// The SAE on held-out tokens: fraction of variance unexplained and L0, with the inference it will be used with.
import { square, sub, sum, tensor } from '../tensor/ops.ts';
import { keep, tidy } from '../tensor/tensor.ts';
import type { BatchTopKSae, SaeInference } from './sae.ts';

export interface SaeEvaluation {
  /** Fraction of variance unexplained: Σ‖x − x̂‖² / Σ‖x − x̄‖² over the held-out tokens. */
  fvu: number;
  /** Mean non-zero latents per token. */
  l0: number;
  tokens: number;
}

export async function evaluateSae(sae: BatchTopKSae, rows: Float32Array, inference: SaeInference, batch = 2048): Promise<SaeEvaluation> {
  const d = sae.config.d;
  const n = rows.length / d;
  if (n === 0) return { fvu: NaN, l0: NaN, tokens: 0 };
  const meanRow = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) meanRow[j]! += rows[i * d + j]! / n;
  let errorSum = 0;
  let varianceSum = 0;
  let active = 0;
  for (let i = 0; i < n * d; i++) varianceSum += (rows[i]! - meanRow[i % d]!) ** 2;
  for (let start = 0; start < n; start += batch) {
    const count = Math.min(batch, n - start);
    const x = tensor(rows.subarray(start * d, (start + count) * d), [count, d], { backend: sae.backend });
    const [err, nonZero] = await (async () => {
      const out = tidy(() => {
        const latents = sae.encode(x, inference);
        const error = sum(square(sub(x, sae.decode(latents))));
        return { error: keep(error), latents: keep(latents) };
      });
      const e = (await out.error.toFloat32Array())[0]!;
      const l = await out.latents.toFloat32Array();
      out.error.dispose();
      out.latents.dispose();
      let nz = 0;
      for (const v of l) if (v !== 0) nz++;
      return [e, nz];
    })();
    x.dispose();
    errorSum += err;
    active += nonZero;
  }
  return { fvu: errorSum / Math.max(varianceSum, 1e-30), l0: active / n, tokens: n };
}
