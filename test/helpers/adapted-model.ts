// Tearing down a test's model that carries rank-1 adapters: their gradients, the adapters, the model's weights,
// so the backend's live bytes return to where they were (the memory tests measure against them).
import type { Qwen2Model } from '../../src/model/qwen2.ts';

export function disposeAdaptedModel(model: Qwen2Model): void {
  for (const p of model.adapters?.parameters() ?? []) {
    p.grad?.dispose();
    p.grad = null;
  }
  model.adapters?.dispose();
  model.dispose();
}
