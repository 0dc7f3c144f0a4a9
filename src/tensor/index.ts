// The public tensor API: import from here.
export { Tensor, tidy, keep, disposeAll } from './tensor.ts';
export { backward, noGrad, requireGrad, zeroGrad, releaseGraph, isGradEnabled } from './autograd.ts';
export * from './ops.ts';
export { defaultLossChunkRows, linearCrossEntropy, linearCrossEntropyRows, linearKlDivRows } from './linear-cross-entropy.ts';
export { initBackend, getDefaultBackend, setDefaultBackend, getCpuBackend } from './engine.ts';
export { Random, randomNormalArray, randomUniformArray } from './random.ts';
export type { Backend, BackendName, DType } from '../kernels/backend.ts';
