// SwiGLU on the CPU: silu(gate) · up and its gradient. The forward takes exp(−gate) from the vectorised exp
// of the row kernels (softmax-wasm.ts: 4 lanes of a polynomial, within 2 ulp of Math.exp) a chunk at a time,
// and does the rest in f64: scalar Math.exp was nine tenths of its time (45 µs for 4 864 elements, one
// decode step's MLP).
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';
import { allocateF32Overwritten } from './array-pool.ts';
import { rowKernels, type RowKernels } from './softmax-wasm.ts';

/** Elements per pass through the row kernels' memory (16 KiB: it stays in L1). */
const CHUNK = 4096;

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

// swiglu: gate, up [n] -> silu(gate) * up = gate · up / (1 + exp(−gate)).
export function swiglu(gate: Storage, up: Storage, n: number, kernels: RowKernels = rowKernels()): Storage {
  const g = f32Of(gate, 'swiglu');
  const u = f32Of(up, 'swiglu');
  const out = allocateF32Overwritten(n);
  for (let start = 0; start < n; start += CHUNK) {
    const cols = Math.min(CHUNK, n - start);
    const e = kernels.expNegated(g, start, cols);
    for (let i = 0, at = start; i < cols; i++, at++) out[at] = (g[at]! * u[at]!) / (1 + e[i]!);
  }
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
