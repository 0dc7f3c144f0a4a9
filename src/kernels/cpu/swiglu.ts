import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

// swiglu: gate, up [n] -> silu(gate) * up.
export function swiglu(gate: Storage, up: Storage, n: number): Storage {
  const g = f32Of(gate, 'swiglu');
  const u = f32Of(up, 'swiglu');
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = g[i]! * sigmoid(g[i]!) * u[i]!;
  return new CpuStorage('f32', out);
}

// swigluBackward: dgate = dy * up * silu'(gate), dup = dy * silu(gate).
export function swigluBackward(gate: Storage, up: Storage, dy: Storage, n: number) {
  const g = f32Of(gate, 'swigluBackward');
  const u = f32Of(up, 'swigluBackward');
  const grad = f32Of(dy, 'swigluBackward');
  const dgate = new Float32Array(n);
  const dup = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const s = sigmoid(g[i]!);
    dup[i] = grad[i]! * g[i]! * s;
    dgate[i] = grad[i]! * u[i]! * s * (1 + g[i]! * (1 - s));
  }
  return { dgate: new CpuStorage('f32', dgate) as Storage, dup: new CpuStorage('f32', dup) as Storage };
}
