// adamwStep: param, grad, m, v [n] f32, param/m/v updated in place (torch.optim.AdamW: decay, then Adam).
// Bias corrections are folded on the host in f64: stepSize = lr / (1 - beta1^t), decay = 1 - lr * wd.

import type { AdamWParams, Storage } from '../backend.ts';
import { asWebGpuStorage, type WebGpuRuntime } from './runtime.ts';
import { ENTRY_ARGS, PRELUDE, params, storageDecl } from './wgsl.ts';

const WORKGROUP = 256;

const adamParams = params({
  n: 'u32', beta1: 'f32', beta2: 'f32', eps: 'f32', stepSize: 'f32', decay: 'f32', correction2: 'f32',
  paramOffset: 'u32', gradOffset: 'u32', mOffset: 'u32', vOffset: 'u32',
});

const SOURCE = PRELUDE + adamParams.wgsl() + storageDecl(1, 'param', 'f32', 'write') + storageDecl(2, 'grad', 'f32', 'read')
  + storageDecl(3, 'm', 'f32', 'write') + storageDecl(4, 'v', 'f32', 'write') + /* wgsl */ `
@compute @workgroup_size(${WORKGROUP}) fn main(${ENTRY_ARGS}) {
  let i = workgroup_index(wg, groups) * ${WORKGROUP}u + lid;
  if (i >= params.n) { return; }
  let g = grad[params.gradOffset + i];
  let m1 = params.beta1 * m[params.mOffset + i] + (1.0 - params.beta1) * g;
  let m2 = params.beta2 * v[params.vOffset + i] + (1.0 - params.beta2) * g * g;
  m[params.mOffset + i] = m1;
  v[params.vOffset + i] = m2;
  let denominator = sqrt(m2 / params.correction2) + params.eps;
  let w = param[params.paramOffset + i];
  param[params.paramOffset + i] = w * params.decay - params.stepSize * (m1 / denominator);
}
`;

export function adamwStep(
  rt: WebGpuRuntime, param: Storage, grad: Storage, m: Storage, v: Storage, n: number, p: AdamWParams,
): void {
  const storages = [param, grad, m, v].map(asWebGpuStorage);
  if (new Set(storages).size !== 4) throw new Error('adamwStep: param, grad, m and v must be four distinct storages');
  const kernel = rt.kernel('adamw', () => ({ code: SOURCE, bindings: ['write', 'read', 'write', 'write'] }));
  const operands = storages.map((storage) => ({ storage, rowStride: 1 }));
  for (const chunk of rt.rowChunks(n, operands)) {
    const [paramOffset, gradOffset, mOffset, vOffset] = chunk.offsets as [number, number, number, number];
    const packed = adamParams.pack({
      n: chunk.rows, beta1: p.beta1, beta2: p.beta2, eps: p.eps,
      stepSize: p.lr / (1 - p.beta1 ** p.step), decay: 1 - p.lr * p.weightDecay, correction2: 1 - p.beta2 ** p.step,
      paramOffset, gradOffset, mOffset, vOffset,
    });
    rt.dispatch(kernel, packed, chunk.bindings, Math.ceil(chunk.rows / WORKGROUP));
  }
}
