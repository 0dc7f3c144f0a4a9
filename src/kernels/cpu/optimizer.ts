import type { AdamWParams, Storage } from '../backend.ts';
import { f32Of } from './storage.ts';

// adamwStep: param, grad, m, v [n], in place (torch.optim.AdamW semantics: decay, then Adam update).
export function adamwStep(param: Storage, grad: Storage, m: Storage, v: Storage, n: number, p: AdamWParams): void {
  const w = f32Of(param, 'adamwStep param');
  const g = f32Of(grad, 'adamwStep grad');
  const m1 = f32Of(m, 'adamwStep m');
  const m2 = f32Of(v, 'adamwStep v');
  const correction1 = 1 - p.beta1 ** p.step;
  const correction2 = 1 - p.beta2 ** p.step;
  const stepSize = p.lr / correction1;
  const decay = 1 - p.lr * p.weightDecay;
  for (let i = 0; i < n; i++) {
    const gi = g[i]!;
    m1[i] = p.beta1 * m1[i]! + (1 - p.beta1) * gi;
    m2[i] = p.beta2 * m2[i]! + (1 - p.beta2) * gi * gi;
    const denominator = Math.sqrt(m2[i]! / correction2) + p.eps;
    w[i] = w[i]! * decay - stepSize * (m1[i]! / denominator);
  }
}
