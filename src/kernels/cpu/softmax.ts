// The CPU softmax op: forward on softmax-wasm.ts's row kernels (a vectorised exp), backward in plain TypeScript.
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';
import { rowKernels } from './softmax-wasm.ts';

// softmax: x [R, C] -> softmax or log-softmax over C (max-subtracted).
export function softmax(x: Storage, rows: number, cols: number, log: boolean): Storage {
  const input = f32Of(x, 'softmax');
  const kernels = rowKernels();
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    kernels.load(input, base, cols);
    const max = kernels.max();
    if (log) {
      const logSum = Math.log(kernels.sumExp(max)) + max;
      for (let c = 0; c < cols; c++) out[base + c] = input[base + c]! - logSum;
    } else {
      kernels.scaleInto(1 / kernels.expInPlace(max), out, base);
    }
  }
  return new CpuStorage('f32', out);
}

// softmaxBackward: y, dy [R, C] -> dx [R, C].
//   softmax:     dx = y * (dy - sum(dy * y))
//   log-softmax: dx = dy - exp(y) * sum(dy)
export function softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number, log: boolean): Storage {
  const out = f32Of(y, 'softmaxBackward');
  const grad = f32Of(dy, 'softmaxBackward');
  const dx = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let dot = 0;
    if (log) {
      for (let c = 0; c < cols; c++) dot += grad[base + c]!;
      for (let c = 0; c < cols; c++) dx[base + c] = grad[base + c]! - Math.exp(out[base + c]!) * dot;
    } else {
      for (let c = 0; c < cols; c++) dot += grad[base + c]! * out[base + c]!;
      for (let c = 0; c < cols; c++) dx[base + c] = out[base + c]! * (grad[base + c]! - dot);
    }
  }
  return new CpuStorage('f32', dx);
}
