import type { AdamWParams, Storage } from '../backend.ts';
import { f32Of, writeInPlace } from './storage.ts';

// adamwStep: param, grad, m, v [n], in place (torch.optim.AdamW semantics: decay, then Adam update).
export function adamwStep(param: Storage, grad: Storage, m: Storage, v: Storage, n: number, p: AdamWParams): void {
  for (const [written, what] of [[param, 'param'], [m, 'm'], [v, 'v']] as const) writeInPlace(written, `adamwStep ${what}`);
  const w = f32Of(param, 'adamwStep param');
  const g = f32Of(grad, 'adamwStep grad');
  const m1 = f32Of(m, 'adamwStep m');
  const m2 = f32Of(v, 'adamwStep v');
  const correction1 = 1 - p.beta1 ** p.step;
  const correction2 = 1 - p.beta2 ** p.step;
  const stepSize = p.lr / correction1;
  const decay = 1 - p.lr * p.weightDecay;
  // Locals, not property reads on p, inside the loop (the typed-array stores keep V8 from hoisting them).
  const { beta1, beta2, eps } = p;
  const keep1 = 1 - beta1;
  const keep2 = 1 - beta2;
  for (let i = 0; i < n; i++) {
    const gi = g[i]!;
    const first = beta1 * m1[i]! + keep1 * gi;
    const second = beta2 * m2[i]! + keep2 * gi * gi;
    m1[i] = first;
    m2[i] = second;
    w[i] = w[i]! * decay - stepSize * (Math.fround(first) / (Math.sqrt(Math.fround(second) / correction2) + eps));
  }
}
