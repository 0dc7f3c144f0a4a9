import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of, readF32 } from './storage.ts';

/** The weight [hidden] widened to f32 once (a closure call per element costs more than the arithmetic). */
function weightF32(weight: Storage, hidden: number, what: string): Float32Array {
  return readF32({ storage: weight, shape: [hidden], strides: [1], offset: 0 }, what);
}

// rmsNorm: x [R, H], weight [H] -> y [R, H] = w * x * rstd, rstd [R] = rsqrt(mean(x^2) + eps).
export function rmsNorm(x: Storage, weight: Storage, rows: number, hidden: number, eps: number) {
  const input = f32Of(x, 'rmsNorm');
  const w = weightF32(weight, hidden, 'rmsNorm');
  const y = new Float32Array(rows * hidden);
  const rstd = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * hidden;
    let sumSquares = 0;
    for (let h = 0; h < hidden; h++) {
      const v = input[base + h]!;
      sumSquares += v * v;
    }
    const scale = 1 / Math.sqrt(sumSquares / hidden + eps);
    rstd[r] = scale;
    // HF order: normalise in f32 first, then multiply by the weight.
    for (let h = 0; h < hidden; h++) y[base + h] = w[h]! * Math.fround(input[base + h]! * scale);
  }
  return { y: new CpuStorage('f32', y) as Storage, rstd: new CpuStorage('f32', rstd) as Storage };
}

// rmsNormBackward: dy, x [R, H], weight [H], rstd [R] -> dx [R, H], dweight [H].
//   xhat = x * rstd;  dweight = sum_r dy * xhat;  dx = rstd * (g - xhat * mean(g * xhat)),  g = dy * w.
export function rmsNormBackward(dy: Storage, x: Storage, weight: Storage, rstd: Storage, rows: number, hidden: number) {
  const grad = f32Of(dy, 'rmsNormBackward');
  const input = f32Of(x, 'rmsNormBackward');
  const scales = f32Of(rstd, 'rmsNormBackward');
  const w = weightF32(weight, hidden, 'rmsNormBackward');
  const dx = new Float32Array(rows * hidden);
  const dweight = new Float64Array(hidden);
  for (let r = 0; r < rows; r++) {
    const base = r * hidden;
    const scale = scales[r]!;
    let dot = 0;
    for (let h = 0; h < hidden; h++) {
      const xhat = input[base + h]! * scale;
      const gy = grad[base + h]!;
      dot += gy * w[h]! * xhat;
      dweight[h]! += gy * xhat;
    }
    dot /= hidden;
    for (let h = 0; h < hidden; h++) {
      const xhat = input[base + h]! * scale;
      dx[base + h] = scale * (grad[base + h]! * w[h]! - xhat * dot);
    }
  }
  return { dx: new CpuStorage('f32', dx) as Storage, dweight: new CpuStorage('f32', Float32Array.from(dweight)) as Storage };
}
