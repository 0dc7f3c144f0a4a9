import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';

// rope: x [B, T, nh, hd], cos/sin [T, hd/2] -> y [B, T, nh, hd], rotate-half convention:
//   y[i] = x[i] cos - x[i + hd/2] sin,  y[i + hd/2] = x[i + hd/2] cos + x[i] sin.
// inverse rotates by the negative angle: the backward of rope is rope with -sin.
export function rope(
  x: Storage, cos: Storage, sin: Storage, batch: number, tokens: number, heads: number, headDim: number,
  inverse: boolean,
): Storage {
  const input = f32Of(x, 'rope');
  const cosTable = f32Of(cos, 'rope');
  const sinTable = f32Of(sin, 'rope');
  const half = headDim / 2;
  const out = new Float32Array(input.length);
  const sign = inverse ? -1 : 1;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const base = ((b * tokens + t) * heads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const c = cosTable[t * half + i]!;
          const s = sign * sinTable[t * half + i]!;
          const x1 = input[base + i]!;
          const x2 = input[base + i + half]!;
          out[base + i] = x1 * c - x2 * s;
          out[base + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
  return new CpuStorage('f32', out);
}
