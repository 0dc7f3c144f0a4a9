// AdamW over a list of parameters, one fused kernel launch per parameter (torch.optim.AdamW semantics:
// decoupled weight decay p -= lr·wd·p, then the bias-corrected Adam update). Optimizer state lives on the
// parameters' backend; nothing is read back to the host.
import type { AdamWParams } from '../kernels/backend.ts';
import { Tensor, keep } from '../tensor/tensor.ts';
import { contiguous, zeros } from '../tensor/ops.ts';
import { noGrad } from '../tensor/autograd.ts';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** The paper's defaults (s1 / rank-1 LoRA code): betas (0.9, 0.95), eps 1e-8, weight decay 1e-4, lr 1e-3. */
export const PAPER_ADAMW: Required<AdamWOptions> = { lr: 1e-3, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 1e-4 };

export class AdamW {
  readonly options: Required<AdamWOptions>;
  /** Steps taken so far. */
  stepCount = 0;
  readonly firstMoments: Tensor[];
  readonly secondMoments: Tensor[];

  constructor(readonly params: readonly Tensor[], options: AdamWOptions = {}) {
    this.options = { ...PAPER_ADAMW, ...options };
    params.forEach((p, i) => {
      if (!p.requiresGrad) throw new Error(`AdamW: parameter ${i} ${p} does not require grad`);
      if (p.dtype !== 'f32' || !p.isContiguous || p.offset !== 0 || p.storage.numel !== p.size) {
        throw new Error(`AdamW: parameter ${i} ${p} must own a contiguous f32 storage (it is updated in place)`);
      }
    });
    this.firstMoments = params.map((p) => keep(zeros(p.shape, { backend: p.backend })));
    this.secondMoments = params.map((p) => keep(zeros(p.shape, { backend: p.backend })));
  }

  /** One update from the accumulated .grad of every parameter; parameters without a grad are skipped. */
  step(lr = this.options.lr): void {
    this.stepCount++;
    const hp: AdamWParams = {
      lr,
      beta1: this.options.betas[0],
      beta2: this.options.betas[1],
      eps: this.options.eps,
      weightDecay: this.options.weightDecay,
      step: this.stepCount,
    };
    noGrad(() => {
      this.params.forEach((p, i) => {
        if (!p.grad) return;
        const grad = p.grad.isContiguous && p.grad.offset === 0 && p.grad.dtype === 'f32' ? p.grad : contiguous(p.grad);
        p.backend.adamwStep(p.storage, grad.storage, this.firstMoments[i]!.storage, this.secondMoments[i]!.storage, p.size, hp);
        if (grad !== p.grad) grad.dispose();
      });
    });
  }

  dispose(): void {
    for (const t of [...this.firstMoments, ...this.secondMoments]) t.dispose();
  }
}
