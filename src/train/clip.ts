// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_), computed on the device without a sync.
import type { Tensor } from '../tensor/tensor.ts';
import { keep, tidy } from '../tensor/tensor.ts';
import { add, maximum, mul, neg, pow, sqrt, square, sum } from '../tensor/ops.ts';
import { noGrad } from '../tensor/autograd.ts';

/**
 * Scales every parameter's .grad by min(1, maxNorm / ‖g‖) where ‖g‖ is the L2 norm over all of them.
 * Returns the norm before clipping as a one-element tensor (read it when you log, not every step).
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor | null {
  const withGrad = params.filter((p) => p.grad);
  if (withGrad.length === 0) return null;
  return noGrad(() =>
    tidy(() => {
      let total: Tensor | null = null;
      for (const p of withGrad) {
        const squares = sum(square(p.grad!));
        total = total ? add(total, squares) : squares;
      }
      const norm = sqrt(total!);
      // torch: coefficient = min(1, maxNorm / (norm + 1e-6)), as min(a, 1) = -max(-a, -1).
      const coefficient = neg(maximum(neg(mul(pow(add(norm, 1e-6), -1), maxNorm)), -1));
      for (const p of withGrad) {
        const scaled = keep(mul(p.grad!, coefficient));
        p.grad!.dispose();
        p.grad = scaled;
      }
      return norm;
    }),
  );
}
